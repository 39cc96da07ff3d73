"""``make bench``: condpay transfers per second and latency through gRPC, on SQLite and PostgreSQL,
against a plain gRPC echo baseline measured in the same run on the same machine. (``make bench``
then runs :mod:`tests.bench.lifecycles` and :mod:`tests.bench.settlements` with these cells as
their references: :mod:`tests.bench.__main__`.)

Method
------
Every server is a process of its own: the echo server (:mod:`tests.bench.echo_server`: a
grpc.aio generic handler that returns the request bytes) and ``condpay serve --insecure`` with
per-call logging off (``CONDPAY_QUIET_CALLS=1``, the same as ``--quiet-calls``), on a fresh SQLite
file under ``var/bench/`` and on a fresh database of a throwaway PostgreSQL server
(tests/support/postgres.py; or ``CONDPAY_TEST_DATABASE_URL``). The load generator
(:mod:`tests.bench.load`) is a third process: ``concurrency`` asyncio tasks over one grpc.aio
channel, each with one call in flight, sending requests serialized before the clock starts; the
echo cells send a real, signed TransferRequest of the same size, through the very same code.

condpay is set up through its public API (:mod:`tests.bench.ledger_setup`): an institution,
issuance, 200 funded payers, 200 payees and one hot wallet. Shapes:

- ``uncontended``: payer ``i`` pays payee ``i`` (no two calls in flight share a balance row);
- ``hot``: every transfer credits the one hot wallet (one balance row under every batch).

Each cell: pre-sign its transfers, wait (bounded, :mod:`tests.bench.quiet`) for the machine to go
quiet, warm up for ``--warmup`` seconds, then measure for ``--seconds``. A cell that other
processes disturbed (they used >= 0.25 cores in its window) is measured once more, within a budget
for the run; the cell keeps the last attempt and lists the earlier one. After each condpay cell
GetSupply must say ``consistent``; after each server's cells the balances of payers, payees and
the hot wallet must equal what the OK transfers imply; every server must stop cleanly (exit
status 0). The run exits 1 when any call failed or any check did, after writing the JSON.

Caveats
-------
- The client, the server and PostgreSQL share the machine's cores (2 here): a faster client or
  server leaves less CPU to the other, and the echo baseline is client- and server-CPU-bound too.
  ``cpu_cores`` in each cell says where the cores went; ``others`` is every process not under
  test (on a shared machine, e.g. another test suite) and flags a disturbed cell.
- grpc.aio in Python on both ends: the figures are relative to this stack, hence the ratio.
- PostgreSQL is durable (fsync and synchronous_commit on), as the throwaway server starts it.
- Every server gets a fresh database and lives about a minute and a half: autovacuum has not
  analyzed the tables yet, so the planner's statistics are those of near-empty tables (and
  prepared statements may keep plans made then). A long-running server may plan differently.
- A window includes the drain of the last calls in flight (<= one latency).
- The echo reply is the request (~310 bytes); a transfer's reply, its journal entry, is of a
  similar size (``request_bytes`` and ``response_bytes`` in each cell).
- The machine may be shared: ``cpu_cores.others`` and ``disturbed`` say when it was.

JSON (``var/bench/transfers.json``, schema ``condpay.bench.transfers/1``)
-------------------------------------------------------------------------
::

    {
      "schema": "condpay.bench.transfers/1",
      "machine": {"date", "nproc", "cpu_count", "cpu_model", "memory_gib", "kernel", "python",
                  "grpcio", "protobuf", "sqlite", "postgres", "postgres_source"},
      "method": {"load_generator", "shared_cores", "per_call_logging", "seconds_per_cell",
                 "warmup_seconds", "concurrencies", "payers", "amount_minor",
                 "echo_request_bytes", "postgres_workers_default", "postgres_workers_extra"},
      "run_seconds": 312.4,
      "cells": [{
        "backend": "echo" | "sqlite" | "postgres",
        "shape": "echo" | "uncontended" | "hot",
        "concurrency": 16,              # calls in flight: 1, 16, 64, 256 by default
        "workers": 2,                   # CONDPAY_WORKERS (PostgreSQL); 1 for SQLite; null for echo
        "default_settings": true,       # false for the extra CONDPAY_WORKERS and observed cells
        "observed": "",                 # or production | always | metrics | tracing (OBSERVED)
        "repeat": 0,                    # the how-manieth measurement of this cell (--repeats)
        "count": 25000,                 # calls answered in the timed window, OK or not
        "ok": 25000,
        "seconds": 5.01,
        "per_second": 4990.0,           # OK calls per second
        "latency_ms": {"p50", "p95", "p99", "mean", "max"},
        "errors": {"UNAVAILABLE/OVERLOADED": 3},   # by status code (and reason); {} if none
        "warmup": {"count", "seconds", "errors"},
        "cpu_cores": {"client", "server", "postgres", "others", "machine", "iowait"},
        "requests_exhausted": false,    # the pre-signed requests ran out before the deadline
        "request_bytes": 313, "response_bytes": 287,
        "quiet_wait_seconds": 0.5,      # waited for the machine to go quiet first
        "disturbed": false,             # others used >= 0.25 cores in the window
        "discarded_attempts": [{"count", "per_second", "errors", "cpu_cores"}],
        "supply_consistent": true       # GetSupply after the cell; null for echo
      }],
      "checks": [{"name", "ok", "detail"}],
      "notes": ["..."],
      "summary": {
        "observed_config": "production", "observed_to_default_ratio", "observed_ratio_target": 0.9,
        "observed_ratio_target_met", "observed_every_call_to_default_ratio",
        "observed_by_config": {"production": {"ratio", "ratio_repeats", "ratio_by_cell",
                               "ratio_by_cell_repeats", "ratio_min", "pairs",
                               "pairs_undisturbed", "uncontended_per_second",
                               "server_cpu_ms_per_transfer_by_cell"}, "always": ...},
        "postgres_workers": 2,
        "postgres_best_uncontended_per_second", "postgres_best_uncontended_concurrency",
        "echo_best_per_second", "echo_best_concurrency",
        "uncontended_to_echo_ratio", "ratio_target": 0.5, "ratio_target_met",
        "postgres_best_hot_per_second", "postgres_best_hot_concurrency",
        "hot_target_per_second": 1000, "hot_target_met",
        "postgres_by_workers": [{"workers", "uncontended_per_second",
                                 "uncontended_to_echo_ratio", "hot_per_second"}],
        "sqlite_best_uncontended_per_second", "sqlite_best_hot_per_second",
        "errors_total", "checks_passed"
      }
    }

The targets (issue 2) are judged on the default settings only; other writer settings are reported
in ``postgres_by_workers``.

Observed cells (issue 12: metrics and tracing on keep >= 0.9 of the throughput without): each
configuration in ``--observed`` is a server of its own beside the default one, all started first
and measured in turn cell by cell (the order rotating), ``--repeats`` times, so that a ratio
compares windows minutes apart; spans go over OTLP/gRPC to a sink in the bench process. The
target is judged on ``production`` (docs/operations.md's sampler); ``always`` (every call traced)
is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from settlement.config import Settings
from sim_central_bank.server_process import free_port
from tests.bench import echo_server
from tests.bench.condpay_server import PER_CALL_LOGGING, RunningCondpay, condpay_server
from tests.bench.cpu import CpuWatch, pid_with_arguments
from tests.bench.databases import fresh_database, server_version
from tests.bench.ledger_setup import BenchLedger, build_ledger
from tests.bench.load import LoadProcess, LoadResult, LoadSpec
from tests.bench.machine import machine_info
from tests.bench.otlp_sink import otlp_sink
from tests.bench.presign import (
    AMOUNT_MINOR,
    Shape,
    sample_transfer_request,
    transfer_requests,
)
from tests.bench.quiet import QuietGate
from tests.bench.report import Cell, CellKey, Report, disturbed, print_report, write_json
from tests.bench.verify import Moved, balance_failures, supply_consistent
from tests.support.postgres import PostgresServer, postgres_server

BENCH_DIR = Path("var") / "bench"
TRANSFER_METHOD = "/condpay.v1.WalletService/Transfer"
TRANSFER_CALLER = (("condpay-caller", "platform/bench-load"),)
# `condpay serve` on PostgreSQL defaults to one worker process per CPU ("auto").
DEFAULT_WORKERS = Settings(database_url="postgresql://").worker_count()
POOL_HEADROOM = 1.3  # pre-sign this much more than the expected rate could use
RATE_GUESS_FLOOR = 3_000.0  # transfers/s assumed before a server has shown its rate
RATE_GUESS_FACTOR = 2.5  # ... and then this times the best rate it has shown so far
ECHO_RATE_CEILING = 50_000.0  # calls/s: sizes the echo cells' (free) request pool
RETRIES_PER_CELL = 1  # re-measure a disturbed cell once...
RETRIES_PER_RUN = 6  # ... within this many for the whole run
console = Console(width=None if sys.stdout.isatty() else 160)
RequestFactory = Callable[[int, int], Sequence[bytes]]  # (count, attempt) -> requests


@dataclass(frozen=True, slots=True)
class Observed:
    """A way to run the server observed: metrics on or off, tracing off or with a sampler."""

    name: str
    what: str
    metrics: bool
    tracing: bool
    # The standard sampler variables given to the server; {} leaves condpay's default.
    sampler: dict[str, str] = field(default_factory=dict)

    def env(self, metrics_addr: str, otlp_endpoint: str) -> dict[str, str]:
        env = {"CONDPAY_METRICS_ADDR": metrics_addr} if self.metrics else {}
        if self.tracing:
            env |= {
                "CONDPAY_OTEL": "1",
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
                **self.sampler,
            }
        return env


EVERY_CALL = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}  # the SDK's default
# What docs/operations.md recommends in production: keep a tenth of the traces that start here
# (and whatever a caller's traceparent says for the others).
PRODUCTION_SAMPLER = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}
PRODUCTION, ALWAYS = "production", "always"
#: The observed configurations the bench knows (``--observed``); PRODUCTION is the one
#: docs/operations.md recommends, ALWAYS the issue's literal reading (every call traced).
OBSERVED = {
    o.name: o
    for o in (
        Observed(
            PRODUCTION,
            "metrics, and tracing with the production sampler (1 trace in 10)",
            True,
            True,
            PRODUCTION_SAMPLER,
        ),
        Observed(ALWAYS, "metrics, and every call traced", True, True, EVERY_CALL),
        Observed("metrics", "metrics only", metrics=True, tracing=False),
        Observed("tracing", "every call traced, no metrics", False, True, EVERY_CALL),
    )
}


@dataclass(frozen=True, slots=True)
class BenchConfig:
    seconds: float = 5.0
    warmup_seconds: float = 1.0
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    payers: int = 200
    backends: tuple[str, ...] = ("echo", "sqlite", "postgres")
    extra_workers: tuple[int, ...] = (1,)
    # PostgreSQL again with metrics and/or tracing on (spans exported to an OTLP sink, /metrics
    # scraped after each cell), for the overhead ratios: names in OBSERVED.
    observed: tuple[str, ...] = (PRODUCTION, ALWAYS)
    # Each observed and default cell measured this many times, in turn (their ratios' spread).
    repeats: int = 2
    output: Path = BENCH_DIR / "transfers.json"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a cell's calls go, and which processes' CPU to account for."""

    address: str
    method: str
    watch: CpuWatch


