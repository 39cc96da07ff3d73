"""A fleet of conditional payments for the deadline, concurrency and crash tests.

- ``TIMED``: the overseas-warehouse contract with its deadline as a timestamp parameter
  (``deliver_by``), so a test puts the deadline where its clock is: a ManualClock in process, the
  real clock for a ``condpay serve`` child process;
- :func:`build_fleet`: a bank, funded buyers, sellers and the contract's oracles, all with fixed
  request ids (wallet and payment ids derive from them, so two runs of one workload name the
  same wallets and payments);
- signed requests built once (:class:`Call`): a retry resends exactly the same bytes, as a client
  retrying with the same request id must;
- :class:`Sender`: sends a call until a *definite* answer (a reply, or a refusal that is not
  UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED), counting attempts and retries;
- :func:`predict`: the single-threaded replay of the evaluator over the attestations a payment
  accepted, in the order the server recorded them;
- :func:`check_ledger` and :func:`final_state`: legs against the journal, balances against the
  legs, supply; and the state two runs of one workload must agree on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from condpay.attest import build_attestation, sign_bls_aggregate, sign_ed25519, sign_party
from condpay.client import PaymentsClient, bound_params, param_values
from condpay.errors import ApiError
from condpay.v1 import ledger_pb2, oracle_pb2, payment_pb2, wallet_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from contracts_dsl import BoundParams, ContractState, Escrow, Event, escrow_minor, evaluate
from settlement.api.server import RunningServer, start_server
from settlement.clock import Clock
from settlement.config import Settings
from settlement.db.urls import parse_database_url
from settlement.faults import CRASH_EXIT_STATUS
from settlement.ledger.audit import AuditReport, audit_ledger
from settlement.ledger.payments import derive_payment_id
from settlement.runtime import Runtime, create_sql_engine
from sim_central_bank.server_process import ServerProcess
from tests.payments.world import BANK, CUSTOMS, PLATFORM, RESERVE, SENSORS, compiled, key
from wallets import CancelInstruction, LockInstruction, OwnerKey, bls

CENTRAL_BANK = "central_bank/pboc"
CUSTOMS_CALLER = f"oracle/{CUSTOMS}"
SENSORS_CALLER = f"oracle/{SENSORS[0]}"
DECLARATION = "D-2026-1127"
SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US

TIMED_SOURCE = """\
# The overseas-warehouse delivery contract with the deadline as a parameter: each payment says
# by when the goods must be delivered, and tests put that instant where their clock is.
contract "timed-warehouse-delivery" version 1

param buyer       : wallet
param seller      : wallet
param price       : money CNY
param declaration : text
param deliver_by  : timestamp

oracle customs = "customs.cn.shenzhen"
oracle sensors = quorum 2 of ["iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid"]

escrow price from buyer
deadline deliver_by -> refund remainder to buyer

clause arrival
when customs.cleared(declaration == declaration) by customs
  and iot.arrived(site == "LAX-FBA-3") by sensors
  -> pay 30% to seller

clause receipt
when receipt.signed(signer == buyer) by buyer within 14 days after iot.arrived
  -> pay remainder to seller

clause cold_chain_breach
when iot.condition(max_temp_c > 8) by sensors
  -> pay 5% of price to buyer as penalty
"""
TIMED = compiled(TIMED_SOURCE)

OPEN_STATES = frozenset(
    {payment_pb2.PAYMENT_STATE_LOCKED, payment_pb2.PAYMENT_STATE_PARTIALLY_RELEASED}
)
TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
# A restarted server is found again within ~0.1-0.4 s instead of gRPC's default reconnect backoff
# (1 s growing to 120 s), which would stretch a crash loop for minutes.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 400),
)


def state_name(state: int) -> str:
    return payment_pb2.PaymentState.Name(state).removeprefix("PAYMENT_STATE_")


def us_of(stamp: Timestamp) -> int:
    return stamp.seconds * SECOND_US + stamp.nanos // 1000


def whole_seconds_now_us() -> int:
    return int(time.time()) * SECOND_US


# -- connections -----------------------------------------------------------------------------------
class Connection:
    """One gRPC channel to one server, with a typed client per caller identity on it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=list(FAST_RECONNECT))
        self._clients: dict[str, PaymentsClient] = {}

    def client(self, caller: str) -> PaymentsClient:
        if caller not in self._clients:
            self._clients[caller] = PaymentsClient(
                self.address, caller=caller, channel=self.channel
            )
        return self._clients[caller]

    @property
    def retries(self) -> int:
        """Transient failures the clients retried themselves (same request id)."""
        return sum(c.retries for c in self._clients.values())

    async def close(self) -> None:
        await self.channel.close()


