"""Hand-built signed requests, for tests that must send what a correct client would not."""

from __future__ import annotations

import time

from condpay.client import bound_params, param_values
from condpay.v1 import payment_pb2, wallet_pb2

from contracts_dsl import CompiledContract, escrow_minor
from tests.payments.world import PLATFORM, TradeWorld
from wallets import LockInstruction


def lock_request(
    world: TradeWorld,
    contract: CompiledContract,
    params: dict[str, object],
    source: str,
    request_id: str,
    *,
    submitter: str = PLATFORM,
) -> payment_pb2.LockPaymentRequest:
    bound = bound_params(contract, params)
    signed = LockInstruction(
        payer=bound.wallet(contract.escrow.funder),
        contract_hash=contract.hash,
        params_hash=bound.hash,
        currency=contract.escrow.currency,
        amount_minor=escrow_minor(contract, bound),
        submitter=submitter,
        request_id=request_id,
        expires_at_us=int((time.time() + 300) * 1e6),
    ).sign(world.keys["buyer"])
    return payment_pb2.LockPaymentRequest(
        request_id=request_id,
        contract_source=source,
        params=param_values(contract, params),
        payer_instruction=wallet_pb2.SignedInstruction(
            payload=signed.payload, signature=signed.signature
        ),
    )
