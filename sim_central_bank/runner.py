"""``condpay sim run``: set up the economy, trade round by round, inject the scenario's faults,
audit during and after, and hand the record to the report.

Rounds keep a run replayable: each round publishes its rates of the seeded walk, then sends its
orders (at most ``concurrency`` at once) and waits until every one of them has reached the state
the plan gives it, payouts through the bridge included, before the next round moves the rates.
So whatever the timing, every quote of a round is priced at the same rates, and the same seed
gives the same final ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import os
import random
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
import orjson
from condpay.errors import ApiError, NotFound
from condpay.ids import loan_id_for, payment_id_for
from condpay.v1 import finance_pb2, payment_pb2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bridges import BridgeClient
from bridges.errors import BridgeError, Reason
from sim_central_bank.auditor import AUDITOR_CALLER, Auditor, every_page
from sim_central_bank.bounded import run_bounded
from sim_central_bank.bridge_process import BridgeProcess
from sim_central_bank.economy import (
    SIM_AUDITOR,
    Economy,
    central_bank_caller,
    institution,
    publish_rates,
    set_up,
)
from sim_central_bank.lending import LoanDesk
from sim_central_bank.metered import MeteredClient
from sim_central_bank.plan import ArrivalFault, Plan, make_plan
from sim_central_bank.record import ACCEPTED, Expectations, InvariantResult, RunRecord
from sim_central_bank.scenario import SELLER_CURRENCY, Scenario
from sim_central_bank.server_process import ServerProcess
from sim_central_bank.trading import SURPRISE, Trader

#: Clients reconnect fast and keep retrying a transient failure (a killed server) this often.
CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)
ATTEMPTS_MAX: Final = 40
SAMPLE_SECONDS: Final = 0.5
#: How much of its reserve each institution redeems at the end of the day.
REDEEM_PERCENT: Final = 10
#: After a bridge restart, its client's channel may still be backing off: this many tries.
REPUBLISH_ATTEMPTS: Final = 100
REPUBLISH_PAUSE_SECONDS: Final = 0.1
#: The simulator's own bridge client (rates, the audit's reads): the bridge's audit walks every
#: transfer it ever made (1.5 s at the end of gba-day on an idle machine), past the client's
#: default 5 s deadline on a loaded 2-core one, which broke runs off at a round's end.
BRIDGE_DEADLINE_MS: Final = 60_000
#: The fingerprint lists the payments this many a page (ListPayments' maximum).
FINGERPRINT_PAGE: Final = 500


class TargetError(Exception):
    """Where the run was asked to go cannot take it (e.g. a database that already holds a
    ledger for ``--embedded``): refused before any trade, with what to do instead."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where to run: a server the simulator starts (``database_url``), or a running one."""

    server: str | None = None  # HOST:PORT of a running core (insecure mode)
    bridge: str | None = None  # HOST:PORT of its bridge, for rates and the audit
    database_url: str | None = None  # for the server the simulator starts
    directory: Path = Path("var") / "sim"


