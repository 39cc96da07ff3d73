"""The primary PostgreSQL dies during a burst of transfers (issue 13): a replicated cluster
(pg_auto_failover: a monitor, a primary and a synchronous standby, tests/support/ha_cluster.py)
promotes the standby, the core follows it without a restart, and every transfer the SDK saw
acknowledged is in the ledger exactly once; the supply audit and the journal chain pass (the
harness audits after the test). Health says NOT_SERVING while there is no primary, SERVING after.
A conditional payment whose deadline falls while there is no primary is refunded once, by the
deadline sweep, on the new primary.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Iterator

import asyncpg
import grpc
import pytest
from condpay.client import CHANNEL_OPTIONS, PaymentsClient
from condpay.v1 import payment_pb2

from contracts_dsl import compile_source
from tests.bench.ledger_setup import INSTITUTION, build_ledger
from tests.support.ha_cluster import HaCluster, find_pg_autoctl, ha_cluster
from tests.support.ha_load import HealthWatch, Tally, TransferLoad, check_books
from tests.support.harness import start_harness
from tests.support.postgres import find_binaries

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

WORKERS = 8
LOAD_BEFORE_KILL_SECONDS = 1.5
LOAD_AFTER_PROMOTION_SECONDS = 2.0
# The payment's deadline, from its lock: after the kill, before the promotion (which takes 8-13 s).
DEADLINE_AFTER_LOCK_SECONDS = LOAD_BEFORE_KILL_SECONDS + 3.0
PLATFORM = "platform/ha"


def timed_contract(deadline: dt.datetime) -> str:
    """The buyer's price held until the buyer signs the receipt, refunded at ``deadline``."""
    return f"""contract "ha-deadline" version 1

param buyer  : wallet
param seller : wallet
param price  : money CNY

escrow price from buyer
deadline {deadline.isoformat(timespec="seconds")} -> refund remainder to buyer

clause receipt
when receipt.signed(signer == buyer) by buyer
  -> pay remainder to seller
"""


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
        ledger = await build_ledger(harness.address, payers=WORKERS + 1)
        deadline = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(
            seconds=DEADLINE_AFTER_LOCK_SECONDS + 1
        )
        source = timed_contract(deadline)
        contract = compile_source(source, "<ha>").contract
        assert contract is not None
        buyer, seller = ledger.payers[WORKERS], ledger.payees[WORKERS]
        async with PaymentsClient(harness.address, caller=PLATFORM) as platform:
            locked = await platform.lock_payment(
                buyer.key,
                contract,
                {"buyer": buyer.wallet_id, "seller": seller, "price": ("CNY", 80_00)},
                send_source=source,
                request_id="ha-deadline",
            )
        payment_id = locked.payment.payment_id
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
            killed_at_unix = time.time()
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

        # The deadline fell while there was no primary: the sweep fired it on the new one, once.
        async with PaymentsClient(harness.address, caller=PLATFORM) as platform:
            give_up = time.monotonic() + 20
            while (payment := await platform.get_payment(payment_id)).state != (
                payment_pb2.PAYMENT_STATE_EXPIRED
            ):
                assert time.monotonic() < give_up, f"not refunded: {payment.state}"
                await asyncio.sleep(0.2)
        conn = await asyncpg.connect(cluster.node_url(new))
        try:
            refunds = await conn.fetchval(
                "SELECT count(*) FROM journal_entries WHERE request_id = $1",
                f"deadline.{payment_id}",
            )
        finally:
            await conn.close()
        assert refunds == 1
        assert deadline.timestamp() > killed_at_unix
        print(
            f"\nfailover: {len(acknowledged)} transfers acknowledged, {len(refused)} refused, "
            f"{tally.retries} SDK retries, {tally.replayed} answered as replays, promotion "
            f"{promoted_at - killed_at:.1f} s after the kill, first write "
            f"{first_after - killed_at:.1f} s after it; health {seen}"
        )
