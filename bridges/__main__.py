"""``python -m bridges serve --addr HOST:PORT --state PATH [--fault SPEC]...``"""

import sys

from bridges.cli import main

sys.exit(main())
