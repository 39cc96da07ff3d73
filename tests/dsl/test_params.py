"""Binding parameter values: accepted forms, typed errors, canonical form."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import Any

import pytest

from contracts_dsl import Money, bind_params

from ._support import compile_ok

SOURCE = """\
contract "params" version 1

param buyer   : wallet
param seller  : wallet
param bol     : title
param note    : text
param price   : money CNY
param fee     : money CNY
param limit   : number
param ship_by : timestamp
param window  : duration

escrow price from buyer
deadline ship_by -> refund remainder to buyer

when iot.condition(max_temp_c > limit, container == note) by seller within window after iot.arrived
  -> pay fee to seller and pay remainder to seller and deliver title bol to buyer

when iot.arrived() by seller -> pay 1% to seller
"""

VALID: dict[str, Any] = {
    "buyer": "w-b",
    "seller": "w-s",
    "bol": "EBL-1",
    "note": "MSKU1",
    "price": {"currency": "CNY", "amount_minor": 100_000},
    "fee": "12.34 CNY",
    "limit": "8.5",
    "ship_by": "2026-12-31T00:00:00+08:00",
    "window": "P1DT12H",
}


def _bind(**changes: Any) -> Any:
    return bind_params(compile_ok(SOURCE), {**VALID, **changes})


def test_valid_values_bind_to_exact_types() -> None:
    binding = _bind()
    assert binding.errors == ()
    params = binding.params
    assert params is not None
    assert params.values["price"] == Money("CNY", 100_000)
    assert params.values["fee"] == Money("CNY", 1234)
    assert params.values["limit"] == Fraction(17, 2)
    assert params.values["ship_by"] == 1798646400000000
    assert params.values["window"] == 36 * 3600


def test_to_json_binds_back_to_the_same_values() -> None:
    contract = compile_ok(SOURCE)
    params = bind_params(contract, VALID).params
    assert params is not None
    again = bind_params(contract, params.to_json()).params
    assert again is not None
    assert again.values == params.values
    assert again.hash == params.hash
    changed = bind_params(contract, {**VALID, "note": "MSKU2"}).params
    assert changed is not None
    assert changed.hash != params.hash


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("14d", 14 * 86400),
        ("36h", 36 * 3600),
        ("90m", 5400),
        ("2w", 14 * 86400),
        ("30s", 30),
        ("P14D", 14 * 86400),
        ("PT36H", 36 * 3600),
        ("P2W", 14 * 86400),
        ("PT1M30S", 90),
        (dt.timedelta(hours=2), 7200),
    ],
)
def test_duration_forms(value: object, seconds: int) -> None:
    params = _bind(window=value).params
    assert params is not None
    assert params.values["window"] == seconds


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("buyer", "", "PV008"),
        ("buyer", 7, "PV003"),
        ("buyer", "x" * 2000, "PV008"),
        ("note", "bad\x00", "PV008"),
        ("price", "100.00 HKD", "PV004"),
        ("price", "100.001 CNY", "PV004"),
        ("price", "-1.00 CNY", "PV004"),
        ("price", {"currency": "CNY", "amount_minor": 0}, "PV004"),
        ("price", {"currency": "CNY", "amount_minor": 2**63}, "PV004"),
        ("price", {"currency": "CNY", "amount_minor": True}, "PV004"),
        ("price", {"currency": "CNY", "amount_minor": 1.5}, "PV004"),
        ("price", {"currency": "CNY"}, "PV004"),
        ("price", 100, "PV003"),
        ("limit", 8.5, "PV007"),
        ("limit", True, "PV007"),
        ("limit", "1e5", "PV007"),
        ("limit", [], "PV003"),
        ("ship_by", "2026-12-31", "PV005"),
        ("ship_by", dt.datetime(2026, 12, 31), "PV005"),  # noqa: DTZ001 - naive on purpose
        ("ship_by", 1798646400, "PV003"),
        ("window", "0d", "PV006"),
        ("window", "P1Y", "PV006"),
        ("window", "14 days", "PV006"),
        ("window", dt.timedelta(seconds=1.5), "PV006"),
        ("window", 14, "PV003"),
    ],
)
def test_invalid_values_give_typed_errors(name: str, value: object, code: str) -> None:
    binding = _bind(**{name: value})
    assert binding.params is None
    assert [(e.code, e.field) for e in binding.errors] == [(code, name)]


def test_missing_and_unknown_parameters() -> None:
    values = {k: v for k, v in VALID.items() if k != "seller"}
    values["sellr"] = "w-s"
    values[3] = "x"  # type: ignore[index]
    binding = bind_params(compile_ok(SOURCE), values)
    assert sorted((e.code, e.field) for e in binding.errors) == [
        ("PV001", "seller"),
        ("PV002", "3"),
        ("PV002", "sellr"),
    ]


def test_fixed_amounts_cannot_exceed_the_escrow() -> None:
    # Path: fee + 1% of the escrow must fit: 1000.00 CNY escrow, 1% = 10.00.
    over = _bind(fee="990.01 CNY")
    assert [(e.code, e.field) for e in over.errors] == [("PV009", "price")]
    # The clause that pays the fee delivers the title: its `remainder` must find something.
    assert _bind(fee="989.99 CNY").params is not None
    starved = _bind(fee="990.00 CNY")
    assert [(e.code, e.field) for e in starved.errors] == [("PV010", "price")]
    assert "clause#2 can fire first" in starved.errors[0].message


def test_a_mapping_is_required() -> None:
    binding = bind_params(compile_ok(SOURCE), ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert [e.code for e in binding.errors] == ["PV003"]
