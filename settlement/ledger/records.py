"""Plain records the engine and the stores exchange: rows as read and rows to write."""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field, fields
from typing import Final

from wallets import WalletKind


class Bucket(enum.StrEnum):
    AVAILABLE = "AVAILABLE"
    HELD = "HELD"
    # The central bank's issuance account: minus the money of that currency in circulation.
    ISSUANCE = "ISSUANCE"


class ConcurrentDuplicate(Exception):
    """A command found the row its request would create (a derived id) already there, although
    no outcome was stored for its request id when the batch began: a concurrent call with the same
    request id committed in between. Retrying the batch finds that outcome and replays it."""


class EntryKind(enum.StrEnum):
    ISSUE = "ISSUE"
    REDEEM = "REDEEM"
    TRANSFER = "TRANSFER"
    LOCK = "LOCK"  # a payer's money into the escrow of a conditional payment
    FUND = "FUND"  # a financier funds an escrow for the payer
    ADVANCE = "ADVANCE"  # a financier advances assigned proceeds to the payee
    RELEASE = "RELEASE"  # a leg paid out of an escrow
    REFUND = "REFUND"  # what remains of an escrow returned (financiers first)
    HOLD = "HOLD"  # a settlement's legs reserved (AVAILABLE -> HELD), before its decision
    UNHOLD = "UNHOLD"  # an aborted settlement's reservations returned (HELD -> AVAILABLE)
    PVP = "PVP"  # a committed payment versus payment: both currencies' legs at once
    DVP = "DVP"  # the payment leg of a committed delivery versus payment
    LOAN = "LOAN"  # an inventory loan's principal, financier -> borrower
    LOAN_REPAYMENT = "LOAN_REPAYMENT"  # borrower -> financier


def issuance_account(currency: str) -> str:
    return f"issuance:{currency}"


BalanceKey = tuple[str, str]  # (wallet_id, currency)
OperationKey = tuple[str, str]  # (caller, request_id)
EventKey = tuple[str, str, str]  # (payment_id, attester name in the contract, event_id)


@dataclass(frozen=True, slots=True)
class InstitutionRecord:
    institution_id: str
    display_name: str
    reserve_wallet_id: str
    registered_at_us: int


@dataclass(frozen=True, slots=True)
class WalletRecord:
    wallet_id: str
    kind: WalletKind
    tier: int
    institution_id: str
    owner_public_key: bytes
    display_name: str
    opened_by: str
    opened_at_us: int


@dataclass(slots=True)
class BalanceRecord:
    wallet_id: str
    currency: str
    available: int
    held: int
    spent_day: int
    spent_today: int

    def values(self) -> tuple[int, int, int, int]:
        return (self.available, self.held, self.spent_day, self.spent_today)


@dataclass(slots=True)
class SupplyRecord:
    currency: str
    issued: int
    redeemed: int

    @property
    def in_circulation(self) -> int:
        return self.issued - self.redeemed


@dataclass(frozen=True, slots=True)
class Funds:
    """What a batch locks last, in this order: the balances and supply rows it reads (those that
    exist) and, for a batch that may post, the ledger head's (seq, hash); and the stored
    outcomes of the request ids it was asked to look up with them."""

    balances: dict[BalanceKey, BalanceRecord]
    supply: dict[str, SupplyRecord]
    head: tuple[int, bytes] | None
    operations: dict[OperationKey, OperationRecord] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PostingRecord:
    account_id: str
    bucket: Bucket
    currency: str
    amount: int
    balance_after: int


@dataclass(slots=True)
class EntryRecord:
    """A journal entry. ``seq``, ``committed_at_us`` and the hashes are set when the batch it
    belongs to is sealed, just before commit."""

    kind: EntryKind
    request_id: str
    caller: str
    memo: str
    postings: list[PostingRecord]
    seq: int = 0
    committed_at_us: int = 0
    prev_hash: bytes = b""
    hash: bytes = b""


@dataclass(frozen=True, slots=True)
class OperationRecord:
    caller: str
    request_id: str
    method: str
    request_hash: bytes
    ok: bool
    outcome: bytes
    commit_seq: int
    created_at_us: int


