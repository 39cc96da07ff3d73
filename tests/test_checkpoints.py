"""Signed journal checkpoints through the real server (EvidenceService), on SQLite and
PostgreSQL: a checkpoint commits to the journal as ListJournal shows it, every entry proves its
place in it with the SDK alone, checkpoints come every N entries and every T seconds, the key
is one per deployment and survives restarts, and only supervisors read them."""

from __future__ import annotations

import asyncio
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from condpay.checkpoints import (
    CheckpointError,
    tree_root,
    verify_checkpoint,
    verify_inclusion,
)
from condpay.client import Client
from condpay.errors import ApiError
from condpay.journal import GENESIS_HASH, hash_of
from condpay.v1 import evidence_pb2, ledger_pb2
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from settlement.certs import key_pem, load_or_create_checkpoint_key
from settlement.ledger.audit import audit_ledger
from tests.support.harness import AUDITOR, Harness, start_harness
from wallets import OwnerKey

PLATFORM = "platform/gba-trade"


def _us(checkpoint: evidence_pb2.Checkpoint) -> int:
    return checkpoint.signed_at.seconds * 1_000_000 + checkpoint.signed_at.nanos // 1000


def _verify(public_key: bytes, checkpoint: evidence_pb2.Checkpoint) -> None:
    verify_checkpoint(
        public_key,
        checkpoint.seq,
        checkpoint.head_hash,
        checkpoint.tree_root,
        _us(checkpoint),
        checkpoint.signature,
    )


async def _transfers(harness: Harness, count: int) -> int:
    """``count`` transfers (after an issue and a wallet); the journal's last seq."""
    cb = harness.client()
    bank_key = await harness.institution("icbc-sz")
    await cb.issue("icbc-sz", "CNY", 1_000_000_00)
    bank = harness.client("institution/icbc-sz")
    wallet = (await bank.open_wallet("icbc-sz", OwnerKey.generate().public_key, tier=2)).wallet
    last = 0
    for n in range(count):
        reply = await bank.transfer(bank_key, "w_reserve.icbc-sz", wallet.wallet_id, "CNY", n + 1)
        last = reply.entry.seq
    return last


async def _journal(client: Client) -> list[ledger_pb2.JournalEntry]:
    return [entry async for entry in client.journal()]


async def test_a_checkpoint_commits_to_the_journal_and_proves_every_entry(
    harness: Harness,
) -> None:
    head = await _transfers(harness, 4)
    auditor = harness.client(AUDITOR)
    evidence = auditor.api.evidence
    key = await evidence.get_checkpoint_key(evidence_pb2.GetCheckpointKeyRequest())
    assert key.public_key == harness.runtime.checkpoints.public_key
    assert len(key.key_id) == 16

    checkpoint = (
        await evidence.get_checkpoint(evidence_pb2.GetCheckpointRequest(seq=head))
    ).checkpoint
    assert checkpoint.seq == head  # signed on demand: none covered the head yet
    _verify(key.public_key, checkpoint)
    journal = await _journal(auditor)
    assert [e.seq for e in journal] == list(range(1, head + 1))
    assert checkpoint.head_hash == journal[-1].hash
    assert checkpoint.tree_root == tree_root([e.hash for e in journal])

    prev = GENESIS_HASH
    for entry in journal:
        proved = await evidence.get_inclusion_proof(
            evidence_pb2.GetInclusionProofRequest(entry_seq=entry.seq)
        )
        assert proved.entry == entry
        assert proved.checkpoint == checkpoint
        # The entry's own content makes its hash; the proof takes it to the signed root.
        assert hash_of(prev, proved.entry) == proved.entry.hash
        verify_inclusion(
            proved.entry.hash, entry.seq, checkpoint.seq, proved.proof, checkpoint.tree_root
        )
        with pytest.raises(CheckpointError):
            verify_inclusion(proved.entry.hash, entry.seq, checkpoint.seq, proved.proof, bytes(32))
        prev = entry.hash

    # Asking again signs nothing new: the first checkpoint that covers entry 1 is this one.
    again = await evidence.get_checkpoint(evidence_pb2.GetCheckpointRequest(seq=1))
    assert again.checkpoint == checkpoint
    listed = await evidence.list_checkpoints(evidence_pb2.ListCheckpointsRequest())
    assert list(listed.checkpoints) == [checkpoint]


