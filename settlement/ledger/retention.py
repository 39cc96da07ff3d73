"""Retention of stored failed outcomes: a periodic sweep deletes failed ``operations`` rows
older than CONDPAY_FAILED_OUTCOME_RETENTION_SECONDS (default 24 h).

Until then a failed request id keeps failing the same way (the stored status is replayed);
afterwards the id is free again and a retry runs afresh. Successful outcomes are kept: a replay
of a call that took effect must always get its original reply. Every replica sweeps; deleting
the same rows twice is harmless.
"""

from __future__ import annotations

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from settlement import limits
from settlement.clock import Clock
from settlement.sweeps import PeriodicSweep

log = structlog.get_logger("condpay.retention")

_DELETE = text(
    "DELETE FROM operations WHERE (caller, request_id) IN ("
    "SELECT caller, request_id FROM operations WHERE ok = :failed AND created_at_us < :before "
    "LIMIT :batch)"
)


class OutcomeRetention(PeriodicSweep):
    NAME = "outcome_sweep"

    def __init__(self, sql: AsyncEngine, clock: Clock, retention_seconds: int) -> None:
        super().__init__(limits.OUTCOME_SWEEP_SECONDS)
        self._sql, self._clock = sql, clock
        self.retention_us = retention_seconds * 1_000_000
        self.deleted = 0

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
