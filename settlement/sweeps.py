"""The background sweeps every replica runs (deadlines, settlement recovery, failed-outcome
retention), on one loop: ``sweep()`` every ``period_seconds``, or sooner when woken, outliving a
bad moment of the database or the bridge (the next round tries again)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

import structlog

log = structlog.get_logger("condpay.sweeps")


class PeriodicSweep:
    #: The task's name, and the log event of a round that failed.
    NAME: ClassVar[str]

    def __init__(self, period_seconds: float) -> None:
        self._period_seconds = period_seconds
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def sweep(self) -> int:
        raise NotImplementedError

    def pause_seconds(self) -> float:
        """How long to wait, unless woken, before the next round: the period, unless the sweep
        knows its next piece of work comes sooner."""
        return self._period_seconds

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.NAME)

    def wake(self) -> None:
        """Sweep now instead of at the end of the period."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as error:  # the sweep must outlive a bad moment of its dependencies
                log.warning(f"{self.NAME}_failed", error=repr(error))
            with contextlib.suppress(TimeoutError):  # (timeout: never swallows a cancel)
                async with asyncio.timeout(self.pause_seconds()):
                    await self._wake.wait()
            self._wake.clear()
