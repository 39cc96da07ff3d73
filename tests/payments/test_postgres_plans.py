"""The PostgreSQL writers plan each statement once, generically, along an index
(settlement/ledger/store_postgres.py ``WRITER_PLANNING``). Every statement they send while a
server opens its world (institutions, wallets, issuance, transfers) and takes a payment through
its whole lifecycle is planned as they plan it, and none may read a table that grows whole:
such a plan costs nothing on a new ledger and more with every call the ledger has answered."""

from __future__ import annotations

import pytest

from tests.payments.conftest import open_trade_world
from tests.payments.snapshot import whole_lifecycle
from tests.support.writer_plans import whole_reads, writer_statements

pytestmark = pytest.mark.postgres


async def test_no_writer_statement_of_a_lifecycle_reads_a_table_whole(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with writer_statements(monkeypatch) as seen:
        async with open_trade_world(pg_url) as trade:
            await whole_lifecycle(trade)
    # The batches of the world's opening and of the lifecycle were seen (reads, locks, writes).
    assert any("FROM payments" in s for s in seen), seen
    assert any("INSERT INTO journal_entries" in s for s in seen), seen
    assert len(set(seen)) > 15, seen
    assert await whole_reads(pg_url, seen) == {}
