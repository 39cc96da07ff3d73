"""Create or upgrade the schema to the newest migration; safe when replicas start together.

A database already at the newest migration (every start but the first) is recognised with one
query, without loading alembic or the migration scripts (tests/test_startup_imports.py checks that
:data:`HEAD_REVISION` is alembic's head)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The newest revision in migrations/versions: update it with each new migration.
HEAD_REVISION: Final = "0009"
# Any fixed 64-bit number: replicas starting at once take turns on this PostgreSQL advisory lock.
_MIGRATION_LOCK_KEY = 0x636F6E6470617901


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def at_head(connection: Connection) -> bool:
    """True when alembic's version table says the schema is at :data:`HEAD_REVISION`. Migrations
    only move forward, so once true it stays true: no lock needed to read it."""
    if not inspect(connection).has_table("alembic_version"):
        return False
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return list(versions) == [HEAD_REVISION]


def _upgrade(connection: Connection) -> None:
    if at_head(connection):
        return
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade_to_head(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
