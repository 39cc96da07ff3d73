"""The schema, as SQLModel tables. Alembic migrations (settlement/db/migrations) create it.

Money and sequence columns are BIGINT (a plain ``int`` field would be 32-bit on PostgreSQL);
instants are unix microseconds UTC in ``*_at_us`` BIGINT columns, identical on SQLite and
PostgreSQL. CHECK constraints make a negative balance impossible whatever the code above does.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Index, LargeBinary, SmallInteger, text
from sqlmodel import Field, SQLModel


class Institution(SQLModel, table=True):
    __tablename__ = "institutions"

    institution_id: str = Field(primary_key=True)
    display_name: str
    reserve_wallet_id: str
    registered_at_us: int = Field(sa_type=BigInteger)


class Wallet(SQLModel, table=True):
    """Immutable once opened: the engine caches owner keys on the strength of that."""

    __tablename__ = "wallets"

    wallet_id: str = Field(primary_key=True)
    kind: str  # PERSONAL | ENTERPRISE | INSTITUTION
    tier: int = Field(sa_type=SmallInteger)
    institution_id: str = Field(index=True)
    owner_public_key: bytes = Field(sa_type=LargeBinary)
    display_name: str
    opened_by: str
    opened_at_us: int = Field(sa_type=BigInteger)


class Balance(SQLModel, table=True):
    """One row per wallet and currency, made when the wallet opens."""

    __tablename__ = "balances"
    __table_args__ = (
        CheckConstraint("available >= 0", name="ck_balances_available_nonnegative"),
        CheckConstraint("held >= 0", name="ck_balances_held_nonnegative"),
        CheckConstraint("spent_today >= 0", name="ck_balances_spent_today_nonnegative"),
    )

    wallet_id: str = Field(primary_key=True, foreign_key="wallets.wallet_id")
    currency: str = Field(primary_key=True)
    available: int = Field(sa_type=BigInteger)
    held: int = Field(sa_type=BigInteger)
    # Outgoing payments on limit day `spent_day` (days since 1970-01-01 in UTC+8).
    spent_day: int = Field(sa_type=BigInteger)
    spent_today: int = Field(sa_type=BigInteger)


class Supply(SQLModel, table=True):
    """Per currency: issued - redeemed is the money in circulation, = the sum of all balances."""

    __tablename__ = "supply"
    __table_args__ = (
        CheckConstraint("issued >= 0", name="ck_supply_issued_nonnegative"),
        CheckConstraint("redeemed >= 0", name="ck_supply_redeemed_nonnegative"),
        CheckConstraint("redeemed <= issued", name="ck_supply_redeemed_le_issued"),
    )

    currency: str = Field(primary_key=True)
    issued: int = Field(sa_type=BigInteger)
    redeemed: int = Field(sa_type=BigInteger)


class LedgerHead(SQLModel, table=True):
    """The one row every committing transaction locks last: the next sequence number and the
    hash the next journal entry chains to."""

    __tablename__ = "ledger_head"
    __table_args__ = (CheckConstraint("id = 1", name="ck_ledger_head_single_row"),)

    id: int = Field(
        primary_key=True, sa_type=SmallInteger, sa_column_kwargs={"autoincrement": False}
    )
    seq: int = Field(sa_type=BigInteger)
    hash: bytes = Field(sa_type=LargeBinary)


class JournalEntry(SQLModel, table=True):
    __tablename__ = "journal_entries"

    seq: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    kind: str
    request_id: str
    caller: str
    committed_at_us: int = Field(sa_type=BigInteger)
    memo: str
    prev_hash: bytes = Field(sa_type=LargeBinary)
    hash: bytes = Field(sa_type=LargeBinary)


class Posting(SQLModel, table=True):
    __tablename__ = "postings"
    __table_args__ = (Index("ix_postings_account_seq", "account_id", "seq"),)

    seq: int = Field(sa_type=BigInteger, primary_key=True, foreign_key="journal_entries.seq")
    idx: int = Field(
        sa_type=SmallInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    account_id: str
    bucket: str  # AVAILABLE | HELD | ISSUANCE
    currency: str
    amount: int = Field(sa_type=BigInteger)
    balance_after: int = Field(sa_type=BigInteger)


class Operation(SQLModel, table=True):
    """The stored outcome of every mutating call, keyed by caller and request id, written in the
    same transaction as its effect."""

    __tablename__ = "operations"

    caller: str = Field(primary_key=True)
    request_id: str = Field(primary_key=True)
    method: str
    request_hash: bytes = Field(sa_type=LargeBinary)
    ok: bool
    # The serialized reply (ok) or google.rpc.Status (failed).
    outcome: bytes = Field(sa_type=LargeBinary)
    commit_seq: int = Field(sa_type=BigInteger)
    created_at_us: int = Field(sa_type=BigInteger)


# -- conditional payments (migration 0002) -----------------------------------------------------
class Contract(SQLModel, table=True):
    """A checked contract, stored under the hash of its canonical compiled form (immutable)."""

    __tablename__ = "contracts"
    # The per-platform daily registration quota counts a platform's contracts of the day.
    __table_args__ = (Index("ix_contracts_registered_by", "registered_by", "registered_at_us"),)

    contract_hash: str = Field(primary_key=True)
    name: str
    version: int
    canonical: bytes = Field(sa_type=LargeBinary)
    source: str
    registered_by: str
    registered_at_us: int = Field(sa_type=BigInteger)


class Payment(SQLModel, table=True):
    """A conditional payment: the escrow sits in the payer's HELD bucket; ``held_minor`` is what
    of it belongs to this payment."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("held_minor >= 0", name="ck_payments_held_nonnegative"),
        CheckConstraint(
            "released_minor + refunded_minor + held_minor = escrow_minor",
            name="ck_payments_escrow_accounted",
        ),
        Index("ix_payments_platform_created", "platform", "created_at_us"),
        Index("ix_payments_state_deadline", "state", "deadline_at_us"),
    )

    payment_id: str = Field(primary_key=True)
    platform: str
    contract_hash: str = Field(foreign_key="contracts.contract_hash")
    params_json: str  # the canonical bound parameter values (contracts_dsl BoundParams)
    payer_wallet_id: str = Field(index=True)
    currency: str
    escrow_minor: int = Field(sa_type=BigInteger)
    held_minor: int = Field(sa_type=BigInteger)
    released_minor: int = Field(sa_type=BigInteger)
    refunded_minor: int = Field(sa_type=BigInteger)
    state: str  # LOCKED | PARTIALLY_RELEASED | SETTLED | REFUNDED | EXPIRED | CANCELLED
    terminal_reason: str
    deadline_at_us: int | None = Field(default=None, sa_type=BigInteger)
    contract_state: str  # the evaluator's state, JSON
    version: int = Field(sa_type=BigInteger)
    created_at_us: int = Field(sa_type=BigInteger)
    updated_at_us: int = Field(sa_type=BigInteger)


