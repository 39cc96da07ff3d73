"""DvP end to end through gRPC: a title (or part of one) against payment, in one currency (one
transaction, FINAL at once) or across currencies through the bridge at a quote. A refused DvP
moves neither the money nor the title."""

from __future__ import annotations

import asyncio
import time

from condpay.v1 import asset_pb2, errors_pb2, settlement_pb2

from bridges import FaultPlan, Operation
from settlement.clock import ManualClock
from tests.settlement.audit import open_trade
from tests.settlement.world import (
    GATEWAY_WALLET,
    RESERVE_MINOR,
    TradeWorld,
    document,
    dvp_request,
    refused,
)

FINAL = settlement_pb2.SETTLEMENT_STATE_FINAL
ABORTED = settlement_pb2.SETTLEMENT_STATE_ABORTED
ACTIVE = asset_pb2.TITLE_STATE_ACTIVE
SPLIT = asset_pb2.TITLE_STATE_SPLIT
PRICE = ("CNY", 125_000_00)


async def title_state(trade: TradeWorld, title_id: str) -> tuple[str, str, int, int]:
    title = await trade.title(title_id)
    return title.holder_wallet_id, title.pledged_to, title.units, title.version


# -- one currency --------------------------------------------------------------------------------
async def test_same_currency_dvp_moves_title_and_money_in_one_entry(trade: TradeWorld) -> None:
    await trade.fund("buyer", "CNY", 200_000_00)
    seller, buyer = trade.wallets["seller"], trade.wallets["buyer"]
    title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-1"))
    before = await trade.holdings()

    reply = await trade.platform.settle_dvp(
        trade.party("seller"), trade.party("buyer"), title_id, 40, PRICE
    )
    s = reply.settlement
    assert s.state == FINAL, s
    assert (s.kind, s.decision) == (
        settlement_pb2.SETTLEMENT_KIND_DVP,
        settlement_pb2.DECISION_COMMIT,
    )
    assert (s.payer_wallet_id, s.payee_wallet_id) == (buyer, seller)
    assert (s.pay.amount_minor, s.receive.amount_minor) == (PRICE[1], PRICE[1])
    assert s.transfer_id == ""  # no bridge leg
    assert not s.HasField("quote")
    assert not s.HasField("finality")
    assert [(leg.ledger, leg.from_id, leg.to_id, leg.state) for leg in s.legs] == [
        ("core", buyer, seller, "COMMITTED"),
        ("title", seller, buyer, "DELIVERED"),
    ]
    assert (s.legs[1].title_id, s.legs[1].units) == (title_id, 40)

    assert await title_state(trade, title_id) == (buyer, "", 40, 3)
    assert [t.title_id for t in await trade.titles_of("buyer")] == [title_id]
    assert await trade.titles_of("seller") == []
    after = await trade.holdings()
    assert after[("buyer", "CNY")] == (before[("buyer", "CNY")][0] - PRICE[1], 0)
    assert after[("seller", "CNY")] == (PRICE[1], 0)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {("buyer", "CNY"), ("seller", "CNY")}
    # One DVP journal entry, with exactly the two postings, and nothing else for the seller.
    assert await trade.entry_kinds("seller") == ["DVP"]
    assert await trade.entry_kinds("buyer") == ["TRANSFER", "DVP"]
    entries = await trade.harness.runtime.reader.journal(seller, 0, 100)
    (entry,) = entries
    assert sorted((p.account_id, p.amount) for p in entry.postings) == sorted(
        [(buyer, -PRICE[1]), (seller, PRICE[1])]
    )
    assert entry.request_id == s.request_id
    assert await trade.list_settlements(trade.platform) == [s]