# -- the fleet -------------------------------------------------------------------------------------
@dataclass
class Fleet:
    wallets: dict[str, str]  # party name -> wallet id
    keys: dict[str, OwnerKey]
    customs: OwnerKey
    sensors: dict[str, int]  # BLS secret keys
    oracle_set_version: int
    funding_minor: dict[str, int]  # what each party held after set-up (available)


async def build_fleet(
    connection: Connection, *, buyers: int, sellers: int, funding_minor: int
) -> Fleet:
    """Institution, CNY, enterprise wallets (buyers funded), the contract's oracles. Every
    request id is fixed: wallet ids derive from them."""
    cb = connection.client(CENTRAL_BANK)
    bank = connection.client(f"institution/{BANK}")
    bank_key = key("bank")
    await cb.register_institution(
        BANK, "ICBC Shenzhen", bank_key.public_key, request_id="fleet-institution"
    )
    await cb.issue(BANK, "CNY", buyers * funding_minor, request_id="fleet-issue")
    names = [f"buyer-{i}" for i in range(buyers)] + [f"seller-{i}" for i in range(sellers)]
    wallets, keys = {}, {}
    funding = {name: funding_minor if name.startswith("buyer-") else 0 for name in names}
    for name in names:
        keys[name] = key(name)
        opened = await bank.open_wallet(
            BANK,
            keys[name].public_key,
            kind="ENTERPRISE",
            tier=0,
            display_name=name,
            request_id=f"fleet-open-{name}",
        )
        wallets[name] = opened.wallet.wallet_id
    await asyncio.gather(
        *(
            bank.transfer(
                bank_key,
                RESERVE,
                wallets[name],
                "CNY",
                funding_minor,
                request_id=f"fleet-fund-{name}",
            )
            for name in names
            if funding[name]
        )
    )
    customs = key("customs")
    await cb.register_oracle(CUSTOMS, "ED25519", customs.public_key, request_id="fleet-customs")
    sensors = {}
    for name in SENSORS:
        secret = bls.secret_key(name.encode().ljust(32, b"*"))
        scheme = bls.backend()
        await cb.register_oracle(
            name,
            "BLS12_381",
            scheme.public_key(secret),
            proof_of_possession=scheme.pop_prove(secret),
            request_id=f"fleet-{name}",
        )
        sensors[name] = secret
    version = await cb.oracle_set_version()
    return Fleet(wallets, keys, customs, sensors, version, funding)


# -- what to do with each payment ------------------------------------------------------------------
@dataclass(frozen=True)
class EventPlan:
    event_id: str
    event_type: str
    oracle: str  # the attester's name in the contract: customs | sensors | buyer
    attributes: dict[str, str | int | bool]
    observed_at_us: int
    signers: tuple[str, ...] = ()  # the sensors that sign (BLS aggregate)


