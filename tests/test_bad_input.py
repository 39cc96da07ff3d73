"""Every bad input is refused with its status code and ErrorInfo reason (and typed details where the
API defines them), is never answered with INTERNAL or UNKNOWN, and changes nothing: the journal,
every balance (spent-today included) and the supply read the same through the API before and after.

Runs through the real gRPC server on SQLite and on PostgreSQL. Each table of cases shares one
server and world (a fresh database per test costs ~0.3 s on PostgreSQL); every case is a subtest of
its own, with its own before/after snapshot, so a failure names the case.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from condpay.errors import ApiError
from condpay.v1 import central_bank_pb2, errors_pb2, evidence_pb2, operation_pb2, wallet_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from settlement.api.identity import Role
from settlement.api.methods import METHODS
from settlement.api.server import SERVICE_NAMES
from settlement.clock import ManualClock
from settlement.ledger.commands import derive_wallet_id, reserve_wallet_id
from tests.support.harness import CENTRAL_BANK, Harness, start_harness
from tests.support.snapshots import (
    BANK,
    INSTITUTION_ID,
    ISSUED_CNY,
    Signed,
    World,
    balance,
    build_world,
    expect_error,
    raw_call,
    status_code,
)
from wallets import INT64_MAX, TRANSFER_V2, OwnerKey
from wallets.canonical import ID_PATTERN, TEXT_CHARS_MAX

Code = grpc.StatusCode
INVALID, NOT_FOUND = Code.INVALID_ARGUMENT, Code.NOT_FOUND
DENIED, PRECONDITION = Code.PERMISSION_DENIED, Code.FAILED_PRECONDITION
W = "/condpay.v1.WalletService/"
C = "/condpay.v1.CentralBankService/"
OP = "/condpay.v1.OperationService/"
EV = "/condpay.v1.EvidenceService/"
# Reserve after build_world funded alice, bob and dave.
RESERVE_CNY = ISSUED_CNY - 200_000_00 - 19_000_00 - 10_00
# 2030-03-01 15:50:00 UTC = 23:50 China Standard Time: ten minutes before the daily caps reset.
CLOCK_START_US = 1_898_610_600 * 1_000_000


@pytest.fixture
async def world(harness: Harness) -> World:
    return await build_world(harness)


async def refused(
    world: World,
    call: Callable[[], Awaitable[object]],
    code: Code,
    reason: str | tuple[str, ...],
    *,
    detail: Message | None = None,
    absent: tuple[str, ...] = (),
    **metadata: str,
) -> ApiError:
    """``call()`` must be refused as given and leave the ledger exactly as it was; wallets in
    ``absent`` must not exist afterwards."""
    before = await world.snapshot()
    error = await expect_error(call(), code, reason, **metadata)
    assert not error.replayed  # a first attempt is never a replay
    if detail is not None:
        assert error.detail(type(detail)) == detail
    assert await world.snapshot() == before
    for wallet_id in absent:
        await expect_error(world.cb.get_wallet(wallet_id), NOT_FOUND, "WALLET_NOT_FOUND")
    return error


# -- transfer instructions ---------------------------------------------------------------------
Build = Callable[[World], Signed]


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    code: Code
    reason: str | tuple[str, ...]
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)  # "{alice}" -> its id


def _fields(w: World, request_id: str, **overrides: str) -> list[tuple[str, str]]:
    """The fields of a valid alice -> carol transfer of 1.00 CNY, as text, with overrides."""
    fields = {
        "source": w.ids["alice"],
        "target": w.ids["carol"],
        "currency": "CNY",
        "amount_minor": "100",
        "submitter": w.bank.caller,
        "request_id": request_id,
        "expires_at_us": str(w.expiry_us()),
        "memo": "",
    }
    fields.update(overrides)
    return list(fields.items())


def _join(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def text(edit: Callable[[list[str]], bytes] = _join, **overrides: str) -> Build:
    """An instruction written by hand (``edit`` turns its lines into bytes), correctly signed by
    alice, so only its form can be wrong."""

    def build(w: World) -> Signed:
        request_id = f"req-hand-{os.urandom(6).hex()}"
        resolved = {name: _resolve(value, w) for name, value in overrides.items()}
        lines = [TRANSFER_V2, *(f"{k}: {v}" for k, v in _fields(w, request_id, **resolved))]
        payload = edit(lines)
        return Signed(request_id, payload, w.key_of("alice").sign(payload))

    return build


def lines_edit(edit: Callable[[list[str]], list[str]]) -> Callable[[list[str]], bytes]:
    return lambda lines: _join(edit(lines))


def _swap(lines: list[str], i: int, j: int) -> list[str]:
    lines = list(lines)
    lines[i], lines[j] = lines[j], lines[i]
    return lines


def _with_signature(signature: Callable[[World, Signed], bytes]) -> Build:
    def build(w: World) -> Signed:
        signed = w.signed("alice", "carol", 100)
        return dataclasses.replace(signed, signature=signature(w, signed))

    return build


def _other_instruction_signature(w: World, signed: Signed) -> bytes:
    other = w.instruction("alice", "carol", 101, request_id=signed.request_id)
    return w.key_of("alice").sign(other.to_bytes())


def _payload_altered_after_signing(w: World) -> Signed:
    signed = w.signed("alice", "carol", 100)
    return dataclasses.replace(
        signed, payload=signed.payload.replace(b"amount_minor: 100\n", b"amount_minor: 900\n")
    )


def _mismatched_request_id(w: World) -> Signed:
    return dataclasses.replace(w.signed("alice", "carol", 100), request_id="req-another-id")


def _instruction(source: str, target: str, signer: str = "alice", **kwargs: Any) -> Build:
    return lambda w: w.sign(signer, w.instruction(source, target, 100, **kwargs))


M = "INSTRUCTION_MALFORMED"
SIGNATURE_CASES = [
    Case("random signature", _with_signature(lambda w, s: os.urandom(64)), DENIED,
         "SIGNATURE_INVALID", {"wallet_id": "{alice}"}),
    Case("truncated signature", _with_signature(lambda w, s: s.signature[:63]), DENIED,
         "SIGNATURE_INVALID", {"wallet_id": "{alice}"}),
    Case("empty signature", _with_signature(lambda w, s: b""), DENIED, "SIGNATURE_INVALID"),
    Case("signature one bit off", _with_signature(
        lambda w, s: bytes([s.signature[0] ^ 1]) + s.signature[1:]), DENIED, "SIGNATURE_INVALID"),
    Case("signed by another wallet's key",
         _with_signature(lambda w, s: w.key_of("bob").sign(s.payload)), DENIED,
         "SIGNATURE_INVALID", {"wallet_id": "{alice}"}),
    Case("signed by the target's key",
         _with_signature(lambda w, s: w.key_of("carol").sign(s.payload)), DENIED,
         "SIGNATURE_INVALID"),
    Case("valid signature of a different instruction",
         _with_signature(_other_instruction_signature), DENIED, "SIGNATURE_INVALID"),
    Case("payload altered after signing", _payload_altered_after_signing, DENIED,
         "SIGNATURE_INVALID"),
]  # fmt: skip
WALLET_CASES = [
    Case("unknown source wallet", _instruction("w_nosuchwallet", "carol"), NOT_FOUND,
         "WALLET_NOT_FOUND", {"id": "w_nosuchwallet"}),
    Case("unknown target wallet", _instruction("alice", "w_nosuchwallet"), NOT_FOUND,
         "WALLET_NOT_FOUND", {"id": "w_nosuchwallet"}),
    Case("source = target", _instruction("alice", "alice"), INVALID,
         "SAME_SOURCE_AND_TARGET", {"field": "instruction.target"}),
    Case("request_id differs from the signed one", _mismatched_request_id, INVALID,
         "INSTRUCTION_MISMATCH", {"field": "request_id"}),
    Case("expired in the past", _instruction("alice", "carol", expires_at_us=1_000_000),
         PRECONDITION, "INSTRUCTION_EXPIRED", {"expires_at_us": "1000000"}),
    Case("expires at 0", _instruction("alice", "carol", expires_at_us=0), PRECONDITION,
         "INSTRUCTION_EXPIRED"),
]  # fmt: skip
CURRENCY_CASES = [
    Case("unsupported currency USD", text(currency="USD"), INVALID, "UNSUPPORTED_CURRENCY",
         {"field": "instruction.currency", "currency": "USD"}),
    Case("unsupported currency XAU", text(currency="XAU"), INVALID, "UNSUPPORTED_CURRENCY"),
    # Not a three-letter upper-case code: the instruction itself is malformed.
    Case("lower-case cny", text(currency="cny"), INVALID, M, {"field": "instruction.currency"}),
    Case("two letters CN", text(currency="CN"), INVALID, M, {"field": "instruction.currency"}),
    Case("four letters CNYY", text(currency="CNYY"), INVALID, M),
    Case("empty currency", text(currency=""), INVALID, M),
    # The decoder only checks length, ASCII and upper case, so these reach the currency check:
    # either reason is a fair answer.
    Case("currency with a digit", text(currency="CN1"), INVALID, (M, "UNSUPPORTED_CURRENCY")),
    Case("currency with a dash", text(currency="C-Y"), INVALID, (M, "UNSUPPORTED_CURRENCY")),
]  # fmt: skip
AMOUNT = {"field": "instruction.amount_minor"}
AMOUNT_CASES = [
    Case(f"amount {value!r}", text(amount_minor=value), INVALID, "INVALID_AMOUNT", AMOUNT)
    for value in [
        "0",
        "-100",
        "+100",
        "0100",  # leading zero
        "00",
        "1.00",
        "1e2",
        "0x64",
        "１００",  # full-width digits
        "",
        str(2**63),  # one beyond int64
        str(2**64 + 100),
        "9" * 30,
    ]
]
CANONICAL_CASES = [
    Case("the hand-written form is accepted when canonical", text(), Code.OK, ""),
    Case("space before the header", text(lines_edit(lambda ls: [" " + ls[0], *ls[1:]])),
         INVALID, M),
    Case("space at the start of a value", text(source=" {alice}"), INVALID, M,
         {"field": "instruction.source"}),
    Case("double space in a line", text(lines_edit(
        lambda ls: [ls[0], ls[1].replace(": ", ":  "), *ls[2:]])), INVALID, M),
    Case("space before a colon", text(lines_edit(
        lambda ls: [ls[0], ls[1].replace(": ", " : "), *ls[2:]])), INVALID, M),
    Case("tab instead of space", text(lines_edit(
        lambda ls: [ls[0], ls[1].replace(": ", ":\t"), *ls[2:]])), INVALID, M),
    Case("trailing space", text(lines_edit(lambda ls: [*ls[:2], ls[2] + " ", *ls[3:]])),
         INVALID, M),
    Case("CRLF line ends", text(lambda ls: ("\r\n".join(ls) + "\r\n").encode()), INVALID, M),
    Case("source and target swapped in order", text(lines_edit(lambda ls: _swap(ls, 1, 2))),
         INVALID, M),
    Case("memo before expires_at_us", text(lines_edit(lambda ls: _swap(ls, 7, 8))), INVALID, M),
    Case("upper-case field name", text(lines_edit(
        lambda ls: [ls[0], ls[1].replace("source", "Source"), *ls[2:]])), INVALID, M),
    Case("leading zeros in expires_at_us", text(expires_at_us="0{expiry}"), INVALID, M,
         {"field": "instruction.expires_at_us"}),
    Case("a field repeated", text(lines_edit(lambda ls: [*ls[:4], ls[4], *ls[4:]])), INVALID, M),
    Case("a field missing", text(lines_edit(lambda ls: ls[:-1])), INVALID, M),
    Case("an extra field", text(lines_edit(lambda ls: [*ls, "fee_minor: 1"])), INVALID, M),
    Case("an empty line at the end", text(lines_edit(lambda ls: [*ls, ""])), INVALID, M),
    Case("trailing bytes after the last line", text(lambda ls: _join(ls) + b"junk"), INVALID, M),
    Case("trailing NUL byte", text(lambda ls: _join(ls) + b"\0"), INVALID, M),
    Case("no final newline", text(lambda ls: "\n".join(ls).encode()), INVALID, M),
    Case("a byte-order mark first", text(lambda ls: b"\xef\xbb\xbf" + _join(ls)), INVALID, M),
    Case("another version header", text(lines_edit(
        lambda ls: ["condpay.transfer.v3", *ls[1:]])), INVALID, M),
    Case("another kind of document", text(lines_edit(
        lambda ls: ["condpay.redeem.v1", *ls[1:]])), INVALID, M),
    Case("not UTF-8", text(lambda ls: _join(ls).replace(b"memo: ", b"memo: \xff\xfe")), INVALID,
         M),
    Case("NUL in the memo", text(memo="a\0b"), INVALID, M, {"field": "instruction.memo"}),
    Case("memo over the limit", text(memo="m" * (TEXT_CHARS_MAX + 1)), INVALID, M,
         {"field": "instruction.memo"}),
    Case("payload over 4096 bytes", text(lambda ls: _join(ls) + b"x" * 4096), INVALID, M),
    Case("invalid source id", text(source="w/alice"), INVALID, M,
         {"field": "instruction.source"}),
    Case("empty payload", lambda w: Signed("req-empty", b"", os.urandom(64)), INVALID,
         "MISSING_FIELD", {"field": "instruction"}),
]  # fmt: skip


def _ordered(
    source: str,
    target: str,
    amount_minor: int,
    *,
    random_signature: bool = False,
    other_request_id: bool = False,
    **kwargs: Any,
) -> Build:
    """An instruction with several things wrong at once, for the order of the checks."""

    def build(w: World) -> Signed:
        signed = w.sign(source, w.instruction(source, target, amount_minor, **kwargs))
        if random_signature:
            signed = dataclasses.replace(signed, signature=os.urandom(64))
        if other_request_id:
            signed = dataclasses.replace(signed, request_id="req-another-id")
        return signed

    return build


PAST = 1_000_000
# docs/api.md: decodes; request ids match; currency and amount; source != target; source exists
# and signature; target exists; expiry; single-payment cap; daily cap; funds; target balance cap.
PRECEDENCE_CASES = [
    Case("mismatched request id before an unsupported currency",
         _ordered("alice", "carol", 100, currency="USD", other_request_id=True), INVALID,
         "INSTRUCTION_MISMATCH"),
    Case("amount 0 before a bad signature", _ordered("alice", "carol", 0, random_signature=True),
         INVALID, "INVALID_AMOUNT"),
    Case("source = target before a bad signature",
         _ordered("alice", "alice", 100, random_signature=True), INVALID,
         "SAME_SOURCE_AND_TARGET"),
    Case("bad signature before an unknown target",
         _ordered("alice", "w_nosuchwallet", 100, random_signature=True), DENIED,
         "SIGNATURE_INVALID"),
    Case("unknown target before expiry", _ordered("alice", "w_nosuchwallet", 100,
         expires_at_us=PAST), NOT_FOUND, "WALLET_NOT_FOUND"),
    Case("expiry before the caps and funds", _ordered("dave", "carol", 50_000_01,
         expires_at_us=PAST), PRECONDITION, "INSTRUCTION_EXPIRED"),
    Case("single-payment cap before funds", _ordered("dave", "carol", 50_000_01), PRECONDITION,
         "LIMIT_EXCEEDED", {"limit": "single_payment_cap"}),
    Case("funds before the target's balance cap", _ordered("dave", "bob", 1_000_01),
         PRECONDITION, "INSUFFICIENT_FUNDS"),
]  # fmt: skip


def _resolve(value: str, w: World) -> str:
    return value.replace("{alice}", w.ids["alice"]).replace("{expiry}", str(w.expiry_us()))


@pytest.mark.parametrize(
    "cases",
    [
        SIGNATURE_CASES,
        WALLET_CASES,
        CURRENCY_CASES,
        AMOUNT_CASES,
        CANONICAL_CASES,
        PRECEDENCE_CASES,
    ],
    ids=["signature", "wallets", "currency", "amount", "canonical-form", "precedence"],
)
async def test_bad_transfer_instruction(
    world: World, subtests: pytest.Subtests, cases: list[Case]
) -> None:
    for case in cases:
        with subtests.test(case.name):
            signed = case.build(world)
            if case.code is Code.OK:  # the control: the same construction, nothing wrong
                reply = await world.send(signed)
                assert reply.entry.seq > 0
                continue
            metadata = {k: _resolve(v, world) for k, v in case.metadata.items()}
            await refused(
                world,
                lambda s=signed: world.send(s),
                case.code,
                case.reason,
                **metadata,
            )


# -- tier caps, funds and expiry, with typed details -------------------------------------------
def _limit(w: World, name: str, kind: int, limit: int, used: int, attempted: int) -> Message:
    return errors_pb2.LimitExceeded(
        wallet_id=w.ids[name],
        currency="CNY",
        limit=kind,  # type: ignore[arg-type]
        limit_minor=limit,
        used_minor=used,
        attempted_minor=attempted,
    )


async def test_single_payment_cap(world: World) -> None:
    cap = 50_000_00  # tier 2
    await refused(
        world,
        lambda: world.send(world.signed("alice", "carol", cap + 1)),
        PRECONDITION,
        "LIMIT_EXCEEDED",
        detail=_limit(world, "alice", errors_pb2.LIMIT_KIND_SINGLE_PAYMENT_CAP, cap, 0, cap + 1),
        wallet_id=world.ids["alice"],
        limit="single_payment_cap",
    )
    await world.send(world.signed("alice", "carol", cap))  # exactly the cap is allowed


async def test_target_balance_cap(world: World) -> None:
    cap, held = 20_000_00, 19_000_00  # bob: tier 3
    await refused(
        world,
        lambda: world.send(world.signed("alice", "bob", cap - held + 1)),
        PRECONDITION,
        "LIMIT_EXCEEDED",
        detail=_limit(world, "bob", errors_pb2.LIMIT_KIND_BALANCE_CAP, cap, held, cap - held + 1),
        wallet_id=world.ids["bob"],
        limit="balance_cap",
    )
    await world.send(world.signed("alice", "bob", cap - held))  # up to the cap exactly
    assert balance(await world.cb.get_wallet(world.ids["bob"])).available.amount_minor == cap


async def test_insufficient_funds_carries_wallet_currency_needed_and_available(
    world: World,
) -> None:
    def funds(name: str, needed: int, available: int) -> Message:
        wallet = world.id_of(name)
        return errors_pb2.InsufficientFunds(
            wallet_id=wallet, currency="CNY", needed_minor=needed, available_minor=available
        )

    await refused(
        world,
        lambda: world.send(world.signed("dave", "carol", 10_01)),
        PRECONDITION,
        "INSUFFICIENT_FUNDS",
        detail=funds("dave", 10_01, 10_00),
        wallet_id=world.ids["dave"],
        currency="CNY",
    )
    # The largest int64 amount parses, and is refused for funds (carol: tier 1, no caps).
    await refused(
        world,
        lambda: world.send(world.signed("carol", "dave", INT64_MAX)),
        PRECONDITION,
        "INSUFFICIENT_FUNDS",
        detail=funds("carol", INT64_MAX, 0),
    )
    await refused(
        world,
        lambda: world.cb.redeem(INSTITUTION_ID, "CNY", RESERVE_CNY + 1),
        PRECONDITION,
        "INSUFFICIENT_FUNDS",
        detail=funds("reserve", RESERVE_CNY + 1, RESERVE_CNY),
    )


@pytest.fixture
async def clocked(database_url: str) -> AsyncIterator[tuple[World, ManualClock]]:
    clock = ManualClock(CLOCK_START_US)
    async with start_harness(database_url, clock=clock) as harness:
        yield await build_world(harness, clock=clock), clock


async def test_daily_cap_across_transfers_resets_at_china_midnight(
    clocked: tuple[World, ManualClock],
) -> None:
    world, clock = clocked
    cap = 100_000_00  # alice: tier 2
    for _ in range(2):
        await world.send(world.signed("alice", "carol", 40_000_00))
    await refused(
        world,
        lambda: world.send(world.signed("alice", "carol", 20_000_01)),
        PRECONDITION,
        "LIMIT_EXCEEDED",
        detail=_limit(world, "alice", errors_pb2.LIMIT_KIND_DAILY_CAP, cap, 80_000_00, 20_000_01),
        limit="daily_cap",
    )
    await world.send(world.signed("alice", "carol", 20_000_00))  # reaches the cap exactly
    await refused(
        world,
        lambda: world.send(world.signed("alice", "carol", 1)),
        PRECONDITION,
        "LIMIT_EXCEEDED",
        detail=_limit(world, "alice", errors_pb2.LIMIT_KIND_DAILY_CAP, cap, cap, 1),
    )
    # 16:10 UTC is 00:10 the next day in China: the same UTC day, a new limit day.
    clock.advance(20 * 60)
    await world.send(world.signed("alice", "carol", 30_000_00))
    alice = balance(await world.cb.get_wallet(world.ids["alice"]))
    assert alice.spent_today.amount_minor == 30_000_00
    assert alice.available.amount_minor == 200_000_00 - cap - 30_000_00


async def test_instruction_expires_on_the_server_clock(
    clocked: tuple[World, ManualClock],
) -> None:
    world, clock = clocked
    expires_at_us = clock.now_us() + 60_000_000
    early = world.signed("alice", "carol", 1_00, expires_at_us=expires_at_us)
    late = world.signed("alice", "carol", 2_00, expires_at_us=expires_at_us)
    clock.advance(59)
    await world.send(early)
    clock.advance(1)
    clock.set(clock.now_us() + 1)  # one microsecond past the expiry
    await refused(
        world,
        lambda: world.send(late),
        PRECONDITION,
        "INSTRUCTION_EXPIRED",
        expires_at_us=str(expires_at_us),
    )


# -- request fields of every mutating and reading call -----------------------------------------
@dataclass(frozen=True)
class Raw:
    name: str
    method: str
    request: Callable[[World], Message]
    code: Code
    reason: str | tuple[str, ...]
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    caller: str = CENTRAL_BANK


KEY = OwnerKey.from_seed(b"k" * 32).public_key  # a valid Ed25519 public key


def _issue(**fields: Any) -> Callable[[World], Message]:
    def build(w: World) -> Message:
        values: dict[str, Any] = {
            "request_id": f"req-{os.urandom(6).hex()}",
            "institution_id": INSTITUTION_ID,
            "amount": {"currency": "CNY", "amount_minor": 100},
        }
        values.update(fields)
        return central_bank_pb2.IssueRequest(**{k: v for k, v in values.items() if v is not None})

    return build


def _open(**fields: Any) -> Callable[[World], Message]:
    def build(w: World) -> Message:
        values: dict[str, Any] = {
            "request_id": f"req-{os.urandom(6).hex()}",
            "institution_id": INSTITUTION_ID,
            "kind": wallet_pb2.WALLET_KIND_PERSONAL,
            "tier": 2,
            "owner_public_key": KEY,
        }
        values.update(fields)
        return wallet_pb2.OpenWalletRequest(**values)

    return build


def _register(**fields: Any) -> Callable[[World], Message]:
    def build(w: World) -> Message:
        values: dict[str, Any] = {
            "request_id": f"req-{os.urandom(6).hex()}",
            "institution_id": "boc-hk",
            "display_name": "BOC HK",
            "owner_public_key": KEY,
        }
        values.update(fields)
        return central_bank_pb2.RegisterInstitutionRequest(**values)

    return build


def _transfer(
    request_id: str | None = None, *, instruction: bool = True, submitter: str | None = None
) -> Callable[..., Message]:
    def build(w: World) -> Message:
        signed = w.signed("alice", "carol", 100, submitter=submitter)
        return wallet_pb2.TransferRequest(
            request_id=signed.request_id if request_id is None else request_id,
            instruction=wallet_pb2.SignedInstruction(
                payload=signed.payload, signature=signed.signature
            )
            if instruction
            else None,
        )

    return build


def _money(currency: str, amount_minor: int) -> dict[str, Any]:
    return {"currency": currency, "amount_minor": amount_minor}


def _field(name: str) -> dict[str, str]:
    return {"field": name}


OVERFLOW = INT64_MAX - ISSUED_CNY + 1
REQUEST_CASES = [
    # Transfer: the request around the instruction
    Raw("Transfer without request_id", W + "Transfer", _transfer(""), INVALID, "MISSING_FIELD",
        _field("request_id"), BANK),
    Raw("Transfer with a malformed request_id", W + "Transfer", _transfer("has space"), INVALID,
        "INVALID_REQUEST_ID", _field("request_id"), BANK),
    Raw("Transfer with a 129-char request_id", W + "Transfer", _transfer("r" * 129), INVALID,
        "INVALID_REQUEST_ID", _field("request_id"), BANK),
    Raw("Transfer without instruction", W + "Transfer", _transfer(instruction=False), INVALID,
        "MISSING_FIELD", _field("instruction"), BANK),
    # Issue and Redeem
    Raw("Issue without request_id", C + "Issue", _issue(request_id=""), INVALID, "MISSING_FIELD",
        _field("request_id")),
    Raw("Issue without amount", C + "Issue", _issue(amount=None), INVALID, "MISSING_FIELD",
        _field("amount")),
    Raw("Issue without currency", C + "Issue", _issue(amount=_money("", 100)), INVALID,
        "MISSING_FIELD", _field("amount.currency")),
    Raw("Issue without institution_id", C + "Issue", _issue(institution_id=""), INVALID,
        "MISSING_FIELD", _field("institution_id")),
    Raw("Issue to an unknown institution", C + "Issue", _issue(institution_id="nobody"),
        NOT_FOUND, "INSTITUTION_NOT_FOUND", {"id": "nobody"}),
    Raw("Issue with a malformed institution_id", C + "Issue", _issue(institution_id="a b"),
        INVALID, "INVALID_ID", _field("institution_id")),
    Raw("Issue amount 0", C + "Issue", _issue(amount=_money("CNY", 0)), INVALID,
        "INVALID_AMOUNT", _field("amount.amount_minor")),
    Raw("Issue amount -1", C + "Issue", _issue(amount=_money("CNY", -1)), INVALID,
        "INVALID_AMOUNT", _field("amount.amount_minor")),
    Raw("Issue amount int64 min", C + "Issue", _issue(amount=_money("CNY", -(2**63))), INVALID,
        "INVALID_AMOUNT"),
    Raw("Issue USD", C + "Issue", _issue(amount=_money("USD", 100)), INVALID,
        "UNSUPPORTED_CURRENCY", {"field": "amount.currency", "currency": "USD"}),
    Raw("Issue cny", C + "Issue", _issue(amount=_money("cny", 100)), INVALID,
        "UNSUPPORTED_CURRENCY", _field("amount.currency")),
    Raw("Issue CN", C + "Issue", _issue(amount=_money("CN", 100)), INVALID,
        "UNSUPPORTED_CURRENCY", _field("amount.currency")),
    Raw("Issue beyond int64 of supply", C + "Issue", _issue(amount=_money("CNY", OVERFLOW)),
        Code.OUT_OF_RANGE, "AMOUNT_OVERFLOW"),
    Raw("Issue with a control character in the memo", C + "Issue", _issue(memo="a\nb"), INVALID,
        "INVALID_TEXT", _field("memo")),
    Raw("Redeem without amount", C + "Redeem",
        lambda w: central_bank_pb2.RedeemRequest(request_id="req-r1", institution_id="icbc-sz"),
        INVALID, "MISSING_FIELD", _field("amount")),
    # OpenWallet
    Raw("OpenWallet without request_id", W + "OpenWallet", _open(request_id=""), INVALID,
        "MISSING_FIELD", _field("request_id"), BANK),
    Raw("OpenWallet without key", W + "OpenWallet", _open(owner_public_key=b""), INVALID,
        "MISSING_FIELD", _field("owner_public_key"), BANK),
    Raw("OpenWallet with a 31-byte key", W + "OpenWallet", _open(owner_public_key=KEY[:31]),
        INVALID, "INVALID_PUBLIC_KEY", _field("owner_public_key"), BANK),
    Raw("OpenWallet with a 33-byte key", W + "OpenWallet", _open(owner_public_key=KEY + b"!"),
        INVALID, "INVALID_PUBLIC_KEY", _field("owner_public_key"), BANK),
    Raw("OpenWallet kind UNSPECIFIED", W + "OpenWallet",
        _open(kind=wallet_pb2.WALLET_KIND_UNSPECIFIED), INVALID, "INVALID_WALLET_KIND",
        _field("kind"), BANK),
    Raw("OpenWallet kind INSTITUTION", W + "OpenWallet",
        _open(kind=wallet_pb2.WALLET_KIND_INSTITUTION, tier=0), INVALID, "INVALID_WALLET_KIND",
        _field("kind"), BANK),
    Raw("OpenWallet kind 99", W + "OpenWallet", _open(kind=99), INVALID, "INVALID_WALLET_KIND",
        _field("kind"), BANK),
    Raw("OpenWallet personal tier 5", W + "OpenWallet", _open(tier=5), INVALID, "INVALID_TIER",
        _field("tier"), BANK),
    Raw("OpenWallet personal tier 0", W + "OpenWallet", _open(tier=0), INVALID, "INVALID_TIER",
        _field("tier"), BANK),
    Raw("OpenWallet personal tier -1", W + "OpenWallet", _open(tier=-1), INVALID, "INVALID_TIER",
        _field("tier"), BANK),
    Raw("OpenWallet enterprise tier 2", W + "OpenWallet",
        _open(kind=wallet_pb2.WALLET_KIND_ENTERPRISE, tier=2), INVALID, "INVALID_TIER",
        _field("tier"), BANK),
    Raw("OpenWallet without institution_id", W + "OpenWallet", _open(institution_id=""),
        INVALID, "MISSING_FIELD", _field("institution_id"), BANK),
    Raw("OpenWallet at an unknown institution", W + "OpenWallet", _open(institution_id="nobody"),
        NOT_FOUND, "INSTITUTION_NOT_FOUND", {"id": "nobody"}, "institution/nobody"),
    Raw("OpenWallet by a platform", W + "OpenWallet", _open(),
        DENIED, "ROLE_NOT_ALLOWED", {}, "platform/alipay"),
    Raw("OpenWallet at another institution", W + "OpenWallet", _open(),
        DENIED, "ROLE_NOT_ALLOWED", _field("institution_id"), "institution/boc-hk"),
    Raw("OpenWallet with a 141-char display name", W + "OpenWallet",
        _open(display_name="n" * 141), INVALID, "INVALID_TEXT", _field("display_name"), BANK),
    # RegisterInstitution
    Raw("RegisterInstitution twice", C + "RegisterInstitution",
        _register(institution_id=INSTITUTION_ID), Code.ALREADY_EXISTS, "INSTITUTION_EXISTS"),
    Raw("RegisterInstitution without key", C + "RegisterInstitution",
        _register(owner_public_key=b""), INVALID, "MISSING_FIELD", _field("owner_public_key")),
    Raw("RegisterInstitution with a 31-byte key", C + "RegisterInstitution",
        _register(owner_public_key=KEY[:31]), INVALID, "INVALID_PUBLIC_KEY"),
    Raw("RegisterInstitution with a malformed id", C + "RegisterInstitution",
        _register(institution_id="BOC HK"), INVALID, "INVALID_ID", _field("institution_id")),
    # Reads
    Raw("GetWallet without wallet_id", W + "GetWallet", lambda w: wallet_pb2.GetWalletRequest(),
        INVALID, "MISSING_FIELD", _field("wallet_id")),
    Raw("GetWallet of an unknown wallet", W + "GetWallet",
        lambda w: wallet_pb2.GetWalletRequest(wallet_id="w_nosuch"), NOT_FOUND,
        "WALLET_NOT_FOUND"),
    Raw("GetWallet with a malformed id", W + "GetWallet",
        lambda w: wallet_pb2.GetWalletRequest(wallet_id="w nosuch"), INVALID, "INVALID_ID"),
    Raw("ListJournal with a bad page token", W + "ListJournal",
        lambda w: wallet_pb2.ListJournalRequest(page_token="abc"), INVALID,
        "INVALID_PAGE_TOKEN"),
    Raw("ListJournal of an unknown wallet", W + "ListJournal",
        lambda w: wallet_pb2.ListJournalRequest(wallet_id="w_nosuch"), NOT_FOUND,
        "WALLET_NOT_FOUND"),
    Raw("ListJournal by a platform", W + "ListJournal",
        lambda w: wallet_pb2.ListJournalRequest(), DENIED, "ROLE_NOT_ALLOWED", {},
        "platform/alipay"),
    Raw("GetSupply of USD", C + "GetSupply",
        lambda w: central_bank_pb2.GetSupplyRequest(currencies=["USD"]), INVALID,
        "UNSUPPORTED_CURRENCY"),
    Raw("GetSupply of an empty currency code", C + "GetSupply",
        lambda w: central_bank_pb2.GetSupplyRequest(currencies=[""]), INVALID,
        ("MISSING_FIELD", "UNSUPPORTED_CURRENCY")),
    Raw("GetOperation without request_id", OP + "GetOperation",
        lambda w: operation_pb2.GetOperationRequest(), INVALID, "MISSING_FIELD"),
    Raw("GetOperation with a malformed request_id", OP + "GetOperation",
        lambda w: operation_pb2.GetOperationRequest(request_id="a b"), INVALID,
        "INVALID_REQUEST_ID"),
    Raw("GetOperation of an unknown request_id", OP + "GetOperation",
        lambda w: operation_pb2.GetOperationRequest(request_id="req-unknown"), NOT_FOUND,
        "OPERATION_NOT_FOUND"),
]  # fmt: skip


def _absent_wallets(case: Raw, request: Message) -> tuple[str, ...]:
    """Wallets a refused OpenWallet or RegisterInstitution would have created."""
    if isinstance(request, wallet_pb2.OpenWalletRequest) and request.request_id:
        return (derive_wallet_id(case.caller, request.request_id),)
    if (
        isinstance(request, central_bank_pb2.RegisterInstitutionRequest)
        and request.institution_id != INSTITUTION_ID
        and ID_PATTERN.fullmatch(request.institution_id)
    ):
        return (reserve_wallet_id(request.institution_id),)
    return ()


async def test_bad_request_fields(world: World, subtests: pytest.Subtests) -> None:
    for case in REQUEST_CASES:
        with subtests.test(case.name):
            request = case.request(world)
            await refused(
                world,
                lambda r=request, c=case: raw_call(
                    world.harness.address, c.method, r, caller=c.caller
                ),
                case.code,
                case.reason,
                absent=_absent_wallets(case, request),
                **case.metadata,
            )


async def test_list_journal_paging_out_of_range_is_refused_not_internal(
    world: World, subtests: pytest.Subtests
) -> None:
    """A negative page size may be refused or read as the default, never INTERNAL; a page token
    beyond int64 was never given out by the API."""
    for page_size in (-1, -1000, -(2**31)):
        with subtests.test(f"page_size {page_size}"):
            request = wallet_pb2.ListJournalRequest(page_size=page_size)
            outcome: Any
            try:
                outcome = await raw_call(world.harness.address, W + "ListJournal", request)
            except ApiError as error:
                outcome = error
            if isinstance(outcome, ApiError):
                assert status_code(outcome) == INVALID, outcome
            else:
                assert len(outcome.entries) == len((await world.snapshot()).journal)
    with subtests.test("page token beyond int64"):
        await refused(
            world,
            lambda: raw_call(
                world.harness.address,
                W + "ListJournal",
                wallet_pb2.ListJournalRequest(page_token=str(2**63)),
            ),
            INVALID,
            "INVALID_PAGE_TOKEN",
        )


async def test_undecodable_request_bytes_are_invalid_argument(world: World) -> None:
    """Bytes that are not a protobuf message at all: the request is wrong, not the server."""
    for method in (W + "Transfer", C + "Issue"):
        before = await world.snapshot()
        with pytest.raises(ApiError) as caught:
            await raw_call(world.harness.address, method, b"\xff\xff\xff\xff", caller=BANK)
        error = caught.value
        assert (status_code(error), bool(error.reason)) == (INVALID, True), error
        assert "DecodeError" not in error.message, error.message
        assert "Wire format" not in error.message, error.message
        assert await world.snapshot() == before


# -- who is calling ----------------------------------------------------------------------------
BAD_CALLERS = [None, "", "nobody", "king/pboc", "central_bank/", "central_bank/PBOC", "cb/a/b"]


async def test_caller_without_valid_identity_is_unauthenticated(
    world: World, subtests: pytest.Subtests
) -> None:
    for caller in BAD_CALLERS:
        for method, request in [
            (C + "Issue", _issue()(world)),
            (C + "GetSupply", central_bank_pb2.GetSupplyRequest()),
            (W + "Transfer", _transfer()(world)),
        ]:
            with subtests.test(f"{method} as {caller!r}"):
                await refused(
                    world,
                    lambda m=method, r=request, c=caller: raw_call(
                        world.harness.address, m, r, caller=c
                    ),
                    Code.UNAUTHENTICATED,
                    "CALLER_UNKNOWN",
                )


# -- the role table, generated from settlement/api/methods.py ----------------------------------
def _valid_request(method: str, w: World, caller: str | None = None) -> Message:
    """A request that succeeds (as a dry run, when mutating) for a role in the method's row, sent
    by ``caller`` (a signed document names it as its submitter)."""
    rid = f"req-{os.urandom(6).hex()}"
    requests: dict[str, Callable[[], Message]] = {
        C + "RegisterInstitution": lambda: _register(request_id=rid)(w),
        C + "Issue": lambda: _issue(request_id=rid)(w),
        C + "Redeem": lambda: central_bank_pb2.RedeemRequest(
            request_id=rid, institution_id=INSTITUTION_ID, amount=_money("CNY", 100)
        ),
        C + "GetSupply": lambda: central_bank_pb2.GetSupplyRequest(currencies=["CNY"]),
        W + "OpenWallet": lambda: _open(request_id=rid)(w),
        W + "GetWallet": lambda: wallet_pb2.GetWalletRequest(wallet_id=w.ids["alice"]),
        W + "Transfer": lambda: _transfer(submitter=caller)(w),
        W + "ListJournal": lambda: wallet_pb2.ListJournalRequest(wallet_id=w.ids["alice"]),
        OP + "GetOperation": lambda: operation_pb2.GetOperationRequest(request_id=rid),
        EV + "GetCheckpoint": lambda: evidence_pb2.GetCheckpointRequest(seq=1),
        EV + "GetInclusionProof": lambda: evidence_pb2.GetInclusionProofRequest(entry_seq=1),
        EV + "GetPaymentEvidence": lambda: evidence_pb2.GetPaymentEvidenceRequest(
            payment_id="p_nothing"
        ),
    }
    if method in requests:
        return requests[method]()
    # Methods of the payment, asset and settlement services: a request of the right type, with a
    # request id where the method takes one; what it says does not matter to the role check.
    descriptor = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    request = message_factory.GetMessageClass(descriptor.input_type)()
    if "request_id" in descriptor.input_type.fields_by_name:
        request.request_id = rid  # type: ignore[attr-defined]
    return request


PAYMENT_SERVICES = {
    "condpay.v1.ContractService",
    "condpay.v1.ConditionalPaymentService",
    "condpay.v1.OracleService",
    "condpay.v1.AssetService",
    "condpay.v1.SettlementService",
    "condpay.v1.InventoryFinanceService",
}


def _caller(role: Role) -> str:
    if role is Role.CENTRAL_BANK:
        return "central_bank/pboc"  # the requests are in CNY: its issuer
    return BANK if role is Role.INSTITUTION else f"{role.value}/probe"


def test_role_table_covers_every_rpc_of_the_public_services() -> None:
    pool = descriptor_pool.Default()
    rpcs = {
        f"/{name}/{m.name}" for name in SERVICE_NAMES for m in pool.FindServiceByName(name).methods
    }
    assert rpcs == set(METHODS)


async def test_every_role_outside_a_methods_row_is_denied(
    world: World, subtests: pytest.Subtests
) -> None:
    """Generated from METHODS: every (method, role) pair outside the row is PERMISSION_DENIED /
    ROLE_NOT_ALLOWED for a request that the roles in the row get answered (as a dry run)."""
    before = await world.snapshot()
    for method, spec in sorted(METHODS.items()):
        for role in sorted(Role, key=lambda r: r.value):
            with subtests.test(f"{method} as {role.value}"):
                request = _valid_request(method, world, _caller(role))
                if role not in spec.roles:
                    await expect_error(
                        raw_call(world.harness.address, method, request, caller=_caller(role)),
                        DENIED,
                        "ROLE_NOT_ALLOWED",
                        role=role.value,
                        method=method,
                    )
                    continue
                # The control: the same request passes the role check for a role in the row.
                if spec.mutating:
                    request.dry_run = True  # type: ignore[attr-defined]
                call = raw_call(world.harness.address, method, request, caller=_caller(role))
                if method == OP + "GetOperation":
                    await expect_error(call, NOT_FOUND, "OPERATION_NOT_FOUND")
                elif method == EV + "GetPaymentEvidence":  # (no payment in this world)
                    await expect_error(call, NOT_FOUND, "PAYMENT_NOT_FOUND")
                elif method.split("/")[1] in PAYMENT_SERVICES or method == W + "GetWallet":
                    # (A platform or financier sees alice's wallet only as a party of a payment:
                    # docs/api.md and tests/test_tenancy.py.)
                    # Past the role check: any answer but an identity refusal.
                    reason = ""
                    try:
                        await call
                    except ApiError as error:
                        reason = error.reason
                    assert reason not in ("ROLE_NOT_ALLOWED", "CALLER_UNKNOWN"), method
                else:
                    await call
    assert await world.snapshot() == before
