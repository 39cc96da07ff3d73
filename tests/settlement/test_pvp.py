"""PvP end to end through gRPC: quote, settle, both legs or none, across the core's ledger and the
bridge; refusals that move nothing; bridge-side aborts; lost replies; retries; who sees what;
and the finality certificate, verified from what the core stored."""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Awaitable

from condpay.v1 import errors_pb2, settlement_pb2

from bridges import (
    AccountKind,
    BlockHeader,
    FaultPlan,
    FaultyBridge,
    Operation,
    QuorumCertificate,
    checked_public_keys,
    header_encoding,
    verify_quorum_certificate,
)
from bridges.errors import Unavailable
from settlement.clock import ManualClock
from settlement.coordination.bridge_link import RETRY_ATTEMPTS
from tests.settlement.audit import open_trade
from tests.settlement.world import (
    BANK,
    GATEWAY,
    GATEWAY_WALLET,
    OTHER_PLATFORM,
    TradeWorld,
    key,
    pvp_request,
    pvp_terms_request,
    refused,
)

FINAL = settlement_pb2.SETTLEMENT_STATE_FINAL
ABORTED = settlement_pb2.SETTLEMENT_STATE_ABORTED
PREPARED = settlement_pb2.SETTLEMENT_STATE_PREPARED
COMMITTING = settlement_pb2.SETTLEMENT_STATE_COMMITTING
PRICE_CNY = 125_000_00


async def bridge_position(trade: TradeWorld, currency: str) -> int:
    runtime = trade.harness.runtime
    assert runtime.bridge is not None
    for b in await runtime.bridge.api.balances(GATEWAY):
        if (b.kind, b.currency) == (AccountKind.SETTLEMENT, currency):
            return b.balance_minor
    return 0


async def bridge_state(trade: TradeWorld, transfer_id: str) -> str:
    runtime = trade.harness.runtime
    assert runtime.bridge is not None
    return (await runtime.bridge.status(transfer_id)).state.value