@dataclass
class PaymentPlan:
    request_id: str  # of the lock; the payment id derives from it
    buyer: str  # party names in the fleet
    seller: str
    price_minor: int
    deliver_by_us: int
    events: list[EventPlan] = field(default_factory=list)
    cancel: bool = False  # the concurrency test races a cancel against the attestations

    @property
    def payment_id(self) -> str:
        return derive_payment_id(PLATFORM, self.request_id)

    def params(self, fleet: Fleet) -> dict[str, object]:
        assert self.deliver_by_us % SECOND_US == 0, "deadlines are whole seconds"
        return {
            "buyer": fleet.wallets[self.buyer],
            "seller": fleet.wallets[self.seller],
            "price": ("CNY", self.price_minor),
            "declaration": DECLARATION,
            "deliver_by": dt.datetime.fromtimestamp(self.deliver_by_us // SECOND_US, tz=dt.UTC),
        }

    def bound(self, fleet: Fleet) -> BoundParams:
        return bound_params(TIMED, self.params(fleet))


def random_events(
    rng: random.Random, prefix: str, buyer_wallet: str, now_us: int
) -> list[EventPlan]:
    """A payment's trade events, in a random sending order: customs (sometimes for another
    declaration), arrival (sometimes at another site), often the buyer's receipt (sometimes
    later than 14 days after arrival), sometimes a cold-chain report. Observed in the past."""
    base = now_us - 40 * DAY_US
    arrival_at = base + rng.randrange(0, 15 * DAY_US)
    receipt_at = min(
        arrival_at + rng.randrange(3_600 * SECOND_US, 20 * DAY_US), now_us - 60 * SECOND_US
    )
    sensors = tuple(sorted(rng.sample(SENSORS, rng.choice((2, 2, 3)))))
    declaration = DECLARATION if rng.random() < 0.85 else "D-OTHER"
    site = "LAX-FBA-3" if rng.random() < 0.9 else "LAX-FBA-9"
    events = [
        EventPlan(
            f"{prefix}.customs",
            "customs.cleared",
            "customs",
            {"declaration": declaration},
            base + rng.randrange(0, 10 * DAY_US),
        ),
        EventPlan(
            f"{prefix}.arrived", "iot.arrived", "sensors", {"site": site}, arrival_at, sensors
        ),
    ]
    if rng.random() < 0.8:
        events.append(
            EventPlan(
                f"{prefix}.receipt", "receipt.signed", "buyer", {"signer": buyer_wallet}, receipt_at
            )
        )
    if rng.random() < 0.35:
        events.append(
            EventPlan(
                f"{prefix}.condition",
                "iot.condition",
                "sensors",
                {"max_temp_c": rng.choice((6, 9, 11))},
                base + rng.randrange(0, 30 * DAY_US),
                sensors,
            )
        )
    rng.shuffle(events)
    return events


# -- calls: signed requests built once -------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One mutating request. Built once, so that every retry sends exactly these bytes."""

    caller: str
    service: str  # payments | oracles
    rpc: str
    request: Any
    payment_id: str
    kind: str  # lock | attest | attest-again | cancel
    event_id: str = ""

    @property
    def request_id(self) -> str:
        return str(self.request.request_id)

    @property
    def key(self) -> tuple[str, str]:
        return (self.caller, self.request_id)


def lock_call(fleet: Fleet, plan: PaymentPlan, *, expires_at_us: int) -> Call:
    bound = plan.bound(fleet)
    signed = LockInstruction(
        payer=fleet.wallets[plan.buyer],
        contract_hash=TIMED.hash,
        params_hash=bound.hash,
        currency="CNY",
        amount_minor=escrow_minor(TIMED, bound),
        submitter=PLATFORM,
        request_id=plan.request_id,
        expires_at_us=expires_at_us,
    ).sign(fleet.keys[plan.buyer])
    request = payment_pb2.LockPaymentRequest(
        request_id=plan.request_id,
        contract_source=TIMED_SOURCE,
        params=param_values(TIMED, plan.params(fleet)),
        payer_instruction=wallet_pb2.SignedInstruction(
            payload=signed.payload, signature=signed.signature
        ),
    )
    return Call(PLATFORM, "payments", "LockPayment", request, plan.payment_id, "lock")


def attest_call(
    fleet: Fleet,
    plan: PaymentPlan,
    event: EventPlan,
    *,
    issued_at_us: int,
    request_id: str = "",
) -> Call:
    """The attestation of ``event``, signed by whoever the contract names for it. Its request id
    is the event id unless another is given (a duplicate delivery under a new id)."""
    attestation = build_attestation(
        oracle_set_version=fleet.oracle_set_version,
        oracle=event.oracle,
        event_id=event.event_id,
        payment_id=plan.payment_id,
        contract_hash=TIMED.hash,
        event_type=event.event_type,
        attributes=event.attributes,
        observed_at_us=event.observed_at_us,
        issued_at_us=issued_at_us,
        expires_at_us=issued_at_us + 600 * SECOND_US,
    )
    request_id = request_id or event.event_id
    request = oracle_pb2.SubmitAttestationRequest(
        request_id=request_id, statement=attestation.statement, payload=attestation.payload
    )
    if event.oracle == "customs":
        caller = CUSTOMS_CALLER
        signer, signature = sign_ed25519(attestation.statement, CUSTOMS, fleet.customs)
        request.signatures.add(signer_id=signer, signature=signature)
    elif event.oracle == "sensors":
        caller = SENSORS_CALLER
        aggregate = sign_bls_aggregate(
            attestation.statement, [(n, fleet.sensors[n]) for n in event.signers]
        )
        request.bls_aggregate.signer_ids.extend(aggregate.signer_ids)
        request.bls_aggregate.signature = aggregate.signature
    else:
        caller = PLATFORM
        buyer = fleet.wallets[plan.buyer]
        signer, signature = sign_party(attestation.statement, buyer, fleet.keys[plan.buyer])
        request.signatures.add(signer_id=signer, signature=signature)
    kind = "attest" if request_id == event.event_id else "attest-again"
    return Call(
        caller, "oracles", "SubmitAttestation", request, plan.payment_id, kind, event.event_id
    )


def cancel_call(fleet: Fleet, plan: PaymentPlan, *, request_id: str, expires_at_us: int) -> Call:
    """A cancellation signed by both parties (the payer and the seller)."""
    payload = CancelInstruction(
        payment_id=plan.payment_id,
        submitter=PLATFORM,
        request_id=request_id,
        expires_at_us=expires_at_us,
    ).to_bytes()
    request = payment_pb2.CancelPaymentRequest(
        request_id=request_id,
        payload=payload,
        signatures=[
            payment_pb2.PartySignature(
                wallet_id=fleet.wallets[name], signature=fleet.keys[name].sign(payload)
            )
            for name in (plan.buyer, plan.seller)
        ],
    )
    return Call(PLATFORM, "payments", "CancelPayment", request, plan.payment_id, "cancel")


# -- answers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """A definite answer: a reply (with its replay flag cleared, so that a replay compares
    equal to the original) or a refusal."""

    ok: bool
    code: str
    reason: str
    metadata: tuple[tuple[str, str], ...]
    reply: Any  # the reply message when ok
    replayed: bool

    @classmethod
    def of_reply(cls, reply: Message) -> Answer:
        normal = type(reply)()
        normal.CopyFrom(reply)
        replayed = bool(normal.operation.replayed)  # type: ignore[attr-defined]
        normal.operation.replayed = False  # type: ignore[attr-defined]
        return cls(True, "OK", "", (), normal, replayed)

    @classmethod
    def of_error(cls, error: ApiError) -> Answer:
        return cls(
            False,
            error.code.name,
            error.reason,
            tuple(sorted(error.metadata.items())),
            None,
            error.replayed,
        )

    def same_as(self, other: Answer) -> bool:
        return (self.ok, self.code, self.reason, self.metadata, self.reply) == (
            other.ok,
            other.code,
            other.reason,
            other.metadata,
            other.reply,
        )

    def __str__(self) -> str:
        return "OK" if self.ok else f"{self.code} {self.reason} {dict(self.metadata)}"


class Sender:
    """Sends calls until a definite answer, retrying transient failures with the same request
    (the client retries a few times itself; this keeps going across server restarts)."""

    def __init__(self, *, definite_within_seconds: float = 90.0) -> None:
        self.attempts = 0
        self.retries = 0  # transient failures retried here, beyond the clients' own retries
        self.in_flight = 0
        self.definite = 0
        self.changed = asyncio.Event()  # set whenever in_flight or definite changes
        self._patience = definite_within_seconds

    async def send(self, connection: Connection, call: Call) -> Answer:
        client = connection.client(call.caller)
        give_up = time.monotonic() + self._patience
        self.in_flight += 1
        self.changed.set()
        try:
            while True:
                self.attempts += 1
                try:
                    reply = await client.send(call.request)
                except ApiError as error:
                    if error.code not in TRANSIENT:
                        return Answer.of_error(error)
                    if time.monotonic() > give_up:
                        raise AssertionError(
                            f"no definite answer for {call.kind} {call.request_id} within "
                            f"{self._patience} s: {error}"
                        ) from None
                    self.retries += 1
                    await asyncio.sleep(0.1)
                    continue
                return Answer.of_reply(reply)
        finally:
            self.in_flight -= 1
            self.definite += 1
            self.changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate`` holds, looking again at each change of the counters."""
        while not predicate():
            self.changed.clear()
            await self.changed.wait()


