"""Signed owner instructions: what a wallet owner authorises, as exact bytes plus a signature.

The server decodes the transmitted bytes (strictly: one encoding per instruction), looks up the
source wallet's key, and verifies the signature over those same bytes; it never rebuilds them from
other request fields. Build and sign with :func:`sign_transfer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wallets import canonical
from wallets.errors import MalformedInstruction
from wallets.keys import OwnerKey

TRANSFER_V1: Final = "condpay.transfer.v1"
_TRANSFER_FIELDS: Final = (
    "source",
    "target",
    "currency",
    "amount_minor",
    "request_id",
    "expires_at_us",
    "memo",
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
        return canonical.encode(
            TRANSFER_V1,
            [
                ("source", self.source),
                ("target", self.target),
                ("currency", self.currency),
                ("amount_minor", str(self.amount_minor)),
                ("request_id", self.request_id),
                ("expires_at_us", str(self.expires_at_us)),
                ("memo", self.memo),
            ],
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TransferInstruction:
        """Decode canonical bytes; MalformedInstruction on anything else."""
        f = canonical.decode(data, TRANSFER_V1, _TRANSFER_FIELDS)
        currency = f["currency"]
        if (
            len(currency) != 3
            or not currency.isascii()
            or not currency.isalpha()
            or not currency.isupper()
        ):
            raise MalformedInstruction(
                "currency must be a three-letter ISO 4217 code", field="currency"
            )
        instruction = cls(
            source=canonical.parse_id(f["source"], "source"),
            target=canonical.parse_id(f["target"], "target"),
            currency=currency,
            amount_minor=canonical.parse_uint(f["amount_minor"], "amount_minor"),
            request_id=canonical.parse_id(f["request_id"], "request_id"),
            expires_at_us=canonical.parse_uint(f["expires_at_us"], "expires_at_us"),
            memo=canonical.parse_text(f["memo"], "memo"),
        )
        # Every field was parsed strictly, so these bytes are the one encoding of the instruction
        # (tests/test_wallets.py checks that from_bytes(b).to_bytes() == b whenever it parses).
        return instruction


@dataclass(frozen=True, slots=True)
class SignedInstruction:
    payload: bytes
    signature: bytes


def sign_transfer(key: OwnerKey, instruction: TransferInstruction) -> SignedInstruction:
    """Client-side helper: the instruction's canonical bytes and the owner's signature over them."""
    payload = instruction.to_bytes()
    TransferInstruction.from_bytes(payload)  # refuse to sign what the server would refuse
    return SignedInstruction(payload, key.sign(payload))
