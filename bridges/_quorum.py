"""Blocks, validators and quorum certificates (BLS12-381, proof-of-possession ciphersuite).

A block header is encoded canonically (below) and hashed with SHA-256; each validator signs that
32-byte hash; a quorum certificate is the aggregate of at least ``quorum_threshold(n)`` distinct
validators' signatures (3k >= 2n), verified with FastAggregateVerify over the exact hash. Keys
count only after their proof of possession verified (otherwise one rogue key could forge an
aggregate): :func:`checked_public_keys`.

Header encoding (all integers big-endian, strings UTF-8 with a 2-byte length prefix)::

    b"condpay.bridge.v1/block\\x00" | chain_id | height (8) | previous_hash (32)
    | sealed_at_us (8) | number of transfers (4) | each transfer id | transfers_digest (32)

``transfers_digest`` is SHA-256 over each committed transfer's canonical record, in block order:
id, payer, payee, provider, source currency and amount, net, spread, target currency and amount.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from bridges._model import BlockHeader, QuorumCertificate, ValidatorSet
from bridges.errors import Reason, error
from wallets import bls

HASH_BYTES: Final = 32
ZERO_HASH: Final = bytes(HASH_BYTES)
_HEADER_TAG: Final = b"condpay.bridge.v1/block\x00"
_TRANSFER_TAG: Final = b"condpay.bridge.v1/transfer\x00"
_KEY_TAG: Final = b"condpay.bridge.v1/validator-key\x00"


def quorum_threshold(validator_count: int) -> int:
    """The least k with 3k >= 2n: 4 of 5, 2 of 3, 3 of 4."""
    return (2 * validator_count + 2) // 3


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">H", len(data)) + data


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def header_encoding(header: BlockHeader) -> bytes:
    """Raises ValueError (or struct.error) for a header that cannot be encoded."""
    if len(header.previous_hash) != HASH_BYTES or len(header.transfers_digest) != HASH_BYTES:
        raise ValueError("hashes are 32 bytes")
    parts = [
        _HEADER_TAG,
        _text(header.chain_id),
        _u64(header.height),
        bytes(header.previous_hash),
        _u64(header.sealed_at_us),
        struct.pack(">I", len(header.transfer_ids)),
        *(_text(t) for t in header.transfer_ids),
        bytes(header.transfers_digest),
    ]
    return b"".join(parts)


def header_hash(header: BlockHeader) -> bytes:
    return hashlib.sha256(header_encoding(header)).digest()


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """What a block commits to about each transfer."""

    transfer_id: str
    payer_id: str
    payee_id: str
    liquidity_provider_id: str
    source_currency: str
    source_minor: int
    net_minor: int
    spread_minor: int
    target_currency: str
    target_minor: int

    def encoding(self) -> bytes:
        return b"".join(
            (
                _TRANSFER_TAG,
                _text(self.transfer_id),
                _text(self.payer_id),
                _text(self.payee_id),
                _text(self.liquidity_provider_id),
                _text(self.source_currency),
                _u64(self.source_minor),
                _u64(self.net_minor),
                _u64(self.spread_minor),
                _text(self.target_currency),
                _u64(self.target_minor),
            )
        )


def transfers_digest(records: Iterable[TransferRecord]) -> bytes:
    digest = hashlib.sha256()
    for record in records:
        item = record.encoding()
        digest.update(struct.pack(">I", len(item)) + item)
    return digest.digest()


def verify_quorum_certificate(
    header: BlockHeader, qc: QuorumCertificate, validator_public_keys: Mapping[str, bytes]
) -> bool:
    """True only if ``qc`` finalizes exactly ``header`` under ``validator_public_keys``.

    Pure: no I/O, no clock, never raises. The checks:
    - the certificate is over this header's hash, recomputed from its fields (never trusted);
    - its signers are distinct members of the validator set, at least 2/3 of it (3k >= 2n);
    - the aggregate signature verifies over the exact hash with the signers' keys.
    Pass only keys whose proofs of possession you checked (:func:`checked_public_keys`).
    """
    try:
        if not validator_public_keys:
            return False
        expected = header_hash(header)
        if bytes(qc.block_hash) != expected:
            return False
        signers = tuple(qc.signer_ids)
        if len(set(signers)) != len(signers):
            return False
        if any(signer not in validator_public_keys for signer in signers):
            return False
        if len(signers) < quorum_threshold(len(validator_public_keys)):
            return False
        keys = [bytes(validator_public_keys[signer]) for signer in signers]
        return bls.backend().fast_aggregate_verify(keys, expected, bytes(qc.aggregate_signature))
    except (ValueError, TypeError, OverflowError, struct.error, AttributeError):
        return False


def checked_public_keys(validators: ValidatorSet) -> dict[str, bytes]:
    """validator id -> public key, each proof of possession verified; InvalidRequest
    (PROOF_OF_POSSESSION_INVALID) if any fails. Check once, then verify certificates with it."""
    backend = bls.backend()
    keys: dict[str, bytes] = {}
    for validator in validators.validators:
        if not backend.pop_verify(validator.public_key, validator.proof_of_possession):
            raise error(
                Reason.PROOF_OF_POSSESSION_INVALID,
                f"validator {validator.validator_id}: the proof of possession does not verify",
                validator_id=validator.validator_id,
            )
        keys[validator.validator_id] = validator.public_key
    return keys


class Validator:
    """A central bank's validator node, simulated inside the bridge: it holds its secret key and
    signs block hashes. Keys derive from the bridge's key seed (stored at genesis), so the same
    state file always yields the same validator set."""

    def __init__(self, validator_id: str, key_seed: bytes) -> None:
        self.validator_id = validator_id
        material = hashlib.sha256(_KEY_TAG + key_seed + validator_id.encode()).digest()
        self._secret_key = bls.secret_key(material)
        backend = bls.backend()
        self.public_key = backend.public_key(self._secret_key)
        self.proof_of_possession = backend.pop_prove(self._secret_key)

    def sign(self, block_hash: bytes) -> bytes:
        return bls.backend().sign(self._secret_key, block_hash)


def quorum_signature(signers: Sequence[Validator], block_hash: bytes) -> bytes:
    """The aggregate of each signer's signature of ``block_hash``: the same bytes as
    ``aggregate([v.sign(block_hash) for v in signers])``, computed as one signature
    (:func:`wallets.bls.sign_aggregate`). The validators are simulated in the bridge's process;
    real ones sign on their own machines at once, so the bridge's CPU should not pay for each."""
    return bls.backend().sign_aggregate([v._secret_key for v in signers], block_hash)


def aggregate(signatures: Sequence[bytes]) -> bytes:
    return bls.backend().aggregate(signatures)
