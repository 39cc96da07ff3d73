"""Conditional-payment lifecycles per second and release latency through gRPC, on SQLite and
PostgreSQL, against the echo baseline and the transfer cells of the same run (issue 11).

``make bench`` runs it after the transfer cells (:mod:`tests.bench.__main__`); alone, for quick
iteration: ``python -m tests.bench.lifecycles --backends echo,sqlite --concurrencies 64
--seconds 3`` (echo, when listed, is measured in the same run for the ratio; the ratio to
transfers is then null).

Method
------
The servers and the load generator are the transfer bench's (:mod:`tests.bench.transfers`):
``condpay serve --insecure`` as a process of its own, per-call logging off, on a fresh SQLite file
under ``var/bench/`` and on a fresh database of a throwaway PostgreSQL server (``CONDPAY_WORKERS``
at its default, 2 on this machine); the load generator in a process of its own. Each server is set
up through the public API (:mod:`tests.bench.lifecycle_setup`): 256 funded buyers, 256 sellers,
the example contract's oracles and examples/contracts/overseas-warehouse-delivery.contract
registered once (its deadline moved 30 days ahead).

A lifecycle is a *flow* (:func:`tests.bench.load.measure_flows`): LockPayment by the platform
(by contract hash), customs.cleared (Ed25519, by the customs oracle: releases nothing),
iot.arrived (a 2-of-3 BLS aggregate, by a sensor oracle: releases 30%) and receipt.signed (the
buyer's wallet key, by the platform: releases the rest, SETTLED), each step sent once the previous
one answered OK; a refusal ends the flow and is counted by step, status and reason. Every request
is signed and serialized before the clock starts; the attestations are issued then, against the
oracle set version read then (the server takes them for 5 minutes). The pool of lifecycles is
sized from the best rate this server has shown (starting from a low guess); a cell whose pool ran
out before its deadline is measured again with a larger one, once.

Cells: closed loop at C = 1, 16, 64, 256 lifecycles in flight (one call each), then one open-loop
(*paced*) cell that starts a lifecycle every 1/R s, R half the best closed-loop lifecycle rate of
that server, at most 256 in flight. Each cell waits for the machine to go quiet, warms up for
``--warmup`` s and measures for ``--seconds`` s; flows stop starting at the deadline and the window
ends when the last one in flight has finished (so it includes a drain of up to one lifecycle).
A cell that other processes disturbed is measured again once, within the run's budget.

Per cell: lifecycles/s (flows completed in the window per second of it); each RPC's latency
(p50/p95/p99/mean/max); the *release latency*, the latency of the two releasing calls (iot.arrived
and receipt.signed) together; the whole lifecycle's latency; the server's and PostgreSQL's CPU per
lifecycle in ms (CPU seconds in the window over flows completed); each step's request and reply
size; the ratios to the best echo calls/s and to the best uncontended transfers/s of the same
backend in the same run.

Checks after each cell: GetSupply consistent. After each server's cells: a sample of the completed
lifecycles' payments is SETTLED with the whole price released (GetPayment as the central bank);
the sellers' balances sum to what the OK releasing calls imply and the buyers' available balances
to their funding less what the OK locks took; the server stops cleanly. The run exits 1 when a
call failed or a check did, after writing the JSON.

Caveats: those of the transfer bench (shared cores, grpc.aio on both ends, durable PostgreSQL,
young planner statistics); the client here also spends CPU on nothing but framing, while the
server verifies Ed25519 and BLS signatures (a BLS pairing check per arrival).

JSON (``var/bench/lifecycles.json``, schema ``condpay.bench.lifecycles/1``)
--------------------------------------------------------------------------
::

    {
      "schema": "condpay.bench.lifecycles/1",
      "machine": {...}, "method": {...}, "run_seconds": 95.0,
      "cells": [{
        "backend": "sqlite" | "postgres", "mode": "closed" | "paced",
        "concurrency": 64,              # lifecycles in flight (paced: the most allowed)
        "workers": 2, "start_rate": null,  # paced: lifecycles started per second
        "started": 400, "completed": 398, "seconds": 5.02,
        "per_second": 79.3,             # lifecycles completed per second of the window
        "rpc_ms": {"LockPayment": {"p50", "p95", "p99", "mean", "max"}, ...},
        "release_latency_ms": {...}, "lifecycle_latency_ms": {...},
        "start_lag_ms": {...} | null,   # paced: how late lifecycles started on their schedule
        "errors": {"LockPayment: UNAVAILABLE/OVERLOADED": 1},
        "warmup": {"started", "completed", "seconds", "errors"},
        "cpu_cores": {"client", "server", "postgres", "others", "machine", "iowait"},
        "cpu_ms_per_lifecycle": {"server", "postgres", "client"},
        "request_bytes": {"LockPayment": 700, ...}, "response_bytes": {...},
        "flows_exhausted": false, "quiet_wait_seconds": 0.5, "disturbed": false,
        "discarded_attempts": [{"completed", "per_second", "errors", "cpu_cores",
                                "flows_exhausted"}],
        "supply_consistent": true,
        "to_echo": 0.012, "to_transfers": 0.05
      }],
      "references": {"echo_best_per_second", "transfers_best_uncontended_per_second": {...}},
      "checks": [...], "notes": [...],
      "summary": {targets, whether met, errors_total, checks_passed}
    }
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from condpay.client import PaymentsClient
from condpay.v1 import payment_pb2
from rich.console import Console
from rich.table import Table

from tests.bench import transfers
from tests.bench.condpay_server import PER_CALL_LOGGING, condpay_server
from tests.bench.cpu import CpuWatch
from tests.bench.databases import fresh_database, server_version
from tests.bench.latency import LatencySummary
from tests.bench.ledger_setup import CENTRAL_BANK, CURRENCY, FUNDING_MINOR
from tests.bench.lifecycle_setup import (
    PRICE_MINOR,
    RELEASED_BY_STEP,
    STEP_LOCK,
    STEPS,
    LifecycleWorld,
    build_lifecycle_world,
    lifecycle_flows,
    oracle_set_version,
)
from tests.bench.load import FlowPhase, FlowResult, FlowSpec, LoadProcess
from tests.bench.machine import machine_info
from tests.bench.quiet import QuietGate
from tests.bench.report import DISTURBED_CORES, Cell, Check, Report, best, write_json
from tests.bench.verify import supply_consistent
from tests.support.postgres import postgres_server

BENCH_DIR = transfers.BENCH_DIR
DEFAULT_WORKERS = transfers.DEFAULT_WORKERS
POOL_HEADROOM = 1.3
RATE_GUESS_FLOOR = 40.0  # lifecycles/s assumed before a server has shown its rate
RATE_GUESS_FACTOR = 2.0  # ... then this times the best it has shown
PACED_SHARE = 0.5  # the paced cell starts lifecycles at this share of the best closed-loop rate
PACED_IN_FLIGHT_MAX = 256
RETRIES_PER_CELL = 1
RETRIES_PER_RUN = 6
SETTLED_SAMPLE = 20
PAIRS = 256
TARGETS = {
    "postgres_per_second": 300.0,
    "postgres_to_echo": 0.055,
    "cpu_ms_per_lifecycle": 6.0,
    "release_p99_ms_paced": 50.0,
    "sqlite_per_second": 150.0,
}
console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    seconds: float = 5.0
    warmup_seconds: float = 1.0
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    pairs: int = PAIRS
    backends: tuple[str, ...] = ("echo", "sqlite", "postgres")
    paced: bool = True
    output: Path = BENCH_DIR / "lifecycles.json"


def _latency(summary: LatencySummary) -> dict[str, float]:
    return summary.as_dict()


@dataclass(frozen=True, slots=True)
class LifecycleCell:
    backend: str
    mode: str  # closed | paced
    concurrency: int
    workers: int
    start_rate: float | None
    started: int
    completed: int
    seconds: float
    per_second: float
    rpc_ms: dict[str, dict[str, float]]
    release_latency_ms: dict[str, float]
    lifecycle_latency_ms: dict[str, float]
    start_lag_ms: dict[str, float] | None
    errors: dict[str, int]
    warmup: dict[str, object]
    cpu_cores: dict[str, float]
    cpu_ms_per_lifecycle: dict[str, float | None]
    request_bytes: dict[str, int]
    response_bytes: dict[str, int]
    flows_exhausted: bool
    quiet_wait_seconds: float
    disturbed: bool
    discarded_attempts: list[dict[str, object]]
    supply_consistent: bool | None

    @classmethod
    def build(
        cls,
        *,
        backend: str,
        mode: str,
        concurrency: int,
        workers: int,
        start_rate: float | None,
        attempts: Sequence[FlowResult],
        quiet_wait_seconds: float,
        supply_consistent: bool | None,
    ) -> LifecycleCell:
        result = attempts[-1]
        timed = result.timed
        return cls(
            backend=backend,
            mode=mode,
            concurrency=concurrency,
            workers=workers,
            start_rate=round(start_rate, 1) if start_rate is not None else None,
            started=timed.started,
            completed=timed.completed,
            seconds=timed.seconds,
            per_second=_per_second(timed),
            rpc_ms={name: _latency(step.latency) for name, step in timed.steps.items()},
            release_latency_ms=_latency(timed.release_latency),
            lifecycle_latency_ms=_latency(timed.flow_latency),
            start_lag_ms=_latency(timed.start_lag_ms) if mode == "paced" else None,
            errors=timed.errors,
            warmup={
                "started": result.warmup.started,
                "completed": result.warmup.completed,
                "seconds": result.warmup.seconds,
                "errors": result.warmup.errors,
            },
            cpu_cores=result.cpu_cores,
            cpu_ms_per_lifecycle=_cpu_ms(result),
            request_bytes=result.request_bytes,
            response_bytes={name: step.response_bytes for name, step in timed.steps.items()},
            flows_exhausted=result.flows_exhausted,
            quiet_wait_seconds=quiet_wait_seconds,
            disturbed=_disturbed(result),
            discarded_attempts=[_discarded(a) for a in attempts[:-1]],
            supply_consistent=supply_consistent,
        )

    @property
    def error_count(self) -> int:
        earlier = [self.warmup.get("errors", {})] + [
            a.get("errors", {}) for a in self.discarded_attempts
        ]
        return sum(self.errors.values()) + sum(
            sum(e.values()) for e in earlier if isinstance(e, dict)
        )


def _per_second(phase: FlowPhase) -> float:
    return round(phase.completed / phase.seconds, 1) if phase.seconds else 0.0


def _disturbed(result: FlowResult) -> bool:
    return result.cpu_cores.get("others", 0.0) >= DISTURBED_CORES


def _cpu_ms(result: FlowResult) -> dict[str, float | None]:
    """CPU milliseconds per completed lifecycle, per watched group."""
    timed = result.timed
    out: dict[str, float | None] = {}
    for group in ("server", "postgres", "client"):
        cores = result.cpu_cores.get(group)
        if cores is None or not timed.completed:
            out[group] = None
        else:
            out[group] = round(cores * timed.seconds * 1000 / timed.completed, 3)
    return out


def _discarded(result: FlowResult) -> dict[str, object]:
    errors = Counter(result.timed.errors) + Counter(result.warmup.errors)
    return {
        "completed": result.timed.completed,
        "per_second": _per_second(result.timed),
        "errors": dict(sorted(errors.items())),
        "cpu_cores": result.cpu_cores,
        "flows_exhausted": result.flows_exhausted,
    }


@dataclass(slots=True)
class Moved:
    """What the OK calls of a server's cells must have moved, in minor units."""

    locked: int = 0
    to_sellers: int = 0
    settled_sample: list[str] = field(default_factory=list)

    def add(self, result: FlowResult) -> None:
        for phase in (result.warmup, result.timed):
            for name, step in phase.steps.items():
                if name == STEP_LOCK:
                    self.locked += step.ok * PRICE_MINOR
                self.to_sellers += step.ok * RELEASED_BY_STEP.get(name, 0)
            labels = phase.completed_labels
            stride = max(1, len(labels) // 5)
            self.settled_sample.extend(labels[::stride][:5])


@dataclass(slots=True)
class LifecycleReport:
    machine: dict[str, object]
    method: dict[str, object]
    references: list[Cell]  # echo and transfer cells of the same run
    cells: list[LifecycleCell] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_seconds: float = 0.0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, ok, detail))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and not any(c.error_count for c in self.cells)

    def echo_best(self) -> float | None:
        cell = best(self.references, backend="echo")
        return cell.per_second if cell is not None else None

    def transfers_best(self, backend: str) -> float | None:
        cell = best(self.references, backend=backend, shape="uncontended", default_settings=True)
        return cell.per_second if cell is not None else None

    def _ratio(self, rate: float | None, reference: float | None) -> float | None:
        if rate is None or not reference:
            return None
        return round(rate / reference, 4)

    def cell_document(self, cell: LifecycleCell) -> dict[str, object]:
        return {
            **asdict(cell),
            "to_echo": self._ratio(cell.per_second, self.echo_best()),
            "to_transfers": self._ratio(cell.per_second, self.transfers_best(cell.backend)),
        }

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "postgres_workers": DEFAULT_WORKERS,
            "echo_best_per_second": self.echo_best(),
        }
        for backend in ("postgres", "sqlite"):
            closed = [c for c in self.cells if c.backend == backend and c.mode == "closed"]
            top = max(closed, key=lambda c: c.per_second, default=None)
            paced = next(
                (c for c in self.cells if c.backend == backend and c.mode == "paced"), None
            )
            rate = top.per_second if top is not None else None
            cpu = top.cpu_ms_per_lifecycle.get("server") if top is not None else None
            release_p99 = paced.release_latency_ms["p99"] if paced is not None else None
            out[backend] = {
                "best_per_second": rate,
                "best_concurrency": top.concurrency if top is not None else None,
                "to_echo": self._ratio(rate, self.echo_best()),
                "to_transfers": self._ratio(rate, self.transfers_best(backend)),
                "transfers_best_uncontended_per_second": self.transfers_best(backend),
                "server_cpu_ms_per_lifecycle_at_best": cpu,
                "postgres_cpu_ms_per_lifecycle_at_best": (
                    top.cpu_ms_per_lifecycle.get("postgres") if top is not None else None
                ),
                "paced_start_rate": paced.start_rate if paced is not None else None,
                "paced_per_second": paced.per_second if paced is not None else None,
                "paced_release_p50_ms": (
                    paced.release_latency_ms["p50"] if paced is not None else None
                ),
                "paced_release_p99_ms": release_p99,
                "cpu_target_met": cpu is not None and cpu <= TARGETS["cpu_ms_per_lifecycle"],
                "release_target_met": release_p99 is not None
                and release_p99 <= TARGETS["release_p99_ms_paced"],
            }
        pg = out["postgres"]
        sq = out["sqlite"]
        assert isinstance(pg, dict)
        assert isinstance(sq, dict)
        pg_rate, pg_echo, sq_rate = pg["best_per_second"], pg["to_echo"], sq["best_per_second"]
        out["targets"] = {
            "postgres_per_second": {
                "target": TARGETS["postgres_per_second"],
                "measured": pg_rate,
                "met": pg_rate is not None and pg_rate >= TARGETS["postgres_per_second"],
            },
            "postgres_to_echo": {
                "target": TARGETS["postgres_to_echo"],
                "measured": pg_echo,
                "met": pg_echo is not None and pg_echo >= TARGETS["postgres_to_echo"],
            },
            "postgres_server_cpu_ms_per_lifecycle": {
                "target": TARGETS["cpu_ms_per_lifecycle"],
                "measured": pg["server_cpu_ms_per_lifecycle_at_best"],
                "met": pg["cpu_target_met"],
            },
            "postgres_release_p99_ms_at_half_best": {
                "target": TARGETS["release_p99_ms_paced"],
                "measured": pg["paced_release_p99_ms"],
                "met": pg["release_target_met"],
            },
            "sqlite_per_second": {
                "target": TARGETS["sqlite_per_second"],
                "measured": sq_rate,
                "met": sq_rate is not None and sq_rate >= TARGETS["sqlite_per_second"],
            },
        }
        out["errors_total"] = sum(c.error_count for c in self.cells)
        out["checks_passed"] = all(c.ok for c in self.checks)
        return out

    def document(self) -> dict[str, object]:
        return {
            "schema": "condpay.bench.lifecycles/1",
            "machine": self.machine,
            "method": self.method,
            "run_seconds": round(self.run_seconds, 1),
            "cells": [self.cell_document(c) for c in self.cells],
            "references": {
                "echo_best_per_second": self.echo_best(),
                "transfers_best_uncontended_per_second": {
                    b: self.transfers_best(b) for b in ("sqlite", "postgres")
                },
            },
            "checks": [asdict(c) for c in self.checks],
            "notes": self.notes,
            "summary": self.summary(),
        }