async def test_partial_units_split_off_and_deliver_only_the_part_sold(trade: TradeWorld) -> None:
    await trade.fund("buyer", "CNY", 200_000_00)
    seller, buyer = trade.wallets["seller"], trade.wallets["buyer"]
    title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-part"))

    reply = await trade.platform.settle_dvp(
        trade.party("seller"), trade.party("buyer"), title_id, 15, ("CNY", 45_000_00)
    )
    s = reply.settlement
    assert s.state == FINAL
    sold, kept = f"{title_id}.1", f"{title_id}.2"
    assert (s.legs[-1].title_id, s.legs[-1].units, s.legs[-1].state) == (sold, 15, "DELIVERED")
    assert (await trade.title(title_id)).state == SPLIT
    assert await title_state(trade, sold) == (buyer, "", 15, 3)
    assert await title_state(trade, kept) == (seller, "", 25, 1)
    assert [t.title_id for t in await trade.titles_of("buyer")] == [sold]
    assert [t.title_id for t in await trade.titles_of("seller")] == [kept]
    assert await trade.title_moves(sold) == ["SPLIT", "PLEDGED", "DELIVERED"]
    assert await trade.balance("seller", "CNY") == (45_000_00, 0)
    assert await trade.balance("buyer", "CNY") == (155_000_00, 0)

    # The part kept sells on, whole, to the second buyer; the first part is the buyer's to sell.
    await trade.fund("second_buyer", "CNY", 80_000_00)
    again = await trade.platform.settle_dvp(
        trade.party("seller"), trade.party("second_buyer"), kept, 25, ("CNY", 75_000_00)
    )
    assert again.settlement.state == FINAL
    assert (await trade.title(kept)).holder_wallet_id == trade.wallets["second_buyer"]
    resold = await trade.platform.settle_dvp(
        trade.party("buyer"), trade.party("second_buyer"), sold, 15, ("CNY", 5_000_00)
    )
    assert resold.settlement.state == FINAL
    holdings = await trade.titles_of("second_buyer")
    assert sorted(t.title_id for t in holdings) == [sold, kept]
    assert sum(t.units for t in holdings) == 40


