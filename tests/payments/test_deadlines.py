"""Deadlines: with a controlled clock, across a restart, and with two replicas sweeping one
PostgreSQL database.

The contract is fleet.TIMED (the overseas-warehouse contract with ``deadline deliver_by``), so each
test puts the deadline where its clock is: a ManualClock for in-process servers, the real clock
for ``condpay serve`` child processes.

Two replicas are tested twice, for two different reasons:

- two ``condpay serve`` **processes** on one database, each sweeping on its own timer: what the
  issue asks for, and what a deployment does. The processes are black boxes, so this shows the
  outcome (one refund per payment) but cannot force their sweeps to overlap;
- two **in-process runtimes** sharing one ManualClock, whose sweeps are held at a barrier until
  both have read the same due payments: both then try to fire every one of them at once, so the
  row-lock path that keeps a deadline from firing twice is certainly exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import pytest
from condpay.v1 import ledger_pb2, payment_pb2

from settlement import limits
from settlement.clock import ManualClock
from settlement.ledger.deadline_reads import DeadlineReader, DueWork
from settlement.runtime import Runtime
from tests.payments.fleet import (
    CENTRAL_BANK,
    DAY_US,
    DECLARATION,
    SECOND_US,
    Connection,
    EventPlan,
    Fleet,
    PaymentPlan,
    RestartableServer,
    Sender,
    attest_call,
    audit,
    build_fleet,
    cancel_call,
    check_ledger,
    fetch_payments,
    lock_call,
    replica,
    wait_until_terminal,
    whole_seconds_now_us,
)
from tests.support.harness import Harness, start_harness

HOUR_US = 3_600 * SECOND_US
#: How far ahead the real-clock tests set their deadlines: the locks and attestations before it
#: must all be in, also on a loaded 2-core machine running the suite in parallel.
DUE_IN_US = 8 * SECOND_US
EXPIRED = payment_pb2.PAYMENT_STATE_EXPIRED


def arrival_events(plan: PaymentPlan, observed_at_us: int) -> list[EventPlan]:
    """Customs clearance and the sensors' arrival: together they release 30% to the seller."""
    return [
        EventPlan(
            f"{plan.request_id}.customs",
            "customs.cleared",
            "customs",
            {"declaration": DECLARATION},
            observed_at_us - HOUR_US,
        ),
        EventPlan(
            f"{plan.request_id}.arrived",
            "iot.arrived",
            "sensors",
            {"site": "LAX-FBA-3"},
            observed_at_us,
            ("iot.lax3.dock", "iot.lax3.gate"),
        ),
    ]


async def lock_and_release(
    connection: Connection,
    fleet: Fleet,
    plans: list[PaymentPlan],
    *,
    now_us: int,
    partly: Collection[str] = (),
    connections: list[Connection] | None = None,
) -> None:
    """Lock every plan (spread over ``connections`` when given); release 30% of those named in
    ``partly``."""
    pool = connections or [connection]
    sender = Sender()

    async def one(i: int, plan: PaymentPlan) -> None:
        via = pool[i % len(pool)]
        locked = await sender.send(via, lock_call(fleet, plan, expires_at_us=now_us + DAY_US))
        assert locked.ok, f"{plan.request_id}: {locked}"
        if plan.request_id in partly:
            for event in arrival_events(plan, now_us - HOUR_US):
                answer = await sender.send(
                    via, attest_call(fleet, plan, event, issued_at_us=now_us)
                )
                assert answer.ok, f"{event.event_id}: {answer}"

    await asyncio.gather(*(one(i, p) for i, p in enumerate(plans)))


async def journal_kinds(connection: Connection) -> Counter[str]:
    cb = connection.client(CENTRAL_BANK)
    return Counter([ledger_pb2.EntryKind.Name(e.kind) async for e in cb.journal(page_size=1000)])


async def deadline_refunds(connection: Connection) -> Counter[str]:
    """Per payment, how many journal entries refunded its deadline leg."""
    cb = connection.client(CENTRAL_BANK)
    return Counter(
        [
            e.memo.split(" ")[0]
            async for e in cb.journal(page_size=1000)
            if e.kind == ledger_pb2.ENTRY_KIND_REFUND and e.memo.endswith(" deadline/0")
        ]
    )


def legs_of(payment: payment_pb2.Payment) -> list[tuple[str, str, int]]:
    return [(g.leg_id, g.kind, g.amount.amount_minor) for g in payment.legs]


