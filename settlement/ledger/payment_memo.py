"""The rows hanging off each open payment (financing, assignments, legs, attestations) as this
process last committed them, by payment version: a write batch that finds the payment's row, read
under its lock, at the version remembered here takes them from memory instead of four more reads.

Why a version is enough: every change to those rows is a change of the payment, which bumps its
version in the same transaction (settlement/ledger/payments.py ``_bump``; every command that
touches the rows ends with it; payment_rows.py refuses to write rows added without it), and
versions only grow. A batch elsewhere (another worker,
another replica) that changed them left a higher version than the one remembered here, and the
rows are read from the database. The payment's own row (state, amounts, version) is never taken
from memory. (Like the stored outcomes, this relies on a commit never being lost, also across a
failover: the synchronous standby of docs/scaling.md.) Only open payments are remembered, at most
``limits.PAYMENT_MEMO_SIZE`` (the least recently committed go first): a settled payment has
nothing left to release.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from settlement.ledger.records import (
    AssignmentRecord,
    AttestationRecord,
    FinancingRecord,
    LegRecord,
    PaymentRecord,
)


@dataclass(frozen=True, slots=True)
class _Children:
    version: int
    financing: tuple[FinancingRecord, ...]
    assignments: tuple[AssignmentRecord, ...]
    legs: tuple[LegRecord, ...]
    attestations: tuple[AttestationRecord, ...]


class PaymentMemo:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, _Children] = OrderedDict()

    def fill(self, payment: PaymentRecord) -> bool:
        """Give ``payment`` (its row just read under lock) its rows from memory, as copies the
        batch may change, when remembered at its version; False when not."""
        children = self._entries.get(payment.payment_id)
        if children is None or children.version != payment.version:
            return False
        # Financing and assignments are changed in place by a batch; legs and attestations
        # are only ever appended (as working_set.copy_payment copies them).
        payment.financing = [replace(f) for f in children.financing]
        payment.assignments = [replace(a) for a in children.assignments]
        payment.legs = list(children.legs)
        payment.attestations = list(children.attestations)
        return True

    def committed(self, payments: Iterable[PaymentRecord]) -> None:
        """After a commit: remember the open ones of ``payments`` as committed, forget the
        others."""
        entries = self._entries
        for p in payments:
            entries.pop(p.payment_id, None)
            if p.state.open:
                entries[p.payment_id] = _Children(
                    p.version,
                    tuple(replace(f) for f in p.financing),
                    tuple(replace(a) for a in p.assignments),
                    tuple(replace(leg, commit_seq=leg.seq, entry=None) for leg in p.legs),
                    tuple(p.attestations),
                )
        while len(entries) > self._capacity:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
