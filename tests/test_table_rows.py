"""The colder tables' rows (``TableRows``) written with a batch, on both stores: on PostgreSQL
they travel as JSON inside the batch statement, so every kind of value must come back exactly
as written (bytes with NULs and backslashes, text that looks like JSON or escapes, the widest
integers, booleans), updates must touch only the rows named by their key, a skipped
duplicate must be skipped, and a taken key must still fail as the engine expects (so that the
batch is retried). And a payment's rows never grow without a new version of the payment."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import asyncpg
import pytest

from settlement.db.migrate import upgrade_to_head
from settlement.db.urls import parse_database_url
from settlement.ledger.payment_rows import CONTRACT_COLUMNS, ORACLE_COLUMNS, payment_table_rows
from settlement.ledger.records import (
    AttestationRecord,
    ChangeSet,
    PaymentRecord,
    PaymentState,
    TableRows,
)
from settlement.ledger.store import LedgerStore
from settlement.ledger.store_sqlite import SqliteStore
from settlement.runtime import create_sql_engine

AWKWARD_TEXT = 'quote " backslash \\ \\x00ff newline \n tab \t {"json": [1]} \u2028 中文 é 🚢'
AWKWARD_BYTES = bytes(range(256)) + b"\\x41\x00"
INT64_MAX = 2**63 - 1


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[LedgerStore]:
    url = parse_database_url(database_url)
    sql = create_sql_engine(url)
    await upgrade_to_head(sql)
    await sql.dispose()
    made: LedgerStore
    if url.dialect == "sqlite":
        made = SqliteStore(url.sqlite_path or "")
    else:
        from settlement.ledger.store_postgres import PostgresStore

        made = PostgresStore(url.asyncpg_dsn or "", 1)
    await made.start()
    yield made
    await made.close()


async def _write(store: LedgerStore, *tables: TableRows) -> None:
    async with store.transaction(commit=True) as tx:
        await tx.write(ChangeSet([], [], [], [], [], [], [], 0, b"", tables=list(tables)))


async def _rows(store: LedgerStore, sql: str) -> list[tuple[object, ...]]:
    async with store.transaction(commit=False) as tx:
        return [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            for row in await tx.query(sql, ())
        ]


def _oracle(oracle_id: str, revoked: bool, name: str) -> tuple[object, ...]:
    return (oracle_id, "ed25519", oracle_id.encode() + b"\x00\\", 1, 2, revoked, name, 3, 4)


async def test_every_kind_of_value_comes_back_as_written(store: LedgerStore) -> None:
    contracts = [
        ("h1", AWKWARD_TEXT, 1, AWKWARD_BYTES, AWKWARD_TEXT, "platform", INT64_MAX),
        ("h2", "plain", 2, b"", "", "", -INT64_MAX - 1),
    ]
    oracles = [_oracle("o1", True, ""), _oracle("o2", False, AWKWARD_TEXT)]
    await _write(
        store,
        TableRows("contracts", CONTRACT_COLUMNS, contracts),
        TableRows("oracles", ORACLE_COLUMNS, oracles),
    )
    assert (
        await _rows(
            store, f"SELECT {', '.join(CONTRACT_COLUMNS)} FROM contracts ORDER BY contract_hash"
        )
        == contracts
    )
    read = await _rows(store, f"SELECT {', '.join(ORACLE_COLUMNS)} FROM oracles ORDER BY 1")
    assert [(*r[:5], bool(r[5]), *r[6:]) for r in read] == oracles


async def test_an_update_changes_only_the_rows_its_key_names(store: LedgerStore) -> None:
    await _write(
        store,
        TableRows(
            "oracles",
            ORACLE_COLUMNS,
            [_oracle("o1", False, "one"), _oracle("o2", False, "two")],
        ),
    )
    await _write(
        store,
        TableRows(
            "oracles",
            ("oracle_id", "revoked", "display_name"),
            [("o2", True, AWKWARD_TEXT)],
            key=("oracle_id",),
        ),
        TableRows("oracle_registry", ("id", "version"), [(1, 7)], key=("id",)),
    )
    read = await _rows(store, "SELECT oracle_id, revoked, display_name FROM oracles ORDER BY 1")
    assert [(r[0], bool(r[1]), r[2]) for r in read] == [
        ("o1", False, "one"),
        ("o2", True, AWKWARD_TEXT),
    ]
    assert await _rows(store, "SELECT version FROM oracle_registry") == [(7,)]


async def test_a_taken_key_is_skipped_when_asked_and_fails_otherwise(store: LedgerStore) -> None:
    row = ("k1", "old", 1, b"x", "s", "p", 1)
    await _write(store, TableRows("contracts", CONTRACT_COLUMNS, [row]))
    again = ("k1", "new", 1, b"y", "s", "p", 2)
    await _write(store, TableRows("contracts", CONTRACT_COLUMNS, [again], skip_taken=True))
    assert await _rows(store, "SELECT name FROM contracts") == [("old",)]
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)) as raised:
        await _write(
            store,
            TableRows("contracts", CONTRACT_COLUMNS, [("k2", "n", 1, b"", "", "", 0)]),
            TableRows("contracts", CONTRACT_COLUMNS, [again]),
        )
    if isinstance(raised.value, asyncpg.UniqueViolationError):
        # Another replica's batch won the key: the engine retries (and finds the winner's row).
        assert raised.value.constraint_name == "contracts_pkey"
        assert store.is_retryable(raised.value)
    # Nothing of the failed batch was written.
    assert await _rows(store, "SELECT contract_hash FROM contracts ORDER BY 1") == [("k1",)]


def test_a_payment_never_gains_rows_without_a_new_version() -> None:
    """Each server remembers a payment's legs and attestations by its version
    (settlement/ledger/payment_memo.py): a batch that added rows without bumping the version would
    leave every other server's memory stale, so it fails instead of writing."""
    payment = PaymentRecord(
        payment_id="p1",
        platform="platform/a",
        contract_hash="h",
        params_json="{}",
        payer_wallet_id="w1",
        currency="CNY",
        escrow_minor=100,
        held_minor=100,
        released_minor=0,
        refunded_minor=0,
        state=PaymentState.LOCKED,
        terminal_reason="",
        deadline_at_us=None,
        contract_state="{}",
        version=3,
        created_at_us=1,
        updated_at_us=1,
    )
    payment.attestations.append(
        AttestationRecord(
            event_id="e1",
            payment_id="p1",
            seq=1,
            oracle="customs",
            event_type="customs.cleared",
            observed_at_us=1,
            accepted_at_us=1,
            attributes_json="{}",
            signer_ids=(),
            report_json="{}",
            statement=b"",
        )
    )
    with pytest.raises(AssertionError, match="without a new version"):
        payment_table_rows([payment], [], [], None)
    payment.events.append((4, "attested"))
    payment.version = 4
    (attestations,) = [
        t
        for t in payment_table_rows([payment], [], [], None)
        if t.rows and t.table == "attestations"
    ]
    assert [row[0] for row in attestations.rows] == ["e1"]
