"""The audit re-derives what docs/bridge.md says it does: each block's transfers_digest from the
transfer records, the block a committed transfer points to, each commit's postings role by role
from its record, and issued/redeemed from the ISSUE and REDEEM entries. Each test tampers with
the state behind the ledger's back (its SQLite connection, or the state file) and expects the
audit to name what was tampered with."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridges import AccountKind, Bridge, ManualClock, Money, TransferState
from bridges._ledger import Ledger
from bridges._quorum import header_hash
from tests.bridges.conftest import KEY_SEED, fund
from tests.bridges.test_ledger import new_ledger


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    ledger = new_ledger()
    try:
        yield ledger
    finally:
        ledger.close()


def _commit(ledger: Ledger, transfer_id: str, amount_minor: int = 1_000_00) -> None:
    quote = ledger.quote("HKD", "CNY", source_amount_minor=amount_minor)
    ledger.prepare(
        transfer_id, quote_id=quote.quote_id, payer_id="A", payee_id="B", timeout_ms=60_000
    )
    assert ledger.commit(transfer_id).state is TransferState.COMMITTED


def _entry(ledger: Ledger, transfer_id: str) -> int:
    row = ledger._one("SELECT entry_id FROM entries WHERE transfer_id = ?", (transfer_id,))
    return int(row[0])


def test_a_committed_transfers_amount_changed_behind_the_ledger_is_found(ledger: Ledger) -> None:
    _commit(ledger, "t-1")
    assert ledger.audit().ok
    # As verified in the review: this left the audit clean.
    ledger._conn.execute("UPDATE transfers SET target_minor = target_minor + 1000")
    problems = ledger.audit().problems
    (postings,) = [p for p in problems if p.startswith("transfer t-1: postings disagree")]
    assert "payee: posted B/SETTLEMENT/CNY" in postings
    assert "provider: posted LP/LIQUIDITY/CNY" in postings
    assert "payer" not in postings  # only the roles that differ are named


def test_a_committed_transfers_net_changed_behind_the_ledger_is_found(ledger: Ledger) -> None:
    _commit(ledger, "t-1")
    ledger._conn.execute("UPDATE transfers SET net_minor = net_minor - 1 WHERE transfer_id = 't-1'")
    problems = ledger.audit().problems
    assert any(p.startswith("transfer t-1: net ") and "!= source" in p for p in problems)
    assert any(
        p.startswith("transfer t-1: postings disagree") and "provider_liquidity" in p
        for p in problems
    )


def test_a_rewrite_of_a_sealed_transfer_and_its_postings_breaks_the_blocks_digest(
    ledger: Ledger,
) -> None:
    """Record, postings and balances changed consistently: only the block, which committed to
    the record, still tells. The audit recomputes its transfers_digest."""
    _commit(ledger, "t-1")
    _commit(ledger, "t-2")
    assert ledger.finality("t-2").final
    entry = _entry(ledger, "t-1")
    payee = ledger._account("B", AccountKind.SETTLEMENT, "CNY")[0]
    provider = ledger._account("LP", AccountKind.LIQUIDITY, "CNY")[0]
    conn = ledger._conn
    conn.execute(
        "UPDATE transfers SET target_minor = target_minor + 1000 WHERE transfer_id = 't-1'"
    )
    conn.execute(
        "UPDATE postings SET amount_minor = amount_minor + 1000 WHERE entry_id = ? AND role = ?",
        (entry, "payee"),
    )
    conn.execute(
        "UPDATE postings SET amount_minor = amount_minor - 1000 WHERE entry_id = ? AND role = ?",
        (entry, "provider"),
    )
    conn.execute(
        "UPDATE accounts SET balance_minor = balance_minor + 1000 WHERE account_id = ?", (payee,)
    )
    conn.execute(
        "UPDATE accounts SET balance_minor = balance_minor - 1000 WHERE account_id = ?",
        (provider,),
    )
    assert ledger.audit().problems == (
        "block 1: transfers_digest does not match its transfers' records",
    )


def test_a_committed_transfer_pointing_to_a_block_that_does_not_list_it_is_found(
    ledger: Ledger,
) -> None:
    _commit(ledger, "t-1")
    assert ledger.finality("t-1").final
    _commit(ledger, "t-2")  # waits for a block
    _commit(ledger, "t-3")
    assert ledger.status("t-2").block_height == 0
    ledger._conn.execute("UPDATE transfers SET block_height = 1 WHERE transfer_id = 't-2'")
    ledger._conn.execute("UPDATE transfers SET block_height = 9 WHERE transfer_id = 't-3'")
    problems = ledger.audit().problems
    assert "transfer t-2 points to block 1, which does not list it" in problems
    assert "transfer t-3 points to block 9, which does not list it" in problems


async def test_supply_changed_in_the_state_file_is_found(tmp_path: Path) -> None:
    """issued and redeemed both moved by 5: issued - redeemed still equals what is held, so only
    the re-derivation from the ISSUE/REDEEM entries finds it."""
    path = tmp_path / "bridge.db"
    bridge = await Bridge.open(path, clock=ManualClock(), key_seed=KEY_SEED)
    try:
        await fund(bridge)
        await bridge.redeem("r-1", participant_id="BANK-A", amount=Money("THB", 7_00))
        assert (await bridge.audit()).ok
        with sqlite3.connect(path) as conn:  # another process, as it were
            conn.execute(
                "UPDATE supply SET issued_minor = issued_minor + 5, "
                "redeemed_minor = redeemed_minor + 5 WHERE currency = 'THB'"
            )
        report = await bridge.audit()
        thb = next(s for s in report.supply if s.currency == "THB")
        assert report.problems == (
            f"THB: supply says issued {thb.issued_minor}, redeemed {thb.redeemed_minor}; the "
            f"ISSUE/REDEEM entries say issued {thb.issued_minor - 5}, "
            f"redeemed {thb.redeemed_minor - 5}",
        )
        assert thb.redeemed_minor - 5 == 7_00
    finally:
        await bridge.close()


def test_every_currencys_supply_moved_alike_is_found(ledger: Ledger) -> None:
    # As verified in the review: this left the audit clean.
    ledger._conn.execute(
        "UPDATE supply SET issued_minor = issued_minor + 5, redeemed_minor = redeemed_minor + 5"
    )
    problems = ledger.audit().problems
    currencies = {s.currency for s in ledger.supply()}
    assert {p.split(":")[0] for p in problems} == currencies
    assert all("the ISSUE/REDEEM entries say" in p for p in problems)


def test_a_sealed_transfers_amount_made_negative_is_found_not_a_crash(ledger: Ledger) -> None:
    _commit(ledger, "t-1")
    assert ledger.finality("t-1").final
    ledger._conn.execute("UPDATE transfers SET spread_minor = -spread_minor")
    problems = ledger.audit().problems
    assert "block 1: transfers_digest does not match its transfers' records" in problems
    assert any(p.startswith("transfer t-1: net ") for p in problems)


def _three_certified_blocks(ledger: Ledger) -> None:
    for transfer_id in ("t-1", "t-2", "t-3"):
        _commit(ledger, transfer_id)
        assert ledger.finality(transfer_id).final
    assert ledger._one("SELECT COUNT(*) FROM blocks WHERE qc_signature IS NOT NULL")[0] == 3


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many certificates each audit verifies with a pairing (the audit's calls only)."""
    import bridges._ledger as ledger_module

    calls: list[int] = []
    real = ledger_module.verify_quorum_certificate

    def counting(*args: Any) -> bool:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(ledger_module, "verify_quorum_certificate", counting)
    return calls


