"""Contracts registered per caller per UTC day (CONDPAY_CONTRACTS_PER_DAY_MAX), counted in the
database under the batch's locks, so two replicas can never both let a caller past the limit.

A batch that may register a new contract for a caller takes a per-caller transaction lock on
PostgreSQL (an advisory lock, released at commit; SQLite has one writer at a time anyway), then
counts that caller's contracts registered today. The lock is taken right after the contracts are
read and before titles, quotes and balances, in sorted caller order: the global lock order holds.
"""

from __future__ import annotations

import hashlib

from settlement.errors import Reason, quota_exceeded
from settlement.ledger.store import LedgerTransaction

DAY_US = 86_400 * 1_000_000


def utc_day_start_us(now_us: int) -> int:
    return now_us - now_us % DAY_US


def _lock_key(caller: str) -> int:
    """A signed 64-bit advisory lock key for ``caller``'s contract quota."""
    digest = hashlib.sha256(b"condpay.contracts-per-day\n" + caller.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def count_today(tx: LedgerTransaction, callers: list[str], now_us: int) -> dict[str, int]:
    """Lock each caller's quota (sorted) and count its contracts registered since 00:00 UTC."""
    start = utc_day_start_us(now_us)
    counts: dict[str, int] = {}
    for caller in sorted(callers):
        if tx.for_update:  # PostgreSQL: serialize this caller's registrations across replicas
            await tx.query("SELECT pg_advisory_xact_lock(?)", [_lock_key(caller)])
        rows = await tx.query(
            "SELECT COUNT(*) FROM contracts WHERE registered_by = ? AND registered_at_us >= ?",
            [caller, start],
        )
        counts[caller] = int(rows[0][0])
    return counts


def check_quota(counted: int, limit: int) -> None:
    """Refuse a new contract when ``counted`` (today's, this batch's included) reached ``limit``."""
    if counted >= limit:
        raise quota_exceeded(
            Reason.CONTRACTS_PER_DAY_EXCEEDED,
            "this caller registered as many contracts today (UTC) as it may",
            limit,
            "CONDPAY_CONTRACTS_PER_DAY_MAX",
        )