@dataclass(slots=True)
class Reads:
    """What a command needs loaded (and, for balances, supply, payments, settlements, titles,
    quotes and the oracle registry, locked) before it runs. Loaded in a fixed order: oracle
    registry, payments, settlements, loans, then (with what those rows name: ``reads_after``)
    titles, quotes, wallets, balances, supply (the ledger head last, at sealing), so batches never
    deadlock."""

    wallet_ids: set[str] = field(default_factory=set)
    institution_ids: set[str] = field(default_factory=set)
    balance_keys: set[BalanceKey] = field(default_factory=set)
    currencies: set[str] = field(default_factory=set)
    payment_ids: set[str] = field(default_factory=set)
    title_ids: set[str] = field(default_factory=set)
    quote_ids: set[str] = field(default_factory=set)
    settlement_ids: set[str] = field(default_factory=set)
    loan_ids: set[str] = field(default_factory=set)
    # Loans whose collateral attestations' event ids were seen: (loan id, event id).
    loan_event_ids: set[tuple[str, str]] = field(default_factory=set)
    contract_hashes: set[str] = field(default_factory=set)
    oracle_ids: set[str] = field(default_factory=set)
    # Oracle public keys whose owner (the oracle id it is or was registered to) is needed.
    oracle_keys: set[bytes] = field(default_factory=set)
    # Attestation event keys: (payment id, attester name in the contract, event id).
    event_ids: set[EventKey] = field(default_factory=set)
    # "read": the oracle set version as of now; "write": the command changes the registry.
    registry: str = ""
    # caller -> contract hashes it may register (counted against its contracts per day when new)
    registrations: dict[str, set[str]] = field(default_factory=dict)

    def money_only(self) -> bool:
        """Whether balances and supply are all there is to lock (the wallets and institutions
        named besides are read, never locked)."""
        return not any(getattr(self, f.name) for f in fields(self) if f.name not in _MONEY_READS)

    def merge(self, other: Reads) -> None:
        self.wallet_ids |= other.wallet_ids
        self.institution_ids |= other.institution_ids
        self.balance_keys |= other.balance_keys
        self.currencies |= other.currencies
        self.payment_ids |= other.payment_ids
        self.title_ids |= other.title_ids
        self.quote_ids |= other.quote_ids
        self.settlement_ids |= other.settlement_ids
        self.loan_ids |= other.loan_ids
        self.loan_event_ids |= other.loan_event_ids
        self.contract_hashes |= other.contract_hashes
        self.oracle_ids |= other.oracle_ids
        self.oracle_keys |= other.oracle_keys
        self.event_ids |= other.event_ids
        for caller, hashes in other.registrations.items():
            self.registrations.setdefault(caller, set()).update(hashes)
        if other.registry == "write" or (other.registry and not self.registry):
            self.registry = other.registry


_MONEY_READS = frozenset({"wallet_ids", "institution_ids", "balance_keys", "currencies"})


