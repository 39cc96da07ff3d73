"""The primary PostgreSQL dies during a burst of transfers (issue 13): a replicated cluster
(pg_auto_failover: a monitor, a primary and a synchronous standby, tests/support/ha_cluster.py)
promotes the standby, the core follows it without a restart, and every transfer the SDK saw
acknowledged is in the ledger exactly once; the supply audit and the journal chain pass (the
harness audits after the test). Health says NOT_SERVING while there is no primary, SERVING after.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import grpc
import pytest
from condpay.client import CHANNEL_OPTIONS

from tests.bench.ledger_setup import INSTITUTION, build_ledger
from tests.support.ha_cluster import HaCluster, find_pg_autoctl, ha_cluster
from tests.support.ha_load import HealthWatch, Tally, TransferLoad, check_books
from tests.support.harness import start_harness
from tests.support.postgres import find_binaries

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

WORKERS = 8
LOAD_BEFORE_KILL_SECONDS = 1.5
LOAD_AFTER_PROMOTION_SECONDS = 2.0


@pytest.fixture
def cluster() -> Iterator[HaCluster]:
    if find_binaries() is None or find_pg_autoctl() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but pg_auto_failover is missing (make postgres-binaries)")
        pytest.skip("pg_auto_failover is not installed here (make postgres-binaries)")
    with ha_cluster(data_nodes=2) as started:
        yield started


async def test_the_core_follows_a_failover_and_loses_no_acknowledged_transfer(
    cluster: HaCluster,
) -> None:
    assert cluster.synchronous_standby_names().startswith("ANY 1"), "the standby is synchronous"
    async with start_harness(cluster.database_url(), bridge="none") as harness:
        ledger = await build_ledger(harness.address, payers=WORKERS)
        tally = Tally()
        channel = grpc.aio.insecure_channel(harness.address, options=CHANNEL_OPTIONS)
        load = TransferLoad(channel, ledger, tally, workers=WORKERS)
        health = HealthWatch(harness.address)
        health.start()
        load.start()
        try:
            await asyncio.sleep(LOAD_BEFORE_KILL_SECONDS)
            acked_before = tally.count(tally.acknowledged)
            old = cluster.primary()
            assert old is not None
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, old)
            new = await asyncio.to_thread(cluster.wait_promoted, old)
            promoted_at = time.monotonic()
            await asyncio.sleep(LOAD_AFTER_PROMOTION_SECONDS)
        finally:
            await load.stop()
            await health.stop()
            await channel.close()
        assert new is not old
        # The load ran before, and writes went on after, on the same server process.
        assert acked_before > 0
        first_after = tally.first_ack_after(promoted_at)
        assert first_after is not None, "no transfer acknowledged after the promotion"
        seen = health.statuses_after(killed_at)
        assert "NOT_SERVING" in seen, f"health while no primary: {seen}"
        assert health.seen[-1][1] == "SERVING"

        acknowledged = tally.acknowledged["transfer"]
        refused = tally.refused.get("transfer", [])
        books = await check_books(cluster.node_url(new), INSTITUTION, acknowledged, refused)
        assert books.lost == [], f"acknowledged but not in the ledger: {books.lost}"
        assert books.applied_twice == [], f"applied twice: {books.applied_twice}"
        # Every attempt was answered one way or the other (the SDK rode out the failover).
        assert tally.attempted["transfer"] == len(acknowledged) + len(refused)
        assert refused == [], f"refused: {dict(tally.errors_by_reason)}"
        print(
            f"\nfailover: {len(acknowledged)} transfers acknowledged, {len(refused)} refused, "
            f"{tally.retries} SDK retries, promotion {promoted_at - killed_at:.1f} s after the "
            f"kill, first write {first_after - killed_at:.1f} s after it; health {seen}"
        )