# -- the single-threaded replay --------------------------------------------------------------------
LegTuple = tuple[str, str, str, int]  # leg id, kind, the party's wallet, amount


@dataclass
class Predicted:
    state: int
    terminal_reason: str
    legs: list[LegTuple]
    held: int
    released: int
    refunded: int


def predict(
    plan: PaymentPlan,
    fleet: Fleet,
    payment: payment_pb2.Payment,
    *,
    cancelled: bool,
    clock_now_us: int,
) -> Predicted:
    """What the payment must look like, from the evaluator alone: the attestations it accepted,
    in the order the server recorded them, each evaluated at the time it was accepted (as the
    engine does: every event so far, the state and the escrow left by the previous step); then
    whatever ended it if the contract did not: the cancel that won, or the deadline if the clock
    is past it. A payment whose contract reached its end needs nothing else."""
    bound = plan.bound(fleet)
    payer = fleet.wallets[plan.buyer]
    escrow = plan.price_minor  # the contract escrows the price
    held, released, refunded = escrow, 0, 0
    state = ContractState.initial(TIMED)
    events: list[Event] = []
    legs: list[LegTuple] = []
    last_now = 0

    def step(now_us: int) -> None:
        nonlocal held, released, refunded, state
        evaluation = evaluate(TIMED, bound, Escrow("CNY", escrow, held), events, now_us, state)
        assert evaluation.ok, (plan.payment_id, evaluation.rejected)
        for leg in evaluation.legs:
            if leg.amount_minor == 0:
                continue
            legs.append((leg.leg_id, leg.kind, leg.wallet, leg.amount_minor))
            held -= leg.amount_minor
            if leg.kind == "refund":
                refunded += leg.amount_minor
            else:
                released += leg.amount_minor
        if evaluation.state.terminal and held:
            legs.append(("close/remainder", "refund", payer, held))
            refunded, held = refunded + held, 0
        state = evaluation.state

    for record in payment.attestations:
        assert not state.terminal, f"{plan.payment_id}: {record.event_id} accepted after the end"
        events.append(
            Event(
                record.event_id,
                record.event_type,
                record.oracle,
                json.loads(record.attributes_json),
                us_of(record.observed_at),
            )
        )
        last_now = us_of(record.accepted_at)
        step(last_now)
    if state.terminal:
        if state.deadline_fired:
            final = payment_pb2.PAYMENT_STATE_EXPIRED
        elif refunded:
            final = payment_pb2.PAYMENT_STATE_REFUNDED
        else:
            final = payment_pb2.PAYMENT_STATE_SETTLED
        return Predicted(final, state.terminal_reason or "", legs, held, released, refunded)
    if cancelled:
        if held:
            legs.append(("cancel/refund", "refund", payer, held))
            refunded, held = refunded + held, 0
        return Predicted(
            payment_pb2.PAYMENT_STATE_CANCELLED, "cancelled", legs, held, released, refunded
        )
    if clock_now_us >= plan.deliver_by_us:
        step(max(plan.deliver_by_us, last_now))
        assert state.terminal, plan.payment_id
        assert state.deadline_fired, plan.payment_id
        return Predicted(
            payment_pb2.PAYMENT_STATE_EXPIRED, "deadline", legs, held, released, refunded
        )
    open_state = (
        payment_pb2.PAYMENT_STATE_PARTIALLY_RELEASED if legs else payment_pb2.PAYMENT_STATE_LOCKED
    )
    return Predicted(open_state, "", legs, held, released, refunded)


