"""AssetService: issue, split, pledge and release digital titles; read them and their moves.

The issuer's signature is verified by the command, against the issuer's key in the oracle
registry as it is in the batch (a rotation or a revocation counts at once); a holder's or
pledgee's here, against the wallet's key (wallet keys never change), and the command checks
that the signer holds (or is pledged) the title under the title's row lock.
"""

from __future__ import annotations

import grpc
from condpay.v1 import asset_pb2, asset_pb2_grpc, operation_pb2

from settlement.api import requests, scopes
from settlement.api import settlement_views as views
from settlement.api.identity import current_caller
from settlement.api.replies import Reply
from settlement.api.signatures import check_wallet_signature
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import commands, titles
from settlement.ledger.records import TitleRecord
from settlement.runtime import Runtime
from wallets import PledgeRelease, TitleIssue, TitlePledge, TitleSplit
from wallets.instructions import TITLE_KINDS

_SERVICE = "/condpay.v1.AssetService/"


def _title_reply(result: object, op: operation_pb2.OperationInfo) -> asset_pb2.IssueTitleResponse:
    assert isinstance(result, TitleRecord)
    return asset_pb2.IssueTitleResponse(operation=op, title=views.title(result))


def _split_reply(result: object, op: operation_pb2.OperationInfo) -> asset_pb2.SplitTitleResponse:
    assert isinstance(result, tuple)
    first, rest = result
    return asset_pb2.SplitTitleResponse(
        operation=op, first=views.title(first), rest=views.title(rest)
    )


def _pledge_reply(result: object, op: operation_pb2.OperationInfo) -> asset_pb2.PledgeTitleResponse:
    assert isinstance(result, TitleRecord)
    return asset_pb2.PledgeTitleResponse(operation=op, title=views.title(result))


def _release_reply(
    result: object, op: operation_pb2.OperationInfo
) -> asset_pb2.ReleasePledgeResponse:
    assert isinstance(result, TitleRecord)
    return asset_pb2.ReleasePledgeResponse(operation=op, title=views.title(result))


ISSUE = Reply(asset_pb2.IssueTitleResponse, _title_reply)
SPLIT = Reply(asset_pb2.SplitTitleResponse, _split_reply)
PLEDGE = Reply(asset_pb2.PledgeTitleResponse, _pledge_reply)
RELEASE = Reply(asset_pb2.ReleasePledgeResponse, _release_reply)


