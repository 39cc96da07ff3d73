"""What the engine needs from a database: one transaction per batch, rows loaded in a fixed
order under lock, everything the batch changed written set-based. PostgreSQL (asyncpg) and SQLite
(aiosqlite) implement it with their own SQL; see store_postgres.py and store_sqlite.py."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from settlement.ledger.records import (
    BalanceKey,
    ChangeSet,
    Funds,
    InstitutionRecord,
    OperationKey,
    OperationRecord,
    WalletRecord,
)


class LedgerTransaction(Protocol):
    async def fetch_operations(
        self, keys: Sequence[OperationKey]
    ) -> dict[OperationKey, OperationRecord]: ...

    async def fetch_wallets(self, wallet_ids: Sequence[str]) -> dict[str, WalletRecord]: ...

    async def fetch_institutions(
        self, institution_ids: Sequence[str]
    ) -> dict[str, InstitutionRecord]: ...

    async def lock_funds(
        self,
        keys: Sequence[BalanceKey],
        currencies: Sequence[str],
        head: bool,
        *,
        operations: Sequence[OperationKey] = (),
    ) -> Funds:
        """Lock the balances (in (wallet_id, currency) order), then the supply rows (by
        currency), then, when ``head``, the ledger head, and look up the stored outcomes of
        ``operations`` (as fetch_operations), in as few round trips as the database allows;
        missing rows are simply absent."""
        ...

    async def lock_head(self) -> tuple[int, bytes]:
        """Lock the ledger head (last of all); returns (seq, hash) of the newest entry."""
        ...

    async def write(self, changes: ChangeSet) -> None: ...

    # Plain SQL with ``?`` placeholders, for reading the colder tables once for both dialects
    # (settlement/ledger/payment_rows.py); their rows are written with the batch's ChangeSet
    # (``ChangeSet.tables``).
    for_update: str  # " FOR UPDATE" where the engine supports it, else ""
    for_share: str

    async def query(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]: ...


class LedgerStore(Protocol):
    dialect: str
    writer_connections: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def transaction(self, *, commit: bool) -> AbstractAsyncContextManager[LedgerTransaction]:
        """One transaction: committed on normal exit when ``commit``, else rolled back."""
        ...

    def is_retryable(self, exc: BaseException) -> bool:
        """Serialization failure, deadlock, a duplicate operation key from a concurrent replica,
        a lost connection: retrying the whole batch is safe because its outcome is stored with
        its effects, so a batch that did commit is found and replayed."""
        ...
