"""What the deadline sweep reads each round, in one statement: the open payments and the live
loans whose deadline has come (each table's earliest first, at most a batch of each), and the
earliest deadline of either that comes within the period ahead.

It was four ORM queries a round (two per table), twice a second in each worker: an idle server
(two workers, PostgreSQL) used 2.95-3.45% of a core, against 1.35% with this one statement.
Each table's part is its own indexed scan, as before."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import CompoundSelect, Select, String, bindparam, func, literal, select, union_all

from settlement.db import models
from settlement.ledger.loan_reads import LIVE_STATES
from settlement.ledger.read_sessions import ReadSessions
from settlement.ledger.records import PaymentState

_PAYMENTS = models.Payment.__table__  # type: ignore[attr-defined]
_LOANS = models.Loan.__table__  # type: ignore[attr-defined]
#: The states of a payment whose deadline is still to come.
_OPEN_PAYMENTS = (PaymentState.LOCKED.value, PaymentState.PARTIALLY_RELEASED.value)


@dataclass(frozen=True, slots=True)
class DueWork:
    """One round's work: what is due now, and when the next deadline within the period comes."""

    payment_ids: list[str]
    loan_ids: list[str]
    #: the earliest deadline in (now, until], if any
    next_us: int | None


def _branches(kind: str, table: Any, id_column: str, states: tuple[str, ...]) -> list[Select[Any]]:
    deadline = table.c.deadline_at_us
    open_ = table.c.state.in_(states)
    due = (
        _columns(kind, table.c[id_column], deadline)
        .where(open_, deadline.is_not(None), deadline <= bindparam("now_us"))
        .order_by(deadline)
        .limit(bindparam("limit"))
        .subquery()
    )
    coming = _columns("next", literal("", String), func.min(deadline)).where(
        open_, deadline > bindparam("now_us"), deadline <= bindparam("until_us")
    )
    return [due.select(), coming]


def _columns(kind: str, identity: Any, deadline: Any) -> Select[Any]:
    return select(
        literal(kind, String).label("kind"), identity.label("id"), deadline.label("at_us")
    )


_DUE: CompoundSelect[Any] = union_all(
    *_branches("payment", _PAYMENTS, "payment_id", _OPEN_PAYMENTS),
    *_branches("loan", _LOANS, "loan_id", LIVE_STATES),
)


class DeadlineReader:
    def __init__(self, sessions: ReadSessions) -> None:
        self._sessions = sessions

    async def due(self, now_us: int, until_us: int, limit: int) -> DueWork:
        """Payments and loans due at ``now_us`` (at most ``limit`` of each, earliest first), and
        the earliest deadline of either in (``now_us``, ``until_us``]. One snapshot."""
        async with self._sessions.connect(rows=2 * limit) as connection:
            rows = (
                await connection.execute(
                    _DUE, {"now_us": now_us, "until_us": until_us, "limit": limit}
                )
            ).all()
        # (A subquery's order does not survive the union: each table's rows are sorted here.)
        due = sorted(
            (int(at_us), kind, identity) for kind, identity, at_us in rows if kind != "next"
        )
        coming = [int(at_us) for kind, _, at_us in rows if kind == "next" and at_us is not None]
        return DueWork(
            payment_ids=[identity for _, kind, identity in due if kind == "payment"],
            loan_ids=[identity for _, kind, identity in due if kind == "loan"],
            next_us=min(coming, default=None),
        )
