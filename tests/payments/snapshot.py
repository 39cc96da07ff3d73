"""Helpers shared by the attestation-refusal and payment-lifecycle tests, all through the public
gRPC API of a running server:

- :func:`take_snapshot` / :func:`refused_without_effect`: what a refused call must leave alone
  (each payment's state, version, held/released/refunded amounts, attestations and legs; every
  wallet's balances; the journal; the held sum; the oracle set version);
- :func:`check_held`: every wallet's HELD balance is the sum of its open payments' held amounts;
- :func:`make_attestation` and :func:`submit`: statements with any times, version, payment or
  contract the test needs, and submissions with explicit request ids;
- small builders for signed documents whose expiry follows the test's ManualClock (the client
  helpers use the wall clock, which a test that moves its clock must not depend on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from condpay.attest import Attestation, build_attestation, sign_bls_aggregate, sign_ed25519
from condpay.client import PaymentsClient, new_request_id
from condpay.errors import ApiError
from condpay.v1 import oracle_pb2, payment_pb2, wallet_pb2

from tests.payments.world import (
    CUSTOMS,
    FINANCIER,
    PLATFORM,
    RESERVE,
    SENSORS,
    WAREHOUSE,
    Oracles,
    TradeWorld,
    compiled,
    key,
    register_oracles,
    warehouse_params,
)
from wallets import AssignmentInstruction, CancelInstruction, FundInstruction, OwnerKey

ORACLE = "oracle/customs.cn.shenzhen"
OTHER_PLATFORM = "platform/other"
MINUTE_US = 60_000_000
OPEN_STATES = (payment_pb2.PAYMENT_STATE_LOCKED, payment_pb2.PAYMENT_STATE_PARTIALLY_RELEASED)


# -- what a refusal must leave alone ---------------------------------------------------------
@dataclass(frozen=True)
class PaymentFacts:
    state: int
    version: int
    held_minor: int
    released_minor: int
    refunded_minor: int
    event_ids: tuple[str, ...]
    legs: tuple[tuple[str, str, int], ...]
    financing_refunded: tuple[int, ...]
    collected: tuple[int, ...]


@dataclass(frozen=True)
class Snapshot:
    payments: dict[str, PaymentFacts]
    balances: dict[str, tuple[int, int]]
    journal_length: int
    held_sum_minor: int
    oracle_set_version: int


def facts(payment: payment_pb2.Payment) -> PaymentFacts:
    return PaymentFacts(
        state=payment.state,
        version=payment.version,
        held_minor=payment.held.amount_minor,
        released_minor=payment.released.amount_minor,
        refunded_minor=payment.refunded.amount_minor,
        event_ids=tuple(a.event_id for a in payment.attestations),
        legs=tuple((g.leg_id, g.paid_to_wallet_id, g.amount.amount_minor) for g in payment.legs),
        financing_refunded=tuple(f.refunded.amount_minor for f in payment.financing),
        collected=tuple(a.collected.amount_minor for a in payment.assignments),
    )


async def balances(cb: PaymentsClient, wallet_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
    out = {}
    for wallet_id in sorted(set(wallet_ids)):
        wallet = await cb.get_wallet(wallet_id)
        line = next(b for b in wallet.balances if b.available.currency == "CNY")
        out[wallet_id] = (line.available.amount_minor, line.held.amount_minor)
    return out


async def journal_length(cb: PaymentsClient) -> int:
    return len([entry async for entry in cb.journal()])


async def take_snapshot(
    world: TradeWorld, payment_ids: Iterable[str], extra_wallets: Iterable[str] = ()
) -> Snapshot:
    cb = world.cb
    payments = {p: facts(await cb.get_payment(p)) for p in payment_ids}
    (line,) = (await cb.get_supply("CNY")).supplies
    assert line.consistent, "supply != sum of balances"
    return Snapshot(
        payments=payments,
        balances=await balances(cb, [*world.wallets.values(), RESERVE, *extra_wallets]),
        journal_length=await journal_length(cb),
        held_sum_minor=line.held_sum.amount_minor,
        oracle_set_version=await cb.oracle_set_version(),
    )


async def refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> ApiError:
    """``call`` must fail with exactly this gRPC status code and ErrorInfo reason."""
    with pytest.raises(ApiError) as caught:
        await call
    error = caught.value
    assert (error.code, error.reason) == (code, reason), f"{error} (metadata {error.metadata})"
    return error


async def refused_without_effect(
    world: TradeWorld,
    payment_ids: Sequence[str],
    call: Awaitable[Any],
    code: grpc.StatusCode,
    reason: str,
    extra_wallets: Iterable[str] = (),
) -> ApiError:
    """As :func:`refused`, and the ledger, the payments and the registry are exactly as before."""
    extra = list(extra_wallets)
    before = await take_snapshot(world, payment_ids, extra)
    error = await refused(call, code, reason)
    after = await take_snapshot(world, payment_ids, extra)
    assert after == before, f"{reason} changed something:\n{before}\n{after}"
    return error


# -- held balances ---------------------------------------------------------------------------
async def all_payments(cb: PaymentsClient) -> list[payment_pb2.Payment]:
    found: list[payment_pb2.Payment] = []
    token = ""
    while True:
        page = await cb.api.payments.list_payments(
            payment_pb2.ListPaymentsRequest(page_size=500, page_token=token),
        )
        found.extend(page.payments)
        token = page.next_page_token
        if not token:
            return found


async def check_held(world: TradeWorld, extra_wallets: Iterable[str] = ()) -> None:
    """Every wallet's HELD balance is the sum of the held amounts of the open payments it pays
    into escrow; terminal payments hold nothing; each payment's held amount is its escrow less
    what it released and refunded; the supply's held sum is the total."""
    cb = world.cb
    expected: dict[str, int] = {}
    for payment in await all_payments(cb):
        held = payment.held.amount_minor
        assert held == (
            payment.escrow.amount_minor
            - payment.released.amount_minor
            - payment.refunded.amount_minor
        ), payment.payment_id
        if payment.state in OPEN_STATES:
            expected[payment.payer_wallet_id] = expected.get(payment.payer_wallet_id, 0) + held
        else:
            assert held == 0, f"terminal payment {payment.payment_id} still holds {held}"
    wallets = [*world.wallets.values(), RESERVE, *extra_wallets, *expected]
    actual = {w: held for w, (_, held) in (await balances(cb, wallets)).items()}
    assert actual == {w: expected.get(w, 0) for w in actual}
    (line,) = (await cb.get_supply("CNY")).supplies
    assert line.held_sum.amount_minor == sum(expected.values())
    assert line.consistent


