"""InventoryFinanceService: loans against pledged warehouse receipts (docs/financing.md).

Wallet signatures are verified here (wallet keys never change); everything that depends on the
loan's state, the receipts and the oracle registry is checked by the command, under the loan's
row lock (settlement/ledger/loans.py). The sale of a defaulted loan's receipt is a delivery
versus payment the settlement service carries out, its proceeds split by the loan.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator

import grpc
from condpay.v1 import finance_pb2, finance_pb2_grpc, operation_pb2

from settlement import limits
from settlement.api import finance_views as views
from settlement.api import requests, scopes
from settlement.api.identity import current_caller
from settlement.api.replies import Reply
from settlement.api.settlement_service import SettlementService
from settlement.api.signatures import check_wallet_signature
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import commands, loans, settlements
from settlement.ledger.attestations import Submission
from settlement.ledger.loan_math import BPS, YEAR_US, accrue
from settlement.ledger.records import LoanRecord, LoanState, SettlementKind, SettlementRecord
from settlement.runtime import Runtime
from wallets import INT64_MAX
from wallets.errors import MalformedInstruction
from wallets.loan_documents import (
    COLLATERAL_KINDS,
    CONDITIONS,
    DISPOSALS,
    CollateralStatement,
    LoanDisposal,
    LoanPledge,
    LoanRepayment,
    LoanTerms,
)

_SERVICE = "/condpay.v1.InventoryFinanceService/"
# Bounds that keep every product of the loan's arithmetic far inside what it is checked against.
RATE_BPS_MAX = 100_000  # 1,000% a year
CURE_PERIOD_S_MAX = 90 * 86_400
MARGIN_CALL_BPS_MAX = 2 * BPS
MATURITY_YEARS_MAX = 10
# Interest is reckoned as if the loan ran this long past maturity (the deadline sweep defaults it
# long before), so that what it can ever owe fits the API's int64 amounts.
OVERRUN_US = YEAR_US


def _view(loan: object) -> finance_pb2.Loan:
    """A mutating call's reply: the loan as that call left it (its interest accrued then)."""
    assert isinstance(loan, LoanRecord)
    return views.loan(loan, loan.updated_at_us)


def _open_reply(result: object, op: operation_pb2.OperationInfo) -> finance_pb2.OpenLoanResponse:
    return finance_pb2.OpenLoanResponse(operation=op, loan=_view(result))


def _repay_reply(result: object, op: operation_pb2.OperationInfo) -> finance_pb2.RepayResponse:
    assert isinstance(result, loans.Repaid)
    return finance_pb2.RepayResponse(
        operation=op, loan=_view(result.loan), released_title_id=result.released_title_id
    )


def _pledge_reply(
    result: object, op: operation_pb2.OperationInfo
) -> finance_pb2.PledgeMoreResponse:
    return finance_pb2.PledgeMoreResponse(operation=op, loan=_view(result))


def _attest_reply(
    result: object, op: operation_pb2.OperationInfo
) -> finance_pb2.SubmitCollateralAttestationResponse:
    return finance_pb2.SubmitCollateralAttestationResponse(operation=op, loan=_view(result))


OPEN = Reply(finance_pb2.OpenLoanResponse, _open_reply)
REPAY = Reply(finance_pb2.RepayResponse, _repay_reply)
PLEDGE = Reply(finance_pb2.PledgeMoreResponse, _pledge_reply)
ATTEST = Reply(finance_pb2.SubmitCollateralAttestationResponse, _attest_reply)


def _terms_invalid(field: str, message: str) -> SettlementError:
    return requests.invalid(Reason.INVALID_LOAN_TERMS, f"payload.{field}", message)