async def test_what_is_not_there_and_who_may_not_look(harness: Harness) -> None:
    head = await _transfers(harness, 1)
    evidence = harness.client(AUDITOR).api.evidence
    cases = [
        (evidence_pb2.GetCheckpointRequest(seq=head + 1), "CHECKPOINT_NOT_FOUND"),
        (evidence_pb2.GetCheckpointRequest(seq=0), "MISSING_FIELD"),
        (evidence_pb2.GetInclusionProofRequest(entry_seq=head + 1), "ENTRY_NOT_FOUND"),
        (evidence_pb2.GetInclusionProofRequest(entry_seq=-3), "MISSING_FIELD"),
        (
            evidence_pb2.GetInclusionProofRequest(entry_seq=2, checkpoint_seq=1),
            "CHECKPOINT_NOT_FOUND",
        ),
        (
            evidence_pb2.GetInclusionProofRequest(entry_seq=1, checkpoint_seq=head + 5),
            "CHECKPOINT_NOT_FOUND",
        ),
    ]
    for request, reason in cases:
        with pytest.raises(ApiError) as refused:
            await harness.client(AUDITOR).send(request)
        assert refused.value.reason == reason, request
    # A central bank sees the entries of its own currencies only: HKMA's view of a CNY entry is
    # that of an entry that does not exist.
    hkma = harness.client("central_bank/hkma")
    answers = []
    for seq in (head, head + 7):
        with pytest.raises(ApiError) as hidden:
            await hkma.api.evidence.get_inclusion_proof(
                evidence_pb2.GetInclusionProofRequest(entry_seq=seq)
            )
        error = hidden.value
        answers.append((error.code, error.reason, error.message.replace(str(seq), "N")))
    assert (
        answers[0]
        == answers[1]
        == (
            grpc.StatusCode.NOT_FOUND,
            "ENTRY_NOT_FOUND",
            "journal entry 'N' does not exist",
        )
    )
    platform = harness.client(PLATFORM)
    for request in (
        evidence_pb2.ListCheckpointsRequest(),
        evidence_pb2.GetCheckpointRequest(seq=1),
        evidence_pb2.GetInclusionProofRequest(entry_seq=1),
    ):
        with pytest.raises(ApiError) as refused:
            await platform.send(request)
        assert refused.value.reason == "ROLE_NOT_ALLOWED"
    key = await platform.api.evidence.get_checkpoint_key(evidence_pb2.GetCheckpointKeyRequest())
    assert key.public_key == harness.runtime.checkpoints.public_key
    # No checkpoint was signed by any refusal.
    assert not (await evidence.list_checkpoints(evidence_pb2.ListCheckpointsRequest())).checkpoints


async def _checkpoints_until(client: Client, seq: int) -> list[evidence_pb2.Checkpoint]:
    """Every checkpoint, once one of entry ``seq`` is there (the sweep looks each second)."""
    give_up = time.monotonic() + 15
    while True:
        found = list(
            (
                await client.api.evidence.list_checkpoints(evidence_pb2.ListCheckpointsRequest())
            ).checkpoints
        )
        if (found and found[-1].seq >= seq) or time.monotonic() > give_up:
            return found
        await asyncio.sleep(0.2)


