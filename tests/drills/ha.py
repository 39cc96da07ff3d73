"""``make ha-drill`` = ``python -m tests.drills.ha``: lose the primary PostgreSQL under load, lose
no acknowledged payment.

The deployment: a pg_auto_failover cluster (a monitor, a primary and two synchronous-quorum
standbys: tests/support/ha_cluster.py), the bridge as its own service (``condpay bridge serve``)
and three ``condpay serve`` replicas, one client channel over the three (gRPC round robin with
health checking). Load through the SDK (its own retries, same request ids): transfers and
conditional-payment lifecycles (lock, customs, a 2-of-3 BLS sensor quorum, the buyer's receipt).

1. after a 5 s warm-up, ``sync`` and ``async`` phases in turn, twice, ``--phase-seconds`` each:
   commits synchronous (``ANY 1`` standby), then with the standbys out of the quorum
   (``replication-quorum false``: the primary acknowledges commits alone), for the cost of the
   synchronous standby;
2. PvP settlements at market through the bridge service join the load, and
3. the drill, under load: SIGKILL of the primary (its keeper and postmaster: the machine dies),
   the monitor promotes a standby, the old primary rejoins as a standby; SIGKILL of one condpay
   replica (the channel routes around it; it is restarted); SIGKILL of a standby of the new
   primary (the other standby keeps the quorum).

Then, from the database: every acknowledged transfer has exactly one journal entry, every
acknowledged lifecycle step its stored outcome and the money it moves exactly once (lost = 0,
applied twice = 0), the supply audit and the journal chain; the recovery time (from the kill to
the first commit on the new primary, from the journal's commit times) and the longest time any
client waited without an acknowledgement; every acknowledged PvP polled until FINAL or ABORTED.
Everything in ``var/ha/drill.json`` (``--output``). Exit status 1 if anything was lost or
applied twice, an audit failed or a PvP was left in doubt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from condpay.client import Client
from condpay.errors import ApiError
from condpay.v1 import settlement_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import create_async_engine

from settlement.db.urls import parse_database_url
from settlement.ledger.audit import audit_ledger
from sim_central_bank.bridge_process import BridgeProcess
from sim_central_bank.server_process import ServerProcess
from tests.bench.ledger_setup import INSTITUTION
from tests.bench.lifecycle_setup import (
    STEP_ARRIVED,
    STEP_LOCK,
    STEP_RECEIPT,
    LifecycleWorld,
    build_lifecycle_world,
    lifecycle_flows,
    oracle_set_version,
)
from tests.bench.load import Flow
from tests.bench.settlement_setup import (
    SettlementWorld,
    build_settlement_world,
    pvp_flows,
)
from tests.support.ha_cluster import HaCluster, HaNode, ha_cluster
from tests.support.ha_load import (
    DRILL_RETRY,
    AttemptErrors,
    Tally,
    TransferLoad,
    check_books,
    reason_of,
    round_robin_channel,
)

ROOT = Path(__file__).resolve().parents[2]
FINAL = settlement_pb2.SETTLEMENT_STATE_FINAL
ABORTED = settlement_pb2.SETTLEMENT_STATE_ABORTED
PLATFORM_SETTLE = "platform/bench-settle"  # tests/bench/settlement_setup.py signs for it
REPLICAS = 3
DATA_NODES = 3
TRANSFER_WORKERS = 12
LIFECYCLE_WORKERS = 6
PAIRS = 24  # buyers (= transfer payers) and sellers (= payees)
WARMUP_SECONDS = 5.0
MODE_ROUNDS = 2  # sync, async, sync, async
SETTLEMENT_WORKERS = 2  # PvP through the bridge, during the faults
SETTLEMENT_PAIRS = 8
SETTLED_WITHIN_SECONDS = 120.0  # each acknowledged PvP must be FINAL or ABORTED by then


@dataclass(frozen=True)
class DrillConfig:
    output: Path = ROOT / "var" / "ha" / "drill.json"
    phase_seconds: float = 10.0
    settle_seconds: float = 6.0  # load after each fault before the next


def parse_args(argv: Sequence[str] | None) -> DrillConfig:
    parser = argparse.ArgumentParser(prog="python -m tests.drills.ha", description=__doc__)
    parser.add_argument("--output", type=Path, default=DrillConfig.output)
    parser.add_argument("--phase-seconds", type=float, default=DrillConfig.phase_seconds)
    parser.add_argument("--settle-seconds", type=float, default=DrillConfig.settle_seconds)
    args = parser.parse_args(argv)
    return DrillConfig(args.output, args.phase_seconds, args.settle_seconds)


def _message_class(method: str) -> type[Message]:
    """The request type of a full gRPC method path, e.g. /condpay.v1.OracleService/X."""
    service, name = method.strip("/").split("/")
    found = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    cls: type[Message] = message_factory.GetMessageClass(found.input_type)
    return cls


def _replayed(reply: Message) -> bool:
    """Was this answer the stored outcome of an earlier attempt (``operation.replayed``)?"""
    return bool(getattr(getattr(reply, "operation", None), "replayed", False))


class LifecycleLoad:
    """``workers`` tasks, each running one lifecycle at a time through the SDK (each step under
    its own request id, retried by the SDK across a failover); a refused step ends its flow."""

    def __init__(
        self, channel: grpc.aio.Channel, flows: list[Flow], tally: Tally, *, workers: int
    ) -> None:
        self._channel, self._flows, self._tally = channel, flows, tally
        self._workers = workers
        self._clients: dict[str, Client] = {}
        self._next = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.completed: list[str] = []
        self.steps_acked: list[tuple[str, str, str]] = []  # (step, caller, request id)

    def _client(self, caller: str) -> Client:
        if caller not in self._clients:
            self._clients[caller] = Client(
                "unused", caller=caller, channel=self._channel, retry=DRILL_RETRY
            )
        return self._clients[caller]

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self._work(), name=f"lifecycles-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tally.retries += sum(c.retries for c in self._clients.values())
        for client in self._clients.values():
            client.retries = 0

    async def _work(self) -> None:
        while not self._stop.is_set() and self._next < len(self._flows):
            flow = self._flows[self._next]
            self._next += 1
            for step in flow.steps:
                caller = dict(step.metadata)["condpay-caller"]
                request = _message_class(step.method).FromString(step.request)
                request_id = str(getattr(request, "request_id", ""))
                self._tally.attempted[step.name] += 1
                client: Any = self._client(caller)  # send() is typed per request type
                try:
                    reply = await client.send(request)
                except ApiError as error:
                    self._tally.refuse(step.name, request_id, reason_of(error))
                    break
                self._tally.ack(step.name, request_id)
                self._tally.replayed += _replayed(reply)
                self.steps_acked.append((step.name, caller, request_id))
            else:
                self.completed.append(flow.label)


class SettlementLoad:
    """``workers`` tasks, each settling one PvP at a time at market (CNY against HKD through the
    bridge service) through the SDK, then polling it until FINAL or ABORTED: a settlement cut by
    the failover must be finished by the coordinator and its recovery sweep on the new primary."""

    def __init__(
        self, channel: grpc.aio.Channel, flows: list[Flow], tally: Tally, *, workers: int
    ) -> None:
        self._flows, self._tally, self._workers = flows, tally, workers
        self._client = Client("unused", caller=PLATFORM_SETTLE, channel=channel, retry=DRILL_RETRY)
        self._next = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.outcomes: Counter[str] = Counter()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"settlements-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tally.retries += self._client.retries

    async def _work(self) -> None:
        client: Any = self._client  # send() is typed per request type
        while not self._stop.is_set() and self._next < len(self._flows):
            step = self._flows[self._next].steps[0]
            self._next += 1
            request = _message_class(step.method).FromString(step.request)
            request_id = str(getattr(request, "request_id", ""))
            self._tally.attempted["SettlePvP"] += 1
            try:
                reply = await client.send(request)
            except ApiError as error:
                self._tally.refuse("SettlePvP", request_id, reason_of(error))
                continue
            self._tally.ack("SettlePvP", request_id)
            self._tally.replayed += _replayed(reply)
            settlement = reply.settlement
            give_up = time.monotonic() + SETTLED_WITHIN_SECONDS
            while settlement.state not in (FINAL, ABORTED) and time.monotonic() < give_up:
                await asyncio.sleep(0.05)
                with contextlib.suppress(ApiError):
                    got = await client.send(
                        settlement_pb2.GetSettlementRequest(settlement_id=settlement.settlement_id)
                    )
                    settlement = got.settlement
            if settlement.state == FINAL:
                self.outcomes["FINAL"] += 1
            elif settlement.state == ABORTED:
                self.outcomes[f"ABORTED/{settlement.abort_reason or 'unknown'}"] += 1
            else:
                self.outcomes["NOT_TERMINAL"] += 1


@dataclass
class Deployment:
    cluster: HaCluster
    bridge: BridgeProcess
    replicas: list[ServerProcess]
    logs: Path

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.replicas]


async def _start_replicas(cluster: HaCluster, bridge: BridgeProcess, logs: Path) -> Deployment:
    env = {**bridge.core_env(), "CONDPAY_WORKERS": "1", "CONDPAY_QUIET_CALLS": "1"}
    replicas = [
        ServerProcess(cluster.database_url(), log_path=logs / f"replica-{i}.log", extra_env=env)
        for i in range(REPLICAS)
    ]
    replicas[0].start()  # the first creates the schema; the others find it
    await replicas[0].wait_ready()
    for replica in replicas[1:]:
        replica.start()
    for replica in replicas[1:]:
        await replica.wait_ready()
    return Deployment(cluster, bridge, replicas, logs)


@dataclass
class Phase:
    name: str
    seconds: float
    transfers: int
    lifecycles: int
    lifecycle_steps: int

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "transfers_acknowledged": self.transfers,
            "transfers_per_second": round(self.transfers / self.seconds, 1),
            "lifecycles_completed": self.lifecycles,
            "lifecycles_per_second": round(self.lifecycles / self.seconds, 2),
            "lifecycle_steps_per_second": round(self.lifecycle_steps / self.seconds, 1),
        }


def _combined(phases: list[Phase]) -> Phase:
    return Phase(
        "+".join(p.name for p in phases),
        sum(p.seconds for p in phases),
        sum(p.transfers for p in phases),
        sum(p.lifecycles for p in phases),
        sum(p.lifecycle_steps for p in phases),
    )


@dataclass
class Run:
    """Everything the clients did over the drill, across phases."""

    tally: Tally = field(default_factory=Tally)
    lifecycle_steps: list[tuple[str, str, str]] = field(default_factory=list)
    completed_lifecycles: list[str] = field(default_factory=list)
    transfer_tags: int = 0


async def _load_phase(
    run: Run,
    channel: grpc.aio.Channel,
    world: LifecycleWorld,
    version: int,
    name: str,
    seconds: float,
    during: Any = None,
    flows_count: int = 600,
    settlements: SettlementLoad | None = None,
) -> Phase:
    """Transfers and lifecycles for ``seconds`` (or while ``during`` runs, at least)."""
    flows = lifecycle_flows(world, flows_count, f"lc-{name}", version)
    transfers = TransferLoad(
        channel, world.ledger, run.tally, workers=TRANSFER_WORKERS, tag=f"t{run.transfer_tags}"
    )
    run.transfer_tags += 1
    lifecycles = LifecycleLoad(channel, flows, run.tally, workers=LIFECYCLE_WORKERS)
    acked_before = len(run.tally.acknowledged.get("transfer", []))
    started = time.monotonic()
    transfers.start()
    lifecycles.start()
    if settlements is not None:
        settlements.start()
    try:
        if during is not None:
            await during
        else:
            await asyncio.sleep(seconds)
    finally:
        await transfers.stop()
        await lifecycles.stop()
        if settlements is not None:
            await settlements.stop()
    elapsed = time.monotonic() - started
    run.lifecycle_steps += lifecycles.steps_acked
    run.completed_lifecycles += lifecycles.completed
    return Phase(
        name,
        elapsed,
        len(run.tally.acknowledged.get("transfer", [])) - acked_before,
        len(lifecycles.completed),
        len(lifecycles.steps_acked),
    )


def _set_quorum(cluster: HaCluster, standbys: list[HaNode], member: bool) -> None:
    """Put the standbys in (or out of) the primary's synchronous quorum. With two standbys the
    monitor also asks one of them to confirm each commit (number-sync-standbys 1): lowered
    first, raised last. The monitor takes one change at a time (the primary applies each)."""
    pgdata = str(standbys[0].pgdata)

    def change(*args: str) -> None:
        cluster.wait_healthy(60)
        cluster.autoctl("set", *args)

    if not member:
        change("formation", "number-sync-standbys", "0", "--pgdata", pgdata)
    for node in standbys:
        quorum = "true" if member else "false"
        change("node", "replication-quorum", quorum, "--pgdata", str(node.pgdata))
    if member and len(standbys) > 1:
        change("formation", "number-sync-standbys", "1", "--pgdata", pgdata)
    cluster.wait_healthy(60)


async def _wait_sync_names(cluster: HaCluster, *, synchronous: bool) -> str:
    give_up = time.monotonic() + 60
    while True:
        with contextlib.suppress(RuntimeError):
            names = await asyncio.to_thread(cluster.synchronous_standby_names)
            if bool(names) == synchronous:
                return names
        if time.monotonic() > give_up:
            raise TimeoutError(f"synchronous_standby_names did not change: {cluster.events()}")
        await asyncio.sleep(0.5)


@dataclass
class FaultLog:
    events: list[dict[str, Any]] = field(default_factory=list)

    def note(self, what: str, **details: Any) -> float:
        now = time.time()
        self.events.append({"at_unix": round(now, 3), "what": what, **details})
        print(f"  {time.strftime('%H:%M:%S')} {what} {details or ''}", flush=True)
        return now


async def _faults(deployment: Deployment, config: DrillConfig, log: FaultLog) -> dict[str, Any]:
    """The drill's faults, one after the other, under load (run as ``during``)."""
    cluster = deployment.cluster
    old = cluster.primary()
    assert old is not None
    await asyncio.sleep(config.settle_seconds)
    killed_mono = time.monotonic()
    killed_at = log.note(
        "kill primary PostgreSQL node (keeper + postmaster, SIGKILL)", node=old.name
    )
    await asyncio.to_thread(cluster.kill, old)
    new = await asyncio.to_thread(cluster.wait_promoted, old)
    promoted_at = log.note("standby promoted by the monitor", node=new.name)
    await asyncio.sleep(config.settle_seconds / 2)
    log.note("old primary restarted: rejoins as a standby", node=old.name)
    cluster.run_node(old)
    victim = deployment.replicas[0]
    replica_killed_mono = time.monotonic()
    replica_killed_at = log.note("kill condpay replica (SIGKILL)", address=victim.address)
    victim.stop(kill=True)
    await asyncio.to_thread(cluster.wait_healthy, 120)
    rejoined_at = log.note("old primary is a standby again", node=old.name)
    sync_names = await asyncio.to_thread(cluster.synchronous_standby_names)
    await asyncio.sleep(config.settle_seconds / 2)
    victim.start()
    await victim.wait_ready()
    replica_restarted_mono = time.monotonic()
    log.note("condpay replica restarted and serving", address=victim.address)
    states = await asyncio.to_thread(cluster.states)
    standby = next(n for n in cluster.nodes if n is not new and states[n.name][0] == "secondary")
    standby_killed_mono = time.monotonic()
    standby_killed_at = log.note("kill a standby of the new primary (SIGKILL)", node=standby.name)
    await asyncio.to_thread(cluster.kill, standby)
    await asyncio.sleep(config.settle_seconds)
    return {
        "old_primary": old.name,
        "new_primary": new.name,
        "killed_at": killed_at,
        "killed_mono": killed_mono,
        "promoted_at": promoted_at,
        "promotion_seconds": round(promoted_at - killed_at, 2),
        "rejoin_seconds": round(rejoined_at - promoted_at, 2),
        "synchronous_standby_names_after_rejoin": sync_names,
        "replica_killed_at": replica_killed_at,
        "replica_killed_mono": replica_killed_mono,
        "replica_restarted_mono": replica_restarted_mono,
        "standby_killed_mono": standby_killed_mono,
        "standby_killed": standby.name,
        "standby_killed_at": standby_killed_at,
    }


