"""The core verifies each bridge block's quorum certificate once (settlement/coordination/
bridge_link.py, CertificateCache): a hit needs the very block and certificate that verified; a
different block at a verified height is refused even with a certificate that verifies."""

from __future__ import annotations

import hashlib

from bridges import BlockHeader, QuorumCertificate, header_encoding, header_hash
from bridges._quorum import ZERO_HASH, Validator, aggregate
from settlement.coordination.bridge_link import CertificateCache

VALIDATORS = [Validator(name, b"b18-cache-test-seed".ljust(32, b".")) for name in "ABCDE"]
KEYS = {v.validator_id: v.public_key for v in VALIDATORS}


def block(height: int, *transfers: str, previous: bytes = ZERO_HASH) -> BlockHeader:
    digest = hashlib.sha256("|".join(transfers).encode()).digest()
    return BlockHeader("condpay-mbridge", height, previous, 1_000 + height, transfers, digest)


def resealed(header: BlockHeader) -> BlockHeader:
    """The same block sealed a microsecond later: another header, another hash."""
    return BlockHeader(
        header.chain_id,
        header.height,
        header.previous_hash,
        header.sealed_at_us + 1,
        header.transfer_ids,
        header.transfers_digest,
    )


def certify(header: BlockHeader, signers: list[Validator] = VALIDATORS[:4]) -> QuorumCertificate:
    block_hash = header_hash(header)
    return QuorumCertificate(
        block_hash,
        tuple(v.validator_id for v in signers),
        aggregate([v.sign(block_hash) for v in signers]),
    )


async def test_a_block_is_verified_once_then_answered_from_the_cache() -> None:
    cache = CertificateCache()
    header = block(1, "CONDPAY:s1.1", "CONDPAY:s2.1")
    qc = certify(header)
    assert await cache.verify(header, qc, KEYS)
    assert await cache.verify(header, qc, KEYS)
    assert await cache.verify(block(1, "CONDPAY:s1.1", "CONDPAY:s2.1"), qc, KEYS)  # an equal copy
    assert (cache.verifications, cache.hits) == (1, 2)
    # What the core keeps of the block: its canonical encoding, the bytes its hash is of.
    assert await cache.verified_encoding(header, qc, KEYS) == header_encoding(header)
    assert hashlib.sha256(header_encoding(header)).digest() == qc.block_hash
    assert await cache.verified_encoding(block(1, "CONDPAY:s3.1"), qc, KEYS) is None


async def test_another_block_at_a_verified_height_is_refused_even_with_a_valid_qc() -> None:
    cache = CertificateCache()
    header = block(7, "CONDPAY:s1.1")
    assert await cache.verify(header, certify(header), KEYS)
    other = block(7, "CONDPAY:s9.1")  # the same height, other content, genuinely certified
    assert not await cache.verify(other, certify(other), KEYS)
    # The first block still verifies, from the cache.
    assert await cache.verify(header, certify(header), KEYS)


async def test_a_cached_certificate_does_not_vouch_for_a_changed_header_or_certificate() -> None:
    cache = CertificateCache()
    header = block(3, "CONDPAY:s1.1")
    qc = certify(header)
    assert await cache.verify(header, qc, KEYS)
    # The cached certificate's fields with another header at the height: recomputed, refused.
    assert not await cache.verify(resealed(header), qc, KEYS)
    # A transmitted hash that is not the header's, with the cached signers and signature.
    assert not await cache.verify(
        header, QuorumCertificate(bytes(32), qc.signer_ids, qc.aggregate_signature), KEYS
    )
    flipped = bytearray(qc.aggregate_signature)
    flipped[-1] ^= 1
    assert not await cache.verify(
        header, QuorumCertificate(qc.block_hash, qc.signer_ids, bytes(flipped)), KEYS
    )
    short = QuorumCertificate(qc.block_hash, qc.signer_ids[:3], qc.aggregate_signature)
    assert not await cache.verify(header, short, KEYS)
    # Another quorum of the same block verifies (in full).
    assert await cache.verify(header, certify(header, VALIDATORS[1:]), KEYS)


async def test_other_keys_empty_the_cache() -> None:
    cache = CertificateCache()
    header = block(2, "CONDPAY:s1.1")
    qc = certify(header)
    assert await cache.verify(header, qc, KEYS)
    strangers = {v.validator_id: v.public_key for v in (Validator(n, b"x" * 32) for n in "ABCDE")}
    assert not await cache.verify(header, qc, strangers)
    assert await cache.verify(header, qc, KEYS)
    assert cache.hits == 0


async def test_the_cache_is_bounded() -> None:
    cache = CertificateCache(capacity=2)
    headers = [block(h, f"CONDPAY:s{h}.1") for h in (1, 2, 3)]
    for header in headers:
        assert await cache.verify(header, certify(header), KEYS)
    assert await cache.verify(headers[0], certify(headers[0]), KEYS)  # evicted: verified again
    assert (cache.verifications, cache.hits) == (4, 0)