@dataclass(slots=True)
class LifecycleBench:
    config: LifecycleConfig
    load: LoadProcess
    report: LifecycleReport
    quiet: QuietGate = field(default_factory=QuietGate)
    retries_left: int = RETRIES_PER_RUN

    def pool_size(self, concurrency: int, rate: float) -> int:
        window = self.config.warmup_seconds + self.config.seconds
        return int(rate * POOL_HEADROOM * window) + 2 * concurrency

    def rate_guess(self, backend: str) -> float:
        shown = [c.per_second for c in self.report.cells if c.backend == backend]
        return max(RATE_GUESS_FLOOR, RATE_GUESS_FACTOR * max(shown, default=0.0))

    async def cell(
        self,
        *,
        address: str,
        watch: CpuWatch,
        world: LifecycleWorld,
        backend: str,
        workers: int,
        concurrency: int,
        start_rate: float | None,
        moved: Moved,
    ) -> None:
        mode = "closed" if start_rate is None else "paced"
        tag = f"{backend}-w{workers}-{mode}-c{concurrency}"
        rate = start_rate * 1.1 if start_rate is not None else self.rate_guess(backend)
        attempts: list[FlowResult] = []
        waited = 0.0
        while True:
            version = await oracle_set_version(address)
            count = self.pool_size(concurrency, rate)
            flows = lifecycle_flows(world, count, f"{tag}-a{len(attempts)}", version)
            seconds, _ = await self.quiet.wait()
            waited += seconds
            spec = FlowSpec(
                address=address,
                flows=flows,
                concurrency=concurrency,
                warmup_seconds=self.config.warmup_seconds,
                seconds=self.config.seconds,
                cpu_watch=watch,
                start_rate=start_rate,
            )
            result = await self.load.measure_flows(spec)
            attempts.append(result)
            moved.add(result)
            again = len(attempts) <= RETRIES_PER_CELL and self.retries_left > 0
            if not (again and (_disturbed(result) or result.flows_exhausted)):
                break
            self.retries_left -= 1
            why = "disturbed by other processes" if _disturbed(result) else "ran out of lifecycles"
            console.print(f"  ({why}: measuring again)")
            rate = max(rate, _per_second(result.timed)) * RATE_GUESS_FACTOR
        consistent = await supply_consistent(address)
        self.report.check(f"lifecycles {tag}: GetSupply consistent", consistent)
        cell = LifecycleCell.build(
            backend=backend,
            mode=mode,
            concurrency=concurrency,
            workers=workers,
            start_rate=start_rate,
            attempts=attempts,
            quiet_wait_seconds=waited,
            supply_consistent=consistent,
        )
        self.report.cells.append(cell)
        self._print(cell)

    def _print(self, c: LifecycleCell) -> None:
        errors = ", ".join(f"{k} {v}" for k, v in c.errors.items()) or "no errors"
        cpu = c.cpu_ms_per_lifecycle.get("server")
        console.print(
            f"  {c.backend:8} w={c.workers} {c.mode:6} c={c.concurrency:<3} "
            f"{c.per_second:>7,.1f} lifecycles/s, release p50 {c.release_latency_ms['p50']:.1f} "
            f"p99 {c.release_latency_ms['p99']:.1f} ms, server {cpu} ms/lifecycle; {errors}",
            soft_wrap=True,
        )


