"""Shared test fixtures: the database each test runs on, and a real gRPC server over it.

PostgreSQL comes from tests/support/postgres.py (an URL from the environment, else
testcontainers, else a throwaway server from the local binaries). Under ``CI=true`` a missing
PostgreSQL fails the run; elsewhere the PostgreSQL tests are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import uvloop

from tests.support.harness import Harness, start_harness
from tests.support.postgres import PostgresServer, postgres_server

T = TypeVar("T")
_database_numbers = itertools.count()


def run_isolated(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop of its own, away from the test's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session", autouse=True)
def sane_recursion_limit() -> None:
    """py-ecc (imported by the BLS tests) raises the recursion limit to 100,000 process-wide, which
    turns a RecursionError into a segfault; the server resets it at start, and so do the tests."""
    sys.setrecursionlimit(1000)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Async tests run on the event loop `condpay serve` runs on: uvloop."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        if server is None:
            if os.environ.get("CI") == "true":
                pytest.fail("CI=true but no PostgreSQL: no URL, no Docker engine, no binaries")
            pytest.skip("no PostgreSQL here (set CONDPAY_TEST_DATABASE_URL or install it)")
        print(f"\nPostgreSQL for tests: {server.source} at {server.admin_url}")
        yield server


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the test PostgreSQL server."""
    name = f"condpay_test_{os.getpid()}_{next(_database_numbers)}"
    run_isolated(_admin(pg_server.admin_url, f'CREATE DATABASE "{name}"'))
    yield pg_server.database_url(name)
    run_isolated(_admin(pg_server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/condpay.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    """A real gRPC server on an ephemeral port over ``database_url``. After the test the ledger
    audit must pass: supply conserved, journal chain intact, replay reproduces every balance."""
    async with start_harness(database_url) as h:
        yield h
