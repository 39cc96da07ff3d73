"""Property tests (hypothesis, derandomized): nothing raises, fmt is stable, money is conserved."""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from contracts_dsl import (
    BoundParams,
    CompiledContract,
    ContractState,
    Escrow,
    Event,
    bind_params,
    check_source,
    compile_source,
    evaluate,
    explain_source,
    format_source,
    parse,
)
from contracts_dsl._literals import format_us, timestamp_us
from contracts_dsl.params import escrow_minor

from ._support import PROPERTY_SETTINGS, example_paths, spec_params

EXAMPLE_TEXTS = {p.stem: p.read_text(encoding="utf-8") for p in example_paths()}
EXAMPLE_NAMES = sorted(EXAMPLE_TEXTS)

VOCABULARY = [
    "when",
    "and",
    "or",
    "->",
    "pay",
    "refund",
    "remainder",
    "deliver title",
    "to",
    "as penalty",
    "in",
    "not in",
    "%",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "==",
    "!=",
    "<",
    ">=",
    "one of {",
    "clause",
    "param",
    "oracle",
    "event",
    "escrow",
    "deadline",
    "contract",
    "version",
    "quorum 2 of",
    '"x"',
    '"',
    "10",
    "1.5",
    "0",
    "-3",
    "100.001",
    "CNY",
    "USD",
    "HKD",
    "2026-01-01T00:00:00Z",
    "2026-13-45",
    "within 1 days after iot.arrived",
    "before 2026-06-01T00:00:00Z",
    "by buyer",
    "# comment",
    "\n",
    "\t",
    "buyer",
    "seller",
    "price",
    "iot.arrived()",
    "receipt.signed()",
    "money",
    "wallet",
    "title",
    "text",
    "中",
    "\x00",
    "\\",
    "99999999999999999999999999",
    "((((((((((",
]


def _run_everything(text: str) -> None:
    """The whole toolchain on one input; any exception fails the property."""
    parsed = parse(text)
    checked = check_source(text)
    assert all(d.code.startswith("CD") for d in checked.diagnostics)
    # The checker keeps every parser diagnostic (up to the diagnostics limit).
    assert set(parsed.diagnostics) <= set(checked.diagnostics) or len(checked.diagnostics) == 200
    for diagnostic in checked.diagnostics:
        assert 0 <= diagnostic.span.start <= diagnostic.span.end <= len(text)
        assert diagnostic.span.line >= 1
        assert diagnostic.span.column >= 1
    formatted = format_source(text)
    if formatted.text is not None:
        again = format_source(formatted.text)
        assert again.text == formatted.text, "fmt(fmt(x)) != fmt(x)"
    explain_source(text, "en")
    explain_source(text, "zh")
    result = compile_source(text)
    if result.contract is not None and formatted.text is not None:
        reformatted = compile_source(formatted.text).contract
        assert reformatted is not None
        assert reformatted.hash == result.contract.hash


@PROPERTY_SETTINGS
@given(st.text(max_size=400))
def test_random_text_never_raises(text: str) -> None:
    _run_everything(text)


@PROPERTY_SETTINGS
@given(st.lists(st.sampled_from(VOCABULARY), max_size=60).map(" ".join))
def test_random_token_soup_never_raises(text: str) -> None:
    _run_everything(text)


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    text = EXAMPLE_TEXTS[draw(st.sampled_from(EXAMPLE_NAMES))]
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "duplicate_line", "swap"]))
        if kind == "delete":
            length = draw(st.integers(1, 30))
            text = text[:position] + text[position + length :]
        elif kind == "insert":
            text = text[:position] + draw(st.sampled_from(VOCABULARY)) + " " + text[position:]
        elif kind == "replace":
            text = text[:position] + draw(st.characters()) + text[position + 1 :]
        else:
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "duplicate_line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


@PROPERTY_SETTINGS
@given(mutated_examples(), st.data())
def test_mutated_examples_never_raise(text: str, data: st.DataObject) -> None:
    _run_everything(text)
    contract = compile_source(text).contract
    if contract is None:
        return
    params = _random_params(contract, data)
    if params is None:
        return
    events = data.draw(_events_for(contract, params))
    _check_money_invariants(contract, params, events, data)


# -- layout: the formatter is stable and never changes the hash ---------------------------------

