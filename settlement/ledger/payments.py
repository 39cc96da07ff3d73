"""Conditional payments as ledger commands.

The escrow of a payment sits in the payer's HELD bucket (so a wallet's held balance is the sum of
its open escrows); ``PaymentRecord.held_minor`` is this payment's share. Every movement is a
balanced journal entry:

| entry   | postings                                                                 |
|---------|--------------------------------------------------------------------------|
| LOCK    | payer AVAILABLE -x, payer HELD +x                                        |
| FUND    | financier AVAILABLE -f, payer AVAILABLE +f (the financier's money takes  |
|         | the place of the payer's in the escrow; the payer owes principal + fee)  |
| ADVANCE | financier AVAILABLE -d, payee AVAILABLE +d (for assigned proceeds)       |
| RELEASE | payer HELD -l, payee AVAILABLE +l (or the assignee financier first)      |
| REFUND  | payer HELD -r, financiers AVAILABLE + their unrefunded principal first,  |
|         | the payer AVAILABLE + the rest                                           |

What is due is decided by the pure contract evaluator (contracts_dsl.evaluate) from every verified
event so far; a command applies its legs, the attestation record, the state change and the
journal entries in the engine's one transaction. States: LOCKED -> PARTIALLY_RELEASED ->
SETTLED | REFUNDED | EXPIRED | CANCELLED, exactly one terminal transition (a command on a terminal
payment is refused, and a deadline that already fired is a no-op).

Money released from an escrow is not refused for its payee's balance cap: the payee's entitlement
was fixed when the payment was locked.

Across currencies and titles: a ``pay ... in HKD`` leg leaves the escrow into a PENDING payout
settlement (the money stays in the payer's HELD bucket, now the settlement's) that the coordinator
settles as a PvP through the bridge, retrying with a new quote if an attempt aborts; assignments
apply to same-currency legs only. A ``deliver title`` leg hands over a title its holder pledged to
the payment when it was locked (LockPayment brings one signed pledge per delivered title); a
payment that ends without delivering a title frees it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Final

from condpay.ids import payment_id_for, payout_id_for

from contracts_dsl import (
    ActionSpec,
    BoundParams,
    CompiledContract,
    ContractState,
    Escrow,
    Evaluation,
    Event,
    EventReport,
    bind_params,
    evaluate,
)
from contracts_dsl import Leg as DueLeg
from contracts_dsl.limits import EVENT_ID_CHARS_MAX
from settlement import limits
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import titles
from settlement.ledger.commands import (
    Command,
    check_debit,
    check_not_expired,
    existing_wallet,
    pay_available,
)
from settlement.ledger.contract_quota import check_quota
from settlement.ledger.records import (
    AssignmentRecord,
    AttestationRecord,
    Bucket,
    ConcurrentDuplicate,
    ContractRecord,
    Decision,
    DocumentRecord,
    EntryKind,
    EntryRecord,
    EventKey,
    FinancingRecord,
    LegRecord,
    PaymentRecord,
    PaymentState,
    PaymentTerms,
    Reads,
    SettlementKind,
    SettlementRecord,
    SettlementState,
)
from settlement.ledger.working_set import Leg, WorkingSet, World, copy_payment
from wallets import INT64_MAX

REFUND_PARTY: Final = "funders"


def derive_payment_id(caller: str, request_id: str) -> str:
    """Like wallet ids: a replay, a dry run and the call name the same payment (the client
    library computes the same, condpay.ids.payment_id_for)."""
    return payment_id_for(caller, request_id)


def params_json(params: BoundParams) -> str:
    """The bound values in the form bind_params reads back, as canonical JSON."""
    return json.dumps(params.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Stored parameters, bound: a pure function of (contract hash, params JSON), asked for several
# times per command (the API layer, the batch's reads, the evaluation), so remembered.
_BOUND: dict[tuple[str, str], BoundParams] = {}


def bound(contract: CompiledContract, payment: PaymentRecord | PaymentTerms) -> BoundParams:
    key = (contract.hash, payment.params_json)
    params = _BOUND.get(key)
    if params is None:
        params = bind_params(contract, json.loads(payment.params_json)).params
        if params is None:  # it bound when the payment was locked
            raise AssertionError(f"stored params of {payment.payment_id} no longer bind")
        if len(_BOUND) >= limits.DIRECTORY_ENTRIES_MAX:
            del _BOUND[next(iter(_BOUND))]
        _BOUND[key] = params
    return params


def wallet_params(contract: CompiledContract, params: BoundParams) -> dict[str, str]:
    """Parameter name -> wallet id, for every wallet parameter."""
    return {p.name: params.wallet(p.name) for p in contract.params if p.kind == "wallet"}


def _actions(contract: CompiledContract) -> list[ActionSpec]:
    actions = [a for c in contract.clauses for a in c.actions]
    if contract.deadline is not None:
        actions.extend(contract.deadline.actions)
    return actions


def payout_currencies(contract: CompiledContract) -> list[str]:
    """The currencies a contract pays out in other than its escrow's (``pay ... in HKD``): each
    such leg settles through the bridge as a PvP."""
    return sorted({a.target_currency for a in _actions(contract) if a.target_currency})


def delivered_titles(contract: CompiledContract, params: BoundParams) -> set[str]:
    """The title ids a contract's ``deliver title`` actions hand over."""
    return {
        params.wallet(a.title) for a in _actions(contract) if a.kind == "deliver_title" and a.title
    }


