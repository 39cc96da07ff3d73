"""The sweeps' statements find their rows through an index on SQLite, never by walking a table
that grows with the ledger's history: every round of every worker runs them, and a scan of the
settlements or payments would cost more with each settlement ever made (measured on 300,000
settled rows: 0.4 ms through ``ix_settlements_open``, 90-200 ms through the primary key).

The server never runs ANALYZE on its SQLite file: the plans checked are the ones it gets."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite

from settlement.db.migrate import upgrade_to_head
from settlement.db.urls import parse_database_url
from settlement.ledger.deadline_reads import _DUE
from settlement.ledger.settlement_reads import _UNFINISHED
from settlement.runtime import create_sql_engine

PARAMS = {"after_id": "", "changed_before_us": 1, "now_us": 1, "until_us": 2, "limit": 100}


def _plan(path: Path, statement: Any) -> list[str]:
    # The statement as the driver gets it: expanded IN lists, positional parameters.
    expanded = statement.compile(dialect=sqlite.dialect()).construct_expanded_state(PARAMS)
    conn = sqlite3.connect(path)
    try:
        plan = "EXPLAIN QUERY PLAN " + expanded.statement
        rows = conn.execute(plan, expanded.positional_parameters).fetchall()
    finally:
        conn.close()
    return [detail for *_, detail in rows]


@pytest.fixture
async def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    engine = create_sql_engine(parse_database_url(f"sqlite:///{path}"))
    await upgrade_to_head(engine)
    await engine.dispose()
    return path


async def test_the_recovery_sweeps_work_list_is_read_through_the_open_index(ledger: Path) -> None:
    plan = _plan(ledger, _UNFINISHED)
    reads = [step for step in plan if step.startswith(("SCAN", "SEARCH"))]
    assert reads, plan
    assert all("ix_settlements_open" in step for step in reads), plan


async def test_the_deadline_sweeps_read_scans_no_table(ledger: Path) -> None:
    plan = _plan(ledger, _DUE)
    # (SCAN anon_N: the statement's own subquery's rows, found by the SEARCH inside it.)
    tables = [s for s in plan if s.split()[:2] in (["SEARCH", "payments"], ["SEARCH", "loans"])]
    assert len(tables) == 4, plan  # each table's due rows and its next deadline
    assert all("USING" in s and "INDEX ix_" in s for s in tables), plan
    assert not [s for s in plan if s.startswith("SCAN") and not s.startswith("SCAN anon_")], plan
