"""The rows the ledger keeps in memory between calls (bridges/_ledger.py, _Memo): each one says
what the database says after every call, a call that fails or a group that is lost leaves none
of its writes there, and a write the ledger did not make (on its connection between calls, or
by another connection) is never hidden by it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.stateful import invariant

from bridges import AccountKind, ManualClock, MarketOrder, Money, Rate, TransferState
from bridges._ledger import _NEVER, Ledger
from bridges.errors import InternalError, Reason, Unavailable
from tests.bridges.test_ledger import LP, TwoPhaseLifecycle, new_ledger


class Boom(Exception):
    """A call that fails after its writes."""


def failing(ledger: Ledger, call: Callable[[], object]) -> Callable[[], object]:
    """A group call that makes ``call``'s writes in its own savepoint, then fails: all of them
    are rolled back with it."""

    def run() -> object:
        with ledger._tx():
            call()
            raise Boom

    return run


def assert_memo_is_the_database(ledger: Ledger) -> None:
    """Every row the memo holds, as the database has it now."""
    memo, one = ledger._memo, ledger._one
    for participant_id, participant in memo.participants.items():
        row = one(
            "SELECT liquidity_provider, spread_ppm, name FROM participants "
            "WHERE participant_id = ?",
            (participant_id,),
        )
        assert row is not None, participant_id
        assert (participant.liquidity_provider, participant.spread_ppm, participant.name) == (
            bool(row[0]),
            row[1],
            row[2],
        )
    if memo.best_provider is not None:
        assert (
            memo.best_provider
            == ledger._one(
                "SELECT participant_id FROM participants WHERE liquidity_provider = 1 "
                "ORDER BY spread_ppm, participant_id LIMIT 1"
            )[0]
        )
    for (participant_id, kind, currency), account_id in memo.account_ids.items():
        assert one(
            "SELECT account_id FROM accounts WHERE participant_id = ? AND kind = ? "
            "AND currency = ?",
            (participant_id, kind, currency),
        ) == (account_id,)
    for account_id, balance in memo.accounts.items():
        assert one(
            "SELECT participant_id, kind, currency, balance_minor, reserved_minor "
            "FROM accounts WHERE account_id = ?",
            (account_id,),
        ) == (
            balance.participant_id,
            balance.kind.value,
            balance.currency,
            balance.balance_minor,
            balance.reserved_minor,
        )
    for currency, rate in memo.rates.items():
        assert one("SELECT numerator, denominator FROM rates WHERE currency = ?", (currency,)) == (
            rate.numerator,
            rate.denominator,
        )
    for currency, (issued, redeemed) in memo.supply.items():
        assert one(
            "SELECT issued_minor, redeemed_minor FROM supply WHERE currency = ?", (currency,)
        ) == (issued, redeemed)
    holdings = ledger._holdings()
    for currency, (held, issuance) in memo.holdings.items():
        assert (held, issuance) == (
            holdings[currency].held_minor,
            holdings[currency].issuance_minor,
        )
    if memo.next_quote is not None:
        assert memo.next_quote == one("SELECT COALESCE(MAX(rowid), 0) + 1 FROM quotes")[0]
    if memo.next_commit_seq is not None:
        assert (
            memo.next_commit_seq == one("SELECT COALESCE(MAX(commit_seq), 0) + 1 FROM transfers")[0]
        )
    if memo.next_expiry is not None:  # a lower bound of the first expiry
        first = one("SELECT MIN(expires_at_us) FROM transfers WHERE state = 'PREPARED'")[0]
        assert memo.next_expiry <= (_NEVER if first is None else first)
    if memo.waiting is not None:
        assert (
            memo.waiting
            == ledger._one(
                "SELECT COUNT(*) FROM transfers WHERE state = 'COMMITTED' AND block_height = 0"
            )[0]
        )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ledger(clock: ManualClock) -> Iterator[Ledger]:
    ledger = new_ledger(clock=clock)
    yield ledger
    assert_memo_is_the_database(ledger)
    assert ledger.audit().ok
    ledger.close()


ORDER = MarketOrder("CNY", "HKD", 1_000_00)


def at_market(ledger: Ledger, transfer_id: str, timeout_ms: int = 10_000) -> object:
    return ledger.prepare_at_market(
        transfer_id, order=ORDER, payer_id="A", payee_id="B", timeout_ms=timeout_ms
    )


def test_the_memo_says_what_the_database_says_through_a_settlement(ledger: Ledger) -> None:
    results = ledger.run_group([lambda: at_market(ledger, "t-1"), lambda: ledger.commit("t-1")])
    assert all(ok for ok, _ in results), results
    assert_memo_is_the_database(ledger)
    assert ledger._memo.accounts  # it does keep rows: the reads it spares
    ledger.tick()
    assert_memo_is_the_database(ledger)


def test_a_failed_call_leaves_no_reservation_or_balance_in_the_memo(ledger: Ledger) -> None:
    payer = ledger._account("A", AccountKind.SETTLEMENT, "CNY")
    results = ledger.run_group(
        [
            failing(ledger, lambda: at_market(ledger, "t-1")),  # reserves, then fails
            lambda: ledger.balances("A"),
        ]
    )
    assert isinstance(results[0][1], Boom)
    assert ledger._account("A", AccountKind.SETTLEMENT, "CNY") == payer
    assert_memo_is_the_database(ledger)
    # Committed, then the commit's writes (balances, the holdings' sums) rolled back.
    assert all(ok for ok, _ in ledger.run_group([lambda: at_market(ledger, "t-2")]))
    ledger._account("B", AccountKind.SETTLEMENT, "HKD")  # (in the memo before the commit)
    ledger._check_supply("HKD")
    before = ledger.balances()
    results = ledger.run_group([failing(ledger, lambda: ledger.commit("t-2"))])
    assert isinstance(results[0][1], Boom)
    assert ledger.balances() == before
    assert_memo_is_the_database(ledger)
    assert ledger.status("t-2").state is TransferState.PREPARED
    assert ledger.commit("t-2").state is TransferState.COMMITTED


def test_a_failed_issue_leaves_neither_its_supply_nor_its_sums_in_the_memo(
    ledger: Ledger,
) -> None:
    ledger._check_supply("THB")  # the supply row and the sums in the memo
    results = ledger.run_group(
        [
            failing(
                ledger,
                lambda: ledger.issue("i-x", "A", Money("THB", 7_00), AccountKind.SETTLEMENT),
            )
        ]
    )
    assert isinstance(results[0][1], Boom)
    assert_memo_is_the_database(ledger)
    ledger._check_supply("THB")  # no INVARIANT_VIOLATED from a remembered issue
    redeemed = ledger.redeem("r-1", "A", Money("THB", 50_000_00), AccountKind.SETTLEMENT)
    assert redeemed.account.balance_minor == 0


def test_a_failed_registration_leaves_no_provider_in_the_memo(ledger: Ledger) -> None:
    assert ledger._provider("").participant_id == LP
    results = ledger.run_group(
        [failing(ledger, lambda: ledger.register_liquidity_provider("A", 1))]
    )
    assert isinstance(results[0][1], Boom)
    assert_memo_is_the_database(ledger)
    assert not ledger._participant("A").liquidity_provider
    assert ledger.quote("CNY", "HKD", source_amount_minor=100_00).liquidity_provider_id == LP
    ledger.register_liquidity_provider("A", 1)  # then the cheaper one quotes
    assert ledger.quote("CNY", "HKD", source_amount_minor=100_00).liquidity_provider_id == "A"


def test_a_failed_rate_publication_leaves_the_old_rate(ledger: Ledger) -> None:
    quoted = ledger.quote("CNY", "HKD", source_amount_minor=100_00)

    def publish_and_quote() -> None:  # the new rate read into the memo, then rolled back
        ledger.publish_rate("HKD", Rate(1, 3))
        ledger.quote("CNY", "HKD", source_amount_minor=100_00)

    results = ledger.run_group([failing(ledger, publish_and_quote)])
    assert isinstance(results[0][1], Boom)
    assert_memo_is_the_database(ledger)
    assert ledger.quote("CNY", "HKD", source_amount_minor=100_00).rate == quoted.rate
    ledger.publish_rate("HKD", Rate(1, 3))
    assert ledger.quote("CNY", "HKD", source_amount_minor=100_00).rate != quoted.rate


def test_a_failed_quote_and_commit_leave_their_sequence_numbers_free(ledger: Ledger) -> None:
    first = ledger.quote("CNY", "HKD", source_amount_minor=100_00).quote_id
    results = ledger.run_group(
        [failing(ledger, lambda: ledger.quote("CNY", "HKD", source_amount_minor=100_00))]
    )
    assert isinstance(results[0][1], Boom)
    assert_memo_is_the_database(ledger)
    after = ledger.quote("CNY", "HKD", source_amount_minor=100_00).quote_id
    assert int(after[1:7]) == int(first[1:7]) + 1  # the failed one's number, not one past it
    at_market(ledger, "t-1")
    at_market(ledger, "t-2")
    ledger.commit("t-1")
    results = ledger.run_group([failing(ledger, lambda: ledger.commit("t-2"))])
    assert isinstance(results[0][1], Boom)
    assert_memo_is_the_database(ledger)  # the commit sequence and the waiting count
    assert ledger._waiting_commits() == 1
    ledger.commit("t-2")
    assert ledger._waiting_commits() == 2
    ledger.tick()
    assert ledger._waiting_commits() == 0
    assert ledger.finality("t-2", seal=False).final


def test_an_expiry_rolled_back_with_its_call_happens_again(
    ledger: Ledger, clock: ManualClock
) -> None:
    at_market(ledger, "t-1", timeout_ms=100)
    at_market(ledger, "t-2", timeout_ms=10_000)
    clock.advance_ms(200)
    # The call expires t-1 (and learns that t-2 expires next), then fails: t-1 is PREPARED
    # again, and the memo must not say that nothing expires before t-2.
    results = ledger.run_group([failing(ledger, lambda: ledger.status("t-2"))])
    assert isinstance(results[0][1], Boom)
    assert_memo_is_the_database(ledger)
    assert ledger.status("t-1").state is TransferState.EXPIRED
    clock.advance_ms(10_000)
    assert ledger.status("t-2").state is TransferState.EXPIRED


def test_a_prepare_lowers_the_first_expiry(ledger: Ledger, clock: ManualClock) -> None:
    at_market(ledger, "t-1", timeout_ms=10_000)
    ledger.status("t-1")  # the memo knows the first expiry: t-1's
    at_market(ledger, "t-2", timeout_ms=100)
    clock.advance_ms(200)
    assert ledger.status("t-2").state is TransferState.EXPIRED
    assert ledger.status("t-1").state is TransferState.PREPARED


def test_a_group_sqlite_rolled_back_leaves_nothing_in_the_memo(ledger: Ledger) -> None:
    def rolled_back() -> object:
        ledger._conn.execute("ROLLBACK")  # as SQLite does on some errors (SQLITE_FULL...)
        raise RuntimeError("disk full")

    before = ledger.balances()
    results = ledger.run_group(
        [lambda: at_market(ledger, "t-1"), rolled_back, lambda: ledger.status("t-1")]
    )
    assert isinstance(results[0][1], Unavailable)
    assert_memo_is_the_database(ledger)
    assert ledger.balances() == before


def test_a_group_whose_commit_fails_leaves_nothing_in_the_memo(ledger: Ledger) -> None:
    def dangling() -> object:  # a row the COMMIT refuses (a deferred foreign key)
        ledger._conn.execute("PRAGMA defer_foreign_keys = ON")
        ledger._conn.execute(
            "INSERT INTO postings (entry_id, account_id, currency, amount_minor, role) "
            "VALUES (999999, 999999, 'CNY', 1, 'x')"
        )
        return None

    before = ledger.balances()
    results = ledger.run_group([lambda: at_market(ledger, "t-1"), dangling])
    assert all(isinstance(value, Unavailable) for _, value in results), results
    assert_memo_is_the_database(ledger)
    assert ledger.balances() == before
    at_market(ledger, "t-1")  # nothing of it was kept: asked again, it is new
    assert ledger.commit("t-1").state is TransferState.COMMITTED


def test_a_balance_changed_behind_the_ledgers_back_is_seen(ledger: Ledger) -> None:
    """As the supply check has always seen it: the memo is dropped, the sums read again."""
    at_market(ledger, "t-1")
    ledger._check_supply("CNY")
    ledger._conn.execute(
        "UPDATE accounts SET balance_minor = balance_minor + 1 "
        "WHERE participant_id = 'C' AND kind = 'SETTLEMENT' AND currency = 'CNY'"
    )
    with pytest.raises(InternalError) as caught:
        ledger.commit("t-1")
    assert caught.value.reason is Reason.INVARIANT_VIOLATED
    ledger._conn.execute(  # (put back, for the fixture's audit)
        "UPDATE accounts SET balance_minor = balance_minor - 1 "
        "WHERE participant_id = 'C' AND kind = 'SETTLEMENT' AND currency = 'CNY'"
    )
    assert ledger.commit("t-1").state is TransferState.COMMITTED


def test_a_write_by_another_connection_is_seen(tmp_path: Path, clock: ManualClock) -> None:
    path = str(tmp_path / "bridge.db")
    ledger = new_ledger(path, clock)
    try:
        at_market(ledger, "t-1")
        ledger._check_supply("CNY")
        assert ledger._account("A", AccountKind.SETTLEMENT, "CNY")[2] > 0
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute(
                "UPDATE accounts SET reserved_minor = 0 "
                "WHERE participant_id = 'A' AND kind = 'SETTLEMENT' AND currency = 'CNY'"
            )
        finally:
            other.close()
        # Read as written: the reservation the commit releases is gone, so it refuses.
        with pytest.raises(InternalError) as caught:
            ledger.commit("t-1")
        assert caught.value.reason is Reason.INVARIANT_VIOLATED
        assert_memo_is_the_database(ledger)
    finally:
        ledger.close()


class TwoPhaseLifecycleMemo(TwoPhaseLifecycle):
    """The lifecycle's state machine, with the memo checked against the database after every
    step."""

    @invariant()
    def memo_is_the_database(self) -> None:
        assert_memo_is_the_database(self.ledger)


TwoPhaseLifecycleMemo.TestCase.settings = settings(
    max_examples=25, stateful_step_count=40, deadline=None
)
test_two_phase_lifecycle_with_the_memo = TwoPhaseLifecycleMemo.TestCase
