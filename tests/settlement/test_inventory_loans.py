"""Inventory loans on warehouse receipts, through the real server on SQLite and PostgreSQL: the
whole lifecycle (open, margin call, cure; spoiled stock, default, sale by DvP with the surplus to
the borrower; repaid in two parts with a partial release; held at maturity by a RETAIN loan),
and every refusal, which changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from condpay.errors import ApiError
from condpay.loans import collateral_request, open_loan_request
from condpay.v1 import finance_pb2, oracle_pb2, settlement_pb2

from bridges import FaultPlan, Operation
from settlement import limits
from settlement.clock import ManualClock
from settlement.ledger import loan_math
from tests.settlement.audit import open_trade
from tests.settlement.loan_world import (
    DAY_US,
    PRICE,
    SENSORS,
    LoanWorld,
    build_loan_world,
)
from tests.settlement.world import key, refused
from wallets.loan_documents import CollateralStatement

OPEN = finance_pb2.LOAN_STATE_OPEN
MARGIN_CALL = finance_pb2.LOAN_STATE_MARGIN_CALL
REPAID = finance_pb2.LOAN_STATE_REPAID
DEFAULTED = finance_pb2.LOAN_STATE_DEFAULTED
DISPOSED = finance_pb2.LOAN_STATE_DISPOSED


@pytest.fixture
async def loans(database_url: str) -> AsyncIterator[LoanWorld]:
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock) as trade:
        yield await build_loan_world(trade, clock)


async def balances(world: LoanWorld, currency: str = "CNY") -> dict[str, int]:
    return {
        name: (await world.trade.balance(name, currency))[0]
        for name in ("seller", "financier", "buyer")
    }


async def test_open_value_drop_margin_call_and_cure_by_more_collateral(loans: LoanWorld) -> None:
    trade, fin = loans.trade, loans.financier.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-1")
    before = await balances(loans)

    loan = await loans.open(receipt)
    # One transaction: the principal paid and the receipt pledged to the loan.
    after = await balances(loans)
    assert after["seller"] - before["seller"] == 50_000_00
    assert before["financier"] - after["financier"] == 50_000_00
    assert (await trade.title(receipt)).pledged_to == loan.loan_id
    assert (loan.state, loan.owed_minor, loan.collateral_value_minor) == (
        OPEN,
        50_500_00,
        100_000_00,
    )
    assert loan.lending_value_minor == 70_000_00
    assert "LOAN" in await trade.entry_kinds("seller")

    # The price falls to 60.00: lending value 42,000.00 < 50,500.00 owed.
    reply = await fin.submit_collateral_attestation(await loans.valuation(loan.loan_id, 60_00))
    called = reply.loan
    assert called.state == MARGIN_CALL
    assert called.cure_by.ToMicroseconds() == loans.now() + 3_600 * 1_000_000
    assert called.lending_value_minor == 42_000_00

    # Cured with another receipt: 1,500 units at 60.00, less 30%: 63,000.00.
    more = await loans.receipt("seller", 500, "R-2")
    cured = (
        await loans.platform.api.finance.pledge_more(loans.pledge_more(loan.loan_id, more))
    ).loan
    assert cured.state == OPEN
    assert not cured.HasField("cure_by")
    assert sorted(c.title_id for c in cured.collateral) == sorted([receipt, more])
    assert (await trade.title(more)).pledged_to == loan.loan_id
    assert await loans.events(loan.loan_id) == [
        "OPENED",
        "VALUATION",
        "MARGIN_CALL",
        "PLEDGED",
        "CURED",
    ]
    # The cure deadline passes: nothing happens to a cured loan.
    loans.clock.advance(7_200)
    assert await loans.fire_deadlines() == 0
    assert (await loans.loan(loan.loan_id)).loan.state == OPEN


async def test_the_sweep_wakes_at_a_cure_deadline_within_its_period(loans: LoanWorld) -> None:
    """A margin call's cure deadline within one sweep period is swept at its instant: the sweep
    waits for it, not for the period's end."""
    sweeper = loans.trade.harness.runtime.deadlines
    await sweeper.stop()  # this test sweeps by hand, at the instants it chooses
    period = limits.DEADLINE_SWEEP_SECONDS
    receipt = await loans.receipt("seller", 1_000, "R-W")
    loan = await loans.open(receipt)
    fin = loans.financier.api.finance
    called = await fin.submit_collateral_attestation(
        await loans.stock(loan.loan_id, receipt, 1_000, "SPOILED")
    )
    cure_by_us = called.loan.cure_by.ToMicroseconds()

    assert await loans.fire_deadlines() == 0
    assert sweeper.pause_seconds() == period  # an hour away: the period
    loans.clock.set(cure_by_us - 300_000)
    assert await loans.fire_deadlines() == 0
    assert sweeper.pause_seconds() == pytest.approx(0.3)
    loans.clock.set(cure_by_us)
    assert await loans.fire_deadlines() == 1
    assert sweeper.pause_seconds() == period
    assert (await loans.loan(loan.loan_id)).loan.state == DEFAULTED