async def _payment_failures(address: str, payment_ids: Sequence[str]) -> list[str]:
    failures = []
    client = PaymentsClient(address, caller=CENTRAL_BANK)
    try:
        for payment_id in payment_ids:
            payment = await client.get_payment(payment_id)
            if (
                payment.state != payment_pb2.PAYMENT_STATE_SETTLED
                or payment.released.amount_minor != PRICE_MINOR
            ):
                state = payment_pb2.PaymentState.Name(payment.state)
                failures.append(f"{payment_id}: {state}, released {payment.released.amount_minor}")
    finally:
        await client.close()
    return failures


async def _available_sum(address: str, wallet_ids: Sequence[str]) -> int:
    client = PaymentsClient(address, caller=CENTRAL_BANK)
    try:
        total = 0
        for wallet_id in wallet_ids:
            wallet = await client.get_wallet(wallet_id)
            total += sum(
                b.available.amount_minor
                for b in wallet.balances
                if b.available.currency == CURRENCY
            )
        return total
    finally:
        await client.close()


async def check_server(
    report: LifecycleReport, label: str, address: str, world: LifecycleWorld, moved: Moved
) -> None:
    """The payments sampled are SETTLED; sellers' and buyers' balances match the OK calls."""
    sample = moved.settled_sample[:SETTLED_SAMPLE]
    failures = await _payment_failures(address, sample)
    report.check(
        f"{label}: sampled completed lifecycles SETTLED ({len(sample)})",
        not failures and bool(moved.settled_sample),
        "; ".join(failures) or ("" if moved.settled_sample else "no lifecycle completed"),
    )
    sellers = await _available_sum(address, world.sellers)
    report.check(
        f"{label}: sellers' balances match the OK releases",
        sellers == moved.to_sellers,
        f"sellers hold {sellers} minor units, the OK releases imply {moved.to_sellers}",
    )
    buyers = await _available_sum(address, [p.wallet_id for p in world.ledger.payers])
    wanted = FUNDING_MINOR * len(world.ledger.payers) - moved.locked
    report.check(
        f"{label}: buyers' available balances match the OK locks",
        buyers == wanted,
        f"buyers have {buyers} minor units available, the OK locks imply {wanted}",
    )


