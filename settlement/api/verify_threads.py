"""Signature checks beside the event loop.

A BLS aggregate costs about 1.3 ms of pairings (blspy), and blspy releases the GIL while it
computes: verified on a thread of this pool it runs on a spare CPU while the loop goes on serving
other calls (SQLite, one process on 2 CPUs: 7% more lifecycles/s). When every CPU already runs a
server process (PostgreSQL's default), a thread only adds hand-offs, so the pool has no threads
and :meth:`VerifyThreads.run` checks on the loop (``CONDPAY_VERIFY_THREADS``,
settlement/config.py). Only pure checks run here (a verification and its result or
SettlementError): a caller cancelled meanwhile leaves nothing behind. The threads start on first
use; :meth:`VerifyThreads.close` stops them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class VerifyThreads:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, check: Callable[[], T]) -> T:
        """``check()`` on a pool thread (on the loop without threads): its result, or the
        exception it raised."""
        if self.threads == 0:
            return check()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="condpay-verify")
        return await asyncio.get_running_loop().run_in_executor(self._pool, check)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
