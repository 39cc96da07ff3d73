"""The files editors read: the TextMate grammar and the spec JSON Schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from contracts_dsl.cli import main
from contracts_dsl.parser import keywords
from contracts_dsl.spec import spec_schema, validate_spec

from ._support import EXAMPLES, ROOT

GRAMMAR = ROOT / "contracts_dsl" / "editors" / "condpay.tmLanguage.json"


def _grammar() -> dict[str, object]:
    grammar: dict[str, object] = json.loads(GRAMMAR.read_text(encoding="utf-8"))
    return grammar


def _rules(node: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        if "match" in node:
            found.append(node)
        for value in node.values():
            found.extend(_rules(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_rules(value))
    return found


def test_grammar_highlights_every_keyword() -> None:
    grammar = _grammar()
    assert grammar["scopeName"] == "source.condpay"
    assert grammar["fileTypes"] == ["contract"]
    repository = grammar["repository"]
    assert isinstance(repository, dict)
    keyword_rules = _rules(repository["keywords"])
    for word in sorted(keywords()):
        assert any(re.fullmatch(str(r["match"]), word) for r in keyword_rules), word


def test_grammar_patterns_compile_and_scope_the_language() -> None:
    rules = _rules(_grammar())
    for rule in rules:
        re.compile(str(rule["match"]))  # also valid Oniguruma: no Python-only syntax is used
    by_name = {str(r.get("name")): re.compile(str(r["match"])) for r in rules if "name" in r}
    assert by_name["constant.other.timestamp.condpay"].fullmatch("2026-12-31T00:00:00+08:00")
    assert by_name["constant.numeric.percent.condpay"].fullmatch("30.5%")
    assert by_name["entity.name.type.event.condpay"].fullmatch("customs.cleared")
    assert by_name["comment.line.number-sign.condpay"].match("# a note")


def test_example_specs_reference_and_satisfy_the_schema() -> None:
    for path in sorted(EXAMPLES.glob("*.spec.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        schema_path = (path.parent / document["$schema"]).resolve()
        assert schema_path == ROOT / "contracts_dsl" / "spec.schema.json", path.name
        assert validate_spec(document) == [], path.name


def test_schema_errors_have_a_path() -> None:
    document = {
        "params": {"buyer": "w"},
        "cases": [{"events": [{"id": "e1", "type": "x.y", "oracle": "o"}], "expect": {"legz": []}}],
    }
    shown = [str(e) for e in validate_spec(document)]
    assert shown == [
        "$.cases[0].events[0]: 'observed_at' is a required property",
        "$.cases[0].expect: Additional properties are not allowed ('legz' was unexpected)",
    ]


def test_dsl_test_reports_spec_errors_with_their_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contract = tmp_path / "x.contract"
    contract.write_text((EXAMPLES / "prepayment.contract").read_text(encoding="utf-8"))
    spec = json.loads((EXAMPLES / "prepayment.spec.json").read_text(encoding="utf-8"))
    spec["cases"][0]["events"][0]["observed_at"] = "yesterday"
    (tmp_path / "x.spec.json").write_text(json.dumps(spec), encoding="utf-8")
    assert main(["test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "$.cases[0].events[0].observed_at: 'yesterday' does not match" in out


def test_dsl_schema_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == spec_schema()


def test_diagnostic_links_point_at_headings_of_the_docs() -> None:
    from contracts_dsl import CODES
    from contracts_dsl.lsp import docs_anchor, docs_url

    docs = (ROOT / "docs" / "dsl.md").read_text(encoding="utf-8")
    headings = {
        re.sub(r"[^\w\- ]", "", line[4:].strip().lower()).replace(" ", "-")
        for line in docs.splitlines()
        if line.startswith("### ")
    }
    for code in CODES:
        assert docs_anchor(code) in headings, code
    url = docs_url()
    assert url is not None
    assert url.startswith("file://")
    assert url.endswith("/docs/dsl.md")
