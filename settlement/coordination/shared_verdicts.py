"""Block certificates one worker verified, told to the other workers on the same machine.

With ``condpay serve --workers N`` every worker is told each bridge block in the answers to its
own commits, and each checked the block's quorum certificate: a BLS pairing (1.5-2 ms here) N
times per block for one verdict. At a moderate rate that was a fifth of the workers' CPU per
settlement (docs/benchmarks.md). The parent now makes one small table in memory that every
worker maps (an anonymous memory file, Linux ``memfd_create``, inherited as a descriptor). Each
height has a slot of two *fingerprints*: the certificate a worker is verifying now (its claim),
and the last one a worker verified. A worker holding a certificate takes the verdict from the
slot when it is there; when another worker claimed the very same certificate it waits for that
verdict (a bridge answers a block's commits to every worker at once, so they would otherwise all
verify it together), up to :data:`WAIT_SECONDS`; otherwise it claims the certificate, verifies it
and, when it holds, writes the verdict. Looking and claiming are one step under the table's
POSIX record lock (``lockf``, held for microseconds), so two workers never both claim.

A fingerprint is the SHA-256 of everything the verdict of
:func:`bridges.verify_quorum_certificate` depends on: the validator keys, the height, the hash
recomputed from the header, the hash the certificate names, its signers and its aggregate
signature. A slot can therefore only vouch for exactly that certificate under exactly those keys.
Were a slot read while it is rewritten (the lock keeps the workers from it; this is the
argument without the lock), a mix of two fingerprints equals the one asked for only if it is
that one (anything else needs 128 bits of a SHA-256 output to match by chance); any other
answer means "not known": the worker verifies, as it always did. A certificate that does not
verify is never written as verified: whoever waited for it verifies it too, and refuses it too.

What may write a slot: the server's own workers, after a verification passed. The descriptor is
handed only to them (the kernel keeps the table as long as one of them holds it; nothing is left
behind by a ``kill -9``); a process that could write to it could as well read the server's
database password. Without ``memfd_create`` (not Linux) the workers verify on their own, as a
single worker always does. Workers on other machines share nothing: each machine's group
verifies once per block.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Final

import structlog

if TYPE_CHECKING:
    from bridges import BlockHeader, QuorumCertificate

log = structlog.get_logger("condpay.shared_verdicts")

ENV: Final = "CONDPAY_VERIFIED_BLOCKS_FD"  # set by the parent of the workers, never by hand
SLOTS: Final = 4096  # the most recent heights; a block further back is verified again
FINGERPRINT_BYTES: Final = 32
SLOT_BYTES: Final = 2 * FINGERPRINT_BYTES  # the claim, then the verdict
TABLE_BYTES: Final = SLOTS * SLOT_BYTES
# How long a worker waits for the verdict on a certificate another worker claimed, and how
# often it looks (the event loop's timers count in milliseconds). A check takes 1.5-2 ms, more
# on a busy machine, where checking it again would not be quicker; the wait is for nothing only
# when the claimant died or found the certificate forged.
WAIT_SECONDS: Final = 0.050
LOOK_SECONDS: Final = 0.001
_TAG: Final = b"condpay verified block certificate v1\x00"


def keys_digest(keys: Mapping[str, bytes]) -> bytes:
    """The validator set's identity in a fingerprint (ids and keys, in id order)."""
    sha = hashlib.sha256(struct.pack(">I", len(keys)))
    for validator_id in sorted(keys):
        _feed(sha, validator_id.encode(), bytes(keys[validator_id]))
    return sha.digest()


def fingerprint(
    keys: bytes, header: BlockHeader, block_hash: bytes, qc: QuorumCertificate
) -> bytes:
    """What a verified certificate is known by: ``keys`` (:func:`keys_digest`), the header's
    height and recomputed ``block_hash``, and the certificate as received."""
    sha = hashlib.sha256(_TAG)
    sha.update(struct.pack(">Q", header.height))
    signers = [signer.encode() for signer in qc.signer_ids]
    sha.update(struct.pack(">I", len(signers)))
    _feed(sha, keys, block_hash, bytes(qc.block_hash), bytes(qc.aggregate_signature), *signers)
    return sha.digest()


def _feed(sha: hashlib._Hash, *parts: bytes) -> None:
    for part in parts:
        sha.update(struct.pack(">I", len(part)))
        sha.update(part)