async def run_server(
    bench: LifecycleBench,
    *,
    backend: str,
    database_url: str,
    workers: int,
    postgres_pid: int | None = None,
) -> None:
    label = f"lifecycles on {backend} (workers {workers})"
    console.print(f"[bold]{label}[/]")
    env = {"CONDPAY_WORKERS": str(workers)}
    log_path = BENCH_DIR / "logs" / f"lifecycles-{backend}-w{workers}.log"
    async with condpay_server(database_url, log_path=log_path, env=env) as server:
        world = await build_lifecycle_world(server.address, pairs=bench.config.pairs)
        families = {"postgres": postgres_pid} if postgres_pid is not None else {}
        watch = CpuWatch(families={**families, "server": server.pid})
        moved = Moved()
        for concurrency in bench.config.concurrencies:
            await bench.cell(
                address=server.address,
                watch=watch,
                world=world,
                backend=backend,
                workers=workers,
                concurrency=concurrency,
                start_rate=None,
                moved=moved,
            )
        if bench.config.paced:
            top = max(
                (c.per_second for c in bench.report.cells if c.backend == backend), default=0.0
            )
            if top > 0:
                await bench.cell(
                    address=server.address,
                    watch=watch,
                    world=world,
                    backend=backend,
                    workers=workers,
                    concurrency=PACED_IN_FLIGHT_MAX,
                    start_rate=top * PACED_SHARE,
                    moved=moved,
                )
        await check_server(bench.report, label, server.address, world, moved)
    bench.report.check(
        f"{label}: server stopped cleanly",
        server.exit_status == 0,
        f"exit status {server.exit_status}; log {server.log_path}",
    )


