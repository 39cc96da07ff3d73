"""The basic money story through the real gRPC server, on SQLite and on PostgreSQL."""

from __future__ import annotations

from condpay.v1 import ledger_pb2, wallet_pb2

from tests.support.harness import Harness, central_bank_of
from wallets import OwnerKey


async def test_issue_open_fund_transfer_and_statement(harness: Harness) -> None:
    cb = harness.client()
    bank_key = await harness.institution("icbc-sz")
    await cb.issue("icbc-sz", "CNY", 1_000_000_00)
    bank = harness.client("institution/icbc-sz")
    alice_key, bob_key = OwnerKey.generate(), OwnerKey.generate()
    alice = (await bank.open_wallet("icbc-sz", alice_key.public_key, tier=2)).wallet
    bob = (await bank.open_wallet("icbc-sz", bob_key.public_key, kind="ENTERPRISE", tier=0)).wallet
    reserve = "w_reserve.icbc-sz"

    await bank.transfer(bank_key, reserve, alice.wallet_id, "CNY", 10_000_00)
    reply = await bank.transfer(
        alice_key, alice.wallet_id, bob.wallet_id, "CNY", 1_234_56, memo="invoice 42"
    )

    assert reply.entry.kind == ledger_pb2.ENTRY_KIND_TRANSFER
    assert [
        (p.account_id, p.amount.amount_minor, p.balance_after_minor) for p in reply.entry.postings
    ] == [
        (alice.wallet_id, -1_234_56, 8_765_44),
        (bob.wallet_id, 1_234_56, 1_234_56),
    ]
    assert reply.entry.memo == "invoice 42"
    assert reply.operation.commit_seq == reply.entry.seq == 3
    assert len(reply.entry.hash) == 32

    alice_now = await bank.get_wallet(alice.wallet_id)
    cny = next(b for b in alice_now.balances if b.available.currency == "CNY")
    assert cny.available.amount_minor == 8_765_44
    assert cny.held.amount_minor == 0
    assert cny.spent_today.amount_minor == 1_234_56
    assert cny.daily_cap.amount_minor == 100_000_00  # tier 2: 100,000 CNY a day
    assert [b.available.currency for b in alice_now.balances] == ["AED", "CNY", "HKD", "SAR", "THB"]

    statement = [e async for e in bank.journal(alice.wallet_id, page_size=1)]
    assert [e.seq for e in statement] == [2, 3]
    whole = [e async for e in cb.journal(page_size=2)]
    assert [e.seq for e in whole] == [1, 2, 3]
    assert whole[1].prev_hash == whole[0].hash

    supply = await cb.get_supply("CNY")
    (line,) = supply.supplies
    assert line.issued.amount_minor == 1_000_000_00
    assert line.in_circulation.amount_minor == line.balances_sum.amount_minor == 1_000_000_00
    assert line.consistent
    assert supply.as_of_seq == 3


async def test_redeem_returns_money_to_the_central_bank(harness: Harness) -> None:
    cb = harness.client()
    await harness.institution("boc-hk")
    cb = harness.client(central_bank_of("HKD"))
    await cb.issue("boc-hk", "HKD", 500_00)
    reply = await cb.redeem("boc-hk", "HKD", 200_00)
    assert reply.entry.kind == ledger_pb2.ENTRY_KIND_REDEEM
    (line,) = (await cb.get_supply("HKD")).supplies
    assert (line.issued.amount_minor, line.redeemed.amount_minor) == (500_00, 200_00)
    assert line.balances_sum.amount_minor == 300_00


async def test_open_wallet_reply_shows_tier_limits(harness: Harness) -> None:
    await harness.institution("icbc-sz")
    bank = harness.client("institution/icbc-sz")
    reply = await bank.open_wallet("icbc-sz", OwnerKey.generate().public_key, tier=4)
    assert reply.wallet.kind == wallet_pb2.WALLET_KIND_PERSONAL
    thb = next(b for b in reply.wallet.balances if b.available.currency == "THB")
    assert thb.balance_cap.amount_minor == 50_000_00  # 10,000 CNY x 5
    assert not reply.operation.replayed