@dataclass(frozen=True, slots=True)
class TableRows:
    """Rows one batch writes to one of the colder tables (payments, settlements, loans, ...),
    set-based: inserted, or, with ``key``, updated where the key columns match (every other
    column set). Each store writes all of a batch's in as few round trips as it can
    (store_postgres.py: one statement with the ledger's own rows)."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[object, ...]]
    key: tuple[str, ...] = ()  # an UPDATE by these columns (they are among ``columns``)
    skip_taken: bool = False  # INSERT ... ON CONFLICT DO NOTHING


@dataclass(slots=True)
class ChangeSet:
    """Everything one batch writes, in one transaction."""

    institutions: list[InstitutionRecord]
    wallets: list[WalletRecord]
    new_balances: list[BalanceRecord]
    changed_balances: list[BalanceRecord]
    changed_supply: list[SupplyRecord]
    entries: list[EntryRecord]
    operations: list[OperationRecord]
    head_seq: int
    head_hash: bytes
    tables: list[TableRows] = field(default_factory=list)  # only those with rows


# -- conditional payments ------------------------------------------------------------------------
class PaymentState(enum.StrEnum):
    LOCKED = "LOCKED"
    PARTIALLY_RELEASED = "PARTIALLY_RELEASED"
    SETTLED = "SETTLED"
    REFUNDED = "REFUNDED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"

    @property
    def open(self) -> bool:
        return self in (PaymentState.LOCKED, PaymentState.PARTIALLY_RELEASED)


@dataclass(slots=True)
class FinancingRecord:
    financier_wallet_id: str
    principal_minor: int
    fee_minor: int
    due_at_us: int
    refunded_minor: int
    request_id: str
    funded_by: str  # the financier's identity (<role>/<id>) that made the call


@dataclass(slots=True)
class AssignmentRecord:
    payee_wallet_id: str
    financier_wallet_id: str
    assigned_minor: int
    advance_minor: int
    collected_minor: int
    request_id: str
    assigned_by: str


@dataclass(slots=True)
class LegRecord:
    """An executed leg; ``entry`` is the journal entry that moved it (its seq once sealed)."""

    leg_id: str
    clause: str
    kind: str
    party: str
    wallet_id: str
    paid_to_wallet_id: str
    amount_minor: int
    currency: str
    reason: str
    commit_seq: int = 0
    entry: EntryRecord | None = None

    @property
    def seq(self) -> int:
        return self.entry.seq if self.entry is not None else self.commit_seq


@dataclass(slots=True)
class AttestationRecord:
    event_id: str
    payment_id: str
    seq: int
    oracle: str
    event_type: str
    observed_at_us: int
    accepted_at_us: int
    attributes_json: str
    signer_ids: tuple[str, ...]
    report_json: str
    statement: bytes


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A signed document behind a payment change (``payment_documents``): the signed bytes as
    sent, ``body`` the JSON of its signatures and keys (docs/evidence.md). The API layer makes it
    with ``version`` 0; the command stamps the payment version and the entry it posted."""

    kind: str  # LOCK | PLEDGE | FUND | ASSIGN | CANCEL | ATTESTATION
    payload: bytes
    body: str
    idx: int = 0
    version: int = 0
    entry: EntryRecord | None = None


