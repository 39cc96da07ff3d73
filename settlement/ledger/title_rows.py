"""Reading (locked) and writing digital titles, once for both dialects (see payment_rows.py)."""

from __future__ import annotations

from collections.abc import Sequence

from settlement.ledger.records import TitleRecord, TitleState
from settlement.ledger.store import LedgerTransaction

_COLUMNS = (
    "title_id, kind, issuer_id, holder_wallet_id, units, description, document_sha256, "
    "pledged_to, parent_title_id, state, version, issued_at_us, updated_at_us"
)


async def lock_titles(tx: LedgerTransaction, ids: Sequence[str]) -> dict[str, TitleRecord]:
    if not ids:
        return {}
    rows = await tx.query(
        f"SELECT {_COLUMNS} FROM titles WHERE title_id IN ({', '.join('?' * len(ids))}) "
        f"ORDER BY title_id{tx.for_update}",
        list(ids),
    )
    return {
        r[0]: TitleRecord(
            title_id=r[0],
            kind=r[1],
            issuer_id=r[2],
            holder_wallet_id=r[3],
            units=r[4],
            description=r[5],
            document_sha256=r[6],
            pledged_to=r[7],
            parent_title_id=r[8],
            state=TitleState(r[9]),
            version=r[10],
            issued_at_us=r[11],
            updated_at_us=r[12],
        )
        for r in rows
    }


async def write_titles(tx: LedgerTransaction, titles: Sequence[TitleRecord]) -> None:
    def values(t: TitleRecord) -> tuple[object, ...]:
        return (
            t.kind, t.issuer_id, t.holder_wallet_id, t.units, t.description, t.document_sha256,
            t.pledged_to, t.parent_title_id, t.state.value, t.version, t.issued_at_us,
            t.updated_at_us, t.title_id,
        )  # fmt: skip

    await tx.execute_many(
        "INSERT INTO titles (kind, issuer_id, holder_wallet_id, units, description, "
        "document_sha256, pledged_to, parent_title_id, state, version, issued_at_us, "
        "updated_at_us, title_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [values(t) for t in titles if t.is_new],
    )
    await tx.execute_many(
        "UPDATE titles SET kind = ?, issuer_id = ?, holder_wallet_id = ?, units = ?, "
        "description = ?, document_sha256 = ?, pledged_to = ?, parent_title_id = ?, state = ?, "
        "version = ?, issued_at_us = ?, updated_at_us = ? WHERE title_id = ?",
        [values(t) for t in titles if not t.is_new],
    )
    await tx.execute_many(
        "INSERT INTO title_moves (title_id, seq, kind, from_wallet_id, to_wallet_id, units, "
        "request_id, at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            )
            for t in titles
            for i, m in enumerate(t.moves)
        ],
    )
