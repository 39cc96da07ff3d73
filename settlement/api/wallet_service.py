"""WalletService: open wallets, read them, transfer between them, read statements."""

from __future__ import annotations

import grpc
from condpay.v1 import operation_pb2, wallet_pb2, wallet_pb2_grpc

from settlement import limits
from settlement.api import convert, requests, scopes
from settlement.api.identity import Role, current_caller
from settlement.api.replies import Reply
from settlement.api.signatures import check_wallet_signature
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import commands
from settlement.ledger.records import BalanceRecord, EntryRecord, WalletRecord
from settlement.runtime import Runtime
from wallets import (
    CURRENCY_CODES,
    INT64_MAX,
    BadSignature,
    TransferInstruction,
    WalletKind,
    check_public_key,
    valid_tier,
)

_SERVICE = "/condpay.v1.WalletService/"
_KINDS = {
    wallet_pb2.WALLET_KIND_PERSONAL: WalletKind.PERSONAL,
    wallet_pb2.WALLET_KIND_ENTERPRISE: WalletKind.ENTERPRISE,
}


def _open_wallet_reply(
    result: object, op: operation_pb2.OperationInfo
) -> wallet_pb2.OpenWalletResponse:
    assert isinstance(result, WalletRecord)
    zero = [BalanceRecord(result.wallet_id, c, 0, 0, 0, 0) for c in CURRENCY_CODES]
    return wallet_pb2.OpenWalletResponse(
        operation=op, wallet=convert.wallet(result, zero, result.opened_at_us)
    )


def _transfer_reply(result: object, op: operation_pb2.OperationInfo) -> wallet_pb2.TransferResponse:
    assert isinstance(result, EntryRecord)
    return wallet_pb2.TransferResponse(operation=op, entry=convert.entry(result))


OPEN_WALLET = Reply(wallet_pb2.OpenWalletResponse, _open_wallet_reply)
TRANSFER = Reply(wallet_pb2.TransferResponse, _transfer_reply)


def public_key(raw: bytes, field: str) -> bytes:
    if not raw:
        raise requests.invalid(Reason.MISSING_FIELD, field, f"{field} is required")
    try:
        check_public_key(raw)
    except BadSignature:
        raise requests.invalid(
            Reason.INVALID_PUBLIC_KEY, field, f"{field} must be a raw 32-byte Ed25519 public key"
        ) from None
    return raw


class WalletService(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def OpenWallet(
        self, request: wallet_pb2.OpenWalletRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.OpenWalletResponse:
        method = _SERVICE + "OpenWallet"
        caller = current_caller()
        base = requests.command_fields(method, caller, request)
        try:
            institution_id = requests.identifier(request.institution_id, "institution_id")
            if caller.role is Role.INSTITUTION and institution_id != caller.id:
                raise SettlementError(
                    Reason.ROLE_NOT_ALLOWED,
                    "an institution opens wallets under its own id only",
                    metadata={"field": "institution_id"},
                )
            kind = _KINDS.get(request.kind)
            if kind is None:
                raise requests.invalid(
                    Reason.INVALID_WALLET_KIND, "kind", "kind must be PERSONAL or ENTERPRISE"
                )
            if not valid_tier(kind, request.tier):
                raise requests.invalid(
                    Reason.INVALID_TIER, "tier", "personal wallets: tier 1-4; enterprise: 0"
                )
            command: commands.Command = commands.OpenWallet(
                **base,
                institution_id=institution_id,
                kind=kind,
                tier=request.tier,
                owner_public_key=public_key(request.owner_public_key, "owner_public_key"),
                display_name=requests.text(
                    request.display_name, "display_name", limits.DISPLAY_NAME_CHARS_MAX
                ),
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, OPEN_WALLET)

    async def GetWallet(
        self, request: wallet_pb2.GetWalletRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.GetWalletResponse:
        wallet_id = requests.identifier(request.wallet_id, "wallet_id")
        caller = current_caller()
        found = await self._rt.reader.wallet(
            wallet_id, scopes.wallets(caller), scopes.balance_currencies(caller)
        )
        if found is None:  # or not the caller's to see: the same answer
            raise not_found(Reason.WALLET_NOT_FOUND, "wallet", wallet_id)
        record, balances = found
        return wallet_pb2.GetWalletResponse(
            wallet=convert.wallet(record, balances, self._rt.clock.now_us())
        )

    async def Transfer(
        self, request: wallet_pb2.TransferRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.TransferResponse:
        method = _SERVICE + "Transfer"
        base = requests.command_fields(method, current_caller(), request)
        try:
            command: commands.Command = await self._transfer(request, base)
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, TRANSFER)

    async def _transfer(
        self, request: wallet_pb2.TransferRequest, base: requests.CommandFields
    ) -> commands.Transfer:
        signed = request.instruction
        instruction = requests.signed(
            self._rt,
            base,
            TransferInstruction,
            signed.payload,
            "instruction.payload",
            "instruction",
            within="instruction",
            reasons={"amount_minor": Reason.INVALID_AMOUNT},
        )
        requests.currency(instruction.currency, "instruction.currency")
        requests.positive_amount(instruction.amount_minor, "instruction.amount_minor")
        if instruction.source == instruction.target:
            raise requests.invalid(
                Reason.SAME_SOURCE_AND_TARGET, "instruction.target", "source and target are equal"
            )
        await check_wallet_signature(self._rt, instruction.source, signed.signature, signed.payload)
        return commands.Transfer(
            **base,
            source=instruction.source,
            target=instruction.target,
            currency=instruction.currency,
            amount_minor=instruction.amount_minor,
            expires_at_us=instruction.expires_at_us,
            memo=instruction.memo,
        )

    async def ListJournal(
        self, request: wallet_pb2.ListJournalRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.ListJournalResponse:
        caller = current_caller()
        wallet_id: str | None = None
        if request.wallet_id:
            wallet_id = requests.identifier(request.wallet_id, "wallet_id")
            if not await self._rt.reader.wallet_exists(wallet_id, scopes.wallets(caller)):
                raise not_found(Reason.WALLET_NOT_FOUND, "wallet", wallet_id)
        page_size = scopes.page_size(
            request.page_size, limits.PAGE_SIZE_DEFAULT, limits.PAGE_SIZE_MAX
        )
        method = _SERVICE + "ListJournal"
        filters = {"wallet_id": wallet_id or ""}
        if request.after_seq:  # (bound only when given: tokens sealed before it existed hold)
            filters["after_seq"] = str(request.after_seq)
        cursor = self._rt.page_tokens.open(caller, method, filters, request.page_token)
        # A sealed cursor is always a sequence number past after_seq (this server made it).
        after = int(cursor) if cursor else min(request.after_seq, INT64_MAX)
        entries = await self._rt.reader.journal(
            wallet_id, after, page_size + 1, scopes.journal_postings(caller)
        )
        more = len(entries) > page_size
        entries = entries[:page_size]
        return wallet_pb2.ListJournalResponse(
            entries=[convert.entry(e) for e in entries],
            next_page_token=(
                self._rt.page_tokens.seal(caller, method, filters, str(entries[-1].seq))
                if more
                else ""
            ),
        )
