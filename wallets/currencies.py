"""The currencies condpay settles, with their ISO 4217 minor-unit exponents.

Every amount on a money path is an integer count of minor units (fen for CNY) plus one of these
codes. The exponent says how many decimal places the major unit has: 12500000 CNY minor units is
125,000.00 CNY.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    exponent: int
    name: str
    central_bank: str


CURRENCIES: Final[dict[str, Currency]] = {
    c.code: c
    for c in (
        Currency("CNY", 2, "Chinese yuan (e-CNY)", "PBoC"),
        Currency("HKD", 2, "Hong Kong dollar", "HKMA"),
        Currency("THB", 2, "Thai baht", "BOT"),
        Currency("AED", 2, "UAE dirham", "CBUAE"),
        Currency("SAR", 2, "Saudi riyal", "SAMA"),
    )
}

CURRENCY_CODES: Final[tuple[str, ...]] = tuple(sorted(CURRENCIES))


def is_supported(code: str) -> bool:
    return code in CURRENCIES
