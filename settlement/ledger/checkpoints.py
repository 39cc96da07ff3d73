"""Signed journal checkpoints: every replica looks each second whether one is due (so many new
entries, or new entries and so many seconds since the last) and signs the journal's head then,
or on demand (EvidenceService.GetCheckpoint). The statement, the tree and the proofs are
condpay/checkpoints.py's; the rows are ``journal_checkpoints``.

A checkpoint extends the last one's Merkle frontier with the entries after it, read in one
snapshot together with the head, so it costs O(new entries), never a pass over the journal.
Replicas racing to sign the same head insert the same ``seq``: the first row stays. A signature
is never rewritten: a journal changed after its checkpoint no longer matches it, which is the
point (GetInclusionProof refuses to prove from such a tree).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from condpay.checkpoints import Frontier, inclusion_proof, statement, tree_root
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from settlement import limits
from settlement.clock import Clock
from settlement.sweeps import PeriodicSweep

log = structlog.get_logger("condpay.checkpoints")

_COLUMNS = "seq, head_hash, tree_root, frontier, signed_at_us, public_key, signature"


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    seq: int
    head_hash: bytes
    tree_root: bytes
    frontier: bytes
    signed_at_us: int
    public_key: bytes
    signature: bytes

    @classmethod
    def of(cls, row: Sequence[Any]) -> CheckpointRecord:
        seq, head, root, frontier, signed_at_us, public_key, signature = row
        return cls(
            int(seq),
            bytes(head),
            bytes(root),
            bytes(frontier),
            int(signed_at_us),
            bytes(public_key),
            bytes(signature),
        )


class JournalMismatch(Exception):
    """The journal no longer matches a checkpoint signed over it (tampering, or a bug)."""


class Checkpoints(PeriodicSweep):
    NAME = "checkpoint_sweep"

    def __init__(
        self,
        sql: AsyncEngine,
        clock: Clock,
        key: Ed25519PrivateKey,
        every_entries: int,
        every_seconds: int,
    ) -> None:
        super().__init__(min(limits.CHECKPOINT_SWEEP_SECONDS, every_seconds))
        self._sql, self._clock, self._key = sql, clock, key
        self.public_key = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._every_entries, self._every_us = every_entries, every_seconds * 1_000_000
        self._started_us = clock.now_us()
        self._signing = asyncio.Lock()  # one signer per process; replicas may race (see above)
        self.signed = 0

    # -- signing -------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Sign what is due; how many were signed. Every ``every_entries``-th entry gets its
        checkpoint; entries short of that get one when ``every_seconds`` have passed since the
        last (or since this replica started)."""
        head, last = await self._head_and_last()
        done = last_seq(last)
        if head <= done:
            return 0
        if head - done >= self._every_entries:
            steps = (head - done) // self._every_entries
            return await self.sign_through(done + steps * self._every_entries, self._every_entries)
        since_us = self._started_us if last is None else last.signed_at_us
        if self._clock.now_us() - since_us >= self._every_us:
            return await self.sign_through(head)
        return 0

    async def sign_through(self, seq: int, step: int = limits.CHECKPOINT_ENTRIES_MAX) -> int:
        """Sign checkpoints, each at most ``step`` entries past the one before, until one
        covers entry ``seq``; how many this call signed."""
        step = min(step, limits.CHECKPOINT_ENTRIES_MAX)
        signed = 0
        async with self._signing:
            while True:
                head, last = await self._head_and_last()
                if last_seq(last) >= min(seq, head):
                    return signed
                await self._sign_next(last, min(seq, head, last_seq(last) + step))
                signed += 1

    async def _sign_next(self, last: CheckpointRecord | None, through: int) -> None:
        after = last_seq(last)
        frontier = Frontier() if last is None else Frontier.from_bytes(last.seq, last.frontier)
        async with self._sql.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT seq, hash FROM journal_entries WHERE seq > :after AND seq <= "
                        ":through ORDER BY seq"
                    ),
                    {"after": after, "through": through},
                )
            ).all()
        if [int(r[0]) for r in rows] != list(range(after + 1, through + 1)):
            raise JournalMismatch(f"journal entries {after + 1}..{through} are not all there")
        hashes = [bytes(r[1]) for r in rows]
        frontier.extend(hashes)
        root, signed_at_us = frontier.root(), self._clock.now_us()
        signature = self._key.sign(statement(through, hashes[-1], root, signed_at_us))
        async with self._sql.begin() as conn:
            await conn.execute(
                text(
                    f"INSERT INTO journal_checkpoints ({_COLUMNS}) VALUES (:seq, :head, :root, "
                    ":frontier, :at, :key, :signature) ON CONFLICT DO NOTHING"
                ),
                {
                    "seq": through,
                    "head": hashes[-1],
                    "root": root,
                    "frontier": frontier.to_bytes(),
                    "at": signed_at_us,
                    "key": self.public_key,
                    "signature": signature,
                },
            )
        self.signed += 1
        log.info("checkpoint_signed", seq=through, root=root.hex())

    async def _head_and_last(self) -> tuple[int, CheckpointRecord | None]:
        async with self._sql.connect() as conn:
            head = (await conn.execute(text("SELECT seq FROM ledger_head"))).scalar()
            row = (
                await conn.execute(
                    # (MAX: a lookup of the index's last key on SQLite too, never a scan)
                    text(
                        f"SELECT {_COLUMNS} FROM journal_checkpoints "
                        "WHERE seq = (SELECT MAX(seq) FROM journal_checkpoints)"
                    )
                )
            ).first()
        return int(head or 0), None if row is None else CheckpointRecord.of(row)

    # -- reading -------------------------------------------------------------------------------
    async def after(self, after_seq: int, limit: int) -> list[CheckpointRecord]:
        async with self._sql.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        f"SELECT {_COLUMNS} FROM journal_checkpoints WHERE seq > :after "
                        "ORDER BY seq LIMIT :limit"
                    ),
                    {"after": after_seq, "limit": limit},
                )
            ).all()
        return [CheckpointRecord.of(r) for r in rows]

    async def covering(self, seq: int) -> CheckpointRecord | None:
        """The first checkpoint of entry ``seq`` or later, signing one of the head when none
        covers it yet; None when the journal has fewer than ``seq`` entries."""
        found = await self._first_from(seq)
        if found is None:
            head, _ = await self._head_and_last()
            if head < seq:
                return None
            await self.sign_through(head)
            found = await self._first_from(seq)
        return found

    async def exactly(self, seq: int) -> CheckpointRecord | None:
        found = await self._first_from(seq)
        return found if found is not None and found.seq == seq else None

    async def _first_from(self, seq: int) -> CheckpointRecord | None:
        found = await self.after(seq - 1, 1)
        return found[0] if found else None

    async def proof(self, entry_seq: int, checkpoint: CheckpointRecord) -> list[bytes]:
        """The audit path of ``entry_seq`` in ``checkpoint``'s tree, from every entry hash up to
        it (O(checkpoint.seq), computed off the event loop); JournalMismatch when those hashes
        no longer make the signed root."""
        return (await self.proofs([entry_seq], checkpoint))[0]

    async def proofs(
        self, entry_seqs: Sequence[int], checkpoint: CheckpointRecord
    ) -> list[list[bytes]]:
        """:meth:`proof` of each of ``entry_seqs``, from one read of the hashes."""
        async with self._sql.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT hash FROM journal_entries WHERE seq <= :seq ORDER BY seq"),
                    {"seq": checkpoint.seq},
                )
            ).all()
        hashes = [bytes(r[0]) for r in rows]

        def paths() -> list[list[bytes]]:
            if len(hashes) != checkpoint.seq or tree_root(hashes) != checkpoint.tree_root:
                raise JournalMismatch(f"the journal no longer makes checkpoint {checkpoint.seq}")
            return [inclusion_proof(hashes, seq) for seq in entry_seqs]

        return await asyncio.to_thread(paths)


def last_seq(checkpoint: CheckpointRecord | None) -> int:
    return 0 if checkpoint is None else checkpoint.seq