async def test_spoiled_stock_uncured_defaults_and_is_sold_with_the_surplus_to_the_borrower(
    loans: LoanWorld,
) -> None:
    trade, fin = loans.trade, loans.financier.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-3")
    loan = await loans.open(receipt)

    # Stock reported spoiled: a margin call at once, whatever the value.
    reply = await fin.submit_collateral_attestation(
        await loans.stock(loan.loan_id, receipt, 1_000, "SPOILED")
    )
    assert reply.loan.state == MARGIN_CALL
    # Selling before the default is refused, and changes nothing.
    early = loans.dispose(loan.loan_id, receipt, pay=("CNY", 80_000_00), receive_minor=80_000_00)
    await refused("LOAN_NOT_DEFAULTED", fin.dispose_collateral(early))
    assert (await trade.title(receipt)).pledged_to == loan.loan_id

    # No cure: the deadline passes and the sweep defaults the loan, once.
    loans.clock.advance(3_601)
    assert await loans.fire_deadlines() == 1
    assert await loans.fire_deadlines() == 0
    defaulted = (await loans.loan(loan.loan_id)).loan
    assert (defaulted.state, defaulted.terminal_reason) == (DEFAULTED, "CURE_PERIOD_EXPIRED")
    owed = defaulted.owed_minor
    assert owed > 50_500_00  # an hour of interest, rounded up to the fen
    interest = loan_math.accrue(50_000_00, 1_200, 3_601_000_000, 0)
    assert owed == 50_500_00 + loan_math.interest_due(*interest)

    # Sold for 80,000.00 by delivery versus payment: the financier gets what is owed, the
    # borrower the rest, the buyer the receipt, in one settlement.
    before = await balances(loans)
    sale = loans.dispose(loan.loan_id, receipt, pay=("CNY", 80_000_00), receive_minor=80_000_00)
    settled = (await fin.dispose_collateral(sale)).settlement
    assert settled.state == settlement_pb2.SETTLEMENT_STATE_FINAL
    after = await balances(loans)
    assert before["buyer"] - after["buyer"] == 80_000_00
    assert after["financier"] - before["financier"] == owed
    assert after["seller"] - before["seller"] == 80_000_00 - owed
    title = await trade.title(receipt)
    assert (title.holder_wallet_id, title.pledged_to) == (trade.wallets["buyer"], "")
    disposed = (await loans.loan(loan.loan_id)).loan
    assert disposed.state == DISPOSED
    assert (disposed.recovered_minor, disposed.surplus_minor) == (owed, 80_000_00 - owed)
    assert (await loans.events(loan.loan_id))[-2:] == ["SOLD", "DISPOSED"]
    # The same request again is answered as before, and moves nothing.
    again = await fin.dispose_collateral(sale)
    assert again.settlement.settlement_id == settled.settlement_id
    assert await balances(loans) == after


