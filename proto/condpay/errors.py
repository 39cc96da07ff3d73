"""Typed errors for clients of the condpay API.

    ApiError                 any non-OK status; ``.reason`` is the stable UPPER_SNAKE code from
    │                        google.rpc.ErrorInfo, ``.reason_code`` the same as a
    │                        ``condpay.v1.ErrorReason`` value, ``.detail(T)`` unpacks a typed detail
    ├── InvalidArgument      the request is wrong; retrying it unchanged never helps
    ├── Unauthenticated / PermissionDenied
    ├── NotFound / AlreadyExists
    ├── FailedPrecondition   valid, but not now (insufficient funds, a tier cap, expired...)
    ├── OutOfRange
    ├── ResourceExhausted    a per-caller quota (``metadata["limit"]``, ``["setting"]``); never
    │                        retried by the client: back off or finish the calls in flight
    ├── Unavailable, DeadlineExceeded, Cancelled
    │                        transient: retry with the same request id (the client does)
    └── Internal             a server bug; the message carries the request id to quote

Branch on ``reason_code`` (or ``reason``), never on the message text::

    match error.reason_code:
        case ErrorReason.ERROR_REASON_INSUFFICIENT_FUNDS: ...

A reason this version of the SDK does not know (from a newer server) is ERROR_REASON_UNSPECIFIED.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from condpay.v1.errors_pb2 import ErrorReason

M = TypeVar("M", bound=Message)
REPLAYED_METADATA_KEY = "condpay-replayed"
DOMAIN = "condpay.v1"
#: ``ErrorInfo.reason`` is an ErrorReason value's name without this prefix (errors.proto says so).
REASON_PREFIX = "ERROR_REASON_"


def reason_code(reason: str) -> ErrorReason.ValueType:
    """The ErrorReason a wire reason stands for; UNSPECIFIED for none or one not known here."""
    try:
        return ErrorReason.Value(REASON_PREFIX + reason)
    except ValueError:
        return ErrorReason.ERROR_REASON_UNSPECIFIED


class ApiError(Exception):
    code = grpc.StatusCode.UNKNOWN

    def __init__(self, status: status_pb2.Status, *, replayed: bool = False) -> None:
        self.status = status
        self.message = status.message
        self.replayed = replayed
        self.reason = ""
        self.reason_code: ErrorReason.ValueType = ErrorReason.ERROR_REASON_UNSPECIFIED
        self.metadata: dict[str, str] = {}
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.reason, self.metadata = info.reason, dict(info.metadata)
                if info.domain == DOMAIN:
                    self.reason_code = reason_code(info.reason)
        super().__init__(f"{self.code.name} {self.reason}: {self.message}")

    def detail(self, detail_type: type[M]) -> M | None:
        """The first detail of ``detail_type`` (e.g. condpay.v1.InsufficientFunds), or None."""
        for detail in self.status.details:
            if detail.Is(detail_type.DESCRIPTOR):
                message = detail_type()
                detail.Unpack(message)
                return message
        return None


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(ApiError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ApiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(ApiError):
    code = grpc.StatusCode.INTERNAL


class Cancelled(ApiError):
    code = grpc.StatusCode.CANCELLED


_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        OutOfRange,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
        Cancelled,
    )
}


def from_rpc_error(error: grpc.aio.AioRpcError) -> ApiError:
    metadata = tuple(error.trailing_metadata() or ())
    status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    replayed = False
    for key, value in metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
        elif key == REPLAYED_METADATA_KEY:
            replayed = value == "true"
    return _BY_CODE.get(error.code(), ApiError)(status, replayed=replayed)
