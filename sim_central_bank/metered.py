"""A condpay client that times every RPC and records its outcome into the run's record."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

from condpay.client import SettlementsClient
from condpay.errors import ApiError
from google.protobuf.message import Message

from sim_central_bank.record import ACCEPTED, CallSample, RunRecord

R = TypeVar("R", bound=Message)


def rpc_name(method: object) -> str:
    """``LockPayment`` from a stub's multi-callable (its full method path)."""
    path = getattr(method, "_method", b"")
    if isinstance(path, bytes):
        path = path.decode()
    return str(path).rsplit("/", 1)[-1] or "unknown"


class MeteredClient(SettlementsClient):
    """Every call (with its transparent retries) becomes one :class:`CallSample`."""

    def __init__(
        self,
        target: str,
        *,
        record: RunRecord | None = None,
        started: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(target, **kwargs)
        # with_caller builds a sibling without them, then hands over its own.
        self.record, self.started = record or RunRecord("", 0, target, ""), started

    def with_caller(self, caller: str) -> Self:
        other = super().with_caller(caller)
        other.record, other.started = self.record, self.started
        return other

    async def call(self, method: Callable[..., Awaitable[R]], request: Message) -> R:
        begun = time.perf_counter()
        # Attempts of this call alone: the client's ``retries`` is shared by every call in flight
        # on it, so a difference of it would count the others' retries too.
        attempts = 0

        def attempt(*args: Any, **kwargs: Any) -> Awaitable[R]:
            nonlocal attempts
            attempts += 1
            return method(*args, **kwargs)

        outcome = ACCEPTED
        try:
            return await super().call(attempt, request)
        except ApiError as error:
            outcome = error.reason or error.code.name
            raise
        finally:
            done = time.perf_counter()
            if attempts > 1:
                self.record.faults["client retries (no answer)"] += attempts - 1
            self.record.calls.append(
                CallSample(
                    rpc=rpc_name(method),
                    started_s=round(begun - self.started, 6),
                    latency_ms=round((done - begun) * 1000, 4),
                    outcome=outcome,
                )
            )
