"""The ``condpay`` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence
from dataclasses import replace

from condpay import event_loop

from settlement.config import ENVIRONMENT_HELP, Settings, parse_workers


def _serve(args: argparse.Namespace) -> int:
    # Loading the server allocates a few hundred thousand long-lived objects and no garbage: the
    # cyclic collector would only walk them over and over (~5% of the start). serve() collects,
    # freezes what is loaded and turns it back on once serving; on every other way out it is
    # turned back on here.
    gc.disable()
    try:
        return _serve_settings(args)
    finally:
        gc.enable()


def _serve_settings(args: argparse.Namespace) -> int:
    from settlement.api.server import serve
    from settlement.observability import configure_logging

    settings = Settings.from_env()
    overrides = {
        "addr": args.addr,
        "database_url": args.database_url,
        "log_level": args.log_level,
        "writers": args.writers,
        "pg_isolation": args.pg_isolation,
        "certs_dir": args.certs_dir,
        "metrics_addr": args.metrics_addr,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if args.insecure:
        settings = replace(settings, insecure=True)
    if args.quiet_calls:
        settings = replace(settings, log_calls=False)
    if args.workers is not None:
        settings = replace(settings, workers=parse_workers(args.workers))
    configure_logging(settings.log_level)
    if settings.worker_count() > 1:
        from settlement.api.workers import serve_workers

        gc.enable()  # the parent supervises the workers for as long as they run
        return serve_workers(settings)
    event_loop.run(serve(settings))
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from settlement.db.migrate import upgrade_to_head
    from settlement.db.urls import parse_database_url
    from settlement.runtime import create_sql_engine

    url = parse_database_url(args.database_url or Settings.from_env().database_url)

    async def run() -> None:
        engine = create_sql_engine(url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"schema is at the newest migration: {url.redacted()}")
    return 0


def _dsl(argv: Sequence[str]) -> int:
    try:
        from contracts_dsl.cli import main as dsl_main
    except ImportError:
        print("condpay dsl: the contract language is not installed in this build", file=sys.stderr)
        return 2
    return int(dsl_main(list(argv)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condpay", description="condpay: conditional-payment settlement for e-CNY-style CBDC"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the gRPC settlement server",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--addr", help="HOST:PORT to listen on (env CONDPAY_ADDR)")
    serve.add_argument("--database-url", help="database URL (env CONDPAY_DATABASE_URL)")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext development mode; identity from condpay-caller metadata",
    )
    serve.add_argument(
        "--certs-dir", help="mutual TLS files from `condpay certs init` (env CONDPAY_CERTS_DIR)"
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--quiet-calls", action="store_true", help="no per-call log line")
    serve.add_argument("--writers", type=int, help="PostgreSQL writer connections")
    serve.add_argument("--pg-isolation", choices=["read_committed", "serializable"])
    serve.add_argument(
        "--workers",
        help="server processes sharing the address: N or auto (env CONDPAY_WORKERS; default auto:"
        " one per CPU on PostgreSQL, one on SQLite)",
    )
    serve.add_argument(
        "--metrics-addr",
        help="serve Prometheus /metrics on HOST:PORT (env CONDPAY_METRICS_ADDR; default off)",
    )
    serve.set_defaults(run=_serve)

    db = commands.add_parser("db", help="database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="create or migrate the schema")
    upgrade.add_argument("--database-url")
    upgrade.set_defaults(run=_db_upgrade)

    # Mounted by the `condpay` command (launcher/), which may import the simulator; listed here
    # for --help.
    commands.add_parser(
        "demo",
        help="a short end-to-end demo through gRPC (starts its own server by default)",
        add_help=False,
    )
    commands.add_parser("certs", help="development CA for mutual TLS: init, issue", add_help=False)
    commands.add_parser(
        "dsl", help="the contract language: check, fmt, explain, simulate, test", add_help=False
    )
    commands.add_parser(
        "bridge", help="the mBridge-style multi-CBDC bridge mock: serve", add_help=False
    )
    commands.add_parser(
        "sim", help="the central-bank simulator: run a scenario, list scenarios", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dsl"]:
        return _dsl(argv[1:])
    if argv[:1] == ["certs"]:
        from settlement.certs import main as certs_main

        return certs_main(argv[1:])
    if argv[:1] == ["bridge"]:
        from bridges.cli import main as bridge_main

        return bridge_main(argv[1:])
    if argv[:1] in (["sim"], ["demo"]):
        print(f"condpay {argv[0]}: run it through the `condpay` command", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
