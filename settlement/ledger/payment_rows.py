"""Reading and writing the conditional-payment tables, once for both dialects.

Reads are plain SQL with ``?`` placeholders through the transaction's ``query`` (PostgreSQL
numbers them); rows that change are locked with the dialect's ``FOR UPDATE`` (SQLite's BEGIN
IMMEDIATE already holds the whole database). Writes are ``TableRows``, written with the batch's
ledger rows (on PostgreSQL in the same statement).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from settlement.ledger.payment_memo import PaymentMemo
from settlement.ledger.records import (
    AssignmentRecord,
    AttestationRecord,
    ContractRecord,
    EventKey,
    FinancingRecord,
    LegRecord,
    OracleRecord,
    PaymentRecord,
    PaymentState,
    TableRows,
)
from settlement.ledger.store import LedgerTransaction

_PAYMENT_COLUMNS = (
    "payment_id",
    "platform",
    "contract_hash",
    "params_json",
    "payer_wallet_id",
    "currency",
    "escrow_minor",
    "held_minor",
    "released_minor",
    "refunded_minor",
    "state",
    "terminal_reason",
    "deadline_at_us",
    "contract_state",
    "version",
    "created_at_us",
    "updated_at_us",
)

CONTRACT_COLUMNS = (
    "contract_hash",
    "name",
    "version",
    "canonical",
    "source",
    "registered_by",
    "registered_at_us",
)
ORACLE_COLUMNS = (
    "oracle_id",
    "scheme",
    "public_key",
    "key_version",
    "key_set_version",
    "revoked",
    "display_name",
    "registered_at_us",
    "updated_at_us",
)
_FINANCING_COLUMNS = (
    "payment_id",
    "idx",
    "financier_wallet_id",
    "principal_minor",
    "fee_minor",
    "due_at_us",
    "refunded_minor",
    "request_id",
    "funded_by",
)
_ASSIGNMENT_COLUMNS = (
    "payment_id",
    "idx",
    "payee_wallet_id",
    "financier_wallet_id",
    "assigned_minor",
    "advance_minor",
    "collected_minor",
    "request_id",
    "assigned_by",
)
_LEG_COLUMNS = (
    "payment_id",
    "leg_id",
    "idx",
    "clause",
    "kind",
    "party",
    "wallet_id",
    "paid_to_wallet_id",
    "amount_minor",
    "currency",
    "reason",
    "commit_seq",
)
_ATTESTATION_COLUMNS = (
    "event_id",
    "payment_id",
    "seq",
    "oracle",
    "event_type",
    "observed_at_us",
    "accepted_at_us",
    "attributes_json",
    "signer_ids",
    "report_json",
    "statement",
)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


async def lock_registry(tx: LedgerTransaction, *, write: bool) -> int:
    suffix = tx.for_update if write else tx.for_share
    rows = await tx.query(f"SELECT version FROM oracle_registry WHERE id = 1{suffix}", ())
    return int(rows[0][0])


async def lock_payments(
    tx: LedgerTransaction, ids: Sequence[str], memo: PaymentMemo
) -> dict[str, PaymentRecord]:
    """Lock the payments (sorted by id) and load everything that hangs off them (from ``memo``
    when it holds them at the version just read)."""
    if not ids:
        return {}
    rows = await tx.query(
        f"SELECT {', '.join(_PAYMENT_COLUMNS)} FROM payments "
        f"WHERE payment_id IN ({_marks(len(ids))}) ORDER BY payment_id{tx.for_update}",
        list(ids),
    )
    payments = {r[0]: _payment(r) for r in rows}
    found = [payment_id for payment_id, p in payments.items() if not memo.fill(p)]
    if found:
        await _load_children(tx, payments, found)
    for payment in payments.values():
        payment.stored = (
            len(payment.financing),
            len(payment.assignments),
            len(payment.legs),
            len(payment.attestations),
        )
    return payments


async def _load_children(
    tx: LedgerTransaction, payments: dict[str, PaymentRecord], found: list[str]
) -> None:
    marks = _marks(len(found))
    for r in await tx.query(
        "SELECT payment_id, financier_wallet_id, principal_minor, fee_minor, due_at_us, "
        "refunded_minor, request_id, funded_by FROM payment_financing "
        f"WHERE payment_id IN ({marks}) "
        "ORDER BY payment_id, idx",
        found,
    ):
        payments[r[0]].financing.append(FinancingRecord(*r[1:]))
    for r in await tx.query(
        "SELECT payment_id, payee_wallet_id, financier_wallet_id, assigned_minor, advance_minor, "
        "collected_minor, request_id, assigned_by FROM payment_assignments "
        f"WHERE payment_id IN ({marks}) "
        "ORDER BY payment_id, idx",
        found,
    ):
        payments[r[0]].assignments.append(AssignmentRecord(*r[1:]))
    for r in await tx.query(
        "SELECT payment_id, leg_id, clause, kind, party, wallet_id, paid_to_wallet_id, "
        f"amount_minor, currency, reason, commit_seq FROM payment_legs WHERE payment_id IN "
        f"({marks}) ORDER BY payment_id, idx",
        found,
    ):
        payments[r[0]].legs.append(LegRecord(*r[1:]))
    for r in await tx.query(
        f"SELECT {', '.join(_ATTESTATION_COLUMNS)} FROM attestations "
        f"WHERE payment_id IN ({marks}) ORDER BY payment_id, seq",
        found,
    ):
        record = AttestationRecord(
            event_id=r[0],
            payment_id=r[1],
            seq=r[2],
            oracle=r[3],
            event_type=r[4],
            observed_at_us=r[5],
            accepted_at_us=r[6],
            attributes_json=r[7],
            signer_ids=tuple(json.loads(r[8])),
            report_json=r[9],
            statement=bytes(r[10]),
        )
        payments[r[1]].attestations.append(record)


def _payment(r: tuple[Any, ...]) -> PaymentRecord:
    return PaymentRecord(
        payment_id=r[0],
        platform=r[1],
        contract_hash=r[2],
        params_json=r[3],
        payer_wallet_id=r[4],
        currency=r[5],
        escrow_minor=r[6],
        held_minor=r[7],
        released_minor=r[8],
        refunded_minor=r[9],
        state=PaymentState(r[10]),
        terminal_reason=r[11],
        deadline_at_us=r[12],
        contract_state=r[13],
        version=r[14],
        created_at_us=r[15],
        updated_at_us=r[16],
    )


async def fetch_contracts(
    tx: LedgerTransaction, hashes: Sequence[str]
) -> dict[str, ContractRecord]:
    if not hashes:
        return {}
    rows = await tx.query(
        "SELECT contract_hash, name, version, canonical, source, registered_by, registered_at_us "
        f"FROM contracts WHERE contract_hash IN ({_marks(len(hashes))})",
        list(hashes),
    )
    return {r[0]: ContractRecord(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6]) for r in rows}


async def fetch_oracles(tx: LedgerTransaction, ids: Sequence[str]) -> dict[str, OracleRecord]:
    if not ids:
        return {}
    rows = await tx.query(
        "SELECT oracle_id, scheme, public_key, key_version, key_set_version, revoked, "
        f"display_name, registered_at_us, updated_at_us FROM oracles WHERE oracle_id IN "
        f"({_marks(len(ids))})",
        list(ids),
    )
    return {
        r[0]: OracleRecord(r[0], r[1], bytes(r[2]), r[3], r[4], bool(r[5]), r[6], r[7], r[8])
        for r in rows
    }


async def fetch_key_owners(tx: LedgerTransaction, keys: Sequence[bytes]) -> dict[bytes, str]:
    """The oracle id each of ``keys`` is or was registered to (keys never registered: absent)."""
    if not keys:
        return {}
    rows = await tx.query(
        f"SELECT public_key, oracle_id FROM oracle_keys WHERE public_key IN ({_marks(len(keys))})",
        list(keys),
    )
    return {bytes(r[0]): r[1] for r in rows}


async def fetch_seen_events(
    tx: LedgerTransaction, keys: Sequence[EventKey], loaded: Mapping[str, PaymentRecord]
) -> set[EventKey]:
    """Which of ``keys`` (payment id, attester, event id) were attested before: an event id is
    unique per payment and attester, never across them (no one can squat another's id). A payment
    in ``loaded`` (locked, with all its attestations) answers from memory."""
    wanted = set(keys)
    seen = {
        key
        for payment_id in {payment_id for payment_id, _attester, _event_id in wanted}
        if payment_id in loaded
        for key in ((a.payment_id, a.oracle, a.event_id) for a in loaded[payment_id].attestations)
        if key in wanted
    }
    payment_ids = sorted({payment_id for payment_id, _, _ in wanted if payment_id not in loaded})
    if payment_ids:
        rows = await tx.query(
            "SELECT payment_id, oracle, event_id FROM attestations "
            f"WHERE payment_id IN ({_marks(len(payment_ids))})",
            payment_ids,
        )
        seen |= {key for key in ((r[0], r[1], r[2]) for r in rows) if key in wanted}
    return seen


def payment_table_rows(
    payments: Sequence[PaymentRecord],
    contracts: Sequence[ContractRecord],
    oracles: Sequence[OracleRecord],
    registry_version: int | None,
    claimed_keys: Mapping[bytes, str] | None = None,
    now_us: int = 0,
) -> list[TableRows]:
    """What a batch writes to the conditional-payment tables (only the rows that changed)."""
    tables = [
        TableRows(
            "contracts",
            CONTRACT_COLUMNS,
            [
                (
                    c.contract_hash,
                    c.name,
                    c.version,
                    c.canonical,
                    c.source,
                    c.registered_by,
                    c.registered_at_us,
                )
                for c in contracts
            ],
        )
    ]
    if registry_version is not None:
        tables.append(
            TableRows("oracle_registry", ("id", "version"), [(1, registry_version)], key=("id",))
        )
    oracle_values = [
        (
            o.oracle_id,
            o.scheme,
            o.public_key,
            o.key_version,
            o.key_set_version,
            o.revoked,
            o.display_name,
            o.registered_at_us,
            o.updated_at_us,
        )
        for o in oracles
    ]
    tables += [
        TableRows(
            "oracles",
            ORACLE_COLUMNS,
            [v for o, v in zip(oracles, oracle_values, strict=True) if o.is_new],
        ),
        TableRows(
            "oracles",
            ORACLE_COLUMNS,
            [v for o, v in zip(oracles, oracle_values, strict=True) if o.changed and not o.is_new],
            key=("oracle_id",),
        ),
        TableRows(
            "oracle_keys",
            ("public_key", "oracle_id", "registered_at_us"),
            [(key, oracle_id, now_us) for key, oracle_id in sorted((claimed_keys or {}).items())],
        ),
    ]
    return tables + _payment_rows(payments)


def _payment_rows(payments: Sequence[PaymentRecord]) -> list[TableRows]:
    def values(p: PaymentRecord) -> tuple[object, ...]:
        return (
            p.payment_id,
            p.platform,
            p.contract_hash,
            p.params_json,
            p.payer_wallet_id,
            p.currency,
            p.escrow_minor,
            p.held_minor,
            p.released_minor,
            p.refunded_minor,
            p.state.value,
            p.terminal_reason,
            p.deadline_at_us,
            p.contract_state,
            p.version,
            p.created_at_us,
            p.updated_at_us,
        )

    financing_new: list[tuple[object, ...]] = []
    financing_old: list[tuple[object, ...]] = []
    assignments_new: list[tuple[object, ...]] = []
    assignments_old: list[tuple[object, ...]] = []
    legs: list[tuple[object, ...]] = []
    attestations: list[tuple[object, ...]] = []
    events: list[tuple[object, ...]] = []
    for p in payments:
        stored_financing, stored_assignments, stored_legs, stored_attestations = p.stored
        if not (p.is_new or p.events) and p.stored != (
            len(p.financing),
            len(p.assignments),
            len(p.legs),
            len(p.attestations),
        ):
            # Every replica's memo of these rows (payment_memo.py) trusts the version to change.
            raise AssertionError(f"payment {p.payment_id}: rows added without a new version")
        for i, f in enumerate(p.financing):
            if i >= stored_financing:
                financing_new.append(
                    (
                        p.payment_id,
                        i,
                        f.financier_wallet_id,
                        f.principal_minor,
                        f.fee_minor,
                        f.due_at_us,
                        f.refunded_minor,
                        f.request_id,
                        f.funded_by,
                    )
                )
            else:
                financing_old.append((p.payment_id, i, f.refunded_minor))
        for i, a in enumerate(p.assignments):
            if i >= stored_assignments:
                assignments_new.append(
                    (
                        p.payment_id,
                        i,
                        a.payee_wallet_id,
                        a.financier_wallet_id,
                        a.assigned_minor,
                        a.advance_minor,
                        a.collected_minor,
                        a.request_id,
                        a.assigned_by,
                    )
                )
            else:
                assignments_old.append((p.payment_id, i, a.collected_minor))
        legs.extend(
            (
                p.payment_id,
                leg.leg_id,
                i,
                leg.clause,
                leg.kind,
                leg.party,
                leg.wallet_id,
                leg.paid_to_wallet_id,
                leg.amount_minor,
                leg.currency,
                leg.reason,
                leg.seq,
            )
            for i, leg in enumerate(p.legs)
            if i >= stored_legs
        )
        attestations.extend(
            (
                a.event_id,
                a.payment_id,
                a.seq,
                a.oracle,
                a.event_type,
                a.observed_at_us,
                a.accepted_at_us,
                a.attributes_json,
                json.dumps(list(a.signer_ids)),
                a.report_json,
                a.statement,
            )
            for a in p.attestations[stored_attestations:]
        )
        events.extend((p.payment_id, version, kind, p.updated_at_us) for version, kind in p.events)
    return [
        TableRows("payments", _PAYMENT_COLUMNS, [values(p) for p in payments if p.is_new]),
        TableRows(
            "payments",
            _PAYMENT_COLUMNS,
            [values(p) for p in payments if not p.is_new],
            key=("payment_id",),
        ),
        TableRows("payment_financing", _FINANCING_COLUMNS, financing_new),
        TableRows(
            "payment_financing",
            ("payment_id", "idx", "refunded_minor"),
            financing_old,
            key=("payment_id", "idx"),
        ),
        TableRows("payment_assignments", _ASSIGNMENT_COLUMNS, assignments_new),
        TableRows(
            "payment_assignments",
            ("payment_id", "idx", "collected_minor"),
            assignments_old,
            key=("payment_id", "idx"),
        ),
        TableRows("payment_legs", _LEG_COLUMNS, legs),
        TableRows("attestations", _ATTESTATION_COLUMNS, attestations),
        TableRows("payment_events", ("payment_id", "version", "kind", "at_us"), events),
        TableRows(
            "payment_documents",
            ("payment_id", "version", "idx", "kind", "payload", "body", "entry_seq"),
            [
                (
                    p.payment_id,
                    d.version,
                    d.idx,
                    d.kind,
                    d.payload,
                    d.body,
                    0 if d.entry is None else d.entry.seq,
                )
                for p in payments
                for d in p.new_documents
            ],
        ),
        TableRows(
            "payment_parties",
            ("payment_id", "wallet_id"),
            sorted({(p.payment_id, w) for p in payments for w in p.new_parties}),
            skip_taken=True,
        ),
    ]
