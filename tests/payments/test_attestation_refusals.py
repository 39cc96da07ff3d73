"""Issue 4's refusals, through the real server on SQLite and PostgreSQL: each is refused with its
gRPC status and ErrorInfo reason and changes nothing (payment state, version, held/released
amounts, attestations, balances, journal, oracle set), and where it matters the correct call is
accepted afterwards, so the refusal was about the defect and not about the setup.

Attestations are authorised by their signatures: an oracle may submit one for any payment whose
contract names it; a platform only for its own payments (see
test_another_platform_cannot_relay_attestations_for_a_payment_it_does_not_own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc
from condpay.attest import Attestation, bls_registration, sign_ed25519
from condpay.client import bound_params, param_values
from condpay.errors import AlreadyExists
from condpay.v1 import errors_pb2, oracle_pb2, payment_pb2, wallet_pb2
from eth_typing import BLSPubkey
from py_ecc.bls.g2_primitives import G1_to_pubkey, pubkey_to_G1
from py_ecc.optimized_bls12_381.optimized_curve import G1, add, multiply, neg

from contracts_dsl import CompiledContract, escrow_minor
from tests.payments.snapshot import (
    CONTRACT,
    MINUTE_US,
    ORACLE,
    OTHER_PLATFORM,
    arrived,
    by_customs,
    by_sensors,
    cancel_request,
    cleared,
    cleared_for,
    locked,
    make_attestation,
    open_funded_wallet,
    receipt,
    refused,
    refused_without_effect,
    submit,
    take_snapshot,
)
from tests.payments.world import (
    CUSTOMS,
    PLATFORM,
    SENSORS,
    WAREHOUSE,
    Oracles,
    TradeWorld,
    compiled,
    key,
    register_oracles,
    warehouse_params,
)
from wallets import LockInstruction, OwnerKey, bls

GATE, DOCK, RFID = SENSORS
# The same contract with a committee of Ed25519 sensors (k of n Ed25519 instead of one BLS
# aggregate): another contract, so another hash.
ED_SENSORS = ("iot.ed.gate", "iot.ed.dock", "iot.ed.rfid")
WAREHOUSE_ED = WAREHOUSE.replace(
    'quorum 2 of ["iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid"]',
    'quorum 2 of ["iot.ed.gate", "iot.ed.dock", "iot.ed.rfid"]',
)
assert WAREHOUSE_ED != WAREHOUSE
CONTRACT_ED = compiled(WAREHOUSE_ED)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def drain(stream: AsyncIterator[object]) -> list[object]:
    async with asyncio.timeout(10):
        return [item async for item in stream]


# -- signatures --------------------------------------------------------------------------------
async def test_forged_and_truncated_signatures_change_nothing(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    ids = [payment.payment_id]
    oracle = trade.client(ORACLE)
    customs = await cleared(trade, payment, "ev-customs")
    (good,) = by_customs(oracles, customs)
    signature = good[1]
    forgeries = {
        "another key": key("mallory").sign(customs.statement),
        "one bit flipped": bytes([signature[0] ^ 1]) + signature[1:],
        "truncated": signature[:63],
        "one byte too long": signature + b"\0",
        "empty": b"",
    }
    for why, forged in forgeries.items():
        error = await refused_without_effect(
            trade, ids, submit(oracle, customs, [(CUSTOMS, forged)]), DENIED, "SIGNATURE_INVALID"
        )
        assert error.metadata["signer_id"] == CUSTOMS, why
    # A valid signature over other statement bytes (another event id) does not carry over.
    other = await cleared(trade, payment, "ev-customs-2")
    await refused_without_effect(
        trade, ids, submit(oracle, other, [good]), DENIED, "SIGNATURE_INVALID"
    )
    # The statement binds the payload's hash: another payload under the signed statement.
    swapped = Attestation(customs.statement, b'{"declaration":"D-OTHER"}')
    await refused_without_effect(
        trade, ids, submit(oracle, swapped, [good]), INVALID, "PAYLOAD_MISMATCH"
    )

    # BLS: an aggregate over another message, a truncated one, one by other members.
    arrival = await arrived(trade, payment, "ev-arrived")
    names, aggregate = by_sensors(oracles, arrival, GATE, RFID)
    _, over_other_message = by_sensors(oracles, customs, GATE, RFID)
    _, by_other_members = by_sensors(oracles, arrival, GATE, DOCK)
    for forged in (over_other_message, aggregate[:95], by_other_members):
        error = await refused_without_effect(
            trade, ids, submit(oracle, arrival, [], (names, forged)), DENIED, "SIGNATURE_INVALID"
        )
        assert error.metadata["signer_ids"] == f"{GATE},{RFID}"

    # The genuine signatures over the same event ids are accepted: no refusal burnt an event id.
    accepted = await submit(oracle, customs, [good])
    assert accepted.attestation.signer_ids == [CUSTOMS]
    released = await submit(oracle, arrival, [], (names, aggregate))
    assert [(g.paid_to_wallet_id, g.amount.amount_minor) for g in released.legs] == [
        (trade.wallets["seller"], 37_500_00)
    ]


async def test_a_revoked_oracle_key_is_refused(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    ids = [payment.payment_id]
    oracle, cb = trade.client(ORACLE), trade.cb
    version = await cb.oracle_set_version()
    made_before = await cleared(trade, payment, "ev-customs")
    revoked = await cb.api.oracles.revoke_oracle(
        oracle_pb2.RevokeOracleRequest(
            request_id="revoke-customs", oracle_id=CUSTOMS, reason="key compromised"
        ),
    )
    assert revoked.oracle.revoked
    assert revoked.oracle_set_version == version + 1 == await cb.oracle_set_version()
    # Signed before the revocation: bound to the oracle set it was made for.
    error = await refused_without_effect(
        trade,
        ids,
        submit(oracle, made_before, by_customs(oracles, made_before)),
        PRECONDITION,
        "ORACLE_SET_CHANGED",
    )
    assert error.metadata["current_version"] == str(version + 1)
    # Made for the current set, signed with the revoked key.
    made_after = await cleared(trade, payment, "ev-customs")
    error = await refused_without_effect(
        trade,
        ids,
        submit(oracle, made_after, by_customs(oracles, made_after)),
        DENIED,
        "ORACLE_REVOKED",
    )
    assert error.metadata["signer_id"] == CUSTOMS
    # A revoked oracle cannot be brought back by rotating its key.
    await refused_without_effect(
        trade,
        ids,
        cb.api.oracles.rotate_oracle_key(
            oracle_pb2.RotateOracleKeyRequest(
                request_id="rotate-revoked", oracle_id=CUSTOMS, public_key=key("new").public_key
            ),
        ),
        DENIED,
        "ORACLE_REVOKED",
    )
    # One revoked member of a quorum: its signature does not count; the others still can.
    await cb.api.oracles.revoke_oracle(
        oracle_pb2.RevokeOracleRequest(request_id="revoke-rfid", oracle_id=RFID),
    )
    arrival = await arrived(trade, payment, "ev-arrived")
    error = await refused_without_effect(
        trade,
        ids,
        submit(oracle, arrival, [], by_sensors(oracles, arrival, GATE, RFID)),
        DENIED,
        "ORACLE_REVOKED",
    )
    assert error.metadata["signer_id"] == RFID
    reply = await submit(oracle, arrival, [], by_sensors(oracles, arrival, GATE, DOCK))
    assert sorted(reply.attestation.signer_ids) == [DOCK, GATE]
    assert list(reply.legs) == []  # customs never cleared: nothing is due


async def test_a_rotated_out_key_no_longer_counts(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    ids = [payment.payment_id]
    oracle, cb = trade.client(ORACLE), trade.cb
    version = await cb.oracle_set_version()
    made_before = await cleared(trade, payment, "ev-customs")
    new_customs = key("customs-2")
    rotated = await cb.api.oracles.rotate_oracle_key(
        oracle_pb2.RotateOracleKeyRequest(
            request_id="rotate-customs", oracle_id=CUSTOMS, public_key=new_customs.public_key
        ),
    )
    assert (rotated.oracle.key_version, rotated.oracle_set_version) == (2, version + 1)
    await refused_without_effect(
        trade,
        ids,
        submit(oracle, made_before, by_customs(oracles, made_before)),
        PRECONDITION,
        "ORACLE_SET_CHANGED",
    )
    # Built for the NEW oracle set version, signed with the OLD key.
    made_after = await cleared(trade, payment, "ev-customs")
    assert made_after.decoded().oracle_set_version == version + 1
    error = await refused_without_effect(
        trade,
        ids,
        submit(oracle, made_after, by_customs(oracles, made_after)),
        DENIED,
        "SIGNATURE_INVALID",
    )
    assert error.metadata["signer_id"] == CUSTOMS
    oracles.customs = new_customs
    await submit(oracle, made_after, by_customs(oracles, made_after))

    # A BLS member rotated: its old secret no longer counts in an aggregate.
    old_gate = oracles.sensors[GATE]
    new_gate = bls.secret_key(b"gate, second key".ljust(32, b"*"))
    registration = bls_registration(new_gate)
    await cb.api.oracles.rotate_oracle_key(
        oracle_pb2.RotateOracleKeyRequest(
            request_id="rotate-gate",
            oracle_id=GATE,
            public_key=registration.public_key,
            proof_of_possession=registration.proof_of_possession,
        ),
    )
    arrival = await arrived(trade, payment, "ev-arrived")
    await refused_without_effect(
        trade,
        ids,
        submit(oracle, arrival, [], by_sensors(oracles, arrival, GATE, RFID)),
        DENIED,
        "SIGNATURE_INVALID",
    )
    oracles.sensors[GATE] = new_gate
    reply = await submit(oracle, arrival, [], by_sensors(oracles, arrival, GATE, RFID))
    assert [g.amount.amount_minor for g in reply.legs] == [37_500_00]
    assert old_gate != new_gate


# -- routing -------------------------------------------------------------------------------------
async def test_an_oracle_the_contract_does_not_name_is_refused(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    guangzhou = key("customs-guangzhou")
    await trade.cb.register_oracle("customs.cn.guangzhou", "ED25519", guangzhou.public_key)
    payment = await locked(trade)
    ids = [payment.payment_id]
    oracle = trade.client(ORACLE)
    # A registered oracle signing as the contract's customs, which names another oracle.
    customs = await cleared(trade, payment, "ev-customs")
    error = await refused_without_effect(
        trade,
        ids,
        submit(
            oracle,
            customs,
            [sign_ed25519(customs.statement, "customs.cn.guangzhou", guangzhou)],
        ),
        DENIED,
        "SIGNER_NOT_ALLOWED",
    )
    assert error.metadata["signer_id"] == "customs.cn.guangzhou"
    # ... or calling itself by its registry id: the contract routes nothing from it.
    named = await make_attestation(
        trade,
        payment,
        oracle="customs.cn.guangzhou",
        event_type="customs.cleared",
        attributes={"declaration": "D-2026-1127"},
        event_id="ev-gz",
    )
    await refused_without_effect(
        trade,
        ids,
        submit(oracle, named, [sign_ed25519(named.statement, "customs.cn.guangzhou", guangzhou)]),
        DENIED,
        "ORACLE_NOT_IN_CONTRACT",
    )
    # A contract oracle for an event type it does not attest (customs reporting the arrival),
    # and an event type the contract has no clause for.
    routes: tuple[tuple[str, dict[str, str | int | bool]], ...] = (
        ("iot.arrived", {"site": "LAX-FBA-3"}),
        ("iot.condition", {"max_temp_c": 12}),
        ("shipment.departed", {"port": "Yantian"}),
    )
    for event_type, attributes in routes:
        statement = await make_attestation(
            trade,
            payment,
            oracle="customs",
            event_type=event_type,
            attributes=attributes,
            event_id=f"ev-{event_type}",
        )
        error = await refused_without_effect(
            trade,
            ids,
            submit(oracle, statement, by_customs(oracles, statement)),
            DENIED,
            "ORACLE_NOT_IN_CONTRACT",
        )
        assert error.metadata["event_type"] == event_type
    # A quorum member from outside the committee, and a party attestation by another party.
    arrival = await arrived(trade, payment, "ev-arrived")
    intruder = sign_ed25519(arrival.statement, "customs.cn.guangzhou", guangzhou)
    await refused_without_effect(
        trade,
        ids,
        submit(oracle, arrival, [intruder], by_sensors(oracles, arrival, GATE)),
        DENIED,
        "SIGNER_NOT_ALLOWED",
    )
    buyer_receipt = await receipt(trade, payment, "ev-receipt")
    seller = trade.wallets["seller"]
    await refused_without_effect(
        trade,
        ids,
        submit(
            oracle, buyer_receipt, [(seller, trade.keys["seller"].sign(buyer_receipt.statement))]
        ),
        DENIED,
        "SIGNER_NOT_ALLOWED",
    )
    await submit(oracle, customs, by_customs(oracles, customs))


# -- time ----------------------------------------------------------------------------------------
async def test_stale_future_and_expired_attestations_are_refused(trade: TradeWorld) -> None:
    """The windows are 5 minutes back, 30 seconds ahead, and expiry; 1 µs past each edge is
    refused, the edge itself is accepted."""
    assert trade.clock is not None
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    ids = [payment.payment_id]
    oracle = trade.client(ORACLE)
    start = trade.now_us()

    stale = await cleared(trade, payment, "ev-stale", issued_at_us=start)
    trade.clock.set(start + 5 * MINUTE_US + 1)
    error = await refused_without_effect(
        trade,
        ids,
        submit(oracle, stale, by_customs(oracles, stale)),
        PRECONDITION,
        "ATTESTATION_STALE",
    )
    assert error.metadata["issued_at_us"] == str(start)
    trade.clock.set(start + 5 * MINUTE_US)
    await submit(oracle, stale, by_customs(oracles, stale))

    trade.clock.set(start)
    future = await cleared(trade, payment, "ev-future", issued_at_us=start + 30_000_001)
    await refused_without_effect(
        trade,
        ids,
        submit(oracle, future, by_customs(oracles, future)),
        PRECONDITION,
        "ATTESTATION_FROM_FUTURE",
    )
    edge = await cleared(trade, payment, "ev-future-edge", issued_at_us=start + 30_000_000)
    await submit(oracle, edge, by_customs(oracles, edge))

    expiring = await cleared(
        trade, payment, "ev-expired", issued_at_us=start, expires_at_us=start + MINUTE_US
    )
    trade.clock.set(start + MINUTE_US)
    await refused_without_effect(
        trade,
        ids,
        submit(oracle, expiring, by_customs(oracles, expiring)),
        PRECONDITION,
        "ATTESTATION_EXPIRED",
    )
    trade.clock.set(start + MINUTE_US - 1)
    await submit(oracle, expiring, by_customs(oracles, expiring))

    # Observed after it was issued; a lifetime beyond a day.
    trade.clock.set(start)
    backwards = await cleared(
        trade, payment, "ev-backwards", issued_at_us=start, observed_at_us=start + 1
    )
    too_long = await cleared(
        trade, payment, "ev-too-long", issued_at_us=start, expires_at_us=start + 86_400_000_001
    )
    for statement in (backwards, too_long):
        await refused_without_effect(
            trade,
            ids,
            submit(oracle, statement, by_customs(oracles, statement)),
            INVALID,
            "ATTESTATION_TIMES_INVALID",
        )
    after = await trade.cb.get_payment(payment.payment_id)
    assert [a.event_id for a in after.attestations] == ["ev-stale", "ev-future-edge", "ev-expired"]


# -- replay --------------------------------------------------------------------------------------
async def test_a_replayed_event_id_is_refused_and_pays_nothing_twice(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    other = await locked(trade, 50_000_00)
    ids = [payment.payment_id, other.payment_id]
    oracle = trade.client(ORACLE)
    await cleared_for(trade, oracles, payment, "ev-customs")
    arrival = await arrived(trade, payment, "ev-arrived")
    aggregate = by_sensors(oracles, arrival, GATE, RFID)
    first = await submit(oracle, arrival, [], aggregate, request_id="arrival-1")
    assert [g.amount.amount_minor for g in first.legs] == [37_500_00]
    # The same bytes under a new request id (a second oracle relaying it, say).
    error = await refused_without_effect(
        trade,
        ids,
        submit(oracle, arrival, [], aggregate, request_id="arrival-2"),
        EXISTS,
        "EVENT_ALREADY_SEEN",
    )
    assert error.metadata["event_id"] == "ev-arrived"
    # The same event id with another payload, with other signers, or later.
    elsewhere = await arrived(trade, payment, "ev-arrived", site="LAX-FBA-9")
    later = await arrived(trade, payment, "ev-arrived", observed_at_us=trade.now_us() - 1)
    for statement, signers in (
        (elsewhere, (GATE, RFID)),
        (arrival, (GATE, DOCK)),
        (later, (DOCK, RFID)),
    ):
        await refused_without_effect(
            trade,
            ids,
            submit(oracle, statement, [], by_sensors(oracles, statement, *signers)),
            EXISTS,
            "EVENT_ALREADY_SEEN",
        )
    # An event id is unique per (payment, attester): another payment's event may use it.
    on_other = await arrived(trade, other, "ev-arrived")
    accepted = await submit(oracle, on_other, [], by_sensors(oracles, on_other, GATE, RFID))
    assert accepted.attestation.event_id == "ev-arrived"
    assert not accepted.legs  # the other payment's customs clearance is still missing
    assert await trade.balance("seller") == (37_500_00, 0)


async def test_concurrent_replays_of_one_event_id_accept_exactly_one(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    await cleared_for(trade, oracles, payment, "ev-customs")
    # From four oracles the contract names (an oracle submits only for such payments).
    clients = [trade.client(f"oracle/{name}") for name in (CUSTOMS, *SENSORS)]
    # Ten submissions of one event id, under ten request ids: five identical, five with other
    # observation times (other statement bytes), from four connections at once.
    statements = [await arrived(trade, payment, "ev-arrived") for _ in range(5)]
    statements += [
        await arrived(trade, payment, "ev-arrived", observed_at_us=trade.now_us() - 1_000 * i)
        for i in range(1, 6)
    ]
    before = await take_snapshot(trade, [payment.payment_id])
    outcomes = await asyncio.gather(
        *(
            submit(
                clients[i % 4],
                s,
                [],
                by_sensors(oracles, s, GATE, RFID),
                request_id=f"arrival-{i}",
            )
            for i, s in enumerate(statements)
        ),
        return_exceptions=True,
    )
    accepted = [o for o in outcomes if isinstance(o, oracle_pb2.SubmitAttestationResponse)]
    others = [o for o in outcomes if not isinstance(o, oracle_pb2.SubmitAttestationResponse)]
    assert len(accepted) == 1, outcomes
    assert all(isinstance(o, AlreadyExists) and o.reason == "EVENT_ALREADY_SEEN" for o in others), (
        others
    )
    assert [g.amount.amount_minor for g in accepted[0].legs] == [37_500_00]
    after = await take_snapshot(trade, [payment.payment_id])
    assert after.journal_length == before.journal_length + 1  # one RELEASE entry
    assert after.payments[payment.payment_id].event_ids == ("ev-customs", "ev-arrived")
    assert (
        after.payments[payment.payment_id].version
        == before.payments[payment.payment_id].version + 1
    )
    assert await trade.balance("seller") == (37_500_00, 0)
    assert await trade.balance("buyer") == (75_000_00, 87_500_00)


# -- binding -------------------------------------------------------------------------------------
async def test_a_valid_signature_moved_to_another_payment_is_refused(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    first = await locked(trade)
    second = await locked(trade, 50_000_00)
    ids = [first.payment_id, second.payment_id]
    oracle = trade.client(ORACLE)
    for_first = await cleared(trade, first, "ev-customs-a")
    signature_for_first = by_customs(oracles, for_first)
    # Re-sign nothing: the same statement fields for the second payment, the first's signature.
    for_second = await cleared(trade, second, "ev-customs-a")
    await refused_without_effect(
        trade, ids, submit(oracle, for_second, signature_for_first), DENIED, "SIGNATURE_INVALID"
    )
    # Nor for another event type from the same attester on the same payment: the sensors'
    # aggregate for an arrival, under a cold-chain report with the same event id.
    arrival = await arrived(trade, first, "ev-sensors-a")
    aggregate_for_arrival = by_sensors(oracles, arrival, GATE, RFID)
    condition = await make_attestation(
        trade,
        first,
        oracle="sensors",
        event_type="iot.condition",
        attributes={"max_temp_c": 12},
        event_id="ev-sensors-a",
    )
    await refused_without_effect(
        trade,
        ids,
        submit(oracle, condition, [], aggregate_for_arrival),
        DENIED,
        "SIGNATURE_INVALID",
    )
    # A statement naming a payment and another contract's hash: refused before any signature.
    ed = await trade.lock(CONTRACT_ED, warehouse_params(trade, 10_000_00), source=WAREHOUSE_ED)
    wrong_contract = await cleared(
        trade, ed, "ev-customs-ed", contract_hash=first.contract.contract_hash
    )
    error = await refused_without_effect(
        trade,
        [*ids, ed.payment_id],
        submit(oracle, wrong_contract, by_customs(oracles, wrong_contract)),
        INVALID,
        "ATTESTATION_WRONG_PAYMENT",
    )
    assert error.metadata["field"] == "contract_hash"
    # The signature still works where it belongs, and only there.
    await submit(oracle, for_first, signature_for_first)
    assert [a.event_id for a in (await trade.cb.get_payment(first.payment_id)).attestations] == [
        "ev-customs-a"
    ]
    assert list((await trade.cb.get_payment(second.payment_id)).attestations) == []


# -- quorums -------------------------------------------------------------------------------------
async def test_a_bls_quorum_one_short_or_one_signer_counted_twice_is_refused(
    trade: TradeWorld,
) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    ids = [payment.payment_id]
    oracle = trade.client(ORACLE)
    await cleared_for(trade, oracles, payment, "ev-customs")
    arrival = await arrived(trade, payment, "ev-arrived")
    # 1 of the 2 needed.
    error = await refused_without_effect(
        trade,
        ids,
        submit(oracle, arrival, [], by_sensors(oracles, arrival, GATE)),
        DENIED,
        "QUORUM_NOT_MET",
    )
    assert (error.metadata["needed"], error.metadata["counted"]) == ("2", "1")
    # The gate twice in one aggregate: a valid aggregate of two copies of its signature, one
    # signer all the same.
    scheme = bls.backend()
    gate_signature = scheme.sign(oracles.sensors[GATE], arrival.statement)
    twice = scheme.aggregate([gate_signature, gate_signature])
    gate_key = scheme.public_key(oracles.sensors[GATE])
    assert scheme.fast_aggregate_verify([gate_key, gate_key], arrival.statement, twice)
    error = await refused_without_effect(
        trade, ids, submit(oracle, arrival, [], ((GATE, GATE), twice)), DENIED, "QUORUM_NOT_MET"
    )
    assert error.metadata["counted"] == "1"
    reply = await submit(oracle, arrival, [], by_sensors(oracles, arrival, GATE, RFID))
    assert [g.amount.amount_minor for g in reply.legs] == [37_500_00]


async def test_an_ed25519_quorum_counts_a_signer_once(trade: TradeWorld) -> None:
    """k of n Ed25519: the same contract with a committee of Ed25519 sensors."""
    oracles = await register_oracles(trade)
    sensors = {name: key(name) for name in ED_SENSORS}
    for name, sensor in sensors.items():
        await trade.cb.register_oracle(name, "ED25519", sensor.public_key)
    payment = await trade.lock(CONTRACT_ED, warehouse_params(trade), source=WAREHOUSE_ED)
    ids = [payment.payment_id]
    oracle = trade.client(ORACLE)
    await cleared_for(trade, oracles, payment, "ev-customs")
    arrival = await arrived(trade, payment, "ev-arrived")

    def signed(*names: str) -> list[tuple[str, bytes]]:
        return [(n, sensors[n].sign(arrival.statement)) for n in names]

    gate, dock, _ = ED_SENSORS
    for signatures in (signed(gate), signed(gate, gate), signed(gate, gate, gate)):
        error = await refused_without_effect(
            trade, ids, submit(oracle, arrival, signatures), DENIED, "QUORUM_NOT_MET"
        )
        assert (error.metadata["needed"], error.metadata["counted"]) == ("2", "1")
    # Two distinct signers, one of whose signatures is forged: the whole attestation fails.
    forged = [signed(gate)[0], (dock, sensors[gate].sign(arrival.statement))]
    error = await refused_without_effect(
        trade, ids, submit(oracle, arrival, forged), DENIED, "SIGNATURE_INVALID"
    )
    assert error.metadata["signer_id"] == dock
    reply = await submit(oracle, arrival, signed(gate, dock))
    assert sorted(reply.attestation.signer_ids) == [dock, gate]
    assert [g.amount.amount_minor for g in reply.legs] == [37_500_00]


async def test_a_bls_key_without_proof_of_possession_is_never_registered(
    trade: TradeWorld,
) -> None:
    """The rogue-key attack on a 2-of-3 BLS committee: the attacker knows the gate's public key,
    publishes rogue = g1·x − gate as the RFID reader's key, and then signs alone, with x, an
    aggregate "by gate and rfid" that fast aggregate verification accepts. Proof of possession
    at registration is what stops it."""
    cb = trade.cb
    customs = key("customs")
    await cb.register_oracle(CUSTOMS, "ED25519", customs.public_key)
    honest = {}
    for name in (GATE, DOCK):
        secret = bls.secret_key(name.encode().ljust(32, b"*"))
        registration = bls_registration(secret)
        await cb.register_oracle(
            name,
            "BLS12_381",
            registration.public_key,
            proof_of_possession=registration.proof_of_possession,
        )
        honest[name] = secret
    oracles = Oracles(customs, honest)
    payment = await locked(trade)
    ids = [payment.payment_id]
    oracle = trade.client(ORACLE)
    await cleared_for(trade, oracles, payment, "ev-customs")

    scheme = bls.backend()
    gate_key = scheme.public_key(honest[GATE])
    x = 0x5EC12E7
    rogue_key = G1_to_pubkey(add(multiply(G1, x), neg(pubkey_to_G1(BLSPubkey(gate_key)))))
    attempts = {
        "no proof": b"",
        "a proof for x": scheme.pop_prove(x),
        "the gate's proof": bls_registration(honest[GATE]).proof_of_possession,
        "garbage": b"\x01" * 96,
    }
    for why, proof in attempts.items():
        error = await refused_without_effect(
            trade,
            ids,
            cb.register_oracle(RFID, "BLS12_381", rogue_key, proof_of_possession=proof),
            INVALID,
            "PROOF_OF_POSSESSION_INVALID",
        )
        assert error.metadata["scheme"] == "BLS12_381", why
    # Nor can the rogue key come in by rotation: the dock "rotating" to it needs the proof too.
    for proof in attempts.values():
        await refused_without_effect(
            trade,
            ids,
            cb.api.oracles.rotate_oracle_key(
                oracle_pb2.RotateOracleKeyRequest(
                    oracle_id=DOCK, public_key=rogue_key, proof_of_possession=proof
                ),
            ),
            INVALID,
            "PROOF_OF_POSSESSION_INVALID",
        )
    registry = await cb.api.oracles.get_oracle_set(oracle_pb2.GetOracleSetRequest())
    assert sorted(o.oracle_id for o in registry.oracles) == sorted([CUSTOMS, DOCK, GATE])
    assert rogue_key not in {o.public_key for o in registry.oracles}

    # Without the check the forgery would have met the quorum: the server's aggregate verification
    # (the same backend) accepts x's lone signature for gate + rogue.
    arrival = await arrived(trade, payment, "ev-arrived")
    forged = scheme.sign(x, arrival.statement)
    assert scheme.fast_aggregate_verify([gate_key, bytes(rogue_key)], arrival.statement, forged)
    error = await refused_without_effect(
        trade,
        ids,
        submit(oracle, arrival, [], ((GATE, RFID), forged)),
        NOT_FOUND,
        "ORACLE_NOT_FOUND",
    )
    assert error.metadata["signer_id"] == RFID
    reply = await submit(oracle, arrival, [], by_sensors(oracles, arrival, GATE, DOCK))
    assert [g.amount.amount_minor for g in reply.legs] == [37_500_00]


# -- locking -------------------------------------------------------------------------------------
async def test_a_lock_over_the_balance_or_a_tier_cap_is_refused(trade: TradeWorld) -> None:
    buyer = trade.wallets["buyer"]
    error = await refused_without_effect(
        trade,
        [],
        trade.lock(CONTRACT, warehouse_params(trade, 200_000_01), source=WAREHOUSE),
        PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )
    poor = error.detail(errors_pb2.InsufficientFunds)
    assert poor is not None
    assert (poor.wallet_id, poor.needed_minor, poor.available_minor) == (
        buyer,
        200_000_01,
        200_000_00,
    )
    # A personal tier-4 wallet: at most 2,000.00 a payment and 5,000.00 a day.
    small = await open_funded_wallet(trade, "small-buyer", 6_000_00)
    platform = trade.platform

    async def lock(price_minor: int) -> payment_pb2.LockPaymentResponse:
        params = {**warehouse_params(trade, price_minor), "buyer": small}
        return await platform.lock_payment(
            trade.keys["small-buyer"], CONTRACT, params, send_source=WAREHOUSE
        )

    error = await refused_without_effect(trade, [], lock(2_000_01), PRECONDITION, "LIMIT_EXCEEDED")
    cap = error.detail(errors_pb2.LimitExceeded)
    assert cap is not None
    assert (cap.wallet_id, cap.limit, cap.limit_minor, cap.attempted_minor) == (
        small,
        errors_pb2.LIMIT_KIND_SINGLE_PAYMENT_CAP,
        2_000_00,
        2_000_01,
    )
    await lock(2_000_00)
    await lock(2_000_00)
    # 2,000.00 is still available, but not under today's cap.
    error = await refused_without_effect(trade, [], lock(2_000_00), PRECONDITION, "LIMIT_EXCEEDED")
    cap = error.detail(errors_pb2.LimitExceeded)
    assert cap is not None
    assert (cap.limit, cap.limit_minor, cap.used_minor, cap.attempted_minor) == (
        errors_pb2.LIMIT_KIND_DAILY_CAP,
        5_000_00,
        4_000_00,
        2_000_00,
    )
    assert await trade.balance("small-buyer") == (2_000_00, 4_000_00)


def signed_lock(
    trade: TradeWorld,
    contract: CompiledContract,
    params: dict[str, object],
    request_id: str,
    *,
    signing_key: OwnerKey | None = None,
    **changes: Any,
) -> payment_pb2.LockPaymentRequest:
    """The request a correct client sends for ``contract`` and ``params``, except that the
    payer signed ``changes`` (another contract hash, amount or payer), or signed with another
    key."""
    bound = bound_params(contract, params)
    lock = LockInstruction(
        payer=bound.wallet(contract.escrow.funder),
        contract_hash=contract.hash,
        params_hash=bound.hash,
        currency=contract.escrow.currency,
        amount_minor=escrow_minor(contract, bound),
        submitter=PLATFORM,
        request_id=request_id,
        expires_at_us=trade.now_us() + 5 * MINUTE_US,
    )
    signed = replace(lock, **changes).sign(signing_key or trade.keys["buyer"])
    return payment_pb2.LockPaymentRequest(
        request_id=request_id,
        contract_source=WAREHOUSE,
        params=param_values(contract, params),
        payer_instruction=wallet_pb2.SignedInstruction(
            payload=signed.payload, signature=signed.signature
        ),
    )


async def test_a_payer_signature_over_another_contract_or_amount_is_refused(
    trade: TradeWorld,
) -> None:
    platform = trade.platform
    params = warehouse_params(trade)
    cases: dict[str, dict[str, Any]] = {
        "payer_instruction.contract_hash": {"contract_hash": CONTRACT_ED.hash},
        "payer_instruction.amount_minor": {"amount_minor": 125_000_01},
        "payer_instruction.payer": {"payer": trade.wallets["seller"]},
    }
    for field, changes in cases.items():
        request = signed_lock(trade, CONTRACT, params, f"lock-{field}", **changes)
        error = await refused_without_effect(
            trade,
            [],
            platform.api.payments.lock_payment(request),
            INVALID,
            "INSTRUCTION_MISMATCH",
        )
        assert error.metadata["field"] == field
    # Every field right, signed by the seller's key instead of the buyer's.
    request = signed_lock(
        trade, CONTRACT, params, "lock-wrong-key", signing_key=trade.keys["seller"]
    )
    await refused_without_effect(
        trade,
        [],
        platform.api.payments.lock_payment(request),
        DENIED,
        "SIGNATURE_INVALID",
    )
    request = signed_lock(trade, CONTRACT, params, "lock-right")
    reply = await platform.api.payments.lock_payment(request)
    assert reply.payment.held.amount_minor == 125_000_00


# -- scoping -------------------------------------------------------------------------------------
async def test_another_platform_can_neither_read_nor_act_on_a_payment(trade: TradeWorld) -> None:
    payment = await trade.lock(
        CONTRACT, warehouse_params(trade), source=WAREHOUSE, request_id="lock-a"
    )
    ids = [payment.payment_id]
    other = trade.client(OTHER_PLATFORM)
    await refused(other.get_payment(payment.payment_id), NOT_FOUND, "PAYMENT_NOT_FOUND")
    await refused(drain(other.watch_payment(payment.payment_id)), NOT_FOUND, "PAYMENT_NOT_FOUND")
    for request in (
        payment_pb2.ListPaymentsRequest(),
        payment_pb2.ListPaymentsRequest(payer_wallet_id=trade.wallets["buyer"]),
        payment_pb2.ListPaymentsRequest(contract_hash=CONTRACT.hash),
        payment_pb2.ListPaymentsRequest(state=payment_pb2.PAYMENT_STATE_LOCKED),
    ):
        listed = await other.api.payments.list_payments(request)
        assert (list(listed.payments), listed.next_page_token) == ([], "")
    # Even with every party's signature, platform B cannot cancel platform A's payment.
    everyone = {trade.wallets[n]: trade.keys[n] for n in ("buyer", "seller")}
    error = await refused_without_effect(
        trade,
        ids,
        other.api.payments.cancel_payment(
            cancel_request(trade, payment.payment_id, everyone, submitter=OTHER_PLATFORM),
        ),
        NOT_FOUND,
        "PAYMENT_NOT_FOUND",
    )
    assert error.metadata.get("payment_id", payment.payment_id) == payment.payment_id
    # Nor read platform A's stored outcome by its request id.
    await refused(other.get_operation("lock-a"), NOT_FOUND, "OPERATION_NOT_FOUND")
    # A financier that neither funds nor holds an assignment on it does not see it either.
    await refused(
        trade.client("financier/bank-b").get_payment(payment.payment_id),
        NOT_FOUND,
        "PAYMENT_NOT_FOUND",
    )
    # Platform A sees it, and can cancel it with the same signatures.
    assert (await trade.platform.get_payment(payment.payment_id)).version == 1
    reply = await trade.platform.api.payments.cancel_payment(
        cancel_request(trade, payment.payment_id, everyone)
    )
    assert reply.payment.state == payment_pb2.PAYMENT_STATE_CANCELLED


async def test_another_platform_cannot_relay_attestations_for_a_payment_it_does_not_own(
    trade: TradeWorld,
) -> None:
    """Oracles may submit for any payment whose contract names them (their signatures decide);
    a platform acts only on its own payments: another platform is told the payment does not
    exist, learns nothing of it, and changes nothing."""
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    other = trade.client(OTHER_PLATFORM)
    customs = await cleared(trade, payment, "ev-customs")
    await refused_without_effect(
        trade,
        [payment.payment_id],
        submit(other, customs, by_customs(oracles, customs)),
        NOT_FOUND,
        "PAYMENT_NOT_FOUND",
    )
    # The same attestation through an oracle is accepted, and so is one the owning platform
    # relays (the buyer's receipt is a party attestation a platform typically carries).
    await submit(trade.client(ORACLE), customs, by_customs(oracles, customs))
    arrival = await arrived(trade, payment, "ev-arrived")
    reply = await submit(
        trade.client(ORACLE), arrival, [], by_sensors(oracles, arrival, GATE, DOCK)
    )
    assert [g.amount.amount_minor for g in reply.legs] == [37_500_00]
    buyer_receipt = await receipt(trade, payment, "ev-receipt")
    buyer = trade.wallets["buyer"]
    # Relaying a forgery gets it nowhere, whoever relays it.
    await refused_without_effect(
        trade,
        [payment.payment_id],
        submit(
            trade.platform,
            buyer_receipt,
            [(buyer, trade.keys["seller"].sign(buyer_receipt.statement))],
        ),
        DENIED,
        "SIGNATURE_INVALID",
    )
    await refused(other.get_payment(payment.payment_id), NOT_FOUND, "PAYMENT_NOT_FOUND")


# -- verified but not meeting the contract -------------------------------------------------------
async def test_a_verified_event_that_meets_no_clause_is_recorded_and_releases_nothing(
    trade: TradeWorld,
) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    oracle = trade.client(ORACLE)
    await cleared_for(trade, oracles, payment, "ev-customs")
    before = await take_snapshot(trade, [payment.payment_id])
    elsewhere = await arrived(trade, payment, "ev-arrived-lax9", site="LAX-FBA-9")
    reply = await submit(oracle, elsewhere, [], by_sensors(oracles, elsewhere, GATE, RFID))
    assert list(reply.legs) == []
    after = await take_snapshot(trade, [payment.payment_id])
    # Recorded (a new payment version, the attestation on it) and nothing else moved.
    assert after.balances == before.balances
    assert after.journal_length == before.journal_length
    mine, was = after.payments[payment.payment_id], before.payments[payment.payment_id]
    assert (mine.state, mine.held_minor, mine.released_minor) == (
        payment_pb2.PAYMENT_STATE_LOCKED,
        125_000_00,
        0,
    )
    assert mine.version == was.version + 1
    seen = await trade.platform.get_payment(payment.payment_id)
    record = seen.attestations[-1]
    assert (record.event_id, record.event_type, record.oracle) == (
        "ev-arrived-lax9",
        "iot.arrived",
        "sensors",
    )
    assert list(record.fired_clauses) == []
    assert (record.status, list(record.matched_clauses)) == ("ignored", [])
    assert list(record.why_not) == ["arrival"]
    assert "'LAX-FBA-9'" in record.why_not["arrival"]
    assert "'LAX-FBA-3'" in record.why_not["arrival"]
    assert sorted(record.signer_ids) == [GATE, RFID]
    assert record.attributes_json == '{"site": "LAX-FBA-9"}'
    # A cold-chain report within limits is recorded and pays no penalty either.
    cool = await make_attestation(
        trade,
        payment,
        oracle="sensors",
        event_type="iot.condition",
        attributes={"max_temp_c": 6},
        event_id="ev-cool",
    )
    reply = await submit(oracle, cool, [], by_sensors(oracles, cool, DOCK, RFID))
    assert list(reply.legs) == []
    assert "cold_chain_breach" in reply.attestation.why_not
    # The arrival at the right site still releases 30%.
    right = await arrived(trade, payment, "ev-arrived")
    reply = await submit(oracle, right, [], by_sensors(oracles, right, GATE, RFID))
    assert [g.amount.amount_minor for g in reply.legs] == [37_500_00]
