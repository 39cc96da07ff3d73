"""Start and stop a condpay server as a child process, the way a user would run it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``condpay serve --insecure`` on a free port; stopped with SIGTERM (graceful)."""

    def __init__(
        self,
        database_url: str,
        *,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.database_url = database_url
        self.log_path = log_path
        self._env = {**os.environ, **(extra_env or {})}
        self._extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """The server runs in its log's directory, so that what it keeps beside itself (an
        in-process bridge's state, ``var/bridge.db``, when the database is PostgreSQL) is its
        own and never another server's started from the same directory."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "settlement.cli",
                    "serve",
                    "--insecure",
                    "--addr",
                    self.address,
                    "--database-url",
                    _absolute(self.database_url),
                    *self._extra_args,
                ],
                stdout=log,
                stderr=log,
                env=self._env,
                cwd=self.log_path.parent,
            )

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (or until it is reaped)."""
        return None if self._process is None else self._process.pid

    async def wait_ready(self, timeout_seconds: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(f"the server exited; see {self.log_path}")
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the server did not become ready; see {self.log_path}")
                await asyncio.sleep(0.1)

    def stop(self, *, kill: bool = False, timeout_seconds: float = 30.0) -> int:
        """SIGTERM (graceful drain) or SIGKILL (a crash); returns the exit status."""
        process = self._process
        if process is None:
            return 0
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            return process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
        finally:
            self._process = None


def _absolute(database_url: str) -> str:
    """A SQLite URL with a relative path, made absolute (the server runs in another directory)."""
    prefix = "sqlite:///"
    path = database_url.removeprefix(prefix)
    if database_url.startswith(prefix) and not path.startswith("/"):
        return prefix + str(Path(path).resolve())
    return database_url
