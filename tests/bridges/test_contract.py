"""The contract: every test here runs twice, against the in-process Bridge and against the gRPC
client of a real server, and expects the same answers and the same errors (class, reason,
metadata). The bridge is audited after each test (conftest)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from pathlib import Path

import pytest

from bridges import (
    AccountKind,
    FaultPlan,
    MarketOrder,
    Money,
    Operation,
    Rate,
    Transfer,
    TransferState,
    checked_public_keys,
    convert_source,
    verify_quorum_certificate,
)
from bridges.errors import (
    BridgeError,
    Conflict,
    InsufficientFunds,
    InvalidRequest,
    QuoteUnusable,
    Reason,
    TransferAborted,
    TransferCommitted,
    TransferNotCommitted,
)
from tests.bridges.conftest import (
    BANK_FUNDS_MINOR,
    BANKS,
    LIQUIDITY_MINOR,
    LP,
    TRANSPORTS,
    Factory,
    World,
    open_world,
)

A, B = BANKS


async def _prepared(world: World, transfer_id: str = "BANK-A:t-1", **quote: int) -> Transfer:
    q = await world.api.quote("HKD", "CNY", **(quote or {"target_amount_minor": 100_000_00}))
    return await world.api.prepare(
        transfer_id, quote_id=q.quote_id, payer_id=A, payee_id=B, timeout_ms=60_000
    )


def _available(balances: tuple[object, ...], participant: str, kind: str, currency: str) -> int:
    for b in balances:
        if (b.participant_id, b.kind.value, b.currency) == (participant, kind, currency):  # type: ignore[attr-defined]
            return int(b.available_minor)  # type: ignore[attr-defined]
    raise AssertionError((participant, kind, currency))


async def test_a_quote_is_exact_and_firm(world: World) -> None:
    quote = await world.api.quote("HKD", "CNY", target_amount_minor=100_000_00)
    assert quote.target == Money("CNY", 100_000_00)
    assert quote.rate == Rate(1847, 2000)  # 0.9235 HKD -> CNY, reduced
    assert quote.spread_ppm == 2_500
    assert quote.source.currency == quote.spread.currency == "HKD"
    # the least source that delivers the target (docs/bridge.md, rule 3)
    exact = convert_source(quote.source.amount_minor, quote.rate, quote.spread_ppm)
    assert exact.target_minor >= 100_000_00
    assert exact.spread_minor == quote.spread.amount_minor
    less = convert_source(quote.source.amount_minor - 1, quote.rate, quote.spread_ppm)
    assert less.target_minor < 100_000_00
    assert quote.expires_at_us - quote.created_at_us == 30_000_000
    by_source = await world.api.quote("CNY", "THB", source_amount_minor=1_000_00, ttl_ms=500)
    assert by_source.source == Money("CNY", 1_000_00)
    assert by_source.expires_at_us - by_source.created_at_us == 500_000


async def test_prepare_reserves_both_sides_and_commit_posts_five_legs(world: World) -> None:
    before = await world.api.balances()
    transfer = await _prepared(world)
    assert transfer.state is TransferState.PREPARED
    assert not transfer.replayed
    terms = transfer.terms
    assert terms is not None
    assert terms.liquidity_provider_id == LP
    mid = await world.api.balances()
    source, target = terms.source.amount_minor, terms.target.amount_minor
    assert _available(mid, A, "SETTLEMENT", "HKD") == BANK_FUNDS_MINOR - source
    assert _available(mid, LP, "LIQUIDITY", "CNY") == LIQUIDITY_MINOR - target
    assert _available(mid, B, "SETTLEMENT", "CNY") == BANK_FUNDS_MINOR  # credits only on commit
    committed = await world.api.commit("BANK-A:t-1")
    assert committed.state is TransferState.COMMITTED
    assert not committed.replayed
    after = {(b.participant_id, b.kind.value, b.currency): b for b in await world.api.balances()}
    old = {(b.participant_id, b.kind.value, b.currency): b for b in before}

    def delta(*key: str) -> int:
        return after[key].balance_minor - old[key].balance_minor

    spread = terms.spread.amount_minor
    assert spread > 0
    assert delta(A, "SETTLEMENT", "HKD") == -source
    assert delta(LP, "LIQUIDITY", "HKD") == source - spread
    assert delta(LP, "SPREAD", "HKD") == spread  # the spread is its own posting
    assert delta(LP, "LIQUIDITY", "CNY") == -target
    assert delta(B, "SETTLEMENT", "CNY") == target
    assert all(b.reserved_minor == 0 for b in after.values())


async def test_every_call_is_idempotent_by_transfer_id(world: World) -> None:
    first = await _prepared(world)
    quote_id = first.terms.quote_id if first.terms else ""
    again = await world.api.prepare(
        "BANK-A:t-1", quote_id=quote_id, payer_id=A, payee_id=B, timeout_ms=60_000
    )
    assert again == dataclasses.replace(first, replayed=True)
    committed = await world.api.commit("BANK-A:t-1")
    retried = await world.api.commit("BANK-A:t-1")
    assert retried == dataclasses.replace(committed, replayed=True)
    # a prepare retried after the commit answers the transfer as it is now
    late = await world.api.prepare(
        "BANK-A:t-1", quote_id=quote_id, payer_id=A, payee_id=B, timeout_ms=60_000
    )
    assert late == dataclasses.replace(committed, replayed=True)
    with pytest.raises(Conflict) as caught:
        await world.api.prepare(
            "BANK-A:t-1", quote_id=quote_id, payer_id=A, payee_id=LP, timeout_ms=60_000
        )
    assert caught.value.reason is Reason.TRANSFER_EXISTS_WITH_DIFFERENT_TERMS
    assert caught.value.metadata == {"transfer_id": "BANK-A:t-1", "fields": "payee_id"}


async def test_commit_after_abort_and_abort_after_commit_are_refused(world: World) -> None:
    await _prepared(world, "BANK-A:t-abort")
    aborted = await world.api.abort("BANK-A:t-abort")
    assert aborted.state is TransferState.ABORTED
    assert (await world.api.abort("BANK-A:t-abort")).replayed
    with pytest.raises(TransferAborted) as caught:
        await world.api.commit("BANK-A:t-abort")
    assert caught.value.reason is Reason.TRANSFER_ALREADY_ABORTED
    assert caught.value.metadata == {"transfer_id": "BANK-A:t-abort", "state": "ABORTED"}

    await _prepared(world, "BANK-A:t-commit")
    await world.api.commit("BANK-A:t-commit")
    with pytest.raises(TransferCommitted) as refused:
        await world.api.abort("BANK-A:t-commit")
    assert refused.value.reason is Reason.TRANSFER_ALREADY_COMMITTED
    balances = await world.api.balances()
    assert all(b.reserved_minor == 0 for b in balances)


async def test_an_expired_prepare_can_no_longer_commit(world: World) -> None:
    quote = await world.api.quote("SAR", "AED", source_amount_minor=5_000_00)
    await world.api.prepare(
        "BANK-A:t-x", quote_id=quote.quote_id, payer_id=A, payee_id=B, timeout_ms=100
    )
    world.clock.advance_ms(99)
    assert (await world.api.status("BANK-A:t-x")).state is TransferState.PREPARED
    world.clock.advance_ms(1)  # expired at exactly expires_at_us
    status = await world.api.status("BANK-A:t-x")
    assert status.state is TransferState.EXPIRED
    assert status.resolved_at_us == status.expires_at_us
    with pytest.raises(TransferAborted) as caught:
        await world.api.commit("BANK-A:t-x")
    assert caught.value.reason is Reason.TRANSFER_EXPIRED
    assert (await world.api.abort("BANK-A:t-x")).state is TransferState.EXPIRED  # idempotent
    assert all(b.reserved_minor == 0 for b in await world.api.balances())


async def test_an_expired_or_used_quote_cannot_be_prepared(world: World) -> None:
    quote = await world.api.quote("HKD", "CNY", source_amount_minor=1_000_00, ttl_ms=1_000)
    world.clock.advance_ms(1_000)
    with pytest.raises(QuoteUnusable) as expired:
        await world.api.prepare(
            "BANK-A:t-late", quote_id=quote.quote_id, payer_id=A, payee_id=B, timeout_ms=5_000
        )
    assert expired.value.reason is Reason.QUOTE_EXPIRED
    # remembered: the retry is refused the same way, and the transfer reads as REJECTED
    with pytest.raises(QuoteUnusable) as again:
        await world.api.prepare(
            "BANK-A:t-late", quote_id=quote.quote_id, payer_id=A, payee_id=B, timeout_ms=5_000
        )
    assert again.value == expired.value
    rejected = await world.api.status("BANK-A:t-late")
    assert (rejected.state, rejected.rejection_reason) == (TransferState.REJECTED, "QUOTE_EXPIRED")
    with pytest.raises(TransferAborted) as commit:
        await world.api.commit("BANK-A:t-late")
    assert commit.value.reason is Reason.TRANSFER_REJECTED

    fresh = await world.api.quote("HKD", "CNY", source_amount_minor=1_000_00)
    await world.api.prepare(
        "BANK-A:t-one", quote_id=fresh.quote_id, payer_id=A, payee_id=B, timeout_ms=5_000
    )
    with pytest.raises(QuoteUnusable) as used:
        await world.api.prepare(
            "BANK-A:t-two", quote_id=fresh.quote_id, payer_id=A, payee_id=B, timeout_ms=5_000
        )
    assert used.value.reason is Reason.QUOTE_ALREADY_USED


async def test_an_abort_before_the_prepare_leaves_a_tombstone(world: World) -> None:
    tomb = await world.api.abort("BANK-A:t-never")
    assert (tomb.state, tomb.terms, tomb.replayed) == (TransferState.ABORTED, None, False)
    quote = await world.api.quote("HKD", "CNY", source_amount_minor=1_000_00)
    with pytest.raises(TransferAborted) as caught:
        await world.api.prepare(
            "BANK-A:t-never", quote_id=quote.quote_id, payer_id=A, payee_id=B, timeout_ms=5_000
        )
    assert caught.value.reason is Reason.TRANSFER_ALREADY_ABORTED
    assert all(b.reserved_minor == 0 for b in await world.api.balances())


async def test_short_funds_and_short_liquidity_are_typed_refusals(world: World) -> None:
    big = await world.api.quote("HKD", "CNY", source_amount_minor=BANK_FUNDS_MINOR + 1)
    with pytest.raises(InsufficientFunds) as funds:
        await world.api.prepare(
            "BANK-A:t-poor", quote_id=big.quote_id, payer_id=A, payee_id=B, timeout_ms=5_000
        )
    assert funds.value.reason is Reason.INSUFFICIENT_FUNDS
    assert funds.value.metadata == {
        "participant_id": A,
        "account_kind": "SETTLEMENT",
        "currency": "HKD",
        "needed_minor": str(BANK_FUNDS_MINOR + 1),
        "available_minor": str(BANK_FUNDS_MINOR),
    }
    await world.api.issue("rich", participant_id=A, amount=Money("CNY", 2 * LIQUIDITY_MINOR))
    huge = await world.api.quote("CNY", "THB", source_amount_minor=2 * LIQUIDITY_MINOR)
    with pytest.raises(InsufficientFunds) as liquidity:
        await world.api.prepare(
            "BANK-A:t-dry", quote_id=huge.quote_id, payer_id=A, payee_id=B, timeout_ms=5_000
        )
    assert liquidity.value.reason is Reason.INSUFFICIENT_LIQUIDITY
    assert liquidity.value.metadata["participant_id"] == LP


async def test_finality_comes_with_a_quorum_certificate_the_core_can_verify(world: World) -> None:
    await _prepared(world)
    with pytest.raises(TransferNotCommitted):
        await world.api.finality("BANK-A:t-1")
    await world.api.commit("BANK-A:t-1")
    finality = await world.api.finality("BANK-A:t-1")
    assert finality.final
    assert finality.block is not None
    assert finality.certificate is not None
    assert finality.block.height == 1
    assert finality.block.transfer_ids == ("BANK-A:t-1",)
    validators = await world.api.validators()
    assert [v.validator_id for v in validators.validators] == [
        "BOT",
        "CBUAE",
        "HKMA",
        "PBoC",
        "SAMA",
    ]
    assert validators.threshold == 4
    keys = checked_public_keys(validators)
    assert verify_quorum_certificate(finality.block, finality.certificate, keys)
    assert len(finality.certificate.signer_ids) == 5
    # a second batch goes into block 2, linked to block 1
    await _prepared(world, "BANK-A:t-2", source_amount_minor=10_00)
    await _prepared(world, "BANK-A:t-3", source_amount_minor=20_00)
    await world.api.commit("BANK-A:t-2")
    await world.api.commit("BANK-A:t-3")
    second = await world.api.finality("BANK-A:t-3")
    assert second.block is not None
    assert second.certificate is not None
    assert (second.block.height, second.block.transfer_ids) == (2, ("BANK-A:t-2", "BANK-A:t-3"))
    assert second.block.previous_hash == finality.block.hash
    assert (await world.api.status("BANK-A:t-2")).block_height == 2


async def test_a_commit_can_be_answered_with_its_certified_block(make_world: Factory) -> None:
    """commit_final: the commit and its finality in one call, answered as the two calls are,
    refused as commit is; a finality that cannot be had now is answered as not final."""
    world = await make_world()
    await _prepared(world)
    transfer, finality = await world.api.commit_final("BANK-A:t-1")
    assert transfer.state is TransferState.COMMITTED
    assert not transfer.replayed
    assert finality == await world.api.finality("BANK-A:t-1")
    assert finality.final
    assert finality.block is not None
    assert finality.block.transfer_ids == ("BANK-A:t-1",)
    keys = checked_public_keys(await world.api.validators())
    assert finality.certificate is not None
    assert verify_quorum_certificate(finality.block, finality.certificate, keys)
    again, same = await world.api.commit_final("BANK-A:t-1")
    assert again == dataclasses.replace(transfer, replayed=True)
    assert same == finality
    await _prepared(world, "BANK-A:t-2", source_amount_minor=10_00)
    await world.api.abort("BANK-A:t-2")
    with pytest.raises(TransferAborted):
        await world.api.commit_final("BANK-A:t-2")

    # The finality's reply lost on the way (the commit's arrives): committed, not final.
    lossy = await make_world(
        FaultPlan(seed=1, drop_reply_percent=100, operations=frozenset({Operation.FINALITY}))
    )
    await _prepared(lossy, "BANK-A:t-3")
    committed, not_yet = await lossy.api.commit_final("BANK-A:t-3")
    assert committed.state is TransferState.COMMITTED
    assert not not_yet.final
    assert (await lossy.api.status("BANK-A:t-3")).state is TransferState.COMMITTED


async def test_a_market_order_is_quoted_and_prepared_in_one_call(world: World) -> None:
    """prepare_at_market: the quote and the prepare in one transaction; the same order again is
    a replay with the same quote; another order, or a transfer prepared with a quote of its
    own, is a conflict; a refusal is remembered; a malformed order leaves nothing."""
    order = MarketOrder("HKD", "CNY", target_amount_minor=100_000_00)
    quote, transfer = await world.api.prepare_at_market(
        "BANK-A:m-1", order=order, payer_id=A, payee_id=B, timeout_ms=60_000
    )
    assert transfer.state is TransferState.PREPARED
    assert not transfer.replayed
    assert quote.target == Money("CNY", 100_000_00)
    assert quote.source.currency == "HKD"
    assert quote.liquidity_provider_id == LP
    terms = transfer.terms
    assert terms is not None
    assert (terms.quote_id, terms.source, terms.target, terms.spread) == (
        quote.quote_id,
        quote.source,
        quote.target,
        quote.spread,
    )
    # Exactly what quote() would have answered for that order, at that moment.
    assert (quote.source, quote.target, quote.spread, quote.rate) == (
        (fresh := await world.api.quote("HKD", "CNY", target_amount_minor=100_000_00)).source,
        fresh.target,
        fresh.spread,
        fresh.rate,
    )
    again_quote, again = await world.api.prepare_at_market(
        "BANK-A:m-1", order=order, payer_id=A, payee_id=B, timeout_ms=60_000
    )
    assert (again_quote, again) == (quote, dataclasses.replace(transfer, replayed=True))
    with pytest.raises(Conflict) as other_order:
        await world.api.prepare_at_market(
            "BANK-A:m-1",
            order=MarketOrder("HKD", "CNY", target_amount_minor=100_000_01),
            payer_id=A,
            payee_id=B,
            timeout_ms=60_000,
        )
    assert other_order.value.reason is Reason.TRANSFER_EXISTS_WITH_DIFFERENT_TERMS
    await _prepared(world, "BANK-A:q-1", source_amount_minor=10_00)
    with pytest.raises(Conflict):
        await world.api.prepare_at_market(
            "BANK-A:q-1", order=order, payer_id=A, payee_id=B, timeout_ms=60_000
        )
    # More than the provider holds: refused, and refused alike on a retry.
    big = MarketOrder("HKD", "CNY", target_amount_minor=LIQUIDITY_MINOR + 1)
    for _ in range(2):
        with pytest.raises(InsufficientFunds) as short:
            await world.api.prepare_at_market(
                "BANK-A:m-2", order=big, payer_id=A, payee_id=B, timeout_ms=60_000
            )
        assert short.value.reason in (Reason.INSUFFICIENT_FUNDS, Reason.INSUFFICIENT_LIQUIDITY)
    assert (await world.api.status("BANK-A:m-2")).state is TransferState.REJECTED
    with pytest.raises(InvalidRequest):
        await world.api.prepare_at_market(
            "BANK-A:m-3",
            order=MarketOrder("HKD", "HKD", target_amount_minor=1_00),
            payer_id=A,
            payee_id=B,
            timeout_ms=60_000,
        )
    with pytest.raises(BridgeError) as unknown:
        await world.api.status("BANK-A:m-3")
    assert unknown.value.reason is Reason.TRANSFER_NOT_FOUND
    committed = await world.api.commit("BANK-A:m-1")
    assert committed.state is TransferState.COMMITTED


async def test_supply_is_conserved_and_readable(world: World) -> None:
    await _prepared(world)
    await world.api.commit("BANK-A:t-1")
    await world.api.redeem("back", participant_id=B, amount=Money("CNY", 50_00))
    supply = {s.currency: s for s in await world.api.supply()}
    cny = supply["CNY"]
    assert cny.issued_minor == 2 * BANK_FUNDS_MINOR + LIQUIDITY_MINOR
    assert cny.redeemed_minor == 50_00
    assert cny.held_minor == cny.outstanding_minor
    report = await world.api.audit()
    assert report.ok, report.problems
    assert report.supply == tuple(supply[c] for c in sorted(supply))


async def test_issue_and_redeem_are_idempotent_by_request_id(world: World) -> None:
    first = await world.api.issue("i-1", participant_id=A, amount=Money("THB", 1_00))
    again = await world.api.issue("i-1", participant_id=A, amount=Money("THB", 1_00))
    assert again == dataclasses.replace(first, replayed=True)
    with pytest.raises(Conflict) as reused:
        await world.api.issue("i-1", participant_id=A, amount=Money("THB", 2_00))
    assert reused.value.reason is Reason.REQUEST_ID_REUSED
    with pytest.raises(InsufficientFunds):
        await world.api.redeem(
            "r-1", participant_id=A, amount=Money("THB", BANK_FUNDS_MINOR + 2_00)
        )
    with pytest.raises(InvalidRequest) as kind:
        await world.api.issue(
            "i-2", participant_id=A, amount=Money("THB", 1), account_kind=AccountKind.SPREAD
        )
    assert kind.value.reason is Reason.INVALID_ACCOUNT_KIND


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        ("quote_same", Reason.SAME_CURRENCY),
        ("quote_both", Reason.MISSING_FIELD),
        ("quote_zero", Reason.INVALID_AMOUNT),
        ("quote_xxx", Reason.UNSUPPORTED_CURRENCY),
        ("quote_tiny", Reason.AMOUNT_TOO_SMALL),
        ("quote_lp", Reason.NOT_A_LIQUIDITY_PROVIDER),
        ("prepare_bad_id", Reason.INVALID_ID),
        ("prepare_timeout", Reason.INVALID_TIMEOUT),
        ("prepare_no_quote", Reason.QUOTE_NOT_FOUND),
        ("prepare_central_bank", Reason.NOT_A_BANK),
        ("commit_unknown", Reason.TRANSFER_NOT_FOUND),
        ("status_unknown", Reason.TRANSFER_NOT_FOUND),
        ("rate_zero", Reason.INVALID_RATE),
        ("spread_high", Reason.INVALID_SPREAD),
        ("bank_again", Reason.PARTICIPANT_EXISTS),
        ("balances_nobody", Reason.PARTICIPANT_NOT_FOUND),
    ],
)
async def test_bad_requests_are_refused_alike(world: World, call: str, reason: Reason) -> None:
    api = world.api
    quote = await api.quote("HKD", "CNY", source_amount_minor=1_000_00)
    calls = {
        "quote_same": lambda: api.quote("CNY", "CNY", source_amount_minor=1),
        "quote_both": lambda: api.quote("CNY", "HKD", source_amount_minor=1, target_amount_minor=1),
        "quote_zero": lambda: api.quote("CNY", "HKD", source_amount_minor=0),
        "quote_xxx": lambda: api.quote("CNY", "USD", source_amount_minor=1),
        "quote_tiny": lambda: api.quote("THB", "AED", source_amount_minor=1),
        "quote_lp": lambda: api.quote(
            "CNY", "HKD", source_amount_minor=1_00, liquidity_provider_id=A
        ),
        "prepare_bad_id": lambda: api.prepare(
            "BANK-A:t 1", quote_id=quote.quote_id, payer_id=A, payee_id=B, timeout_ms=1
        ),
        "prepare_timeout": lambda: api.prepare(
            "BANK-A:t-1", quote_id=quote.quote_id, payer_id=A, payee_id=B, timeout_ms=0
        ),
        "prepare_no_quote": lambda: api.prepare(
            "BANK-A:t-1", quote_id="q-nope", payer_id=A, payee_id=B, timeout_ms=1
        ),
        "prepare_central_bank": lambda: api.prepare(
            "HKMA:t-1", quote_id=quote.quote_id, payer_id="HKMA", payee_id=B, timeout_ms=1
        ),
        "commit_unknown": lambda: api.commit("BANK-A:t-unknown"),
        "status_unknown": lambda: api.status("BANK-A:t-unknown"),
        "rate_zero": lambda: api.publish_rate("HKD", Rate(0, 1)),
        "spread_high": lambda: api.register_liquidity_provider(LP, spread_ppm=100_001),
        "bank_again": lambda: api.register_bank(A, name="someone else"),
        "balances_nobody": lambda: api.balances("NOBODY"),
    }
    with pytest.raises(BridgeError) as caught:
        await calls[call]()
    assert caught.value.reason is reason
    assert isinstance(caught.value, reason.error_class)


async def test_both_transports_tell_the_same_story(tmp_path: Path) -> None:
    """One scripted session on each transport: the normalized transcripts are equal."""
    transcripts = []
    for transport in TRANSPORTS:
        async with open_world(transport, tmp_path / f"{transport}.db") as world:
            transcripts.append(await _story(world))
    assert transcripts[0] == transcripts[1]
    assert len(transcripts[0]) == 11


async def _story(world: World) -> list[object]:
    api = world.api
    log: list[object] = []

    async def record(label: str, call: Awaitable[object]) -> None:
        try:
            result = await call
        except BridgeError as exc:
            log.append((label, type(exc).__name__, exc.reason.value, sorted(exc.metadata.items())))
        else:
            log.append((label, _normalized(result)))

    q1 = await api.quote("CNY", "HKD", target_amount_minor=12_345_67)
    log.append(("quote", _normalized(q1)))
    prepare_1 = {"quote_id": q1.quote_id, "payer_id": A, "payee_id": B, "timeout_ms": 10}
    await record("prepare", api.prepare("BANK-A:s-1", **prepare_1))  # type: ignore[arg-type]
    await record("prepare again", api.prepare("BANK-A:s-1", **prepare_1))  # type: ignore[arg-type]
    world.clock.advance_ms(10)
    await record("commit expired", api.commit("BANK-A:s-1"))
    q2 = await api.quote("AED", "SAR", source_amount_minor=777_77)
    await record(
        "prepare 2",
        api.prepare("BANK-A:s-2", quote_id=q2.quote_id, payer_id=A, payee_id=B, timeout_ms=1_000),
    )
    await record("commit 2", api.commit("BANK-A:s-2"))
    await record("abort 2", api.abort("BANK-A:s-2"))
    await record("finality 2", api.finality("BANK-A:s-2"))
    await record("tombstone", api.abort("BANK-A:s-3"))
    await record("supply", api.supply())
    await record("validators", api.validators())
    return log


def _normalized(value: object) -> object:
    """Dataclasses as dicts, with what differs between runs (times, quote ids; hashes and
    signatures, which cover times) masked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: ("*" if f.name in _MASKED else _normalized(getattr(value, f.name)))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, tuple):
        return tuple(_normalized(v) for v in value)
    return value


_MASKED = {
    "quote_id",
    "created_at_us",
    "expires_at_us",
    "prepared_at_us",
    "resolved_at_us",
    "sealed_at_us",
    "previous_hash",
    "transfers_digest",
    "block_hash",
    "aggregate_signature",
}


def test_the_fault_plan_default_is_no_faults() -> None:
    assert not FaultPlan().enabled
    assert FaultPlan(drop_reply_percent=1).enabled
