"""The whole story, on SQLite and PostgreSQL: issue CNY -> wallets -> lock 125,000.00 CNY against
the overseas-warehouse contract -> a financier funds 40% -> customs clears -> the LAX-3 sensors
(2 of 3, one BLS aggregate) confirm arrival -> 30% released -> the buyer signs the receipt ->
the remainder released. Every balance exact to the fen, the financier's claim recorded, and the
journal explaining every movement."""

from __future__ import annotations

from condpay.v1 import ledger_pb2, payment_pb2

from tests.payments.world import (
    FINANCIER,
    WAREHOUSE,
    TradeWorld,
    attest,
    by_customs,
    by_party,
    by_sensors,
    compiled,
    register_oracles,
    warehouse_params,
)

CONTRACT = compiled(WAREHOUSE)


async def test_overseas_warehouse_delivery_end_to_end(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    buyer, seller, financier = (trade.wallets[n] for n in ("buyer", "seller", "financier"))
    payment = await trade.lock(CONTRACT, warehouse_params(trade), source=WAREHOUSE)
    assert await trade.balance("buyer") == (75_000_00, 125_000_00)

    funded = await trade.client(FINANCIER).fund_escrow(
        trade.keys["financier"],
        financier,
        payment.payment_id,
        "CNY",
        50_000_00,
        payer_key=trade.keys["buyer"],  # the buyer invites the financier: it co-signs
        payer_wallet=buyer,
        fee_minor=500_00,
        due_at_us=trade.now_us() + 30 * 86_400_000_000,
    )
    assert funded.financing.principal.amount_minor == 50_000_00
    assert funded.financing.fee.amount_minor == 500_00
    # The financier's money took the place of 40% of the buyer's in the escrow.
    assert await trade.balance("buyer") == (125_000_00, 125_000_00)
    assert await trade.balance("financier") == (950_000_00, 0)

    cleared = await attest(
        trade,
        payment,
        oracle="customs",
        event_type="customs.cleared",
        attributes={"declaration": "D-2026-1127"},
        event_id="ev-customs",
        sign=by_customs(oracles),
    )
    assert list(cleared.legs) == []  # arrival is still to come
    assert cleared.attestation.status == "processed"

    arrived = await attest(
        trade,
        payment,
        oracle="sensors",
        event_type="iot.arrived",
        attributes={"site": "LAX-FBA-3"},
        event_id="ev-arrived",
        sign=by_sensors(oracles, "iot.lax3.gate", "iot.lax3.rfid"),
    )
    assert [(leg.clause, leg.wallet_id, leg.amount.amount_minor) for leg in arrived.legs] == [
        ("arrival", seller, 37_500_00)
    ]
    assert arrived.payment.state == payment_pb2.PAYMENT_STATE_PARTIALLY_RELEASED
    assert sorted(arrived.attestation.signer_ids) == ["iot.lax3.gate", "iot.lax3.rfid"]
    assert await trade.balance("seller") == (37_500_00, 0)
    assert await trade.balance("buyer") == (125_000_00, 87_500_00)

    receipt = await attest(
        trade,
        payment,
        oracle="buyer",
        event_type="receipt.signed",
        attributes={"signer": buyer},
        event_id="ev-receipt",
        sign=by_party(buyer, trade.keys["buyer"]),
        client=trade.platform,
    )
    assert [(leg.clause, leg.amount.amount_minor) for leg in receipt.legs] == [
        ("receipt", 87_500_00)
    ]
    final = receipt.payment
    assert final.state == payment_pb2.PAYMENT_STATE_SETTLED
    assert (final.held.amount_minor, final.released.amount_minor) == (0, 125_000_00)
    assert await trade.balance("seller") == (125_000_00, 0)
    assert await trade.balance("buyer") == (125_000_00, 0)
    # The buyer owes the financier 50,000.00 + 500.00 by the due date: recorded, not yet paid.
    (claim,) = final.financing
    assert (claim.principal.amount_minor, claim.fee.amount_minor, claim.refunded.amount_minor) == (
        50_000_00,
        500_00,
        0,
    )
    # Every movement has its journal entry, and the attestations are on the payment (a FULL
    # read: the mutating calls answer with the BASIC view, which leaves them out).
    journal = [e async for e in trade.cb.journal()]
    kinds = [ledger_pb2.EntryKind.Name(e.kind) for e in journal[-4:]]
    assert kinds == [
        "ENTRY_KIND_LOCK",
        "ENTRY_KIND_FUND",
        "ENTRY_KIND_RELEASE",
        "ENTRY_KIND_RELEASE",
    ]
    stored = await trade.cb.get_payment(final.payment_id)
    assert [a.event_id for a in stored.attestations] == ["ev-customs", "ev-arrived", "ev-receipt"]
    assert list(final.attestations) == []
    assert final.contract.source == ""
    (line,) = (await trade.cb.get_supply("CNY")).supplies
    assert line.consistent
    assert line.held_sum.amount_minor == 0
