"""`python -m contracts_dsl ...`: see contracts_dsl.cli."""

from __future__ import annotations

import sys

from contracts_dsl.cli import main

if __name__ == "__main__":
    sys.exit(main())
