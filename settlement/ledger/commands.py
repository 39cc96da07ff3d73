"""What each mutating call does to the ledger, as commands the engine runs in a batch.

A command declares what it reads (so the engine can load and lock it, in a fixed order, before
anything runs), then ``apply`` checks everything and changes the working set, or raises a
SettlementError having changed nothing. Commands never touch the database, the network or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from condpay.ids import wallet_id_for

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
    return wallet_id_for(caller, request_id)


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


def check_not_expired(ws: WorkingSet, expires_at_us: int) -> None:
    """A signed instruction is applied only before its expiry."""
    if ws.now_us > expires_at_us:
        raise SettlementError(
            Reason.INSTRUCTION_EXPIRED,
            "the signed instruction expired before it could be applied",
            metadata={"expires_at_us": str(expires_at_us)},
        )


def existing_wallet(ws: WorkingSet, wallet_id: str) -> WalletRecord:
    wallet = ws.wallet(wallet_id)
    if wallet is None:
        raise not_found(Reason.WALLET_NOT_FOUND, "wallet", wallet_id)
    return wallet


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


def check_debit(ws: WorkingSet, source: WalletRecord, currency: str, amount: int) -> int:
    """An outgoing payment's single-payment and daily caps, then the funds available; returns
    the limit day to record the spend on (:meth:`WorkingSet.record_spend`)."""
    day = check_outgoing(ws, source, currency, amount)
    available = ws.balance(source.wallet_id, currency).available
    if available < amount:
        raise insufficient_funds(source.wallet_id, currency, amount, available)
    return day


def pay_available(
    ws: WorkingSet,
    command: Command,
    kind: EntryKind,
    memo: str,
    source: str,
    target: str,
    currency: str,
    amount: int,
) -> EntryRecord:
    """``amount`` from ``source``'s available balance to ``target``'s, checked in this order:
    the source's caps, its funds, the target's balance cap; then the entry and the spend."""
    source_wallet, target_wallet = existing_wallet(ws, source), existing_wallet(ws, target)
    day = check_debit(ws, source_wallet, currency, amount)
    check_incoming(ws, target_wallet, currency, amount)
    entry = ws.post(
        kind,
        command.request_id,
        command.caller,
        memo,
        [
            Leg(source, Bucket.AVAILABLE, currency, -amount),
            Leg(target, Bucket.AVAILABLE, currency, amount),
        ],
    )
    ws.record_spend(ws.balance(source, currency), amount, day)
    return entry


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
        existing_wallet(ws, self.source)
        existing_wallet(ws, self.target)
        check_not_expired(ws, self.expires_at_us)
        return pay_available(
            ws,
            self,
            EntryKind.TRANSFER,
            self.memo,
            self.source,
            self.target,
            self.currency,
            self.amount_minor,
        )
