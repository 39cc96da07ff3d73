"""Crashes: a ``condpay serve`` child process on PostgreSQL killed while conditional payments
flow, restarted on the same database each time, its clients retrying every call with the same
request id (the same bytes) until a definite answer.

- SIGKILL, repeatedly, while locks, attestations and cancels are in flight (kills at progress
  milestones, each one with requests in flight), plus deadlines due meanwhile;
- each fault-injection point (``CONDPAY_FAULT_POINTS``): after_lock_commit while payments are
  locked, after_commit_before_reply while attestations flow, deadline_sweep when deadlines come.
  The first incarnation of each phase has the point at probability 1 (so every point is
  certainly crashed at), later ones 0.15-0.3 with a new seed each, up to a crash budget.

Then: zero lost (every request id has its stored outcome: OperationService.GetOperation gives
back the answer the client got), zero outcome flips (asked again, every request id gets the same
answer, from storage), zero duplicated (one LOCK per payment, every leg once in the journal and
on the payment), a clean ledger audit, and the final state (payments' states, legs, amounts,
accepted events; balances; supply) equal to a run of the same calls on a fresh database by a
server that is never killed. Each payment's calls go one after another (the next once the last
has a definite answer) while the payments run concurrently: so the outcome of every call is
decided by the workload, not by timing, and the two runs must agree call by call too.

The server runs as one process (CONDPAY_WORKERS=1), so that "the server" is the process the test
kills and whose exit status tells which fault point it died at. (With the default of one worker
per CPU, SIGKILL of the parent takes the workers down with it, and a worker dying at a fault
point makes the parent stop the others: the same crash, counted per worker.)

Each test prints a CRASHES line with its kills, crashes, restarts, operations and retries.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from condpay.errors import ApiError, NotFound
from condpay.v1 import operation_pb2

from settlement.clock import ManualClock
from settlement.faults import CRASH_EXIT_STATUS
from tests.payments.fleet import (
    CENTRAL_BANK,
    DAY_US,
    SECOND_US,
    Answer,
    Call,
    Connection,
    EventPlan,
    Fleet,
    PaymentPlan,
    RestartableServer,
    Sender,
    ServerSupervisor,
    attest_call,
    audit,
    build_fleet,
    cancel_call,
    check_ledger,
    fetch_payments,
    final_state,
    lock_call,
    random_events,
    wait_until_terminal,
    whole_seconds_now_us,
)
from tests.support.harness import start_harness
from tests.support.postgres import PostgresServer
from wallets.instructions import AttestationStatement

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]

FLOWS = 24  # payments with attestations (the first CANCELS of them cancelled midway)
CANCELS = 4
NEAR = 6  # payments that only wait for their deadline, due during the run
AGAIN = 0.3  # an attestation delivered a second time under another request id
CLIENTS = 8
BUYERS, SELLERS, FUNDING = 6, 3, 100_000_00
KILLS = 7
PACE_SECONDS = (0.05, 0.3)  # between one payment's calls: keeps calls in flight at every kill


# -- the workload ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    kind: str  # lock | event | again | cancel
    event: EventPlan | None = None


@dataclass
class Workload:
    """What each payment does, and as a run goes: every call sent (per payment, in order) and
    the first definite answer to each request id."""

    fleet: Fleet
    plans: list[PaymentPlan]
    steps: dict[str, list[Step]]
    calls: dict[str, list[Call]] = field(default_factory=lambda: defaultdict(list))
    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    flips: list[str] = field(default_factory=list)

    @property
    def flows(self) -> list[PaymentPlan]:
        return [p for p in self.plans if p.events]

    @property
    def near(self) -> list[PaymentPlan]:
        return [p for p in self.plans if not p.events]

    def total_steps(self) -> int:
        return sum(len(s) for s in self.steps.values())

    def record(self, call: Call, answer: Answer) -> None:
        first = self.answers.setdefault(call.key, answer)
        if not first.same_as(answer):
            self.flips.append(f"{call.request_id}: {first} then {answer}")

    def all_calls(self) -> list[Call]:
        return [c for calls in self.calls.values() for c in calls]


def make_workload(fleet: Fleet, seed: int, now_us: int) -> Workload:
    rng = random.Random(seed)
    plans, steps = [], {}
    for i in range(FLOWS):
        buyer, seller = f"buyer-{i % BUYERS}", f"seller-{i % SELLERS}"
        plan = PaymentPlan(
            f"cr-{seed}-{i}", buyer, seller, rng.randrange(500_00, 5_000_00), now_us + 7 * DAY_US
        )
        plan.events = random_events(rng, f"cr-{seed}-{i}", fleet.wallets[buyer], now_us)
        cancel_after = rng.randint(1, 2) if i < CANCELS else 0
        sequence = [Step("lock")]
        for k, event in enumerate(plan.events, start=1):
            sequence.append(Step("event", event))
            if rng.random() < AGAIN:
                sequence.append(Step("again", event))
            if k == cancel_after:
                sequence.append(Step("cancel"))
        plans.append(plan)
        steps[plan.payment_id] = sequence
    for j in range(NEAR):
        # The deadline is set when the run knows when it wants it (see the tests).
        plan = PaymentPlan(
            f"cr-{seed}-near-{j}", f"buyer-{j % BUYERS}", "seller-0", 1_000_00 + j, 0
        )
        plans.append(plan)
        steps[plan.payment_id] = [Step("lock")]
    return Workload(fleet, plans, steps)


def now_us() -> int:
    return time.time_ns() // 1000


def build_call(workload: Workload, plan: PaymentPlan, step: Step) -> Call:
    fleet, at = workload.fleet, now_us()
    if step.kind == "lock":
        return lock_call(fleet, plan, expires_at_us=at + DAY_US)
    if step.kind == "cancel":
        return cancel_call(
            fleet, plan, request_id=f"{plan.request_id}.cancel", expires_at_us=at + DAY_US
        )
    assert step.event is not None
    again = f"{step.event.event_id}.again" if step.kind == "again" else ""
    return attest_call(fleet, plan, step.event, issued_at_us=at, request_id=again)


async def run_payment(
    workload: Workload,
    plan: PaymentPlan,
    connection: Connection,
    sender: Sender,
    pace: random.Random,
    kinds: Collection[str] = ("lock", "event", "again", "cancel"),
) -> None:
    """This payment's calls, one after another, each until a definite answer."""
    for step in workload.steps[plan.payment_id]:
        if step.kind not in kinds:
            continue
        await asyncio.sleep(pace.uniform(*PACE_SECONDS))
        call = build_call(workload, plan, step)
        workload.calls[plan.payment_id].append(call)
        workload.record(call, await sender.send(connection, call))


