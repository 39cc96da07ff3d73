"""What the console's pages show, read through the public gRPC API with the console's identity.

Every function here takes a :class:`~condpay.client.Client` (a central bank or an auditor) and
returns plain data for a template; nothing is cached, so every page is what the core says now.
The server scopes every read (docs/api.md, "Who may call what and see what"): the console shows
what it is given and never asks for more than its identity may see.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from condpay.client import Client
from condpay.errors import ApiError, DeadlineExceeded, NotFound, ResourceExhausted
from condpay.evidence import EvidenceError, verify_bundle
from condpay.v1 import (
    central_bank_pb2,
    evidence_pb2,
    money_pb2,
    payment_pb2,
    settlement_pb2,
)
from google.protobuf.timestamp_pb2 import Timestamp

from wallets.money import format_amount

__all__ = [
    "LIST_PAGE_SIZE",
    "OPEN_STATES",
    "PAYMENT_STATES",
    "SCAN_PAGES_MAX",
    "SETTLEMENT_STATES",
    "EvidenceView",
    "Overview",
    "PaymentPage",
    "SupplyRow",
    "TimelineStep",
    "at_us",
    "evidence_bundle",
    "money",
    "overview",
    "payment_page",
    "payments_page",
    "settlement_page",
    "settlements_page",
    "when",
]

#: Rows per page of the payment and settlement lists.
LIST_PAGE_SIZE: Final = 50
#: The overview counts payments and settlements by scanning pages of 500 (the API's largest);
#: past this many pages it says "at least".
SCAN_PAGES_MAX: Final = 20
SCAN_PAGE_SIZE: Final = 500
#: How long a payment page waits on WatchPayment for a change before it answers as it is.
WATCH_WAIT_SECONDS: Final = 20.0
#: ... and how long it waits instead when the core refuses another stream (STREAMS_EXCEEDED:
#: CONDPAY_STREAMS_MAX per caller), before it answers as the payment is.
POLL_SECONDS_WITHOUT_STREAM: Final = 5.0

PAYMENT_STATES: Final = (
    "LOCKED",
    "PARTIALLY_RELEASED",
    "SETTLED",
    "REFUNDED",
    "EXPIRED",
    "CANCELLED",
)
OPEN_STATES: Final = ("LOCKED", "PARTIALLY_RELEASED")
SETTLEMENT_STATES: Final = (
    "PENDING",
    "PREPARED",
    "COMMITTING",
    "COMMITTED",
    "FINAL",
    "ABORTING",
    "ABORTED",
)


# -- formatting ----------------------------------------------------------------------------------


def money(value: money_pb2.Money) -> str:
    """``125,000.00 CNY``; an empty Money is ``0``."""
    if not value.currency:
        return "0"
    return f"{format_amount(value.amount_minor, value.currency, grouping=True)} {value.currency}"


def minor(amount_minor: int, currency: str) -> str:
    return f"{format_amount(amount_minor, currency, grouping=True)} {currency}"


def at_us(timestamp: Timestamp) -> int:
    return timestamp.seconds * 1_000_000 + timestamp.nanos // 1000


def when(us: int) -> str:
    """An instant for people, in UTC to the second (``2026-11-27 08:00:01 UTC``)."""
    if us <= 0:
        return "-"
    moment = dt.datetime.fromtimestamp(us / 1_000_000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _state(value: int) -> str:
    return payment_pb2.PaymentState.Name(value).removeprefix("PAYMENT_STATE_")  # type: ignore[arg-type]


def _settlement_state(value: int) -> str:
    name = settlement_pb2.SettlementState.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("SETTLEMENT_STATE_")


def _kind(value: int) -> str:
    return settlement_pb2.SettlementKind.Name(value).removeprefix("SETTLEMENT_KIND_")  # type: ignore[arg-type]


def _payment_state_value(name: str) -> payment_pb2.PaymentState.ValueType:
    return payment_pb2.PaymentState.Value(f"PAYMENT_STATE_{name}")


def _settlement_state_value(name: str) -> settlement_pb2.SettlementState.ValueType:
    return settlement_pb2.SettlementState.Value(f"SETTLEMENT_STATE_{name}")


# -- the overview --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SupplyRow:
    currency: str
    issued: str
    redeemed: str
    in_circulation: str
    balances_sum: str
    held: str
    consistent: bool
    in_circulation_minor: int
    held_minor: int


@dataclass(frozen=True, slots=True)
class OpenEscrow:
    payment_id: str
    contract: str
    payer_wallet_id: str
    state: str
    held: str
    escrow: str
    deadline_us: int
    deadline: str
    time_left: str


@dataclass(slots=True)
class Overview:
    as_of_seq: int
    supply: list[SupplyRow]
    idle_currencies: list[str]
    payments_by_state: dict[str, int]
    payments_total: int
    payments_complete: bool  # False: more than the scan reads; the counts are lower bounds
    open_escrows: list[OpenEscrow]
    settlements_by_state: dict[str, int]
    settlements_by_kind: dict[str, int]
    settlements_total: int
    settlements_complete: bool
    now_us: int


def _time_left(deadline_us: int, now_us: int) -> str:
    if deadline_us <= 0:
        return "no deadline"
    seconds = (deadline_us - now_us) // 1_000_000
    span = abs(seconds)
    if span < 120:
        text = f"{span} s"
    elif span < 7200:
        text = f"{span // 60} min"
    elif span < 172_800:
        text = f"{span // 3600} h"
    else:
        text = f"{span // 86_400} d"
    return f"in {text}" if seconds >= 0 else f"overdue by {text}"


async def _all_payments(client: Client) -> tuple[list[payment_pb2.Payment], bool]:
    found: list[payment_pb2.Payment] = []
    token = ""
    for _ in range(SCAN_PAGES_MAX):
        page = await client.api.payments.list_payments(
            payment_pb2.ListPaymentsRequest(
                page_size=SCAN_PAGE_SIZE, page_token=token, view=payment_pb2.PAYMENT_VIEW_BASIC
            )
        )
        found.extend(page.payments)
        token = page.next_page_token
        if not token:
            return found, True
    return found, False


async def _all_settlements(client: Client) -> tuple[list[settlement_pb2.Settlement], bool]:
    found: list[settlement_pb2.Settlement] = []
    token = ""
    for _ in range(SCAN_PAGES_MAX):
        page = await client.api.settlements.list_settlements(
            settlement_pb2.ListSettlementsRequest(page_size=SCAN_PAGE_SIZE, page_token=token)
        )
        found.extend(page.settlements)
        token = page.next_page_token
        if not token:
            return found, True
    return found, False


async def overview(client: Client, now_us: int) -> Overview:
    (
        supply,
        (payments, payments_complete),
        (settlements, settlements_complete),
    ) = await asyncio.gather(
        client.api.central_bank.get_supply(central_bank_pb2.GetSupplyRequest()),
        _all_payments(client),
        _all_settlements(client),
    )
    rows, idle = [], []
    for s in supply.supplies:
        if not (s.issued.amount_minor or s.redeemed.amount_minor or s.balances_sum.amount_minor):
            idle.append(s.currency)
            continue
        rows.append(
            SupplyRow(
                currency=s.currency,
                issued=money(s.issued),
                redeemed=money(s.redeemed),
                in_circulation=money(s.in_circulation),
                balances_sum=money(s.balances_sum),
                held=money(s.held_sum),
                consistent=s.consistent,
                in_circulation_minor=s.in_circulation.amount_minor,
                held_minor=s.held_sum.amount_minor,
            )
        )
    by_state = Counter(_state(p.state) for p in payments)
    open_escrows = sorted(
        (
            OpenEscrow(
                payment_id=p.payment_id,
                contract=p.contract.name,
                payer_wallet_id=p.payer_wallet_id,
                state=_state(p.state),
                held=money(p.held),
                escrow=money(p.escrow),
                deadline_us=at_us(p.deadline) if p.HasField("deadline") else 0,
                deadline=when(at_us(p.deadline)) if p.HasField("deadline") else "-",
                time_left=_time_left(at_us(p.deadline) if p.HasField("deadline") else 0, now_us),
            )
            for p in payments
            if _state(p.state) in OPEN_STATES
        ),
        key=lambda e: (e.deadline_us or 2**62, e.payment_id),
    )
    return Overview(
        as_of_seq=supply.as_of_seq,
        supply=rows,
        idle_currencies=idle,
        payments_by_state={s: by_state.get(s, 0) for s in PAYMENT_STATES},
        payments_total=len(payments),
        payments_complete=payments_complete,
        open_escrows=open_escrows,
        settlements_by_state={
            s: sum(1 for x in settlements if _settlement_state(x.state) == s)
            for s in SETTLEMENT_STATES
        },
        settlements_by_kind=dict(Counter(_kind(x.kind) for x in settlements)),
        settlements_total=len(settlements),
        settlements_complete=settlements_complete,
        now_us=now_us,
    )


# -- lists -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentRow:
    payment_id: str
    platform: str
    contract: str
    payer_wallet_id: str
    state: str
    escrow: str
    held: str
    released: str
    refunded: str
    deadline: str
    updated: str


@dataclass(frozen=True, slots=True)
class PaymentList:
    rows: list[PaymentRow]
    next_page_token: str


async def payments_page(
    client: Client, *, state: str, payer: str, contract: str, page_token: str
) -> PaymentList:
    """One page of ListPayments with the filters (an unknown state name: ValueError)."""
    request = payment_pb2.ListPaymentsRequest(
        payer_wallet_id=payer,
        contract_hash=contract,
        page_size=LIST_PAGE_SIZE,
        page_token=page_token,
        view=payment_pb2.PAYMENT_VIEW_BASIC,
    )
    if state:
        if state not in PAYMENT_STATES:
            raise ValueError(f"no payment state {state!r}")
        request.state = _payment_state_value(state)
    page = await client.api.payments.list_payments(request)
    rows = [
        PaymentRow(
            payment_id=p.payment_id,
            platform=p.platform,
            contract=p.contract.name,
            payer_wallet_id=p.payer_wallet_id,
            state=_state(p.state),
            escrow=money(p.escrow),
            held=money(p.held),
            released=money(p.released),
            refunded=money(p.refunded),
            deadline=when(at_us(p.deadline)) if p.HasField("deadline") else "-",
            updated=when(at_us(p.updated_at)),
        )
        for p in page.payments
    ]
    return PaymentList(rows, page.next_page_token)


@dataclass(frozen=True, slots=True)
class SettlementRow:
    settlement_id: str
    kind: str
    state: str
    pay: str
    receive: str
    payer_wallet_id: str
    payee_wallet_id: str
    origin_payment_id: str
    origin_leg_id: str
    block_height: int
    decided: str
    abort_reason: str


def _settlement_row(s: settlement_pb2.Settlement) -> SettlementRow:
    return SettlementRow(
        settlement_id=s.settlement_id,
        kind=_kind(s.kind),
        state=_settlement_state(s.state),
        pay=money(s.pay),
        receive=money(s.receive),
        payer_wallet_id=s.payer_wallet_id,
        payee_wallet_id=s.payee_wallet_id,
        origin_payment_id=s.origin_payment_id,
        origin_leg_id=s.origin_leg_id,
        block_height=s.finality.block_height if s.HasField("finality") else 0,
        decided=when(at_us(s.decided_at)) if s.HasField("decided_at") else "-",
        abort_reason=s.abort_reason,
    )


@dataclass(frozen=True, slots=True)
class SettlementList:
    rows: list[SettlementRow]
    next_page_token: str


async def settlements_page(
    client: Client, *, state: str, payment: str, page_token: str
) -> SettlementList:
    request = settlement_pb2.ListSettlementsRequest(
        origin_payment_id=payment, page_size=LIST_PAGE_SIZE, page_token=page_token
    )
    if state:
        if state not in SETTLEMENT_STATES:
            raise ValueError(f"no settlement state {state!r}")
        request.state = _settlement_state_value(state)
    page = await client.api.settlements.list_settlements(request)
    return SettlementList([_settlement_row(s) for s in page.settlements], page.next_page_token)


@dataclass(frozen=True, slots=True)
class SettlementLegRow:
    ledger: str
    from_id: str
    to_id: str
    amount: str
    title: str
    state: str


@dataclass(frozen=True, slots=True)
class SettlementPage:
    row: SettlementRow
    request_id: str
    attempt: int
    version: int
    created: str
    updated: str
    transfer_id: str
    quote: str
    legs: list[SettlementLegRow]
    block_hash: str
    quorum_signers: list[str]


async def settlement_page(client: Client, settlement_id: str) -> SettlementPage:
    s = (
        await client.api.settlements.get_settlement(
            settlement_pb2.GetSettlementRequest(settlement_id=settlement_id)
        )
    ).settlement
    quote = ""
    if s.HasField("quote") and s.quote.quote_id:
        q = s.quote
        quote = (
            f"{q.quote_id}: {money(q.source)} for {money(q.target)} (spread {money(q.spread)}, "
            f"rate {q.rate_numerator}/{q.rate_denominator}, by {q.liquidity_provider_id}, "
            f"expires {when(at_us(q.expires_at))})"
        )
    return SettlementPage(
        row=_settlement_row(s),
        request_id=s.request_id,
        attempt=s.attempt,
        version=s.version,
        created=when(at_us(s.created_at)),
        updated=when(at_us(s.updated_at)),
        transfer_id=s.transfer_id,
        quote=quote,
        legs=[
            SettlementLegRow(
                ledger=leg.ledger,
                from_id=leg.from_id,
                to_id=leg.to_id,
                amount=money(leg.amount),
                title=f"{leg.title_id} x {leg.units}" if leg.title_id else "",
                state=leg.state,
            )
            for leg in s.legs
        ],
        block_hash=s.finality.block_hash.hex() if s.HasField("finality") else "",
        quorum_signers=list(s.finality.signer_ids) if s.HasField("finality") else [],
    )


# -- one payment ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegRow:
    leg_id: str
    kind: str
    party: str
    wallet_id: str
    amount: str
    paid_to: str  # a wallet id, or the payout's settlement id
    paid_by_settlement: bool
    target_currency: str
    entry_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class EntryRow:
    seq: int
    kind: str
    at: str
    caller: str
    memo: str
    postings: list[tuple[str, str, str, str]]  # account, bucket, amount, balance after
    hash: str


@dataclass(slots=True)
class TimelineStep:
    """One change of the payment (a version), what made it and what it moved."""

    version: int
    kind: str
    at_us: int
    at: str
    lines: list[str] = field(default_factory=list)
    signers: list[str] = field(default_factory=list)
    legs: list[LegRow] = field(default_factory=list)
    entry_seqs: list[int] = field(default_factory=list)


@dataclass(slots=True)
class EvidenceView:
    """The payment's evidence bundle as the console got it: verified here, or why not."""

    available: bool
    verified: bool = False
    summary: list[str] = field(default_factory=list)
    problem: str = ""
    checkpoint_seq: int = 0
    key_id: str = ""
    bytes_total: int = 0


