"""A PostgreSQL server for tests and benchmarks, chosen in this order:

1. ``CONDPAY_TEST_DATABASE_URL`` from the environment (an admin URL: tests create databases);
2. testcontainers, when a Docker engine answers;
3. a throwaway server from the local PostgreSQL binaries, in a temporary directory on
   127.0.0.1 and a free port. PostgreSQL refuses to run as root, so as root it runs as the
   ``postgres`` OS user (``runuser``). ``make test`` installs the Debian ``postgresql`` package
   when the binaries are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PostgresServer:
    admin_url: str  # postgresql://user@host:port/postgres
    source: str  # "environment" | "testcontainers" | "local binaries"

    def database_url(self, name: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{name}"


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, newest major version first."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name),
        reverse=True,
    )
    for folder in candidates:
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _docker_answers() -> bool:
    """Does a Docker engine answer ``GET /_ping``? (Asked directly: the docker library leaks its
    socket when the engine is absent, and warnings are errors here.)"""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: object = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            name, _, port = host.removeprefix("tcp://").partition(":")
            address = (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(1024).split(b"\r\n", 1)[0]
            return status_line.startswith(b"HTTP/1.") and b" 200 " in status_line + b" "
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _local_server(binaries: Path) -> Iterator[PostgresServer]:
    as_root = os.geteuid() == 0
    workdir = Path(tempfile.mkdtemp(prefix="condpay-pg-"))
    data = workdir / "data"
    port = _free_port()

    def run(*args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *args] if as_root else list(args)
        subprocess.run(command, check=True, capture_output=True, cwd="/")

    try:
        if as_root:
            shutil.chown(workdir, "postgres", "postgres")
        run(
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {workdir} -c max_connections=200 "
            "-c shared_buffers=256MB -c fsync=on -c synchronous_commit=on"
        )
        run(
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(workdir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        yield PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", "local binaries")
    finally:
        with contextlib.suppress(Exception):
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer | None]:
    """A server, or None when there is no way to get one here."""
    url = os.environ.get("CONDPAY_TEST_DATABASE_URL")
    if url:
        yield PostgresServer(url, "environment")
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield PostgresServer(container.get_connection_url(), "testcontainers")
        return
    binaries = find_binaries()
    if binaries is None:
        yield None
        return
    with _local_server(binaries) as server:
        yield server