_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\S+?(?=\s|$|")|\S+')
SEPARATORS = [" ", "  ", "\n", "\n  ", "\t", " # note\n", "\n\n", "\n# own line\n  ", "   "]


@st.composite
def relaid_examples(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(EXAMPLE_NAMES))
    tokens = _TOKEN.findall(EXAMPLE_TEXTS[name])
    pieces: list[str] = []
    for token in tokens:
        if pieces:
            separator = draw(st.sampled_from(SEPARATORS))
            if pieces[-1].startswith("#") and "\n" not in separator:
                separator = "\n"
            pieces.append(separator)
        pieces.append(token)
    return name, "".join(pieces) + draw(st.sampled_from(["", "\n", "\n# end\n"]))


@PROPERTY_SETTINGS
@given(relaid_examples())
def test_fmt_is_idempotent_and_keeps_the_hash(case: tuple[str, str]) -> None:
    name, text = case
    original = compile_source(EXAMPLE_TEXTS[name]).contract
    relaid = compile_source(text)
    assert original is not None
    assert relaid.contract is not None, [d.code for d in relaid.diagnostics]
    assert relaid.contract.hash == original.hash
    formatted = format_source(text).text
    assert formatted is not None
    assert format_source(formatted).text == formatted
    refmt = compile_source(formatted).contract
    assert refmt is not None
    assert refmt.hash == original.hash
    # Comments survive formatting (end-of-line comments that land on one line are joined).
    for comment, count in Counter(re.findall(r"#[^\n]*", text)).items():
        assert formatted.count(comment.rstrip()) >= count, comment


# -- the evaluator: never more than the escrow, never negative, each clause at most once --------


def _us(text: str) -> int:
    value = timestamp_us(text)
    assert isinstance(value, int)
    return value


T_START = _us("2026-01-01T00:00:00Z")
T_END = _us("2027-06-01T00:00:00Z")


def _random_params(contract: CompiledContract, data: st.DataObject) -> BoundParams | None:
    values: dict[str, Any] = {}
    for spec in contract.params:
        if spec.kind in ("wallet", "title"):
            values[spec.name] = f"{spec.kind}-{spec.name}"
        elif spec.kind == "money":
            minor = data.draw(st.integers(1, 10**12), label=spec.name)
            values[spec.name] = {"currency": spec.currency, "amount_minor": minor}
        elif spec.kind == "text":
            values[spec.name] = data.draw(st.sampled_from(["x", "PO-2026-0419", "D1", "R"]))
        elif spec.kind == "number":
            values[spec.name] = str(data.draw(st.integers(-50, 50)))
        elif spec.kind == "timestamp":
            values[spec.name] = format_us(data.draw(st.integers(T_START, T_END)))
        else:
            values[spec.name] = f"{data.draw(st.integers(1, 90))}d"
    return bind_params(contract, values).params


def _candidates(
    contract: CompiledContract, params: BoundParams
) -> dict[tuple[str, str], list[Any]]:
    found: dict[tuple[str, str], list[Any]] = {}
    for pattern in contract.patterns:
        for constraint in pattern.constraints:
            bucket = found.setdefault((pattern.event_type, constraint.attr), [])
            for value in constraint.values:
                if value.kind == "param":
                    assert isinstance(value.value, str)
                    bound = params.values[value.value]
                    if isinstance(bound, Fraction):
                        bucket.append(str(bound.numerator // bound.denominator))
                    elif isinstance(bound, int) and params.kinds[value.value] == "timestamp":
                        bucket.append(format_us(bound))
                    else:
                        bucket.append(bound)
                elif value.kind == "timestamp":
                    assert isinstance(value.value, int)
                    bucket.append(format_us(value.value))
                elif value.kind == "number":
                    assert isinstance(value.value, str)
                    bucket.extend([value.value, str(Fraction(value.value) + 1), "-100"])
                else:
                    bucket.append(value.value)
    return found


@st.composite
def _events_for(draw: st.DrawFn, contract: CompiledContract, params: BoundParams) -> list[Event]:
    candidates = _candidates(contract, params)
    types = sorted({p.event_type for p in contract.patterns}) or ["x.y"]
    attesters = [*sorted({p.attester for p in contract.patterns}), "intruder"]
    schemas = {e.event_type: dict(e.attributes) for e in contract.events}
    events = []
    for number in range(draw(st.integers(0, 12))):
        event_type = draw(st.sampled_from([*types, "other.event"]))
        attributes: dict[str, str | int | bool] = {}
        for attr, kind in schemas.get(event_type, {}).items():
            pool: list[Any] = list(candidates.get((event_type, attr), []))
            extra: dict[str, list[Any]] = {
                "text": ["zzz"],
                "number": [0, "7.25"],
                "bool": [True, False],
            }
            pool += extra.get(kind, [])
            pool.append("2026-05-01T00:00:00Z")
            if draw(st.booleans()):
                attributes[attr] = draw(st.sampled_from(pool))
        events.append(
            Event(
                draw(st.sampled_from([f"e{number}", "dup"])),
                event_type,
                draw(st.sampled_from(attesters)),
                attributes,
                draw(st.integers(T_START, T_END)),
            )
        )
    return events


def _check_money_invariants(
    contract: CompiledContract, params: BoundParams, events: list[Event], data: st.DataObject
) -> None:
    funded = escrow_minor(contract, params)
    escrow = Escrow(contract.escrow.currency, funded, funded)
    state: ContractState | None = None
    paid = 0
    seen_actions: set[str] = set()
    fired_in_call: dict[str, int] = {}
    now = T_START
    cut = 0
    for call in range(data.draw(st.integers(1, 5))):
        cut = data.draw(st.integers(cut, len(events)))
        now = data.draw(st.integers(now, T_END + 86400 * 400))
        result = evaluate(contract, params, escrow, events[:cut], now, state)
        assert result.rejected == ()
        for leg in result.legs:
            assert leg.leg_id not in seen_actions, "an action paid twice"
            seen_actions.add(leg.leg_id)
            assert fired_in_call.setdefault(leg.clause, call) == call, "a clause fired twice"
            if leg.kind == "deliver_title":
                assert leg.amount_minor == 0
                assert leg.title is not None
            else:
                assert leg.amount_minor > 0, "zero or negative leg"
                assert leg.currency == contract.escrow.currency
            paid += leg.amount_minor
        assert paid <= funded, "paid more than the escrow"
        assert result.escrow.remaining_minor == funded - paid
        fired = [f.clause for f in result.state.fired]
        assert len(fired) == len(set(fired))
        groups = Counter(c.group for c in contract.clauses if c.id in fired and c.group)
        assert all(count == 1 for count in groups.values()), "two clauses of a one-of fired"
        if state is not None and state.terminal:
            assert result.legs == ()
            assert result.state == state
        escrow, state = result.escrow, result.state


@PROPERTY_SETTINGS
@given(st.sampled_from(EXAMPLE_NAMES), st.data())
def test_evaluator_conserves_money_on_random_event_sequences(
    name: str, data: st.DataObject
) -> None:
    contract = compile_source(EXAMPLE_TEXTS[name]).contract
    assert contract is not None
    use_spec = data.draw(st.booleans())
    params = (
        bind_params(contract, spec_params(Path(f"examples/contracts/{name}.contract"))).params
        if use_spec
        else _random_params(contract, data)
    )
    if params is None:
        return
    events = data.draw(_events_for(contract, params))
    _check_money_invariants(contract, params, events, data)


def test_event_generator_reaches_payouts() -> None:
    """Guard against a vacuous property: the generated events do make clauses fire."""
    fired_somewhere = 0

    @PROPERTY_SETTINGS
    @given(st.sampled_from(EXAMPLE_NAMES), st.data())
    def probe(name: str, data: st.DataObject) -> None:
        nonlocal fired_somewhere
        contract = compile_source(EXAMPLE_TEXTS[name]).contract
        assert contract is not None
        params = bind_params(
            contract, spec_params(Path(f"examples/contracts/{name}.contract"))
        ).params
        assert params is not None
        events = data.draw(_events_for(contract, params))
        funded = escrow_minor(contract, params)
        result = evaluate(
            contract, params, Escrow(contract.escrow.currency, funded, funded), events, T_END
        )
        if any(leg.clause != "deadline" for leg in result.legs):
            fired_somewhere += 1

    probe()
    assert fired_somewhere >= 10
