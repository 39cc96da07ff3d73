"""One closed list of error reasons, in the protos (condpay.v1.ErrorReason and
condpay.bridge.v1.ErrorReason): the server's and the bridge's Reason agree with it both ways, the
wire keeps today's strings, and the SDK's errors carry the enum value (UNSPECIFIED for a reason it
does not know)."""

from __future__ import annotations

import grpc
import pytest
from condpay.bridge.v1 import errors_pb2 as bridge_errors_pb2
from condpay.errors import (
    REASON_PREFIX,
    ApiError,
    FailedPrecondition,
    from_rpc_error,
    reason_code,
)
from condpay.v1 import errors_pb2
from condpay.v1.errors_pb2 import ErrorReason
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

import bridges.errors
import settlement.errors
from bridges.errors import Reason as BridgeReason
from settlement.api.status import internal_status, to_status
from settlement.errors import Reason, SettlementError
from tests.support.harness import Harness
from wallets import OwnerKey


def wire_names(enum: type[ErrorReason] | type[bridge_errors_pb2.ErrorReason]) -> dict[str, int]:
    """An ErrorReason enum's values but UNSPECIFIED, by their reason string on the wire."""
    return {
        name.removeprefix(REASON_PREFIX): number
        for name, number in enum.items()
        if number != 0 and name.startswith(REASON_PREFIX)
    }


def test_the_servers_reasons_are_exactly_the_proto_enum() -> None:
    enum = wire_names(ErrorReason)
    assert len(enum) == len(ErrorReason.keys()) - 1, "every value carries the ERROR_REASON_ prefix"
    assert sorted(reason.name for reason in Reason) == sorted(enum)
    assert {reason.name: reason.reason_code for reason in Reason} == enum
    assert settlement.errors.closed_list_problems() == []


def test_each_reason_has_one_status_code_and_ok_is_none() -> None:
    codes = {reason: reason.code for reason in Reason}
    assert set(codes) == set(Reason)
    assert all(isinstance(code, grpc.StatusCode) for code in codes.values())
    assert grpc.StatusCode.OK not in codes.values()
    assert Reason.INSUFFICIENT_FUNDS.code is grpc.StatusCode.FAILED_PRECONDITION
    assert Reason.INTERNAL.code is grpc.StatusCode.INTERNAL


def test_the_bridges_reasons_are_exactly_its_proto_enum() -> None:
    enum = wire_names(bridge_errors_pb2.ErrorReason)
    assert len(enum) == len(bridge_errors_pb2.ErrorReason.keys()) - 1
    assert sorted(reason.value for reason in BridgeReason) == sorted(enum)
    assert {reason.value: reason.reason_code for reason in BridgeReason} == enum
    assert all(reason.name == reason.value for reason in BridgeReason)
    assert bridges.errors.closed_list_problems() == []


@pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.INTERNAL], ids=str)
def test_every_reason_reaches_the_sdk_as_its_enum_value(reason: Reason) -> None:
    """What the server sends (settlement.api.status.to_status) is what the SDK decodes: today's
    string in ``reason``, the enum value in ``reason_code``."""
    error = ApiError(to_status(SettlementError(reason, "refused")))
    assert error.reason == reason.name
    assert error.reason_code == reason.reason_code != ErrorReason.ERROR_REASON_UNSPECIFIED


def test_internal_is_a_reason_only_internal_status_sends() -> None:
    error = ApiError(internal_status("req-1"))
    assert (error.reason, error.reason_code) == ("INTERNAL", ErrorReason.ERROR_REASON_INTERNAL)
    with pytest.raises(ValueError, match="never carries INTERNAL"):
        SettlementError(Reason.INTERNAL, "some exception text")


def _status(reason: str, domain: str = "condpay.v1") -> status_pb2.Status:
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain))
    return status_pb2.Status(code=grpc.StatusCode.FAILED_PRECONDITION.value[0], details=[packed])


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (_status("REASON_FROM_A_NEWER_SERVER"), "REASON_FROM_A_NEWER_SERVER"),
        (_status(""), ""),
        (_status("UNSPECIFIED"), "UNSPECIFIED"),
        (_status("ERROR_REASON_INSUFFICIENT_FUNDS"), "ERROR_REASON_INSUFFICIENT_FUNDS"),
        (_status("insufficient_funds"), "insufficient_funds"),
        # Another domain's reason (a proxy's, the bridge's) is not a condpay.v1 reason.
        (_status("INSUFFICIENT_FUNDS", domain="condpay.bridge.v1"), "INSUFFICIENT_FUNDS"),
        (status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0]), ""),
    ],
)
def test_a_reason_the_sdk_does_not_know_is_unspecified(
    status: status_pb2.Status, reason: str
) -> None:
    error = ApiError(status)
    assert error.reason == reason  # the string is kept as it came
    assert error.reason_code == ErrorReason.ERROR_REASON_UNSPECIFIED


def test_reason_code_maps_the_wire_string() -> None:
    assert reason_code("INSUFFICIENT_FUNDS") == errors_pb2.ERROR_REASON_INSUFFICIENT_FUNDS
    assert reason_code("NO_SUCH_REASON") == errors_pb2.ERROR_REASON_UNSPECIFIED


def test_from_rpc_error_with_an_unknown_reason_does_not_crash() -> None:
    status = _status("REASON_FROM_A_NEWER_SERVER")
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details="something new",
    )
    error = from_rpc_error(rpc_error)
    assert isinstance(error, FailedPrecondition)
    assert error.reason == "REASON_FROM_A_NEWER_SERVER"
    assert error.reason_code == ErrorReason.ERROR_REASON_UNSPECIFIED


async def test_a_refused_transfer_through_the_server_carries_the_enum_reason(
    harness: Harness,
) -> None:
    cb = harness.client()
    bank_key = await harness.institution("icbc-sz")
    await cb.issue("icbc-sz", "CNY", 100_00)
    bank = harness.client("institution/icbc-sz")
    alice_key = OwnerKey.generate()
    alice = (await bank.open_wallet("icbc-sz", alice_key.public_key, tier=2)).wallet

    with pytest.raises(FailedPrecondition) as refused:
        await bank.transfer(bank_key, "w_reserve.icbc-sz", alice.wallet_id, "CNY", 100_01)

    error = refused.value
    match error.reason_code:  # what a client writes
        case ErrorReason.ERROR_REASON_INSUFFICIENT_FUNDS:
            matched = True
        case _:
            matched = False
    assert matched, ErrorReason.Name(error.reason_code)
    assert error.reason == "INSUFFICIENT_FUNDS"  # the wire string is today's
    detail = error.detail(errors_pb2.InsufficientFunds)
    assert detail is not None
    assert (detail.needed_minor, detail.available_minor) == (100_01, 100_00)
