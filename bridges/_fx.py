"""Currency conversion in exact integers, and the rounding rule that never creates money.

Rates. Each currency's central bank publishes one number: the value of one minor unit of its
currency in the bridge's reference unit, as an exact fraction ``value = p / q`` (1 <= p, q <=
10^9). The rate from X to Y (target minor units per source minor unit) is the ratio of the two
values, ``value_X / value_Y``, kept as an exact reduced fraction ``n / d``. Because every cross rate
is a ratio of the same published values, the rates around any loop X -> Y -> ... -> X multiply to
exactly 1: there is no arbitrage in the rates themselves.

The rounding rule. Every rounding favours the liquidity provider, never the customer:

1. The spread is taken from the source amount first and rounded **up**:
   ``net = floor(source * (10^6 - spread_ppm) / 10^6)``, ``spread = source - net``.
2. The net amount is converted and rounded **down**: ``target = floor(net * n / d)``.
3. Quoting for an exact target amount, the source is the **least** amount whose conversion by
   rules 1 and 2 delivers at least that target; the target paid is exactly the one asked for.

So in reference units, ``target * value_Y <= net * value_X <= source * value_X`` for every
conversion: what comes out is never worth more than what went in. By induction no sequence of
conversions gains, and a round trip A -> B -> A (or any loop) returns at most what it started
with. tests/bridges/test_fx_properties.py checks this over random rates, spreads, amounts and loops.

Postings (TigerBeetle's currency-exchange recipe, the spread as its own posting): the payer's
``source`` leaves; ``net`` goes to the provider's liquidity account and ``spread`` to its spread
account, both in the source currency; ``target`` leaves the provider's liquidity account in the
target currency and goes to the payee.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from bridges import limits
from bridges._model import Rate
from bridges.errors import Reason, error


@dataclass(frozen=True, slots=True)
class Conversion:
    #: Paid by the payer, spread included.
    source_minor: int
    #: Converted: credited to the provider's liquidity account in the source currency.
    net_minor: int
    #: The provider's spread: credited to its spread account in the source currency.
    spread_minor: int
    #: Paid from the provider's liquidity account to the payee, in the target currency.
    target_minor: int


def reduced(numerator: int, denominator: int) -> Rate:
    divisor = gcd(numerator, denominator)
    return Rate(numerator // divisor, denominator // divisor)


def check_value(value: Rate) -> Rate:
    """A published value: both terms integers in 1..10^9; returned reduced."""
    for term in (value.numerator, value.denominator):
        if isinstance(term, bool) or not isinstance(term, int):
            raise error(Reason.INVALID_RATE, "rate terms must be integers")
        if not 1 <= term <= limits.RATE_TERM_MAX:
            raise error(
                Reason.INVALID_RATE,
                f"rate terms must be in 1..{limits.RATE_TERM_MAX}, got {term}",
                term=str(term),
            )
    return reduced(value.numerator, value.denominator)


def cross_rate(source_value: Rate, target_value: Rate) -> Rate:
    """Target minor units per source minor unit: value_source / value_target, exact."""
    return reduced(
        source_value.numerator * target_value.denominator,
        source_value.denominator * target_value.numerator,
    )


def check_spread(spread_ppm: int) -> int:
    if isinstance(spread_ppm, bool) or not isinstance(spread_ppm, int):
        raise error(Reason.INVALID_SPREAD, "spread_ppm must be an integer")
    if not 0 <= spread_ppm <= limits.SPREAD_PPM_MAX:
        raise error(
            Reason.INVALID_SPREAD,
            f"spread_ppm must be in 0..{limits.SPREAD_PPM_MAX}, got {spread_ppm}",
            spread_ppm=str(spread_ppm),
        )
    return spread_ppm


def _net_of(source_minor: int, spread_ppm: int) -> int:
    """Rule 1: floor(source * (1 - spread)); the spread (source - net) is thereby rounded up."""
    return source_minor * (limits.PPM - spread_ppm) // limits.PPM


def convert_source(source_minor: int, rate: Rate, spread_ppm: int) -> Conversion:
    """Sell exactly ``source_minor``: rules 1 and 2."""
    net = _net_of(source_minor, spread_ppm)
    target = net * rate.numerator // rate.denominator
    return _checked(Conversion(source_minor, net, source_minor - net, target), rate, spread_ppm)


def convert_target(target_minor: int, rate: Rate, spread_ppm: int) -> Conversion:
    """Buy exactly ``target_minor``: rule 3, the least source that delivers it."""
    # The least net with floor(net * n / d) >= target is ceil(target * d / n).
    net_needed = -(-target_minor * rate.denominator // rate.numerator)
    # The least source with floor(source * (M - s) / M) >= net_needed is
    # ceil(net_needed * M / (M - s)).
    source = -(-net_needed * limits.PPM // (limits.PPM - spread_ppm))
    net = _net_of(source, spread_ppm)
    return _checked(Conversion(source, net, source - net, target_minor), rate, spread_ppm)


def _checked(conversion: Conversion, rate: Rate, spread_ppm: int) -> Conversion:
    """The rule's guarantees, asserted on every conversion (not only in tests)."""
    c = conversion
    if not (
        c.source_minor == c.net_minor + c.spread_minor
        and c.spread_minor >= 0
        and c.net_minor >= 0
        # value out <= value in: target <= net * n / d
        and c.target_minor * rate.denominator <= c.net_minor * rate.numerator
        # the spread is never less than the exact spread (rounded up, never down)
        and c.spread_minor * limits.PPM >= c.source_minor * spread_ppm
    ):
        raise error(Reason.INVARIANT_VIOLATED, f"conversion breaks the rounding rule: {c}")
    return c