class PaymentFinancing(SQLModel, table=True):
    __tablename__ = "payment_financing"
    __table_args__ = (
        CheckConstraint(
            "refunded_minor <= principal_minor", name="ck_financing_refund_le_principal"
        ),
    )

    payment_id: str = Field(primary_key=True, foreign_key="payments.payment_id")
    idx: int = Field(
        primary_key=True, sa_type=SmallInteger, sa_column_kwargs={"autoincrement": False}
    )
    financier_wallet_id: str = Field(index=True)
    principal_minor: int = Field(sa_type=BigInteger)
    fee_minor: int = Field(sa_type=BigInteger)
    due_at_us: int = Field(sa_type=BigInteger)
    refunded_minor: int = Field(sa_type=BigInteger)
    request_id: str
    funded_by: str


class PaymentAssignment(SQLModel, table=True):
    __tablename__ = "payment_assignments"
    __table_args__ = (
        CheckConstraint(
            "collected_minor <= assigned_minor", name="ck_assignment_collected_le_assigned"
        ),
    )

    payment_id: str = Field(primary_key=True, foreign_key="payments.payment_id")
    idx: int = Field(
        primary_key=True, sa_type=SmallInteger, sa_column_kwargs={"autoincrement": False}
    )
    payee_wallet_id: str
    financier_wallet_id: str = Field(index=True)
    assigned_minor: int = Field(sa_type=BigInteger)
    advance_minor: int = Field(sa_type=BigInteger)
    collected_minor: int = Field(sa_type=BigInteger)
    request_id: str
    assigned_by: str


class PaymentLeg(SQLModel, table=True):
    """A leg the contract made due and the core executed: the primary key makes paying one leg
    twice impossible whatever the code above does."""

    __tablename__ = "payment_legs"

    payment_id: str = Field(primary_key=True, foreign_key="payments.payment_id")
    leg_id: str = Field(primary_key=True)
    idx: int = Field(sa_type=SmallInteger)
    clause: str
    kind: str
    party: str
    wallet_id: str
    paid_to_wallet_id: str
    amount_minor: int = Field(sa_type=BigInteger)
    currency: str
    reason: str
    commit_seq: int = Field(sa_type=BigInteger)


