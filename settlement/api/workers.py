"""``condpay serve --workers N``: N server processes on one address.

One Python process uses one core for Python code, so a bigger machine serves more with more
processes. They are ordinary replicas (the same as servers on different machines): they share
the database, and the kernel spreads incoming connections over them (SO_REUSEPORT). Besides, the
parent hands them one table in memory where each tells the others the bridge block certificates
it verified, so that a block is checked once per machine, not once per worker
(settlement/coordination/shared_verdicts.py). The parent migrates the schema once, starts the
workers, forwards SIGTERM/SIGINT to them, and stops them all if one dies.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from types import FrameType
from typing import Final

import structlog

from settlement.config import Settings
from settlement.coordination import shared_verdicts
from settlement.db.migrate import upgrade_to_head
from settlement.db.urls import parse_database_url
from settlement.metrics import MULTIPROCESS_ENV, multiprocess_directory, serve_metrics, worker_gone
from settlement.runtime import create_sql_engine

log = structlog.get_logger("condpay.workers")


async def _migrate(settings: Settings) -> None:
    engine = create_sql_engine(parse_database_url(settings.database_url))
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGKILL when the parent dies, so a killed
    server never leaves orphaned workers serving on its port (Linux prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG: Final = 1


def worker_environment(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of each worker: ``base`` (this process's) with the group's settings, each
    worker serving alone on the shared port. ``CONDPAY_BRIDGE=auto`` means an in-process bridge
    with one worker and none with more (docs/settlement.md): N in-process bridges over one
    var/bridge.db would be N bridges, so the workers get ``none`` (warned once, here)."""
    env = {
        **(os.environ if base is None else base),
        # Every setting (settlement/config.py), so a flag given to the parent reaches them too.
        **settings.to_environment(),
        "CONDPAY_WORKERS": "1",
        # The group's count, not one worker's (auto: the CPUs the group leaves spare).
        "CONDPAY_VERIFY_THREADS": str(settings.verify_thread_count()),
        "CONDPAY_REUSE_PORT": "1",
    }
    if settings.bridge == "auto" and settings.worker_count() > 1:
        log.warning(
            "bridge_disabled",
            workers=settings.worker_count(),
            why="an in-process bridge serves one process; set CONDPAY_BRIDGE=grpc://...",
        )
        env["CONDPAY_BRIDGE"] = "none"
    return env


def serve_workers(settings: Settings) -> int:
    if settings.addr.rsplit(":", 1)[-1] == "0":
        raise SystemExit("condpay serve --workers: give an explicit port (workers share it)")
    asyncio.run(_migrate(settings))
    env = worker_environment(settings)
    if not settings.metrics_addr:
        return _supervise(settings, env, None)
    # The workers write their series to files here; this process serves them, summed.
    with multiprocess_directory() as directory:
        env[MULTIPROCESS_ENV] = directory
        try:
            http, _ = serve_metrics(settings.metrics_addr, multiprocess_dir=directory)
        except OSError as taken:
            print(
                f"condpay serve: --metrics-addr {settings.metrics_addr}: {taken}", file=sys.stderr
            )
            return 2
        try:
            return _supervise(settings, env, directory)
        finally:
            http.shutdown()


def _start(count: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """``count`` workers, each handed the verified-certificate table (when there is one)."""
    table = shared_verdicts.table_for_workers()
    handed = () if table is None else (table,)
    if table is not None:
        env = {**env, shared_verdicts.ENV: str(table)}
    try:
        return [
            subprocess.Popen(
                [sys.executable, "-m", "settlement.cli", "serve"],
                env=env,
                preexec_fn=_die_with_parent,
                pass_fds=handed,
            )
            for _ in range(count)
        ]
    finally:
        if table is not None:
            os.close(table)  # the workers hold it now


def _supervise(settings: Settings, env: dict[str, str], metrics_dir: str | None) -> int:
    children = _start(settings.worker_count(), env)
    log.info("workers_started", workers=len(children), pids=[c.pid for c in children])

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    gone: set[int] = set()
    while any(child.poll() is None for child in children):
        for child in children:
            code = child.poll()
            if code is not None and metrics_dir is not None and child.pid not in gone:
                gone.add(child.pid)
                worker_gone(child.pid, metrics_dir)
            if code not in (None, 0) and status == 0:
                status = code if code > 0 else 1
                log.error("worker_died", pid=child.pid, status=code)
                forward(signal.SIGTERM, None)
        time.sleep(0.2)
    return status


__all__ = ["serve_workers", "worker_environment"]
