"""Many calls, a bounded number in flight: the simulator never floods the server it measures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def gathered(
    keys: Sequence[str], read: Callable[[str], Awaitable[T]], *, in_flight: int
) -> dict[str, T]:
    """``read(key)`` for every key, at most ``in_flight`` at a time: key -> result."""
    gate = asyncio.Semaphore(in_flight)

    async def gated(key: str) -> T:
        async with gate:
            return await read(key)

    found = await asyncio.gather(*(gated(k) for k in keys))
    return dict(zip(keys, found, strict=True))


async def run_bounded(
    jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int, done: Callable[[], None]
) -> None:
    """Every job, ``concurrency`` workers taking the next one in order; ``done`` after each."""
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:
            await job()
            done()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(jobs)) or 1)))
