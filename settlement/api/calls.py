"""The one wrapper every call passes: identity, the role table, error mapping and the log line.

Handlers only parse, call the domain and build the reply; everything cross-cutting is here. The
wrapper is applied when the handlers are registered rather than as a gRPC interceptor: the same
effect without a per-call hop through the interceptor chain.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from settlement import tracing
from settlement.api.identity import Caller, set_current_caller
from settlement.api.methods import METHODS, MethodSpec
from settlement.api.quotas import CallQuotas
from settlement.api.status import grpc_status, internal_status, to_status
from settlement.api.tls import IdentityResolver
from settlement.db.availability import storage_unreachable
from settlement.errors import Reason, SettlementError, code_name, reason_of
from settlement.ledger.engine import StoredFailure
from settlement.metrics import Metrics

log = structlog.get_logger("condpay.api")

ServicerT = TypeVar("ServicerT")
Behavior = Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]
StreamBehavior = Callable[[Message, grpc.aio.ServicerContext], AsyncIterator[Message]]


class CallWrapper:
    """Wraps every condpay handler at registration (no per-call interceptor hop).

    Use :meth:`register` with a generated ``add_XServicer_to_server`` function: the handlers it
    declares are wrapped and registered; a method missing from the role table refuses to start.
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        *,
        identity: IdentityResolver,
        log_calls: bool = True,
        quotas: CallQuotas | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._server = server
        self._identity = identity
        self._log_calls = log_calls
        self._metrics = metrics
        # Per-caller calls in flight and streams, taken after the role check and before the
        # handler, given back in ``finally`` (a stream's when it ends, however it ends).
        self._quotas = quotas or CallQuotas(2**31, 2**31)

    def register(
        self, add_to_server: Callable[[ServicerT, Any], None], servicer: ServicerT
    ) -> None:
        add_to_server(servicer, _Registrar(self))

    def _register(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        wrapped = {}
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            spec = METHODS.get(method)
            if spec is None:
                raise RuntimeError(f"{method} is not in the role table (settlement/api/methods.py)")
            # The request is decoded inside the wrapper (not by gRPC), so that undecodable bytes
            # are answered INVALID_ARGUMENT / MALFORMED_REQUEST, not UNKNOWN with parser text.
            decode = handler.request_deserializer
            if handler.unary_unary is not None:
                wrapped[name] = grpc.unary_unary_rpc_method_handler(
                    self._unary(method, spec, handler.unary_unary, decode),
                    response_serializer=handler.response_serializer,
                )
            elif handler.unary_stream is not None:
                wrapped[name] = grpc.unary_stream_rpc_method_handler(
                    self._stream(method, spec, handler.unary_stream, decode),
                    response_serializer=handler.response_serializer,
                )
            else:
                raise RuntimeError(f"{method}: only unary and server-streaming calls are served")
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self._server.add_registered_method_handlers(service, wrapped)

    def _unary(
        self,
        method: str,
        spec: MethodSpec,
        behavior: Behavior,
        deserialize: Callable[[bytes], Message],
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]:
        log_calls, resolve, quotas = self._log_calls, self._identity.resolve, self._quotas
        metrics = self._metrics

        async def call(
            raw: bytes, context: grpc.aio.ServicerContext, span: tracing.RpcSpan | None = None
        ) -> Message:
            state = _Call(method, spec)
            try:
                request = state.admit(raw, context, deserialize, resolve)
                state.enter(quotas, stream=False)
                reply = await behavior(request, context)
                state.replayed = getattr(getattr(reply, "operation", None), "replayed", False)
                return reply
            except Exception as exc:
                state.fail(exc)
            finally:
                state.leave(quotas)
                if log_calls:
                    state.log()
                if metrics is not None:
                    state.count(metrics)
                if span is not None and span.recording:
                    state.trace(span)
            await context.abort_with_status(grpc_status(state.status, replayed=state.replayed))
            raise AssertionError("abort_with_status returns only by raising")

        if not tracing.enabled():  # decided when the server starts
            return call

        async def traced_call(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
            with tracing.rpc_span(method, context.invocation_metadata()) as span:
                return await call(raw, context, span)

        return traced_call

    def _stream(
        self,
        method: str,
        spec: MethodSpec,
        behavior: StreamBehavior,
        deserialize: Callable[[bytes], Message],
    ) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[Message]]:
        log_calls, resolve, quotas = self._log_calls, self._identity.resolve, self._quotas
        metrics = self._metrics

        async def call(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
            state = _Call(method, spec)
            try:
                request = state.admit(raw, context, deserialize, resolve)
                state.enter(quotas, stream=True)
                # Also when gRPC ends the call: a generator left suspended at a yield (its
                # write failed) reaches ``finally`` only when collected. Leaving twice is a no-op.
                context.add_done_callback(lambda _: state.leave(quotas))
                async for reply in behavior(request, context):
                    yield reply
                return
            except Exception as exc:
                state.fail(exc)
            finally:
                state.leave(quotas)
                if log_calls:
                    state.log()
                if metrics is not None:
                    state.count(metrics)
            await context.abort_with_status(grpc_status(state.status, replayed=state.replayed))

        return call


class _Call:
    """One call's identity, outcome and log line."""

    __slots__ = (
        "caller",
        "holding",
        "method",
        "replayed",
        "request_id",
        "spec",
        "started",
        "status",
    )

    def __init__(self, method: str, spec: MethodSpec) -> None:
        self.method, self.spec = method, spec
        self.started = time.perf_counter()
        self.request_id = ""
        self.caller: Caller | None = None
        self.status: status_pb2.Status | None = None
        self.replayed = False
        # (caller, stream) while this call holds a quota slot
        self.holding: tuple[str, bool] | None = None

    def admit(
        self,
        raw: bytes,
        context: grpc.aio.ServicerContext,
        deserialize: Callable[[bytes], Message],
        resolve: Callable[[grpc.aio.ServicerContext], Caller],
    ) -> Message:
        """Decode the request, identify the caller and check the role table."""
        try:
            request = deserialize(raw)
        except DecodeError:
            raise SettlementError(
                Reason.MALFORMED_REQUEST, f"the request is not a valid {self.method} message"
            ) from None
        self.request_id = getattr(request, "request_id", "")
        caller = self.caller = resolve(context)
        if caller.role not in self.spec.roles:
            raise SettlementError(
                Reason.ROLE_NOT_ALLOWED,
                f"role {caller.role.value} may not call {self.method}",
                metadata={"role": caller.role.value, "method": self.method},
            )
        set_current_caller(caller)
        return request

    def trace(self, span: tracing.RpcSpan) -> None:
        status = self.status
        span.finish(
            code_name(status),
            reason_of(status) if status is not None else "",
            request_id=self.request_id,
            caller=str(self.caller) if self.caller else None,
            replayed=self.replayed,
        )

    def enter(self, quotas: CallQuotas, *, stream: bool) -> None:
        assert self.caller is not None
        key = str(self.caller)
        quotas.enter(key, stream=stream)
        self.holding = (key, stream)

    def leave(self, quotas: CallQuotas) -> None:
        if self.holding is not None:
            key, stream = self.holding
            self.holding = None
            quotas.leave(key, stream=stream)

    def fail(self, exc: Exception) -> None:
        if isinstance(exc, SettlementError):
            if exc.reason in self.spec.reasons:
                self.status = to_status(exc)
                return
            self.request_id = self.request_id or _call_id()
            log.error(
                "undeclared_reason",
                method=self.method,
                reason=exc.reason.name,
                request_id=self.request_id,
            )
        elif isinstance(exc, StoredFailure):
            self.status = status_pb2.Status.FromString(exc.status)
            self.replayed = True
            return
        elif storage_unreachable(exc):
            # A read that lost its database (a failover under way): retryable, not a bug.
            log.warning("storage_unavailable", method=self.method, error=repr(exc))
            self.status = to_status(
                SettlementError(Reason.STORAGE_UNAVAILABLE, "the database is unavailable; retry")
            )
            return
        else:
            self.request_id = self.request_id or _call_id()
            log.error(
                "unhandled_error",
                method=self.method,
                request_id=self.request_id,
                caller=str(self.caller) if self.caller else None,
                exc_info=exc,
            )
        self.status = internal_status(self.request_id)

    def count(self, metrics: Metrics) -> None:
        status = self.status
        reason = reason_of(status) if status is not None else ""
        metrics.rpc(
            self.method, code_name(status), reason or "", time.perf_counter() - self.started
        )

    def log(self) -> None:
        status = self.status
        log.info(
            "rpc",
            method=self.method,
            caller=str(self.caller) if self.caller else None,
            request_id=self.request_id or None,
            status=code_name(status),
            reason=reason_of(status) if status is not None else None,
            replayed=self.replayed or None,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
        )


def _call_id() -> str:
    """A correlation id for a failed call that carried no request id (reads)."""
    return f"call-{uuid.uuid4().hex[:16]}"


class _Registrar:
    """Stands in for the server when generated code registers a servicer: it sees the handler
    table, and only the wrapped handlers reach the real server (never the bare ones)."""

    def __init__(self, wrapper: CallWrapper) -> None:
        self._wrapper = wrapper

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """Ignored: these hold the unwrapped handlers; _register adds the wrapped ones."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._wrapper._register(service, handlers)
