"""One inventory loan's life (docs/financing.md), sent as its seller's platform, its financier,
the FBA warehouse, the sensors and the price feed would send it, and, after a default, the
buyer of the collateral. Every request id follows from the loan's plan, so a call retried
across a core restart is answered from storage rather than applied twice, and every amount
comes from the plan (sim_central_bank/plan.py: what is owed at each step is known in advance);
a reply that shows another state than the plan gives is a surprise of the run.

    open (receipt pledged, principal paid) -> valuations along the seeded price walk
      REPAID             a GOOD stock count, repaid in full: the receipt released
      REPAID_IN_PARTS    interest, fee and half the principal, freeing part of the receipt
                         (split off), then the rest
      CURED_BY_REPAYMENT a fall through the margin: MARGIN_CALL; a part repayment cures it;
                         then the rest
      CURED_BY_PLEDGE    a fall through the margin: MARGIN_CALL; another receipt pledged cures
                         it; left open
      LEFT_OPEN          left open
      DEFAULTED          stock counted SPOILED or MISSING: MARGIN_CALL with a 1 s cure period;
                         the core's deadline sweep defaults it; RETAIN: the receipt is the
                         financier's at once; SELL: sold by DvP to a buyer (in CNY, or paying
                         HKD or THB through the bridge), the proceeds split
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from condpay.ids import loan_id_for
from condpay.loans import (
    collateral_request,
    disposal_request,
    open_loan_request,
    pledge_more_request,
    repay_request,
)
from condpay.v1 import finance_pb2

from sim_central_bank.economy import LoanOracles, Party, sale_pay_max
from sim_central_bank.plan import (
    LOAN_HAIRCUT_BPS,
    LOAN_MARGIN_CALL_BPS,
    LOAN_MATURITY_S,
    LOAN_RATE_BPS,
    LoanOutcome,
    LoanPlan,
)
from sim_central_bank.record import ACCEPTED
from sim_central_bank.scenario import SELLER_CURRENCY
from sim_central_bank.trading import SURPRISE, Trader
from wallets.loan_documents import CollateralStatement, LoanTerms

OPEN: Final = finance_pb2.LOAN_STATE_OPEN
MARGIN_CALL: Final = finance_pb2.LOAN_STATE_MARGIN_CALL
REPAID: Final = finance_pb2.LOAN_STATE_REPAID
DEFAULTED: Final = finance_pb2.LOAN_STATE_DEFAULTED
DISPOSED: Final = finance_pb2.LOAN_STATE_DISPOSED
#: How long signed loan documents stay valid (a retry across a core restart resends them).
DOCUMENT_LIFETIME_S: Final = 300
#: Polls for the deadline sweep's default (every 0.5 s on the core) and their limit.
DEFAULT_POLL_SECONDS: Final = 0.25
DEFAULT_TIMEOUT_SECONDS: Final = 60.0
MICROS: Final = 1_000_000


def _now_us() -> int:
    return time.time_ns() // 1_000


def _state(loan: finance_pb2.Loan) -> str:
    return finance_pb2.LoanState.Name(loan.state).removeprefix("LOAN_STATE_")


class LoanDesk:
    """Runs the plan's loans through the trader's clients, record and expectations."""

    def __init__(self, trader: Trader) -> None:
        self.trader = trader
        self.economy = trader.economy
        oracles = self.economy.loan_oracles
        assert oracles is not None, "set_up registers the loans' oracles when the plan has loans"
        self.oracles: LoanOracles = oracles

    async def run_loan(self, loan: LoanPlan) -> None:
        await self.trader._job("loan", self._run(loan))

    def _rid(self, loan: LoanPlan, *parts: object) -> str:
        return self.economy.rid(loan.loan_id, *parts)

    def _agents(self, loan: LoanPlan) -> tuple[str, str]:
        financier = self.economy.financiers[loan.financier]
        return f"platform/sim-{loan.platform}", f"financier/{financier.name}"

    async def _run(self, loan: LoanPlan) -> None:
        economy, trader = self.economy, self.trader
        seller = economy.sellers[loan.seller]
        receipt = await self._receipt(loan, seller, loan.units, "receipt")
        if receipt is None:
            return
        opened = await self._open(loan, seller, receipt)
        if opened is None:
            return
        loan_id = opened.loan_id
        for step, price in enumerate(loan.prices):
            last = step == len(loan.prices) - 1
            margin_call = last and loan.outcome in (
                LoanOutcome.CURED_BY_REPAYMENT,
                LoanOutcome.CURED_BY_PLEDGE,
            )
            valued = await self._attest(
                loan, loan_id, f"valuation-{step}", kind="VALUATION", unit_price_minor=price
            )
            self._expect(loan, "valuation", valued, MARGIN_CALL if margin_call else OPEN)
        if loan.stock is not None:
            present, condition = loan.stock
            counted = await self._attest(
                loan,
                loan_id,
                "stock",
                kind="STOCK",
                title_id=receipt,
                units_present=present,
                condition=condition,
            )
            if condition != "GOOD":
                trader.record.faults[f"loan stock {condition.lower()}"] += 1
            failed = condition in ("SPOILED", "MISSING")
            self._expect(loan, "stock", counted, MARGIN_CALL if failed else OPEN)
        outcome = loan.outcome
        if outcome is LoanOutcome.REPAID:
            await self._repay(loan, loan_id, "repay", loan.owed_minor, REPAID)
        elif outcome is LoanOutcome.REPAID_IN_PARTS:
            amount, units = loan.first_repayment
            first = await self._repay(
                loan, loan_id, "repay-1", amount, OPEN, release=(receipt, units)
            )
            if first is not None:
                await self._repay(loan, loan_id, "repay-2", loan.rest_minor, REPAID)
        elif outcome is LoanOutcome.CURED_BY_REPAYMENT:
            cured = await self._repay(loan, loan_id, "cure", loan.first_repayment[0], OPEN)
            if cured is not None:
                await self._repay(loan, loan_id, "repay", loan.rest_minor, REPAID)
        elif outcome is LoanOutcome.CURED_BY_PLEDGE:
            await self._pledge_more(loan, loan_id, seller)
        elif outcome is LoanOutcome.DEFAULTED:
            await self._default_and_dispose(loan, loan_id, receipt)

    # -- the calls -----------------------------------------------------------------------------
    async def _receipt(self, loan: LoanPlan, seller: Party, units: int, name: str) -> str | None:
        """The warehouse issues a receipt for ``units`` cartons to the seller."""
        platform = self.trader.client(f"platform/sim-{loan.platform}")
        reference = self._rid(loan, name)
        issued, _ = await self.trader.op(
            "loan.receipt",
            platform.issue_title(
                self.oracles.warehouse_key,
                self.oracles.warehouse,
                "warehouse_receipt",
                seller.wallet_id,
                units,
                f"warehouse receipt {reference}: {units} cartons of LED drivers, ONT8".encode(),
                description=f"{units} cartons",
                request_id=reference,
            ),
        )
        return None if issued is None else issued.title.title_id

    async def _open(self, loan: LoanPlan, seller: Party, receipt: str) -> finance_pb2.Loan | None:
        economy = self.economy
        financier = economy.financiers[loan.financier]
        borrower_agent, financier_agent = self._agents(loan)
        now_us = _now_us()
        request_id = self._rid(loan, "open")
        terms = LoanTerms(
            borrower=seller.wallet_id,
            financier=financier.wallet_id,
            borrower_agent=borrower_agent,
            financier_agent=financier_agent,
            title_id=receipt,
            currency=SELLER_CURRENCY,
            principal_minor=loan.principal_minor,
            fee_minor=loan.fee_minor,
            rate_bps=LOAN_RATE_BPS,
            maturity_at_us=now_us + LOAN_MATURITY_S * MICROS,
            unit_price_minor=loan.unit_price_minor,
            haircut_bps=LOAN_HAIRCUT_BPS,
            margin_call_bps=LOAN_MARGIN_CALL_BPS,
            cure_period_s=loan.cure_period_s,
            price_oracle=self.oracles.price,
            warehouse_oracle=self.oracles.warehouse,
            sensor_oracles=",".join(name for name, _ in self.oracles.sensors),
            sensor_threshold=2,
            disposal=loan.disposal,
            submitter=financier_agent,
            request_id=request_id,
            expires_at_us=now_us + DOCUMENT_LIFETIME_S * MICROS,
        )
        reply, _ = await self.trader.op(
            "loan.open",
            self.trader.client(financier_agent).api.finance.open_loan(
                open_loan_request(terms, seller.key, financier.key)
            ),
        )
        if reply is None:
            return None
        if reply.loan.loan_id != loan_id_for(financier_agent, request_id):
            self.trader.record.count(SURPRISE, "loan.open gave another loan id")
        self._expect(loan, "open", reply.loan, OPEN)
        return reply.loan

    async def _attest(
        self,
        loan: LoanPlan,
        loan_id: str,
        name: str,
        *,
        kind: str,
        unit_price_minor: int = 0,
        title_id: str = "",
        units_present: int = 0,
        condition: str = "",
    ) -> finance_pb2.Loan | None:
        """A valuation (the price feed signs and sends it) or a stock count (the warehouse and
        2 of 3 sensors sign, the warehouse sends it)."""
        oracles, now_us = self.oracles, _now_us()
        statement = CollateralStatement(
            oracle_set_version=self.economy.oracle_set_version,
            loan_id=loan_id,
            event_id=self._rid(loan, name),
            kind=kind,
            title_id=title_id,
            currency=SELLER_CURRENCY,
            unit_price_minor=unit_price_minor,
            units_present=units_present,
            condition=condition,
            observed_at_us=now_us - MICROS,
            issued_at_us=now_us,
            expires_at_us=now_us + DOCUMENT_LIFETIME_S * MICROS,
        )
        if kind == "VALUATION":
            request = collateral_request(
                statement,
                request_id=self._rid(loan, name),
                ed25519=[(oracles.price, oracles.price_key)],
            )
            sender = oracles.price
        else:
            request = collateral_request(
                statement,
                request_id=self._rid(loan, name),
                ed25519=[(oracles.warehouse, oracles.warehouse_key)],
                bls_signers=list(oracles.sensors[:2]),
            )
            sender = oracles.warehouse
        reply, _ = await self.trader.op(
            f"loan.{kind.lower()}",
            self.trader.client(f"oracle/{sender}").api.finance.submit_collateral_attestation(
                request
            ),
        )
        return None if reply is None else reply.loan

    async def _repay(
        self,
        loan: LoanPlan,
        loan_id: str,
        name: str,
        amount_minor: int,
        expected: finance_pb2.LoanState.ValueType,
        *,
        release: tuple[str, int] = ("", 0),
    ) -> finance_pb2.Loan | None:
        """The seller repays ``amount_minor`` (freeing ``release``: units of a receipt)."""
        seller = self.economy.sellers[loan.seller]
        borrower_agent, _ = self._agents(loan)
        title_id, units = release
        request = repay_request(
            (seller.key, seller.wallet_id),
            loan_id,
            amount_minor,
            submitter=borrower_agent,
            request_id=self._rid(loan, name),
            expires_at_us=_now_us() + DOCUMENT_LIFETIME_S * MICROS,
            release_title_id=title_id if units else "",
            release_units=units,
        )
        reply, _ = await self.trader.op(
            "loan.repay", self.trader.client(borrower_agent).api.finance.repay(request)
        )
        if reply is None:
            return None
        if units and not reply.released_title_id:
            self.trader.record.count(SURPRISE, "loan.repay freed no part of the receipt")
        self._expect(loan, name, reply.loan, expected)
        return reply.loan

    async def _pledge_more(self, loan: LoanPlan, loan_id: str, seller: Party) -> None:
        more = await self._receipt(loan, seller, loan.more_units, "receipt-2")
        if more is None:
            return
        borrower_agent, _ = self._agents(loan)
        request = pledge_more_request(
            (seller.key, seller.wallet_id),
            loan_id,
            more,
            submitter=borrower_agent,
            request_id=self._rid(loan, "pledge"),
            expires_at_us=_now_us() + DOCUMENT_LIFETIME_S * MICROS,
        )
        reply, _ = await self.trader.op(
            "loan.pledge_more",
            self.trader.client(borrower_agent).api.finance.pledge_more(request),
        )
        if reply is not None:
            self._expect(loan, "pledge", reply.loan, OPEN)

    async def _default_and_dispose(self, loan: LoanPlan, loan_id: str, receipt: str) -> None:
        """Wait for the deadline sweep's default (1 s after the margin call); RETAIN ends
        DISPOSED by itself, SELL is sold by DvP at the planned price."""
        _, financier_agent = self._agents(loan)
        financier_client = self.trader.client(financier_agent)
        wanted = DISPOSED if loan.disposal == "RETAIN" else DEFAULTED
        give_up = time.monotonic() + DEFAULT_TIMEOUT_SECONDS
        while True:
            await asyncio.sleep(DEFAULT_POLL_SECONDS)
            found = (
                await financier_client.api.finance.get_loan(
                    finance_pb2.GetLoanRequest(loan_id=loan_id)
                )
            ).loan
            if found.state == wanted:
                break
            if found.state != MARGIN_CALL or time.monotonic() > give_up:
                self.trader.record.count(SURPRISE, f"loan {_state(found)}, not defaulted")
                return
        self.trader.record.count("loan.defaulted", ACCEPTED)
        if found.owed_minor != loan.owed_minor:
            self.trader.record.count(SURPRISE, "loan owed at default differs from the plan")
        if loan.disposal == "RETAIN":
            self.trader.record.count("loan.retained", ACCEPTED)
            return
        economy = self.economy
        buyer = economy.buyers[loan.buyer]
        currency = buyer.currency
        rate = economy.plan.rates[loan.round].get(currency, (1, 1))
        request = disposal_request(
            economy.financiers[loan.financier].key,
            (buyer.key, buyer.wallet_id),
            loan_id,
            receipt,
            pay=(currency, sale_pay_max(loan.sale_minor, rate, currency)),
            receive_minor=loan.sale_minor,
            submitter=financier_agent,
            request_id=self._rid(loan, "sale"),
            expires_at_us=_now_us() + DOCUMENT_LIFETIME_S * MICROS,
        )
        sold, _ = await self.trader.op(
            "loan.dispose" + ("" if currency == SELLER_CURRENCY else ".abroad"),
            financier_client.api.finance.dispose_collateral(request),
        )
        if sold is None:
            return
        if await self.trader.wait_settlement(sold.settlement.settlement_id, "loan.sale"):
            self.trader.record.settlements_total += 1
        done = (
            await financier_client.api.finance.get_loan(finance_pb2.GetLoanRequest(loan_id=loan_id))
        ).loan
        self._expect(loan, "sale", done, DISPOSED)

    def _expect(
        self,
        loan: LoanPlan,
        step: str,
        found: finance_pb2.Loan | None,
        state: finance_pb2.LoanState.ValueType,
    ) -> None:
        """A reply whose loan is in another state than the plan gives is a surprise (a refused
        call was counted as one already)."""
        if found is not None and found.state != state:
            wanted = finance_pb2.LoanState.Name(state).removeprefix("LOAN_STATE_")
            self.trader.record.count(
                SURPRISE, f"loan {loan.outcome.value}: {step} left it {_state(found)}, not {wanted}"
            )
