"""The journal's hash chain, on plain values: the one definition the server seals entries with
(``settlement/ledger/journal.py``) and anyone holding the journal verifies it with.

Each entry's hash is ``SHA-256(prev_hash || canonical(entry))`` where ``canonical`` is this JSON
array (UTF-8, no whitespace, integers as JSON numbers)::

    [seq, kind, request_id, caller, committed_at_us, memo,
     [[account_id, bucket, currency, amount, balance_after], ...]]

``kind`` is the entry kind's name (``"ISSUE"``, ``"RELEASE"``, ...), ``bucket`` the posting's
(``"AVAILABLE"``, ``"HELD"``, ``"ISSUANCE"``). The first entry chains to 32 zero bytes, so
changing, removing or reordering any entry changes every hash after it.

:func:`verify_entries` checks entries as ``WalletService.ListJournal`` returns them::

    broken = verify_entries([entry async for entry in client.journal()])
    assert broken is None, f"the chain breaks at entry {broken}"
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

import orjson

from condpay.v1 import ledger_pb2

GENESIS_HASH: Final = bytes(32)

#: One posting on plain values: (account_id, bucket, currency, amount, balance_after).
Posting = tuple[str, str, str, int, int]

_KIND_PREFIX: Final = "ENTRY_KIND_"
_BUCKET_PREFIX: Final = "BUCKET_"
# proto enum number -> the name the server hashes ("ISSUE", "AVAILABLE"); UNSPECIFIED has none.
_KINDS: Final[dict[int, str]] = {
    number: name.removeprefix(_KIND_PREFIX)
    for name, number in ledger_pb2.EntryKind.items()
    if number != ledger_pb2.ENTRY_KIND_UNSPECIFIED
}
_BUCKETS: Final[dict[int, str]] = {
    number: name.removeprefix(_BUCKET_PREFIX)
    for name, number in ledger_pb2.Bucket.items()
    if number != ledger_pb2.BUCKET_UNSPECIFIED
}


def canonical_bytes(
    seq: int,
    kind: str,
    request_id: str,
    caller: str,
    committed_at_us: int,
    memo: str,
    postings: Iterable[Posting],
) -> bytes:
    """The bytes an entry's hash covers (besides the previous hash)."""
    return orjson.dumps([seq, kind, request_id, caller, committed_at_us, memo, list(postings)])


def entry_hash(
    prev_hash: bytes,
    seq: int,
    kind: str,
    request_id: str,
    caller: str,
    committed_at_us: int,
    memo: str,
    postings: Iterable[Posting],
) -> bytes:
    return hashlib.sha256(
        prev_hash + canonical_bytes(seq, kind, request_id, caller, committed_at_us, memo, postings)
    ).digest()


def kind_name(kind: int) -> str:
    """The server's name of a proto ``EntryKind`` (``ENTRY_KIND_RELEASE`` -> ``"RELEASE"``); an
    unspecified or unknown number gets a name no entry is hashed with."""
    return _KINDS.get(kind, f"?{kind}")


def bucket_name(bucket: int) -> str:
    return _BUCKETS.get(bucket, f"?{bucket}")


def committed_at_us_of(entry: ledger_pb2.JournalEntry) -> int:
    """The commit time in microseconds, exactly as hashed (the server sends whole microseconds)."""
    stamp = entry.committed_at
    return stamp.seconds * 1_000_000 + stamp.nanos // 1_000


def postings_of(entry: ledger_pb2.JournalEntry) -> list[Posting]:
    return [
        (
            p.account_id,
            bucket_name(p.bucket),
            p.amount.currency,
            p.amount.amount_minor,
            p.balance_after_minor,
        )
        for p in entry.postings
    ]


def hash_of(prev_hash: bytes, entry: ledger_pb2.JournalEntry) -> bytes:
    """What ``entry.hash`` must be, chained to ``prev_hash``."""
    return entry_hash(
        prev_hash,
        entry.seq,
        kind_name(entry.kind),
        entry.request_id,
        entry.caller,
        committed_at_us_of(entry),
        entry.memo,
        postings_of(entry),
    )


def verify_entries(
    entries: Iterable[ledger_pb2.JournalEntry],
    prev_hash: bytes = GENESIS_HASH,
    prev_seq: int = 0,
) -> int | None:
    """The seq of the first entry that breaks the chain, or None: an entry whose seq does not
    follow the previous one (a gap or a reordering), whose ``prev_hash`` is not the previous
    entry's hash, or whose ``hash`` is not the hash of its own content. Continue a verified
    prefix by passing its last seq and hash."""
    for entry in entries:
        if (
            entry.seq != prev_seq + 1
            or entry.prev_hash != prev_hash
            or entry.hash != hash_of(prev_hash, entry)
        ):
            return entry.seq
        prev_seq, prev_hash = entry.seq, entry.hash
    return None


__all__ = [
    "GENESIS_HASH",
    "Posting",
    "bucket_name",
    "canonical_bytes",
    "committed_at_us_of",
    "entry_hash",
    "hash_of",
    "kind_name",
    "postings_of",
    "verify_entries",
]
