"""condpay.journal, the journal's hash chain on the public API's messages: it verifies the
entries a real server returns from ListJournal byte for byte as the server sealed them, and it
names the first entry of a chain that was changed, reordered or cut."""

from __future__ import annotations

import hashlib

from condpay import journal
from condpay.v1 import ledger_pb2

from settlement.ledger import journal as server_journal
from tests.sim.ledger import audited_trade, story
from tests.support.harness import AUDITOR


def test_the_canonical_bytes_are_the_documented_json() -> None:
    postings = [
        ("w_reserve.icbc-sz", "AVAILABLE", "CNY", 1_000_00, 1_000_00),
        ("issuance:CNY", "ISSUANCE", "CNY", -1_000_00, -1_000_00),
    ]
    encoded = journal.canonical_bytes(
        1, "ISSUE", "req-1", "central_bank/pboc", 1_795_766_400_000_001, "tier 1 — 发行", postings
    )
    assert (
        encoded
        == (
            '[1,"ISSUE","req-1","central_bank/pboc",1795766400000001,"tier 1 — 发行",'
            '[["w_reserve.icbc-sz","AVAILABLE","CNY",100000,100000],'
            '["issuance:CNY","ISSUANCE","CNY",-100000,-100000]]]'
        ).encode()
    )
    fields = (1, "ISSUE", "req-1", "central_bank/pboc", 1_795_766_400_000_001, "m", postings)
    assert (
        journal.entry_hash(b"\x01" * 32, *fields)
        == hashlib.sha256(b"\x01" * 32 + journal.canonical_bytes(*fields)).digest()
    )


def test_enum_names_are_the_servers() -> None:
    assert journal.kind_name(ledger_pb2.ENTRY_KIND_RELEASE) == "RELEASE"
    assert journal.kind_name(ledger_pb2.ENTRY_KIND_DVP) == "DVP"
    assert journal.bucket_name(ledger_pb2.BUCKET_ISSUANCE) == "ISSUANCE"
    assert journal.kind_name(ledger_pb2.ENTRY_KIND_UNSPECIFIED) == "?0"
    assert journal.bucket_name(99) == "?99"


async def test_entries_from_a_real_server_verify(database_url: str) -> None:
    async with audited_trade(database_url) as trade:
        await story(trade, with_expiry=False)
        entries = [
            e async for e in trade.cb.with_caller(AUDITOR).journal(page_size=7)
        ]  # several pages
        records = await trade.harness.runtime.reader.journal(None, 0, 10_000)
        assert len(entries) == len(records) > 20
        kinds = {journal.kind_name(e.kind) for e in entries}
        assert kinds >= {"ISSUE", "TRANSFER", "LOCK", "FUND", "ADVANCE", "RELEASE", "REFUND"}
        assert kinds >= {"HOLD", "PVP"}
        assert journal.verify_entries(entries) is None
        prev = journal.GENESIS_HASH
        for entry, record in zip(entries, records, strict=True):
            # The very bytes the server sealed, rebuilt from the API's message.
            assert journal.committed_at_us_of(entry) == record.committed_at_us
            assert journal.canonical_bytes(
                entry.seq,
                journal.kind_name(entry.kind),
                entry.request_id,
                entry.caller,
                journal.committed_at_us_of(entry),
                entry.memo,
                journal.postings_of(entry),
            ) == server_journal.canonical_bytes(record)
            assert journal.hash_of(prev, entry) == entry.hash == record.hash
            prev = entry.hash
        # A verified prefix continues from its last seq and hash.
        middle = len(entries) // 2
        head = entries[middle - 1]
        assert journal.verify_entries(entries[middle:], head.hash, head.seq) is None


async def test_a_changed_reordered_or_cut_chain_names_its_first_broken_entry(
    database_url: str,
) -> None:
    async with audited_trade(database_url) as trade:
        await story(trade, with_expiry=False)
        entries = [e async for e in trade.cb.with_caller(AUDITOR).journal()]

        def copied() -> list[ledger_pb2.JournalEntry]:
            out = []
            for entry in entries:
                clone = ledger_pb2.JournalEntry()
                clone.CopyFrom(entry)
                out.append(clone)
            return out

        memo = copied()
        memo[4].memo += " "
        assert journal.verify_entries(memo) == 5

        amount = copied()
        amount[9].postings[0].amount.amount_minor += 1
        assert journal.verify_entries(amount) == 10

        kind = copied()
        other = {ledger_pb2.ENTRY_KIND_TRANSFER, ledger_pb2.ENTRY_KIND_LOCK} - {kind[11].kind}
        kind[11].kind = min(other)
        assert journal.verify_entries(kind) == 12

        moved = copied()
        moved[15].committed_at.nanos += 1_000  # one microsecond later
        assert journal.verify_entries(moved) == 16

        swapped = copied()
        swapped[6], swapped[7] = swapped[7], swapped[6]
        assert journal.verify_entries(swapped) == 8  # entry 8 where 7 belongs

        cut = copied()
        del cut[2]
        assert journal.verify_entries(cut) == 4  # a gap after 2

        rehashed = copied()  # a forger recomputes the entry's own hash, not its successors'
        rehashed[3].memo = "forged"
        rehashed[3].hash = journal.hash_of(rehashed[3].prev_hash, rehashed[3])
        assert journal.verify_entries(rehashed) == 5
