"""The journal's hash chain.

Each entry's hash is ``SHA-256(prev_hash || canonical(entry))`` where ``canonical`` is this JSON
array (UTF-8, no whitespace, integers as JSON numbers)::

    [seq, kind, request_id, caller, committed_at_us, memo,
     [[account_id, bucket, currency, amount, balance_after], ...]]

The first entry chains to 32 zero bytes. Anyone holding the journal can recompute the chain;
changing, removing or reordering any entry changes every hash after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

import orjson

from settlement.ledger.records import EntryRecord

GENESIS_HASH: Final = bytes(32)


def canonical_bytes(entry: EntryRecord) -> bytes:
    return orjson.dumps(
        [
            entry.seq,
            entry.kind.value,
            entry.request_id,
            entry.caller,
            entry.committed_at_us,
            entry.memo,
            [
                [p.account_id, p.bucket.value, p.currency, p.amount, p.balance_after]
                for p in entry.postings
            ],
        ]
    )


def entry_hash(prev_hash: bytes, entry: EntryRecord) -> bytes:
    return hashlib.sha256(prev_hash + canonical_bytes(entry)).digest()


def seal(
    entries: Iterable[EntryRecord], head_seq: int, head_hash: bytes, now_us: int
) -> tuple[int, bytes]:
    """Number, time-stamp and chain ``entries`` after the head; returns the new head."""
    for entry in entries:
        head_seq += 1
        entry.seq = head_seq
        entry.committed_at_us = now_us
        entry.prev_hash = head_hash
        entry.hash = head_hash = entry_hash(head_hash, entry)
    return head_seq, head_hash


def verify_chain(
    entries: Iterable[EntryRecord], prev_hash: bytes = GENESIS_HASH, prev_seq: int = 0
) -> int | None:
    """The seq of the first entry that breaks the chain (gap, wrong link or wrong hash), or None."""
    for entry in entries:
        if (
            entry.seq != prev_seq + 1
            or entry.prev_hash != prev_hash
            or entry.hash != entry_hash(prev_hash, entry)
        ):
            return entry.seq
        prev_seq, prev_hash = entry.seq, entry.hash
    return None
