"""The read side of inventory loans (no locks; one snapshot per call): a loan and its history,
and lists by wallet and state. (The loans whose deadline has come: deadline_reads.py.)"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, true
from sqlmodel import col, select

from settlement import limits
from settlement.db import models
from settlement.ledger.read_sessions import ReadSessions
from settlement.ledger.record_rows import LOANS
from settlement.ledger.records import LoanEventRecord, LoanRecord, LoanState

LIVE_STATES: tuple[str, ...] = tuple(s.value for s in LoanState if s.live)


def _record(row: models.Loan) -> LoanRecord:
    return LOANS.record_of([getattr(row, c) for c in LOANS.columns])


class LoanReader:
    def __init__(self, sessions: ReadSessions) -> None:
        self._session = sessions.session

    async def loan(
        self,
        loan_id: str,
        visible: ColumnElement[bool] | None = None,
        *,
        after_version: int = 0,
        newest: bool = False,
    ) -> tuple[LoanRecord, list[tuple[int, LoanEventRecord]]] | None:
        """The loan and at most ``limits.LOAN_EVENTS_PER_READ`` of its events (seq, event) in
        order: the first ones after ``after_version``, or with ``newest`` the last ones; None if
        there is none (or it is not ``visible``, a read scope, if given). One snapshot."""
        async with self._session() as session:
            row = (
                await session.exec(
                    select(models.Loan).where(
                        models.Loan.loan_id == loan_id, true() if visible is None else visible
                    )
                )
            ).first()
            if row is None:
                return None
            seq = col(models.LoanEvent.seq)
            events = list(
                await session.exec(
                    select(models.LoanEvent)
                    .where(models.LoanEvent.loan_id == loan_id, seq > after_version)
                    .order_by(seq.desc() if newest else seq)
                    .limit(limits.LOAN_EVENTS_PER_READ)
                )
            )
            if newest:
                events.reverse()
            return _record(row), [
                (
                    e.seq,
                    LoanEventRecord(
                        e.kind,
                        e.event_id,
                        e.amount_minor,
                        e.title_id,
                        e.units,
                        e.detail,
                        e.request_id,
                        e.at_us,
                        e.by,
                    ),
                )
                for e in events
            ]

    async def loan_record(self, loan_id: str) -> LoanRecord | None:
        """The loan's row alone (no scope: for the checks of a call that acts on it)."""
        async with self._session() as session:
            row = await session.get(models.Loan, loan_id)
            return None if row is None else _record(row)

    async def loans(
        self,
        *,
        wallet_id: str = "",
        state: str = "",
        after_id: str = "",
        limit: int = 50,
        visible: ColumnElement[bool] | None = None,
    ) -> list[LoanRecord]:
        async with self._session(rows=limit) as session:
            query = select(models.Loan).where(
                models.Loan.loan_id > after_id, true() if visible is None else visible
            )
            if wallet_id:
                query = query.where(
                    or_(
                        col(models.Loan.borrower_wallet_id) == wallet_id,
                        col(models.Loan.financier_wallet_id) == wallet_id,
                    )
                )
            if state:
                query = query.where(models.Loan.state == state)
            rows = await session.exec(query.order_by(col(models.Loan.loan_id)).limit(limit))
            return [_record(r) for r in rows]