async def run_sqlite(bench: LifecycleBench) -> None:
    folder = BENCH_DIR / "sqlite-lifecycles"
    shutil.rmtree(folder, ignore_errors=True)
    url = f"sqlite:///{folder / 'condpay.db'}"
    await run_server(bench, backend="sqlite", database_url=url, workers=1)


async def run_postgres(bench: LifecycleBench) -> None:
    with postgres_server() as server:
        if server is None:
            bench.report.notes.append("PostgreSQL skipped: no URL, no Docker engine, no binaries")
            bench.report.check("PostgreSQL available", False)
            return
        bench.report.machine["postgres"] = await server_version(server.admin_url)
        bench.report.machine["postgres_source"] = server.source
        name = f"condpay_bench_lifecycles_{time.time_ns()}"
        async with fresh_database(server, name) as url:
            await run_server(
                bench,
                backend="postgres",
                database_url=url,
                workers=DEFAULT_WORKERS,
                postgres_pid=transfers._postmaster_pid(server),
            )


def _method(config: LifecycleConfig) -> dict[str, object]:
    return {
        "load_generator": "a separate process (multiprocessing spawn): N asyncio tasks over 16 "
        "grpc.aio channels, each running one lifecycle at a time with one call in flight; paced: "
        "a lifecycle started every 1/R s; requests pre-signed and pre-serialized before timing",
        "lifecycle": list(STEPS),
        "releasing_steps": sorted(RELEASED_BY_STEP),
        "contract": "examples/contracts/overseas-warehouse-delivery.contract, deadline +30 days, "
        "registered once, locked by hash",
        "price_minor": PRICE_MINOR,
        "pairs": config.pairs,
        "per_call_logging": PER_CALL_LOGGING,
        "seconds_per_cell": config.seconds,
        "warmup_seconds": config.warmup_seconds,
        "concurrencies": list(config.concurrencies),
        "paced_share_of_best": PACED_SHARE if config.paced else None,
        "paced_in_flight_max": PACED_IN_FLIGHT_MAX,
        "postgres_workers": DEFAULT_WORKERS,
    }


