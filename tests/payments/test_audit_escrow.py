"""The audit also proves the escrows: each wallet's held balance is what its open payments hold,
and each payment's legs add up to what it released and refunded. Tampering is caught."""

from __future__ import annotations

from sqlalchemy import text

from settlement.ledger.audit import audit_ledger
from tests.payments.world import WAREHOUSE, TradeWorld, compiled, warehouse_params

CONTRACT = compiled(WAREHOUSE)


async def test_audit_catches_an_escrow_that_does_not_add_up(trade: TradeWorld) -> None:
    payment = await trade.lock(CONTRACT, warehouse_params(trade), source=WAREHOUSE)
    sql = trade.harness.runtime.sql
    assert (await audit_ledger(sql)).ok
    async with sql.begin() as conn:
        await conn.execute(
            text(
                "UPDATE payments SET held_minor = held_minor - 100, "
                "refunded_minor = refunded_minor + 100 WHERE payment_id = :p"
            ),
            {"p": payment.payment_id},
        )
    report = await audit_ledger(sql)
    trade.harness.audit_after = False
    assert any("legs do not add up" in f for f in report.failures), report.failures
    assert any(
        "is not what its open payments and settlements hold" in f for f in report.failures
    ), report.failures
