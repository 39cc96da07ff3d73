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
- inventory loans (docs/financing.md): no receipt is pledged to two things (a title pledged to a
  loan is in that loan's collateral, and the loan is live or defaulted; every receipt in a live
  loan's collateral is ACTIVE and pledged to it, in a defaulted loan's to it or to its sale in
  flight; no receipt is in two loans' collateral); what a loan owes is never negative, never
  more than it lent, and its history says the same (one OPENED event for the principal, its
  REPAID events add up to ``repaid_minor``, one DEFAULTED event once defaulted, one SOLD per
  sale, versions without gaps); the financier's claims match the journal (one LOAN entry,
  financier -> borrower, for the principal; its LOAN_REPAYMENT entries, borrower -> financier,
  add up to ``repaid_minor``; each committed sale's one DVP entry pays the financier and the
  borrower what the loan says it recovered and passed on, at most what was owed at the default);
  a REPAID or DISPOSED loan holds no collateral, a REPAID one owes nothing; ``deadline_at_us`` is
  set exactly while the loan is live (maturity when OPEN, the earlier of maturity and the cure
  deadline in MARGIN_CALL);
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
from settlement.ledger.loan_math import INTEREST_DENOMINATOR, read_collateral
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


async def audit_connection(
    conn: AsyncConnection, gateway_wallet_id: str = "w_reserve.CONDPAY"
) -> AuditReport:
    """The audit over a connection the caller holds, in whatever transaction it has open (a
    test sees its own uncommitted tampering there, then rolls it back)."""
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
    await _audit_loans(conn, report)
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


# -- inventory loans ----------------------------------------------------------------------------
_LIVE_LOANS = frozenset({"OPEN", "MARGIN_CALL"})
_LOAN_STATES = frozenset({"OPEN", "MARGIN_CALL", "REPAID", "DEFAULTED", "DISPOSED"})
_COMMITTED = frozenset({"COMMITTED", "FINAL"})
_IN_FLIGHT = frozenset({"PENDING", "PREPARED", "COMMITTING", "ABORTING"})
_LOAN_COLUMNS = (
    "loan_id",
    "state",
    "borrower_wallet_id",
    "financier_wallet_id",
    "currency",
    "principal_minor",
    "principal_outstanding_minor",
    "fee_minor",
    "fee_outstanding_minor",
    "interest_outstanding_minor",
    "interest_remainder",
    "repaid_minor",
    "recovered_minor",
    "surplus_minor",
    "maturity_at_us",
    "cure_by_us",
    "deadline_at_us",
    "collateral_json",
    "version",
)


@dataclass(slots=True)
class _LoanJournal:
    """What the journal says of one loan: its LOAN entries' postings, its repayments' total,
    and each of its sales' DVP entries (by settlement id)."""

    opened: list[list[tuple[str, str, int]]] = field(default_factory=list)
    repaid: list[list[tuple[str, str, int]]] = field(default_factory=list)