async def test_a_defaulted_loan_sold_across_currencies_through_the_bridge(
    loans: LoanWorld,
) -> None:
    trade, fin = loans.trade, loans.financier.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-4")
    loan = await loans.open(receipt)
    loans.clock.advance(31 * DAY_US / 1_000_000)
    assert await loans.fire_deadlines() == 1
    defaulted = (await loans.loan(loan.loan_id)).loan
    assert (defaulted.state, defaulted.terminal_reason) == (DEFAULTED, "MATURITY_UNPAID")

    before = await balances(loans)
    buyer_hkd = (await trade.balance("buyer", "HKD"))[0]
    # The buyer pays HKD at market (at most 100,000.00); 60,000.00 CNY arrive.
    sale = loans.dispose(loan.loan_id, receipt, pay=("HKD", 100_000_00), receive_minor=60_000_00)
    await fin.dispose_collateral(sale)
    final = [s for s in await trade.settle_everything() if s.origin_loan_id == loan.loan_id]
    assert [s.state.value for s in final] == ["FINAL"]
    after = await balances(loans)
    owed = defaulted.owed_minor
    assert after["financier"] - before["financier"] == owed
    assert after["seller"] - before["seller"] == 60_000_00 - owed
    assert buyer_hkd - (await trade.balance("buyer", "HKD"))[0] == final[0].pay_minor
    assert (await trade.title(receipt)).holder_wallet_id == trade.wallets["buyer"]
    assert (await loans.loan(loan.loan_id)).loan.state == DISPOSED


async def test_an_aborted_sale_puts_the_receipt_back_and_it_sells_again(
    loans: LoanWorld,
) -> None:
    """The bridge refuses the leg of a cross-currency sale: the sale is ABORTED, the buyer's
    money is given back, the receipt is pledged to the loan again and the loan stays DEFAULTED
    with nothing recovered. The financier sells it again, and that sale settles."""
    trade, fin = loans.trade, loans.financier.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-13")
    loan = await loans.open(receipt)
    loans.clock.advance(31 * DAY_US / 1_000_000)
    assert await loans.fire_deadlines() == 1
    before = await balances(loans)
    buyer_hkd = await trade.balance("buyer", "HKD")
    bridge = await trade.bridge_faults(
        FaultPlan(reject_percent=100, operations=frozenset({Operation.PREPARE}))
    )
    first = loans.dispose(loan.loan_id, receipt, pay=("HKD", 100_000_00), receive_minor=60_000_00)
    await fin.dispose_collateral(first)
    ended = [s for s in await trade.settle_everything() if s.origin_loan_id == loan.loan_id]
    assert [s.state.value for s in ended] == ["ABORTED"]
    assert await trade.balance("buyer", "HKD") == buyer_hkd
    assert await balances(loans) == before
    assert (await trade.title(receipt)).pledged_to == loan.loan_id
    back = (await loans.loan(loan.loan_id)).loan
    assert (back.state, back.recovered_minor, [c.title_id for c in back.collateral]) == (
        DEFAULTED,
        0,
        [receipt],
    )

    await bridge.set_plan(FaultPlan())
    again = loans.dispose(loan.loan_id, receipt, pay=("HKD", 100_000_00), receive_minor=60_000_00)
    await fin.dispose_collateral(again)
    ended = [s for s in await trade.settle_everything() if s.origin_loan_id == loan.loan_id]
    assert sorted(s.state.value for s in ended) == ["ABORTED", "FINAL"]
    assert (await trade.title(receipt)).holder_wallet_id == trade.wallets["buyer"]
    sold = (await loans.loan(loan.loan_id)).loan
    assert (sold.state, sold.recovered_minor) == (DISPOSED, back.owed_minor)


