"""The load generator: ``concurrency`` tasks, each with one unary call in flight at a time, over one
grpc.aio channel, sending requests that were serialized before the clock started.

The requests are raw bytes and the call is made without serializers, so the client's work is the
same whatever the server: gRPC framing and the event loop only. A run has an untimed warm-up, then
a timed window: tasks stop taking new requests at its deadline (or when the pre-built requests run
out), the window ends when the last call in flight is answered. Every answer is counted by status
code; latency is measured per call with ``perf_counter_ns``.

:class:`LoadProcess` runs this in a child process of its own (multiprocessing, spawn), so that the
client does not share an interpreter with the orchestrator; on a 2-core machine it still shares the
cores with the server under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import grpc
from condpay.errors import from_rpc_error

from tests.bench.cpu import CpuWatch, cores_used, take_snapshot
from tests.bench.latency import LatencySummary, summarize_ns

CALL_TIMEOUT_SECONDS = 30.0
RESULT_TIMEOUT_SECONDS = 600.0
OK = "OK"


@dataclass(frozen=True, slots=True)
class LoadSpec:
    address: str
    method: str  # the full gRPC path, e.g. "/condpay.v1.WalletService/Transfer"
    metadata: tuple[tuple[str, str], ...]
    requests: Sequence[bytes]  # serialized requests, used in order, each once
    concurrency: int
    warmup_seconds: float
    seconds: float
    cpu_watch: CpuWatch = field(default_factory=CpuWatch)
    # Connections to spread the calls over (one TCP connection each), as a busy platform would
    # have; with several server processes on one port the kernel spreads connections, not calls.
    channels: int = 16


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One phase (warm-up or timed window) of a run."""

    count: int  # calls answered, whatever the status
    seconds: float
    statuses: dict[str, int]  # "OK", "CODE" or "CODE/REASON" -> calls
    latency: LatencySummary
    response_bytes: int  # size of an OK response (0 if none)

    @property
    def ok(self) -> int:
        return self.statuses.get(OK, 0)

    @property
    def errors(self) -> dict[str, int]:
        return {code: n for code, n in sorted(self.statuses.items()) if code != OK}


@dataclass(frozen=True, slots=True)
class LoadResult:
    warmup: PhaseResult
    timed: PhaseResult
    requests_exhausted: bool  # the pre-built requests ran out before the deadline
    cpu_cores: dict[str, float]  # cores used per watched group during the timed window
    request_bytes: int  # size of the first request


@dataclass(slots=True)
class _Tally:
    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    response_bytes: int = 0


def _status_name(error: grpc.aio.AioRpcError) -> str:
    """``CODE`` or, when the server sent a google.rpc.ErrorInfo, ``CODE/REASON``."""
    reason = from_rpc_error(error).reason
    code: str = error.code().name
    return f"{code}/{reason}" if reason else code


async def _drive(
    call: Any, requests: Iterator[bytes], spec: LoadSpec, deadline: float, tally: _Tally
) -> None:
    """One task: take the next request, call, record; until the deadline or no requests left."""
    for request in requests:
        if time.perf_counter() >= deadline:
            return  # this request stays unsent
        started = time.perf_counter_ns()
        try:
            reply = await call(request, metadata=spec.metadata, timeout=CALL_TIMEOUT_SECONDS)
            tally.response_bytes = len(reply)
            code = OK
        except grpc.aio.AioRpcError as error:
            code = _status_name(error)
        tally.latencies_ns.append(time.perf_counter_ns() - started)
        tally.statuses[code] += 1


async def _phase(
    calls: list[Any], requests: Iterator[bytes], spec: LoadSpec, seconds: float
) -> PhaseResult:
    tally = _Tally()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _drive(calls[task % len(calls)], requests, spec, deadline, tally)
            for task in range(spec.concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    return PhaseResult(
        count=len(tally.latencies_ns),
        seconds=round(elapsed, 4),
        statuses=dict(tally.statuses),
        latency=summarize_ns(tally.latencies_ns),
        response_bytes=tally.response_bytes,
    )


async def measure(spec: LoadSpec) -> LoadResult:
    """Warm up, then measure, over ``spec.channels`` fresh channels (separate connections)."""
    requests = iter(spec.requests)
    watch = spec.cpu_watch.with_pid("client", os.getpid())
    # A local subchannel pool per channel: otherwise channels to one address share a connection.
    channels = [
        grpc.aio.insecure_channel(spec.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(spec.channels)
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        # No serializers: bytes in, bytes out.
        calls = [channel.unary_unary(spec.method) for channel in channels]
        warmup = await _phase(calls, requests, spec, spec.warmup_seconds)
        before = take_snapshot(watch)
        timed = await _phase(calls, requests, spec, spec.seconds)
        after = take_snapshot(watch)
    finally:
        for channel in channels:
            await channel.close()
    return LoadResult(
        warmup=warmup,
        timed=timed,
        requests_exhausted=next(requests, None) is None,
        cpu_cores=cores_used(before, after),
        request_bytes=len(spec.requests[0]) if spec.requests else 0,
    )


@dataclass(frozen=True, slots=True)
class _WorkerFailure:
    traceback: str


def _worker(connection: Connection) -> None:
    """The child process: measure each spec received until told to stop (None)."""
    while True:
        spec = connection.recv()
        if spec is None:
            return
        try:
            connection.send(asyncio.run(measure(spec)))
        except Exception:
            connection.send(_WorkerFailure(traceback.format_exc()))


class LoadProcess:
    """The load generator in a child process; a context manager that always ends the child."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_worker, args=(child_end,), name="bench-load", daemon=True
        )
        self._process.start()
        child_end.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def measure(self, spec: LoadSpec) -> LoadResult:
        self._connection.send(spec)
        ready = await asyncio.to_thread(self._connection.poll, RESULT_TIMEOUT_SECONDS)
        if not ready:
            raise TimeoutError(f"the load generator gave no result in {RESULT_TIMEOUT_SECONDS} s")
        reply = self._connection.recv()
        if isinstance(reply, _WorkerFailure):
            raise RuntimeError(f"the load generator failed:\n{reply.traceback}")
        assert isinstance(reply, LoadResult)
        return reply

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._connection.send(None)
            self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._connection.close()

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
