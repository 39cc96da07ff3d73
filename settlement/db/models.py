"""The schema, as SQLModel tables. Alembic migrations (settlement/db/migrations) create it.

Money and sequence columns are BIGINT (a plain ``int`` field would be 32-bit on PostgreSQL);
instants are unix microseconds UTC in ``*_at_us`` BIGINT columns, identical on SQLite and
PostgreSQL. CHECK constraints make a negative balance impossible whatever the code above does.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Index, LargeBinary, SmallInteger
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
