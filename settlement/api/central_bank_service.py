"""CentralBankService: institutions, issuance, redemption and the supply audit."""

from __future__ import annotations

import grpc
from condpay.v1 import central_bank_pb2, central_bank_pb2_grpc, operation_pb2

from settlement import limits
from settlement.api import convert, requests, scopes
from settlement.api.identity import current_caller
from settlement.api.replies import Reply
from settlement.api.wallet_service import public_key
from settlement.errors import Reason, SettlementError
from settlement.ledger import commands
from settlement.ledger.records import EntryRecord, InstitutionRecord
from settlement.runtime import Runtime
from wallets import CURRENCY_CODES

_SERVICE = "/condpay.v1.CentralBankService/"


def _register_reply(
    result: object, op: operation_pb2.OperationInfo
) -> central_bank_pb2.RegisterInstitutionResponse:
    assert isinstance(result, InstitutionRecord)
    return central_bank_pb2.RegisterInstitutionResponse(
        operation=op, institution=convert.institution(result)
    )


def _issue_reply(result: object, op: operation_pb2.OperationInfo) -> central_bank_pb2.IssueResponse:
    assert isinstance(result, EntryRecord)
    return central_bank_pb2.IssueResponse(operation=op, entry=convert.entry(result))


def _redeem_reply(
    result: object, op: operation_pb2.OperationInfo
) -> central_bank_pb2.RedeemResponse:
    assert isinstance(result, EntryRecord)
    return central_bank_pb2.RedeemResponse(operation=op, entry=convert.entry(result))


REGISTER = Reply(central_bank_pb2.RegisterInstitutionResponse, _register_reply)
ISSUE = Reply(central_bank_pb2.IssueResponse, _issue_reply)
REDEEM = Reply(central_bank_pb2.RedeemResponse, _redeem_reply)


class CentralBankService(central_bank_pb2_grpc.CentralBankServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def RegisterInstitution(
        self,
        request: central_bank_pb2.RegisterInstitutionRequest,
        context: grpc.aio.ServicerContext,
    ) -> central_bank_pb2.RegisterInstitutionResponse:
        base = requests.command_fields(_SERVICE + "RegisterInstitution", current_caller(), request)
        try:
            command: commands.Command = commands.RegisterInstitution(
                **base,
                institution_id=requests.identifier(request.institution_id, "institution_id"),
                display_name=requests.text(
                    request.display_name, "display_name", limits.DISPLAY_NAME_CHARS_MAX
                ),
                owner_public_key=public_key(request.owner_public_key, "owner_public_key"),
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, REGISTER)

    async def Issue(
        self, request: central_bank_pb2.IssueRequest, context: grpc.aio.ServicerContext
    ) -> central_bank_pb2.IssueResponse:
        command = self._supply_change("Issue", commands.Issue, request)
        return await self._rt.engine.execute(command, ISSUE)

    async def Redeem(
        self, request: central_bank_pb2.RedeemRequest, context: grpc.aio.ServicerContext
    ) -> central_bank_pb2.RedeemResponse:
        command = self._supply_change("Redeem", commands.Redeem, request)
        return await self._rt.engine.execute(command, REDEEM)

    @staticmethod
    def _supply_change(
        name: str,
        command_type: type[commands.Issue | commands.Redeem],
        request: central_bank_pb2.IssueRequest | central_bank_pb2.RedeemRequest,
    ) -> commands.Command:
        caller = current_caller()
        base = requests.command_fields(_SERVICE + name, caller, request)
        try:
            currency, amount = requests.money(request.amount, request.HasField("amount"), "amount")
            if not scopes.may_issue(caller, currency):
                raise SettlementError(
                    Reason.NOT_CURRENCY_ISSUER,
                    f"{currency} is issued and redeemed by its own central bank only",
                    metadata={"field": "amount.currency", "currency": currency},
                )
            return command_type(
                **base,
                institution_id=requests.identifier(request.institution_id, "institution_id"),
                currency=currency,
                amount_minor=amount,
                memo=requests.text(request.memo, "memo", limits.MEMO_CHARS_MAX),
            )
        except SettlementError as error:
            return commands.Refuse(**base, error=error)

    async def GetSupply(
        self, request: central_bank_pb2.GetSupplyRequest, context: grpc.aio.ServicerContext
    ) -> central_bank_pb2.GetSupplyResponse:
        if len(request.currencies) > limits.SUPPLY_CURRENCIES_MAX:
            raise requests.invalid(Reason.UNSUPPORTED_CURRENCY, "currencies", "too many")
        wanted = [requests.currency(c, "currencies") for c in request.currencies]
        as_of, figures = await self._rt.reader.supply(wanted or CURRENCY_CODES)
        money = convert.money
        return central_bank_pb2.GetSupplyResponse(
            as_of_seq=as_of,
            supplies=[
                central_bank_pb2.CurrencySupply(
                    currency=f.currency,
                    issued=money(f.currency, f.issued),
                    redeemed=money(f.currency, f.redeemed),
                    in_circulation=money(f.currency, f.issued - f.redeemed),
                    balances_sum=money(f.currency, f.balances_sum),
                    held_sum=money(f.currency, f.held_sum),
                    consistent=f.issued - f.redeemed == f.balances_sum,
                )
                for f in figures
            ],
        )