def derive_payout_id(payment_id: str, leg_id: str) -> str:
    return payout_id_for(payment_id, leg_id)


@dataclass(frozen=True, slots=True)
class PaymentSnapshot:
    """A payment as one command left it (later commands of the batch do not show through), with
    its contract, for the reply."""

    payment: PaymentRecord
    contract: CompiledContract
    source: str


def snapshot(ws: WorkingSet, payment: PaymentRecord) -> PaymentSnapshot:
    contract = ws.contract(payment.contract_hash)
    assert contract is not None
    return PaymentSnapshot(
        copy_payment(payment), contract, ws.world.contracts[payment.contract_hash].source
    )


def payment_not_open(payment: PaymentRecord) -> SettlementError:
    return SettlementError(
        Reason.PAYMENT_NOT_OPEN,
        f"payment {payment.payment_id} is {payment.state.value}",
        metadata={"payment_id": payment.payment_id, "state": payment.state.value},
    )


_TERMINAL_KINDS: Final = {
    PaymentState.SETTLED: "settled",
    PaymentState.REFUNDED: "refunded",
    PaymentState.EXPIRED: "expired",
    PaymentState.CANCELLED: "cancelled",
}


def _change_kind(payment: PaymentRecord, legs: list[LegRecord], otherwise: str) -> str:
    """What a change did, as WatchPayment reports it: the terminal state it entered, else
    ``released`` when it paid something out, else ``otherwise``."""
    return _TERMINAL_KINDS.get(payment.state) or ("released" if legs else otherwise)


def _bump(payment: PaymentRecord, kind: str, now_us: int) -> None:
    payment.version += 1
    payment.updated_at_us = now_us
    payment.events.append((payment.version, kind))


def _record_documents(
    payment: PaymentRecord, documents: tuple[DocumentRecord, ...], entry: EntryRecord | None = None
) -> None:
    """Keep the signed documents of the change just made (after its _bump: they carry its
    version; the main document, idx 0, the entry it posted). Written with the batch."""
    if documents:
        payment.new_documents = (
            *payment.new_documents,
            *(
                replace(d, version=payment.version, entry=entry if d.idx == 0 else None)
                for d in documents
            ),
        )


def _open_payment(
    ws: WorkingSet, payment_id: str, consents: Callable[[PaymentRecord], bool] | None = None
) -> PaymentRecord:
    """The open payment ``payment_id``. PAYMENT_NOT_FOUND, exactly as for an id that does not
    exist, when there is none or when ``consents`` says the signed document does not come with
    its owner's say (checked before anything that would reveal the payment, its state
    included)."""
    payment = ws.payment(payment_id)
    if payment is None or (consents is not None and not consents(payment)):
        raise not_found(Reason.PAYMENT_NOT_FOUND, "payment", payment_id)
    if not payment.state.open:
        raise payment_not_open(payment)
    return ws.touch_payment(payment)


def _party_reads(world: World, payment_id: str) -> Reads:
    """Every wallet an escrow may pay: the contract's wallet parties, the financiers."""
    payment = world.payments.get(payment_id)
    if payment is None:
        return Reads()
    contract = world.compiled[payment.contract_hash]
    params = bound(contract, payment)
    wallets = set(wallet_params(contract, params).values())
    wallets.add(payment.payer_wallet_id)
    wallets.update(f.financier_wallet_id for f in payment.financing)
    wallets.update(a.financier_wallet_id for a in payment.assignments)
    return Reads(
        wallet_ids=wallets,
        balance_keys={(w, payment.currency) for w in wallets},
        title_ids=delivered_titles(contract, params),
    )


