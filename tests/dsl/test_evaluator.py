"""The evaluator's semantics: matching, windows, deadlines, rounding, caps, state, rejections."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from contracts_dsl import (
    ContractState,
    Escrow,
    Event,
    StateFormError,
    evaluate,
)
from contracts_dsl._literals import timestamp_us

from ._support import EXAMPLES, bind, compile_ok, event, full_escrow

OWD = (EXAMPLES / "overseas-warehouse-delivery.contract").read_text(encoding="utf-8")
OWD_PARAMS = {
    "buyer": "w-buyer",
    "seller": "w-seller",
    "price": "125000.00 CNY",
    "declaration": "D1",
}


def us(text: str) -> int:
    value = timestamp_us(text)
    assert isinstance(value, int)
    return value


def _owd() -> tuple[Any, Any, Escrow]:
    contract = compile_ok(OWD)
    params = bind(contract, OWD_PARAMS)
    return contract, params, full_escrow(contract, params)


CLEARED = event("c1", "customs.cleared", "customs", "2026-05-01T10:00:00Z", declaration="D1")
ARRIVED = event("a1", "iot.arrived", "sensors", "2026-05-20T10:00:00Z", site="LAX-FBA-3")


def test_window_is_inclusive_at_both_ends() -> None:
    contract, params, escrow = _owd()
    on_edge = event("r1", "receipt.signed", "buyer", "2026-06-03T10:00:00Z", signer="w-buyer")
    result = evaluate(contract, params, escrow, [CLEARED, ARRIVED, on_edge], on_edge.observed_at_us)
    assert [leg.clause for leg in result.legs] == ["arrival", "receipt"]
    late = event("r1", "receipt.signed", "buyer", "2026-06-03T10:00:00.000001Z", signer="w-buyer")
    result = evaluate(contract, params, escrow, [CLEARED, ARRIVED, late], late.observed_at_us)
    assert [leg.clause for leg in result.legs] == ["arrival"]
    report = next(r for r in result.reports if r.event_id == "r1")
    assert report.status == "ignored"
    assert "window after `iot.arrived` closed" in dict(report.why_not)["receipt"]


def test_receipt_before_any_arrival_does_not_match() -> None:
    contract, params, escrow = _owd()
    early = event("r1", "receipt.signed", "buyer", "2026-05-19T10:00:00Z", signer="w-buyer")
    result = evaluate(contract, params, escrow, [early, ARRIVED], ARRIVED.observed_at_us)
    assert result.legs == ()
    assert "no `iot.arrived` accepted before it" in dict(result.reports[0].why_not)["receipt"]


def test_late_reported_anchor_lets_an_earlier_received_event_match() -> None:
    contract, params, escrow = _owd()
    receipt = event("r1", "receipt.signed", "buyer", "2026-05-22T10:00:00Z", signer="w-buyer")
    first = evaluate(contract, params, escrow, [receipt], us("2026-05-22T11:00:00Z"))
    assert first.legs == ()
    # The arrival (observed earlier) is verified later; the receipt now falls in its window.
    second = evaluate(
        contract, params, first.escrow, [receipt, ARRIVED], us("2026-05-23T00:00:00Z"), first.state
    )
    assert [leg.clause for leg in second.legs] == ["receipt"]
    assert second.legs[0].amount_minor == 12_500_000


def test_future_events_wait_for_now() -> None:
    contract, params, escrow = _owd()
    result = evaluate(contract, params, escrow, [CLEARED, ARRIVED], us("2026-05-10T00:00:00Z"))
    assert result.legs == ()
    assert [r.status for r in result.reports] == ["processed", "future"]
    later = evaluate(
        contract, params, result.escrow, [CLEARED, ARRIVED], ARRIVED.observed_at_us, result.state
    )
    assert [leg.leg_id for leg in later.legs] == ["arrival/0"]
    assert [r.event_id for r in later.reports] == ["a1"]  # only new events are reported


def test_events_at_or_after_the_deadline_do_not_count_and_deadline_refunds() -> None:
    contract, params, escrow = _owd()
    deadline = us("2026-12-31T00:00:00+08:00")
    at_deadline = event(
        "a1", "iot.arrived", "sensors", "2026-12-31T00:00:00+08:00", site="LAX-FBA-3"
    )
    before = event(
        "c1", "customs.cleared", "customs", "2026-12-30T23:59:59+08:00", declaration="D1"
    )
    result = evaluate(contract, params, escrow, [before, at_deadline], deadline)
    assert [(leg.leg_id, leg.kind, leg.amount_minor) for leg in result.legs] == [
        ("deadline/0", "refund", 12_500_000)
    ]
    assert result.state.terminal
    assert result.state.terminal_reason == "deadline"
    assert {r.event_id: r.status for r in result.reports} == {
        "c1": "processed",
        "a1": "after_deadline",
    }


def test_clauses_due_before_the_deadline_pay_before_the_deadline_refund() -> None:
    contract, params, escrow = _owd()
    result = evaluate(contract, params, escrow, [CLEARED, ARRIVED], us("2027-01-05T00:00:00Z"))
    assert [(leg.leg_id, leg.amount_minor) for leg in result.legs] == [
        ("arrival/0", 3_750_000),
        ("deadline/0", 8_750_000),
    ]


def test_each_clause_fires_once_across_calls() -> None:
    contract, params, escrow = _owd()
    breach1 = event("t1", "iot.condition", "sensors", "2026-05-02T00:00:00Z", max_temp_c=9)
    breach2 = event("t2", "iot.condition", "sensors", "2026-05-03T00:00:00Z", max_temp_c=12)
    first = evaluate(contract, params, escrow, [breach1], breach1.observed_at_us)
    assert [leg.amount_minor for leg in first.legs] == [625_000]
    second = evaluate(
        contract, params, first.escrow, [breach1, breach2], breach2.observed_at_us, first.state
    )
    assert second.legs == ()
    assert second.escrow.remaining_minor == 12_500_000 - 625_000


def test_attester_and_attribute_mismatches_are_explained() -> None:
    contract, params, escrow = _owd()
    wrong_oracle = event("a1", "iot.arrived", "customs", "2026-05-20T10:00:00Z", site="LAX-FBA-3")
    wrong_site = event("a2", "iot.arrived", "sensors", "2026-05-20T11:00:00Z", site="LAX-FBA-9")
    missing = event("t1", "iot.condition", "sensors", "2026-05-20T12:00:00Z")
    wrong_type = event("t2", "iot.condition", "sensors", "2026-05-20T13:00:00Z", max_temp_c="hot")
    result = evaluate(
        contract,
        params,
        escrow,
        [wrong_oracle, wrong_site, missing, wrong_type],
        us("2026-06-01T00:00:00Z"),
    )
    assert result.legs == ()
    why = {r.event_id: dict(r.why_not) for r in result.reports}
    assert why["a1"]["arrival"] == "attested by `customs`, needs `sensors`"
    assert why["a2"]["arrival"] == "`site` is 'LAX-FBA-9', needs == 'LAX-FBA-3'"
    assert why["t1"]["cold_chain_breach"] == "no attribute `max_temp_c`"
    assert why["t2"]["cold_chain_breach"] == "attribute `max_temp_c` is not a valid number"


def test_rounding_goes_down_and_remainder_collects_the_rest() -> None:
    source = """\
