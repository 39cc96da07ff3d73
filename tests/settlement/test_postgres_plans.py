"""The PostgreSQL writers' plans for settlements (tests/payments/test_postgres_plans.py has the
why): every statement the writers send while a world with a bridge opens and settles a PvP at a
quote, a PvP at market or a cross-currency DvP is planned as they plan it, and none may read a
table that grows whole."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.settlement import test_at_market, test_dvp, test_pvp
from tests.settlement.audit import open_trade
from tests.settlement.world import TradeWorld
from tests.support.writer_plans import whole_reads, writer_statements

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize(
    ("flow", "table"),
    [
        (test_pvp.test_pvp_moves_both_currencies_and_is_final, "fx_quotes"),
        (test_at_market.test_pvp_at_market_pays_the_bridges_price_and_is_final, "fx_quotes"),
        (test_dvp.test_cross_currency_dvp_at_a_quote, "titles"),
    ],
    ids=["pvp", "pvp-at-market", "dvp"],
)
async def test_no_writer_statement_of_a_settlement_reads_a_table_whole(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    flow: Callable[[TradeWorld], Awaitable[None]],
    table: str,
) -> None:
    with writer_statements(monkeypatch) as seen:
        async with open_trade(pg_url) as trade:
            await flow(trade)
    assert any("FROM settlements" in s for s in seen), seen
    assert any(f"FROM {table}" in s for s in seen), seen
    assert await whole_reads(pg_url, seen) == {}
