"""The deadline sweep: every replica looks for open payments whose deadline has come and runs
their contracts at the deadline, and for live inventory loans past maturity or a margin call's
cure deadline, which default. The schedule is the payments and loans tables themselves (durable;
it survives restarts). Two replicas may pick the same payment or loan: the command runs under its
row lock and does nothing to one no longer due, so a deadline fires exactly once.

A sweep runs every ``DEADLINE_SWEEP_SECONDS``, and also at the next deadline it saw coming within
that period: a deadline set at least one period ahead (every one but a payment locked less than
half a second before its own deadline) fires at its instant, not up to a period later. Two sweeps
are at least ``DEADLINE_SWEEP_MIN_SECONDS`` apart, so that deadlines a millisecond apart (a
caller's thousands of payments, say) are fired in batches, not by a sweep each."""

from __future__ import annotations

import asyncio
import hashlib

import structlog
from google.protobuf.wrappers_pb2 import BoolValue

from settlement import limits
from settlement.clock import Clock
from settlement.faults import Faults
from settlement.ledger.commands import Command
from settlement.ledger.deadline_reads import DeadlineReader
from settlement.ledger.engine import LedgerEngine, OperationInfo
from settlement.ledger.loans import SWEEPER as LOAN_SWEEPER
from settlement.ledger.loans import FireLoanDeadline
from settlement.ledger.payments import FireDeadline
from settlement.sweeps import PeriodicSweep

log = structlog.get_logger("condpay.deadlines")
SWEEPER = "system/deadline-sweep"


class _Fired:
    """The sweep's internal commands store no reply; the engine still builds one: whether the
    deadline fired (False: another replica fired it first, or the payment closed meanwhile)."""

    def build(self, result: object, info: OperationInfo) -> BoolValue:
        return BoolValue(value=result is not None)

    def replay(self, stored: bytes) -> BoolValue:
        return BoolValue.FromString(stored)


class DeadlineSweeper(PeriodicSweep):
    NAME = "deadline_sweep"

    def __init__(
        self,
        reads: DeadlineReader,
        engine: LedgerEngine,
        clock: Clock,
        faults: Faults,
    ) -> None:
        super().__init__(limits.DEADLINE_SWEEP_SECONDS)
        self.reads, self._engine = reads, engine
        self._clock, self._faults = clock, faults
        self.fired = 0
        # The earliest deadline after the last sweep and within one period of it, if any.
        self._next_us: int | None = None

    def pause_seconds(self) -> float:
        period = limits.DEADLINE_SWEEP_SECONDS
        if self._next_us is None:
            return period
        until_next = (self._next_us - self._clock.now_us()) / 1e6
        return min(period, max(limits.DEADLINE_SWEEP_MIN_SECONDS, until_next))

    async def sweep(self) -> int:
        """Fire every payment and loan due now; returns how many changed."""
        self._next_us = None  # (a sweep that fails waits a whole period before the next)
        now_us = self._clock.now_us()
        until_us = now_us + int(limits.DEADLINE_SWEEP_SECONDS * 1e6)
        work = await self.reads.due(now_us, until_us, limits.DEADLINE_SWEEP_BATCH)
        self._next_us = work.next_us
        due = [(p, self._command(p)) for p in work.payment_ids]
        due += [(loan_id, self._loan_command(loan_id)) for loan_id in work.loan_ids]
        if not due:
            return 0
        self._faults.point("deadline_sweep")
        results = await asyncio.gather(
            *(self._engine.execute(command, _Fired()) for _, command in due),
            return_exceptions=True,
        )
        fired = sum(1 for r in results if isinstance(r, BoolValue) and r.value)
        for (due_id, _), result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("deadline_failed", id=due_id, error=repr(result))
        self.fired += fired
        return fired

    @staticmethod
    def _command(payment_id: str) -> Command:
        return FireDeadline(
            method="/condpay.internal/FireDeadline",
            caller=SWEEPER,
            request_id=f"deadline.{payment_id}",
            request_hash=hashlib.sha256(payment_id.encode()).digest(),
            payment_id=payment_id,
            store_outcome=False,
        )

    @staticmethod
    def _loan_command(loan_id: str) -> Command:
        return FireLoanDeadline(
            method="/condpay.internal/FireLoanDeadline",
            caller=LOAN_SWEEPER,
            request_id=f"deadline.{loan_id}",
            request_hash=hashlib.sha256(loan_id.encode()).digest(),
            loan_id=loan_id,
            store_outcome=False,
        )
