"""A ready-to-use bridge for demos and tests: participating banks, one liquidity provider, rates
and balances. Idempotent (fixed request ids), so it can run on every start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bridges._api import BridgeAdminApi
from bridges._model import AccountKind, Money, Rate
from wallets.currencies import CURRENCY_CODES

#: One participating bank per jurisdiction.
DEMO_BANKS: Final[Mapping[str, str]] = {
    "BOCHK": "Bank of China (Hong Kong)",
    "ENBD": "Emirates NBD",
    "ICBC": "Industrial and Commercial Bank of China",
    "KBANK": "Kasikornbank",
    "SNB": "Saudi National Bank",
}
DEMO_PROVIDER: Final = "FXLP"
DEMO_SPREAD_PPM: Final = 2_500
#: Reference units per minor unit (the reference unit here is the fen: CNY is 1/1).
DEMO_RATES: Final[Mapping[str, Rate]] = {
    "AED": Rate(19_432, 10_000),
    "CNY": Rate(1, 1),
    "HKD": Rate(9_235, 10_000),
    "SAR": Rate(19_025, 10_000),
    "THB": Rate(2_010, 10_000),
}
DEMO_BANK_BALANCE_MINOR: Final = 10_000_000_00
DEMO_LIQUIDITY_MINOR: Final = 1_000_000_000_00


async def bootstrap(
    api: BridgeAdminApi,
    *,
    banks: Mapping[str, str] = DEMO_BANKS,
    provider: str = DEMO_PROVIDER,
    spread_ppm: int = DEMO_SPREAD_PPM,
    rates: Mapping[str, Rate] = DEMO_RATES,
    bank_balance_minor: int = DEMO_BANK_BALANCE_MINOR,
    liquidity_minor: int = DEMO_LIQUIDITY_MINOR,
) -> None:
    """Register ``banks`` and ``provider``, publish ``rates``, and have each central bank issue
    ``bank_balance_minor`` of its currency to every bank and ``liquidity_minor`` to the
    provider's liquidity account."""
    for bank_id, name in sorted(banks.items()):
        await api.register_bank(bank_id, name=name)
    await api.register_bank(provider, name="mBridge FX liquidity provider")
    await api.register_liquidity_provider(provider, spread_ppm=spread_ppm)
    for currency, value in sorted(rates.items()):
        await api.publish_rate(currency, value)
    for currency in CURRENCY_CODES:
        for bank_id in sorted(banks):
            await api.issue(
                f"bootstrap:{bank_id}:{currency}",
                participant_id=bank_id,
                amount=Money(currency, bank_balance_minor),
            )
        await api.issue(
            f"bootstrap:{provider}:{currency}",
            participant_id=provider,
            amount=Money(currency, liquidity_minor),
            account_kind=AccountKind.LIQUIDITY,
        )
