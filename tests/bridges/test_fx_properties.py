"""The rounding rule never creates money (docs/bridge.md): over random published rates, spreads,
amounts and conversion loops, in the pure functions and through a real ledger.

Values are compared in the bridge's reference unit with exact Fractions (tests only; the bridge
itself works in integers)."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from bridges import (
    AccountKind,
    ManualClock,
    Money,
    Rate,
    TransferState,
    convert_source,
    convert_target,
    cross_rate,
)
from bridges._ledger import Ledger
from bridges.errors import BridgeError, Reason
from wallets.currencies import CURRENCY_CODES

TERM = st.integers(min_value=1, max_value=1_000_000_000)
VALUE = st.builds(Rate, TERM, TERM)
SPREAD = st.integers(min_value=0, max_value=100_000)
AMOUNT = st.integers(min_value=1, max_value=10**15)


def worth(amount: int, value: Rate) -> Fraction:
    return amount * Fraction(value.numerator, value.denominator)


@given(AMOUNT, VALUE, VALUE, SPREAD)
def test_one_conversion_is_never_worth_more_than_what_went_in(
    amount: int, source_value: Rate, target_value: Rate, spread_ppm: int
) -> None:
    c = convert_source(amount, cross_rate(source_value, target_value), spread_ppm)
    assert c.source_minor == amount == c.net_minor + c.spread_minor
    assert worth(c.target_minor, target_value) <= worth(c.net_minor, source_value)
    # the spread is the exact spread rounded up: never less, less than one unit more
    exact_spread = Fraction(amount * spread_ppm, 1_000_000)
    assert exact_spread <= c.spread_minor < exact_spread + 1


@given(st.integers(min_value=1, max_value=10**12), VALUE, VALUE, SPREAD)
def test_buying_a_target_costs_the_least_source_that_delivers_it(
    target: int, source_value: Rate, target_value: Rate, spread_ppm: int
) -> None:
    rate = cross_rate(source_value, target_value)
    c = convert_target(target, rate, spread_ppm)
    assert c.target_minor == target
    assert convert_source(c.source_minor, rate, spread_ppm).target_minor >= target
    assert convert_source(c.source_minor - 1, rate, spread_ppm).target_minor < target
    assert c.spread_minor == convert_source(c.source_minor, rate, spread_ppm).spread_minor
    assert worth(target, target_value) <= worth(c.net_minor, source_value)


@given(AMOUNT, VALUE, VALUE, SPREAD, SPREAD)
def test_a_round_trip_never_gains(
    amount: int, a_value: Rate, b_value: Rate, spread_out: int, spread_back: int
) -> None:
    there = convert_source(amount, cross_rate(a_value, b_value), spread_out)
    back = convert_source(there.target_minor, cross_rate(b_value, a_value), spread_back)
    assert back.target_minor <= amount


@st.composite
def loops(draw: st.DrawFn) -> tuple[dict[str, Rate], list[str], list[int], list[bool]]:
    values = {c: draw(VALUE) for c in CURRENCY_CODES}
    middle = draw(st.lists(st.sampled_from(CURRENCY_CODES), min_size=1, max_size=8))
    start = draw(st.sampled_from(CURRENCY_CODES))
    path = [start, *middle, start]
    path = [c for i, c in enumerate(path) if i == 0 or c != path[i - 1]]  # no X -> X steps
    if len(path) == 1:
        path = [start, next(c for c in CURRENCY_CODES if c != start), start]
    spreads = draw(st.lists(SPREAD, min_size=len(path) - 1, max_size=len(path) - 1))
    by_target = draw(st.lists(st.booleans(), min_size=len(path) - 1, max_size=len(path) - 1))
    return values, path, spreads, by_target


@given(AMOUNT, loops())
def test_no_sequence_of_conversions_creates_money(
    amount: int, loop: tuple[dict[str, Rate], list[str], list[int], list[bool]]
) -> None:
    """Along any loop, each step either sells everything held or buys the most the holding
    affords; the reference value never rises, so the loop ends with at most the start."""
    values, path, spreads, by_target = loop
    held = amount
    steps = zip(path[:-1], path[1:], spreads, by_target, strict=True)
    for source, target, spread_ppm, buy in steps:
        rate = cross_rate(values[source], values[target])
        sold = convert_source(held, rate, spread_ppm)
        step = sold
        if buy and sold.target_minor:
            step = convert_target(sold.target_minor, rate, spread_ppm)
        assert step.source_minor <= held
        assert worth(step.target_minor, values[target]) <= worth(held, values[source])
        held = step.target_minor
    assert held <= amount


# ---------------------------------------------------------------- through the ledger

BANK, LP = "BANK", "LP"
#: Deep liquidity: values within 10^4 of each other and start amounts up to 10^9 keep every
#: holding along a loop below 10^9 * 10^8 (its worth never rises), far under this.
FUNDS = 4 * 10**18
LEDGER_TERM = st.integers(min_value=1, max_value=10_000)


@st.composite
def ledger_loops(draw: st.DrawFn) -> tuple[dict[str, Rate], list[str], list[int], list[bool]]:
    values, path, spreads, by_target = draw(loops())
    return (
        {c: draw(st.builds(Rate, LEDGER_TERM, LEDGER_TERM)) for c in values},
        path,
        spreads,
        by_target,
    )


def _funded_ledger(values: dict[str, Rate], spread_ppm: int, seed: int) -> Ledger:
    ledger = Ledger.open(
        ":memory:", clock=ManualClock(), rng=random.Random(seed), key_seed=b"p" * 32
    )
    ledger.register_bank(BANK)
    ledger.register_bank(LP)
    ledger.register_liquidity_provider(LP, spread_ppm)
    for currency in CURRENCY_CODES:
        ledger.publish_rate(currency, values[currency])
        ledger.issue(f"lp-{currency}", LP, Money(currency, FUNDS), AccountKind.LIQUIDITY)
    return ledger


def _held(ledger: Ledger, participant: str, kind: str, currency: str) -> int:
    for b in ledger.balances(participant):
        if (b.kind.value, b.currency) == (kind, currency):
            return b.balance_minor
    raise AssertionError((participant, kind, currency))


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=10**9), ledger_loops(), SPREAD, st.integers(0, 2**32))
def test_conversion_loops_through_the_ledger_never_create_money(
    amount: int,
    loop: tuple[dict[str, Rate], list[str], list[int], list[bool]],
    spread_ppm: int,
    seed: int,
) -> None:
    """A bank converts all it holds around a loop with prepare + commit; it ends with at most
    what it started with, the provider's holdings never lose value, every spread is its own
    posting, and supply is conserved in every currency."""
    values, path, _, by_target = loop
    ledger = _funded_ledger(values, spread_ppm, seed)
    try:
        ledger.issue("start", BANK, Money(path[0], amount), AccountKind.SETTLEMENT)
        supply_before = {s.currency: s.outstanding_minor for s in ledger.supply()}

        def provider_worth() -> Fraction:
            return sum(
                (
                    worth(b.balance_minor, values[b.currency])
                    for b in ledger.balances(LP)
                    if b.kind in (AccountKind.LIQUIDITY, AccountKind.SPREAD)
                ),
                Fraction(0),
            )

        def bank_worth() -> Fraction:
            return sum(
                (worth(b.balance_minor, values[b.currency]) for b in ledger.balances(BANK)),
                Fraction(0),
            )

        lp_worth, start_worth = provider_worth(), bank_worth()
        held = amount
        for step, (source, target) in enumerate(itertools.pairwise(path)):
            refusal: BridgeError | None = None
            try:
                quote = ledger.quote(source, target, source_amount_minor=held)
                if by_target[step]:  # buy the most the holding affords, by target amount
                    quote = ledger.quote(
                        source, target, target_amount_minor=quote.target.amount_minor
                    )
            except BridgeError as exc:
                refusal = exc
            if refusal is not None:
                assert refusal.reason is Reason.AMOUNT_TOO_SMALL  # converts to nothing: stop
                break
            assert quote.source.amount_minor <= held
            spread_before = _held(ledger, LP, "SPREAD", source)
            source_before = _held(ledger, BANK, "SETTLEMENT", source)
            ledger.prepare(
                f"t-{step}", quote_id=quote.quote_id, payer_id=BANK, payee_id=BANK, timeout_ms=1_000
            )
            committed = ledger.commit(f"t-{step}")
            assert committed.state is TransferState.COMMITTED
            assert _held(ledger, LP, "SPREAD", source) - spread_before == quote.spread.amount_minor
            left = _held(ledger, BANK, "SETTLEMENT", source)
            assert left == source_before - quote.source.amount_minor
            held = quote.target.amount_minor
            assert provider_worth() >= lp_worth
            assert bank_worth() <= start_worth
            lp_worth = provider_worth()
        # whatever the bank holds now (the loop's result and any change left on the way)
        # is worth no more than it started with; so it has no more of the start currency
        assert bank_worth() <= start_worth
        assert _held(ledger, BANK, "SETTLEMENT", path[0]) <= amount
        assert {s.currency: s.outstanding_minor for s in ledger.supply()} == supply_before
        report = ledger.audit()
        assert report.problems == ()
    finally:
        ledger.close()