async def test_pvp_moves_both_currencies_and_is_final(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", 200_000_00)
    platform = trade.platform
    quote = await platform.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    assert quote.target.amount_minor == PRICE_CNY
    assert 0 < quote.spread.amount_minor < quote.source.amount_minor
    buyer_key, buyer = trade.party("buyer")
    hkd_on_bridge = await bridge_position(trade, "HKD")
    cny_on_bridge = await bridge_position(trade, "CNY")

    reply = await platform.settle_pvp(buyer_key, buyer, trade.wallets["seller"], quote)
    settlement = reply.settlement
    assert settlement.state == FINAL, settlement
    assert settlement.kind == settlement_pb2.SETTLEMENT_KIND_PVP
    assert settlement.decision == settlement_pb2.DECISION_COMMIT
    assert settlement.quote.quote_id == quote.quote_id
    assert settlement.transfer_id == f"{settlement.settlement_id}.1"
    assert [(leg.ledger, leg.state) for leg in settlement.legs] == [
        ("core", "COMMITTED"),
        ("bridge", "COMMITTED"),
        ("core", "COMMITTED"),
    ]
    assert settlement.finality.block_height > 0
    assert len(settlement.finality.signer_ids) >= 4
    assert await bridge_state(trade, settlement.transfer_id) == "COMMITTED"

    source = quote.source.amount_minor
    assert await trade.balance("buyer", "HKD") == (200_000_00 - source, 0)
    assert await trade.balance("seller", "CNY") == (PRICE_CNY, 0)
    # The gateway took the HKD in the core and paid the CNY out; on the bridge the reverse.
    assert await trade.balance(GATEWAY_WALLET, "HKD") == (10_000_000_00 + source, 0)
    assert await trade.balance(GATEWAY_WALLET, "CNY") == (10_000_000_00 - PRICE_CNY, 0)
    assert await bridge_position(trade, "HKD") == hkd_on_bridge - source
    assert await bridge_position(trade, "CNY") == cny_on_bridge + PRICE_CNY
    assert await trade.entry_kinds("buyer") == ["TRANSFER", "HOLD", "PVP"]
    assert await trade.entry_kinds("seller") == ["PVP"]


# -- refusals: nothing moves, nothing is stored ----------------------------------------------------
async def test_pvp_refusals_move_nothing(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", 200_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    seller = trade.wallets["seller"]
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    pay = (quote.source.currency, quote.source.amount_minor)
    before = await trade.holdings()

    def settle(
        request: settlement_pb2.SettlePvPRequest,
    ) -> Awaitable[settlement_pb2.SettlePvPResponse]:
        return client.api.settlements.settle_pvp(request)

    # Both sides in one currency: that is a transfer, not a PvP.
    await refused(
        "SAME_CURRENCY",
        settle(
            pvp_terms_request(
                buyer_key,
                buyer,
                seller,
                quote.quote_id,
                ("CNY", 100),
                ("CNY", 100),
                request_id="pvp-same",
            )
        ),
    )
    # The signed terms are not the quote's: one fen more than quoted to the seller.
    mismatch = await refused(
        "INSTRUCTION_MISMATCH",
        settle(
            pvp_terms_request(
                buyer_key,
                buyer,
                seller,
                quote.quote_id,
                pay,
                ("CNY", PRICE_CNY + 1),
                request_id="pvp-mismatch",
            )
        ),
    )
    assert mismatch.metadata["quote_id"] == quote.quote_id
    # Signed by someone else in the buyer's name.
    await refused(
        "SIGNATURE_INVALID",
        settle(pvp_request(trade.keys["seller"], buyer, seller, quote, request_id="pvp-forged")),
    )
    # A quote nobody handed out.
    await refused(
        "QUOTE_NOT_FOUND",
        settle(
            pvp_terms_request(
                buyer_key,
                buyer,
                seller,
                "q-invented",
                pay,
                ("CNY", PRICE_CNY),
                request_id="pvp-noquote",
            )
        ),
    )
    # Expired on the wall clock before it arrived.
    await refused(
        "INSTRUCTION_EXPIRED",
        settle(
            pvp_request(
                buyer_key,
                buyer,
                seller,
                quote,
                request_id="pvp-late",
                expires_at_us=int(time.time() * 1e6) - 1,
            )
        ),
    )
    # A payer without the money: the second buyer holds no HKD.
    poor_key, poor = trade.party("second_buyer")
    short = await refused(
        "INSUFFICIENT_FUNDS",
        settle(pvp_request(poor_key, poor, seller, quote, request_id="pvp-poor")),
    )
    detail = short.detail(errors_pb2.InsufficientFunds)
    assert detail == errors_pb2.InsufficientFunds(
        wallet_id=poor, currency="HKD", needed_minor=quote.source.amount_minor, available_minor=0
    )

    assert await trade.holdings() == before
    assert await trade.stored_settlements() == []
    # None of the refusals used the quote up: it still settles.
    done = await settle(pvp_request(buyer_key, buyer, seller, quote, request_id="pvp-ok"))
    assert done.settlement.state == FINAL


async def test_a_quote_serves_one_settlement(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", 400_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    first = await client.settle_pvp(buyer_key, buyer, trade.wallets["seller"], quote)
    assert first.settlement.state == FINAL
    before = await trade.holdings()
    used = await refused(
        "QUOTE_ALREADY_USED",
        client.settle_pvp(buyer_key, buyer, trade.wallets["second_buyer"], quote),
    )
    assert used.metadata["settlement_id"] == first.settlement.settlement_id
    assert await trade.holdings() == before
    assert await trade.balance("buyer", "HKD") == (400_000_00 - quote.source.amount_minor, 0)
    assert len(await trade.stored_settlements()) == 1


async def test_an_expired_quote_is_refused_on_the_servers_clock(database_url: str) -> None:
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock) as trade:
        await trade.fund("buyer", "HKD", 200_000_00)
        client = trade.platform
        buyer_key, buyer = trade.party("buyer")
        quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
        expires_at_us = quote.expires_at.ToMicroseconds()
        assert expires_at_us > clock.now_us()
        before = await trade.holdings()
        clock.set(expires_at_us)  # the first moment it no longer holds
        expired = await refused(
            "QUOTE_EXPIRED", client.settle_pvp(buyer_key, buyer, trade.wallets["seller"], quote)
        )
        assert expired.metadata["quote_id"] == quote.quote_id
        assert await trade.holdings() == before
        assert await trade.stored_settlements() == []
        # A fresh quote settles at the new time.
        fresh = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
        reply = await client.settle_pvp(buyer_key, buyer, trade.wallets["seller"], fresh)
        assert reply.settlement.state == FINAL


# -- the bridge says no: aborted, nothing moved on either ledger -----------------------------------
async def test_no_quorum_on_the_bridge_aborts_with_nothing_moved(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", 200_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    before = await trade.holdings()
    bridge_before = {c: await bridge_position(trade, c) for c in ("HKD", "CNY")}
    await trade.bridge_faults(FaultPlan(no_quorum=True))

    reply = await client.settle_pvp(buyer_key, buyer, trade.wallets["seller"], quote)
    s = reply.settlement
    assert s.state == ABORTED, s
    assert (s.decision, s.abort_reason) == (settlement_pb2.DECISION_ABORT, "QUORUM_UNAVAILABLE")
    assert [(leg.ledger, leg.state) for leg in s.legs] == [
        ("core", "RELEASED"),
        ("bridge", "REJECTED"),
        ("core", "RELEASED"),
    ]
    assert not s.HasField("finality")
    assert await bridge_state(trade, s.transfer_id) == "REJECTED"
    assert await trade.holdings() == before
    assert {c: await bridge_position(trade, c) for c in ("HKD", "CNY")} == bridge_before
    assert await trade.entry_kinds("buyer") == ["TRANSFER", "HOLD", "UNHOLD"]
    assert await trade.entry_kinds("seller") == []
    # What the client gets on asking again later is the same aborted settlement.
    assert (await client.get_settlement(s.settlement_id)).state == ABORTED


async def test_a_bridge_rejection_aborts_with_nothing_moved(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", 200_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    before = await trade.holdings()
    await trade.bridge_faults(
        FaultPlan(reject_percent=100, operations=frozenset({Operation.PREPARE}))
    )

    reply = await client.settle_pvp(buyer_key, buyer, trade.wallets["seller"], quote)
    s = reply.settlement
    assert s.state == ABORTED, s
    assert s.abort_reason == "INSUFFICIENT_LIQUIDITY"
    assert await bridge_state(trade, s.transfer_id) == "REJECTED"
    assert await trade.holdings() == before
    # The refused quote is not handed to anyone else by the core either.
    await refused(
        "QUOTE_ALREADY_USED",
        client.settle_pvp(buyer_key, buyer, trade.wallets["second_buyer"], quote),
    )


async def test_an_aborted_pvp_does_not_count_against_the_daily_cap(trade: TradeWorld) -> None:
    """A personal tier-3 wallet may pay 11,000.00 HKD a day. Two PvPs of 5,000.00 abort on the
    bridge; nothing was paid, so two more of 5,000.00 that day still go through, and a third,
    over the cap, is refused."""
    bank = trade.client(f"institution/{BANK}")
    owner = key("personal-hk")
    wallet = (
        await bank.open_wallet(BANK, owner.public_key, kind="PERSONAL", tier=3)
    ).wallet.wallet_id
    await bank.transfer(key(BANK), f"w_reserve.{BANK}", wallet, "HKD", 16_000_00)
    client = trade.platform
    seller = trade.wallets["seller"]
    bridge = await trade.bridge_faults(FaultPlan(no_quorum=True))
    for _ in range(2):
        quote = await client.quote_fx("HKD", "CNY", source_amount_minor=5_000_00)
        aborted = await client.settle_pvp(owner, wallet, seller, quote)
        assert aborted.settlement.state == ABORTED
    await bridge.set_plan(FaultPlan())
    for _ in range(2):
        quote = await client.quote_fx("HKD", "CNY", source_amount_minor=5_000_00)
        paid = await client.settle_pvp(owner, wallet, seller, quote)
        assert paid.settlement.state == FINAL
    assert await trade.balance(wallet, "HKD") == (6_000_00, 0)
    quote = await client.quote_fx("HKD", "CNY", source_amount_minor=5_000_00)
    capped = await refused("LIMIT_EXCEEDED", client.settle_pvp(owner, wallet, seller, quote))
    detail = capped.detail(errors_pb2.LimitExceeded)
    assert detail is not None
    assert detail.limit == errors_pb2.LIMIT_KIND_DAILY_CAP
    assert detail.used_minor == 10_000_00


# -- lost replies: retried, settled exactly once ---------------------------------------------------
class _Answers:
    """A stand-in bridge that answers every call (for choosing a fault seed offline)."""

    async def prepare(self, *args: object, **kwargs: object) -> None:
        return None

    async def commit(self, *args: object, **kwargs: object) -> None:
        return None


async def half_the_replies_lost() -> FaultPlan:
    """A plan losing half the prepare and commit replies, with a seed under which a call that
    retries like the bridge link (up to RETRY_ATTEMPTS per step) loses at least one reply of
    each step and never all attempts of one. The draws depend only on the seed and the order
    of calls, so replaying them against a stand-in picks the seed."""
    for seed in range(1000):
        plan = FaultPlan(
            seed=seed,
            drop_reply_percent=50,
            operations=frozenset({Operation.PREPARE, Operation.COMMIT}),
        )
        stand_in = FaultyBridge(_Answers(), plan)  # type: ignore[arg-type]
        lost = []
        for step in ("prepare", "commit"):
            drops = 0
            while drops < RETRY_ATTEMPTS:
                try:
                    if step == "prepare":
                        await stand_in.prepare(
                            "t", quote_id="q", payer_id="p", payee_id="p", timeout_ms=1
                        )
                    else:
                        await stand_in.commit("t")
                    break
                except Unavailable:
                    drops += 1
            lost.append(drops)
        if all(0 < n < RETRY_ATTEMPTS for n in lost):
            return plan
    raise AssertionError("no seed loses replies of both steps")


async def test_lost_replies_within_a_call_are_retried_and_settle_once(trade: TradeWorld) -> None:
    """Half the prepare and commit replies are lost (the call took effect, the answer did not
    arrive); the bridge link retries with the same transfer id and the call ends FINAL."""
    await trade.fund("buyer", "HKD", 200_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    recovery = trade.harness.runtime.recovery
    assert recovery is not None
    await recovery.stop()  # the call alone retries: the seeded draws then replay exactly
    bridge = await trade.bridge_faults(await half_the_replies_lost())

    reply = await client.settle_pvp(buyer_key, buyer, trade.wallets["seller"], quote)
    assert reply.settlement.state == FINAL, reply.settlement
    dropped = {op for op, fate in bridge.fates if fate.drop_reply}
    assert dropped == {Operation.PREPARE, Operation.COMMIT}, bridge.fates
    assert await trade.balance("buyer", "HKD") == (200_000_00 - quote.source.amount_minor, 0)
    assert await trade.balance("seller", "CNY") == (PRICE_CNY, 0)
    assert await trade.entry_kinds("buyer") == ["TRANSFER", "HOLD", "PVP"]


async def test_every_reply_lost_then_resumed_by_retry_and_sweep(trade: TradeWorld) -> None:
    """Every prepare reply is lost: the call answers PREPARED (the bridge did reserve). The
    client retries the same request: the prepare is resumed, COMMIT decided, and every commit
    reply is lost: COMMITTING. Once the bridge answers again the recovery sweep finishes it:
    FINAL, each leg posted once."""
    await trade.fund("buyer", "HKD", 200_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    request = pvp_request(buyer_key, buyer, trade.wallets["seller"], quote, request_id="pvp-lost")
    lose = FaultPlan(drop_reply_percent=100, operations=frozenset({Operation.PREPARE}))
    bridge = await trade.bridge_faults(lose)

    first = await client.api.settlements.settle_pvp(request)
    s = first.settlement
    assert s.state == PREPARED, s
    assert await bridge_state(trade, s.transfer_id) == "PREPARED"
    assert await trade.balance("buyer", "HKD") == (
        200_000_00 - quote.source.amount_minor,
        quote.source.amount_minor,
    )

    await bridge.set_plan(
        FaultPlan(drop_reply_percent=100, operations=frozenset({Operation.COMMIT}))
    )
    second = await client.api.settlements.settle_pvp(request)
    assert second.operation.replayed
    assert second.settlement.settlement_id == s.settlement_id
    assert second.settlement.state == COMMITTING, second.settlement
    assert await bridge_state(trade, s.transfer_id) == "COMMITTED"

    await bridge.set_plan(FaultPlan())
    (settled,) = await trade.settle_everything()
    assert settled.state.value == "FINAL"
    commits = [op for op, fate in bridge.fates if op is Operation.COMMIT and fate.drop_reply]
    assert len(commits) >= 2  # the bridge committed once and answered every retry as a replay
    assert await trade.balance("buyer", "HKD") == (200_000_00 - quote.source.amount_minor, 0)
    assert await trade.balance("seller", "CNY") == (PRICE_CNY, 0)
    assert await trade.entry_kinds("buyer") == ["TRANSFER", "HOLD", "PVP"]
    assert await trade.entry_kinds("seller") == ["PVP"]
    third = await client.api.settlements.settle_pvp(request)
    assert (third.operation.replayed, third.settlement.state) == (True, FINAL)


async def test_a_retried_settle_pvp_answers_the_same_settlement(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", 200_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    request = pvp_request(buyer_key, buyer, trade.wallets["seller"], quote, request_id="pvp-2x")

    # A dry run first: the real path, rolled back; the id stays unspent.
    request.dry_run = True
    dry = await client.api.settlements.settle_pvp(request)
    assert dry.operation.dry_run
    assert dry.settlement.state == PREPARED
    assert await trade.stored_settlements() == []
    assert await trade.balance("buyer", "HKD") == (200_000_00, 0)
    request.dry_run = False

    first = await client.api.settlements.settle_pvp(request)
    again = await client.api.settlements.settle_pvp(request)
    assert (first.operation.replayed, again.operation.replayed) == (False, True)
    assert first.settlement == again.settlement
    assert again.settlement.state == FINAL
    assert await trade.balance("buyer", "HKD") == (200_000_00 - quote.source.amount_minor, 0)
    assert await trade.balance("seller", "CNY") == (PRICE_CNY, 0)
    assert await trade.entry_kinds("seller") == ["PVP"]
    assert len(await trade.stored_settlements()) == 1
    # The same id with other terms is refused, and settles nothing.
    other = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    await refused(
        "IDEMPOTENCY_KEY_REUSED",
        client.api.settlements.settle_pvp(
            pvp_request(buyer_key, buyer, trade.wallets["seller"], other, request_id="pvp-2x"),
        ),
    )
    assert await trade.balance("seller", "CNY") == (PRICE_CNY, 0)


# -- reads ---------------------------------------------------------------------------------------
async def test_settlements_are_seen_by_their_requester_and_the_overseers(
    trade: TradeWorld,
) -> None:
    await trade.fund("buyer", "HKD", 400_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    done = []
    for target in (100_000_00, 50_000_00):
        quote = await client.quote_fx("HKD", "CNY", target_amount_minor=target)
        done.append(await client.settle_pvp(buyer_key, buyer, trade.wallets["seller"], quote))
    await trade.fund("second_buyer", "THB", 10_000_00)
    await trade.bridge_faults(FaultPlan(no_quorum=True))
    other = trade.client(OTHER_PLATFORM)
    quote = await other.quote_fx("THB", "CNY", source_amount_minor=10_000_00)
    poor_key, poor = trade.party("second_buyer")
    aborted = await other.settle_pvp(poor_key, poor, trade.wallets["seller"], quote)
    assert aborted.settlement.state == ABORTED
    ours = sorted(d.settlement.settlement_id for d in done)

    got = await client.get_settlement(ours[0])
    assert got.settlement_id == ours[0]
    assert got.state == FINAL
    await refused("SETTLEMENT_NOT_FOUND", other.get_settlement(ours[0]))
    await refused("SETTLEMENT_NOT_FOUND", client.get_settlement(aborted.settlement.settlement_id))
    await refused("SETTLEMENT_NOT_FOUND", client.get_settlement("s_nosuchsettlement"))
    await refused("ROLE_NOT_ALLOWED", trade.client("institution/icbc-sz").get_settlement(ours[0]))

    assert [s.settlement_id for s in await trade.list_settlements(client)] == ours
    assert [s.settlement_id for s in await trade.list_settlements(client, page_size=1)] == ours
    assert [s.settlement_id for s in await trade.list_settlements(other)] == [
        aborted.settlement.settlement_id
    ]
    assert await trade.list_settlements(client, state=ABORTED) == []
    every = sorted([*ours, aborted.settlement.settlement_id])
    for overseer in (trade.cb, trade.client("auditor/csrc")):
        assert [s.settlement_id for s in await trade.list_settlements(overseer)] == every
        assert (await overseer.get_settlement(ours[1])).state == FINAL
        finals = await trade.list_settlements(overseer, state=FINAL)
        assert sorted(s.settlement_id for s in finals) == ours


# -- finality: verified from what the core stored --------------------------------------------------
def decode_header(encoded: bytes) -> BlockHeader:
    """The canonical header encoding of bridges/_quorum.py, read back independently."""
    tag = b"condpay.bridge.v1/block\x00"
    assert encoded.startswith(tag)
    at = len(tag)

    def take(n: int) -> bytes:
        nonlocal at
        chunk = encoded[at : at + n]
        assert len(chunk) == n
        at += n
        return chunk

    def text() -> str:
        (length,) = struct.unpack(">H", take(2))
        return take(length).decode()

    chain_id = text()
    (height,) = struct.unpack(">Q", take(8))
    previous = take(32)
    (sealed_at_us,) = struct.unpack(">Q", take(8))
    (count,) = struct.unpack(">I", take(4))
    transfer_ids = tuple(text() for _ in range(count))
    digest = take(32)
    assert at == len(encoded)
    return BlockHeader(chain_id, height, previous, sealed_at_us, transfer_ids, digest)


async def test_the_stored_finality_verifies_against_the_validator_keys(trade: TradeWorld) -> None:
    await trade.fund("buyer", "HKD", 200_000_00)
    client = trade.platform
    buyer_key, buyer = trade.party("buyer")
    quote = await client.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    s = (await client.settle_pvp(buyer_key, buyer, trade.wallets["seller"], quote)).settlement
    assert s.state == FINAL
    finality = s.finality
    assert hashlib.sha256(finality.block_header).digest() == finality.block_hash

    header = decode_header(finality.block_header)
    assert header_encoding(header) == finality.block_header
    assert header.height == finality.block_height
    assert f"{GATEWAY}:{s.transfer_id}" in header.transfer_ids  # the gateway's id
    runtime = trade.harness.runtime
    assert runtime.bridge is not None
    keys = checked_public_keys(await runtime.bridge.api.validators())
    assert len(keys) == 5
    qc = QuorumCertificate(
        finality.block_hash, tuple(finality.signer_ids), finality.aggregate_signature
    )
    assert verify_quorum_certificate(header, qc, keys)

    # Any change to what was stored breaks it.
    assert not verify_quorum_certificate(
        BlockHeader(
            header.chain_id,
            header.height + 1,
            header.previous_hash,
            header.sealed_at_us,
            header.transfer_ids,
            header.transfers_digest,
        ),
        qc,
        keys,
    )
    short = QuorumCertificate(qc.block_hash, qc.signer_ids[:3], qc.aggregate_signature)
    assert not verify_quorum_certificate(header, short, keys)
    flipped = bytearray(qc.aggregate_signature)
    flipped[-1] ^= 1
    assert not verify_quorum_certificate(
        header, QuorumCertificate(qc.block_hash, qc.signer_ids, bytes(flipped)), keys
    )
    # And the bridge's own view of the block is the one the core stored.
    answer = await runtime.bridge.api.finality(runtime.bridge.bridge_transfer_id(s.transfer_id))
    assert answer.block == header
    assert answer.certificate is not None
    assert answer.certificate.signer_ids == qc.signer_ids
