"""BLS12-381 signatures for quorums: oracle committees and bridge validators.

The IETF ciphersuite with proof of possession, minimal-pubkey-size (public keys in G1, 48 bytes;
signatures in G2, 96 bytes): ``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``. Aggregate
verification is only sound for keys whose proof of possession was checked (otherwise a rogue key
``g1·x − pk_honest`` lets one signer forge an aggregate), so callers register keys through
:func:`BlsBackend.pop_verify` before they ever count them.

Two backends, one interface:
- ``py_ecc``: pure Python, the reference (≈0.3 s per verification here);
- ``blspy``: native (≈1 ms), used when installed.
Both give byte-identical keys, signatures and proofs for the same secret key
(tests/test_bls.py checks them against each other). :func:`backend` returns the fastest available;
``CONDPAY_BLS_BACKEND=py_ecc`` forces the reference.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from functools import cache
from typing import Final, Protocol

from eth_typing import BLSPubkey, BLSSignature

# py-ecc raises the interpreter's recursion limit to 100,000 when imported, process-wide. Then deep
# recursion anywhere (a JSON or contract parser fed hostile input) overflows the C stack and kills
# the process instead of raising RecursionError. Nothing we call from py-ecc needs it: put it back.
_RECURSION_LIMIT: Final = sys.getrecursionlimit()
from py_ecc.bls.ciphersuites import G2ProofOfPossession as _PyEcc  # noqa: E402

sys.setrecursionlimit(min(sys.getrecursionlimit(), max(_RECURSION_LIMIT, 1000)))

PUBLIC_KEY_BYTES: Final = 48
SIGNATURE_BYTES: Final = 96


class BlsBackend(Protocol):
    name: str

    def public_key(self, secret_key: int) -> bytes: ...

    def sign(self, secret_key: int, message: bytes) -> bytes: ...

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...

    def aggregate(self, signatures: Sequence[bytes]) -> bytes: ...

    def fast_aggregate_verify(
        self, public_keys: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        """One message signed by every key; False (never an exception) on malformed input."""
        ...

    def pop_prove(self, secret_key: int) -> bytes: ...

    def pop_verify(self, public_key: bytes, proof: bytes) -> bool: ...


def secret_key(ikm: bytes) -> int:
    """A secret key from at least 32 bytes of key material (IETF KeyGen)."""
    if len(ikm) < 32:
        raise ValueError("BLS key material must be at least 32 bytes")
    key: int = _PyEcc.KeyGen(ikm)
    return key


class PyEccBackend:
    name = "py_ecc"

    def public_key(self, secret_key: int) -> bytes:
        return bytes(_PyEcc.SkToPk(secret_key))

    def sign(self, secret_key: int, message: bytes) -> bytes:
        return bytes(_PyEcc.Sign(secret_key, message))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        try:
            return bool(_PyEcc.Verify(BLSPubkey(public_key), message, BLSSignature(signature)))
        except Exception:  # py-ecc raises on some malformed points
            return False

    def aggregate(self, signatures: Sequence[bytes]) -> bytes:
        return bytes(_PyEcc.Aggregate([BLSSignature(s) for s in signatures]))

    def fast_aggregate_verify(
        self, public_keys: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        try:
            keys = [BLSPubkey(k) for k in public_keys]
            return bool(_PyEcc.FastAggregateVerify(keys, message, BLSSignature(signature)))
        except Exception:
            return False

    def pop_prove(self, secret_key: int) -> bytes:
        return bytes(_PyEcc.PopProve(secret_key))

    def pop_verify(self, public_key: bytes, proof: bytes) -> bool:
        try:
            return bool(_PyEcc.PopVerify(BLSPubkey(public_key), BLSSignature(proof)))
        except Exception:
            return False


class BlspyBackend:
    name = "blspy"

    def __init__(self) -> None:
        import blspy

        self._b = blspy
        self._scheme = blspy.PopSchemeMPL

    def _sk(self, secret_key: int) -> object:
        return self._b.PrivateKey.from_bytes(secret_key.to_bytes(32, "big"))

    def public_key(self, secret_key: int) -> bytes:
        return bytes(self._sk(secret_key).get_g1())  # type: ignore[attr-defined]

    def sign(self, secret_key: int, message: bytes) -> bytes:
        return bytes(self._scheme.sign(self._sk(secret_key), message))

    def _g1(self, data: bytes) -> object:
        if len(data) != PUBLIC_KEY_BYTES:
            raise ValueError("public key length")
        return self._b.G1Element.from_bytes(data)

    def _g2(self, data: bytes) -> object:
        if len(data) != SIGNATURE_BYTES:
            raise ValueError("signature length")
        return self._b.G2Element.from_bytes(data)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        try:
            return bool(self._scheme.verify(self._g1(public_key), message, self._g2(signature)))
        except (ValueError, RuntimeError):
            return False

    def aggregate(self, signatures: Sequence[bytes]) -> bytes:
        return bytes(self._scheme.aggregate([self._g2(s) for s in signatures]))

    def fast_aggregate_verify(
        self, public_keys: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        if not public_keys:
            return False
        try:
            keys = [self._g1(k) for k in public_keys]
            return bool(self._scheme.fast_aggregate_verify(keys, message, self._g2(signature)))
        except (ValueError, RuntimeError):
            return False

    def pop_prove(self, secret_key: int) -> bytes:
        return bytes(self._scheme.pop_prove(self._sk(secret_key)))

    def pop_verify(self, public_key: bytes, proof: bytes) -> bool:
        try:
            return bool(self._scheme.pop_verify(self._g1(public_key), self._g2(proof)))
        except (ValueError, RuntimeError):
            return False


def available_backends() -> list[BlsBackend]:
    backends: list[BlsBackend] = [PyEccBackend()]
    with contextlib.suppress(ImportError):  # blspy is optional: py-ecc always works
        backends.append(BlspyBackend())
    return backends


@cache
def backend() -> BlsBackend:
    """The fastest installed backend, unless ``CONDPAY_BLS_BACKEND`` names one."""
    wanted = os.environ.get("CONDPAY_BLS_BACKEND", "")
    backends = {b.name: b for b in available_backends()}
    if wanted:
        if wanted not in backends:
            raise RuntimeError(f"CONDPAY_BLS_BACKEND={wanted!r} is not installed")
        return backends[wanted]
    return backends.get("blspy") or backends["py_ecc"]
