"""The canonical compiled form and its hash."""

from __future__ import annotations

import hashlib
import json

import pytest

from contracts_dsl import CompiledFormError, compile_source, load_compiled

from ._support import EXAMPLES, compile_ok

SOURCE = (EXAMPLES / "overseas-warehouse-delivery.contract").read_text(encoding="utf-8")


def test_canonical_bytes_and_hash() -> None:
    contract = compile_ok(SOURCE)
    assert contract.hash == hashlib.sha256(contract.canonical).hexdigest()
    document = json.loads(contract.canonical)
    assert document["format"] == "condpay.contract/1"
    # Canonical: sorted keys, no whitespace, re-encoding gives the same bytes.
    assert (
        json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        == contract.canonical
    )
    assert b" " not in contract.canonical.replace(b'"LAX-FBA-3"', b"")  # no layout whitespace


def test_no_floats_in_the_compiled_form() -> None:
    def walk(value: object) -> None:
        assert not isinstance(value, float)
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in EXAMPLES.glob("*.contract"):
        walk(json.loads(compile_ok(path.read_text(encoding="utf-8")).canonical))


@pytest.mark.parametrize(
    ("description", "old", "new"),
    [
        ("comments", "# Overseas-warehouse", "# An edited comment about the overseas-warehouse"),
        ("layout", "param buyer       : wallet", "param   buyer:wallet"),
        (
            "param order",
            "param buyer       : wallet\nparam seller      : wallet",
            "param seller : wallet\nparam buyer : wallet",
        ),
        (
            "and order",
            "when customs.cleared(declaration == declaration) by customs\n"
            '  and iot.arrived(site == "LAX-FBA-3") by sensors',
            'when iot.arrived(site == "LAX-FBA-3") by sensors\n'
            "  and customs.cleared(declaration == declaration) by customs",
        ),
        (
            "quorum order",
            '["iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid"]',
            '["iot.lax3.rfid", "iot.lax3.gate", "iot.lax3.dock"]',
        ),
        ("same instant, other offset", "2026-12-31T00:00:00+08:00", "2026-12-30T16:00:00Z"),
        ("same percentage spelled differently", "pay 30% to seller", "pay 30.00% to seller"),
        ("same duration in other units", "within 14 days", "within 2 weeks"),
        ("same number", "max_temp_c > 8", "max_temp_c > 8.0"),
    ],
)
def test_hash_ignores_what_does_not_change_meaning(description: str, old: str, new: str) -> None:
    assert old in SOURCE, description
    assert compile_ok(SOURCE).hash == compile_ok(SOURCE.replace(old, new)).hash


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("pay 30% to seller", "pay 31% to seller"),
        ("pay 30% to seller", "pay 30.01% to seller"),
        ("2026-12-31T00:00:00+08:00", "2026-12-31T00:00:01+08:00"),
        ("within 14 days", "within 15 days"),
        ('"LAX-FBA-3"', '"LAX-FBA-4"'),
        ("max_temp_c > 8", "max_temp_c >= 8"),
        ("quorum 2 of", "quorum 3 of"),
        ('"customs.cn.shenzhen"', '"customs.cn.guangzhou"'),
        ("as penalty", ""),
        ("pay remainder to seller", "pay remainder to seller in HKD"),
        ("clause receipt", "clause receipt_signed"),
        ('"overseas-warehouse-delivery"', '"overseas-warehouse-delivery-2"'),
        ("by buyer within", "by seller within"),
        ("param price       : money CNY", "param price       : money CNY\nparam extra : text"),
    ],
)
def test_hash_changes_with_meaning(old: str, new: str) -> None:
    assert old in SOURCE
    changed = SOURCE.replace(old, new)
    result = compile_source(changed)
    assert result.contract is not None, result.diagnostics
    assert result.contract.hash != compile_ok(SOURCE).hash


def test_clause_order_is_meaningful() -> None:
    first = compile_ok(SOURCE)
    breach = (
        "clause cold_chain_breach\n"
        "when iot.condition(max_temp_c > 8) by sensors\n"
        "  -> pay 5% of price to buyer as penalty\n"
    )
    assert breach in SOURCE
    moved = SOURCE.replace(breach, "").replace("clause arrival", breach + "\nclause arrival")
    assert compile_ok(moved).hash != first.hash


def test_load_compiled_round_trip_for_every_example() -> None:
    for path in EXAMPLES.glob("*.contract"):
        contract = compile_ok(path.read_text(encoding="utf-8"))
        loaded = load_compiled(contract.canonical)
        assert loaded == contract
        assert loaded.hash == contract.hash
        assert [p.index for p in loaded.patterns] == [p.index for p in contract.patterns]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"format":"condpay.contract/2"}',
        b'{"format":"condpay.contract/1","params":"x"}',
        b"[" * 100_000,
    ],
)
def test_load_compiled_rejects_garbage_with_a_typed_error(data: bytes) -> None:
    with pytest.raises(CompiledFormError):
        load_compiled(data)


def test_load_compiled_rejects_non_canonical_bytes() -> None:
    contract = compile_ok(SOURCE)
    pretty = json.dumps(json.loads(contract.canonical), indent=2).encode()
    with pytest.raises(CompiledFormError, match="canonical"):
        load_compiled(pretty)


def test_load_compiled_rejects_every_truncation() -> None:
    canonical = compile_ok(SOURCE).canonical
    for cut in range(0, len(canonical), 97):
        with pytest.raises(CompiledFormError):
            load_compiled(canonical[:cut])


def test_routing_information() -> None:
    contract = compile_ok(SOURCE)
    assert contract.attesters_by_event_type() == {
        "customs.cleared": ("customs",),
        "iot.arrived": ("sensors",),
        "iot.condition": ("sensors",),
        "receipt.signed": ("buyer",),
    }
    assert contract.attesters_by_clause()["arrival"] == ("customs", "sensors")
    assert contract.event_types_by_clause()["receipt"] == ("receipt.signed",)
    sensors = contract.oracle("sensors")
    assert sensors is not None
    assert sensors.threshold == 2
    assert len(sensors.sources) == 3
    assert [(p.name, p.kind, p.currency) for p in contract.params] == [
        ("buyer", "wallet", None),
        ("declaration", "text", None),
        ("price", "money", "CNY"),
        ("seller", "wallet", None),
    ]


def test_compile_refuses_contracts_with_errors_but_not_warnings() -> None:
    assert (
        compile_source(
            SOURCE.replace("sellr", "x").replace(
                "to seller\n\nclause receipt", "to sellr\n\nclause receipt"
            )
        ).contract
        is None
    )
    warned = compile_source(
        SOURCE.replace("param declaration : text", "param declaration : text\nparam unused : text")
    )
    assert warned.contract is not None
    assert [d.code for d in warned.diagnostics] == ["CD026", "CD065"]
