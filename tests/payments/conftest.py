"""Conditional-payment tests run on a clock they control: 2026-11-27 08:00 UTC (16:00 in
Shenzhen), before the example contracts' deadlines, whatever day the suite runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from settlement.clock import ManualClock
from tests.payments.world import START_US, TradeWorld, build_trade_world
from tests.support.harness import start_harness


@pytest.fixture
async def trade(database_url: str) -> AsyncIterator[TradeWorld]:
    clock = ManualClock(START_US)
    async with start_harness(database_url, clock=clock) as harness:
        world = await build_trade_world(harness)
        world.clock = clock
        yield world
