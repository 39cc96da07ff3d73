"""The ledger audit can fail: tampering with the database directly is detected and named."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from settlement.ledger.audit import audit_ledger
from tests.support.harness import Harness
from wallets import OwnerKey


async def small_ledger(h: Harness) -> str:
    bank_key = await h.institution("icbc-sz")
    await h.client().issue("icbc-sz", "CNY", 10_000_00)
    bank = h.client("institution/icbc-sz")
    wallet = (await bank.open_wallet("icbc-sz", OwnerKey.generate().public_key)).wallet
    await bank.transfer(bank_key, "w_reserve.icbc-sz", wallet.wallet_id, "CNY", 2_500_00)
    await bank.transfer(bank_key, "w_reserve.icbc-sz", wallet.wallet_id, "CNY", 1_00)
    return wallet.wallet_id


TAMPERING = {
    "balance changed without a journal entry": (
        "UPDATE balances SET available = available + 1 WHERE wallet_id = :w AND currency = 'CNY'",
        ["journal replay gives", "sum of balances"],
    ),
    "money moved between wallets without a journal entry": (
        "UPDATE balances SET available = available - 100 "
        "WHERE wallet_id = 'w_reserve.icbc-sz' AND currency = 'CNY'",
        ["journal replay gives"],
    ),
    "posting amount altered": (
        "UPDATE postings SET amount = amount + 1 WHERE seq = 2 AND idx = 1",
        ["hash chain broken at entry 2", "unbalanced"],
    ),
    "last journal entry deleted": (
        "DELETE FROM postings WHERE seq = 3; DELETE FROM journal_entries WHERE seq = 3",
        ["ledger head (3) does not point at the last entry (2)"],
    ),
    "journal entry deleted": (
        "DELETE FROM postings WHERE seq = 2; DELETE FROM journal_entries WHERE seq = 2",
        ["journal gap", "hash chain broken at entry 3"],
    ),
    "supply inflated": (
        "UPDATE supply SET issued = issued + 5 WHERE currency = 'CNY'",
        ["issued - redeemed", "issuance account replays"],
    ),
    "memo rewritten": (
        "UPDATE journal_entries SET memo = 'forged' WHERE seq = 1",
        ["hash chain broken at entry 1"],
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
async def test_audit_detects_tampering(harness: Harness, case: str) -> None:
    wallet_id = await small_ledger(harness)
    clean = await audit_ledger(harness.runtime.sql)
    assert clean.ok, clean.failures
    assert clean.entries == 3
    statements, expected = TAMPERING[case]
    async with harness.runtime.sql.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.execute(text("PRAGMA foreign_keys = OFF"))
        for statement in statements.split("; "):
            await conn.execute(text(statement), {"w": wallet_id} if ":w" in statement else {})
    report = await audit_ledger(harness.runtime.sql)
    harness.audit_after = False
    assert not report.ok
    for fragment in expected:
        assert any(fragment in failure for failure in report.failures), report.failures
