"""Whether a server answers gRPC server reflection (a list_services request on a channel)."""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

# grpcio's known race (grpc/grpc#36066): writing to a stream the server has already answered
# UNIMPLEMENTED sometimes ends the call INTERNAL instead ("... execute_batch ...", "Internal error
# from Core"). Such an ending says nothing either way: the probe is sent again.
PROBES_MAX = 5


async def reflection_listed(channel: grpc.aio.Channel) -> bool:
    """True when the server lists its services; False when reflection is not served
    (UNIMPLEMENTED). Anything else (or only INTERNAL endings, PROBES_MAX times) fails the
    calling test."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    endings = []
    for _ in range(PROBES_MAX):
        try:
            async for _answer in stub.ServerReflectionInfo(iter([request]), timeout=10):
                return True
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
        else:
            code, details = grpc.StatusCode.OK, ""
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return False
        endings.append((code, details))
        if code is not grpc.StatusCode.INTERNAL:
            break
    raise AssertionError(f"reflection probe ended {endings}")
