"""A small typed asyncio client for the condpay API.

- sets a fresh request id on every mutating call unless you give one;
- retries only transient failures (UNAVAILABLE, DEADLINE_EXCEEDED), always with the same request
  id, so a retry can never apply a call twice;
- raises the typed errors of :mod:`condpay.errors`.

    async with Client("127.0.0.1:50051", caller="central_bank/pboc") as cb:
        await cb.register_institution("icbc-sz", "ICBC Shenzhen", institution_key.public_key)
        await cb.issue("icbc-sz", "CNY", 100_000_000_00)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from condpay.errors import ApiError, from_rpc_error
from condpay.tls import secure_channel
from condpay.v1 import (
    central_bank_pb2,
    central_bank_pb2_grpc,
    ledger_pb2,
    money_pb2,
    operation_pb2,
    operation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

R = TypeVar("R", bound=Message)
CALLER_METADATA_KEY = "condpay-caller"
# Safe to retry because every mutating call carries the same request id: a call the server did
# apply is answered from its stored outcome. CANCELLED is what a draining server gives calls that
# had not reached a handler yet.
TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


class Client:
    def __init__(
        self,
        target: str,
        *,
        caller: str,
        certs_dir: str | Path | None = None,
        server_name: str | None = None,
        channel: grpc.aio.Channel | None = None,
        timeout_seconds: float = 10.0,
        attempts_max: int = 6,
    ) -> None:
        """``caller`` is ``<role>/<id>``. With ``certs_dir`` (made by ``condpay certs init``) the
        client connects over mutual TLS with that identity's certificate, and the server takes
        the identity from the certificate; without it, plaintext, and the identity is sent as
        metadata, which only a server in development mode (--insecure) accepts."""
        self._target, self._certs_dir, self._server_name = target, certs_dir, server_name
        if channel is None:
            channel = (
                grpc.aio.insecure_channel(target)
                if certs_dir is None
                else secure_channel(target, certs_dir, caller, server_name=server_name)
            )
            self._own_channel = True
        else:
            self._own_channel = False
        self._channel = channel
        self._metadata = ((CALLER_METADATA_KEY, caller),)
        self._timeout = timeout_seconds
        self._attempts_max = attempts_max
        self.wallets = wallet_pb2_grpc.WalletServiceStub(self._channel)
        self.central_bank = central_bank_pb2_grpc.CentralBankServiceStub(self._channel)
        self.operations = operation_pb2_grpc.OperationServiceStub(self._channel)
        self.retries = 0

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_channel:
            await self._channel.close()

    def with_caller(self, caller: str) -> Client:
        """Another identity: over the same connection in development mode; under TLS the
        identity is the connection's certificate, so a new connection with that identity's."""
        return Client(
            self._target,
            caller=caller,
            certs_dir=self._certs_dir,
            server_name=self._server_name,
            channel=None if self._certs_dir is not None else self._channel,
            timeout_seconds=self._timeout,
            attempts_max=self._attempts_max,
        )

    async def call(self, method: Callable[..., Awaitable[R]], request: Message) -> R:
        """Call ``method`` with retries of transient failures; typed errors otherwise."""
        if (
            hasattr(request, "request_id")
            and hasattr(request, "dry_run")
            and not request.request_id
        ):
            request.request_id = new_request_id()
        delay = 0.05
        for attempt in range(1, self._attempts_max + 1):
            try:
                return await method(request, metadata=self._metadata, timeout=self._timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() not in TRANSIENT or attempt == self._attempts_max:
                    raise from_rpc_error(error) from None
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    # -- central bank --------------------------------------------------------------------------
    async def register_institution(
        self,
        institution_id: str,
        display_name: str,
        owner_public_key: bytes,
        *,
        request_id: str = "",
        dry_run: bool = False,
    ) -> central_bank_pb2.RegisterInstitutionResponse:
        return await self.call(
            self.central_bank.RegisterInstitution,
            central_bank_pb2.RegisterInstitutionRequest(
                request_id=request_id,
                dry_run=dry_run,
                institution_id=institution_id,
                display_name=display_name,
                owner_public_key=owner_public_key,
            ),
        )

    async def issue(
        self,
        institution_id: str,
        currency: str,
        amount_minor: int,
        *,
        memo: str = "",
        request_id: str = "",
        dry_run: bool = False,
    ) -> central_bank_pb2.IssueResponse:
        return await self.call(
            self.central_bank.Issue,
            central_bank_pb2.IssueRequest(
                request_id=request_id,
                dry_run=dry_run,
                institution_id=institution_id,
                amount=money_pb2.Money(currency=currency, amount_minor=amount_minor),
                memo=memo,
            ),
        )

    async def redeem(
        self,
        institution_id: str,
        currency: str,
        amount_minor: int,
        *,
        memo: str = "",
        request_id: str = "",
        dry_run: bool = False,
    ) -> central_bank_pb2.RedeemResponse:
        return await self.call(
            self.central_bank.Redeem,
            central_bank_pb2.RedeemRequest(
                request_id=request_id,
                dry_run=dry_run,
                institution_id=institution_id,
                amount=money_pb2.Money(currency=currency, amount_minor=amount_minor),
                memo=memo,
            ),
        )

    async def get_supply(self, *currencies: str) -> central_bank_pb2.GetSupplyResponse:
        return await self.call(
            self.central_bank.GetSupply,
            central_bank_pb2.GetSupplyRequest(currencies=list(currencies)),
        )

    # -- wallets -------------------------------------------------------------------------------
    async def open_wallet(
        self,
        institution_id: str,
        owner_public_key: bytes,
        *,
        kind: str = "PERSONAL",
        tier: int = 2,
        display_name: str = "",
        request_id: str = "",
        dry_run: bool = False,
    ) -> wallet_pb2.OpenWalletResponse:
        return await self.call(
            self.wallets.OpenWallet,
            wallet_pb2.OpenWalletRequest(
                request_id=request_id,
                dry_run=dry_run,
                institution_id=institution_id,
                kind=wallet_pb2.WalletKind.Value(f"WALLET_KIND_{kind}"),
                tier=tier,
                owner_public_key=owner_public_key,
                display_name=display_name,
            ),
        )

    async def get_wallet(self, wallet_id: str) -> wallet_pb2.Wallet:
        reply: wallet_pb2.GetWalletResponse = await self.call(
            self.wallets.GetWallet, wallet_pb2.GetWalletRequest(wallet_id=wallet_id)
        )
        return reply.wallet

    async def transfer_signed(
        self, payload: bytes, signature: bytes, request_id: str, *, dry_run: bool = False
    ) -> wallet_pb2.TransferResponse:
        return await self.call(
            self.wallets.Transfer,
            wallet_pb2.TransferRequest(
                request_id=request_id,
                dry_run=dry_run,
                instruction=wallet_pb2.SignedInstruction(payload=payload, signature=signature),
            ),
        )

    async def transfer(
        self,
        key: object,
        source: str,
        target: str,
        currency: str,
        amount_minor: int,
        *,
        memo: str = "",
        request_id: str = "",
        expires_in_seconds: float = 300.0,
        dry_run: bool = False,
    ) -> wallet_pb2.TransferResponse:
        """Build, sign (with the source owner's ``wallets.OwnerKey``) and send a transfer."""
        from wallets import TransferInstruction, sign_transfer

        request_id = request_id or new_request_id()
        instruction = TransferInstruction(
            source=source,
            target=target,
            currency=currency,
            amount_minor=amount_minor,
            request_id=request_id,
            expires_at_us=int((time.time() + expires_in_seconds) * 1e6),
            memo=memo,
        )
        signed = sign_transfer(key, instruction)  # type: ignore[arg-type]
        return await self.transfer_signed(
            signed.payload, signed.signature, request_id, dry_run=dry_run
        )

    async def journal(
        self, wallet_id: str = "", *, page_size: int = 500
    ) -> AsyncIterator[ledger_pb2.JournalEntry]:
        """Every journal entry touching ``wallet_id`` (or all, for auditors), in order."""
        token = ""
        while True:
            page = await self.call(
                self.wallets.ListJournal,
                wallet_pb2.ListJournalRequest(
                    wallet_id=wallet_id, page_size=page_size, page_token=token
                ),
            )
            for entry in page.entries:
                yield entry
            token = page.next_page_token
            if not token:
                return

    # -- operations ----------------------------------------------------------------------------
    async def get_operation(self, request_id: str) -> operation_pb2.Operation:
        reply: operation_pb2.GetOperationResponse = await self.call(
            self.operations.GetOperation,
            operation_pb2.GetOperationRequest(request_id=request_id),
        )
        return reply.operation


__all__ = ["ApiError", "Client", "new_request_id"]
