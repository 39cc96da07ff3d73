"""The load generator: ``concurrency`` tasks, each with one unary call in flight at a time, over one
grpc.aio channel, sending requests that were serialized before the clock started.

:func:`measure` sends single calls (the echo and transfer cells); :func:`measure_flows` runs
*flows* (:class:`Flow`: a sequence of steps, e.g. a conditional payment's lock and attestations):
each task runs one flow at a time, one call in flight, the next step once the previous one
answered OK (a refusal ends the flow), recording each step's latency by name, the latency of the
steps that release money together, and the flows completed. With ``start_rate`` flows start on a
fixed schedule instead (open loop: a flow every 1/rate s, whatever the answers).

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
from collections.abc import Callable, Iterator, Sequence
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
    request_bytes: int = 0  # flows: the size of the last request sent (built ones included)


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
            if isinstance(spec, FlowSpec):
                connection.send(asyncio.run(measure_flows(spec)))
            else:
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

    async def _ask(self, spec: LoadSpec | FlowSpec) -> object:
        self._connection.send(spec)
        ready = await asyncio.to_thread(self._connection.poll, RESULT_TIMEOUT_SECONDS)
        if not ready:
            raise TimeoutError(f"the load generator gave no result in {RESULT_TIMEOUT_SECONDS} s")
        reply = self._connection.recv()
        if isinstance(reply, _WorkerFailure):
            raise RuntimeError(f"the load generator failed:\n{reply.traceback}")
        return reply

    async def measure(self, spec: LoadSpec) -> LoadResult:
        reply = await self._ask(spec)
        assert isinstance(reply, LoadResult)
        return reply

    async def measure_flows(self, spec: FlowSpec) -> FlowResult:
        reply = await self._ask(spec)
        assert isinstance(reply, FlowResult)
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


# -- flows: a sequence of calls, one in flight per task --------------------------------------------
DONE = "DONE"  # a verdict: the flow is complete with this reply (its remaining steps are skipped)
POLL_LIMIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Step:
    """One call of a flow: its name in the report (e.g. ``LockPayment``), the full gRPC path, the
    serialized request and the caller metadata; ``releases``: the call releases money.

    For a step whose request depends on an earlier answer (a settlement signed over the quote
    the previous step got), ``build(previous OK reply, request)`` makes the request sent, in the
    load generator. ``verdict(reply)`` classifies an OK reply: ``""`` goes on, :data:`DONE`
    completes the flow, anything else ends it as that outcome (a definite refusal, e.g. an
    ABORTED settlement). With ``poll_seconds`` the step is sent again, that much later, while
    its verdict is ``""`` (for :data:`POLL_LIMIT_SECONDS` at most). ``starts_clock``: the flow's
    time to completion is measured from this step's send. ``build`` and ``verdict`` are
    module-level functions (the spec is pickled to the load generator's process)."""

    name: str
    method: str
    request: bytes
    metadata: tuple[tuple[str, str], ...]
    releases: bool = False
    build: Callable[[bytes, bytes], bytes] | None = None
    verdict: Callable[[bytes], str] | None = None
    poll_seconds: float = 0.0
    starts_clock: bool = False


@dataclass(frozen=True, slots=True)
class Flow:
    """Steps sent in order, each after the previous one answered OK; a refusal ends the flow.
    ``label`` names it in the result (e.g. the payment id)."""

    label: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class FlowSpec:
    address: str
    flows: Sequence[Flow]  # used in order, each once
    concurrency: int  # closed loop: tasks, each running one flow at a time
    warmup_seconds: float
    seconds: float
    cpu_watch: CpuWatch = field(default_factory=CpuWatch)
    channels: int = 16
    # Open loop: start a flow every 1/rate s (each in a task of its own) instead of ``concurrency``
    # closed-loop tasks; at most ``concurrency`` flows in flight (a start finding none free waits).
    start_rate: float | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    count: int  # calls answered
    statuses: dict[str, int]
    latency: LatencySummary
    response_bytes: int
    request_bytes: int
    releases: bool

    @property
    def ok(self) -> int:
        return self.statuses.get(OK, 0)

    @property
    def errors(self) -> dict[str, int]:
        return {code: n for code, n in sorted(self.statuses.items()) if code != OK}


@dataclass(frozen=True, slots=True)
class FlowPhase:
    """One phase of a flow run: flows started and completed (every step OK), per step results,
    the latency of the releasing steps together, and which flows completed."""

    started: int
    completed: int
    seconds: float
    steps: dict[str, StepResult]
    release_latency: LatencySummary
    flow_latency: LatencySummary  # first send to last answer of each completed flow
    completed_labels: list[str]
    start_lag_ms: LatencySummary  # open loop: how late flows started against their schedule
    clock_latency: LatencySummary  # from the send of the starts_clock step to completion
    outcomes: dict[str, int]  # flows ended by a verdict other than DONE ("step: verdict")

    @property
    def errors(self) -> dict[str, int]:
        found: Counter[str] = Counter()
        for name, step in self.steps.items():
            for code, n in step.errors.items():
                found[f"{name}: {code}"] += n
        return dict(sorted(found.items()))


@dataclass(frozen=True, slots=True)
class FlowResult:
    warmup: FlowPhase
    timed: FlowPhase
    flows_exhausted: bool
    cpu_cores: dict[str, float]
    request_bytes: dict[str, int]  # per step name: as sent (a built request's own size)


@dataclass(slots=True)
class _FlowTally:
    steps: dict[str, _Tally] = field(default_factory=dict)
    releases: dict[str, bool] = field(default_factory=dict)
    release_ns: list[int] = field(default_factory=list)
    flow_ns: list[int] = field(default_factory=list)
    lag_ns: list[int] = field(default_factory=list)
    clock_ns: list[int] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    started: int = 0
    completed: list[str] = field(default_factory=list)


async def _run_flow(calls: dict[str, Any], flow: Flow, tally: _FlowTally) -> None:
    tally.started += 1
    began = time.perf_counter_ns()
    clock_ns: int | None = None
    previous = b""
    for step in flow.steps:
        step_tally = tally.steps.get(step.name)
        if step_tally is None:
            step_tally = tally.steps[step.name] = _Tally()
            tally.releases[step.name] = step.releases
        request = step.build(previous, step.request) if step.build is not None else step.request
        step_tally.request_bytes = len(request)
        give_up_ns = time.perf_counter_ns() + int(POLL_LIMIT_SECONDS * 1e9)
        while True:
            started = time.perf_counter_ns()
            try:
                reply = await calls[step.method](
                    request, metadata=step.metadata, timeout=CALL_TIMEOUT_SECONDS
                )
                step_tally.response_bytes = len(reply)
                code = OK
            except grpc.aio.AioRpcError as error:
                code = _status_name(error)
            elapsed = time.perf_counter_ns() - started
            step_tally.latencies_ns.append(elapsed)
            step_tally.statuses[code] += 1
            if code != OK:
                return  # a refused step ends its flow
            if step.starts_clock:
                clock_ns = started
            verdict = step.verdict(reply) if step.verdict is not None else ""
            if verdict or not step.poll_seconds:
                break
            if time.perf_counter_ns() > give_up_ns:
                verdict = "POLL_LIMIT"
                break
            await asyncio.sleep(step.poll_seconds)
        if step.releases:
            tally.release_ns.append(elapsed)
        if verdict == DONE:
            break
        if verdict:
            tally.outcomes[f"{step.name}: {verdict}"] += 1
            return
        previous = reply
    done_ns = time.perf_counter_ns()
    tally.flow_ns.append(done_ns - began)
    if clock_ns is not None:
        tally.clock_ns.append(done_ns - clock_ns)
    tally.completed.append(flow.label)


async def _flow_task(
    calls: dict[str, Any], flows: Iterator[Flow], deadline: float, tally: _FlowTally
) -> None:
    while time.perf_counter() < deadline:  # checked before taking a flow: none is skipped
        flow = next(flows, None)
        if flow is None:
            return
        await _run_flow(calls, flow, tally)


async def _paced(
    calls: list[dict[str, Any]],
    flows: Iterator[Flow],
    spec: FlowSpec,
    deadline: float,
    tally: _FlowTally,
) -> None:
    """Open loop: flow k starts at ``start + k / rate`` (later if ``concurrency`` are in flight)."""
    rate = spec.start_rate
    if rate is None or rate <= 0:
        raise ValueError(f"an open-loop run needs a positive start rate, not {rate}")
    interval_ns = int(1e9 / rate)
    slots = asyncio.Semaphore(spec.concurrency)
    running: set[asyncio.Task[None]] = set()
    start_ns = time.perf_counter_ns()

    async def one(flow: Flow, channel: dict[str, Any]) -> None:
        try:
            await _run_flow(channel, flow, tally)
        finally:
            slots.release()

    deadline_ns = int(deadline * 1e9)
    k = 0
    while (due_ns := start_ns + k * interval_ns) < deadline_ns:
        flow = next(flows, None)  # taken only when due before the deadline: none is skipped
        if flow is None:
            break
        wait_ns = due_ns - time.perf_counter_ns()
        if wait_ns > 0:
            await asyncio.sleep(wait_ns / 1e9)
        await slots.acquire()
        tally.lag_ns.append(max(0, time.perf_counter_ns() - due_ns))
        task = asyncio.create_task(one(flow, calls[k % len(calls)]))
        running.add(task)
        task.add_done_callback(running.discard)
        k += 1
    if running:
        await asyncio.gather(*running)


async def _flow_phase(
    calls: list[dict[str, Any]], flows: Iterator[Flow], spec: FlowSpec, seconds: float
) -> FlowPhase:
    tally = _FlowTally()
    started = time.perf_counter()
    deadline = started + seconds
    if spec.start_rate is not None:
        await _paced(calls, flows, spec, deadline, tally)
    else:
        await asyncio.gather(
            *(
                _flow_task(calls[task % len(calls)], flows, deadline, tally)
                for task in range(spec.concurrency)
            )
        )
    elapsed = time.perf_counter() - started
    return FlowPhase(
        started=tally.started,
        completed=len(tally.completed),
        seconds=round(elapsed, 4),
        steps={
            name: StepResult(
                count=len(t.latencies_ns),
                statuses=dict(t.statuses),
                latency=summarize_ns(t.latencies_ns),
                response_bytes=t.response_bytes,
                request_bytes=t.request_bytes,
                releases=tally.releases[name],
            )
            for name, t in tally.steps.items()
        },
        release_latency=summarize_ns(tally.release_ns),
        flow_latency=summarize_ns(tally.flow_ns),
        completed_labels=tally.completed,
        start_lag_ms=summarize_ns(tally.lag_ns),
        clock_latency=summarize_ns(tally.clock_ns),
        outcomes=dict(sorted(tally.outcomes.items())),
    )


async def measure_flows(spec: FlowSpec) -> FlowResult:
    """Warm up, then measure flows, over ``spec.channels`` fresh channels; a flow's calls share
    one channel."""
    flows = iter(spec.flows)
    watch = spec.cpu_watch.with_pid("client", os.getpid())
    channels = [
        grpc.aio.insecure_channel(spec.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(spec.channels)
    ]
    methods = sorted({step.method for flow in spec.flows[:1] for step in flow.steps})
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        # No serializers: bytes in, bytes out. Each task (or open-loop flow) keeps to one channel.
        calls = [{m: channel.unary_unary(m) for m in methods} for channel in channels]
        warmup = await _flow_phase(calls, flows, spec, spec.warmup_seconds)
        before = take_snapshot(watch)
        timed = await _flow_phase(calls, flows, spec, spec.seconds)
        after = take_snapshot(watch)
    finally:
        for channel in channels:
            await channel.close()
    first = spec.flows[0].steps if spec.flows else ()
    sent = {name: step.request_bytes for name, step in {**warmup.steps, **timed.steps}.items()}
    return FlowResult(
        warmup=warmup,
        timed=timed,
        flows_exhausted=next(flows, None) is None,
        cpu_cores=cores_used(before, after),
        request_bytes={step.name: sent.get(step.name, len(step.request)) for step in first},
    )
