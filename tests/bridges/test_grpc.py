"""What only the gRPC transport has: the committed stubs, messages with fields missing, errors
on the wire, a server that is not there, health checking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from condpay.bridge.v1 import bridge_pb2 as pb
from condpay.bridge.v1 import bridge_pb2_grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridges import BridgeClient, Money, TransferState
from bridges._convert import transfer_of, transfer_pb
from bridges._identity import METADATA_KEY
from bridges._server import SERVICE_NAMES
from bridges.errors import DOMAIN, InvalidRequest, Reason, Unavailable
from tests.bridges.conftest import BANKS, ActingClient, open_world

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "proto" / "condpay" / "bridge" / "v1"


def test_regenerating_the_bridge_stubs_changes_nothing(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "condpay" / "bridge" / "v1"
    generated = {p.name: p.read_bytes() for p in out.iterdir()}
    committed = {p.name: p.read_bytes() for p in STUBS.iterdir() if "_pb2" in p.name}
    assert sorted(generated) == sorted(committed), "stub files differ: run `make proto`"
    assert [n for n in generated if generated[n] != committed[n]] == [], "run `make proto`"


async def test_wire_errors_carry_the_reason_and_metadata(tmp_path: Path) -> None:
    async with open_world("grpc", tmp_path / "b.db") as world:
        assert isinstance(world.api, ActingClient)
        bank = ((METADATA_KEY, f"bank/{BANKS[0]}"),)
        hkma = ((METADATA_KEY, "central_bank/HKMA"),)
        async with grpc.aio.insecure_channel(world.api.client.target) as channel:
            stub = bridge_pb2_grpc.BridgeServiceStub(channel)
            admin = bridge_pb2_grpc.BridgeAdminServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CommitTransfer(
                    pb.CommitTransferRequest(transfer_id="nope"), metadata=bank
                )
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
            info = _error_info(caught.value)
            assert (info.domain, info.reason) == (DOMAIN, "TRANSFER_NOT_FOUND")
            assert dict(info.metadata) == {"transfer_id": "nope"}

            for request, reason in [
                (pb.IssueRequest(request_id="i", participant_id=BANKS[0]), "INVALID_ACCOUNT_KIND"),
                (
                    pb.IssueRequest(
                        request_id="i",
                        participant_id=BANKS[0],
                        account_kind=pb.ACCOUNT_KIND_SETTLEMENT,
                    ),
                    "MISSING_FIELD",
                ),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await admin.Issue(request, metadata=hkma)
                assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert _error_info(refused.value).reason == reason
            with pytest.raises(grpc.aio.AioRpcError) as no_rate:
                await admin.PublishRate(pb.PublishRateRequest(currency="HKD"), metadata=hkma)
            assert _error_info(no_rate.value).reason == "MISSING_FIELD"

            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", *SERVICE_NAMES):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

        with pytest.raises(InvalidRequest) as typed:  # the client raises the typed error
            await world.api.issue("i", participant_id="A B", amount=Money("CNY", 1))
        assert typed.value.reason is Reason.INVALID_ID


async def test_no_server_is_unavailable_with_unknown_outcome() -> None:
    async with BridgeClient("127.0.0.1:1", deadline_ms=2_000) as client:
        with pytest.raises(Unavailable) as caught:
            await client.commit("t-1")
    assert caught.value.reason is Reason.UNREACHABLE


def test_transfers_round_trip_through_their_message() -> None:
    from bridges import Transfer, TransferTerms

    terms = TransferTerms(
        "q-1", "A", "B", "LP", Money("HKD", 3), Money("CNY", 2), Money("HKD", 1), 500
    )
    for transfer in (
        Transfer("t-1", TransferState.PREPARED, terms, 1, 2, 0, "", 0),
        Transfer("t-2", TransferState.REJECTED, terms, 1, 0, 3, "QUOTE_EXPIRED", 0),
        Transfer("t-3", TransferState.ABORTED, None, 0, 0, 9, "", 0, replayed=True),
        Transfer("t-4", TransferState.COMMITTED, terms, 1, 2, 3, "", 17),
    ):
        assert transfer_of(transfer_pb(transfer), replayed=transfer.replayed) == transfer


def _error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info)
            return info
    raise AssertionError("no status details")