def _longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch in [start, end] (monotonic) with no acknowledgement at all."""
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


async def _first_commit_after(dsn: str, moment_unix: float) -> float | None:
    conn = await asyncpg.connect(dsn)
    try:
        first = await conn.fetchval(
            "SELECT min(committed_at_us) FROM journal_entries WHERE committed_at_us > $1",
            int(moment_unix * 1_000_000),
        )
    finally:
        await conn.close()
    return None if first is None else first / 1_000_000 - moment_unix


async def _lifecycle_books(dsn: str, steps: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Each acknowledged step has its stored outcome, and a releasing step exactly one journal
    entry; a lock, exactly one."""
    conn = await asyncpg.connect(dsn)
    try:
        outcomes = {
            (r[0], r[1])
            for r in await conn.fetch("SELECT caller, request_id FROM operations WHERE ok")
        }
        entries = Counter(
            (r[0], r[1])
            for r in await conn.fetch(
                "SELECT caller, request_id FROM journal_entries WHERE request_id LIKE 'lc-%'"
            )
        )
    finally:
        await conn.close()
    lost = [rid for _, caller, rid in steps if (caller, rid) not in outcomes]
    moving = {STEP_LOCK, STEP_ARRIVED, STEP_RECEIPT}
    missing_entry = [
        rid for step, caller, rid in steps if step in moving and entries[(caller, rid)] == 0
    ]
    twice = sorted(f"{c}:{r}" for (c, r), n in entries.items() if n > 1)
    return {
        "steps_acknowledged": len(steps),
        "lost": lost + missing_entry,
        "applied_twice": twice,
    }