async def _audit_loans(conn: AsyncConnection, report: AuditReport) -> None:
    loans = {
        r.loan_id: r
        for r in (await conn.execute(text(f"SELECT {', '.join(_LOAN_COLUMNS)} FROM loans"))).all()
    }
    if not loans:
        return
    events: dict[str, list[Any]] = defaultdict(list)
    for r in (
        await conn.execute(
            text(
                "SELECT loan_id, seq, kind, amount_minor, title_id FROM loan_events "
                "ORDER BY loan_id, seq"
            )
        )
    ).all():
        events[r.loan_id].append(r)
    titles = {
        r.title_id: r
        for r in (await conn.execute(text("SELECT title_id, state, pledged_to FROM titles"))).all()
    }
    sales = (
        await conn.execute(
            text(
                "SELECT settlement_id, origin_loan_id, state, receive_currency, receive_minor, "
                "delivered_title_id FROM settlements WHERE origin_loan_id != ''"
            )
        )
    ).all()
    journal, sale_entries = await _loan_entries(conn)
    sales_by_loan: dict[str, list[Any]] = defaultdict(list)
    for sale in sales:
        sales_by_loan[sale.origin_loan_id].append(sale)
        if sale.origin_loan_id not in loans:
            report.fail(
                f"settlement {sale.settlement_id} sells for loan {sale.origin_loan_id}, "
                "which does not exist"
            )
    in_collateral: dict[str, str] = {}
    for loan_id in sorted(loans):
        loan = loans[loan_id]
        items = _collateral(report, loan)
        for item in items:
            other = in_collateral.setdefault(item, loan_id)
            if other != loan_id:
                report.fail(f"title {item} is in the collateral of loans {other} and {loan_id}")
        _audit_loan_row(report, loan, items)
        _audit_loan_collateral(report, loan, items, titles, sales_by_loan[loan_id])
        _audit_loan_history(report, loan, events[loan_id], sales_by_loan[loan_id])
        _audit_loan_journal(
            report,
            loan,
            journal.get(loan_id, _LoanJournal()),
            sales_by_loan[loan_id],
            sale_entries,
        )
    selling = {s.settlement_id: s.origin_loan_id for s in sales if s.state in _IN_FLIGHT}
    for title_id, title in titles.items():
        pledged_to = title.pledged_to
        if pledged_to in selling:  # a defaulted loan's receipt, on sale: still the loan's
            if in_collateral.get(title_id) != selling[pledged_to]:
                report.fail(
                    f"title {title_id} is on sale ({pledged_to}) for loan "
                    f"{selling[pledged_to]}, whose collateral does not list it"
                )
            continue
        if not pledged_to.startswith("l_"):
            continue
        owner = loans.get(pledged_to)
        if owner is None:
            report.fail(f"title {title_id} is pledged to loan {pledged_to}, which does not exist")
        elif in_collateral.get(title_id) != pledged_to:
            report.fail(
                f"title {title_id} is pledged to loan {pledged_to} ({owner.state}), whose "
                "collateral does not list it"
            )


def _collateral(report: AuditReport, loan: Any) -> list[str]:
    try:
        return [p.title_id for p in read_collateral(loan.collateral_json)]
    except (ValueError, TypeError) as bad:
        report.fail(f"loan {loan.loan_id}: unreadable collateral ({bad})")
        return []


def _audit_loan_row(report: AuditReport, loan: Any, items: list[str]) -> None:
    """The loan's own fields: in range, and consistent with its state."""
    lid, state = loan.loan_id, loan.state
    if state not in _LOAN_STATES:
        report.fail(f"loan {lid}: unknown state {state!r}")
    for column in (
        "principal_outstanding_minor",
        "fee_outstanding_minor",
        "interest_outstanding_minor",
        "interest_remainder",
        "repaid_minor",
        "recovered_minor",
        "surplus_minor",
    ):
        if getattr(loan, column) < 0:
            report.fail(f"loan {lid}: {column} is negative ({getattr(loan, column)})")
    if loan.principal_outstanding_minor > loan.principal_minor:
        report.fail(
            f"loan {lid}: principal outstanding {loan.principal_outstanding_minor} "
            f"exceeds the principal {loan.principal_minor}"
        )
    if loan.fee_outstanding_minor > loan.fee_minor:
        report.fail(
            f"loan {lid}: fee outstanding {loan.fee_outstanding_minor} exceeds the fee "
            f"{loan.fee_minor}"
        )
    if loan.interest_remainder >= INTEREST_DENOMINATOR:
        report.fail(f"loan {lid}: interest remainder {loan.interest_remainder} is a whole fen")
    live = state in _LIVE_LOANS
    if live != (loan.deadline_at_us is not None):
        report.fail(f"loan {lid} is {state} with deadline_at_us {loan.deadline_at_us}")
    elif state == "OPEN" and loan.deadline_at_us != loan.maturity_at_us:
        report.fail(f"loan {lid} is OPEN with a deadline other than its maturity")
    elif state == "MARGIN_CALL" and loan.deadline_at_us != min(
        loan.maturity_at_us, loan.cure_by_us
    ):
        report.fail(
            f"loan {lid} is in MARGIN_CALL with a deadline other than min(maturity, cure_by)"
        )
    if state in ("REPAID", "DISPOSED") and items:
        report.fail(f"loan {lid} is {state} but still holds collateral {items}")
    if live and not items:
        report.fail(f"loan {lid} is {state} with no collateral")
    if state == "REPAID" and (
        loan.principal_outstanding_minor
        or loan.fee_outstanding_minor
        or loan.interest_outstanding_minor
        or loan.interest_remainder
    ):
        report.fail(f"loan {lid} is REPAID but still owes")