async def test_every_nth_entry_gets_its_checkpoint(database_url: str) -> None:
    async with start_harness(database_url, checkpoint_every_entries=3) as harness:
        head = await _transfers(harness, 8)  # entries 1..10 with the issue and the wallet
        auditor = harness.client(AUDITOR)
        due = head - head % 3
        found = await _checkpoints_until(auditor, due)
        assert [c.seq for c in found] == list(range(3, due + 1, 3))
        for checkpoint in found:
            _verify(checkpoint.public_key, checkpoint)
        # Paged: one at a time, in order.
        page = await auditor.api.evidence.list_checkpoints(
            evidence_pb2.ListCheckpointsRequest(page_size=1, after_seq=3)
        )
        assert [c.seq for c in page.checkpoints] == [6]
        rest = await auditor.api.evidence.list_checkpoints(
            evidence_pb2.ListCheckpointsRequest(
                page_size=1, after_seq=3, page_token=page.next_page_token
            )
        )
        assert [c.seq for c in rest.checkpoints] == [9]


async def test_entries_short_of_n_get_a_checkpoint_after_t_seconds(database_url: str) -> None:
    async with start_harness(
        database_url, checkpoint_every_entries=1000, checkpoint_every_seconds=1
    ) as harness:
        head = await _transfers(harness, 2)
        found = await _checkpoints_until(harness.client(AUDITOR), head)
        assert found
        assert found[-1].seq == head


async def test_the_development_key_is_one_per_database_and_survives_a_restart(
    database_url: str,
) -> None:
    async with start_harness(database_url) as first:
        key = first.runtime.checkpoints.public_key
    async with start_harness(database_url) as second:
        assert second.runtime.checkpoints.public_key == key


async def test_the_tls_key_is_made_by_certs_init_and_read_from_the_certs_dir(
    database_url: str, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    async with start_harness(database_url, certs_dir=certs) as harness:
        written = certs / "checkpoint.key"
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
        assert (certs / "checkpoint.pub").exists()
        key, created = load_or_create_checkpoint_key(written)
        assert not created
        assert harness.runtime.checkpoints.public_key == key.public_key().public_bytes_raw()


def test_racing_processes_end_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "checkpoint.key"
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: load_or_create_checkpoint_key(path), range(8)))
    publics = {key.public_key().public_bytes_raw() for key, _ in made}
    assert len(publics) == 1
    assert sum(created for _, created in made) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.key", "checkpoint.pub"]
    path.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ValueError, match="is not an Ed25519 private key"):
        load_or_create_checkpoint_key(path)


async def test_the_audit_fails_when_a_checkpoint_no_longer_matches(harness: Harness) -> None:
    head = await _transfers(harness, 2)
    evidence = harness.client(AUDITOR).api.evidence
    await evidence.get_checkpoint(evidence_pb2.GetCheckpointRequest(seq=head))
    assert (await audit_ledger(harness.runtime.sql)).ok
    harness.audit_after = False  # broken on purpose below
    for column, value, complaint in (
        ("tree_root", bytes(32), f"checkpoint {head} does not match the journal"),
        ("signature", bytes(64), f"checkpoint {head} is not signed by checkpoint key"),
    ):
        async with harness.runtime.sql.begin() as conn:
            saved = (
                await conn.execute(text(f"SELECT {column} FROM journal_checkpoints"))
            ).scalar_one()
            await conn.execute(
                text(f"UPDATE journal_checkpoints SET {column} = :value"), {"value": value}
            )
        report = await audit_ledger(harness.runtime.sql)
        assert any(complaint in failure for failure in report.failures), report.failures
        async with harness.runtime.sql.begin() as conn:
            await conn.execute(
                text(f"UPDATE journal_checkpoints SET {column} = :value"), {"value": saved}
            )
    # An entry rewritten after its checkpoint: no proof is made from the changed journal.
    async with harness.runtime.sql.begin() as conn:
        await conn.execute(
            text("UPDATE journal_entries SET hash = :h WHERE seq = 1"), {"h": bytes(32)}
        )
    harness.allowed_log_events.add("unhandled_error")  # logged with the request id: an alarm
    with pytest.raises(ApiError) as refused:
        await evidence.get_inclusion_proof(evidence_pb2.GetInclusionProofRequest(entry_seq=2))
    assert refused.value.reason == "INTERNAL"
