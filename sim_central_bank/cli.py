"""``condpay sim``: run a scenario against condpay and report; list the built-in scenarios.

Exit status of ``condpay sim run``: 0 when every invariant holds, 1 when one fails (the reports
say which), 2 for a bad scenario or bad arguments (nothing ran, or the target refused the run
before any trade), 3 when the run broke off (a process that would not start, a server that
stopped answering): one line says why, and no report is written."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sim_central_bank import scenario as scenarios
from sim_central_bank.report import PLOTS_MISSING, plots_available, print_summary, write_reports
from sim_central_bank.runner import Target, TargetError, check_target, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condpay sim",
        description="The central-bank simulator: a day of trade against condpay, audited "
        "(docs/simulator.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_ = commands.add_parser("run", help="run a scenario, audit it and write the report")
    run_.add_argument("scenario", help="a built-in scenario (condpay sim list) or a .toml file")
    where = run_.add_mutually_exclusive_group()
    where.add_argument("--server", metavar="ADDR", help="HOST:PORT of a running core (insecure)")
    where.add_argument(
        "--embedded",
        action="store_true",
        help="start the core and the bridge as child processes: the default, so this flag "
        "changes nothing (it says so on a command line)",
    )
    run_.add_argument("--bridge", metavar="ADDR", help="with --server: HOST:PORT of its bridge")
    run_.add_argument(
        "--database-url", help="with --embedded: the core's database (default: SQLite in var/sim)"
    )
    run_.add_argument("--seed", type=int, help="replaces the scenario's seed")
    run_.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="where report.json and report.html go (default var/sim/<scenario>/report)",
    )
    run_.add_argument(
        "--tag",
        default="",
        help="with --server: names this run's request ids (default: its start time), so each "
        "run against a running server trades anew",
    )
    commands.add_parser("list", help="the built-in scenarios")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if args.command == "list":
        table = Table(title="Built-in scenarios (sim_central_bank/scenarios)")
        for column in ("name", "rounds x orders", "currencies", "faults", "description"):
            table.add_column(column)
        for name in scenarios.builtin_names():
            s = scenarios.load(name)
            faults = [f"{s.faults.server_kills} server kills"] if s.faults.server_kills else []
            faults += [f"{s.faults.bridge_kills} bridge kills"] if s.faults.bridge_kills else []
            faults += list(s.faults.bridge)
            table.add_row(
                name,
                f"{s.rounds} x {s.orders.per_round}",
                " ".join(s.currencies),
                "\n".join(faults) or "-",
                s.description,
            )
        console.print(table)
        return 0
    try:
        scenario = scenarios.load(args.scenario).with_seed(args.seed)
    except scenarios.ScenarioError as error:
        _say(console, str(error))
        return 2
    if not plots_available():  # the run and its audit need no plots: say so once, go on
        _say(console, PLOTS_MISSING, style="yellow")
    target = Target(server=args.server, bridge=args.bridge, database_url=args.database_url)
    try:
        check_target(scenario, target)
        record = asyncio.run(run(scenario, target, console=console, tag=args.tag))
        report_dir = args.report or target.directory / scenario.name / "report"
        json_path, html_path = write_reports(record, report_dir)
    except TargetError as error:
        _say(console, str(error))
        return 2
    except Exception as error:  # a run that broke off: one line, not a traceback
        _say(console, f"the run broke off: {type(error).__name__}: {error}")
        return 3
    print_summary(record, console)
    # One line, however long the paths: a terminal wraps it, and a copied path stays whole.
    console.print(f"Report: {html_path} (for people), {json_path} (for machines)", soft_wrap=True)
    return 0 if record.passed else 1


def _say(console: Console, message: str, *, style: str = "red") -> None:
    """One line (red: an error), taken literally (no markup in file names or server messages)."""
    console.print(
        f"condpay sim: {' '.join(message.split())}", style=style, markup=False, soft_wrap=True
    )
