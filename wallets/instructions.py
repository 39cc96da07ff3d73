"""Signed owner instructions: what a wallet owner authorises, as exact bytes plus a signature.

The server decodes the transmitted bytes (strictly: one encoding per instruction), looks up the
source wallet's key, and verifies the signature over those same bytes; it never rebuilds them from
other request fields. Build and sign with :func:`sign_transfer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wallets import canonical
from wallets.keys import OwnerKey

TRANSFER_V1: Final = "condpay.transfer.v1"
_TRANSFER: Final = canonical.DocumentFormat(
    TRANSFER_V1,
    (
        ("source", canonical.Field.ID),
        ("target", canonical.Field.ID),
        ("currency", canonical.Field.CURRENCY),
        ("amount_minor", canonical.Field.UINT),
        ("request_id", canonical.Field.ID),
        ("expires_at_us", canonical.Field.UINT),
        ("memo", canonical.Field.TEXT),
    ),
)


@dataclass(frozen=True, slots=True)
class TransferInstruction:
    """Move ``amount_minor`` of ``currency`` from ``source`` to ``target`` (wallet ids)."""

    source: str
    target: str
    currency: str
    amount_minor: int
    request_id: str
    expires_at_us: int
    memo: str = ""

    def to_bytes(self) -> bytes:
        return _TRANSFER.encode(
            {
                "source": self.source,
                "target": self.target,
                "currency": self.currency,
                "amount_minor": self.amount_minor,
                "request_id": self.request_id,
                "expires_at_us": self.expires_at_us,
                "memo": self.memo,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TransferInstruction:
        """Decode canonical bytes; MalformedInstruction on anything else."""
        f = _TRANSFER.decode(data)
        return cls(
            source=str(f["source"]),
            target=str(f["target"]),
            currency=str(f["currency"]),
            amount_minor=int(f["amount_minor"]),
            request_id=str(f["request_id"]),
            expires_at_us=int(f["expires_at_us"]),
            memo=str(f["memo"]),
        )


@dataclass(frozen=True, slots=True)
class SignedInstruction:
    payload: bytes
    signature: bytes


def sign_transfer(key: OwnerKey, instruction: TransferInstruction) -> SignedInstruction:
    """Client-side helper: the instruction's canonical bytes and the owner's signature over them."""
    payload = instruction.to_bytes()
    TransferInstruction.from_bytes(payload)  # refuse to sign what the server would refuse
    return SignedInstruction(payload, key.sign(payload))