def _audit_loan_collateral(
    report: AuditReport, loan: Any, items: list[str], titles: dict[str, Any], sales: list[Any]
) -> None:
    """Every receipt the loan lists is pledged to it (or, defaulted, to its sale in flight)."""
    lid = loan.loan_id
    in_flight = {s.settlement_id for s in sales if s.state in _IN_FLIGHT}
    for title_id in items:
        title = titles.get(title_id)
        if title is None:
            report.fail(f"loan {lid}: collateral {title_id} does not exist")
            continue
        if title.state != "ACTIVE":
            report.fail(f"loan {lid}: collateral {title_id} is {title.state}")
        if title.pledged_to == lid:
            continue
        if loan.state == "DEFAULTED" and title.pledged_to in in_flight:
            continue
        report.fail(
            f"loan {lid} ({loan.state}) lists {title_id}, which is pledged to "
            f"{title.pledged_to or 'nothing'}"
        )


def _audit_loan_history(
    report: AuditReport, loan: Any, events: list[Any], sales: list[Any]
) -> None:
    """The loan's events agree with its row: numbered 1..version, one OPENED for the principal,
    REPAID adding up to repaid_minor, one DEFAULTED once defaulted, one SOLD per sale."""
    lid = loan.loan_id
    if [e.seq for e in events] != list(range(1, loan.version + 1)):
        report.fail(
            f"loan {lid}: version {loan.version}, but {len(events)} events "
            f"numbered {[e.seq for e in events][:10]}"
        )
    kinds: dict[str, list[Any]] = defaultdict(list)
    for e in events:
        kinds[e.kind].append(e)
    opened = kinds["OPENED"]
    if len(opened) != 1 or opened[0].seq != 1 or opened[0].amount_minor != loan.principal_minor:
        report.fail(f"loan {lid}: {len(opened)} OPENED events, not one first for the principal")
    repaid = sum(e.amount_minor for e in kinds["REPAID"])
    if repaid != loan.repaid_minor:
        report.fail(
            f"loan {lid}: its REPAID events add up to {repaid}, repaid_minor is {loan.repaid_minor}"
        )
    defaulted = kinds["DEFAULTED"]
    want_defaulted = 1 if loan.state in ("DEFAULTED", "DISPOSED") else 0
    if len(defaulted) != want_defaulted:
        report.fail(f"loan {lid} is {loan.state} with {len(defaulted)} DEFAULTED events")
    committed = [s for s in sales if s.state in _COMMITTED]
    if len(kinds["SOLD"]) != len(committed):
        report.fail(
            f"loan {lid}: {len(kinds['SOLD'])} SOLD events, {len(committed)} sales committed"
        )
    if defaulted and loan.recovered_minor > defaulted[0].amount_minor:
        report.fail(
            f"loan {lid}: recovered {loan.recovered_minor}, more than the "
            f"{defaulted[0].amount_minor} owed at its default"
        )


