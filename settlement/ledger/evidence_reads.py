"""What one payment's evidence bundle is made of, read in one snapshot (one read session: one
transaction, REPEATABLE READ on PostgreSQL), so the payment row, its legs, documents, changes and
the journal entries they name are all from before or all from after any concurrent change.

The bundle itself (JSON, docs/evidence.md) is put together by settlement/api/evidence_service.py;
the proofs come from settlement/ledger/checkpoints.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement
from sqlmodel import col, select

from settlement.db import models
from settlement.ledger.read_sessions import EVERY_ROW, ReadSessions


@dataclass(slots=True)
class EvidenceRows:
    """Everything of one payment a bundle shows, as JSON-ready values (bytes as lowercase hex),
    entries still without their proofs."""

    payment: dict[str, Any]
    contract: dict[str, Any]
    params_json: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    financing: list[dict[str, Any]] = field(default_factory=list)
    assignments: list[dict[str, Any]] = field(default_factory=list)
    legs: list[dict[str, Any]] = field(default_factory=list)
    settlements: list[dict[str, Any]] = field(default_factory=list)
    wallets: dict[str, dict[str, Any]] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)


class EvidenceReader:
    def __init__(self, sessions: ReadSessions) -> None:
        self._sessions = sessions

    async def payment(self, payment_id: str, visible: ColumnElement[bool]) -> EvidenceRows | None:
        """The payment's evidence rows; None when there is no such payment or it is not
        ``visible`` (a read scope on ``payments``): the caller cannot tell the two apart."""
        async with self._sessions.session(rows=EVERY_ROW) as session:
            p = (
                await session.exec(
                    select(models.Payment).where(models.Payment.payment_id == payment_id, visible)
                )
            ).first()
            if p is None:
                return None
            contract = await session.get(models.Contract, p.contract_hash)
            assert contract is not None  # a foreign key
            rows = EvidenceRows(
                payment={
                    "payment_id": p.payment_id,
                    "platform": p.platform,
                    "payer_wallet_id": p.payer_wallet_id,
                    "currency": p.currency,
                    "escrow_minor": p.escrow_minor,
                    "held_minor": p.held_minor,
                    "released_minor": p.released_minor,
                    "refunded_minor": p.refunded_minor,
                    "state": p.state,
                    "terminal_reason": p.terminal_reason,
                    "deadline_at_us": p.deadline_at_us,
                    "created_at_us": p.created_at_us,
                    "updated_at_us": p.updated_at_us,
                    "version": p.version,
                },
                contract={
                    "hash": contract.contract_hash,
                    "name": contract.name,
                    "language_version": contract.version,
                    "source": contract.source,
                },
                params_json=p.params_json,
            )
            for e in await session.exec(
                select(models.PaymentEvent)
                .where(models.PaymentEvent.payment_id == payment_id)
                .order_by(col(models.PaymentEvent.version))
            ):
                rows.changes.append({"version": e.version, "kind": e.kind, "at_us": e.at_us})
            for d in await session.exec(
                select(models.PaymentDocument)
                .where(models.PaymentDocument.payment_id == payment_id)
                .order_by(col(models.PaymentDocument.version), col(models.PaymentDocument.idx))
            ):
                rows.documents.append(
                    {
                        "version": d.version,
                        "idx": d.idx,
                        "kind": d.kind,
                        "payload": bytes(d.payload).hex(),
                        "entry_seq": d.entry_seq,
                        **json.loads(d.body),
                    }
                )
            for f in await session.exec(
                select(models.PaymentFinancing)
                .where(models.PaymentFinancing.payment_id == payment_id)
                .order_by(col(models.PaymentFinancing.idx))
            ):
                rows.financing.append(
                    {
                        "financier_wallet_id": f.financier_wallet_id,
                        "principal_minor": f.principal_minor,
                        "fee_minor": f.fee_minor,
                        "due_at_us": f.due_at_us,
                        "refunded_minor": f.refunded_minor,
                        "funded_by": f.funded_by,
                    }
                )
            for a in await session.exec(
                select(models.PaymentAssignment)
                .where(models.PaymentAssignment.payment_id == payment_id)
                .order_by(col(models.PaymentAssignment.idx))
            ):
                rows.assignments.append(
                    {
                        "payee_wallet_id": a.payee_wallet_id,
                        "financier_wallet_id": a.financier_wallet_id,
                        "assigned_minor": a.assigned_minor,
                        "advance_minor": a.advance_minor,
                        "collected_minor": a.collected_minor,
                        "assigned_by": a.assigned_by,
                    }
                )
            for leg in await session.exec(
                select(models.PaymentLeg)
                .where(models.PaymentLeg.payment_id == payment_id)
                .order_by(col(models.PaymentLeg.idx))
            ):
                rows.legs.append(
                    {
                        "leg_id": leg.leg_id,
                        "clause": leg.clause,
                        "kind": leg.kind,
                        "party": leg.party,
                        "wallet_id": leg.wallet_id,
                        "paid_to_wallet_id": leg.paid_to_wallet_id,
                        "amount_minor": leg.amount_minor,
                        "currency": leg.currency,
                        "reason": leg.reason,
                        "entry_seq": leg.commit_seq,
                    }
                )
            seqs = {d["entry_seq"] for d in rows.documents} | {g["entry_seq"] for g in rows.legs}
            seqs.discard(0)
            for s in await session.exec(
                select(models.Settlement)
                .where(models.Settlement.origin_payment_id == payment_id)
                .order_by(col(models.Settlement.settlement_id))
            ):
                # A payout's core leg is the entry its commit posted (request id
                # "<settlement>:commit:<attempt>"); found by request id, after the lock's entry.
                committed = [
                    int(seq)
                    for seq in await session.exec(
                        select(models.JournalEntry.seq)
                        .where(
                            col(models.JournalEntry.seq) > min(seqs, default=0),
                            col(models.JournalEntry.request_id).startswith(
                                f"{s.settlement_id}:commit:", autoescape=True
                            ),
                        )
                        .order_by(col(models.JournalEntry.seq))
                    )
                ]
                seqs.update(committed)
                rows.settlements.append(
                    {
                        "settlement_id": s.settlement_id,
                        "origin_leg_id": s.origin_leg_id,
                        "state": s.state,
                        "payer_wallet_id": s.payer_wallet_id,
                        "pay_currency": s.pay_currency,
                        "pay_minor": s.pay_minor,
                        "payee_wallet_id": s.payee_wallet_id,
                        "receive_currency": s.receive_currency,
                        "receive_minor": s.receive_minor,
                        "entry_seqs": committed,
                    }
                )
            rows.entries = await _entries(session, sorted(seqs))
            parties = list(
                await session.exec(
                    select(models.PaymentParty.wallet_id).where(
                        models.PaymentParty.payment_id == payment_id
                    )
                )
            )
            for w in await session.exec(
                select(models.Wallet).where(col(models.Wallet.wallet_id).in_(sorted(parties)))
            ):
                rows.wallets[w.wallet_id] = {
                    "public_key": bytes(w.owner_public_key).hex(),
                    "institution_id": w.institution_id,
                }
            return rows


async def _entries(session: Any, seqs: Sequence[int]) -> list[dict[str, Any]]:
    if not seqs:
        return []
    postings: dict[int, list[list[Any]]] = {s: [] for s in seqs}
    for p in await session.exec(
        select(models.Posting)
        .where(col(models.Posting.seq).in_(list(seqs)))
        .order_by(col(models.Posting.seq), col(models.Posting.idx))
    ):
        postings[p.seq].append([p.account_id, p.bucket, p.currency, p.amount, p.balance_after])
    return [
        {
            "seq": e.seq,
            "kind": e.kind,
            "request_id": e.request_id,
            "caller": e.caller,
            "committed_at_us": e.committed_at_us,
            "memo": e.memo,
            "postings": postings[e.seq],
            "prev_hash": bytes(e.prev_hash).hex(),
            "hash": bytes(e.hash).hex(),
        }
        for e in await session.exec(
            select(models.JournalEntry)
            .where(col(models.JournalEntry.seq).in_(list(seqs)))
            .order_by(col(models.JournalEntry.seq))
        )
    ]
