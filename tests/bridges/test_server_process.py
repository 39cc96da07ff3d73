"""The bridge as its own process (``python -m bridges serve``): its state survives SIGKILL after a
prepare and after a commit, and the crash faults really kill it at their point."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridges import (
    BridgeClient,
    TransferState,
    checked_public_keys,
    limits,
    verify_quorum_certificate,
)
from bridges.cli import main
from bridges.errors import BridgeError, Unavailable
from sim_central_bank.server_process import free_port
from tests.bridges.conftest import BANKS, ActingClient, fund

ROOT = Path(__file__).resolve().parents[2]
A, B = BANKS
READY_TIMEOUT_S = 30


@dataclass
class Server:
    process: asyncio.subprocess.Process
    client: ActingClient

    async def kill(self) -> int:
        self.process.send_signal(signal.SIGKILL)
        return await self.process.wait()


@contextlib.asynccontextmanager
async def server(
    state: Path, *faults: str, extra_args: tuple[str, ...] = ()
) -> AsyncIterator[Server]:
    args = [*(arg for spec in faults for arg in ("--fault", spec)), *extra_args]
    log = (state.parent / "server.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridges",
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--state",
        str(state),
        "--block-interval-ms",
        "50",
        "--insecure",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env={**os.environ, "CONDPAY_BRIDGE_FAULTS": ""},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_S)).decode()
        assert "serving on 127.0.0.1:" in line, (line, (state.parent / "server.log").read_text())
        port = int(line.split("serving on 127.0.0.1:")[1].split()[0])
        client = ActingClient(BridgeClient(f"127.0.0.1:{port}", deadline_ms=10_000))
        try:
            yield Server(process, client)
        finally:
            await client.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()


async def _prepare(client: ActingClient, transfer_id: str) -> None:
    quote = await client.quote("HKD", "CNY", target_amount_minor=10_000_00)
    await client.prepare(
        transfer_id, quote_id=quote.quote_id, payer_id=A, payee_id=B, timeout_ms=600_000
    )


async def test_state_survives_sigkill_after_prepare_and_after_commit(tmp_path: Path) -> None:
    state = tmp_path / "bridge.db"
    async with server(state) as first:
        await fund(first.client)
        keys = checked_public_keys(await first.client.validators())
        await _prepare(first.client, "BANK-A:t-1")
        prepared = await first.client.status("BANK-A:t-1")
        assert await first.kill() == -signal.SIGKILL

    async with server(state) as second:
        after = await second.client.status("BANK-A:t-1")
        assert after == prepared  # still prepared, same terms, same expiry
        reserved = {b.currency: b.reserved_minor for b in await second.client.balances(A)}
        assert after.terms is not None
        assert reserved["HKD"] == after.terms.source.amount_minor
        committed = await second.client.commit("BANK-A:t-1")
        assert committed.state is TransferState.COMMITTED
        assert await second.kill() == -signal.SIGKILL

    async with server(state) as third:
        assert (await third.client.status("BANK-A:t-1")).state is TransferState.COMMITTED
        assert (await third.client.commit("BANK-A:t-1")).replayed
        assert checked_public_keys(await third.client.validators()) == keys  # same validators
        finality = await third.client.finality("BANK-A:t-1")
        assert finality.block is not None
        assert finality.certificate is not None
        assert verify_quorum_certificate(finality.block, finality.certificate, keys)
        assert (await third.client.audit()).problems == ()
        third.process.send_signal(signal.SIGTERM)  # a graceful stop exits 0
        assert await asyncio.wait_for(third.process.wait(), 10) == 0


async def test_crash_faults_kill_the_process_before_or_after_the_commit(tmp_path: Path) -> None:
    state = tmp_path / "bridge.db"
    async with server(state, "crash_before_commit") as before:
        await fund(before.client)
        await _prepare(before.client, "BANK-A:t-1")
        with pytest.raises(Unavailable):
            await before.client.commit("BANK-A:t-1")
        assert await before.process.wait() == limits.CRASH_EXIT_STATUS

    async with server(state, "crash_after_commit") as after:
        assert (await after.client.status("BANK-A:t-1")).state is TransferState.PREPARED  # lost
        with pytest.raises(Unavailable):
            await after.client.commit("BANK-A:t-1")
        assert await after.process.wait() == limits.CRASH_EXIT_STATUS

    async with server(state) as healthy:
        status = await healthy.client.status("BANK-A:t-1")
        assert status.state is TransferState.COMMITTED  # durable before the crash
        assert (await healthy.client.commit("BANK-A:t-1")).replayed
        assert (await healthy.client.audit()).problems == ()


def test_the_cli_refuses_bad_fault_specs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--state", str(tmp_path / "x.db"), "--fault", "explode"]) == 2
    assert "unknown fault switch 'explode'" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(SystemExit) as caught:
        main(["serve"])  # --state is required
    assert caught.value.code == 2


async def test_metrics_count_each_call_by_method_code_and_reason(tmp_path: Path) -> None:
    """`bridge serve --metrics-addr`: one scrape after real calls counts each exactly."""
    port = free_port()
    async with server(
        tmp_path / "bridge.db", extra_args=("--metrics-addr", f"127.0.0.1:{port}")
    ) as s:
        await fund(s.client)
        await _prepare(s.client, "BANK-A:t-1")
        with pytest.raises(BridgeError) as missing:
            await s.client.status("BANK-A:nope")
        await s.client.commit("BANK-A:t-1")
        await s.client.finality("BANK-A:t-1")  # waits for the timer's block
        text = await asyncio.to_thread(_scrape, port)
    counts = {
        (sample.labels["method"], sample.labels["code"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "condpay_bridge_rpcs_total"
    }
    assert counts[("PrepareTransfer", "OK", "")] == 1
    assert counts[("CommitTransfer", "OK", "")] == 1
    reason = missing.value.reason.value
    assert counts[("GetTransfer", missing.value.status_code_name, reason)] == 1
    samples = {
        (sample.name, sample.labels.get("method", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("condpay_bridge_rpc_duration_seconds_count", "PrepareTransfer")] == 1
    assert samples[("condpay_bridge_final_height", "")] >= 1


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()
