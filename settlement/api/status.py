"""SettlementError -> gRPC status with google.rpc.ErrorInfo and typed details, in one place."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from settlement import limits
from settlement.errors import DOMAIN, Reason, SettlementError

REPLAYED_METADATA_KEY = "condpay-replayed"


def echo(value: str, chars_max: int = limits.ERROR_ECHO_CHARS_MAX) -> str:
    """A value an error gives back, cut to ``chars_max``: a hostile request's megabyte id must
    never come back in the status (its trailers would overflow, and it helps nobody)."""
    if len(value) <= chars_max:
        return value
    return value[: chars_max - 1] + "\u2026"


def to_status(error: SettlementError) -> status_pb2.Status:
    """The one place a refusal becomes a status; every echoed value (the message, each metadata
    key and value) is cut to ERROR_ECHO_CHARS_MAX here, whatever the handler put in it, and the
    typed details are kept only as far as ERROR_DETAILS_BYTES_MAX allows."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason.name,
        domain=DOMAIN,
        metadata={echo(k, 64): echo(v) for k, v in error.metadata.items()},
    )
    details = [any_pb2.Any()]
    details[0].Pack(info)
    budget = limits.ERROR_DETAILS_BYTES_MAX
    for detail in error.details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        budget -= packed.ByteSize()
        if budget < 0:  # the typed details that fit; the trailers must stay small
            break
        details.append(packed)
    return status_pb2.Status(
        code=error.reason.code.value[0],
        message=echo(error.message, limits.ERROR_MESSAGE_CHARS_MAX),
        details=details,
    )


def internal_status(request_id: str) -> status_pb2.Status:
    """INTERNAL never carries exception text: the log has it, under the same request id."""
    info = error_details_pb2.ErrorInfo(reason=Reason.INTERNAL.name, domain=DOMAIN)
    packed = any_pb2.Any()
    packed.Pack(info)
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; quote id {request_id!r} to support",
        details=[packed],
    )


class StatusCodec:
    """How the engine stores a failure: the serialized google.rpc.Status a retry receives."""

    def encode(self, error: SettlementError) -> bytes:
        return bytes(to_status(error).SerializeToString())


@dataclass(frozen=True, slots=True)
class _GrpcStatus(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def grpc_status(status: status_pb2.Status, *, replayed: bool = False) -> grpc.Status:
    rich = rpc_status.to_status(status)
    metadata = tuple(rich.trailing_metadata)
    if replayed:
        metadata += ((REPLAYED_METADATA_KEY, "true"),)
    return _GrpcStatus(rich.code, rich.details, metadata)


def parse_reason(name: str) -> Reason | None:
    return Reason.__members__.get(name)