async def test_repaid_in_two_parts_with_a_partial_release(loans: LoanWorld) -> None:
    trade, platform = loans.trade, loans.platform.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-5")
    loan = await loans.open(receipt)

    # Half the principal, after the interest and the fee: the receipt splits, 500 units freed
    # at most (the proportion of principal retired, floored). Asking for more is refused.
    loans.clock.advance(DAY_US / 1_000_000)
    interest = loan_math.interest_due(*loan_math.accrue(50_000_00, 1_200, DAY_US, 0))
    first = interest + 500_00 + 25_000_00
    await refused(
        "RELEASE_EXCEEDS_REPAYMENT",
        platform.repay(
            loans.repay(loan.loan_id, first, release_title_id=receipt, release_units=501)
        ),
    )
    reply = await platform.repay(
        loans.repay(loan.loan_id, first, release_title_id=receipt, release_units=500)
    )
    part = reply.loan
    assert (part.state, part.principal_outstanding_minor, part.fee_outstanding_minor) == (
        OPEN,
        25_000_00,
        0,
    )
    assert part.interest_outstanding_minor == 0
    freed = await trade.title(reply.released_title_id)
    assert (freed.title_id, freed.units, freed.pledged_to) == (f"{receipt}.1", 500, "")
    assert freed.holder_wallet_id == trade.wallets["seller"]
    kept = await trade.title(f"{receipt}.2")
    assert (kept.units, kept.pledged_to) == (500, loan.loan_id)
    assert [c.title_id for c in part.collateral] == [f"{receipt}.2"]

    # The rest, to the fen: repaid, and every pledge released in the same transaction.
    loans.clock.advance(DAY_US / 1_000_000)
    owed = (await loans.loan(loan.loan_id)).loan.owed_minor
    await refused("REPAYMENT_EXCEEDS_OWED", platform.repay(loans.repay(loan.loan_id, owed + 1)))
    done = (await platform.repay(loans.repay(loan.loan_id, owed))).loan
    assert (done.state, done.owed_minor, done.collateral) == (REPAID, 0, [])
    assert (await trade.title(f"{receipt}.2")).pledged_to == ""
    assert done.repaid_minor == first + owed
    assert await loans.events(loan.loan_id) == [
        "OPENED",
        "REPAID",
        "RELEASED",
        "REPAID",
        "RELEASED",
    ]


async def test_a_retain_loan_unpaid_at_maturity_hands_the_receipt_to_the_financier(
    loans: LoanWorld,
) -> None:
    trade = loans.trade
    receipt = await loans.receipt("seller", 1_000, "R-6")
    loan = await loans.open(receipt, disposal="RETAIN")
    loans.clock.advance(30 * DAY_US / 1_000_000 - 1)
    assert await loans.fire_deadlines() == 0
    loans.clock.advance(1)
    assert await loans.fire_deadlines() == 1
    done = (await loans.loan(loan.loan_id)).loan
    assert (done.state, done.terminal_reason, done.collateral) == (DISPOSED, "MATURITY_UNPAID", [])
    title = await trade.title(receipt)
    assert (title.holder_wallet_id, title.pledged_to) == (trade.wallets["financier"], "")
    await refused("LOAN_NOT_OPEN", loans.platform.api.finance.repay(loans.repay(loan.loan_id, 1)))


