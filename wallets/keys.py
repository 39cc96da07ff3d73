"""Wallet owner keys: Ed25519 through ``cryptography``.

The owner holds the private key; condpay stores only the 32-byte raw public key and verifies
signatures over the exact bytes a client transmitted.
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wallets.errors import BadSignature

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64


class OwnerKey:
    """A wallet owner's Ed25519 signing key."""

    __slots__ = ("_private", "public_key")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> OwnerKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> OwnerKey:
        """A key from 32 secret bytes: deterministic keys for simulations and tests."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def load_public_key(public_key: bytes) -> Ed25519PublicKey:
    """Parse a raw 32-byte public key; BadSignature if it is not one."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise BadSignature(f"a public key is {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise BadSignature("not an Ed25519 public key") from exc


def verify(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    """Raise BadSignature unless ``signature`` is the key's signature over ``message``."""
    if len(signature) != SIGNATURE_BYTES:
        raise BadSignature(f"a signature is {SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        raise BadSignature("the signature does not verify over the instruction bytes") from None
