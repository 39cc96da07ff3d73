"""Prometheus metrics (prometheus-client), off unless ``CONDPAY_METRICS_ADDR`` is set.

What a team running condpay watches, all under ``condpay_``:

    rpcs_total{method,code,reason}        every call, by its status code and error reason
    rpc_duration_seconds{method}          latency histogram per method
    engine_batch_commands                 commands per group-commit batch (histogram)
    engine_queue_commands                 commands waiting for the next batch
    db_pool_connections{pool,state}       the read pools' connections in use and idle
    open_escrows{currency}                payments LOCKED or PARTIALLY_RELEASED
    escrow_held_minor{currency}           what they hold, in minor units
    pending_deadlines                     open payments with a deadline still to fire
    settlements{state}                    settlements not FINAL or ABORTED, by state
    settlements_in_doubt                  PREPARED, COMMITTING, COMMITTED or ABORTING: the core and
                                          the bridge have not both settled them yet
    settlements_stuck                     left for an operator (docs/settlement.md, recovery)
    bridge_link_up                        1 when the last call to the bridge got an answer, 0 when
                                          it did not; absent without a bridge

The ledger-wide gauges are sampled from the database every :data:`SAMPLE_SECONDS` (the same
figures whichever worker samples them); the rest are counted as calls happen.

With ``condpay serve --workers N`` the workers write their series to files in a directory the
parent gives them (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), and the
parent alone serves ``/metrics``, summing counters and histograms over the workers and keeping
the live workers' gauges: one scrape address for the whole server.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import Gauge

log = structlog.get_logger("condpay.metrics")

#: How often the ledger-wide gauges are read from the database.
SAMPLE_SECONDS: Final = 5.0
#: The environment variable prometheus-client's multiprocess mode reads at import.
MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Latency buckets, seconds: a transfer takes about a millisecond, a settlement tens.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
OPEN_PAYMENT_STATES: Final = ("LOCKED", "PARTIALLY_RELEASED")
IN_DOUBT_STATES: Final = ("PREPARED", "COMMITTING", "COMMITTED", "ABORTING")
# Sampled gauges: every worker reads the same figure from the database; the newest counts.
SAMPLED: Final = "livemostrecent"


class PoolLike(Protocol):
    def checkedout(self) -> int: ...
    def checkedin(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the sampled gauges come from (the runtime's parts, without importing it)."""

    sql: AsyncEngine
    pools: Mapping[str, PoolLike]
    stuck_settlements: Callable[[], int]
    bridge_link_up: Callable[[], bool | None]  # None: no bridge


