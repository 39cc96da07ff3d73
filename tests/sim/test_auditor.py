"""The simulator's auditor, through the real gRPC server and a real bridge server: it passes on a
healthy ledger, and it fails, naming the invariant and the offending items, on a ledger broken
behind the server's back in its database."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from condpay.v1 import finance_pb2
from sqlalchemy import text

from bridges import Bridge
from settlement import limits
from sim_central_bank.auditor import INVARIANTS, REFUSED, Auditor
from sim_central_bank.record import ACCEPTED, RefusedAttestation
from tests.sim.ledger import (
    PAYOUT,
    PENDING_REASON,
    STAGED,
    AuditedTrade,
    LoanStory,
    audited_trade,
    clear_customs,
    loan_story,
    lock,
    story,
)


async def tamper(trade: AuditedTrade, statement: str, **values: object) -> None:
    """Change the database behind the server's back (and skip the harness's own audit)."""
    trade.harness.audit_after = False
    async with trade.harness.runtime.sql.begin() as conn:
        await conn.execute(text(statement), values)


async def test_the_auditor_passes_a_healthy_ledger(database_url: str) -> None:
    async with audited_trade(database_url) as trade:
        auditor = trade.auditor
        during = await auditor.check(final=False, when="round 1")
        assert all(r.passed for r in during), [r for r in during if not r.passed]
        assert {r.when for r in during} == {"round 1"}
        await story(trade)

        final = await auditor.check(final=True)
        assert [r.name for r in final] == list(INVARIANTS)
        assert all(r.passed for r in final), "\n".join(
            f"{r.name}: {r.detail}" for r in final if not r.passed
        )
        details = {r.name: r.detail for r in final}
        assert f"'{PENDING_REASON}': 1" in details["payments_terminal_or_pending_with_reason"]
        assert "forged SIGNATURE_INVALID: 1" in details["forged_and_replayed_refused"]
        assert "replayed EVENT_ALREADY_SEEN: 1" in details["forged_and_replayed_refused"]
        assert "2 financings" in details["financier_claims_consistent"]
        assert "1 advances" in details["financier_claims_consistent"]

        sample = await auditor.sample(1.5, settlements_total=2)
        assert sample.at_s == 1.5
        assert sample.escrow_held_minor["CNY"] == 35_000_00  # what the pending payment holds
        supply = (await trade.cb.get_supply("CNY")).supplies[0]
        assert sample.supply_minor["CNY"] == supply.in_circulation.amount_minor
        assert (await auditor.sample(2.0, settlements_total=7)).settlements_total == 7


async def test_checks_during_traffic_pass(database_url: str) -> None:
    """Round checks while payments lock, release and pay out and PvPs settle: totals from
    different reads are not compared while the ledger moves, and each payment read is one
    snapshot (its row, legs and claims agree; a torn read would fail no_leg_paid_twice)."""
    async with audited_trade(database_url) as trade:
        world = trade.world
        buyer, seller = world.wallets["buyer"], world.wallets["seller"]
        far = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
        stop = asyncio.Event()

        async def traffic(lane: int) -> int:
            done = 0
            while not stop.is_set():
                staged = await lock(trade, STAGED, 1_000_00 + lane, ship_by=far)
                assert await clear_customs(trade, staged.payment_id) == ACCEPTED
                payout = await lock(trade, PAYOUT, 2_000_00 + lane)
                assert await clear_customs(trade, payout.payment_id) == ACCEPTED
                quote = await world.platform.quote_fx("HKD", "CNY", target_amount_minor=100_00)
                await world.platform.settle_pvp(world.keys["buyer"], buyer, seller, quote)
                trade.expectations.pending_reasons[staged.payment_id] = PENDING_REASON
                done += 1
            return done

        lanes = [asyncio.create_task(traffic(lane)) for lane in range(4)]
        rounds = []
        for index in range(4):
            rounds += await trade.auditor.check(final=False, when=f"round {index}")
        stop.set()
        assert sum(await asyncio.gather(*lanes)) >= 4
        assert all(r.passed for r in rounds), [r for r in rounds if not r.passed]
        await world.settle_everything()
        final = await trade.auditor.check(final=True)
        assert all(r.passed for r in final), [r for r in final if not r.passed]


async def test_an_open_payment_needs_a_reason_and_a_future_deadline(database_url: str) -> None:
    async with audited_trade(database_url) as trade:
        await story(trade, with_expiry=False)
        pending = trade.payments["pending"]
        del trade.expectations.pending_reasons[pending]
        failing = await trade.failing()
        assert set(failing) == {"payments_terminal_or_pending_with_reason"}
        assert (
            f"{pending}: PARTIALLY_RELEASED with no reason"
            in failing["payments_terminal_or_pending_with_reason"]
        )
        # During the run an open payment is fine until it is overdue.
        during = await trade.auditor.check(final=False, when="round 2")
        assert all(r.passed for r in during)
        late = Auditor(
            trade.cb,
            trade.bridge,
            trade.expectations,
            now_us=lambda: 4_000_000_000_000_000,  # long after every deadline
        )
        results = {r.name: r for r in await late.check(final=False, when="round 3")}
        assert not results["payments_terminal_or_pending_with_reason"].passed
        assert "past its deadline" in results["payments_terminal_or_pending_with_reason"].detail


async def test_an_accepted_or_twice_recorded_attestation_fails(database_url: str) -> None:
    async with audited_trade(database_url) as trade:
        await story(trade, with_expiry=False)
        settled = trade.payments["settled"]
        # The runner saw a forged attestation accepted; and the genuine event counted as forged.
        trade.expectations.refused_attestations += [
            RefusedAttestation(trade.payments["pending"], "forged-2", "forged", ACCEPTED),
            RefusedAttestation(settled, f"cleared:{settled}", "forged", "SIGNATURE_INVALID"),
        ]
        failing = await trade.failing()
        assert set(failing) == {"forged_and_replayed_refused"}
        assert "forged forged-2" in failing["forged_and_replayed_refused"]
        assert "was accepted" in failing["forged_and_replayed_refused"]
        assert (
            f"cleared:{settled} on {settled} is recorded 1 times"
            in failing["forged_and_replayed_refused"]
        )


async def test_a_refusal_checked_on_a_terminal_payment_is_read_again_only_at_the_final_check(
    database_url: str,
) -> None:
    """During the run a refusal already checked against its payment in a terminal state is not
    read again (that payment takes no attestation any more); one on an open payment is read at
    every check. The final check reads them all again."""
    async with audited_trade(database_url) as trade:
        await story(trade, with_expiry=False)
        settled, pending = trade.payments["settled"], trade.payments["pending"]
        trade.expectations.refused_attestations += [
            RefusedAttestation(settled, "forged-s", "forged", "SIGNATURE_INVALID"),
            RefusedAttestation(pending, "forged-p", "forged", "SIGNATURE_INVALID"),
        ]
        first = {r.name: r for r in await trade.auditor.check(final=False, when="round 1")}
        assert first[REFUSED].passed, first[REFUSED]
        # Behind the server's back, each payment gets the forged event recorded.
        for payment_id, event_id in ((settled, "forged-s"), (pending, "forged-p")):
            await tamper(
                trade,
                "UPDATE attestations SET event_id = :e WHERE payment_id = :p AND seq = "
                "(SELECT MIN(seq) FROM attestations WHERE payment_id = :p)",
                e=event_id,
                p=payment_id,
            )
        second = {r.name: r for r in await trade.auditor.check(final=False, when="round 2")}
        assert not second[REFUSED].passed
        assert f"forged-p on {pending} is recorded 1 times" in second[REFUSED].detail
        assert "forged-s" not in second[REFUSED].detail
        final = {r.name: r for r in await trade.auditor.check(final=True)}
        assert f"forged-s on {settled} is recorded 1 times" in final[REFUSED].detail
        assert f"forged-p on {pending} is recorded 1 times" in final[REFUSED].detail


# A ledger broken in the database -> (the one invariant that must fail, a fragment of its detail).
async def _balance_without_entry(trade: AuditedTrade) -> tuple[str, str]:
    seller = trade.world.wallets["seller"]
    await tamper(
        trade,
        "UPDATE balances SET available = available + 1 WHERE wallet_id = :w AND currency = 'CNY'",
        w=seller,
    )
    return "supply_equals_balances", "CNY: issued - redeemed = "


async def _money_moved_without_entry(trade: AuditedTrade) -> tuple[str, str]:
    """The sums still match; only each wallet against the journal shows it."""
    seller, buyer = trade.world.wallets["seller"], trade.world.wallets["buyer"]
    for wallet_id, change in ((seller, -100), (buyer, 100)):
        await tamper(
            trade,
            "UPDATE balances SET available = available + :change "
            "WHERE wallet_id = :w AND currency = 'CNY'",
            w=wallet_id,
            change=change,
        )
    return "supply_equals_balances", f"{buyer} CNY: available/held"


async def _memo_rewritten(trade: AuditedTrade) -> tuple[str, str]:
    await tamper(trade, "UPDATE journal_entries SET memo = 'forged' WHERE seq = 3")
    return "journal_hash_chain_intact", "the chain breaks at entry 3"


async def _release_duplicated(trade: AuditedTrade) -> tuple[str, str]:
    """A second row for a leg that was paid once: the payment now records it twice."""
    settled = trade.payments["settled"]
    await tamper(
        trade,
        "INSERT INTO payment_legs (payment_id, leg_id, idx, clause, kind, party, wallet_id, "
        "paid_to_wallet_id, amount_minor, currency, reason, commit_seq) "
        "SELECT payment_id, leg_id || '#again', idx + 100, clause, kind, party, wallet_id, "
        "paid_to_wallet_id, amount_minor, currency, reason, commit_seq FROM payment_legs "
        "WHERE payment_id = :p AND leg_id = 'receipt/0'",
        p=settled,
    )
    return "no_leg_paid_twice", settled


async def _financing_refund_understated(trade: AuditedTrade) -> tuple[str, str]:
    cancelled = trade.payments["cancelled"]
    await tamper(
        trade,
        "UPDATE payment_financing SET refunded_minor = refunded_minor - 1 WHERE payment_id = :p",
        p=cancelled,
    )
    return "financier_claims_consistent", f"{cancelled}: refund legs pay financier"


async def _escrow_released_without_leg(trade: AuditedTrade) -> tuple[str, str]:
    pending = trade.payments["pending"]
    await tamper(
        trade,
        "UPDATE payments SET held_minor = held_minor - 100, released_minor = released_minor + 100 "
        "WHERE payment_id = :p",
        p=pending,
    )
    return "held_equals_open_escrows", "CNY: held 3500000, open payments and settlements hold"


async def _bridge_balance_without_entry(trade: AuditedTrade) -> tuple[str, str]:
    """The bridge's own state (the in-process bridge's SQLite), changed behind its back: the
    gateway's CNY account one fen richer than its postings."""
    trade.harness.audit_after = False
    assert trade.harness.runtime.bridge is not None
    bridge = trade.harness.runtime.bridge.api
    assert isinstance(bridge, Bridge)
    conn = bridge._ledger._conn

    def richer() -> None:
        conn.execute(
            "UPDATE accounts SET balance_minor = balance_minor + 1 "
            "WHERE participant_id = ? AND kind = 'SETTLEMENT' AND currency = 'CNY'",
            (trade.expectations.gateway,),
        )

    await bridge._run(richer)
    return (
        "bridge_supply_equals_balances",
        f"bridge audit: {trade.expectations.gateway}/SETTLEMENT/CNY: balance",
    )


