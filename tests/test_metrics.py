"""Prometheus metrics (issue 12): `condpay serve --workers 2 --metrics-addr ...` on SQLite and
PostgreSQL, real calls through the SDK, then one scrape of the parent's /metrics, which sums the
workers' series. Counts are exact: every call is counted once, by method, code and reason."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from condpay.client import Client, PaymentsClient
from condpay.errors import FailedPrecondition
from prometheus_client.parser import text_string_to_metric_families

from contracts_dsl import compile_source
from sim_central_bank.server_process import ServerProcess, free_port
from tests.support.contracts import receipt_contract
from wallets import OwnerKey

BANK = "icbc-sz"
RESERVE = f"w_reserve.{BANK}"
TRANSFER = "/condpay.v1.WalletService/Transfer"
LOCK = "/condpay.v1.ConditionalPaymentService/LockPayment"
TRANSFERS = 12
CHANNELS = 6  # connections the kernel spreads over the workers
SOURCE = receipt_contract("metrics-receipt")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _key(name: str) -> OwnerKey:
    return OwnerKey.from_seed(name.encode().ljust(32, b"~")[:32])


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _until(port: int, ready: Callable[[Samples], bool], timeout_s: float = 20.0) -> Samples:
    """Scrape until ``ready`` (the sampled gauges are read every few seconds)."""
    give_up = time.monotonic() + timeout_s
    while True:
        samples = await asyncio.to_thread(_scrape, port)
        if ready(samples) or time.monotonic() > give_up:
            return samples
        await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_two_workers_one_scrape_exact_counts(tmp_path: Path, database_url: str) -> None:
    metrics_port = free_port()
    server = ServerProcess(
        database_url,
        log_path=tmp_path / "server.log",
        extra_env={"CONDPAY_QUIET_CALLS": "1"},
        extra_args=("--workers", "2", "--metrics-addr", f"127.0.0.1:{metrics_port}"),
    )
    server.start()
    keys = {name: _key(name) for name in ("bank", "buyer", "seller")}
    contract = compile_source(SOURCE, "<metrics>").contract
    assert contract is not None
    try:
        await server.wait_ready()
        async with Client(server.address, caller="central_bank/pboc") as cb:
            await cb.register_institution(BANK, "ICBC Shenzhen", keys["bank"].public_key)
            await cb.issue(BANK, "CNY", 10_000_000_00)
        banks = [Client(server.address, caller=f"institution/{BANK}") for _ in range(CHANNELS)]
        try:
            wallets = {}
            for name in ("buyer", "seller"):
                opened = await banks[0].open_wallet(
                    BANK, keys[name].public_key, kind="ENTERPRISE", tier=0
                )
                wallets[name] = opened.wallet.wallet_id
            await asyncio.gather(
                *(
                    banks[i % CHANNELS].transfer(
                        keys["bank"], RESERVE, wallets["buyer"], "CNY", 1_000_00 + i
                    )
                    for i in range(TRANSFERS)
                )
            )
            with pytest.raises(FailedPrecondition):  # the seller holds nothing yet
                await banks[1].transfer(keys["seller"], wallets["seller"], RESERVE, "CNY", 1_00)
        finally:
            for bank in banks:
                await bank.close()
        async with PaymentsClient(server.address, caller="platform/metrics") as platform:
            params = {
                "buyer": wallets["buyer"],
                "seller": wallets["seller"],
                "price": ("CNY", 7_00),
            }
            await platform.lock_payment(keys["buyer"], contract, params, send_source=SOURCE)

        samples = await _until(
            metrics_port, lambda s: _value(s, "condpay_open_escrows", currency="CNY") == 1
        )
    finally:
        assert server.stop() == 0

    rpcs = "condpay_rpcs_total"
    assert _value(samples, rpcs, method=TRANSFER, code="OK", reason="") == TRANSFERS
    assert (
        _value(
            samples, rpcs, method=TRANSFER, code="FAILED_PRECONDITION", reason="INSUFFICIENT_FUNDS"
        )
        == 1
    )
    assert _value(samples, rpcs, method=LOCK, code="OK", reason="") == 1
    transfer_latency = "condpay_rpc_duration_seconds_count"
    assert _value(samples, transfer_latency, method=TRANSFER) == TRANSFERS + 1
    assert _value(samples, "condpay_rpc_duration_seconds_bucket", method=TRANSFER, le="+Inf") == (
        TRANSFERS + 1
    )
    # Every command that reached the engine was in exactly one batch: register, issue, two
    # wallets, the funding transfers, the refused one and the lock.
    commands = 1 + 1 + 2 + TRANSFERS + 1 + 1
    assert _value(samples, "condpay_engine_batch_commands_sum") == commands
    assert 1 <= _value(samples, "condpay_engine_batch_commands_count") <= commands
    assert _value(samples, "condpay_open_escrows", currency="CNY") == 1
    assert _value(samples, "condpay_escrow_held_minor", currency="CNY") == 7_00
    assert _value(samples, "condpay_pending_deadlines") == 1
    assert _value(samples, "condpay_settlements_in_doubt") == 0
    assert _value(samples, "condpay_settlements_stuck") == 0
    assert ("condpay_engine_queue_commands", frozenset()) in samples
    assert any(name == "condpay_db_pool_connections" for name, _ in samples)
    assert not any(name == "condpay_bridge_link_up" for name, _ in samples)  # no bridge


async def test_metrics_are_off_by_default_and_a_bad_address_is_refused(tmp_path: Path) -> None:
    from settlement.config import Settings

    assert Settings.from_env({}).metrics_addr == ""
    with pytest.raises(ValueError, match="HOST:PORT"):
        Settings.from_env({"CONDPAY_METRICS_ADDR": "localhost"})


async def test_one_process_serves_its_own_metrics_with_the_bridge_link(tmp_path: Path) -> None:
    """Without workers the server serves /metrics itself; its in-process bridge reports up."""
    metrics_port = free_port()
    server = ServerProcess(
        f"sqlite:///{tmp_path}/condpay.db",
        log_path=tmp_path / "server.log",
        extra_args=("--metrics-addr", f"127.0.0.1:{metrics_port}"),
    )
    server.start()
    try:
        await server.wait_ready()
        samples = await _until(metrics_port, lambda s: ("condpay_bridge_link_up", frozenset()) in s)
    finally:
        assert server.stop() == 0
    assert _value(samples, "condpay_bridge_link_up") == 1
