"""The ledger store on PostgreSQL (and PostgreSQL-compatible distributed SQL) through asyncpg.

Plain asyncpg statements, set-based (``unnest`` of arrays) so a batch of any size costs the same
dozen round trips. Row locks are taken with ``ORDER BY ... FOR UPDATE``: PostgreSQL sorts before
it locks, so every batch locks balances in the same order. Under SERIALIZABLE engines
(CockroachDB, YugabyteDB) the same statements run and conflicts surface as 40001, which the engine
retries.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

import asyncpg

from settlement import limits
from settlement.db.availability import storage_unreachable
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
    TableRows,
    WalletRecord,
)
from wallets import WalletKind

# Serialization failure, deadlock, lock not available; a lost or read-only server is
# storage_unreachable (settlement/db/availability.py): a failover, retried on the new primary.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# Keys a batch checks before it writes them: a concurrent batch (another replica) may have written
# the same one meanwhile; the retry then finds it and answers accordingly.
# Rows two batches may both try to create; the loser's retry finds the winner's (and its outcome).
_RACED_KEYS = frozenset(
    {
        "operations_pkey",
        "attestations_pkey",
        "contracts_pkey",
        "oracles_pkey",
        "oracle_keys_pkey",
        "payments_pkey",
        "wallets_pkey",
        "titles_pkey",
        "settlements_pkey",
        "fx_quotes_pkey",
    }
)


# How the writers' statements are planned: once, when a connection first prepares each one (a
# generic plan), and only along an index. Every statement a batch runs finds its rows by key
# (primary keys, unique keys, the keys of the rows it locks, arrays of them), so the index path
# is the right one on any table of any size; with the planner's other paths closed, a plan made
# while a table was empty cannot keep scanning it whole as it grows (what custom plans guarded
# against: they planned every statement on every execution, 0.06-0.6 ms of PostgreSQL's CPU
# each, some 0.5 ms per PvP settlement at half load). Readers plan as PostgreSQL chooses.
# tests/payments/test_postgres_plans.py and tests/settlement/test_postgres_plans.py plan every
# statement the writers send as they plan it.
WRITER_PLANNING: Final = (
    "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; "
    "SET enable_hashjoin = off; SET enable_mergejoin = off"
)
_PLACEHOLDER = re.compile(r"\?")


@functools.lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    """``?`` placeholders (the dialect-neutral SQL) -> asyncpg's ``$1, $2, ...``."""
    counter = itertools.count(1)
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgresTransaction:
    for_update = " FOR UPDATE"
    for_share = " FOR SHARE"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def query(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._conn.fetch(_numbered(sql), *params)]

    async def fetch_operations(
        self, keys: Sequence[OperationKey]
    ) -> dict[OperationKey, OperationRecord]:
        if not keys:
            return {}
        rows = await self._conn.fetch(
            """SELECT o.caller, o.request_id, o.method, o.request_hash, o.ok, o.outcome,
                      o.commit_seq, o.created_at_us
                 FROM operations o
                 JOIN unnest($1::text[], $2::text[]) AS k(caller, request_id)
                   ON o.caller = k.caller AND o.request_id = k.request_id""",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {(r[0], r[1]): OperationRecord(*r) for r in rows}

    async def fetch_wallets(self, wallet_ids: Sequence[str]) -> dict[str, WalletRecord]:
        if not wallet_ids:
            return {}
        rows = await self._conn.fetch(
            """SELECT wallet_id, kind, tier, institution_id, owner_public_key, display_name,
                      opened_by, opened_at_us
                 FROM wallets WHERE wallet_id = ANY($1::text[])""",
            wallet_ids,
        )
        return {r[0]: WalletRecord(r[0], WalletKind(r[1]), *r[2:]) for r in rows}

    async def fetch_institutions(
        self, institution_ids: Sequence[str]
    ) -> dict[str, InstitutionRecord]:
        if not institution_ids:
            return {}
        rows = await self._conn.fetch(
            """SELECT institution_id, display_name, reserve_wallet_id, registered_at_us
                 FROM institutions WHERE institution_id = ANY($1::text[])""",
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
        if not (keys or currencies or head or operations):
            return Funds({}, {}, None)
        row = await self._conn.fetchrow(
            _LOCK_FUNDS,
            [k[0] for k in keys],
            [k[1] for k in keys],
            currencies,
            head,
            [k[0] for k in operations],
            [k[1] for k in operations],
        )
        assert row is not None
        return Funds(
            {(r[0], r[1]): BalanceRecord(*r) for r in row[0]},
            {r[0]: SupplyRecord(*r) for r in row[1]},
            (row[2][0], row[2][1]) if row[2] is not None else None,
            {(r[0], r[1]): OperationRecord(*r) for r in row[3]},
        )

    async def lock_head(self) -> tuple[int, bytes]:
        row = await self._conn.fetchrow("SELECT seq, hash FROM ledger_head WHERE id = 1 FOR UPDATE")
        assert row is not None, "ledger_head is seeded by the first migration"
        return row[0], row[1]

    async def write(self, changes: ChangeSet) -> None:
        conn = self._conn
        if changes.institutions:
            await conn.executemany(
                "INSERT INTO institutions VALUES ($1, $2, $3, $4)",
                [
                    (i.institution_id, i.display_name, i.reserve_wallet_id, i.registered_at_us)
                    for i in changes.institutions
                ],
            )
        if changes.wallets:
            await conn.executemany(
                """INSERT INTO wallets (wallet_id, kind, tier, institution_id, owner_public_key,
                                        display_name, opened_by, opened_at_us)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
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
            await conn.execute(
                """INSERT INTO balances (wallet_id, currency, available, held, spent_day,
                                         spent_today)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                                        $5::bigint[], $6::bigint[])""",
                *_balance_columns(changes.new_balances),
            )
        if changes.changed_supply:
            await conn.execute(
                """UPDATE supply AS s SET issued = v.issued, redeemed = v.redeemed
                     FROM unnest($1::text[], $2::bigint[], $3::bigint[])
                          AS v(currency, issued, redeemed)
                    WHERE s.currency = v.currency""",
                [s.currency for s in changes.changed_supply],
                [s.issued for s in changes.changed_supply],
                [s.redeemed for s in changes.changed_supply],
            )
        # The hot part, whatever the batch size, in one round trip: balances, entries, postings,
        # the ledger head, the stored outcomes and the colder tables' rows (payments,
        # settlements, ...). (Foreign keys are checked at the end of the statement, so postings
        # may reference entries inserted beside them.)
        entries, ops, balances = changes.entries, changes.operations, changes.changed_balances
        postings = [(e.seq, i, p) for e in entries for i, p in enumerate(e.postings)]
        tables = changes.tables
        await conn.execute(
            _write_batch(tuple((t.table, t.columns, t.key, t.skip_taken) for t in tables)),
            *_balance_columns(balances),
            [e.seq for e in entries],
            [e.kind.value for e in entries],
            [e.request_id for e in entries],
            [e.caller for e in entries],
            [e.committed_at_us for e in entries],
            [e.memo for e in entries],
            [e.prev_hash for e in entries],
            [e.hash for e in entries],
            [seq for seq, _, _ in postings],
            [idx for _, idx, _ in postings],
            [p.account_id for _, _, p in postings],
            [p.bucket.value for _, _, p in postings],
            [p.currency for _, _, p in postings],
            [p.amount for _, _, p in postings],
            [p.balance_after for _, _, p in postings],
            bool(entries),
            changes.head_seq,
            changes.head_hash,
            [o.caller for o in ops],
            [o.request_id for o in ops],
            [o.method for o in ops],
            [o.request_hash for o in ops],
            [o.ok for o in ops],
            [o.outcome for o in ops],
            [o.commit_seq for o in ops],
            [o.created_at_us for o in ops],
            *(_json_rows(t) for t in tables),
        )


# A batch's balances, supply and ledger head, locked in that order (each set sorted: PostgreSQL
# sorts before it locks) by one statement in one round trip: its array subqueries run in the order
# they are written (tests/test_store_postgres_transactions.py holds the order to account). Rows
# that do not exist are absent; the head only when $4. Last, the stored outcomes of the request
# ids $5/$6 (read, not locked), for a batch that has nothing else to read.
_LOCK_FUNDS = """
SELECT ARRAY(SELECT b FROM (
         SELECT balances.wallet_id, balances.currency, balances.available, balances.held,
                balances.spent_day, balances.spent_today
           FROM balances
           JOIN unnest($1::text[], $2::text[]) AS k(wallet_id, currency)
             ON balances.wallet_id = k.wallet_id AND balances.currency = k.currency
          ORDER BY balances.wallet_id, balances.currency
            FOR UPDATE OF balances) AS b),
       ARRAY(SELECT s FROM (
         SELECT currency, issued, redeemed FROM supply
          WHERE currency = ANY($3::text[]) ORDER BY currency FOR UPDATE) AS s),
       (SELECT h FROM (
         SELECT seq, hash FROM ledger_head WHERE id = 1 AND $4::bool FOR UPDATE) AS h),
       ARRAY(SELECT o FROM (
         SELECT operations.caller, operations.request_id, operations.method,
                operations.request_hash, operations.ok, operations.outcome,
                operations.commit_seq, operations.created_at_us
           FROM operations
           JOIN unnest($5::text[], $6::text[]) AS k(caller, request_id)
             ON operations.caller = k.caller AND operations.request_id = k.request_id) AS o)"""


def _json_rows(table: TableRows) -> str:
    """``table``'s rows as the JSON array of objects ``json_populate_recordset`` reads (bytea as
    its hex text form)."""
    columns = table.columns
    return json.dumps(
        [
            {
                c: "\\x" + bytes(v).hex() if isinstance(v, bytes | memoryview) else v
                for c, v in zip(columns, row, strict=True)
            }
            for row in table.rows
        ],
        separators=(",", ":"),
    )


@functools.lru_cache(maxsize=128)
def _write_batch(tables: tuple[tuple[str, tuple[str, ...], tuple[str, ...], bool], ...]) -> str:
    """The batch statement, with one more data-modifying CTE for each of ``tables`` (name,
    columns, update key, skip taken keys), whose rows are the parameters after the 32 fixed
    ones, as JSON. The CTEs' rows are typed by each table's own row type
    (``json_populate_recordset(NULL::table, ...)``): no column type is repeated here."""
    ctes = []
    for i, (table, columns, key, skip_taken) in enumerate(tables):
        source = f"json_populate_recordset(NULL::{table}, ${33 + i}::json)"
        if key:
            sets = ", ".join(f"{c} = v.{c}" for c in columns if c not in key)
            where = " AND ".join(f"t.{c} = v.{c}" for c in key)
            ctes.append(
                f"table_{i} AS (UPDATE {table} AS t SET {sets} FROM {source} AS v WHERE {where})"
            )
        else:
            names = ", ".join(columns)
            conflict = " ON CONFLICT DO NOTHING" if skip_taken else ""
            insert = f"INSERT INTO {table} ({names}) SELECT {names} FROM {source}{conflict}"
            ctes.append(f"table_{i} AS ({insert})")
    return "WITH" + _WRITE_BATCH_CTES + "".join(f",\n  {c}" for c in ctes) + _WRITE_BATCH_COUNTS


_WRITE_BATCH_CTES = """
  balance_rows AS (
    UPDATE balances AS b
       SET available = v.available, held = v.held,
           spent_day = v.spent_day, spent_today = v.spent_today
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
           AS v(wallet_id, currency, available, held, spent_day, spent_today)
     WHERE b.wallet_id = v.wallet_id AND b.currency = v.currency
    RETURNING 1),
  entry_rows AS (
    INSERT INTO journal_entries (seq, kind, request_id, caller, committed_at_us, memo, prev_hash,
                                 hash)
    SELECT * FROM unnest($7::bigint[], $8::text[], $9::text[], $10::text[], $11::bigint[],
                         $12::text[], $13::bytea[], $14::bytea[])
    RETURNING 1),
  posting_rows AS (
    INSERT INTO postings (seq, idx, account_id, bucket, currency, amount, balance_after)
    SELECT * FROM unnest($15::bigint[], $16::smallint[], $17::text[], $18::text[], $19::text[],
                         $20::bigint[], $21::bigint[])
    RETURNING 1),
  head_row AS (
    UPDATE ledger_head SET seq = $23, hash = $24 WHERE id = 1 AND $22::bool
    RETURNING 1),
  operation_rows AS (
    INSERT INTO operations (caller, request_id, method, request_hash, ok, outcome, commit_seq,
                            created_at_us)
    SELECT * FROM unnest($25::text[], $26::text[], $27::text[], $28::bytea[], $29::bool[],
                         $30::bytea[], $31::bigint[], $32::bigint[])
    RETURNING 1)"""
_WRITE_BATCH_COUNTS = """
SELECT (SELECT count(*) FROM balance_rows), (SELECT count(*) FROM entry_rows),
       (SELECT count(*) FROM posting_rows), (SELECT count(*) FROM head_row),
       (SELECT count(*) FROM operation_rows)
"""


def _balance_columns(rows: Sequence[BalanceRecord]) -> tuple[list[object], ...]:
    return (
        [b.wallet_id for b in rows],
        [b.currency for b in rows],
        [b.available for b in rows],
        [b.held for b in rows],
        [b.spent_day for b in rows],
        [b.spent_today for b in rows],
    )


class PostgresStore:
    """One dedicated connection per writer (no pool: nothing to reset between batches)."""

    dialect = "postgresql"

    def __init__(
        self, dsn: str, writer_connections: int, isolation: str = "read_committed"
    ) -> None:
        self._dsn = dsn
        self.writer_connections = writer_connections
        self._begin = f"BEGIN ISOLATION LEVEL {isolation.replace('_', ' ').upper()}"
        self._free: list[asyncpg.Connection] = []

    async def _connect(self) -> asyncpg.Connection:
        # With several hosts (a replicated cluster) asyncpg tries each and keeps the primary.
        conn = await asyncpg.connect(self._dsn, timeout=limits.CONNECT_TIMEOUT_SECONDS)
        # (Engines without these settings skip them.)
        with suppress(asyncpg.PostgresError):
            await conn.execute(WRITER_PLANNING)
        return conn

    async def start(self) -> None:
        self._free = [await self._connect() for _ in range(self.writer_connections)]

    async def close(self) -> None:
        for conn in self._free:
            with suppress(Exception):
                await conn.close()
        self._free = []

    @asynccontextmanager
    async def transaction(self, *, commit: bool) -> AsyncIterator[PostgresTransaction]:
        """A batch's transaction. The next batch's BEGIN goes with this one's COMMIT, in one
        round trip: a transaction that has run no statement yet has taken no snapshot and holds
        no lock, so it may wait open for its batch."""
        # Each writer task holds at most one transaction, so a connection is always free.
        conn = self._free.pop()
        clean = False  # committed or rolled back: the connection is fit for the next batch
        try:
            if conn.is_closed():
                conn = await self._connect()
            if not conn.is_in_transaction():  # (a new connection, or one rolled back)
                await conn.execute(self._begin)
            try:
                yield PostgresTransaction(conn)
            except BaseException:
                with suppress(BaseException):
                    await conn.execute("ROLLBACK")
                    clean = True
                raise
            await conn.execute(("COMMIT; " if commit else "ROLLBACK; ") + self._begin)
            clean = True
        finally:
            if not clean:
                # Neither committed nor rolled back (the server went away, e.g. a failover, or a
                # cancel mid-statement): never hand it to the next batch, whose BEGIN would only
                # warn inside this one or find the protocol still busy. The next batch connects
                # afresh (to the new primary).
                conn.terminate()
            self._free.append(conn)

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, ConcurrentDuplicate):
            return True
        if isinstance(exc, asyncpg.UniqueViolationError):
            return exc.constraint_name in _RACED_KEYS
        if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _RETRYABLE_SQLSTATES:
            return True
        if isinstance(exc, asyncpg.InternalClientError):
            # The driver's state broken by a lost server mid-operation; the connection is
            # dropped (transaction above) and the batch retried on a fresh one.
            return True
        return storage_unreachable(exc)
