"""Every example contract checks clean, is formatted, and passes its spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts_dsl import check_source, run_spec

from ._support import example_paths


def test_there_are_at_least_eight_examples_each_with_a_spec() -> None:
    paths = example_paths()
    assert len(paths) >= 8
    for path in paths:
        assert path.with_name(path.stem + ".spec.json").is_file(), path


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_example_checks_clean(path: Path) -> None:
    """No error; a warning only where the spec expects it (a CD065 penalty that the seller's
    `remainder` can starve is a fact of those contracts, stated in their spec)."""
    result = check_source(path.read_text(encoding="utf-8"), str(path))
    assert not any(d.is_error for d in result.diagnostics)
    spec = json.loads(path.with_name(path.stem + ".spec.json").read_text(encoding="utf-8"))
    expected = [(d["code"], d["line"]) for d in spec.get("expect_diagnostics", [])]
    assert [(d.code, d.span.line) for d in result.diagnostics] == expected


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_example_passes_its_spec(path: Path) -> None:
    outcome = run_spec(path)
    assert outcome.failures == []
    assert outcome.cases >= 2
