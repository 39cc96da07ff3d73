"""The server over mutual TLS: identities come from client certificates only, the role table
applies to them, and `condpay serve` without certificates or --insecure refuses to start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from condpay.client import Client
from condpay.errors import PermissionDenied, Unavailable

from tests.support.harness import Harness, start_harness
from wallets import OwnerKey


@pytest.fixture
async def tls_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with start_harness(f"sqlite:///{tmp_path}/condpay.db", certs_dir=tmp_path / "certs") as h:
        yield h


async def test_calls_carry_the_certificate_identity(tls_harness: Harness) -> None:
    cb = tls_harness.client("central_bank/pboc")
    bank_key = OwnerKey.generate()
    await cb.register_institution("icbc-sz", "ICBC Shenzhen", bank_key.public_key)
    reply = await cb.issue("icbc-sz", "CNY", 1_000_00)
    assert reply.entry.caller == "central_bank/pboc"
    bank = tls_harness.client("institution/icbc-sz")
    wallet = (await bank.open_wallet("icbc-sz", OwnerKey.generate().public_key)).wallet
    assert wallet.institution_id == "icbc-sz"
    moved = await bank.transfer(bank_key, "w_reserve.icbc-sz", wallet.wallet_id, "CNY", 10_00)
    assert moved.entry.caller == "institution/icbc-sz"


async def test_metadata_cannot_claim_another_identity(tls_harness: Harness) -> None:
    platform = tls_harness.client("platform/gba-trade")
    # The client also sends condpay-caller metadata; over TLS the server ignores it.
    spoofing = Client(
        tls_harness.address,
        caller="central_bank/pboc",
        channel=platform._channel,  # the platform's certificate, a central-bank claim
    )
    with pytest.raises(PermissionDenied) as refused:
        await spoofing.issue("icbc-sz", "CNY", 1_00)
    assert refused.value.reason == "ROLE_NOT_ALLOWED"
    assert refused.value.metadata["role"] == "platform"


async def test_a_plaintext_client_gets_nothing(tls_harness: Harness) -> None:
    async with Client(tls_harness.address, caller="central_bank/pboc", attempts_max=1) as plain:
        with pytest.raises(Unavailable):
            await plain.get_supply("CNY")


async def test_health_needs_a_certificate_too(tls_harness: Harness) -> None:
    async with grpc.aio.insecure_channel(tls_harness.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
