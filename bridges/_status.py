"""BridgeError <-> gRPC status, in one place: the status code follows from the error's class, a
``google.rpc.ErrorInfo`` (domain ``condpay.bridge.v1``) carries the reason and the metadata, and
the client rebuilds the very same error class from them."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from bridges.errors import DOMAIN, BridgeError, Reason, error, reason_from_code

#: Status codes that mean "no answer came back": the outcome is unknown.
_TRANSPORT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def to_status(exc: BridgeError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason.value, domain=DOMAIN, metadata=exc.metadata
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    code = grpc.StatusCode[exc.status_code_name]
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=[packed])
    return rpc_status.to_status(status)


def internal_status() -> grpc.Status:
    """INTERNAL never carries exception text; the server logs it."""
    return to_status(error(Reason.INTERNAL, "internal error in the bridge (see its log)"))


def from_rpc_error(exc: grpc.aio.AioRpcError) -> BridgeError:
    """The BridgeError a failed call stands for. A status without our ErrorInfo is the
    transport's: no answer (Unavailable, UNREACHABLE) or, for anything else, INTERNAL."""
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if not detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                continue
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = reason_from_code(info.reason) if info.domain == DOMAIN else None
            if reason is not None:
                return reason.error_class(reason, status.message, metadata=dict(info.metadata))
    if exc.code() in _TRANSPORT_CODES:
        return error(Reason.UNREACHABLE, f"no answer from the bridge ({exc.code().name})")
    return error(Reason.INTERNAL, f"the bridge answered {exc.code().name}")
