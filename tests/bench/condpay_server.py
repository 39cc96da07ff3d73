"""A condpay server under test: ``condpay serve --insecure`` as a child process (through
sim_central_bank's ServerProcess), without the per-call log line, always stopped on the way out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sim_central_bank.server_process import ServerProcess
from tests.bench.cpu import pid_with_arguments

QUIET_CALLS_ENV = {"CONDPAY_QUIET_CALLS": "1"}  # = serve --quiet-calls
PER_CALL_LOGGING = False


@dataclass(slots=True)
class RunningCondpay:
    address: str
    pid: int
    log_path: Path
    exit_status: int | None = None  # set once stopped: 0 after a clean SIGTERM shutdown


@contextlib.asynccontextmanager
async def condpay_server(
    database_url: str, *, log_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[RunningCondpay]:
    """Start the server, wait until its health check answers SERVING, yield, stop (SIGTERM)."""
    process = ServerProcess(
        database_url, log_path=log_path, extra_env={**QUIET_CALLS_ENV, **(env or {})}
    )
    process.start()
    running: RunningCondpay | None = None
    try:
        await process.wait_ready()
        pid = pid_with_arguments("--addr", process.address)
        if pid is None:
            raise RuntimeError(f"no process serves {process.address}; see {log_path}")
        running = RunningCondpay(process.address, pid, log_path)
        yield running
    finally:
        status = process.stop()
        if running is not None:
            running.exit_status = status
