"""The read side: wallets, statements, supply and stored operations, through SQLModel.

Reads never lock. Each method runs in one database transaction, so what it returns is one
consistent snapshot (GetSupply's figures in particular come from a single statement).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, text
from sqlalchemy import select as core_select
from sqlmodel import SQLModel, col, select

from settlement.db import models
from settlement.ledger.read_sessions import EVERY_ROW, ReadSessions
from settlement.ledger.records import (
    AssignmentRecord,
    AttestationRecord,
    BalanceRecord,
    Bucket,
    ContractRecord,
    EntryKind,
    EntryRecord,
    FinancingRecord,
    LegRecord,
    OperationRecord,
    OracleRecord,
    PaymentRecord,
    PaymentState,
    PaymentTerms,
    PostingRecord,
    WalletRecord,
)
from settlement.ledger.scoped_statements import ScopedStatements
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


_PAYMENTS = models.Payment.__table__  # type: ignore[attr-defined]
#: One payment by id (GetPayment, the calls that answer a payment): prebuilt per read scope.
_PAYMENT_BY_ID = ScopedStatements(
    core_select(_PAYMENTS).where(_PAYMENTS.c.payment_id == bindparam("payment_id"))
)


def _of_payments(model: type[SQLModel], order: str) -> Select[Any]:
    """The rows of ``model`` of the payments ``ids`` (bound, expanded), in payment and
    ``order`` order: prebuilt, as every statement of a payment read."""
    table = model.__table__  # type: ignore[attr-defined]
    return (
        core_select(table)
        .where(table.c.payment_id.in_(bindparam("ids", expanding=True)))
        .order_by(table.c.payment_id, table.c[order])
    )


_JOURNAL_TABLE = models.JournalEntry.__table__  # type: ignore[attr-defined]
_POSTINGS_TABLE = models.Posting.__table__  # type: ignore[attr-defined]
_FINANCING = _of_payments(models.PaymentFinancing, "idx")
_ASSIGNMENTS = _of_payments(models.PaymentAssignment, "idx")
_LEGS = _of_payments(models.PaymentLeg, "idx")
_ATTESTATIONS = _of_payments(models.Attestation, "seq")


def _payments_query(
    payment_ids: Sequence[str],
    platform: str | None,
    state: str | None,
    payer_wallet_id: str | None,
    contract_hash: str | None,
    after_id: str,
    limit: int,
) -> Select[Any]:
    query = core_select(_PAYMENTS).where(_PAYMENTS.c.payment_id > after_id)
    if payment_ids:
        query = query.where(_PAYMENTS.c.payment_id.in_(list(payment_ids)))
    if platform is not None:
        query = query.where(_PAYMENTS.c.platform == platform)
    if state is not None:
        query = query.where(_PAYMENTS.c.state == state)
    if payer_wallet_id is not None:
        query = query.where(_PAYMENTS.c.payer_wallet_id == payer_wallet_id)
    if contract_hash is not None:
        query = query.where(_PAYMENTS.c.contract_hash == contract_hash)
    return query.order_by(_PAYMENTS.c.payment_id).limit(limit)


class LedgerReader:
    def __init__(self, sessions: ReadSessions) -> None:
        self._sessions = sessions
        self._session = sessions.session

    async def wallet_record(self, wallet_id: str) -> WalletRecord | None:
        async with self._session() as session:
            row = await session.get(models.Wallet, wallet_id)
            return None if row is None else _wallet(row)

    async def wallet(
        self,
        wallet_id: str,
        visible: ColumnElement[bool] | None = None,
        currencies: frozenset[str] | None = None,
    ) -> tuple[WalletRecord, list[BalanceRecord]] | None:
        """The wallet and its balances; None if there is none or it is not ``visible`` (a read
        scope); only the balances in ``currencies`` if given."""
        async with self._session() as session:
            if visible is None:
                row = await session.get(models.Wallet, wallet_id)
            else:
                row = (
                    await session.exec(
                        select(models.Wallet).where(models.Wallet.wallet_id == wallet_id, visible)
                    )
                ).first()
            if row is None:
                return None
            query = select(models.Balance).where(models.Balance.wallet_id == wallet_id)
            if currencies is not None:
                query = query.where(col(models.Balance.currency).in_(sorted(currencies)))
            balances = await session.exec(query)
            return _wallet(row), [
                BalanceRecord(
                    b.wallet_id, b.currency, b.available, b.held, b.spent_day, b.spent_today
                )
                for b in balances
            ]

    async def wallet_exists(
        self, wallet_id: str, visible: ColumnElement[bool] | None = None
    ) -> bool:
        async with self._session() as session:
            if visible is None:
                return await session.get(models.Wallet, wallet_id) is not None
            query = select(models.Wallet.wallet_id).where(
                models.Wallet.wallet_id == wallet_id, visible
            )
            return (await session.exec(query)).first() is not None

    async def journal(
        self,
        wallet_id: str | None,
        after_seq: int,
        limit: int,
        visible: ColumnElement[bool] | None = None,
    ) -> list[EntryRecord]:
        """Entries after ``after_seq`` in sequence order, touching ``wallet_id`` if given, and
        only those with a posting that is ``visible`` (a condition on postings) if given."""
        entry, posting = _JOURNAL_TABLE.c, _POSTINGS_TABLE.c
        query = core_select(_JOURNAL_TABLE).where(entry.seq > after_seq)
        if wallet_id is not None:
            touching = core_select(posting.seq).where(
                posting.account_id == wallet_id, posting.seq > after_seq
            )
            query = query.where(entry.seq.in_(touching))
        if visible is not None:
            seen = core_select(posting.seq).where(posting.seq > after_seq, visible)
            query = query.where(entry.seq.in_(seen))
        # Column rows, not ORM instances: a page of 1,000 entries (and their postings) is built
        # several times faster.
        async with self._sessions.connect(rows=limit) as connection:
            entries = list(await connection.execute(query.order_by(entry.seq).limit(limit)))
            if not entries:
                return []
            postings = await connection.execute(
                core_select(
                    posting.seq,
                    posting.account_id,
                    posting.bucket,
                    posting.currency,
                    posting.amount,
                    posting.balance_after,
                )
                .where(posting.seq.in_([e.seq for e in entries]))
                .order_by(posting.seq, posting.idx)
            )
            by_seq: dict[int, list[PostingRecord]] = {e.seq: [] for e in entries}
            for seq, account_id, bucket, currency, amount, balance_after in postings:
                by_seq[seq].append(
                    PostingRecord(account_id, Bucket(bucket), currency, amount, balance_after)
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
        async with self._sessions.connect(rows=EVERY_ROW) as conn:
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

    # -- conditional payments ------------------------------------------------------------------
    async def contract(self, contract_hash: str) -> ContractRecord | None:
        async with self._session() as session:
            row = await session.get(models.Contract, contract_hash)
            if row is None:
                return None
            return ContractRecord(
                row.contract_hash,
                row.name,
                row.version,
                row.canonical,
                row.source,
                row.registered_by,
                row.registered_at_us,
            )

    async def payments(
        self,
        *,
        payment_ids: Sequence[str] = (),
        platform: str | None = None,
        state: str | None = None,
        payer_wallet_id: str | None = None,
        contract_hash: str | None = None,
        after_id: str = "",
        limit: int = 50,
        visible: ColumnElement[bool] | None = None,
        attestations: bool = True,
    ) -> list[PaymentRecord]:
        """Payments with their financing, assignments, legs and (unless ``attestations`` is
        false: the BASIC view shows none) attestations, by id order; only those ``visible`` (a
        read scope) if given."""
        filtered = (platform, state, payer_wallet_id, contract_hash) != (None,) * 4
        async with self._sessions.connect(rows=limit) as connection:
            if len(payment_ids) == 1 and not after_id and not filtered and limit >= 1:
                query, params = _PAYMENT_BY_ID.get(visible), {"payment_id": payment_ids[0]}
            else:
                params = {}
                query = _payments_query(
                    payment_ids, platform, state, payer_wallet_id, contract_hash, after_id, limit
                )
                if visible is not None:
                    query = query.where(visible)
            rows = list(await connection.execute(query, params))
            if not rows:
                return []
            ids = {"ids": [r.payment_id for r in rows]}
            payments = {r.payment_id: _payment(r) for r in rows}
            for f in await connection.execute(_FINANCING, ids):
                payments[f.payment_id].financing.append(
                    FinancingRecord(
                        f.financier_wallet_id,
                        f.principal_minor,
                        f.fee_minor,
                        f.due_at_us,
                        f.refunded_minor,
                        f.request_id,
                        f.funded_by,
                    )
                )
            for a in await connection.execute(_ASSIGNMENTS, ids):
                payments[a.payment_id].assignments.append(
                    AssignmentRecord(
                        a.payee_wallet_id,
                        a.financier_wallet_id,
                        a.assigned_minor,
                        a.advance_minor,
                        a.collected_minor,
                        a.request_id,
                        a.assigned_by,
                    )
                )
            for leg in await connection.execute(_LEGS, ids):
                payments[leg.payment_id].legs.append(
                    LegRecord(
                        leg.leg_id,
                        leg.clause,
                        leg.kind,
                        leg.party,
                        leg.wallet_id,
                        leg.paid_to_wallet_id,
                        leg.amount_minor,
                        leg.currency,
                        leg.reason,
                        leg.commit_seq,
                    )
                )
            if not attestations:
                return list(payments.values())
            for att in await connection.execute(_ATTESTATIONS, ids):
                payments[att.payment_id].attestations.append(
                    AttestationRecord(
                        att.event_id,
                        att.payment_id,
                        att.seq,
                        att.oracle,
                        att.event_type,
                        att.observed_at_us,
                        att.accepted_at_us,
                        att.attributes_json,
                        tuple(json.loads(att.signer_ids)),
                        att.report_json,
                        att.statement,
                    )
                )
            return list(payments.values())

    async def payment_events(self, payment_id: str, after_version: int) -> list[tuple[int, str]]:
        async with self._session() as session:
            rows = await session.exec(
                select(models.PaymentEvent.version, models.PaymentEvent.kind)
                .where(
                    models.PaymentEvent.payment_id == payment_id,
                    models.PaymentEvent.version > after_version,
                )
                .order_by(col(models.PaymentEvent.version))
            )
            return [(int(v), str(k)) for v, k in rows]

    async def payment_terms(self, payment_id: str) -> PaymentTerms | None:
        """What the lock fixed of a payment (never its state): one indexed row."""
        statement = text(
            "SELECT payment_id, platform, contract_hash, params_json, payer_wallet_id "
            "FROM payments WHERE payment_id = :payment_id"
        )
        async with self._sessions.connect() as conn:
            row = (await conn.execute(statement, {"payment_id": payment_id})).first()
        return None if row is None else PaymentTerms(*row)

    async def oracle_set(self) -> tuple[int, list[OracleRecord]]:
        """The registry's version and every oracle as of that version: one statement, hence one
        snapshot (two would let a rotation commit between them, pairing a version with keys it
        never had)."""
        statement = text(
            "SELECT r.version, o.oracle_id, o.scheme, o.public_key, o.key_version, "
            "o.key_set_version, o.revoked, o.display_name, o.registered_at_us, o.updated_at_us "
            "FROM oracle_registry r LEFT JOIN oracles o ON 1 = 1 WHERE r.id = 1 "
            "ORDER BY o.oracle_id"
        )
        async with self._sessions.connect() as conn:
            rows = (await conn.execute(statement)).all()
        if not rows:
            return 0, []
        return int(rows[0][0]), [
            OracleRecord(r[1], r[2], bytes(r[3]), r[4], r[5], bool(r[6]), r[7], r[8], r[9])
            for r in rows
            if r[1] is not None
        ]


def _payment(row: Any) -> PaymentRecord:
    """A payment from its row (its table's columns as attributes)."""
    return PaymentRecord(
        payment_id=row.payment_id,
        platform=row.platform,
        contract_hash=row.contract_hash,
        params_json=row.params_json,
        payer_wallet_id=row.payer_wallet_id,
        currency=row.currency,
        escrow_minor=row.escrow_minor,
        held_minor=row.held_minor,
        released_minor=row.released_minor,
        refunded_minor=row.refunded_minor,
        state=PaymentState(row.state),
        terminal_reason=row.terminal_reason,
        deadline_at_us=row.deadline_at_us,
        contract_state=row.contract_state,
        version=row.version,
        created_at_us=row.created_at_us,
        updated_at_us=row.updated_at_us,
    )
