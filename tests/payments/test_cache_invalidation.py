"""The caches on the attestation path can never release money on stale state.

SubmitAttestation reads what a lock fixed (platform, contract, parties) from the directory and the
oracle registry from a cache keyed by its version (settlement/ledger/directory.py,
oracle_sets.py); the write batch re-reads the registry's version and the payment's state under
its locks, and takes the payment's legs and attestations from memory only at the version it
committed them (settlement/ledger/payment_memo.py). Each test warms the caches first (an
accepted attestation), then changes what they hold — a rotated key, a revoked oracle, a new
registry version, a cancelled payment, an attestation accepted elsewhere — and shows
that an attestation relying on the old state is refused without effect, also when the change was
made through another server on the same database (whose caches never saw it), and that the
current state still works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from condpay.attest import bls_registration
from condpay.client import PaymentsClient
from condpay.v1 import oracle_pb2, payment_pb2

from tests.payments.snapshot import (
    ORACLE,
    arrived,
    by_buyer,
    by_sensors,
    cancel_request,
    cleared_for,
    locked,
    receipt,
    refused_without_effect,
    submit,
)
from tests.payments.world import SENSORS, Oracles, TradeWorld, register_oracles
from tests.support.harness import Harness, start_harness
from wallets import bls

GATE, DOCK, RFID = SENSORS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
DENIED = grpc.StatusCode.PERMISSION_DENIED
EXISTS = grpc.StatusCode.ALREADY_EXISTS
STATE = payment_pb2.PaymentState


@pytest.fixture
async def replica(trade: TradeWorld, database_url: str) -> AsyncIterator[Harness]:
    """A second server on the trade world's database, with caches of its own."""
    async with start_harness(
        database_url, clock=trade.clock, instruction_ttl_max_seconds=10 * 366 * 86_400
    ) as harness:
        yield harness


def _on(replica: Harness, caller: str) -> PaymentsClient:
    client = PaymentsClient(replica.address, caller=caller)
    replica.clients.append(client)
    return client


async def _warm(trade: TradeWorld, oracles: Oracles, event_id: str) -> payment_pb2.Payment:
    """A locked payment that customs has cleared: its terms and the registry at the current
    version are now cached."""
    payment = await locked(trade)
    await cleared_for(trade, oracles, payment, event_id)
    return payment


async def _rotate(cb: PaymentsClient, oracles: Oracles, name: str) -> int:
    secret = bls.secret_key(b"rotated " + name.encode().ljust(24, b"*"))
    registration = bls_registration(secret)
    reply: oracle_pb2.RotateOracleKeyResponse = await cb.api.oracles.rotate_oracle_key(
        oracle_pb2.RotateOracleKeyRequest(
            oracle_id=name,
            public_key=registration.public_key,
            proof_of_possession=registration.proof_of_possession,
        ),
    )
    oracles.sensors[name] = secret
    return reply.oracle_set_version


async def _arrival(
    trade: TradeWorld,
    oracles: Oracles,
    payment: payment_pb2.Payment,
    event_id: str,
    *,
    version: int | None = None,
    signers: tuple[str, ...] = (GATE, DOCK),
) -> oracle_pb2.SubmitAttestationResponse:
    statement = await arrived(trade, payment, event_id, oracle_set_version=version)
    return await submit(
        trade.client(ORACLE), statement, [], by_sensors(oracles, statement, *signers)
    )


async def _released(trade: TradeWorld, payment_id: str) -> int:
    return (await trade.cb.get_payment(payment_id)).released.amount_minor


@pytest.mark.parametrize("through", ["same server", "another server"])
async def test_a_rotated_key_never_verifies_from_a_cached_set(
    trade: TradeWorld, replica: Harness, through: str
) -> None:
    oracles = await register_oracles(trade)
    payment = await _warm(trade, oracles, "ev-customs")
    before = await trade.cb.oracle_set_version()
    old_gate = oracles.sensors[GATE]
    rotator = trade.cb if through == "same server" else _on(replica, "central_bank/pboc")
    after = await _rotate(rotator, oracles, GATE)
    assert after == before + 1
    ids = [payment.payment_id]
    # Signed with the old key under the old version: the cached set still verifies it, the
    # batch finds the version no longer current.
    oracles.sensors[GATE], new_gate = old_gate, oracles.sensors[GATE]
    await refused_without_effect(
        trade,
        ids,
        _arrival(trade, oracles, payment, "ev-old-version", version=before),
        PRECONDITION,
        "ORACLE_SET_CHANGED",
    )
    # Signed with the old key under the new version: the new set does not verify it.
    await refused_without_effect(
        trade,
        ids,
        _arrival(trade, oracles, payment, "ev-old-key", version=after),
        DENIED,
        "SIGNATURE_INVALID",
    )
    assert await _released(trade, payment.payment_id) == 0
    # The new key under the new version releases the 30%.
    oracles.sensors[GATE] = new_gate
    reply = await _arrival(trade, oracles, payment, "ev-new-key", version=after)
    assert [leg.amount.amount_minor for leg in reply.legs] == [37_500_00]


