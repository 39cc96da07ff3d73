"""The deadline sweep's one read (``DeadlineReader.due``), on both databases: which payments and
loans are due (open or live ones only, at most a batch of each table, earliest first), and the
earliest deadline of either table coming within the period (one at ``now`` is due, not coming;
one at ``until`` is coming)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from settlement.db import models
from settlement.db.migrate import upgrade_to_head
from settlement.db.urls import parse_database_url
from settlement.ledger.deadline_reads import DeadlineReader, DueWork
from settlement.ledger.read_sessions import read_sessions
from settlement.runtime import create_sql_engine, snapshot_reads

NOW = 1_000_000_000
UNTIL = NOW + 500_000
PAYMENTS: Table = models.Payment.__table__  # type: ignore[attr-defined]
LOANS: Table = models.Loan.__table__  # type: ignore[attr-defined]
CONTRACT = {
    "contract_hash": "h",
    "name": "c",
    "version": 1,
    "canonical": b"",
    "source": "",
    "registered_by": "platform/test",
    "registered_at_us": 0,
}


def _payment(payment_id: str, state: str, deadline_at_us: int | None) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "platform": "platform/test",
        "contract_hash": "h",
        "params_json": "{}",
        "payer_wallet_id": "w",
        "currency": "CNY",
        "escrow_minor": 1,
        "held_minor": 1,
        "released_minor": 0,
        "refunded_minor": 0,
        "state": state,
        "terminal_reason": "",
        "deadline_at_us": deadline_at_us,
        "contract_state": "{}",
        "version": 1,
        "created_at_us": 0,
        "updated_at_us": 0,
    }


def _loan(loan_id: str, state: str, deadline_at_us: int | None) -> dict[str, Any]:
    # Every other column zero or empty, by its type: only these three matter to the sweep.
    blank = {c.name: 0 if c.type.python_type is int else "" for c in LOANS.columns}
    return blank | {"loan_id": loan_id, "state": state, "deadline_at_us": deadline_at_us}


@pytest.fixture
async def sql(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_sql_engine(parse_database_url(database_url))
    await upgrade_to_head(engine)
    async with engine.begin() as conn:
        await conn.execute(insert(models.Contract.__table__), [CONTRACT])  # type: ignore[attr-defined]
    yield engine
    await engine.dispose()


@pytest.fixture
async def reads(sql: AsyncEngine, database_url: str) -> AsyncIterator[DeadlineReader]:
    sessions = read_sessions(snapshot_reads(sql), parse_database_url(database_url))
    yield DeadlineReader(sessions)
    sessions.close()


async def _add(sql: AsyncEngine, table: Table, rows: list[dict[str, Any]]) -> None:
    async with sql.begin() as conn:
        await conn.execute(insert(table), rows)


async def test_due_work_is_the_open_ones_earliest_first_a_batch_of_each(
    sql: AsyncEngine, reads: DeadlineReader
) -> None:
    await _add(
        sql,
        PAYMENTS,
        [
            _payment("p-late", "LOCKED", NOW),  # due at its very instant
            _payment("p-early", "PARTIALLY_RELEASED", NOW - 5),
            _payment("p-middle", "LOCKED", NOW - 3),
            _payment("p-settled", "SETTLED", NOW - 9),  # closed: never due
            _payment("p-none", "LOCKED", None),  # no deadline
            _payment("p-coming", "LOCKED", NOW + 7),
            _payment("p-closed-coming", "EXPIRED", NOW + 1),
        ],
    )
    await _add(
        sql,
        LOANS,
        [
            _loan("l-due", "MARGIN_CALL", NOW - 1),
            _loan("l-repaid", "REPAID", NOW - 2),
            _loan("l-coming", "OPEN", NOW + 4),
            _loan("l-beyond", "OPEN", UNTIL + 1),
        ],
    )
    work = await reads.due(NOW, UNTIL, limit=10)
    assert work.payment_ids == ["p-early", "p-middle", "p-late"]
    assert work.loan_ids == ["l-due"]
    assert work.next_us == NOW + 4  # the loan's, sooner than any payment's

    batch = await reads.due(NOW, UNTIL, limit=2)  # the rest waits for the next round
    assert batch.payment_ids == ["p-early", "p-middle"]
    assert batch.loan_ids == ["l-due"]

    later = await reads.due(NOW + 4, UNTIL, limit=10)  # the loan's instant has come
    assert later.loan_ids == ["l-due", "l-coming"]
    assert later.next_us == NOW + 7


async def test_the_coming_deadline_is_within_the_period_or_none(
    sql: AsyncEngine, reads: DeadlineReader
) -> None:
    assert await reads.due(NOW, UNTIL, limit=10) == DueWork([], [], None)
    await _add(
        sql,
        LOANS,
        [_loan("l-at-until", "OPEN", UNTIL), _loan("l-after", "OPEN", UNTIL + 1)],
    )
    assert (await reads.due(NOW, UNTIL, limit=10)).next_us == UNTIL
    assert (await reads.due(NOW, UNTIL - 1, limit=10)).next_us is None
