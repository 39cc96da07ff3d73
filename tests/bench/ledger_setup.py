"""The wallets a transfer benchmark needs, made through the public gRPC API like any client would.

The central bank registers one operating institution and issues CNY to it; the institution opens
enterprise wallets (no balance cap; single-payment and daily caps far above what a run spends):
``sources`` funded payers, as many distinct payees, and one hot payee; and it funds every payer
from its reserve with a signed transfer. Keys are generated afresh for every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from condpay.client import Client

from wallets import OwnerKey

T = TypeVar("T")

CENTRAL_BANK = "central_bank/pboc"
INSTITUTION_ID = "bench-bank"
INSTITUTION = f"institution/{INSTITUTION_ID}"
RESERVE_WALLET = f"w_reserve.{INSTITUTION_ID}"
CURRENCY = "CNY"
FUNDING_MINOR = 100_000_00  # per payer: 100,000.00 CNY, 100,000 transfers of 1.00
SETUP_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class Payer:
    wallet_id: str
    key: OwnerKey


@dataclass(frozen=True, slots=True)
class BenchLedger:
    payers: tuple[Payer, ...]
    payees: tuple[str, ...]  # payees[i] is paid by payers[i] in the uncontended shape
    hot_wallet: str

    @property
    def funded_minor(self) -> int:
        return FUNDING_MINOR * len(self.payers)


async def _bounded(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await ``calls`` with at most SETUP_CONCURRENCY in flight."""
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def _open_wallets(bank: Client, keys: Sequence[OwnerKey], name: str) -> list[str]:
    replies = await _bounded(
        [
            bank.open_wallet(
                INSTITUTION_ID,
                key.public_key,
                kind="ENTERPRISE",
                tier=0,
                display_name=f"bench {name} {i}",
            )
            for i, key in enumerate(keys)
        ]
    )
    return [reply.wallet.wallet_id for reply in replies]


async def build_ledger(address: str, *, payers: int) -> BenchLedger:
    """Register, issue, open ``payers`` payers, as many payees and one hot wallet; fund payers."""
    central_bank = Client(address, caller=CENTRAL_BANK)
    bank = central_bank.with_caller(INSTITUTION)
    try:
        reserve_key = OwnerKey.generate()
        await central_bank.register_institution(
            INSTITUTION_ID, "Bench Bank", reserve_key.public_key
        )
        await central_bank.issue(INSTITUTION_ID, CURRENCY, FUNDING_MINOR * payers)
        payer_keys = [OwnerKey.generate() for _ in range(payers)]
        payer_ids = await _open_wallets(bank, payer_keys, "payer")
        payee_ids = await _open_wallets(bank, [OwnerKey.generate() for _ in range(payers)], "payee")
        (hot_wallet,) = await _open_wallets(bank, [OwnerKey.generate()], "hot")
        await _bounded(
            [
                bank.transfer(reserve_key, RESERVE_WALLET, wallet_id, CURRENCY, FUNDING_MINOR)
                for wallet_id in payer_ids
            ]
        )
    finally:
        await central_bank.close()
    return BenchLedger(
        payers=tuple(Payer(w, k) for w, k in zip(payer_ids, payer_keys, strict=True)),
        payees=tuple(payee_ids),
        hot_wallet=hot_wallet,
    )
