"""``make ha-up`` = ``python -m tests.drills.ha_up``: a replicated local deployment, in the
foreground until Ctrl-C (or SIGTERM), then stopped and removed.

A pg_auto_failover cluster (a monitor and ``--data-nodes`` PostgreSQL nodes, synchronous,
automatic failover: tests/support/ha_cluster.py), the bridge as its own service and
``--replicas`` ``condpay serve`` replicas over it, all on 127.0.0.1. It prints the client target
(gRPC ``ipv4:`` list for a round-robin channel), the database URL the replicas use, and how to
kill the primary to watch a failover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from sim_central_bank.bridge_process import BridgeProcess
from sim_central_bank.server_process import ServerProcess
from tests.support.ha_cluster import ha_cluster

ROOT = Path(__file__).resolve().parents[2]


async def up(data_nodes: int, replicas_count: int, workdir: Path) -> None:
    logs = workdir / "logs"
    print(f"starting a monitor and {data_nodes} PostgreSQL nodes (pg_auto_failover)...", flush=True)
    with ha_cluster(data_nodes=data_nodes) as cluster:
        bridge = BridgeProcess(workdir / "bridge.db", logs)
        await bridge.start()
        env = {**bridge.core_env(), "CONDPAY_WORKERS": "1"}
        replicas = [
            ServerProcess(cluster.database_url(), log_path=logs / f"replica-{i}.log", extra_env=env)
            for i in range(replicas_count)
        ]
        try:
            replicas[0].start()
            await replicas[0].wait_ready()
            for replica in replicas[1:]:
                replica.start()
            for replica in replicas[1:]:
                await replica.wait_ready()
            target = "ipv4:" + ",".join(r.address for r in replicas)
            primary = cluster.primary()
            print(
                f"\nreplicated condpay is up (Ctrl-C stops and removes it):\n"
                f"  client target   {target}\n"
                f"                  (round robin: docs/operations.md, high availability)\n"
                f"  replicas        {', '.join(r.address for r in replicas)}\n"
                f"  bridge          {bridge.address}\n"
                f"  database URL    {cluster.database_url()}\n"
                f"  monitor         {cluster.monitor_url}\n"
                f"  primary         {primary.name if primary else '?'}"
                f" (postmaster pid {cluster.postmaster_pid(primary) if primary else '?'})\n"
                f"  states          {cluster.show_state_command()}\n"
                f"  logs            {logs} and {cluster.workdir}/*.log\n",
                flush=True,
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            print("stopping...", flush=True)
        finally:
            for replica in replicas:
                with contextlib.suppress(Exception):
                    replica.stop()
            await bridge.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.drills.ha_up", description=__doc__)
    parser.add_argument("--data-nodes", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "ha" / "up")
    args = parser.parse_args(argv)
    (args.workdir / "logs").mkdir(parents=True, exist_ok=True)
    for stale in args.workdir.glob("bridge.db*"):  # a fresh bridge ledger for a fresh database
        stale.unlink()
    asyncio.run(up(args.data_nodes, args.replicas, args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
