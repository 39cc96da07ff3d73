"""The editor features (contracts_dsl.ide) in process: they never raise, whatever the text and
wherever the cursor, and the quick fixes fix what they say."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contracts_dsl import check_source
from contracts_dsl.ide import Analysis, quick_fix

from ._support import BASE, EXAMPLES, PROPERTY_SETTINGS, spec_params
from .test_properties import mutated_examples


@PROPERTY_SETTINGS
@given(mutated_examples(), st.data())
def test_features_never_raise_on_mutants(text: str, data: st.DataObject) -> None:
    analysis = Analysis(text, "mutant.contract")
    path = EXAMPLES / "overseas-warehouse-delivery.contract"
    example = analysis.bind_example(spec_params(path))
    for _ in range(5):
        offset = data.draw(st.integers(0, len(analysis.source.text)))
        analysis.hover(offset, example)
        analysis.completions(offset)
        occurrence = analysis.at(offset)
        if occurrence is not None:
            assert analysis.definitions(occurrence) is not None
            spans = analysis.references(occurrence, include_declaration=True)
            assert occurrence.span in spans
    analysis.inlay_hints(example)
    analysis.outline()
    for diagnostic in analysis.diagnostics:
        quick_fix(diagnostic)


def test_quick_fixes_fix_what_they_say() -> None:
    broken = BASE + "when receipt.signd() by buyr -> pay remainder to sellr\n"
    analysis = Analysis(broken)
    text = broken
    # Apply from the end so earlier offsets stay valid.
    for diagnostic in sorted(analysis.diagnostics, key=lambda d: -d.span.start):
        fix = quick_fix(diagnostic)
        assert fix is not None, diagnostic.code
        replacement, _ = fix
        text = text[: diagnostic.span.start] + replacement + text[diagnostic.span.end :]
    assert check_source(text).diagnostics == ()


def test_nbsp_and_nfc_fixes() -> None:
    text = BASE.replace("param buyer  :", "param\u00a0buyer  :") + (
        'when receipt.signed(order == "cafe\u0301") by buyer -> pay remainder to seller\n'
    )
    analysis = Analysis(text)
    fixed = text
    for diagnostic in sorted(analysis.diagnostics, key=lambda d: -d.span.start):
        fix = quick_fix(diagnostic)
        assert fix is not None, diagnostic.code
        fixed = fixed[: diagnostic.span.start] + fix[0] + fixed[diagnostic.span.end :]
    assert check_source(fixed).diagnostics == ()
