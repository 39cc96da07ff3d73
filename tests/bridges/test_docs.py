"""docs/bridge.md keeps up with the code: every reason with its class and status code, every
fault switch, every RPC."""

from __future__ import annotations

from pathlib import Path

from condpay.bridge.v1 import bridge_pb2, errors_pb2
from condpay.errors import REASON_PREFIX

from bridges._faults import _SWITCHES
from bridges.errors import Reason

DOC = (Path(__file__).resolve().parents[2] / "docs" / "bridge.md").read_text()


def test_every_reason_is_in_the_table() -> None:
    for reason in Reason:
        cls = reason.error_class
        row = f"| `{reason.value}` | {cls.__name__} | {cls.status_code_name} |"
        assert row in DOC, row


def test_the_reason_table_lists_exactly_the_proto_enum() -> None:
    """Both ways: docs/bridge.md has a row for each condpay.bridge.v1.ErrorReason value and no
    other (the test above checks each row's class and status code)."""
    section = DOC.split("| reason | class | gRPC code |", 1)[1].split("\n\n", 1)[0]
    rows = {line.split("|")[1].strip().strip("`") for line in section.splitlines()[2:]}
    enum_reasons = {
        name.removeprefix(REASON_PREFIX)
        for name, number in errors_pb2.ErrorReason.items()
        if number != errors_pb2.ERROR_REASON_UNSPECIFIED
    }
    assert sorted(rows) == sorted(enum_reasons)


def test_every_fault_switch_is_documented() -> None:
    for switch in _SWITCHES:
        assert f"| `{switch}" in DOC, switch


def test_every_rpc_is_documented() -> None:
    for service in bridge_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            assert f"{service.name}.{method.name}" in DOC or f"/ `{method.name}`" in DOC, (
                f"{service.name}.{method.name}"
            )
