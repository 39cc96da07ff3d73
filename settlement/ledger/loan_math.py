"""An inventory loan's arithmetic, exact in integers: interest, what is owed, the collateral's
value, the margin rule, and how much of a receipt a repayment frees. Pure: no I/O, no clock.

Every rounding is in the financier's favour, and each is stated here and in docs/financing.md:

- interest: simple, ``rate_bps`` a year on the principal outstanding, actual/365 counted in
  microseconds; the exact fraction is carried (``interest_remainder``), never rounded away, and
  what is owed rounds it *up* to the next fen;
- lending value: units present × price per unit × (10,000 − haircut_bps) / 10,000, *floored*;
- a partial release: at most the receipt's units in proportion to the principal the repayment
  retires, *floored*; and what stays pledged must still meet the opening limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

BPS: Final = 10_000
YEAR_US: Final = 365 * 86_400 * 1_000_000
INTEREST_DENOMINATOR: Final = BPS * YEAR_US
# Conditions of stock that count towards the collateral's value.
COUNTED_CONDITIONS: Final = frozenset({"GOOD"})
# ... and those that call the margin at once, whatever the value.
FAILED_CONDITIONS: Final = frozenset({"SPOILED", "MISSING"})


@dataclass(slots=True)
class Pledged:
    """One receipt pledged to a loan: its units, those last reported present, their condition
    and when that was observed (0: not reported yet, taken as all present and GOOD)."""

    title_id: str
    units: int
    present: int
    condition: str  # GOOD | DAMAGED | SPOILED | MISSING
    observed_at_us: int


def read_collateral(text: str) -> list[Pledged]:
    return [Pledged(**item) for item in json.loads(text)]


def write_collateral(items: list[Pledged]) -> str:
    rows = [
        {
            "condition": p.condition,
            "observed_at_us": p.observed_at_us,
            "present": p.present,
            "title_id": p.title_id,
            "units": p.units,
        }
        for p in sorted(items, key=lambda p: p.title_id)
    ]
    return json.dumps(rows, separators=(",", ":"), sort_keys=True)


def accrue(principal_minor: int, rate_bps: int, elapsed_us: int, remainder: int) -> tuple[int, int]:
    """Interest on ``principal_minor`` over ``elapsed_us`` plus the carried ``remainder``: whole
    fen and the new remainder (in 1/INTEREST_DENOMINATOR of a fen)."""
    numerator = principal_minor * rate_bps * max(0, elapsed_us) + remainder
    return divmod(numerator, INTEREST_DENOMINATOR)


def interest_due(interest_minor: int, remainder: int) -> int:
    """The interest owed now: the carried fraction rounds up to a whole fen."""
    return interest_minor + (1 if remainder else 0)


def owed(principal: int, fee: int, interest_minor: int, remainder: int) -> int:
    return principal + fee + interest_due(interest_minor, remainder)


@dataclass(frozen=True, slots=True)
class Allocation:
    """How a repayment is spent: interest first, then the fee, then principal."""

    interest: int
    fee: int
    principal: int
    interest_cleared: bool  # the interest (and its carried fraction) is paid in full


def allocate(
    amount: int, interest_minor: int, remainder: int, fee: int, principal: int
) -> Allocation:
    """Split ``amount`` (at most what is owed) over interest, fee and principal."""
    due = interest_due(interest_minor, remainder)
    to_interest = min(amount, due)
    to_fee = min(amount - to_interest, fee)
    to_principal = min(amount - to_interest - to_fee, principal)
    return Allocation(to_interest, to_fee, to_principal, to_interest == due)


def value(items: list[Pledged], unit_price_minor: int) -> int:
    """The collateral's value: the units present in good condition at the newest price."""
    return sum(p.present for p in items if p.condition in COUNTED_CONDITIONS) * unit_price_minor


def lending_value(items: list[Pledged], unit_price_minor: int, haircut_bps: int) -> int:
    return value(items, unit_price_minor) * (BPS - haircut_bps) // BPS


def failed_stock(items: list[Pledged]) -> list[str]:
    """Receipts whose stock is reported spoiled or missing."""
    return [p.title_id for p in items if p.condition in FAILED_CONDITIONS]


def margin_breached(owed_minor: int, lending_minor: int, margin_call_bps: int) -> bool:
    return owed_minor * BPS > lending_minor * margin_call_bps


def within_limit(owed_minor: int, lending_minor: int) -> bool:
    """The opening limit, which a cure restores: owed at most the lending value."""
    return owed_minor <= lending_minor


def releasable(units: int, principal_retired: int, principal_before: int) -> int:
    """Units of a receipt a repayment may free: in proportion to the principal it retires,
    floored (every principal retired frees the whole receipt)."""
    if principal_before <= 0:
        return units
    return units * principal_retired // principal_before
