"""PvP and DvP *at market* through gRPC: an instruction with no quote id, one call, no QuoteFx
first. Exactly the signed amount arrives; the payer pays the bridge's price for it, converted
with the provider's rounding, never more than the signed limit; above the limit, nothing moves.
Retries, dry runs and a bridge that does not answer keep the request-id rules."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from condpay.client import AtMarket, RetryPolicy, SettlementsClient
from condpay.v1 import asset_pb2, settlement_pb2

from bridges import FaultPlan, MarketOrder, Money, Operation, Quote, Transfer, TransferState
from settlement.coordination.bridge_link import BridgeLink
from settlement.ledger.settlements import derive_settlement_id
from tests.settlement.world import (
    GATEWAY_WALLET,
    RESERVE_MINOR,
    TradeWorld,
    document,
    dvp_request,
    pvp_terms_request,
    refused,
)

FINAL = settlement_pb2.SETTLEMENT_STATE_FINAL
PREPARED = settlement_pb2.SETTLEMENT_STATE_PREPARED
ABORTED = settlement_pb2.SETTLEMENT_STATE_ABORTED
PRICE_CNY = 125_000_00
FUNDS_HKD = 400_000_00


def market_request(
    trade: TradeWorld, pay_at_most: int, request_id: str, *, dry_run: bool = False
) -> settlement_pb2.SettlePvPRequest:
    """The buyer's PvP at market: exactly PRICE_CNY to the seller, at most ``pay_at_most`` HKD."""
    buyer_key, buyer = trade.party("buyer")
    return pvp_terms_request(
        buyer_key,
        buyer,
        trade.wallets["seller"],
        "",
        ("HKD", pay_at_most),
        ("CNY", PRICE_CNY),
        request_id=request_id,
        dry_run=dry_run,
    )


async def market_price(trade: TradeWorld) -> int:
    """What PRICE_CNY costs in HKD at the bridge now (the demo rates do not move)."""
    quote = await trade.platform.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    return quote.source.amount_minor


async def test_pvp_at_market_pays_the_bridges_price_and_is_final(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    buyer_key, buyer = trade.party("buyer")
    reply = await trade.platform.settle_pvp(
        buyer_key,
        buyer,
        trade.wallets["seller"],
        AtMarket(receive=("CNY", PRICE_CNY), pay_at_most=("HKD", price)),  # the limit, exactly
        request_id="market-pvp",
    )
    s = reply.settlement
    assert s.state == FINAL, s
    assert s.quote.quote_id  # the bridge's quote the core asked for, kept with the settlement
    assert s.quote.target.amount_minor == PRICE_CNY
    assert s.pay.amount_minor == s.quote.source.amount_minor == price
    assert s.receive.amount_minor == PRICE_CNY
    assert s.finality.block_height > 0
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - price, 0)
    assert await trade.balance("seller", "CNY") == (PRICE_CNY, 0)
    assert await trade.balance(GATEWAY_WALLET, "HKD") == (RESERVE_MINOR + price, 0)
    assert await trade.balance(GATEWAY_WALLET, "CNY") == (RESERVE_MINOR - PRICE_CNY, 0)
    assert await trade.entry_kinds("buyer") == ["TRANSFER", "HOLD", "PVP"]

    # The same request again: the same settlement, replayed, nothing paid twice.
    again = await trade.platform.api.settlements.settle_pvp(
        market_request(trade, price, "market-pvp-2"),
    )
    assert again.settlement.state == FINAL
    assert again.settlement.quote.quote_id != s.quote.quote_id  # each settlement its own quote
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - 2 * price, 0)


async def test_a_retried_market_settlement_is_the_same_settlement(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    request = market_request(trade, price + 5_00, "market-retry")
    client = trade.platform
    first = await client.api.settlements.settle_pvp(request)
    second = await client.api.settlements.settle_pvp(request)
    assert second.operation.replayed
    assert not first.operation.replayed
    assert second.settlement.settlement_id == first.settlement.settlement_id
    assert second.settlement.quote.quote_id == first.settlement.quote.quote_id
    assert second.settlement.state == FINAL
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - price, 0)  # paid the price, once
    # The same request id with other terms: refused, nothing moves.
    other = market_request(trade, price + 6_00, "market-retry")
    await refused("IDEMPOTENCY_KEY_REUSED", client.api.settlements.settle_pvp(other))
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - price, 0)


