"""The run's operations, drawn from the scenario's seed before anything is sent.

Everything random about a run is decided here, by one seeded ``random.Random`` per purpose, so the
same scenario and seed give the same orders, the same attestation faults and the same rate path,
whatever the timing of the run. The runner only executes the plan.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Final

from sim_central_bank.scenario import SELLER_CURRENCY, Scenario

#: The central bank of each currency, its operating institution in the core, and the trade
#: oracles it registers: the customs authority and the warehouse IoT gateways of its jurisdiction.
CENTRAL_BANKS: Final = {
    "CNY": ("pboc", "icbc-sz", "customs.cn.shenzhen", "szx"),
    "HKD": ("hkma", "bochk", "customs.hk", "hkg"),
    "THB": ("bot", "kbank", "customs.th", "bkk"),
    "AED": ("cbuae", "enbd", "customs.ae", "dxb"),
    "SAR": ("sama", "snb", "customs.sa", "ruh"),
}
SENSORS_PER_SITE: Final = ("gate", "dock", "rfid")
#: Reference units (fen) per minor unit: where the published random walk starts.
START_RATES: Final = {
    "CNY": (1_000_000, 1_000_000),
    "HKD": (923_500, 1_000_000),
    "THB": (201_000, 1_000_000),
    "AED": (1_943_200, 1_000_000),
    "SAR": (1_902_500, 1_000_000),
}


class ArrivalFault(enum.StrEnum):
    NONE = "none"
    LATE = "late"  # not cleared, attested after the refund deadline: refused, the escrow refunded
    MISSING = "missing"  # never attested: the payment stays open until its deadline
    FORGED = "forged"  # first a forged attestation (refused), then the genuine one
    REPLAYED = "replayed"  # the genuine one, then the same statement again (refused)
    DUPLICATED = "duplicated"  # the genuine one sent twice with one request id (a replay)


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str  # "r003-o0042"
    round: int
    platform: int
    buyer: int
    seller: int
    currency: str  # the buyer's, the escrow's
    amount_minor: int
    #: Paid to the seller in CNY through the bridge (one PvP per payout) rather than in kind.
    pvp_payout: bool
    #: (financier, principal) funding part of the escrow for the buyer.
    prepayment: tuple[int, int] | None
    #: (financier, advance) bought the seller's proceeds.
    receivable: tuple[int, int] | None
    #: Pallets of an eBL the seller escrows to the payment, delivered to the buyer on arrival.
    ebl_units: int
    arrival_fault: ArrivalFault
    delays_ms: tuple[int, int]  # before the clearance and before the arrival attestation


@dataclass(frozen=True, slots=True)
class DirectDvP:
    """A seller sells part of an eBL for the buyer's currency, paid in CNY, outside any escrow."""

    dvp_id: str
    round: int
    platform: int
    buyer: int
    seller: int
    currency: str
    cny_minor: int  # what the seller receives
    units: int  # of 40


class LoanOutcome(enum.StrEnum):
    REPAID = "repaid"  # valued along the walk, stock counted GOOD, repaid in full
    REPAID_IN_PARTS = "repaid in parts"  # the first part frees part of the receipt
    CURED_BY_REPAYMENT = "cured by repayment"  # price drop, margin call, part repaid, then all
    CURED_BY_PLEDGE = "cured by pledge"  # price drop, margin call, another receipt; left open
    LEFT_OPEN = "left open"  # valued along the walk, open at the end of the day
    DEFAULTED = "defaulted"  # stock SPOILED or MISSING, no cure: default, then disposal


#: The terms every simulated loan shares (docs/financing.md): 30% haircut, a margin call as soon
#: as owed exceeds the lending value, a 1% fee, 30 days.
LOAN_HAIRCUT_BPS: Final = 3_000
LOAN_MARGIN_CALL_BPS: Final = 10_000
LOAN_FEE_PERCENT: Final = 1
LOAN_MATURITY_S: Final = 30 * 86_400
#: 0.1% a year: the largest loan a scenario can open (2,000 units at 200.00, 80% of its lending
#: value) accrues less than one fen in 20 minutes, so every loan that closes within 20 minutes
#: of a change owes exactly 1 fen of interest whatever the timing (owed rounds interest up):
#: what each repayment pays, and what a default leaves owed, are functions of the seed.
LOAN_RATE_BPS: Final = 10
LOAN_INTEREST_MINOR: Final = 1
#: A cure period a cure never misses (cured loans), and the shortest (defaulted loans: the
#: deadline sweep defaults them a second or two after the margin call).
CURE_PERIOD_S: Final = 3_600
DEFAULT_CURE_PERIOD_S: Final = 1


