"""Conditional payments that settle across currencies and deliver titles, end to end through
gRPC: a contract's ``pay ... in HKD`` becomes a PvP through the bridge when its clause fires, and
``deliver title`` hands over a title the seller escrowed to the payment when it was locked."""

from __future__ import annotations

import asyncio
import time

import pytest
from condpay.attest import build_attestation, sign_ed25519
from condpay.client import bound_params
from condpay.errors import ApiError
from condpay.v1 import payment_pb2, settlement_pb2

from contracts_dsl import CompiledContract, compile_source
from settlement.ledger.payments import derive_payment_id
from tests.settlement.world import FINANCIER, PLATFORM, TradeWorld, key, refused
from wallets import AssignmentInstruction

CUSTOMS = "customs.hk"

PAYOUT = f"""
contract "cny-escrow-hkd-payout" version 1

param buyer  : wallet
param seller : wallet
param price  : money CNY

oracle customs = "{CUSTOMS}"

escrow price from buyer
deadline 2099-01-01T00:00:00Z -> refund remainder to buyer

clause cleared
when customs.cleared(declaration == "D-1") by customs
  -> pay 60% to seller in HKD
     and pay remainder to seller
"""

DVP = f"""
contract "ebl-against-payment" version 1

param buyer  : wallet
param seller : wallet
param price  : money CNY
param bol    : title

oracle customs = "{CUSTOMS}"

escrow price from buyer
deadline 2099-01-01T00:00:00Z -> refund remainder to buyer

clause cleared
when customs.cleared(declaration == "D-1") by customs
  -> pay remainder to seller
     and deliver title bol to buyer
"""


ALL_IN_HKD = f"""
contract "cny-escrow-all-in-hkd" version 1

param buyer  : wallet
param seller : wallet
param price  : money CNY

oracle customs = "{CUSTOMS}"

escrow price from buyer
deadline 2099-01-01T00:00:00Z -> refund remainder to buyer

clause cleared
when customs.cleared(declaration == "D-1") by customs
  -> pay remainder to seller in HKD
"""


def compiled(source: str) -> CompiledContract:
    result = compile_source(source, "<test>")
    assert result.contract is not None, [d.message for d in result.diagnostics]
    return result.contract


async def clear_customs(trade: TradeWorld, payment: payment_pb2.Payment, event_id: str) -> None:
    # On the server's clock (a test's ManualClock stands still while the wall clock runs on: an
    # event observed after the server's now is not one the contract has seen yet).
    now = trade.harness.runtime.clock.now_us()
    attestation = build_attestation(
        oracle_set_version=await trade.cb.oracle_set_version(),
        oracle="customs",
        event_id=event_id,
        payment_id=payment.payment_id,
        contract_hash=payment.contract.contract_hash,
        event_type="customs.cleared",
        attributes={"declaration": "D-1"},
        observed_at_us=now - 1_000_000,
        issued_at_us=now,
        expires_at_us=now + 600_000_000,
    )
    signature = sign_ed25519(attestation.statement, CUSTOMS, key(CUSTOMS))
    await trade.client(f"oracle/{CUSTOMS}").submit_attestation(
        attestation.statement, attestation.payload, [tuple(signature)], None, request_id=event_id
    )


async def settled(trade: TradeWorld, payment_id: str) -> list[settlement_pb2.Settlement]:
    """The payment's payouts once the coordinator has taken them all to FINAL."""
    platform = trade.platform
    for _ in range(200):
        reply = await platform.api.settlements.list_settlements(
            settlement_pb2.ListSettlementsRequest(origin_payment_id=payment_id),
        )
        found = list(reply.settlements)
        if found and all(s.state == settlement_pb2.SETTLEMENT_STATE_FINAL for s in found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"payouts of {payment_id} not final: {found}")


@pytest.fixture
async def customs(trade: TradeWorld) -> TradeWorld:
    await trade.cb.register_oracle(CUSTOMS, "ED25519", key(CUSTOMS).public_key)
    await trade.fund("buyer", "CNY", 300_000_00)
    return trade


async def test_a_release_pays_out_in_another_currency_through_the_bridge(
    customs: TradeWorld,
) -> None:
    trade = customs
    contract = compiled(PAYOUT)
    params = {
        "buyer": trade.wallets["buyer"],
        "seller": trade.wallets["seller"],
        "price": ("CNY", 100_000_00),
    }
    locked = await trade.platform.lock_payment(
        trade.keys["buyer"], contract, params, send_source=PAYOUT
    )
    payment = locked.payment
    await clear_customs(trade, payment, "ev-cleared-1")

    (payout,) = await settled(trade, payment.payment_id)
    assert payout.pay.currency == "CNY"
    assert payout.pay.amount_minor == 60_000_00
    assert payout.receive.currency == "HKD"
    assert payout.receive.amount_minor > 0
    assert payout.payee_wallet_id == trade.wallets["seller"]
    assert payout.finality.block_height > 0
    # 40% paid in CNY directly, 60% converted at the payout's quote.
    assert await trade.balance("seller", "CNY") == (40_000_00, 0)
    assert await trade.balance("seller", "HKD") == (payout.receive.amount_minor, 0)
    assert await trade.balance("buyer", "CNY") == (200_000_00, 0)
    final = await trade.platform.get_payment(payment.payment_id)
    assert final.state == payment_pb2.PAYMENT_STATE_SETTLED
    assert {leg.paid_to_wallet_id for leg in final.legs} == {
        payout.settlement_id,
        trade.wallets["seller"],
    }


