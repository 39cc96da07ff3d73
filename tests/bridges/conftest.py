"""Fixtures for the bridge: the in-process bridge and the gRPC one (a real server on an ephemeral
port in this process, over its own bridge), behind the same FaultyBridge, on a shared ManualClock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridges import (
    AccountKind,
    Bridge,
    BridgeAdminApi,
    BridgeClient,
    FaultPlan,
    FaultyBridge,
    ManualClock,
    Money,
    Rate,
)
from bridges._server import RunningServer, start_server

KEY_SEED = b"condpay-bridge-tests-key-seed-32b"
BANKS = ("BANK-A", "BANK-B")
LP = "LP"
SPREAD_PPM = 2_500
RATES = {
    "CNY": Rate(1, 1),
    "HKD": Rate(9_235, 10_000),
    "THB": Rate(2_010, 10_000),
    "AED": Rate(19_432, 10_000),
    "SAR": Rate(19_025, 10_000),
}
BANK_FUNDS_MINOR = 1_000_000_00
LIQUIDITY_MINOR = 10_000_000_00


async def fund(api: BridgeAdminApi) -> None:
    """Two banks with 1,000,000.00 of every currency; a provider with 10,000,000.00 of each."""
    for bank in (*BANKS, LP):
        await api.register_bank(bank, name=f"{bank} test bank")
    await api.register_liquidity_provider(LP, spread_ppm=SPREAD_PPM)
    for currency, value in RATES.items():
        await api.publish_rate(currency, value)
        for bank in BANKS:
            await api.issue(
                f"fund-{bank}-{currency}",
                participant_id=bank,
                amount=Money(currency, BANK_FUNDS_MINOR),
            )
        await api.issue(
            f"fund-{LP}-{currency}",
            participant_id=LP,
            amount=Money(currency, LIQUIDITY_MINOR),
            account_kind=AccountKind.LIQUIDITY,
        )


@dataclass
class World:
    """One bridge as the core would see it (``api``), with the knobs tests turn."""

    transport: str
    api: BridgeAdminApi
    faulty: FaultyBridge
    clock: ManualClock

    @property
    def bridge(self) -> Bridge:
        return self.faulty.inner


Factory = Callable[..., Awaitable[World]]


@contextlib.asynccontextmanager
async def open_world(
    transport: str, path: Path, plan: FaultPlan | None = None, *, funded: bool = True
) -> AsyncIterator[World]:
    """A bridge on ``path`` behind ``plan``, reached in process or through a real gRPC server;
    audited on the way out (unless it crashed)."""
    clock = ManualClock()
    bridge = await Bridge.open(path, clock=clock, seed=7, key_seed=KEY_SEED)
    if funded:
        await fund(bridge)
    faulty = await FaultyBridge.wrap(bridge, plan or FaultPlan())
    server: RunningServer | None = None
    client: BridgeClient | None = None
    if transport == "grpc":
        server = await start_server(faulty, "127.0.0.1:0", block_interval_ms=None)
        client = BridgeClient(f"127.0.0.1:{server.port}")
    world = World(transport, client or faulty, faulty, clock)
    try:
        yield world
        if not world.faulty.crashed:
            report = await world.bridge.audit()
            assert report.problems == (), report.problems
    finally:
        if client is not None:
            await client.close()
        if server is not None:
            await server.stop(grace_ms=0)
        else:
            await faulty.close()


TRANSPORTS = ("in_process", "grpc")


@pytest.fixture(params=TRANSPORTS)
async def make_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """``await make_world(plan=FaultPlan(...), funded=True)``: a bridge over the parametrized
    transport; every world is audited after the test."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def make(plan: FaultPlan | None = None, *, funded: bool = True) -> World:
            nonlocal count
            count += 1
            path = tmp_path / f"bridge-{count}.db"
            return await stack.enter_async_context(
                open_world(request.param, path, plan, funded=funded)
            )

        yield make


@pytest.fixture
async def world(make_world: Factory) -> World:
    return await make_world()
