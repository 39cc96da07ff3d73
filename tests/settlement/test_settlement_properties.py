"""Properties of settlement across the core's ledger and the bridge (hypothesis), on SQLite: the
protocol's outcome does not depend on the database, and each example needs a fresh server.

1. Atomicity under timing and faults: over random PvP timings (hold_ms, margin_ms), a random
   fault plan on every bridge call (latency, lost requests, lost replies, duplicates), random
   moves of the shared clock and random runs of the recovery sweep interleaved with the
   settlements in flight, every settlement ends (once recovery has run) committed on both
   ledgers or on neither, with each party's balance and title exactly what the committed ones
   add up to.
2. FX through the core's API never creates money: a loop of PvP conversions X -> Y -> ... -> X
   returns at most what it started with (the pure FX functions have their own properties in
   tests/bridges/test_fx_properties.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
from condpay.errors import ApiError
from condpay.v1 import settlement_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bridges import FaultPlan, Operation
from settlement.clock import ManualClock
from tests.settlement.audit import open_trade
from tests.settlement.world import (
    BANK,
    CURRENCIES,
    TradeWorld,
    document,
    dvp_request,
    key,
    pvp_request,
    stop_payouts,
)

_examples = itertools.count()
FUNDING_MINOR = 3_000_000_00
HOUR_US = 3_600_000_000
# Refusals a settlement may meet when the clock jumps under it; anything else is a failure.
CLOCK_REFUSALS = frozenset({"QUOTE_EXPIRED"})
NEVER_COMMITS = frozenset({"ABORTED", "EXPIRED", "REJECTED"})
# Who pays in what, and to whom.
PAYERS = {"buyer": "HKD", "second_buyer": "THB", "financier": "AED"}


@dataclass(frozen=True)
class Order:
    payer: str
    payee: str
    target_minor: int  # what the payee receives, in CNY
    units: int  # 0: a PvP; else a DvP of that many of the seller's 40 units


@dataclass(frozen=True)
class Scenario:
    hold_ms: int
    margin_ms: int
    plan: FaultPlan
    orders: tuple[Order, ...]
    chaos: tuple[tuple[str, int], ...]  # ("advance", ms) | ("sweep", 0) | ("sleep", ms)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    plan = FaultPlan(
        seed=draw(st.integers(0, 2**16)),
        latency_ms_min=0,
        latency_ms_max=draw(st.sampled_from([0, 0, 3, 15])),
        drop_request_percent=draw(st.sampled_from([0, 10, 30])),
        drop_reply_percent=draw(st.sampled_from([0, 10, 30, 50])),
        duplicate_percent=draw(st.sampled_from([0, 20])),
        operations=frozenset(
            {
                Operation.PREPARE,
                Operation.COMMIT,
                Operation.ABORT,
                Operation.STATUS,
                Operation.FINALITY,
            }
        ),
    )
    orders = []
    for payer in draw(st.lists(st.sampled_from(sorted(PAYERS)), min_size=1, max_size=4)):
        orders.append(
            Order(
                payer,
                draw(
                    st.sampled_from(
                        ["seller", "second_buyer"]
                        if payer != "second_buyer"
                        else ["seller", "buyer"]
                    )
                ),
                draw(st.integers(1_00, 50_000_00)),
                draw(st.sampled_from([0, 0, 10, 40])),
            )
        )
    action = st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 12_000)),
        st.tuples(st.just("sweep"), st.just(0)),
        st.tuples(st.just("sleep"), st.integers(0, 20)),
    )
    return Scenario(
        hold_ms=draw(st.integers(1, 20_000)),
        margin_ms=draw(st.integers(0, 8_000)),
        plan=plan,
        orders=tuple(orders),
        chaos=tuple(draw(st.lists(action, max_size=8))),
    )


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
async def test_no_settlement_ends_committed_on_one_ledger_only(
    tmp_path: Path, scenario: Scenario
) -> None:
    clock = ManualClock(time.time_ns() // 1000)
    url = f"sqlite:///{tmp_path}/condpay-{next(_examples)}.db"
    async with open_trade(
        url, clock=clock, pvp_hold_ms=scenario.hold_ms, pvp_margin_ms=scenario.margin_ms
    ) as trade:
        runtime = trade.harness.runtime
        assert runtime.bridge is not None
        assert runtime.recovery is not None
        await runtime.recovery.stop()  # sweeps run when the scenario says (and at the end)
        await stop_payouts(runtime)
        for payer, currency in PAYERS.items():
            await trade.fund(payer, currency, FUNDING_MINOR)
        client = trade.platform
        # Each DvP sells its own title; quotes are taken before the faults begin.
        requests: list[tuple[Order, str, settlement_pb2.FxQuote, object]] = []
        for n, order in enumerate(scenario.orders):
            quote = await client.quote_fx(
                PAYERS[order.payer], "CNY", target_amount_minor=order.target_minor
            )
            expires_at_us = clock.now_us() + HOUR_US
            if order.units:
                title_id = await trade.issue_bill_of_lading(order.payee, 40, document(f"prop-{n}"))
                request: object = dvp_request(
                    trade.party(order.payee),
                    trade.party(order.payer),
                    title_id,
                    order.units,
                    quote,
                    request_id=f"prop-dvp-{n}",
                    expires_at_us=expires_at_us,
                )
            else:
                title_id = ""
                request = pvp_request(
                    *trade.party(order.payer),
                    trade.wallets[order.payee],
                    quote,
                    request_id=f"prop-pvp-{n}",
                    expires_at_us=expires_at_us,
                )
            requests.append((order, title_id, quote, request))
        bridge = await trade.bridge_faults(scenario.plan)
        before = await trade.holdings()

        async def settle(request: object) -> str:
            try:
                await client.send(request)  # type: ignore[call-overload]
            except ApiError as error:
                return error.reason
            return "OK"

        async def chaos() -> None:
            for what, amount in scenario.chaos:
                if what == "advance":
                    clock.advance(amount / 1000)
                elif what == "sweep":
                    await runtime.recovery.sweep()  # type: ignore[union-attr]
                else:
                    await asyncio.sleep(amount / 1000)

        outcomes = await asyncio.gather(chaos(), *(settle(r) for _, _, _, r in requests))

        # Recovery: the bridge answers again, every deadline passes, the sweep runs to the end.
        await bridge.set_plan(FaultPlan())
        clock.advance((scenario.hold_ms + 3_000) / 1000)
        stored = {s.request_id: s for s in await trade.settle_everything()}

        expected = dict(before)
        for (order, title_id, quote, request), outcome in zip(requests, outcomes[1:], strict=True):
            request_id = request.request_id  # type: ignore[attr-defined]
            s = stored.get(request_id)
            if outcome != "OK":
                event(f"refused {outcome}")
                assert outcome in CLOCK_REFUSALS, (order, outcome)
                assert s is None, s
                continue
            assert s is not None
            transfer = await runtime.bridge.api.status(
                runtime.bridge.bridge_transfer_id(s.transfer_id)
            )
            committed = s.state.value == "FINAL"
            assert s.state.value in ("FINAL", "ABORTED"), s
            event(f"{s.state.value} {s.abort_reason}".strip())
            if committed:
                assert transfer.state.value == "COMMITTED", (s, transfer)
                assert s.decision.value == "COMMIT"
                pay = (order.payer, PAYERS[order.payer])
                expected[pay] = (expected[pay][0] - quote.source.amount_minor, 0)
                receive = (order.payee, "CNY")
                expected[receive] = (expected[receive][0] + order.target_minor, 0)
            else:
                assert transfer.state.value in NEVER_COMMITS, (s, transfer)
                assert s.decision.value == "ABORT"
            if title_id:
                delivered = await trade.title(s.delivered_title_id)
                owner = order.payer if committed else order.payee
                assert delivered.holder_wallet_id == trade.wallets[owner], (s, delivered)
                assert delivered.pledged_to == ""
                assert delivered.units == order.units
        after = await trade.holdings()
        gateway = {k for k in after if k[0].startswith("w_reserve.")}
        assert {k: v for k, v in after.items() if k not in gateway} == {
            k: v for k, v in expected.items() if k not in gateway
        }
        # open_trade's exit checks the gateway: its core plus bridge position is unchanged.


# -- FX loops through the core's API -------------------------------------------------------------
@pytest.fixture
async def fx_trade(tmp_path: Path) -> AsyncIterator[TradeWorld]:
    """One SQLite world shared by the examples: each opens a wallet of its own."""
    async with open_trade(f"sqlite:///{tmp_path}/condpay.db") as world:
        yield world


@st.composite
def loops(draw: st.DrawFn) -> list[str]:
    """X -> ... -> X through 2..4 conversions, never a currency into itself."""
    start = draw(st.sampled_from(CURRENCIES))
    path = [start]
    for _ in range(draw(st.integers(1, 3))):
        path.append(draw(st.sampled_from([c for c in CURRENCIES if c != path[-1]])))
    if path[-1] == start:
        path.append(draw(st.sampled_from([c for c in CURRENCIES if c != start])))
    return [*path, start]


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=loops(), amount=st.integers(1_00, 500_000_00), by_target=st.booleans())
async def test_a_loop_of_pvp_conversions_never_returns_more(
    fx_trade: TradeWorld, path: list[str], amount: int, by_target: bool
) -> None:
    """A wallet converts all it holds around the loop, each step a PvP to itself at a fresh
    quote (by source amount, or by the target amount that source affords). It ends with at
    most what it started with, each step delivers no more than the quoted rate gives, and the
    loop's rates multiply to exactly one."""
    trade = fx_trade
    owner = key(f"fx-loop-{next(_examples)}")
    bank = trade.client(f"institution/{BANK}")
    wallet = (
        await bank.open_wallet(BANK, owner.public_key, kind="ENTERPRISE", tier=0)
    ).wallet.wallet_id
    await bank.transfer(key(BANK), f"w_reserve.{BANK}", wallet, path[0], amount)
    client = trade.platform

    held, rates = amount, Fraction(1)
    for source, target in itertools.pairwise(path):
        try:
            quote = await client.quote_fx(source, target, source_amount_minor=held)
            if by_target:
                quote = await client.quote_fx(
                    source, target, target_amount_minor=quote.target.amount_minor
                )
        except ApiError as error:  # what is left converts to nothing: the loop cannot close
            refusal = (error.reason, error.metadata.get("bridge_reason", ""))
        else:
            refusal = ("", "")
        if refusal != ("", ""):
            assert refusal == ("BRIDGE_REFUSED", "AMOUNT_TOO_SMALL"), refusal
            event("the loop could not close")
            return
        rate = Fraction(quote.rate_numerator, quote.rate_denominator)
        rates *= rate
        assert quote.source.amount_minor <= held
        assert quote.target.amount_minor <= quote.source.amount_minor * rate
        reply = await client.settle_pvp(owner, wallet, wallet, quote)
        assert reply.settlement.state == settlement_pb2.SETTLEMENT_STATE_FINAL, reply.settlement
        left = held - quote.source.amount_minor
        assert await trade.balance(wallet, source) == (left, 0)
        assert await trade.balance(wallet, target) == (quote.target.amount_minor, 0)
        if left:  # not converted (buying by target can leave a little): out of the loop
            await client.transfer(owner, wallet, f"w_reserve.{BANK}", source, left)
        held = quote.target.amount_minor
    event(f"closed a loop of {len(path) - 1}")
    assert rates == 1
    assert held <= amount
    assert await trade.balance(wallet, path[0]) == (held, 0)
