"""The ledger audit covers inventory loans, and can fail on them: a loan book with an open loan
partly repaid, another open one, and a third defaulted and sold by DvP, then rows edited
directly in the database (each inside a transaction the audit reads and the test rolls back),
and every edit is reported by name. The clean book audits clean before and after."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from settlement.clock import ManualClock
from settlement.ledger.audit import audit_connection, audit_ledger
from tests.settlement.audit import open_trade
from tests.settlement.loan_world import LoanWorld, build_loan_world


@dataclass
class Book:
    """The ids the tampering statements name."""

    open_loan: str  # OPEN, partly repaid
    other_loan: str  # OPEN
    sold_loan: str  # DISPOSED: defaulted (spoiled stock, no cure), its receipt sold
    open_receipt: str
    other_receipt: str
    sold_receipt: str
    free_receipt: str  # a warehouse receipt pledged to nothing

    def params(self) -> dict[str, str]:
        return dict(vars(self))


@pytest.fixture
async def book(database_url: str) -> AsyncIterator[tuple[LoanWorld, Book]]:
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock) as trade:
        loans = await build_loan_world(trade, clock)
        fin, platform = loans.financier.api.finance, loans.platform.api.finance
        receipts = [await loans.receipt("seller", 1_000, f"A-{i}") for i in range(4)]
        first = await loans.open(receipts[0])
        other = await loans.open(receipts[1])
        sold = await loans.open(receipts[2])
        await platform.repay(loans.repay(first.loan_id, 1_000_00))
        await fin.submit_collateral_attestation(
            await loans.stock(sold.loan_id, receipts[2], 1_000, "SPOILED")
        )
        clock.advance(3_601)
        assert await loans.fire_deadlines() == 1
        await fin.dispose_collateral(
            loans.dispose(
                sold.loan_id, receipts[2], pay=("CNY", 80_000_00), receive_minor=80_000_00
            )
        )
        yield (
            loans,
            Book(
                first.loan_id,
                other.loan_id,
                sold.loan_id,
                receipts[0],
                receipts[1],
                receipts[2],
                receipts[3],
            ),
        )


def recorded_again(kind: str) -> list[str]:
    """The sold loan's ``kind`` event copied as its next one (version bumped: no gap)."""
    return [
        "INSERT INTO loan_events (loan_id, seq, kind, event_id, amount_minor, title_id, units, "
        'detail, request_id, at_us, "by") SELECT loan_id, (SELECT version + 1 FROM loans '
        "WHERE loan_id = :sold_loan), kind, event_id, amount_minor, title_id, units, detail, "
        f"'forged', at_us, \"by\" FROM loan_events WHERE loan_id = :sold_loan AND kind = '{kind}'",
        "UPDATE loans SET version = version + 1 WHERE loan_id = :sold_loan",
    ]


# case -> (statements, fragments every one of which some failure must contain)
TAMPERING: dict[str, tuple[list[str], list[str]]] = {
    "a free receipt pledged to a loan behind its back": (
        ["UPDATE titles SET pledged_to = :open_loan WHERE title_id = :free_receipt"],
        ["whose collateral does not list it"],
    ),
    "a live loan's receipt unpledged without a release": (
        ["UPDATE titles SET pledged_to = '' WHERE title_id = :open_receipt"],
        ["which is pledged to nothing"],
    ),
    "a receipt pledged to a payment while a loan holds it": (
        ["UPDATE titles SET pledged_to = 'p_elsewhere' WHERE title_id = :other_receipt"],
        ["which is pledged to p_elsewhere"],
    ),
    "one receipt in two loans' collateral": (
        [
            "UPDATE loans SET collateral_json = "
            "(SELECT collateral_json FROM loans WHERE loan_id = :open_loan) "
            "WHERE loan_id = :other_loan"
        ],
        ["is in the collateral of loans", "whose collateral does not list it"],
    ),
    "repaid_minor inflated": (
        ["UPDATE loans SET repaid_minor = repaid_minor + 100 WHERE loan_id = :open_loan"],
        ["its REPAID events add up to", "LOAN_REPAYMENT entries pay the financier"],
    ),
    "a repayment's event deleted": (
        ["DELETE FROM loan_events WHERE loan_id = :open_loan AND kind = 'REPAID'"],
        ["numbered", "its REPAID events add up to"],
    ),
    "the principal rewritten": (
        ["UPDATE loans SET principal_minor = principal_minor + 1 WHERE loan_id = :other_loan"],
        ["OPENED events", "its LOAN entries"],
    ),
    "more principal outstanding than lent": (
        [
            "UPDATE loans SET principal_outstanding_minor = principal_minor + 1 "
            "WHERE loan_id = :other_loan"
        ],
        ["exceeds the principal"],
    ),
    "a negative recovery": (
        ["UPDATE loans SET recovered_minor = -1 WHERE loan_id = :sold_loan"],
        ["recovered_minor is negative", "its sales paid the financier"],
    ),
    "the sale's split moved from the borrower to the financier": (
        [
            "UPDATE loans SET recovered_minor = recovered_minor + 100, "
            "surplus_minor = surplus_minor - 100 WHERE loan_id = :sold_loan"
        ],
        ["its sales paid the financier", "more than the"],
    ),
    "a disposed loan still listing its sold receipt": (
        [
            "UPDATE loans SET collateral_json = (SELECT collateral_json FROM loans "
            "WHERE loan_id = :other_loan) WHERE loan_id = :sold_loan"
        ],
        ["is DISPOSED but still holds collateral"],
    ),
    "a deadline left on a disposed loan": (
        ["UPDATE loans SET deadline_at_us = 1 WHERE loan_id = :sold_loan"],
        ["is DISPOSED with deadline_at_us 1"],
    ),
    "a live loan without a deadline": (
        ["UPDATE loans SET deadline_at_us = NULL WHERE loan_id = :open_loan"],
        ["is OPEN with deadline_at_us None"],
    ),
    "a second default recorded": (
        recorded_again("DEFAULTED"),
        ["with 2 DEFAULTED events"],
    ),
    "a second sale recorded": (
        recorded_again("SOLD"),
        ["2 SOLD events, 1 sales committed"],
    ),
    "a repaid loan that still owes": (
        ["UPDATE loans SET state = 'REPAID', deadline_at_us = NULL WHERE loan_id = :other_loan"],
        ["is REPAID but still holds collateral", "is REPAID but still owes"],
    ),
}


async def test_the_audit_reports_each_tampering_with_a_loan(book: tuple[LoanWorld, Book]) -> None:
    loans, ids = book
    sql = loans.trade.harness.runtime.sql
    clean = await audit_ledger(sql)
    assert clean.ok, clean.failures
    missed = []
    for case, (statements, fragments) in TAMPERING.items():
        async with sql.connect() as conn:
            transaction = await conn.begin()
            try:
                for statement in statements:
                    params = {k: v for k, v in ids.params().items() if f":{k}" in statement}
                    await conn.execute(text(statement), params)
                report = await audit_connection(conn)
            finally:
                await transaction.rollback()
        found = [f for f in fragments if not any(f in failure for failure in report.failures)]
        if report.ok or found:
            missed.append(f"{case}: {found or 'nothing'} not reported in {report.failures}")
    assert not missed, "\n".join(missed)
    # Every change was rolled back: the book audits clean again (and once more at teardown).
    assert (await audit_ledger(sql)).ok