@dataclass(slots=True)
class Bench:
    """One run: the config, the load generator and what has been measured so far."""

    config: BenchConfig
    load: LoadProcess
    report: Report
    quiet: QuietGate = field(default_factory=QuietGate)
    retries_left: int = RETRIES_PER_RUN

    def pool_size(self, concurrency: int, rate: float) -> int:
        window = self.config.warmup_seconds + self.config.seconds
        return int(rate * POOL_HEADROOM * window) + 2 * concurrency

    def transfer_rate_guess(self, backend: str, workers: int | None) -> float:
        """An upper estimate for sizing a cell's pre-signed requests: a few times the best this
        server has done so far, never above the echo baseline's best."""
        cells = self.report.cells
        shown = [c.per_second for c in cells if (c.backend, c.workers) == (backend, workers)]
        echo = max((c.per_second for c in cells if c.backend == "echo"), default=float("inf"))
        return min(echo, max(RATE_GUESS_FLOOR, RATE_GUESS_FACTOR * max(shown, default=0.0)))

    async def measure(
        self, target: Target, concurrency: int, rate: float, make_requests: RequestFactory
    ) -> tuple[list[LoadResult], float]:
        """Measure a cell (again, once, if others disturbed it); all attempts and the quiet wait."""
        attempts: list[LoadResult] = []
        waited = 0.0
        while True:
            requests = make_requests(self.pool_size(concurrency, rate), len(attempts))
            seconds, _ = await self.quiet.wait()
            waited += seconds
            spec = LoadSpec(
                address=target.address,
                method=target.method,
                metadata=TRANSFER_CALLER,
                requests=requests,
                concurrency=concurrency,
                warmup_seconds=self.config.warmup_seconds,
                seconds=self.config.seconds,
                cpu_watch=target.watch,
            )
            attempts.append(await self.load.measure(spec))
            retry = len(attempts) <= RETRIES_PER_CELL and self.retries_left > 0
            if not (disturbed(attempts[-1]) and retry):
                return attempts, waited
            self.retries_left -= 1
            console.print("  (disturbed by other processes: measuring again)")

    def add(self, cell: Cell) -> None:
        self.report.cells.append(cell)
        errors = ", ".join(f"{k} {v}" for k, v in cell.errors.items()) or "no errors"
        cores = " ".join(f"{k} {v:.2f}" for k, v in cell.cpu_cores.items())
        console.print(
            f"  {cell.backend:8} w={cell.workers or '-'} {cell.observed or '':10} "
            f"{cell.shape:11} c={cell.concurrency:<3} "
            f"{cell.per_second:>7,.0f}/s p50 {cell.latency_ms['p50']:6.2f} ms "
            f"p99 {cell.latency_ms['p99']:6.2f} ms, {errors}; cores: {cores}",
            soft_wrap=True,
        )