# -- a controlled clock ----------------------------------------------------------------------------
async def _unavailable(now_us: int, until_us: int, limit: int) -> DueWork:
    raise ConnectionError("the database is away")


@contextlib.asynccontextmanager
async def swept_by_hand(
    database_url: str, clock: ManualClock
) -> AsyncIterator[tuple[Harness, Connection, Fleet]]:
    """A server on ``clock`` whose deadline sweep runs only when the test calls it, with a
    buyer and a seller."""
    async with start_harness(database_url, clock=clock) as h:
        await h.runtime.deadlines.stop()
        connection = Connection(h.address)
        try:
            fleet = await build_fleet(connection, buyers=1, sellers=1, funding_minor=10_000_00)
            yield h, connection, fleet
        finally:
            await connection.close()


async def test_the_sweep_wakes_at_a_deadline_within_its_period(database_url: str) -> None:
    """A deadline within one sweep period is swept at its instant: after each sweep the
    sweeper waits until the earliest open deadline it saw coming, not for the period's end."""
    start = whole_seconds_now_us()
    clock = ManualClock(start)
    period = limits.DEADLINE_SWEEP_SECONDS
    async with swept_by_hand(database_url, clock) as (h, connection, fleet):
        sweeper = h.runtime.deadlines
        soon = PaymentPlan("wake-soon", "buyer-0", "seller-0", 100_00, start + 2 * SECOND_US)
        next_ = PaymentPlan("wake-next", "buyer-0", "seller-0", 100_00, start + 3 * SECOND_US)
        later = PaymentPlan("wake-later", "buyer-0", "seller-0", 100_00, start + HOUR_US)
        plans = [soon, next_, later]
        await lock_and_release(connection, fleet, plans, now_us=start)

        assert await sweeper.sweep() == 0
        assert sweeper.pause_seconds() == period  # nothing within the period
        clock.set(soon.deliver_by_us - 200_000)
        assert await sweeper.sweep() == 0
        assert sweeper.pause_seconds() == pytest.approx(0.2)
        clock.set(soon.deliver_by_us)
        assert await sweeper.sweep() == 1
        assert sweeper.pause_seconds() == period  # the next one is a second away
        clock.set(next_.deliver_by_us - 300_000)
        assert await sweeper.sweep() == 0
        assert sweeper.pause_seconds() == pytest.approx(0.3)
        clock.advance(0.1)  # time passes while the sweep waits: it waits less
        assert sweeper.pause_seconds() == pytest.approx(0.2)
        clock.advance(0.199)  # a millisecond before it: the sweep still waits its shortest pause
        assert sweeper.pause_seconds() == limits.DEADLINE_SWEEP_MIN_SECONDS
        clock.advance(-0.199)
        # A sweep that fails (the database away, say) waits a whole period, never less.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sweeper.reads, "due", _unavailable)
            clock.advance(0.5)  # past the deadline it was waiting for
            with pytest.raises(ConnectionError):
                await sweeper.sweep()
        assert sweeper.pause_seconds() == period
        clock.set(next_.deliver_by_us)
        assert await sweeper.sweep() == 1
        assert sweeper.pause_seconds() == period  # the last one is an hour away
        payments = await fetch_payments(connection.client(CENTRAL_BANK), plans)
        assert [payments[p.payment_id].state for p in plans] == [
            EXPIRED,
            EXPIRED,
            payment_pb2.PAYMENT_STATE_LOCKED,
        ]