contract "rounding" version 1
param buyer  : wallet
param seller : wallet
escrow 0.05 CNY from buyer
deadline 2026-12-31T00:00:00+08:00 -> refund remainder to buyer
when iot.arrived() by seller -> pay 33.33% to seller
when customs.cleared() by seller -> pay 33.33% to seller
when receipt.signed() by buyer -> pay remainder to seller
"""
    contract = compile_ok(source)
    params = bind(contract, {"buyer": "b", "seller": "s"})
    events = [
        event("e1", "iot.arrived", "seller", "2026-01-01T00:00:00Z"),
        event("e2", "customs.cleared", "seller", "2026-01-02T00:00:00Z"),
        event("e3", "receipt.signed", "buyer", "2026-01-03T00:00:00Z"),
    ]
    result = evaluate(
        contract, params, full_escrow(contract, params), events, us("2026-01-04T00:00:00Z")
    )
    # floor(5 * 3333 / 10000) = 1 each; the remainder takes 3.
    assert [(leg.clause, leg.amount_minor) for leg in result.legs] == [
        ("clause#1", 1),
        ("clause#2", 1),
        ("clause#3", 3),
    ]
    assert result.escrow.remaining_minor == 0


def test_zero_amounts_are_not_emitted() -> None:
    source = """\
