"""Read sessions for the readers (``LedgerReader``, ``SettlementReader``): each session one
transaction over one snapshot.

- PostgreSQL: SQLAlchemy's ``AsyncSession`` and ``AsyncConnection`` over asyncpg (REPEATABLE
  READ, see ``settlement.runtime.snapshot_reads``).
- SQLite: the same statements through a synchronous engine, run on the event loop itself.
  Through aiosqlite every statement was a hand-off to a connection thread and back (measured on
  a 3,000-payment ledger: 2.0 ms for a one-statement session against 0.4 ms on the loop, 6.4 ms
  for a payment's four statements), and under load each hand-off queued behind everything else
  on the loop (GetPayment's read took 105-165 ms in ``condpay sim run gba-day``). The ORM's work
  ran on the loop anyway; what moves onto it is SQLite's own for the readers' point reads (a
  payment, a settlement, a wallet: tens of microseconds each from its page cache). Pages (the
  List calls, the sweeps) and whole-table reads (GetSupply's sums over the balances) keep the
  async engine, as do the audit, outcome retention and migrations.

A SQLite session starts with an explicit BEGIN (:func:`begin_each_sqlite_transaction`), so its
statements share one snapshot; the readers read every result before their session closes.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, TypeVar, TypeVarTuple, overload

from sqlalchemy import Engine, Result, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.result import ScalarResult, TupleResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql.base import Executable
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select, SelectOfScalar

from settlement import limits
from settlement.db.urls import DatabaseUrl
from settlement.ledger.store_sqlite import PRAGMAS

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: The most rows of its main table a read may return to run on the event loop on SQLite.
LOOP_ROWS_MAX: Final = 10
#: ``rows`` of a read over a whole table (an aggregate): never on the loop.
EVERY_ROW: Final = sys.maxsize


class LoopSession:
    """A sqlmodel ``Session`` with ``AsyncSession``'s read methods; each runs at once."""

    __slots__ = ("_session",)

    def __init__(self, engine: Engine) -> None:
        self._session = Session(engine, expire_on_commit=False)

    async def __aenter__(self) -> LoopSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._session.close()

    @overload
    async def exec(self, statement: Select[*Ts]) -> TupleResult[tuple[*Ts]]: ...

    @overload
    async def exec(self, statement: SelectOfScalar[T]) -> ScalarResult[T]: ...

    async def exec(
        self, statement: Select[*Ts] | SelectOfScalar[T]
    ) -> TupleResult[tuple[*Ts]] | ScalarResult[T]:
        return self._session.exec(statement)

    async def get(self, entity: type[T], ident: Any) -> T | None:
        return self._session.get(entity, ident)


class LoopConnection:
    """A synchronous connection with ``AsyncConnection.execute``; it runs at once."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Result[*tuple[Any, ...]]:
        return self._connection.execute(statement, parameters)


@contextlib.asynccontextmanager
async def _loop_connect(engine: Engine) -> AsyncIterator[LoopConnection]:
    with engine.connect() as connection:
        yield LoopConnection(connection)


class ReadSessions:
    """Where the readers' sessions and connections come from: ``AsyncSession`` and
    ``AsyncEngine.connect()`` on PostgreSQL, :class:`LoopSession` and :class:`LoopConnection` on
    SQLite (built by :func:`read_sessions`)."""

    def __init__(self, engine: AsyncEngine, loop_engine: Engine | None = None) -> None:
        self._engine = engine
        self._loop_engine = loop_engine

    def session(self, rows: int = 1) -> AsyncSession | LoopSession:
        """A session for a read of at most ``rows`` rows of its main table (a page size; 1
        for a point read). On SQLite a read of more than :data:`LOOP_ROWS_MAX` rows goes through
        the async engine too: its statements then run on aiosqlite's thread, and the loop serves
        other calls between them instead of holding still for the whole page (in gba-day a page
        of the journal held the loop for 52 ms on average on the loop engine, 19 ms this way)."""
        if self._loop_engine is not None and rows <= LOOP_ROWS_MAX:
            return LoopSession(self._loop_engine)
        return AsyncSession(self._engine, expire_on_commit=False)

    def connect(
        self, rows: int = 1
    ) -> AbstractAsyncContextManager[AsyncConnection] | AbstractAsyncContextManager[LoopConnection]:
        """A connection with an awaitable ``execute``, as an async context manager; ``rows`` as
        for :meth:`session` (:data:`EVERY_ROW` for a read over a whole table)."""
        if self._loop_engine is not None and rows <= LOOP_ROWS_MAX:
            return _loop_connect(self._loop_engine)
        return self._engine.connect()

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        """Every engine the readers' statements run on (for event listeners): on SQLite the
        loop's (point reads) and the async engine's (pages)."""
        loop = () if self._loop_engine is None else (self._loop_engine,)
        return (*loop, self._engine.sync_engine)

    def close(self) -> None:
        if self._loop_engine is not None:
            self._loop_engine.dispose()


def sqlite_loop_engine(url: DatabaseUrl) -> Engine:
    """A synchronous engine on ``url``'s SQLite file, for sessions on the event loop: the
    write path's pragmas, an explicit BEGIN per transaction (one snapshot per session), and a
    pool that never makes the loop wait for a connection (an overflow connection is opened
    instead; a session holds one only while it runs, and it does not wait on the loop)."""
    engine = create_engine(
        make_url(url.sqlalchemy).set(drivername="sqlite"),
        poolclass=QueuePool,
        pool_size=limits.READ_POOL_SIZE,
        max_overflow=-1,
    )
    begin_each_sqlite_transaction(engine)
    return engine


def begin_each_sqlite_transaction(engine: Engine) -> None:
    """The write path's pragmas on each new connection of ``engine``, and an explicit BEGIN at
    the start of each transaction (the driver would otherwise run each SELECT in an implicit
    transaction of its own), so that a session sees one snapshot."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in PRAGMAS:
            cursor.execute(pragma)
        cursor.close()
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, opens transactions

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


def read_sessions(engine: AsyncEngine, url: DatabaseUrl) -> ReadSessions:
    """The readers' sessions: over ``engine`` (already in its readers' isolation) on
    PostgreSQL, on the event loop on SQLite."""
    return ReadSessions(engine, sqlite_loop_engine(url) if url.dialect == "sqlite" else None)
