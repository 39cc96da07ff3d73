"""Retention of stored failed outcomes: a periodic sweep deletes failed ``operations`` rows
older than CONDPAY_FAILED_OUTCOME_RETENTION_SECONDS (default 24 h).

Until then a failed request id keeps failing the same way (the stored status is replayed);
afterwards the id is free again and a retry runs afresh. Successful outcomes are kept: a replay
of a call that took effect must always get its original reply. Every replica sweeps; deleting
the same rows twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from settlement import limits
from settlement.clock import Clock

log = structlog.get_logger("condpay.retention")

_DELETE = text(
    "DELETE FROM operations WHERE (caller, request_id) IN ("
    "SELECT caller, request_id FROM operations WHERE ok = :failed AND created_at_us < :before "
    "LIMIT :batch)"
)


class OutcomeRetention:
    def __init__(self, sql: AsyncEngine, clock: Clock, retention_seconds: int) -> None:
        self._sql, self._clock = sql, clock
        self.retention_us = retention_seconds * 1_000_000
        self._task: asyncio.Task[None] | None = None
        self.deleted = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outcome-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as error:  # the sweep must outlive a bad moment of the database
                log.warning("outcome_sweep_failed", error=repr(error))
            await asyncio.sleep(limits.OUTCOME_SWEEP_SECONDS)

    async def sweep(self) -> int:
        """Delete the failed outcomes older than the retention; returns how many."""
        before = self._clock.now_us() - self.retention_us
        total = 0
        while True:
            async with self._sql.begin() as conn:
                result = await conn.execute(
                    _DELETE,
                    {"failed": False, "before": before, "batch": limits.OUTCOME_SWEEP_BATCH},
                )
            count = result.rowcount or 0
            total += count
            if count < limits.OUTCOME_SWEEP_BATCH:
                break
        if total:
            log.info("failed_outcomes_deleted", count=total)
        self.deleted += total
        return total
