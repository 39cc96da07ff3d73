"""Startup time of ``condpay serve --insecure`` (issue 11): from process start to the first gRPC
health check answering SERVING, on embedded SQLite.

Each fresh run uses a new database file (the schema is created by the server); the "existing"
run starts again on the database a fresh run left behind (the schema already at head). The
server is stopped with SIGTERM after each run.

    python -m tests.bench.startup [--runs N] [--command ...]   prints JSON

``make bench`` calls :func:`measure_startup`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.005


def _condpay_command() -> list[str]:
    """The installed ``condpay`` script beside this interpreter, else ``python -m launcher``."""
    script = Path(sys.executable).with_name("condpay")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "launcher"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far (Linux /proc), None elsewhere. Steadier
    than the wall-clock figure on a machine shared with other work."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_serving(process: subprocess.Popen[bytes], address: str, started: float) -> float:
    """Seconds from ``started`` until health says SERVING (polled every few milliseconds)."""
    # Without these the channel waits out gRPC's reconnect backoff (1 s, growing) after each
    # refused connection, and the figure would measure the backoff instead of the server.
    channel = grpc.insecure_channel(
        address,
        options=[
            ("grpc.initial_reconnect_backoff_ms", 5),
            ("grpc.min_reconnect_backoff_ms", 5),
            ("grpc.max_reconnect_backoff_ms", 20),
        ],
    )
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"condpay serve exited with status {process.returncode}")
            if time.perf_counter() - started > TIMEOUT_SECONDS:
                raise TimeoutError(f"no SERVING within {TIMEOUT_SECONDS} s")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.2)
            except grpc.RpcError:
                time.sleep(POLL_SECONDS)
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return time.perf_counter() - started
            time.sleep(POLL_SECONDS)
    finally:
        channel.close()


@dataclass(frozen=True, slots=True)
class Start:
    seconds: float  # process start to the first SERVING health answer (wall clock)
    cpu_seconds: float | None  # the server's CPU time by then (None off Linux)


def time_one_start(
    database: Path, *, command: Sequence[str] | None = None, log: Path | None = None
) -> Start:
    """Start ``condpay serve --insecure`` on ``database``, time it to SERVING, stop it."""
    address = f"127.0.0.1:{_free_port()}"
    argv = [
        *(command or _condpay_command()),
        "serve",
        "--insecure",
        "--quiet-calls",
        "--addr",
        address,
        "--database-url",
        f"sqlite:///{database}",
    ]
    env = {**os.environ, "CONDPAY_WORKERS": "1"}
    log_file = open(log or os.devnull, "ab")  # noqa: SIM115 (closed below)
    try:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            seconds = _wait_serving(process, address, started)
            return Start(seconds, _cpu_seconds(process.pid))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        log_file.close()


def measure_startup(runs: int = 5, *, command: Sequence[str] | None = None) -> dict[str, Any]:
    """``runs`` starts on fresh SQLite files, then ``runs`` on an existing (migrated) one.

    Returns seconds: ``fresh`` and ``existing`` each with ``runs``, ``median``, ``max`` and the
    server's CPU seconds until SERVING (``cpu_median``); the top-level ``runs``, ``median`` and
    ``max`` are the fresh runs' (the issue's figure: under 1 s)."""
    with tempfile.TemporaryDirectory(prefix="condpay-startup-") as tmp:
        root = Path(tmp)
        log = root / "serve.log"
        fresh = [
            time_one_start(root / f"fresh-{i}" / "condpay.db", command=command, log=log)
            for i in range(max(1, runs))
        ]
        existing_db = root / "fresh-0" / "condpay.db"
        existing = [
            time_one_start(existing_db, command=command, log=log) for _ in range(max(1, runs))
        ]
    fresh_summary = _summary(fresh)
    return {
        "command": "condpay serve --insecure --quiet-calls (SQLite; fresh and existing file)",
        "fresh": fresh_summary,
        "existing": _summary(existing),
        "runs": fresh_summary["runs"],
        "median": fresh_summary["median"],
        "max": fresh_summary["max"],
    }


def _summary(starts: list[Start]) -> dict[str, Any]:
    times = [s.seconds for s in starts]
    cpu = [s.cpu_seconds for s in starts if s.cpu_seconds is not None]
    return {
        "runs": [round(t, 4) for t in times],
        "median": round(statistics.median(times), 4),
        "max": round(max(times), 4),
        "cpu_median": round(statistics.median(cpu), 4) if cpu else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(measure_startup(args.runs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
