"""Idempotency through the real gRPC server, on SQLite and on PostgreSQL.

A request id (per caller) names one outcome, stored in the same transaction as the effect: a
retry gets that outcome back marked as a replay, concurrent duplicates execute once, the same id
with a different request is refused, a failure stays failed, dry runs store nothing, and
OperationService.GetOperation returns what was stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import pytest
from condpay.client import Client
from condpay.errors import ApiError
from condpay.v1 import (
    central_bank_pb2,
    errors_pb2,
    money_pb2,
    operation_pb2,
    wallet_pb2,
    wallet_pb2_grpc,
)
from google.protobuf.message import Message

from settlement.clock import ManualClock
from tests.support.harness import Harness, central_bank_of, start_harness
from tests.support.snapshots import (
    BANK,
    INSTITUTION_ID,
    World,
    balance,
    build_world,
    expect_error,
    seeded_key,
    take_snapshot,
)
from wallets import OwnerKey

Code = grpc.StatusCode
TRANSFER = "/condpay.v1.WalletService/Transfer"
OPEN_WALLET = "/condpay.v1.WalletService/OpenWallet"
ISSUE = "/condpay.v1.CentralBankService/Issue"
REGISTER = "/condpay.v1.CentralBankService/RegisterInstitution"
REPLAYED_METADATA = ("condpay-replayed", "true")
CLOCK_START_US = 1_898_610_600 * 1_000_000  # 2030-03-01 15:50 UTC


@pytest.fixture
async def world(harness: Harness) -> World:
    return await build_world(harness)


def without_replay_mark(reply: Any) -> Any:
    """The reply as first sent: a replay differs from it only in operation.replayed."""
    copy = type(reply)()
    copy.CopyFrom(reply)
    copy.operation.replayed = False
    return copy


async def cny(world: World, name: str) -> int:
    return balance(await world.cb.get_wallet(world.id_of(name))).available.amount_minor


async def failure(call: Awaitable[object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value


# -- retries -----------------------------------------------------------------------------------
async def test_transfer_retry_returns_the_stored_outcome_marked_replayed(world: World) -> None:
    signed = world.signed("alice", "carol", 12_34)
    first = await world.send(signed)
    assert not first.operation.replayed
    assert first.operation.commit_seq == first.entry.seq > 0
    after_first = await world.snapshot()

    for _ in range(3):
        retry = await world.send(signed)
        assert retry.operation.replayed
        assert not retry.operation.dry_run
        assert without_replay_mark(retry) == first  # same entry: seq, hash, postings, time
    assert await world.snapshot() == after_first  # no new entry, balances moved once
    assert await cny(world, "carol") == 12_34


async def test_a_built_request_is_signed_once_and_resent_byte_for_byte(world: World) -> None:
    """The SDK's way to resend after a lost reply: build the request once, send it as often as
    needed; calling the signing helper again makes a new document (a new expiry)."""
    request = world.bank.transfer_request(
        world.key_of("alice"), world.id_of("alice"), world.id_of("carol"), "CNY", 3_21
    )
    first = await world.bank.send(request)
    again = await world.bank.send(request)
    assert not first.operation.replayed
    assert again.operation.replayed
    assert without_replay_mark(again) == first
    assert await cny(world, "carol") == 3_21

    resigned = await failure(
        world.bank.transfer(
            world.key_of("alice"),
            world.id_of("alice"),
            world.id_of("carol"),
            "CNY",
            3_21,
            request_id=request.request_id,
            expires_in_seconds=301,
        )
    )
    assert resigned.reason == "IDEMPOTENCY_KEY_REUSED"
    assert resigned.metadata["original_code"] == "OK"  # what the first one did
    assert resigned.metadata["original_commit_seq"] == str(first.entry.seq)
    assert await cny(world, "carol") == 3_21
    with pytest.raises(TypeError, match=r"no condpay method takes a condpay\.v1\.Money"):
        await world.bank.send(money_pb2.Money(currency="CNY", amount_minor=1))


async def test_retries_of_every_mutating_call_replay(world: World) -> None:
    key = seeded_key("erin")
    hkma = world.cb.with_caller(central_bank_of("HKD"))
    calls: list[tuple[str, Any]] = [
        (
            REGISTER,
            lambda: world.cb.register_institution(
                "boc-hk", "BOC HK", key.public_key, request_id="req-register-1"
            ),
        ),
        (ISSUE, lambda: hkma.issue(INSTITUTION_ID, "HKD", 5_00, request_id="req-issue-1")),
        (
            "/condpay.v1.CentralBankService/Redeem",
            lambda: hkma.redeem(INSTITUTION_ID, "HKD", 2_00, request_id="req-redeem-1"),
        ),
        (
            OPEN_WALLET,
            lambda: world.bank.open_wallet(INSTITUTION_ID, key.public_key, request_id="req-open-1"),
        ),
    ]
    for method, call in calls:
        first = await call()
        assert not first.operation.replayed, method
        before = await world.snapshot()
        retry = await call()
        assert retry.operation.replayed, method
        assert without_replay_mark(retry) == first, method
        assert await world.snapshot() == before, method
    (hkd,) = (await world.cb.get_supply("HKD")).supplies
    assert (hkd.issued.amount_minor, hkd.redeemed.amount_minor) == (5_00, 2_00)


@pytest.fixture
async def clocked(database_url: str) -> AsyncIterator[tuple[World, ManualClock]]:
    clock = ManualClock(CLOCK_START_US)
    async with start_harness(database_url, clock=clock) as harness:
        yield await build_world(harness, clock=clock), clock


async def test_retry_replays_even_after_expiry_and_a_change_of_state(
    clocked: tuple[World, ManualClock],
) -> None:
    """The stored outcome answers: the instruction is not checked again."""
    world, clock = clocked
    signed = world.signed("dave", "carol", 10_00, expires_at_us=clock.now_us() + 60_000_000)
    first = await world.send(signed)
    clock.advance(3600)  # long expired, and dave is empty now
    assert await cny(world, "dave") == 0
    retry = await world.send(signed)
    assert retry.operation.replayed
    assert without_replay_mark(retry) == first


# -- concurrent duplicates ---------------------------------------------------------------------
@pytest.fixture
async def channels(harness: Harness) -> AsyncIterator[list[grpc.aio.Channel]]:
    """Two channels with their own connections (no shared subchannel pool)."""
    opened = [
        grpc.aio.insecure_channel(harness.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(2)
    ]
    yield opened
    for channel in opened:
        await channel.close()


@pytest.mark.parametrize("channel_count", [1, 2], ids=["one-channel", "two-channels"])
async def test_concurrent_duplicates_execute_exactly_once(
    world: World, channels: list[grpc.aio.Channel], channel_count: int
) -> None:
    clients = [Client("", caller=BANK, channel=c) for c in channels[:channel_count]]
    central_banks = [c.with_caller(central_bank_of("THB")) for c in clients]
    before = await world.snapshot()
    carol_before = await cny(world, "carol")
    signed = world.signed("alice", "carol", 7_00)

    replies = await asyncio.gather(
        *(world.send(signed, client=clients[i % channel_count]) for i in range(20 * channel_count))
    )
    issues = await asyncio.gather(
        *(
            central_banks[i % channel_count].issue(INSTITUTION_ID, "THB", 9_00, request_id="iss-1")
            for i in range(20 * channel_count)
        )
    )

    for same in (replies, issues):
        assert sum(not r.operation.replayed for r in same) == 1  # one executed, the rest replayed
        assert len({(r.entry.seq, r.entry.hash) for r in same}) == 1
        assert {without_replay_mark(r).SerializeToString() for r in same} == {
            without_replay_mark(same[0]).SerializeToString()
        }
    after = await world.snapshot()
    assert after.journal_length == before.journal_length + 2
    assert await cny(world, "carol") == carol_before + 7_00
    assert await cny(world, "alice") == 200_000_00 - 7_00
    (thb,) = (await world.cb.get_supply("THB")).supplies
    assert thb.issued.amount_minor == thb.balances_sum.amount_minor == 9_00


async def test_concurrent_transfers_each_answer_their_own_commit_seq(world: World) -> None:
    """One group-commit batch holds many calls: each reply, and each stored outcome, names the
    call's own journal entry, never the batch's last."""
    signed = [world.signed("alice", "carol", 1_00 + i) for i in range(12)]
    replies = await asyncio.gather(*(world.send(s) for s in signed))

    seqs = [r.entry.seq for r in replies]
    assert len(set(seqs)) == len(seqs)
    for reply in replies:
        assert reply.operation.commit_seq == reply.entry.seq > 0
        stored = await world.bank.get_operation(reply.operation.request_id)
        assert stored.commit_seq == reply.entry.seq
    # A refused call in the same batch wrote nothing and names no entry.
    broke = world.signed("carol", "alice", 10**12)
    outcomes = await asyncio.gather(
        *(
            world.send(s)
            for s in [*(world.signed("alice", "carol", 5_00) for _ in range(4)), broke]
        ),
        return_exceptions=True,
    )
    assert isinstance(outcomes[-1], ApiError)
    for reply in outcomes[:-1]:
        assert isinstance(reply, wallet_pb2.TransferResponse)
        assert reply.operation.commit_seq == reply.entry.seq


async def test_concurrent_same_id_with_different_requests_one_wins(world: World) -> None:
    rid = "req-race-1"
    small = world.signed("alice", "carol", 1_00, request_id=rid)
    large = world.signed("alice", "carol", 2_00, request_id=rid)
    order = [small] * 10 + [large] * 10
    random.Random(7).shuffle(order)
    before = await world.snapshot()

    outcomes = await asyncio.gather(*(world.send(s) for s in order), return_exceptions=True)

    won = {s.payload for s, o in zip(order, outcomes, strict=True) if not isinstance(o, Exception)}
    assert len(won) == 1, outcomes
    winner = small if small.payload in won else large
    for signed, outcome in zip(order, outcomes, strict=True):
        if signed is winner:
            assert isinstance(outcome, wallet_pb2.TransferResponse), outcome
        else:
            assert isinstance(outcome, ApiError), outcome
            assert (outcome.code, outcome.reason) == (Code.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    executed = [o for o in outcomes if isinstance(o, wallet_pb2.TransferResponse)]
    for outcome in outcomes:
        if isinstance(outcome, ApiError):  # each conflict says what the winner did
            conflict = outcome.detail(errors_pb2.IdempotencyConflict)
            assert conflict == errors_pb2.IdempotencyConflict(
                request_id=rid,
                original_method=TRANSFER,
                original_code="OK",
                original_commit_seq=executed[0].entry.seq,
            )
    assert sum(not o.operation.replayed for o in executed) == 1
    assert (await world.snapshot()).journal_length == before.journal_length + 1
    amount = 1_00 if winner is small else 2_00
    assert await cny(world, "carol") == amount


# -- the same id for a different request -------------------------------------------------------
async def test_same_id_different_request_is_rejected_for_the_same_method_and_across(
    world: World,
) -> None:
    key = seeded_key("frank")
    rid = "req-reused-1"
    expiry = world.expiry_us()
    one = world.signed("alice", "carol", 1_00, request_id=rid, expires_at_us=expiry)
    two = world.signed("alice", "bob", 1_00, request_id=rid + "m", expires_at_us=expiry)
    cases: list[tuple[str, Any, Any]] = [
        (  # Transfer, then a Transfer of another amount
            TRANSFER,
            lambda: world.send(one),
            lambda: world.send(world.signed("alice", "carol", 1_01, request_id=rid)),
        ),
        (  # the same instruction with another memo
            TRANSFER,
            lambda: world.send(two),
            lambda: world.send(
                world.signed(
                    "alice", "bob", 1_00, request_id=rid + "m", expires_at_us=expiry, memo="x"
                )
            ),
        ),
        (  # Issue, then an Issue in another currency
            ISSUE,
            lambda: world.cb.issue(INSTITUTION_ID, "CNY", 1_00, request_id=rid),
            lambda: world.cb.issue(INSTITUTION_ID, "HKD", 1_00, request_id=rid),
        ),
        (  # across methods: OpenWallet, then a Transfer under its request id
            OPEN_WALLET,
            lambda: world.bank.open_wallet(INSTITUTION_ID, key.public_key, request_id=rid + "o"),
            lambda: world.send(world.signed("alice", "carol", 1_00, request_id=rid + "o")),
        ),
        (  # across methods: RegisterInstitution, then Issue
            REGISTER,
            lambda: world.cb.register_institution(
                "boc-hk", "BOC", key.public_key, request_id=rid + "r"
            ),
            lambda: world.cb.issue("boc-hk", "CNY", 1_00, request_id=rid + "r"),
        ),
    ]
    for original_method, first_call, conflicting_call in cases:
        first = await first_call()
        before = await world.snapshot()
        error = await expect_error(
            conflicting_call(), Code.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"
        )
        conflict = error.detail(errors_pb2.IdempotencyConflict)
        assert conflict is not None
        assert conflict.original_method == original_method
        assert conflict.request_id == first.operation.request_id
        assert (conflict.original_code, conflict.original_reason) == ("OK", "")
        assert conflict.original_commit_seq == first.operation.commit_seq
        assert error.metadata["original_code"] == "OK"
        assert error.metadata["original_commit_seq"] == str(first.operation.commit_seq)
        assert await world.snapshot() == before
        assert without_replay_mark(await first_call()) == first  # the original still replays


async def test_a_conflict_with_a_failed_original_says_how_it_failed(world: World) -> None:
    rid = "req-failed-then-other"
    short = world.signed("dave", "carol", 20_00, request_id=rid)  # dave holds 10.00
    await expect_error(world.send(short), Code.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    error = await expect_error(
        world.send(world.signed("dave", "carol", 5_00, request_id=rid)),
        Code.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert error.detail(errors_pb2.IdempotencyConflict) == errors_pb2.IdempotencyConflict(
        request_id=rid,
        original_method=TRANSFER,
        original_code="FAILED_PRECONDITION",
        original_reason="INSUFFICIENT_FUNDS",
        original_commit_seq=0,
    )
    assert "FAILED_PRECONDITION INSUFFICIENT_FUNDS" in error.message


# -- a failure stays failed --------------------------------------------------------------------
async def test_failed_request_id_keeps_failing_after_the_cause_is_fixed(world: World) -> None:
    short = world.signed("dave", "carol", 20_00)  # dave holds 10.00
    first = await expect_error(world.send(short), Code.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert not first.replayed
    await world.send(world.signed("reserve", "dave", 100_00))  # the cause, fixed
    before = await world.snapshot()

    retry = await expect_error(world.send(short), Code.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert retry.replayed
    assert retry.status == first.status  # same message and details: available was 10.00
    detail = retry.detail(errors_pb2.InsufficientFunds)
    assert detail is not None
    assert (detail.needed_minor, detail.available_minor) == (20_00, 10_00)
    assert await world.snapshot() == before

    # The replay mark is the trailing metadata condpay-replayed: true, straight off the wire.
    request = wallet_pb2.TransferRequest(
        request_id=short.request_id,
        instruction=wallet_pb2.SignedInstruction(payload=short.payload, signature=short.signature),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await wallet_pb2_grpc.WalletServiceStub(world.bank.channel).Transfer(
            request, metadata=(("condpay-caller", BANK),)
        )
    assert REPLAYED_METADATA in tuple(raw.value.trailing_metadata() or ())

    # Fixing the request itself needs a new request id too.
    fixed = world.signed("dave", "carol", 10_00, request_id=short.request_id)
    await expect_error(world.send(fixed), Code.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    fresh = await world.send(world.signed("dave", "carol", 20_00))
    assert not fresh.operation.replayed
    assert await cny(world, "dave") == 110_00 - 20_00


async def test_refusal_before_the_ledger_is_stored_too(world: World) -> None:
    signed = world.signed("alice", "carol", 1_00)
    forged = dataclasses.replace(signed, signature=world.key_of("bob").sign(signed.payload))
    first = await expect_error(world.send(forged), Code.PERMISSION_DENIED, "SIGNATURE_INVALID")
    assert not first.replayed
    again = await expect_error(world.send(forged), Code.PERMISSION_DENIED, "SIGNATURE_INVALID")
    assert again.replayed
    assert again.status == first.status
    # The correctly signed instruction under the same id is a different request.
    await expect_error(world.send(signed), Code.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")


# -- request ids belong to a caller ------------------------------------------------------------
async def test_request_ids_are_per_caller(world: World) -> None:
    await world.harness.institution("boc-hk")
    other_bank = world.harness.client("institution/boc-hk")  # only institutions open wallets
    rid = "req-shared-1"
    key = OwnerKey.generate()
    by_bank = await world.bank.open_wallet(INSTITUTION_ID, key.public_key, request_id=rid)
    by_other = await other_bank.open_wallet("boc-hk", key.public_key, request_id=rid)
    assert not by_bank.operation.replayed
    assert not by_other.operation.replayed
    assert by_bank.wallet.wallet_id != by_other.wallet.wallet_id

    rid = "req-shared-2"
    platform = world.harness.client("platform/alipay")
    before = await world.snapshot()
    t_bank = await world.send(world.signed("alice", "carol", 1_00, request_id=rid))
    t_platform = await world.send(
        world.signed("bob", "carol", 2_00, request_id=rid, submitter=platform.caller),
        client=platform,
    )
    assert not t_bank.operation.replayed
    assert not t_platform.operation.replayed
    assert (t_bank.entry.caller, t_platform.entry.caller) == (BANK, "platform/alipay")
    assert (await world.snapshot()).journal_length == before.journal_length + 2
    assert await cny(world, "carol") == 3_00

    assert (await world.bank.get_operation(rid)).commit_seq == t_bank.entry.seq
    assert (await platform.get_operation(rid)).commit_seq == t_platform.entry.seq
    auditor = world.harness.client("auditor/kpmg")
    await expect_error(auditor.get_operation(rid), Code.NOT_FOUND, "OPERATION_NOT_FOUND")


# -- dry runs ----------------------------------------------------------------------------------
async def test_dry_run_that_would_fail_reports_the_same_error_and_stores_nothing(
    world: World,
) -> None:
    short = world.signed("dave", "carol", 20_00)
    before = await world.snapshot()
    dry = await expect_error(
        world.send(short, dry_run=True), Code.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"
    )
    assert not dry.replayed
    assert await world.snapshot() == before
    await expect_error(
        world.bank.get_operation(short.request_id), Code.NOT_FOUND, "OPERATION_NOT_FOUND"
    )
    # The real call, under another id, fails exactly the same way.
    real = await failure(world.send(world.signed("dave", "carol", 20_00)))
    assert (real.code, real.reason) == (dry.code, dry.reason)
    assert real.detail(errors_pb2.InsufficientFunds) == dry.detail(errors_pb2.InsufficientFunds)

    # The dry run stored nothing: once funded, the real call under its id is executed.
    await world.send(world.signed("reserve", "dave", 100_00))
    executed = await world.send(short)
    assert not executed.operation.replayed
    assert not executed.operation.dry_run


async def test_dry_run_that_would_succeed_returns_the_would_be_entry_and_changes_nothing(
    world: World,
) -> None:
    signed = world.signed("alice", "carol", 5_00)
    before = await world.snapshot()
    dry = await world.send(signed, dry_run=True)
    again = await world.send(signed, dry_run=True)
    assert dry.operation.dry_run
    assert not dry.operation.replayed
    assert not again.operation.replayed  # nothing was stored to replay
    assert dry.entry.seq == before.journal_length + 1
    assert [
        (p.account_id, p.amount.amount_minor, p.balance_after_minor) for p in dry.entry.postings
    ] == [
        (world.ids["alice"], -5_00, 200_000_00 - 5_00),
        (world.ids["carol"], 5_00, 5_00),
    ]
    assert await world.snapshot() == before
    await expect_error(
        world.bank.get_operation(signed.request_id), Code.NOT_FOUND, "OPERATION_NOT_FOUND"
    )

    real = await world.send(signed)
    assert not real.operation.replayed
    assert not real.operation.dry_run
    assert real.entry.seq == dry.entry.seq
    assert list(real.entry.postings) == list(dry.entry.postings)
    assert await cny(world, "carol") == 5_00


async def test_dry_run_of_open_wallet_and_issue_changes_nothing(world: World) -> None:
    key = seeded_key("grace")
    before = await world.snapshot()
    dry_open = await world.bank.open_wallet(
        INSTITUTION_ID, key.public_key, request_id="req-open-dry", dry_run=True
    )
    dry_issue = await world.cb.with_caller(central_bank_of("SAR")).issue(
        INSTITUTION_ID, "SAR", 1_00, request_id="req-iss", dry_run=True
    )
    assert dry_open.operation.dry_run
    assert dry_issue.operation.dry_run
    assert dry_issue.entry.postings[1].balance_after_minor == 1_00
    await expect_error(
        world.cb.get_wallet(dry_open.wallet.wallet_id), Code.NOT_FOUND, "WALLET_NOT_FOUND"
    )
    assert await world.snapshot() == before

    real_open = await world.bank.open_wallet(
        INSTITUTION_ID, key.public_key, request_id="req-open-dry"
    )
    assert not real_open.operation.replayed
    assert real_open.wallet.wallet_id == dry_open.wallet.wallet_id  # ids follow the request id
    await world.cb.get_wallet(real_open.wallet.wallet_id)


# -- OperationService.GetOperation -------------------------------------------------------------
async def test_get_operation_returns_the_stored_reply_or_status(world: World) -> None:
    key = seeded_key("heidi")
    successes: list[tuple[Client, str, Message, type[Message]]] = []
    reply: Message = await world.send(world.signed("alice", "carol", 3_00, request_id="op-t"))
    successes.append((world.bank, TRANSFER, reply, wallet_pb2.TransferResponse))
    reply = await world.bank.open_wallet(INSTITUTION_ID, key.public_key, request_id="op-o")
    successes.append((world.bank, OPEN_WALLET, reply, wallet_pb2.OpenWalletResponse))
    reply = await world.cb.issue(INSTITUTION_ID, "CNY", 4_00, request_id="op-i")
    successes.append((world.cb, ISSUE, reply, central_bank_pb2.IssueResponse))
    reply = await world.cb.register_institution("boc-hk", "BOC", key.public_key, request_id="op-r")
    successes.append((world.cb, REGISTER, reply, central_bank_pb2.RegisterInstitutionResponse))

    for client, method, original, reply_type in successes:
        request_id = original.operation.request_id  # type: ignore[attr-defined]
        operation = await client.get_operation(request_id)
        assert operation.request_id == request_id
        assert operation.method == method
        assert operation.state == operation_pb2.OPERATION_STATE_SUCCEEDED
        assert operation.commit_seq == original.operation.commit_seq  # type: ignore[attr-defined]
        assert operation.created_at.seconds > 0
        assert not operation.HasField("error")
        stored = reply_type()
        assert operation.response.Unpack(stored), operation.response.type_url
        assert stored == original

    error = await failure(world.send(world.signed("dave", "carol", 50_00, request_id="op-f")))
    operation = await world.bank.get_operation("op-f")
    assert operation.state == operation_pb2.OPERATION_STATE_FAILED
    assert operation.method == TRANSFER
    assert operation.commit_seq == 0
    assert not operation.HasField("response")
    assert operation.error == error.status  # the very status the caller received

    await expect_error(world.bank.get_operation("op-none"), Code.NOT_FOUND, "OPERATION_NOT_FOUND")
    platform = world.harness.client("platform/alipay")
    for request_id in ("op-t", "op-f"):  # another caller's ids
        await expect_error(
            platform.get_operation(request_id), Code.NOT_FOUND, "OPERATION_NOT_FOUND"
        )
    await expect_error(world.cb.get_operation("op-t"), Code.NOT_FOUND, "OPERATION_NOT_FOUND")


async def test_snapshot_helper_sees_a_change(world: World) -> None:
    """The helper every "changes nothing" assertion relies on must notice each kind of change."""
    base = await world.snapshot()
    await world.send(world.signed("alice", "carol", 1))
    moved = await world.snapshot()
    assert moved != base
    assert moved.journal_length == base.journal_length + 1
    assert moved.balances[world.ids["alice"]] != base.balances[world.ids["alice"]]
    await world.cb.with_caller(central_bank_of("HKD")).issue(INSTITUTION_ID, "HKD", 1)
    assert (await take_snapshot(world.cb)).supply != moved.supply