@dataclass(slots=True)
class PaymentRecord:
    payment_id: str
    platform: str
    contract_hash: str
    params_json: str
    payer_wallet_id: str
    currency: str
    escrow_minor: int
    held_minor: int
    released_minor: int
    refunded_minor: int
    state: PaymentState
    terminal_reason: str
    deadline_at_us: int | None
    contract_state: str
    version: int
    created_at_us: int
    updated_at_us: int
    financing: list[FinancingRecord] = field(default_factory=list)
    assignments: list[AssignmentRecord] = field(default_factory=list)
    legs: list[LegRecord] = field(default_factory=list)
    attestations: list[AttestationRecord] = field(default_factory=list)
    # What this batch changes: (version, kind) per change; the counts of rows already stored.
    events: list[tuple[int, str]] = field(default_factory=list)
    stored: tuple[int, int, int, int] = (0, 0, 0, 0)
    is_new: bool = False
    # Wallets this batch made parties of the payment (payment_parties; replaced, never mutated,
    # so a working-set savepoint's shallow copy restores it).
    new_parties: tuple[str, ...] = ()
    # Signed documents this batch recorded (payment_documents; replaced like new_parties).
    new_documents: tuple[DocumentRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class PaymentTerms:
    """What a lock fixes for good: the payment's id, its platform, its contract and parameters
    and its payer. Nothing ever changes them, so every replica may cache them (settlement/ledger/
    directory.py); the payment's state is never cached, the write batch reads it under its lock."""

    payment_id: str
    platform: str
    contract_hash: str
    params_json: str
    payer_wallet_id: str


@dataclass(frozen=True, slots=True)
class ContractRecord:
    contract_hash: str
    name: str
    version: int
    canonical: bytes
    source: str
    registered_by: str
    registered_at_us: int


@dataclass(slots=True)
class OracleRecord:
    oracle_id: str
    scheme: str  # ED25519 | BLS12_381
    public_key: bytes
    key_version: int
    key_set_version: int
    revoked: bool
    display_name: str
    registered_at_us: int
    updated_at_us: int
    is_new: bool = False
    changed: bool = False


# -- digital titles --------------------------------------------------------------------------------
class TitleState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    SPLIT = "SPLIT"  # retired: its units live on in two children


@dataclass(slots=True)
class TitleMoveRecord:
    kind: str  # ISSUED | SPLIT | PLEDGED | RELEASED | DELIVERED
    from_wallet_id: str
    to_wallet_id: str
    units: int
    request_id: str
    at_us: int
    moved_by: str = ""  # the caller of the command that made the move


@dataclass(slots=True)
class TitleRecord:
    title_id: str
    kind: str
    issuer_id: str
    holder_wallet_id: str
    units: int
    description: str
    document_sha256: str
    pledged_to: str
    parent_title_id: str
    state: TitleState
    version: int
    issued_at_us: int
    updated_at_us: int
    moves: list[TitleMoveRecord] = field(default_factory=list)  # new in this batch
    is_new: bool = False


# -- settlements: PvP through the bridge, DvP ----------------------------------------------------
class SettlementKind(enum.StrEnum):
    PVP = "PVP"
    DVP = "DVP"


class SettlementState(enum.StrEnum):
    """PENDING (a payout waiting for a quote) -> PREPARED (the core's legs held, the bridge's being
    reserved) -> COMMITTING (decision COMMIT recorded) -> COMMITTED (both legs posted; awaiting the
    bridge's quorum certificate) -> FINAL; or PREPARED -> ABORTING (decision ABORT recorded, the
    core's legs released, the bridge's abort being confirmed) -> ABORTED. A payout whose attempt
    aborts goes back to PENDING for another quote instead."""

    PENDING = "PENDING"
    PREPARED = "PREPARED"
    COMMITTING = "COMMITTING"
    COMMITTED = "COMMITTED"
    FINAL = "FINAL"
    ABORTING = "ABORTING"
    ABORTED = "ABORTED"

    @property
    def done(self) -> bool:
        return self in (SettlementState.FINAL, SettlementState.ABORTED)


class Decision(enum.StrEnum):
    NONE = ""
    COMMIT = "COMMIT"
    ABORT = "ABORT"


@dataclass(slots=True)
class QuoteRecord:
    """A bridge FX quote the core handed out (QuoteFx), kept so a settlement can hold its legs."""

    quote_id: str
    requested_by: str
    source_currency: str
    target_currency: str
    source_minor: int
    target_minor: int
    spread_minor: int
    rate_num: int
    rate_den: int
    provider_id: str
    expires_at_us: int
    created_at_us: int
    used_by: str = ""
    is_new: bool = False


@dataclass(slots=True)
class SettlementRecord:
    settlement_id: str
    kind: SettlementKind
    requested_by: str
    request_id: str
    origin_payment_id: str  # a conditional payment's payout, else ""
    origin_leg_id: str
    payer_wallet_id: str
    pay_currency: str
    pay_minor: int
    payee_wallet_id: str
    receive_currency: str
    receive_minor: int
    title_id: str  # DvP: the title (or the part of it) delivered payee -> payer
    title_units: int
    delivered_title_id: str
    quote_id: str
    spread_minor: int
    rate_num: int
    rate_den: int
    provider_id: str
    quote_expires_at_us: int
    transfer_id: str  # the bridge transfer of the current attempt, "" without a bridge leg
    bridge_state: str  # "", PREPARED, COMMITTED, ABORTED, EXPIRED, REJECTED, UNKNOWN
    bridge_expires_at_us: int
    decide_by_us: int  # no COMMIT after this; the sweep aborts what is undecided by then
    decision: Decision
    decided_at_us: int
    abort_reason: str
    state: SettlementState
    attempt: int
    version: int
    created_at_us: int
    updated_at_us: int
    block_height: int = 0
    block_header: bytes = b""
    certificate: bytes = b""
    # A defaulted loan's collateral sold: the payee is its financier, who receives what the loan
    # is owed; the surplus goes to the borrower (settlement/ledger/loans.py).
    origin_loan_id: str = ""
    surplus_wallet_id: str = ""  # the loan's borrower
    is_new: bool = False

    @property
    def cross_currency(self) -> bool:
        return self.pay_currency != self.receive_currency


# -- inventory loans on warehouse receipts (docs/financing.md) -------------------------------------
class LoanState(enum.StrEnum):
    """OPEN -> MARGIN_CALL -> OPEN (cured) | DEFAULTED; OPEN | MARGIN_CALL -> REPAID;
    DEFAULTED -> DISPOSED (the receipts taken by the financier, or sold)."""

    OPEN = "OPEN"
    MARGIN_CALL = "MARGIN_CALL"
    REPAID = "REPAID"
    DEFAULTED = "DEFAULTED"
    DISPOSED = "DISPOSED"

    @property
    def live(self) -> bool:
        """Still owing and watched: repayments, pledges and attestations apply."""
        return self in (LoanState.OPEN, LoanState.MARGIN_CALL)


@dataclass(slots=True)
class LoanEventRecord:
    """One change of a loan (loan_events), numbered by the loan's version after it."""

    kind: str  # OPENED | REPAID | RELEASED | PLEDGED | VALUATION | STOCK | MARGIN_CALL | CURED
    # | DEFAULTED | DISPOSED | SOLD
    event_id: str  # a collateral attestation's event id, else ""
    amount_minor: int
    title_id: str
    units: int
    detail: str
    request_id: str
    at_us: int
    by: str


@dataclass(slots=True)
class LoanRecord:
    """A loan against pledged warehouse receipts. ``collateral_json``: the pledged receipts,
    sorted by id, each with the units last reported present and their condition (canonical JSON;
    settlement/ledger/loan_math.py reads and writes it)."""

    loan_id: str
    opened_by: str
    request_id: str
    borrower_wallet_id: str
    financier_wallet_id: str
    borrower_agent: str
    financier_agent: str
    currency: str
    principal_minor: int
    principal_outstanding_minor: int
    fee_minor: int
    fee_outstanding_minor: int
    rate_bps: int
    interest_outstanding_minor: int
    interest_remainder: int  # of interest_outstanding's next fen, in 1/(10,000 × year in µs)
    accrued_at_us: int
    repaid_minor: int
    recovered_minor: int
    surplus_minor: int
    maturity_at_us: int
    unit_price_minor: int
    price_observed_at_us: int
    haircut_bps: int
    margin_call_bps: int
    cure_period_s: int
    price_oracle_id: str
    warehouse_oracle_id: str
    sensor_oracle_ids: str
    sensor_threshold: int
    disposal: str
    collateral_json: str
    state: LoanState
    cure_by_us: int
    deadline_at_us: int | None
    terminal_reason: str
    version: int
    created_at_us: int
    updated_at_us: int
    events: list[LoanEventRecord] = field(default_factory=list)  # new in this batch
    is_new: bool = False


#: Records whose every field is an immutable value: a shallow copy is a snapshot (5x cheaper
#: than a deep one; tests/settlement/test_reply_snapshots.py keeps them so).
FLAT_RECORDS: Final = (QuoteRecord, SettlementRecord)
#: Records with a list that grows within a batch (a title's moves, a loan's events).
_NESTED_RECORDS: Final = (TitleRecord, LoanRecord)


def reply_snapshot(result: object) -> object:
    """A command's result as it stands when the command ends. Replies are built once the whole
    batch has run, and a later command of the batch may change a title, quote or settlement an
    earlier one returned: those are copied here, so each reply shows the state its own request
    left. (Journal entries are not: sealing numbers and hashes them after the batch; payments
    are already returned as snapshots.)"""
    if isinstance(result, tuple):
        return tuple(reply_snapshot(item) for item in result)
    if isinstance(result, FLAT_RECORDS):
        return copy.copy(result)
    if isinstance(result, _NESTED_RECORDS):
        return copy.deepcopy(result)
    return result
