"""The parser: AST shape and spans, recovery, literals, reserved words and limits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts_dsl import ast_nodes as a
from contracts_dsl import limits, parse

from ._support import BASE


def _codes(text: str) -> list[str]:
    return [d.code for d in parse(text).diagnostics]


def test_sketch_parses_to_typed_nodes_with_spans() -> None:
    text = BASE + (
        'when customs.cleared(declaration == "D1") by buyer\n'
        '  and iot.arrived(site in ["A", "B"]) by seller within 14 days after customs.cleared\n'
        "  -> pay 30% of 1000.00 CNY to seller in HKD as penalty\n"
    )
    result = parse(text)
    assert result.diagnostics == ()
    assert result.tree is not None
    clause = result.tree.items[-1]
    assert isinstance(clause, a.Clause)
    assert isinstance(clause.condition, a.AllOf)
    first, second = clause.condition.items
    assert isinstance(first, a.Pattern)
    assert isinstance(second, a.Pattern)
    assert first.event_type.name == "customs.cleared"
    assert text[first.span.start : first.span.end].startswith("customs.cleared(")
    assert second.constraints[0].op == "in"
    assert [v.value for v in second.constraints[0].values if isinstance(v, a.TextLit)] == [
        "A",
        "B",
    ]
    within = second.timings[0]
    assert isinstance(within, a.Within)
    assert isinstance(within.duration, a.DurationLit)
    assert within.duration.seconds == 14 * 86400
    action = clause.actions[0]
    assert isinstance(action, a.PayAction)
    assert action.penalty
    assert action.target_currency is not None
    assert action.target_currency.name == "HKD"
    assert isinstance(action.amount, a.PercentAmount)
    assert action.amount.percent == Decimal("30")
    assert isinstance(action.amount.of, a.MoneyLit)
    assert action.amount.of.amount == Decimal("1000.00")
    span = action.party.span
    assert (span.line, text.splitlines()[span.line - 1][span.column - 1 : span.end_column - 1]) == (
        span.line,
        "seller",
    )


def test_parenthesised_same_operator_is_flattened() -> None:
    text = (
        BASE + "when (a.b() by buyer and c.d() by buyer) and e.f() by buyer -> pay 1% to seller\n"
    )
    tree = parse(text).tree
    assert tree is not None
    clause = tree.items[-1]
    assert isinstance(clause, a.Clause)
    assert isinstance(clause.condition, a.AllOf)
    assert len(clause.condition.items) == 3


def test_or_inside_and_keeps_structure() -> None:
    text = BASE + "when a.b() by buyer and (c.d() by buyer or e.f() by buyer) -> pay 1% to seller\n"
    tree = parse(text).tree
    assert tree is not None
    clause = tree.items[-1]
    assert isinstance(clause, a.Clause)
    assert isinstance(clause.condition, a.AllOf)
    assert isinstance(clause.condition.items[1], a.AnyOf)


def test_comments_are_collected_and_ignored() -> None:
    text = "# top\n" + BASE + "when a.b() by buyer # why\n  -> pay 1% to seller\n"
    result = parse(text)
    assert result.tree is not None
    assert [c.text for c in result.tree.comments] == ["# top", "# why"]


def test_every_broken_statement_is_reported_in_one_run() -> None:
    text = (
        'contract "x" version 1\n'
        "param a : walet\n"
        "param b : wallet\n"
        "when a.b() by b -> pay 10 to b\n"
        "when c.d() by b -> pay 1% to b\n"
        'oracle o = quorum 2 of ["x" "y"]\n'
    )
    result = parse(text)
    lines = [d.span.line for d in result.diagnostics]
    assert lines == [2, 4, 6]
    assert all(d.code == "CD002" for d in result.diagnostics)
    assert result.tree is not None
    assert "a" in result.recovered_names
    assert "o" in result.recovered_names


def test_names_from_broken_statements_are_not_reported_unknown() -> None:
    from contracts_dsl import check_source

    text = BASE.replace("param seller : wallet", "param seller : walet") + (
        "when receipt.signed() by buyer -> pay remainder to seller\n"
    )
    codes = [d.code for d in check_source(text).diagnostics]
    assert codes == ["CD002"]


def test_unexpected_end_of_file() -> None:
    diagnostics = parse(BASE + "when a.b() by buyer ->").diagnostics
    assert [d.code for d in diagnostics] == ["CD003"]
    assert "`pay`" in diagnostics[0].label


@pytest.mark.parametrize(
    ("literal", "fragment"),
    [
        ("2026-12-31T00:00:00", "offset"),
        ("2026-13-01T00:00:00Z", "not a valid date"),
        ("1969-12-31T00:00:00Z", "year"),
        ("2026-12-31T00:00:00.1234567Z", "offset"),
        ("2026-12-31T24:00:00+08:00", "not a valid date"),
        ("2026-12-31T00:00:00+24:00", "offset is out of range"),
    ],
)
def test_invalid_timestamps(literal: str, fragment: str) -> None:
    text = (
        BASE.replace("2026-12-31T00:00:00+08:00", literal)
        + "when a.b() by buyer -> pay 1% to seller\n"
    )
    diagnostics = parse(text).diagnostics
    assert [d.code for d in diagnostics] == ["CD004"]
    assert fragment in diagnostics[0].message


def test_timestamp_with_fraction_and_z() -> None:
    text = BASE.replace("2026-12-31T00:00:00+08:00", "2026-12-30T16:00:00.000001Z")
    tree = parse(text + "when a.b() by buyer -> pay 1% to seller\n").tree
    assert tree is not None
    deadline = tree.items[4]
    assert isinstance(deadline, a.DeadlineDecl)
    assert isinstance(deadline.at, a.TimestampLit)
    assert deadline.at.value_us == 1798646400000001


def test_reserved_words_cannot_be_names() -> None:
    assert _codes(BASE + "when a.b() by buyer -> deliver title title to seller\n") == ["CD010"]


def test_text_escapes() -> None:
    tree = parse(BASE + 'when a.b(x == "say \\"hi\\"\\n") by buyer -> pay 1% to seller\n').tree
    assert tree is not None
    clause = tree.items[-1]
    assert isinstance(clause, a.Clause)
    assert isinstance(clause.condition, a.Pattern)
    value = clause.condition.constraints[0].value
    assert isinstance(value, a.TextLit)
    assert value.value == 'say "hi"\n'


def test_unterminated_text() -> None:
    diagnostics = parse(BASE + 'oracle o = "abc\n').diagnostics
    assert diagnostics[0].code == "CD009"
    assert "unterminated" in diagnostics[0].message


def test_whole_numbers_required() -> None:
    assert "CD005" in _codes('contract "x" version 1.5\n')
    assert "CD005" in _codes(BASE + 'oracle o = quorum 1.5 of ["a"]\n')


def test_number_digit_limit() -> None:
    digits = "9" * (limits.NUMBER_DIGITS_MAX + 1)
    assert _codes(BASE + f"when a.b(x > {digits}) by buyer -> pay 1% to seller\n") == ["CD005"]
    ok_digits = "9" * limits.NUMBER_DIGITS_MAX
    assert _codes(BASE + f"when a.b(x > {ok_digits}) by buyer -> pay 1% to seller\n") == []


def test_text_length_limit() -> None:
    long_text = "x" * (limits.TEXT_LITERAL_CHARS_MAX + 1)
    assert _codes(BASE + f'oracle o = "{long_text}"\n') == ["CD009"]
    assert _codes(BASE + f'oracle o = "{long_text[1:]}"\n') == []


def test_source_size_limit() -> None:
    at_limit = "#" * (limits.SOURCE_BYTES_MAX - 1) + "\n"
    assert "CD006" not in _codes(at_limit)
    assert _codes(at_limit + "#") == ["CD006"]
    # Multi-byte characters count as bytes, not characters.
    assert _codes("#" + "中" * (limits.SOURCE_BYTES_MAX // 3 + 1)) == ["CD006"]


def test_nesting_depth_limit() -> None:
    depth = limits.NESTING_DEPTH_MAX - 1  # the pattern's own parentheses are one level
    ok = BASE + "when " + "(" * depth + "a.b() by buyer" + ")" * depth + " -> pay 1% to seller\n"
    assert parse(ok).diagnostics == ()
    deep = (
        BASE
        + "when "
        + "(" * (depth + 1)
        + "a.b() by buyer"
        + ")" * (depth + 1)
        + " -> pay 1% to seller\n"
    )
    assert _codes(deep) == ["CD007"]
    # Brackets inside strings and comments do not count.
    quoted = BASE + 'oracle o = "' + "(" * 50 + '"  # ' + "(" * 50 + "\n"
    assert parse(quoted).diagnostics == ()


def _clauses(count: int) -> str:
    return "".join(f"when e.x{i}() by buyer -> pay 1% to seller\n" for i in range(count))


@pytest.mark.parametrize(
    ("what", "make_ok", "make_over"),
    [
        ("clauses", lambda n: BASE + _clauses(n), limits.CLAUSES_MAX),
        (
            "parameters",
            lambda n: BASE + "".join(f"param p{i} : text\n" for i in range(n - 2)),
            limits.PARAMS_MAX,
        ),
        (
            "oracles",
            lambda n: BASE + "".join(f'oracle o{i} = "s"\n' for i in range(n)),
            limits.ORACLES_MAX,
        ),
        (
            "event declarations",
            lambda n: BASE + "".join(f"event e.x{i}()\n" for i in range(n)),
            limits.EVENT_DECLS_MAX,
        ),
        (
            "attributes",
            lambda n: BASE + "event e.x(" + ", ".join(f"a{i}: text" for i in range(n)) + ")\n",
            limits.ATTRIBUTES_MAX,
        ),
        (
            "event patterns in one clause",
            lambda n: (
                BASE
                + "when "
                + " and ".join(f"e.x{i}() by buyer" for i in range(n))
                + " -> pay 1% to seller\n"
            ),
            limits.PATTERNS_PER_CLAUSE_MAX,
        ),
        (
            "constraints in one pattern",
            lambda n: (
                BASE
                + "when e.x("
                + ", ".join(f"a{i} == 1" for i in range(n))
                + ") by buyer -> pay 1% to seller\n"
            ),
            limits.CONSTRAINTS_PER_PATTERN_MAX,
        ),
        (
            "actions in one clause",
            lambda n: (
                BASE
                + "when e.x() by buyer -> "
                + " and ".join("pay 1% to seller" for _ in range(n))
                + "\n"
            ),
            limits.ACTIONS_PER_CLAUSE_MAX,
        ),
        (
            "list items",
            lambda n: (
                BASE
                + "when e.x(a in ["
                + ", ".join(str(i) for i in range(n))
                + "]) by buyer -> pay 1% to seller\n"
            ),
            limits.LIST_ITEMS_MAX,
        ),
        (
            "quorum members",
            lambda n: (
                BASE + "oracle o = quorum 1 of [" + ", ".join(f'"s{i}"' for i in range(n)) + "]\n"
            ),
            limits.LIST_ITEMS_MAX,
        ),
    ],
)
def test_count_limits(what: str, make_ok: object, make_over: int) -> None:
    assert callable(make_ok)
    at_limit = parse(make_ok(make_over))
    assert "CD008" not in [d.code for d in at_limit.diagnostics]
    over = parse(make_ok(make_over + 1))
    limit_diagnostics = [d for d in over.diagnostics if d.code == "CD008"]
    assert len(limit_diagnostics) == 1
    assert what in limit_diagnostics[0].message


def test_recovery_stops_after_the_syntax_error_limit() -> None:
    text = "param x : walet\n" * (limits.SYNTAX_ERRORS_MAX + 10)
    result = parse(text)
    assert len(result.diagnostics) == limits.SYNTAX_ERRORS_MAX
    assert result.tree is None