def observed(payment: payment_pb2.Payment) -> Predicted:
    return Predicted(
        payment.state,
        payment.terminal_reason,
        [(g.leg_id, g.kind, g.wallet_id, g.amount.amount_minor) for g in payment.legs],
        payment.held.amount_minor,
        payment.released.amount_minor,
        payment.refunded.amount_minor,
    )


def describe(p: Predicted) -> str:
    return f"{state_name(p.state)} ({p.terminal_reason or '-'}) legs={p.legs} held={p.held}"


# -- after the run ---------------------------------------------------------------------------------
async def fetch_payments(
    cb: PaymentsClient, plans: Iterable[PaymentPlan]
) -> dict[str, payment_pb2.Payment]:
    ids = [p.payment_id for p in plans]
    found = await asyncio.gather(*(cb.get_payment(i) for i in ids))
    return dict(zip(ids, found, strict=True))


def base_leg_id(leg_id: str) -> str:
    """A leg paid to several recipients is stored as ``<leg>#<i>``; its journal entry is one."""
    return leg_id.split("#", 1)[0]


async def check_ledger(
    cb: PaymentsClient, fleet: Fleet, payments: Mapping[str, payment_pb2.Payment]
) -> dict[str, int]:
    """Every leg paid exactly once, the journal agreeing with the payments' legs, every party's
    balance what the legs add up to, held = the open escrows, supply conserved. Returns counts."""
    journal = [e async for e in cb.journal(page_size=1000)]
    locks: Counter[str] = Counter()
    leg_entries: Counter[tuple[str, str]] = Counter()
    leg_amounts: dict[tuple[str, str], int] = {}
    leg_kinds: dict[tuple[str, str], str] = {}
    for entry in journal:
        kind = ledger_pb2.EntryKind.Name(entry.kind)
        if kind == "ENTRY_KIND_LOCK":
            locks[entry.memo.removeprefix("lock ")] += 1
        elif kind in ("ENTRY_KIND_RELEASE", "ENTRY_KIND_REFUND"):
            payment_id, _, leg_id = entry.memo.partition(" ")
            leg_entries[(payment_id, leg_id)] += 1
            leg_kinds[(payment_id, leg_id)] = kind
            leg_amounts[(payment_id, leg_id)] = -sum(
                p.amount.amount_minor for p in entry.postings if p.bucket == ledger_pb2.BUCKET_HELD
            )
    problems: list[str] = []
    for payment_id, count in locks.items():
        if count != 1 or payment_id not in payments:
            problems.append(f"{payment_id}: {count} LOCK entries")
    for payment_id in payments:
        if locks[payment_id] != 1:
            problems.append(f"{payment_id}: {locks[payment_id]} LOCK entries")
    for (payment_id, leg_id), count in leg_entries.items():
        if count != 1:
            problems.append(f"{payment_id} {leg_id}: paid {count} times in the journal")
    from_legs: dict[tuple[str, str], int] = defaultdict(int)
    refund_legs: set[tuple[str, str]] = set()
    expected_available = dict(fleet.funding_minor)
    expected_held: dict[str, int] = defaultdict(int)
    names = {w: n for n, w in fleet.wallets.items()}
    for payment_id, payment in payments.items():
        seen = Counter(g.leg_id for g in payment.legs)
        problems += [f"{payment_id}: leg {g} recorded {n} times" for g, n in seen.items() if n > 1]
        for leg in payment.legs:
            from_legs[(payment_id, base_leg_id(leg.leg_id))] += leg.amount.amount_minor
            if leg.kind == "refund":
                refund_legs.add((payment_id, base_leg_id(leg.leg_id)))
            recipient = names.get(leg.paid_to_wallet_id or leg.wallet_id)
            if recipient is not None:
                expected_available[recipient] += leg.amount.amount_minor
        payer = names[payment.payer_wallet_id]
        expected_available[payer] -= payment.escrow.amount_minor
        if payment.state in OPEN_STATES:
            expected_held[payer] += payment.held.amount_minor
        elif payment.held.amount_minor:
            problems.append(f"{payment_id}: {state_name(payment.state)} but still holds money")
    scoped = {k: v for k, v in leg_amounts.items() if k[0] in payments}
    if scoped != dict(from_legs):
        only_journal = sorted(set(scoped.items()) - set(from_legs.items()))[:5]
        only_legs = sorted(set(from_legs.items()) - set(scoped.items()))[:5]
        problems.append(f"journal vs legs: journal only {only_journal}, legs only {only_legs}")
    for k in refund_legs:
        if leg_kinds.get(k) != "ENTRY_KIND_REFUND":
            problems.append(f"{k}: a refund leg booked as {leg_kinds.get(k)}")
    for name, wallet_id in fleet.wallets.items():
        wallet = await cb.get_wallet(wallet_id)
        line = next((b for b in wallet.balances if b.available.currency == "CNY"), None)
        available = line.available.amount_minor if line else 0
        held = line.held.amount_minor if line else 0
        if (available, held) != (expected_available[name], expected_held[name]):
            problems.append(
                f"{name}: balance {available}/{held}, the legs say "
                f"{expected_available[name]}/{expected_held[name]}"
            )
    (supply,) = (await cb.get_supply("CNY")).supplies
    open_held = sum(p.held.amount_minor for p in payments.values() if p.state in OPEN_STATES)
    if not supply.consistent:
        problems.append("GetSupply: not consistent")
    if supply.held_sum.amount_minor != open_held:
        problems.append(f"GetSupply: held {supply.held_sum.amount_minor}, open escrows {open_held}")
    if supply.in_circulation.amount_minor != supply.balances_sum.amount_minor:
        problems.append("GetSupply: circulation differs from the sum of balances")
    assert not problems, "ledger check failed:\n" + "\n".join(problems[:40])
    return {"journal_entries": len(journal), "leg_entries": sum(leg_entries.values())}