async def run_payments(
    workload: Workload,
    plans: list[PaymentPlan],
    connections: list[Connection],
    sender: Sender,
    seed: int,
    kinds: Collection[str] = ("lock", "event", "again", "cancel"),
) -> None:
    await asyncio.gather(
        *(
            run_payment(
                workload,
                plan,
                connections[i % len(connections)],
                sender,
                random.Random(seed * 1000 + i),
                kinds,
            )
            for i, plan in enumerate(plans)
        )
    )


# -- keeping the server alive ----------------------------------------------------------------------
class Supervisor(ServerSupervisor):
    """Each start may carry a fault-point setting: the first start of a phase at ``first``
    probability, later ones at ``later`` with a new seed, none once the phase has used its
    crash budget."""

    def __init__(self, server: RestartableServer, seed_base: int) -> None:
        super().__init__(server)
        self.seed_base = seed_base
        self._phase: tuple[str, float, float, int] | None = None
        self._phase_starts = 0
        self._phase_crashes = 0

    def faults(
        self, point: str | None, first: float = 1.0, later: float = 0.0, budget: int = 0
    ) -> None:
        self._phase = None if point is None else (point, first, later, budget)
        self._phase_starts = self._phase_crashes = 0

    def _env(self) -> dict[str, str]:
        if self._phase is None:
            return {}
        point, first, later, budget = self._phase
        if self._phase_crashes >= budget:
            return {}
        probability = first if self._phase_starts == 0 else later
        self._phase_starts += 1
        return {
            "CONDPAY_FAULT_POINTS": f"{point}={probability}",
            "CONDPAY_FAULT_SEED": str(self.seed_base + self.starts),
        }

    def _collect(self, status: int) -> None:
        super()._collect(status)
        if status == CRASH_EXIT_STATUS:
            self._phase_crashes += 1


