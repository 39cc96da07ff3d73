"""PaymentView: the mutating calls answer with the BASIC payment unless asked for FULL, the reads
with FULL unless asked for BASIC; a replay answers with the view its first call stored, and the
same request id with another view is another request."""

from __future__ import annotations

import grpc
from condpay.errors import ApiError
from condpay.v1 import payment_pb2

from tests.payments.sign import lock_request
from tests.payments.snapshot import CONTRACT, ORACLE, by_customs, cleared, locked, refused, submit
from tests.payments.world import WAREHOUSE, TradeWorld, register_oracles, warehouse_params

BASIC = payment_pb2.PAYMENT_VIEW_BASIC
FULL = payment_pb2.PAYMENT_VIEW_FULL


def _is_basic(payment: payment_pb2.Payment) -> bool:
    return payment.contract.source == "" and payment.contract.canonical_json == ""


async def test_mutating_calls_answer_basic_unless_asked_and_reads_full(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    assert _is_basic(payment)
    assert payment.contract.contract_hash == CONTRACT.hash
    assert payment.contract.name == CONTRACT.name
    assert payment.escrow.amount_minor == 125_000_00

    attestation = await cleared(trade, payment, "ev-customs")
    reply = await submit(trade.client(ORACLE), attestation, by_customs(oracles, attestation))
    assert _is_basic(reply.payment)
    assert list(reply.payment.attestations) == []
    assert reply.attestation.event_id == "ev-customs"  # its own attestation, at the top level

    cb = trade.cb
    full = (
        await cb.api.payments.get_payment(
            payment_pb2.GetPaymentRequest(payment_id=payment.payment_id)
        )
    ).payment
    assert full.contract.source == WAREHOUSE
    assert full.contract.canonical_json == CONTRACT.canonical.decode()
    assert [a.event_id for a in full.attestations] == ["ev-customs"]
    basic = (
        await cb.api.payments.get_payment(
            payment_pb2.GetPaymentRequest(payment_id=payment.payment_id, view=BASIC),
        )
    ).payment
    assert _is_basic(basic)
    assert basic.version == full.version
    listed = await cb.api.payments.list_payments(payment_pb2.ListPaymentsRequest(view=BASIC))
    assert [_is_basic(p) for p in listed.payments] == [True]


async def test_a_lock_asked_for_full_answers_full_and_replays_it(trade: TradeWorld) -> None:
    platform = trade.platform
    request = lock_request(trade, CONTRACT, warehouse_params(trade), WAREHOUSE, "lock-full")
    request.view = FULL
    first = await platform.api.payments.lock_payment(request)
    assert first.payment.contract.source == WAREHOUSE
    again = await platform.api.payments.lock_payment(request)
    assert again.operation.replayed
    assert again.payment == first.payment
    # The same request id asking for another view is another request.
    request.view = BASIC
    await refused(
        platform.api.payments.lock_payment(request),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )


async def test_an_unknown_view_is_invalid_and_changes_nothing(trade: TradeWorld) -> None:
    platform = trade.platform
    request = lock_request(trade, CONTRACT, warehouse_params(trade), WAREHOUSE, "lock-bad-view")
    request.view = 7  # type: ignore[assignment]
    error: ApiError = await refused(
        platform.api.payments.lock_payment(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_VIEW",
    )
    assert error.metadata.get("field") == "view"
    assert await trade.balance("buyer") == (200_000_00, 0)
    cb = trade.cb
    await refused(
        cb.api.payments.get_payment(payment_pb2.GetPaymentRequest(payment_id="p_x", view=9)),  # type: ignore[arg-type]
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_VIEW",
    )