async def run_echo(bench: Bench) -> None:
    console.print("[bold]echo baseline[/]")
    request = sample_transfer_request()
    with echo_server.EchoServer(log_path=BENCH_DIR / "logs" / "echo.log") as echo:
        await echo.wait_ready()
        target = Target(echo.address, echo_server.METHOD_PATH, CpuWatch({"server": (echo.pid,)}))
        for concurrency in bench.config.concurrencies:
            attempts, waited = await bench.measure(
                target, concurrency, ECHO_RATE_CEILING, lambda count, _: [request] * count
            )
            key = CellKey("echo", Shape.ECHO.value, concurrency, None)
            bench.add(Cell.build(key, attempts, quiet_wait_seconds=waited, supply_consistent=None))


async def _transfer_cell(
    bench: Bench, target: Target, ledger: BenchLedger, key: CellKey, moved: Moved
) -> None:
    shape = Shape(key.shape)
    tag = (
        f"{key.backend}-w{key.workers}{key.observed}-{shape.value}-c{key.concurrency}-r{key.repeat}"
    )

    def make_requests(count: int, attempt: int) -> list[bytes]:
        return transfer_requests(ledger, shape, count, f"{tag}-a{attempt}")

    rate = bench.transfer_rate_guess(key.backend, key.workers)
    attempts, waited = await bench.measure(target, key.concurrency, rate, make_requests)
    credited = sum(a.warmup.ok + a.timed.ok for a in attempts) * AMOUNT_MINOR
    if shape is Shape.HOT:
        moved.to_hot_wallet += credited
    else:
        moved.to_payees += credited
    consistent = await supply_consistent(target.address)
    bench.report.check(f"{tag}: GetSupply consistent", consistent)
    bench.add(Cell.build(key, attempts, quiet_wait_seconds=waited, supply_consistent=consistent))


