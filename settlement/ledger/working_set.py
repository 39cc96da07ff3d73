"""The in-memory view a batch of commands runs against, under the batch's row locks.

Commands read wallets, balances and supply from here and change money only through
:meth:`WorkingSet.post`, which checks the double-entry rules before it touches anything: postings
sum to zero per currency, no wallet bucket goes negative, no supply counter leaves int64. Each
command runs inside a savepoint: a command that raises leaves the working set as it found it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from contracts_dsl import CompiledContract
from settlement.errors import Reason, SettlementError
from settlement.ledger.records import (
    BalanceKey,
    BalanceRecord,
    Bucket,
    ContractRecord,
    EntryKind,
    EntryRecord,
    EventKey,
    InstitutionRecord,
    LoanRecord,
    OracleRecord,
    PaymentRecord,
    PostingRecord,
    QuoteRecord,
    SettlementRecord,
    SupplyRecord,
    TitleRecord,
    WalletRecord,
)
from wallets import INT64_MAX


@dataclass(slots=True)
class World:
    """The conditional-payment rows a batch loaded: payments (locked), contracts, oracles, the
    oracle set version, and which event ids were already seen."""

    payments: dict[str, PaymentRecord] = field(default_factory=dict)
    contracts: dict[str, ContractRecord] = field(default_factory=dict)
    compiled: dict[str, CompiledContract] = field(default_factory=dict)
    oracles: dict[str, OracleRecord] = field(default_factory=dict)
    titles: dict[str, TitleRecord] = field(default_factory=dict)
    quotes: dict[str, QuoteRecord] = field(default_factory=dict)
    settlements: dict[str, SettlementRecord] = field(default_factory=dict)
    loans: dict[str, LoanRecord] = field(default_factory=dict)
    # (loan id, event id) of collateral attestations the loans already recorded
    seen_loan_events: set[tuple[str, str]] = field(default_factory=set)
    registry_version: int | None = None
    registry_changed: bool = False
    seen_events: set[EventKey] = field(default_factory=set)
    # Owners of the oracle keys asked for (public key -> the oracle id it is or was registered
    # to), and the keys first claimed by this batch (written to oracle_keys).
    key_owners: dict[bytes, str] = field(default_factory=dict)
    claimed_keys: dict[bytes, str] = field(default_factory=dict)
    # contracts each registering caller registered today (UTC), before this batch
    contracts_today: dict[str, int] = field(default_factory=dict)


def copy_payment(payment: PaymentRecord) -> PaymentRecord:
    return replace(
        payment,
        financing=[replace(f) for f in payment.financing],
        assignments=[replace(a) for a in payment.assignments],
        legs=list(payment.legs),
        attestations=list(payment.attestations),
        events=list(payment.events),
    )


def _restore_payment(payment: PaymentRecord, snapshot: PaymentRecord) -> None:
    _restore(payment, snapshot)


def _restore(record: object, snapshot: object) -> None:
    for name in type(record).__slots__:  # type: ignore[attr-defined]
        setattr(record, name, getattr(snapshot, name))


_Keyed = TitleRecord | QuoteRecord | SettlementRecord | LoanRecord
_K = TypeVar("_K", TitleRecord, QuoteRecord, SettlementRecord, LoanRecord)


def _key(record: _Keyed) -> str:
    if isinstance(record, TitleRecord):
        return record.title_id
    if isinstance(record, QuoteRecord):
        return record.quote_id
    if isinstance(record, LoanRecord):
        return record.loan_id
    return record.settlement_id


class LedgerInvariantError(AssertionError):
    """A command asked for a posting that breaks double entry: a bug, never a user error."""


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a posting before it is applied: which account and bucket, signed amount."""

    account_id: str
    bucket: Bucket
    currency: str
    amount: int