@contextlib.contextmanager
def _run_directory(directory: Path) -> Iterator[None]:
    """Hold ``directory`` (a scenario's: its database, the bridge's state, the logs) for this run:
    an exclusive lock on ``<directory>.lock`` beside it, released when the run ends (or its
    process dies). A second run of the scenario in the same place is refused (TargetError) instead
    of deleting the ledger of the first while its servers write to it."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = directory.with_name(directory.name + ".lock")
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise TargetError(
                f"another simulator run ({holder}) is using {directory}: wait for it to end, or "
                "start this one from another working directory"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Stack:
    """The core and the bridge as child processes, when the simulator starts them (the caller
    holds the scenario's directory: :func:`_run_directory`)."""

    def __init__(self, scenario: Scenario, target: Target, record: RunRecord) -> None:
        self.directory = target.directory / scenario.name
        self.record = record
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        url = target.database_url or f"sqlite:///{self.directory / 'condpay.db'}"
        record.database = url.split(":", 1)[0].split("+", 1)[0]
        self.bridge = (
            BridgeProcess(self.directory / "bridge.db", self.directory / "logs")
            if len(scenario.currencies) > 1
            else None
        )
        env = self.bridge.core_env() if self.bridge else {}
        # Without a log line per call: the simulator measures every call itself.
        self.core = ServerProcess(
            url,
            log_path=self.directory / "logs" / "server.log",
            extra_env=env,
            extra_args=("--quiet-calls",),
        )
        self.faults = scenario.faults.bridge
        self.seed = scenario.seed

    async def start(self) -> None:
        if self.bridge is not None:
            await self.bridge.start(self.faults, seed=self.seed)
        self.core.start()
        await self.core.wait_ready()

    async def kill_core(self) -> None:
        self.core.stop(kill=True)
        self.record.faults["server_kill"] += 1
        self.core.start()
        await self.core.wait_ready()

    async def kill_bridge(self, then: Callable[[], Awaitable[None]] | None = None) -> None:
        """SIGKILL the bridge, restart it on its state file (no bootstrap: that would publish
        the demo rates), then ``then`` (the runner republishes the round's rates)."""
        assert self.bridge is not None
        await self.bridge.stop(kill=True)
        self.record.faults["bridge_kill"] += 1
        await self.bridge.start(self.faults, seed=self.seed)
        if then is not None:
            await then()

    async def stop(self) -> None:
        self.core.stop()
        if self.bridge is not None:
            await self.bridge.stop()
        if not self.core.log_path.exists():
            return
        # What the faults made the core do, from its log (settlement/coordination).
        log = self.core.log_path.read_text(errors="replace")
        for event in ("bridge_retry", "bridge_unreachable"):
            if found := log.count(f'"event":"{event}"'):
                self.record.faults[f"core log: {event}"] += found


@contextlib.asynccontextmanager
async def _stack(
    scenario: Scenario, target: Target, record: RunRecord, console: Console
) -> AsyncIterator[tuple[str, str | None, Stack | None]]:
    if target.server:
        record.database = "external"
        yield target.server, target.bridge, None
        return
    with _run_directory(target.directory / scenario.name):
        async with _started(Stack(scenario, target, record), console) as started:
            yield started


@contextlib.asynccontextmanager
async def _started(
    stack: Stack, console: Console
) -> AsyncIterator[tuple[str, str | None, Stack | None]]:
    record = stack.record
    console.print(
        f"Starting condpay on {record.database} and the bridge as child processes; logs in "
        f"{stack.directory / 'logs'}"
    )
    try:
        # Inside: a core that fails to start must not leave the bridge child running.
        await stack.start()
        yield stack.core.address, stack.bridge.address if stack.bridge else None, stack
    finally:
        await stack.stop()


def check_target(scenario: Scenario, target: Target) -> None:
    """Refuse (:class:`TargetError`) a target that would be silently half-used."""
    if target.bridge and not target.server:
        raise TargetError("--bridge goes with --server (the simulator starts its own bridge)")
    if not target.server:
        return
    if target.database_url:
        raise TargetError(
            "--database-url is for the core the simulator starts (--embedded); the server at "
            f"{target.server} has its own database"
        )
    if len(scenario.currencies) > 1 and not target.bridge:
        raise TargetError(
            f"scenario {scenario.name} trades in {', '.join(scenario.currencies)}: give the "
            "server's bridge with --bridge ADDR (the rates are published there, and the audit "
            "checks the bridge side)"
        )


async def run(scenario: Scenario, target: Target, *, console: Console, tag: str = "") -> RunRecord:
    """Run ``scenario`` on ``target`` and return its record. Raises :class:`TargetError` for a
    target that cannot take the run, before any trade."""
    check_target(scenario, target)
    plan = make_plan(scenario)
    record = RunRecord(scenario.name, scenario.seed, target.server or "embedded", "")
    record.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    if target.server and not tag:
        # A running server keeps what earlier runs did: this run's request ids must be new.
        tag = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    prefix = f"sim.{scenario.name}.{scenario.seed}" + (f".{tag}" if tag else "")
    async with _stack(scenario, target, record, console) as (address, bridge_address, stack):
        record.server = address
        channel = grpc.aio.insecure_channel(address, options=list(CHANNEL_OPTIONS))
        core = MeteredClient(
            address,
            caller=central_bank_caller(SELLER_CURRENCY),
            channel=channel,
            record=record,
            started=started,
            attempts_max=ATTEMPTS_MAX,
            timeout_seconds=30.0,
        )
        bridge = (
            BridgeClient(bridge_address, identity=SIM_AUDITOR, deadline_ms=BRIDGE_DEADLINE_MS)
            if bridge_address
            else None
        )
        try:
            if stack is not None and target.database_url:
                await _refuse_a_used_ledger(core, target.database_url)
            await _trade(plan, prefix, core, bridge, stack, record, console)
        finally:
            await channel.close()
            if bridge is not None:
                await bridge.close()
    record.duration_s = round(time.perf_counter() - started, 3)
    return record


async def _trade(
    plan: Plan,
    prefix: str,
    core: MeteredClient,
    bridge: BridgeClient | None,
    stack: Stack | None,
    record: RunRecord,
    console: Console,
) -> None:
    scenario = plan.scenario
    with console.status("Central banks, institutions, oracles, wallets and contracts…"):
        economy = await set_up(core, bridge, plan, prefix)
    expectations = Expectations(scenario.currencies)
    auditor = Auditor(core, bridge, expectations)
    await auditor.adopt_open_payments("open before this run began")
    await auditor.baseline()
    trader = Trader(economy, core, record, expectations)
    desk = LoanDesk(trader) if plan.loans else None
    kills = _kill_schedule(plan, stack, bridge)
    sampler = asyncio.create_task(_sample(auditor, record, core.started))
    total = scenario.orders_total + sum(len(d) for d in plan.direct) + len(plan.loans)
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(f"{scenario.name} round 1", total=total, status="")
            for index, orders in enumerate(plan.rounds):
                progress.update(task, description=f"{scenario.name} round {index + 1}")
                if index and bridge is not None:
                    await publish_rates(bridge, plan, index)
                # Loans and late orders first: a defaulting loan and a late order each wait for
                # the deadline sweep (seconds), and do it while the other orders run, not after.
                jobs: list[Callable[[], Awaitable[None]]] = []
                if desk is not None:
                    jobs += [functools.partial(desk.run_loan, x) for x in plan.loan_rounds[index]]
                late_first = sorted(orders, key=lambda o: o.arrival_fault is not ArrivalFault.LATE)
                jobs += [functools.partial(trader.run_order, o) for o in late_first]
                jobs += [functools.partial(trader.run_direct, d) for d in plan.direct[index]]
                faults = [
                    asyncio.create_task(_after(delay, action))
                    for at, delay, action in kills
                    if at == index
                ]

                def advance() -> None:
                    surprises = sum(n for (op, _), n in record.operations.items() if op == SURPRISE)
                    progress.update(
                        task,
                        advance=1,
                        status=f"{record.settlements_total} settled, {surprises} surprises",
                    )

                await run_bounded(jobs, scenario.concurrency, advance)
                await asyncio.gather(*faults)
                record.invariants += await auditor.check(final=False, when=f"round {index + 1}")
        await _end_of_day(economy, core, record)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    record.timeline.append(
        await auditor.sample(round(time.perf_counter() - core.started, 3), record.settlements_total)
    )
    record.invariants += await auditor.check(final=True)
    record.invariants.append(_as_planned(record))
    record.ledger_fingerprint = await fingerprint(economy, core)


async def _refuse_a_used_ledger(core: MeteredClient, database_url: str) -> None:
    """--embedded on a database of the user's: it must be empty. A ledger earlier runs left
    there would collide with this run's request ids, and its settlements would name transfers
    the fresh bridge never saw."""
    head = (await core.get_supply()).as_of_seq
    if head:
        where = database_url.split("@")[-1]  # no password in the message
        raise TargetError(
            f"the database {where} already holds a ledger (journal head {head}): give "
            "--embedded an empty database, or drive the server that uses it with --server"
        )


def _kill_schedule(
    plan: Plan, stack: Stack | None, bridge: BridgeClient | None
) -> list[tuple[int, float, Callable[[], Awaitable[None]]]]:
    """(round, seconds into it, kill) for each server and bridge kill, drawn from the seed;
    none against a server the simulator did not start. A bridge kill republishes its round's
    rates once the bridge is back."""
    scenario = plan.scenario
    if stack is None:
        return []
    draws = random.Random(f"condpay-sim:{scenario.seed}:kills")
    kills: list[tuple[int, float, Callable[[], Awaitable[None]]]] = []
    for _ in range(scenario.faults.server_kills):
        kills.append((draws.randrange(scenario.rounds), draws.uniform(0.2, 1.5), stack.kill_core))
    if stack.bridge is not None and bridge is not None:
        for _ in range(scenario.faults.bridge_kills):
            at = draws.randrange(scenario.rounds)
            republish = functools.partial(_republish_rates, bridge, plan, at)
            kill = functools.partial(stack.kill_bridge, then=republish)
            kills.append((at, draws.uniform(0.2, 1.5), kill))
    return kills


async def _republish_rates(bridge: BridgeClient, plan: Plan, round_index: int) -> None:
    """The round's rates again on a restarted bridge (its state file has them already: this
    makes sure, whatever the restart did), retried while its channel reconnects."""
    for attempt in range(REPUBLISH_ATTEMPTS):
        try:
            await publish_rates(bridge, plan, round_index)
            return
        except BridgeError as error:
            if error.reason is not Reason.UNREACHABLE or attempt == REPUBLISH_ATTEMPTS - 1:
                raise
            await asyncio.sleep(REPUBLISH_PAUSE_SECONDS)


async def _after(delay_s: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(delay_s)
    await action()


async def _sample(auditor: Auditor, record: RunRecord, started: float) -> None:
    while True:
        await asyncio.sleep(SAMPLE_SECONDS)
        with contextlib.suppress(Exception):  # a sample lost to a kill is only a gap in a plot
            record.timeline.append(
                await auditor.sample(
                    round(time.perf_counter() - started, 3), record.settlements_total
                )
            )


async def _end_of_day(economy: Economy, core: MeteredClient, record: RunRecord) -> None:
    """Each institution redeems part of its reserve back to its central bank. A call that fails
    is a surprise of the run (which then fails ``operations_as_planned``), not its end."""
    for currency in economy.plan.scenario.currencies:
        bank = institution(currency)
        try:
            # Read by the currency's central bank: a central bank sees its own currency's money.
            issuer = core.with_caller(central_bank_caller(currency))
            wallet = await issuer.get_wallet(f"w_reserve.{bank}")
            available = sum(
                line.available.amount_minor
                for line in wallet.balances
                if line.available.currency == currency
            )
            amount = available * REDEEM_PERCENT // 100
            if amount:
                await issuer.redeem(
                    bank,
                    currency,
                    amount,
                    memo="end-of-day redemption",
                    request_id=economy.rid("redeem", bank, currency),
                )
                record.count("redeem", ACCEPTED)
        except ApiError as error:
            outcome = error.reason or error.code.name
            record.count("redeem", outcome)
            record.count(SURPRISE, f"end of day {bank} {currency} failed: {outcome}")


def _as_planned(record: RunRecord) -> InvariantResult:
    surprises = {outcome: n for (op, outcome), n in record.operations.items() if op == SURPRISE}
    detail = (
        "every operation had the outcome its plan gives it"
        if not surprises
        else "; ".join(f"{outcome} x{n}" for outcome, n in sorted(surprises.items())[:10])
    )
    return InvariantResult("operations_as_planned", not surprises, detail)


async def fingerprint(economy: Economy, core: MeteredClient) -> str:
    """SHA-256 over what the same seed must reproduce: every party's balances by name, every
    order's payment state and amounts, every reserve's balances, and every loan's state,
    amounts and collateral (what a closed loan owed; an open one's interest is left out: it
    grows with the clock)."""
    wallets = {
        p.name: p.wallet_id for p in (*economy.sellers, *economy.buyers, *economy.financiers)
    }
    for currency in economy.plan.scenario.currencies:
        bank = institution(currency)
        wallets[f"reserve:{bank}"] = f"w_reserve.{bank}"
    state: dict[str, object] = {}
    core = core.with_caller(AUDITOR_CALLER)  # every wallet's every balance, every payment
    for name, wallet_id in sorted(wallets.items()):
        wallet = await core.get_wallet(wallet_id)
        state[name] = sorted(
            (b.available.currency, b.available.amount_minor, b.held.amount_minor)
            for b in wallet.balances
        )
    orders = {
        payment_id_for(f"platform/sim-{o.platform}", economy.rid(o.order_id, "lock")): o.order_id
        for o in economy.plan.orders
    }
    # Every payment (an order refused at its lock has none); on a running server, other runs'
    # payments are listed too.
    for payment in await every_page(
        core,
        payment_pb2.ListPaymentsRequest(
            page_size=FINGERPRINT_PAGE, view=payment_pb2.PAYMENT_VIEW_BASIC
        ),
        lambda page: page.payments,
    ):
        if (order_id := orders.get(payment.payment_id)) is not None:
            state[order_id] = [
                payment_pb2.PaymentState.Name(payment.state),
                payment.released.amount_minor,
                payment.refunded.amount_minor,
                payment.held.amount_minor,
            ]
    for planned in economy.plan.loans:
        financier = economy.financiers[planned.financier]
        loan_id = loan_id_for(f"financier/{financier.name}", economy.rid(planned.loan_id, "open"))
        try:
            loan = (
                await core.api.finance.get_loan(finance_pb2.GetLoanRequest(loan_id=loan_id))
            ).loan
        except NotFound:
            continue  # refused at its opening: the balances say so
        closed = loan.state in (finance_pb2.LOAN_STATE_REPAID, finance_pb2.LOAN_STATE_DISPOSED)
        state[planned.loan_id] = [
            finance_pb2.LoanState.Name(loan.state),
            loan.principal_outstanding_minor,
            loan.fee_outstanding_minor,
            loan.repaid_minor,
            loan.recovered_minor,
            loan.surplus_minor,
            loan.owed_minor if closed else None,
            loan.unit_price_minor,
            sorted((c.title_id, c.units, c.units_present, c.condition) for c in loan.collateral),
        ]
    return hashlib.sha256(orjson.dumps(state, option=orjson.OPT_SORT_KEYS)).hexdigest()
