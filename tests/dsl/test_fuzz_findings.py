"""Regression tests for the rough edges an independent fuzz of the checker found (issue 14).

Each test failed on the code before the fix it names.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from contracts_dsl import (
    CompiledFormError,
    Escrow,
    check_source,
    compile_source,
    evaluate,
    format_source,
    limits,
    load_compiled,
    render_all,
)
from contracts_dsl import compiled as compiled_module
from contracts_dsl.cli import main
from contracts_dsl.compiled import canonical_json

from ._support import (
    BASE,
    EXAMPLES,
    PROPERTY_SETTINGS,
    bind,
    compile_ok,
    example_paths,
    full_escrow,
    spec_params,
)
from .test_properties import mutated_examples

CLOSE = "when receipt.signed() by buyer -> pay remainder to seller\n"


def _codes(text: str) -> list[str]:
    return [d.code for d in check_source(text).diagnostics]


# -- 1. fmt never turns a valid file into an invalid one; names have a length limit --------------


def test_a_name_longer_than_the_limit_is_cd015() -> None:
    long_name = "n" * (limits.NAME_CHARS_MAX + 1)
    text = (
        BASE
        + f"param {long_name} : text\n"
        + CLOSE.replace("receipt.signed()", f"receipt.signed(order == {long_name})")
    )
    result = check_source(text)
    assert [d.code for d in result.diagnostics] == ["CD015", "CD015"]
    assert result.diagnostics[0].span.column == len("param ") + 1
    ok_name = "n" * limits.NAME_CHARS_MAX
    assert _codes(text.replace(long_name, ok_name)) == []


def _params_block(names: list[str]) -> str:
    return "".join(f"param {name} : text\n" for name in names)


def test_fmt_refuses_to_grow_a_file_past_the_size_limit(tmp_path: Path) -> None:
    # 62 unused one-letter parameters and one of the longest allowed name: alignment pads each
    # short name to 64 characters (about 4 KB more). A comment fills the file close to the limit.
    names = [f"p{i:02d}" for i in range(limits.PARAMS_MAX - 3)] + ["n" * limits.NAME_CHARS_MAX]
    body = BASE + _params_block(names) + "\n" + CLOSE
    filler = "# " + "x" * (limits.SOURCE_BYTES_MAX - len(body.encode()) - 200) + "\n"
    text = filler + body
    assert len(text.encode()) <= limits.SOURCE_BYTES_MAX
    assert compile_source(text).contract is not None, "the input is a valid contract"
    result = format_source(text)
    assert result.text is None
    assert [d.code for d in result.diagnostics if d.is_error] == ["CD006"]
    path = tmp_path / "big.contract"
    path.write_text(text, encoding="utf-8")
    assert main(["fmt", str(path)]) == 1
    assert path.read_text(encoding="utf-8") == text, "the file is left as it was"


@PROPERTY_SETTINGS
@given(mutated_examples())
def test_fmt_output_always_fits_and_compiles_like_its_input(text: str) -> None:
    result = format_source(text)
    if result.text is None:
        return
    assert len(result.text.encode("utf-8", errors="surrogatepass")) <= limits.SOURCE_BYTES_MAX
    before = compile_source(text).contract
    if before is not None:
        after = compile_source(result.text).contract
        assert after is not None
        assert after.hash == before.hash


# -- 2. check --json keeps CD006 and CD014 -------------------------------------------------------


def test_check_json_reports_too_large_and_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.contract"
    big.write_text("# " + "x" * limits.SOURCE_BYTES_MAX + "\n", encoding="utf-8")
    latin = tmp_path / "latin.contract"
    latin.write_bytes(b'contract "caf\xe9" version 1\n')
    missing = tmp_path / "missing.contract"
    assert main(["check", "--json", str(big), str(latin), str(missing)]) == 1
    reports = json.loads(capsys.readouterr().out)
    assert [r["error"] for r in reports] == ["too_large", "not_utf8", "unreadable"]
    assert [d["code"] for d in reports[0]["diagnostics"]] == ["CD006"]
    assert [(d["code"], d["line"], d["column"]) for d in reports[1]["diagnostics"]] == [
        ("CD014", 1, 14)
    ]
    assert reports[2]["diagnostics"] == []
    assert "No such file" in reports[2]["message"]


# -- 3. past the diagnostics limit, a summary instead of silence ---------------------------------


def _many_unknown_payees(count: int) -> str:
    clauses = []
    for clause in range(count // limits.ACTIONS_PER_CLAUSE_MAX):
        actions = " and ".join(
            f"pay 0.01 CNY to x{clause}_{i}" for i in range(limits.ACTIONS_PER_CLAUSE_MAX)
        )
        clauses.append(f"when receipt.signed() by buyer -> {actions}\n")
    return BASE + "".join(clauses)


def test_diagnostics_past_the_limit_are_summarised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _many_unknown_payees(240)
    result = check_source(text, "many.contract")
    assert len(result.diagnostics) == limits.DIAGNOSTICS_MAX
    assert len(result.omitted) == 40
    assert not result.ok
    rendered = render_all(result.diagnostics, result.parsed.source, result.omitted)
    assert "... and 40 more diagnostic(s) not shown" in rendered
    assert rendered.endswith("many.contract: 240 error(s), 0 warning(s)")
    path = tmp_path / "many.contract"
    path.write_text(text, encoding="utf-8")
    assert main(["check", "--json", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)[0]
    assert (len(report["diagnostics"]), report["omitted"], report["omitted_errors"]) == (
        200,
        40,
        40,
    )


# -- 4. an unclosed `(` is a syntax error where it opened ----------------------------------------


def test_unclosed_bracket_is_reported_where_it_opened() -> None:
    broken = "when receipt.signed( by buyer -> pay 1% to seller\n"
    text = BASE + broken * (limits.NESTING_DEPTH_MAX + 2) + CLOSE
    result = check_source(text)
    codes = {d.code for d in result.diagnostics}
    assert "CD007" not in codes
    first = result.diagnostics[0]
    assert (first.code, first.message) == ("CD002", "`(` is never closed")
    assert (first.span.line, first.span.column) == (9, len("when receipt.signed") + 1)
    assert len(result.diagnostics) == limits.NESTING_DEPTH_MAX + 2


def test_unclosed_bracket_over_several_lines() -> None:
    text = BASE + "when (receipt.signed() by buyer\n  -> pay remainder to seller\n"
    first = check_source(text).diagnostics[0]
    assert (first.code, first.span.line, first.span.column) == ("CD002", 9, 6)


def test_deep_nesting_is_still_cd007() -> None:
    text = BASE + "when ((((((((( receipt.signed() by buyer ))))))))) -> pay 1% to seller\n"
    assert _codes(text) == ["CD007"]


# -- 5. evaluate never raises; load_compiled re-checks -------------------------------------------


def _prepayment() -> tuple[Any, Any, Escrow]:
    path = EXAMPLES / "prepayment.contract"
    contract = compile_ok(path.read_text(encoding="utf-8"))
    params = bind(contract, spec_params(path))
    return contract, params, full_escrow(contract, params)


@pytest.mark.parametrize(
    ("which", "field"),
    [("params", "params"), ("escrow", "escrow"), ("events", "events"), ("state", "state")],
)
def test_evaluate_rejects_inputs_of_the_wrong_type(which: str, field: str) -> None:
    contract, params, escrow = _prepayment()
    args: dict[str, Any] = {
        "contract": contract,
        "params": params,
        "escrow": escrow,
        "events": [],
        "now": 0,
        "state": None,
    }
    args[which] = {} if which == "state" else None
    evaluation = evaluate(**args)
    assert [(e.code, e.field) for e in evaluation.rejected] == [("EV007", field)]
    assert evaluation.legs == ()


def test_evaluate_rejects_a_contract_that_is_not_one() -> None:
    _, params, escrow = _prepayment()
    evaluation = evaluate(None, params, escrow, [], 0)  # type: ignore[arg-type]
    assert [(e.code, e.field) for e in evaluation.rejected] == [("EV007", "contract")]


def _tampered(path: Path, edit: Any) -> bytes:
    contract = compile_ok(path.read_text(encoding="utf-8"))
    document = json.loads(contract.canonical)
    edit(document)
    compiled_module._verified.clear()
    return canonical_json(document)


def _first_pay(document: dict[str, Any]) -> dict[str, Any]:
    for clause in document["clauses"]:
        for action in clause["actions"]:
            if action["kind"] == "pay" and action["amount"]["kind"] == "percent":
                return action  # type: ignore[no-any-return]
    raise AssertionError("no percentage payment")


def test_load_compiled_refuses_basis_points_over_100_percent() -> None:
    def edit(document: dict[str, Any]) -> None:
        _first_pay(document)["amount"]["bp"] = 20_000

    with pytest.raises(CompiledFormError, match="CD043"):
        load_compiled(_tampered(EXAMPLES / "prepayment.contract", edit))


def test_load_compiled_refuses_a_refund_to_the_seller() -> None:
    def edit(document: dict[str, Any]) -> None:
        for action in document["deadline"]["actions"]:
            if action["kind"] == "refund":
                action["party"] = "supplier"

    with pytest.raises(CompiledFormError, match="CD055"):
        load_compiled(_tampered(EXAMPLES / "prepayment.contract", edit))


def test_load_compiled_refuses_a_title_delivered_twice() -> None:
    def edit(document: dict[str, Any]) -> None:
        for clause in document["clauses"]:
            delivers = [a for a in clause["actions"] if a["kind"] == "deliver_title"]
            if delivers:
                clause["actions"].append(delivers[0])
                return
        raise AssertionError("no delivery")

    with pytest.raises(CompiledFormError, match="CD059"):
        load_compiled(_tampered(EXAMPLES / "dvp-ebl.contract", edit))


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_load_compiled_accepts_what_the_compiler_makes(path: Path) -> None:
    contract = compile_ok(path.read_text(encoding="utf-8"))
    compiled_module._verified.clear()
    assert load_compiled(contract.canonical).hash == contract.hash


@PROPERTY_SETTINGS
@given(mutated_examples())
def test_load_compiled_round_trips_every_compiled_mutant(text: str) -> None:
    contract = compile_source(text).contract
    if contract is None:
        return
    compiled_module._verified.clear()
    assert load_compiled(contract.canonical).hash == contract.hash


# -- 6. BOM, odd spaces and CR line ends ---------------------------------------------------------


def test_a_byte_order_mark_is_accepted() -> None:
    assert _codes("\ufeff" + BASE + CLOSE) == []


def test_cr_only_line_ends_are_line_ends() -> None:
    text = BASE + "# a comment\n" + CLOSE
    lf = compile_ok(text)
    cr = compile_source(text.replace("\n", "\r"))
    assert cr.contract is not None
    assert cr.contract.hash == lf.hash
    crlf = compile_source(text.replace("\n", "\r\n"))
    assert crlf.contract is not None
    assert crlf.contract.hash == lf.hash
    broken = check_source(BASE + "when receipt.signed() by buyr -> pay remainder to seller\n")
    broken_cr = check_source(broken.parsed.source.text.replace("\n", "\r"))
    assert [(d.code, d.span.line) for d in broken_cr.diagnostics] == [("CD020", 9)]


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", "\u200b"])
def test_an_odd_space_is_one_clear_diagnostic_at_its_place(space: str) -> None:
    text = BASE.replace("param buyer  :", f"param{space}buyer  :") + CLOSE
    result = check_source(text)
    assert [d.code for d in result.diagnostics] == ["CD001"]
    diagnostic = result.diagnostics[0]
    assert (diagnostic.span.line, diagnostic.span.column) == (3, 6)
    assert f"U+{ord(space):04X} {unicodedata.name(space)}" in diagnostic.message


# -- 7. Trojan Source and normal forms -----------------------------------------------------------


@pytest.mark.parametrize(
    ("inserted", "why"),
    [("\u202e", "bidirectional control"), ("\u2066", "bidirectional"), ("\u200b", "invisible")],
)
def test_text_literals_refuse_bidi_and_invisible_characters(inserted: str, why: str) -> None:
    text = BASE + CLOSE.replace("receipt.signed()", f'receipt.signed(order == "A{inserted}B")')
    result = check_source(text)
    assert [d.code for d in result.diagnostics] == ["CD009"]
    assert why in result.diagnostics[0].message
    assert result.diagnostics[0].span.column == len('when receipt.signed(order == "A') + 1


def test_comments_refuse_bidi_controls() -> None:
    text = BASE + "# pay the buyer \u202e\n" + CLOSE
    assert _codes(text) == ["CD001"]


def test_text_literals_must_be_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "café")
    text = BASE + CLOSE.replace("receipt.signed()", f'receipt.signed(order == "{decomposed}")')
    result = check_source(text)
    assert [d.code for d in result.diagnostics] == ["CD009"]
    assert '"café"' in (result.diagnostics[0].help or "")
    composed = text.replace(decomposed, "café")
    assert _codes(composed) == []


# -- 8. `within` anchors: the rule is explicit and warned about where it matters ----------------


def test_window_anchor_accepted_by_different_patterns_is_warned() -> None:
    text = (
        BASE
        + 'oracle sensors = "iot.lax3"\n'
        + 'when iot.arrived(site == "DOCK-1") by sensors -> pay 10% to seller\n'
        + 'when iot.arrived(site == "LAX-FBA-3") by sensors -> pay 20% to seller\n'
        + "when receipt.signed() by buyer within 14 days after iot.arrived"
        + " -> pay remainder to seller\n"
    )
    assert _codes(text) == ["CD066"]
    same = text.replace('"DOCK-1"', '"LAX-FBA-3"')
    assert _codes(same) == []


def test_no_example_draws_the_anchor_warning() -> None:
    for path in example_paths():
        assert "CD066" not in _codes(path.read_text(encoding="utf-8")), path.name


def test_events_argument_types_are_checked_before_use() -> None:
    contract, params, escrow = _prepayment()
    evaluation = evaluate(contract, params, escrow, "not events", 0)  # type: ignore[arg-type]
    assert [e.code for e in evaluation.rejected] == ["EV007"]
