"""Per-caller quotas of one server process, and the process pool for CPU-heavy contract work.

Each quota is a setting (settlement/config.py) and each refusal is RESOURCE_EXHAUSTED with the
limit and the setting's name in its metadata (:func:`settlement.errors.quota_exceeded`). Calls in
flight and open streams are counted here, per process: the call wrapper takes a slot before the
handler runs and gives it back in ``finally`` (a stream holds its slot until it ends). Contracts
registered per day are counted in the database (settlement/ledger/payments.py), so across
replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from contracts_dsl import CompiledContract, load_compiled
from settlement import limits
from settlement.api import heavy_jobs
from settlement.config import Settings
from settlement.errors import Reason, quota_exceeded

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

#: How often a pool worker checks that the server that started it is still there.
PARENT_CHECK_SECONDS: Final = 1.0


class CallQuotas:
    """Calls in flight and WatchPayment streams per caller, in this process."""

    def __init__(self, calls_max: int, streams_max: int) -> None:
        self.calls_max, self.streams_max = calls_max, streams_max
        self._calls: Counter[str] = Counter()
        self._streams: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> CallQuotas:
        return cls(settings.calls_in_flight_max, settings.streams_max)

    def enter(self, caller: str, *, stream: bool) -> None:
        """Take a slot for ``caller`` or refuse; every successful enter needs one leave."""
        if self._calls[caller] >= self.calls_max:
            raise quota_exceeded(
                Reason.CALLS_IN_FLIGHT_EXCEEDED,
                "too many calls in flight for this caller",
                self.calls_max,
                "CONDPAY_CALLS_IN_FLIGHT_MAX",
            )
        if stream and self._streams[caller] >= self.streams_max:
            raise quota_exceeded(
                Reason.STREAMS_EXCEEDED,
                "too many open streams for this caller",
                self.streams_max,
                "CONDPAY_STREAMS_MAX",
            )
        self._calls[caller] += 1
        if stream:
            self._streams[caller] += 1

    def leave(self, caller: str, *, stream: bool) -> None:
        _decrement(self._calls, caller)
        if stream:
            _decrement(self._streams, caller)

    def in_flight(self, caller: str) -> int:
        return self._calls[caller]


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class HeavyWork:
    """A process pool for CPU-heavy contract work, so that it never runs on the event loop: a
    simulation or a compile takes one worker, never the loop every other caller needs.

    ``max(1, CPUs - 1)`` workers, started on first use (spawned: no fork of a process that runs
    gRPC threads), shut down by :meth:`close`. Compiled contracts are cached by source hash, so a
    repeated compile (LockPayment with the same source) never leaves the process. A caller may
    have ``heavy_calls_max`` heavy calls in flight (HEAVY_CALLS_EXCEEDED beyond)."""

    def __init__(self, heavy_calls_max: int, workers: int | None = None) -> None:
        self.heavy_calls_max = heavy_calls_max
        self._workers = workers or max(1, (os.cpu_count() or 1) - 1)
        self._pool: ProcessPoolExecutor | None = None
        self._in_flight: Counter[str] = Counter()
        self._compiled: OrderedDict[bytes, CompiledContract] = OrderedDict()
        self._compiling: dict[bytes, asyncio.Future[CompiledContract]] = {}

    @contextmanager
    def _slot(self, caller: str) -> Iterator[None]:
        if self._in_flight[caller] >= self.heavy_calls_max:
            raise quota_exceeded(
                Reason.HEAVY_CALLS_EXCEEDED,
                "too many contract validations, simulations or compiles in flight for this caller",
                self.heavy_calls_max,
                "CONDPAY_HEAVY_CALLS_MAX",
            )
        self._in_flight[caller] += 1
        try:
            yield
        finally:
            _decrement(self._in_flight, caller)

    def in_flight(self, caller: str) -> int:
        return self._in_flight[caller]

    async def run(self, caller: str, job: Callable[..., Any], *args: Any) -> Any:
        """``job(*args)`` in a pool worker; the arguments and result are plain data."""
        with self._slot(caller):
            if self._pool is None:
                import multiprocessing  # with the pool: not needed to start serving
                from concurrent.futures import ProcessPoolExecutor

                self._pool = ProcessPoolExecutor(
                    self._workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=exit_with_parent,
                    initargs=(os.getpid(),),
                )
            return await asyncio.get_running_loop().run_in_executor(self._pool, job, *args)

    async def job(self, caller: str, job: Callable[..., heavy_jobs.JobResult], *args: Any) -> bytes:
        """A job that answers (ok, bytes) or (refused, ErrorData): its bytes, or the refusal."""
        ok, result = await self.run(caller, job, *args)
        if not ok:
            raise heavy_jobs.to_error(result)
        assert isinstance(result, bytes)
        return result

    async def compile(self, caller: str, source: str, path: str) -> CompiledContract:
        """The compiled contract of ``source`` (cached by source hash), or CONTRACT_INVALID.
        Concurrent compiles of one source share the first one's work (and its slot)."""
        key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).digest()
        compiled = self._compiled.get(key)
        if compiled is not None:
            self._compiled.move_to_end(key)
            return compiled
        running = self._compiling.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[CompiledContract] = asyncio.get_running_loop().create_future()
        self._compiling[key] = future
        try:
            canonical = await self.job(caller, heavy_jobs.compile_job, source, path)
            compiled = load_compiled(canonical)
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._compiling[key]
        future.set_result(compiled)
        self._compiled[key] = compiled
        while len(self._compiled) > limits.COMPILE_CACHE_ENTRIES_MAX:
            self._compiled.popitem(last=False)
        return compiled

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)


def exit_with_parent(parent_pid: int) -> None:
    """In each pool worker: exit once the server that started it is gone. A server killed
    outright (kill -9, the OOM killer) never shuts its pool down, and a worker waiting for its
    next job would wait forever (it holds its own queue's write end, so it never reads EOF)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
