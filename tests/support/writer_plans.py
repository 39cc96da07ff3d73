"""What the PostgreSQL writers run, and how PostgreSQL plans it under the writers' settings
(settlement/ledger/store_postgres.py ``WRITER_PLANNING``: one generic plan per statement, built
along an index): a test records every statement a real server's writer connections send while
it works, then asks PostgreSQL for each one's generic plan and looks for a table read whole.

A generic plan does not depend on the values bound, so each statement is planned with NULLs:
``PREPARE`` then ``EXPLAIN EXECUTE``, on a connection with the writers' settings."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest

from settlement.db.urls import parse_database_url
from settlement.ledger.store_postgres import WRITER_PLANNING, PostgresStore

#: Tables of one row or one row per currency, and the oracle registry's tables, which the oracle
#: set reads whole by design (cached by its version): reading them whole is a lookup.
WHOLE_TABLES = frozenset({"ledger_head", "oracle_registry", "supply", "oracles"})
#: Plan nodes that read a table whole or join by reading both sides whole.
WHOLE_READS = frozenset({"Seq Scan", "Hash Join", "Merge Join"})
_PARAMETER = re.compile(r"\$(\d+)")
_STATEMENT = re.compile(r"\s*(SELECT|WITH|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_SENT_BY = ("fetch", "fetchrow", "fetchval", "execute", "executemany")


@contextmanager
def writer_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements (their text, in the order sent) every PostgresStore connection opened
    meanwhile sends."""
    writers: set[int] = set()
    seen: list[str] = []
    connect = PostgresStore._connect

    async def connecting(store: PostgresStore) -> asyncpg.Connection:
        conn = await connect(store)
        writers.add(id(conn))
        return conn

    monkeypatch.setattr(PostgresStore, "_connect", connecting)
    for name in _SENT_BY:
        sent = getattr(asyncpg.Connection, name)

        def recording(
            conn: asyncpg.Connection, query: str, *args: Any, __sent: Any = sent, **kwargs: Any
        ) -> Any:
            if id(conn) in writers:
                seen.append(query)
            return __sent(conn, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, name, recording)
    yield seen


async def whole_reads(database_url: str, statements: Iterable[str]) -> dict[str, list[str]]:
    """For each statement (a SELECT, WITH, INSERT, UPDATE or DELETE) whose generic plan reads a
    table that grows whole (or joins by reading whole): the offending plan nodes."""
    conn = await asyncpg.connect(parse_database_url(database_url).asyncpg_dsn or "")
    found: dict[str, list[str]] = {}
    try:
        await conn.execute(WRITER_PLANNING)
        planned = sorted({s for s in statements if _STATEMENT.match(s)})
        for i, statement in enumerate(planned):
            count = max((int(n) for n in _PARAMETER.findall(statement)), default=0)
            await conn.execute(f"PREPARE writer_{i} AS {statement}")
            nulls = f"({', '.join(['NULL'] * count)})" if count else ""
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE writer_{i}{nulls}")
            if bad := [w for n in _nodes(json.loads(plan)[0]["Plan"]) if (w := _whole(n))]:
                found[statement] = bad
    finally:
        await conn.close()
    return found


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _whole(node: dict[str, Any]) -> str:
    kind = node["Node Type"]
    if kind not in WHOLE_READS or node.get("Relation Name") in WHOLE_TABLES:
        return ""
    return f"{kind} {node.get('Relation Name', '')}".strip()
