"""Settlement tests: a real server with a fresh in-process bridge on the server's clock, and,
after each test, the core's audit plus the cross-system audit (tests/settlement/audit.py).
A test that needs other server settings (a ManualClock, PvP timings) opens the same world with
``tests.settlement.audit.open_trade``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.settlement.audit import open_trade
from tests.settlement.world import TradeWorld


@pytest.fixture
async def trade(database_url: str) -> AsyncIterator[TradeWorld]:
    async with open_trade(database_url) as world:
        yield world
