"""One order's life, sent as its platform, buyer, seller, financiers, customs and sensors would
send it, and one direct eBL sale. Every request id follows from the order, so a call retried
across a server restart is answered from storage instead of applied twice.

Each call is counted in the run's record under an operation name with its outcome; a call whose
outcome differs from what the plan expects (a genuine attestation refused, a forged one accepted)
is also counted as a surprise, which fails the run's ``operations_as_planned`` invariant.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Mapping
from typing import Final, TypeVar

from condpay.attest import build_attestation, sign_bls_aggregate, sign_ed25519
from condpay.client import bound_params
from condpay.errors import ApiError
from condpay.ids import payment_id_for
from condpay.v1 import payment_pb2, settlement_pb2

from sim_central_bank.economy import CARRIER, Economy, Party
from sim_central_bank.metered import MeteredClient
from sim_central_bank.plan import ArrivalFault, DirectDvP, Order
from sim_central_bank.record import ACCEPTED, Expectations, RefusedAttestation, RunRecord
from sim_central_bank.scenario import SELLER_CURRENCY
from wallets import AssignmentInstruction, AttestationStatement, bls

T = TypeVar("T")
#: An attestation as sent: statement, payload, Ed25519 signatures, BLS aggregate.
Signed = tuple[bytes, bytes, list[tuple[str, bytes]], tuple[tuple[str, ...], bytes] | None]
TERMINAL: Final = frozenset(
    {
        payment_pb2.PAYMENT_STATE_SETTLED,
        payment_pb2.PAYMENT_STATE_REFUNDED,
        payment_pb2.PAYMENT_STATE_EXPIRED,
        payment_pb2.PAYMENT_STATE_CANCELLED,
    }
)
#: Where a settlement ends: FINAL (what the run waits for) or ABORTED (a surprise, at once).
SETTLED_STATES: Final = frozenset(
    {settlement_pb2.SETTLEMENT_STATE_FINAL, settlement_pb2.SETTLEMENT_STATE_ABORTED}
)
#: Polls for a payment's or a settlement's end start this fast and slow down to POLL_SECONDS_MAX.
POLL_SECONDS: Final = 0.05
POLL_SECONDS_MAX: Final = 1.0
#: How long a payout or refund may take to show before the run calls the order stuck.
SETTLE_TIMEOUT_SECONDS: Final = 120.0
SURPRISE: Final = "surprise"
#: Polls read the payment's state and legs only.
BASIC: Final = payment_pb2.PAYMENT_VIEW_BASIC
#: Settlement ids (docs/api.md): a leg paid out through the bridge is paid to its settlement.
SETTLEMENT_PREFIX: Final = "s_"


class Trader:
    def __init__(
        self,
        economy: Economy,
        core: MeteredClient,
        record: RunRecord,
        expectations: Expectations,
    ) -> None:
        self.economy = economy
        self.core = core
        self.record = record
        self.expectations = expectations
        self._clients: dict[str, MeteredClient] = {}
        self._sent: dict[tuple[str, str], Signed] = {}
        self.forger_keys = tuple(
            bls.secret_key(f"forger-{economy.plan.scenario.seed}-{i}".encode().ljust(32, b"!"))
            for i in range(2)
        )

    def client(self, caller: str) -> MeteredClient:
        if caller not in self._clients:
            self._clients[caller] = self.core.with_caller(caller)
        return self._clients[caller]

    async def op(
        self, name: str, call: Awaitable[T], *, refused: bool = False
    ) -> tuple[T | None, str]:
        """Await ``call`` and count its outcome under ``name``: (the reply, ACCEPTED), or (None,
        the reason) for a refusal. ``refused``: the plan expects a refusal; the opposite outcome
        is counted as a surprise."""
        try:
            result = await call
        except ApiError as error:
            outcome = error.reason or error.code.name
            self.record.count(name, outcome)
            if not refused:
                self.record.count(SURPRISE, f"{name} refused {outcome}")
            return None, outcome
        self.record.count(name, ACCEPTED)
        if refused:
            self.record.count(SURPRISE, f"{name} accepted")
        return result, ACCEPTED

    async def _job(self, name: str, job: Awaitable[None]) -> None:
        """One order or direct sale: a call the plan does not expect to fail (a read while it
        waits, say) that fails anyway is a surprise of this job, not the end of the run."""
        try:
            await job
        except ApiError as error:
            self.record.count(SURPRISE, f"{name} failed: {error.reason or error.code.name}")

    # -- an order ---------------------------------------------------------------------------
    async def run_order(self, order: Order) -> None:
        await self._job("order", self._run_order(order))

    async def _run_order(self, order: Order) -> None:
        economy, scenario = self.economy, self.economy.plan.scenario
        caller = f"platform/sim-{order.platform}"
        platform = self.client(caller)
        buyer, seller = economy.buyers[order.buyer], economy.sellers[order.seller]
        contract = economy.contract(order)
        lock_id = economy.rid(order.order_id, "lock")
        payment_id = payment_id_for(caller, lock_id)
        late = order.arrival_fault is ArrivalFault.LATE
        deadline_s = scenario.events.late_deadline_s if late else scenario.events.deadline_s
        params: dict[str, object] = {
            "buyer": buyer.wallet_id,
            "seller": seller.wallet_id,
            "price": (order.currency, order.amount_minor),
            "declaration": f"D-{order.order_id}",
        }
        pledges = []
        title_id: str | None = None
        if order.ebl_units:
            title_id = await self.issue_ebl(platform, seller, order.order_id, order.ebl_units)
            if title_id is None:
                return
            params["bol"] = title_id
        params["ship_by"] = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=deadline_s)
        due = time.monotonic() + deadline_s
        if title_id is not None:
            # The seller pledges the eBL to this payment, this contract and these terms only.
            pledges.append(
                platform.pledge_to_payment(
                    seller.key,
                    seller.wallet_id,
                    title_id,
                    payment_id,
                    contract.hash,
                    bound_params(contract, params).hash,
                )
            )
        locked, _ = await self.op(
            "lock",
            platform.lock_payment(
                buyer.key, contract, params, request_id=lock_id, title_pledges=pledges
            ),
        )
        if locked is None:
            return
        await self.finance(order, payment_id, buyer, seller)  # (none for a late order)
        if not late:
            # A late order's goods are not cleared either: with its deadline seconds away, a
            # clearance would race it (a core restart in between would see it refused), and
            # whether 30% was released would then depend on the timing.
            await self.pause(order.delays_ms[0])
            await self.attest(
                order, payment_id, "customs.cleared", {"declaration": f"D-{order.order_id}"}
            )
        await self.pause(order.delays_ms[1])
        await self.arrive(order, payment_id, due)

    async def finance(self, order: Order, payment_id: str, buyer: Party, seller: Party) -> None:
        economy = self.economy
        if order.prepayment:
            index, principal = order.prepayment
            financier = economy.financiers[index]
            await self.op(
                "fund_escrow",
                self.client(f"financier/{financier.name}").fund_escrow(
                    financier.key,
                    financier.wallet_id,
                    payment_id,
                    order.currency,
                    principal,
                    payer_key=buyer.key,  # the payer invites the financier (co-signs)
                    payer_wallet=buyer.wallet_id,
                    fee_minor=principal // 100,
                    due_at_us=int((time.time() + 90 * 86_400) * 1e6),
                    request_id=economy.rid(order.order_id, "fund"),
                ),
            )
        if order.receivable:
            index, advance = order.receivable
            financier = economy.financiers[index]
            request_id = economy.rid(order.order_id, "assign")
            assignment = AssignmentInstruction(
                payment_id=payment_id,
                payee=seller.wallet_id,
                financier=financier.wallet_id,
                currency=order.currency,
                assigned_minor=order.amount_minor,
                advance_minor=advance,
                submitter=f"financier/{financier.name}",
                request_id=request_id,
                expires_at_us=int((time.time() + 300) * 1e6),
            )
            await self.op(
                "assign_proceeds",
                self.client(f"financier/{financier.name}").assign_proceeds(
                    seller.key, financier.key, assignment
                ),
            )

    async def arrive(self, order: Order, payment_id: str, due: float) -> None:
        """``due``: the payment's deadline (``time.monotonic()``)."""
        fault = order.arrival_fault
        if fault is not ArrivalFault.NONE and fault is not ArrivalFault.MISSING:
            self.record.faults[f"attestation.{fault.value}"] += 1
        attributes = {"site": self.economy.sites[order.currency].warehouse}
        if fault is ArrivalFault.MISSING:
            self.expectations.pending_reasons[payment_id] = (
                "arrival never attested (missing on purpose): open until its deadline"
            )
            self.record.faults["attestation.missing"] += 1
            # What customs released still settles this round, at this round's rates.
            await self.settle_payouts(await self.core.get_payment(payment_id, view=BASIC))
            return
        if fault is ArrivalFault.LATE:
            # Polled from its deadline on, not from the lock (the polls slow down to a second
            # apart, and the refund comes within the deadline sweep's half second).
            await self.wait_payment(payment_id, not_before=due)
            await self.attest(order, payment_id, "iot.arrived", attributes, kind="late")
            return
        if fault is ArrivalFault.FORGED:
            await self.attest(order, payment_id, "iot.arrived", attributes, kind="forged")
        released = await self.attest(order, payment_id, "iot.arrived", attributes)
        if fault is ArrivalFault.REPLAYED:
            await self.attest(order, payment_id, "iot.arrived", attributes, kind="replayed")
        if fault is ArrivalFault.DUPLICATED:
            await self.attest(order, payment_id, "iot.arrived", attributes, kind="duplicated")
        await self.wait_payment(payment_id, seen=released)

    async def attest(
        self,
        order: Order,
        payment_id: str,
        event_type: str,
        attributes: Mapping[str, str | int | bool],
        *,
        kind: str = "",
    ) -> payment_pb2.Payment | None:
        """One attestation: genuine (kind ""), or late, forged, replayed or duplicated. A replay
        and a duplicate send the genuine one's exact bytes again: a replay under a new request
        id (the server has seen the event), a duplicate under the same one (answered from
        storage). Returns the payment as the reply shows it (BASIC), None if refused."""
        economy = self.economy
        site = economy.sites[order.currency]
        genuine_id = economy.rid(order.order_id, event_type)
        if kind in ("replayed", "duplicated"):
            sent = self._sent[(order.order_id, event_type)]
        else:
            sent = self._sign(order, payment_id, event_type, attributes, forged=kind == "forged")
        submitter = self.client(
            f"oracle/{site.customs if event_type == 'customs.cleared' else site.sensors[0][0]}"
        )
        request_id = genuine_id if kind in ("", "duplicated") else f"{genuine_id}.{kind}"
        reply, outcome = await self.op(
            f"attestation.{kind or event_type.split('.')[0]}",
            submitter.submit_attestation(*sent, request_id=request_id),
            refused=kind in ("forged", "replayed", "late"),
        )
        if not kind:
            self._sent[(order.order_id, event_type)] = sent
        if kind in ("forged", "replayed"):
            event_id = AttestationStatement.from_bytes(sent[0]).event_id
            self.expectations.refused_attestations.append(
                RefusedAttestation(payment_id, event_id, kind, outcome)
            )
        if kind == "duplicated" and reply is not None and not reply.operation.replayed:
            self.record.count(SURPRISE, "attestation.duplicated applied again")
        return None if reply is None else reply.payment

    def _sign(
        self,
        order: Order,
        payment_id: str,
        event_type: str,
        attributes: Mapping[str, str | int | bool],
        *,
        forged: bool,
    ) -> Signed:
        economy = self.economy
        site = economy.sites[order.currency]
        contract = economy.contract(order)
        customs = event_type == "customs.cleared"
        now = int(time.time() * 1e6)
        attestation = build_attestation(
            oracle_set_version=economy.oracle_set_version,
            oracle="customs" if customs else "sensors",
            # Unique across runs against one ledger: the run's prefix is in it.
            event_id=economy.rid(order.order_id, event_type) + (":forged" if forged else ""),
            payment_id=payment_id,
            contract_hash=contract.hash,
            event_type=event_type,
            attributes=attributes,
            observed_at_us=now - 1_000_000,
            issued_at_us=now,
            expires_at_us=now + 600_000_000,
        )
        if customs:
            signed = sign_ed25519(attestation.statement, site.customs, site.customs_key)
            return (
                attestation.statement,
                attestation.payload,
                [(signed.signer_id, signed.signature)],
                None,
            )
        signers = list(site.sensors[:2])
        if forged:  # the sensors' names, someone else's keys
            signers = [(name, k) for (name, _), k in zip(signers, self.forger_keys, strict=True)]
        aggregate = sign_bls_aggregate(attestation.statement, signers)
        return (
            attestation.statement,
            attestation.payload,
            [],
            (aggregate.signer_ids, aggregate.signature),
        )

    async def issue_ebl(
        self, platform: MeteredClient, seller: Party, reference: str, units: int
    ) -> str | None:
        key = self.economy.carrier_key
        assert key is not None
        issued, _ = await self.op(
            "title.issue",
            platform.issue_title(
                key,
                CARRIER,
                "bill_of_lading",
                seller.wallet_id,
                units,
                f"eBL {self.economy.rid(reference)} Yantian, {units} pallets".encode(),
                description=f"{units} pallets",
                request_id=self.economy.rid(reference, "ebl"),
            ),
        )
        return None if issued is None else issued.title.title_id

    # -- waiting ----------------------------------------------------------------------------
    async def wait_payment(
        self,
        payment_id: str,
        *,
        seen: payment_pb2.Payment | None = None,
        not_before: float = 0.0,
    ) -> None:
        """Until the payment is terminal and each of its payouts through the bridge is final.
        ``seen``: the payment as a reply just showed it; no read when it is terminal already.
        ``not_before``: no read before then (``time.monotonic()``)."""
        if (ahead := not_before - time.monotonic()) > 0:
            await asyncio.sleep(ahead)
        give_up = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        wait_s = POLL_SECONDS
        payment = seen
        while payment is None or payment.state not in TERMINAL:
            if payment is not None:  # seen, and not terminal yet
                if time.monotonic() > give_up:
                    self.record.count(SURPRISE, "payment not terminal in time")
                    return
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 1.5, POLL_SECONDS_MAX)
            payment = await self.core.get_payment(payment_id, view=BASIC)
        state = payment_pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_")
        self.record.count(f"payment.{state.lower()}", ACCEPTED)
        if await self.settle_payouts(payment):
            self.record.settlements_total += 1

    async def settle_payouts(self, payment: payment_pb2.Payment) -> bool:
        """Wait for each leg paid out through the bridge (paid to its settlement, ``s_...``);
        whether every one of them reached FINAL."""
        final = True
        for leg in payment.legs:
            if leg.paid_to_wallet_id.startswith(SETTLEMENT_PREFIX):
                final &= await self.wait_settlement(leg.paid_to_wallet_id, "payout")
        return final

    async def wait_settlement(self, settlement_id: str, name: str) -> bool:
        """Until the settlement ends (:data:`SETTLED_STATES`); whether it ended FINAL. ABORTED,
        or no end in time, is a surprise."""
        give_up = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        wait_s = POLL_SECONDS
        while True:
            # A settlement just asked for takes a bridge block at least: first wait, then read.
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 1.5, POLL_SECONDS_MAX)
            settlement = await self.core.get_settlement(settlement_id)
            state = settlement_pb2.SettlementState.Name(settlement.state)
            if settlement.state == settlement_pb2.SETTLEMENT_STATE_FINAL:
                self.record.count(f"{name}.final", ACCEPTED)
                return True
            if settlement.state in SETTLED_STATES:
                self.record.count(SURPRISE, f"{name} {state}")
                return False
            if time.monotonic() > give_up:
                self.record.count(SURPRISE, f"{name} {state} after {SETTLE_TIMEOUT_SECONDS:.0f} s")
                return False

    @staticmethod
    async def pause(delay_ms: int) -> None:
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)

    # -- a direct sale ----------------------------------------------------------------------
    async def run_direct(self, sale: DirectDvP) -> None:
        await self._job("direct DvP", self._run_direct(sale))

    async def _run_direct(self, sale: DirectDvP) -> None:
        economy = self.economy
        platform = self.client(f"platform/sim-{sale.platform}")
        seller, buyer = economy.sellers[sale.seller], economy.buyers[sale.buyer]
        title_id = await self.issue_ebl(platform, seller, sale.dvp_id, 40)
        if title_id is None:
            return
        quote, _ = await self.op(
            "quote",
            platform.quote_fx(
                sale.currency,
                SELLER_CURRENCY,
                target_amount_minor=sale.cny_minor,
                request_id=economy.rid(sale.dvp_id, "quote"),
            ),
        )
        if quote is None:
            return
        settled, _ = await self.op(
            "dvp",
            platform.settle_dvp(
                (seller.key, seller.wallet_id),
                (buyer.key, buyer.wallet_id),
                title_id,
                sale.units,
                quote,
                request_id=economy.rid(sale.dvp_id, "dvp"),
            ),
        )
        if settled is not None and await self.wait_settlement(
            settled.settlement.settlement_id, "dvp"
        ):
            self.record.settlements_total += 1
