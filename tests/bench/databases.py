"""Fresh PostgreSQL databases on a throwaway (or given) server, dropped afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from tests.support.postgres import PostgresServer


async def _admin(admin_url: str, statement: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def server_version(admin_url: str) -> str:
    connection = await asyncpg.connect(admin_url)
    try:
        version: str = await connection.fetchval("SHOW server_version")
        return version
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def fresh_database(server: PostgresServer, name: str) -> AsyncIterator[str]:
    """Create database ``name``; yield its URL; drop it (closing any connection left)."""
    await _admin(server.admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield server.database_url(name)
    finally:
        await _admin(server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