contract "tiny" version 1
param buyer  : wallet
param seller : wallet
escrow 0.01 CNY from buyer
deadline 2026-12-31T00:00:00+08:00 -> refund remainder to buyer
when iot.arrived() by seller -> pay 50% to seller
"""
    contract = compile_ok(source)
    params = bind(contract, {"buyer": "b", "seller": "s"})
    arrived = event("e1", "iot.arrived", "seller", "2026-01-01T00:00:00Z")
    result = evaluate(
        contract, params, full_escrow(contract, params), [arrived], arrived.observed_at_us
    )
    assert result.legs == ()
    assert result.state.fired[0].clause == "clause#1"
    assert "rounds to zero" in result.notes[0]


def test_legs_are_capped_at_what_remains() -> None:
    contract, params, _ = _owd()
    escrow = Escrow("CNY", 12_500_000, 100_000)  # the core already paid most of it out
    breach = event("t1", "iot.condition", "sensors", "2026-05-02T00:00:00Z", max_temp_c=9)
    result = evaluate(contract, params, escrow, [breach], breach.observed_at_us)
    leg = result.legs[0]
    assert (leg.amount_minor, leg.requested_minor) == (100_000, 625_000)
    assert "capped" in leg.reason
    assert result.escrow.remaining_minor == 0
    assert result.state.terminal_reason == "escrow_empty"


def test_one_of_closes_the_other_clauses() -> None:
    source = (EXAMPLES / "inspection-outcome.contract").read_text(encoding="utf-8")
    contract = compile_ok(source)
    params = bind(
        contract,
        {"buyer": "b", "factory": "f", "inspection_house": "q", "price": "95000.00 SAR"},
    )
    fail = event(
        "v1",
        "inspection.verdict",
        "inspector",
        "2026-09-10T00:00:00Z",
        lot="FS-2026-771",
        passed=False,
        aql="1.0",
    )
    result = evaluate(contract, params, full_escrow(contract, params), [fail], fail.observed_at_us)
    assert result.state.closed == (("passed", "failed"),)
    assert [leg.kind for leg in result.legs] == ["pay", "refund"]


def test_deliver_title_leg() -> None:
    source = (EXAMPLES / "dvp-ebl.contract").read_text(encoding="utf-8")
    contract = compile_ok(source)
    params = bind(
        contract,
        {"buyer": "b", "seller": "s", "price": "10.00 HKD", "bol": "EBL-1", "bill_ref": "R"},
    )
    presented = event(
        "p1", "ebl.presented", "bank", "2026-11-01T00:00:00Z", bill_no="R", discrepancies=0
    )
    result = evaluate(
        contract, params, full_escrow(contract, params), [presented], presented.observed_at_us
    )
    title = result.legs[1]
    assert (title.kind, title.title_param, title.title, title.wallet, title.currency) == (
        "deliver_title",
        "bol",
        "EBL-1",
        "b",
        None,
    )
    assert result.legs[0].leg_id == "dvp/0"
    assert title.leg_id == "dvp/1"


def test_contract_without_deadline_ends_when_all_clauses_are_done() -> None:
    source = """\
