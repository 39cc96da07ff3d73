"""Conditional payments under concurrency on PostgreSQL: 200 payments at once on two server
runtimes over one database, their attestations delivered duplicated and out of order by 10
clients, with cancels racing the attestations and the clock moved past some deadlines while
attestations flow.

Both runtimes run in this process and share one ManualClock, so the test moves time for both
at once, at a chosen moment (the clock jump lands while a known share of the deliveries is
still to come). Each runtime has its own engine, writer connections, caches and deadline sweeper:
they share nothing but the database, as two replicas do.

Afterwards every payment must be in the state a single-threaded replay of the evaluator
predicts from the attestations it accepted (in the order the server recorded them) and from
whichever of cancel and deadline won; each leg paid exactly once (legs and journal agree);
every party's balance what the legs add up to, held = the open escrows; supply conserved; the
ledger audit clean.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import pytest
from condpay.v1 import payment_pb2

from settlement.clock import ManualClock
from settlement.ledger.audit import audit_ledger
from tests.payments.fleet import (
    CENTRAL_BANK,
    DAY_US,
    OPEN_STATES,
    SECOND_US,
    Answer,
    Call,
    Connection,
    PaymentPlan,
    Sender,
    attest_call,
    build_fleet,
    cancel_call,
    check_ledger,
    describe,
    fetch_payments,
    lock_call,
    observed,
    predict,
    random_events,
    replica,
    state_name,
    whole_seconds_now_us,
)
from tests.support.harness import start_harness

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SEED = 20_261_127
PAYMENTS = 200
CONNECTIONS = 10  # clients with a channel of their own; even ones to replica A, odd ones to B
IN_FLIGHT_MAX = 64
BUYERS, SELLERS = 10, 4
NEAR_DEADLINE_SECONDS = 120  # every fourth payment
# Past the near deadlines, yet inside the attestations' freshness window (300 s), so that the
# deliveries still to come are judged on the payment, not refused as stale.
CLOCK_JUMP_SECONDS = 130
CLOCK_JUMP_AFTER = 0.4  # of the deliveries answered
CANCEL_SHARE = 0.15
SAME_ID_AGAIN = 0.5  # a delivery sent again under the same request id (another client)
NEW_ID_AGAIN = 0.4  # the same attestation sent again under another request id


@dataclass
class Delivery:
    call: Call
    connection: int
    answer: Answer | None = None


def plan_payments(rng: random.Random, wallets: dict[str, str], start_us: int) -> list[PaymentPlan]:
    plans = []
    for i in range(PAYMENTS):
        buyer, seller = f"buyer-{i % BUYERS}", f"seller-{i % SELLERS}"
        near = i % 4 == 0
        plan = PaymentPlan(
            f"cc-lock-{i}",
            buyer,
            seller,
            rng.randrange(500_00, 2_000_00),
            start_us + (NEAR_DEADLINE_SECONDS * SECOND_US if near else 30 * DAY_US),
        )
        plan.events = random_events(rng, f"cc-{i}", wallets[buyer], start_us)
        plan.cancel = rng.random() < CANCEL_SHARE
        plans.append(plan)
    return plans


async def test_200_payments_with_duplicated_out_of_order_attestations_cancels_and_deadlines(
    pg_url: str,
) -> None:
    rng = random.Random(SEED)
    start = whole_seconds_now_us()
    clock = ManualClock(start)
    async with start_harness(pg_url, clock=clock) as a, replica(pg_url, clock) as b:
        runtimes = [a.runtime, b.runtime]
        addresses = [a.address, f"127.0.0.1:{b.port}"]
        connections = [Connection(addresses[i % 2]) for i in range(CONNECTIONS)]
        try:
            cb = connections[0].client(CENTRAL_BANK)
            fleet = await build_fleet(
                connections[0], buyers=BUYERS, sellers=SELLERS, funding_minor=100_000_00
            )
            plans = plan_payments(rng, fleet.wallets, start)
            sender = Sender(definite_within_seconds=60)

            # Every payment locked at once, half through each replica.
            locks = await asyncio.gather(
                *(
                    sender.send(
                        connections[i % CONNECTIONS],
                        lock_call(fleet, plan, expires_at_us=start + DAY_US),
                    )
                    for i, plan in enumerate(plans)
                )
            )
            assert all(answer.ok for answer in locks), [str(x) for x in locks if not x.ok][:5]

            # The deliveries: each attestation once, often again under the same request id (a
            # client retrying elsewhere), often again under a new request id (a second
            # delivery of the same event); cancels; all shuffled.
            deliveries: list[Delivery] = []
            for i, plan in enumerate(plans):
                for event in plan.events:
                    first = attest_call(fleet, plan, event, issued_at_us=start)
                    deliveries.append(Delivery(first, rng.randrange(CONNECTIONS)))
                    if rng.random() < SAME_ID_AGAIN:
                        deliveries.append(Delivery(first, rng.randrange(CONNECTIONS)))
                    if rng.random() < NEW_ID_AGAIN:
                        again = attest_call(
                            fleet,
                            plan,
                            event,
                            issued_at_us=start,
                            request_id=f"{event.event_id}.again",
                        )
                        deliveries.append(Delivery(again, rng.randrange(CONNECTIONS)))
                if plan.cancel:
                    cancel = cancel_call(
                        fleet, plan, request_id=f"cc-cancel-{i}", expires_at_us=start + DAY_US
                    )
                    deliveries.append(Delivery(cancel, rng.randrange(CONNECTIONS)))
            rng.shuffle(deliveries)

            gate = asyncio.Semaphore(IN_FLIGHT_MAX)  # FIFO: deliveries leave in shuffled order
            answered = 0
            jump_after = int(len(deliveries) * CLOCK_JUMP_AFTER)
            time_to_jump = asyncio.Event()
            remaining_at_jump = 0

            async def deliver(delivery: Delivery) -> None:
                nonlocal answered
                async with gate:
                    delivery.answer = await sender.send(
                        connections[delivery.connection], delivery.call
                    )
                answered += 1
                if answered == jump_after:
                    time_to_jump.set()

            async def move_the_clock() -> None:
                nonlocal remaining_at_jump
                await time_to_jump.wait()
                remaining_at_jump = len(deliveries) - answered
                clock.set(start + CLOCK_JUMP_SECONDS * SECOND_US)
                # Both replicas sweep at once now (their background sweeps run too).
                await asyncio.gather(*(r.deadlines.sweep() for r in runtimes))

            began = time.monotonic()
            await asyncio.gather(move_the_clock(), *(deliver(d) for d in deliveries))
            elapsed = time.monotonic() - began
            while sum(await asyncio.gather(*(r.deadlines.sweep() for r in runtimes))):
                pass  # until nothing is due

            payments = await fetch_payments(cb, plans)
            by_payment: dict[str, list[Delivery]] = defaultdict(list)
            for delivery in deliveries:
                by_payment[delivery.call.payment_id].append(delivery)

            # Every request id answered the same way each time it was delivered.
            answers: dict[tuple[str, str], list[Answer]] = defaultdict(list)
            for delivery in deliveries:
                assert delivery.answer is not None
                answers[delivery.call.key].append(delivery.answer)
            flips = [
                (k, [str(x) for x in v])
                for k, v in answers.items()
                if not all(v[0].same_as(x) for x in v)
            ]
            assert not flips, f"a request id answered differently: {flips[:5]}"

            # Each answer agrees with the payment's final record.
            problems: list[str] = []
            cancelled: set[str] = set()
            for plan in plans:
                payment = payments[plan.payment_id]
                accepted = {a.event_id for a in payment.attestations}
                succeeded: set[str] = set()
                for delivery in by_payment[plan.payment_id]:
                    call, answer = delivery.call, delivery.answer
                    assert answer is not None
                    if call.kind == "cancel":
                        if answer.ok:
                            cancelled.add(plan.payment_id)
                        elif answer.reason != "PAYMENT_NOT_OPEN":
                            problems.append(f"{call.request_id}: {answer}")
                        continue
                    if answer.ok:
                        succeeded.add(call.event_id)
                        if answer.reply.attestation.event_id != call.event_id:
                            problems.append(f"{call.request_id}: reply for another event")
                        if call.event_id not in accepted:
                            problems.append(f"{call.request_id}: OK, but not on the payment")
                    elif answer.reason == "EVENT_ALREADY_SEEN":
                        if call.event_id not in accepted:
                            problems.append(f"{call.request_id}: seen, but not on the payment")
                    elif answer.reason == "PAYMENT_NOT_OPEN":
                        if payment.state in OPEN_STATES or call.event_id in accepted:
                            problems.append(
                                f"{call.request_id}: not open, but {describe(observed(payment))}"
                            )
                    else:
                        problems.append(f"{call.request_id}: unexpected {answer}")
                if accepted - succeeded:
                    problems.append(
                        f"{plan.payment_id}: accepted without an OK: {accepted - succeeded}"
                    )
                if (plan.payment_id in cancelled) != (
                    payment.state == payment_pb2.PAYMENT_STATE_CANCELLED
                ):
                    problems.append(
                        f"{plan.payment_id}: cancel answers vs {state_name(payment.state)}"
                    )
            assert not problems, "\n".join(problems[:30])

            # The single-threaded replay predicts every payment.
            mismatches = []
            for plan in plans:
                payment = payments[plan.payment_id]
                expected = predict(
                    plan,
                    fleet,
                    payment,
                    cancelled=plan.payment_id in cancelled,
                    clock_now_us=clock.now_us(),
                )
                if observed(payment) != expected:
                    mismatches.append(
                        f"{plan.payment_id}: server {describe(observed(payment))}\n"
                        f"    replay {describe(expected)}"
                    )
            assert not mismatches, f"{len(mismatches)} payments differ:\n" + "\n".join(
                mismatches[:10]
            )

            counts = await check_ledger(cb, fleet, payments)
            report = await audit_ledger(a.runtime.sql)
            assert report.ok, report.failures

            states = Counter(state_name(p.state) for p in payments.values())
            reasons = Counter(
                "OK" if d.answer.ok else d.answer.reason for d in deliveries if d.answer
            )
            near = [p for p in plans if p.deliver_by_us <= clock.now_us()]
            expired = [
                p for p in near if payments[p.payment_id].state == payment_pb2.PAYMENT_STATE_EXPIRED
            ]
            print(
                f"\nCONCURRENCY: {PAYMENTS} payments, {len(deliveries)} deliveries over "
                f"{CONNECTIONS} clients and 2 replicas in {elapsed:.1f} s "
                f"({remaining_at_jump} still to come when the clock passed the near deadlines); "
                f"states {dict(states)}; answers {dict(reasons)}; "
                f"cancels won {len(cancelled)} of {sum(p.cancel for p in plans)}; "
                f"near-deadline payments {len(near)}, expired {len(expired)}; "
                f"replayed answers {sum(d.answer.replayed for d in deliveries if d.answer)}; "
                f"client retries {sum(c.retries for c in connections)}; engine batch retries "
                f"{sum(r.engine.retries for r in runtimes)}; journal {counts}"
            )
            # The races happened: some cancels won and some lost, deadlines fired on payments
            # that had already released money, and deliveries after the jump judged on them.
            assert 0 < len(cancelled) < sum(p.cancel for p in plans)
            assert states["EXPIRED"] > 0
            assert any(payments[p.payment_id].released.amount_minor for p in expired)
        finally:
            for connection in connections:
                await connection.close()