async def test_refusals_change_nothing(loans: LoanWorld) -> None:
    trade, fin, platform = loans.trade, loans.financier.api.finance, loans.platform.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-7")

    # Over the limit at opening: 70,000.00 lends at most 70,000.00, fee included.
    over = loans.terms(receipt, principal_minor=69_600_00)
    await refused("LOAN_LIMIT_EXCEEDED", fin.open_loan(loans.open_request(over)))
    # Not a loan condpay runs.
    for changes in (
        {"margin_call_bps": 9_999},
        {"haircut_bps": 10_000},
        {"disposal": "BURN"},
        {"sensor_threshold": 4},
        {"maturity_at_us": loans.now() - 1},
        {"maturity_at_us": loans.now() + 11 * 365 * DAY_US},
        # what it could come to owe must fit the API's int64 amounts
        {"principal_minor": 2**62, "rate_bps": 100_000, "unit_price_minor": 2**62},
    ):
        bad = loans.terms(receipt, **changes)  # type: ignore[arg-type]
        await refused("INVALID_LOAN_TERMS", fin.open_loan(loans.open_request(bad)))
    assert (await trade.title(receipt)).pledged_to == ""

    loan = await loans.open(receipt)
    start = await balances(loans)
    version = (await loans.loan(loan.loan_id)).loan.version

    # The same receipt pledged twice: the paper's first fraud.
    await refused("TITLE_PLEDGED", fin.open_loan(loans.open_request(loans.terms(receipt))))
    # A receipt pledged to a financier's wallet, or a title that is not a warehouse receipt.
    other = await loans.receipt("seller", 100, "R-8")
    await loans.platform.pledge_title(
        trade.keys["seller"], trade.wallets["seller"], other, trade.wallets["financier"]
    )
    await refused("TITLE_PLEDGED", fin.open_loan(loans.open_request(loans.terms(other))))

    # Collateral statements: forged, stale, replayed, from an oracle the loan does not name,
    # without the warehouse, short of the sensor quorum, for another oracle set.
    forged = await loans.valuation(loan.loan_id, 10_00)
    forged.signatures[0].signature = key("mallory").sign(forged.statement)
    await refused("SIGNATURE_INVALID", fin.submit_collateral_attestation(forged))
    stale = await loans.valuation(
        loan.loan_id, 10_00, issued_at_us=loans.now() - 600_000_000, observed_at_us=1
    )
    await refused("ATTESTATION_STALE", fin.submit_collateral_attestation(stale))
    good = await loans.valuation(loan.loan_id, 99_00)
    await fin.submit_collateral_attestation(good)
    version += 1
    # The same event id again, signed over another price; and the very same bytes, relayed
    # under another request id.
    seen = CollateralStatement.from_bytes(good.statement).event_id
    replay = collateral_request(
        await loans.statement(loan.loan_id, event_id=seen, unit_price_minor=10_00),
        request_id="att-replay",
        ed25519=[(PRICE, key(PRICE))],
    )
    await refused("EVENT_ALREADY_SEEN", fin.submit_collateral_attestation(replay))
    good.request_id = "att-replay-same-bytes"
    await refused("EVENT_ALREADY_SEEN", fin.submit_collateral_attestation(good))
    stranger = collateral_request(
        await loans.statement(loan.loan_id, unit_price_minor=10_00),
        request_id="att-stranger",
        ed25519=[("oracle.nobody", key("nobody"))],
    )
    await refused("ORACLE_NOT_IN_LOAN", fin.submit_collateral_attestation(stranger))
    await refused(
        "QUORUM_NOT_MET",
        fin.submit_collateral_attestation(
            await loans.stock(loan.loan_id, receipt, 0, "MISSING", warehouse=False)
        ),
    )
    await refused(
        "QUORUM_NOT_MET",
        fin.submit_collateral_attestation(
            await loans.stock(loan.loan_id, receipt, 0, "MISSING", sensors=SENSORS[:1])
        ),
    )
    outdated = await loans.valuation(loan.loan_id, 10_00)
    await trade.cb.register_oracle("price.other", "ED25519", key("price.other").public_key)
    await refused("ORACLE_SET_CHANGED", fin.submit_collateral_attestation(outdated))
    # A revoked price oracle, signing for the current set.
    await trade.cb.api.oracles.revoke_oracle(
        oracle_pb2.RevokeOracleRequest(request_id="revoke-price", oracle_id=PRICE)
    )
    await refused(
        "ORACLE_REVOKED",
        fin.submit_collateral_attestation(await loans.valuation(loan.loan_id, 10_00)),
    )

    # Repayment by a wallet that is not the borrower's, asking for the receipt back.
    await refused(
        "NOT_LOAN_BORROWER",
        platform.repay(
            loans.repay(
                loan.loan_id, 10_00, payer="buyer", release_title_id=receipt, release_units=10
            )
        ),
    )
    # Selling before a default.
    await refused(
        "LOAN_NOT_DEFAULTED",
        fin.dispose_collateral(
            loans.dispose(loan.loan_id, receipt, pay=("CNY", 1_00), receive_minor=1_00)
        ),
    )
    # A caller that is not one of the loan's agents learns nothing: as if it did not exist.
    outsider = trade.client("platform/other-market").api.finance
    await refused(
        "LOAN_NOT_FOUND", outsider.get_loan(finance_pb2.GetLoanRequest(loan_id=loan.loan_id))
    )
    await refused("LOAN_NOT_FOUND", outsider.get_loan(finance_pb2.GetLoanRequest(loan_id="l_x")))
    listed = await outsider.list_loans(finance_pb2.ListLoansRequest())
    assert list(listed.loans) == []

    after = (await loans.loan(loan.loan_id)).loan
    assert (after.version, after.state, after.unit_price_minor) == (version, OPEN, 99_00)
    assert await balances(loans) == start
    assert (await trade.title(receipt)).pledged_to == loan.loan_id


