"""Delivery versus payment (issue 10 item 7): a title is handed over only against its payment,
in full, in the same step — refused by the checker (CD058, CD064), by binding (PV010), and never
emitted by the evaluator when the clause paid short."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from contracts_dsl import Leg, check_source, compile_source, evaluate
from contracts_dsl.compiled import CompiledContract
from contracts_dsl.params import BoundParams

from ._support import bind, compile_ok, event, full_escrow

DVP_BASE = """\
contract "t" version 1

param buyer  : wallet
param seller : wallet
param bol    : title

event ebl.presented(bill_no: text)

escrow 100.00 CNY from buyer
deadline 2026-12-31T00:00:00+08:00 -> refund remainder to buyer

"""

# The contract of the report: a clause refunds everything, then a clause "pays" the remainder
# to the seller and hands the title to the buyer: the buyer gets the money back and the title.
EXPLOIT = (
    DVP_BASE
    + """\
clause refund_all
when receipt.signed() by buyer
  -> refund 100%

clause dvp
when ebl.presented() by buyer
  -> pay remainder to seller
     and deliver title bol to buyer
"""
)

PARAMS = {"buyer": "w-buyer", "seller": "w-seller", "bol": "EBL-1"}


def _codes(body: str, base: str = DVP_BASE) -> list[str]:
    return [d.code for d in check_source(base + body).diagnostics]


# -- the checker --------------------------------------------------------------------------------


def test_the_reported_exploit_is_refused() -> None:
    result = compile_source(EXPLOIT)
    assert result.contract is None
    errors = [d for d in result.diagnostics if d.is_error]
    assert [(d.code, d.span.line) for d in errors] == [("CD064", 18)]
    assert "delivered for nothing" in errors[0].message
    assert any("refund_all" in note for note in errors[0].notes)


@pytest.mark.parametrize(
    "money",
    [
        "refund remainder",  # the funder gets its money back: not a payment for the title
        "pay remainder to buyer",  # paid to the title's own recipient
        "pay remainder to seller as penalty",  # a penalty is not a price
        "refund 50% and pay 50% to buyer",
    ],
)
def test_a_delivery_must_pay_another_party(money: str) -> None:
    body = f"when ebl.presented() by buyer -> {money} and deliver title bol to buyer\n"
    assert "CD058" in _codes(body)
    assert compile_source(DVP_BASE + body).contract is None


def test_a_delivery_that_pays_another_party_in_full_is_dvp() -> None:
    assert (
        _codes(
            "when ebl.presented() by buyer -> deliver title bol to buyer and pay remainder "
            "to seller\n"
        )
        == []
    )
    assert (
        _codes(
            "when ebl.presented() by buyer -> pay 100% to seller and deliver title bol to buyer\n"
        )
        == []
    )


def test_the_deadline_delivers_only_against_payment_too() -> None:
    refund = DVP_BASE.replace(
        "-> refund remainder to buyer",
        "-> refund remainder to buyer and deliver title bol to buyer",
    )
    assert "CD058" in _codes("when ebl.presented() by buyer -> pay 10% to seller\n", refund)
    paid = DVP_BASE.replace(
        "-> refund remainder to buyer", "-> pay remainder to seller and deliver title bol to buyer"
    )
    assert _codes("when ebl.presented() by buyer -> pay 10% to seller\n", paid) == []
    # Any clause fires before the deadline: a clause that can take everything starves it.
    assert "CD064" in _codes("when ebl.presented() by buyer -> refund 100%\n", paid)


@pytest.mark.parametrize(
    ("others", "refused"),
    [
        ("when receipt.signed() by buyer -> refund 100%\n", True),
        ("when receipt.signed() by buyer -> refund 99%\n", False),
        (
            "when receipt.signed() by buyer -> refund 60%\n"
            "when iot.arrived() by seller -> pay 40% to buyer as penalty\n",
            True,
        ),
        (
            "when receipt.signed() by buyer -> refund 60%\n"
            "when iot.arrived() by seller -> pay 39.99% to buyer as penalty\n",
            False,
        ),
        (
            "when receipt.signed() by buyer -> pay 60.00 CNY to buyer as penalty\n"
            "when iot.arrived() by seller -> pay 40.00 CNY to buyer as penalty\n",
            True,
        ),
        # Only one of a `one of` block fires: the worst one counts.
        (
            "one of {\n"
            "  when receipt.signed() by buyer -> refund 100%\n"
            "  when iot.arrived() by seller -> refund 10%\n"
            "}\n",
            True,
        ),
    ],
)
def test_a_remainder_that_can_find_the_escrow_empty_is_refused(others: str, refused: bool) -> None:
    body = (
        others
        + "when ebl.presented() by buyer"
        + " -> pay remainder to seller and deliver title bol to buyer\n"
    )
    assert ("CD064" in _codes(body)) is refused


def test_alternatives_in_one_of_are_not_on_the_delivery_path() -> None:
    body = (
        "one of {\n"
        "  clause refund_all when receipt.signed() by buyer -> refund 100%\n"
        "  clause dvp when ebl.presented() by buyer\n"
        "    -> pay remainder to seller and deliver title bol to buyer\n"
        "}\n"
    )
    assert _codes(body) == []


def test_a_fixed_payment_that_can_be_capped_is_refused() -> None:
    capped = (
        "when iot.arrived() by seller -> pay remainder to seller\n"
        "when ebl.presented() by buyer -> pay 40% to seller and deliver title bol to buyer\n"
    )
    assert "CD064" in _codes(capped)
    fits = (
        "when iot.arrived() by seller -> pay 60% to seller\n"
        "when ebl.presented() by buyer -> pay 40% to seller and deliver title bol to buyer\n"
    )
    assert _codes(fits) == []


def test_a_clause_that_needs_the_delivery_events_and_comes_after_it_cannot_fire_first() -> None:
    delivery = "when ebl.presented() by buyer -> pay 40% to seller and deliver title bol to buyer\n"
    later = (
        "when ebl.presented() by buyer and receipt.signed() by buyer -> pay remainder to seller\n"
    )
    assert _codes(delivery + later) == []
    # Listed first, it would fire first at the same event: refused.
    assert "CD064" in _codes(later + delivery)
    # A looser pattern does not make the other clause wait for the delivery.
    looser = delivery.replace("ebl.presented()", 'ebl.presented(bill_no == "B1")')
    assert "CD064" in _codes(looser + later)


def test_parameter_amounts_are_decided_at_binding() -> None:
    base = DVP_BASE.replace(
        "param bol    : title", "param bol    : title\nparam fee    : money CNY"
    )
    body = (
        "when receipt.signed() by buyer -> pay fee to buyer as penalty\n"
        "when ebl.presented() by buyer -> pay remainder to seller and deliver title bol to buyer\n"
    )
    contract = compile_ok(base + body)
    assert bind(contract, {**PARAMS, "fee": "99.99 CNY"}) is not None
    from contracts_dsl import bind_params

    starved = bind_params(contract, {**PARAMS, "fee": "100.00 CNY"})
    assert [(e.code, e.field) for e in starved.errors] == [("PV010", "escrow")]
    assert "`remainder` can find the escrow empty" in starved.errors[0].message


def test_binding_refuses_a_payee_that_is_the_titles_recipient() -> None:
    from contracts_dsl import bind_params

    contract = compile_ok(
        DVP_BASE + "when ebl.presented() by buyer -> pay remainder to seller and deliver title "
        "bol to buyer\n"
    )
    same = bind_params(contract, {**PARAMS, "seller": "w-buyer"})
    assert [(e.code, e.field) for e in same.errors] == [("PV010", "buyer")]


def test_starvation_by_another_partys_remainder_is_a_warning() -> None:
    penalty = "when iot.condition(max_temp_c > 8) by seller -> pay 5% to buyer as penalty\n"
    remainder = "when receipt.signed() by buyer -> pay remainder to seller\n"
    result = compile_source(
        DVP_BASE.replace("param bol    : title\n", "").replace(
            "event ebl.presented(bill_no: text)\n", ""
        )
        + penalty
        + remainder
    )
    assert [d.code for d in result.diagnostics] == ["CD065"]
    assert result.contract is not None  # a warning does not block compilation
    # The same party's own remainder takes what it would have been paid: no warning.
    same = "when iot.arrived() by seller -> pay 30% to seller\n"
    assert "CD065" not in _codes(same + remainder)
    # A remainder clause that waits for this clause's events fires after it: no warning.
    waits = (
        "when iot.condition(max_temp_c > 8) by seller and receipt.signed() by buyer"
        " -> pay remainder to seller\n"
    )
    assert "CD065" not in _codes(penalty + waits)


# -- the evaluator ------------------------------------------------------------------------------


def _unchecked(source_in_one_of: str) -> tuple[CompiledContract, BoundParams]:
    """The checker-approved contract with its `one of` block dissolved: what the checker would
    refuse, as a core holding old or hand-built compiled bytes could still evaluate it."""
    checked = compile_ok(source_in_one_of)
    params = bind(checked, PARAMS)
    clauses = tuple(dataclasses.replace(c, group=None) for c in checked.clauses)
    contract = dataclasses.replace(checked, clauses=clauses)
    assert compile_source(EXPLOIT).contract is None
    return contract, dataclasses.replace(params, contract_hash=contract.hash)


RECEIPT = event("r1", "receipt.signed", "buyer", "2026-05-01T10:00:00Z")
PRESENTED = event("p1", "ebl.presented", "buyer", "2026-05-02T10:00:00Z", bill_no="B1")


def _in_one_of(first: str) -> str:
    return DVP_BASE + (
        "one of {\n"
        f"  clause first when receipt.signed() by buyer -> {first}\n"
        "  clause dvp when ebl.presented() by buyer\n"
        "    -> pay remainder to seller and deliver title bol to buyer\n"
        "}\n"
    )


def _run(contract: CompiledContract, params: BoundParams, *events: Any) -> Any:
    escrow = full_escrow(contract, params)
    state = None
    legs: list[Leg] = []
    notes: list[str] = []
    for item in events:
        result = evaluate(
            contract,
            params,
            escrow,
            [e for e in events if e.observed_at_us <= item.observed_at_us],
            item.observed_at_us,
            state,
        )
        assert result.rejected == ()
        legs.extend(result.legs)
        notes.extend(result.notes)
        escrow, state = result.escrow, result.state
    return legs, notes, escrow, state


def test_the_evaluator_withholds_the_title_when_the_remainder_finds_nothing() -> None:
    contract, params = _unchecked(_in_one_of("refund 100%"))
    legs, notes, escrow, state = _run(contract, params, RECEIPT, PRESENTED)
    assert [(leg.clause, leg.kind, leg.amount_minor) for leg in legs] == [
        ("first", "refund", 10000)
    ]
    assert not any(leg.kind == "deliver_title" for leg in legs)
    assert any("title `bol` not delivered" in n and "dvp/0 paid nothing" in n for n in notes)
    assert escrow.remaining_minor == 0
    assert state.terminal_reason == "escrow_empty"  # the core frees the title when it ends
    assert [f.clause for f in state.fired] == ["first", "dvp"]


def test_the_evaluator_delivers_when_the_remainder_pays_something() -> None:
    contract, params = _unchecked(_in_one_of("refund 99%"))
    legs, _, _, _ = _run(contract, params, RECEIPT, PRESENTED)
    assert [(leg.leg_id, leg.kind, leg.amount_minor) for leg in legs] == [
        ("first/0", "refund", 9900),
        ("dvp/0", "pay", 100),
        ("dvp/1", "deliver_title", 0),
    ]


def test_the_evaluator_withholds_the_title_when_a_payment_is_capped() -> None:
    source = DVP_BASE + (
        "one of {\n"
        "  clause first when receipt.signed() by buyer -> pay 70% to seller\n"
        "  clause dvp when ebl.presented() by buyer\n"
        "    -> deliver title bol to buyer and pay 40% to seller\n"
        "}\n"
    )
    contract, params = _unchecked(source)
    legs, notes, escrow, _ = _run(contract, params, RECEIPT, PRESENTED)
    assert [(leg.leg_id, leg.kind, leg.amount_minor) for leg in legs] == [
        ("first/0", "pay", 7000),
        ("dvp/1", "pay", 3000),
    ]
    assert any("dvp/1 paid 30.00 CNY of 40.00 CNY" in n for n in notes)
    assert escrow.remaining_minor == 0
    # In the other order both pay in full and the title goes with the payment, after it.
    legs, _, _, _ = _run(contract, params, PRESENTED)
    assert [(leg.leg_id, leg.kind) for leg in legs] == [
        ("dvp/1", "pay"),
        ("dvp/0", "deliver_title"),
    ]


def test_the_evaluator_withholds_the_title_when_payee_and_recipient_are_one_wallet() -> None:
    contract = compile_ok(
        DVP_BASE + "when ebl.presented() by buyer -> pay remainder to seller and deliver title "
        "bol to buyer\n"
    )
    params = bind(contract, PARAMS)
    same = dataclasses.replace(params, values={**params.values, "seller": "w-buyer"})
    legs, notes, _, _ = _run(contract, same, PRESENTED)
    assert [leg.kind for leg in legs] == ["pay"]
    assert any("nothing was paid to another party" in n for n in notes)