# -- across currencies ---------------------------------------------------------------------------
async def test_cross_currency_dvp_at_a_quote(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", 200_000_00)
    buyer = trade.wallets["buyer"]
    title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-fx"))
    quote = await trade.platform.quote_fx("HKD", "CNY", target_amount_minor=PRICE[1])
    source = quote.source.amount_minor

    reply = await trade.platform.settle_dvp(
        trade.party("seller"), trade.party("buyer"), title_id, 40, quote
    )
    s = reply.settlement
    assert s.state == FINAL, s
    assert s.kind == settlement_pb2.SETTLEMENT_KIND_DVP
    assert s.quote.quote_id == quote.quote_id
    assert s.finality.block_height > 0
    assert [(leg.ledger, leg.state) for leg in s.legs] == [
        ("core", "COMMITTED"),
        ("bridge", "COMMITTED"),
        ("core", "COMMITTED"),
        ("title", "DELIVERED"),
    ]
    assert await title_state(trade, title_id) == (buyer, "", 40, 3)
    assert await trade.balance("buyer", "HKD") == (200_000_00 - source, 0)
    assert await trade.balance("seller", "CNY") == (PRICE[1], 0)
    assert await trade.balance("seller", "HKD") == (0, 0)
    assert await trade.balance(GATEWAY_WALLET, "HKD") == (RESERVE_MINOR + source, 0)
    assert await trade.balance(GATEWAY_WALLET, "CNY") == (RESERVE_MINOR - PRICE[1], 0)
    assert await trade.entry_kinds("buyer") == ["TRANSFER", "HOLD", "DVP"]
    assert await trade.entry_kinds("seller") == ["DVP"]
    assert await trade.title_moves(title_id) == ["ISSUED", "PLEDGED", "DELIVERED"]


async def test_an_aborted_cross_currency_dvp_gives_the_title_back(trade: TradeWorld) -> None:
    """The bridge takes no new transfers (no quorum): the DvP aborts, the money is released and
    the part of the title that was escrowed to it is free again, still the seller's."""
    await trade.fund("buyer", "HKD", 200_000_00)
    seller = trade.wallets["seller"]
    title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-abort"))
    quote = await trade.platform.quote_fx("HKD", "CNY", target_amount_minor=PRICE[1])
    before = await trade.holdings()
    await trade.bridge_faults(FaultPlan(no_quorum=True))

    reply = await trade.platform.settle_dvp(
        trade.party("seller"), trade.party("buyer"), title_id, 10, quote
    )
    s = reply.settlement
    assert s.state == ABORTED, s
    assert s.abort_reason == "QUORUM_UNAVAILABLE"
    assert s.legs[-1].state == "RELEASED"
    assert await trade.holdings() == before
    part = f"{title_id}.1"
    assert await title_state(trade, part) == (seller, "", 10, 3)
    assert await trade.title_moves(part) == ["SPLIT", "PLEDGED", "RELEASED"]
    listed = await trade.titles_of("seller")
    assert sum(t.units for t in listed) == 40
    assert await trade.titles_of("buyer") == []
    # Free again: the seller can pledge it.
    pledged = await trade.platform.pledge_title(
        trade.keys["seller"], seller, part, trade.wallets["financier"]
    )
    assert pledged.title.pledged_to == trade.wallets["financier"]


async def test_a_title_escrowed_to_a_settlement_in_flight_cannot_move(trade: TradeWorld) -> None:
    """While a cross-currency DvP waits on the bridge, its title is escrowed to it: a second
    sale, a pledge and a split are refused (TITLE_PLEDGED, naming the settlement); then the
    first sale completes and delivers."""
    client = trade.platform
    seller, buyer = trade.party("seller"), trade.party("buyer")
    await trade.fund("buyer", "HKD", 200_000_00)
    await trade.fund("second_buyer", "CNY", 200_000_00)
    title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-escrow"))
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE[1])
    await trade.bridge_faults(
        FaultPlan(latency_ms_min=500, latency_ms_max=500, operations=frozenset({Operation.PREPARE}))
    )
    first = asyncio.create_task(client.settle_dvp(seller, buyer, title_id, 40, quote))
    for _ in range(200):  # until it is prepared (the bridge's answer takes 500 ms)
        stored = await trade.stored_settlements()
        if stored:
            break
        await asyncio.sleep(0.01)
    (pending,) = stored
    assert pending.state.value == "PREPARED"
    assert (await trade.title(title_id)).pledged_to == pending.settlement_id

    second_sale = await refused(
        "TITLE_PLEDGED",
        client.settle_dvp(seller, trade.party("second_buyer"), title_id, 40, PRICE),
    )
    assert second_sale.metadata["pledged_to"] == pending.settlement_id
    await refused(
        "TITLE_PLEDGED",
        client.pledge_title(seller[0], seller[1], title_id, trade.wallets["financier"]),
    )
    await refused("TITLE_PLEDGED", client.split_title(seller[0], seller[1], title_id, 5))
    assert await trade.balance("second_buyer", "CNY") == (200_000_00, 0)

    done = await first
    assert done.settlement.state == FINAL, done.settlement
    assert await title_state(trade, title_id) == (buyer[1], "", 40, 3)
    assert len(await trade.stored_settlements()) == 1


