"""The ``condpay`` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence
from pathlib import Path

from condpay import event_loop

from settlement import config


def version() -> str:
    """condpay's version: the installed package's, else pyproject.toml's (a source tree)."""
    from importlib import metadata

    try:
        return metadata.version("condpay")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            with pyproject.open("rb") as file:
                return str(tomllib.load(file)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def _load(command: str, args: argparse.Namespace) -> config.Loaded | None:
    """The settings from the environment and ``args``'s flags; a bad value is printed as one
    line (``condpay serve: CONDPAY_WRITERS='x': must be ...``) and gives None."""
    try:
        return config.load(flags=config.flag_values(args))
    except config.SettingError as bad:
        print(f"{command}: {bad}", file=sys.stderr)
        return None


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
    loaded = _load("condpay serve", args)
    if loaded is None:
        return 2
    settings = loaded.settings

    from settlement.api.server import serve
    from settlement.observability import configure_logging

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

    loaded = _load("condpay db upgrade", args)
    if loaded is None:
        return 2
    url = parse_database_url(loaded.settings.database_url)

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
    return int(dsl_main(list(argv), prog="condpay dsl"))


def _config_show(args: argparse.Namespace) -> int:
    loaded = _load("condpay config show", args)
    if loaded is None:
        return 2
    print(config.show(loaded), end="")
    return 0


def _config_table(_args: argparse.Namespace) -> int:
    print(config.markdown_table(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condpay", description="condpay: conditional-payment settlement for e-CNY-style CBDC"
    )
    parser.add_argument("--version", action="version", version=f"condpay {version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the gRPC settlement server",
        description="Run the gRPC settlement server. A flag takes precedence over its variable,\n"
        "a variable over the default.",
        epilog=config.environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_flags(serve)
    serve.set_defaults(run=_serve)

    db = commands.add_parser("db", help="database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="create or migrate the schema")
    upgrade.add_argument(
        "--database-url",
        dest="database_url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="the database (env CONDPAY_DATABASE_URL; default embedded SQLite ./var/condpay.db)",
    )
    upgrade.set_defaults(run=_db_upgrade)

    settings = commands.add_parser("config", help="the server's settings: show, table")
    settings_commands = settings.add_subparsers(dest="config_command", required=True)
    show = settings_commands.add_parser(
        "show",
        help="the effective settings (defaults, environment, the flags of `condpay serve`)",
        description="Print each setting as NAME=value  (source: default|env|flag), the"
        " database password masked. Takes the flags of `condpay serve`; a bad value is one line"
        " and exit status 2, as there.",
    )
    config.add_flags(show)
    show.set_defaults(run=_config_show)
    table = settings_commands.add_parser("table", help="the settings as README.md's Markdown table")
    table.set_defaults(run=_config_table)

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
        "evidence",
        help="a payment's evidence bundle: export (from a server), verify (offline)",
        add_help=False,
    )
    commands.add_parser(
        "sim", help="the central-bank simulator: run a scenario, list scenarios", add_help=False
    )
    commands.add_parser(
        "console",
        help="the supervision console: a read-only web page for a central bank or an auditor",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dsl"]:
        return _dsl(argv[1:])
    if argv[:1] == ["certs"]:
        from settlement.certs import main as certs_main

        return certs_main(argv[1:])
    if argv[:1] == ["evidence"]:
        from condpay.evidence_cli import main as evidence_main

        return evidence_main(argv[1:])
    if argv[:1] == ["bridge"]:
        from bridges.cli import main as bridge_main

        return bridge_main(argv[1:])
    if argv[:1] in (["sim"], ["demo"], ["console"]):
        print(f"condpay {argv[0]}: run it through the `condpay` command", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
