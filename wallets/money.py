"""Parsing and formatting money at the edges.

Inside condpay money is ``(amount_minor: int, currency: str)``. Decimal strings exist only where
people read or write amounts: the CLI, the demo, reports. Parsing is strict: a plain decimal with
at most the currency's exponent of fraction digits, no exponent, no sign unless asked for, no
thousands separators. ``format_amount(parse_amount(s, c), c)`` gives the canonical spelling.
"""

from __future__ import annotations

import re
from typing import Final

from wallets.currencies import CURRENCIES, INT64_MAX, Currency
from wallets.errors import MoneyError, UnsupportedCurrency

_DECIMAL: Final = re.compile(r"(?P<sign>-)?(?P<int>0|[1-9][0-9]*)(?:\.(?P<frac>[0-9]+))?")


def currency(code: str) -> Currency:
    """The currency for ``code``, or UnsupportedCurrency."""
    try:
        return CURRENCIES[code]
    except KeyError:
        raise UnsupportedCurrency(code) from None


def parse_amount(text: str, code: str, *, allow_negative: bool = False) -> int:
    """``"125000.5"`` CNY -> ``12500050``. Raises MoneyError on anything else."""
    exponent = currency(code).exponent
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise MoneyError(f"{text!r} is not a decimal amount")
    if match["sign"] and not allow_negative:
        raise MoneyError(f"{text!r} is negative")
    fraction = match["frac"] or ""
    if len(fraction) > exponent:
        raise MoneyError(f"{text!r} is finer than the minor unit of {code} ({exponent} places)")
    scale: int = 10**exponent
    amount = int(match["int"]) * scale + int(fraction.ljust(exponent, "0") or "0")
    if amount > INT64_MAX:
        raise MoneyError(f"{text!r} {code} is beyond the largest representable amount")
    return -amount if match["sign"] else amount


def format_amount(amount_minor: int, code: str, *, grouping: bool = False) -> str:
    """``12500050`` CNY -> ``"125000.50"`` (or ``"125,000.50"`` with grouping)."""
    exponent = currency(code).exponent
    sign = "-" if amount_minor < 0 else ""
    scale: int = 10**exponent
    whole, fraction = divmod(abs(amount_minor), scale)
    whole_text = f"{whole:,}" if grouping else str(whole)
    if exponent == 0:
        return f"{sign}{whole_text}"
    return f"{sign}{whole_text}.{fraction:0{exponent}d}"


def format_money(amount_minor: int, code: str) -> str:
    """For people: ``"125,000.50 CNY"``."""
    return f"{format_amount(amount_minor, code, grouping=True)} {code}"


def check_amount(amount_minor: int, *, positive: bool = True) -> int:
    """An amount that fits the API's int64 and, by default, is > 0."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise MoneyError("amount_minor must be an integer")
    if positive and amount_minor <= 0:
        raise MoneyError(f"amount_minor must be > 0, got {amount_minor}")
    if not -INT64_MAX - 1 <= amount_minor <= INT64_MAX:
        raise MoneyError(f"amount_minor {amount_minor} is beyond int64")
    return amount_minor
