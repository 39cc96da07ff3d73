"""CPU time from /proc, to say where the machine's cores went during a measured window.

A :class:`CpuWatch` names groups of processes: fixed pids (the condpay or echo server, the load
generator) and families, a parent with its direct children as found at each look (PostgreSQL's
postmaster and its backends, which come and go with connections). Every other process falls in
``others`` (on a shared machine: anything else running, e.g. another test suite), and
``machine`` is all busy time, so ``machine`` minus the groups is the kernel's own work (softirq:
the loopback network); ``iowait`` is idle time with I/O pending (fsync). A process that exits inside
the window loses its time; one that starts inside it counts whole. Figures are in cores: CPU
seconds per wall-clock second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
OTHERS = "others"
MACHINE = "machine"
IOWAIT = "iowait"


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    parent: int
    seconds: float  # user + system


def read_process(pid: int) -> ProcessCpu | None:
    """Parent pid and CPU seconds of one process, or None when it is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state, ppid, ... utime, stime
    ticks = int(fields[11]) + int(fields[12])
    return ProcessCpu(int(fields[1]), ticks / _TICKS_PER_SECOND)


def all_processes() -> dict[int, ProcessCpu]:
    found = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            process = read_process(int(entry.name))
            if process is not None:
                found[int(entry.name)] = process
    return found


def machine_seconds() -> tuple[float, float]:
    """Since boot, CPU seconds all cores spent busy (not idle, not waiting for I/O) and idle
    waiting for I/O."""
    first = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    ticks = [int(value) for value in first[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / _TICKS_PER_SECOND, ticks[4] / _TICKS_PER_SECOND


def machine_busy_seconds() -> float:
    return machine_seconds()[0]


def pid_with_arguments(*fragments: str) -> int | None:
    """The first process whose command line has every one of ``fragments`` among its arguments."""
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(fragment.encode() in arguments for fragment in fragments):
            return int(entry.name)
    return None


@dataclass(frozen=True, slots=True)
class CpuWatch:
    """Groups of processes to account for: fixed pids, and families (a root and its children)."""

    pids: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    families: Mapping[str, int | tuple[int, ...]] = field(default_factory=dict)  # root(s)

    def with_pid(self, group: str, pid: int) -> CpuWatch:
        return CpuWatch({**self.pids, group: (pid,)}, self.families)

    def group_of(self, pid: int, process: ProcessCpu) -> str:
        for group, pids in self.pids.items():
            if pid in pids:
                return group
        for group, root in self.families.items():
            roots = root if isinstance(root, tuple) else (root,)
            if pid in roots or process.parent in roots:
                return group
        return OTHERS


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    wall_seconds: float
    machine_busy_seconds: float
    machine_iowait_seconds: float
    per_process: dict[int, tuple[str, float]]  # pid -> (group, CPU seconds)


def take_snapshot(watch: CpuWatch) -> CpuSnapshot:
    per_process = {
        pid: (watch.group_of(pid, process), process.seconds)
        for pid, process in all_processes().items()
    }
    busy, iowait = machine_seconds()
    return CpuSnapshot(time.monotonic(), busy, iowait, per_process)


def cores_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Cores used per group between two snapshots, ``others``, ``machine`` (all busy time) and
    ``iowait`` (cores idle while I/O was pending: a storage stall shows here, not as CPU)."""
    wall = max(after.wall_seconds - before.wall_seconds, 1e-9)
    seconds: dict[str, float] = {}
    for pid, (group, cpu) in after.per_process.items():
        earlier = before.per_process.get(pid)
        spent = cpu - (earlier[1] if earlier is not None else 0.0)
        seconds[group] = seconds.get(group, 0.0) + spent
    seconds[MACHINE] = after.machine_busy_seconds - before.machine_busy_seconds
    seconds[IOWAIT] = after.machine_iowait_seconds - before.machine_iowait_seconds
    return {group: round(spent / wall, 3) for group, spent in sorted(seconds.items())}
