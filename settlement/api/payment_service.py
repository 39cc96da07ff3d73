"""ConditionalPaymentService: lock, finance, assign, read, watch and cancel payments.

Every signature is verified here, over the exact transmitted bytes, before a command is made
(wallet keys never change); the commands re-check everything that depends on state under the
batch's locks. Payments are scoped to their owners: a platform sees only the payments it locked,
a financier only those it funds or holds an assignment on; another's payment is NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from condpay.v1 import operation_pb2, payment_pb2, payment_pb2_grpc

from contracts_dsl import bind_params, deadline_us, escrow_minor
from settlement import limits
from settlement.api import documents, requests, scopes
from settlement.api import payment_views as views
from settlement.api.contract_service import quota_refusal, resolve_contract, stored_contract
from settlement.api.identity import Caller, current_caller
from settlement.api.replies import by_view
from settlement.api.signatures import check_wallet_signature
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import commands, payments
from settlement.ledger.records import (
    AssignmentRecord,
    DocumentRecord,
    FinancingRecord,
    PaymentRecord,
)
from settlement.runtime import Runtime
from wallets import (
    AssignmentInstruction,
    CancelInstruction,
    FundInstruction,
    LockInstruction,
    PaymentPledge,
)

_SERVICE = "/condpay.v1.ConditionalPaymentService/"


def view(snapshot: payments.PaymentSnapshot, full: bool) -> payment_pb2.Payment:
    return views.payment(snapshot.payment, snapshot.contract, snapshot.source, full=full)


def _lock_reply(
    result: object, op: operation_pb2.OperationInfo, full: bool
) -> payment_pb2.LockPaymentResponse:
    assert isinstance(result, payments.PaymentSnapshot)
    return payment_pb2.LockPaymentResponse(operation=op, payment=view(result, full))


def _fund_reply(
    result: object, op: operation_pb2.OperationInfo, full: bool
) -> payment_pb2.FundEscrowResponse:
    assert isinstance(result, tuple)
    snapshot, financing = result
    assert isinstance(snapshot, payments.PaymentSnapshot)
    assert isinstance(financing, FinancingRecord)
    return payment_pb2.FundEscrowResponse(
        operation=op,
        financing=views.financing(financing, snapshot.payment.currency),
        payment=view(snapshot, full),
    )


def _assign_reply(
    result: object, op: operation_pb2.OperationInfo, full: bool
) -> payment_pb2.AssignProceedsResponse:
    assert isinstance(result, tuple)
    snapshot, assignment = result
    assert isinstance(snapshot, payments.PaymentSnapshot)
    assert isinstance(assignment, AssignmentRecord)
    return payment_pb2.AssignProceedsResponse(
        operation=op,
        assignment=views.assignment(assignment, snapshot.payment.currency),
        payment=view(snapshot, full),
    )


def _cancel_reply(
    result: object, op: operation_pb2.OperationInfo, full: bool
) -> payment_pb2.CancelPaymentResponse:
    assert isinstance(result, payments.PaymentSnapshot)
    return payment_pb2.CancelPaymentResponse(operation=op, payment=view(result, full))


LOCK = by_view(payment_pb2.LockPaymentResponse, _lock_reply)
FUND = by_view(payment_pb2.FundEscrowResponse, _fund_reply)
ASSIGN = by_view(payment_pb2.AssignProceedsResponse, _assign_reply)
CANCEL = by_view(payment_pb2.CancelPaymentResponse, _cancel_reply)


class PaymentService(payment_pb2_grpc.ConditionalPaymentServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def _check_signature(self, wallet_id: str, signature: bytes, payload: bytes) -> bytes:
        """The key of ``wallet_id`` once it verified ``signature`` over ``payload``."""
        return await check_wallet_signature(self._rt, wallet_id, signature, payload)

    # -- lock ----------------------------------------------------------------------------------
    async def LockPayment(
        self, request: payment_pb2.LockPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.LockPaymentResponse:
        base = requests.command_fields(_SERVICE + "LockPayment", current_caller(), request)
        full = False
        try:
            full = views.full_view(request.view, mutating=True)
            command: commands.Command = await self._lock(request, base)
        except SettlementError as error:
            if quota_refusal(error):
                raise
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, LOCK[full])

    async def _lock(
        self, request: payment_pb2.LockPaymentRequest, base: requests.CommandFields
    ) -> payments.LockPayment:
        contract, source = await resolve_contract(
            self._rt, request.contract_source, request.contract_hash
        )
        payouts = payments.payout_currencies(contract)
        if payouts and self._rt.bridge is None:
            raise SettlementError(
                Reason.CONTRACT_NOT_SUPPORTED,
                f"the contract pays out in {', '.join(payouts)}; this server has no bridge for "
                "cross-currency settlement (CONDPAY_BRIDGE)",
                metadata={"currencies": ",".join(payouts)},
            )
        binding = bind_params(contract, views.param_inputs(contract, request.params))
        if binding.params is None:
            raise views.params_error(binding.errors)
        params = binding.params
        signed = request.payer_instruction
        lock = requests.signed(
            self._rt, base, LockInstruction, signed.payload, "payer_instruction.payload", "lock"
        )
        if lock.contract_hash != contract.hash:
            raise requests.mismatch(
                "payer_instruction.contract_hash", "the payer signed another contract"
            )
        if lock.params_hash != params.hash:
            raise requests.mismatch(
                "payer_instruction.params_hash", "the payer signed other parameters"
            )
        amount = escrow_minor(contract, params)
        currency = contract.escrow.currency
        if (lock.currency, lock.amount_minor) != (currency, amount):
            raise requests.mismatch(
                "payer_instruction.amount_minor",
                f"the contract escrows {amount} {currency}; the payer signed "
                f"{lock.amount_minor} {lock.currency}",
            )
        payer = params.wallet(contract.escrow.funder)
        if lock.payer != payer:
            raise requests.mismatch(
                "payer_instruction.payer", f"the escrow's funder is wallet {payer}"
            )
        payer_key = await self._check_signature(payer, signed.signature, signed.payload)
        payment_id = payments.derive_payment_id(base["caller"], base["request_id"])
        pledges, pledge_documents = await self._title_pledges(
            request, base, payment_id, contract.hash, params.hash
        )
        return payments.LockPayment(
            **base,
            payment_id=payment_id,
            title_pledges=pledges,
            documents=(
                documents.signed("LOCK", signed.payload, [(payer, payer_key, signed.signature)]),
                *pledge_documents,
            ),
            contract=contract,
            source=source,
            params=params,
            payer=payer,
            currency=currency,
            amount_minor=amount,
            deadline_at_us=deadline_us(contract, params),
            expires_at_us=lock.expires_at_us,
            contracts_per_day_max=self._rt.settings.contracts_per_day_max,
        )

    async def _title_pledges(
        self,
        request: payment_pb2.LockPaymentRequest,
        base: requests.CommandFields,
        payment_id: str,
        contract_hash: str,
        params_hash: str,
    ) -> tuple[tuple[tuple[str, str, int], ...], tuple[DocumentRecord, ...]]:
        """Each holder's signed pledge of a delivered title to this payment, for this contract
        and these terms (a pledge cannot serve another deal), submitted by this caller, verified;
        and the signed pledges as documents."""
        pledges = []
        kept: list[DocumentRecord] = []
        for i, signed in enumerate(request.title_pledges):
            where = f"title_pledges[{i}]"
            pledge = requests.signed(
                self._rt,
                base,
                PaymentPledge,
                signed.payload,
                f"{where}.payload",
                "pledge",
                own_request_id=False,
            )
            if pledge.payment_id != payment_id:
                raise requests.mismatch(
                    f"{where}.payment_id", f"the pledge must name this payment ({payment_id})"
                )
            if pledge.contract_hash != contract_hash:
                raise requests.mismatch(
                    f"{where}.contract_hash", "the holder pledged the title to another contract"
                )
            if pledge.params_hash != params_hash:
                raise requests.mismatch(
                    f"{where}.params_hash", "the holder pledged the title on other parameters"
                )
            key = await self._check_signature(pledge.holder, signed.signature, signed.payload)
            pledges.append((pledge.title_id, pledge.holder, pledge.expires_at_us))
            kept.append(
                documents.signed(
                    "PLEDGE", signed.payload, [(pledge.holder, key, signed.signature)], idx=i + 1
                )
            )
        return tuple(pledges), tuple(kept)

    # -- financing -----------------------------------------------------------------------------
    async def FundEscrow(
        self, request: payment_pb2.FundEscrowRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.FundEscrowResponse:
        base = requests.command_fields(_SERVICE + "FundEscrow", current_caller(), request)
        full = False
        try:
            full = views.full_view(request.view, mutating=True)
            signed = request.financier_instruction
            fund = requests.signed(
                self._rt,
                base,
                FundInstruction,
                signed.payload,
                "financier_instruction.payload",
                "funding",
            )
            requests.currency(fund.currency, "financier_instruction.currency")
            requests.positive_amount(fund.amount_minor, "financier_instruction.amount_minor")
            if fund.fee_minor > fund.amount_minor:
                raise requests.invalid(
                    Reason.INVALID_AMOUNT,
                    "fee_minor",
                    "the fee may not be more than the amount financed",
                )
            financier_key = await self._check_signature(
                fund.financier, signed.signature, signed.payload
            )
            # The payer's consent: its signature over the same bytes (the terms, this payment).
            if not request.payer_signature:
                raise requests.invalid(
                    Reason.MISSING_FIELD, "payer_signature", "the payer's signature is required"
                )
            payer_key = await self._check_signature(
                fund.payer, request.payer_signature, signed.payload
            )
            command: commands.Command = payments.FundEscrow(
                **base,
                payment_id=fund.payment_id,
                financier=fund.financier,
                payer=fund.payer,
                currency=fund.currency,
                amount_minor=fund.amount_minor,
                fee_minor=fund.fee_minor,
                due_at_us=fund.due_at_us,
                expires_at_us=fund.expires_at_us,
                documents=(
                    documents.signed(
                        "FUND",
                        signed.payload,
                        [
                            (fund.financier, financier_key, signed.signature),
                            (fund.payer, payer_key, request.payer_signature),
                        ],
                    ),
                ),
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, FUND[full])

    async def AssignProceeds(
        self, request: payment_pb2.AssignProceedsRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.AssignProceedsResponse:
        base = requests.command_fields(_SERVICE + "AssignProceeds", current_caller(), request)
        full = False
        try:
            full = views.full_view(request.view, mutating=True)
            assign = requests.signed(
                self._rt, base, AssignmentInstruction, request.payload, "payload", "assignment"
            )
            requests.currency(assign.currency, "payload.currency")
            requests.positive_amount(assign.assigned_minor, "payload.assigned_minor")
            requests.positive_amount(assign.advance_minor, "payload.advance_minor")
            payee_key = await self._check_signature(
                assign.payee, request.payee_signature, request.payload
            )
            financier_key = await self._check_signature(
                assign.financier, request.financier_signature, request.payload
            )
            command: commands.Command = payments.AssignProceeds(
                **base,
                payment_id=assign.payment_id,
                payee=assign.payee,
                financier=assign.financier,
                currency=assign.currency,
                assigned_minor=assign.assigned_minor,
                advance_minor=assign.advance_minor,
                expires_at_us=assign.expires_at_us,
                documents=(
                    documents.signed(
                        "ASSIGN",
                        request.payload,
                        [
                            (assign.payee, payee_key, request.payee_signature),
                            (assign.financier, financier_key, request.financier_signature),
                        ],
                    ),
                ),
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, ASSIGN[full])

    # -- cancellation --------------------------------------------------------------------------
    async def CancelPayment(
        self, request: payment_pb2.CancelPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.CancelPaymentResponse:
        caller = current_caller()
        base = requests.command_fields(_SERVICE + "CancelPayment", caller, request)
        full = False
        try:
            full = views.full_view(request.view, mutating=True)
            cancel = requests.signed(
                self._rt, base, CancelInstruction, request.payload, "payload", "cancellation"
            )
            await self.visible_payment(caller, cancel.payment_id)
            signed_by = set()
            signers = []
            for party in request.signatures:
                key = await self._check_signature(party.wallet_id, party.signature, request.payload)
                signed_by.add(party.wallet_id)
                signers.append((party.wallet_id, key, party.signature))
            command: commands.Command = payments.CancelPayment(
                **base,
                payment_id=cancel.payment_id,
                signed_by=frozenset(signed_by),
                expires_at_us=cancel.expires_at_us,
                documents=(documents.signed("CANCEL", request.payload, signers),),
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, CANCEL[full])

    # -- reads ---------------------------------------------------------------------------------
    async def visible_payment(
        self, caller: Caller, payment_id: str, *, attestations: bool = True
    ) -> PaymentRecord:
        """The payment if ``caller`` may see it; otherwise NOT_FOUND, as if it did not exist."""
        requests.identifier(payment_id, "payment_id")
        found = await self._rt.reader.payments(
            payment_ids=[payment_id],
            limit=1,
            visible=scopes.payments(caller),
            attestations=attestations,
        )
        if not found:  # or not the caller's to see: the same answer
            raise not_found(Reason.PAYMENT_NOT_FOUND, "payment", payment_id)
        return found[0]

    async def _presentable(self, payment: PaymentRecord, full: bool) -> payment_pb2.Payment:
        contract, source = await stored_contract(self._rt, payment.contract_hash)
        return views.payment(payment, contract, source, full=full)

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.GetPaymentResponse:
        full = views.full_view(request.view, mutating=False)
        payment = await self.visible_payment(
            current_caller(), request.payment_id, attestations=full
        )
        return payment_pb2.GetPaymentResponse(payment=await self._presentable(payment, full))

    async def ListPayments(
        self, request: payment_pb2.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.ListPaymentsResponse:
        caller = current_caller()
        full = views.full_view(request.view, mutating=False)
        size = scopes.page_size(request.page_size)
        state = views.STATES_BY_PROTO.get(request.state)
        method = _SERVICE + "ListPayments"
        filters = {
            "state": state.value if state else "",
            "payer_wallet_id": request.payer_wallet_id,
            "contract_hash": request.contract_hash,
        }
        after = self._rt.page_tokens.open(caller, method, filters, request.page_token)
        found = await self._rt.reader.payments(
            state=state.value if state else None,
            payer_wallet_id=request.payer_wallet_id or None,
            contract_hash=request.contract_hash or None,
            after_id=after,
            limit=size + 1,
            visible=scopes.payments(caller),
            attestations=full,
        )
        more = len(found) > size
        found = found[:size]
        return payment_pb2.ListPaymentsResponse(
            payments=[await self._presentable(p, full) for p in found],
            next_page_token=(
                self._rt.page_tokens.seal(caller, method, filters, found[-1].payment_id)
                if more
                else ""
            ),
        )

    async def WatchPayment(
        self, request: payment_pb2.WatchPaymentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[payment_pb2.WatchPaymentResponse]:
        caller = current_caller()
        full = views.full_view(request.view, mutating=False)
        payment = await self.visible_payment(caller, request.payment_id)
        after = request.after_version
        if after < 0:
            raise requests.invalid(Reason.INVALID_PAGE_TOKEN, "after_version", "must be >= 0")
        while True:
            changed = self._rt.notifier.changed(payment.payment_id)
            events = await self._rt.reader.payment_events(payment.payment_id, after)
            if events:
                (payment,) = await self._rt.reader.payments(payment_ids=[payment.payment_id])
                current = await self._presentable(payment, full)
                for version, kind in events:
                    yield payment_pb2.WatchPaymentResponse(
                        version=version, kind=kind, payment=current
                    )
                after = events[-1][0]
            if not payment.state.open and after >= payment.version:
                return
            # Woken by a commit in this process, or on a timer for other replicas' commits.
            # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation
            # that ends the stream when its client goes away, if the event is set meanwhile.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limits.WATCH_POLL_SECONDS):
                    await changed.wait()