# -- after the run ---------------------------------------------------------------------------------
def stored_answer(operation: operation_pb2.Operation, like: Answer) -> Answer:
    """The stored outcome as an Answer (the reply parsed as the type of ``like``'s)."""
    if operation.state == operation_pb2.OPERATION_STATE_SUCCEEDED:
        if not like.ok:
            return Answer(True, "OK", "", (), None, True)
        reply = type(like.reply)()
        reply.ParseFromString(operation.response.value)
        return Answer.of_reply(reply)
    error = ApiError(operation.error)
    return Answer(False, like.code, error.reason, tuple(sorted(error.metadata.items())), None, True)


async def check_nothing_lost_or_flipped(
    workload: Workload, connection: Connection
) -> dict[str, int]:
    """Every request id has a stored outcome equal to the answer its client got; asked again,
    each gets that same answer, from storage."""
    sender = Sender()
    lost, differs, flips, fresh = [], [], [], []
    for call in workload.all_calls():
        first = workload.answers[call.key]
        try:
            operation = await connection.client(call.caller).get_operation(call.request_id)
        except NotFound:
            lost.append(call.request_id)
            continue
        stored = stored_answer(operation, first)
        if (stored.ok, stored.reason) != (first.ok, first.reason) or (
            first.ok and stored.reply != first.reply
        ):
            differs.append(f"{call.request_id}: answered {first}, stored {stored}")
        again = await sender.send(connection, call)
        if not again.same_as(first):
            flips.append(f"{call.request_id}: answered {first}, now {again}")
        if not again.replayed:
            fresh.append(call.request_id)
    assert not lost, f"{len(lost)} request ids without a stored outcome: {lost[:10]}"
    assert not differs, "stored outcomes differ from the answers:\n" + "\n".join(differs[:10])
    assert not workload.flips, "answers changed between retries:\n" + "\n".join(workload.flips)
    assert not flips, "answers changed when asked again:\n" + "\n".join(flips[:10])
    assert not fresh, f"asked again, not answered from storage: {fresh[:10]}"
    return {"operations": len(workload.answers)}


def reference_clock_us(workload: Workload) -> int:
    """Late enough for every lock and early enough for every attestation to be fresh: just after
    the last attestation was issued."""
    issued = [
        AttestationStatement.from_bytes(c.request.statement).issued_at_us
        for c in workload.all_calls()
        if c.service == "oracles"
    ]
    return max(issued) + SECOND_US


