"""The checkpoint's Merkle tree and proofs (condpay/checkpoints.py), on plain values: the frontier
grown entry by entry has the root computed from scratch, every entry's proof verifies against it,
and a proof of anything else does not."""

from __future__ import annotations

import hashlib

import pytest
from condpay.checkpoints import (
    EMPTY_ROOT,
    CheckpointError,
    Frontier,
    inclusion_proof,
    key_id,
    leaf_hash,
    node_hash,
    statement,
    tree_root,
    verify_checkpoint,
    verify_inclusion,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from wallets import OwnerKey


def hashes(n: int, salt: bytes = b"") -> list[bytes]:
    return [hashlib.sha256(salt + i.to_bytes(8, "big")).digest() for i in range(1, n + 1)]


def test_the_tree_is_rfc_6962s() -> None:
    """Worked by hand: 3 leaves make node(node(l1, l2), l3); no entries hash the empty string."""
    a, b, c = hashes(3)
    assert tree_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert tree_root([a]) == hashlib.sha256(b"\x00" + a).digest()
    expected = node_hash(node_hash(leaf_hash(a), leaf_hash(b)), leaf_hash(c))
    assert tree_root([a, b, c]) == expected
    assert inclusion_proof([a, b, c], 3) == [node_hash(leaf_hash(a), leaf_hash(b))]
    assert inclusion_proof([a, b, c], 1) == [leaf_hash(b), leaf_hash(c)]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=70), st.integers(min_value=0, max_value=70))
def test_a_frontier_grown_in_steps_has_the_root_of_the_whole(first: int, more: int) -> None:
    entries = hashes(first + more)
    frontier = Frontier()
    frontier.extend(entries[:first])
    assert frontier.root() == tree_root(entries[:first])
    stored = Frontier.from_bytes(frontier.size, frontier.to_bytes())
    stored.extend(entries[first:])
    assert (stored.size, stored.root()) == (first + more, tree_root(entries))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_every_entry_proves_its_place_and_nothing_else_does(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=100), label="size")
    seq = data.draw(st.integers(min_value=1, max_value=size), label="seq")
    entries = hashes(size)
    root = tree_root(entries)
    proof = inclusion_proof(entries, seq)
    assert len(proof) <= max(1, (size - 1).bit_length())
    verify_inclusion(entries[seq - 1], seq, size, proof, root)

    other = hashes(1, salt=b"not in the journal")[0]
    with pytest.raises(CheckpointError):
        verify_inclusion(other, seq, size, proof, root)  # another entry
    if size > 1:
        wrong = data.draw(st.integers(min_value=1, max_value=size).filter(lambda s: s != seq))
        with pytest.raises(CheckpointError):
            verify_inclusion(entries[seq - 1], wrong, size, proof, root)  # another place
    if proof:
        bent = list(proof)
        at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="bent")
        bent[at] = bytes(32)
        with pytest.raises(CheckpointError):
            verify_inclusion(entries[seq - 1], seq, size, bent, root)
        with pytest.raises(CheckpointError):
            verify_inclusion(entries[seq - 1], seq, size, proof[:-1], root)  # too short
    with pytest.raises(CheckpointError):
        verify_inclusion(entries[seq - 1], seq, size, [*proof, bytes(32)], root)  # too long
    with pytest.raises(CheckpointError):
        verify_inclusion(entries[seq - 1], seq, size + 1, proof, tree_root([*entries, other]))


def test_a_checkpoint_verifies_under_its_key_only() -> None:
    key, other = OwnerKey.from_seed(b"c" * 32), OwnerKey.from_seed(b"o" * 32)
    head, root = hashes(2)
    signature = key.sign(statement(7, head, root, 1_700_000_000_000_000))
    assert statement(7, head, root, 1_700_000_000_000_000) == (
        b'["condpay.checkpoint.v1",7,"'
        + head.hex().encode()
        + b'","'
        + root.hex().encode()
        + b'",1700000000000000]'
    )
    verify_checkpoint(key.public_key, 7, head, root, 1_700_000_000_000_000, signature)
    for changed in (
        (other.public_key, 7, head, root, 1_700_000_000_000_000, signature),
        (key.public_key, 8, head, root, 1_700_000_000_000_000, signature),
        (key.public_key, 7, root, head, 1_700_000_000_000_000, signature),
        (key.public_key, 7, head, root, 1_700_000_000_000_001, signature),
        (key.public_key, 7, head, root, 1_700_000_000_000_000, bytes(64)),
        (b"short", 7, head, root, 1_700_000_000_000_000, signature),
    ):
        with pytest.raises(CheckpointError, match="is not signed by checkpoint key"):
            verify_checkpoint(*changed)
    assert key_id(key.public_key) == hashlib.sha256(key.public_key).hexdigest()[:16]


def test_a_stored_frontier_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(CheckpointError, match="a frontier of 3 entries is 2 hashes"):
        Frontier.from_bytes(3, bytes(32))
