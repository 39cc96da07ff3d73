"""The simulator end to end: scenarios run against a real core (a child process, as `condpay sim
run` starts it) and a real bridge process, on SQLite and on PostgreSQL, with kills; the auditor
must pass, the same seed must give the same final ledger, and the CLI must say so in its exit
status and its reports."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import pytest
from condpay.errors import Unavailable
from google.rpc import status_pb2
from rich.console import Console

from bridges import BridgeClient, Identity, Kind, Rate
from bridges.errors import BridgeError, Reason
from settlement.ledger import loan_math
from sim_central_bank import cli, runner
from sim_central_bank import scenario as scenarios
from sim_central_bank.auditor import INVARIANTS
from sim_central_bank.bridge_process import BridgeProcess
from sim_central_bank.plan import LOAN_HAIRCUT_BPS, ArrivalFault, LoanOutcome, make_plan
from sim_central_bank.record import ACCEPTED, GATEWAY, InvariantResult, RunRecord
from sim_central_bank.report import write_reports
from sim_central_bank.runner import Target, run
from sim_central_bank.scenario import Scenario, ScenarioError
from sim_central_bank.server_process import ServerProcess
from sim_central_bank.trading import SURPRISE, Trader
from tests.sim.evidence_of_a_run import export_and_verify_each_outcome
from tests.support.browser import png_size, screenshot
from tests.support.harness import start_harness

pytestmark = pytest.mark.timeout(300)
T = TypeVar("T")

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


#: The outcomes the smoke scenario reaches, each with a bundle that must verify.
OUTCOMES = {
    "settled",
    "partially released",
    "refunded at the deadline",
    "paid out through the bridge",
}


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
    # A late order is neither cleared nor financed (its deadline is seconds away): only its
    # arrival is sent, after the deadline, and refused.
    late = [o for o in make_plan(scenario).orders if o.arrival_fault is ArrivalFault.LATE]
    assert late
    assert all(o.prepayment is None and o.receivable is None for o in late)
    assert first.operations[("attestation.late", "PAYMENT_NOT_OPEN")] == len(late)
    assert first.operations[("attestation.customs", ACCEPTED)] == scenario.orders_total - len(late)
    assert first.settlements_total > 0
    assert first.timeline
    assert first.calls

    again = await run(scenario, Target(directory=tmp_path / "b"), console=quiet())
    assert_passed(again)
    assert again.ledger_fingerprint == first.ledger_fingerprint

    # Every outcome's evidence exports and verifies offline.
    verified = await export_and_verify_each_outcome(
        f"sqlite:///{tmp_path / 'a' / 'smoke' / 'condpay.db'}", tmp_path
    )
    assert set(verified) >= OUTCOMES, verified

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
    verified = await export_and_verify_each_outcome(pg_url, tmp_path)
    assert set(verified) >= OUTCOMES, verified


@pytest.mark.postgres
async def test_chaos_with_kills_passes_on_postgresql_and_the_same_seed_gives_the_same_ledger(
    tmp_path: Path, pg_url: str, another_pg_url: str
) -> None:
    """Kills included: a restarted bridge keeps the round's rates (no second bootstrap, and the
    runner publishes them again), so the same seed gives the same ledger."""
    scenario = small(scenarios.load("chaos"), rounds=2, per_round=10)
    assert scenario.faults.server_kills
    assert scenario.faults.bridge_kills
    fingerprints = []
    for name, url in (("a", pg_url), ("b", another_pg_url)):
        record = await run(
            scenario, Target(database_url=url, directory=tmp_path / name), console=quiet()
        )
        assert_passed(record)
        assert record.faults["server_kill"] == scenario.faults.server_kills
        assert record.faults["bridge_kill"] == scenario.faults.bridge_kills
        # The kills were felt: some calls got no answer and were retried with the same request
        # id.
        assert record.faults["client retries (no answer)"] > 0
        fingerprints.append(record.ledger_fingerprint)
    assert fingerprints[0] == fingerprints[1]


async def test_a_restarted_bridge_keeps_what_was_published_since_its_bootstrap(
    tmp_path: Path,
) -> None:
    """The bootstrap (which publishes the demo rates) runs at the first start only, unless
    asked for at every start."""
    hkd_to_cny = Fraction(9, 10)
    for every_start, expected in ((False, hkd_to_cny), (True, Fraction(9_235, 10_000))):
        folder = tmp_path / str(every_start)
        bridge = BridgeProcess(
            folder / "bridge.db", folder / "logs", bootstrap_every_start=every_start
        )
        client = BridgeClient(bridge.address, identity=Identity(Kind.BANK, GATEWAY))
        hkma = client.acting_as(Identity(Kind.CENTRAL_BANK, "HKMA"))
        try:
            await bridge.start()
            await hkma.publish_rate("HKD", Rate(9, 10))
            await bridge.stop(kill=True)
            await bridge.start()
            quote = await _when_reachable(
                lambda client=client: client.quote("HKD", "CNY", source_amount_minor=100_00)
            )
            assert Fraction(quote.rate.numerator, quote.rate.denominator) == expected
            # The gateway bank is there either way: the state file keeps it.
            assert await client.balances(GATEWAY)
        finally:
            await client.close()
            await bridge.stop(kill=True)
        assert len(list((folder / "logs").glob("bridge-*.log"))) == 2


async def _when_reachable(call: Callable[[], Awaitable[T]]) -> T:
    """``call`` once the client's channel has found the restarted bridge."""
    for _ in range(100):
        try:
            return await call()
        except BridgeError as error:
            if error.reason is not Reason.UNREACHABLE:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the bridge did not come back")


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


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--server", "127.0.0.1:1"], "give the server's bridge with --bridge ADDR"),
        (
            ["--server", "127.0.0.1:1", "--bridge", "127.0.0.1:2", "--database-url", "sqlite://"],
            "--database-url is for the core the simulator starts",
        ),
        (["--bridge", "127.0.0.1:2"], "--bridge goes with --server"),
    ],
)
def test_the_cli_refuses_arguments_it_would_ignore(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before anything runs (nothing listens on those ports)."""
    assert cli.main(["run", "smoke", *arguments]) == 2
    assert message in " ".join(capsys.readouterr().out.split())


def test_the_cli_exits_3_with_one_line_when_the_run_breaks_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken_run(*_: object, **__: object) -> RunRecord:
        raise RuntimeError("the server exited; see var/sim/smoke/logs/server.log")

    monkeypatch.setattr(cli, "run", broken_run)
    assert cli.main(["run", "smoke", "--report", str(tmp_path)]) == 3
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [
        "condpay sim: the run broke off: RuntimeError: the server exited; see "
        "var/sim/smoke/logs/server.log"
    ]
    assert not (tmp_path / "report.json").exists()


def test_embedded_runs_refuse_a_database_that_already_holds_a_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_CNY)
    url = f"sqlite:///{tmp_path}/mine.db"
    assert cli.main(["run", str(path), "--embedded", "--database-url", url]) == 0
    capsys.readouterr()
    assert cli.main(["run", str(path), "--embedded", "--database-url", url]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "already holds a ledger" in out
    assert "Traceback" not in out


async def test_a_core_that_does_not_start_leaves_no_bridge_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridges: list[BridgeProcess] = []

    class Watched(BridgeProcess):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            bridges.append(self)

    async def not_ready(self: ServerProcess, timeout_seconds: float = 60.0) -> None:
        raise RuntimeError(f"the server exited; see {self.log_path}")

    monkeypatch.setattr(runner, "BridgeProcess", Watched)
    monkeypatch.setattr(ServerProcess, "wait_ready", not_ready)
    with pytest.raises(RuntimeError, match="the server exited"):
        await run(scenarios.load("smoke"), Target(directory=tmp_path), console=quiet())
    assert len(bridges) == 1
    assert bridges[0].exit_status() is not None  # stopped, not orphaned


async def test_a_second_run_in_the_same_place_is_refused_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    """Two runs of one scenario from one directory: the second would delete the first's live
    ledger (its database, the bridge's state) before starting its own servers. It is refused
    instead, naming the directory and the run that holds it, and nothing of the first changes."""
    directory = tmp_path / "smoke"
    with runner._run_directory(directory):  # the first run, still going
        directory.mkdir()
        (directory / "condpay.db").write_bytes(b"the first run's ledger")
        with pytest.raises(runner.TargetError, match=r"another simulator run \(pid \d+\)"):
            await run(scenarios.load("smoke"), Target(directory=tmp_path), console=quiet())
        assert (directory / "condpay.db").read_bytes() == b"the first run's ledger"
    with runner._run_directory(directory):  # the first one ended: the place is free again
        pass


async def test_an_unexpected_error_in_an_order_is_a_surprise_not_the_end_of_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call outside the planned operations (here: the wait for a payment's end) that fails:
    the run goes on, audits and reports, and fails operations_as_planned."""

    async def unavailable(self: Trader, payment_id: str, **_: object) -> None:
        raise Unavailable(status_pb2.Status(code=14, message="the server went away"))

    monkeypatch.setattr(Trader, "wait_payment", unavailable)
    scenario = scenarios.parse(TINY_CNY, "tiny.toml")
    record = await run(scenario, Target(directory=tmp_path), console=quiet())
    results = {r.name: r for r in record.invariants if r.when == "final"}
    assert not results["operations_as_planned"].passed
    assert "order failed: UNAVAILABLE" in results["operations_as_planned"].detail
    assert record.operations[(SURPRISE, "order failed: UNAVAILABLE")] == scenario.orders_total
    assert not record.passed
    assert record.ledger_fingerprint


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
        ("name = '../..'", "name: '../..' is not a valid scenario name"),
        ("name = 'a/b'", "name: 'a/b' is not a valid scenario name"),
        ("name = '.'", "name: '.' is not a valid scenario name"),
        ("name = 'Smoke'", "name: 'Smoke' is not a valid scenario name"),
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


LOANS = """
name = "loans"
description = "inventory loans beside a few orders, in CNY and HKD"
seed = 6
rounds = 2
concurrency = 8

[parties]
sellers = 3
buyers = 4
financiers = 2

[orders]
per_round = 4
currency_mix = { CNY = 1, HKD = 1 }
pvp_payout = 0.5

[orders.size]
CNY = ["100.00", "900.00"]
HKD = ["100.00", "900.00"]

[loans]
per_round = 8
margin_called = 0.3
defaulted = 0.3
repaid_in_parts = 0.15
left_open = 0.05
retained = 0.3
sold_abroad = 0.5

[bridge]
gateway_liquidity = { CNY = "20000000.00", HKD = "20000000.00" }
"""


async def test_inventory_loans_pass_every_invariant_and_the_same_seed_gives_the_same_ledger(
    tmp_path: Path,
) -> None:
    """Every way a loan goes (sim_central_bank/lending.py), through the real core and bridge:
    the auditor's loan invariants hold, every call had its planned outcome, and a second run
    with the seed reproduces the ledger, loans included; another seed gives another."""
    scenario = scenarios.parse(LOANS, "loans.toml")
    plan = make_plan(scenario)
    assert {loan.outcome for loan in plan.loans} == set(LoanOutcome)
    defaulted = [x for x in plan.loans if x.outcome is LoanOutcome.DEFAULTED]
    sold = [x for x in defaulted if x.disposal == "SELL"]
    abroad = [x for x in sold if plan.buyer_currency[x.buyer] != "CNY"]
    assert sold
    assert abroad
    assert len(abroad) < len(sold) < len(defaulted)

    first = await run(scenario, Target(directory=tmp_path / "a"), console=quiet())
    assert_passed(first)
    ops = first.operations
    assert ops[("loan.open", ACCEPTED)] == len(plan.loans)
    assert ops[("loan.defaulted", ACCEPTED)] == len(defaulted)
    assert ops[("loan.retained", ACCEPTED)] == len(defaulted) - len(sold)
    assert ops[("loan.dispose", ACCEPTED)] == len(sold) - len(abroad)
    assert ops[("loan.dispose.abroad", ACCEPTED)] == len(abroad)
    assert ops[("loan.sale.final", ACCEPTED)] == len(sold)
    assert ops[("loan.pledge_more", ACCEPTED)] == sum(
        x.outcome is LoanOutcome.CURED_BY_PLEDGE for x in plan.loans
    )
    final = {r.name: r.detail for r in first.invariants if r.when == "final"}
    states = final["loans_repaid_disposed_or_covered"]
    assert f"{len(plan.loans)} loans" in states
    for state in ("DISPOSED", "OPEN", "REPAID"):
        assert f"'{state}'" in states

    again = await run(scenario, Target(directory=tmp_path / "b"), console=quiet())
    assert_passed(again)
    assert again.ledger_fingerprint == first.ledger_fingerprint
    reseeded = await run(scenario.with_seed(7), Target(directory=tmp_path / "c"), console=quiet())
    assert_passed(reseeded)
    assert reseeded.ledger_fingerprint != first.ledger_fingerprint


@pytest.mark.parametrize("seed", range(40))
def test_each_planned_loan_reaches_its_outcome_under_the_servers_arithmetic(seed: int) -> None:
    """The plan's amounts, run through settlement/ledger/loan_math.py (the server's rules): the
    opening limit holds; the walk never calls the margin of a loan that must stay clear and the
    fall always does; each cure restores owed <= lending value; each partial release is within
    what the repayment frees and leaves enough pledged; a default's stock count fails."""
    plan = make_plan(scenarios.load("gba-day").with_seed(seed))
    for loan in plan.loans:

        def lending(units: int, price: int) -> int:
            items = [loan_math.Pledged("r", units, units, "GOOD", 0)]
            return loan_math.lending_value(items, price, LOAN_HAIRCUT_BPS)

        owed = loan.owed_minor
        assert loan_math.within_limit(
            loan.principal_minor + loan.fee_minor, lending(loan.units, loan.unit_price_minor)
        )
        margin_called = loan.outcome in (
            LoanOutcome.CURED_BY_REPAYMENT,
            LoanOutcome.CURED_BY_PLEDGE,
        )
        walk = loan.prices[:-1] if margin_called else loan.prices
        for price in walk:
            assert not loan_math.margin_breached(owed, lending(loan.units, price), 10_000)
        last = loan.prices[-1]
        if margin_called:
            assert loan_math.margin_breached(owed, lending(loan.units, last), 10_000)
        amount, release = loan.first_repayment
        if loan.outcome is LoanOutcome.CURED_BY_REPAYMENT:
            assert loan.fee_minor + 1 < amount < owed
            assert loan_math.within_limit(owed - amount, lending(loan.units, last))
        if loan.outcome is LoanOutcome.CURED_BY_PLEDGE:
            assert loan.more_units > 0
            assert loan_math.within_limit(owed, lending(loan.units + loan.more_units, last))
        if loan.outcome is LoanOutcome.REPAID_IN_PARTS:
            retired = amount - 1 - loan.fee_minor
            assert 0 < retired < loan.principal_minor
            assert release <= loan_math.releasable(loan.units, retired, loan.principal_minor)
            left = loan.principal_minor - retired
            assert loan_math.within_limit(left, lending(loan.units - release, last))
            assert loan.rest_minor == left + 1
        if loan.outcome is LoanOutcome.DEFAULTED:
            assert loan.stock is not None
            assert loan.stock[1] in ("SPOILED", "MISSING")
            assert loan.disposal == "RETAIN" or loan.sale_minor > 0