async def final_state(
    cb: PaymentsClient, fleet: Fleet, plans: Iterable[PaymentPlan]
) -> dict[str, Any]:
    """What two runs of one workload must agree on: each payment's state, legs, amounts and
    accepted events; each party's balance; the supply. (No times or sequence numbers.)"""
    payments = await fetch_payments(cb, plans)
    balances = {}
    for name, wallet_id in sorted(fleet.wallets.items()):
        wallet = await cb.get_wallet(wallet_id)
        balances[name] = sorted(
            (b.available.currency, b.available.amount_minor, b.held.amount_minor)
            for b in wallet.balances
        )
    (supply,) = (await cb.get_supply("CNY")).supplies
    return {
        "payments": {
            pid: (
                state_name(p.state),
                p.terminal_reason,
                p.escrow.amount_minor,
                p.held.amount_minor,
                p.released.amount_minor,
                p.refunded.amount_minor,
                [
                    (g.leg_id, g.kind, g.wallet_id, g.paid_to_wallet_id, g.amount.amount_minor)
                    for g in p.legs
                ],
                [a.event_id for a in p.attestations],
            )
            for pid, p in payments.items()
        },
        "balances": balances,
        "supply": (
            supply.issued.amount_minor,
            supply.in_circulation.amount_minor,
            supply.held_sum.amount_minor,
        ),
    }


