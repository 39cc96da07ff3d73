"""OpenTelemetry tracing, opt-in: ``CONDPAY_OTEL=1`` plus the standard ``OTEL_*`` variables.

A span per RPC (kind SERVER, named after the gRPC method, its parent taken from the caller's
``traceparent`` metadata when there is one) with the request id, the caller, the status code and
the reason as attributes; under it:

    ledger.batch        the group-commit batch that ran the call (a child of the first call in
                        it, linked from the others); attribute condpay.batch_commands
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

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Self

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Tracer


@dataclass(frozen=True, slots=True)
class _On:
    """Tracing on: the tracer, and the API functions each call uses, looked up once (not imported
    on every call: OpenTelemetry stays unloaded while tracing is off)."""

    tracer: Tracer
    attach: Callable[[Context], object]
    detach: Callable[[Any], None]
    in_context: Callable[[Span], Context]  # trace.set_span_in_context
    span_in: Callable[[Context | None], Span]  # trace.get_current_span
    current: Callable[[], Context]
    extract: Callable[[Mapping[str, str]], Context]
    link: type[Link]
    server: SpanKind
    # The metadata keys the global propagator reads (traceparent, tracestate and baggage by
    # default): a call whose metadata has none of them starts a new trace without asking it.
    propagated: frozenset[str]
    root: Context  # an empty context: no parent


_on: _On | None = None


def enabled() -> bool:
    return _on is not None


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
    provider = TracerProvider(resource=_hashed_once(resource))
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif name != "none":
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: condpay knows otlp, console and none")
    install(provider)
    return True


def _hashed_once(resource: Resource) -> Resource:
    """The resource, hashed once: the OTLP encoder groups every exported span by its resource,
    and the SDK's Resource hashes itself by dumping its attributes to JSON each time (a few
    microseconds a span, in the export thread that shares the GIL with the event loop). Its
    attributes cannot change, so neither can its hash."""
    from opentelemetry.sdk.resources import Resource

    class HashedOnce(Resource):
        def __init__(self, of: Resource) -> None:
            super().__init__(of.attributes, of.schema_url)
            self._hash = super().__hash__()

        def __hash__(self) -> int:
            return self._hash

    return HashedOnce(resource)


def install(provider: TracerProvider | None) -> None:
    """Trace to ``provider`` (a test's, with an in-memory exporter), or stop tracing (None)."""
    global _on
    if provider is None:
        _on = None
        return
    from opentelemetry import context, propagate, trace

    _on = _On(
        tracer=provider.get_tracer("condpay"),
        attach=context.attach,
        detach=context.detach,
        in_context=trace.set_span_in_context,
        span_in=trace.get_current_span,
        current=context.get_current,
        extract=propagate.extract,
        link=trace.Link,
        server=trace.SpanKind.SERVER,
        propagated=frozenset(propagate.get_global_textmap().fields),
        root=context.Context(),
    )


# -- spans ---------------------------------------------------------------------------------------
# Every call pays for what is here when tracing is on, so it calls the SDK directly: a span
# started, made current and ended without the SDK's generator context managers, its outcome set
# in one call; a span the sampler dropped gets no attributes at all.


class _Current:
    """A span made current while inside, ended on the way out (none: tracing is off)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> Self:
        if self._span is not None:
            assert _on is not None
            self._token = _on.attach(_on.in_context(self._span))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._span is not None:
            assert _on is not None
            _on.detach(self._token)
            self._span.end()


class RpcSpan(_Current):
    """The server span of one call, current while inside (see :func:`rpc_span`)."""

    __slots__ = ()

    @property
    def recording(self) -> bool:
        """Whether the span is kept (the sampler did not drop it)."""
        return self._span is not None and self._span.is_recording()

    def finish(
        self,
        code: str,
        reason: str,
        *,
        request_id: str | None = None,
        caller: str | None = None,
        replayed: bool = False,
    ) -> None:
        """The call's outcome as attributes: its status code, reason, request id, caller and
        whether it was a replay; an error status for INTERNAL and UNKNOWN (the server's
        failures), unset for refusals the API answers with."""
        span = self._span
        if span is None or not span.is_recording():
            return
        attributes: dict[str, str | bool] = {"rpc.grpc.status_code": code}
        if request_id:
            attributes["condpay.request_id"] = request_id
        if caller:
            attributes["condpay.caller"] = caller
        if replayed:
            attributes["condpay.replayed"] = True
        if reason:
            attributes["condpay.reason"] = reason
        span.set_attributes(attributes)
        if code in _FAILURES:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, reason or code))


_FAILURES: Final = frozenset({"INTERNAL", "UNKNOWN"})
_OFF: Final = RpcSpan(None)


def rpc_span(method: str, metadata: Sequence[tuple[str, Any]] | None) -> RpcSpan:
    """The server span of one call (kind SERVER, named after the method), continuing the
    caller's trace when its metadata carries one (W3C ``traceparent``); use it as
    ``with rpc_span(...) as span: ... span.finish(code, reason, ...)``."""
    on = _on
    if on is None:
        return _OFF
    carrier: dict[str, str] | None = None
    for key, value in metadata or ():
        if key in on.propagated and isinstance(value, str):
            if carrier is None:
                carrier = {}
            carrier[key] = value
    return RpcSpan(
        on.tracer.start_span(
            method,
            context=on.root if carrier is None else on.extract(carrier),
            kind=on.server,
            attributes={"rpc.system": "grpc", "rpc.method": method},
            record_exception=False,
            set_status_on_exception=False,  # an abort is the answer, not a failure of the span
        )
    )


def current() -> Context | None:
    """The current context, to parent work done later elsewhere (a batch); None when off."""
    return None if _on is None else _on.current()


def span(
    name: str,
    *,
    parent: Context | None = None,
    links_from: Sequence[Context | None] = (),
    **attributes: str | int,
) -> _Current:
    """An internal span, current while inside: a child of ``parent`` (default: the current
    span), linked to the spans current in ``links_from``.

    With a sampler that keeps some traces only, the span serves the kept ones: its parent is the
    first sampled span among ``parent`` and ``links_from``, and it links the other sampled ones
    (a trace that was not kept has no use for a link); with none sampled, the sampler drops it
    as it dropped them."""
    on = _on
    if on is None:
        return _OFF
    links: list[Link] = []
    if links_from:
        sampled: list[tuple[Context, SpanContext]] = []
        for ctx in (parent, *links_from):
            if ctx is not None:
                linked = on.span_in(ctx).get_span_context()
                if linked.trace_flags.sampled:
                    sampled.append((ctx, linked))
        if sampled:
            parent = sampled[0][0]
            links = [on.link(linked) for _, linked in sampled[1:]]
    return _Current(
        on.tracer.start_span(
            name,
            context=parent,
            links=links,
            attributes={f"condpay.{k}": v for k, v in attributes.items()} if attributes else None,
        )
    )


def start(name: str) -> Span | None:
    """A span started now, a child of the current one, ended by :func:`end` (one that does not
    fit a ``with``)."""
    return None if _on is None else _on.tracer.start_span(name)


def end(started: Span | None) -> None:
    if started is not None:
        started.end()