async def test_a_deadline_fires_when_its_time_comes_and_only_once(database_url: str) -> None:
    start = whole_seconds_now_us()
    clock = ManualClock(start)
    deadline = start + HOUR_US
    async with swept_by_hand(database_url, clock) as (h, connection, fleet):
        sweeper = h.runtime.deadlines
        untouched = PaymentPlan("dl-untouched", "buyer-0", "seller-0", 1_000_00, deadline)
        # 30% of 2,000.01 is 600.003: 600.00 released, the odd fen goes back at the deadline.
        half = PaymentPlan("dl-partly", "buyer-0", "seller-0", 2_000_01, deadline)
        later = PaymentPlan("dl-later", "buyer-0", "seller-0", 500_00, deadline + HOUR_US)
        plans = [untouched, half, later]
        await lock_and_release(connection, fleet, plans, now_us=start, partly={"dl-partly"})
        cb = connection.client(CENTRAL_BANK)
        before = await journal_kinds(connection)

        # Before the deadline, to the last microsecond: nothing.
        assert await sweeper.sweep() == 0
        clock.set(deadline - 1)
        assert await sweeper.sweep() == 0
        payments = await fetch_payments(cb, plans)
        assert [payments[p.payment_id].state for p in plans] == [
            payment_pb2.PAYMENT_STATE_LOCKED,
            payment_pb2.PAYMENT_STATE_PARTIALLY_RELEASED,
            payment_pb2.PAYMENT_STATE_LOCKED,
        ]
        assert await journal_kinds(connection) == before

        # At the deadline: the two due payments refund what they hold and expire.
        clock.set(deadline)
        assert await sweeper.sweep() == 2
        payments = await fetch_payments(cb, plans)
        first, second, third = (payments[p.payment_id] for p in plans)
        assert (first.state, first.terminal_reason) == (EXPIRED, "deadline")
        assert legs_of(first) == [("deadline/0", "refund", 1_000_00)]
        assert (second.state, second.terminal_reason) == (EXPIRED, "deadline")
        assert legs_of(second) == [
            ("arrival/0", "pay", 600_00),
            ("deadline/0", "refund", 1_400_01),
        ]
        assert (second.held.amount_minor, second.refunded.amount_minor) == (0, 1_400_01)
        assert third.state == payment_pb2.PAYMENT_STATE_LOCKED
        after = await journal_kinds(connection)
        assert after - before == Counter({"ENTRY_KIND_REFUND": 2})

        # A second sweep at the same instant, and a later one: nothing more.
        assert await sweeper.sweep() == 0
        clock.set(deadline + 1)
        assert await sweeper.sweep() == 0
        assert await journal_kinds(connection) == after
        assert await fetch_payments(cb, plans) == payments

        # An expired payment takes no attestation and no cancellation.
        sender = Sender()
        late = EventPlan(
            "dl-untouched.arrived",
            "iot.arrived",
            "sensors",
            {"site": "LAX-FBA-3"},
            start - HOUR_US,
            ("iot.lax3.gate", "iot.lax3.rfid"),
        )
        refused = await sender.send(
            connection, attest_call(fleet, untouched, late, issued_at_us=clock.now_us())
        )
        assert (refused.code, refused.reason) == ("FAILED_PRECONDITION", "PAYMENT_NOT_OPEN")
        cancelled = await sender.send(
            connection,
            cancel_call(fleet, untouched, request_id="dl-cancel", expires_at_us=start + DAY_US),
        )
        assert (cancelled.code, cancelled.reason) == (
            "FAILED_PRECONDITION",
            "PAYMENT_NOT_OPEN",
        )
        await check_ledger(cb, fleet, payments)

        # The later deadline fires when its own time comes.
        clock.set(later.deliver_by_us)
        assert await sweeper.sweep() == 1
        payments = await fetch_payments(cb, plans)
        assert legs_of(payments[later.payment_id]) == [("deadline/0", "refund", 500_00)]
        await check_ledger(cb, fleet, payments)
        # The buyer has all its money back but the 600.00 the seller was paid.
        buyer = await cb.get_wallet(fleet.wallets["buyer-0"])
        (cny,) = (b for b in buyer.balances if b.available.currency == "CNY")
        assert (cny.available.amount_minor, cny.held.amount_minor) == (10_000_00 - 600_00, 0)


# -- across a restart ------------------------------------------------------------------------------
async def test_the_deadline_fires_from_the_durable_schedule_after_a_restart(
    database_url: str,
) -> None:
    """Lock with one server, stop it, start another on the same database at a time past the
    deadline: its own sweeper finds the payment in the database and fires it, once."""
    start = whole_seconds_now_us()
    deadline = start + HOUR_US
    plans = [
        PaymentPlan("rs-untouched", "buyer-0", "seller-0", 1_000_00, deadline),
        PaymentPlan("rs-partly", "buyer-0", "seller-0", 3_000_00, deadline),
    ]
    async with start_harness(database_url, clock=ManualClock(start)) as first:
        connection = Connection(first.address)
        try:
            fleet = await build_fleet(connection, buyers=1, sellers=1, funding_minor=10_000_00)
            await lock_and_release(connection, fleet, plans, now_us=start, partly={"rs-partly"})
        finally:
            await connection.close()

    async with start_harness(database_url, clock=ManualClock(deadline + HOUR_US)) as second:
        connection = Connection(second.address)
        try:
            cb = connection.client(CENTRAL_BANK)
            payments = await wait_until_terminal(
                cb, [p.payment_id for p in plans], timeout_seconds=10
            )
            untouched, partly = (payments[p.payment_id] for p in plans)
            assert untouched.state == partly.state == EXPIRED
            assert legs_of(untouched) == [("deadline/0", "refund", 1_000_00)]
            assert legs_of(partly) == [
                ("arrival/0", "pay", 900_00),
                ("deadline/0", "refund", 2_100_00),
            ]
            await asyncio.sleep(1.2)  # two more sweep periods: still one refund each
            assert await deadline_refunds(connection) == Counter({p.payment_id: 1 for p in plans})
            await check_ledger(cb, fleet, await fetch_payments(cb, plans))
        finally:
            await connection.close()


