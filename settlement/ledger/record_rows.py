"""Reading (locked) and writing the keyed records kept as one row each (titles, FX quotes,
settlements, loans), once for both dialects: the columns are the record's dataclass fields, in
order."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, Final, Generic, TypeVar

from settlement.ledger.records import (
    Decision,
    LoanRecord,
    LoanState,
    QuoteRecord,
    SettlementKind,
    SettlementRecord,
    SettlementState,
    TableRows,
    TitleRecord,
    TitleState,
)
from settlement.ledger.store import LedgerTransaction

R = TypeVar("R", TitleRecord, QuoteRecord, SettlementRecord, LoanRecord)
_NOT_COLUMNS: Final = frozenset({"is_new", "moves", "events"})


class RecordRows(Generic[R]):
    def __init__(
        self, table: str, record: type[R], enums: dict[str, type[enum.Enum]] | None = None
    ) -> None:
        self.table = table
        self.record: type[R] = record
        self.columns = [f.name for f in fields(record) if f.name not in _NOT_COLUMNS]
        self.key = self.columns[0]
        self._enums = enums or {}

    def record_of(self, row: Sequence[Any]) -> R:
        """A record from its column values, in ``columns`` order."""
        values: dict[str, Any] = {
            name: self._enums[name](value) if name in self._enums else value
            for name, value in zip(self.columns, row, strict=True)
        }
        for name in ("block_header", "certificate"):
            if name in values:
                values[name] = bytes(values[name])
        made: R = self.record(**values)
        return made

    def _values(self, record: R) -> tuple[object, ...]:
        def plain(value: object) -> object:
            return value.value if isinstance(value, enum.Enum) else value

        return tuple(plain(getattr(record, c)) for c in self.columns)

    async def lock(self, tx: LedgerTransaction, ids: Sequence[str]) -> dict[str, R]:
        """The rows of ``ids`` that exist, locked for update in key order."""
        if not ids:
            return {}
        rows = await tx.query(
            f"SELECT {', '.join(self.columns)} FROM {self.table} "
            f"WHERE {self.key} IN ({', '.join('?' * len(ids))}) "
            f"ORDER BY {self.key}{tx.for_update}",
            list(ids),
        )
        return {r[0]: self.record_of(r) for r in rows}

    def rows(self, records: Sequence[R]) -> list[TableRows]:
        """What writing ``records`` takes: the new inserted, the others updated by key."""
        columns = tuple(self.columns)
        return [
            TableRows(self.table, columns, [self._values(r) for r in records if r.is_new]),
            TableRows(
                self.table,
                columns,
                [self._values(r) for r in records if not r.is_new],
                key=(self.key,),
            ),
        ]


TITLES: Final = RecordRows("titles", TitleRecord, {"state": TitleState})
QUOTES: Final = RecordRows("fx_quotes", QuoteRecord)
SETTLEMENTS: Final = RecordRows(
    "settlements",
    SettlementRecord,
    {"kind": SettlementKind, "state": SettlementState, "decision": Decision},
)
LOANS: Final = RecordRows("loans", LoanRecord, {"state": LoanState})


def title_move_rows(titles: Sequence[TitleRecord]) -> TableRows:
    return TableRows(
        "title_moves",
        (
            "title_id",
            "seq",
            "kind",
            "from_wallet_id",
            "to_wallet_id",
            "units",
            "request_id",
            "at_us",
            "moved_by",
        ),
        [
            (
                t.title_id,
                t.version - len(t.moves) + i + 1,
                m.kind,
                m.from_wallet_id,
                m.to_wallet_id,
                m.units,
                m.request_id,
                m.at_us,
                m.moved_by,
            )
            for t in titles
            for i, m in enumerate(t.moves)
        ],
    )


def loan_event_rows(loans: Sequence[LoanRecord]) -> TableRows:
    return TableRows(
        "loan_events",
        (
            "loan_id",
            "seq",
            "kind",
            "event_id",
            "amount_minor",
            "title_id",
            "units",
            "detail",
            "request_id",
            "at_us",
            "by",
        ),
        [
            (
                loan.loan_id,
                loan.version - len(loan.events) + i + 1,
                e.kind,
                e.event_id,
                e.amount_minor,
                e.title_id,
                e.units,
                e.detail,
                e.request_id,
                e.at_us,
                e.by,
            )
            for loan in loans
            for i, e in enumerate(loan.events)
        ],
    )


async def fetch_seen_loan_events(
    tx: LedgerTransaction, keys: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (loan id, event id) pairs a loan has already recorded (read under the loans' locks)."""
    seen: set[tuple[str, str]] = set()
    for loan_id in sorted({loan for loan, _ in keys}):
        wanted = sorted(e for loan, e in keys if loan == loan_id)
        rows = await tx.query(
            "SELECT event_id FROM loan_events WHERE loan_id = ? "
            f"AND event_id IN ({', '.join('?' * len(wanted))})",
            [loan_id, *wanted],
        )
        seen.update((loan_id, r[0]) for r in rows)
    return seen
