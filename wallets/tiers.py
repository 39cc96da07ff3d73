"""e-CNY-style wallet tiers and the limits each enforces.

A personal wallet's tier follows how strongly its owner was identified, as with e-CNY's four wallet
classes: tier 1 is opened in person at an operating institution; tier 4 is anonymous (a phone
number). Enterprise wallets belong to companies; institution wallets hold an operating
institution's reserve issued by the central bank, and carry no caps.

Limits, in CNY (other currencies: the CNY figure times the currency's multiplier below, in its own
minor units):

| wallet           | balance cap | single payment cap | daily payment cap |
|------------------|-------------|--------------------|-------------------|
| personal tier 1  | none        | none               | none              |
| personal tier 2  | 500,000     | 50,000             | 100,000           |
| personal tier 3  | 20,000      | 5,000              | 10,000            |
| personal tier 4  | 10,000      | 2,000              | 5,000             |
| enterprise       | none        | 10,000,000         | 50,000,000        |
| institution      | none        | none               | none              |

Multipliers (a published, deliberately round table, not an FX rate): CNY 1, HKD 11/10, THB 5,
AED 1/2, SAR 1/2.

- The balance cap bounds available + held after a credit.
- The single-payment cap bounds each outgoing payment (a transfer, a lock into escrow).
- The daily cap bounds the sum of outgoing payments per currency per calendar day in China
  Standard Time (UTC+8, no daylight saving), the day e-CNY limits reset on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from wallets.currencies import CURRENCIES


class WalletKind(enum.StrEnum):
    PERSONAL = "PERSONAL"
    ENTERPRISE = "ENTERPRISE"
    INSTITUTION = "INSTITUTION"


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps in minor units of one currency; ``None`` means no cap."""

    balance_cap_minor: int | None
    single_payment_cap_minor: int | None
    daily_cap_minor: int | None


PERSONAL_TIERS: Final = (1, 2, 3, 4)

# (balance, single payment, daily) in whole CNY; None is no cap.
_CNY_CAPS: Final[dict[tuple[WalletKind, int], tuple[int | None, int | None, int | None]]] = {
    (WalletKind.PERSONAL, 1): (None, None, None),
    (WalletKind.PERSONAL, 2): (500_000, 50_000, 100_000),
    (WalletKind.PERSONAL, 3): (20_000, 5_000, 10_000),
    (WalletKind.PERSONAL, 4): (10_000, 2_000, 5_000),
    (WalletKind.ENTERPRISE, 0): (None, 10_000_000, 50_000_000),
    (WalletKind.INSTITUTION, 0): (None, None, None),
}

CAP_MULTIPLIERS: Final[dict[str, Fraction]] = {
    "CNY": Fraction(1),
    "HKD": Fraction(11, 10),
    "THB": Fraction(5),
    "AED": Fraction(1, 2),
    "SAR": Fraction(1, 2),
}


def _scale(cny_whole: int | None, currency: str) -> int | None:
    if cny_whole is None:
        return None
    scale: int = 10 ** CURRENCIES[currency].exponent
    minor = Fraction(cny_whole * scale) * CAP_MULTIPLIERS[currency]  # exact, then floored
    return minor.numerator // minor.denominator


LIMITS: Final[dict[tuple[WalletKind, int, str], Limits]] = {
    (kind, tier, code): Limits(*(_scale(cap, code) for cap in caps))
    for (kind, tier), caps in _CNY_CAPS.items()
    for code in CURRENCIES
}


def valid_tier(kind: WalletKind, tier: int) -> bool:
    """Personal wallets have tiers 1-4; enterprise and institution wallets use tier 0."""
    return (kind, tier) in _CNY_CAPS


def limits_for(kind: WalletKind, tier: int, currency: str) -> Limits:
    return LIMITS[(kind, tier, currency)]


# China Standard Time, the day daily caps reset on: UTC+8 all year.
_CST_OFFSET_US: Final = 8 * 3600 * 1_000_000
_DAY_US: Final = 86_400 * 1_000_000


def limit_day(now_us: int) -> int:
    """The limit day for a UTC instant (unix microseconds): days since 1970-01-01 in UTC+8."""
    return (now_us + _CST_OFFSET_US) // _DAY_US
