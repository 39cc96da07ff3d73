"""Wallets, institutions, contracts and payments' terms, cached. None ever changes once created,
so every replica may keep them without ever disagreeing with another; what does not exist yet is
never cached (nor is anything a rolled-back batch made)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from contracts_dsl import CompiledContract, load_compiled
from settlement import limits
from settlement.ledger.reads import LedgerReader
from settlement.ledger.records import (
    ContractRecord,
    InstitutionRecord,
    PaymentRecord,
    PaymentTerms,
    WalletRecord,
)


class Directory:
    def __init__(self, reader: LedgerReader) -> None:
        self._reader = reader
        self._wallets: dict[str, WalletRecord] = {}
        self._institutions: dict[str, InstitutionRecord] = {}
        self._contracts: dict[str, ContractRecord] = {}
        self._compiled: dict[str, CompiledContract] = {}
        self._terms: dict[str, PaymentTerms] = {}

    async def wallet(self, wallet_id: str) -> WalletRecord | None:
        record = self._wallets.get(wallet_id)
        if record is None:
            record = await self._reader.wallet_record(wallet_id)
            if record is not None:
                self.remember_wallets([record])
        return record

    async def payment_terms(self, payment_id: str) -> PaymentTerms | None:
        """What the lock fixed of ``payment_id`` (None if no such payment has committed)."""
        terms = self._terms.get(payment_id)
        if terms is None:
            terms = await self._reader.payment_terms(payment_id)
            if terms is not None:
                self._remember_terms(terms)
        return terms

    def remember_payments(self, records: Iterable[PaymentRecord]) -> None:
        """Only committed payments, as for wallets."""
        for p in records:
            self._remember_terms(
                PaymentTerms(
                    p.payment_id, p.platform, p.contract_hash, p.params_json, p.payer_wallet_id
                )
            )

    def _remember_terms(self, terms: PaymentTerms) -> None:
        if len(self._terms) >= limits.DIRECTORY_ENTRIES_MAX:
            del self._terms[next(iter(self._terms))]
        self._terms[terms.payment_id] = terms

    async def contract(self, contract_hash: str) -> ContractRecord | None:
        """A stored contract (contracts never change, and are never deleted)."""
        record = self._contracts.get(contract_hash)
        if record is None:
            record = await self._reader.contract(contract_hash)
            if record is not None:
                self.remember_contracts([record])
        return record

    def cached_wallets(self, ids: Sequence[str]) -> tuple[dict[str, WalletRecord], list[str]]:
        """(the cached records, the ids to load)"""
        found, missing = {}, []
        for wallet_id in ids:
            record = self._wallets.get(wallet_id)
            if record is None:
                missing.append(wallet_id)
            else:
                found[wallet_id] = record
        return found, missing

    def cached_institutions(
        self, ids: Sequence[str]
    ) -> tuple[dict[str, InstitutionRecord], list[str]]:
        found = {i: self._institutions[i] for i in ids if i in self._institutions}
        return found, [i for i in ids if i not in found]

    def remember_wallets(self, records: Iterable[WalletRecord]) -> None:
        """Only committed wallets: a rolled-back batch's must never be remembered."""
        for record in records:
            if len(self._wallets) >= limits.DIRECTORY_ENTRIES_MAX:
                del self._wallets[next(iter(self._wallets))]
            self._wallets[record.wallet_id] = record

    def cached_contracts(
        self, hashes: Sequence[str]
    ) -> tuple[dict[str, ContractRecord], list[str]]:
        found = {h: self._contracts[h] for h in hashes if h in self._contracts}
        return found, [h for h in hashes if h not in found]

    def contract_record(self, contract_hash: str) -> ContractRecord | None:
        return self._contracts.get(contract_hash)

    def remember_contracts(self, records: Iterable[ContractRecord]) -> None:
        for record in records:
            self._contracts[record.contract_hash] = record

    def compiled(self, record: ContractRecord) -> CompiledContract:
        """The compiled contract (parsed once per process: contracts never change)."""
        compiled = self._compiled.get(record.contract_hash)
        if compiled is None:
            compiled = load_compiled(record.canonical)
            if compiled.hash != record.contract_hash:
                raise AssertionError(f"stored contract {record.contract_hash} hashes differently")
            self._compiled[record.contract_hash] = compiled
        return compiled

    def remember_institutions(self, records: Iterable[InstitutionRecord]) -> None:
        for record in records:
            self._institutions[record.institution_id] = record
