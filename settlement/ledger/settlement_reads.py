"""The read side of titles, FX quotes and settlements (no locks; one snapshot per call)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, bindparam, or_, true
from sqlmodel import SQLModel, col, select

from settlement.db import models
from settlement.ledger.read_sessions import ReadSessions
from settlement.ledger.record_rows import QUOTES, SETTLEMENTS, TITLES, R, RecordRows
from settlement.ledger.records import (
    QuoteRecord,
    SettlementRecord,
    SettlementState,
    TitleMoveRecord,
    TitleRecord,
)
from settlement.ledger.scoped_statements import ScopedStatements

OPEN_STATES: tuple[str, ...] = tuple(s.value for s in SettlementState if not s.done)

_SETTLEMENT_TABLE = models.Settlement.__table__  # type: ignore[attr-defined]
#: One settlement by id (GetSettlement, the coordinator): its columns in the record's order.
_SETTLEMENT_BY_ID = ScopedStatements(
    select(*(_SETTLEMENT_TABLE.c[c] for c in SETTLEMENTS.columns)).where(
        _SETTLEMENT_TABLE.c.settlement_id == bindparam("settlement_id")
    )
)

_PENDING = SettlementState.PENDING.value
#: Every PENDING settlement and every other open one last changed before ``changed_before_us``,
#: a page by id after ``after_id`` (the recovery sweep's work list, in one statement).
_UNFINISHED = (
    select(*(_SETTLEMENT_TABLE.c[c] for c in SETTLEMENTS.columns))
    .where(
        _SETTLEMENT_TABLE.c.settlement_id > bindparam("after_id"),
        or_(
            _SETTLEMENT_TABLE.c.state == _PENDING,
            and_(
                _SETTLEMENT_TABLE.c.state.in_([s for s in OPEN_STATES if s != _PENDING]),
                _SETTLEMENT_TABLE.c.updated_at_us < bindparam("changed_before_us"),
            ),
        ),
    )
    .order_by(_SETTLEMENT_TABLE.c.settlement_id)
    .limit(bindparam("limit"))
)


def _record(rows: RecordRows[R], row: SQLModel) -> R:
    return rows.record_of([getattr(row, c) for c in rows.columns])


class SettlementReader:
    def __init__(self, sessions: ReadSessions) -> None:
        self._sessions = sessions
        self._session = sessions.session

    async def title(
        self, title_id: str, visible: ColumnElement[bool] | None = None
    ) -> tuple[TitleRecord, list[tuple[int, TitleMoveRecord]]]:
        """The title and its moves (seq, move) in order; raises KeyError if there is none (or
        it is not ``visible``, a read scope, if given)."""
        async with self._session() as session:
            row = (
                await session.exec(
                    select(models.Title).where(
                        models.Title.title_id == title_id, true() if visible is None else visible
                    )
                )
            ).first()
            if row is None:
                raise KeyError(title_id)
            moves = await session.exec(
                select(models.TitleMove)
                .where(models.TitleMove.title_id == title_id)
                .order_by(col(models.TitleMove.seq))
            )
            return _record(TITLES, row), [
                (
                    m.seq,
                    TitleMoveRecord(
                        m.kind,
                        m.from_wallet_id,
                        m.to_wallet_id,
                        m.units,
                        m.request_id,
                        m.at_us,
                        m.moved_by,
                    ),
                )
                for m in moves
            ]

    async def titles(
        self,
        holder_wallet_id: str,
        after_id: str,
        limit: int,
        visible: ColumnElement[bool] | None = None,
    ) -> list[TitleRecord]:
        async with self._session(rows=limit) as session:
            rows = await session.exec(
                select(models.Title)
                .where(
                    models.Title.holder_wallet_id == holder_wallet_id,
                    models.Title.title_id > after_id,
                    models.Title.state == "ACTIVE",
                    true() if visible is None else visible,
                )
                .order_by(col(models.Title.title_id))
                .limit(limit)
            )
            return [_record(TITLES, r) for r in rows]

    async def quote(self, quote_id: str) -> QuoteRecord | None:
        async with self._session() as session:
            row = await session.get(models.FxQuote, quote_id)
            return None if row is None else _record(QUOTES, row)

    async def settlements(
        self,
        *,
        settlement_ids: Sequence[str] = (),
        requested_by: str | None = None,
        states: Sequence[str] = (),
        origin_payment_id: str | None = None,
        after_id: str = "",
        limit: int = 50,
        visible: ColumnElement[bool] | None = None,
    ) -> list[SettlementRecord]:
        table = _SETTLEMENT_TABLE
        query = select(*(table.c[c] for c in SETTLEMENTS.columns)).where(
            table.c.settlement_id > after_id
        )
        if visible is not None:
            query = query.where(visible)
        if settlement_ids:
            query = query.where(table.c.settlement_id.in_(list(settlement_ids)))
        if requested_by is not None:
            query = query.where(table.c.requested_by == requested_by)
        if states:
            query = query.where(table.c.state.in_(list(states)))
        if origin_payment_id is not None:
            query = query.where(table.c.origin_payment_id == origin_payment_id)
        # Column rows, not ORM instances: a page of 500 is built several times faster.
        async with self._sessions.connect(rows=limit) as connection:
            rows = await connection.execute(query.order_by(table.c.settlement_id).limit(limit))
            return [SETTLEMENTS.record_of(list(r)) for r in rows]

    async def unfinished(
        self, *, changed_before_us: int, after_id: str = "", limit: int = 50
    ) -> list[SettlementRecord]:
        """Open settlements by id after ``after_id``: every PENDING one (when its next attempt is
        due is the caller's to judge), and each other one last changed before
        ``changed_before_us``."""
        async with self._sessions.connect(rows=limit) as connection:
            rows = await connection.execute(
                _UNFINISHED,
                {"after_id": after_id, "changed_before_us": changed_before_us, "limit": limit},
            )
            return [SETTLEMENTS.record_of(list(r)) for r in rows]

    async def settlement(
        self, settlement_id: str, visible: ColumnElement[bool] | None = None
    ) -> SettlementRecord | None:
        """The settlement, if it exists and is ``visible`` (a read scope, if given)."""
        async with self._sessions.connect() as connection:
            result = await connection.execute(
                _SETTLEMENT_BY_ID.get(visible), {"settlement_id": settlement_id}
            )
            row = result.first()
        return None if row is None else SETTLEMENTS.record_of(list(row))
