"""A replicated PostgreSQL with automatic failover on one machine: pg_auto_failover.

One monitor and N data nodes (a primary and N-1 standbys), each a ``pg_autoctl run`` process that
supervises its own PostgreSQL, all on 127.0.0.1 and free ports, in one temporary directory. The
primary commits synchronously: a commit is acknowledged only once a standby has flushed it
(``synchronous_standby_names`` is kept by the monitor, ``replication-quorum`` on every node).

Why pg_auto_failover rather than Patroni: it is one Debian package
(``postgresql-<major>-auto-failover``, built for the installed PostgreSQL), the monitor that
decides failovers is itself a PostgreSQL (no etcd to run and keep), synchronous replication is
its default, and ``pg_autoctl`` starts, stops and rejoins nodes (pg_rewind) on its own.

PostgreSQL refuses to run as root, so as root every command runs as the ``postgres`` OS user.
``make postgres-binaries`` (and so ``make test``) installs the package when ``pg_autoctl`` is
missing. The timeouts of the monitor are shortened for a test (a failover in seconds, not the
default 20-30 s): see :data:`MONITOR_SETTINGS`.

A node is killed like a machine dies: SIGKILL of its ``pg_autoctl`` process group, the keeper
and its postmaster together (a postmaster killed alone is restarted by its keeper within a
second, which is a crash restart, not a failover: :meth:`HaCluster.kill_postmaster`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.postgres import find_binaries

# The monitor's failure detection, shortened from 5 s checks, a 20 s unhealthy timeout and a 30 s
# demote timeout: a test waits seconds for a failover. (Names: pg_auto_failover's monitor GUCs.)
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "3000",
    "pgautofailover.primary_demote_timeout": "5000",
    "pgautofailover.startup_grace_period": "3000",
}
# The keepers' own timeouts (pg_autoctl config set <key> <value>).
KEEPER_SETTINGS = {
    "timeout.network_partition_timeout": "5",
    "timeout.prepare_promotion_catchup": "10",
    "timeout.prepare_promotion_walreceiver": "2",
}
DATABASE = "condpay"
# (reported, goal) states in which a node takes writes: alone, with its standbys in sync, or
# waiting for one (pg_auto_failover's state machine).
_WRITABLE = frozenset(
    {("single", "single"), ("primary", "primary"), ("wait_primary", "wait_primary")}
)
USER = "postgres"


def find_pg_autoctl() -> Path | None:
    found = shutil.which("pg_autoctl")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class HaNode:
    name: str
    port: int
    pgdata: Path
    process: subprocess.Popen[bytes] | None = None
    groups: list[int] = field(default_factory=list)  # every process group started for it

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class HaCluster:
    workdir: Path
    binaries: Path
    pg_autoctl: Path
    monitor: HaNode
    nodes: list[HaNode] = field(default_factory=list)

    # -- addresses -------------------------------------------------------------------------
    def database_url(self, dbname: str = DATABASE) -> str:
        """Every data node, the writer's pick decided per connection: libpq's multi-host form
        with ``target_session_attrs=read-write`` (asyncpg and condpay read it too)."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"postgresql://{USER}@{hosts}/{dbname}?target_session_attrs=read-write"

    def node_url(self, node: HaNode, dbname: str = DATABASE) -> str:
        return f"postgresql://{USER}@127.0.0.1:{node.port}/{dbname}"

    @property
    def monitor_url(self) -> str:
        return f"postgresql://autoctl_node@127.0.0.1:{self.monitor.port}/pg_auto_failover?sslmode=disable"

    # -- processes -------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            XDG_CONFIG_HOME=str(self.workdir / "config"),
            XDG_DATA_HOME=str(self.workdir / "share"),
            XDG_RUNTIME_DIR=str(self.workdir / "run"),
            # Sockets in the work directory, for the servers and for pg_autoctl's own clients.
            PG_REGRESS_SOCK_DIR=str(self.workdir),
            PGHOST=str(self.workdir),
            PG_CONFIG=str(self.binaries / "pg_config"),
            PATH=f"{self.binaries}:{env.get('PATH', '')}",
            HOME=str(self.workdir),
        )
        return env

    def _command(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def autoctl(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            self._command(str(self.pg_autoctl), *args),
            env=self._env(),
            cwd=self.workdir,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"pg_autoctl {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stderr.decode(errors='replace')[-4000:]}"
            )
        return done.stdout.decode()

    def psql(self, port: int, dbname: str, sql: str, user: str = USER) -> str:
        done = subprocess.run(
            [
                str(self.binaries / "psql"),
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                user,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            timeout=30,
            check=True,
        )
        return done.stdout.decode().strip()

    def show_state_command(self) -> str:
        """The shell command that prints the cluster's states (``pg_autoctl show state``)."""
        env = self._env()
        names = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR", "PGHOST")
        settings = " ".join(f"{name}={env[name]}" for name in names)
        command = f"{self.pg_autoctl} show state --pgdata {self.monitor.pgdata}"
        prefix = "runuser -u postgres -- " if os.geteuid() == 0 else ""
        return f"{prefix}env {settings} {command}"

    def run_node(self, node: HaNode) -> None:
        """``pg_autoctl run`` in a process group of its own (killed as one)."""
        log = (self.workdir / f"{node.name}.log").open("ab")
        node.process = subprocess.Popen(
            self._command(str(self.pg_autoctl), "run", "--pgdata", str(node.pgdata)),
            env=self._env(),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        node.groups.append(node.process.pid)
        log.close()

    def kill(self, node: HaNode) -> None:
        """The node dies like a machine: its keeper and its PostgreSQL, SIGKILL, at once."""
        if node.process is not None:
            # The whole process group: runuser, the keeper, its services and the postmaster.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(timeout=10)
        # A postmaster that outlived its group (it should not) goes too.
        pid = self.postmaster_pid(node)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_postmaster(self, node: HaNode) -> int | None:
        """SIGKILL of the node's postmaster alone (its keeper restarts it)."""
        pid = self.postmaster_pid(node)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pid

    def postmaster_pid(self, node: HaNode) -> int | None:
        pidfile = node.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    # -- state -----------------------------------------------------------------------------
    def states(self) -> dict[str, tuple[str, str]]:
        """Each data node's (reported state, goal state), as the monitor sees them."""
        out = self.psql(
            self.monitor.port,
            "pg_auto_failover",
            "SELECT nodename, reportedstate, goalstate FROM pgautofailover.node ORDER BY nodeid",
        )
        states: dict[str, tuple[str, str]] = {}
        for line in out.splitlines():
            name, reported, goal = line.split("|")
            states[name] = (reported, goal)
        return states

    def primary(self) -> HaNode | None:
        states = self.states()
        for node in self.nodes:
            if states.get(node.name) in _WRITABLE:
                return node
        return None

    def wait_until(self, predicate_name: str, timeout_seconds: float, check: object) -> None:
        deadline = time.monotonic() + timeout_seconds
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = self.states()
                if callable(check) and check(last):
                    return
            except (subprocess.SubprocessError, OSError, ValueError) as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(
            f"{predicate_name}: not within {timeout_seconds} s (last: {last}); the monitor's "
            f"last events:\n{self.events()}"
        )

    def events(self, count: int = 20) -> str:
        """The monitor's newest events (state changes and why), for a failure message."""
        try:
            return self.psql(
                self.monitor.port,
                "pg_auto_failover",
                "SELECT eventtime::time(0), nodename, reportedstate, goalstate, description "
                f"FROM pgautofailover.event ORDER BY eventid DESC LIMIT {int(count)}",
            )
        except (subprocess.SubprocessError, OSError) as exc:
            return f"(unreadable: {exc!r})"

    def wait_healthy(self, timeout_seconds: float = 120) -> HaNode:
        """Until one node is primary and every other running node a secondary."""
        running = {n.name for n in self.nodes if n.alive}

        def healthy(states: dict[str, tuple[str, str]]) -> bool:
            settled = [states.get(name) for name in running]
            writable = [s for s in settled if s in _WRITABLE]
            want = ("single", "single") if len(running) == 1 else ("primary", "primary")
            return writable == [want] and all(
                s in (want, ("secondary", "secondary")) for s in settled
            )

        self.wait_until("cluster healthy", timeout_seconds, healthy)
        primary = self.primary()
        assert primary is not None
        return primary

    def wait_promoted(self, old: HaNode, timeout_seconds: float = 90) -> HaNode:
        """Until another node than ``old`` is primary."""
        self.wait_until(
            f"a primary other than {old.name}",
            timeout_seconds,
            lambda states: any(states.get(n.name) in _WRITABLE for n in self.nodes if n is not old),
        )
        primary = self.primary()
        assert primary is not None
        return primary

    def writable_node(self) -> HaNode | None:
        """The node PostgreSQL itself says takes writes (not in recovery), whatever the monitor's
        state machine says of it at the moment (e.g. applying new settings)."""
        for node in self.nodes:
            if not node.alive:
                continue
            try:
                if self.psql(node.port, DATABASE, "SELECT pg_is_in_recovery()") == "f":
                    return node
            except (subprocess.SubprocessError, OSError):
                continue
        return None

    def synchronous_standby_names(self) -> str:
        primary = self.writable_node()
        if primary is None:
            raise RuntimeError("no node takes writes now")
        return self.psql(primary.port, DATABASE, "SHOW synchronous_standby_names")

    def close(self) -> None:
        """Every process this cluster ever started, its whole group, dead leader or not."""
        for node in [*self.nodes, self.monitor]:
            for pgid in node.groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            if node.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(timeout=10)
            pid = self.postmaster_pid(node)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _create_monitor(cluster: HaCluster) -> None:
    monitor = cluster.monitor
    cluster.autoctl(
        "create",
        "monitor",
        "--pgdata",
        str(monitor.pgdata),
        "--pgport",
        str(monitor.port),
        "--hostname",
        "127.0.0.1",
        "--auth",
        "trust",
        "--no-ssl",
        "--pgctl",
        str(cluster.binaries / "pg_ctl"),
    )
    # Loopback only (pg_autoctl's default is every address).
    cluster.autoctl(
        "config", "set", "--pgdata", str(monitor.pgdata), "postgresql.listen_addresses", "127.0.0.1"
    )
    settings = "\n".join(f"{name} = {value}" for name, value in MONITOR_SETTINGS.items())
    with (monitor.pgdata / "postgresql.conf").open("a") as conf:
        conf.write(f"\n# condpay tests: fail over in seconds\n{settings}\n")
    cluster.run_node(monitor)


def _create_node(cluster: HaCluster, node: HaNode) -> None:
    cluster.autoctl(
        "create",
        "postgres",
        "--pgdata",
        str(node.pgdata),
        "--pgport",
        str(node.port),
        "--listen",
        "127.0.0.1",
        "--hostname",
        "127.0.0.1",
        "--name",
        node.name,
        "--username",
        USER,
        "--dbname",
        DATABASE,
        "--auth",
        "trust",
        "--no-ssl",
        "--pgctl",
        str(cluster.binaries / "pg_ctl"),
        "--monitor",
        cluster.monitor_url,
        "--replication-quorum",
        "true",
        timeout=300,
    )
    for key, value in KEEPER_SETTINGS.items():
        cluster.autoctl("config", "set", "--pgdata", str(node.pgdata), key, value)
    cluster.run_node(node)


@contextlib.contextmanager
def ha_cluster(data_nodes: int = 2, workdir: Path | None = None) -> Iterator[HaCluster]:
    """A monitor and ``data_nodes`` PostgreSQL nodes, healthy, stopped and removed on exit
    (whatever happened inside). ``workdir`` keeps the files somewhere known (and left there)."""
    binaries = find_binaries()
    pg_autoctl = find_pg_autoctl()
    if binaries is None or pg_autoctl is None:
        raise RuntimeError(
            "pg_auto_failover is not installed: `make postgres-binaries` installs the Debian "
            "package postgresql-<major>-auto-failover"
        )
    keep = workdir is not None
    root = workdir or Path(tempfile.mkdtemp(prefix="condpay-ha-"))
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = HaCluster(
        workdir=root,
        binaries=binaries,
        pg_autoctl=pg_autoctl,
        monitor=HaNode("monitor", _free_port(), root / "monitor"),
    )
    try:
        _create_monitor(cluster)
        for number in range(1, data_nodes + 1):
            node = HaNode(f"node{number}", _free_port(), root / f"node{number}")
            cluster.nodes.append(node)
            _create_node(cluster, node)
            # The first node must be primary before the next one clones it.
            cluster.wait_healthy()
        yield cluster
    finally:
        cluster.close()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
