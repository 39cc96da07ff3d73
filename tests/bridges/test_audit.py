"""The audit re-derives what docs/bridge.md says it does: each block's transfers_digest from the
transfer records, the block a committed transfer points to, each commit's postings role by role
from its record, and issued/redeemed from the ISSUE and REDEEM entries. Each test tampers with
the state behind the ledger's back (its SQLite connection, or the state file) and expects the
audit to name what was tampered with."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridges import AccountKind, Bridge, ManualClock, Money, TransferState
from bridges._ledger import Ledger
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
