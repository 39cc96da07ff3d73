"""Signed journal checkpoints and the proofs that an entry is in the checkpointed journal: the
one definition the server signs with and anyone verifies with, offline (docs/evidence.md).

A checkpoint says, under the server's Ed25519 checkpoint key: "the journal's first ``seq``
entries end in hash ``head_hash`` and their Merkle tree has root ``tree_root``". Two commitments
to the same entries, for two uses:

- ``head_hash`` is the hash chain's (:mod:`condpay.journal`): whoever holds the whole journal
  checks it entry by entry;
- ``tree_root`` is an RFC 6962 (Certificate Transparency) Merkle tree over the entries' hashes:
  whoever holds one entry checks it with about log2(seq) sibling hashes (:func:`verify_inclusion`)
  and learns nothing of the other entries, whose hashes are all a proof carries.

The signed statement is the UTF-8 JSON array ``["condpay.checkpoint.v1", seq, head_hash_hex,
tree_root_hex, signed_at_us]`` (no whitespace, :func:`statement`).

    checkpoint = ...  # EvidenceService.GetCheckpoint
    verify_checkpoint(public_key, checkpoint.seq, checkpoint.head_hash, checkpoint.tree_root,
                      checkpoint.signed_at_us, checkpoint.signature)
    verify_inclusion(entry.hash, entry.seq, checkpoint.seq, proof, checkpoint.tree_root)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

STATEMENT_KIND: Final = "condpay.checkpoint.v1"
HASH_BYTES: Final = 32
#: The root of the tree of no entries (RFC 6962: the hash of the empty string).
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


class CheckpointError(ValueError):
    """A checkpoint or a proof that does not verify; the message says what."""


# -- the Merkle tree (RFC 6962 section 2.1) ------------------------------------------------------
def leaf_hash(entry_hash: bytes) -> bytes:
    """A leaf: an entry's (chain) hash, domain-separated from the inner nodes."""
    return hashlib.sha256(b"\x00" + entry_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two below ``size`` (size ≥ 2): the left subtree's size."""
    return 1 << ((size - 1).bit_length() - 1)


def tree_root(entry_hashes: Sequence[bytes]) -> bytes:
    """The root over the entries' hashes, in journal order (entry 1 first)."""
    if not entry_hashes:
        return EMPTY_ROOT
    return _root([leaf_hash(h) for h in entry_hashes])


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(_root(leaves[:k]), _root(leaves[k:]))


class Frontier:
    """The tree grown one entry at a time: the roots of its perfect subtrees, largest first (one
    per set bit of ``size``), so appending costs O(log size) and the root needs no old entry.
    A checkpoint stores it, and the next one starts from it."""

    __slots__ = ("peaks", "size")

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = ()) -> None:
        if size < 0 or len(peaks) != size.bit_count():
            raise CheckpointError(f"a frontier of {size} entries has {size.bit_count()} peaks")
        self.size = size
        self.peaks = list(peaks)

    def append(self, entry_hash: bytes) -> None:
        node = leaf_hash(entry_hash)
        size = self.size
        # Merge equal-sized subtrees, as a binary counter carries.
        while size & 1:
            node = node_hash(self.peaks.pop(), node)
            size >>= 1
        self.peaks.append(node)
        self.size += 1

    def extend(self, entry_hashes: Iterable[bytes]) -> None:
        for entry_hash in entry_hashes:
            self.append(entry_hash)

    def root(self) -> bytes:
        """RFC 6962's root: the peaks folded from the smallest (rightmost) up."""
        if not self.peaks:
            return EMPTY_ROOT
        root = self.peaks[-1]
        for peak in reversed(self.peaks[:-1]):
            root = node_hash(peak, root)
        return root

    def to_bytes(self) -> bytes:
        return b"".join(self.peaks)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        if len(data) != size.bit_count() * HASH_BYTES:
            raise CheckpointError(f"a frontier of {size} entries is {size.bit_count()} hashes")
        return cls(size, [data[i : i + HASH_BYTES] for i in range(0, len(data), HASH_BYTES)])


def inclusion_proof(entry_hashes: Sequence[bytes], seq: int) -> list[bytes]:
    """The audit path of entry ``seq`` (1-based) in the tree of ``entry_hashes`` (RFC 6962
    2.1.1): the sibling hashes from the leaf up."""
    if not 1 <= seq <= len(entry_hashes):
        raise CheckpointError(f"entry {seq} is not among the {len(entry_hashes)} entries")
    return _path(seq - 1, [leaf_hash(h) for h in entry_hashes])


def _path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_path(index, leaves[:k]), _root(leaves[k:])]
    return [*_path(index - k, leaves[k:]), _root(leaves[:k])]


def verify_inclusion(
    entry_hash: bytes, seq: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """That entry ``seq`` (1-based) with hash ``entry_hash`` is in the tree of ``size`` entries
    whose root is ``root`` (RFC 9162 2.1.3.2); CheckpointError otherwise."""
    if not 1 <= seq <= size:
        raise CheckpointError(f"entry {seq} is not among a checkpoint's {size} entries")
    index, last = seq - 1, size - 1
    node = leaf_hash(entry_hash)
    for sibling in proof:
        if last == 0:
            raise CheckpointError(f"the proof of entry {seq} is too long")
        if index & 1 or index == last:
            node = node_hash(sibling, node)
            if not index & 1:
                while index and not index & 1:
                    index >>= 1
                    last >>= 1
        else:
            node = node_hash(node, sibling)
        index >>= 1
        last >>= 1
    if last != 0:
        raise CheckpointError(f"the proof of entry {seq} is too short")
    if node != root:
        raise CheckpointError(f"entry {seq} is not in the checkpointed journal (root differs)")


# -- the signed statement ------------------------------------------------------------------------
def statement(seq: int, head_hash: bytes, root: bytes, signed_at_us: int) -> bytes:
    """The bytes the checkpoint key signs."""
    return orjson.dumps([STATEMENT_KIND, seq, head_hash.hex(), root.hex(), signed_at_us])


def key_id(public_key: bytes) -> str:
    """A short name of a checkpoint key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def verify_checkpoint(
    public_key: bytes,
    seq: int,
    head_hash: bytes,
    root: bytes,
    signed_at_us: int,
    signature: bytes,
) -> None:
    """That the checkpoint key ``public_key`` signed this checkpoint; CheckpointError if not."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, statement(seq, head_hash, root, signed_at_us)
        )
    except (InvalidSignature, ValueError):
        raise CheckpointError(
            f"checkpoint {seq} is not signed by checkpoint key {key_id(public_key)}"
        ) from None