class AssetService(asset_pb2_grpc.AssetServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def IssueTitle(
        self, request: asset_pb2.IssueTitleRequest, context: grpc.aio.ServicerContext
    ) -> asset_pb2.IssueTitleResponse:
        base = requests.command_fields(_SERVICE + "IssueTitle", current_caller(), request)
        try:
            signed = request.issuer_instruction
            issue = requests.signed(
                self._rt, base, TitleIssue, signed.payload, "issuer_instruction.payload", "title"
            )
            if issue.kind not in TITLE_KINDS:
                raise requests.invalid(
                    Reason.INVALID_TITLE_KIND,
                    "issuer_instruction.kind",
                    f"a title is one of {', '.join(TITLE_KINDS)}",
                )
            if issue.units <= 0:
                raise requests.invalid(
                    Reason.INVALID_UNITS, "issuer_instruction.units", "units must be > 0"
                )
            command: commands.Command = titles.IssueTitle(
                **base,
                title_id=titles.derive_title_id(issue.issuer, issue.document_sha256),
                issuer_id=issue.issuer,
                kind=issue.kind,
                holder=issue.holder,
                units=issue.units,
                description=issue.description,
                document_sha256=issue.document_sha256,
                expires_at_us=issue.expires_at_us,
                payload=signed.payload,
                signature=signed.signature,
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, ISSUE)

    async def SplitTitle(
        self, request: asset_pb2.SplitTitleRequest, context: grpc.aio.ServicerContext
    ) -> asset_pb2.SplitTitleResponse:
        base = requests.command_fields(_SERVICE + "SplitTitle", current_caller(), request)
        try:
            signed = request.holder_instruction
            split = requests.signed(
                self._rt, base, TitleSplit, signed.payload, "holder_instruction.payload", "split"
            )
            if split.units_first <= 0:
                raise requests.invalid(
                    Reason.INVALID_UNITS, "holder_instruction.units_first", "must be > 0"
                )
            await check_wallet_signature(self._rt, split.holder, signed.signature, signed.payload)
            command: commands.Command = titles.SplitTitle(
                **base,
                title_id=split.title_id,
                holder=split.holder,
                units_first=split.units_first,
                expires_at_us=split.expires_at_us,
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, SPLIT)

    async def PledgeTitle(
        self, request: asset_pb2.PledgeTitleRequest, context: grpc.aio.ServicerContext
    ) -> asset_pb2.PledgeTitleResponse:
        base = requests.command_fields(_SERVICE + "PledgeTitle", current_caller(), request)
        try:
            signed = request.holder_instruction
            pledge = requests.signed(
                self._rt, base, TitlePledge, signed.payload, "holder_instruction.payload", "pledge"
            )
            await check_wallet_signature(self._rt, pledge.holder, signed.signature, signed.payload)
            command: commands.Command = titles.PledgeTitle(
                **base,
                title_id=pledge.title_id,
                holder=pledge.holder,
                pledgee=pledge.pledgee,
                expires_at_us=pledge.expires_at_us,
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, PLEDGE)

    async def ReleasePledge(
        self, request: asset_pb2.ReleasePledgeRequest, context: grpc.aio.ServicerContext
    ) -> asset_pb2.ReleasePledgeResponse:
        base = requests.command_fields(_SERVICE + "ReleasePledge", current_caller(), request)
        try:
            signed = request.pledgee_instruction
            release = requests.signed(
                self._rt,
                base,
                PledgeRelease,
                signed.payload,
                "pledgee_instruction.payload",
                "pledge release",
            )
            await check_wallet_signature(
                self._rt, release.pledgee, signed.signature, signed.payload
            )
            command: commands.Command = titles.ReleasePledge(
                **base,
                title_id=release.title_id,
                pledgee=release.pledgee,
                expires_at_us=release.expires_at_us,
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, RELEASE)

    async def GetTitle(
        self, request: asset_pb2.GetTitleRequest, context: grpc.aio.ServicerContext
    ) -> asset_pb2.GetTitleResponse:
        requests.identifier(request.title_id, "title_id")
        try:
            title, moves = await self._rt.settlements.title(
                request.title_id, scopes.titles(current_caller())
            )
        except KeyError:  # or not the caller's to see: the same answer
            raise not_found(Reason.TITLE_NOT_FOUND, "title", request.title_id) from None
        return asset_pb2.GetTitleResponse(
            title=views.title(title), moves=[views.title_move(seq, m) for seq, m in moves]
        )

    async def ListTitles(
        self, request: asset_pb2.ListTitlesRequest, context: grpc.aio.ServicerContext
    ) -> asset_pb2.ListTitlesResponse:
        caller = current_caller()
        holder = requests.identifier(request.holder_wallet_id, "holder_wallet_id")
        size = scopes.page_size(request.page_size)
        method, filters = _SERVICE + "ListTitles", {"holder_wallet_id": holder}
        after = self._rt.page_tokens.open(caller, method, filters, request.page_token)
        found = await self._rt.settlements.titles(holder, after, size + 1, scopes.titles(caller))
        more = len(found) > size
        found = found[:size]
        return asset_pb2.ListTitlesResponse(
            titles=[views.title(t) for t in found],
            next_page_token=(
                self._rt.page_tokens.seal(caller, method, filters, found[-1].title_id)
                if more
                else ""
            ),
        )