def check_terms(terms: LoanTerms, now_us: int, caller: str) -> None:
    """What a loan document must say for condpay to run it (the ledger checks the rest)."""
    requests.currency(terms.currency, "payload.currency")
    requests.positive_amount(terms.principal_minor, "payload.principal_minor")
    if caller not in (terms.borrower_agent, terms.financier_agent):
        raise requests.mismatch(
            "payload.submitter", "the loan is submitted by its borrower's or financier's agent"
        )
    if terms.borrower == terms.financier:
        raise _terms_invalid("financier", "the financier lends to another wallet")
    if terms.rate_bps > RATE_BPS_MAX:
        raise _terms_invalid("rate_bps", f"at most {RATE_BPS_MAX} bps a year")
    if terms.unit_price_minor <= 0:
        raise _terms_invalid("unit_price_minor", "the opening price per unit must be > 0")
    if not 0 <= terms.haircut_bps < BPS:
        raise _terms_invalid("haircut_bps", f"a haircut is 0..{BPS - 1} bps")
    if not BPS <= terms.margin_call_bps <= MARGIN_CALL_BPS_MAX:
        raise _terms_invalid(
            "margin_call_bps",
            f"{BPS}..{MARGIN_CALL_BPS_MAX} bps of the lending value ({BPS}: a margin call as "
            "soon as owed exceeds it)",
        )
    if not 0 < terms.cure_period_s <= CURE_PERIOD_S_MAX:
        raise _terms_invalid("cure_period_s", f"1..{CURE_PERIOD_S_MAX} seconds")
    if not now_us < terms.maturity_at_us <= now_us + MATURITY_YEARS_MAX * YEAR_US:
        raise _terms_invalid(
            "maturity_at_us", f"maturity is in the future, at most {MATURITY_YEARS_MAX} years"
        )
    interest, _ = accrue(
        terms.principal_minor, terms.rate_bps, terms.maturity_at_us - now_us + OVERRUN_US, 0
    )
    if terms.principal_minor + terms.fee_minor + interest + 1 > INT64_MAX:
        raise _terms_invalid(
            "principal_minor", "principal, fee and interest to maturity must fit int64"
        )
    if terms.disposal not in DISPOSALS:
        raise _terms_invalid("disposal", f"one of {', '.join(DISPOSALS)}")
    found = [s for s in terms.sensor_oracles.split(",") if s]
    if len(set(found)) != len(found):
        raise _terms_invalid("sensor_oracles", "a sensor is listed once")
    if {terms.price_oracle, terms.warehouse_oracle} & set(found):
        raise _terms_invalid("sensor_oracles", "sensors are not the price oracle or warehouse")
    if terms.sensor_threshold > len(found):
        raise _terms_invalid("sensor_threshold", f"at most the {len(found)} sensors listed")


def collateral_statement(data: bytes) -> CollateralStatement:
    """The decoded statement, with the fields its kind leaves empty empty; ATTESTATION_MALFORMED
    otherwise."""
    if not data:
        raise requests.invalid(Reason.MISSING_FIELD, "statement", "statement is required")
    try:
        statement = CollateralStatement.from_bytes(data)
    except MalformedInstruction as error:
        raise SettlementError(
            Reason.ATTESTATION_MALFORMED,
            f"statement: {error}",
            metadata={"field": error.field or "statement"},
        ) from None

    def malformed(field: str, message: str) -> SettlementError:
        return SettlementError(
            Reason.ATTESTATION_MALFORMED, message, metadata={"field": f"statement.{field}"}
        )

    if statement.kind not in COLLATERAL_KINDS:
        raise malformed("kind", f"one of {', '.join(COLLATERAL_KINDS)}")
    if statement.kind == "VALUATION":
        if statement.title_id or statement.units_present or statement.condition:
            raise malformed("title_id", "a valuation names no title, units or condition")
    else:
        if not statement.title_id or statement.condition not in CONDITIONS:
            raise malformed("condition", f"a stock count names a title and one of {CONDITIONS}")
        if statement.unit_price_minor:
            raise malformed("unit_price_minor", "a stock count names no price")
    return statement