async def test_the_deadline_survives_a_killed_server_process(
    database_url: str, tmp_path: Path
) -> None:
    """A ``condpay serve`` process (real clock) locks payments due in a few seconds and is
    SIGKILLed before they are due; a new process on the same database fires them."""
    server = RestartableServer(database_url, tmp_path)
    connection: Connection | None = None
    try:
        server.start_with()
        await server.wait_ready()
        connection = Connection(server.address)
        fleet = await build_fleet(connection, buyers=1, sellers=1, funding_minor=10_000_00)
        now = whole_seconds_now_us()
        deadline = now + DUE_IN_US
        plans = [
            PaymentPlan("kd-untouched", "buyer-0", "seller-0", 1_000_00, deadline),
            PaymentPlan("kd-partly", "buyer-0", "seller-0", 3_000_00, deadline),
        ]
        await lock_and_release(connection, fleet, plans, now_us=now, partly={"kd-partly"})
        killed_at_us = time.time_ns() // 1000
        assert server.stop(kill=True) == -9
        assert killed_at_us < deadline - SECOND_US, "too slow: killed after the deadline"
        await asyncio.sleep((deadline - killed_at_us) / SECOND_US + 0.3)

        server.start_with()
        await server.wait_ready()
        cb = connection.client(CENTRAL_BANK)
        payments = await wait_until_terminal(cb, [p.payment_id for p in plans], timeout_seconds=10)
        untouched, partly = (payments[p.payment_id] for p in plans)
        assert untouched.state == partly.state == EXPIRED
        assert legs_of(untouched) == [("deadline/0", "refund", 1_000_00)]
        assert legs_of(partly) == [("arrival/0", "pay", 900_00), ("deadline/0", "refund", 2_100_00)]
        assert await deadline_refunds(connection) == Counter({p.payment_id: 1 for p in plans})
        await check_ledger(cb, fleet, payments)
        report = await audit(database_url)
        assert report.ok, report.failures
    finally:
        if connection is not None:
            await connection.close()
        server.stop(kill=True)


# -- two replicas on one PostgreSQL ----------------------------------------------------------------
REPLICATED_PAYMENTS = 50


def replicated_plans(deadline_us: int) -> list[PaymentPlan]:
    return [
        PaymentPlan(
            f"two-{i}",
            f"buyer-{i % 5}",
            f"seller-{i % 2}",
            1_000_00 + 7 * i,
            deadline_us + (i % 2) * SECOND_US,  # two sweeps' worth of due payments
        )
        for i in range(REPLICATED_PAYMENTS)
    ]


async def check_fired_once(
    connection: Connection, fleet: Fleet, plans: list[PaymentPlan]
) -> dict[str, payment_pb2.Payment]:
    cb = connection.client(CENTRAL_BANK)
    payments = await fetch_payments(cb, plans)
    assert {payment_pb2.PaymentState.Name(p.state) for p in payments.values()} == {
        "PAYMENT_STATE_EXPIRED"
    }
    assert await deadline_refunds(connection) == Counter({p.payment_id: 1 for p in plans})
    for plan in plans:
        payment = payments[plan.payment_id]
        assert [g.leg_id for g in payment.legs].count("deadline/0") == 1
        assert payment.refunded.amount_minor + payment.released.amount_minor == plan.price_minor
    await check_ledger(cb, fleet, payments)
    return payments