@dataclass(slots=True)
class PaymentPage:
    payment_id: str
    platform: str
    contract_name: str
    contract_hash: str
    contract_version: int
    state: str
    open: bool
    terminal_reason: str
    payer_wallet_id: str
    escrow: str
    held: str
    released: str
    refunded: str
    escrow_minor: int
    held_minor: int
    released_minor: int
    refunded_minor: int
    deadline: str
    created: str
    updated: str
    version: int
    params: list[tuple[str, str]]
    financing: list[str]
    assignments: list[str]
    attestations: list[dict[str, Any]]
    legs: list[LegRow]
    timeline: list[TimelineStep]
    entries: list[EntryRow]
    settlements: list[SettlementRow]
    evidence: EvidenceView
    waited_for_change: bool = False


def _param(value: Any) -> str:
    which = value.WhichOneof("value")
    if which == "money":
        return money(value.money)
    if which == "timestamp":
        return when(at_us(value.timestamp))
    if which is None:
        return "-"
    return str(getattr(value, which))


async def evidence_bundle(client: Client, payment_id: str) -> bytes:
    reply = await client.api.evidence.get_payment_evidence(
        evidence_pb2.GetPaymentEvidenceRequest(payment_id=payment_id)
    )
    return reply.bundle


async def _wait_for_change(client: Client, payment_id: str, after_version: int) -> bool:
    """Wait on WatchPayment for the first change after ``after_version``: True when one came
    before WATCH_WAIT_SECONDS, False when none did (or the payment is already past it)."""

    async def first() -> bool:
        stream: AsyncIterator[payment_pb2.WatchPaymentResponse] = client.api.payments.watch_payment(
            payment_pb2.WatchPaymentRequest(
                payment_id=payment_id,
                after_version=after_version,
                view=payment_pb2.PAYMENT_VIEW_BASIC,
            )
        )
        async for _change in stream:
            return True
        return False

    try:
        return await asyncio.wait_for(first(), WATCH_WAIT_SECONDS)
    except (TimeoutError, DeadlineExceeded):
        return False
    except ResourceExhausted:  # this identity's streams are all taken: poll instead
        await asyncio.sleep(POLL_SECONDS_WITHOUT_STREAM)
        return False


