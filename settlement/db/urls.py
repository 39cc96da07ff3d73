"""Database URLs: what a user may write, and what each driver needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

DEFAULT_SQLITE_PATH = Path("var") / "condpay.db"


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """``sqlalchemy`` is the async SQLAlchemy URL; ``dialect`` is ``sqlite`` or ``postgresql``;
    ``sqlite_path`` / ``asyncpg_dsn`` are what the raw write-path drivers take."""

    sqlalchemy: str
    dialect: str
    sqlite_path: str | None = None
    asyncpg_dsn: str | None = None

    def redacted(self) -> str:
        return make_url(self.sqlalchemy).render_as_string(hide_password=True)


def parse_database_url(text: str | None) -> DatabaseUrl:
    """Accepts ``sqlite:///path``, ``sqlite+aiosqlite:///path``, ``postgresql://...``,
    ``postgres://...`` and ``postgresql+asyncpg://...``; empty means SQLite under ./var/."""
    if not text:
        text = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    url = make_url(text.replace("postgres://", "postgresql://", 1))
    backend = url.get_backend_name()
    if backend == "sqlite":
        path = url.database or ""
        if not path or path == ":memory:":
            raise ValueError("SQLite needs a file path: the write path and readers share it")
        return DatabaseUrl(
            sqlalchemy=url.set(drivername="sqlite+aiosqlite").render_as_string(False),
            dialect="sqlite",
            sqlite_path=path,
        )
    if backend == "postgresql":
        return DatabaseUrl(
            sqlalchemy=url.set(drivername="postgresql+asyncpg").render_as_string(False),
            dialect="postgresql",
            asyncpg_dsn=url.set(drivername="postgresql").render_as_string(False),
        )
    raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
