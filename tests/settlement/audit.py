"""The cross-system audit: per currency, the gateway's core balance plus its balance on the
bridge never changes through settlements, and every settlement with a bridge leg is committed on
both ledgers or on neither. ``open_trade`` runs it (and the core's ledger audit) after a test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bridges import DEMO_BANK_BALANCE_MINOR, AccountKind
from settlement.clock import Clock
from tests.settlement.world import CURRENCIES, GATEWAY, RESERVE_MINOR, TradeWorld, build_world
from tests.support.harness import start_harness


async def gateway_positions(world: TradeWorld) -> dict[str, int]:
    runtime = world.harness.runtime
    assert runtime.bridge is not None
    bridge = {
        b.currency: b.balance_minor
        for b in await runtime.bridge.api.balances(GATEWAY)
        if b.kind is AccountKind.SETTLEMENT
    }
    core = {c: sum(await world.balance(f"w_reserve.{GATEWAY}", c)) for c in CURRENCIES}
    return {c: core[c] + bridge.get(c, 0) for c in CURRENCIES}


async def assert_conserved(world: TradeWorld) -> None:
    runtime = world.harness.runtime
    assert runtime.bridge is not None
    positions = await gateway_positions(world)
    assert positions == {c: RESERVE_MINOR + DEMO_BANK_BALANCE_MINOR for c in CURRENCIES}
    report = await runtime.bridge.api.audit()  # type: ignore[attr-defined]
    assert report.ok, report
    settlements = await runtime.settlements.settlements(limit=10_000)
    for s in settlements:
        if not s.transfer_id:
            continue
        transfer = await runtime.bridge.api.status(runtime.bridge.bridge_transfer_id(s.transfer_id))
        committed_core = s.state.value in ("COMMITTED", "FINAL")
        assert (transfer.state.value == "COMMITTED") == committed_core, (s, transfer)


@contextlib.asynccontextmanager
async def open_trade(
    database_url: str,
    *,
    clock: Clock | None = None,
    pvp_hold_ms: int = 30_000,
    pvp_margin_ms: int = 5_000,
) -> AsyncIterator[TradeWorld]:
    """A trade world on a fresh server; on a clean exit the cross-system audit, then (in
    start_harness) the core's ledger audit."""
    async with start_harness(
        database_url, clock=clock, pvp_hold_ms=pvp_hold_ms, pvp_margin_ms=pvp_margin_ms
    ) as harness:
        world = await build_world(harness)
        yield world
        await assert_conserved(world)