class WorkingSet:
    def __init__(
        self,
        now_us: int,
        wallets: dict[str, WalletRecord],
        institutions: dict[str, InstitutionRecord],
        balances: dict[BalanceKey, BalanceRecord],
        supply: dict[str, SupplyRecord],
        extras: World | None = None,
    ) -> None:
        self.now_us = now_us
        self.caller = ""  # the caller of the command being applied (set by the engine)
        self.world = extras or World()
        self._touched_payments: dict[str, PaymentRecord] = {}
        self._touched_oracles: dict[str, OracleRecord] = {}
        self._touched: dict[type, dict[str, Any]] = defaultdict(dict)
        self.new_contracts: list[ContractRecord] = []
        self._wallets = wallets
        self._institutions = institutions
        self._balances = balances
        self._supply = supply
        self._original_balances = {k: b.values() for k, b in balances.items()}
        self._original_supply = {c: (s.issued, s.redeemed) for c, s in supply.items()}
        self.new_institutions: list[InstitutionRecord] = []
        self.new_wallets: list[WalletRecord] = []
        self.new_balances: list[BalanceRecord] = []
        self.entries: list[EntryRecord] = []
        self._undo: list[Callable[[], None]] = []

    # -- reads ---------------------------------------------------------------------------------
    def wallet(self, wallet_id: str) -> WalletRecord | None:
        return self._wallets.get(wallet_id)

    def institution(self, institution_id: str) -> InstitutionRecord | None:
        return self._institutions.get(institution_id)

    def balance(self, wallet_id: str, currency: str) -> BalanceRecord:
        """The locked balance row; a KeyError here means a command under-declared its reads."""
        return self._balances[(wallet_id, currency)]

    def supply(self, currency: str) -> SupplyRecord:
        return self._supply[currency]

    # -- savepoints ----------------------------------------------------------------------------
    def savepoint(self) -> int:
        return len(self._undo)

    def rollback_to(self, savepoint: int) -> None:
        while len(self._undo) > savepoint:
            self._undo.pop()()

    # -- writes --------------------------------------------------------------------------------
    def add_institution(self, institution: InstitutionRecord) -> None:
        self._institutions[institution.institution_id] = institution
        self.new_institutions.append(institution)
        self._undo.append(lambda: self._forget_institution(institution))

    def _forget_institution(self, institution: InstitutionRecord) -> None:
        del self._institutions[institution.institution_id]
        self.new_institutions.pop()

    def add_wallet(self, wallet: WalletRecord, currencies: Iterable[str]) -> None:
        """Open a wallet with a zero balance row in each currency."""
        rows = [BalanceRecord(wallet.wallet_id, c, 0, 0, 0, 0) for c in currencies]
        self._wallets[wallet.wallet_id] = wallet
        self.new_wallets.append(wallet)
        for row in rows:
            self._balances[(row.wallet_id, row.currency)] = row
        self.new_balances.extend(rows)
        self._undo.append(lambda: self._forget_wallet(wallet, rows))

    def _forget_wallet(self, wallet: WalletRecord, rows: list[BalanceRecord]) -> None:
        del self._wallets[wallet.wallet_id]
        self.new_wallets.pop()
        for row in rows:
            del self._balances[(row.wallet_id, row.currency)]
        del self.new_balances[len(self.new_balances) - len(rows) :]

    def record_spend(self, balance: BalanceRecord, amount: int, day: int) -> None:
        """Count an outgoing payment against the daily cap of ``day``."""
        old = (balance.spent_day, balance.spent_today)
        spent = (balance.spent_today if balance.spent_day == day else 0) + amount
        # Saturates: an uncapped wallet (an institution's reserve) can move more than int64 in
        # a day, and its counter is stored as int64; no cap is anywhere near INT64_MAX.
        balance.spent_today = min(spent, INT64_MAX)
        balance.spent_day = day
        self._undo.append(lambda: self._restore_spend(balance, old))

    @staticmethod
    def _restore_spend(balance: BalanceRecord, old: tuple[int, int]) -> None:
        balance.spent_day, balance.spent_today = old

    def post(
        self, kind: EntryKind, request_id: str, caller: str, memo: str, legs: Sequence[Leg]
    ) -> EntryRecord:
        """Apply a balanced set of legs as one journal entry, or change nothing and raise."""
        totals: dict[str, int] = defaultdict(int)
        for leg in legs:
            totals[leg.currency] += leg.amount
        if any(totals.values()) or len(legs) < 2:
            raise LedgerInvariantError(f"unbalanced entry {kind} {request_id}: {dict(totals)}")
        # Check every leg against the state it will meet before applying any of them.
        projected: dict[tuple[str, Bucket, str], int] = {}
        for leg in legs:
            key = (leg.account_id, leg.bucket, leg.currency)
            before = projected.get(key, self._bucket_value(leg))
            after = before + leg.amount
            if leg.bucket is Bucket.ISSUANCE:
                self._check_issuance(leg.currency, after)
            elif after < 0:
                raise SettlementError(
                    Reason.INSUFFICIENT_FUNDS,
                    f"wallet {leg.account_id} has too little {leg.currency}",
                )
            elif after > INT64_MAX:
                raise SettlementError(Reason.AMOUNT_OVERFLOW, "the balance would exceed int64")
            projected[key] = after
        postings = [self._apply(leg) for leg in legs]
        entry = EntryRecord(kind, request_id, caller, memo, postings)
        self.entries.append(entry)
        self._undo.append(self._drop_last_entry)
        return entry

    def _drop_last_entry(self) -> None:
        self.entries.pop()

    def _bucket_value(self, leg: Leg) -> int:
        if leg.bucket is Bucket.ISSUANCE:
            return -self._supply[leg.currency].in_circulation
        row = self._balances[(leg.account_id, leg.currency)]
        return row.available if leg.bucket is Bucket.AVAILABLE else row.held

    def _check_issuance(self, currency: str, after: int) -> None:
        supply = self._supply[currency]
        if after > 0:
            raise LedgerInvariantError(f"redeeming more {currency} than is in circulation")
        if supply.issued + max(0, -after - supply.in_circulation) > INT64_MAX:
            raise SettlementError(Reason.AMOUNT_OVERFLOW, f"{currency} issued would exceed int64")

    def _apply(self, leg: Leg) -> PostingRecord:
        if leg.bucket is Bucket.ISSUANCE:
            supply = self._supply[leg.currency]
            old_supply = (supply.issued, supply.redeemed)
            if leg.amount < 0:
                supply.issued -= leg.amount
            else:
                supply.redeemed += leg.amount
            self._undo.append(lambda: self._restore_supply(supply, old_supply))
            after = -supply.in_circulation
        else:
            row = self._balances[(leg.account_id, leg.currency)]
            old = (row.available, row.held)
            if leg.bucket is Bucket.AVAILABLE:
                row.available += leg.amount
                after = row.available
            else:
                row.held += leg.amount
                after = row.held
            self._undo.append(lambda: self._restore_balance(row, old))
        return PostingRecord(leg.account_id, leg.bucket, leg.currency, leg.amount, after)

    @staticmethod
    def _restore_supply(supply: SupplyRecord, old: tuple[int, int]) -> None:
        supply.issued, supply.redeemed = old

    @staticmethod
    def _restore_balance(row: BalanceRecord, old: tuple[int, int]) -> None:
        row.available, row.held = old

    # -- payments, contracts, oracles ----------------------------------------------------------
    def payment(self, payment_id: str) -> PaymentRecord | None:
        return self.world.payments.get(payment_id)

    def touch_payment(self, payment: PaymentRecord) -> PaymentRecord:
        """Call before changing ``payment``: the savepoint can then put it back as it was."""
        snapshot = copy_payment(payment)
        self._undo.append(lambda: _restore_payment(payment, snapshot))
        if payment.payment_id not in self._touched_payments:
            self._touched_payments[payment.payment_id] = payment
            self._undo.append(lambda: self._untouch_payment(payment.payment_id))
        return payment

    def _untouch_payment(self, payment_id: str) -> None:
        del self._touched_payments[payment_id]

    def add_payment(self, payment: PaymentRecord) -> None:
        self.world.payments[payment.payment_id] = payment
        self._touched_payments[payment.payment_id] = payment
        self._undo.append(lambda: self._forget_payment(payment.payment_id))

    def _forget_payment(self, payment_id: str) -> None:
        del self.world.payments[payment_id]
        del self._touched_payments[payment_id]

    def contract(self, contract_hash: str) -> CompiledContract | None:
        return self.world.compiled.get(contract_hash)

    def add_contract(self, contract: ContractRecord, compiled: CompiledContract) -> None:
        self.world.contracts[contract.contract_hash] = contract
        self.world.compiled[contract.contract_hash] = compiled
        self.new_contracts.append(contract)
        self._undo.append(lambda: self._forget_contract(contract))

    def contracts_registered_today(self, caller: str) -> int:
        """``caller``'s contracts registered today, this batch's (so far) included."""
        counted = self.world.contracts_today.get(caller)
        assert counted is not None, "a registering command declares Reads.registrations"
        return counted + sum(1 for c in self.new_contracts if c.registered_by == caller)

    def _forget_contract(self, contract: ContractRecord) -> None:
        del self.world.contracts[contract.contract_hash]
        del self.world.compiled[contract.contract_hash]
        self.new_contracts.remove(contract)

    def put_oracle(self, oracle: OracleRecord) -> None:
        """Register or replace an oracle (rotation, revocation) and bump the oracle set version."""
        previous = self.world.oracles.get(oracle.oracle_id)
        touched = self._touched_oracles.get(oracle.oracle_id)
        version, changed = self.world.registry_version, self.world.registry_changed
        self.world.oracles[oracle.oracle_id] = oracle
        self._touched_oracles[oracle.oracle_id] = oracle
        self.world.registry_version = (version or 0) + 1
        self.world.registry_changed = True
        # A new key (a registration, a rotation) is claimed for this oracle id for good; the
        # command read its owner (reads.oracle_keys) and refused a key owned by another id.
        new_key = previous is None or previous.public_key != oracle.public_key
        claimed = new_key and oracle.public_key not in self.world.key_owners
        if claimed:
            self.world.key_owners[oracle.public_key] = oracle.oracle_id
            self.world.claimed_keys[oracle.public_key] = oracle.oracle_id

        def undo() -> None:  # back to what the batch's earlier commands left
            if claimed:
                del self.world.key_owners[oracle.public_key]
                del self.world.claimed_keys[oracle.public_key]
            if previous is None:
                del self.world.oracles[oracle.oracle_id]
            else:
                self.world.oracles[oracle.oracle_id] = previous
            if touched is None:
                self._touched_oracles.pop(oracle.oracle_id)
            else:
                self._touched_oracles[oracle.oracle_id] = touched
            self.world.registry_version, self.world.registry_changed = version, changed

        self._undo.append(undo)

    # -- titles, quotes, settlements: keyed records, changed through touch / add ----------------
    def title(self, title_id: str) -> TitleRecord | None:
        return self.world.titles.get(title_id)

    def quote(self, quote_id: str) -> QuoteRecord | None:
        return self.world.quotes.get(quote_id)

    def settlement(self, settlement_id: str) -> SettlementRecord | None:
        return self.world.settlements.get(settlement_id)

    def loan(self, loan_id: str) -> LoanRecord | None:
        return self.world.loans.get(loan_id)

    def touch(self, record: _Keyed) -> None:
        """Call before changing a loaded title, quote, settlement or loan: the savepoint can then
        put it back as it was, and the engine writes it."""
        snapshot: _Keyed = replace(record)
        if isinstance(record, TitleRecord):
            snapshot = replace(record, moves=list(record.moves))
        elif isinstance(record, LoanRecord):
            snapshot = replace(record, events=list(record.events))
        self._undo.append(lambda: _restore(record, snapshot))
        touched = self._touched[type(record)]
        key = _key(record)
        if key not in touched:
            touched[key] = record

            def untouch() -> None:
                del touched[key]

            self._undo.append(untouch)

    def add(self, record: _Keyed) -> None:
        """A new title, quote, settlement or loan (``is_new`` set)."""
        loaded: dict[str, Any] = self._loaded(type(record))
        key = _key(record)
        loaded[key] = record
        self._touched[type(record)][key] = record

        def undo() -> None:
            del loaded[key]
            del self._touched[type(record)][key]

        self._undo.append(undo)

    def _loaded(self, kind: type) -> dict[str, Any]:
        if kind is TitleRecord:
            return self.world.titles
        if kind is QuoteRecord:
            return self.world.quotes
        if kind is LoanRecord:
            return self.world.loans
        return self.world.settlements

    def changed(self, kind: type[_K]) -> list[_K]:
        touched = self._touched[kind]
        return [touched[k] for k in sorted(touched)]

    def see_event(self, key: EventKey) -> None:
        self.world.seen_events.add(key)
        self._undo.append(lambda: self.world.seen_events.discard(key))

    def see_loan_event(self, loan_id: str, event_id: str) -> None:
        key = (loan_id, event_id)
        self.world.seen_loan_events.add(key)
        self._undo.append(lambda: self.world.seen_loan_events.discard(key))

    def changed_payments(self) -> list[PaymentRecord]:
        return sorted(self._touched_payments.values(), key=lambda p: p.payment_id)

    def changed_oracles(self) -> list[OracleRecord]:
        return list(self._touched_oracles.values())

    # -- what to write -------------------------------------------------------------------------
    def changed_balances(self) -> list[BalanceRecord]:
        return [
            row
            for key, row in self._balances.items()
            if key in self._original_balances and row.values() != self._original_balances[key]
        ]

    def changed_supply(self) -> list[SupplyRecord]:
        return [
            s for c, s in self._supply.items() if (s.issued, s.redeemed) != self._original_supply[c]
        ]

    def assert_conserved(self) -> None:
        """Per currency, the change in wallet balances equals the change in circulation."""
        delta: dict[str, int] = defaultdict(int)
        for entry in self.entries:
            for p in entry.postings:
                delta[p.currency] += p.amount if p.bucket is not Bucket.ISSUANCE else 0
        for currency, moved in delta.items():
            issued0, redeemed0 = self._original_supply.get(currency, (0, 0))
            s = self._supply.get(currency)
            circulation_delta = 0 if s is None else s.in_circulation - (issued0 - redeemed0)
            if moved != circulation_delta:
                raise LedgerInvariantError(
                    f"{currency}: balances moved {moved}, supply {circulation_delta}"
                )
