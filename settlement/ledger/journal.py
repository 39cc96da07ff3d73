"""The journal's hash chain, over the ledger's records.

Each entry's hash is ``SHA-256(prev_hash || canonical(entry))``; the canonical encoding is defined
once, on plain values, in the public API package (:mod:`condpay.journal`), so that the server
seals entries with exactly the bytes a client verifies::

    [seq, kind, request_id, caller, committed_at_us, memo,
     [[account_id, bucket, currency, amount, balance_after], ...]]

The first entry chains to 32 zero bytes. Anyone holding the journal can recompute the chain;
changing, removing or reordering any entry changes every hash after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from condpay import journal

from settlement.ledger.records import EntryRecord

GENESIS_HASH: Final = journal.GENESIS_HASH


def _plain(entry: EntryRecord) -> tuple[int, str, str, str, int, str, list[journal.Posting]]:
    return (
        entry.seq,
        entry.kind.value,
        entry.request_id,
        entry.caller,
        entry.committed_at_us,
        entry.memo,
        [
            (p.account_id, p.bucket.value, p.currency, p.amount, p.balance_after)
            for p in entry.postings
        ],
    )


def canonical_bytes(entry: EntryRecord) -> bytes:
    return journal.canonical_bytes(*_plain(entry))


def entry_hash(prev_hash: bytes, entry: EntryRecord) -> bytes:
    return journal.entry_hash(prev_hash, *_plain(entry))


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