# -- refusals: nothing moves -----------------------------------------------------------------------
async def test_refused_dvps_move_neither_money_nor_title(trade: TradeWorld) -> None:
    client = trade.platform
    seller, buyer = trade.party("seller"), trade.party("buyer")
    second = trade.party("second_buyer")
    title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-refused"))
    await trade.fund("buyer", "CNY", 100_000_00)
    await trade.fund("buyer", "HKD", 300_000_00)
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE[1])
    before = await trade.holdings()
    title_before = await title_state(trade, title_id)

    async def nothing_moved() -> None:
        assert await trade.holdings() == before
        assert await title_state(trade, title_id) == title_before
        assert await trade.stored_settlements() == []

    # The buyer has 100,000.00 CNY, the price is 125,000.00.
    short = await refused(
        "INSUFFICIENT_FUNDS", client.settle_dvp(seller, buyer, title_id, 40, PRICE)
    )
    assert short.detail(errors_pb2.InsufficientFunds) == errors_pb2.InsufficientFunds(
        wallet_id=buyer[1], currency="CNY", needed_minor=PRICE[1], available_minor=100_000_00
    )
    await nothing_moved()
    # Across currencies too (the second buyer has no HKD at all).
    await refused("INSUFFICIENT_FUNDS", client.settle_dvp(seller, second, title_id, 40, quote))
    await nothing_moved()
    # The second buyer offers to sell the seller's title.
    await refused("NOT_TITLE_HOLDER", client.settle_dvp(second, buyer, title_id, 40, ("CNY", 1_00)))
    await nothing_moved()
    # More units than the title has.
    await refused(
        "TITLE_UNITS_EXCEEDED", client.settle_dvp(seller, buyer, title_id, 41, ("CNY", 1_00))
    )
    await nothing_moved()
    # Expired before it arrived.
    await refused(
        "INSTRUCTION_EXPIRED",
        client.settle_dvp(seller, buyer, title_id, 40, ("CNY", 1_00), expires_in_seconds=-1),
    )
    await nothing_moved()
    # Signed by the seller only (the buyer's signature is the seller's too).
    forged = dvp_request(seller, (seller[0], buyer[1]), title_id, 40, ("CNY", 1_00), request_id="f")
    await refused("SIGNATURE_INVALID", client.api.settlements.settle_dvp(forged))
    await nothing_moved()
    # A title that does not exist.
    await refused(
        "TITLE_NOT_FOUND", client.settle_dvp(seller, buyer, "t_nothing", 1, ("CNY", 1_00))
    )
    # In two currencies without a quote: at market, where 1.00 CNY costs more than the 1.00 HKD
    # the buyer signed for.
    no_quote = dvp_request(seller, buyer, title_id, 40, ("CNY", 1_00), request_id="nq")
    no_quote.payload = no_quote.payload.replace(b"CNY", b"HKD", 1)
    no_quote.seller_signature = seller[0].sign(no_quote.payload)
    no_quote.buyer_signature = buyer[0].sign(no_quote.payload)
    await refused("QUOTE_ABOVE_LIMIT", client.api.settlements.settle_dvp(no_quote))
    await nothing_moved()

    # The quote was not spent by any refusal: it still settles, once.
    done = await client.settle_dvp(seller, buyer, title_id, 40, quote)
    assert done.settlement.state == FINAL
    assert (await trade.title(title_id)).holder_wallet_id == buyer[1]


async def test_a_pledged_or_retired_title_is_not_sold(trade: TradeWorld) -> None:
    client = trade.platform
    seller, buyer = trade.party("seller"), trade.party("buyer")
    await trade.fund("buyer", "CNY", 200_000_00)
    pledged = await trade.issue_bill_of_lading("seller", 40, document("DVP-pledged"))
    await client.pledge_title(seller[0], seller[1], pledged, trade.wallets["financier"])
    retired = await trade.issue_bill_of_lading("seller", 40, document("DVP-retired"))
    await client.split_title(seller[0], seller[1], retired, 20)
    before = await trade.holdings()

    await refused("TITLE_PLEDGED", client.settle_dvp(seller, buyer, pledged, 40, PRICE))
    await refused("TITLE_PLEDGED", client.settle_dvp(seller, buyer, pledged, 10, PRICE))
    await refused("TITLE_RETIRED", client.settle_dvp(seller, buyer, retired, 40, PRICE))
    assert await trade.holdings() == before
    assert await title_state(trade, pledged) == (seller[1], trade.wallets["financier"], 40, 2)
    # The refused partial sale of the pledged title split nothing off.
    await refused("TITLE_NOT_FOUND", trade.platform.get_title(f"{pledged}.1"))
    assert await trade.stored_settlements() == []


