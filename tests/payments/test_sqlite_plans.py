"""No statement scans a table that grows: every statement a whole lifecycle (lock, customs, the
sensors' quorum, the buyer's receipt, the reads that follow) makes the SQLite writer or the
readers run is planned (EXPLAIN QUERY PLAN) and may only SEARCH an index. A scan costs nothing
on a new ledger and makes every batch slower with each call the ledger has answered, as the
idempotency lookup's ``(caller, request_id) IN (VALUES ...)`` did (a scan of ``operations`` on
every batch), and the contract quota's count (a scan of ``contracts``)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest
from condpay.v1 import payment_pb2, wallet_pb2
from sqlalchemy import event

from settlement.ledger.store_sqlite import SqliteStore
from tests.payments.snapshot import whole_lifecycle
from tests.payments.world import TradeWorld

#: Tables of one row or one row per currency (a scan of them is a lookup), and the oracle
#: registry, which the oracle set reads whole by design (cached by its version).
WHOLE_TABLES = frozenset({"ledger_head", "oracle_registry", "supply", "oracles"})
#: SQLite's plan steps for the statement's own constant rows and subqueries (SQLite's name for
#: them, or SQLAlchemy's, ``anon_N``), not a table: how their rows are found is planned, and
#: checked, apart (``SEARCH payments USING INDEX ...`` inside the deadline sweep's subqueries).
NOT_A_TABLE = re.compile(r"SCAN ((\d+ )?CONSTANT ROWS?|\(subquery-\d+\)|anon_\d+$)")


def _scans(conn: sqlite3.Connection, statement: str, params: Any) -> list[str]:
    plan = conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
    return [
        detail
        for *_, detail in plan
        if detail.startswith("SCAN ") and not NOT_A_TABLE.match(detail) and not _whole(detail)
    ]


def _whole(detail: str) -> bool:
    """``SCAN oracles``, or ``SCAN o USING INDEX sqlite_autoindex_oracles_1`` (an alias)."""
    name = detail.split()[1]
    return name in WHOLE_TABLES or any(f"autoindex_{t}_" in detail for t in WHOLE_TABLES)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_no_statement_of_a_lifecycle_scans_a_table(trade: TradeWorld) -> None:
    runtime = trade.harness.runtime
    store = runtime.store
    assert isinstance(store, SqliteStore)
    statements: list[str] = []
    # The writer's own connection (the store keeps it private: a test looks over its shoulder).
    store._conn.set_trace_callback(statements.append)  # type: ignore[union-attr]
    read: list[tuple[str, Sequence[object]]] = []

    def reading(_c: object, _cur: object, statement: str, params: Any, *_: object) -> None:
        read.append((statement, params))

    readers = runtime.read_sessions.sync_engines  # point reads on one, pages on the other
    for engine in readers:
        event.listen(engine, "before_cursor_execute", reading)
    payment = await whole_lifecycle(trade)
    cb = trade.cb
    await cb.get_payment(payment.payment_id)
    await cb.api.payments.list_payments(payment_pb2.ListPaymentsRequest())
    await trade.platform.get_payment(payment.payment_id)
    await cb.api.wallets.list_journal(wallet_pb2.ListJournalRequest())
    await cb.get_wallet(trade.wallets["buyer"])
    store._conn.set_trace_callback(None)  # type: ignore[union-attr]
    for engine in readers:
        event.remove(engine, "before_cursor_execute", reading)

    writes = [(s, ()) for s in statements if s.split()[0].upper() in ("SELECT", "UPDATE")]
    reads = [(s, p) for s, p in read if s.lstrip().upper().startswith("SELECT")]
    # The lifecycle's batches and reads were seen.
    assert len(writes) > 20
    assert len(reads) > 10
    conn = sqlite3.connect(runtime.url.sqlite_path or "")
    try:
        scans = {s: found for s, p in writes + reads if (found := _scans(conn, s, p))}
    finally:
        conn.close()
    assert scans == {}, "\n".join(f"{v} <- {k[:160]!r}" for k, v in scans.items())