async def run(config: LifecycleConfig, references: Sequence[Cell] = ()) -> LifecycleReport:
    """The lifecycle cells; ``references`` are the echo and transfer cells of the same run (when
    empty and echo is among the backends, echo is measured here first)."""
    report = LifecycleReport(
        machine=machine_info(postgres_version=None, postgres_source=None),
        method=_method(config),
        references=list(references),
    )
    started = time.monotonic()
    with LoadProcess() as load:
        bench = LifecycleBench(config, load, report)
        try:
            if not references and "echo" in config.backends:
                echo = transfers.Bench(
                    transfers.BenchConfig(
                        seconds=config.seconds,
                        warmup_seconds=config.warmup_seconds,
                        concurrencies=config.concurrencies,
                    ),
                    load,
                    Report(machine={}, method={}),
                    quiet=bench.quiet,
                )
                await transfers.run_echo(echo)
                report.references.extend(echo.report.cells)
            if "sqlite" in config.backends:
                await run_sqlite(bench)
            if "postgres" in config.backends:
                await run_postgres(bench)
        except Exception as error:
            console.print_exception()
            report.check("the lifecycle run completed", False, repr(error))
    if not any(c.backend != "echo" for c in report.references):
        report.notes.append("no transfer cells in this run: to_transfers is null")
    report.notes.append(f"quiet waits: {bench.quiet.spent_seconds:.1f} s in all")
    report.run_seconds = time.monotonic() - started
    return report