class SharedVerdicts:
    """The table: slot ``height % SLOTS`` holds the fingerprint of the certificate at that height
    a worker is verifying (its claim) and of the last one a worker verified there. ``lock``: the
    table's descriptor, whose POSIX record lock (one per process) makes looking and claiming one
    step between the workers; None for a table only this process uses."""

    __slots__ = ("_lock", "_table")

    def __init__(self, table: mmap.mmap | bytearray, lock: int | None = None) -> None:
        if len(table) != TABLE_BYTES:
            raise ValueError(f"a verdict table is {TABLE_BYTES} bytes, not {len(table)}")
        self._table = table
        self._lock = lock

    @contextlib.contextmanager
    def _alone(self) -> Iterator[None]:
        """No other worker looks or writes meanwhile (held for a few microseconds)."""
        if self._lock is None:
            yield
            return
        fcntl.lockf(self._lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._lock, fcntl.LOCK_UN)

    def _at(self, height: int, part: int) -> slice:
        start = (height % SLOTS) * SLOT_BYTES + part * FINGERPRINT_BYTES
        return slice(start, start + FINGERPRINT_BYTES)

    def knows(self, height: int, fingerprint: bytes) -> bool:
        """Whether a worker verified the certificate of ``fingerprint``."""
        return self._table[self._at(height, 1)] == fingerprint

    def claimed(self, height: int, fingerprint: bytes) -> bool:
        """Whether a worker is verifying it (or was, and found it did not verify)."""
        return self._table[self._at(height, 0)] == fingerprint

    def remember(self, height: int, fingerprint: bytes) -> None:
        """Say that it verified."""
        with self._alone():
            self._table[self._at(height, 1)] = fingerprint

    async def told(self, height: int, fingerprint: bytes) -> bool:
        """True if another worker verified it. Otherwise it is claimed for this worker, which
        is to verify it (False), once no other worker has it claimed or after waiting
        :data:`WAIT_SECONDS` for that one's verdict."""
        give_up = time.monotonic() + WAIT_SECONDS
        while True:
            with self._alone():
                if self.knows(height, fingerprint):
                    return True
                if not self.claimed(height, fingerprint) or time.monotonic() >= give_up:
                    self._table[self._at(height, 0)] = fingerprint
                    return False
            await asyncio.sleep(LOOK_SECONDS)

    @classmethod
    def in_memory(cls) -> SharedVerdicts:
        """A table for one process (tests)."""
        return cls(bytearray(TABLE_BYTES))


def table_for_workers() -> int | None:
    """In the parent: a new zeroed table's descriptor, to hand to the workers (``pass_fds`` and
    :data:`ENV`), or None where anonymous memory files do not exist."""
    create = getattr(os, "memfd_create", None)
    if create is None:
        return None
    fd: int = create("condpay-verified-blocks", 0)  # no MFD_CLOEXEC: the workers inherit it
    os.ftruncate(fd, TABLE_BYTES)
    return fd


def inherited(environ: MutableMapping[str, str] | None = None) -> SharedVerdicts | None:
    """In a worker: the table its parent handed it (the descriptor named by :data:`ENV`,
    removed from ``environ``: this process's children are not handed it), or None. A descriptor
    that is not such a table is logged and ignored: the worker verifies on its own."""
    env = os.environ if environ is None else environ
    value = env.pop(ENV, None)
    if value is None:
        return None
    try:
        fd = int(value)
    except ValueError:
        log.warning("verified_blocks_not_shared", descriptor=value, error="not a descriptor")
        return None
    try:
        if os.fstat(fd).st_size != TABLE_BYTES:
            raise ValueError("not a verdict table (its size differs)")
        os.set_inheritable(fd, False)  # kept (its lock), and not handed on to children
        table = mmap.mmap(fd, TABLE_BYTES)
    except (ValueError, OSError) as exc:
        with contextlib.suppress(OSError):  # not kept: closed, whatever failed
            os.close(fd)
        log.warning("verified_blocks_not_shared", descriptor=value, error=str(exc))
        return None
    return SharedVerdicts(table, lock=fd)


__all__ = [
    "ENV",
    "SLOTS",
    "WAIT_SECONDS",
    "SharedVerdicts",
    "fingerprint",
    "inherited",
    "keys_digest",
    "table_for_workers",
]