@dataclass(frozen=True, slots=True)
class LoanPlan:
    """A seller's inventory loan against a warehouse receipt for FBA stock, and how it goes.
    Every amount is in CNY minor units and follows from the seed: with exactly
    :data:`LOAN_INTEREST_MINOR` of interest at each repayment and at the default, what is owed
    at each step is known in advance."""

    loan_id: str  # "r003-l0004": names its request ids
    round: int
    platform: int  # the borrower's agent, platform/sim-<i>
    seller: int
    financier: int
    outcome: LoanOutcome
    units: int
    unit_price_minor: int  # at opening
    principal_minor: int
    fee_minor: int
    #: The price oracle's valuations in order: the seeded walk, and for a margin call a last
    #: fall through the threshold.
    prices: tuple[int, ...]
    #: The warehouse's stock count (with 2 of 3 sensors): (units present, condition), or None.
    stock: tuple[int, str] | None
    #: REPAID_IN_PARTS: the first repayment and the units it frees; CURED_BY_REPAYMENT: the
    #: cure (release 0). (0, 0) otherwise.
    first_repayment: tuple[int, int]
    #: CURED_BY_PLEDGE: the units of the second receipt.
    more_units: int
    #: DEFAULTED: RETAIN or SELL; SELL: the buyer, and the CNY the sale brings.
    disposal: str
    buyer: int
    sale_minor: int

    @property
    def owed_minor(self) -> int:
        """Owed at the first repayment, the margin call or the default."""
        return self.principal_minor + self.fee_minor + LOAN_INTEREST_MINOR

    @property
    def rest_minor(self) -> int:
        """What the last repayment pays after ``first_repayment`` (which paid the interest,
        the fee and part of the principal): the principal left and a new fen of interest."""
        return self.owed_minor - self.first_repayment[0] + LOAN_INTEREST_MINOR

    @property
    def cure_period_s(self) -> int:
        return DEFAULT_CURE_PERIOD_S if self.outcome is LoanOutcome.DEFAULTED else CURE_PERIOD_S


@dataclass(frozen=True, slots=True)
class Plan:
    scenario: Scenario
    #: The buyer i's currency.
    buyer_currency: tuple[str, ...]
    rounds: tuple[tuple[Order, ...], ...]
    direct: tuple[tuple[DirectDvP, ...], ...]
    #: Published rates per round: currency -> (numerator, denominator).
    rates: tuple[dict[str, tuple[int, int]], ...]
    loan_rounds: tuple[tuple[LoanPlan, ...], ...] = ()

    @property
    def orders(self) -> list[Order]:
        return [order for orders in self.rounds for order in orders]

    @property
    def loans(self) -> list[LoanPlan]:
        return [loan for loans in self.loan_rounds for loan in loans]


def make_plan(scenario: Scenario) -> Plan:
    draws = random.Random(f"condpay-sim:{scenario.seed}:buyers")
    mix = scenario.orders.currency_mix
    currencies = sorted(mix)
    weights = [mix[c] for c in currencies]
    # Every currency in the mix gets at least one buyer, then the rest by weight.
    buyer_currency = list(currencies[: scenario.parties.buyers])
    while len(buyer_currency) < scenario.parties.buyers:
        buyer_currency.append(draws.choices(currencies, weights)[0])
    rounds = tuple(
        tuple(_order(scenario, buyer_currency, r, i) for i in range(scenario.orders.per_round))
        for r in range(scenario.rounds)
    )
    direct = tuple(_direct(scenario, buyer_currency, r) for r in range(scenario.rounds))
    loans = tuple(
        tuple(_loan(scenario, buyer_currency, r, i) for i in range(scenario.loans.per_round))
        for r in range(scenario.rounds)
    )
    return Plan(scenario, tuple(buyer_currency), rounds, direct, _rates(scenario), loans)


