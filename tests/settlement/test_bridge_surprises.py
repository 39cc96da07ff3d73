"""A bridge state the coordinator did not expect is resolved by the decision log's rules
(docs/settlement.md, "A bridge state the core did not expect"), never by an ABORTING loop.

The surprises are made the only way left to make them: with the gateway's own identity, as a
leaked key or a bug would (here: the core's in-process bridge, called directly).
"""

from __future__ import annotations

from condpay.v1 import settlement_pb2

from bridges import FaultPlan, Operation
from settlement.ledger.settlements import derive_settlement_id
from tests.settlement.world import GATEWAY, PLATFORM, TradeWorld, pvp_request, stop_payouts

PRICE_CNY = 125_000_00
PREPARED = settlement_pb2.SETTLEMENT_STATE_PREPARED


async def test_a_leg_committed_with_this_settlements_terms_leads_to_commit(
    trade: TradeWorld,
) -> None:
    """The core's prepare reply is lost (PREPARED, no decision); meanwhile the gateway's leg is
    committed on the bridge behind the coordinator's back. Exactly this settlement's terms: the
    rule is COMMIT, and both ledgers end FINAL, each leg posted once."""
    await trade.fund("buyer", "HKD", 200_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    request = pvp_request(buyer_key, buyer, trade.wallets["seller"], quote, request_id="pvp-s1")
    bridge = await trade.bridge_faults(
        FaultPlan(drop_reply_percent=100, operations=frozenset({Operation.PREPARE}))
    )
    s = (await client.api.settlements.settle_pvp(request)).settlement
    assert s.state == PREPARED, s
    await bridge.set_plan(FaultPlan())
    runtime = trade.harness.runtime
    assert runtime.bridge is not None
    assert runtime.coordinator is not None
    committed = await bridge.inner.commit(runtime.bridge.bridge_transfer_id(s.transfer_id))
    assert committed.state.value == "COMMITTED"

    after = await runtime.coordinator.drive(s.settlement_id)
    assert after.state.value == "FINAL", after
    assert after.decision.value == "COMMIT"
    assert runtime.stuck_settlements == 0
    assert await trade.balance("buyer", "HKD") == (200_000_00 - quote.source.amount_minor, 0)
    assert await trade.balance("seller", "CNY") == (PRICE_CNY, 0)
    assert await trade.entry_kinds("buyer") == ["TRANSFER", "HOLD", "PVP"]


async def test_a_leg_committed_with_other_terms_is_left_for_an_operator_once(
    trade: TradeWorld,
) -> None:
    """The gateway's id of a future settlement prepared with another quote before the core asks:
    the core's prepare meets other terms. The settlement is stuck: logged once,
    counted, left PREPARED with its holds, and not driven (nor the bridge called) again."""
    await trade.fund("buyer", "HKD", 200_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    runtime = trade.harness.runtime
    assert runtime.bridge is not None
    assert runtime.coordinator is not None
    assert runtime.recovery is not None
    await runtime.recovery.stop()  # this test drives the coordinator itself
    await stop_payouts(runtime)
    request_id = "pvp-s2"
    sid = derive_settlement_id(PLATFORM, request_id)
    squatted = runtime.bridge.bridge_transfer_id(f"{sid}.1")
    other = await runtime.bridge.api.quote("CNY", "HKD", source_amount_minor=1_00)
    await runtime.bridge.api.prepare(
        squatted, quote_id=other.quote_id, payer_id=GATEWAY, payee_id=GATEWAY, timeout_ms=60_000
    )
    bridge = await trade.bridge_faults(FaultPlan())

    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    request = pvp_request(buyer_key, buyer, trade.wallets["seller"], quote, request_id=request_id)
    s = (await client.api.settlements.settle_pvp(request)).settlement
    assert s.settlement_id == sid
    assert s.state == PREPARED, s
    assert runtime.stuck_settlements == 1
    assert runtime.coordinator.stuck == {sid: "BRIDGE_TRANSFER_OTHER_TERMS"}
    calls = len(bridge.fates)
    for _ in range(5):  # the sweep would: nothing is asked of the bridge again
        again = await runtime.coordinator.drive(sid)
        assert again.state.value == "PREPARED"
    assert len(bridge.fates) == calls
    assert runtime.stuck_settlements == 1
    # The buyer's money is held, not gone: an operator reconciles.
    assert await trade.balance("buyer", "HKD") == (
        200_000_00 - quote.source.amount_minor,
        quote.source.amount_minor,
    )
    # The operator's reconciliation, so the world's conservation check can run: the squatted
    # leg released on the bridge.
    await bridge.inner.abort(squatted)
