"""The ledger store on embedded SQLite: one writer connection, WAL journal, ``synchronous=FULL``
(a commit survives power loss), ``BEGIN IMMEDIATE`` so the writer holds the database lock for the
whole batch and locking needs nothing more.

Where the time goes decides where each statement runs. ``BEGIN IMMEDIATE`` may wait for another
process's lock and ``COMMIT`` waits for the disk (fsync): both run on the store's own thread, so
the event loop never waits for them. Everything in between (the batch's reads and writes, each a
few microseconds in SQLite's page cache, with the database lock already held) runs on the
event loop itself: a hop to a thread and back for each of them would cost more than the
statement, and under load each hop also queues behind every other callback of the loop."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from settlement.ledger.records import (
    BalanceKey,
    BalanceRecord,
    ChangeSet,
    ConcurrentDuplicate,
    Funds,
    InstitutionRecord,
    OperationKey,
    OperationRecord,
    SupplyRecord,
    WalletRecord,
)
from wallets import WalletKind

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
)


def _pairs(count: int) -> str:
    """``count`` key pairs for ``WHERE (a, b) IN ...``. As a subquery, not a bare ``IN (VALUES
    ...)``: SQLite searches the primary key for the former and scans the whole table for the
    latter (``EXPLAIN QUERY PLAN``; tests/settlement/test_sqlite_plans.py)."""
    return "(SELECT column1, column2 FROM (VALUES " + ", ".join(["(?, ?)"] * count) + "))"


@functools.lru_cache(maxsize=128)
def _table_statement(
    table: str, columns: tuple[str, ...], key: tuple[str, ...], skip_taken: bool
) -> tuple[str, tuple[int, ...]]:
    """The statement that writes one row of ``TableRows``, and the order of its parameters."""
    if key:
        changed = [c for c in columns if c not in key]
        sets = ", ".join(f"{c} = ?" for c in changed)
        where = " AND ".join(f"{c} = ?" for c in key)
        order = tuple(columns.index(c) for c in (*changed, *key))
        return f"UPDATE {table} SET {sets} WHERE {where}", order
    conflict = " ON CONFLICT DO NOTHING" if skip_taken else ""
    marks = ", ".join("?" * len(columns))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){conflict}"
    return sql, tuple(range(len(columns)))


class SqliteTransaction:
    # BEGIN IMMEDIATE already holds the database's write lock for the whole batch.
    for_update = ""
    for_share = ""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def query(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        return self._rows(sql, params)

    def _rows(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    async def fetch_operations(
        self, keys: Sequence[OperationKey]
    ) -> dict[OperationKey, OperationRecord]:
        if not keys:
            return {}
        rows = self._rows(
            f"""SELECT caller, request_id, method, request_hash, ok, outcome, commit_seq,
                       created_at_us
                  FROM operations
                 WHERE (caller, request_id) IN {_pairs(len(keys))}""",
            [part for key in keys for part in key],
        )
        return {
            (r[0], r[1]): OperationRecord(r[0], r[1], r[2], r[3], bool(r[4]), *r[5:]) for r in rows
        }

    async def fetch_wallets(self, wallet_ids: Sequence[str]) -> dict[str, WalletRecord]:
        if not wallet_ids:
            return {}
        rows = self._rows(
            f"""SELECT wallet_id, kind, tier, institution_id, owner_public_key, display_name,
                       opened_by, opened_at_us
                  FROM wallets WHERE wallet_id IN ({", ".join("?" * len(wallet_ids))})""",
            wallet_ids,
        )
        return {r[0]: WalletRecord(r[0], WalletKind(r[1]), *r[2:]) for r in rows}

    async def fetch_institutions(
        self, institution_ids: Sequence[str]
    ) -> dict[str, InstitutionRecord]:
        if not institution_ids:
            return {}
        rows = self._rows(
            f"""SELECT institution_id, display_name, reserve_wallet_id, registered_at_us
                  FROM institutions
                 WHERE institution_id IN ({", ".join("?" * len(institution_ids))})""",
            institution_ids,
        )
        return {r[0]: InstitutionRecord(*r) for r in rows}

    async def lock_funds(
        self,
        keys: Sequence[BalanceKey],
        currencies: Sequence[str],
        head: bool,
        *,
        operations: Sequence[OperationKey] = (),
    ) -> Funds:
        # (The batch's BEGIN IMMEDIATE holds the database's one write lock already.)
        balances = (
            self._rows(
                f"""SELECT wallet_id, currency, available, held, spent_day, spent_today
                  FROM balances
                 WHERE (wallet_id, currency) IN {_pairs(len(keys))}""",
                [part for key in keys for part in key],
            )
            if keys
            else []
        )
        supply = (
            self._rows(
                f"""SELECT currency, issued, redeemed FROM supply
                 WHERE currency IN ({", ".join("?" * len(currencies))})""",
                currencies,
            )
            if currencies
            else []
        )
        return Funds(
            {(r[0], r[1]): BalanceRecord(*r) for r in balances},
            {r[0]: SupplyRecord(*r) for r in supply},
            await self.lock_head() if head else None,
            await self.fetch_operations(operations),
        )

    async def lock_head(self) -> tuple[int, bytes]:
        rows = self._rows("SELECT seq, hash FROM ledger_head WHERE id = 1", ())
        return rows[0][0], rows[0][1]

    async def write(self, changes: ChangeSet) -> None:
        conn = self._conn
        for table in changes.tables:  # first: foreign keys are checked row by row here
            sql, order = _table_statement(table.table, table.columns, table.key, table.skip_taken)
            conn.executemany(sql, [[row[i] for i in order] for row in table.rows])
        if changes.institutions:
            conn.executemany(
                "INSERT INTO institutions VALUES (?, ?, ?, ?)",
                [
                    (i.institution_id, i.display_name, i.reserve_wallet_id, i.registered_at_us)
                    for i in changes.institutions
                ],
            )
        if changes.wallets:
            conn.executemany(
                """INSERT INTO wallets (wallet_id, kind, tier, institution_id, owner_public_key,
                                        display_name, opened_by, opened_at_us)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    (
                        w.wallet_id,
                        w.kind.value,
                        w.tier,
                        w.institution_id,
                        w.owner_public_key,
                        w.display_name,
                        w.opened_by,
                        w.opened_at_us,
                    )
                    for w in changes.wallets
                ],
            )
        if changes.new_balances:
            conn.executemany(
                """INSERT INTO balances (wallet_id, currency, available, held, spent_day,
                                         spent_today) VALUES (?, ?, ?, ?, ?, ?)""",
                [
                    (b.wallet_id, b.currency, b.available, b.held, b.spent_day, b.spent_today)
                    for b in changes.new_balances
                ],
            )
        if changes.changed_balances:
            conn.executemany(
                """UPDATE balances SET available = ?, held = ?, spent_day = ?, spent_today = ?
                    WHERE wallet_id = ? AND currency = ?""",
                [
                    (b.available, b.held, b.spent_day, b.spent_today, b.wallet_id, b.currency)
                    for b in changes.changed_balances
                ],
            )
        if changes.changed_supply:
            conn.executemany(
                "UPDATE supply SET issued = ?, redeemed = ? WHERE currency = ?",
                [(s.issued, s.redeemed, s.currency) for s in changes.changed_supply],
            )
        if changes.entries:
            conn.executemany(
                """INSERT INTO journal_entries (seq, kind, request_id, caller, committed_at_us,
                                                memo, prev_hash, hash)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    (
                        e.seq,
                        e.kind.value,
                        e.request_id,
                        e.caller,
                        e.committed_at_us,
                        e.memo,
                        e.prev_hash,
                        e.hash,
                    )
                    for e in changes.entries
                ],
            )
            conn.executemany(
                """INSERT INTO postings (seq, idx, account_id, bucket, currency, amount,
                                         balance_after) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [
                    (e.seq, i, p.account_id, p.bucket.value, p.currency, p.amount, p.balance_after)
                    for e in changes.entries
                    for i, p in enumerate(e.postings)
                ],
            )
            conn.execute(
                "UPDATE ledger_head SET seq = ?, hash = ? WHERE id = 1",
                (changes.head_seq, changes.head_hash),
            )
        if changes.operations:
            conn.executemany(
                """INSERT INTO operations (caller, request_id, method, request_hash, ok, outcome,
                                           commit_seq, created_at_us)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    (
                        o.caller,
                        o.request_id,
                        o.method,
                        o.request_hash,
                        o.ok,
                        o.outcome,
                        o.commit_seq,
                        o.created_at_us,
                    )
                    for o in changes.operations
                ],
            )


class SqliteStore:
    dialect = "sqlite"
    writer_connections = 1

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        # One thread, so what it runs for the connection runs in order.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="condpay-sqlite")

    async def start(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = await self._on_thread(self._open)

    def _open(self) -> sqlite3.Connection:
        # Used from the loop and from the store's thread, never from both at once: a
        # transaction's statements run between its BEGIN and its COMMIT, each awaited.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        for pragma in PRAGMAS:
            conn.execute(pragma)
        return conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._on_thread(self._conn.close)
        self._thread.shutdown(wait=True)

    async def _on_thread(self, work: Any, *args: Any) -> Any:
        """``work(*args)`` on the store's thread. Once started it runs to its end even if the
        caller is cancelled, and the caller waits for that end, so the connection is never used
        by two threads at once."""
        done = asyncio.get_running_loop().run_in_executor(self._thread, work, *args)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            with suppress(BaseException):
                await done
            raise

    @asynccontextmanager
    async def transaction(self, *, commit: bool) -> AsyncIterator[SqliteTransaction]:
        conn = self._conn
        assert conn is not None, "start() the store first"
        try:
            await self._on_thread(conn.execute, "BEGIN IMMEDIATE")
        except asyncio.CancelledError:  # it may have begun meanwhile
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            yield SqliteTransaction(conn)
        except BaseException:
            with suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        if commit:
            await self._on_thread(conn.execute, "COMMIT")
        else:
            conn.execute("ROLLBACK")

    def is_retryable(self, exc: BaseException) -> bool:
        # "database is locked": another process (a second server on the same file) holds it.
        if isinstance(exc, ConcurrentDuplicate):
            return True
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
