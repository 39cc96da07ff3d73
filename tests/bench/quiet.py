"""Wait, within a budget, for the machine to go quiet before a cell is measured.

The benchmark shares its 2 cores with whatever else runs (another test suite, PostgreSQL's
checkpointer after the previous cell). Before each cell we probe the whole machine for
PROBE_SECONDS and keep probing while it is busy more than QUIET_CORES, for at most
CELL_WAIT_SECONDS per cell and TOTAL_WAIT_SECONDS per run (once that is spent, each cell still gets
its one probe); we report how long we waited, and the cell's ``cpu_cores.others`` says what ran.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tests.bench.cpu import machine_busy_seconds

QUIET_CORES = 0.15
PROBE_SECONDS = 0.5
CELL_WAIT_SECONDS = 15.0
TOTAL_WAIT_SECONDS = 90.0


async def busy_cores(seconds: float = PROBE_SECONDS) -> float:
    before, started = machine_busy_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    return (machine_busy_seconds() - before) / (time.monotonic() - started)


@dataclass(slots=True)
class QuietGate:
    spent_seconds: float = 0.0

    async def wait(self) -> tuple[float, float]:
        """Wait for quiet; returns (seconds waited, busy cores at the last probe)."""
        started = time.monotonic()
        limit = min(CELL_WAIT_SECONDS, max(0.0, TOTAL_WAIT_SECONDS - self.spent_seconds))
        while True:
            busy = await busy_cores()
            waited = time.monotonic() - started
            if busy < QUIET_CORES or waited >= limit:
                self.spent_seconds += waited
                return round(waited, 2), round(busy, 3)
