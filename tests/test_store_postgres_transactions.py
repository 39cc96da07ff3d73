"""The PostgreSQL store opens each batch's transaction with the previous batch's COMMIT, in one
round trip. That is safe only because a transaction that has run no statement has taken no
snapshot and holds no lock: whatever other connections commit while it waits open, the batch
sees (under both isolations the store offers), and a batch that fails leaves nothing open
behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from settlement.db.migrate import upgrade_to_head
from settlement.db.urls import parse_database_url
from settlement.ledger.payment_rows import CONTRACT_COLUMNS
from settlement.ledger.records import ChangeSet, TableRows
from settlement.ledger.store_postgres import PostgresStore
from settlement.runtime import create_sql_engine

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["read_committed", "serializable"])
async def store(request: pytest.FixtureRequest, pg_url: str) -> AsyncIterator[PostgresStore]:
    url = parse_database_url(pg_url)
    sql = create_sql_engine(url)
    await upgrade_to_head(sql)
    await sql.dispose()
    made = PostgresStore(url.asyncpg_dsn or "", 1, isolation=request.param)
    await made.start()
    yield made
    await made.close()


@pytest.fixture
async def other(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A second connection to the same database: another writer, or an observer."""
    connection = await asyncpg.connect(parse_database_url(pg_url).asyncpg_dsn or "")
    yield connection
    await connection.close()


def _contract(contract_hash: str, name: str) -> tuple[object, ...]:
    return (contract_hash, name, 1, b"", "", "platform", 0)


async def _write(store: PostgresStore, *rows: tuple[object, ...]) -> None:
    table = TableRows("contracts", CONTRACT_COLUMNS, list(rows))
    async with store.transaction(commit=True) as tx:
        await tx.write(ChangeSet([], [], [], [], [], [], [], 0, b"", tables=[table]))


async def _sources(store: PostgresStore) -> list[tuple[object, ...]]:
    async with store.transaction(commit=True) as tx:
        return await tx.query(
            "SELECT contract_hash, name FROM contracts ORDER BY contract_hash", ()
        )


async def _backend_state(store: PostgresStore, other: asyncpg.Connection) -> str:
    """The writer connection's state as the server sees it."""
    pid = store._free[0].get_server_pid()
    state = await other.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
    return str(state)


async def test_a_batch_sees_what_others_committed_while_its_transaction_waited_open(
    store: PostgresStore, other: asyncpg.Connection
) -> None:
    await _write(store, _contract("h1", "one"))
    # The next batch's transaction is open already, idle, and has no snapshot yet.
    assert await _backend_state(store, other) == "idle in transaction"
    await other.execute("UPDATE contracts SET name = 'changed' WHERE contract_hash = 'h1'")
    await other.execute(
        f"INSERT INTO contracts ({', '.join(CONTRACT_COLUMNS)}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        *_contract("h2", "two"),
    )
    assert await _sources(store) == [("h1", "changed"), ("h2", "two")]
    # Nor does a waiting transaction hold a lock that another writer would wait for.
    async with other.transaction():
        await other.execute("LOCK TABLE contracts IN ACCESS EXCLUSIVE MODE NOWAIT")


async def test_a_failed_batch_leaves_no_transaction_open_and_the_next_one_begins(
    store: PostgresStore, other: asyncpg.Connection
) -> None:
    await _write(store, _contract("h1", "one"))
    with pytest.raises(asyncpg.UniqueViolationError):
        await _write(store, _contract("h1", "again"))
    assert await _backend_state(store, other) == "idle"
    await _write(store, _contract("h2", "two"))
    assert await _sources(store) == [("h1", "one"), ("h2", "two")]


async def test_a_dry_run_rolls_back_and_the_next_batch_still_writes(store: PostgresStore) -> None:
    table = TableRows("contracts", CONTRACT_COLUMNS, [_contract("h1", "dry")])
    async with store.transaction(commit=False) as tx:
        await tx.write(ChangeSet([], [], [], [], [], [], [], 0, b"", tables=[table]))
    assert await _sources(store) == []
    await _write(store, _contract("h2", "real"))
    assert await _sources(store) == [("h2", "real")]