async def drill(config: DrillConfig) -> dict[str, Any]:
    out_dir = config.output.parent
    logs = out_dir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    state = out_dir / "bridge.db"
    for stale in out_dir.glob("bridge.db*"):
        stale.unlink()
    report: dict[str, Any] = {"deployment": {}}
    faults_log = FaultLog()
    run = Run()
    print(f"HA drill: {DATA_NODES} PostgreSQL nodes, {REPLICAS} condpay replicas, a bridge")
    with ha_cluster(data_nodes=DATA_NODES) as cluster:
        bridge = BridgeProcess(state, logs)
        await bridge.start()
        deployment: Deployment | None = None
        try:
            deployment = await _start_replicas(cluster, bridge, logs)
            dsn = cluster.database_url()
            report["deployment"] = {
                "database_url": dsn,
                "replicas": deployment.addresses,
                "client_target": "ipv4:" + ",".join(deployment.addresses),
                "bridge": bridge.address,
                "synchronous_standby_names": cluster.synchronous_standby_names(),
            }
            print(f"  replicas {deployment.addresses}; database {dsn}")
            world = await build_lifecycle_world(deployment.addresses[0], pairs=PAIRS)
            settlement_world: SettlementWorld = await build_settlement_world(
                deployment.addresses[0], pairs=SETTLEMENT_PAIRS
            )
            version = await oracle_set_version(deployment.addresses[0])
            attempt_errors = AttemptErrors()
            channel = round_robin_channel(deployment.addresses, attempt_errors)
            try:
                primary = cluster.primary()
                standbys = [n for n in cluster.nodes if n is not primary]
                # Untimed warm-up (caches, pools, compiled contracts), then the two modes in
                # turn, twice (sync, async, sync, async), so neither gains from going second.
                await _load_phase(run, channel, world, version, "warmup", WARMUP_SECONDS)
                phases: dict[bool, list[Phase]] = {True: [], False: []}
                for round_number in range(MODE_ROUNDS):
                    for synchronous in (True, False):
                        name = f"{'sync' if synchronous else 'async'}{round_number}"
                        phase = await _load_phase(
                            run, channel, world, version, name, config.phase_seconds
                        )
                        phases[synchronous].append(phase)
                        print(f"  {name}: {phase.summary()}", flush=True)
                        await asyncio.to_thread(_set_quorum, cluster, standbys, not synchronous)
                        await _wait_sync_names(cluster, synchronous=not synchronous)
                sync, unsync = _combined(phases[True]), _combined(phases[False])
                faults_task = asyncio.create_task(_faults(deployment, config, faults_log))
                settlement_load = SettlementLoad(
                    channel,
                    pvp_flows(settlement_world, 2000, "pvp-failover"),
                    run.tally,
                    workers=SETTLEMENT_WORKERS,
                )
                failover = await _load_phase(
                    run,
                    channel,
                    world,
                    version,
                    "failover",
                    0,
                    during=faults_task,
                    settlements=settlement_load,
                )
                fault_facts = faults_task.result()
                drill_ended = time.monotonic()
            finally:
                await channel.close()
            primary_dsn = cluster.database_url()
            transfers = await check_books(
                primary_dsn,
                INSTITUTION,
                run.tally.acknowledged.get("transfer", []),
                run.tally.refused.get("transfer", []),
            )
            lifecycles = await _lifecycle_books(primary_dsn, run.lifecycle_steps)
            rto = await _first_commit_after(primary_dsn, fault_facts["killed_at"])
            engine = create_async_engine(parse_database_url(primary_dsn).sqlalchemy)
            try:
                audit = await audit_ledger(engine)
            finally:
                await engine.dispose()
            kill_mono = fault_facts.pop("killed_mono")
            tally = run.tally
            refused_total = tally.count(tally.refused)
            attempted_total = sum(tally.attempted.values())
            acked_total = tally.count(tally.acknowledged)
            report.update(
                {
                    "operations": {
                        "attempted": attempted_total,
                        "acknowledged": acked_total,
                        "refused": refused_total,
                        "by_kind": {
                            kind: {
                                "attempted": tally.attempted[kind],
                                "acknowledged": len(tally.acknowledged.get(kind, [])),
                                "refused": len(tally.refused.get(kind, [])),
                            }
                            for kind in sorted(tally.attempted)
                        },
                        "lifecycles_completed": len(run.completed_lifecycles),
                        # PvP at market through the bridge service, during the faults: each
                        # acknowledged one polled until FINAL or ABORTED.
                        "pvp_settlements": dict(settlement_load.outcomes),
                        "sdk_retries": tally.retries,
                        # acknowledged from a stored outcome after a retry: committed once
                        # before the failure, its first answer lost
                        "acknowledged_as_replays": tally.replayed,
                    },
                    "acknowledged_but_lost": len(transfers.lost) + len(lifecycles["lost"]),
                    "applied_twice": len(transfers.applied_twice)
                    + len(lifecycles["applied_twice"]),
                    "refused_but_applied": len(transfers.refused_but_applied),
                    "lost_ids": (transfers.lost + lifecycles["lost"])[:20],
                    "applied_twice_ids": (transfers.applied_twice + lifecycles["applied_twice"])[
                        :20
                    ],
                    "audit": {
                        "ok": audit.ok,
                        "supply_conserved_and_chain_intact": audit.ok,
                        "failures": list(audit.failures),
                    },
                    "rto": {
                        "primary_kill_to_first_commit_seconds": None
                        if rto is None
                        else round(rto, 2),
                        "primary_kill_to_promotion_seconds": fault_facts["promotion_seconds"],
                        "longest_client_wait_without_ack_seconds": round(
                            _longest_gap(tally.ack_times, kill_mono, drill_ended), 2
                        ),
                        "after_replica_kill_longest_wait_seconds": round(
                            _longest_gap(
                                tally.ack_times,
                                fault_facts.pop("replica_killed_mono"),
                                fault_facts.pop("replica_restarted_mono"),
                            ),
                            2,
                        ),
                        "after_standby_kill_longest_wait_seconds": round(
                            _longest_gap(
                                tally.ack_times, fault_facts.pop("standby_killed_mono"), drill_ended
                            ),
                            2,
                        ),
                    },
                    # Calls the SDK gave up on (refused), by reason; and every failed attempt
                    # the clients saw, by code/reason, retried by the SDK under its request id.
                    "errors_by_reason": dict(tally.errors_by_reason),
                    "failed_attempts_by_reason": dict(attempt_errors.by_reason),
                    "throughput": {
                        "synchronous_standby": sync.summary(),
                        "no_synchronous_standby": unsync.summary(),
                        "phases": {p.name: p.summary() for p in [*phases[True], *phases[False]]},
                        "during_faults": failover.summary(),
                        "note": (
                            "3 condpay replicas, 3 PostgreSQL nodes, the monitor, the bridge and "
                            "the load generator share this machine's cores"
                        ),
                    },
                    "faults": fault_facts,
                    "timeline": faults_log.events,
                }
            )
        finally:
            if deployment is not None:
                for replica in deployment.replicas:
                    with contextlib.suppress(Exception):
                        replica.stop()
            await bridge.stop()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    report = asyncio.run(drill(config))
    config.output.parent.mkdir(parents=True, exist_ok=True)
    config.output.write_text(json.dumps(report, indent=2) + "\n")
    ok = (
        report["acknowledged_but_lost"] == 0
        and report["applied_twice"] == 0
        and report["audit"]["ok"]
        and report["operations"]["pvp_settlements"].get("NOT_TERMINAL", 0) == 0
    )
    operations, audit_ok = report["operations"], report["audit"]["ok"]
    print(
        f"HA drill {'PASS' if ok else 'FAIL'}: {operations['acknowledged']} acknowledged,"
        f" {operations['refused']} refused, lost {report['acknowledged_but_lost']},"
        f" applied twice {report['applied_twice']}, audit {'ok' if audit_ok else 'FAILED'};"
        f" RTO {report['rto']['primary_kill_to_first_commit_seconds']} s -> {config.output}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