@dataclass(slots=True)
class Served:
    """A condpay server under test, its ledger and what its OK transfers have moved."""

    label: str
    backend: str
    workers: int
    default_settings: bool
    observed: str  # "" or a name in OBSERVED
    server: RunningCondpay
    ledger: BenchLedger
    families: dict[str, int]  # the server's database, for CPU accounting
    metrics_addr: str | None
    moved: Moved = field(default_factory=Moved)


@contextlib.asynccontextmanager
async def condpay_under_test(
    bench: Bench,
    *,
    backend: str,
    database_url: str,
    workers: int,
    default_settings: bool,
    postgres_pid: int | None = None,
    observed: str = "",
    observed_env: dict[str, str] | None = None,
) -> AsyncIterator[Served]:
    """A server started, its ledger built; on the way out its balances checked, and that it
    stopped cleanly."""
    label = f"{backend} (workers {workers}{f', {OBSERVED[observed].what}' if observed else ''})"
    env = {"CONDPAY_WORKERS": str(workers), **(observed_env or {})}
    suffix = f"-{observed}" if observed else ""
    log_path = BENCH_DIR / "logs" / f"condpay-{backend}-w{workers}{suffix}.log"
    async with condpay_server(database_url, log_path=log_path, env=env) as server:
        ledger = await build_ledger(server.address, payers=bench.config.payers)
        families = {"postgres": postgres_pid} if postgres_pid is not None else {}
        served = Served(
            label,
            backend,
            workers,
            default_settings,
            observed,
            server,
            ledger,
            families,
            env.get("CONDPAY_METRICS_ADDR"),
        )
        yield served
        failures = await balance_failures(server.address, ledger, served.moved)
        bench.report.check(
            f"{label}: balances match the OK transfers", not failures, "; ".join(failures)
        )
    bench.report.check(
        f"{label}: server stopped cleanly",
        server.exit_status == 0,
        f"exit status {server.exit_status}; log {server.log_path}",
    )


