"""CPU-heavy contract calls run off the event loop (issue 10, item 4): while one caller runs heavy
SimulateContract and ValidateContract calls back to back, another caller's transfers are never
held up behind them: their p99 stays a small part of one heavy round (a stalled loop would make
a transfer wait a whole round; before the process pool, two such simulations stalled a transfer
for seconds). Relative to the round, not in milliseconds, so that a loaded machine (the suite
runs in two processes) slows both alike. SQLite, through the real gRPC server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from condpay.client import PaymentsClient
from condpay.errors import InvalidArgument
from condpay.v1 import contract_pb2, money_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from settlement import limits
from sim_central_bank.server_process import ServerProcess
from tests.support.harness import start_harness
from tests.support.snapshots import build_world

COLD_CHAIN = (
    Path(__file__).resolve().parents[1] / "examples" / "contracts" / "cold-chain-penalty.contract"
).read_text()
AUDITOR = "auditor/heavy"
#: A transfer's p99 may be at most this share of the shortest heavy round.
P99_SHARE_OF_ROUND_MAX = 0.25
# 2026-08-10, before the contract's breach window closes.
OBSERVED_US = 1_786_320_000 * 1_000_000


def simulation(events: int) -> contract_pb2.SimulateContractRequest:
    request = contract_pb2.SimulateContractRequest(source=COLD_CHAIN)
    request.params["importer"].id = "w_importer"
    request.params["exporter"].id = "w_exporter"
    request.params["price"].money.CopyFrom(money_pb2.Money(currency="CNY", amount_minor=100_000))
    for i in range(events):
        observed = Timestamp()
        observed.FromMicroseconds(OBSERVED_US + i)
        request.events.append(
            contract_pb2.SimulatedEvent(
                event_id=f"e{i}",
                event_type="iot.condition",
                oracle="reefer",
                observed_at=observed,
                attributes={"max_temp_c": "-20", "shock_g": "0.1"},
            )
        )
    return request


# The most events the work bound allows for this contract (3 clauses): the heaviest simulation.
HEAVIEST = max(
    n for n in range(1, 1000) if (n + 1) * (n + 2) // 2 * 3 <= limits.SIMULATION_WORK_MAX
)


async def heavy_loop(client: PaymentsClient, stop: asyncio.Event, done: list[float]) -> None:
    """Heavy rounds back to back; ``done`` gets each round's duration in ms."""
    heaviest = simulation(HEAVIEST)
    while not stop.is_set():
        began = time.perf_counter()
        reply = await client.api.contracts.simulate_contract(heaviest)
        assert len(reply.steps) == HEAVIEST
        checked = await client.validate_contract(COLD_CHAIN)
        assert checked.ok
        done.append((time.perf_counter() - began) * 1000)


@pytest.mark.timeout(120)
async def test_heavy_calls_do_not_stall_another_callers_transfers(tmp_path: Path) -> None:
    async with start_harness(f"sqlite:///{tmp_path}/condpay.db") as harness:
        world = await build_world(harness)
        auditor = PaymentsClient(harness.address, caller=AUDITOR)
        harness.clients.append(auditor)
        # Too much work is refused before it starts.
        with pytest.raises(InvalidArgument) as refused:
            await auditor.api.contracts.simulate_contract(simulation(HEAVIEST + 1))
        assert refused.value.reason == "PARAMS_INVALID"
        # Warm up: the pool's worker, the transfer path.
        await auditor.validate_contract(COLD_CHAIN)
        for _ in range(5):
            await world.send(world.signed("alice", "bob", 1_00))

        stop, done = asyncio.Event(), list[float]()
        loops = [asyncio.create_task(heavy_loop(auditor, stop, done)) for _ in range(2)]
        latencies_ms = []
        started = time.perf_counter()
        try:
            while time.perf_counter() - started < 8.0 or len(done) < 2:
                signed = world.signed("alice", "bob", 1_00)
                began = time.perf_counter()
                await world.send(signed)
                latencies_ms.append((time.perf_counter() - began) * 1000)
                await asyncio.sleep(0.01)
                assert time.perf_counter() - started < 60, "the heavy calls never finished"
        finally:
            stop.set()
            results = await asyncio.gather(*loops, return_exceptions=True)
        assert not [r for r in results if isinstance(r, BaseException)], results
        latencies_ms.sort()
        p99 = latencies_ms[int(len(latencies_ms) * 0.99) - 1]
        assert len(done) >= 2, "the heavy calls must have run during the measurement"
        round_ms = min(done)
        assert p99 <= P99_SHARE_OF_ROUND_MAX * round_ms, (
            f"transfer p99 {p99:.1f} ms over {len(latencies_ms)} transfers while "
            f"{len(done)} heavy rounds ran, the shortest {round_ms:.0f} ms "
            f"(max transfer {latencies_ms[-1]:.1f} ms)"
        )


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux: /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists()}


@pytest.mark.timeout(120)
async def test_the_heavy_call_workers_exit_when_the_server_is_killed(tmp_path: Path) -> None:
    """A server killed outright (kill -9) never shuts its worker pool down: the workers notice
    their parent is gone and exit, instead of waiting for a job forever."""
    server = ServerProcess(
        f"sqlite:///{tmp_path}/condpay.db",
        log_path=tmp_path / "server.log",
        extra_env={"CONDPAY_WORKERS": "1"},
    )
    server.start()
    try:
        await server.wait_ready()
        client = PaymentsClient(server.address, caller=AUDITOR)
        try:
            assert (await client.validate_contract(COLD_CHAIN)).ok  # starts the pool
        finally:
            await client.close()
        assert server.pid is not None
        workers = children(server.pid)
        assert workers, "no worker process started"
    finally:
        server.stop(kill=True)
    for _ in range(300):  # 30 s at most (a worker checks its parent every second)
        if not alive(workers):
            break
        await asyncio.sleep(0.1)
    assert not alive(workers), f"workers left behind: {sorted(alive(workers))}"
