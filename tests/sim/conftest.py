"""Fixtures of the simulator's tests."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.browser import find_chromium
from tests.support.postgres import PostgresServer

_another = itertools.count()


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The headless browser that looks at the HTML report: skipped when missing, except under
    CI=true, where a missing browser is a failure (`make test` installs it)."""
    found = find_chromium()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no chromium binary (make browser installs it)")
        pytest.skip("no chromium here (make browser installs the Debian package)")
    return found


@pytest.fixture
async def another_pg_url(pg_server: PostgresServer) -> AsyncIterator[str]:
    """A second fresh, empty database beside ``pg_url``'s, for a second run on a fresh ledger."""
    name = f"condpay_test_{os.getpid()}_another_{next(_another)}"
    await _admin(pg_server.admin_url, f'CREATE DATABASE "{name}"')
    yield pg_server.database_url(name)
    await _admin(pg_server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