async def test_a_price_above_the_signed_limit_moves_nothing(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    before = await trade.holdings()
    request = market_request(
        trade, price - 1, "market-limit"
    )  # one cent short of the bridge's price
    client = trade.platform
    error = await refused("QUOTE_ABOVE_LIMIT", client.api.settlements.settle_pvp(request))
    assert error.metadata["quoted_minor"] == str(price)
    assert error.metadata["field"] == "pay_minor"
    # The refusal is the request's outcome: a retry answers it again, even if the rate moved.
    await refused("QUOTE_ABOVE_LIMIT", client.api.settlements.settle_pvp(request))
    assert await trade.holdings() == before
    assert await trade.stored_settlements() == []


async def test_a_dry_run_at_market_holds_nothing(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    before = await trade.holdings()
    client = trade.platform
    reply = await client.api.settlements.settle_pvp(
        market_request(trade, price, "market-dry", dry_run=True),
    )
    assert reply.settlement.state == PREPARED
    assert reply.settlement.pay.amount_minor == price
    assert await trade.holdings() == before
    assert await trade.stored_settlements() == []


async def test_no_answer_from_the_bridge_is_not_the_requests_outcome(trade: TradeWorld) -> None:
    """The bridge does not answer (the prepare at market, then the quote): BRIDGE_UNAVAILABLE,
    nothing stored, so the same request id settles once it answers; and a settled request
    retried while the bridge is silent is answered from storage."""
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    client = trade.platform
    # Each request signed once: a retry sends the same bytes.
    first = market_request(trade, price, "market-settled")
    settled = await client.api.settlements.settle_pvp(first)
    assert settled.settlement.state == FINAL
    silent = FaultPlan(
        drop_request_percent=100, operations=frozenset({Operation.QUOTE, Operation.PREPARE})
    )
    bridge = await trade.bridge_faults(silent)
    later_request = market_request(trade, price, "market-later")
    # The SDK retries an UNAVAILABLE answer until its deadline; a short one keeps the test short.
    # Cut short by it, the call ends with the server's last answer, not a DEADLINE_EXCEEDED.
    impatient = SettlementsClient(
        trade.harness.address, caller=client.caller, retry=RetryPolicy(deadline_seconds=3.0)
    )
    try:
        await refused("BRIDGE_UNAVAILABLE", impatient.api.settlements.settle_pvp(later_request))
    finally:
        await impatient.close()
    replayed = await client.api.settlements.settle_pvp(first)
    assert replayed.operation.replayed
    assert replayed.settlement.settlement_id == settled.settlement.settlement_id
    assert replayed.settlement.state == FINAL
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - price, 0)

    await bridge.set_plan(FaultPlan())
    later = await client.api.settlements.settle_pvp(later_request)
    assert later.settlement.state == FINAL
    assert not later.operation.replayed
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - 2 * price, 0)


async def test_dvp_at_market_delivers_the_title_for_exactly_the_sellers_price(
    trade: TradeWorld,
) -> None:
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    buyer = trade.wallets["buyer"]
    title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-market"))
    reply = await trade.platform.settle_dvp(
        trade.party("seller"),
        trade.party("buyer"),
        title_id,
        40,
        AtMarket(receive=("CNY", PRICE_CNY), pay_at_most=("HKD", price + 100_00)),
    )
    s = reply.settlement
    assert s.state == FINAL, s
    assert s.pay.amount_minor == price
    assert [(leg.ledger, leg.state) for leg in s.legs][-1] == ("title", "DELIVERED")
    title = await trade.title(title_id)
    assert (title.holder_wallet_id, title.state) == (buyer, asset_pb2.TITLE_STATE_ACTIVE)
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - price, 0)
    assert await trade.balance("seller", "CNY") == (PRICE_CNY, 0)

    # Above the buyer's limit: neither the money nor the title moves.
    second = await trade.issue_bill_of_lading("seller", 10, document("DVP-market-2"))
    before = await trade.holdings()
    await refused(
        "QUOTE_ABOVE_LIMIT",
        trade.platform.api.settlements.settle_dvp(
            dvp_request(
                trade.party("seller"),
                trade.party("buyer"),
                second,
                10,
                AtMarket(receive=("CNY", PRICE_CNY), pay_at_most=("HKD", price - 1)),
                request_id="market-dvp-limit",
            ),
        ),
    )
    assert await trade.holdings() == before
    assert (await trade.title(second)).holder_wallet_id == trade.wallets["seller"]