# -- attestations ----------------------------------------------------------------------------
async def make_attestation(
    world: TradeWorld,
    payment: payment_pb2.Payment,
    *,
    oracle: str,
    event_type: str,
    attributes: dict[str, str | int | bool],
    event_id: str,
    issued_at_us: int | None = None,
    observed_at_us: int | None = None,
    expires_at_us: int | None = None,
    oracle_set_version: int | None = None,
    payment_id: str | None = None,
    contract_hash: str | None = None,
) -> Attestation:
    """A statement and payload; every field defaults to what a correct oracle would send now."""
    issued = world.now_us() if issued_at_us is None else issued_at_us
    version = oracle_set_version
    if version is None:
        version = await world.cb.oracle_set_version()
    return build_attestation(
        oracle_set_version=version,
        oracle=oracle,
        event_id=event_id,
        payment_id=payment_id or payment.payment_id,
        contract_hash=contract_hash or payment.contract.contract_hash,
        event_type=event_type,
        attributes=attributes,
        observed_at_us=issued - MINUTE_US if observed_at_us is None else observed_at_us,
        issued_at_us=issued,
        expires_at_us=issued + 10 * MINUTE_US if expires_at_us is None else expires_at_us,
    )


async def submit(
    client: PaymentsClient,
    attestation: Attestation,
    signatures: Sequence[tuple[str, bytes]] = (),
    aggregate: tuple[Sequence[str], bytes] | None = None,
    *,
    request_id: str = "",
) -> oracle_pb2.SubmitAttestationResponse:
    return await client.submit_attestation(
        attestation.statement,
        attestation.payload,
        signatures,
        aggregate,
        request_id=request_id or new_request_id(),
    )


# -- signed documents on the test's clock ------------------------------------------------------
def fund_request(
    world: TradeWorld,
    financier: str,
    payment_id: str,
    amount_minor: int,
    *,
    fee_minor: int = 0,
    currency: str = "CNY",
    request_id: str = "",
    financier_key: OwnerKey | None = None,
    payer: str = "buyer",
    submitter: str = FINANCIER,
) -> payment_pb2.FundEscrowRequest:
    """A funding signed by the financier and co-signed by the payer (``world``'s wallet
    ``payer``), for ``submitter`` to send."""
    request_id = request_id or new_request_id()
    signed = FundInstruction(
        financier=financier,
        payer=world.wallets[payer],
        payment_id=payment_id,
        currency=currency,
        amount_minor=amount_minor,
        fee_minor=fee_minor,
        due_at_us=world.now_us() + 30 * 86_400_000_000,
        submitter=submitter,
        request_id=request_id,
        expires_at_us=world.now_us() + 5 * MINUTE_US,
    ).sign(financier_key or world.keys["financier"])
    return payment_pb2.FundEscrowRequest(
        request_id=request_id,
        financier_instruction=wallet_pb2.SignedInstruction(
            payload=signed.payload, signature=signed.signature
        ),
        payer_signature=world.keys[payer].sign(signed.payload),
    )


def assignment(
    world: TradeWorld,
    payment_id: str,
    *,
    payee: str,
    assigned_minor: int,
    advance_minor: int,
    currency: str = "CNY",
    submitter: str = FINANCIER,
) -> AssignmentInstruction:
    return AssignmentInstruction(
        payment_id=payment_id,
        payee=payee,
        financier=world.wallets["financier"],
        currency=currency,
        assigned_minor=assigned_minor,
        advance_minor=advance_minor,
        submitter=submitter,
        request_id=new_request_id(),
        expires_at_us=world.now_us() + 5 * MINUTE_US,
    )