async def payment_page(
    client: Client,
    payment_id: str,
    *,
    checkpoint_key: bytes | None,
    after_version: int = -1,
) -> PaymentPage:
    """The payment, its timeline and journal entries (from its evidence bundle when the
    identity may read it, verified here against ``checkpoint_key``). With ``after_version`` ≥ 0,
    first waits (WatchPayment) for a change after that version."""
    waited = False
    if after_version >= 0:
        waited = await _wait_for_change(client, payment_id, after_version)
    p = (
        await client.api.payments.get_payment(
            payment_pb2.GetPaymentRequest(payment_id=payment_id, view=payment_pb2.PAYMENT_VIEW_FULL)
        )
    ).payment
    evidence = EvidenceView(available=False)
    bundle: dict[str, Any] | None = None
    try:
        data = await evidence_bundle(client, payment_id)
    except NotFound:
        evidence.problem = (
            "the evidence bundle is not visible to this identity (a central bank sees the "
            "evidence of payments in its own currency)"
        )
    except ApiError as error:
        evidence.problem = f"GetPaymentEvidence: {error.code.name} {error.reason}"
    else:
        evidence.available = True
        evidence.bytes_total = len(data)
        bundle = json.loads(data)
        try:
            verified = await asyncio.to_thread(verify_bundle, data, checkpoint_key)
        except EvidenceError as error:
            evidence.problem = f"does not verify: {error.what}: {error.why}"
        else:
            evidence.verified = True
            evidence.summary = list(verified.summary)
            evidence.checkpoint_seq = verified.checkpoint_seq
            evidence.key_id = verified.checkpoint_key_id
    settlements = [
        _settlement_row(s)
        for s in (
            await client.api.settlements.list_settlements(
                settlement_pb2.ListSettlementsRequest(
                    origin_payment_id=payment_id, page_size=SCAN_PAGE_SIZE
                )
            )
        ).settlements
    ]
    legs = _legs(p, bundle)
    state = _state(p.state)
    return PaymentPage(
        payment_id=p.payment_id,
        platform=p.platform,
        contract_name=p.contract.name,
        contract_hash=p.contract.contract_hash,
        contract_version=p.contract.version,
        state=state,
        open=state in OPEN_STATES,
        terminal_reason=p.terminal_reason,
        payer_wallet_id=p.payer_wallet_id,
        escrow=money(p.escrow),
        held=money(p.held),
        released=money(p.released),
        refunded=money(p.refunded),
        escrow_minor=p.escrow.amount_minor,
        held_minor=p.held.amount_minor,
        released_minor=p.released.amount_minor,
        refunded_minor=p.refunded.amount_minor,
        deadline=when(at_us(p.deadline)) if p.HasField("deadline") else "-",
        created=when(at_us(p.created_at)),
        updated=when(at_us(p.updated_at)),
        version=p.version,
        params=sorted((name, _param(value)) for name, value in p.params.items()),
        financing=[
            f"{f.financier_wallet_id} funded {money(f.principal)} (fee {money(f.fee)}, due "
            f"{when(at_us(f.due_at))}, refunded {money(f.refunded)})"
            for f in p.financing
        ],
        assignments=[
            f"{a.payee_wallet_id} assigned {money(a.assigned)} to {a.financier_wallet_id} "
            f"(advance {money(a.advance)}, collected {money(a.collected)})"
            for a in p.assignments
        ],
        attestations=[
            {
                "event_id": a.event_id,
                "event_type": a.event_type,
                "oracle": a.oracle,
                "status": a.status,
                "observed": when(at_us(a.observed_at)),
                "accepted": when(at_us(a.accepted_at)),
                "signers": list(a.signer_ids),
                "fired": list(a.fired_clauses),
                "attributes": a.attributes_json,
            }
            for a in p.attestations
        ],
        legs=legs,
        timeline=_timeline(p, bundle, legs),
        entries=_entries(bundle),
        settlements=settlements,
        evidence=evidence,
        waited_for_change=waited,
    )


