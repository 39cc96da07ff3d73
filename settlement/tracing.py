"""OpenTelemetry tracing, opt-in: ``CONDPAY_OTEL=1`` plus the standard ``OTEL_*`` variables.

A span per RPC (kind SERVER, named after the gRPC method, its parent taken from the caller's
``traceparent`` metadata when there is one) with the request id, the caller, the status code and
the reason as attributes; under it:

    ledger.batch        the group-commit batch that ran the call (a child of the first call in
                        it, linked from the others); attribute condpay.batch.commands
      db.transaction    the batch's database transaction: reads, locks, writes
        db.commit       its COMMIT
    bridge.<call>       each call to the bridge (quote, prepare, commit, finality...)

Spans are exported by the SDK's batch processor (a thread, off the event loop) to the exporter
``OTEL_TRACES_EXPORTER`` names: ``otlp`` (default; ``OTEL_EXPORTER_OTLP_ENDPOINT`` and the other
``OTEL_EXPORTER_OTLP_*`` variables), ``console`` or ``none``. ``OTEL_SERVICE_NAME`` (default
``condpay``), ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_TRACES_SAMPLER`` apply as usual.

Off (the default), every function here returns at once and nothing of OpenTelemetry is loaded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

_tracer: Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def configure(on: bool, env: Mapping[str, str] | None = None) -> bool:
    """When ``on`` (the ``otel`` setting, ``CONDPAY_OTEL``), install a tracer provider as the
    standard ``OTEL_*`` variables of ``env`` say; whether it did. ValueError for an exporter it
    does not know."""
    if not on:
        return False
    env = os.environ if env is None else env
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    name = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "condpay")})
    provider = TracerProvider(resource=resource)
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif name != "none":
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: condpay knows otlp, console and none")
    install(provider)
    return True


def install(provider: TracerProvider | None) -> None:
    """Trace to ``provider`` (a test's, with an in-memory exporter), or stop tracing (None)."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("condpay")


# -- spans ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def rpc_span(method: str, metadata: Sequence[tuple[str, Any]] | None) -> Iterator[None]:
    """The server span of one call, continuing the caller's trace (W3C traceparent)."""
    tracer = _tracer
    if tracer is None:
        yield
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    with tracer.start_as_current_span(
        method,
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.method": method},
        record_exception=False,
        set_status_on_exception=False,  # an abort is the answer, not a failure of the span
    ):
        yield


def annotate(**attributes: str | int | bool | None) -> None:
    """Set attributes on the current span (None values are left out)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(f"condpay.{key}", value)


def finish_rpc(code: str, reason: str) -> None:
    """The current RPC span's outcome: its status code and reason; an error status for
    INTERNAL and UNKNOWN (the server's failures), unset for refusals the API answers with."""
    if _tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    span = trace.get_current_span()
    span.set_attribute("rpc.grpc.status_code", code)
    if reason:
        span.set_attribute("condpay.reason", reason)
    if code in {"INTERNAL", "UNKNOWN"}:
        span.set_status(Status(StatusCode.ERROR, reason or code))


def current() -> Context | None:
    """The current context, to parent work done later elsewhere (a batch); None when off."""
    if _tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: Context | None = None,
    links_from: Sequence[Context | None] = (),
    **attributes: str | int,
) -> Iterator[None]:
    """An internal span, current while inside: a child of ``parent`` (default: the current
    span), linked to the spans current in ``links_from``."""
    tracer = _tracer
    if tracer is None:
        yield
        return
    from opentelemetry import trace

    links = []
    for ctx in links_from:
        if ctx is not None:
            linked = trace.get_current_span(ctx).get_span_context()
            if linked.is_valid:
                links.append(trace.Link(linked))
    with tracer.start_as_current_span(
        name,
        context=parent,
        links=links,
        attributes={f"condpay.{k}": v for k, v in attributes.items()},
    ):
        yield


def start(name: str) -> Span | None:
    """A span started now and ended by :func:`end` (one that does not fit a ``with``)."""
    return None if _tracer is None else _tracer.start_span(name)


def end(started: Span | None) -> None:
    if started is not None:
        started.end()
