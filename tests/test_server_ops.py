"""Operability: health checking, reflection, INTERNAL without exception text, the refusal to run
without --insecure, graceful shutdown on SIGTERM of a real child process, and a restart that keeps
everything."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
import structlog
from condpay.client import Client
from condpay.v1 import wallet_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from settlement.api.server import SERVICE_NAMES
from sim_central_bank.server_process import ServerProcess
from tests.support.harness import CENTRAL_BANK, Harness, central_bank_of
from tests.support.snapshots import (
    BANK,
    INSTITUTION_ID,
    RESERVE,
    World,
    build_world,
    expect_error,
    take_snapshot,
)
from wallets import OwnerKey

CONDPAY = Path(sys.executable).with_name("condpay")
Code = grpc.StatusCode


# -- health and reflection ---------------------------------------------------------------------
async def test_health_reports_serving_for_the_server_and_each_service(harness: Harness) -> None:
    assert set(SERVICE_NAMES) == {
        "condpay.v1.WalletService",
        "condpay.v1.CentralBankService",
        "condpay.v1.OperationService",
        "condpay.v1.ContractService",
        "condpay.v1.ConditionalPaymentService",
        "condpay.v1.OracleService",
        "condpay.v1.AssetService",
        "condpay.v1.SettlementService",
        "condpay.v1.EvidenceService",
        "condpay.v1.InventoryFinanceService",
    }
    async with grpc.aio.insecure_channel(harness.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", *SERVICE_NAMES):  # no caller metadata needed
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="condpay.v1.Nope"), timeout=5)
        assert unknown.value.code() == Code.NOT_FOUND


async def _reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=5)
    await call.write(request)
    await call.done_writing()
    reply: reflection_pb2.ServerReflectionResponse = await call.read()
    return reply


async def test_reflection_lists_and_describes_the_condpay_services(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        listed = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert set(SERVICE_NAMES) <= names
        assert "grpc.health.v1.Health" in names

        for service in SERVICE_NAMES:
            reply = await _reflect(
                channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
            )
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in reply.file_descriptor_response.file_descriptor_proto
            ]
            described = {
                f"{f.package}.{s.name}": {m.name for m in s.method}
                for f in files
                for s in f.service
            }
            expected = {
                m.name for m in descriptor_pool.Default().FindServiceByName(service).methods
            }
            assert described.get(service) == expected, service


# -- INTERNAL ----------------------------------------------------------------------------------
def _raise_secret(*args: object, **kwargs: object) -> None:
    raise RuntimeError("secret-detail")


async def _secret(*args: object, **kwargs: object) -> None:
    raise RuntimeError("secret-detail")


def _assert_no_secret(error: object, status: bytes) -> None:
    assert "secret-detail" not in str(error)
    assert b"secret-detail" not in status


async def test_internal_never_leaks_exception_text(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await build_world(harness)
    runtime = harness.runtime
    harness.allowed_log_events.add("unhandled_error")  # provoked on purpose

    # A read: no request id to quote.
    monkeypatch.setattr(runtime.reader, "wallet", _secret)
    with structlog.testing.capture_logs() as logs:
        error = await expect_error(world.cb.get_wallet(RESERVE), Code.INTERNAL, "INTERNAL")
    _assert_no_secret(error, error.status.SerializeToString())
    assert any(e["event"] == "unhandled_error" and e.get("exc_info") for e in logs), logs
    monkeypatch.undo()

    # A transfer failing before the ledger: the message quotes the request id, the log has it.
    signed = world.signed("alice", "carol", 1_00)
    monkeypatch.setattr(runtime.directory, "wallet", _secret)
    with structlog.testing.capture_logs() as logs:
        error = await expect_error(world.send(signed), Code.INTERNAL, "INTERNAL")
    _assert_no_secret(error, error.status.SerializeToString())
    assert signed.request_id in error.message
    assert any(e.get("request_id") == signed.request_id for e in logs), logs
    monkeypatch.undo()
    # Nothing was stored under the request id: the retry executes.
    assert not (await world.send(signed)).operation.replayed

    # An Issue whose database transaction blows up inside the engine.
    before = await world.snapshot()
    monkeypatch.setattr(runtime.store, "transaction", _raise_secret)
    error = await expect_error(
        world.cb.issue(INSTITUTION_ID, "CNY", 1_00, request_id="req-boom"),
        Code.INTERNAL,
        "INTERNAL",
    )
    _assert_no_secret(error, error.status.SerializeToString())
    assert "req-boom" in error.message
    monkeypatch.undo()
    assert await world.snapshot() == before
    assert not (
        await world.cb.issue(INSTITUTION_ID, "CNY", 1_00, request_id="req-boom")
    ).operation.replayed


# -- the command line --------------------------------------------------------------------------
async def test_serve_without_insecure_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDPAY_")}
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(CONDPAY),
            "serve",
            "--addr",
            "127.0.0.1:0",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(
                "condpay serve without --insecure did not exit within 10 s; it printed: "
                + stderr_path.read_text()
            )
    message = stderr_path.read_text()
    assert process.returncode != 0
    assert "--insecure" in message
    assert "TLS" in message
    assert "condpay certs init" in message
    assert not (tmp_path / "var" / "condpay.db").exists(), "it touched the database first"


# -- a real server process ---------------------------------------------------------------------
class RemoteServer:
    """A ServerProcess with what build_world needs of a Harness."""

    def __init__(self, process: ServerProcess) -> None:
        self.process = process
        self.address = process.address
        self.clients: list[Client] = []

    def client(self, caller: str = CENTRAL_BANK) -> Client:
        client = Client(self.address, caller=caller, attempts_max=1)
        self.clients.append(client)
        return client

    async def institution(self, institution_id: str = INSTITUTION_ID) -> OwnerKey:
        key = OwnerKey.from_seed(institution_id.encode().ljust(32, b"\0")[:32])
        await self.client().register_institution(
            institution_id, institution_id.upper(), key.public_key
        )
        return key

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.close()
        self.clients.clear()

    async def stop(self) -> int:
        """SIGTERM, without blocking the event loop while the process drains; the exit status."""
        return await asyncio.to_thread(self.process.stop)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[str], RemoteServer]]:
    """Start `condpay serve --insecure` child processes; any still running are killed after."""
    started: list[ServerProcess] = []

    def start(database_url: str) -> RemoteServer:
        process = ServerProcess(database_url, log_path=tmp_path / f"server-{len(started)}.log")
        started.append(process)
        process.start()
        return RemoteServer(process)

    yield start
    for process in started:
        process.stop(kill=True)


@pytest.fixture
async def remote(
    start_server: Callable[[str], RemoteServer], database_url: str
) -> AsyncIterator[RemoteServer]:
    server = start_server(database_url)
    await server.process.wait_ready()
    yield server
    await server.close_clients()


async def _burst_until_some_are_in_flight(
    world: World, bank: Client, stop: Callable[[], Awaitable[int]]
) -> tuple[list[asyncio.Future[wallet_pb2.TransferResponse]], int, int]:
    """Send bursts of transfers; SIGTERM (``stop``) the first time calls of a burst are still in
    flight once all of them have reached the server. Returns every call, how many were in
    flight at SIGTERM, and the exit status."""
    targets = ("alice", "bob", "carol", "dave")
    sent: list[asyncio.Future[wallet_pb2.TransferResponse]] = []
    for _ in range(5):
        burst = [world.signed("reserve", targets[i % 4], 1) for i in range(300)]
        calls = [asyncio.ensure_future(world.send(s, client=bank)) for s in burst]
        sent += calls
        # Then a Transfer refused before the ledger (a malformed request id), as a task of its
        # own so that it leaves after the burst. The server takes the calls of one method in
        # arrival order, so once it is answered every transfer of the burst has reached a
        # handler. (A call of another method, e.g. a health check, may overtake them.)
        probe = wallet_pb2.TransferRequest(request_id="not a request id")
        await asyncio.ensure_future(
            expect_error(
                bank.api.wallets.transfer(probe),
                Code.INVALID_ARGUMENT,
                "INVALID_REQUEST_ID",
            )
        )
        in_flight = sum(not call.done() for call in calls)
        if in_flight:
            return sent, in_flight, await stop()  # SIGTERM now; stop() waits for the exit
        await asyncio.gather(*calls)
    raise AssertionError("five bursts finished before their last call arrived: proved nothing")


async def test_sigterm_lets_calls_in_flight_finish_then_exits_0(
    remote: RemoteServer, start_server: Callable[[str], RemoteServer], database_url: str
) -> None:
    world = await build_world(remote)
    journal_before = (await world.snapshot()).journal_length

    async with grpc.aio.insecure_channel(remote.address) as channel:
        bank = Client(remote.address, caller=BANK, channel=channel, attempts_max=1)
        await bank.get_wallet(RESERVE)  # connected before the burst, so calls leave in order
        calls, in_flight, exit_code = await _burst_until_some_are_in_flight(
            world, bank, remote.stop
        )
        outcomes = await asyncio.gather(*calls, return_exceptions=True)

    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert failed == [], f"{len(failed)} of {in_flight} calls in flight failed: {failed[:3]}"
    assert exit_code == 0

    # Every acknowledged transfer is in the journal after a restart.
    again = start_server(database_url)
    await again.process.wait_ready()
    try:
        journal = [e async for e in again.client().journal(page_size=1000)]
        assert len(journal) == journal_before + len(calls)
        hashes = {e.seq: e.hash for e in journal}
        for reply in outcomes:
            assert isinstance(reply, wallet_pb2.TransferResponse)
            assert hashes[reply.entry.seq] == reply.entry.hash
    finally:
        await again.close_clients()


async def test_restart_on_the_same_sqlite_file_keeps_all_data(
    start_server: Callable[[str], RemoteServer], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/restart.db"
    first = start_server(url)
    await first.process.wait_ready()
    world = await build_world(first)
    hkma = world.cb.with_caller(central_bank_of("HKD"))
    await hkma.issue(INSTITUTION_ID, "HKD", 77_00)
    await hkma.redeem(INSTITUTION_ID, "HKD", 7_00)
    kept = world.signed("alice", "carol", 3_21, memo="kept")
    kept_reply = await world.send(kept)
    short = world.signed("dave", "carol", 99_00)
    refused = await expect_error(world.send(short), Code.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    before = await world.snapshot()
    journal_before = [e async for e in world.cb.journal(page_size=1000)]
    operation_before = await world.bank.get_operation(kept.request_id)
    assert await first.stop() == 0
    await first.close_clients()

    second = start_server(url)
    await second.process.wait_ready()
    try:
        world = World(second, second.client(), second.client(BANK), None, world.keys, world.ids)
        assert await world.snapshot() == before
        assert [e async for e in world.cb.journal(page_size=1000)] == journal_before
        assert await world.bank.get_operation(kept.request_id) == operation_before
        # The idempotency store survived: both outcomes replay.
        replay = await world.send(kept)
        assert replay.operation.replayed
        assert replay.entry == kept_reply.entry
        again = await expect_error(
            world.send(short), Code.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"
        )
        assert again.replayed
        assert again.status == refused.status
        # And the hash chain continues from where it stopped.
        fresh = await world.send(world.signed("alice", "carol", 1_00))
        assert fresh.entry.seq == journal_before[-1].seq + 1
        assert fresh.entry.prev_hash == journal_before[-1].hash
        assert (await take_snapshot(world.cb)).journal_length == before.journal_length + 1
    finally:
        await second.close_clients()
