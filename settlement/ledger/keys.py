"""Wallet owner keys, cached. A wallet's key never changes once it is opened, so every replica
may cache it without ever disagreeing with another."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from settlement import limits
from settlement.ledger.reads import LedgerReader
from wallets import load_public_key


class WalletKeys:
    def __init__(self, reader: LedgerReader) -> None:
        self._reader = reader
        self._keys: dict[str, Ed25519PublicKey] = {}

    async def get(self, wallet_id: str) -> Ed25519PublicKey | None:
        key = self._keys.get(wallet_id)
        if key is None:
            raw = await self._reader.wallet_public_key(wallet_id)
            if raw is None:
                return None  # not cached: the wallet may be opened later
            key = load_public_key(raw)
            if len(self._keys) >= limits.WALLET_KEY_CACHE_ENTRIES_MAX:
                del self._keys[next(iter(self._keys))]
            self._keys[wallet_id] = key
        return key