async def lock_with_bill_of_lading(
    trade: TradeWorld, request_id: str
) -> tuple[payment_pb2.LockPaymentResponse, str]:
    """The seller's new eBL pledged to a DVP payment locked with ``request_id``; the lock's reply
    and the title id."""
    contract = compiled(DVP)
    title_id = await trade.issue_bill_of_lading("seller", 40, b"eBL COSU-7781 Yantian-LA")
    payment_id = derive_payment_id(PLATFORM, request_id)
    params = {
        "buyer": trade.wallets["buyer"],
        "seller": trade.wallets["seller"],
        "price": ("CNY", 100_000_00),
        "bol": title_id,
    }
    seller_key, seller = trade.party("seller")
    pledge = trade.platform.pledge_to_payment(
        seller_key, seller, title_id, payment_id, contract.hash, bound_params(contract, params).hash
    )
    locked = await trade.platform.lock_payment(
        trade.keys["buyer"],
        contract,
        params,
        send_source=DVP,
        request_id=request_id,
        title_pledges=[pledge],
    )
    assert locked.payment.payment_id == payment_id
    return locked, title_id


async def test_a_release_delivers_an_escrowed_bill_of_lading(customs: TradeWorld) -> None:
    trade = customs
    locked, title_id = await lock_with_bill_of_lading(trade, "lock-dvp-1")
    payment_id = locked.payment.payment_id
    escrowed = (await trade.platform.get_title(title_id)).title
    assert escrowed.pledged_to == payment_id
    assert escrowed.holder_wallet_id == trade.wallets["seller"]

    await clear_customs(trade, locked.payment, "ev-cleared-2")
    delivered = await trade.platform.get_title(title_id)
    assert delivered.title.holder_wallet_id == trade.wallets["buyer"]
    assert delivered.title.pledged_to == ""
    assert [m.kind for m in delivered.moves] == ["ISSUED", "PLEDGED", "DELIVERED"]
    assert await trade.balance("seller", "CNY") == (100_000_00, 0)


async def test_a_lock_without_the_title_pledge_is_refused_and_moves_nothing(
    customs: TradeWorld,
) -> None:
    trade = customs
    contract = compiled(DVP)
    title_id = await trade.issue_bill_of_lading("seller", 40, b"eBL COSU-7782")
    params = {
        "buyer": trade.wallets["buyer"],
        "seller": trade.wallets["seller"],
        "price": ("CNY", 100_000_00),
        "bol": title_id,
    }
    with pytest.raises(ApiError) as refused:
        await trade.platform.lock_payment(trade.keys["buyer"], contract, params, send_source=DVP)
    assert refused.value.reason == "TITLE_PLEDGE_MISSING"
    assert await trade.balance("buyer", "CNY") == (300_000_00, 0)
    assert (await trade.platform.get_title(title_id)).title.pledged_to == ""


async def test_a_payment_that_ends_without_delivery_frees_the_title(customs: TradeWorld) -> None:
    trade = customs
    contract = compiled(DVP)
    title_id = await trade.issue_bill_of_lading("seller", 40, b"eBL COSU-7783")
    request_id = "lock-dvp-cancel"
    payment_id = derive_payment_id(PLATFORM, request_id)
    seller_key, seller = trade.party("seller")
    params = {
        "buyer": trade.wallets["buyer"],
        "seller": seller,
        "price": ("CNY", 50_000_00),
        "bol": title_id,
    }
    await trade.platform.lock_payment(
        trade.keys["buyer"],
        contract,
        params,
        send_source=DVP,
        request_id=request_id,
        title_pledges=[
            trade.platform.pledge_to_payment(
                seller_key,
                seller,
                title_id,
                payment_id,
                contract.hash,
                bound_params(contract, params).hash,
            )
        ],
    )
    cancelled = await trade.platform.cancel_payment(
        payment_id, {trade.wallets["buyer"]: trade.keys["buyer"], seller: seller_key}
    )
    assert cancelled.payment.state == payment_pb2.PAYMENT_STATE_CANCELLED
    title = (await trade.platform.get_title(title_id)).title
    assert (title.holder_wallet_id, title.pledged_to) == (seller, "")
    assert await trade.balance("buyer", "CNY") == (300_000_00, 0)


async def test_proceeds_paid_only_through_the_bridge_cannot_be_assigned(
    customs: TradeWorld,
) -> None:
    """A payout in another currency goes to its settlement, never through the financier-first
    rule of releases in kind: assigning such proceeds would let the payee keep the advance and
    the payout while the financier collects nothing."""
    trade = customs
    contract = compiled(ALL_IN_HKD)
    params = {
        "buyer": trade.wallets["buyer"],
        "seller": trade.wallets["seller"],
        "price": ("CNY", 100_000_00),
    }
    locked = await trade.platform.lock_payment(
        trade.keys["buyer"], contract, params, send_source=ALL_IN_HKD
    )
    payment_id = locked.payment.payment_id
    financier_before = await trade.balance("financier", "CNY")
    assignment = AssignmentInstruction(
        payment_id=payment_id,
        payee=trade.wallets["seller"],
        financier=trade.wallets["financier"],
        currency="CNY",
        assigned_minor=100_000_00,
        advance_minor=90_000_00,
        submitter=FINANCIER,
        request_id="assign-all-in-hkd",
        expires_at_us=int((time.time() + 300) * 1e6),
    )
    error = await refused(
        "CURRENCY_MISMATCH",
        trade.client(FINANCIER).assign_proceeds(
            trade.keys["seller"], trade.keys["financier"], assignment
        ),
    )
    assert "only in another currency" in error.message
    assert await trade.balance("financier", "CNY") == financier_before
    assert not (await trade.platform.get_payment(payment_id)).assignments
