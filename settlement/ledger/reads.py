"""The read side: wallets, statements, supply and stored operations, through SQLModel.

Reads never lock. Each method runs in one database transaction, so what it returns is one
consistent snapshot (GetSupply's figures in particular come from a single statement).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from settlement.db import models
from settlement.ledger.records import (
    BalanceRecord,
    Bucket,
    EntryKind,
    EntryRecord,
    OperationRecord,
    PostingRecord,
    WalletRecord,
)
from wallets import WalletKind


def _wallet(row: models.Wallet) -> WalletRecord:
    return WalletRecord(
        wallet_id=row.wallet_id,
        kind=WalletKind(row.kind),
        tier=row.tier,
        institution_id=row.institution_id,
        owner_public_key=row.owner_public_key,
        display_name=row.display_name,
        opened_by=row.opened_by,
        opened_at_us=row.opened_at_us,
    )


@dataclass(frozen=True, slots=True)
class SupplyFigures:
    currency: str
    issued: int
    redeemed: int
    balances_sum: int
    held_sum: int


class LedgerReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def _session(self) -> AsyncSession:
        return AsyncSession(self._engine, expire_on_commit=False)

    async def wallet_record(self, wallet_id: str) -> WalletRecord | None:
        async with self._session() as session:
            row = await session.get(models.Wallet, wallet_id)
            return None if row is None else _wallet(row)

    async def wallet(self, wallet_id: str) -> tuple[WalletRecord, list[BalanceRecord]] | None:
        async with self._session() as session:
            row = await session.get(models.Wallet, wallet_id)
            if row is None:
                return None
            balances = await session.exec(
                select(models.Balance).where(models.Balance.wallet_id == wallet_id)
            )
            return _wallet(row), [
                BalanceRecord(
                    b.wallet_id, b.currency, b.available, b.held, b.spent_day, b.spent_today
                )
                for b in balances
            ]

    async def wallet_exists(self, wallet_id: str) -> bool:
        async with self._session() as session:
            return await session.get(models.Wallet, wallet_id) is not None

    async def journal(self, wallet_id: str | None, after_seq: int, limit: int) -> list[EntryRecord]:
        """Entries after ``after_seq`` in sequence order, touching ``wallet_id`` if given."""
        async with self._session() as session:
            query = select(models.JournalEntry).where(models.JournalEntry.seq > after_seq)
            if wallet_id is not None:
                touching = select(models.Posting.seq).where(
                    models.Posting.account_id == wallet_id, models.Posting.seq > after_seq
                )
                query = query.where(col(models.JournalEntry.seq).in_(touching))
            entries = list(
                await session.exec(query.order_by(col(models.JournalEntry.seq)).limit(limit))
            )
            if not entries:
                return []
            postings = await session.exec(
                select(models.Posting)
                .where(col(models.Posting.seq).in_([e.seq for e in entries]))
                .order_by(col(models.Posting.seq), col(models.Posting.idx))
            )
            by_seq: dict[int, list[PostingRecord]] = {e.seq: [] for e in entries}
            for p in postings:
                by_seq[p.seq].append(
                    PostingRecord(
                        p.account_id, Bucket(p.bucket), p.currency, p.amount, p.balance_after
                    )
                )
            return [
                EntryRecord(
                    kind=EntryKind(e.kind),
                    request_id=e.request_id,
                    caller=e.caller,
                    memo=e.memo,
                    postings=by_seq[e.seq],
                    seq=e.seq,
                    committed_at_us=e.committed_at_us,
                    prev_hash=e.prev_hash,
                    hash=e.hash,
                )
                for e in entries
            ]

    async def supply(self, currencies: Sequence[str]) -> tuple[int, list[SupplyFigures]]:
        """One statement, hence one snapshot: the head seq and, per currency, issued, redeemed
        and the sums of all balances."""
        statement = text(
            """SELECT s.currency, s.issued, s.redeemed,
                      COALESCE((SELECT SUM(b.available + b.held) FROM balances b
                                 WHERE b.currency = s.currency), 0),
                      COALESCE((SELECT SUM(b.held) FROM balances b
                                 WHERE b.currency = s.currency), 0),
                      (SELECT seq FROM ledger_head WHERE id = 1)
                 FROM supply s ORDER BY s.currency"""
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        wanted = set(currencies)
        as_of = rows[0][5] if rows else 0
        lines = [
            SupplyFigures(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]))
            for r in rows
            if not wanted or r[0] in wanted
        ]
        return int(as_of), lines

    async def operation(self, caller: str, request_id: str) -> OperationRecord | None:
        async with self._session() as session:
            row = await session.get(models.Operation, (caller, request_id))
            if row is None:
                return None
            return OperationRecord(
                row.caller,
                row.request_id,
                row.method,
                row.request_hash,
                row.ok,
                row.outcome,
                row.commit_seq,
                row.created_at_us,
            )

    async def head(self) -> tuple[int, bytes]:
        async with self._session() as session:
            row = await session.get(models.LedgerHead, 1)
            assert row is not None
            return row.seq, row.hash

    async def count_entries(self) -> int:
        async with self._session() as session:
            result = await session.exec(select(func.count()).select_from(models.JournalEntry))
            return int(result.one())
