"""PvP and DvP settlements per second and time to FINAL, through the core and the multi-CBDC bridge
as separate processes, on SQLite and PostgreSQL, against the echo baseline and the transfer cells
of the same run (issue 18).

``make bench`` runs it after the lifecycle cells (:mod:`tests.bench.__main__`); alone, for quick
iteration: ``python -m tests.bench.settlements --backends echo,sqlite --concurrencies 64
--seconds 3`` (echo, when listed, is measured in the same run for the ratio; the ratio to
transfers is then null).

Method
------
Per backend, three processes under test: the bridge (``python -m bridges serve --insecure``,
started by sim_central_bank/bridge_process.py's ``BridgeProcess``: a fresh SQLite state file,
bootstrapped with the demo banks, rates, liquidity provider and the core's gateway ``CONDPAY``,
blocks every 20 ms, the bridge's own default (``--block-interval-ms``; the tests' bridges use
50), its validator set exported for the core to pin), and ``condpay serve --insecure``
(per-call logging off; ``CONDPAY_BRIDGE=grpc://`` the bridge over the development mode's link;
a fresh SQLite file, or a fresh database of a throwaway PostgreSQL server with
``CONDPAY_WORKERS`` at its default). The load generator is the transfer bench's, in a process of
its own, running *flows* (:mod:`tests.bench.settlement_setup`): SettlePvP or SettleDvP *at
market* (no quote id: the core asks the bridge for the quote and the leg in one call; signed
and serialized before the clock), then, when the reply is not FINAL yet, GetSettlement every 5 ms
until it is. With ``--quoted``, the two-call flow instead: QuoteFx, then the Settle call signed in
the load generator over the quote just answered (its id is the bridge's: it cannot be signed
beforehand). The *time to FINAL* runs
from the send of Settle to the reply or poll that shows FINAL. ABORTED is a definite refusal: the
flow ends, counted by its abort reason. DvP: one bill of lading per operation, issued to its
seller before the cell (untimed); the buyer pays HKD, the seller receives CNY. PvP: the payer
pays CNY, the payee receives HKD; 100.00 arrives in each.

Cells, for PvP then DvP: closed loop at C = 16, 64, 256 flows in flight, then a paced (open-loop)
cell starting flows at half the best closed-loop rate of that kind on that backend. Quiet gate,
warm-up, re-measure of a disturbed cell and pool sizing as in the lifecycle bench.

Per cell: settlements/s (flows FINAL in the window per second of it), each RPC's latency, time to
FINAL p50/p99, CPU per settlement (ms) of the core, the bridge and PostgreSQL, each reply's size,
the ratios to the best echo calls/s and the best uncontended transfers/s of the backend in the
run.

Checks after each cell: GetSupply consistent (CNY and HKD). After each backend's cells: every
settlement the core holds is FINAL or ABORTED (none in doubt) and as many are FINAL as flows saw
FINAL; the core's ledger audit (the read-side audit over its database, as the tests run it) and
the bridge's (Audit: no problem, nothing reserved) are clean; per currency the gateway's core
balance plus its bridge settlement account did not move; payers hold their funding less what the
FINAL settlements paid and payees what they received, per currency; a sample of FINAL DvPs'
titles is held by their buyers; both processes stop cleanly.

JSON (``var/bench/settlements.json``, schema ``condpay.bench.settlements/1``): as
``lifecycles.json`` with ``kind`` (pvp | dvp) per cell, ``refused`` (flows ended by an ABORTED
settlement, by reason), ``time_to_final_ms`` and ``cpu_ms_per_settlement`` {core, bridge,
postgres, client}; ``summary.targets``: PostgreSQL >= 250 settlements/s for each kind and >=
0.045 of echo, core <= 3 ms and bridge <= 2 ms of CPU per settlement, time to FINAL p99 <= 100 ms
in the paced cell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from condpay.client import SettlementsClient
from condpay.v1 import settlement_pb2
from rich.console import Console
from rich.table import Table

from bridges import DEMO_BANK_BALANCE_MINOR, Identity, Kind
from bridges.limits import BLOCK_INTERVAL_MS
from settlement.db.urls import parse_database_url
from settlement.ledger.audit import AuditReport, audit_ledger
from settlement.runtime import create_sql_engine
from sim_central_bank.bridge_process import BridgeProcess
from tests.bench import transfers
from tests.bench.condpay_server import PER_CALL_LOGGING, condpay_server
from tests.bench.cpu import CpuWatch, pid_with_arguments
from tests.bench.databases import fresh_database, server_version
from tests.bench.lifecycles import (
    RETRIES_PER_CELL,
    RETRIES_PER_RUN,
    _discarded,
    _disturbed,
    _per_second,
)
from tests.bench.load import FlowResult, FlowSpec, LoadProcess
from tests.bench.machine import machine_info
from tests.bench.quiet import QuietGate
from tests.bench.report import DISTURBED_CORES, Cell, Check, Report, best, write_json
from tests.bench.settlement_setup import (
    CENTRAL_BANKS,
    FUNDING_MINOR,
    GATEWAY,
    GATEWAY_WALLET,
    RESERVE_MINOR,
    STEP_QUOTE,
    Party,
    SettlementWorld,
    build_settlement_world,
    dvp_flows,
    issue_titles,
    pvp_flows,
    title_ids,
)
from tests.support.postgres import postgres_server

BENCH_DIR = transfers.BENCH_DIR
DEFAULT_WORKERS = transfers.DEFAULT_WORKERS
AUDITOR = "auditor/bench"
BRIDGE_AUDITOR = Identity(Kind.AUDITOR, "bench")
POOL_HEADROOM = 1.3
RATE_GUESS_FLOOR = 60.0  # settlements/s assumed before a backend has shown its rate
RATE_GUESS_FACTOR = 2.0
PACED_SHARE = 0.5
PACED_IN_FLIGHT_MAX = 256
TITLE_SAMPLE = 10
PAIRS = 256
KINDS = ("pvp", "dvp")
TARGETS = {
    "postgres_per_second": 250.0,
    "postgres_to_echo": 0.045,
    "core_cpu_ms": 3.0,
    "bridge_cpu_ms": 2.0,
    "final_p99_ms_paced": 100.0,
}
console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass(frozen=True, slots=True)
class SettlementConfig:
    seconds: float = 5.0
    warmup_seconds: float = 1.0
    concurrencies: tuple[int, ...] = (16, 64, 256)
    pairs: int = PAIRS
    backends: tuple[str, ...] = ("echo", "sqlite", "postgres")
    kinds: tuple[str, ...] = KINDS
    paced: bool = True
    # The paced cells' start rate (settlements/s); None: half the best closed-loop rate. A fixed
    # rate compares two commits (or two hours of a noisy machine) at the same load.
    paced_rate: float | None = None
    # The bridge's block timer: its own default (python -m bridges serve), unless told.
    block_interval_ms: int = BLOCK_INTERVAL_MS
    market: bool = True  # at market (one Settle call); False: QuoteFx first, Settle over it
    output: Path = BENCH_DIR / "settlements.json"


def _cpu_ms(result: FlowResult) -> dict[str, float | None]:
    timed = result.timed
    out: dict[str, float | None] = {}
    for group, name in (("server", "core"), ("bridge", "bridge"), ("postgres", "postgres")):
        cores = result.cpu_cores.get(group)
        if cores is None or not timed.completed:
            out[name] = None
        else:
            out[name] = round(cores * timed.seconds * 1000 / timed.completed, 3)
    client = result.cpu_cores.get("client")
    out["client"] = (
        round(client * timed.seconds * 1000 / timed.completed, 3)
        if client is not None and timed.completed
        else None
    )
    return out


@dataclass(frozen=True, slots=True)
class SettlementCell:
    kind: str  # pvp | dvp
    backend: str
    mode: str  # closed | paced
    concurrency: int
    workers: int
    start_rate: float | None
    started: int
    completed: int  # flows that saw FINAL
    refused: dict[str, int]  # flows ended by an ABORTED settlement, by step and reason
    seconds: float
    per_second: float
    rpc_ms: dict[str, dict[str, float]]
    time_to_final_ms: dict[str, float]
    flow_latency_ms: dict[str, float]
    start_lag_ms: dict[str, float] | None
    errors: dict[str, int]
    warmup: dict[str, object]
    cpu_cores: dict[str, float]
    cpu_ms_per_settlement: dict[str, float | None]
    request_bytes: dict[str, int]  # per step, as sent (Settle: the request signed over the quote)
    response_bytes: dict[str, int]
    polls_per_settlement: float  # GetSettlement calls per flow completed
    flows_exhausted: bool
    quiet_wait_seconds: float
    disturbed: bool
    discarded_attempts: list[dict[str, object]]
    supply_consistent: bool | None

    @classmethod
    def build(
        cls,
        *,
        kind: str,
        backend: str,
        mode: str,
        concurrency: int,
        workers: int,
        start_rate: float | None,
        attempts: Sequence[FlowResult],
        quiet_wait_seconds: float,
        supply_consistent: bool | None,
    ) -> SettlementCell:
        result = attempts[-1]
        timed = result.timed
        polls = timed.steps.get("GetSettlement")
        return cls(
            kind=kind,
            backend=backend,
            mode=mode,
            concurrency=concurrency,
            workers=workers,
            start_rate=round(start_rate, 1) if start_rate is not None else None,
            started=timed.started,
            completed=timed.completed,
            refused=timed.outcomes,
            seconds=timed.seconds,
            per_second=_per_second(timed),
            rpc_ms={name: step.latency.as_dict() for name, step in timed.steps.items()},
            time_to_final_ms=timed.clock_latency.as_dict(),
            flow_latency_ms=timed.flow_latency.as_dict(),
            start_lag_ms=timed.start_lag_ms.as_dict() if mode == "paced" else None,
            errors=timed.errors,
            warmup={
                "started": result.warmup.started,
                "completed": result.warmup.completed,
                "seconds": result.warmup.seconds,
                "errors": result.warmup.errors,
                "refused": result.warmup.outcomes,
            },
            cpu_cores=result.cpu_cores,
            cpu_ms_per_settlement=_cpu_ms(result),
            request_bytes=result.request_bytes,
            response_bytes={name: step.response_bytes for name, step in timed.steps.items()},
            polls_per_settlement=(
                round(polls.count / timed.completed, 3) if polls and timed.completed else 0.0
            ),
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


@dataclass(slots=True)
class SettlementReport:
    machine: dict[str, object]
    method: dict[str, object]
    references: list[Cell]
    cells: list[SettlementCell] = field(default_factory=list)
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

    @staticmethod
    def _ratio(rate: float | None, reference: float | None) -> float | None:
        if rate is None or not reference:
            return None
        return round(rate / reference, 4)

    def cell_document(self, cell: SettlementCell) -> dict[str, object]:
        return {
            **asdict(cell),
            "to_echo": self._ratio(cell.per_second, self.echo_best()),
            "to_transfers": self._ratio(cell.per_second, self.transfers_best(cell.backend)),
        }

    def _kind_summary(self, backend: str, kind: str) -> dict[str, object]:
        mine = [c for c in self.cells if (c.backend, c.kind) == (backend, kind)]
        top = max((c for c in mine if c.mode == "closed"), key=lambda c: c.per_second, default=None)
        paced = next((c for c in mine if c.mode == "paced"), None)
        rate = top.per_second if top is not None else None
        core = top.cpu_ms_per_settlement.get("core") if top is not None else None
        bridge = top.cpu_ms_per_settlement.get("bridge") if top is not None else None
        final_p99 = paced.time_to_final_ms["p99"] if paced is not None else None
        return {
            "best_per_second": rate,
            "best_concurrency": top.concurrency if top is not None else None,
            "to_echo": self._ratio(rate, self.echo_best()),
            "to_transfers": self._ratio(rate, self.transfers_best(backend)),
            "core_cpu_ms_at_best": core,
            "bridge_cpu_ms_at_best": bridge,
            "postgres_cpu_ms_at_best": (
                top.cpu_ms_per_settlement.get("postgres") if top is not None else None
            ),
            "paced_start_rate": paced.start_rate if paced is not None else None,
            "paced_per_second": paced.per_second if paced is not None else None,
            "paced_time_to_final_p50_ms": (
                paced.time_to_final_ms["p50"] if paced is not None else None
            ),
            "paced_time_to_final_p99_ms": final_p99,
        }

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "postgres_workers": DEFAULT_WORKERS,
            "echo_best_per_second": self.echo_best(),
        }
        targets: dict[str, object] = {}
        for backend in ("postgres", "sqlite"):
            for kind in KINDS:
                found = self._kind_summary(backend, kind)
                out[f"{backend}_{kind}"] = found
                if backend != "postgres":
                    continue
                judged: list[tuple[str, str, float, Callable[[float], Callable[[float], bool]]]] = [
                    ("per_second", "best_per_second", TARGETS["postgres_per_second"], _at_least),
                    ("to_echo", "to_echo", TARGETS["postgres_to_echo"], _at_least),
                    ("core_cpu_ms", "core_cpu_ms_at_best", TARGETS["core_cpu_ms"], _at_most),
                    ("bridge_cpu_ms", "bridge_cpu_ms_at_best", TARGETS["bridge_cpu_ms"], _at_most),
                    (
                        "time_to_final_p99_ms_at_half_best",
                        "paced_time_to_final_p99_ms",
                        TARGETS["final_p99_ms_paced"],
                        _at_most,
                    ),
                ]
                for name, source, target, compare in judged:
                    measured = found[source]
                    targets[f"postgres_{kind}_{name}"] = {
                        "target": target,
                        "measured": measured,
                        "met": isinstance(measured, int | float) and compare(target)(measured),
                    }
        out["targets"] = targets
        out["errors_total"] = sum(c.error_count for c in self.cells)
        out["refused_total"] = sum(sum(c.refused.values()) for c in self.cells)
        out["checks_passed"] = all(c.ok for c in self.checks)
        return out

    def document(self) -> dict[str, object]:
        return {
            "schema": "condpay.bench.settlements/1",
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


def _at_least(target: float) -> Callable[[float], bool]:
    return lambda measured: measured >= target


def _at_most(target: float) -> Callable[[float], bool]:
    return lambda measured: measured <= target


@dataclass(slots=True)
class Seen:
    """What one backend's flows saw: FINAL settlements (by kind) and DvPs' titles."""

    final: int = 0
    dvp_final: list[str] = field(default_factory=list)  # settlement ids, a sample

    def add(self, result: FlowResult, kind: str) -> None:
        for phase in (result.warmup, result.timed):
            self.final += phase.completed
            if kind == "dvp":
                self.dvp_final.extend(phase.completed_labels[:TITLE_SAMPLE])


@dataclass(slots=True)
class SettlementBench:
    config: SettlementConfig
    load: LoadProcess
    report: SettlementReport
    quiet: QuietGate = field(default_factory=QuietGate)
    retries_left: int = RETRIES_PER_RUN

    def pool_size(self, concurrency: int, rate: float) -> int:
        window = self.config.warmup_seconds + self.config.seconds
        return int(rate * POOL_HEADROOM * window) + 2 * concurrency

    def rate_guess(self, backend: str, kind: str) -> float:
        shown = [c.per_second for c in self.report.cells if (c.backend, c.kind) == (backend, kind)]
        return max(RATE_GUESS_FLOOR, RATE_GUESS_FACTOR * max(shown, default=0.0))

    async def cell(
        self,
        *,
        address: str,
        watch: CpuWatch,
        world: SettlementWorld,
        backend: str,
        kind: str,
        workers: int,
        concurrency: int,
        start_rate: float | None,
        seen: Seen,
    ) -> None:
        mode = "closed" if start_rate is None else "paced"
        tag = f"{backend}-{kind}-{mode}-c{concurrency}"
        rate = start_rate * 1.1 if start_rate is not None else self.rate_guess(backend, kind)
        attempts: list[FlowResult] = []
        waited = 0.0
        while True:
            count = self.pool_size(concurrency, rate)
            attempt_tag = f"{tag}-a{len(attempts)}"
            if kind == "pvp":
                flows = pvp_flows(world, count, attempt_tag, market=self.config.market)
            else:
                titles = await issue_titles(address, world, count, attempt_tag)
                if titles != title_ids(world, count, attempt_tag):
                    raise RuntimeError("the titles issued have other ids than condpay.ids says")
                flows = dvp_flows(world, titles, attempt_tag, market=self.config.market)
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
            seen.add(result, kind)
            again = len(attempts) <= RETRIES_PER_CELL and self.retries_left > 0
            if not (again and (_disturbed(result) or result.flows_exhausted)):
                break
            self.retries_left -= 1
            why = "disturbed by other processes" if _disturbed(result) else "ran out of flows"
            console.print(f"  ({why}: measuring again)")
            rate = max(rate, _per_second(result.timed)) * RATE_GUESS_FACTOR
        consistent = await supplies_consistent(address)
        self.report.check(f"settlements {tag}: GetSupply consistent", consistent)
        cell = SettlementCell.build(
            kind=kind,
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
        refused = sum(cell.refused.values())
        errors = ", ".join(f"{k} {v}" for k, v in cell.errors.items()) or "no errors"
        console.print(
            f"  {backend:8} {kind} {mode:6} c={concurrency:<3} {cell.per_second:>7,.1f}/s, "
            f"to FINAL p50 {cell.time_to_final_ms['p50']:.1f} p99 "
            f"{cell.time_to_final_ms['p99']:.1f} ms, core "
            f"{cell.cpu_ms_per_settlement['core']} bridge "
            f"{cell.cpu_ms_per_settlement['bridge']} ms/settlement; refused {refused}; {errors}",
            soft_wrap=True,
        )


async def supplies_consistent(address: str) -> bool:
    client = SettlementsClient(address, caller=AUDITOR)
    try:
        reply = await client.get_supply(*CENTRAL_BANKS)
        return all(line.consistent for line in reply.supplies)
    finally:
        await client.close()


async def _all_settlements(client: SettlementsClient) -> list[settlement_pb2.Settlement]:
    found: list[settlement_pb2.Settlement] = []
    token = ""
    while True:
        page: settlement_pb2.ListSettlementsResponse = (
            await client.api.settlements.list_settlements(
                settlement_pb2.ListSettlementsRequest(page_token=token, page_size=500),
            )
        )
        found += list(page.settlements)
        token = page.next_page_token
        if not token:
            return found


async def _available(client: SettlementsClient, parties: Sequence[Party]) -> Counter[str]:
    """Available balances of ``parties`` summed per currency."""
    total: Counter[str] = Counter()
    for party in parties:
        for line in (await client.get_wallet(party.wallet_id)).balances:
            total[line.available.currency] += line.available.amount_minor
    return total


async def _party_balances(
    client: SettlementsClient,
    world: SettlementWorld,
    settlements: Sequence[settlement_pb2.Settlement],
) -> tuple[bool, str]:
    """Payers hold their funding less what the FINAL settlements took; payees what they gave."""
    paid: Counter[str] = Counter()
    received: Counter[str] = Counter()
    for s in settlements:
        if s.state == settlement_pb2.SETTLEMENT_STATE_FINAL:
            paid[s.pay.currency] += s.pay.amount_minor
            received[s.receive.currency] += s.receive.amount_minor
    payers = await _available(client, world.payers)
    payees = await _available(client, world.payees)
    funded = len(world.payers) * FUNDING_MINOR
    wrong = [
        f"payers {c}: {payers[c]}, the FINAL settlements imply {funded - paid[c]}"
        for c in CENTRAL_BANKS
        if payers[c] != funded - paid[c]
    ] + [
        f"payees {c}: {payees[c]}, the FINAL settlements imply {received[c]}"
        for c in CENTRAL_BANKS
        if payees[c] != received[c]
    ]
    return not wrong, "; ".join(wrong)


async def check_backend(
    report: SettlementReport,
    label: str,
    *,
    address: str,
    database_url: str,
    bridge: BridgeProcess,
    world: SettlementWorld,
    seen: Seen,
) -> None:
    client = SettlementsClient(address, caller=AUDITOR)
    try:
        settlements = await _all_settlements(client)
        states = Counter(settlement_pb2.SettlementState.Name(s.state) for s in settlements)
        in_doubt = {
            k: n
            for k, n in states.items()
            if k not in ("SETTLEMENT_STATE_FINAL", "SETTLEMENT_STATE_ABORTED")
        }
        final = states.get("SETTLEMENT_STATE_FINAL", 0)
        report.check(
            f"{label}: every settlement FINAL or ABORTED, as many FINAL as flows saw",
            not in_doubt and final == seen.final,
            f"states {dict(states)}; flows saw {seen.final} FINAL",
        )
        by_id = {s.settlement_id: s for s in settlements}
        title_problems = []
        for settlement_id in seen.dvp_final[: TITLE_SAMPLE * 4]:
            s = by_id.get(settlement_id)
            legs = [leg for leg in s.legs if leg.ledger == "title"] if s is not None else []
            if s is None or not legs:
                title_problems.append(f"{settlement_id}: no title leg")
                continue
            title = (await client.get_title(legs[0].title_id)).title
            if title.holder_wallet_id != s.payer_wallet_id:
                title_problems.append(f"{settlement_id}: title held by {title.holder_wallet_id}")
        report.check(
            f"{label}: sampled FINAL DvPs' titles held by their buyers",
            not title_problems,
            "; ".join(title_problems[:5]),
        )
        report.check(
            f"{label}: payers' and payees' balances match the FINAL settlements",
            *await _party_balances(client, world, settlements),
        )
        gateway = await client.get_wallet(GATEWAY_WALLET)
        core_side = {
            b.available.currency: b.available.amount_minor + b.held.amount_minor
            for b in gateway.balances
        }
    finally:
        await client.close()
    ledger = await core_audit(database_url)
    report.check(f"{label}: core ledger audit clean", ledger.ok, "; ".join(ledger.failures[:5]))
    async with bridge.client(BRIDGE_AUDITOR) as auditor:
        bridge_report = await auditor.audit()
        supply = await auditor.supply()
        positions = {
            b.currency: b.balance_minor
            for b in await auditor.balances(GATEWAY)
            if b.kind.value == "SETTLEMENT"
        }
    reserved = [f"{s.reserved_minor} {s.currency} reserved" for s in supply if s.reserved_minor]
    report.check(
        f"{label}: bridge audit clean, nothing reserved",
        not bridge_report.problems and not reserved,
        "; ".join([*bridge_report.problems[:5], *reserved]),
    )
    moved = {
        currency: core_side.get(currency, 0) + positions.get(currency, 0)
        for currency in CENTRAL_BANKS
    }
    unchanged = RESERVE_MINOR + DEMO_BANK_BALANCE_MINOR
    report.check(
        f"{label}: the gateway's core + bridge position unchanged per currency",
        all(v == unchanged for v in moved.values()),
        f"{moved}, started at {unchanged} each",
    )


async def core_audit(database_url: str) -> AuditReport:
    """The read-side ledger audit over a connection of its own (as tests/payments/fleet.py runs
    it for the databases of child processes)."""
    engine = create_sql_engine(parse_database_url(database_url))
    try:
        return await audit_ledger(engine)
    finally:
        await engine.dispose()


def _bridge_pid(bridge: BridgeProcess) -> int | None:
    return pid_with_arguments("--addr", bridge.address)


async def run_backend(
    bench: SettlementBench,
    *,
    backend: str,
    database_url: str,
    workers: int,
    postgres_pid: int | None = None,
) -> None:
    label = f"settlements on {backend} (workers {workers})"
    console.print(f"[bold]{label}[/]")
    folder = BENCH_DIR / f"bridge-{backend}"
    shutil.rmtree(folder, ignore_errors=True)
    bridge = BridgeProcess(
        folder / "bridge.sqlite",
        folder / "logs",
        block_interval_ms=bench.config.block_interval_ms,
    )
    log_path = BENCH_DIR / "logs" / f"settlements-{backend}-w{workers}.log"
    core_exit: int | None = None
    try:
        await bridge.start()
        bridge_pid = _bridge_pid(bridge)
        env = {"CONDPAY_WORKERS": str(workers), **bridge.core_env()}
        async with condpay_server(database_url, log_path=log_path, env=env) as server:
            world = await build_settlement_world(server.address, pairs=bench.config.pairs)
            families: dict[str, int] = {"server": server.pid}
            if postgres_pid is not None:
                families["postgres"] = postgres_pid
            if bridge_pid is not None:
                families["bridge"] = bridge_pid
            watch = CpuWatch(families=families)
            seen = Seen()
            for kind in bench.config.kinds:
                for concurrency in bench.config.concurrencies:
                    await bench.cell(
                        address=server.address,
                        watch=watch,
                        world=world,
                        backend=backend,
                        kind=kind,
                        workers=workers,
                        concurrency=concurrency,
                        start_rate=None,
                        seen=seen,
                    )
                top = max(
                    (
                        c.per_second
                        for c in bench.report.cells
                        if (c.backend, c.kind) == (backend, kind)
                    ),
                    default=0.0,
                )
                rate = bench.config.paced_rate or top * PACED_SHARE
                if bench.config.paced and rate > 0:
                    await bench.cell(
                        address=server.address,
                        watch=watch,
                        world=world,
                        backend=backend,
                        kind=kind,
                        workers=workers,
                        concurrency=PACED_IN_FLIGHT_MAX,
                        start_rate=rate,
                        seen=seen,
                    )
            await check_backend(
                bench.report,
                label,
                address=server.address,
                database_url=database_url,
                bridge=bridge,
                world=world,
                seen=seen,
            )
        core_exit = server.exit_status
    finally:
        bridge_exit = await bridge.stop()
    bench.report.check(
        f"{label}: core stopped cleanly", core_exit == 0, f"exit status {core_exit}; {log_path}"
    )
    bench.report.check(
        f"{label}: bridge stopped cleanly",
        bridge_exit == 0,
        f"exit status {bridge_exit}; logs {bridge.log_dir}",
    )


async def run_sqlite(bench: SettlementBench) -> None:
    folder = BENCH_DIR / "sqlite-settlements"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'condpay.db'}"
    await run_backend(bench, backend="sqlite", database_url=url, workers=1)


async def run_postgres(bench: SettlementBench) -> None:
    with postgres_server() as server:
        if server is None:
            bench.report.notes.append("PostgreSQL skipped: no URL, no Docker engine, no binaries")
            bench.report.check("PostgreSQL available", False)
            return
        bench.report.machine["postgres"] = await server_version(server.admin_url)
        bench.report.machine["postgres_source"] = server.source
        name = f"condpay_bench_settlements_{time.time_ns()}"
        async with fresh_database(server, name) as url:
            await run_backend(
                bench,
                backend="postgres",
                database_url=url,
                workers=DEFAULT_WORKERS,
                postgres_pid=transfers._postmaster_pid(server),
            )


def _method(config: SettlementConfig) -> dict[str, object]:
    return {
        "load_generator": "a separate process (multiprocessing spawn): N asyncio tasks over 16 "
        "grpc.aio channels, each running one settlement flow at a time with one call in flight; "
        "paced: a flow started every 1/R s; "
        + (
            "Settle at market and GetSettlement pre-serialized"
            if config.market
            else "QuoteFx and GetSettlement pre-serialized, Settle signed in the load generator "
            "over the quote answered"
        ),
        "flow": (
            "SettlePvP | SettleDvP at market (no quote id: exactly 100.00 arrives, the payer "
            "pays the bridge's price, at most 1000.00)"
            if config.market
            else "QuoteFx, SettlePvP | SettleDvP over its quote"
        )
        + ", GetSettlement every 5 ms until FINAL if needed",
        "at_market": config.market,
        "time_to_final": "from the send of Settle to the reply or poll showing FINAL",
        "processes": "condpay serve --insecure; python -m bridges serve --insecure "
        f"(BridgeProcess, block interval {config.block_interval_ms} ms); the load generator",
        "block_interval_ms": config.block_interval_ms,
        "pvp": "payer pays CNY, payee receives 100.00 HKD",
        "dvp": "one bill of lading (40 units, sold whole) per DvP; buyer pays HKD, seller "
        "receives 100.00 CNY",
        "pairs": config.pairs,
        "per_call_logging": PER_CALL_LOGGING,
        "seconds_per_cell": config.seconds,
        "warmup_seconds": config.warmup_seconds,
        "concurrencies": list(config.concurrencies),
        "paced_share_of_best": PACED_SHARE if config.paced else None,
        "paced_in_flight_max": PACED_IN_FLIGHT_MAX,
        "postgres_workers": DEFAULT_WORKERS,
    }


async def run(config: SettlementConfig, references: Sequence[Cell] = ()) -> SettlementReport:
    report = SettlementReport(
        machine=machine_info(postgres_version=None, postgres_source=None),
        method=_method(config),
        references=list(references),
    )
    started = time.monotonic()
    with LoadProcess() as load:
        bench = SettlementBench(config, load, report)
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
            report.check("the settlement run completed", False, repr(error))
    if not any(c.backend != "echo" for c in report.references):
        report.notes.append("no transfer cells in this run: to_transfers is null")
    report.notes.append(f"quiet waits: {bench.quiet.spent_seconds:.1f} s in all")
    report.run_seconds = time.monotonic() - started
    return report


def print_report(report: SettlementReport) -> None:
    table = Table(title="condpay PvP / DvP through the core and the bridge (same machine, run)")
    headers = (
        "backend",
        "kind",
        "mode",
        "in flight",
        "final",
        "refused",
        "per s",
        "quote p99",
        "settle p99",
        "FINAL p50",
        "FINAL p99",
        "core ms",
        "bridge ms",
        "pg ms",
        "errors",
    )
    for header in headers:
        table.add_column(
            header, justify="left" if header in ("backend", "kind", "mode") else "right"
        )

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for c in report.cells:
        settle = "SettlePvP" if c.kind == "pvp" else "SettleDvP"
        table.add_row(
            c.backend,
            c.kind,
            c.mode if c.start_rate is None else f"paced@{c.start_rate:.0f}",
            str(c.concurrency),
            str(c.completed),
            str(sum(c.refused.values())),
            f"{c.per_second:,.1f}{'!' if c.disturbed else ''}",
            ms(c.rpc_ms.get(STEP_QUOTE, {}).get("p99")),
            ms(c.rpc_ms.get(settle, {}).get("p99")),
            ms(c.time_to_final_ms["p50"]),
            ms(c.time_to_final_ms["p99"]),
            ms(c.cpu_ms_per_settlement.get("core")),
            ms(c.cpu_ms_per_settlement.get("bridge")),
            ms(c.cpu_ms_per_settlement.get("postgres")),
            str(sum(c.errors.values())),
        )
    console.print(table)
    console.print(
        "latencies in ms; FINAL: from the send of Settle to seeing FINAL; ! other processes used "
        f">= {DISTURBED_CORES} cores in the window; core/bridge/pg ms: CPU ms per settlement"
    )
    console.print_json(json.dumps(report.summary()))


def finish(report: SettlementReport, output: Path) -> int:
    write_json(report.document(), output)
    print_report(report)
    for check in report.checks:
        if not check.ok:
            console.print(f"[red]check failed[/]: {check.name} {check.detail}")
    console.print(f"wrote {output} in {report.run_seconds:.0f} s")
    return 0 if report.ok else 1


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None) -> SettlementConfig:
    defaults = SettlementConfig()
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.settlements",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="per cell")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_seconds)
    parser.add_argument(
        "--concurrencies",
        "--concurrency",
        default=",".join(map(str, defaults.concurrencies)),
        help="settlements in flight, comma-separated",
    )
    parser.add_argument("--pairs", type=int, default=defaults.pairs, help="payers (and payees)")
    parser.add_argument(
        "--backends", default=",".join(defaults.backends), help="any of echo,sqlite,postgres"
    )
    parser.add_argument("--kinds", default=",".join(defaults.kinds), help="any of pvp,dvp")
    parser.add_argument("--no-paced", action="store_true", help="skip the open-loop cells")
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=None,
        help="start the paced cells at this rate (/s) instead of half the best closed-loop one "
        "(the summary then checks time to FINAL at that rate)",
    )
    parser.add_argument(
        "--block-interval-ms",
        type=int,
        default=defaults.block_interval_ms,
        help="the bridge's block timer (default: the bridge's own default)",
    )
    parser.add_argument(
        "--quoted", action="store_true", help="QuoteFx first, then Settle over its quote"
    )
    parser.add_argument("--output", type=Path, default=defaults.output)
    args = parser.parse_args(argv)
    return SettlementConfig(
        seconds=args.seconds,
        warmup_seconds=args.warmup,
        concurrencies=_numbers(args.concurrencies),
        pairs=args.pairs,
        backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
        paced=not args.no_paced,
        paced_rate=args.paced_rate,
        block_interval_ms=args.block_interval_ms,
        market=not args.quoted,
        output=args.output,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    report = asyncio.run(run(config))
    return finish(report, config.output)


if __name__ == "__main__":
    sys.exit(main())
