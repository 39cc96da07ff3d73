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
import hashlib
import hmac
import os
import sys
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from py_ecc.bls.ciphersuites import G2ProofOfPossession

PUBLIC_KEY_BYTES: Final = 48
#: Public keys kept decoded by the blspy backend (least recently used dropped first).
G1_DECODED_MAX: Final = 1024
SIGNATURE_BYTES: Final = 96
#: The compressed point at infinity of G2: what aggregating signatures that cancel out gives.
IDENTITY_SIGNATURE: Final = b"\xc0" + bytes(SIGNATURE_BYTES - 1)
# The order r of the BLS12-381 groups (py_ecc.optimized_bls12_381.curve_order).
CURVE_ORDER: Final = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
_KEYGEN_SALT: Final = b"BLS-SIG-KEYGEN-SALT-"
_KEYGEN_BYTES: Final = 48  # ceil(1.5 * ceil(log2(r)) / 8)


@cache
def py_ecc_ciphersuite() -> type[G2ProofOfPossession]:
    """py-ecc's ciphersuite, imported on first use only (≈0.2 s of imports, and the server
    uses blspy when it is installed).

    py-ecc raises the interpreter's recursion limit to 100,000 when imported, process-wide. Then
    deep recursion anywhere (a JSON or contract parser fed hostile input) overflows the C stack
    and kills the process instead of raising RecursionError. Nothing we call from py-ecc needs
    it: put it back. Every import of py-ecc in the project goes through here."""
    limit = sys.getrecursionlimit()
    try:
        from py_ecc.bls.ciphersuites import G2ProofOfPossession
    finally:
        sys.setrecursionlimit(min(sys.getrecursionlimit(), max(limit, 1000)))
    return G2ProofOfPossession


def key_validate(public_key: bytes) -> bool:
    """IETF KeyValidate (py-ecc): a canonical compressed G1 point, in the subgroup, not the
    identity."""
    from eth_typing import BLSPubkey

    return bool(py_ecc_ciphersuite().KeyValidate(BLSPubkey(public_key)))


class BlsBackend(Protocol):
    name: str

    def public_key(self, secret_key: int) -> bytes: ...

    def sign(self, secret_key: int, message: bytes) -> bytes: ...

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...

    def aggregate(self, signatures: Sequence[bytes]) -> bytes: ...

    def sign_aggregate(self, secret_keys: Sequence[int], message: bytes) -> bytes:
        """The aggregate of each key's signature of ``message``: the same bytes as
        ``aggregate([sign(k, message) for k in secret_keys])`` (:func:`sign_aggregate`)."""
        ...

    def fast_aggregate_verify(
        self, public_keys: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        """One message signed by every key; False (never an exception) on malformed input."""
        ...

    def pop_prove(self, secret_key: int) -> bytes: ...

    def pop_verify(self, public_key: bytes, proof: bytes) -> bool: ...


def secret_key(ikm: bytes) -> int:
    """A secret key from at least 32 bytes of key material (IETF KeyGen, as py-ecc's
    ``G2ProofOfPossession.KeyGen`` with empty key_info: HKDF-SHA-256; tests/test_bls.py checks
    they agree). Done here with hashlib so that deriving keys does not import py-ecc."""
    if len(ikm) < 32:
        raise ValueError("BLS key material must be at least 32 bytes")
    salt = _KEYGEN_SALT
    key = 0
    while key == 0:
        salt = hashlib.sha256(salt).digest()
        prk = hmac.new(salt, ikm + b"\x00", hashlib.sha256).digest()  # HKDF-Extract
        info = _KEYGEN_BYTES.to_bytes(2, "big")
        okm, block = b"", b""
        for i in range(1, -(-_KEYGEN_BYTES // 32) + 1):  # HKDF-Expand
            block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
            okm += block
        key = int.from_bytes(okm[:_KEYGEN_BYTES], "big") % CURVE_ORDER
    return key


class PyEccBackend:
    """The reference. py-ecc is imported on the first call (:func:`py_ecc_ciphersuite`)."""

    name = "py_ecc"

    def public_key(self, secret_key: int) -> bytes:
        return bytes(py_ecc_ciphersuite().SkToPk(secret_key))

    def sign(self, secret_key: int, message: bytes) -> bytes:
        return bytes(py_ecc_ciphersuite().Sign(secret_key, message))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        suite = py_ecc_ciphersuite()
        try:
            return bool(suite.Verify(_pk(public_key), message, _sig(signature)))
        except Exception:  # py-ecc raises on some malformed points
            return False

    def aggregate(self, signatures: Sequence[bytes]) -> bytes:
        return bytes(py_ecc_ciphersuite().Aggregate([_sig(s) for s in signatures]))

    def sign_aggregate(self, secret_keys: Sequence[int], message: bytes) -> bytes:
        return sign_aggregate(self, secret_keys, message)

    def fast_aggregate_verify(
        self, public_keys: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        suite = py_ecc_ciphersuite()
        try:
            keys = [_pk(k) for k in public_keys]
            return bool(suite.FastAggregateVerify(keys, message, _sig(signature)))
        except Exception:
            return False

    def pop_prove(self, secret_key: int) -> bytes:
        return bytes(py_ecc_ciphersuite().PopProve(secret_key))

    def pop_verify(self, public_key: bytes, proof: bytes) -> bool:
        suite = py_ecc_ciphersuite()
        try:
            return bool(suite.PopVerify(_pk(public_key), _sig(proof)))
        except Exception:
            return False


def _pk(data: bytes) -> Any:
    from eth_typing import BLSPubkey

    return BLSPubkey(data)


def _sig(data: bytes) -> Any:
    from eth_typing import BLSSignature

    return BLSSignature(data)


class BlspyBackend:
    name = "blspy"

    def __init__(self) -> None:
        import blspy

        self._b = blspy
        self._scheme = blspy.PopSchemeMPL
        # The same few keys (oracles', validators') are checked over and over: decoding one
        # (with its subgroup check) was a tenth of each 2-of-3 verification. Points are
        # immutable; a key that does not decode raises and is not kept.
        self._g1_decoded = lru_cache(maxsize=G1_DECODED_MAX)(blspy.G1Element.from_bytes)

    def _sk(self, secret_key: int) -> object:
        return self._b.PrivateKey.from_bytes(secret_key.to_bytes(32, "big"))

    def public_key(self, secret_key: int) -> bytes:
        return bytes(self._sk(secret_key).get_g1())  # type: ignore[attr-defined]

    def sign(self, secret_key: int, message: bytes) -> bytes:
        return bytes(self._scheme.sign(self._sk(secret_key), message))

    def _g1(self, data: bytes) -> object:
        if len(data) != PUBLIC_KEY_BYTES:
            raise ValueError("public key length")
        return self._g1_decoded(bytes(data))

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

    def sign_aggregate(self, secret_keys: Sequence[int], message: bytes) -> bytes:
        return sign_aggregate(self, secret_keys, message)

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


def sign_aggregate(backend: BlsBackend, secret_keys: Sequence[int], message: bytes) -> bytes:
    """The aggregate of each key's signature of one ``message``, signed once: a signature is the
    message's curve point times the key, so the sum of the k signatures is that point times the
    keys' sum (mod r). The same bytes as signing with each key and aggregating, for the cost of
    one signature instead of k signatures and an aggregation (0.4 against 2.5 ms for five keys
    with blspy). ValueError for no keys."""
    if not secret_keys:
        raise ValueError("nothing to sign with")
    key = sum(secret_keys) % CURVE_ORDER
    if key == 0:  # the signatures cancel out
        return IDENTITY_SIGNATURE
    return backend.sign(key, message)


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
