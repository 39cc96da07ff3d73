"""Payouts start when they are created: the commit that releases a conditional payment's leg
to be paid out through the bridge (a new PENDING settlement) hands its id here, and a task of
this process drives it at once (its quote and bridge leg at market with the decision, then the
commit with its finality) instead of waiting for the next recovery sweep, which would start it
up to ``SWEEP_SECONDS`` later and only after the whole previous sweep has finished.

This is only speed: the settlements table stays the work list. A payout this process does not
get to (a crash, a full gate, a drive that the bridge does not answer) is the recovery sweep's,
as before; two drives of one settlement at once are safe (each step is a versioned command).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Final

import structlog

from settlement.coordination.coordinator import Coordinator
from settlement.ledger.records import SettlementRecord

log = structlog.get_logger("condpay.payouts")

#: Payouts driven at once by this process; more wait for a slot (or for the sweep).
PAYOUTS_IN_FLIGHT: Final = 64


class PayoutStarter:
    def __init__(self, coordinator: Coordinator, in_flight: int = PAYOUTS_IN_FLIGHT) -> None:
        self._coordinator = coordinator
        self._gate = asyncio.Semaphore(in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def start(self, settlements: Iterable[SettlementRecord]) -> None:
        """Drive each new payout (as its commit wrote it: not read again) in a task of its own
        (called after its commit); after :meth:`stop`, nothing (the sweep drives them)."""
        if self._stopped:
            return
        for settlement in settlements:
            task = asyncio.create_task(self._drive(settlement), name="payout")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drive(self, settlement: SettlementRecord) -> None:
        settlement_id = settlement.settlement_id
        async with self._gate:
            if self._coordinator.driving(settlement_id):
                return  # the sweep got there first
            try:
                # Stale by now if the sweep drove it meanwhile: then its first step is a no-op.
                await self._coordinator.drive(settlement_id, settlement)
            except Exception as error:  # the sweep takes it from wherever it is
                log.warning("payout_start_failed", settlement_id=settlement_id, error=repr(error))

    async def stop(self) -> None:
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
