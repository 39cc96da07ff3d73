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


@dataclass(frozen=True, slots=True)
class Plan:
    scenario: Scenario
    #: The buyer i's currency.
    buyer_currency: tuple[str, ...]
    rounds: tuple[tuple[Order, ...], ...]
    direct: tuple[tuple[DirectDvP, ...], ...]
    #: Published rates per round: currency -> (numerator, denominator).
    rates: tuple[dict[str, tuple[int, int]], ...]

    @property
    def orders(self) -> list[Order]:
        return [order for orders in self.rounds for order in orders]


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
    return Plan(scenario, tuple(buyer_currency), rounds, direct, _rates(scenario))


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
