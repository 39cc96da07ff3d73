"""Golden tests: every diagnostic code has an example whose rendered output is pinned.

Set CONDPAY_UPDATE_GOLDEN=1 to rewrite the .txt files after an intended change, then review the
diff like any other code change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contracts_dsl import CODES, check_source, limits, render_all
from contracts_dsl.cli import main

from ._support import GOLDEN, ROOT

UPDATE = os.environ.get("CONDPAY_UPDATE_GOLDEN") == "1"
GENERATED = {"CD006", "CD014"}  # sources built in code (too large / not UTF-8)


def _compare(name: str, rendered: str) -> None:
    expected_path = GOLDEN / f"{name}.txt"
    if UPDATE:
        expected_path.write_text(rendered, encoding="utf-8")
    assert expected_path.exists(), f"missing golden file {expected_path.name}"
    assert rendered == expected_path.read_text(encoding="utf-8")


def _golden_sources() -> list[Path]:
    return sorted(GOLDEN.glob("CD*.contract"))


@pytest.mark.parametrize("path", _golden_sources(), ids=lambda p: p.stem)
def test_rendered_diagnostics_are_pinned(path: Path) -> None:
    code = path.stem
    result = check_source(path.read_text(encoding="utf-8"), path.name)
    assert code in {d.code for d in result.diagnostics}, "the example must raise its own code"
    rendered = render_all(result.diagnostics, result.parsed.source) + "\n"
    assert f"[{code}]" in rendered
    assert "^" in rendered
    _compare(code, rendered)


def test_every_code_has_a_golden_example() -> None:
    have = {p.stem for p in _golden_sources()} | GENERATED
    assert have == set(CODES)


def test_golden_too_large() -> None:
    text = "# " + "x" * limits.SOURCE_BYTES_MAX + "\n"
    result = check_source(text, "CD006.contract")
    assert [d.code for d in result.diagnostics] == ["CD006"]
    _compare("CD006", render_all(result.diagnostics, result.parsed.source) + "\n")


def test_golden_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "CD014.contract"
    path.write_bytes(b'contract "caf\xe9" version 1\n')
    monkeypatch.chdir(tmp_path)
    assert main(["check", "CD014.contract"]) == 1
    _compare("CD014", capsys.readouterr().out)


def test_docs_show_every_code_with_its_pinned_example() -> None:
    docs = (ROOT / "docs" / "dsl.md").read_text(encoding="utf-8")
    for code, info in CODES.items():
        assert f"### {code} — {info.title} ({info.severity.value})" in docs, code
        pinned = (GOLDEN / f"{code}.txt").read_text(encoding="utf-8").split("\n\n")
        block = next(b for b in pinned if f"[{code}]" in b)
        assert block.rstrip("\n") in docs, f"docs/dsl.md shows an outdated example for {code}"


def test_docs_include_the_grammar_verbatim() -> None:
    docs = (ROOT / "docs" / "dsl.md").read_text(encoding="utf-8")
    grammar = (ROOT / "contracts_dsl" / "contract.lark").read_text(encoding="utf-8")
    assert grammar in docs