class OracleRegistry(SQLModel, table=True):
    """The oracle set version: +1 on every registration, rotation and revocation."""

    __tablename__ = "oracle_registry"
    __table_args__ = (CheckConstraint("id = 1", name="ck_oracle_registry_single_row"),)

    id: int = Field(
        primary_key=True, sa_type=SmallInteger, sa_column_kwargs={"autoincrement": False}
    )
    version: int = Field(sa_type=BigInteger)


class Oracle(SQLModel, table=True):
    __tablename__ = "oracles"

    oracle_id: str = Field(primary_key=True)
    scheme: str  # ED25519 | BLS12_381
    public_key: bytes = Field(sa_type=LargeBinary)
    key_version: int
    key_set_version: int = Field(sa_type=BigInteger)
    revoked: bool
    display_name: str
    registered_at_us: int = Field(sa_type=BigInteger)
    updated_at_us: int = Field(sa_type=BigInteger)


class OracleKey(SQLModel, table=True):
    """Every public key ever registered to an oracle (current and rotated out): a key belongs to
    one oracle id forever, so one secret can never count as two quorum members."""

    __tablename__ = "oracle_keys"

    public_key: bytes = Field(primary_key=True, sa_type=LargeBinary)
    oracle_id: str = Field(index=True)
    registered_at_us: int = Field(sa_type=BigInteger)


class Attestation(SQLModel, table=True):
    """Every verified attestation, matched or not. An event id is unique per payment and
    attester (the attester's name in the contract), forever (replays): no one can squat another
    payment's or another attester's event id."""

    __tablename__ = "attestations"

    payment_id: str = Field(primary_key=True, index=True, foreign_key="payments.payment_id")
    oracle: str = Field(primary_key=True)
    event_id: str = Field(primary_key=True)
    seq: int = Field(sa_type=BigInteger)  # order of acceptance within the payment
    event_type: str
    observed_at_us: int = Field(sa_type=BigInteger)
    accepted_at_us: int = Field(sa_type=BigInteger)
    attributes_json: str
    signer_ids: str  # JSON list
    report_json: str  # what the evaluator said of it
    statement: bytes = Field(sa_type=LargeBinary)


class PaymentEvent(SQLModel, table=True):
    """One row per payment version: what changed (WatchPayment streams these)."""

    __tablename__ = "payment_events"

    payment_id: str = Field(primary_key=True, foreign_key="payments.payment_id")
    version: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    kind: str
    at_us: int = Field(sa_type=BigInteger)


# -- digital titles (migration 0003) -------------------------------------------------------------
class Title(SQLModel, table=True):
    """A digital title (electronic bill of lading, warehouse receipt, receivable). A split retires
    the title (state SPLIT) and makes two children; a pledged title cannot move."""

    __tablename__ = "titles"
    __table_args__ = (CheckConstraint("units > 0", name="ck_titles_units_positive"),)

    title_id: str = Field(primary_key=True)
    kind: str
    issuer_id: str
    holder_wallet_id: str = Field(index=True)
    units: int = Field(sa_type=BigInteger)
    description: str
    document_sha256: str
    pledged_to: str  # a financier's wallet id, or ""
    parent_title_id: str
    state: str  # ACTIVE | SPLIT
    version: int = Field(sa_type=BigInteger)
    issued_at_us: int = Field(sa_type=BigInteger)
    updated_at_us: int = Field(sa_type=BigInteger)


class TitleMove(SQLModel, table=True):
    """Every change of a title, in order: its audit trail."""

    __tablename__ = "title_moves"

    title_id: str = Field(primary_key=True, foreign_key="titles.title_id")
    seq: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    kind: str  # ISSUED | SPLIT | PLEDGED | RELEASED | DELIVERED
    from_wallet_id: str
    to_wallet_id: str
    units: int = Field(sa_type=BigInteger)
    request_id: str
    at_us: int = Field(sa_type=BigInteger)
    # The caller whose command made the move (migration 0005; "" before it): a caller that moved
    # a title may read it (settlement/api/scopes.py).
    moved_by: str = Field(default="", index=True)


class FxQuote(SQLModel, table=True):
    """A bridge FX quote handed out by QuoteFx; a settlement uses it once."""

    __tablename__ = "fx_quotes"

    quote_id: str = Field(primary_key=True)
    requested_by: str
    source_currency: str
    target_currency: str
    source_minor: int = Field(sa_type=BigInteger)
    target_minor: int = Field(sa_type=BigInteger)
    spread_minor: int = Field(sa_type=BigInteger)
    rate_num: int = Field(sa_type=BigInteger)
    rate_den: int = Field(sa_type=BigInteger)
    provider_id: str
    expires_at_us: int = Field(sa_type=BigInteger)
    created_at_us: int = Field(sa_type=BigInteger)
    used_by: str