async def test_a_bridge_quote_for_other_terms_settles_nothing(
    trade: TradeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bridge that answers the core's market order with a quote for one fen less than asked:
    refused as the bridge's (BRIDGE_REFUSED), never settled on, nothing moved, and the leg it
    prepared with that quote aborted."""
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    link = bridge_of(trade)
    asked = link.prepare_at_market

    async def short_by_one(*args: Any, **kwargs: Any) -> tuple[Quote, Transfer]:
        quote, transfer = await asked(*args, **kwargs)
        target = Money(quote.target.currency, quote.target.amount_minor - 1)
        return replace(quote, target=target), transfer

    monkeypatch.setattr(link, "prepare_at_market", short_by_one)
    before = await trade.holdings()
    client = trade.platform
    error = await refused(
        "BRIDGE_REFUSED",
        client.api.settlements.settle_pvp(market_request(trade, price, "market-other")),
    )
    assert error.metadata["bridge_reason"] == "QUOTE_OTHER_TERMS"
    assert await trade.holdings() == before
    assert await trade.stored_settlements() == []
    settlement_id = derive_settlement_id(client.caller, "market-other")
    assert (await link.status(f"{settlement_id}.1")).state is TransferState.ABORTED
    assert await bridge_reserved(trade) == {}


# -- the bridge's leg first: hold and decide in one write ------------------------------------------
COMMITTING = settlement_pb2.SETTLEMENT_STATE_COMMITTING


def bridge_of(trade: TradeWorld) -> BridgeLink:
    link = trade.harness.runtime.bridge
    assert link is not None
    return link


async def bridge_reserved(trade: TradeWorld) -> dict[str, int]:
    """What the bridge holds reserved, per currency (nothing once every leg is settled)."""
    supply = await bridge_of(trade).api.supply()
    return {s.currency: s.reserved_minor for s in supply if s.reserved_minor}


async def test_at_market_the_core_holds_and_decides_commit_in_one_write(
    trade: TradeWorld,
) -> None:
    """The bridge's leg is prepared before the core records anything, so the preparing write,
    the one stored as the call's outcome, already holds COMMIT: COMMITTING, not PREPARED. The
    settlement's version counts its changes: prepared and decided (1), committed (2), final (3);
    a decision of its own would be one more."""
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    reply = await trade.platform.api.settlements.settle_pvp(
        market_request(trade, price, "market-one-write")
    )
    assert reply.settlement.state == FINAL
    assert (reply.settlement.attempt, reply.settlement.version) == (1, 3)
    operation = await trade.platform.get_operation("market-one-write")
    stored = settlement_pb2.SettlePvPResponse()
    assert operation.response.Unpack(stored)
    assert stored.settlement.state == COMMITTING
    assert stored.settlement.settlement_id == reply.settlement.settlement_id
    transfer = await bridge_of(trade).status(f"{reply.settlement.settlement_id}.1")
    assert transfer.state is TransferState.COMMITTED
    assert await bridge_reserved(trade) == {}


async def test_a_try_stopped_after_the_bridges_prepare_is_finished_by_the_retry(
    trade: TradeWorld,
) -> None:
    """A try of the call stopped (a crash) after the bridge prepared its leg and before the core
    recorded anything. The retry (same request id, so the same order under the same transfer
    id) is answered that leg as it is, with its quote, and settles on it, once."""
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    request = market_request(trade, price, "market-stopped")
    settlement_id = derive_settlement_id(trade.platform.caller, "market-stopped")
    link = bridge_of(trade)
    coordinator = trade.harness.runtime.coordinator
    assert coordinator is not None
    order = MarketOrder("HKD", "CNY", target_amount_minor=PRICE_CNY)
    quote, attempt, leg = await coordinator.prepare_at_market(settlement_id, order)
    assert quote is not None
    assert leg is not None
    assert attempt == 1
    assert await bridge_reserved(trade) != {}

    reply = await trade.platform.api.settlements.settle_pvp(request)
    s = reply.settlement
    assert (s.settlement_id, s.state, s.attempt) == (settlement_id, FINAL, 1)
    assert s.quote.quote_id == quote.quote_id
    assert (await link.status(f"{settlement_id}.1")).state is TransferState.COMMITTED
    assert await bridge_reserved(trade) == {}
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - price, 0)
    again = await trade.platform.api.settlements.settle_pvp(request)
    assert again.operation.replayed
    assert (again.settlement.attempt, again.settlement.state) == (1, FINAL)
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - price, 0)


async def test_a_core_refusal_after_the_bridges_prepare_releases_the_bridges_leg(
    trade: TradeWorld,
) -> None:
    """The bridge prepared the leg, then the core refuses (the payer lacks the money): the
    refusal is the outcome, nothing moved in the core, and the bridge's leg is aborted, not
    left reserved until it expires."""
    price = await market_price(trade)
    await trade.fund("buyer", "HKD", price - 1)
    before = await trade.holdings()
    request = market_request(trade, price, "market-poor")
    await refused("INSUFFICIENT_FUNDS", trade.platform.api.settlements.settle_pvp(request))
    settlement_id = derive_settlement_id(trade.platform.caller, "market-poor")
    link = bridge_of(trade)
    assert (await link.status(f"{settlement_id}.1")).state is TransferState.ABORTED
    assert await bridge_reserved(trade) == {}
    assert await trade.holdings() == before
    assert await trade.stored_settlements() == []
    # Retried, now that the payer could pay: the refusal is the request's outcome. The aborted
    # leg is passed over, the next attempt's leg (prepared before the core's write finds the
    # stored refusal) is aborted too: still nothing reserved.
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    await refused("INSUFFICIENT_FUNDS", trade.platform.api.settlements.settle_pvp(request))
    assert (await link.status(f"{settlement_id}.2")).state is TransferState.ABORTED
    assert await bridge_reserved(trade) == {}
    assert await trade.stored_settlements() == []


async def test_a_bridge_refusing_the_market_prepare_aborts_with_its_reason(
    trade: TradeWorld,
) -> None:
    """The bridge refuses the leg (the provider short of liquidity): the settlement is prepared
    as a quoted one is, under the next attempt, and the coordinator's prepare of that attempt
    is refused alike: ABORTED with the bridge's reason, nothing moved, nothing reserved."""
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    before = await trade.holdings()
    await trade.bridge_faults(
        FaultPlan(reject_percent=100, operations=frozenset({Operation.PREPARE}))
    )
    reply = await trade.platform.api.settlements.settle_pvp(
        market_request(trade, price, "market-short")
    )
    s = reply.settlement
    assert (s.state, s.abort_reason, s.attempt) == (ABORTED, "INSUFFICIENT_LIQUIDITY", 2)
    link = bridge_of(trade)
    for attempt in (1, 2):
        transfer = await link.status(f"{s.settlement_id}.{attempt}")
        assert transfer.state is TransferState.REJECTED
    assert await trade.holdings() == before
    assert await bridge_reserved(trade) == {}


async def test_concurrent_duplicates_at_market_settle_once_and_leave_nothing_reserved(
    trade: TradeWorld,
) -> None:
    """The same request sent four times at once: each try asks the bridge for its own quote and
    leg, one of them is the settlement, every other try's leg is aborted; one payment."""
    await trade.fund("buyer", "HKD", FUNDS_HKD)
    price = await market_price(trade)
    request = market_request(trade, price, "market-twins")
    replies = await asyncio.gather(
        *(trade.platform.api.settlements.settle_pvp(request) for _ in range(4))
    )
    assert len({r.settlement.settlement_id for r in replies}) == 1
    s = replies[0].settlement
    await trade.settle_everything()
    final = await trade.platform.api.settlements.settle_pvp(request)
    assert final.settlement.state == FINAL
    assert await trade.balance("buyer", "HKD") == (FUNDS_HKD - price, 0)
    assert await trade.balance("seller", "CNY") == (PRICE_CNY, 0)
    link = bridge_of(trade)
    states = [
        (await link.status(f"{s.settlement_id}.{attempt}")).state
        for attempt in range(1, final.settlement.attempt + 1)
    ]
    assert states.count(TransferState.COMMITTED) == 1
    assert states[final.settlement.attempt - 1] is TransferState.COMMITTED
    assert await bridge_reserved(trade) == {}