def test_a_second_audit_verifies_only_the_certificates_added_since(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _three_certified_blocks(ledger)
    calls = _count_verifications(monkeypatch)
    assert ledger.audit().ok
    assert len(calls) == 3
    calls.clear()
    assert ledger.audit().ok
    assert calls == []
    _commit(ledger, "t-4")
    assert ledger.finality("t-4").final
    calls.clear()
    assert ledger.audit().ok
    assert len(calls) == 1  # block 4's


@pytest.mark.parametrize(
    "tamper",
    [
        # block 1 certified with block 2's certificate: a valid signature over another hash
        "UPDATE blocks SET qc_signature = (SELECT qc_signature FROM blocks WHERE height = 2) "
        "WHERE height = 1",
        # one signer dropped from block 2's certificate: below the quorum
        "UPDATE blocks SET qc_signers = json_remove(qc_signers, '$[0]') WHERE height = 2",
        # block 2's certificate's signature bytes flipped
        "UPDATE blocks SET qc_signature = zeroblob(length(qc_signature)) WHERE height = 2",
    ],
    ids=["another-blocks-signature", "signer-dropped", "signature-zeroed"],
)
def test_a_certificate_changed_after_a_clean_audit_is_found_by_the_next(
    ledger: Ledger, tamper: str
) -> None:
    """The audit does not re-verify certificates it verified before, unless they changed: a
    certificate rewritten behind the ledger's back after a clean audit is still found."""
    _three_certified_blocks(ledger)
    assert ledger.audit().ok
    ledger._conn.execute(tamper)
    problems = ledger.audit().problems
    assert any(p.endswith("the quorum certificate does not verify") for p in problems), problems
    assert ledger.audit().problems == problems  # and again: a failed audit remembers nothing


def test_a_header_rewritten_with_its_hash_after_a_clean_audit_is_found(ledger: Ledger) -> None:
    """A sealed block's header and stored hash changed together (the links to the next block
    break too): its old certificate is checked again, against the new hash."""
    _three_certified_blocks(ledger)
    assert ledger.audit().ok
    ledger._conn.execute("UPDATE blocks SET sealed_at_us = sealed_at_us + 1 WHERE height = 3")
    header = ledger._header(3)
    ledger._conn.execute("UPDATE blocks SET hash = ? WHERE height = 3", (header_hash(header),))
    problems = ledger.audit().problems
    assert "block 3: the quorum certificate does not verify" in problems
