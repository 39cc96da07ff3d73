"""The simulator end to end: scenarios run against a real core (a child process, as `condpay sim
run` starts it) and a real bridge process, on SQLite and on PostgreSQL, with kills; the auditor
must pass, the same seed must give the same final ledger, and the CLI must say so in its exit
status and its reports."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from sim_central_bank import cli
from sim_central_bank import scenario as scenarios
from sim_central_bank.auditor import INVARIANTS
from sim_central_bank.plan import ArrivalFault, make_plan
from sim_central_bank.record import InvariantResult, RunRecord
from sim_central_bank.report import write_reports
from sim_central_bank.runner import Target, run
from sim_central_bank.scenario import Scenario, ScenarioError
from tests.support.browser import png_size, screenshot
from tests.support.harness import start_harness

pytestmark = pytest.mark.timeout(300)

TINY_CNY = """
name = "tiny-cny"
description = "one currency, no bridge"
seed = 5
rounds = 2
concurrency = 4

[parties]
sellers = 2
buyers = 2

[orders]
per_round = 4
currency_mix = { CNY = 1 }
prepayment_financed = 0.5
receivable_financed = 0.5
ebl = 0.5

[orders.size]
CNY = ["100.00", "900.00"]

[attestations]
forged = 0.25
replayed = 0.25
"""


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def small(scenario: Scenario, *, rounds: int, per_round: int) -> Scenario:
    return dataclasses.replace(
        scenario, rounds=rounds, orders=dataclasses.replace(scenario.orders, per_round=per_round)
    )


def assert_passed(record: RunRecord) -> None:
    failed = [f"{r.name} ({r.when}): {r.detail}" for r in record.invariants if not r.passed]
    assert not failed, failed
    final = {r.name for r in record.invariants if r.when == "final"}
    assert final == {*INVARIANTS, "operations_as_planned"}
    assert record.passed


async def test_smoke_passes_on_sqlite_and_the_same_seed_gives_the_same_ledger(
    tmp_path: Path,
) -> None:
    scenario = scenarios.load("smoke")
    first = await run(scenario, Target(directory=tmp_path / "a"), console=quiet())
    assert_passed(first)
    assert first.database == "sqlite"
    # Every kind of order and fault of the plan happened, and was answered as planned.
    operations = {op for op, _ in first.operations}
    assert {"lock", "fund_escrow", "assign_proceeds", "dvp", "payout.final"} <= operations
    assert first.operations[("attestation.forged", "SIGNATURE_INVALID")] > 0
    assert first.operations[("attestation.replayed", "EVENT_ALREADY_SEEN")] > 0
    assert first.settlements_total > 0
    assert first.timeline
    assert first.calls

    again = await run(scenario, Target(directory=tmp_path / "b"), console=quiet())
    assert_passed(again)
    assert again.ledger_fingerprint == first.ledger_fingerprint

    reseeded = await run(scenario.with_seed(7), Target(directory=tmp_path / "c"), console=quiet())
    assert_passed(reseeded)
    assert reseeded.ledger_fingerprint != first.ledger_fingerprint


@pytest.mark.postgres
async def test_smoke_passes_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    record = await run(
        scenarios.load("smoke"),
        Target(database_url=pg_url, directory=tmp_path),
        console=quiet(),
    )
    assert_passed(record)
    assert record.database == "postgresql"


@pytest.mark.postgres
async def test_chaos_with_kills_passes_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    scenario = small(scenarios.load("chaos"), rounds=2, per_round=10)
    assert scenario.faults.server_kills
    assert scenario.faults.bridge_kills
    record = await run(scenario, Target(database_url=pg_url, directory=tmp_path), console=quiet())
    assert_passed(record)
    assert record.faults["server_kill"] == scenario.faults.server_kills
    assert record.faults["bridge_kill"] == scenario.faults.bridge_kills
    # The kills were felt: some calls got no answer and were retried with the same request id.
    assert record.faults["client retries (no answer)"] > 0


def test_the_cli_runs_a_scenario_file_without_a_bridge_and_writes_both_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # var/sim lands here
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_CNY)
    status = cli.main(["run", str(path), "--report", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert status == 0, out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["passed"] is True
    assert report["seed"] == 5
    assert {i["name"] for i in report["invariants"] if i["pass"]} >= set(INVARIANTS)
    assert (tmp_path / "out" / "report.html").read_text().count("<svg") >= 4
    assert "PASS" in out
    assert "report.html" in out


async def test_runs_against_a_running_server_trade_anew_each_time(tmp_path: Path) -> None:
    """--server: the simulator drives a server it did not start, whose ledger keeps what earlier
    runs did. A second run of the same scenario and seed trades anew (its request ids carry the
    run's start time), finds the central banks, institutions and oracles registered, and answers
    only for its own payments (the first run's open ones were open before it began)."""
    scenario = scenarios.parse(TINY_CNY.replace("forged = 0.25", "missing = 0.25"), "tiny.toml")
    async with start_harness(f"sqlite:///{tmp_path}/condpay.db", bridge="none") as harness:
        target = Target(server=harness.address, directory=tmp_path)
        first = await run(scenario, target, console=quiet())
        assert_passed(first)
        assert first.database == "external"
        assert first.faults["attestation.missing"] > 0  # some of its payments stay open

        second = await run(scenario, target, console=quiet())
        assert_passed(second)
        tagged = await run(scenario, target, console=quiet(), tag="third")
        assert_passed(tagged)
        payments = await harness.runtime.reader.payments(limit=1_000)
        assert len(payments) == 3 * scenario.orders_total


def test_the_cli_exits_1_when_an_invariant_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken_run(scenario: Scenario, target: Target, **_: object) -> RunRecord:
        record = RunRecord(scenario.name, scenario.seed, "test", "sqlite")
        record.invariants = [
            InvariantResult("supply_equals_balances", False, "CNY: issued 5 != balances 4")
        ]
        return record

    monkeypatch.setattr(cli, "run", broken_run)
    status = cli.main(["run", "smoke", "--report", str(tmp_path)])
    assert status == 1
    assert "supply_equals_balances" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is False


def test_sim_list_names_the_built_in_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("smoke", "gba-day", "chaos"):
        assert name in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = 'x'\nrounds = 0", "rounds: an integer from 1"),
        ("name = 'x'\nsurprise = 1", "surprise: unknown key"),
        ("name = 'x'\n[orders]\ncurrency_mix = { XYZ = 1 }", "currency_mix.XYZ: unknown currency"),
        (
            "name = 'x'\n[orders]\ncurrency_mix = { CNY = 1 }\n[orders.size]\nCNY = ['1.001', '2']",
            "orders.size.CNY",
        ),
        ("name = 'x'\n[attestations]\nlate = 0.7\nforged = 0.7", "add up to more than 1"),
        ("name = 'x'\n[attestations]\nlate = 2", "attestations.late: a share from 0 to 1"),
        ("name = [", "bad.toml: "),
    ],
)
def test_a_bad_scenario_file_names_the_file_and_the_key(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=r"bad\.toml") as refused:
        scenarios.parse(text, "bad.toml")
    assert message in str(refused.value)


def test_the_plan_is_a_function_of_the_seed() -> None:
    scenario = scenarios.load("gba-day")
    assert make_plan(scenario) == make_plan(scenario)
    other = make_plan(scenario.with_seed(scenario.seed + 1))
    assert other.orders != make_plan(scenario).orders
    plan = make_plan(scenario)
    faults = {o.arrival_fault for o in plan.orders}
    assert faults == set(ArrivalFault)
    assert {o.currency for o in plan.orders} == {"CNY", "HKD", "THB"}
    assert len(plan.orders) == 3_000
    # The walk moves every foreign rate and never touches the reference currency.
    assert {r["CNY"] for r in plan.rates} == {(1_000_000, 1_000_000)}
    assert len({r["HKD"] for r in plan.rates}) > 1


async def test_a_real_report_renders_in_headless_chromium(tmp_path: Path, chromium: Path) -> None:
    scenario = small(scenarios.load("smoke"), rounds=1, per_round=6)
    record = await run(scenario, Target(directory=tmp_path), console=quiet())
    assert_passed(record)
    _, html = write_reports(record, tmp_path / "report")
    png = screenshot(html, tmp_path / "report.png", width=1280, height=1800, chromium=chromium)
    assert png_size(png) == (1280, 1800)