async def test_a_connection_lost_while_its_transaction_waited_open_is_replaced(
    store: PostgresStore, other: asyncpg.Connection
) -> None:
    await _write(store, _contract("h1", "one"))
    assert await other.fetchval("SELECT pg_terminate_backend($1)", store._free[0].get_server_pid())
    # The store finds the connection gone and connects afresh; or, if the loss has not reached
    # the driver yet, that batch fails as a lost connection does, which the engine retries,
    # and the store never hands that connection out again.
    written = [("h1", "one")]
    failure: Exception | None = None
    try:
        await _write(store, _contract("h2", "two"))
        written.append(("h2", "two"))
    except Exception as exc:  # whatever it is, the engine must classify it as retryable
        failure = exc
    assert failure is None or store.is_retryable(failure), repr(failure)
    await _write(store, _contract("h3", "three"))
    assert await _sources(store) == [*written, ("h3", "three")]


async def _waiting_for_a_lock(other: asyncpg.Connection, pid: int) -> None:
    for _ in range(500):
        waiting = await other.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the batch's statement never waited for the ledger head")


async def test_a_batch_locks_balances_then_supply_then_the_head_in_one_statement(
    store: PostgresStore, other: asyncpg.Connection, pg_url: str
) -> None:
    """Every batch takes these locks in this order, so no two batches wait for each other in a
    cycle: while the head is held elsewhere, a batch's statement waits for it already holding
    its balances and supply rows, and nothing else."""
    await other.execute(
        "INSERT INTO institutions VALUES ('bank', 'Bank', 'bank/reserve', 0);"
        "INSERT INTO wallets VALUES ('w1', 'PERSONAL', 1, 'bank', '\\x00', 'one', 'x', 0),"
        "  ('w2', 'PERSONAL', 1, 'bank', '\\x00', 'two', 'x', 0);"
        "INSERT INTO balances VALUES ('w1', 'CNY', 5, 1, 0, 0), ('w2', 'CNY', 7, 0, 0, 0);"
        "INSERT INTO supply VALUES ('CNY', 13, 0) ON CONFLICT (currency) DO UPDATE SET issued = 13"
    )
    probe = await asyncpg.connect(parse_database_url(pg_url).asyncpg_dsn or "")
    try:
        async with store.transaction(commit=False) as tx:
            async with other.transaction():
                head = await other.fetchrow("SELECT seq, hash FROM ledger_head FOR UPDATE")
                locking = asyncio.create_task(
                    tx.lock_funds([("w1", "CNY"), ("w2", "CNY"), ("w3", "CNY")], ["CNY"], head=True)
                )
                await asyncio.sleep(0)
                busy = [
                    r["pid"]
                    for r in await other.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid NOT IN (pg_backend_pid(), $1)",
                        probe.get_server_pid(),
                    )
                ]
                assert len(busy) == 1  # the store's one connection, in this batch
                await _waiting_for_a_lock(other, busy[0])
                for held in (
                    "SELECT 1 FROM balances WHERE wallet_id = 'w2' FOR UPDATE NOWAIT",
                    "SELECT 1 FROM supply WHERE currency = 'CNY' FOR UPDATE NOWAIT",
                ):
                    with pytest.raises(asyncpg.LockNotAvailableError):
                        await probe.execute(held)
                assert not locking.done()
            funds = await locking
        assert funds.head == (head["seq"], head["hash"])
        assert {k: b.values() for k, b in funds.balances.items()} == {
            ("w1", "CNY"): (5, 1, 0, 0),
            ("w2", "CNY"): (7, 0, 0, 0),
        }
        assert [(s.currency, s.issued) for s in funds.supply.values()] == [("CNY", 13)]
        # A batch that reads no balance does not wait for the head.
        async with other.transaction():
            await other.execute("SELECT 1 FROM ledger_head FOR UPDATE")
            async with store.transaction(commit=False) as tx:
                alone = await asyncio.wait_for(tx.lock_funds([], ["CNY"], head=False), 5)
        assert alone.head is None
        assert list(alone.supply) == ["CNY"]
    finally:
        await probe.close()