async def run_without_kills(
    pg_server: PostgresServer, workload: Workload
) -> tuple[dict[str, Any], dict[tuple[str, str], Answer]]:
    """The same calls, in the same order per payment, on a fresh database by an in-process
    server that is never killed (a ManualClock just after the calls were made); then every
    deadline fires. Returns the final state and the answers."""
    name = f"condpay_reference_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        clock = ManualClock(reference_clock_us(workload))
        # Calls built after the last attestation (the near locks) expire a day after they were
        # built, more than a day after this clock: the expiry cap allows for that gap.
        async with start_harness(
            pg_server.database_url(name), clock=clock, instruction_ttl_max_seconds=2 * 86_400
        ) as h:
            connection = Connection(h.address)
            try:
                fleet = await build_fleet(
                    connection, buyers=BUYERS, sellers=SELLERS, funding_minor=FUNDING
                )
                assert fleet.wallets == workload.fleet.wallets
                sender = Sender()
                answers: dict[tuple[str, str], Answer] = {}

                async def one(payment_id: str) -> None:
                    for call in workload.calls[payment_id]:
                        answers[call.key] = await sender.send(connection, call)

                await asyncio.gather(*(one(p.payment_id) for p in workload.plans))
                clock.set(
                    max(clock.now_us(), *(p.deliver_by_us for p in workload.near)) + SECOND_US
                )
                while await h.runtime.deadlines.sweep():
                    pass
                cb = connection.client(CENTRAL_BANK)
                await wait_until_terminal(
                    cb, [p.payment_id for p in workload.near], timeout_seconds=10
                )
                return await final_state(cb, fleet, workload.plans), answers
            finally:
                await connection.close()
    finally:
        admin = await asyncpg.connect(pg_server.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def check_the_run(
    workload: Workload, connection: Connection, database_url: str, pg_server: PostgresServer
) -> dict[str, Any]:
    """Everything the crashes must not have broken. Returns figures for the summary."""
    figures = await check_nothing_lost_or_flipped(workload, connection)
    cb = connection.client(CENTRAL_BANK)
    payments = await fetch_payments(cb, workload.plans)
    figures |= await check_ledger(cb, workload.fleet, payments)
    report = await audit(database_url)
    assert report.ok, report.failures
    crashed = await final_state(cb, workload.fleet, workload.plans)
    reference, reference_answers = await run_without_kills(pg_server, workload)
    different = [
        f"{pid}:\n    with crashes {crashed['payments'][pid]}\n    without    {p}"
        for pid, p in reference["payments"].items()
        if crashed["payments"][pid] != p
    ]
    assert not different, "payments differ from the run without kills:\n" + "\n".join(different)
    assert crashed == reference
    outcomes = [
        f"{key[1]}: {answer} / without kills {reference_answers[key]}"
        for key, answer in workload.answers.items()
        if (answer.ok, answer.reason) != (reference_answers[key].ok, reference_answers[key].reason)
    ]
    assert not outcomes, "calls answered differently without kills:\n" + "\n".join(outcomes)
    figures["states"] = dict(Counter(p[0] for p in crashed["payments"].values()))
    return figures


def summary(
    title: str,
    supervisor: Supervisor,
    sender: Sender,
    connections: list[Connection],
    workload: Workload,
    figures: dict[str, Any],
    extra: str = "",
) -> str:
    client_retries = sum(c.retries for c in connections)
    replayed = sum(a.replayed for a in workload.answers.values())
    return (
        f"\nCRASHES {title}: kills={supervisor.kills} fault-crashes={supervisor.crashes}"
        f"{extra} restarts={supervisor.starts - 1} (graceful, between phases: "
        f"{supervisor.graceful}); operations={figures['operations']} "
        f"(request ids; {len(workload.plans)} payments, states {figures['states']}); "
        f"rpc attempts={sender.attempts + client_retries} "
        f"retries={client_retries + sender.retries} "
        f"(by the client {client_retries} + until definite {sender.retries}); first answers "
        f"replayed from storage={replayed}; lost=0 duplicated=0 flips=0; final state equals "
        f"the run without kills"
    )


# -- the tests -------------------------------------------------------------------------------------
async def test_sigkill_while_attestations_flow(
    pg_url: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    supervisor = Supervisor(RestartableServer(pg_url, tmp_path), seed_base=0)
    connections: list[Connection] = []
    try:
        await supervisor.start()
        address = supervisor.server.address
        connections = [Connection(address) for _ in range(CLIENTS)]
        fleet = await build_fleet(
            connections[0], buyers=BUYERS, sellers=SELLERS, funding_minor=FUNDING
        )
        start = whole_seconds_now_us()
        workload = make_workload(fleet, 7, start)
        for plan in workload.near:  # due while the kills go on
            plan.deliver_by_us = start + 6 * SECOND_US
        sender = Sender(definite_within_seconds=90)
        total = workload.total_steps()
        finished = asyncio.Event()
        in_flight_at_kills: list[int] = []

        async def killer() -> None:
            rng = random.Random(8)
            for k in range(1, KILLS + 1):
                threshold = total * k // (KILLS + 1)
                await sender.until(
                    lambda threshold=threshold: (
                        finished.is_set() or (sender.definite >= threshold and sender.in_flight > 0)
                    )
                )
                if finished.is_set():
                    return
                in_flight_at_kills.append(sender.in_flight)
                await supervisor.kill(down_seconds=rng.uniform(0.0, 0.5))

        killing = asyncio.create_task(killer())
        try:
            await run_payments(workload, workload.plans, connections, sender, seed=7)
        finally:
            finished.set()
            sender.changed.set()
            await killing
        assert len(in_flight_at_kills) == KILLS, f"kills with calls in flight: {in_flight_at_kills}"
        cb = connections[0].client(CENTRAL_BANK)
        await wait_until_terminal(cb, [p.payment_id for p in workload.near], timeout_seconds=30)
        await supervisor.kill()  # and once more before looking at what survived
        figures = await check_the_run(workload, connections[0], pg_url, pg_server)
        assert supervisor.kills == KILLS + 1
        assert supervisor.other_deaths == []
        print(
            summary(
                "SIGKILL",
                supervisor,
                sender,
                connections,
                workload,
                figures,
                f" (calls in flight at each kill while flowing: {in_flight_at_kills})",
            )
        )
    finally:
        for connection in connections:
            await connection.close()
        await supervisor.close()


async def test_crash_at_each_fault_point(
    pg_url: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    supervisor = Supervisor(RestartableServer(pg_url, tmp_path), seed_base=1000)
    connections: list[Connection] = []
    try:
        await supervisor.start()
        connections = [Connection(supervisor.server.address) for _ in range(CLIENTS)]
        fleet = await build_fleet(
            connections[0], buyers=BUYERS, sellers=SELLERS, funding_minor=FUNDING
        )
        workload = make_workload(fleet, 11, whole_seconds_now_us())
        sender = Sender(definite_within_seconds=90)

        # Locks, crashing after a lock commits (before any attestation for it).
        supervisor.faults("after_lock_commit", first=1.0, later=0.3, budget=3)
        await supervisor.restart()
        await run_payments(workload, workload.flows, connections, sender, seed=11, kinds={"lock"})

        # Attestations and cancels, crashing after a batch commits and before anyone hears.
        supervisor.faults("after_commit_before_reply", first=1.0, later=0.15, budget=5)
        await supervisor.restart()
        await run_payments(
            workload,
            workload.flows,
            connections,
            sender,
            seed=12,
            kinds={"event", "again", "cancel"},
        )

        # Deadlines, crashing in the sweep that found them due (before firing them).
        supervisor.faults("deadline_sweep", first=1.0, later=0.3, budget=3)
        await supervisor.restart()
        deadline = whole_seconds_now_us() + 2 * SECOND_US
        for plan in workload.near:
            plan.deliver_by_us = deadline
        await run_payments(workload, workload.near, connections, sender, seed=13)
        cb = connections[0].client(CENTRAL_BANK)
        await wait_until_terminal(cb, [p.payment_id for p in workload.near], timeout_seconds=40)

        supervisor.faults(None)
        await supervisor.restart()
        crashed_at = supervisor.server.fault_crashes()
        assert set(crashed_at) == {
            "after_lock_commit",
            "after_commit_before_reply",
            "deadline_sweep",
        }, crashed_at
        assert sum(crashed_at.values()) == supervisor.crashes
        # Replies lost at after_commit_before_reply were recovered from the stored outcomes.
        assert any(a.replayed for a in workload.answers.values())
        assert supervisor.other_deaths == []
        figures = await check_the_run(workload, connections[0], pg_url, pg_server)
        print(
            summary(
                "FAULT-POINTS",
                supervisor,
                sender,
                connections,
                workload,
                figures,
                f" {dict(crashed_at)}",
            )
        )
    finally:
        for connection in connections:
            await connection.close()
        await supervisor.close()