class Metrics:
    """The server's series in one process. Create it once per process (the series register in
    prometheus-client's default registry)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.rpcs = Counter(
            "condpay_rpcs",
            "Calls answered, by method, status code and reason.",
            ("method", "code", "reason"),
        )
        self.rpc_seconds = Histogram(
            "condpay_rpc_duration_seconds",
            "Time from a call's arrival to its answer, by method.",
            ("method",),
            buckets=LATENCY_BUCKETS,
        )
        self.batch_commands = Histogram(
            "condpay_engine_batch_commands",
            "Commands per group-commit batch.",
            buckets=BATCH_BUCKETS,
        )
        self.queue_commands = Gauge(
            "condpay_engine_queue_commands",
            "Commands waiting for the next batch.",
            multiprocess_mode="livesum",
        )
        self.pool_connections = Gauge(
            "condpay_db_pool_connections",
            "The read pools' connections, in use and idle.",
            ("pool", "state"),
            multiprocess_mode="livesum",
        )
        self.open_escrows = Gauge(
            "condpay_open_escrows",
            "Payments LOCKED or PARTIALLY_RELEASED.",
            ("currency",),
            multiprocess_mode=SAMPLED,
        )
        self.escrow_held = Gauge(
            "condpay_escrow_held_minor",
            "What open payments hold, in minor units.",
            ("currency",),
            multiprocess_mode=SAMPLED,
        )
        self.pending_deadlines = Gauge(
            "condpay_pending_deadlines",
            "Open payments with a deadline still to fire.",
            multiprocess_mode=SAMPLED,
        )
        self.settlements = Gauge(
            "condpay_settlements",
            "Settlements not FINAL or ABORTED, by state.",
            ("state",),
            multiprocess_mode=SAMPLED,
        )
        self.in_doubt = Gauge(
            "condpay_settlements_in_doubt",
            "Settlements PREPARED, COMMITTING, COMMITTED or ABORTING.",
            multiprocess_mode=SAMPLED,
        )
        self.stuck = Gauge(
            "condpay_settlements_stuck",
            "Settlements the coordinator left for an operator.",
            multiprocess_mode="livesum",
        )
        # Made when there is a bridge to report on: no series at all without one.
        self.bridge_up: Gauge | None = None
        # The labels each sampled gauge has had: one that disappears reads 0, not its last value.
        self._seen: dict[object, set[str]] = {}

    # -- as calls happen ---------------------------------------------------------------------
    def rpc(self, method: str, code: str, reason: str, seconds: float) -> None:
        self.rpcs.labels(method, code, reason).inc()
        self.rpc_seconds.labels(method).observe(seconds)

    def batch(self, commands: int, waiting: int) -> None:
        self.batch_commands.observe(commands)
        self.queue_commands.set(waiting)

    # -- sampled -----------------------------------------------------------------------------
    async def sample(self, sources: Sources) -> None:
        """Read the ledger-wide gauges once."""
        self.stuck.set(sources.stuck_settlements())
        link = sources.bridge_link_up()
        if link is not None:
            if self.bridge_up is None:
                from prometheus_client import Gauge

                self.bridge_up = Gauge(
                    "condpay_bridge_link_up",
                    "1 when the last call to the bridge got an answer, 0 when it did not.",
                    multiprocess_mode="livemin",
                )
            self.bridge_up.set(1 if link else 0)
        open_states = ", ".join(f"'{s}'" for s in OPEN_PAYMENT_STATES)
        async with sources.sql.connect() as connection:
            escrows = (
                await connection.execute(
                    text(
                        "SELECT currency, COUNT(*), COALESCE(SUM(held_minor), 0) FROM payments "
                        f"WHERE state IN ({open_states}) GROUP BY currency"
                    )
                )
            ).all()
            deadlines = (
                await connection.execute(
                    text(
                        f"SELECT COUNT(*) FROM payments WHERE state IN ({open_states}) "
                        "AND deadline_at_us IS NOT NULL"
                    )
                )
            ).scalar_one()
            settlements = (
                await connection.execute(
                    text(
                        "SELECT state, COUNT(*) FROM settlements "
                        "WHERE state NOT IN ('FINAL', 'ABORTED') GROUP BY state"
                    )
                )
            ).all()
        self._set_each(self.open_escrows, {currency: count for currency, count, _ in escrows})
        self._set_each(self.escrow_held, {currency: held for currency, _, held in escrows})
        self.pending_deadlines.set(int(deadlines))
        by_state = {state: int(count) for state, count in settlements}
        self._set_each(self.settlements, by_state)
        self.in_doubt.set(sum(by_state.get(s, 0) for s in IN_DOUBT_STATES))
        for name, pool in sources.pools.items():  # after the reads above, not during
            self.pool_connections.labels(name, "in_use").set(pool.checkedout())
            self.pool_connections.labels(name, "idle").set(pool.checkedin())

    def _set_each(self, gauge: Gauge, values: Mapping[str, int]) -> None:
        """Set a one-label gauge for every label in ``values``, and 0 for labels it had before
        and that are absent now."""
        seen = self._seen.setdefault(gauge, set())
        seen.update(values)
        for label in seen:
            gauge.labels(label).set(int(values.get(label, 0)))

    async def sample_forever(self, sources: Sources) -> None:
        while True:
            try:
                await self.sample(sources)
            except Exception as exc:  # a metrics read must never take the server down
                log.warning("metrics_sample_failed", error=repr(exc))
            await asyncio.sleep(SAMPLE_SECONDS)


_process_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """This process's :class:`Metrics` (made on first use: the series live in prometheus-client's
    default registry, once per process, however many runtimes the process runs)."""
    global _process_metrics
    if _process_metrics is None:
        _process_metrics = Metrics()
    return _process_metrics


def parse_addr(addr: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); ValueError naming what is wrong."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def serve_metrics(addr: str, *, multiprocess_dir: str | None = None) -> tuple[WSGIServer, int]:
    """Serve ``/metrics`` on ``addr`` from a thread of this process: this process's series, or
    (``multiprocess_dir``) the workers' series from that directory. Returns the HTTP server (to
    ``shutdown()``) and the port it listens on (``addr``'s, or a free one for port 0)."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    host, port = parse_addr(addr)
    registry = REGISTRY
    if multiprocess_dir is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound: int = server.server_address[1]
    log.info("metrics_serving", addr=f"{host}:{bound}", workers=multiprocess_dir is not None)
    return server, bound


@contextlib.contextmanager
def multiprocess_directory() -> Iterator[str]:
    """A fresh directory for the workers' series files, removed afterwards."""
    path = tempfile.mkdtemp(prefix="condpay-metrics-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def worker_gone(pid: int, directory: str) -> None:
    """Forget a dead worker's live gauges (its counters keep counting in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def pools_of(engines: Iterable[tuple[str, object]]) -> dict[str, PoolLike]:
    """The connection pools worth watching among named SQLAlchemy engines."""
    pools: dict[str, PoolLike] = {}
    for name, engine in engines:
        pool = getattr(engine, "pool", None)
        if pool is not None and hasattr(pool, "checkedout") and hasattr(pool, "checkedin"):
            pools[name] = pool
    return pools


__all__ = [
    "MULTIPROCESS_ENV",
    "Metrics",
    "Sources",
    "multiprocess_directory",
    "parse_addr",
    "pools_of",
    "process_metrics",
    "serve_metrics",
    "worker_gone",
]
