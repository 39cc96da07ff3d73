"""``make run``: a short end-to-end story through the public gRPC API.

The People's Bank of China registers an operating institution and issues e-CNY to it; the
institution opens wallets for a Shenzhen electronics maker and its overseas buyer and funds the
buyer; the buyer pays the seller on a signed instruction; a retry with the same request id is
answered from storage; an overdraft is refused with typed details. Then balances, the journal and
the supply audit are printed.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from condpay.client import Client
from condpay.errors import FailedPrecondition
from condpay.v1 import errors_pb2, ledger_pb2
from rich.console import Console
from rich.table import Table

from sim_central_bank.server_process import ServerProcess
from wallets import OwnerKey, TransferInstruction, format_money, sign_transfer

DEMO_DIR = Path("var") / "demo"
console = Console()


def _seeded_key(name: str) -> OwnerKey:
    return OwnerKey.from_seed(name.encode().ljust(32, b".")[:32])


async def story(address: str) -> None:
    cb = Client(address, caller="central_bank/pboc")
    bank = cb.with_caller("institution/icbc-sz")
    platform = cb.with_caller("platform/gba-trade")
    try:
        bank_key = _seeded_key("icbc-sz reserve")
        await cb.register_institution("icbc-sz", "ICBC Shenzhen", bank_key.public_key)
        await cb.issue("icbc-sz", "CNY", 10_000_000_00, memo="two-tier issuance")
        console.print("[bold]PBoC[/] registered ICBC Shenzhen and issued 10,000,000.00 CNY")

        seller_key, buyer_key = _seeded_key("shenzhen maker"), _seeded_key("overseas buyer")
        seller = (
            await bank.open_wallet(
                "icbc-sz",
                seller_key.public_key,
                kind="ENTERPRISE",
                tier=0,
                display_name="Shenzhen Maker Ltd",
            )
        ).wallet
        buyer = (
            await bank.open_wallet(
                "icbc-sz",
                buyer_key.public_key,
                kind="ENTERPRISE",
                tier=0,
                display_name="LAX Import Co",
            )
        ).wallet
        await bank.transfer(
            bank_key,
            "w_reserve.icbc-sz",
            buyer.wallet_id,
            "CNY",
            200_000_00,
            memo="buyer funds its wallet",
        )
        console.print(
            f"ICBC opened wallets {seller.wallet_id} (seller), {buyer.wallet_id} "
            "(buyer) and funded the buyer with 200,000.00 CNY"
        )

        # The buyer signs once; the platform sends, loses the reply, and sends the same bytes.
        payment = sign_transfer(
            buyer_key,
            TransferInstruction(
                source=buyer.wallet_id,
                target=seller.wallet_id,
                currency="CNY",
                amount_minor=125_000_00,
                request_id="po-1127",
                expires_at_us=int((time.time() + 600) * 1e6),
                memo="PO-2026-1127",
            ),
        )
        first = await platform.transfer_signed(payment.payload, payment.signature, "po-1127")
        again = await platform.transfer_signed(payment.payload, payment.signature, "po-1127")
        console.print(
            f"The buyer paid 125,000.00 CNY (journal entry {first.entry.seq}); the "
            f"retry with the same request id was a replay: {again.operation.replayed}, "
            f"same entry {again.entry.seq}"
        )
        try:
            await platform.transfer(buyer_key, buyer.wallet_id, seller.wallet_id, "CNY", 900_000_00)
        except FailedPrecondition as refused:
            detail = refused.detail(errors_pb2.InsufficientFunds)
            assert detail is not None
            console.print(
                f"An overdraft was refused: [bold]{refused.reason}[/] needed "
                f"{format_money(detail.needed_minor, detail.currency)}, available "
                f"{format_money(detail.available_minor, detail.currency)}"
            )

        balances = Table(title="Balances (CNY)")
        for column in ("wallet", "available", "held", "spent today"):
            balances.add_column(column, justify="left" if column == "wallet" else "right")
        for wallet_id in ("w_reserve.icbc-sz", buyer.wallet_id, seller.wallet_id):
            wallet = await bank.get_wallet(wallet_id)
            cny = next(b for b in wallet.balances if b.available.currency == "CNY")
            balances.add_row(
                f"{wallet.display_name} ({wallet_id})",
                format_money(cny.available.amount_minor, "CNY"),
                format_money(cny.held.amount_minor, "CNY"),
                format_money(cny.spent_today.amount_minor, "CNY"),
            )
        console.print(balances)

        journal = Table(title="Journal (hash-chained)")
        for column in ("seq", "kind", "postings", "memo", "hash"):
            journal.add_column(column)
        async for entry in cb.journal():
            postings = "\n".join(
                f"{p.account_id} {'+' if p.amount.amount_minor > 0 else ''}"
                f"{format_money(p.amount.amount_minor, p.amount.currency)}"
                for p in entry.postings
            )
            journal.add_row(
                str(entry.seq),
                ledger_pb2.EntryKind.Name(entry.kind)[11:],
                postings,
                entry.memo,
                entry.hash.hex()[:16] + "…",
            )
        console.print(journal)

        (line,) = (await cb.get_supply("CNY")).supplies
        verdict = "[green]PASS[/]" if line.consistent else "[red]FAIL[/]"
        console.print(
            f"Supply audit CNY: issued {format_money(line.issued.amount_minor, 'CNY')}, "
            f"in circulation {format_money(line.in_circulation.amount_minor, 'CNY')}, "
            f"sum of balances {format_money(line.balances_sum.amount_minor, 'CNY')}: "
            f"{verdict}"
        )
        if not line.consistent:
            raise SystemExit(1)
    finally:
        await cb.close()


def main(*, server: str | None = None, database_url: str | None = None) -> int:
    if server:
        asyncio.run(story(server))
        return 0
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    url = database_url or f"sqlite:///{DEMO_DIR / 'condpay.db'}"
    process = ServerProcess(url, log_path=DEMO_DIR / "server.log")
    console.print(f"Starting condpay on embedded SQLite ({url}); server log: {process.log_path}")
    process.start()
    try:
        asyncio.run(_ready_then(process))
    finally:
        status = process.stop()
        console.print(f"Server stopped (exit status {status}).")
    return 0


async def _ready_then(process: ServerProcess) -> None:
    await process.wait_ready()
    await story(process.address)
