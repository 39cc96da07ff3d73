"""The SDK's typed per-service facades (``client.api.<service>.<method>``) and ``send``: a method
for every RPC of every condpay.v1 service, typed by its messages, through the real server with
the client's retry policy and typed errors."""

from __future__ import annotations

import collections.abc
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from condpay.client import Client
from condpay.errors import ApiError
from condpay.v1 import (
    asset_pb2,
    central_bank_pb2,
    contract_pb2,
    evidence_pb2,
    finance_pb2,
    money_pb2,
    operation_pb2,
    oracle_pb2,
    payment_pb2,
    settlement_pb2,
    wallet_pb2,
)
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import status_pb2

from tests.support.harness import Harness
from wallets import OwnerKey

ROOT = Path(__file__).resolve().parents[1]
SERVICES: list[ServiceDescriptor] = [
    service
    for module in (
        asset_pb2,
        central_bank_pb2,
        contract_pb2,
        evidence_pb2,
        finance_pb2,
        operation_pb2,
        oracle_pb2,
        payment_pb2,
        settlement_pb2,
        wallet_pb2,
    )
    for service in module.DESCRIPTOR.services_by_name.values()
]


def _snake(name: str) -> str:
    name = name.replace("PvP", "Pvp").replace("DvP", "Dvp")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def test_every_rpc_has_a_facade_method_typed_by_its_messages() -> None:
    client = Client("127.0.0.1:9", caller="central_bank/pboc")  # never connects
    try:
        facades = {
            type(getattr(client.api, slot)).__name__: getattr(client.api, slot)
            for slot in type(client.api).__slots__
            if not slot.startswith("_")
        }
        assert sorted(facades) == sorted(s.name for s in SERVICES)
        assert len(SERVICES) == 10
        rpcs = 0
        for service in SERVICES:
            facade = facades[service.name]
            for method in service.methods:
                hints = typing.get_type_hints(getattr(type(facade), _snake(method.name)))
                assert hints["request"].DESCRIPTOR is method.input_type, method.full_name
                returned = hints["return"]
                if method.server_streaming:
                    assert typing.get_origin(returned) is collections.abc.AsyncIterator
                    (returned,) = typing.get_args(returned)
                assert returned.DESCRIPTOR is method.output_type, method.full_name
                rpcs += 1
        assert rpcs == 49
        not_an_api_request = status_pb2.Status()
        with pytest.raises(TypeError, match=r"no condpay method takes a google\.rpc\.Status"):
            await client.send(not_an_api_request)  # type: ignore[call-overload]
    finally:
        await client.close()


async def test_facades_call_the_server_with_retries_and_typed_errors(harness: Harness) -> None:
    cb = harness.client()
    bank_key = await harness.institution("icbc-sz")
    issued = await cb.api.central_bank.issue(
        central_bank_pb2.IssueRequest(
            request_id="issue-1",
            institution_id="icbc-sz",
            amount=money_pb2.Money(currency="CNY", amount_minor=1_000_00),
        )
    )
    assert isinstance(issued, central_bank_pb2.IssueResponse)
    assert issued.entry.postings[-1].amount.amount_minor == 1_000_00

    bank = harness.client("institution/icbc-sz")
    key = OwnerKey.generate()
    opened = await bank.api.wallets.open_wallet(
        wallet_pb2.OpenWalletRequest(
            request_id="open-1",
            institution_id="icbc-sz",
            kind=wallet_pb2.WALLET_KIND_PERSONAL,
            tier=2,
            owner_public_key=key.public_key,
        )
    )
    wallet_id = opened.wallet.wallet_id
    request = bank.transfer_request(
        bank_key, "w_reserve.icbc-sz", wallet_id, "CNY", 250_00, request_id="t-1"
    )
    first = await bank.api.wallets.transfer(request)
    again = await bank.send(request)  # the same bytes: the stored outcome, never a 2nd effect
    assert isinstance(again, wallet_pb2.TransferResponse)
    assert (first.operation.replayed, again.operation.replayed) == (False, True)
    assert again.entry.seq == first.entry.seq == first.operation.commit_seq

    looked_up = await bank.api.operations.get_operation(
        operation_pb2.GetOperationRequest(request_id="t-1")
    )
    assert looked_up.operation.commit_seq == first.entry.seq

    with pytest.raises(ApiError) as refused:
        await bank.api.wallets.get_wallet(wallet_pb2.GetWalletRequest(wallet_id="w_nobody"))
    assert (refused.value.code.name, refused.value.reason) == ("NOT_FOUND", "WALLET_NOT_FOUND")


def test_send_and_the_facades_are_typed_for_mypy(tmp_path: Path) -> None:
    """mypy --strict sees the reply type of ``send`` and of each facade method."""
    sample = tmp_path / "typed_calls.py"
    sample.write_text(
        "from typing import assert_type\n"
        "from condpay.client import Client\n"
        "from condpay.v1 import payment_pb2, settlement_pb2, wallet_pb2\n\n\n"
        "async def calls(client: Client) -> None:\n"
        "    reply = await client.send(wallet_pb2.TransferRequest())\n"
        "    assert_type(reply, wallet_pb2.TransferResponse)\n"
        "    pvp = await client.api.settlements.settle_pvp(settlement_pb2.SettlePvPRequest())\n"
        "    assert_type(pvp, settlement_pb2.SettlePvPResponse)\n"
        "    stream = client.api.payments.watch_payment(payment_pb2.WatchPaymentRequest())\n"
        "    async for update in stream:\n"
        "        assert_type(update, payment_pb2.WatchPaymentResponse)\n"
        "    await client.api.wallets.transfer(settlement_pb2.SettlePvPRequest())  # wrong type\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(sample)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, checked.stdout
    assert "typed_calls.py:14:" in errors[0], errors
    assert "[arg-type]" in errors[0], errors