# -- contracts -----------------------------------------------------------------------------------
def contract_record(
    contract: CompiledContract, source: str, caller: str, now_us: int
) -> ContractRecord:
    return ContractRecord(
        contract.hash,
        contract.name,
        contract.language_version,
        contract.canonical,
        source,
        caller,
        now_us,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterContract(Command):
    """Store a checked contract under its hash; registering the same contract again is a no-op
    that returns the stored record."""

    contract: CompiledContract
    source: str
    contracts_per_day_max: int = INT64_MAX

    def reads(self) -> Reads:
        return Reads(
            contract_hashes={self.contract.hash},
            registrations={self.caller: {self.contract.hash}},
        )

    def apply(self, ws: WorkingSet) -> ContractRecord:
        existing = ws.world.contracts.get(self.contract.hash)
        if existing is not None:
            return existing
        check_quota(ws.contracts_registered_today(self.caller), self.contracts_per_day_max)
        record = contract_record(self.contract, self.source, self.caller, ws.now_us)
        ws.add_contract(record, self.contract)
        return record


# -- lock ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class LockPayment(Command):
    """The payer's signed lock, already verified by the API layer against the payer's key and the
    contract hash, parameter hash and amount it names."""

    AFTER_COMMIT_FAULT: ClassVar[str] = "after_lock_commit"
    payment_id: str
    contract: CompiledContract
    source: str  # registered with the payment when the contract is new
    params: BoundParams
    payer: str
    currency: str
    amount_minor: int
    deadline_at_us: int | None
    expires_at_us: int
    # (title id, holder wallet, pledge expiry) of each title the contract delivers, from the
    # holders' signed pledges to this payment (verified by the API layer).
    title_pledges: tuple[tuple[str, str, int], ...] = ()
    # A lock that brings a new contract registers it: counted like RegisterContract.
    contracts_per_day_max: int = INT64_MAX
    # The payer's signed lock and the pledges, as sent (evidence; docs/evidence.md).
    documents: tuple[DocumentRecord, ...] = ()

    def reads(self) -> Reads:
        wallets = {self.payer, *wallet_params(self.contract, self.params).values()}
        return Reads(
            contract_hashes={self.contract.hash},
            registrations={self.caller: {self.contract.hash}},
            payment_ids={self.payment_id},
            wallet_ids=wallets,
            balance_keys={(self.payer, self.currency)},
            title_ids={title_id for title_id, _holder, _expiry in self.title_pledges},
        )

    def _escrow_titles(self, ws: WorkingSet) -> None:
        """Pledge each delivered title to this payment: it moves only when the contract
        delivers it, and is freed when the payment ends without delivering it."""
        wanted = delivered_titles(self.contract, self.params)
        pledged = {title_id for title_id, _holder, _expiry in self.title_pledges}
        if pledged != wanted:
            raise SettlementError(
                Reason.TITLE_PLEDGE_MISSING,
                f"the contract delivers titles {sorted(wanted)}; the lock brings pledges of "
                f"{sorted(pledged)}",
                metadata={"field": "title_pledges", "titles": ",".join(sorted(wanted))},
            )
        for title_id, holder, expires_at_us in sorted(self.title_pledges):
            title = titles.active_title(ws, title_id)
            titles.check_holder(title, holder)
            check_not_expired(ws, expires_at_us)
            titles.check_free(title)
            titles.move(ws, title, "PLEDGED", holder, self.request_id, pledged_to=self.payment_id)

    def apply(self, ws: WorkingSet) -> PaymentSnapshot:
        if ws.payment(self.payment_id) is not None:  # a concurrent duplicate (or a collision)
            raise ConcurrentDuplicate(f"derived payment id {self.payment_id} already exists")
        for wallet_id in sorted({self.payer, *wallet_params(self.contract, self.params).values()}):
            existing_wallet(ws, wallet_id)
        check_not_expired(ws, self.expires_at_us)
        day = check_debit(ws, existing_wallet(ws, self.payer), self.currency, self.amount_minor)
        self._escrow_titles(ws)
        if self.contract.hash not in ws.world.contracts:
            check_quota(ws.contracts_registered_today(self.caller), self.contracts_per_day_max)
            ws.add_contract(
                contract_record(self.contract, self.source, self.caller, ws.now_us), self.contract
            )
        entry = ws.post(
            EntryKind.LOCK,
            self.request_id,
            self.caller,
            f"lock {self.payment_id}",
            [
                Leg(self.payer, Bucket.AVAILABLE, self.currency, -self.amount_minor),
                Leg(self.payer, Bucket.HELD, self.currency, self.amount_minor),
            ],
        )
        ws.record_spend(ws.balance(self.payer, self.currency), self.amount_minor, day)
        payment = PaymentRecord(
            payment_id=self.payment_id,
            platform=self.caller,
            contract_hash=self.contract.hash,
            params_json=params_json(self.params),
            payer_wallet_id=self.payer,
            currency=self.currency,
            escrow_minor=self.amount_minor,
            held_minor=self.amount_minor,
            released_minor=0,
            refunded_minor=0,
            state=PaymentState.LOCKED,
            terminal_reason="",
            deadline_at_us=self.deadline_at_us,
            contract_state=json.dumps(ContractState.initial(self.contract).to_json()),
            version=0,
            created_at_us=ws.now_us,
            updated_at_us=ws.now_us,
            is_new=True,
        )
        payment.new_parties = (self.payer, *wallet_params(self.contract, self.params).values())
        _bump(payment, "locked", ws.now_us)
        _record_documents(payment, self.documents, entry)
        ws.add_payment(payment)
        return snapshot(ws, payment)


# -- financing -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class FundEscrow(Command):
    """A financier's signed funding, co-signed by the payer (both verified by the API layer
    against the wallets' keys). Only the payment's own payer can invite a financier: a payment
    whose payer is not ``payer`` answers PAYMENT_NOT_FOUND, as a payment that does not exist."""

    payment_id: str
    financier: str
    payer: str
    currency: str
    amount_minor: int
    fee_minor: int
    due_at_us: int
    expires_at_us: int
    documents: tuple[DocumentRecord, ...] = ()

    def reads(self) -> Reads:
        return Reads(payment_ids={self.payment_id}, wallet_ids={self.financier})

    def reads_after(self, world: World) -> Reads:
        payment = world.payments.get(self.payment_id)
        if payment is None:
            return Reads()
        wallets = {self.financier, payment.payer_wallet_id}
        return Reads(wallet_ids=wallets, balance_keys={(w, self.currency) for w in wallets})

    def apply(self, ws: WorkingSet) -> tuple[PaymentSnapshot, FinancingRecord]:
        payment = _open_payment(
            ws, self.payment_id, lambda found: found.payer_wallet_id == self.payer
        )
        if self.currency != payment.currency:
            raise SettlementError(
                Reason.CURRENCY_MISMATCH,
                f"the escrow is in {payment.currency}, the funding in {self.currency}",
                metadata={"field": "currency"},
            )
        existing_wallet(ws, self.financier)
        check_not_expired(ws, self.expires_at_us)
        outstanding = sum(f.principal_minor - f.refunded_minor for f in payment.financing)
        if outstanding + self.amount_minor > payment.held_minor:
            raise SettlementError(
                Reason.FINANCING_EXCEEDS_ESCROW,
                f"{self.amount_minor} more would finance {outstanding + self.amount_minor} of an "
                f"escrow holding {payment.held_minor}",
                metadata={"payment_id": payment.payment_id},
            )
        entry = pay_available(
            ws,
            self,
            EntryKind.FUND,
            f"fund {payment.payment_id}",
            self.financier,
            payment.payer_wallet_id,
            self.currency,
            self.amount_minor,
        )
        financing = FinancingRecord(
            self.financier,
            self.amount_minor,
            self.fee_minor,
            self.due_at_us,
            0,
            self.request_id,
            self.caller,
        )
        payment.financing.append(financing)
        payment.new_parties = (*payment.new_parties, self.financier)
        _bump(payment, "funded", ws.now_us)
        _record_documents(payment, self.documents, entry)
        return snapshot(ws, payment), replace(financing)


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignProceeds(Command):
    """The payee's assignment and the financier's advance, both signatures verified by the API
    layer (against the payee's and the financier's keys)."""

    payment_id: str
    payee: str
    financier: str
    currency: str
    assigned_minor: int
    advance_minor: int
    expires_at_us: int
    documents: tuple[DocumentRecord, ...] = ()

    def reads(self) -> Reads:
        wallets = {self.payee, self.financier}
        return Reads(
            payment_ids={self.payment_id},
            wallet_ids=wallets,
            balance_keys={(w, self.currency) for w in wallets},
        )

    def _payees(self, ws: WorkingSet, payment: PaymentRecord) -> dict[str, str]:
        """The payment's wallet parameters (name -> wallet), the payer's excepted."""
        contract = ws.contract(payment.contract_hash)
        assert contract is not None
        parties = wallet_params(contract, bound(contract, payment))
        return {n: w for n, w in parties.items() if w != payment.payer_wallet_id}

    def apply(self, ws: WorkingSet) -> tuple[PaymentSnapshot, AssignmentRecord]:
        # The payee's signature is the consent: a wallet that is not a payee of the payment
        # learns nothing of it (PAYMENT_NOT_FOUND, as for a payment that does not exist).
        payment = _open_payment(
            ws, self.payment_id, lambda found: self.payee in self._payees(ws, found).values()
        )
        contract = ws.contract(payment.contract_hash)
        assert contract is not None
        parties = self._payees(ws, payment)
        if self.currency != payment.currency:
            raise SettlementError(
                Reason.CURRENCY_MISMATCH,
                f"the escrow is in {payment.currency}, the assignment in {self.currency}",
                metadata={"field": "currency"},
            )
        # Releases in kind go to the financier first (_pay); a payout through the bridge goes
        # to its settlement, so proceeds paid only that way could never be collected.
        payee_params = {name for name, wallet in parties.items() if wallet == self.payee}
        if not any(
            a.kind in ("pay", "penalty") and a.party in payee_params and not a.target_currency
            for a in _actions(contract)
        ):
            raise SettlementError(
                Reason.CURRENCY_MISMATCH,
                f"payment {payment.payment_id} pays wallet {self.payee} only in another currency "
                f"through the bridge; proceeds can be assigned where they are paid in "
                f"{payment.currency}",
                metadata={"field": "payee", "payment_id": payment.payment_id},
            )
        if self.advance_minor > self.assigned_minor:
            raise SettlementError(
                Reason.ADVANCE_EXCEEDS_ASSIGNMENT,
                "the advance is more than the proceeds assigned",
                metadata={"field": "advance_minor"},
            )
        existing_wallet(ws, self.financier)
        check_not_expired(ws, self.expires_at_us)
        already = sum(
            a.assigned_minor - a.collected_minor
            for a in payment.assignments
            if a.payee_wallet_id == self.payee
        )
        if already + self.assigned_minor > payment.held_minor:
            raise SettlementError(
                Reason.ASSIGNMENT_EXCEEDS_ESCROW,
                f"{already + self.assigned_minor} assigned of an escrow holding "
                f"{payment.held_minor}",
                metadata={"payment_id": payment.payment_id},
            )
        entry = pay_available(
            ws,
            self,
            EntryKind.ADVANCE,
            f"advance on {payment.payment_id}",
            self.financier,
            self.payee,
            self.currency,
            self.advance_minor,
        )
        assignment = AssignmentRecord(
            self.payee,
            self.financier,
            self.assigned_minor,
            self.advance_minor,
            0,
            self.request_id,
            self.caller,
        )
        payment.assignments.append(assignment)
        payment.new_parties = (*payment.new_parties, self.payee, self.financier)
        _bump(payment, "assigned", ws.now_us)
        _record_documents(payment, self.documents, entry)
        return snapshot(ws, payment), replace(assignment)


# -- executing what the contract makes due -------------------------------------------------------
def _pay(
    ws: WorkingSet,
    command: Command,
    payment: PaymentRecord,
    leg_id: str,
    clause: str,
    kind: str,
    party: str,
    wallet_id: str,
    amount: int,
    reason: str,
) -> list[LegRecord]:
    """A pay or penalty leg: to the assignee financier first, up to what is assigned, then to
    the wallet itself; one entry with the payer's HELD posting and one per recipient."""
    parts: list[tuple[str, int]] = []
    left = amount
    for assignment in payment.assignments:
        if assignment.payee_wallet_id != wallet_id or left == 0:
            continue
        take = min(left, assignment.assigned_minor - assignment.collected_minor)
        if take > 0:
            assignment.collected_minor += take
            parts.append((assignment.financier_wallet_id, take))
            left -= take
    if left:
        parts.append((wallet_id, left))
    entry = ws.post(
        EntryKind.RELEASE,
        command.request_id,
        command.caller,
        f"{payment.payment_id} {leg_id}",
        [
            Leg(payment.payer_wallet_id, Bucket.HELD, payment.currency, -amount),
            *(Leg(w, Bucket.AVAILABLE, payment.currency, part) for w, part in parts),
        ],
    )
    payment.held_minor -= amount
    payment.released_minor += amount
    return [
        LegRecord(
            f"{leg_id}" if len(parts) == 1 else f"{leg_id}#{i}",
            clause,
            kind,
            party,
            wallet_id,
            recipient,
            part,
            payment.currency,
            reason,
            entry=entry,
        )
        for i, (recipient, part) in enumerate(parts)
    ]


def _refund(
    ws: WorkingSet,
    command: Command,
    payment: PaymentRecord,
    leg_id: str,
    clause: str,
    amount: int,
    reason: str,
) -> list[LegRecord]:
    """Back to the funders: financiers first (their unrefunded principal, in funding order),
    then the payer."""
    parts: list[tuple[str, int]] = []
    left = amount
    for financing in payment.financing:
        take = min(left, financing.principal_minor - financing.refunded_minor)
        if take > 0:
            financing.refunded_minor += take
            parts.append((financing.financier_wallet_id, take))
            left -= take
    if left:
        parts.append((payment.payer_wallet_id, left))
    entry = ws.post(
        EntryKind.REFUND,
        command.request_id,
        command.caller,
        f"{payment.payment_id} {leg_id}",
        [
            Leg(payment.payer_wallet_id, Bucket.HELD, payment.currency, -amount),
            *(Leg(w, Bucket.AVAILABLE, payment.currency, part) for w, part in parts),
        ],
    )
    payment.held_minor -= amount
    payment.refunded_minor += amount
    return [
        LegRecord(
            leg_id if len(parts) == 1 else f"{leg_id}#{i}",
            clause,
            "refund",
            REFUND_PARTY,
            payment.payer_wallet_id,
            recipient,
            part,
            payment.currency,
            reason,
            entry=entry,
        )
        for i, (recipient, part) in enumerate(parts)
    ]


def _payout(ws: WorkingSet, command: Command, payment: PaymentRecord, leg: DueLeg) -> LegRecord:
    """A leg paid out in another currency (``pay ... in HKD``): it leaves the escrow into a
    PENDING settlement that keeps the money held (in the payer's HELD bucket, as before) until the
    coordinator settles it as a PvP through the bridge (settlement/ledger/settlements.py)."""
    assert leg.target_currency is not None
    settlement_id = derive_payout_id(payment.payment_id, leg.leg_id)
    ws.add(
        SettlementRecord(
            settlement_id=settlement_id,
            kind=SettlementKind.PVP,
            requested_by=payment.platform,
            request_id=command.request_id,
            origin_payment_id=payment.payment_id,
            origin_leg_id=leg.leg_id,
            payer_wallet_id=payment.payer_wallet_id,
            pay_currency=payment.currency,
            pay_minor=leg.amount_minor,
            payee_wallet_id=leg.wallet,
            receive_currency=leg.target_currency,
            receive_minor=0,
            title_id="",
            title_units=0,
            delivered_title_id="",
            quote_id="",
            spread_minor=0,
            rate_num=1,
            rate_den=1,
            provider_id="",
            quote_expires_at_us=0,
            transfer_id="",
            bridge_state="",
            bridge_expires_at_us=0,
            decide_by_us=0,
            decision=Decision.NONE,
            decided_at_us=0,
            abort_reason="",
            state=SettlementState.PENDING,
            attempt=1,
            version=1,
            created_at_us=ws.now_us,
            updated_at_us=ws.now_us,
            is_new=True,
        )
    )
    payment.held_minor -= leg.amount_minor
    payment.released_minor += leg.amount_minor
    return LegRecord(
        leg.leg_id,
        leg.clause,
        leg.kind,
        leg.party,
        leg.wallet,
        settlement_id,
        leg.amount_minor,
        payment.currency,
        f"{leg.reason}; paid in {leg.target_currency} by settlement {settlement_id}",
    )


def _deliver(ws: WorkingSet, command: Command, payment: PaymentRecord, leg: DueLeg) -> LegRecord:
    """Hand a title escrowed to the payment (at lock) to the party."""
    assert leg.title is not None
    title = ws.title(leg.title)
    if title is None or title.pledged_to != payment.payment_id:
        raise AssertionError(f"{payment.payment_id}: title {leg.title} is not escrowed to it")
    titles.move(ws, title, "DELIVERED", leg.wallet, command.request_id, pledged_to="")
    return LegRecord(
        leg.leg_id,
        leg.clause,
        leg.kind,
        leg.party,
        leg.wallet,
        leg.wallet,
        0,
        payment.currency,
        f"{leg.reason}; title {leg.title}",
    )


def free_titles(ws: WorkingSet, command: Command, payment: PaymentRecord) -> None:
    """A payment that ends frees the titles still escrowed to it (never delivered)."""
    for title_id in sorted(ws.world.titles):
        title = ws.world.titles[title_id]
        if title.pledged_to == payment.payment_id:
            titles.move(
                ws, title, "RELEASED", title.holder_wallet_id, command.request_id, pledged_to=""
            )


def execute(
    ws: WorkingSet, command: Command, payment: PaymentRecord, evaluation: Evaluation
) -> list[LegRecord]:
    """Apply the legs an evaluation made due, store the new contract state, and make the one
    terminal transition if the contract is done. Returns the legs executed."""
    executed: list[LegRecord] = []
    refunded = False
    for leg in evaluation.legs:
        if leg.kind == "deliver_title":
            executed.append(_deliver(ws, command, payment, leg))
            continue
        if leg.amount_minor == 0:
            continue
        if leg.target_currency:
            executed.append(_payout(ws, command, payment, leg))
            continue
        if leg.kind == "refund":
            refunded = True
            executed += _refund(
                ws, command, payment, leg.leg_id, leg.clause, leg.amount_minor, leg.reason
            )
        else:
            executed += _pay(
                ws,
                command,
                payment,
                leg.leg_id,
                leg.clause,
                leg.kind,
                leg.party,
                leg.wallet,
                leg.amount_minor,
                leg.reason,
            )
    state = evaluation.state
    if state.terminal and payment.held_minor > 0:
        # Done, with money left over (e.g. every clause fired but rounding left some): it goes
        # back to the funders, financiers first.
        refunded = True
        executed += _refund(
            ws,
            command,
            payment,
            "close/remainder",
            "close",
            payment.held_minor,
            f"contract done ({state.terminal_reason})",
        )
    payment.contract_state = json.dumps(state.to_json())
    payment.legs.extend(executed)
    if state.terminal:
        free_titles(ws, command, payment)
        payment.terminal_reason = state.terminal_reason or ""
        if state.deadline_fired:
            payment.state = PaymentState.EXPIRED
        elif refunded or payment.refunded_minor:
            payment.state = PaymentState.REFUNDED
        else:
            payment.state = PaymentState.SETTLED
    elif executed:
        payment.state = PaymentState.PARTIALLY_RELEASED
    return executed


# Between an event id and its attester in the id the evaluator sees: below every character of an
# id ([A-Za-z0-9._:@-]), so qualified ids sort as the raw ids do, and in none of them.
QUALIFIER: Final = "#"


def evaluator_event(event: Event) -> Event:
    """The event as the evaluator sees it: its id qualified by its attester,
    ``<event id>#<attester>``. Event ids are unique per (payment, attester, id), so two
    attesters of one payment using the same id never collide in the evaluator (which keeps the
    first of two events with one id). The evaluator orders events of one instant by id: with the
    raw id first, that order is the raw ids' (whatever the attesters are called). The only place
    the qualified id is made; stored records keep the raw id."""
    return replace(event, event_id=f"{event.event_id}{QUALIFIER}{event.oracle}")


def run_contract(
    ws: WorkingSet, payment: PaymentRecord, contract: CompiledContract, extra: Event | None = None
) -> Evaluation:
    """Evaluate the payment's contract over its stored attestations and ``extra`` (raw events;
    :func:`evaluator_event` qualifies their ids)."""
    stored = [
        Event(a.event_id, a.event_type, a.oracle, json.loads(a.attributes_json), a.observed_at_us)
        for a in payment.attestations
    ]
    events = [evaluator_event(e) for e in (*stored, *([extra] if extra is not None else []))]
    evaluation = evaluate(
        contract,
        bound(contract, payment),
        Escrow(payment.currency, payment.escrow_minor, payment.held_minor),
        events,
        ws.now_us,
        ContractState.from_json(json.loads(payment.contract_state)),
    )
    if not evaluation.ok:
        raise AssertionError(
            f"{payment.payment_id}: the evaluator refused its inputs: {evaluation.rejected}"
        )
    return evaluation


# -- attestations, deadlines, cancellation -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AttestationOutcome:
    payment: PaymentSnapshot
    attestation: AttestationRecord
    legs: list[LegRecord]


def _report_json(report: EventReport | None) -> str:
    if report is None:
        return json.dumps({"status": "processed", "matched": [], "fired": [], "why_not": {}})
    return json.dumps(
        {
            "status": report.status,
            "matched": list(report.matched),
            "fired": list(report.fired),
            "why_not": dict(report.why_not),
        },
        sort_keys=True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitAttestation(Command):
    """An attestation whose statement and signatures the API layer verified against the oracle
    registry at ``oracle_set_version``; here, under the batch's locks, the version must still be
    current (a rotation or revocation since then refuses it) and the event never seen: its key is
    (payment, attester, event id), so no one can squat another payment's or attester's id."""

    payment_id: str
    event: Event
    signer_ids: tuple[str, ...]
    oracle_set_version: int
    statement: bytes
    documents: tuple[DocumentRecord, ...] = ()

    def reads(self) -> Reads:
        return Reads(payment_ids={self.payment_id}, event_ids={self._key}, registry="read")

    @property
    def _key(self) -> EventKey:
        return (self.payment_id, self.event.oracle, self.event.event_id)

    def reads_after(self, world: World) -> Reads:
        return _party_reads(world, self.payment_id)

    def apply(self, ws: WorkingSet) -> AttestationOutcome:
        if ws.world.registry_version != self.oracle_set_version:
            raise SettlementError(
                Reason.ORACLE_SET_CHANGED,
                f"the oracle set is at version {ws.world.registry_version}, the attestation "
                f"was made for {self.oracle_set_version}",
                metadata={"oracle_set_version": str(ws.world.registry_version)},
            )
        if self._key in ws.world.seen_events:
            raise SettlementError(
                Reason.EVENT_ALREADY_SEEN,
                f"event {self.event.event_id!r} was attested before",
                metadata={"event_id": self.event.event_id},
            )
        payment = _open_payment(ws, self.payment_id)
        contract = ws.contract(payment.contract_hash)
        assert contract is not None
        qualified = evaluator_event(self.event).event_id
        if len(qualified) > EVENT_ID_CHARS_MAX:
            raise SettlementError(
                Reason.ATTESTATION_MALFORMED,
                f"the attester and event id together are longer than {EVENT_ID_CHARS_MAX - 1} "
                "characters",
                metadata={"field": "event_id"},
            )
        ws.see_event(self._key)
        evaluation = run_contract(ws, payment, contract, self.event)
        report = next((r for r in evaluation.reports if r.event_id == qualified), None)
        record = AttestationRecord(
            event_id=self.event.event_id,
            payment_id=payment.payment_id,
            seq=len(payment.attestations) + 1,
            oracle=self.event.oracle,
            event_type=self.event.event_type,
            observed_at_us=self.event.observed_at_us,
            accepted_at_us=ws.now_us,
            attributes_json=json.dumps(dict(self.event.attributes), sort_keys=True),
            signer_ids=self.signer_ids,
            report_json=_report_json(report),
            statement=self.statement,
        )
        payment.attestations.append(record)
        legs = execute(ws, self, payment, evaluation)
        _bump(payment, _change_kind(payment, legs, "attested"), ws.now_us)
        _record_documents(payment, self.documents)
        return AttestationOutcome(snapshot(ws, payment), record, legs)


@dataclass(frozen=True, slots=True, kw_only=True)
class FireDeadline(Command):
    """Run a payment's contract at its deadline (the deadline sweep submits these; idempotent by
    its request id, and a no-op for a payment that is no longer open or not yet due)."""

    payment_id: str

    def reads(self) -> Reads:
        return Reads(payment_ids={self.payment_id})

    def reads_after(self, world: World) -> Reads:
        return _party_reads(world, self.payment_id)

    def apply(self, ws: WorkingSet) -> PaymentSnapshot | None:
        payment = ws.payment(self.payment_id)
        if payment is None:
            raise not_found(Reason.PAYMENT_NOT_FOUND, "payment", self.payment_id)
        due = payment.deadline_at_us
        if not payment.state.open or due is None or ws.now_us < due:
            return None
        ws.touch_payment(payment)
        contract = ws.contract(payment.contract_hash)
        assert contract is not None
        legs = execute(ws, self, payment, run_contract(ws, payment, contract))
        _bump(payment, _change_kind(payment, legs, "deadline"), ws.now_us)
        return snapshot(ws, payment)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelPayment(Command):
    """Cancellation: the API layer verified signatures over the cancel instruction; every wallet
    party of the contract (the payer and each payee) must be among ``signed_by``."""

    payment_id: str
    signed_by: frozenset[str]
    expires_at_us: int
    documents: tuple[DocumentRecord, ...] = ()

    def reads(self) -> Reads:
        return Reads(payment_ids={self.payment_id})

    def reads_after(self, world: World) -> Reads:
        return _party_reads(world, self.payment_id)

    def apply(self, ws: WorkingSet) -> PaymentSnapshot:
        payment = _open_payment(ws, self.payment_id)
        contract = ws.contract(payment.contract_hash)
        assert contract is not None
        required = set(wallet_params(contract, bound(contract, payment)).values())
        required.add(payment.payer_wallet_id)
        missing = sorted(required - self.signed_by)
        if missing:
            raise SettlementError(
                Reason.CANCEL_NOT_AUTHORIZED,
                f"cancelling needs the signatures of every party; missing {', '.join(missing)}",
                metadata={"missing": ",".join(missing)},
            )
        check_not_expired(ws, self.expires_at_us)
        legs = (
            _refund(
                ws,
                self,
                payment,
                "cancel/refund",
                "cancel",
                payment.held_minor,
                "cancelled by all parties",
            )
            if payment.held_minor
            else []
        )
        payment.legs.extend(legs)
        free_titles(ws, self, payment)
        payment.state = PaymentState.CANCELLED
        payment.terminal_reason = "cancelled"
        _bump(payment, "cancelled", ws.now_us)
        _record_documents(payment, self.documents)
        return snapshot(ws, payment)
