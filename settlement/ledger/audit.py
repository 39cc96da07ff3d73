"""The read-side audit: proves from the database alone that no money was created, lost or moved
without a journal entry. Tests run it after every scenario; it must be able to fail (see
tests/test_audit.py, which breaks a ledger on purpose).

Checked, in one snapshot:
- every journal entry's postings sum to zero per currency;
- the hash chain is intact, sequence numbers have no gaps, and the head points at the last entry;
- replaying every posting in sequence order reproduces every balance (available and held) and,
  for the issuance accounts, minus (issued - redeemed); each posting's balance_after matches;
- per currency, issued - redeemed equals the sum of all balances; no balance is negative;
- every wallet's held balance is the sum of what its open payments hold in escrow and its
  undecided settlements hold, and every payment's escrow is held + released + refunded, released
  and refunded being the sums of its executed legs;
- every split title's two parts add up to it, and a title pledged to a settlement is pledged to
  one that is still undecided;
- every signed journal checkpoint matches the journal: its head hash is entry ``seq``'s, its
  Merkle root the tree of entries 1..seq, its signature valid for its key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from condpay.checkpoints import CheckpointError, Frontier, verify_checkpoint
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from settlement.ledger.journal import GENESIS_HASH, entry_hash
from settlement.ledger.records import Bucket, EntryKind, EntryRecord, PostingRecord

_PAGE = 5000


@dataclass(slots=True)
class AuditReport:
    entries: int = 0
    postings: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, message: str) -> None:
        if len(self.failures) < 100:
            self.failures.append(message)


async def audit_ledger(
    engine: AsyncEngine, gateway_wallet_id: str = "w_reserve.CONDPAY"
) -> AuditReport:
    """``gateway_wallet_id``: the bridge gateway's wallet, which holds settlements' target legs."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        else:
            await conn.execute(text("SELECT 1"))  # opens the read transaction: one snapshot
        return await _audit(conn, gateway_wallet_id)


async def _audit(conn: AsyncConnection, gateway: str) -> AuditReport:
    report = AuditReport()
    replayed: dict[tuple[str, Bucket, str], int] = defaultdict(int)
    prev_seq, prev_hash = 0, GENESIS_HASH
    checkpoints = {
        int(r[0]): r
        for r in await conn.execute(
            text(
                "SELECT seq, head_hash, tree_root, signed_at_us, public_key, signature "
                "FROM journal_checkpoints"
            )
        )
    }
    tree = Frontier()
    after = 0
    while True:
        rows = (
            await conn.execute(
                text(
                    """SELECT e.seq, e.kind, e.request_id, e.caller, e.committed_at_us, e.memo,
                              e.prev_hash, e.hash, p.account_id, p.bucket, p.currency, p.amount,
                              p.balance_after
                         FROM journal_entries e LEFT JOIN postings p ON p.seq = e.seq
                        WHERE e.seq > :after AND e.seq <= :upto
                        ORDER BY e.seq, p.idx"""
                ),
                {"after": after, "upto": after + _PAGE},
            )
        ).all()
        if not rows:
            break
        entries: dict[int, EntryRecord] = {}
        for r in rows:
            entry = entries.get(r[0])
            if entry is None:
                entry = entries[r[0]] = EntryRecord(
                    EntryKind(r[1]), r[2], r[3], r[5], [], r[0], r[4], bytes(r[6]), bytes(r[7])
                )
            if r[8] is not None:
                entry.postings.append(PostingRecord(r[8], Bucket(r[9]), r[10], r[11], r[12]))
        for seq in sorted(entries):
            entry = entries[seq]
            report.entries += 1
            if seq != prev_seq + 1:
                report.fail(f"journal gap: entry {seq} follows {prev_seq}")
            if entry.prev_hash != prev_hash or entry.hash != entry_hash(prev_hash, entry):
                report.fail(f"hash chain broken at entry {seq}")
            totals: dict[str, int] = defaultdict(int)
            for p in entry.postings:
                report.postings += 1
                totals[p.currency] += p.amount
                key = (p.account_id, p.bucket, p.currency)
                replayed[key] += p.amount
                if replayed[key] != p.balance_after:
                    report.fail(
                        f"entry {seq}: {key} balance_after {p.balance_after}, "
                        f"replay gives {replayed[key]}"
                    )
            if any(totals.values()) or len(entry.postings) < 2:
                report.fail(f"entry {seq} is unbalanced: {dict(totals)}")
            tree.append(entry.hash)
            if seq in checkpoints:
                _audit_checkpoint(report, checkpoints.pop(seq), entry.hash, tree.root())
            prev_seq, prev_hash = seq, entry.hash
        after += _PAGE
    for seq in sorted(checkpoints):
        report.fail(f"checkpoint {seq} is past the journal's last entry ({prev_seq})")
    head = (await conn.execute(text("SELECT seq, hash FROM ledger_head WHERE id = 1"))).one()
    if head[0] != prev_seq or bytes(head[1]) != prev_hash:
        report.fail(f"ledger head ({head[0]}) does not point at the last entry ({prev_seq})")

    balances = (
        await conn.execute(text("SELECT wallet_id, currency, available, held FROM balances"))
    ).all()
    sums: dict[str, int] = defaultdict(int)
    for wallet_id, currency, available, held in balances:
        if available < 0 or held < 0:
            report.fail(f"negative balance: {wallet_id} {currency} {available}/{held}")
        sums[currency] += available + held
        for bucket, value in ((Bucket.AVAILABLE, available), (Bucket.HELD, held)):
            expected = replayed.pop((wallet_id, bucket, currency), 0)
            if value != expected:
                report.fail(
                    f"{wallet_id} {currency} {bucket}: balance {value}, "
                    f"journal replay gives {expected}"
                )
    supply = (await conn.execute(text("SELECT currency, issued, redeemed FROM supply"))).all()
    for currency, issued, redeemed in supply:
        circulation = issued - redeemed
        if circulation != sums.get(currency, 0):
            report.fail(
                f"{currency}: issued - redeemed = {circulation}, "
                f"sum of balances = {sums.get(currency, 0)}"
            )
        issuance = replayed.pop((f"issuance:{currency}", Bucket.ISSUANCE, currency), 0)
        if issuance != -circulation:
            report.fail(
                f"{currency}: issuance account replays to {issuance}, expected {-circulation}"
            )
    for key, value in replayed.items():
        if value:
            report.fail(f"journal moves money into {key} which has no balance row")
    await _audit_escrows(conn, report, balances, gateway)
    return report