async def measure_transfers(
    bench: Bench,
    served: Served,
    shape: Shape,
    concurrency: int,
    idle: Sequence[Served] = (),
    repeat: int = 0,
) -> None:
    """One transfer cell on ``served``; other servers of the run, idle meanwhile, are accounted
    as ``idle_servers`` (not as others disturbing the cell)."""
    # A family: with --workers the server is a parent and its worker processes.
    families: dict[str, int | tuple[int, ...]] = {**served.families, "server": served.server.pid}
    if idle:
        families["idle_servers"] = tuple(s.server.pid for s in idle)
    target = Target(served.server.address, TRANSFER_METHOD, CpuWatch(families=families))
    key = CellKey(
        served.backend,
        shape.value,
        concurrency,
        served.workers,
        served.default_settings,
        served.observed,
        repeat,
    )
    await _transfer_cell(bench, target, served.ledger, key, served.moved)
    if served.metrics_addr:
        bench.report.check(
            f"{served.label}: /metrics counts the cell's transfers",
            _scraped_transfers(served.metrics_addr) > 0,
        )


async def run_condpay(
    bench: Bench,
    *,
    backend: str,
    database_url: str,
    workers: int,
    default_settings: bool,
    postgres_pid: int | None = None,
) -> None:
    console.print(f"[bold]condpay on {backend} (workers {workers})[/]")
    async with condpay_under_test(
        bench,
        backend=backend,
        database_url=database_url,
        workers=workers,
        default_settings=default_settings,
        postgres_pid=postgres_pid,
    ) as served:
        for shape in (Shape.UNCONTENDED, Shape.HOT):
            for concurrency in bench.config.concurrencies:
                await measure_transfers(bench, served, shape, concurrency)


async def run_sqlite(bench: Bench) -> None:
    folder = BENCH_DIR / "sqlite"
    shutil.rmtree(folder, ignore_errors=True)
    url = f"sqlite:///{folder / 'condpay.db'}"
    await run_condpay(bench, backend="sqlite", database_url=url, workers=1, default_settings=True)


def _postmaster_pid(server: PostgresServer) -> int | None:
    port = urlsplit(server.admin_url).port
    return pid_with_arguments("-p", str(port)) if port is not None else None


