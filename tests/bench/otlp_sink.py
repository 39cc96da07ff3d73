"""A trace collector for the bench: an OTLP/gRPC TraceService that counts the spans it is sent and
keeps nothing, so that the "observed" transfer cells pay for exporting spans over gRPC as they
would to a real collector, without one on the machine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(slots=True)
class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    spans: int = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.spans += sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        return trace_service_pb2.ExportTraceServiceResponse()


@contextlib.asynccontextmanager
async def otlp_sink() -> AsyncIterator[tuple[str, Sink]]:
    """A running sink: its endpoint (http://127.0.0.1:PORT, for OTEL_EXPORTER_OTLP_ENDPOINT) and
    the counter."""
    sink = Sink()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}", sink
    finally:
        await server.stop(0)
