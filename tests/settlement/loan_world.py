"""Inventory loans in the trade world: a bonded warehouse that issues receipts and counts stock,
a price oracle, three BLS sensors (2 of 3), and builders for every loan call, signed once (so a
test can send the very same request twice). Times come from the server's clock, a ManualClock
the tests move to maturity and past cure deadlines."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from condpay.loans import (
    collateral_request,
    disposal_request,
    open_loan_request,
    pledge_more_request,
    repay_request,
)
from condpay.v1 import finance_pb2

from settlement.clock import ManualClock
from settlement.ledger.loans import derive_loan_id
from tests.settlement.world import FINANCIER, PLATFORM, TradeWorld, key
from wallets import bls
from wallets.loan_documents import CollateralStatement, LoanTerms

WAREHOUSE = "warehouse.fba-ont8"
PRICE = "price.sz-electronics"
SENSORS = ("sensor.ont8-a", "sensor.ont8-b", "sensor.ont8-c")
DAY_US = 86_400_000_000
UNIT_PRICE = 100_00  # 100.00 CNY a unit at opening
_ids = itertools.count(1)


@dataclass
class LoanWorld:
    trade: TradeWorld
    clock: ManualClock
    sensor_keys: dict[str, int] = field(default_factory=dict)

    @property
    def financier(self):  # type: ignore[no-untyped-def]
        return self.trade.client(FINANCIER)

    @property
    def platform(self):  # type: ignore[no-untyped-def]
        return self.trade.platform

    def now(self) -> int:
        return self.clock.now_us()

    def expiry(self) -> int:
        return self.now() + 300_000_000

    async def receipt(self, holder: str, units: int, name: str) -> str:
        reply = await self.platform.issue_title(
            key(WAREHOUSE),
            WAREHOUSE,
            "warehouse_receipt",
            self.trade.wallets[holder],
            units,
            f"warehouse receipt {name}: {units} cartons of LED drivers, ONT8".encode(),
        )
        return reply.title.title_id

    def terms(self, title_id: str, **changes: object) -> LoanTerms:
        """A 50,000.00 CNY loan to the seller from the financier, 1,000 units at 100.00 pledged
        (lending value 70,000.00 at a 30% haircut), 12% a year, 500.00 fee, 30 days."""
        request_id = f"loan-{next(_ids)}"
        terms = LoanTerms(
            borrower=self.trade.wallets["seller"],
            financier=self.trade.wallets["financier"],
            borrower_agent=PLATFORM,
            financier_agent=FINANCIER,
            title_id=title_id,
            currency="CNY",
            principal_minor=50_000_00,
            fee_minor=500_00,
            rate_bps=1_200,
            maturity_at_us=self.now() + 30 * DAY_US,
            unit_price_minor=UNIT_PRICE,
            haircut_bps=3_000,
            margin_call_bps=10_000,
            cure_period_s=3_600,
            price_oracle=PRICE,
            warehouse_oracle=WAREHOUSE,
            sensor_oracles=",".join(SENSORS),
            sensor_threshold=2,
            disposal="SELL",
            submitter=FINANCIER,
            request_id=request_id,
            expires_at_us=self.expiry(),
        )
        return replace(terms, **changes)  # type: ignore[arg-type]

    def open_request(self, terms: LoanTerms) -> finance_pb2.OpenLoanRequest:
        return open_loan_request(terms, self.trade.keys["seller"], self.trade.keys["financier"])

    async def open(self, title_id: str, **changes: object) -> finance_pb2.Loan:
        terms = self.terms(title_id, **changes)
        client = self.trade.client(terms.submitter)
        reply = await client.api.finance.open_loan(self.open_request(terms))
        assert reply.loan.loan_id == derive_loan_id(terms.submitter, terms.request_id)
        return reply.loan

    async def loan(self, loan_id: str) -> finance_pb2.GetLoanResponse:
        return await self.financier.api.finance.get_loan(
            finance_pb2.GetLoanRequest(loan_id=loan_id)
        )

    async def events(self, loan_id: str) -> list[str]:
        return [e.kind for e in (await self.loan(loan_id)).events]

    def repay(
        self, loan_id: str, amount_minor: int, *, payer: str = "seller", **extra: object
    ) -> finance_pb2.RepayRequest:
        return repay_request(
            self.trade.party(payer),
            loan_id,
            amount_minor,
            submitter=PLATFORM,
            request_id=f"repay-{next(_ids)}",
            expires_at_us=self.expiry(),
            **extra,  # type: ignore[arg-type]
        )

    def pledge_more(self, loan_id: str, title_id: str) -> finance_pb2.PledgeMoreRequest:
        return pledge_more_request(
            self.trade.party("seller"),
            loan_id,
            title_id,
            submitter=PLATFORM,
            request_id=f"pledge-{next(_ids)}",
            expires_at_us=self.expiry(),
        )

    async def statement(self, loan_id: str, **fields: object) -> CollateralStatement:
        version = await self.platform.oracle_set_version()
        now = self.now()
        base = CollateralStatement(
            oracle_set_version=version,
            loan_id=loan_id,
            event_id=f"ev-{next(_ids)}",
            kind="VALUATION",
            title_id="",
            currency="CNY",
            unit_price_minor=0,
            units_present=0,
            condition="",
            observed_at_us=now - 1_000_000,
            issued_at_us=now,
            expires_at_us=now + 600_000_000,
        )
        return replace(base, **fields)  # type: ignore[arg-type]

    async def valuation(
        self, loan_id: str, unit_price_minor: int, **fields: object
    ) -> finance_pb2.SubmitCollateralAttestationRequest:
        statement = await self.statement(loan_id, unit_price_minor=unit_price_minor, **fields)
        return collateral_request(
            statement, request_id=f"att-{next(_ids)}", ed25519=[(PRICE, key(PRICE))]
        )

    async def stock(
        self,
        loan_id: str,
        title_id: str,
        units_present: int,
        condition: str = "GOOD",
        *,
        sensors: tuple[str, ...] = SENSORS[:2],
        warehouse: bool = True,
    ) -> finance_pb2.SubmitCollateralAttestationRequest:
        statement = await self.statement(
            loan_id,
            kind="STOCK",
            title_id=title_id,
            units_present=units_present,
            condition=condition,
        )
        return collateral_request(
            statement,
            request_id=f"att-{next(_ids)}",
            ed25519=[(WAREHOUSE, key(WAREHOUSE))] if warehouse else [],
            bls_signers=[(s, self.sensor_keys[s]) for s in sensors],
        )

    def dispose(
        self,
        loan_id: str,
        title_id: str,
        *,
        pay: tuple[str, int],
        receive_minor: int,
        buyer: str = "buyer",
        financier: str = "financier",
    ) -> finance_pb2.DisposeCollateralRequest:
        return disposal_request(
            self.trade.keys[financier],
            self.trade.party(buyer),
            loan_id,
            title_id,
            pay=pay,
            receive_minor=receive_minor,
            submitter=FINANCIER,
            request_id=f"sale-{next(_ids)}",
            expires_at_us=self.expiry(),
        )

    async def fire_deadlines(self) -> int:
        return await self.trade.harness.runtime.deadlines.sweep()


async def build_loan_world(trade: TradeWorld, clock: ManualClock) -> LoanWorld:
    from condpay.attest import bls_registration

    world = LoanWorld(trade, clock)
    cb = trade.cb
    await cb.register_oracle(WAREHOUSE, "ED25519", key(WAREHOUSE).public_key)
    await cb.register_oracle(PRICE, "ED25519", key(PRICE).public_key)
    for name in SENSORS:
        secret = bls.secret_key(name.encode().ljust(32, b"*"))
        registration = bls_registration(secret)
        await cb.register_oracle(
            name,
            "BLS12_381",
            registration.public_key,
            proof_of_possession=registration.proof_of_possession,
        )
        world.sensor_keys[name] = secret
    await trade.fund("financier", "CNY", 1_000_000_00)
    await trade.fund("seller", "CNY", 10_000_00)
    await trade.fund("buyer", "CNY", 500_000_00)
    await trade.fund("buyer", "HKD", 500_000_00)
    return world
