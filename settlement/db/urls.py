"""Database URLs: what a user may write, and what each driver needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import URL, make_url

DEFAULT_SQLITE_PATH = Path("var") / "condpay.db"


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """``sqlalchemy`` is the async SQLAlchemy URL; ``dialect`` is ``sqlite`` or ``postgresql``;
    ``sqlite_path`` / ``asyncpg_dsn`` are what the raw write-path drivers take."""

    sqlalchemy: str
    dialect: str
    sqlite_path: str | None = None
    asyncpg_dsn: str | None = None
    # PostgreSQL servers named (a replicated cluster names them all: the writer is whichever
    # answers read-write, see docs/operations.md, high availability).
    hosts_count: int = 1

    @property
    def multi_host(self) -> bool:
        return self.hosts_count > 1

    def redacted(self) -> str:
        return make_url(self.sqlalchemy).render_as_string(hide_password=True)


def parse_database_url(text: str | None) -> DatabaseUrl:
    """Accepts ``sqlite:///path``, ``sqlite+aiosqlite:///path``, ``postgresql://...``,
    ``postgres://...`` and ``postgresql+asyncpg://...``; empty means SQLite under ./var/.

    PostgreSQL may name several servers, in libpq's form
    (``postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write``, what
    ``pg_autoctl show uri`` prints) or SQLAlchemy's (``...@/db?host=h1:5432&host=h2:5432``):
    each new connection tries them in order and keeps the first that matches
    ``target_session_attrs`` (``read-write``: the primary)."""
    if not text:
        text = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    text = text.replace("postgres://", "postgresql://", 1)
    hosts = _libpq_hosts(text)
    if hosts is not None:
        text = _without_netloc_hosts(text)
    url = make_url(text)
    if hosts is not None:
        url = url.update_query_dict({"host": hosts})
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
        query_hosts = url.query.get("host", ())
        hosts = [query_hosts] if isinstance(query_hosts, str) else list(query_hosts)
        if len(hosts) > 1 and not all(":" in h for h in hosts):
            raise ValueError("a PostgreSQL URL naming several hosts needs a port on each")
        return DatabaseUrl(
            sqlalchemy=url.set(drivername="postgresql+asyncpg").render_as_string(False),
            dialect="postgresql",
            asyncpg_dsn=_asyncpg_dsn(url, hosts),
            hosts_count=max(len(hosts), 1),
        )
    raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")


def _libpq_hosts(text: str) -> list[str] | None:
    """``host:port`` of each server of a libpq multi-host URL (``a:1,b:2`` in its authority),
    or None for one server."""
    netloc = urlsplit(text).netloc
    _, _, hostlist = netloc.rpartition("@")
    if "," not in hostlist:
        return None
    hosts = [h for h in hostlist.split(",") if h]
    if not all(":" in h for h in hosts):
        raise ValueError("a PostgreSQL URL naming several hosts needs a port on each")
    return hosts


def _without_netloc_hosts(text: str) -> str:
    parts = urlsplit(text)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}"))


def _asyncpg_dsn(url: URL, hosts: list[str]) -> str:
    """The libpq-style DSN asyncpg.connect reads: several hosts go in the authority."""
    if len(hosts) <= 1:
        return url.set(drivername="postgresql").render_as_string(False)
    bare = url.set(drivername="postgresql").difference_update_query(["host"])
    text = bare.render_as_string(False)
    parts = urlsplit(text)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{','.join(hosts)}"))
