"""Whether a server answers gRPC server reflection (a list_services request on a channel)."""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


async def reflection_listed(channel: grpc.aio.Channel) -> bool:
    """True when the server lists its services; False when reflection is not served
    (UNIMPLEMENTED). Any other ending fails the calling test."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        async for _ in stub.ServerReflectionInfo(iter([request]), timeout=10):
            return True
    except grpc.aio.AioRpcError as error:
        code, details = error.code(), error.details() or ""
    else:
        code, details = grpc.StatusCode.OK, ""
    # grpcio's known race (grpc/grpc#36066): writing to a stream the server has already answered
    # UNIMPLEMENTED sometimes ends the call INTERNAL "... execute_batch ..." instead.
    raced = code is grpc.StatusCode.INTERNAL and "execute_batch" in details
    assert code is grpc.StatusCode.UNIMPLEMENTED or raced, (code, details)
    return False
