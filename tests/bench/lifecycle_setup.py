"""The conditional-payment lifecycle benchmark's world and its flows, through the public gRPC API.

Set-up (untimed, once per server): the transfer bench's ledger (:mod:`tests.bench.ledger_setup`:
an institution, ``pairs`` funded buyers and as many sellers), the example contract's oracles
registered by the central bank (customs with Ed25519, the three LAX-3 sensors with BLS12-381 and
their proofs of possession), and examples/contracts/overseas-warehouse-delivery.contract
registered once by the platform, its ``deadline`` line moved to :data:`DEADLINE_DAYS` days from
now so that the benchmark never runs past it.

A lifecycle (:func:`lifecycle_flows`), each request signed and serialized beforehand, the payment
id known from the platform and the request id (:func:`condpay.ids.payment_id_for`):

1. ``LockPayment`` by the platform, the buyer's LockInstruction signed, the contract by hash;
2. ``SubmitAttestation`` customs.cleared, Ed25519, by ``oracle/customs.cn.shenzhen``: no release;
3. ``SubmitAttestation`` iot.arrived(site="LAX-FBA-3"), a 2-of-3 BLS aggregate (gate and rfid),
   by ``oracle/iot.lax3.gate``: releases 30% to the seller;
4. ``SubmitAttestation`` receipt.signed by the buyer's wallet key, by the platform: releases the
   remaining 70%, the payment is SETTLED.

Lifecycle ``i`` is buyer ``i mod P`` paying seller ``i mod P``. The statements are issued when the
flows are built (just before their cell: the server takes them within 5 minutes, and 30 s ahead at
most), observed a few minutes earlier, against the oracle set version read then.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from pathlib import Path

from condpay.attest import (
    bls_registration,
    build_attestation,
    sign_bls_aggregate,
    sign_ed25519,
    sign_party,
)
from condpay.client import PaymentsClient, bound_params, param_values
from condpay.ids import payment_id_for
from condpay.v1 import oracle_pb2, payment_pb2, wallet_pb2

from contracts_dsl import CompiledContract, compile_source, escrow_minor
from tests.bench.ledger_setup import CENTRAL_BANK, CURRENCY, BenchLedger, build_ledger
from tests.bench.load import Flow, Step
from wallets import LockInstruction, OwnerKey, bls

CONTRACT_PATH = (
    Path(__file__).resolve().parents[2]
    / "examples"
    / "contracts"
    / "overseas-warehouse-delivery.contract"
)
DEADLINE_DAYS = 30
PLATFORM = "platform/bench-trade"
CUSTOMS = "customs.cn.shenzhen"
SENSORS = ("iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid")
SIGNING_SENSORS = ("iot.lax3.gate", "iot.lax3.rfid")  # 2 of 3
CUSTOMS_CALLER = f"oracle/{CUSTOMS}"
SENSORS_CALLER = f"oracle/{SENSORS[0]}"
DECLARATION = "D-2026-1127"
SITE = "LAX-FBA-3"
PRICE_MINOR = 10_00  # 10.00 CNY a lifecycle: 3.00 on arrival, 7.00 on receipt
ARRIVAL_MINOR = PRICE_MINOR * 30 // 100
RECEIPT_MINOR = PRICE_MINOR - ARRIVAL_MINOR
EXPIRY_SECONDS = 3600
ATTESTATION_TTL_US = 600_000_000
SECOND_US = 1_000_000

LOCK_METHOD = "/condpay.v1.ConditionalPaymentService/LockPayment"
ATTEST_METHOD = "/condpay.v1.OracleService/SubmitAttestation"
STEP_LOCK = "LockPayment"
STEP_CUSTOMS = "SubmitAttestation customs.cleared"
STEP_ARRIVED = "SubmitAttestation iot.arrived"
STEP_RECEIPT = "SubmitAttestation receipt.signed"
STEPS = (STEP_LOCK, STEP_CUSTOMS, STEP_ARRIVED, STEP_RECEIPT)
RELEASED_BY_STEP = {STEP_ARRIVED: ARRIVAL_MINOR, STEP_RECEIPT: RECEIPT_MINOR}


def contract_source(now: dt.datetime | None = None) -> str:
    """The example contract with its deadline :data:`DEADLINE_DAYS` days after ``now``."""
    moment = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(days=DEADLINE_DAYS)
    stamp = moment.replace(microsecond=0).isoformat()
    source, replaced = re.subn(
        r"^deadline \S+", f"deadline {stamp}", CONTRACT_PATH.read_text(), flags=re.MULTILINE
    )
    if replaced != 1:
        raise ValueError(f"no one deadline line in {CONTRACT_PATH}")
    return source


def _compiled(source: str) -> CompiledContract:
    result = compile_source(source, str(CONTRACT_PATH))
    if result.contract is None:
        raise ValueError(
            f"the contract does not compile: {[d.message for d in result.diagnostics]}"
        )
    return result.contract


def _seed(name: str) -> bytes:
    return name.encode().ljust(32, b"*")[:32]


@dataclass(frozen=True, slots=True)
class LifecycleWorld:
    ledger: BenchLedger  # payers are the buyers, payees the sellers
    contract: CompiledContract
    customs_key: OwnerKey
    sensor_keys: dict[str, int]  # BLS secret keys

    @property
    def sellers(self) -> tuple[str, ...]:
        return self.ledger.payees


async def build_lifecycle_world(address: str, *, pairs: int) -> LifecycleWorld:
    """Buyers and sellers, the oracles and the contract, through the public API."""
    ledger = await build_ledger(address, payers=pairs)
    customs_key = OwnerKey.generate()
    sensor_keys = {name: bls.secret_key(_seed(f"{name}-{time.time_ns()}")) for name in SENSORS}
    source = contract_source()
    contract = _compiled(source)
    central_bank = PaymentsClient(address, caller=CENTRAL_BANK)
    try:
        await central_bank.register_oracle(CUSTOMS, "ED25519", customs_key.public_key)
        for name, secret in sensor_keys.items():
            registration = bls_registration(secret)
            await central_bank.register_oracle(
                name,
                "BLS12_381",
                registration.public_key,
                proof_of_possession=registration.proof_of_possession,
            )
        platform = central_bank.with_caller(PLATFORM)
        reply = await platform.register_contract(source)
        if reply.contract.contract_hash != contract.hash:
            raise RuntimeError("the server registered the contract under another hash")
    finally:
        await central_bank.close()
    return LifecycleWorld(ledger, contract, customs_key, sensor_keys)


async def oracle_set_version(address: str) -> int:
    central_bank = PaymentsClient(address, caller=CENTRAL_BANK)
    try:
        return await central_bank.oracle_set_version()
    finally:
        await central_bank.close()


def _caller(name: str) -> tuple[tuple[str, str], ...]:
    return (("condpay-caller", name),)


def _lock_request(
    world: LifecycleWorld, buyer: int, request_id: str, expires_at_us: int
) -> tuple[bytes, str]:
    """A serialized LockPaymentRequest and the payment id it will make."""
    contract = world.contract
    payer = world.ledger.payers[buyer]
    params = {
        "buyer": payer.wallet_id,
        "seller": world.sellers[buyer],
        "price": (CURRENCY, PRICE_MINOR),
        "declaration": DECLARATION,
    }
    bound = bound_params(contract, params)
    signed = LockInstruction(
        payer=payer.wallet_id,
        contract_hash=contract.hash,
        params_hash=bound.hash,
        currency=CURRENCY,
        amount_minor=escrow_minor(contract, bound),
        submitter=PLATFORM,
        request_id=request_id,
        expires_at_us=expires_at_us,
    ).sign(payer.key)
    request = payment_pb2.LockPaymentRequest(
        request_id=request_id,
        contract_hash=contract.hash,
        params=param_values(contract, params),
        payer_instruction=wallet_pb2.SignedInstruction(
            payload=signed.payload, signature=signed.signature
        ),
    )
    return request.SerializeToString(), payment_id_for(PLATFORM, request_id)


@dataclass(frozen=True, slots=True)
class _Event:
    oracle: str  # the attester's name in the contract
    event_type: str
    attributes: dict[str, str | int | bool]
    observed_at_us: int


def _attestation_request(
    world: LifecycleWorld,
    event: _Event,
    *,
    event_id: str,
    payment_id: str,
    version: int,
    now_us: int,
    buyer: int,
) -> bytes:
    attestation = build_attestation(
        oracle_set_version=version,
        oracle=event.oracle,
        event_id=event_id,
        payment_id=payment_id,
        contract_hash=world.contract.hash,
        event_type=event.event_type,
        attributes=event.attributes,
        observed_at_us=event.observed_at_us,
        issued_at_us=now_us,
        expires_at_us=now_us + ATTESTATION_TTL_US,
    )
    statement = attestation.statement
    request = oracle_pb2.SubmitAttestationRequest(
        request_id=event_id, statement=statement, payload=attestation.payload
    )
    if event.oracle == "customs":
        signer_id, signature = sign_ed25519(statement, CUSTOMS, world.customs_key)
        request.signatures.add(signer_id=signer_id, signature=signature)
    elif event.oracle == "sensors":
        signers = [(name, world.sensor_keys[name]) for name in SIGNING_SENSORS]
        aggregate = sign_bls_aggregate(statement, signers)
        request.bls_aggregate.signer_ids.extend(aggregate.signer_ids)
        request.bls_aggregate.signature = aggregate.signature
    else:
        payer = world.ledger.payers[buyer]
        signer_id, signature = sign_party(statement, payer.wallet_id, payer.key)
        request.signatures.add(signer_id=signer_id, signature=signature)
    return request.SerializeToString()


def lifecycle_flows(world: LifecycleWorld, count: int, tag: str, version: int) -> list[Flow]:
    """``count`` lifecycles, request ids ``<tag>-<i>`` (event ids ``<tag>-<i>.<event>``), signed
    now against oracle set ``version``."""
    now_us = int(time.time() * SECOND_US)
    expires_at_us = now_us + EXPIRY_SECONDS * SECOND_US
    pairs = len(world.ledger.payers)
    flows = []
    for i in range(count):
        buyer = i % pairs
        request_id = f"{tag}-{i:07d}"
        lock, payment_id = _lock_request(world, buyer, request_id, expires_at_us)
        events = (
            (
                STEP_CUSTOMS,
                CUSTOMS_CALLER,
                "customs",
                _Event(
                    "customs",
                    "customs.cleared",
                    {"declaration": DECLARATION},
                    now_us - 180 * SECOND_US,
                ),
            ),
            (
                STEP_ARRIVED,
                SENSORS_CALLER,
                "arrived",
                _Event("sensors", "iot.arrived", {"site": SITE}, now_us - 120 * SECOND_US),
            ),
            (
                STEP_RECEIPT,
                PLATFORM,
                "receipt",
                _Event(
                    "buyer",
                    "receipt.signed",
                    {"signer": world.ledger.payers[buyer].wallet_id},
                    now_us - 60 * SECOND_US,
                ),
            ),
        )
        steps = [Step(STEP_LOCK, LOCK_METHOD, lock, _caller(PLATFORM))]
        for name, caller, suffix, event in events:
            request = _attestation_request(
                world,
                event,
                event_id=f"{request_id}.{suffix}",
                payment_id=payment_id,
                version=version,
                now_us=now_us,
                buyer=buyer,
            )
            steps.append(
                Step(name, ATTEST_METHOD, request, _caller(caller), name in RELEASED_BY_STEP)
            )
        flows.append(Flow(payment_id, tuple(steps)))
    return flows
