"""After-the-fact checks of what a run did, through the public API: the supply audit
(GetSupply: issued - redeemed equals the sum of all balances) and the balances the successful
transfers must have left on the payers, the payees and the hot wallet."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from condpay.client import Client

from tests.bench.ledger_setup import CENTRAL_BANK, CURRENCY, BenchLedger

READ_CONCURRENCY = 32


@dataclass(slots=True)
class Moved:
    """What the transfers answered OK must have moved, in minor units."""

    to_payees: int = 0
    to_hot_wallet: int = 0

    @property
    def from_payers(self) -> int:
        return self.to_payees + self.to_hot_wallet


async def supply_consistent(address: str) -> bool:
    """GetSupply's own audit of the benchmark currency."""
    async with Client(address, caller=CENTRAL_BANK) as central_bank:
        (line,) = (await central_bank.get_supply(CURRENCY)).supplies
        return bool(line.consistent)


async def _available_sum(client: Client, wallet_ids: Sequence[str]) -> int:
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def available(wallet_id: str) -> int:
        async with gate:
            wallet = await client.get_wallet(wallet_id)
        return sum(
            b.available.amount_minor for b in wallet.balances if b.available.currency == CURRENCY
        )

    return sum(await asyncio.gather(*(available(w) for w in wallet_ids)))


async def balance_failures(address: str, ledger: BenchLedger, moved: Moved) -> list[str]:
    """Every balance total that differs from what the OK transfers imply (empty: all match)."""
    async with Client(address, caller=CENTRAL_BANK) as central_bank:
        payers = await _available_sum(central_bank, [p.wallet_id for p in ledger.payers])
        payees = await _available_sum(central_bank, ledger.payees)
        hot = await _available_sum(central_bank, [ledger.hot_wallet])
    expected = {
        "payers": (payers, ledger.funded_minor - moved.from_payers),
        "payees": (payees, moved.to_payees),
        "hot wallet": (hot, moved.to_hot_wallet),
    }
    return [
        f"{name}: balance {actual} minor units, the OK transfers imply {wanted}"
        for name, (actual, wanted) in expected.items()
        if actual != wanted
    ]