@pytest.mark.postgres
@pytest.mark.slow
async def test_two_server_processes_fire_each_deadline_once(pg_url: str, tmp_path: Path) -> None:
    servers = [
        RestartableServer(pg_url, tmp_path / "a"),
        RestartableServer(pg_url, tmp_path / "b"),
    ]
    connections: list[Connection] = []
    try:
        for server in servers:  # both at once, as replicas start: the migration takes turns
            # Replicas share a database, never an in-process bridge's state file.
            server.start_with({"CONDPAY_BRIDGE": "none"})
        await asyncio.gather(*(s.wait_ready() for s in servers))
        connections = [Connection(s.address) for s in servers]
        fleet = await build_fleet(connections[0], buyers=5, sellers=2, funding_minor=100_000_00)
        now = whole_seconds_now_us()
        plans = replicated_plans(now + DUE_IN_US)
        await lock_and_release(
            connections[0],
            fleet,
            plans,
            now_us=now,
            partly={p.request_id for p in plans[::3]},
            connections=connections,
        )
        cb = connections[1].client(CENTRAL_BANK)
        await wait_until_terminal(cb, [p.payment_id for p in plans], timeout_seconds=20)
        await asyncio.sleep(1.5)  # three more sweep periods of each replica
        await check_fired_once(connections[0], fleet, plans)
        assert all(s.exit_status() is None for s in servers), "a replica died"
        report = await audit(pg_url)
        assert report.ok, report.failures
    finally:
        for connection in connections:
            await connection.close()
        for server in servers:
            server.stop(kill=True)


def hold_at_barrier(reads: DeadlineReader, barrier: asyncio.Barrier) -> None:
    """Make the sweep that reads through ``reads`` wait, after reading the due payments, until
    the other runtime's sweep has read them too."""
    read = reads.due

    async def due(now_us: int, until_us: int, limit: int) -> DueWork:
        work = await read(now_us, until_us, limit)
        await barrier.wait()
        return work

    reads.due = due  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def racing_replicas(
    pg_url: str,
) -> AsyncIterator[tuple[list[Runtime], Connection, Fleet, list[PaymentPlan], ManualClock]]:
    start = whole_seconds_now_us()
    clock = ManualClock(start)
    async with start_harness(pg_url, clock=clock) as h, replica(pg_url, clock) as other:
        runtimes = [h.runtime, other.runtime]
        for runtime in runtimes:
            await runtime.deadlines.stop()  # the test sweeps, both at once
        connection = Connection(h.address)
        to_other = Connection(f"127.0.0.1:{other.port}")
        try:
            fleet = await build_fleet(connection, buyers=5, sellers=2, funding_minor=100_000_00)
            plans = replicated_plans(start + HOUR_US)
            await lock_and_release(
                connection,
                fleet,
                plans,
                now_us=start,
                partly={p.request_id for p in plans[::3]},
                connections=[connection, to_other],
            )
            clock.set(start + HOUR_US + SECOND_US)
            barrier = asyncio.Barrier(2)
            for runtime in runtimes:
                hold_at_barrier(runtime.deadlines.reads, barrier)
            yield runtimes, connection, fleet, plans, clock
        finally:
            await connection.close()
            await to_other.close()


@pytest.mark.postgres
async def test_two_runtimes_sweeping_at_once_fire_each_deadline_once(pg_url: str) -> None:
    async with racing_replicas(pg_url) as (runtimes, connection, fleet, plans, _clock):
        submitted = [r.engine.batch_commands for r in runtimes]
        await asyncio.gather(*(r.deadlines.sweep() for r in runtimes))
        # Both read all 50 due payments and both ran a FireDeadline for every one of them.
        ran = [
            r.engine.batch_commands - before for r, before in zip(runtimes, submitted, strict=True)
        ]
        assert min(ran) >= REPLICATED_PAYMENTS, ran
        await check_fired_once(connection, fleet, plans)
        assert await asyncio.gather(*(r.deadlines.sweep() for r in runtimes)) == [0, 0]
        await check_fired_once(connection, fleet, plans)


@pytest.mark.postgres
async def test_racing_sweeps_count_only_the_deadlines_they_fired(pg_url: str) -> None:
    """``DeadlineSweeper.sweep`` returns "how many changed": between two replicas that raced
    for the same 50 payments, 50 in all (the loser's no-ops are not firings)."""
    async with racing_replicas(pg_url) as (runtimes, connection, fleet, plans, _clock):
        counts = await asyncio.gather(*(r.deadlines.sweep() for r in runtimes))
        await check_fired_once(connection, fleet, plans)
        assert sum(counts) == REPLICATED_PAYMENTS, counts
        assert sum(r.deadlines.fired for r in runtimes) == REPLICATED_PAYMENTS
