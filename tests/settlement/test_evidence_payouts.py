"""Evidence bundles of payments that pay out through the bridge and deliver a title, through
the real server on SQLite and PostgreSQL: the payout's commit entry in the core's journal is in
the bundle and proves the leg, the title's pledge is a signed document, and both verify
offline; a payout whose amount the record changed does not."""

from __future__ import annotations

import json

import pytest
from condpay.evidence import EvidenceError, verify_bundle
from condpay.v1 import evidence_pb2

from tests.settlement.test_payment_payouts import (
    PAYOUT,
    clear_customs,
    compiled,
    customs,
    lock_with_bill_of_lading,
    settled,
)
from tests.settlement.world import TradeWorld
from tests.support.harness import AUDITOR

__all__ = ["customs"]  # the fixture, shared


async def _bundle(trade: TradeWorld, payment_id: str) -> bytes:
    reply = await trade.client(AUDITOR).api.evidence.get_payment_evidence(
        evidence_pb2.GetPaymentEvidenceRequest(payment_id=payment_id)
    )
    return reply.bundle


async def test_a_bridge_payout_is_proved_by_its_commit_entry(customs: TradeWorld) -> None:
    trade = customs
    params = {
        "buyer": trade.wallets["buyer"],
        "seller": trade.wallets["seller"],
        "price": ("CNY", 100_000_00),
    }
    locked = await trade.platform.lock_payment(
        trade.keys["buyer"], compiled(PAYOUT), params, send_source=PAYOUT
    )
    payment_id = locked.payment.payment_id
    await clear_customs(trade, locked.payment, "ev-cleared-1")
    (payout,) = await settled(trade, payment_id)
    key = trade.harness.runtime.checkpoints.public_key
    bundle = await _bundle(trade, payment_id)
    result = verify_bundle(bundle, key)
    assert result.state == "SETTLED"
    summary = "\n".join(result.summary)
    assert "released 100% (100,000.00 CNY) on customs (1 of 1)" in summary
    assert "paid out in HKD through the bridge" in summary
    document = json.loads(bundle)
    (recorded,) = document["settlements"]
    assert (recorded["settlement_id"], recorded["state"]) == (payout.settlement_id, "FINAL")
    (commit_seq,) = recorded["entry_seqs"]
    commit = next(e for e in document["entries"] if e["seq"] == commit_seq)
    assert commit["kind"] == "PVP"
    assert [trade.wallets["buyer"], "HELD", "CNY", -60_000_00] in [
        p[:4] for p in commit["postings"]
    ]

    # The record says the payout took less from the escrow than its commit entry did.
    changed = json.loads(bundle)
    changed["settlements"][0]["pay_minor"] -= 1
    with pytest.raises(EvidenceError) as caught:
        verify_bundle(json.dumps(changed).encode(), key)
    assert caught.value.what == "leg cleared/0", str(caught.value)


async def test_a_delivered_title_and_its_pledge(customs: TradeWorld) -> None:
    trade = customs
    locked, _ = await lock_with_bill_of_lading(trade, "lock-dvp-evidence")
    payment_id = locked.payment.payment_id
    await clear_customs(trade, locked.payment, "ev-cleared-2")
    bundle = await _bundle(trade, payment_id)
    result = verify_bundle(bundle, trade.harness.runtime.checkpoints.public_key)
    assert result.state == "SETTLED"
    document = json.loads(bundle)
    assert [(d["kind"], d["idx"]) for d in document["documents"]] == [
        ("LOCK", 0),
        ("PLEDGE", 1),
        ("ATTESTATION", 0),
    ]
    assert [g["kind"] for g in document["legs"]] == ["pay", "deliver_title"]
