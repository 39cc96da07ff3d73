"""Secrets every replica shares (table ``server_keys``): made once by whichever replica asks
first, read by all (the page-token key, the development checkpoint key)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def shared_secret(
    engine: AsyncEngine, name: str, generate: Callable[[], bytes], now_us: int
) -> bytes:
    """The secret ``name``; the first replica to ask stores ``generate()``'s, the others (and a
    racing one) read it."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO server_keys (name, secret, created_at_us) "
                "VALUES (:name, :secret, :at) ON CONFLICT DO NOTHING"
            ),
            {"name": name, "secret": generate(), "at": now_us},
        )
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT secret FROM server_keys WHERE name = :name"), {"name": name}
            )
        ).one()
    return bytes(row[0])
