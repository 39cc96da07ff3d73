"""The SDK rides out a server restart with its defaults alone (issue 12): a transfer and a lock in
flight when the server dies, after their batch committed and before any reply, complete once the
server is back, each with exactly one effect. Real `condpay serve` processes, SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from condpay.client import Client, PaymentsClient
from condpay.ids import payment_id_for

from contracts_dsl import compile_source
from settlement.faults import CRASH_EXIT_STATUS
from tests.payments.fleet import RestartableServer
from tests.support.contracts import receipt_contract
from wallets import OwnerKey

BANK = "icbc-sz"
RESERVE = f"w_reserve.{BANK}"
PLATFORM = "platform/restart"
# The restart the issue asks the defaults to ride out: down for a few seconds, back within 8 s.
DOWN_SECONDS = 3.0
SOURCE = receipt_contract("restart-receipt")


def _key(name: str) -> OwnerKey:
    return OwnerKey.from_seed(name.encode().ljust(32, b"-")[:32])


async def _exited(server: RestartableServer, timeout_s: float = 30.0) -> int:
    give_up = time.monotonic() + timeout_s
    while (status := server.exit_status()) is None:
        assert time.monotonic() < give_up, "the fault point never fired"
        await asyncio.sleep(0.01)
    return status


async def test_a_transfer_and_a_lock_in_flight_complete_once_across_a_restart(
    tmp_path: Path, database_url: str
) -> None:
    server = RestartableServer(database_url, tmp_path / "logs")
    server.start_with()
    await server.wait_ready()
    contract = compile_source(SOURCE, "<restart>").contract
    assert contract is not None
    keys = {name: _key(name) for name in ("bank", "buyer", "seller")}
    try:
        async with Client(server.address, caller="central_bank/pboc") as cb:
            await cb.register_institution(BANK, "ICBC Shenzhen", keys["bank"].public_key)
            await cb.issue(BANK, "CNY", 10_000_000_00)
        wallets = {}
        async with Client(server.address, caller=f"institution/{BANK}") as bank:
            for name in ("buyer", "seller"):
                opened = await bank.open_wallet(
                    BANK, keys[name].public_key, kind="ENTERPRISE", tier=0
                )
                wallets[name] = opened.wallet.wallet_id
            await bank.transfer(keys["bank"], RESERVE, wallets["buyer"], "CNY", 500_000_00)
        assert await asyncio.to_thread(server.stop) == 0

        # Every batch that commits now kills the server before its callers hear of it.
        server.start_with({"CONDPAY_FAULT_POINTS": "after_commit_before_reply=1"})
        await server.wait_ready()
        bank = Client(server.address, caller=f"institution/{BANK}")  # the SDK's defaults
        platform = PaymentsClient(server.address, caller=PLATFORM)
        params = {"buyer": wallets["buyer"], "seller": wallets["seller"], "price": ("CNY", 80_00)}
        try:
            transfer = asyncio.create_task(
                bank.transfer(
                    keys["bank"], RESERVE, wallets["seller"], "CNY", 123_45, request_id="t-1"
                )
            )
            lock = asyncio.create_task(
                platform.lock_payment(
                    keys["buyer"], contract, params, send_source=SOURCE, request_id="l-1"
                )
            )
            assert await _exited(server) == CRASH_EXIT_STATUS
            died = time.monotonic()
            await asyncio.sleep(DOWN_SECONDS)
            server.start_with()  # back, without faults
            transferred, locked = await asyncio.gather(transfer, lock)
            back_after = time.monotonic() - died
        finally:
            await bank.close()
            await platform.close()
        assert server.fault_crashes()["after_commit_before_reply"] == 1
        assert back_after < 30  # within the default deadline

        # Exactly one effect each: the answers are the stored ones (at least one of the two was
        # committed before the crash and is answered as a replay) or the first execution.
        assert transferred.operation.replayed or locked.operation.replayed
        async with Client(server.address, caller="central_bank/pboc") as cb:
            entries = [e async for e in cb.journal()]
            seller = await cb.get_wallet(wallets["seller"])
            buyer = await cb.get_wallet(wallets["buyer"])
        assert [e.seq for e in entries if e.request_id == "t-1"] == [transferred.entry.seq]
        assert len([e for e in entries if e.request_id == "l-1"]) == 1
        assert locked.payment.payment_id == payment_id_for(PLATFORM, "l-1")
        (seller_cny,) = seller.balances
        assert seller_cny.available.amount_minor == 123_45
        (buyer_cny,) = buyer.balances
        assert (buyer_cny.available.amount_minor, buyer_cny.held.amount_minor) == (
            500_000_00 - 80_00,
            80_00,
        )
    finally:
        server.stop(kill=True)
