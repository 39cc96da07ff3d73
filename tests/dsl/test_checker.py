"""The checker's money-flow, timing and typing rules beyond the one-example-per-code goldens."""

from __future__ import annotations

import pytest

from contracts_dsl import check_source

from ._support import BASE


def _codes(body: str, base: str = BASE) -> list[str]:
    return [d.code for d in check_source(base + body).diagnostics]


def test_clean_contract_has_no_diagnostics() -> None:
    assert _codes("when receipt.signed() by buyer -> pay remainder to seller\n") == []


def test_percentages_in_one_of_count_once() -> None:
    body = (
        "when iot.arrived() by seller -> pay 60% to seller\n"
        "one of {\n"
        "  when receipt.signed() by buyer -> pay 40% to seller\n"
        "  when customs.cleared() by buyer -> pay 40% to buyer as penalty\n"
        "}\n"
    )
    assert _codes(body) == []
    over = body.replace("pay 40% to seller", "pay 41% to seller")
    assert _codes(over) == ["CD045"]


def test_percentages_of_the_escrow_param_are_percentages_of_the_escrow() -> None:
    base = BASE.replace("escrow 100.00 CNY from buyer", "escrow price from buyer").replace(
        "param seller : wallet", "param seller : wallet\nparam price  : money CNY"
    )
    body = "when iot.arrived() by seller -> pay 60% of price to seller\n"
    assert _codes(body + "when receipt.signed() by buyer -> pay 40% to seller\n", base) == []
    assert _codes(body + "when receipt.signed() by buyer -> pay 41% to seller\n", base) == ["CD045"]


def test_deadline_actions_are_on_every_path() -> None:
    base = BASE.replace(
        "refund remainder to buyer", "pay 50% to seller as penalty and refund remainder to buyer"
    )
    assert _codes("when receipt.signed() by buyer -> pay 50% to seller\n", base) == []
    assert _codes("when receipt.signed() by buyer -> pay 51% to seller\n", base) == ["CD045"]


def test_deadline_remainder_does_not_count_as_a_second_remainder() -> None:
    assert _codes("when receipt.signed() by buyer -> pay remainder to seller\n") == []


def test_remainder_in_one_of_alternatives_is_fine() -> None:
    body = (
        "one of {\n"
        "  when receipt.signed() by buyer -> pay remainder to seller\n"
        "  when iot.arrived() by seller -> refund remainder to buyer\n"
        "}\n"
    )
    assert _codes(body) == []


def test_remainder_twice_in_one_clause() -> None:
    body = "when receipt.signed() by buyer -> pay remainder to seller and refund remainder\n"
    assert _codes(body) == ["CD050"]


def test_full_percentage_empties_the_escrow_for_later_actions() -> None:
    body = "when receipt.signed() by buyer -> pay 100% to seller and pay 1.00 CNY to buyer\n"
    assert "CD051" in _codes(body)


def test_title_after_remainder_is_dvp_not_an_error() -> None:
    base = BASE.replace("param seller : wallet", "param seller : wallet\nparam bol    : title")
    body = (
        "when receipt.signed() by buyer -> pay remainder to seller and deliver title bol to buyer\n"
    )
    assert _codes(body, base) == []


def test_fixed_amounts_with_literal_escrow() -> None:
    ok = "when receipt.signed() by buyer -> pay 60.00 CNY to seller and pay 40% to seller\n"
    assert _codes(ok) == []
    over = "when receipt.signed() by buyer -> pay 60.01 CNY to seller and pay 40% to seller\n"
    assert _codes(over) == ["CD046"]


