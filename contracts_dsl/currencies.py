"""The currencies a contract may name, with their ISO 4217 minor-unit exponents.

`contracts_dsl` imports no other project package, so it keeps its own table. A cross-package test
compares it with the wallets package's table. Every amount in the compiled form and in the
evaluator is an integer count of minor units plus one of these codes; the exponent says how many
decimal places the major unit has (12500000 CNY minor units is 125,000.00 CNY).
"""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType
from typing import Final

CURRENCY_EXPONENTS: Final = MappingProxyType(
    {
        "AED": 2,
        "CNY": 2,
        "HKD": 2,
        "SAR": 2,
        "THB": 2,
    }
)

CURRENCY_CODES: Final[tuple[str, ...]] = tuple(sorted(CURRENCY_EXPONENTS))


def is_supported(code: str) -> bool:
    """True when `code` is one of the currencies in the table."""
    return code in CURRENCY_EXPONENTS


def exponent(code: str) -> int:
    """The minor-unit exponent of a supported currency (KeyError for an unsupported one)."""
    return CURRENCY_EXPONENTS[code]


def format_minor(amount_minor: int, currency: str) -> str:
    """Display form of an amount: `12500000, "CNY"` -> `"125000.00 CNY"` (display only)."""
    places = CURRENCY_EXPONENTS.get(currency, 0)
    sign = "-" if amount_minor < 0 else ""
    digits = str(abs(amount_minor)).rjust(places + 1, "0")
    if places == 0:
        return f"{sign}{digits} {currency}"
    return f"{sign}{digits[:-places]}.{digits[-places:]} {currency}"


def minor_from_decimal(amount: Decimal, currency: str) -> int | None:
    """Exact conversion of a major-unit decimal to minor units (None: finer than the minor unit)."""
    scaled = amount.scaleb(CURRENCY_EXPONENTS[currency])
    if scaled != scaled.to_integral_value():
        return None
    return int(scaled)
