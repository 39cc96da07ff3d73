"""Transfer requests built, signed and serialized before the clock starts.

Request ``i`` of a cell is paid by payer ``i mod P`` (so up to P calls in flight never share a
payer) to payee ``i mod P`` (uncontended: every payer has a payee of its own) or to the one hot
wallet (hot: every transfer credits the same balance row). Each is a serialized
``condpay.v1.TransferRequest`` with a fresh request id, expiring an hour after it was signed.
"""

from __future__ import annotations

import base64
import enum
import os
import time

from condpay.v1 import wallet_pb2

from tests.bench.ledger_setup import CURRENCY, BenchLedger
from wallets import OwnerKey, TransferInstruction, sign_transfer

AMOUNT_MINOR = 1_00  # 1.00 CNY per transfer
EXPIRY_SECONDS = 3600
MEMO = "bench"
SUBMITTER = "platform/bench-load"  # the identity transfers.py sends them as (TRANSFER_CALLER)


class Shape(enum.StrEnum):
    ECHO = "echo"
    UNCONTENDED = "uncontended"
    HOT = "hot"


def _serialized(key: OwnerKey, instruction: TransferInstruction) -> bytes:
    signed = sign_transfer(key, instruction)
    request = wallet_pb2.TransferRequest(
        request_id=instruction.request_id,
        instruction=wallet_pb2.SignedInstruction(
            payload=signed.payload, signature=signed.signature
        ),
    )
    return request.SerializeToString()


def _expiry_us() -> int:
    return int((time.time() + EXPIRY_SECONDS) * 1_000_000)


def transfer_requests(ledger: BenchLedger, shape: Shape, count: int, tag: str) -> list[bytes]:
    """``count`` signed transfers of the given shape, request ids ``<tag>-<i>``."""
    if shape is Shape.ECHO:
        raise ValueError("the echo shape has no transfers")
    expires_at_us = _expiry_us()
    payers, payees = ledger.payers, ledger.payees
    requests = []
    for i in range(count):
        payer = payers[i % len(payers)]
        target = ledger.hot_wallet if shape is Shape.HOT else payees[i % len(payees)]
        instruction = TransferInstruction(
            source=payer.wallet_id,
            target=target,
            currency=CURRENCY,
            amount_minor=AMOUNT_MINOR,
            submitter=SUBMITTER,
            request_id=f"{tag}-{i:07d}",
            expires_at_us=expires_at_us,
            memo=MEMO,
        )
        requests.append(_serialized(payer.key, instruction))
    return requests


def _wallet_id_like() -> str:
    return "w_" + base64.b32encode(os.urandom(20)).decode()[:26].lower()


def sample_transfer_request() -> bytes:
    """A real, signed TransferRequest for wallets that do not exist: the echo payload, byte for
    byte the size of the requests the transfer cells send."""
    instruction = TransferInstruction(
        source=_wallet_id_like(),
        target=_wallet_id_like(),
        currency=CURRENCY,
        amount_minor=AMOUNT_MINOR,
        submitter=SUBMITTER,
        request_id="postgres-w2-uncontended-c64-a0-0000000",
        expires_at_us=_expiry_us(),
        memo=MEMO,
    )
    return _serialized(OwnerKey.generate(), instruction)