async def test_open_loan_is_idempotent_by_request_id(loans: LoanWorld) -> None:
    fin = loans.financier.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-9")
    terms = loans.terms(receipt)
    request = loans.open_request(terms)
    first = await fin.open_loan(request)
    start = await balances(loans)
    again = await fin.open_loan(request)
    assert again.loan == first.loan
    assert await balances(loans) == start
    changed = loans.open_request(
        loans.terms(receipt, request_id=terms.request_id, principal_minor=10_000_00)
    )
    await refused("IDEMPOTENCY_KEY_REUSED", fin.open_loan(changed))
    listed = await fin.list_loans(
        finance_pb2.ListLoansRequest(wallet_id=loans.trade.wallets["seller"])
    )
    assert [loan.loan_id for loan in listed.loans] == [first.loan.loan_id]
    assert (
        await loans.platform.api.finance.get_loan(
            finance_pb2.GetLoanRequest(loan_id=first.loan.loan_id)
        )
    ).loan.loan_id == first.loan.loan_id


async def test_watch_loan_streams_every_event_and_ends_when_repaid(loans: LoanWorld) -> None:
    fin, platform = loans.financier.api.finance, loans.platform.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-10")
    loan = await loans.open(receipt)
    seen: list[tuple[int, str, int]] = []

    async def watch() -> None:
        async for reply in fin.watch_loan(finance_pb2.WatchLoanRequest(loan_id=loan.loan_id)):
            seen.append((reply.event.seq, reply.event.kind, reply.loan.version))

    watching = asyncio.create_task(watch())
    await fin.submit_collateral_attestation(await loans.valuation(loan.loan_id, 90_00))
    owed = (await loans.loan(loan.loan_id)).loan.owed_minor
    await platform.repay(loans.repay(loan.loan_id, owed))
    await asyncio.wait_for(watching, 10)  # the stream ends by itself once the loan is repaid
    assert [(seq, kind) for seq, kind, _ in seen] == [
        (1, "OPENED"),
        (2, "VALUATION"),
        (3, "REPAID"),
        (4, "RELEASED"),
    ]
    assert all(version >= seq for seq, _, version in seen)
    # From a version on: only what came after it; a stranger sees nothing of it.
    later = [
        r.event.kind
        async for r in fin.watch_loan(
            finance_pb2.WatchLoanRequest(loan_id=loan.loan_id, after_version=2)
        )
    ]
    assert later == ["REPAID", "RELEASED"]
    outsider = loans.trade.client("platform/other-market").api.finance
    with pytest.raises(ApiError) as raised:
        async for _ in outsider.watch_loan(finance_pb2.WatchLoanRequest(loan_id=loan.loan_id)):
            pass
    assert raised.value.reason == "LOAN_NOT_FOUND"


