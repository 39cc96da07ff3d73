"""What each mutating call does to the ledger, as commands the engine runs in a batch.

A command declares what it reads (so the engine can load and lock it, in a fixed order, before
anything runs), then ``apply`` checks everything and changes the working set, or raises a
SettlementError having changed nothing. Commands never touch the database, the network or the clock.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import ClassVar

from settlement.errors import (
    Reason,
    SettlementError,
    insufficient_funds,
    limit_exceeded,
    not_found,
)
from settlement.ledger.records import (
    Bucket,
    ConcurrentDuplicate,
    EntryKind,
    EntryRecord,
    InstitutionRecord,
    Reads,
    WalletRecord,
    issuance_account,
)
from settlement.ledger.working_set import Leg, WorkingSet, World
from wallets import CURRENCY_CODES, WalletKind, limit_day, limits_for

_NOTHING = Reads()


def derive_wallet_id(caller: str, request_id: str) -> str:
    """Wallet ids follow from who opened the wallet and with which request: a replay, a dry run
    and the real call name the same wallet, and no randomness is needed."""
    digest = hashlib.sha256(f"wallet\n{caller}\n{request_id}".encode()).digest()
    return "w_" + base64.b32encode(digest).decode()[:26].lower()


def reserve_wallet_id(institution_id: str) -> str:
    return f"w_reserve.{institution_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """Fields every command carries; ``method`` is the full gRPC method name."""

    method: str
    caller: str
    request_id: str
    request_hash: bytes
    dry_run: bool = False
    # Internal commands (the deadline sweep) guard their effect by state, not by a stored outcome.
    store_outcome: bool = True
    # A test fault point (settlement/faults.py) passed after a batch with this command commits.
    AFTER_COMMIT_FAULT: ClassVar[str] = ""

    def reads(self) -> Reads:
        raise NotImplementedError

    def reads_after(self, world: World) -> Reads:
        """Further reads that depend on loaded payments (the wallets a payment names)."""
        return _NOTHING

    def apply(self, ws: WorkingSet) -> object:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse(Command):
    """A request refused before it reached the ledger (bad signature, unknown source wallet...).
    It still goes through the engine so that its outcome is stored under its request id."""

    error: SettlementError

    def reads(self) -> Reads:
        return Reads()

    def apply(self, ws: WorkingSet) -> object:
        raise self.error


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterInstitution(Command):
    institution_id: str
    display_name: str
    owner_public_key: bytes

    def reads(self) -> Reads:
        return Reads(
            institution_ids={self.institution_id},
            wallet_ids={reserve_wallet_id(self.institution_id)},
        )

    def apply(self, ws: WorkingSet) -> InstitutionRecord:
        wallet_id = reserve_wallet_id(self.institution_id)
        if ws.institution(self.institution_id) is not None or ws.wallet(wallet_id) is not None:
            raise SettlementError(
                Reason.INSTITUTION_EXISTS,
                f"institution {self.institution_id!r} is already registered",
                metadata={"id": self.institution_id},
            )
        institution = InstitutionRecord(
            self.institution_id, self.display_name, wallet_id, ws.now_us
        )
        ws.add_institution(institution)
        ws.add_wallet(
            WalletRecord(
                wallet_id=wallet_id,
                kind=WalletKind.INSTITUTION,
                tier=0,
                institution_id=self.institution_id,
                owner_public_key=self.owner_public_key,
                display_name=f"{self.display_name} reserve",
                opened_by=self.caller,
                opened_at_us=ws.now_us,
            ),
            CURRENCY_CODES,
        )
        return institution


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenWallet(Command):
    institution_id: str
    kind: WalletKind
    tier: int
    owner_public_key: bytes
    display_name: str

    @property
    def wallet_id(self) -> str:
        return derive_wallet_id(self.caller, self.request_id)

    def reads(self) -> Reads:
        return Reads(institution_ids={self.institution_id}, wallet_ids={self.wallet_id})

    def apply(self, ws: WorkingSet) -> WalletRecord:
        if ws.institution(self.institution_id) is None:
            raise not_found(Reason.INSTITUTION_NOT_FOUND, "institution", self.institution_id)
        if ws.wallet(self.wallet_id) is not None:  # a concurrent duplicate (or a collision)
            raise ConcurrentDuplicate(f"derived wallet id {self.wallet_id} already exists")
        wallet = WalletRecord(
            wallet_id=self.wallet_id,
            kind=self.kind,
            tier=self.tier,
            institution_id=self.institution_id,
            owner_public_key=self.owner_public_key,
            display_name=self.display_name,
            opened_by=self.caller,
            opened_at_us=ws.now_us,
        )
        ws.add_wallet(wallet, CURRENCY_CODES)
        return wallet


@dataclass(frozen=True, slots=True, kw_only=True)
class _SupplyChange(Command):
    institution_id: str
    currency: str
    amount_minor: int
    memo: str

    KIND: ClassVar[EntryKind]

    def reads(self) -> Reads:
        return Reads(
            institution_ids={self.institution_id},
            balance_keys={(reserve_wallet_id(self.institution_id), self.currency)},
            currencies={self.currency},
        )

    def _reserve(self, ws: WorkingSet) -> str:
        institution = ws.institution(self.institution_id)
        if institution is None:
            raise not_found(Reason.INSTITUTION_NOT_FOUND, "institution", self.institution_id)
        return institution.reserve_wallet_id

    def _post(self, ws: WorkingSet, source: Leg, target: Leg) -> EntryRecord:
        return ws.post(self.KIND, self.request_id, self.caller, self.memo, [source, target])


@dataclass(frozen=True, slots=True, kw_only=True)
class Issue(_SupplyChange):
    KIND: ClassVar[EntryKind] = EntryKind.ISSUE

    def apply(self, ws: WorkingSet) -> EntryRecord:
        reserve = self._reserve(ws)
        amount, currency = self.amount_minor, self.currency
        return self._post(
            ws,
            Leg(issuance_account(currency), Bucket.ISSUANCE, currency, -amount),
            Leg(reserve, Bucket.AVAILABLE, currency, amount),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Redeem(_SupplyChange):
    KIND: ClassVar[EntryKind] = EntryKind.REDEEM

    def apply(self, ws: WorkingSet) -> EntryRecord:
        reserve = self._reserve(ws)
        amount, currency = self.amount_minor, self.currency
        available = ws.balance(reserve, currency).available
        if available < amount:
            raise insufficient_funds(reserve, currency, amount, available)
        return self._post(
            ws,
            Leg(reserve, Bucket.AVAILABLE, currency, -amount),
            Leg(issuance_account(currency), Bucket.ISSUANCE, currency, amount),
        )


def check_outgoing(ws: WorkingSet, wallet: WalletRecord, currency: str, amount: int) -> int:
    """The single-payment and daily caps of an outgoing payment; returns the limit day."""
    limits = limits_for(wallet.kind, wallet.tier, currency)
    day = limit_day(ws.now_us)
    row = ws.balance(wallet.wallet_id, currency)
    cap = limits.single_payment_cap_minor
    if cap is not None and amount > cap:
        raise limit_exceeded(wallet.wallet_id, currency, "single_payment_cap", cap, 0, amount)
    cap = limits.daily_cap_minor
    spent = row.spent_today if row.spent_day == day else 0
    if cap is not None and spent + amount > cap:
        raise limit_exceeded(wallet.wallet_id, currency, "daily_cap", cap, spent, amount)
    return day


def check_incoming(ws: WorkingSet, wallet: WalletRecord, currency: str, amount: int) -> None:
    """The balance cap bounds available + held after a credit."""
    cap = limits_for(wallet.kind, wallet.tier, currency).balance_cap_minor
    row = ws.balance(wallet.wallet_id, currency)
    if cap is not None and row.available + row.held + amount > cap:
        raise limit_exceeded(
            wallet.wallet_id, currency, "balance_cap", cap, row.available + row.held, amount
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer(Command):
    """A signed owner instruction, already verified by the API layer against the source wallet's
    key (keys never change, so verifying outside the transaction is as good as inside)."""

    source: str
    target: str
    currency: str
    amount_minor: int
    expires_at_us: int
    memo: str

    def reads(self) -> Reads:
        return Reads(
            wallet_ids={self.source, self.target},
            balance_keys={(self.source, self.currency), (self.target, self.currency)},
        )

    def apply(self, ws: WorkingSet) -> EntryRecord:
        """Checks, in this order: wallets exist, instruction not expired, single-payment cap,
        daily cap, funds, the target's balance cap."""
        source, target = ws.wallet(self.source), ws.wallet(self.target)
        if source is None:
            raise not_found(Reason.WALLET_NOT_FOUND, "wallet", self.source)
        if target is None:
            raise not_found(Reason.WALLET_NOT_FOUND, "wallet", self.target)
        if ws.now_us > self.expires_at_us:
            raise SettlementError(
                Reason.INSTRUCTION_EXPIRED,
                "the instruction expired before it could be applied",
                metadata={"expires_at_us": str(self.expires_at_us)},
            )
        amount, currency = self.amount_minor, self.currency
        day = check_outgoing(ws, source, currency, amount)
        available = ws.balance(self.source, currency).available
        if available < amount:
            raise insufficient_funds(self.source, currency, amount, available)
        check_incoming(ws, target, currency, amount)
        entry = ws.post(
            EntryKind.TRANSFER,
            self.request_id,
            self.caller,
            self.memo,
            [
                Leg(self.source, Bucket.AVAILABLE, currency, -amount),
                Leg(self.target, Bucket.AVAILABLE, currency, amount),
            ],
        )
        ws.record_spend(ws.balance(self.source, currency), amount, day)
        return entry
