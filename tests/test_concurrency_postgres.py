"""Concurrency on PostgreSQL: many clients, two server replicas on one database, hot wallets.

Afterwards: supply is conserved per currency, no balance is negative, every snapshot read taken
during the run summed to the constant total, replaying the journal reproduces every balance
(the ledger audit), and the final balances are exactly what the successful replies add up to.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from condpay.client import Client
from condpay.errors import ApiError

from settlement.api.server import start_server
from settlement.config import Settings
from settlement.ledger.audit import audit_ledger
from settlement.runtime import Runtime
from tests.support.harness import Harness, start_harness
from wallets import OwnerKey, TransferInstruction, sign_transfer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WALLETS = 24
HOT = 3
FUNDING = 100_000_00
# Every client sends as one platform: an instruction names the one identity that may submit it,
# and the queue hands any instruction to any client (request ids are unique anyway).
SUBMITTER = "platform/load"


@contextlib.asynccontextmanager
async def replica(database_url: str, pg_isolation: str) -> AsyncIterator[str]:
    """A second, independent server process's worth of state on the same database."""
    settings = Settings(
        database_url=database_url, insecure=True, log_calls=False, pg_isolation=pg_isolation
    )
    runtime = Runtime(settings)
    await runtime.start()
    server = await start_server(runtime, "127.0.0.1:0")
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(grace_seconds=0)


async def open_funded_wallets(h: Harness) -> tuple[list[str], dict[str, OwnerKey]]:
    cb = h.client()
    bank_key = await h.institution("icbc-sz")
    await cb.issue("icbc-sz", "CNY", WALLETS * FUNDING)
    bank = h.client("institution/icbc-sz")
    keys = {}
    for i in range(WALLETS):
        key = OwnerKey.from_seed(f"wallet-{i}".encode().ljust(32, b"\0"))
        wallet = (
            await bank.open_wallet("icbc-sz", key.public_key, kind="ENTERPRISE", tier=0)
        ).wallet
        keys[wallet.wallet_id] = key
    ids = list(keys)
    await asyncio.gather(
        *(bank.transfer(bank_key, "w_reserve.icbc-sz", w, "CNY", FUNDING) for w in ids)
    )
    return ids, keys


def random_transfers(ids: list[str], keys: dict[str, OwnerKey], count: int, seed: int):
    rng = random.Random(seed)
    hot = ids[:HOT]
    expires_at_us = time.time_ns() // 1000 + 3600 * 1_000_000
    for n in range(count):
        source = rng.choice(ids)
        target = rng.choice(hot) if rng.random() < 0.5 else rng.choice(ids)
        if target == source:
            target = ids[(ids.index(source) + 1) % len(ids)]
        amount = rng.randint(1, 2_000_00)
        instruction = TransferInstruction(
            source, target, "CNY", amount, SUBMITTER, f"t{seed}-{n}", expires_at_us
        )
        yield instruction, sign_transfer(keys[source], instruction)


async def run_load(pg_url: str, *, transfers: int, clients: int, isolation: str) -> None:
    async with start_harness(pg_url) as h, replica(pg_url, isolation) as second:
        ids, keys = await open_funded_wallets(h)
        total = WALLETS * FUNDING
        work = list(random_transfers(ids, keys, transfers, seed=transfers))
        queue: asyncio.Queue = asyncio.Queue()
        for item in work:
            queue.put_nowait(item)
        outcomes: Counter[str] = Counter()
        expected = {w: FUNDING for w in ids}
        snapshots: list[int] = []
        done = asyncio.Event()

        async def client_loop(index: int) -> None:
            address = h.address if index % 2 == 0 else second
            async with Client(address, caller=SUBMITTER) as client:
                while not queue.empty():
                    instruction, signed = queue.get_nowait()
                    try:
                        await client.transfer_signed(
                            signed.payload, signed.signature, instruction.request_id
                        )
                    except ApiError as error:
                        outcomes[error.reason] += 1
                        continue
                    outcomes["OK"] += 1
                    expected[instruction.source] -= instruction.amount_minor
                    expected[instruction.target] += instruction.amount_minor

        async def snapshot_loop() -> None:
            async with Client(second, caller="auditor/a1") as auditor:
                while not done.is_set():
                    (line,) = (await auditor.get_supply("CNY")).supplies
                    assert line.consistent, line
                    snapshots.append(line.balances_sum.amount_minor)
                    await asyncio.sleep(0.01)

        reader = asyncio.create_task(snapshot_loop())
        await asyncio.gather(*(client_loop(i) for i in range(clients)))
        done.set()
        await reader

        assert sum(outcomes.values()) == transfers
        assert set(outcomes) <= {"OK", "INSUFFICIENT_FUNDS"}, outcomes
        assert outcomes["OK"] > transfers // 2, outcomes
        assert len(snapshots) >= 10
        assert set(snapshots) == {total}, snapshots[:10]
        bank = h.client("institution/icbc-sz")
        for wallet_id in ids:
            wallet = await bank.get_wallet(wallet_id)
            cny = next(b for b in wallet.balances if b.available.currency == "CNY")
            assert cny.available.amount_minor == expected[wallet_id] >= 0
        report = await audit_ledger(h.runtime.sql)
        assert report.ok, report.failures
        assert report.entries == 1 + WALLETS + outcomes["OK"]
        print(
            f"\n{transfers} transfers, {clients} clients, 2 replicas, {isolation}: {outcomes}, "
            f"{len(snapshots)} snapshot reads, {h.runtime.engine.batches} batches on replica 1"
        )


async def test_5000_transfers_16_clients_two_replicas_read_committed(pg_url: str) -> None:
    await run_load(pg_url, transfers=5000, clients=16, isolation="read_committed")


async def test_serializable_isolation_with_retries(pg_url: str) -> None:
    await run_load(pg_url, transfers=1500, clients=16, isolation="serializable")
