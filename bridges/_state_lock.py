"""One process at a time on a bridge's state file.

A bridge's state is a SQLite file that one :class:`~bridges._ledger.Ledger` owns: it seals blocks,
numbers heights and caches what it wrote. Two processes on one file (two ``condpay serve`` started
from one directory, each with the in-process bridge beside its database, or two ``condpay bridge
serve --state`` on one path) would each believe they own the chain. So opening a state file takes
an exclusive ``flock`` on ``<state>.lock`` and a second process is refused with
:class:`StateFileBusy`, naming the holder. The kernel drops the lock when its holder exits, kill -9
included, so a crash never leaves the file locked.

Within one process the lock is counted: a ledger reopened after a simulated crash, while the old
one is not closed yet, is the same owner.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Final

__all__ = ["StateFileBusy", "acquire", "release"]

_SUFFIX: Final = ".lock"


class StateFileBusy(Exception):
    """Another process holds the bridge state file."""


class _Held:
    __slots__ = ("count", "fd")

    def __init__(self, fd: int) -> None:
        self.fd, self.count = fd, 1


_guard = threading.Lock()
_held: dict[Path, _Held] = {}


def _key(state: str) -> Path:
    return Path(state).resolve()


def acquire(state: str) -> None:
    """Take the state file ``state`` for this process; :class:`StateFileBusy` if another
    process has it."""
    key = _key(state)
    with _guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
            return
        lock_path = key.with_name(key.name + _SUFFIX)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateFileBusy(
                f"the bridge state {state} is in use by another process (pid {holder}): one "
                "process at a time may own a bridge. For several servers, run the bridge once "
                "(`condpay bridge serve`) and point each at it with CONDPAY_BRIDGE=grpc://HOST:PORT,"
                " or give each server its own database directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = _Held(fd)


def release(state: str) -> None:
    """Give back one :func:`acquire` of ``state``; the last one unlocks it."""
    key = _key(state)
    with _guard:
        held = _held.get(key)
        if held is None:
            return
        held.count -= 1
        if held.count == 0:
            del _held[key]
            os.close(held.fd)  # closing the descriptor drops the flock