def _cell_row(c: LifecycleCell) -> list[str]:
    def p99(step: str) -> str:
        return f"{c.rpc_ms[step]['p99']:.1f}" if step in c.rpc_ms else "-"

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    errors = sum(c.errors.values())
    return [
        c.backend,
        str(c.workers),
        c.mode if c.start_rate is None else f"paced@{c.start_rate:.0f}",
        str(c.concurrency),
        str(c.completed),
        f"{c.per_second:,.1f}{'!' if c.disturbed else ''}",
        *(p99(step) for step in STEPS),
        f"{c.release_latency_ms['p50']:.1f}",
        f"{c.release_latency_ms['p99']:.1f}",
        ms(c.cpu_ms_per_lifecycle.get("server")),
        ms(c.cpu_ms_per_lifecycle.get("postgres")),
        str(errors),
    ]


def print_report(report: LifecycleReport) -> None:
    table = Table(title="condpay conditional-payment lifecycles through gRPC (same machine, run)")
    headers = (
        "backend",
        "workers",
        "mode",
        "in flight",
        "done",
        "per s",
        "lock p99",
        "customs p99",
        "arrived p99",
        "receipt p99",
        "release p50",
        "release p99",
        "srv ms/lc",
        "pg ms/lc",
        "errors",
    )
    for header in headers:
        table.add_column(header, justify="left" if header in ("backend", "mode") else "right")
    for cell in report.cells:
        table.add_row(*_cell_row(cell))
    console.print(table)
    console.print(
        "latencies in ms (p99 per RPC; release: the two releasing attestations together); "
        f"! other processes used >= {DISTURBED_CORES} cores in the window; ms/lc: CPU ms per "
        "lifecycle of the server and of PostgreSQL"
    )
    console.print_json(json.dumps(report.summary()))