async def audit(database_url: str) -> AuditReport:
    """The read-side ledger audit over its own connection (for databases of child processes)."""
    engine = create_sql_engine(parse_database_url(database_url))
    try:
        return await audit_ledger(engine)
    finally:
        await engine.dispose()


async def wait_until_terminal(
    cb: PaymentsClient, payment_ids: Iterable[str], *, timeout_seconds: float
) -> dict[str, payment_pb2.Payment]:
    """Poll until every payment is terminal (reads retried across server restarts)."""
    ids = list(payment_ids)
    give_up = time.monotonic() + timeout_seconds
    while True:
        try:
            found = await asyncio.gather(*(cb.get_payment(i) for i in ids))
        except ApiError as error:
            if error.code not in TRANSIENT or time.monotonic() > give_up:
                raise
        else:
            if all(p.state not in OPEN_STATES for p in found):
                return dict(zip(ids, found, strict=True))
            if time.monotonic() > give_up:
                still = sorted(
                    f"{p.payment_id} {state_name(p.state)}" for p in found if p.state in OPEN_STATES
                )
                raise AssertionError(f"not terminal after {timeout_seconds} s: {still[:10]}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def replica(database_url: str, clock: Clock) -> AsyncIterator[RunningServer]:
    """A second runtime and server in this process on the same database and clock: a replica
    (its own engine, writer connections, caches and deadline sweeper; nothing shared but the
    database)."""
    runtime = Runtime(
        Settings(database_url=database_url, insecure=True, log_calls=False, writers=2), clock
    )
    await runtime.start()
    try:
        server = await start_server(runtime, "127.0.0.1:0")
    except BaseException:
        await runtime.close()
        raise
    try:
        yield server
    finally:
        await server.stop(grace_seconds=0)


# -- a server child process that can be restarted on the same address ------------------------------
class RestartableServer(ServerProcess):
    """``condpay serve --insecure`` (one process: CONDPAY_WORKERS=1) on a fixed address; each
    start may bring a new environment (another fault seed) and a log file of its own."""

    def __init__(self, database_url: str, log_dir: Path) -> None:
        super().__init__(database_url, log_path=log_dir / "server-0.log")
        self.log_dir = log_dir
        self.starts = 0

    def start_with(self, extra_env: Mapping[str, str] | None = None) -> None:
        self._env = {
            **os.environ,
            "CONDPAY_WORKERS": "1",
            "CONDPAY_QUIET_CALLS": "1",
            **(extra_env or {}),
        }
        self.log_path = self.log_dir / f"server-{self.starts}.log"
        self.starts += 1
        self.start()

    async def wait_ready(self, timeout_seconds: float = 60.0) -> None:
        """Like ServerProcess.wait_ready, on a channel that reconnects fast: with gRPC's default
        backoff a restarted server is noticed up to seconds late."""
        give_up = time.monotonic() + timeout_seconds
        async with grpc.aio.insecure_channel(self.address, options=list(FAST_RECONNECT)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.exit_status() is not None:
                    raise RuntimeError(f"the server exited; see {self.log_path}")
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > give_up:
                    raise TimeoutError(f"the server did not become ready; see {self.log_path}")
                await asyncio.sleep(0.05)

    def exit_status(self) -> int | None:
        """None while running (or never started); the exit status once it died."""
        process = self._process
        return None if process is None else process.poll()

    def fault_crashes(self) -> Counter[str]:
        """Which fault points crashed an incarnation, from what each printed as it died."""
        crashes: Counter[str] = Counter()
        for log in self.log_dir.glob("server-*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("condpay: fault point "):
                    crashes[line.removeprefix("condpay: fault point ").split(":")[0]] += 1
        return crashes

    def log_problems(self) -> list[str]:
        """What the server should never log, crashes or not: an error or critical event (a bridge
        refusal it calls its own bug, a settlement stuck, an unhandled exception...), or anything
        that is not a JSON log line but a fault point's own last words."""
        found = []
        for log in sorted(self.log_dir.glob("server-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("condpay: fault point "):
                    continue
                try:
                    level = json.loads(line).get("level")
                except ValueError:
                    level = "unparsed"
                if level in ("error", "critical", "unparsed"):
                    found.append(f"{log.name}: {line[:300]}")
        return found


class ServerSupervisor:
    """Keeps one :class:`RestartableServer` running on one address and database: restarts it when
    it dies (at a fault point) and when the test kills it, and counts how each incarnation ended
    (``kills``, ``crashes`` at a fault point, ``graceful`` stops, ``other_deaths``). What each
    start carries is the subclass's: :meth:`_env`."""

    def __init__(self, server: RestartableServer) -> None:
        self.server = server
        self.kills = 0
        self.crashes = 0
        self.graceful = 0
        self.other_deaths: list[int] = []
        self.starts = 0
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    def _env(self) -> dict[str, str]:
        """The environment of the next start (its fault points)."""
        return {}

    def _collect(self, status: int) -> None:
        if status == CRASH_EXIT_STATUS:
            self.crashes += 1
        elif status == -9:
            self.kills += 1
        elif status == 0:
            self.graceful += 1
        else:
            self.other_deaths.append(status)

    async def _start(self) -> None:
        while True:
            self.server.start_with(self._env())
            self.starts += 1
            try:
                await self.server.wait_ready()
                return
            except RuntimeError:  # died while starting (its sweeps run at once)
                self._collect(self.server.stop())  # it has exited: this collects its status

    async def start(self) -> None:
        async with self._lock:
            await self._start()
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            async with self._lock:
                if self.server.exit_status() is not None:
                    self._collect(self.server.stop())
                    await self._start()

    async def kill(self, down_seconds: float = 0.0) -> None:
        """SIGKILL; ``down_seconds`` later, a new process on the same database and address."""
        async with self._lock:
            self._collect(self.server.stop(kill=True))
            await asyncio.sleep(down_seconds)
            await self._start()

    async def restart(self) -> None:
        """SIGTERM (graceful), then start again."""
        async with self._lock:
            self._collect(await asyncio.to_thread(self.server.stop))
            await self._start()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        self.server.stop(kill=True)