async def test_a_quote_already_used_is_refused(trade: TradeWorld) -> None:
    client = trade.platform
    seller, buyer = trade.party("seller"), trade.party("buyer")
    await trade.fund("buyer", "HKD", 400_000_00)
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE[1])
    paid = await client.settle_pvp(buyer[0], buyer[1], seller[1], quote)
    assert paid.settlement.state == FINAL
    title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-used"))
    before = await trade.holdings()
    used = await refused(
        "QUOTE_ALREADY_USED", client.settle_dvp(seller, buyer, title_id, 40, quote)
    )
    assert used.metadata["settlement_id"] == paid.settlement.settlement_id
    assert await trade.holdings() == before
    assert await title_state(trade, title_id) == (seller[1], "", 40, 1)


async def test_an_expired_quote_is_refused(database_url: str) -> None:
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock) as trade:
        client = trade.platform
        seller, buyer = trade.party("seller"), trade.party("buyer")
        await trade.fund("buyer", "HKD", 200_000_00)
        title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-late-quote"))
        quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE[1])
        before = await trade.holdings()
        clock.set(quote.expires_at.ToMicroseconds() + 1)
        await refused("QUOTE_EXPIRED", client.settle_dvp(seller, buyer, title_id, 40, quote))
        await refused("QUOTE_EXPIRED", client.settle_dvp(seller, buyer, title_id, 15, quote))
        assert await trade.holdings() == before
        assert await title_state(trade, title_id) == (seller[1], "", 40, 1)
        await refused("TITLE_NOT_FOUND", client.get_title(f"{title_id}.1"))
        assert await trade.stored_settlements() == []


async def test_a_retried_dvp_answers_the_same_settlement(trade: TradeWorld) -> None:
    client = trade.platform
    seller, buyer = trade.party("seller"), trade.party("buyer")
    await trade.fund("buyer", "CNY", 200_000_00)
    title_id = await trade.issue_bill_of_lading("seller", 40, document("DVP-retry"))
    request = dvp_request(seller, buyer, title_id, 10, PRICE, request_id="dvp-2x")
    # A dry run runs the real path (the split, the escrow, the payment) and rolls it back.
    request.dry_run = True
    dry = await client.api.settlements.settle_dvp(request)
    assert dry.operation.dry_run
    assert (dry.settlement.state, dry.settlement.legs[-1].title_id) == (FINAL, f"{title_id}.1")
    assert await title_state(trade, title_id) == (seller[1], "", 40, 1)
    await refused("TITLE_NOT_FOUND", client.get_title(f"{title_id}.1"))
    assert await trade.balance("buyer", "CNY") == (200_000_00, 0)
    assert await trade.stored_settlements() == []
    request.dry_run = False

    first = await client.api.settlements.settle_dvp(request)
    again = await client.api.settlements.settle_dvp(request)
    assert (first.operation.replayed, again.operation.replayed) == (False, True)
    assert again.settlement == first.settlement
    assert await trade.balance("buyer", "CNY") == (200_000_00 - PRICE[1], 0)
    assert await trade.entry_kinds("seller") == ["DVP"]
    assert await title_state(trade, f"{title_id}.1") == (buyer[1], "", 10, 3)
    await refused("TITLE_NOT_FOUND", client.get_title(f"{title_id}.2.1"))
    # The same id for another sale (the rest, to the same buyer): refused, nothing moves.
    other = dvp_request(seller, buyer, f"{title_id}.2", 30, PRICE, request_id="dvp-2x")
    await refused("IDEMPOTENCY_KEY_REUSED", client.api.settlements.settle_dvp(other))
    assert await title_state(trade, f"{title_id}.2") == (seller[1], "", 30, 1)
    assert await trade.balance("buyer", "CNY") == (200_000_00 - PRICE[1], 0)