async def test_a_loan_holds_at_most_32_receipts_and_reads_of_it_stay_bounded(
    loans: LoanWorld,
) -> None:
    """Every read and write of a loan carries its whole collateral, and its oracles may attest
    for years: a 33rd receipt is refused (nothing pledged), GetLoan answers the newest 100
    events and says there are older ones, and WatchLoan still streams every one, in order."""
    fin, platform = loans.financier.api.finance, loans.platform.api.finance
    loan = await loans.open(await loans.receipt("seller", 1_000, "R-cap-0"))
    for i in range(1, limits.LOAN_RECEIPTS_MAX):
        receipt = await loans.receipt("seller", 10, f"R-cap-{i}")
        await platform.pledge_more(loans.pledge_more(loan.loan_id, receipt))
    extra = await loans.receipt("seller", 10, "R-cap-extra")
    before = (await loans.loan(loan.loan_id)).loan
    assert len(before.collateral) == limits.LOAN_RECEIPTS_MAX
    error = await refused(
        "LOAN_RECEIPTS_EXCEEDED", platform.pledge_more(loans.pledge_more(loan.loan_id, extra))
    )
    assert error.metadata["limit"] == str(limits.LOAN_RECEIPTS_MAX)
    assert (await loans.trade.title(extra)).pledged_to == ""
    assert (await loans.loan(loan.loan_id)).loan == before
    # 1 OPENED + 31 PLEDGED, then valuations past one read's worth of events.
    for i in range(limits.LOAN_EVENTS_PER_READ - 20):
        loans.clock.advance(0.001)  # each observed after the one in force
        await fin.submit_collateral_attestation(await loans.valuation(loan.loan_id, 100_00 + i))
    total = limits.LOAN_RECEIPTS_MAX + limits.LOAN_EVENTS_PER_READ - 20
    reply = await loans.loan(loan.loan_id)
    assert reply.loan.version == total
    assert [e.seq for e in reply.events] == list(
        range(total - limits.LOAN_EVENTS_PER_READ + 1, total + 1)
    )
    assert reply.earlier_events
    seen: list[int] = []
    async with asyncio.timeout(30):
        async for streamed in fin.watch_loan(finance_pb2.WatchLoanRequest(loan_id=loan.loan_id)):
            seen.append(streamed.event.seq)
            if len(seen) == total:
                break
    assert seen == list(range(1, total + 1))
    young = await loans.open(await loans.receipt("seller", 1_000, "R-young"))
    assert not (await loans.loan(young.loan_id)).earlier_events


async def test_a_deadline_fires_once_however_many_sweeps_race_for_it(loans: LoanWorld) -> None:
    """Every replica sweeps: several sweeps at once for the same due loans default each once."""
    receipts = [await loans.receipt("seller", 1_000, f"R-race-{i}") for i in range(3)]
    opened = [await loans.open(r, principal_minor=10_000_00) for r in receipts]
    loans.clock.advance(30 * DAY_US / 1_000_000)
    fired = await asyncio.gather(*(loans.fire_deadlines() for _ in range(4)))
    # These sweeps share one engine: the same loan's deadline command from two of them in one
    # batch is one command, and both are told it fired. What fired once is the history's.
    assert sum(fired) >= 3
    for loan in opened:
        events = await loans.events(loan.loan_id)
        assert events.count("DEFAULTED") == 1, events


async def test_a_hostile_valuation_saturates_the_view_and_moves_nothing(loans: LoanWorld) -> None:
    """A price oracle's largest price times the units is past int64: the loan's view saturates
    instead of failing, and the margin arithmetic (exact integers) is unaffected."""
    fin = loans.financier.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-huge")
    loan = await loans.open(receipt)
    reply = await fin.submit_collateral_attestation(await loans.valuation(loan.loan_id, 2**63 - 1))
    assert reply.loan.state == OPEN
    assert reply.loan.collateral_value_minor == 2**63 - 1
    assert (await loans.loan(loan.loan_id)).loan.lending_value_minor == 2**63 - 1


async def tier_2_wallet(loans: LoanWorld, name: str, funded_minor: int) -> None:
    """A wallet ``name`` at icbc-sz of tier 2 (it holds 500,000.00 CNY at most), funded."""
    trade = loans.trade
    trade.keys[name] = key(name)
    opened = await trade.client("institution/icbc-sz").open_wallet(
        "icbc-sz", key(name).public_key, tier=2
    )
    trade.wallets[name] = opened.wallet.wallet_id
    await trade.fund(name, "CNY", funded_minor)