@pytest.mark.parametrize("through", ["same server", "another server"])
async def test_a_revoked_oracle_never_counts_from_a_cached_set(
    trade: TradeWorld, replica: Harness, through: str
) -> None:
    oracles = await register_oracles(trade)
    payment = await _warm(trade, oracles, "ev-customs")
    before = await trade.cb.oracle_set_version()
    revoker = trade.cb if through == "same server" else _on(replica, "central_bank/pboc")
    await revoker.api.oracles.revoke_oracle(
        oracle_pb2.RevokeOracleRequest(oracle_id=DOCK, reason="tampered"),
    )
    ids = [payment.payment_id]
    await refused_without_effect(
        trade,
        ids,
        _arrival(trade, oracles, payment, "ev-cached-version", version=before),
        PRECONDITION,
        "ORACLE_SET_CHANGED",
    )
    await refused_without_effect(
        trade,
        ids,
        _arrival(trade, oracles, payment, "ev-current-version"),
        DENIED,
        "ORACLE_REVOKED",
    )
    assert await _released(trade, payment.payment_id) == 0
    reply = await _arrival(trade, oracles, payment, "ev-quorum", signers=(GATE, RFID))
    assert [leg.amount.amount_minor for leg in reply.legs] == [37_500_00]


async def test_a_new_registry_version_refuses_attestations_made_for_the_cached_one(
    trade: TradeWorld, replica: Harness
) -> None:
    """A registration elsewhere changes no key this payment uses, yet moves the version: an
    attestation made for the version this server has cached is refused, then one for the new
    version is accepted (and cached)."""
    oracles = await register_oracles(trade)
    payment = await _warm(trade, oracles, "ev-customs")
    before = await trade.cb.oracle_set_version()
    other = bls_registration(bls.secret_key(b"another sensor".ljust(32, b"*")))
    await _on(replica, "central_bank/pboc").register_oracle(
        "iot.lax9.gate",
        "BLS12_381",
        other.public_key,
        proof_of_possession=other.proof_of_possession,
    )
    await refused_without_effect(
        trade,
        [payment.payment_id],
        _arrival(trade, oracles, payment, "ev-cached", version=before),
        PRECONDITION,
        "ORACLE_SET_CHANGED",
    )
    reply = await _arrival(trade, oracles, payment, "ev-current", version=before + 1)
    assert [leg.amount.amount_minor for leg in reply.legs] == [37_500_00]


@pytest.mark.parametrize("through", ["same server", "another server"])
async def test_a_cancelled_payment_releases_nothing_whatever_is_cached(
    trade: TradeWorld, replica: Harness, through: str
) -> None:
    oracles = await register_oracles(trade)
    payment = await _warm(trade, oracles, "ev-customs")
    signers = {trade.wallets[name]: trade.keys[name] for name in ("buyer", "seller")}
    canceller = trade.platform
    if through == "another server":
        canceller = _on(replica, canceller.caller)
    await canceller.api.payments.cancel_payment(cancel_request(trade, payment.payment_id, signers))
    assert (await trade.cb.get_payment(payment.payment_id)).state == STATE.PAYMENT_STATE_CANCELLED
    buyer_before = await trade.balance("buyer")
    await refused_without_effect(
        trade,
        [payment.payment_id],
        _arrival(trade, oracles, payment, "ev-after-cancel"),
        PRECONDITION,
        "PAYMENT_NOT_OPEN",
    )
    assert await trade.balance("buyer") == buyer_before
    assert await trade.balance("seller") == (0, 0)


async def test_an_arrival_accepted_elsewhere_is_seen_here_whatever_this_server_remembers(
    trade: TradeWorld, replica: Harness
) -> None:
    """This server committed the customs clearance, so it remembers the payment's attestations
    and legs as they were then. Another server then accepts the arrival (30% released). Sent
    here, the same arrival is refused as seen and moves nothing; the buyer's receipt here
    releases exactly the rest, and the payment keeps every attestation and leg of both."""
    oracles = await register_oracles(trade)
    payment = await _warm(trade, oracles, "ev-customs")
    arrival = await arrived(trade, payment, "ev-arrived")
    aggregate = by_sensors(oracles, arrival, GATE, DOCK)
    elsewhere = await submit(_on(replica, ORACLE), arrival, [], aggregate)
    assert [leg.amount.amount_minor for leg in elsewhere.legs] == [37_500_00]
    await refused_without_effect(
        trade,
        [payment.payment_id],
        submit(trade.client(ORACLE), arrival, [], aggregate),
        EXISTS,
        "EVENT_ALREADY_SEEN",
    )
    signed = await receipt(trade, payment, "ev-receipt")
    here = await submit(trade.platform, signed, by_buyer(trade, signed))
    assert [leg.amount.amount_minor for leg in here.legs] == [87_500_00]
    done = await trade.cb.get_payment(payment.payment_id)
    assert done.state == STATE.PAYMENT_STATE_SETTLED
    assert done.released.amount_minor == 125_000_00
    assert [a.event_id for a in done.attestations] == ["ev-customs", "ev-arrived", "ev-receipt"]
    assert [leg.amount.amount_minor for leg in done.legs] == [37_500_00, 87_500_00]
    assert await trade.balance("seller") == (125_000_00, 0)