def finish(report: LifecycleReport, output: Path) -> int:
    write_json(report.document(), output)
    print_report(report)
    for check in report.checks:
        if not check.ok:
            console.print(f"[red]check failed[/]: {check.name} {check.detail}")
    console.print(f"wrote {output} in {report.run_seconds:.0f} s")
    return 0 if report.ok else 1


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None) -> LifecycleConfig:
    defaults = LifecycleConfig()
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.lifecycles",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="per cell")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_seconds)
    parser.add_argument(
        "--concurrencies",
        "--concurrency",
        default=",".join(map(str, defaults.concurrencies)),
        help="lifecycles in flight, comma-separated",
    )
    parser.add_argument("--pairs", type=int, default=defaults.pairs, help="buyers (and sellers)")
    parser.add_argument(
        "--backends", default=",".join(defaults.backends), help="any of echo,sqlite,postgres"
    )
    parser.add_argument("--no-paced", action="store_true", help="skip the open-loop cells")
    parser.add_argument("--output", type=Path, default=defaults.output)
    args = parser.parse_args(argv)
    return LifecycleConfig(
        seconds=args.seconds,
        warmup_seconds=args.warmup,
        concurrencies=_numbers(args.concurrencies),
        pairs=args.pairs,
        backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
        paced=not args.no_paced,
        output=args.output,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    report = asyncio.run(run(config))
    return finish(report, config.output)


if __name__ == "__main__":
    sys.exit(main())