class Settlement(SQLModel, table=True):
    """A PvP or DvP settlement: its legs, the durable decision, the bridge leg's last known state
    and its finality (block header and quorum certificate). See docs/settlement.md."""

    __tablename__ = "settlements"
    __table_args__ = (
        CheckConstraint("pay_minor > 0 AND receive_minor >= 0", name="ck_settlements_amounts"),
        Index("ix_settlements_open", "state", "updated_at_us"),
        Index("ix_settlements_requested_by", "requested_by", "settlement_id"),
    )

    settlement_id: str = Field(primary_key=True)
    kind: str  # PVP | DVP
    requested_by: str
    request_id: str
    origin_payment_id: str = Field(index=True)
    origin_leg_id: str
    payer_wallet_id: str
    pay_currency: str
    pay_minor: int = Field(sa_type=BigInteger)
    payee_wallet_id: str
    receive_currency: str
    receive_minor: int = Field(sa_type=BigInteger)
    title_id: str
    title_units: int = Field(sa_type=BigInteger)
    delivered_title_id: str
    quote_id: str
    spread_minor: int = Field(sa_type=BigInteger)
    rate_num: int = Field(sa_type=BigInteger)
    rate_den: int = Field(sa_type=BigInteger)
    provider_id: str
    quote_expires_at_us: int = Field(sa_type=BigInteger)
    transfer_id: str
    bridge_state: str
    bridge_expires_at_us: int = Field(sa_type=BigInteger)
    decide_by_us: int = Field(sa_type=BigInteger)
    decision: str
    decided_at_us: int = Field(sa_type=BigInteger)
    abort_reason: str
    state: str
    attempt: int
    version: int = Field(sa_type=BigInteger)
    created_at_us: int = Field(sa_type=BigInteger)
    updated_at_us: int = Field(sa_type=BigInteger)
    block_height: int = Field(sa_type=BigInteger)
    block_header: bytes = Field(sa_type=LargeBinary)
    certificate: bytes = Field(sa_type=LargeBinary)
    origin_loan_id: str = Field(default="")  # migration 0009: a defaulted loan's sale,
    surplus_wallet_id: str = Field(default="")  # and its borrower, paid what the loan is not owed


# -- read scopes (migration 0005) ---------------------------------------------------------------
class PaymentParty(SQLModel, table=True):
    """Every wallet a payment involves (payer, wallet parameters, financiers' and assignees'
    wallets), written with the payment's lock, funding and assignments: a platform or financier
    sees a wallet only as a party of a payment it may see (settlement/api/scopes.py)."""

    __tablename__ = "payment_parties"

    payment_id: str = Field(primary_key=True, foreign_key="payments.payment_id")
    wallet_id: str = Field(primary_key=True, index=True)


class ServerKey(SQLModel, table=True):
    """Secrets every replica shares, made once by whichever replica starts first (the page-token
    key: settlement/api/scopes.py)."""

    __tablename__ = "server_keys"

    name: str = Field(primary_key=True)
    secret: bytes = Field(sa_type=LargeBinary)
    created_at_us: int = Field(sa_type=BigInteger)


# -- journal checkpoints (migration 0007) -------------------------------------------------------
class JournalCheckpoint(SQLModel, table=True):
    """A signed statement of the journal's first ``seq`` entries: the chain's head hash and the
    RFC 6962 Merkle root over their hashes (condpay/checkpoints.py). ``frontier`` is the tree's
    perfect-subtree roots, so the next checkpoint extends it without reading old entries. Any
    replica may sign; two signing the same ``seq`` keep the first."""

    __tablename__ = "journal_checkpoints"

    seq: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    head_hash: bytes = Field(sa_type=LargeBinary)
    tree_root: bytes = Field(sa_type=LargeBinary)
    frontier: bytes = Field(sa_type=LargeBinary)
    signed_at_us: int = Field(sa_type=BigInteger)
    public_key: bytes = Field(sa_type=LargeBinary)
    signature: bytes = Field(sa_type=LargeBinary)