class InventoryFinanceService(finance_pb2_grpc.InventoryFinanceServiceServicer):
    def __init__(self, runtime: Runtime, settlement_service: SettlementService) -> None:
        self._rt = runtime
        self._settlements = settlement_service

        def dispose(
            result: object, op: operation_pb2.OperationInfo
        ) -> finance_pb2.DisposeCollateralResponse:
            assert isinstance(result, SettlementRecord)
            return finance_pb2.DisposeCollateralResponse(
                operation=op, settlement=settlement_service.view(result)
            )

        self._dispose = Reply(finance_pb2.DisposeCollateralResponse, dispose)

    async def OpenLoan(
        self, request: finance_pb2.OpenLoanRequest, context: grpc.aio.ServicerContext
    ) -> finance_pb2.OpenLoanResponse:
        base = requests.command_fields(_SERVICE + "OpenLoan", current_caller(), request)
        try:
            terms = requests.signed(self._rt, base, LoanTerms, request.payload, "payload", "loan")
            check_terms(terms, self._rt.clock.now_us(), base["caller"])
            await check_wallet_signature(
                self._rt, terms.borrower, request.borrower_signature, request.payload
            )
            await check_wallet_signature(
                self._rt, terms.financier, request.financier_signature, request.payload
            )
            command: commands.Command = loans.OpenLoan(
                **base,
                loan_id=loans.derive_loan_id(base["caller"], base["request_id"]),
                terms=terms,
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, OPEN)

    async def Repay(
        self, request: finance_pb2.RepayRequest, context: grpc.aio.ServicerContext
    ) -> finance_pb2.RepayResponse:
        base = requests.command_fields(_SERVICE + "Repay", current_caller(), request)
        try:
            signed = request.payer_instruction
            repay = requests.signed(
                self._rt, base, LoanRepayment, signed.payload, "payer_instruction.payload", "repay"
            )
            requests.positive_amount(repay.amount_minor, "payer_instruction.amount_minor")
            if repay.release_units and not repay.release_title_id:
                raise requests.invalid(
                    Reason.MISSING_FIELD,
                    "payer_instruction.release_title_id",
                    "a release names the pledged receipt it frees units of",
                )
            await check_wallet_signature(self._rt, repay.payer, signed.signature, signed.payload)
            command: commands.Command = loans.RepayLoan(
                **base,
                loan_id=repay.loan_id,
                payer=repay.payer,
                amount_minor=repay.amount_minor,
                release_title_id=repay.release_title_id,
                release_units=repay.release_units,
                expires_at_us=repay.expires_at_us,
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, REPAY)

    async def PledgeMore(
        self, request: finance_pb2.PledgeMoreRequest, context: grpc.aio.ServicerContext
    ) -> finance_pb2.PledgeMoreResponse:
        base = requests.command_fields(_SERVICE + "PledgeMore", current_caller(), request)
        try:
            signed = request.holder_instruction
            pledge = requests.signed(
                self._rt, base, LoanPledge, signed.payload, "holder_instruction.payload", "pledge"
            )
            await check_wallet_signature(self._rt, pledge.holder, signed.signature, signed.payload)
            command: commands.Command = loans.PledgeToLoan(
                **base,
                loan_id=pledge.loan_id,
                title_id=pledge.title_id,
                holder=pledge.holder,
                expires_at_us=pledge.expires_at_us,
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, PLEDGE)

    async def SubmitCollateralAttestation(
        self,
        request: finance_pb2.SubmitCollateralAttestationRequest,
        context: grpc.aio.ServicerContext,
    ) -> finance_pb2.SubmitCollateralAttestationResponse:
        base = requests.command_fields(
            _SERVICE + "SubmitCollateralAttestation", current_caller(), request
        )
        try:
            statement = collateral_statement(request.statement)
            aggregate = None
            if request.HasField("bls_aggregate"):
                aggregate = (
                    tuple(request.bls_aggregate.signer_ids),
                    request.bls_aggregate.signature,
                )
            signatures = tuple((s.signer_id, s.signature) for s in request.signatures)
            for signer_id, _ in signatures:
                requests.identifier(signer_id, "signatures.signer_id")
            for signer_id in aggregate[0] if aggregate else ():
                requests.identifier(signer_id, "bls_aggregate.signer_ids")
            # The loan's oracles never change after it opens: read without a lock, to know who
            # must have signed; the batch re-checks who may attest under the loan's lock.
            loan = await self._rt.loans.loan_record(statement.loan_id)
            if loan is None or not loans.may_attest(loan, base["caller"]):
                raise not_found(Reason.LOAN_NOT_FOUND, "loan", statement.loan_id)
            registry = await self._rt.oracle_sets.for_statement(statement.oracle_set_version)
            check = functools.partial(
                loans.verify_collateral_signatures,
                statement,
                loan,
                Submission(request.statement, b"", signatures, aggregate),
                registry,
            )
            # An aggregate's pairings run beside the loop; the rest costs less than the hand-off.
            if aggregate is None:
                check()
            else:
                await self._rt.verify_threads.run(check)
            command: commands.Command = loans.AttestCollateral(**base, statement=statement)
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, ATTEST)

    async def DisposeCollateral(
        self, request: finance_pb2.DisposeCollateralRequest, context: grpc.aio.ServicerContext
    ) -> finance_pb2.DisposeCollateralResponse:
        caller = current_caller()
        base = requests.command_fields(_SERVICE + "DisposeCollateral", caller, request)
        try:
            sale = requests.signed(
                self._rt, base, LoanDisposal, request.payload, "payload", "disposal"
            )
            loan = await self._rt.loans.loan_record(sale.loan_id)
            if loan is None or loan.financier_agent != base["caller"]:
                raise not_found(Reason.LOAN_NOT_FOUND, "loan", sale.loan_id)
            requests.currency(sale.pay_currency, "payload.pay_currency")
            requests.positive_amount(sale.pay_minor, "payload.pay_minor")
            requests.positive_amount(sale.receive_minor, "payload.receive_minor")
            if sale.buyer in (loan.borrower_wallet_id, loan.financier_wallet_id):
                raise requests.invalid(
                    Reason.SAME_SOURCE_AND_TARGET,
                    "payload.buyer",
                    "the buyer is neither the borrower nor the financier",
                )
            if sale.pay_currency == loan.currency:
                if sale.pay_minor != sale.receive_minor or sale.quote_id:
                    raise requests.mismatch(
                        "payload.receive_minor",
                        "in one currency the loan receives what the buyer pays, with no quote",
                    )
            else:
                self._settlements.bridge_needed()
            await check_wallet_signature(
                self._rt, loan.financier_wallet_id, request.financier_signature, request.payload
            )
            await check_wallet_signature(
                self._rt, sale.buyer, request.buyer_signature, request.payload
            )
            terms = settlements.Terms(
                payer=sale.buyer,
                pay_currency=sale.pay_currency,
                pay_minor=sale.pay_minor,
                payee=loan.financier_wallet_id,
                receive_currency=loan.currency,
                receive_minor=sale.receive_minor,
                quote_id=sale.quote_id,
                title_id=sale.title_id,
                expires_at_us=sale.expires_at_us,
            )
            prepare: commands.Command | SettlementError = await self._settlements.prepare(
                base, SettlementKind.DVP, terms, loan_id=sale.loan_id
            )
        except SettlementError as error:
            prepare = error
        return await self._settlements.settle(base, prepare, self._dispose)

    # -- reads ---------------------------------------------------------------------------------
    async def GetLoan(
        self, request: finance_pb2.GetLoanRequest, context: grpc.aio.ServicerContext
    ) -> finance_pb2.GetLoanResponse:
        requests.identifier(request.loan_id, "loan_id")
        found = await self._rt.loans.loan(
            request.loan_id, scopes.loans(current_caller()), newest=True
        )
        if found is None:  # or not the caller's to see: the same answer
            raise not_found(Reason.LOAN_NOT_FOUND, "loan", request.loan_id)
        loan, events = found
        return finance_pb2.GetLoanResponse(
            loan=views.loan(loan, self._rt.clock.now_us()),
            events=[views.loan_event(seq, e) for seq, e in events],
            earlier_events=bool(events) and events[0][0] > 1,  # an event's seq is the version
        )

    async def ListLoans(
        self, request: finance_pb2.ListLoansRequest, context: grpc.aio.ServicerContext
    ) -> finance_pb2.ListLoansResponse:
        caller = current_caller()
        wallet_id = request.wallet_id
        if wallet_id:
            requests.identifier(wallet_id, "wallet_id")
        state = views.STATES_BY_PROTO.get(request.state)
        size = scopes.page_size(request.page_size)
        method = _SERVICE + "ListLoans"
        filters = {"wallet_id": wallet_id, "state": state.value if state else ""}
        after = self._rt.page_tokens.open(caller, method, filters, request.page_token)
        found = await self._rt.loans.loans(
            wallet_id=wallet_id,
            state=state.value if state else "",
            after_id=after,
            limit=size + 1,
            visible=scopes.loans(caller),
        )
        more = len(found) > size
        found = found[:size]
        now_us = self._rt.clock.now_us()
        return finance_pb2.ListLoansResponse(
            loans=[views.loan(loan, now_us) for loan in found],
            next_page_token=(
                self._rt.page_tokens.seal(caller, method, filters, found[-1].loan_id)
                if more
                else ""
            ),
        )

    async def WatchLoan(
        self, request: finance_pb2.WatchLoanRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[finance_pb2.WatchLoanResponse]:
        caller = current_caller()
        loan_id = requests.identifier(request.loan_id, "loan_id")
        after = request.after_version
        if after < 0:
            raise requests.invalid(Reason.INVALID_PAGE_TOKEN, "after_version", "must be >= 0")
        visible = scopes.loans(caller)
        while True:
            changed = self._rt.notifier.changed(loan_id)  # taken before the read: no gap
            found = await self._rt.loans.loan(loan_id, visible, after_version=after)
            if found is None:  # or not the caller's to see: the same answer
                raise not_found(Reason.LOAN_NOT_FOUND, "loan", loan_id)
            loan, events = found
            if events:
                current = views.loan(loan, self._rt.clock.now_us())
                for seq, event in events:
                    yield finance_pb2.WatchLoanResponse(
                        event=views.loan_event(seq, event), loan=current
                    )
                after = events[-1][0]
            if loan.state in (LoanState.REPAID, LoanState.DISPOSED) and after >= loan.version:
                return
            if len(events) >= limits.LOAN_EVENTS_PER_READ:  # more than a read's worth: go on
                continue
            # Woken by a commit in this process, or on a timer for other replicas' commits.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limits.WATCH_POLL_SECONDS):
                    await changed.wait()
