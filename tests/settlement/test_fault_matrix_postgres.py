"""The PvP fault matrix (issue 5): the core (``condpay serve`` on PostgreSQL, one process) and the
bridge (``python -m bridges serve``) as two child processes, faults injected on either side, each
cell run several times with different seeds; after recovery, both ledgers are checked against
each other (tests/settlement/fault_processes.py): every settlement committed on both or on
neither, no leg applied twice, nothing left in doubt, both audits clean, and per currency the
gateway's core + bridge position unchanged.

- prepare_reply_dropped: the bridge's ``drop_reply=P,on=prepare`` (P drawn per run);
- commit_reply_dropped: ``drop_reply=P,on=commit``;
- bridge_killed_after_prepare / _after_commit: ``crash_after_prepare`` / ``crash_after_commit``
  (the write is durable, the process exits 86 before answering); in the last run a SIGKILL from
  outside instead, as soon as a transfer is prepared / committed, with calls in flight;
- core_killed_before_decision / _after_decision / _between_commits: the core's fault points
  ``pvp_before_decision`` / ``pvp_after_decision`` / ``pvp_between_commits`` (exit 86);
- quote_expired_mid_flight: the bridge's ``quote_ttl_ms`` with ``latency_ms`` on prepare (and
  one settlement per run sent after its quote expired, which the core refuses itself);
- quorum_short_at_prepare: ``no_quorum`` or ``validators_down=A+B``: everything aborts;
- quorum_short_at_commit: COMMIT decided, then the quorum short while the commits are taken:
  COMMITTED, not FINAL, until the validators are back, then FINAL.

A crashed process is restarted at once (bridge on the same address and state file; core on the
same database); in a crash cell, the first incarnation of each run has its fault at 100% (so it
certainly crashes there), a restarted one at 30% with another seed while the run's crash budget
lasts, then none. Each cell prints one MATRIX line: runs and seeds, settlements, committed, final,
aborted (with reasons), refused, kills and crashes, retries (the clients' and the core's to the
bridge), seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridges import TransferState
from bridges.errors import BridgeError
from settlement.certs import init_certificates
from sim_central_bank.bridge_process import BridgeProcess
from tests.payments.fleet import RestartableServer
from tests.settlement.fault_processes import (
    AUDITOR_IDENTITY,
    CRASH_EXIT_STATUS,
    GATEWAY_IDENTITY,
    Pvp,
    Sender,
    Supervisor,
    Tally,
    World,
    build_world,
    check_both_ledgers,
    core_bridge_retries,
    core_env,
    log_problems,
    on_bridge,
    plan_pvps,
    settle,
    take_quote,
    wait_settled,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(120)]

RUNS = 3  # per cell, each with its own seed
PER_RUN = 8  # settlements per run, all in flight at once
CRASH_BUDGET = 2  # crashes per run at most: then the process comes back without its fault
RESTARTED_PERCENT = 30
# The run of a bridge cell that SIGKILLs the bridge instead: calls slowed, so that some are in
# flight when the kill lands.
KILL_RUN_LATENCY = "latency_ms=30..150,on=prepare+commit"
# Aborts a cell may see when the machine is slow (a decision deadline passing while the bridge
# is unreachable); anything else (a refused prepare retry, say) is a finding.
TIMING_ABORTS = frozenset({"DECISION_DEADLINE", "BRIDGE_UNREACHABLE"})
QUORUM_SHORT = ("no_quorum", "validators_down=HKMA+BOT", "validators_down=PBoC+SAMA")


@dataclass
class Rig:
    """One cell's systems: a fresh database, a bridge state file, both processes, the world."""

    core: RestartableServer
    bridge: BridgeProcess
    world: World
    pvps: list[Pvp] = field(default_factory=list)
    sender: Sender = field(default_factory=Sender)
    deaths: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    seeds: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def seed(self, cell: str, run: int) -> int:
        seed = 1000 * (zlib.crc32(cell.encode()) % 1000) + run
        self.seeds.append(seed)
        return seed

    async def restart_core(self, env: Mapping[str, str]) -> None:
        if self.core.exit_status() is None:
            self.core.stop(kill=True)
        self.core.start_with(env)
        await self.core.wait_ready()

    async def restart_bridge(self, faults: Sequence[str], seed: int) -> None:
        await self.bridge.stop()
        await self.bridge.start(faults, seed=seed)

    async def traffic(self, pvps: list[Pvp]) -> None:
        """Quotes first (all valid when the settlements start), then every SettlePvP at once."""
        self.pvps += pvps
        await asyncio.gather(*(take_quote(self.world, p, self.sender) for p in pvps))
        await asyncio.gather(*(settle(self.world, p, self.sender) for p in pvps))

    async def supervised(
        self,
        pvps: list[Pvp],
        *,
        core_policy: Callable[[int], Mapping[str, str]] | None = None,
        bridge_policy: Callable[[int], tuple[Sequence[str], int]] | None = None,
        alongside: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """A run's traffic (and ``alongside``, e.g. a killer) while whatever dies is restarted
        (by default without faults), then its recovery: every settlement FINAL or ABORTED."""
        supervisor = Supervisor(
            self.core,
            self.bridge,
            core_policy or (lambda n: core_env(self.bridge)),
            bridge_policy or (lambda n: ((), n)),
        )

        async def work() -> None:
            await asyncio.gather(self.traffic(pvps), alongside() if alongside else asyncio.sleep(0))
            await wait_settled(self.world, pvps)

        try:
            await supervisor.watching(work())
        finally:
            self.deaths += supervisor.deaths

    @property
    def crashes(self) -> int:
        return sum(n for k, n in self.deaths.items() if k.endswith(f":{CRASH_EXIT_STATUS}"))

    async def kill_bridge_once(self, pvps: list[Pvp], states: Collection[TransferState]) -> None:
        """SIGKILL the bridge as soon as one of ``pvps``' transfers is in one of ``states``
        (durable there); the supervisor restarts it."""
        ids = [p.transfer_id for p in pvps]
        async with self.bridge.client(GATEWAY_IDENTITY, deadline_ms=1_000) as bridge:
            while True:
                for transfer_id in ids:
                    with contextlib.suppress(BridgeError):
                        if (await bridge.status(on_bridge(transfer_id))).state in states:
                            await self.bridge.stop(kill=True)
                            self.kills += 1
                            return
                await asyncio.sleep(0.005)

    async def finish(self, cell: str, *, aborts: Collection[str] = TIMING_ABORTS) -> Tally:
        """The cell's last check (all its runs), its MATRIX line, then: every abort for one of
        ``aborts``, and neither process logged an error."""
        tally = await check_both_ledgers(self.world, self.pvps)
        self.matrix(cell, tally)
        assert set(tally.abort_reasons) <= set(aborts), tally.abort_reasons
        assert log_problems(self.core, self.bridge) == []
        return tally

    def matrix(self, cell: str, tally: Tally) -> None:
        retries = self.sender.retries + self.world.cb.retries + self.world.platform.retries
        reasons = ",".join(f"{r}:{n}" for r, n in sorted(tally.abort_reasons.items())) or "-"
        answers = Counter(p.answer for p in self.pvps)
        print(
            f"\nMATRIX cell={cell} runs={len(self.seeds)} seeds={self.seeds} "
            f"settlements={tally.settlements} committed={tally.committed} final={tally.final} "
            f"aborted={tally.aborted} abort_reasons={reasons} refused={tally.refused} "
            f"settle_answered={dict(sorted(answers.items()))} "
            f"kills={self.kills} crashes={self.crashes} deaths={dict(sorted(self.deaths.items()))} "
            f"retries=client:{retries},core_to_bridge:{core_bridge_retries(self.core)} "
            f"seconds={time.monotonic() - self.started:.1f}"
        )


@pytest.fixture
async def rig(pg_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    # Over the authenticated link: the bridge serves mutual TLS, the core presents the gateway's
    # certificate and pins the validator set; the test's own clients present theirs.
    init_certificates(
        tmp_path / "certs",
        [],
        bridge_identities=[GATEWAY_IDENTITY, AUDITOR_IDENTITY],
    )
    bridge = BridgeProcess(
        tmp_path / "bridge.db", tmp_path / "logs", tls_dir=tmp_path / "certs" / "bridge"
    )
    core = RestartableServer(pg_url, tmp_path / "logs")
    world: World | None = None
    try:
        await bridge.start()
        core.start_with(core_env(bridge))
        await core.wait_ready()
        world = await build_world(core.address, bridge, pg_url)
        yield Rig(core, bridge, world)
    finally:
        if world is not None:
            await world.close()
        core.stop(kill=True)
        await bridge.stop(kill=True)


# -- 1, 2: a reply lost --------------------------------------------------------------------------
@pytest.mark.parametrize("operation", ["prepare", "commit"])
async def test_a_lost_reply_is_retried_and_applied_once(rig: Rig, operation: str) -> None:
    """The bridge applies the call and the reply is lost; the core retries the same transfer id
    (bounded), then the sweep does: the bridge answers from what it recorded."""
    cell = f"{operation}_reply_dropped"
    for run in range(RUNS):
        seed = rig.seed(cell, run)
        rng = random.Random(seed)
        spec = f"drop_reply={rng.randrange(40, 75)},on={operation}"
        await rig.restart_bridge([spec], seed)
        await rig.supervised(plan_pvps(f"{cell}-{run}", rng, PER_RUN))
        await check_both_ledgers(rig.world, rig.pvps)
    tally = await rig.finish(cell)
    assert core_bridge_retries(rig.core) > 0  # replies were lost, and the core asked again
    assert tally.committed > 0


# -- 3, 4: the bridge dies ----------------------------------------------------------------------
@pytest.mark.parametrize("point", ["crash_after_prepare", "crash_after_commit"])
async def test_the_bridge_killed_after_prepare_or_commit(rig: Rig, point: str) -> None:
    """The bridge's write is durable, then the process dies before answering: the crash fault
    (exit 86) in the first runs, a SIGKILL from outside in the last, once a transfer is prepared
    (or committed). It comes back on its state file and address, and the core (its bounded
    retries, then its sweep) finishes every settlement."""
    cell = "bridge_killed_after_" + point.removeprefix("crash_after_")
    durable = (
        {TransferState.PREPARED, TransferState.COMMITTED}
        if point == "crash_after_prepare"
        else {TransferState.COMMITTED}
    )
    for run in range(RUNS):
        seed = rig.seed(cell, run)
        pvps = plan_pvps(f"{cell}-{run}", random.Random(seed), PER_RUN)
        if run == RUNS - 1:
            kills = rig.kills
            await rig.restart_bridge([KILL_RUN_LATENCY], seed)
            await rig.supervised(
                pvps,
                bridge_policy=lambda n, seed=seed: ([KILL_RUN_LATENCY], seed + n),
                alongside=lambda pvps=pvps: rig.kill_bridge_once(pvps, durable),
            )
            assert rig.kills == kills + 1
        else:
            crashes = rig.deaths["bridge:86"]
            await rig.restart_bridge([point], seed)

            def policy(n: int, seed: int = seed) -> tuple[Sequence[str], int]:
                faults = [f"{point}={RESTARTED_PERCENT}"] if n < CRASH_BUDGET else []
                return faults, seed * 10 + n

            await rig.supervised(pvps, bridge_policy=policy)
            assert rig.deaths["bridge:86"] > crashes, "the crash fault never fired"
        await check_both_ledgers(rig.world, rig.pvps)
    tally = await rig.finish(cell)
    assert rig.bridge.crashes()[point] == rig.deaths["bridge:86"]
    assert rig.deaths["bridge:-9"] == rig.kills == 1
    assert tally.committed > 0


# -- 5: the core dies ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "point", ["pvp_before_decision", "pvp_after_decision", "pvp_between_commits"]
)
async def test_the_core_killed_around_the_decision(rig: Rig, point: str) -> None:
    """The core dies (exit 86) before the decision is recorded, after it, or between the bridge's
    commit and its own; restarted on the same database, its sweep (and the client's retry of
    SettlePvP, same request id) finishes every settlement the way its decision says."""
    cell = "core_killed_" + point.removeprefix("pvp_")
    for run in range(RUNS):
        seed = rig.seed(cell, run)
        await rig.restart_core(core_env(rig.bridge, fault_points=f"{point}=1", seed=seed))

        def policy(n: int, seed: int = seed) -> Mapping[str, str]:
            points = f"{point}={RESTARTED_PERCENT / 100}" if n < CRASH_BUDGET else ""
            return core_env(rig.bridge, fault_points=points, seed=seed * 10 + n)

        await rig.supervised(
            plan_pvps(f"{cell}-{run}", random.Random(seed), PER_RUN), core_policy=policy
        )
        assert rig.deaths["core:86"] > run, "the fault point was never reached"
        await check_both_ledgers(rig.world, rig.pvps)
    tally = await rig.finish(cell)
    assert rig.core.fault_crashes()[point] == rig.deaths["core:86"]
    assert tally.committed > 0
    if point != "pvp_before_decision":  # decided COMMIT before the crash: committed after it
        assert tally.committed >= rig.deaths["core:86"]


# -- 6: the quote expires mid-flight -------------------------------------------------------------
async def test_a_quote_expiring_mid_flight_aborts_with_nothing_moved(rig: Rig) -> None:
    """Quotes firm for about a second, prepares delayed up to twice that: a quote that expires
    before the bridge's prepare is refused there (QUOTE_EXPIRED), so the settlement aborts with
    nothing moved; one more settlement per run is sent after its quote expired, and the core
    refuses it itself (nothing is created)."""
    cell = "quote_expired_mid_flight"
    for run in range(RUNS):
        seed = rig.seed(cell, run)
        rng = random.Random(seed)
        ttl_ms = rng.choice((800, 1000, 1200))
        spec = f"quote_ttl_ms={ttl_ms},latency_ms=0..{2 * ttl_ms},on=prepare"
        await rig.restart_bridge([spec], seed)
        late = plan_pvps(f"{cell}-{run}-late", rng, 1)

        async def too_late(ttl_ms: int = ttl_ms, late: list[Pvp] = late) -> None:
            rig.pvps.extend(late)
            await take_quote(rig.world, late[0], rig.sender)
            await asyncio.sleep(ttl_ms / 1000 + 0.2)
            await settle(rig.world, late[0], rig.sender)

        await asyncio.gather(rig.supervised(plan_pvps(f"{cell}-{run}", rng, PER_RUN)), too_late())
        assert late[0].refused == "QUOTE_EXPIRED", late[0]
        await check_both_ledgers(rig.world, rig.pvps)
    tally = await rig.finish(cell, aborts={"QUOTE_EXPIRED"})
    assert tally.aborted > 0
    assert tally.refused == RUNS


# -- 7: the quorum short -------------------------------------------------------------------------
async def test_without_a_quorum_prepares_are_refused_and_nothing_moves(rig: Rig) -> None:
    """Fewer than 2/3 of the validators sign (one short, or two of five down): the bridge takes
    no new transfer, every prepare is refused (QUORUM_UNAVAILABLE, remembered), and every
    settlement aborts with nothing moved on either ledger."""
    cell = "quorum_short_at_prepare"
    for run in range(RUNS):
        seed = rig.seed(cell, run)
        await rig.restart_bridge([QUORUM_SHORT[run % len(QUORUM_SHORT)]], seed)
        await rig.supervised(plan_pvps(f"{cell}-{run}", random.Random(seed), PER_RUN))
        await check_both_ledgers(rig.world, rig.pvps)
    tally = await rig.finish(cell, aborts={"QUORUM_UNAVAILABLE"})
    assert (tally.committed, tally.aborted) == (0, RUNS * PER_RUN)


async def test_commits_taken_without_a_quorum_stay_committed_until_it_returns(rig: Rig) -> None:
    """The core decides COMMIT and dies (pvp_after_decision); the bridge comes back short of a
    quorum, the core comes back clean: the decided commits are taken and stay COMMITTED, not
    FINAL, while the quorum is short (and nothing new can be prepared: those abort); with the
    validators back, every commit becomes FINAL."""
    cell = "quorum_short_at_commit"
    for run in range(RUNS):
        seed = rig.seed(cell, run)
        await rig.restart_bridge([], seed)
        await rig.restart_core(core_env(rig.bridge, fault_points="pvp_after_decision=1", seed=seed))
        pvps = plan_pvps(f"{cell}-{run}", random.Random(seed), PER_RUN)

        async def quorum_lost_while_down(seed: int = seed, run: int = run) -> None:
            give_up = time.monotonic() + 30
            while (status := rig.core.exit_status()) is None:
                assert time.monotonic() < give_up, "the core never reached its decision"
                await asyncio.sleep(0.02)
            rig.deaths[f"core:{status}"] += 1
            await rig.restart_bridge([QUORUM_SHORT[run % len(QUORUM_SHORT)]], seed + 1)
            await rig.restart_core(core_env(rig.bridge))

        await asyncio.gather(rig.traffic(pvps), quorum_lost_while_down())
        await wait_settled(rig.world, pvps, accept=frozenset({"COMMITTED", "ABORTED"}))
        waiting = {p.settlement_id for p in pvps if p.created}
        short = await check_both_ledgers(rig.world, rig.pvps, awaiting_finality=waiting)
        await asyncio.sleep(1.0)  # the sweep keeps asking; the answer stays "not final"
        again = await check_both_ledgers(rig.world, rig.pvps, awaiting_finality=waiting)
        assert (again.committed, again.final) == (short.committed, short.final)
        assert short.committed - short.final >= 1, "no commit was taken without a quorum"
        await rig.restart_bridge([], seed + 2)  # the validators are back
        await wait_settled(rig.world, pvps)
        await check_both_ledgers(rig.world, rig.pvps)
    tally = await rig.finish(cell, aborts={"QUORUM_UNAVAILABLE", *TIMING_ABORTS})
    assert tally.final == tally.committed >= RUNS