def _order(scenario: Scenario, buyer_currency: list[str], r: int, i: int) -> Order:
    draws = random.Random(f"condpay-sim:{scenario.seed}:order:{r}:{i}")
    spec, parties = scenario.orders, scenario.parties
    buyer = draws.randrange(parties.buyers)
    currency = buyer_currency[buyer]
    low, high = spec.size_minor[currency]
    amount = draws.randint(low, high)
    pvp = currency != SELLER_CURRENCY and draws.random() < spec.pvp_payout
    prepayment = receivable = None
    if draws.random() < spec.prepayment_financed:
        prepayment = (draws.randrange(parties.financiers), amount * draws.randint(20, 60) // 100)
    # Receivables are bought in the escrow's currency: only orders paid out in kind.
    if not pvp and draws.random() < spec.receivable_financed:
        receivable = (draws.randrange(parties.financiers), amount * draws.randint(80, 95) // 100)
    ebl_units = draws.randint(5, 40) if draws.random() < spec.ebl else 0
    fault = ArrivalFault.NONE
    pick = draws.random()
    for name in ("late", "missing", "forged", "replayed", "duplicated"):
        share = getattr(scenario.attestations, name)
        if pick < share:
            fault = ArrivalFault(name)
            break
        pick -= share
    if fault is ArrivalFault.LATE:
        # Its deadline is seconds away: financing would race it (a core restart in between and
        # the financier's call is refused), so a late order is not financed.
        prepayment = receivable = None
    low_ms, high_ms = scenario.events.delay_ms
    return Order(
        order_id=f"r{r:03d}-o{i:05d}",
        round=r,
        platform=draws.randrange(parties.platforms),
        buyer=buyer,
        seller=draws.randrange(parties.sellers),
        currency=currency,
        amount_minor=amount,
        pvp_payout=pvp,
        prepayment=prepayment,
        receivable=receivable,
        ebl_units=ebl_units,
        arrival_fault=fault,
        delays_ms=(draws.randint(low_ms, high_ms), draws.randint(low_ms, high_ms)),
    )


def _direct(scenario: Scenario, buyer_currency: list[str], r: int) -> tuple[DirectDvP, ...]:
    draws = random.Random(f"condpay-sim:{scenario.seed}:dvp:{r}")
    foreign = [b for b, c in enumerate(buyer_currency) if c != SELLER_CURRENCY]
    if not foreign:
        return ()
    found = []
    for seller in range(scenario.parties.sellers):
        if draws.random() < scenario.orders.direct_dvp:
            buyer = draws.choice(foreign)
            low, high = scenario.orders.size_minor.get(SELLER_CURRENCY, (100_000, 1_000_000))
            found.append(
                DirectDvP(
                    dvp_id=f"r{r:03d}-d{seller:04d}",
                    round=r,
                    platform=draws.randrange(scenario.parties.platforms),
                    buyer=buyer,
                    seller=seller,
                    currency=buyer_currency[buyer],
                    cny_minor=draws.randint(low, high),
                    units=draws.randint(5, 35),
                )
            )
    return tuple(found)


def _rates(scenario: Scenario) -> tuple[dict[str, tuple[int, int]], ...]:
    """A seeded random walk of each currency's rate against the fen, steps in whole ppm; CNY is
    the reference and stays 1."""
    draws = random.Random(f"condpay-sim:{scenario.seed}:fx")
    current = {c: START_RATES[c] for c in scenario.currencies}
    path = []
    for _ in range(scenario.rounds):
        path.append(dict(current))
        step = scenario.fx_step_ppm
        for currency in sorted(current):
            if currency == SELLER_CURRENCY:
                continue
            numerator, denominator = current[currency]
            moved = numerator * (1_000_000 + draws.randint(-step, step)) // 1_000_000
            current[currency] = (max(moved, 1), denominator)
    return tuple(path)


def lending_value(units: int, unit_price_minor: int) -> int:
    """docs/financing.md: units × price less the haircut, floored."""
    return units * unit_price_minor * (10_000 - LOAN_HAIRCUT_BPS) // 10_000


def _loan(scenario: Scenario, buyer_currency: list[str], r: int, i: int) -> LoanPlan:
    """One loan, drawn from its own stream. The walk of a loan that must stay clear of a margin
    call keeps its lending value at least 15% above what is owed; a margin call's last
    valuation puts it at 50-85% of what is owed; every other amount is chosen so that the
    server's exact arithmetic (settlement/ledger/loan_math.py) gives the planned outcome."""
    draws = random.Random(f"condpay-sim:{scenario.seed}:loan:{r}:{i}")
    spec, parties = scenario.loans, scenario.parties
    pick, outcome = draws.random(), LoanOutcome.REPAID
    for share, found in (
        (spec.margin_called, None),
        (spec.defaulted, LoanOutcome.DEFAULTED),
        (spec.repaid_in_parts, LoanOutcome.REPAID_IN_PARTS),
        (spec.left_open, LoanOutcome.LEFT_OPEN),
    ):
        if pick < share:
            outcome = found or (
                LoanOutcome.CURED_BY_REPAYMENT
                if draws.random() < 0.5
                else LoanOutcome.CURED_BY_PLEDGE
            )
            break
        pick -= share
    units = draws.randint(*spec.units)
    price = draws.randint(*spec.unit_price_minor)
    lending = lending_value(units, price)
    # Principal and fee within 55-80% of the lending value.
    principal = lending * draws.randint(55, 80) // 100 * 100 // (100 + LOAN_FEE_PERCENT)
    fee = principal * LOAN_FEE_PERCENT // 100
    owed = principal + fee + LOAN_INTEREST_MINOR
    kept_bps = 10_000 - LOAN_HAIRCUT_BPS
    # The lowest price at which the loan is 15% clear of a margin call.
    floor = -(-owed * 115 * 10_000 // (100 * units * kept_bps)) + 1
    prices, walked = [], price
    for _ in range(draws.randint(1, 3)):
        step = spec.price_step_ppm
        walked = max(walked * (1_000_000 + draws.randint(-step, step)) // 1_000_000, floor)
        prices.append(walked)
    first, more_units = (0, 0), 0
    if outcome in (LoanOutcome.CURED_BY_REPAYMENT, LoanOutcome.CURED_BY_PLEDGE):
        # The fall: the lending value at 50-85% of what is owed.
        dropped = max(owed * draws.randint(50, 85) * 10_000 // (100 * units * kept_bps), 1)
        prices.append(dropped)
        fallen = lending_value(units, dropped)
        if outcome is LoanOutcome.CURED_BY_REPAYMENT:
            # Down to 5% of the principal under the fallen lending value.
            first = (owed - fallen + principal // 20, 0)
        else:
            # Enough units that the lending value is 15% clear of what is owed again.
            needed = -(-owed * 115 * 10_000 // (100 * dropped * kept_bps))
            more_units = needed - units + 1
    if outcome is LoanOutcome.REPAID_IN_PARTS:
        # Interest, fee and about half the principal; the units in proportion, floored, as
        # many as leave the rest pledged lending at least what stays owed.
        part = principal // 2
        release = units * part // principal
        while release and lending_value(units - release, prices[-1]) < principal - part:
            release -= 1
        first = (LOAN_INTEREST_MINOR + fee + part, release)
    stock: tuple[int, str] | None = None
    if outcome is LoanOutcome.DEFAULTED:
        stock = (0, "MISSING") if draws.random() < 0.5 else (units, "SPOILED")
    elif outcome in (LoanOutcome.REPAID, LoanOutcome.LEFT_OPEN) and draws.random() < 0.5:
        stock = (units, "GOOD")
    disposal, buyer, sale = "SELL", 0, 0
    if outcome is LoanOutcome.DEFAULTED:
        if draws.random() < spec.retained:
            disposal = "RETAIN"
        else:
            abroad = draws.random() < spec.sold_abroad
            home = [b for b, c in enumerate(buyer_currency) if c == SELLER_CURRENCY]
            foreign = [b for b, c in enumerate(buyer_currency) if c != SELLER_CURRENCY]
            buyer = draws.choice((foreign if abroad else home) or home or foreign)
            # 70-130% of what is owed: a shortfall (the financier's loss) or a surplus.
            sale = owed * draws.randint(70, 130) // 100
    return LoanPlan(
        loan_id=f"r{r:03d}-l{i:04d}",
        round=r,
        platform=draws.randrange(parties.platforms),
        seller=draws.randrange(parties.sellers),
        financier=draws.randrange(parties.financiers),
        outcome=outcome,
        units=units,
        unit_price_minor=price,
        principal_minor=principal,
        fee_minor=fee,
        prices=tuple(prices),
        stock=stock,
        first_repayment=first,
        more_units=more_units,
        disposal=disposal,
        buyer=buyer,
        sale_minor=sale,
    )
