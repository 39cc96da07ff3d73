"""The recovery sweep: every replica, from start-up on, finds settlements that are not finished
and drives them to their decided outcome (settlement/coordination/coordinator.py). The
settlements table is the work list, so a crash loses none of it.

- COMMITTING, ABORTING, COMMITTED: driven at once (a decision needs carrying out on the bridge,
  then in the core; a commit needs its certificate).
- PENDING (a payout waiting for a quote): at once the first time; after an aborted attempt or a
  refused quote, with an exponential backoff (``payout_backoff_us``), so a bridge without
  liquidity is asked again, not hammered.
- PREPARED with no decision: left to the call that prepared it for ``grace`` first; after that,
  driven like that call would (prepare again, idempotently, then decide), which aborts it once
  its decision deadline has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import structlog

from settlement.clock import Clock
from settlement.coordination.coordinator import Coordinator
from settlement.ledger.records import SettlementRecord, SettlementState
from settlement.ledger.settlement_reads import SettlementReader

log = structlog.get_logger("condpay.recovery")

SWEEP_SECONDS: Final = 0.25
SWEEP_BATCH: Final = 100
DRIVE_CONCURRENCY: Final = 16
_AT_ONCE: Final = tuple(
    s.value
    for s in (
        SettlementState.PENDING,
        SettlementState.COMMITTING,
        SettlementState.ABORTING,
        SettlementState.COMMITTED,
    )
)


def payout_backoff_us(attempt: int) -> int:
    """How long a payout waits before attempt ``attempt`` (the first goes at once)."""
    if attempt <= 1:
        return 0
    return min(250_000 << min(attempt - 2, 16), 60_000_000)


class RecoverySweeper:
    def __init__(
        self,
        reader: SettlementReader,
        coordinator: Coordinator,
        clock: Clock,
        grace_ms: int = 2_000,
    ) -> None:
        self._reader, self._coordinator, self._clock = reader, coordinator, clock
        self._grace_us = grace_ms * 1000
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.driven = 0
        # Payouts whose quote the bridge refused: (version, when to ask again). Only pacing: a
        # replica that does not know asks once more, which changes nothing.
        self._refused: dict[str, tuple[int, int]] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="settlement-recovery")

    def wake(self) -> None:
        """Sweep now (a payout was just created)."""
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
            except Exception as error:  # outlive a bad moment of the database or the bridge
                log.warning("recovery_sweep_failed", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_SECONDS)
            self._wake.clear()

    def _payout_due(self, s: SettlementRecord, now: int) -> bool:
        refused = self._refused.get(s.settlement_id)
        if refused is not None and refused[0] == s.version and now < refused[1]:
            return False
        return now >= s.updated_at_us + payout_backoff_us(s.attempt)

    async def sweep(self) -> int:
        """Drive every unfinished settlement once; returns how many changed state."""
        now = self._clock.now_us()
        due = [
            s
            for s in await self._reader.settlements(states=_AT_ONCE, limit=SWEEP_BATCH)
            if s.state is not SettlementState.PENDING or self._payout_due(s, now)
        ]
        due += await self._reader.settlements(
            states=(SettlementState.PREPARED.value,),
            updated_before_us=now - self._grace_us,
            limit=SWEEP_BATCH,
        )
        if not due:
            return 0
        limit = asyncio.Semaphore(DRIVE_CONCURRENCY)

        async def drive(settlement_id: str, state: SettlementState) -> bool:
            async with limit:
                after = await self._coordinator.drive(settlement_id)
                if (
                    after.state is SettlementState.PENDING
                    and after.version == before[settlement_id]
                ):
                    self._refused[settlement_id] = (
                        after.version,
                        self._clock.now_us() + payout_backoff_us(after.attempt + 1),
                    )
                return after.state is not state

        before = {s.settlement_id: s.version for s in due}

        results = await asyncio.gather(
            *(drive(s.settlement_id, s.state) for s in due), return_exceptions=True
        )
        changed = 0
        for s, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("recovery_failed", settlement_id=s.settlement_id, error=repr(result))
            elif result:
                changed += 1
                log.info("recovered", settlement_id=s.settlement_id, was=s.state.value)
        self.driven += changed
        return changed
