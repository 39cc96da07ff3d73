"""What an audit of the bridge's own chain already verified, so that the next audit re-checks a
block's quorum certificate (a BLS pairing) only when the block or its certificate changed.

A certificate's verdict is a pure function of the header's recomputed hash, the certificate and
the validators' keys (:func:`bridges._quorum.verify_quorum_certificate`). The audit feeds every
certified block's ``(height, recomputed header hash, certificate)`` into one running SHA-256, in
height order; after a clean pass it keeps the digest at the last certified height, with the keys.
The next audit feeds the same digest again: at that height, an equal digest (under equal keys)
means every certificate up to there is byte for byte one that verified, over the same headers;
any other digest, and the certificates it covered are verified one by one as before. Blocks
above that height are verified as they come. Memory: one digest, whatever the chain's length.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from bridges._model import QuorumCertificate


@dataclass(frozen=True, slots=True)
class VerifiedPrefix:
    """Blocks 1..``height``: their certificates verified under ``public_keys``."""

    height: int
    digest: bytes
    public_keys: tuple[tuple[str, bytes], ...]


class CertificateDigest:
    """The running digest of certified blocks, in height order."""

    __slots__ = ("_sha",)

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, height: int, header_hash: bytes, qc: QuorumCertificate) -> None:
        signers = [signer.encode() for signer in qc.signer_ids]
        parts = (header_hash, bytes(qc.block_hash), bytes(qc.aggregate_signature), *signers)
        self._sha.update(struct.pack(">QI", height, len(parts)))
        for part in parts:
            self._sha.update(struct.pack(">I", len(part)))
            self._sha.update(part)

    def digest(self) -> bytes:
        return self._sha.digest()  # hashlib's digest() leaves the running state as it was