# -- evidence (migration 0008) ------------------------------------------------------------------
class PaymentDocument(SQLModel, table=True):
    """The signed bytes behind each change of a payment, exactly as the client sent them, with
    the keys that verified them: the payer's lock (idx 0) and the holders' title pledges (idx
    1..), fundings, assignments, cancellations (``body``: each signer's wallet, key and
    signature) and attestations (``payload`` is the statement; ``body`` the attributes payload,
    the signatures and the oracle set in force when it was accepted). Written with the change, in
    its transaction and batch; ``version`` is the payment version the change made, ``entry_seq``
    the journal entry it posted (0: none of its own; the legs carry theirs). An evidence bundle
    (EvidenceService.GetPaymentEvidence, docs/evidence.md) is made of these."""

    __tablename__ = "payment_documents"

    payment_id: str = Field(primary_key=True, foreign_key="payments.payment_id")
    version: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    idx: int = Field(
        primary_key=True, sa_type=SmallInteger, sa_column_kwargs={"autoincrement": False}
    )
    kind: str  # LOCK | PLEDGE | FUND | ASSIGN | CANCEL | ATTESTATION
    payload: bytes = Field(sa_type=LargeBinary)
    body: str  # JSON (docs/evidence.md)
    entry_seq: int = Field(sa_type=BigInteger)


# -- inventory loans (migration 0009) -----------------------------------------------------------
class Loan(SQLModel, table=True):
    """A loan against pledged warehouse receipts (docs/financing.md). ``deadline_at_us`` is the
    next instant the deadline sweep acts on it (maturity, or a margin call's cure deadline); NULL
    once it is repaid, defaulted or disposed of."""

    __tablename__ = "loans"
    __table_args__ = (
        CheckConstraint(
            "principal_outstanding_minor >= 0 AND fee_outstanding_minor >= 0 "
            "AND interest_outstanding_minor >= 0",
            name="ck_loans_outstanding",
        ),
        Index("ix_loans_deadline", "deadline_at_us"),
        Index("ix_loans_borrower", "borrower_wallet_id", "loan_id"),
        Index("ix_loans_financier", "financier_wallet_id", "loan_id"),
    )

    loan_id: str = Field(primary_key=True)
    opened_by: str
    request_id: str
    borrower_wallet_id: str
    financier_wallet_id: str
    borrower_agent: str
    financier_agent: str
    currency: str
    principal_minor: int = Field(sa_type=BigInteger)
    principal_outstanding_minor: int = Field(sa_type=BigInteger)
    fee_minor: int = Field(sa_type=BigInteger)
    fee_outstanding_minor: int = Field(sa_type=BigInteger)
    rate_bps: int = Field(sa_type=BigInteger)
    interest_outstanding_minor: int = Field(sa_type=BigInteger)
    interest_remainder: int = Field(sa_type=BigInteger)
    accrued_at_us: int = Field(sa_type=BigInteger)
    repaid_minor: int = Field(sa_type=BigInteger)
    recovered_minor: int = Field(sa_type=BigInteger)
    surplus_minor: int = Field(sa_type=BigInteger)
    maturity_at_us: int = Field(sa_type=BigInteger)
    unit_price_minor: int = Field(sa_type=BigInteger)
    price_observed_at_us: int = Field(sa_type=BigInteger)
    haircut_bps: int = Field(sa_type=BigInteger)
    margin_call_bps: int = Field(sa_type=BigInteger)
    cure_period_s: int = Field(sa_type=BigInteger)
    price_oracle_id: str
    warehouse_oracle_id: str
    sensor_oracle_ids: str  # comma-separated
    sensor_threshold: int = Field(sa_type=BigInteger)
    disposal: str  # RETAIN | SELL
    collateral_json: str
    state: str  # OPEN | MARGIN_CALL | REPAID | DEFAULTED | DISPOSED
    cure_by_us: int = Field(sa_type=BigInteger)
    deadline_at_us: int | None = Field(default=None, sa_type=BigInteger)
    terminal_reason: str
    version: int = Field(sa_type=BigInteger)
    created_at_us: int = Field(sa_type=BigInteger)
    updated_at_us: int = Field(sa_type=BigInteger)


class LoanEvent(SQLModel, table=True):
    """Every change of a loan, in order (``seq`` is the loan's version after it): its history.
    A collateral attestation's ``event_id`` appears once per loan (replays are refused)."""

    __tablename__ = "loan_events"
    __table_args__ = (
        Index(
            "ux_loan_events_event_id",
            "loan_id",
            "event_id",
            unique=True,
            sqlite_where=text("event_id != ''"),
            postgresql_where=text("event_id != ''"),
        ),
    )

    loan_id: str = Field(primary_key=True, foreign_key="loans.loan_id")
    seq: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    kind: str
    event_id: str
    amount_minor: int = Field(sa_type=BigInteger)
    title_id: str
    units: int = Field(sa_type=BigInteger)
    detail: str
    request_id: str
    at_us: int = Field(sa_type=BigInteger)
    by: str