BROKEN = {
    "a balance changed without a journal entry": _balance_without_entry,
    "a bridge balance changed without a bridge entry": _bridge_balance_without_entry,
    "a journal entry's memo rewritten": _memo_rewritten,
    "money moved between wallets without a journal entry": _money_moved_without_entry,
    "a paid leg recorded twice": _release_duplicated,
    "a financier's refund understated": _financing_refund_understated,
    "escrow marked released without a leg": _escrow_released_without_leg,
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_the_auditor_names_what_was_broken(database_url: str, case: str) -> None:
    async with audited_trade(database_url) as trade:
        await story(trade, with_expiry=False)
        assert await trade.failing() == {}
        invariant, fragment = await BROKEN[case](trade)
        failing = await trade.failing()
        assert invariant in failing, failing
        assert fragment in failing[invariant], failing[invariant]


async def test_a_broken_ledger_fails_only_where_it_is_broken(database_url: str) -> None:
    """Each break above trips its own invariant; these two trip nothing else."""
    async with audited_trade(database_url) as trade:
        await story(trade, with_expiry=False)
        await _memo_rewritten(trade)
        assert set(await trade.failing()) == {"journal_hash_chain_intact"}
        await _balance_without_entry(trade)
        assert set(await trade.failing()) == {
            "journal_hash_chain_intact",
            "supply_equals_balances",
        }


async def test_a_check_during_the_run_verifies_only_the_entries_read_since_the_last(
    database_url: str,
) -> None:
    """A check during the run reads, replays and chains only the journal entries after the last
    check's: an entry broken after that is named at the next check; one of the entries already
    verified, rewritten afterwards, is named at the final check, which reads them all again."""
    async with audited_trade(database_url) as trade:
        auditor = trade.auditor
        first = {r.name: r for r in await auditor.check(final=False, when="round 1")}
        assert all(r.passed for r in first.values()), first
        verified = auditor._journal_progress.chained_to
        assert verified > 3
        await story(trade, with_expiry=False)
        await tamper(trade, "UPDATE journal_entries SET memo = 'forged' WHERE seq = 3")
        await tamper(
            trade, "UPDATE journal_entries SET memo = 'forged' WHERE seq = :s", s=verified + 2
        )
        second = {r.name: r for r in await auditor.check(final=False, when="round 2")}
        chain = second["journal_hash_chain_intact"]
        assert not chain.passed
        assert chain.detail.endswith(f": the chain breaks at entry {verified + 2}")
        assert second["supply_equals_balances"].passed  # the replay went on past the first check
        assert auditor._journal_progress.replayed_to > verified
        final = {r.name: r for r in await auditor.check(final=True)}
        assert final["journal_hash_chain_intact"].detail.endswith(": the chain breaks at entry 3")


async def test_gateway_mirror_needs_a_baseline_and_sees_a_lost_leg(database_url: str) -> None:
    async with audited_trade(database_url) as trade:
        await story(trade, with_expiry=False)
        fresh = Auditor(trade.cb, trade.bridge, trade.expectations)
        results = {r.name: r for r in await fresh.check(final=True)}
        assert not results["gateway_mirror"].passed
        assert "no baseline" in results["gateway_mirror"].detail
        # The bridge paid the gateway CNY that the core never paid out: a leg applied twice.
        assert trade.auditor.gateway_baseline is not None
        trade.auditor.gateway_baseline["CNY"] -= 50_000_00
        failing = await trade.failing()
        assert set(failing) == {"gateway_mirror"}
        assert "CNY: core reserve + bridge account" in failing["gateway_mirror"]
        assert "off by 5000000" in failing["gateway_mirror"]


async def test_without_a_bridge_the_bridge_invariants_pass_with_a_note(database_url: str) -> None:
    async with audited_trade(database_url) as trade:
        auditor = Auditor(trade.cb, None, trade.expectations)
        assert await auditor.baseline() == {}
        results = {r.name: r for r in await auditor.check(final=True)}
        assert all(r.passed for r in results.values())
        assert results["bridge_supply_equals_balances"].detail == "no bridge in this run"
        assert "no bridge" in results["gateway_mirror"].detail


# -- inventory loans -----------------------------------------------------------------------------
async def test_the_auditor_passes_a_ledger_with_loans_and_a_defaulted_one_only_during_the_run(
    database_url: str,
) -> None:
    async with audited_trade(database_url) as trade:
        told = await loan_story(trade)
        final = {r.name: r for r in await trade.auditor.check(final=True)}
        assert all(r.passed for r in final.values()), [r for r in final.values() if not r.passed]
        assert "4 loans: {'DISPOSED': 1, 'OPEN': 2, 'REPAID': 1}" in (
            final["loans_repaid_disposed_or_covered"].detail
        )
        assert "2 receipts pledged to live loans" in final["no_receipt_pledged_twice"].detail
        # 4 x 50,000.00 lent; 50,500.00 repaid; of the 80,000.00 sale 50,500.00 to the financier.
        assert (
            "4 loans: 20000000 lent, 5050000 repaid, 5050000 recovered and 2950000 surplus"
            in final["loan_claims_match_journal"].detail
        )
        # A SELL loan defaulted and not yet sold: fine during the run, not at its end.
        loans, fin = told.world, told.world.financier.api.finance
        receipt = await loans.receipt("seller", 1_000, "R-defaulted")
        loan = await loans.open(receipt, rate_bps=0, cure_period_s=1)
        missing = await loans.stock(loan.loan_id, receipt, 0, "MISSING")
        await fin.submit_collateral_attestation(missing)
        give_up = time.monotonic() + 20
        while (await loans.loan(loan.loan_id)).loan.state != finance_pb2.LOAN_STATE_DEFAULTED:
            assert time.monotonic() < give_up
            await asyncio.sleep(0.2)
        during = await trade.auditor.check(final=False, when="round 1")
        assert all(r.passed for r in during), [r for r in during if not r.passed]
        failing = await trade.failing()
        assert set(failing) == {"loans_repaid_disposed_or_covered"}
        assert (
            f"{loan.loan_id}: DEFAULTED, its collateral not disposed of"
            in (failing["loans_repaid_disposed_or_covered"])
        )


async def test_the_auditor_reads_a_long_loan_history_whole(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GetLoan answers a loan's newest events only: with reads of one event, a sold loan's
    history is longer than that, and the auditor streams the rest to find its sales (a sale it
    missed would fail loan_claims_match_journal)."""
    monkeypatch.setattr(limits, "LOAN_EVENTS_PER_READ", 1)
    async with audited_trade(database_url) as trade:
        told = await loan_story(trade)
        disposed = await told.world.loan(told.loans["disposed"])
        assert disposed.earlier_events
        assert [e.kind for e in disposed.events] == ["DISPOSED"]
        final = {r.name: r for r in await trade.auditor.check(final=True)}
        assert final["loan_claims_match_journal"].passed, final["loan_claims_match_journal"]
        assert "5050000 recovered and 2950000 surplus" in final["loan_claims_match_journal"].detail


# A loan broken in the database -> (the one invariant that must fail, a fragment of its detail).
async def _loan_repayment_overstated(trade: AuditedTrade, told: LoanStory) -> tuple[str, str]:
    repaid = told.loans["repaid"]
    await tamper(
        trade, "UPDATE loans SET repaid_minor = repaid_minor + 1 WHERE loan_id = :l", l=repaid
    )
    return "loan_claims_match_journal", f"{repaid}: the journal repaid"


async def _sale_recovery_understated(trade: AuditedTrade, told: LoanStory) -> tuple[str, str]:
    disposed = told.loans["disposed"]
    await tamper(
        trade,
        "UPDATE loans SET recovered_minor = recovered_minor - 100, "
        "surplus_minor = surplus_minor + 100 WHERE loan_id = :l",
        l=disposed,
    )
    # (loans_repaid_disposed_or_covered fails too: a surplus while the financier is owed.)
    return "loan_claims_match_journal", f"{disposed}: the journal repaid, recovered"


async def _receipt_in_two_loans(trade: AuditedTrade, told: LoanStory) -> tuple[str, str]:
    """The same receipt in the collateral of two open loans: pledged twice."""
    first, second = told.loans["open"], told.loans["open-2"]
    await tamper(
        trade,
        "UPDATE loans SET collateral_json = "
        "(SELECT collateral_json FROM loans WHERE loan_id = :a) WHERE loan_id = :b",
        a=first,
        b=second,
    )
    return "no_receipt_pledged_twice", f"receipt {told.receipts['open']} pledged to l_"


async def _receipt_pledged_to_a_loan_without_it(
    trade: AuditedTrade, told: LoanStory
) -> tuple[str, str]:
    spare, loan = told.receipts["spare"], told.loans["open"]
    await tamper(trade, "UPDATE titles SET pledged_to = :l WHERE title_id = :t", l=loan, t=spare)
    return "no_receipt_pledged_twice", f"receipt {spare} is pledged to {loan}"


async def _open_loan_below_its_margin(trade: AuditedTrade, told: LoanStory) -> tuple[str, str]:
    loan = told.loans["open"]
    await tamper(trade, "UPDATE loans SET unit_price_minor = 1 WHERE loan_id = :l", l=loan)
    return "loans_repaid_disposed_or_covered", f"{loan}: OPEN owing 5050000"


async def _repaid_loan_still_owing(trade: AuditedTrade, told: LoanStory) -> tuple[str, str]:
    repaid = told.loans["repaid"]
    await tamper(
        trade, "UPDATE loans SET principal_outstanding_minor = 1 WHERE loan_id = :l", l=repaid
    )
    return "loans_repaid_disposed_or_covered", f"{repaid}: REPAID owing 1"


BROKEN_LOANS = {
    "a loan's repayment overstated": _loan_repayment_overstated,
    "a sale's recovery understated": _sale_recovery_understated,
    "a receipt in two loans' collateral": _receipt_in_two_loans,
    "a receipt pledged to a loan that does not hold it": _receipt_pledged_to_a_loan_without_it,
    "an open loan below its margin": _open_loan_below_its_margin,
    "a repaid loan still owing": _repaid_loan_still_owing,
}


@pytest.mark.parametrize("case", sorted(BROKEN_LOANS))
async def test_the_auditor_names_what_was_broken_in_a_loan(database_url: str, case: str) -> None:
    async with audited_trade(database_url) as trade:
        told = await loan_story(trade)
        assert await trade.failing() == {}
        invariant, fragment = await BROKEN_LOANS[case](trade, told)
        failing = await trade.failing()
        assert invariant in failing, failing
        assert fragment in failing[invariant], failing[invariant]
