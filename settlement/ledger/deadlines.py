"""The deadline sweep: every replica looks for open payments whose deadline has come and runs
their contracts at the deadline. The schedule is the payments table itself (durable; it survives
restarts). Two replicas may pick the same payment: the command runs under the payment's row lock
and does nothing to a payment that is no longer open, so a deadline fires exactly once."""

from __future__ import annotations

import asyncio
import hashlib

import structlog
from google.protobuf.wrappers_pb2 import BoolValue

from settlement import limits
from settlement.clock import Clock
from settlement.faults import Faults
from settlement.ledger.engine import LedgerEngine, OperationInfo
from settlement.ledger.payments import FireDeadline
from settlement.ledger.reads import LedgerReader
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
        self, reader: LedgerReader, engine: LedgerEngine, clock: Clock, faults: Faults
    ) -> None:
        super().__init__(limits.DEADLINE_SWEEP_SECONDS)
        self._reader, self._engine, self._clock, self._faults = reader, engine, clock, faults
        self.fired = 0

    async def sweep(self) -> int:
        """Fire every payment due now; returns how many changed."""
        due = await self._reader.due_payments(self._clock.now_us(), limits.DEADLINE_SWEEP_BATCH)
        if not due:
            return 0
        self._faults.point("deadline_sweep")
        results = await asyncio.gather(
            *(self._engine.execute(self._command(p), _Fired()) for p in due),
            return_exceptions=True,
        )
        fired = sum(1 for r in results if isinstance(r, BoolValue) and r.value)
        for payment_id, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("deadline_failed", payment_id=payment_id, error=repr(result))
        self.fired += fired
        return fired

    @staticmethod
    def _command(payment_id: str) -> FireDeadline:
        return FireDeadline(
            method="/condpay.internal/FireDeadline",
            caller=SWEEPER,
            request_id=f"deadline.{payment_id}",
            request_hash=hashlib.sha256(payment_id.encode()).digest(),
            payment_id=payment_id,
            store_outcome=False,
        )
