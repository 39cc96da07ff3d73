"""OperationService: the stored outcome of any mutating call, by the caller's request id."""

from __future__ import annotations

import grpc
from condpay.v1 import operation_pb2, operation_pb2_grpc
from google.protobuf import any_pb2, descriptor_pool
from google.rpc import status_pb2

from settlement.api import convert, requests
from settlement.api.identity import current_caller
from settlement.errors import Reason, not_found
from settlement.runtime import Runtime


def reply_type_url(method: str) -> str:
    """ "/condpay.v1.WalletService/Transfer" -> the type URL of TransferResponse."""
    service, _, name = method.strip("/").partition("/")
    descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    return f"type.googleapis.com/{descriptor.output_type.full_name}"


class OperationService(operation_pb2_grpc.OperationServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def GetOperation(
        self, request: operation_pb2.GetOperationRequest, context: grpc.aio.ServicerContext
    ) -> operation_pb2.GetOperationResponse:
        request_id = requests.request_id(request)  # type: ignore[arg-type]
        record = await self._rt.reader.operation(str(current_caller()), request_id)
        if record is None:
            raise not_found(Reason.OPERATION_NOT_FOUND, "operation", request_id)
        operation = operation_pb2.Operation(
            request_id=record.request_id,
            method=record.method,
            state=operation_pb2.OPERATION_STATE_SUCCEEDED
            if record.ok
            else operation_pb2.OPERATION_STATE_FAILED,
            created_at=convert.timestamp(record.created_at_us),
            commit_seq=record.commit_seq,
        )
        if record.ok:
            operation.response.CopyFrom(
                any_pb2.Any(type_url=reply_type_url(record.method), value=record.outcome)
            )
        else:
            operation.error.CopyFrom(status_pb2.Status.FromString(record.outcome))
        return operation_pb2.GetOperationResponse(operation=operation)