@pytest.mark.parametrize(
    ("constraints", "dead"),
    [
        ("max_temp_c > 8, max_temp_c < 5", True),
        ("max_temp_c >= 8, max_temp_c <= 8", False),
        ("max_temp_c > 8, max_temp_c <= 8", True),
        ("max_temp_c >= 8, max_temp_c <= 8, max_temp_c != 8", True),
        ("max_temp_c in [1, 2], max_temp_c > 2", True),
        ("max_temp_c in [1, 2, 3], max_temp_c > 2", False),
        ("max_temp_c == 1, max_temp_c == 1.0", False),
        ('container == "A", container == "B"', True),
        ('container in ["A", "B"], container not in ["A"]', False),
        ('container in ["A"], container != "A"', True),
        ('container != "A", container != "B"', False),
    ],
)
def test_contradictory_constraints(constraints: str, dead: bool) -> None:
    body = (
        f"when iot.condition({constraints}) by seller -> pay 10% to buyer as penalty\n"
        "when receipt.signed() by buyer -> pay remainder to seller\n"
    )
    assert ("CD052" in _codes(body)) is dead


def test_parameters_are_unknown_to_the_constraint_solver() -> None:
    base = BASE.replace("param seller : wallet", "param seller : wallet\nparam limit  : number")
    body = (
        "when iot.condition(max_temp_c > limit, max_temp_c < 5) by seller"
        " -> pay 10% to buyer as penalty\n"
        "when receipt.signed() by buyer -> pay remainder to seller\n"
    )
    assert _codes(body, base) == ["CD065"]  # no CD052; the penalty can be starved (CD065)


def test_empty_time_window_against_the_deadline() -> None:
    body = (
        "when iot.arrived() by seller after 2027-01-01T00:00:00Z -> pay 10% to seller\n"
        "when receipt.signed() by buyer -> pay remainder to seller\n"
    )
    assert _codes(body) == ["CD052"]


def test_circular_windows() -> None:
    body = (
        "when iot.arrived() by seller within 1 day after receipt.signed -> pay 10% to seller\n"
        "when receipt.signed() by buyer within 1 day after iot.arrived -> pay remainder to seller\n"
    )
    assert _codes(body) == ["CD054", "CD054"]


def test_window_anchor_with_another_accepting_pattern_is_fine() -> None:
    body = (
        "when iot.arrived() by seller -> pay 10% to seller\n"
        "when receipt.signed() by buyer within 1 day after iot.arrived -> pay remainder to seller\n"
    )
    assert _codes(body) == []


def test_wallet_and_title_params_compare_with_text_attributes() -> None:
    base = BASE.replace("param seller : wallet", "param seller : wallet\nparam bol    : title")
    body = (
        "when receipt.signed(signer == buyer, order == bol) by buyer"
        " -> pay remainder to seller and deliver title bol to buyer\n"
    )
    assert _codes(body, base) == []


def test_bool_attribute_needs_a_bool_literal() -> None:
    body = "when customs.cleared(duty_paid == buyer) by buyer -> pay remainder to seller\n"
    assert _codes(body) == ["CD031"]


def test_refund_without_party_goes_to_the_funder() -> None:
    assert _codes("when receipt.signed() by seller -> refund remainder\n") == []


def test_oracle_used_where_a_wallet_is_needed() -> None:
    base = BASE.replace("param seller : wallet", 'param seller : wallet\noracle bank = "bank.hk"')
    body = "when receipt.signed() by bank -> pay remainder to bank\n"
    assert _codes(body, base) == ["CD030"]


def test_unused_oracle_and_event_declaration_warn() -> None:
    base = BASE + 'oracle bank = "bank.hk"\nevent ebl.presented(bill_no: text)\n'
    codes = _codes("when receipt.signed() by buyer -> pay remainder to seller\n", base)
    assert codes == ["CD026", "CD026"]


def test_suggestions_for_misspelt_names() -> None:
    result = check_source(BASE + "when receipt.signed() by buyr -> pay remainder to seller\n")
    assert result.diagnostics[0].help == "did you mean `buyer`?"


def test_checker_reports_all_problems_of_a_file() -> None:
    body = (
        "when receipt.signed() by buyr -> pay remainder to sellr\n"
        "when customs.clear() by buyer -> pay 10.00 USD to seller\n"
    )
    codes = sorted(_codes(body))
    assert codes == ["CD020", "CD020", "CD022", "CD040"]
