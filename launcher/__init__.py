"""The ``condpay`` command: one entry point that mounts each part's own command line.

    condpay sim ...     the central-bank simulator (sim_central_bank.cli)
    condpay demo ...    the guided story of one trade (sim_central_bank.demo)
    condpay console ... the supervision console, a read-only web page (sim_central_bank.console)
    condpay ...         everything else: serve, db, certs, dsl, bridge (settlement.cli)

It lives apart from the parts because it is the one place allowed to import all of them: the
settlement core never imports the simulator, and the simulator never imports the core
(tests/test_import_arrows.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="condpay demo",
        description="a short end-to-end demo through gRPC (starts its own server by default)",
    )
    parser.add_argument("--server", help="HOST:PORT of a running server (insecure mode)")
    parser.add_argument("--database-url", help="database for the server the demo starts")
    args = parser.parse_args(argv)
    from sim_central_bank.demo import main as demo_main

    return int(demo_main(server=args.server, database_url=args.database_url))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        from sim_central_bank.cli import main as sim_main

        return int(sim_main(argv[1:]))
    if argv[:1] == ["demo"]:
        return _demo(argv[1:])
    if argv[:1] == ["console"]:
        from sim_central_bank.console import main as console_main

        return int(console_main(argv[1:]))
    from settlement.cli import main as settlement_main

    return settlement_main(argv)
