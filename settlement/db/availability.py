"""Is there a primary to write to? What a lost or read-only database looks like, and a watch that
tells the server's health when the writer comes and goes (a failover of a replicated PostgreSQL,
docs/operations.md, high availability).

The watch holds one connection of its own to the database URL (with several hosts and
``target_session_attrs=read-write``, to whichever is the primary) and asks it every
:data:`settlement.limits.PRIMARY_PROBE_SECONDS` whether it still takes writes. Two failed
probes in a row turn the server NOT_SERVING (a client-side load balancer then sends calls to
other replicas, or the client retries); the first good one after turns it SERVING again. Nothing
else depends on it: the writers reconnect on their own, call by call
(settlement/ledger/store_postgres.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from settlement import limits

log = structlog.get_logger("condpay.db.availability")

# SQLSTATEs of a server going away or not taking writes: admin/crash shutdown, cannot connect
# now, and a read-only transaction (a node that was demoted to a standby under our connection).
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "25006"})


_FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def storage_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps: SQLAlchemy wraps the driver's errors) says the
    database could not be reached or is not the primary now, as opposed to a bug or a refused
    statement: the call may be retried under its request id."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _unreachable_here(current):
            return True
        # What it wraps, not what it was raised while handling: a bug raised in an except block
        # of a lost connection is still a bug.
        current = getattr(current, "orig", None) or current.__cause__
    return False


def _unreachable_here(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    # asyncio's "Multiple exceptions: [Errno 111] Connect call failed ..." (every host of a
    # cluster refused) is a bare OSError; a file that is missing or unreadable is a bug.
    if isinstance(exc, OSError) and not isinstance(exc, _FILE_ERRORS):
        return True
    if getattr(exc, "connection_invalidated", False):  # SQLAlchemy saw the connection die
        return True
    module = type(exc).__module__
    if not module.startswith("asyncpg"):
        return False
    import asyncpg  # only PostgreSQL deployments get here, with asyncpg loaded

    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.TargetServerAttributeNotMatched,
    ):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and (
        sqlstate in UNAVAILABLE_SQLSTATES or sqlstate.startswith("08")
    )


class PrimaryWatch:
    """Probe the primary every ``period_seconds``; ``on_change(True/False)`` on each change
    (and once at the first probe)."""

    def __init__(
        self,
        dsn: str,
        on_change: Callable[[bool], Awaitable[None]],
        *,
        period_seconds: float = limits.PRIMARY_PROBE_SECONDS,
        timeout_seconds: float = limits.PRIMARY_PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self._dsn = dsn
        self._on_change = on_change
        self._period_seconds = period_seconds
        self._timeout_seconds = timeout_seconds
        self._task: asyncio.Task[None] | None = None
        self._conn: object | None = None
        self.writable: bool | None = None  # None until the first probe
        self.changes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="primary_watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop()

    async def probe(self) -> bool:
        """One probe: does the database answer, read-write, within the timeout?"""
        import asyncpg

        try:
            async with asyncio.timeout(self._timeout_seconds):
                if self._conn is None:
                    self._conn = await asyncpg.connect(self._dsn)
                conn = self._conn
                assert isinstance(conn, asyncpg.Connection)
                in_recovery = await conn.fetchval("SELECT pg_is_in_recovery()")
                return in_recovery is False
        except Exception as exc:  # any failure is "no primary now"; the next probe retries
            log.debug("primary_probe_failed", error=repr(exc))
            await self._drop()
            return False

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        import asyncpg

        assert isinstance(conn, asyncpg.Connection)
        conn.terminate()

    async def _run(self) -> None:
        failures = 0
        while True:
            probed = await self.probe()
            failures = 0 if probed else failures + 1
            # One slow probe on a busy server is not a lost primary: it takes
            # PRIMARY_PROBE_FAILURES_MAX in a row (the first probe decides alone).
            writable = probed or (
                self.writable is True and failures < limits.PRIMARY_PROBE_FAILURES_MAX
            )
            if writable != self.writable:
                if self.writable is not None:
                    self.changes += 1
                    log.warning("primary_lost" if not writable else "primary_found")
                self.writable = writable
                try:
                    await self._on_change(writable)
                except Exception as exc:  # the watch must outlive its listener's bad moment
                    log.warning("primary_watch_listener_failed", error=repr(exc))
            await asyncio.sleep(self._period_seconds)