async def run_postgres(bench: Bench) -> None:
    with postgres_server() as server:
        if server is None:
            bench.report.notes.append("PostgreSQL skipped: no URL, no Docker engine, no binaries")
            bench.report.check("PostgreSQL available", False)
            return
        bench.report.machine["postgres"] = await server_version(server.admin_url)
        bench.report.machine["postgres_source"] = server.source
        postmaster = _postmaster_pid(server)
        await run_postgres_default_and_observed(bench, server, postmaster)
        for workers in bench.config.extra_workers:
            name = f"condpay_bench_{os.getpid()}_w{workers}"
            async with fresh_database(server, name) as url:
                await run_condpay(
                    bench,
                    backend="postgres",
                    database_url=url,
                    workers=workers,
                    default_settings=False,
                    postgres_pid=postmaster,
                )


async def run_postgres_default_and_observed(
    bench: Bench, server: PostgresServer, postmaster: int | None
) -> None:
    """The default settings and each observed configuration, each its own server and database,
    all started first and then measured in turn, cell by cell (the same shape and concurrency on
    each before the next; the order rotates from cell to cell), so that their ratios compare
    windows minutes apart at most, whatever else the machine did during the run."""
    observed = [OBSERVED[name] for name in bench.config.observed]
    what = ", ".join(["default settings", *(o.what for o in observed)])
    console.print(f"[bold]condpay on postgres (workers {DEFAULT_WORKERS}): {what}, interleaved[/]")
    async with contextlib.AsyncExitStack() as stack:
        servers: list[Served] = []
        sinks = {}
        for config in [None, *observed]:
            suffix = config.name if config else "default"
            name = f"condpay_bench_{os.getpid()}_{suffix}"
            url = await stack.enter_async_context(fresh_database(server, name))
            env = None
            if config is not None:
                endpoint = ""
                if config.tracing:
                    endpoint, sinks[config.name] = await stack.enter_async_context(otlp_sink())
                env = config.env(f"127.0.0.1:{free_port()}", endpoint)
            served = await stack.enter_async_context(
                condpay_under_test(
                    bench,
                    backend="postgres",
                    database_url=url,
                    workers=DEFAULT_WORKERS,
                    default_settings=config is None,
                    postgres_pid=postmaster,
                    observed=config.name if config else "",
                    observed_env=env,
                )
            )
            servers.append(served)
        turn = 0
        for repeat in range(bench.config.repeats if observed else 1):
            for shape in (Shape.UNCONTENDED, Shape.HOT):
                for concurrency in bench.config.concurrencies:
                    order = servers[turn % len(servers) :] + servers[: turn % len(servers)]
                    turn += 1
                    for served in order:
                        idle = [s for s in servers if s is not served]
                        await measure_transfers(bench, served, shape, concurrency, idle, repeat)
    for name, sink in sinks.items():
        bench.report.check(
            f"postgres ({OBSERVED[name].what}): spans reached the OTLP sink",
            sink.spans > 0,
            f"{sink.spans} spans",
        )
        bench.report.notes.append(f"observed cells ({name}): {sink.spans} spans exported (OTLP)")