def cancel_request(
    world: TradeWorld,
    payment_id: str,
    signers: dict[str, OwnerKey],
    *,
    submitter: str = PLATFORM,
) -> payment_pb2.CancelPaymentRequest:
    """``signers``: wallet id -> the key that signs under it (a test may pass a wrong one)."""
    request_id = new_request_id()
    payload = CancelInstruction(
        payment_id=payment_id,
        submitter=submitter,
        request_id=request_id,
        expires_at_us=world.now_us() + 5 * MINUTE_US,
    ).to_bytes()
    return payment_pb2.CancelPaymentRequest(
        request_id=request_id,
        payload=payload,
        signatures=[
            payment_pb2.PartySignature(wallet_id=w, signature=k.sign(payload))
            for w, k in signers.items()
        ],
    )


async def open_funded_wallet(
    world: TradeWorld, name: str, amount_minor: int, *, kind: str = "PERSONAL", tier: int = 4
) -> str:
    """Another wallet at the world's bank, funded from its reserve: world.wallets[name], with the
    key world.keys[name]."""
    bank = world.client("institution/icbc-sz")
    world.keys[name] = key(name)
    opened = await bank.open_wallet(
        "icbc-sz",
        world.keys[name].public_key,
        kind=kind,
        tier=tier,
        display_name=name,
        request_id=f"open-{name}",
    )
    wallet_id = opened.wallet.wallet_id
    world.wallets[name] = wallet_id
    if amount_minor:
        await bank.transfer(key("bank"), RESERVE, wallet_id, "CNY", amount_minor)
    return wallet_id


# -- the example contract's events -------------------------------------------------------------
CONTRACT = compiled(WAREHOUSE)


async def locked(trade: TradeWorld, price_minor: int = 125_000_00) -> payment_pb2.Payment:
    """A payment against the overseas-warehouse contract, locked by the platform for the buyer."""
    return await trade.lock(CONTRACT, warehouse_params(trade, price_minor), source=WAREHOUSE)


async def cleared(
    trade: TradeWorld, payment: payment_pb2.Payment, event_id: str, **times: Any
) -> Attestation:
    return await make_attestation(
        trade,
        payment,
        oracle="customs",
        event_type="customs.cleared",
        attributes={"declaration": "D-2026-1127"},
        event_id=event_id,
        **times,
    )


async def arrived(
    trade: TradeWorld,
    payment: payment_pb2.Payment,
    event_id: str,
    site: str = "LAX-FBA-3",
    **times: Any,
) -> Attestation:
    return await make_attestation(
        trade,
        payment,
        oracle="sensors",
        event_type="iot.arrived",
        attributes={"site": site},
        event_id=event_id,
        **times,
    )


async def receipt(trade: TradeWorld, payment: payment_pb2.Payment, event_id: str) -> Attestation:
    return await make_attestation(
        trade,
        payment,
        oracle="buyer",
        event_type="receipt.signed",
        attributes={"signer": trade.wallets["buyer"]},
        event_id=event_id,
    )


def by_customs(oracles: Oracles, attestation: Attestation) -> list[tuple[str, bytes]]:
    signed = sign_ed25519(attestation.statement, CUSTOMS, oracles.customs)
    return [(signed.signer_id, signed.signature)]


def by_sensors(
    oracles: Oracles, attestation: Attestation, *names: str
) -> tuple[tuple[str, ...], bytes]:
    aggregate = sign_bls_aggregate(attestation.statement, [(n, oracles.sensors[n]) for n in names])
    return aggregate.signer_ids, aggregate.signature


def by_buyer(trade: TradeWorld, attestation: Attestation) -> list[tuple[str, bytes]]:
    return [(trade.wallets["buyer"], trade.keys["buyer"].sign(attestation.statement))]


async def whole_lifecycle(trade: TradeWorld) -> payment_pb2.Payment:
    """Lock a payment, then customs clears it, two of the three sensors see it arrive (30%
    released) and the buyer signs the receipt (the rest: SETTLED)."""
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    oracle = trade.client(ORACLE)
    customs = await cleared(trade, payment, "ev-customs")
    await submit(oracle, customs, by_customs(oracles, customs))
    sensors = await arrived(trade, payment, "ev-arrived")
    await submit(oracle, sensors, (), by_sensors(oracles, sensors, *SENSORS[:2]))
    signed = await receipt(trade, payment, "ev-receipt")
    reply = await submit(trade.platform, signed, by_buyer(trade, signed))
    assert reply.payment.state == payment_pb2.PAYMENT_STATE_SETTLED
    return payment


async def cleared_for(
    trade: TradeWorld, oracles: Oracles, payment: payment_pb2.Payment, event_id: str
) -> oracle_pb2.SubmitAttestationResponse:
    """Customs clears the goods of ``payment`` (which releases nothing on its own)."""
    customs = await cleared(trade, payment, event_id)
    reply = await submit(trade.client(ORACLE), customs, by_customs(oracles, customs))
    assert list(reply.legs) == []
    return reply
