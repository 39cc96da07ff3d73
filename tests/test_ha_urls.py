"""A replicated PostgreSQL's URL names every node (issue 13): both spellings parse to the same
SQLAlchemy and asyncpg forms; what counts as 'the database is gone, retry' is told apart from a
bug; and health follows the primary's probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from sqlalchemy.exc import OperationalError

from settlement.db.availability import PrimaryWatch, storage_unreachable
from settlement.db.urls import parse_database_url

LIBPQ = "postgresql://app@127.0.0.1:5433,127.0.0.1:5434/condpay?target_session_attrs=read-write"
SQLALCHEMY = (
    "postgresql+asyncpg://app@/condpay?host=127.0.0.1:5433&host=127.0.0.1:5434"
    "&target_session_attrs=read-write"
)


@pytest.mark.parametrize("text", [LIBPQ, SQLALCHEMY, LIBPQ.replace("postgresql:", "postgres:")])
def test_a_multi_host_url_keeps_every_host_and_the_session_attribute(text: str) -> None:
    url = parse_database_url(text)
    assert url.dialect == "postgresql"
    assert url.multi_host
    assert url.hosts_count == 2
    assert url.asyncpg_dsn == LIBPQ
    assert url.sqlalchemy == (
        "postgresql+asyncpg://app@/condpay?host=127.0.0.1%3A5433&host=127.0.0.1%3A5434"
        "&target_session_attrs=read-write"
    )


def test_asyncpg_reads_the_multi_host_dsn() -> None:
    from asyncpg import connect_utils

    addrs, params = connect_utils._parse_connect_dsn_and_args(
        dsn=parse_database_url(LIBPQ).asyncpg_dsn,
        host=None,
        port=None,
        user=None,
        password=None,
        passfile=None,
        database=None,
        ssl=None,
        service=None,
        servicefile=None,
        direct_tls=None,
        server_settings=None,
        target_session_attrs=None,
        krbsrvname=None,
        gsslib=None,
    )
    assert addrs == [("127.0.0.1", 5433), ("127.0.0.1", 5434)]
    assert params.target_session_attrs.value == "read-write"


def test_one_host_is_not_multi_host() -> None:
    url = parse_database_url("postgresql://app@127.0.0.1:5433/condpay")
    assert not url.multi_host
    assert url.asyncpg_dsn == "postgresql://app@127.0.0.1:5433/condpay"


def test_every_host_needs_its_port() -> None:
    with pytest.raises(ValueError, match="port on each"):
        parse_database_url("postgresql://app@a,b:5432/condpay")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed"),
        TimeoutError(),
        asyncpg.exceptions.TargetServerAttributeNotMatched("not read-write"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction"),
        OperationalError("SELECT 1", {}, ConnectionResetError()),
    ],
    ids=repr,
)
def test_a_lost_or_read_only_database_is_unreachable(error: BaseException) -> None:
    assert storage_unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        FileNotFoundError("certs/server.pem"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.CheckViolationError("balance below zero"),
    ],
    ids=repr,
)
def test_a_bug_or_a_refused_statement_is_not(error: BaseException) -> None:
    assert not storage_unreachable(error)


def test_a_bug_raised_while_handling_a_lost_connection_is_still_a_bug() -> None:
    def handler() -> None:
        try:
            raise ConnectionResetError()
        except ConnectionResetError:
            raise KeyError("bug") from None

    with pytest.raises(KeyError) as caught:
        handler()
    assert isinstance(caught.value.__context__, ConnectionResetError)
    assert not storage_unreachable(caught.value)


class ScriptedWatch(PrimaryWatch):
    """A watch whose probes answer from a script (True: a primary answered read-write)."""

    def __init__(self, answers: list[bool], on_change: Callable[[bool], Awaitable[None]]) -> None:
        super().__init__("unused", on_change, period_seconds=0.001)
        self._answers = iter(answers)
        self.done = asyncio.Event()

    async def probe(self) -> bool:
        answer = next(self._answers, None)
        if answer is None:
            self.done.set()
            await asyncio.Event().wait()  # the script is over: wait to be stopped
        return bool(answer)


async def test_health_follows_the_primary_and_one_failed_probe_is_not_a_failover() -> None:
    changes: list[bool] = []

    async def record(writable: bool) -> None:
        changes.append(writable)

    watch = ScriptedWatch([True, False, True, False, False, False, True], record)
    watch.start()
    await asyncio.wait_for(watch.done.wait(), 5)
    await watch.stop()
    # SERVING; a lone failed probe changes nothing; two in a row: NOT_SERVING; back: SERVING.
    assert changes == [True, False, True]
    assert watch.changes == 2


async def test_a_first_probe_that_fails_says_not_serving_at_once() -> None:
    changes: list[bool] = []

    async def record(writable: bool) -> None:
        changes.append(writable)

    watch = ScriptedWatch([False, True], record)
    watch.start()
    await asyncio.wait_for(watch.done.wait(), 5)
    await watch.stop()
    assert changes == [False, True]
