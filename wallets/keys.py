"""Wallet owner keys: Ed25519.

The owner holds the private key; condpay stores only the 32-byte raw public key and verifies
signatures over the exact bytes a client transmitted.

Verification has two backends behind one function, :func:`verify`:
- ``cryptography`` (OpenSSL), the reference, ≈ 90 µs per verification here;
- ``pynacl`` (libsodium), ≈ 45 µs, and it releases the GIL, so a thread can verify while the
  event loop serves calls. The default.
They agree on every key :func:`check_public_key` accepts (tests/test_wallets.py), which is every
key a wallet can have; ``CONDPAY_ED25519_BACKEND=cryptography`` forces the reference.
"""

from __future__ import annotations

import contextlib
import os
from functools import cache
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_core_ed25519_is_valid_point

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


def check_public_key(public_key: bytes) -> bytes:
    """A raw 32-byte Ed25519 public key that is a canonical point of the prime-order subgroup, or
    BadSignature. Small-order keys are refused: OpenSSL would accept forged signatures for them
    (tests/test_wallets.py shows one), so no wallet may ever be opened with one."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise BadSignature(f"a public key is {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    if not crypto_core_ed25519_is_valid_point(public_key):
        raise BadSignature("not a valid Ed25519 public key (off the curve or of small order)")
    return public_key


class Ed25519Backend(Protocol):
    name: str

    def verify(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        """True if valid; False (never an exception) otherwise."""
        ...


class CryptographyEd25519:
    name = "cryptography"

    def verify(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class NaclEd25519:
    name = "pynacl"

    def __init__(self) -> None:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import CryptoError

        self._open = crypto_sign_open
        self._error = CryptoError

    def verify(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            return False
        try:
            self._open(signature + message, public_key)
        except self._error:
            return False
        return True


def available_ed25519_backends() -> list[Ed25519Backend]:
    backends: list[Ed25519Backend] = [CryptographyEd25519()]
    with contextlib.suppress(ImportError):  # PyNaCl is optional: cryptography always works
        backends.append(NaclEd25519())
    return backends


@cache
def ed25519_backend() -> Ed25519Backend:
    wanted = os.environ.get("CONDPAY_ED25519_BACKEND", "")
    backends = {b.name: b for b in available_ed25519_backends()}
    if wanted:
        if wanted not in backends:
            raise RuntimeError(f"CONDPAY_ED25519_BACKEND={wanted!r} is not installed")
        return backends[wanted]
    return backends.get("pynacl") or backends["cryptography"]


def verify(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Raise BadSignature unless ``signature`` is the key's signature over ``message``."""
    if len(signature) != SIGNATURE_BYTES:
        raise BadSignature(f"a signature is {SIGNATURE_BYTES} bytes, got {len(signature)}")
    if not ed25519_backend().verify(public_key, signature, message):
        raise BadSignature("the signature does not verify over the instruction bytes")
