"""Locking, funding, cancelling and reading conditional payments through the real server."""

from __future__ import annotations

import pytest
from condpay.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from condpay.v1 import payment_pb2

from tests.payments.world import (
    FINANCIER,
    WAREHOUSE,
    build_trade_world,
    compiled,
    warehouse_params,
)
from tests.support.harness import Harness

CONTRACT = compiled(WAREHOUSE)


async def test_lock_moves_the_escrow_into_the_payers_held_balance(harness: Harness) -> None:
    world = await build_trade_world(harness)
    payment = await world.lock(CONTRACT, warehouse_params(world), source=WAREHOUSE)
    assert payment.state == payment_pb2.PAYMENT_STATE_LOCKED
    assert payment.escrow.amount_minor == payment.held.amount_minor == 125_000_00
    assert payment.contract.contract_hash == CONTRACT.hash
    assert payment.payer_wallet_id == world.wallets["buyer"]
    assert payment.params["seller"].id == world.wallets["seller"]
    assert payment.params["price"].money.amount_minor == 125_000_00
    assert await world.balance("buyer") == (75_000_00, 125_000_00)
    again = await world.platform.get_payment(payment.payment_id)
    assert again.version == payment.version == 1
    # The contract is now registered: a second payment can name it by hash alone.
    second = await world.lock(CONTRACT, warehouse_params(world, 1_000_00))
    assert second.contract.contract_hash == CONTRACT.hash
    (line,) = (await world.cb.get_supply("CNY")).supplies
    assert line.held_sum.amount_minor == 126_000_00
    assert line.consistent


async def test_the_payer_signature_binds_contract_params_and_amount(harness: Harness) -> None:
    world = await build_trade_world(harness)
    params = warehouse_params(world)
    reply = await world.platform.lock_payment(
        world.keys["buyer"], CONTRACT, params, send_source=WAREHOUSE, dry_run=True
    )
    assert reply.operation.dry_run
    # Sign one price, send another: refused, nothing moves.
    from condpay.client import param_values

    request = payment_pb2.LockPaymentRequest()
    signed_for = warehouse_params(world, 1_00)
    from tests.payments.sign import lock_request

    request = lock_request(world, CONTRACT, signed_for, WAREHOUSE, "lock-mismatch")
    for name, value in param_values(CONTRACT, params).items():
        request.params[name].CopyFrom(value)
    with pytest.raises(InvalidArgument) as refused:
        await world.platform.api.payments.lock_payment(request)
    assert refused.value.reason == "INSTRUCTION_MISMATCH"
    assert refused.value.metadata["field"] == "payer_instruction.params_hash"
    assert await world.balance("buyer") == (200_000_00, 0)


async def test_lock_refusals(harness: Harness) -> None:
    world = await build_trade_world(harness, {"buyer": 100_00, "financier": 0})
    with pytest.raises(FailedPrecondition) as poor:
        await world.lock(CONTRACT, warehouse_params(world), source=WAREHOUSE)
    assert poor.value.reason == "INSUFFICIENT_FUNDS"
    with pytest.raises(InvalidArgument) as bad:
        await world.lock(CONTRACT, warehouse_params(world), source="contract nonsense")
    assert bad.value.reason == "CONTRACT_INVALID"
    with pytest.raises(PermissionDenied) as role:
        await world.client(FINANCIER).lock_payment(
            world.keys["buyer"], CONTRACT, warehouse_params(world), send_source=WAREHOUSE
        )
    assert role.value.reason == "ROLE_NOT_ALLOWED"
    assert await world.balance("buyer") == (100_00, 0)


async def test_another_platform_cannot_see_the_payment(harness: Harness) -> None:
    world = await build_trade_world(harness)
    payment = await world.lock(CONTRACT, warehouse_params(world), source=WAREHOUSE)
    with pytest.raises(NotFound) as hidden:
        await world.client("platform/other").get_payment(payment.payment_id)
    assert hidden.value.reason == "PAYMENT_NOT_FOUND"
    listed = await world.client("platform/other").api.payments.list_payments(
        payment_pb2.ListPaymentsRequest()
    )
    assert list(listed.payments) == []