async def defaulted(
    loans: LoanWorld,
    receipt: str,
    *,
    borrower: str = "seller",
    financier: str = "financier",
    small_wallet: str = "",
    funded: int = 0,
) -> finance_pb2.Loan:
    """A SELL loan on ``receipt`` between ``borrower`` and ``financier`` (a tier-2
    ``small_wallet`` funded with ``funded`` first, as the financier, if named), defaulted: its
    stock counted SPOILED, the cure period over, the deadline fired."""
    trade, fin = loans.trade, loans.financier.api.finance
    if small_wallet:
        await tier_2_wallet(loans, small_wallet, funded)
        financier = small_wallet
    terms = loans.terms(
        receipt, borrower=trade.wallets[borrower], financier=trade.wallets[financier]
    )
    request = open_loan_request(terms, trade.keys[borrower], trade.keys[financier])
    loan = (await fin.open_loan(request)).loan
    await fin.submit_collateral_attestation(
        await loans.stock(loan.loan_id, receipt, 1_000, "SPOILED")
    )
    loans.clock.advance(3_601)
    assert await loans.fire_deadlines() == 1
    return loan


async def test_a_sale_checks_the_financiers_cap_against_its_share_only(loans: LoanWorld) -> None:
    """A sale pays the financier what the loan owes and the borrower the rest: the financier's
    balance cap bounds its share, not the whole price. A price the financier's wallet could not
    hold whole sells when its share fits."""
    trade, fin = loans.trade, loans.financier.api.finance
    receipt = await loans.receipt("seller", 1_000, "R-12")
    loan = await defaulted(loans, receipt, small_wallet="small_bank", funded=460_000_00)
    owed = (await loans.loan(loan.loan_id)).loan.owed_minor
    room = 500_000_00 - (await trade.balance("small_bank", "CNY"))[0]
    price = 2 * room  # the whole price would not fit the financier's wallet; its share does
    assert owed <= room < price
    seller_before = (await trade.balance("seller", "CNY"))[0]
    await fin.dispose_collateral(
        loans.dispose(
            loan.loan_id, receipt, pay=("CNY", price), receive_minor=price, financier="small_bank"
        )
    )
    assert (await trade.balance("small_bank", "CNY"))[0] == 500_000_00 - room + owed
    assert (await trade.balance("seller", "CNY"))[0] == seller_before + price - owed
    sold = (await loans.loan(loan.loan_id)).loan
    assert (sold.state, sold.recovered_minor, sold.surplus_minor) == (
        DISPOSED,
        owed,
        price - owed,
    )


async def test_a_sale_whose_surplus_would_cross_the_borrowers_balance_cap_is_refused(
    loans: LoanWorld,
) -> None:
    """The surplus of a sale is a credit to the borrower like any other: a personal wallet's
    balance cap bounds it, checked when the sale is prepared (as a PvP's payee is), and a
    refused sale changes nothing."""
    trade, fin = loans.trade, loans.financier.api.finance
    await tier_2_wallet(loans, "small_seller", 440_000_00)
    receipt = await loans.receipt("small_seller", 1_000, "R-11")
    loan = await defaulted(loans, receipt, borrower="small_seller")
    owed = (await loans.loan(loan.loan_id)).loan.owed_minor
    room = 500_000_00 - (await trade.balance("small_seller", "CNY"))[0]
    assert room == 10_000_00

    before = await balances(loans)
    over = loans.dispose(
        loan.loan_id, receipt, pay=("CNY", owed + room + 1), receive_minor=owed + room + 1
    )
    error = await refused("LIMIT_EXCEEDED", fin.dispose_collateral(over))
    assert error.metadata["wallet_id"] == trade.wallets["small_seller"]
    assert await balances(loans) == before
    assert (await trade.title(receipt)).pledged_to == loan.loan_id

    fits = loans.dispose(loan.loan_id, receipt, pay=("CNY", owed + room), receive_minor=owed + room)
    await fin.dispose_collateral(fits)
    assert (await trade.balance("small_seller", "CNY"))[0] == 500_000_00
    assert (await loans.loan(loan.loan_id)).loan.state == DISPOSED
