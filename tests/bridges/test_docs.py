"""docs/bridge.md keeps up with the code: every reason with its class and status code, every
fault switch, every RPC."""

from __future__ import annotations

from pathlib import Path

from condpay.bridge.v1 import bridge_pb2

from bridges._faults import _SWITCHES
from bridges.errors import Reason

DOC = (Path(__file__).resolve().parents[2] / "docs" / "bridge.md").read_text()


def test_every_reason_is_in_the_table() -> None:
    for reason in Reason:
        cls = reason.error_class
        row = f"| `{reason.value}` | {cls.__name__} | {cls.status_code_name} |"
        assert row in DOC, row


def test_every_fault_switch_is_documented() -> None:
    for switch in _SWITCHES:
        assert f"| `{switch}" in DOC, switch


def test_every_rpc_is_documented() -> None:
    for service in bridge_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            assert f"{service.name}.{method.name}" in DOC or f"/ `{method.name}`" in DOC, (
                f"{service.name}.{method.name}"
            )
