"""Plain records the engine and the stores exchange: rows as read and rows to write."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from wallets import WalletKind


class Bucket(enum.StrEnum):
    AVAILABLE = "AVAILABLE"
    HELD = "HELD"
    # The central bank's issuance account: minus the money of that currency in circulation.
    ISSUANCE = "ISSUANCE"


class EntryKind(enum.StrEnum):
    ISSUE = "ISSUE"
    REDEEM = "REDEEM"
    TRANSFER = "TRANSFER"


def issuance_account(currency: str) -> str:
    return f"issuance:{currency}"


BalanceKey = tuple[str, str]  # (wallet_id, currency)
OperationKey = tuple[str, str]  # (caller, request_id)


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
    """What a command needs loaded (and, for balances and supply, locked) before it runs."""

    wallet_ids: set[str] = field(default_factory=set)
    institution_ids: set[str] = field(default_factory=set)
    balance_keys: set[BalanceKey] = field(default_factory=set)
    currencies: set[str] = field(default_factory=set)

    def merge(self, other: Reads) -> None:
        self.wallet_ids |= other.wallet_ids
        self.institution_ids |= other.institution_ids
        self.balance_keys |= other.balance_keys
        self.currencies |= other.currencies


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