async def _loan_entries(
    conn: AsyncConnection,
) -> tuple[dict[str, _LoanJournal], dict[str, list[list[tuple[str, str, int]]]]]:
    """The LOAN and LOAN_REPAYMENT entries by loan (from their memos), and the DVP entries by
    settlement id; each entry as its (account, currency, amount) AVAILABLE postings."""
    rows = (
        await conn.execute(
            text(
                """SELECT e.seq, e.kind, e.memo, p.account_id, p.bucket, p.currency, p.amount
                     FROM journal_entries e JOIN postings p ON p.seq = e.seq
                    WHERE e.kind IN ('LOAN', 'LOAN_REPAYMENT', 'DVP')
                    ORDER BY e.seq, p.idx"""
            )
        )
    ).all()
    entries: dict[int, tuple[str, str, list[tuple[str, str, int]]]] = {}
    for seq, kind, memo, account, bucket, currency, amount in rows:
        entry = entries.setdefault(seq, (kind, memo, []))
        if bucket == Bucket.AVAILABLE.value:
            entry[2].append((account, currency, amount))
    loans: dict[str, _LoanJournal] = defaultdict(_LoanJournal)
    sales: dict[str, list[list[tuple[str, str, int]]]] = defaultdict(list)
    for kind, memo, postings in entries.values():
        words = memo.split()
        if len(words) < 2:
            continue
        if kind == EntryKind.LOAN.value:
            loans[words[1]].opened.append(postings)
        elif kind == EntryKind.LOAN_REPAYMENT.value:
            loans[words[1]].repaid.append(postings)
        else:
            sales[words[1]].append(postings)
    return loans, sales


def _audit_loan_journal(
    report: AuditReport,
    loan: Any,
    journal: _LoanJournal,
    sales: list[Any],
    sale_entries: dict[str, list[list[tuple[str, str, int]]]],
) -> None:
    """The financier's claims against the journal: the principal lent, what was repaid, and
    what each sale paid the financier and passed on to the borrower."""
    lid, currency = loan.loan_id, loan.currency
    financier, borrower = loan.financier_wallet_id, loan.borrower_wallet_id
    lent = sorted(
        [(financier, currency, -loan.principal_minor), (borrower, currency, loan.principal_minor)]
    )
    if [sorted(p) for p in journal.opened] != [lent]:
        report.fail(
            f"loan {lid}: its LOAN entries {journal.opened} are not one of "
            f"{loan.principal_minor} {currency} from the financier to the borrower"
        )
    repaid = 0
    for postings in journal.repaid:
        amounts = {(a, c): v for a, c, v in postings}
        amount = amounts.get((financier, currency), 0)
        if len(postings) != 2 or amount <= 0 or amounts.get((borrower, currency)) != -amount:
            report.fail(
                f"loan {lid}: a LOAN_REPAYMENT entry {postings} is not borrower -> financier"
            )
        repaid += amount
    if repaid != loan.repaid_minor:
        report.fail(
            f"loan {lid}: LOAN_REPAYMENT entries pay the financier {repaid}, the loan "
            f"says {loan.repaid_minor} was repaid"
        )
    recovered = surplus = 0
    for sale in sales:
        entries = sale_entries.get(sale.settlement_id, [])
        want = 1 if sale.state in _COMMITTED else 0
        if len(entries) != want:
            report.fail(
                f"loan {lid}: sale {sale.settlement_id} ({sale.state}) has "
                f"{len(entries)} DVP entries"
            )
            continue
        for postings in entries:
            to_financier = sum(v for a, c, v in postings if a == financier and c == currency)
            to_borrower = sum(v for a, c, v in postings if a == borrower and c == currency)
            if (
                to_financier < 0
                or to_borrower < 0
                or (to_financier + to_borrower != sale.receive_minor)
            ):
                report.fail(
                    f"loan {lid}: sale {sale.settlement_id} pays the financier "
                    f"{to_financier} and the borrower {to_borrower} of "
                    f"{sale.receive_minor}"
                )
            recovered += to_financier
            surplus += to_borrower
    if (recovered, surplus) != (loan.recovered_minor, loan.surplus_minor):
        report.fail(
            f"loan {lid}: its sales paid the financier {recovered} and the borrower "
            f"{surplus}; the loan says {loan.recovered_minor} and {loan.surplus_minor}"
        )