def _scraped_transfers(addr: str) -> float:
    """The OK transfers a server's /metrics counts."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "condpay_rpcs_total"
        and sample.labels.get("method") == TRANSFER_METHOD
        and sample.labels.get("code") == "OK"
    )


def _method(config: BenchConfig) -> dict[str, object]:
    return {
        "load_generator": "a separate process (multiprocessing spawn): N asyncio tasks over one "
        "grpc.aio channel, one unary call in flight each, requests pre-serialized (and for "
        "transfers pre-signed) before timing; raw bytes, no client-side serializers",
        "shared_cores": "client, server and PostgreSQL share the machine's cores; see cpu_cores",
        "per_call_logging": PER_CALL_LOGGING,
        "seconds_per_cell": config.seconds,
        "warmup_seconds": config.warmup_seconds,
        "concurrencies": list(config.concurrencies),
        "payers": config.payers,
        "amount_minor": AMOUNT_MINOR,
        "echo_request_bytes": len(sample_transfer_request()),
        "postgres_workers_default": DEFAULT_WORKERS,
        "postgres_workers_extra": list(config.extra_workers),
        "observed": {
            name: {"what": OBSERVED[name].what, "env": sorted(_observed_env_names(name))}
            for name in config.observed
        },
        "observed_method": "PostgreSQL, default workers, one server per observed configuration "
        "beside the default one, measured in turn cell by cell (spans exported over OTLP/gRPC "
        "to a sink in the bench process; /metrics scraped after each cell)"
        if config.observed
        else "not measured",
    }


async def run(config: BenchConfig) -> Report:
    report = Report(
        machine=machine_info(postgres_version=None, postgres_source=None),
        method=_method(config),
    )
    started = time.monotonic()
    shutil.rmtree(BENCH_DIR / "logs", ignore_errors=True)
    with LoadProcess() as load:
        bench = Bench(config, load, report)
        try:
            if "echo" in config.backends:
                await run_echo(bench)
            if "sqlite" in config.backends:
                await run_sqlite(bench)
            if "postgres" in config.backends:
                await run_postgres(bench)
        except Exception as error:  # reported, and what was measured is still written
            console.print_exception()
            report.check("the run completed", False, repr(error))
    report.notes.append(f"quiet waits: {bench.quiet.spent_seconds:.1f} s in all")
    report.run_seconds = time.monotonic() - started
    return report


def _observed_env_names(name: str) -> list[str]:
    env = OBSERVED[name].env("HOST:PORT", "http://HOST:PORT")
    return [f"{key}={value}" for key, value in env.items()]


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.transfers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="per cell")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_seconds)
    parser.add_argument(
        "--concurrency",
        default=",".join(map(str, defaults.concurrencies)),
        help="calls in flight, comma-separated",
    )
    parser.add_argument("--payers", type=int, default=defaults.payers)
    parser.add_argument(
        "--backends", default=",".join(defaults.backends), help="any of echo,sqlite,postgres"
    )
    parser.add_argument(
        "--extra-workers",
        default=",".join(map(str, defaults.extra_workers)),
        help="extra CONDPAY_WORKERS settings to measure on PostgreSQL",
    )
    parser.add_argument(
        "--observed",
        default=",".join(defaults.observed),
        help="observed configurations to measure on PostgreSQL beside the default settings, "
        "comma-separated, any of: " + "; ".join(f"{o.name} ({o.what})" for o in OBSERVED.values()),
    )
    parser.add_argument(
        "--no-observed",
        action="store_true",
        help="skip the PostgreSQL cells with metrics or tracing on",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=defaults.repeats,
        help="measure the default and observed PostgreSQL cells this many times each, in turn",
    )
    parser.add_argument("--output", type=Path, default=defaults.output)
    args = parser.parse_args(argv)
    observed = tuple(name.strip() for name in args.observed.split(",") if name.strip())
    unknown = [name for name in observed if name not in OBSERVED]
    if unknown:
        parser.error(f"--observed: unknown {', '.join(unknown)}; known: {', '.join(OBSERVED)}")
    return BenchConfig(
        seconds=args.seconds,
        warmup_seconds=args.warmup,
        concurrencies=_numbers(args.concurrency),
        payers=args.payers,
        backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
        extra_workers=tuple(w for w in _numbers(args.extra_workers) if w != DEFAULT_WORKERS),
        observed=() if args.no_observed else observed,
        repeats=max(1, args.repeats),
        output=args.output,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    report = asyncio.run(run(config))
    return finish(report, config)


def finish(report: Report, config: BenchConfig) -> int:
    """Write the JSON, print the table and the failed checks; the exit status."""
    document = report.document(DEFAULT_WORKERS)
    write_json(document, config.output)
    print_report(document, report.cells, console)
    for check in report.checks:
        if not check.ok:
            console.print(f"[red]check failed[/]: {check.name} {check.detail}")
    console.print(f"wrote {config.output} in {report.run_seconds:.0f} s")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