def _legs(p: payment_pb2.Payment, bundle: dict[str, Any] | None) -> list[LegRow]:
    payouts: dict[str, int] = {}
    if bundle is not None:
        for s in bundle.get("settlements", []):
            seqs = s.get("entry_seqs") or [0]
            payouts[str(s.get("settlement_id"))] = int(seqs[0])
    rows = []
    for leg in p.legs:
        by_settlement = leg.paid_to_wallet_id.startswith("s_")
        seq = leg.commit_seq or (payouts.get(leg.paid_to_wallet_id, 0) if by_settlement else 0)
        rows.append(
            LegRow(
                leg_id=leg.leg_id,
                kind=leg.kind,
                party=leg.party,
                wallet_id=leg.wallet_id,
                amount=money(leg.amount),
                paid_to=leg.paid_to_wallet_id or leg.wallet_id,
                paid_by_settlement=by_settlement,
                target_currency=leg.target_currency,
                entry_seq=seq,
                reason=leg.reason,
            )
        )
    return rows


def _document_lines(doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What a signed document says, and who signed it."""
    kind = str(doc.get("kind"))
    signers: list[str] = []
    lines: list[str] = []
    if kind == "ATTESTATION":
        statement = _fields(doc.get("payload", ""))
        lines.append(
            f"attestation {statement.get('event_type', '?')} by {statement.get('oracle', '?')} "
            f"(event {statement.get('event_id', '?')}, oracle set "
            f"v{statement.get('oracle_set_version', '?')})"
        )
        signers += [f"{s.get('signer')} (Ed25519)" for s in doc.get("ed25519") or []]
        bls = doc.get("bls")
        if bls:
            signers += [f"{s} (BLS aggregate)" for s in bls.get("signers", [])]
        party = doc.get("party")
        if party:
            signers.append(f"{party.get('wallet_id')} (party)")
        oracle_set = doc.get("oracle_set")
        if oracle_set:
            lines.append(
                f"quorum {oracle_set.get('threshold')} of {len(oracle_set.get('sources', []))} "
                f"sources: {', '.join(oracle_set.get('sources', []))}"
            )
    else:
        statement = _fields(doc.get("payload", ""))
        text = f"signed {kind.lower()} document ({statement.get('', '').strip() or kind})"
        currency = statement.get("currency", "")
        amounts = [
            f"{label} {minor(int(statement[key]), currency)}"
            for key, label in (
                ("amount_minor", ""),
                ("fee_minor", "fee"),
                ("assigned_minor", "assigned"),
                ("advance_minor", "advance"),
            )
            if currency and statement.get(key, "").isdigit()
        ]
        if amounts:
            text += ": " + ", ".join(a.strip() for a in amounts)
        if statement.get("financier"):
            text += f" (financier {statement['financier']})"
        lines.append(text)
        signers += [str(s.get("signer")) for s in doc.get("signatures") or []]
    return lines, signers


def _fields(payload_hex: object) -> dict[str, str]:
    """The ``key: value`` lines of a signed document (its first line, the format, under "")."""
    try:
        text = bytes.fromhex(str(payload_hex)).decode()
    except (ValueError, UnicodeDecodeError):
        return {}
    lines = text.splitlines()
    found = {"": lines[0] if lines else ""}
    for line in lines[1:]:
        key, sep, value = line.partition(": ")
        if sep:
            found[key] = value
    return found


def _timeline(
    p: payment_pb2.Payment, bundle: dict[str, Any] | None, legs: Sequence[LegRow]
) -> list[TimelineStep]:
    """The payment's changes in version order, each with its signed documents, signers, the
    legs its attestation fired and the journal entries it posted. Without a bundle (the identity
    may not read it), a shorter timeline from the payment itself."""
    placed: set[str] = set()
    fired_by_event = {a.event_id: list(a.fired_clauses) for a in p.attestations}
    if bundle is None:
        steps = [
            TimelineStep(
                version=1,
                kind="locked",
                at_us=at_us(p.created_at),
                at=when(at_us(p.created_at)),
                lines=[f"{money(p.escrow)} locked by {p.payer_wallet_id}"],
            )
        ]
        for a in p.attestations:
            step = TimelineStep(
                version=0,
                kind=f"attested ({a.status})",
                at_us=at_us(a.accepted_at),
                at=when(at_us(a.accepted_at)),
                lines=[f"attestation {a.event_type} by {a.oracle} (event {a.event_id})"],
                signers=list(a.signer_ids),
            )
            step.legs = [
                leg
                for leg in legs
                if leg.leg_id.split("/")[0] in a.fired_clauses and leg.leg_id not in placed
            ]
            placed.update(leg.leg_id for leg in step.legs)
            steps.append(step)
        rest = [leg for leg in legs if leg.leg_id not in placed]
        if rest or _state(p.state) not in OPEN_STATES:
            steps.append(
                TimelineStep(
                    version=p.version,
                    kind=_state(p.state).lower(),
                    at_us=at_us(p.updated_at),
                    at=when(at_us(p.updated_at)),
                    lines=[p.terminal_reason] if p.terminal_reason else [],
                    legs=rest,
                )
            )
        return steps
    docs_by_version: dict[int, list[dict[str, Any]]] = {}
    for doc in bundle.get("documents", []):
        docs_by_version.setdefault(int(doc.get("version", 0)), []).append(doc)
    entries_at: dict[int, list[int]] = {}
    callers_at: dict[int, set[str]] = {}
    for entry in bundle.get("entries", []):
        committed = int(entry.get("committed_at_us", 0))
        entries_at.setdefault(committed, []).append(int(entry["seq"]))
        callers_at.setdefault(committed, set()).add(str(entry.get("caller", "")))
    steps = []
    for change in bundle.get("changes", []):
        version, kind, at = int(change["version"]), str(change["kind"]), int(change["at_us"])
        step = TimelineStep(version=version, kind=kind, at_us=at, at=when(at))
        fired: list[str] = []
        for doc in docs_by_version.get(version, []):
            lines, signers = _document_lines(doc)
            step.lines += lines
            step.signers += signers
            if doc.get("entry_seq"):
                step.entry_seqs.append(int(doc["entry_seq"]))
            if doc.get("kind") == "ATTESTATION":
                event_id = _fields(doc.get("payload", "")).get("event_id", "")
                fired += fired_by_event.get(event_id, [])
        if kind == "locked":
            step.lines.insert(0, f"{money(p.escrow)} locked by {p.payer_wallet_id}")
        if not docs_by_version.get(version):
            makers = sorted(callers_at.get(at, set()))
            step.lines.append(
                f"no signed document: a step of the server's own ({', '.join(makers)})"
                if makers
                else "no signed document: a step of the server's own"
            )
        step.legs = [
            leg
            for leg in legs
            if leg.leg_id not in placed
            and (
                leg.leg_id.split("/")[0] in fired
                or (leg.entry_seq and leg.entry_seq in entries_at.get(at, []))
            )
        ]
        placed.update(leg.leg_id for leg in step.legs)
        step.entry_seqs = sorted(set(step.entry_seqs) | set(entries_at.get(at, [])))
        step.lines = [line for line in step.lines if line]
        steps.append(step)
    rest = [leg for leg in legs if leg.leg_id not in placed]
    if rest and steps:
        steps[-1].legs += rest
    return steps


def _entries(bundle: dict[str, Any] | None) -> list[EntryRow]:
    if bundle is None:
        return []
    rows = []
    for entry in bundle.get("entries", []):
        rows.append(
            EntryRow(
                seq=int(entry["seq"]),
                kind=str(entry.get("kind")),
                at=when(int(entry.get("committed_at_us", 0))),
                caller=str(entry.get("caller")),
                memo=str(entry.get("memo", "")),
                postings=[
                    (
                        str(account),
                        str(bucket),
                        minor(int(amount), str(currency)),
                        minor(int(after), str(currency)),
                    )
                    for account, bucket, currency, amount, after in entry.get("postings", [])
                ],
                hash=str(entry.get("hash", "")),
            )
        )
    return sorted(rows, key=lambda r: r.seq)
