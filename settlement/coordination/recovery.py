"""The recovery sweep: every replica, from start-up on, finds settlements that are not finished
and drives them to their decided outcome (settlement/coordination/coordinator.py). The
settlements table is the work list, so a crash loses none of it.

Each sweep goes through every unfinished settlement, a page (``SWEEP_BATCH``) at a time by
settlement id, to the last page (so no number of settlements in one state can hide those of
another), all states in one statement per page, and drives those that are due:

- COMMITTING, ABORTING (in doubt: a decision to carry out on the bridge, then in the core):
  every one last changed more than ``grace`` ago.
- PENDING (a payout waiting for its bridge leg): at once the first time; after an aborted or
  skipped attempt (the bridge refused it, or the gateway was short of the target currency, or
  the quote expired before it was attached), with a backoff from its last change that doubles
  with each attempt, from 0.25 s up to 60 s (``payout_backoff_us(attempt)``), so the bridge is
  asked again, not hammered.
- COMMITTED (a commit waiting for its quorum certificate): once last changed more than ``grace``
  ago.
- PREPARED with no decision: once last changed more than ``grace`` ago, driven like the call that
  prepared it would (prepare again, idempotently, then decide), which aborts it once its decision
  deadline has passed.

A settlement that a call of this process is driving at that moment (SettlePvP or SettleDvP
waiting for the bridge, say) is left to that call, which takes it as far as it can go; the next
sweep finds it where that call left it. One changed less than ``grace`` ago is left alone too:
the call that changed it, in another worker or replica, is most likely still driving it (in the
PvP bench on PostgreSQL, two workers' sweeps without this drove about a third of all settlements
a second time, each a bridge commit, a finality wait and a core write more, racing the call's).
A crash leaves its settlements to the next sweep after ``grace``.

A sweep follows the last one by ``SWEEP_SECONDS`` if that one found unfinished settlements, by
``IDLE_SWEEP_SECONDS`` if it found none (under load too: settlements in flight are younger than
the grace); every PENDING payout is found whatever its age, so its backoff is kept to the
quarter second.
"""

from __future__ import annotations

import asyncio
from typing import Final

import structlog

from settlement.clock import Clock
from settlement.coordination.coordinator import Coordinator
from settlement.ledger.records import SettlementRecord, SettlementState
from settlement.ledger.settlement_reads import SettlementReader
from settlement.sweeps import PeriodicSweep

log = structlog.get_logger("condpay.recovery")

SWEEP_SECONDS: Final = 0.25  # while the last sweep found unfinished settlements
IDLE_SWEEP_SECONDS: Final = 1.0  # while it found none
SWEEP_BATCH: Final = 100  # settlements read per page
DRIVE_CONCURRENCY: Final = 16


def payout_backoff_us(attempt: int) -> int:
    """How long a payout waits before attempt ``attempt`` (the first goes at once)."""
    if attempt <= 1:
        return 0
    return min(250_000 << min(attempt - 2, 16), 60_000_000)


class RecoverySweeper(PeriodicSweep):
    NAME = "recovery_sweep"

    def __init__(
        self,
        reader: SettlementReader,
        coordinator: Coordinator,
        clock: Clock,
        grace_ms: int = 2_000,
    ) -> None:
        super().__init__(SWEEP_SECONDS)
        self._reader, self._coordinator, self._clock = reader, coordinator, clock
        self._grace_us = grace_ms * 1000
        self.driven = 0
        self._found = True  # (the first sweep, at start-up, looks at once; see pause_seconds)

    def pause_seconds(self) -> float:
        """``SWEEP_SECONDS`` after a sweep that found unfinished settlements (a payout's next
        attempt, a drive the bridge did not answer), ``IDLE_SWEEP_SECONDS`` after one that found
        none: settlements in flight are their calls' for ``grace`` anyway, so a crash's are
        picked up at most ``grace`` plus a second after their last change."""
        return SWEEP_SECONDS if self._found else IDLE_SWEEP_SECONDS

    async def sweep(self) -> int:
        """Drive every unfinished settlement that is due once; returns how many changed state.
        One statement per page finds them all (every PENDING one, and the others changed before
        the grace), so a sweep that finds nothing costs one query."""
        now = self._clock.now_us()
        settled_before = now - self._grace_us  # anything changed since is left to its driver
        changed, after_id = 0, ""
        self._found = True  # (a sweep that fails is followed by the shorter pause)
        while True:
            page = await self._reader.unfinished(
                changed_before_us=settled_before, after_id=after_id, limit=SWEEP_BATCH
            )
            if not after_id:
                self._found = bool(page)
            changed += await self._drive_all(
                [
                    s
                    for s in page
                    if self._due(s, now) and not self._coordinator.driving(s.settlement_id)
                ]
            )
            if len(page) < SWEEP_BATCH:
                break
            after_id = page[-1].settlement_id
        self.driven += changed
        return changed

    @staticmethod
    def _due(s: SettlementRecord, now: int) -> bool:
        """A PENDING payout once its attempt's backoff has passed; any other (the query kept
        only those past the grace) at once."""
        if s.state is not SettlementState.PENDING:
            return True
        return now >= s.updated_at_us + payout_backoff_us(s.attempt)

    async def _drive_all(self, due: list[SettlementRecord]) -> int:
        if not due:
            return 0
        limit = asyncio.Semaphore(DRIVE_CONCURRENCY)

        async def drive(s: SettlementRecord) -> bool:
            async with limit:
                after = await self._coordinator.drive(s.settlement_id)
            return after.state is not s.state

        results = await asyncio.gather(*(drive(s) for s in due), return_exceptions=True)
        changed = 0
        for s, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("recovery_failed", settlement_id=s.settlement_id, error=repr(result))
            elif result:
                changed += 1
                log.info("recovered", settlement_id=s.settlement_id, was=s.state.value)
        return changed
