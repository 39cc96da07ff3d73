"""The formatter: canonical layout, comments kept, idempotent, meaning unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts_dsl import compile_source, format_source

from ._support import example_paths

MESSY = """\
# Header comment
contract "fmt"   version 1
param buyer:wallet   # the importer
param seller : wallet
param price : money CNY

param declaration : text
# oracles below
oracle customs = "customs.cn.shenzhen"
oracle sensors = quorum 2 of ["iot.a","iot.b", "iot.c",]
escrow price from buyer
deadline 2026-12-31T00:00:00+08:00 -> refund remainder to buyer
when customs.cleared(declaration == declaration) by customs and (iot.arrived(site == "A") \
by sensors or iot.arrived(site=="B") by sensors)
  # pay the first tranche
  -> pay 30% to seller
clause final when receipt.signed() by buyer within 14 days after iot.arrived -> \
pay remainder to seller # rest
one of {
when iot.condition(max_temp_c > 8) by sensors -> pay 5% of price to buyer as penalty
when iot.condition(shock_g >= 4.5) by sensors -> pay 5% of price to buyer as penalty and \
pay 1% to buyer as penalty
}
# trailing
"""

EXPECTED = """\
# Header comment
contract "fmt" version 1

param buyer  : wallet  # the importer
param seller : wallet
param price  : money CNY

param declaration : text

# oracles below
oracle customs = "customs.cn.shenzhen"
oracle sensors = quorum 2 of ["iot.a", "iot.b", "iot.c"]

escrow price from buyer
deadline 2026-12-31T00:00:00+08:00 -> refund remainder to buyer

when customs.cleared(declaration == declaration) by customs
  and (iot.arrived(site == "A") by sensors or iot.arrived(site == "B") by sensors)
  # pay the first tranche
  -> pay 30% to seller

clause final
when receipt.signed() by buyer within 14 days after iot.arrived
  -> pay remainder to seller  # rest

one of {
  when iot.condition(max_temp_c > 8) by sensors
    -> pay 5% of price to buyer as penalty

  when iot.condition(shock_g >= 4.5) by sensors
    -> pay 5% of price to buyer as penalty
       and pay 1% to buyer as penalty
}

# trailing
"""


def test_canonical_layout() -> None:
    result = format_source(MESSY)
    assert result.text == EXPECTED
    assert result.changed


def test_idempotent_and_meaning_preserving() -> None:
    once = format_source(MESSY).text
    assert once is not None
    twice = format_source(once)
    assert twice.text == once
    assert not twice.changed
    before, after = compile_source(MESSY).contract, compile_source(once).contract
    assert before is not None
    assert after is not None
    assert before.hash == after.hash


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_examples_are_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert format_source(text).text == text


def test_syntax_errors_are_not_formatted() -> None:
    result = format_source('contract "x" version 1\nparam a : walet\n')
    assert result.text is None
    assert [d.code for d in result.diagnostics] == ["CD002"]


def test_semantic_errors_do_not_block_formatting() -> None:
    result = format_source('contract "x" version 1\nparam  a : wallet\n')
    assert result.text == 'contract "x" version 1\n\nparam a : wallet\n'


def test_text_escapes_are_normalised() -> None:
    result = format_source('contract "say \\"hi\\"\\t"   version 1\n')
    assert result.text == 'contract "say \\"hi\\"\\t" version 1\n'


def test_empty_and_comment_only_files() -> None:
    assert format_source("").text == ""
    assert format_source("# only a comment\n\n\n").text == "# only a comment\n"