contract "no-deadline" version 1
param buyer  : wallet
param seller : wallet
escrow 10.00 CNY from buyer
when iot.arrived() by seller -> pay 50% to seller
"""
    contract = compile_ok(source)
    params = bind(contract, {"buyer": "b", "seller": "s"})
    arrived = event("e1", "iot.arrived", "seller", "2026-01-01T00:00:00Z")
    result = evaluate(
        contract, params, full_escrow(contract, params), [arrived], arrived.observed_at_us
    )
    assert result.state.terminal_reason == "all_clauses_done"
    assert result.escrow.remaining_minor == 500


def test_state_round_trips_through_json_and_rejects_garbage() -> None:
    contract, params, escrow = _owd()
    result = evaluate(contract, params, escrow, [CLEARED, ARRIVED], ARRIVED.observed_at_us)
    data = json.loads(json.dumps(result.state.to_json()))
    assert ContractState.from_json(data) == result.state
    broken: object
    for broken in [
        None,
        [],
        {"format": "x"},
        {**data, "fired": "x"},
        {**data, "terminal": 1},
        {**data, "terminal_reason": "bored"},
        {**data, "fired": [{"clause": 1}]},
    ]:
        with pytest.raises(StateFormError):
            ContractState.from_json(broken)


def test_terminal_state_pays_nothing_more() -> None:
    contract, params, escrow = _owd()
    done = evaluate(contract, params, escrow, [CLEARED], us("2027-01-01T00:00:00Z"))
    assert done.state.terminal
    again = evaluate(
        contract, params, done.escrow, [CLEARED, ARRIVED], us("2027-01-02T00:00:00Z"), done.state
    )
    assert again.legs == ()
    assert again.state == done.state


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"escrow": Escrow("HKD", 12_500_000, 12_500_000)}, "EV003"),
        ({"escrow": Escrow("CNY", 12_500_000, 12_500_001)}, "EV004"),
        ({"escrow": Escrow("CNY", 100, 100)}, "EV004"),
        ({"escrow": Escrow("CNY", 12_500_000, -1)}, "EV004"),
        ({"now": dt.datetime(2026, 1, 1)}, "EV005"),  # noqa: DTZ001 - naive on purpose
        ({"now": -5}, "EV005"),
        ({"state": ContractState("0" * 64)}, "EV002"),
        ({"events": [CLEARED] * 10_001}, "EV006"),
    ],
)
def test_inconsistent_inputs_are_rejected_not_raised(change: dict[str, Any], code: str) -> None:
    contract, params, escrow = _owd()
    arguments: dict[str, Any] = {"escrow": escrow, "events": [CLEARED], "now": 0, "state": None}
    arguments.update(change)
    result = evaluate(
        contract,
        params,
        arguments["escrow"],
        arguments["events"],
        arguments["now"],
        arguments["state"],
    )
    assert [p.code for p in result.rejected] == [code]
    assert result.legs == ()
    assert not result.ok


def test_params_of_another_contract_are_rejected() -> None:
    contract, _, escrow = _owd()
    other = compile_ok(OWD.replace("pay 30% to seller", "pay 31% to seller"))
    params = bind(other, OWD_PARAMS)
    result = evaluate(contract, params, escrow, [], 0)
    assert [p.code for p in result.rejected] == ["EV001"]


def test_malformed_and_duplicate_events_are_ignored_with_a_reason() -> None:
    contract, params, escrow = _owd()
    bad: list[Any] = [
        Event("", "iot.arrived", "sensors", {}, 1),
        Event("x", "iot.arrived", "sensors", {"site": 1.5}, 1),  # type: ignore[dict-item]
        Event("y", "iot.arrived", "sensors", {}, -3),
        Event("z" * 500, "iot.arrived", "sensors", {}, 1),
        "not an event",
    ]
    clash = event("c1", "customs.cleared", "customs", "2026-05-01T10:00:00Z", declaration="D9")
    result = evaluate(
        contract, params, escrow, [*bad, CLEARED, clash, CLEARED], CLEARED.observed_at_us
    )
    codes = [p.code for p in result.ignored]
    assert codes == ["EV010"] * 5 + ["EV011"]
    assert result.rejected == ()


def test_parse_event_reports_bad_fields() -> None:
    from contracts_dsl import parse_event

    parsed, errors = parse_event(
        {
            "id": "e",
            "type": "t",
            "oracle": "o",
            "observed_at": "yesterday",
            "attributes": {"a": 1.5},
            "extra": 1,
        }
    )
    assert parsed is None
    assert sorted(e.field for e in errors) == ["attributes", "extra", "observed_at"]
    assert parse_event("nope")[0] is None


def test_incremental_and_one_shot_agree_on_a_simple_run() -> None:
    contract, params, escrow = _owd()
    receipt = event("r1", "receipt.signed", "buyer", "2026-05-25T10:00:00Z", signer="w-buyer")
    events = [CLEARED, ARRIVED, receipt]
    one_shot = evaluate(contract, params, escrow, events, receipt.observed_at_us)
    state: ContractState | None = None
    current = escrow
    legs: list[Any] = []
    for index, item in enumerate(events):
        step = evaluate(contract, params, current, events[: index + 1], item.observed_at_us, state)
        legs.extend(step.legs)
        state, current = step.state, step.escrow
    assert [(x.leg_id, x.amount_minor) for x in legs] == [
        (x.leg_id, x.amount_minor) for x in one_shot.legs
    ]
    assert state == one_shot.state
