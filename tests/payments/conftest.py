"""Conditional-payment tests run on a clock they control: 2026-11-27 08:00 UTC (16:00 in
Shenzhen), before the example contracts' deadlines, whatever day the suite runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from settlement.clock import ManualClock
from tests.payments.world import START_US, TradeWorld, build_trade_world
from tests.support.harness import start_harness

YEARS_10_SECONDS = 10 * 366 * 86_400


@asynccontextmanager
async def open_trade_world(database_url: str) -> AsyncIterator[TradeWorld]:
    """A trade world on a fresh server whose clock the test controls."""
    clock = ManualClock(START_US)
    # The server's clock stands at a fixed past date while clients sign expiries on the wall
    # clock: the cap on how far ahead a document may expire is measured on the server's clock,
    # so here it allows for the gap (tests/test_consent.py tests the cap on a real clock).
    async with start_harness(
        database_url, clock=clock, instruction_ttl_max_seconds=YEARS_10_SECONDS
    ) as harness:
        world = await build_trade_world(harness)
        world.clock = clock
        yield world


@pytest.fixture
async def trade(database_url: str) -> AsyncIterator[TradeWorld]:
    async with open_trade_world(database_url) as world:
        yield world