def _audit_checkpoint(report: AuditReport, row: Any, entry_hash: bytes, root: bytes) -> None:
    seq, head_hash, tree_root, signed_at_us, public_key, signature = row
    if bytes(head_hash) != entry_hash or bytes(tree_root) != root:
        report.fail(f"checkpoint {seq} does not match the journal's first {seq} entries")
        return
    try:
        verify_checkpoint(bytes(public_key), seq, entry_hash, root, signed_at_us, bytes(signature))
    except CheckpointError as bad:
        report.fail(str(bad))


async def _audit_escrows(
    conn: AsyncConnection, report: AuditReport, balances: Sequence[Any], gateway: str
) -> None:
    held_by_payments: dict[tuple[str, str], int] = defaultdict(int)
    payments = (
        await conn.execute(
            text(
                "SELECT payment_id, payer_wallet_id, currency, state, escrow_minor, held_minor, "
                "released_minor, refunded_minor FROM payments"
            )
        )
    ).all()
    legs: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for payment_id, kind, amount in (
        await conn.execute(text("SELECT payment_id, kind, amount_minor FROM payment_legs"))
    ).all():
        legs[payment_id]["refund" if kind == "refund" else "release"] += amount
    for payment_id, payer, currency, state, escrow, held, released, refunded in payments:
        if state in ("LOCKED", "PARTIALLY_RELEASED"):
            held_by_payments[(payer, currency)] += held
        elif held:
            report.fail(f"payment {payment_id} is {state} but still holds {held}")
        if escrow != held + released + refunded:
            report.fail(f"payment {payment_id}: escrow {escrow} != held + released + refunded")
        if legs[payment_id]["release"] != released or legs[payment_id]["refund"] != refunded:
            report.fail(f"payment {payment_id}: its legs do not add up to released/refunded")
    await _settlement_holds(conn, report, held_by_payments, gateway)
    for wallet_id, currency, _available, held in balances:
        if held != held_by_payments.pop((wallet_id, currency), 0):
            report.fail(
                f"{wallet_id} {currency}: held {held} is not what its open payments and "
                "settlements hold"
            )
    for (wallet_id, currency), held in held_by_payments.items():
        report.fail(f"open payments hold {held} {currency} of {wallet_id}, which has no balance")


# What a settlement holds, by state: (the payer's side, the gateway's side).
_HOLDS = {
    ("standalone", "PREPARED"): (True, True),
    ("standalone", "COMMITTING"): (True, True),
    ("payout", "PENDING"): (True, False),
    ("payout", "ABORTING"): (True, False),
    ("payout", "PREPARED"): (True, True),
    ("payout", "COMMITTING"): (True, True),
}


async def _settlement_holds(
    conn: AsyncConnection, report: AuditReport, held: dict[tuple[str, str], int], gateway: str
) -> None:
    rows = (
        await conn.execute(
            text(
                "SELECT settlement_id, origin_payment_id, state, payer_wallet_id, pay_currency, "
                "pay_minor, receive_currency, receive_minor FROM settlements"
            )
        )
    ).all()
    undecided = set()
    for sid, origin, state, payer, pay_cur, pay, receive_cur, receive in rows:
        payer_side, gateway_side = _HOLDS.get(
            ("payout" if origin else "standalone", state), (False, False)
        )
        if payer_side:
            held[(payer, pay_cur)] += pay
        if gateway_side:
            held[(gateway, receive_cur)] += receive
        if state in ("PREPARED", "COMMITTING"):
            undecided.add(sid)
    titles = (
        await conn.execute(
            text("SELECT title_id, units, pledged_to, state, parent_title_id FROM titles")
        )
    ).all()
    units = {t[0]: t[1] for t in titles}
    for title_id, count, pledged_to, state, _parent in titles:
        if state == "SPLIT":
            parts = units.get(f"{title_id}.1", 0) + units.get(f"{title_id}.2", 0)
            if parts != count:
                report.fail(f"title {title_id}: its parts hold {parts} units, it held {count}")
        if pledged_to.startswith("s_") and pledged_to not in undecided:
            report.fail(f"title {title_id} is pledged to settlement {pledged_to}, which is decided")
