"""The gRPC client: the same :class:`bridges.BridgeAdminApi` as the in-process bridge, the same
answers, the same error classes (bridges/_status.py rebuilds them from the status).

A client is one participant: under mutual TLS (``tls=ClientTls...``) the certificate says who;
in the bridge's ``--insecure`` development mode the ``identity`` travels as the
``condpay-bridge-participant`` metadata of every call. :meth:`acting_as` gives another
participant's client over the same channel (the development mode only: a certificate names one).

It does not retry: the outcome of a call that got no answer is unknown (``Unavailable``), and
what to do about it is the caller's decision (the core retries the same transfer id, bounded).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import grpc
from condpay.bridge.v1 import bridge_pb2 as pb
from condpay.bridge.v1 import bridge_pb2_grpc

from bridges import _convert as cv
from bridges import limits
from bridges._identity import METADATA_KEY, Identity
from bridges._model import (
    AccountBalance,
    AccountKind,
    AuditReport,
    CurrencySupply,
    Finality,
    Issuance,
    MarketOrder,
    Money,
    Participant,
    PublishedRate,
    Quote,
    Rate,
    TickResult,
    Transfer,
    ValidatorSet,
)
from bridges._status import from_rpc_error
from bridges._tls import ClientTls

R = TypeVar("R")


class BridgeClient:
    """``async with BridgeClient("127.0.0.1:50061", identity=..., tls=...) as bridge: ...``

    ``tls`` None: plaintext, for a bridge in its development mode; ``identity`` is then sent as
    metadata (None: no identity, which the bridge refuses)."""

    def __init__(
        self,
        target: str,
        *,
        identity: Identity | None = None,
        tls: ClientTls | None = None,
        deadline_ms: int = limits.RPC_DEADLINE_MS,
        _channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.target = target
        self.identity = identity
        self._tls = tls
        self._deadline_s = deadline_ms / 1000
        # Reconnect quickly after the bridge restarts (gRPC's default backoff starts at 1 s).
        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._owns_channel = _channel is None
        if _channel is not None:
            self._channel = _channel
        elif tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)
        self._metadata = (
            ((METADATA_KEY, str(identity)),) if identity is not None and tls is None else None
        )
        self._bridge: Any = bridge_pb2_grpc.BridgeServiceStub(self._channel)
        self._admin: Any = bridge_pb2_grpc.BridgeAdminServiceStub(self._channel)

    def acting_as(self, identity: Identity | None) -> BridgeClient:
        """Another participant over this channel: the development mode's metadata identity. (Under
        TLS the certificate decides, so this is refused.) Closing it leaves the channel open."""
        if self._tls is not None:
            raise ValueError("under mutual TLS a client is the identity of its certificate")
        return BridgeClient(
            self.target,
            identity=identity,
            deadline_ms=int(self._deadline_s * 1000),
            _channel=self._channel,
        )

    async def __aenter__(self) -> BridgeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def _call(self, method: Callable[..., Awaitable[R]], request: object) -> R:
        try:
            return await method(request, timeout=self._deadline_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    # ---------------------------------------------------------------- BridgeApi

    async def validators(self) -> ValidatorSet:
        reply: pb.ListValidatorsResponse = await self._call(
            self._bridge.ListValidators, pb.ListValidatorsRequest()
        )
        return cv.validators_of(reply)

    async def quote(
        self,
        source_currency: str,
        target_currency: str,
        *,
        source_amount_minor: int | None = None,
        target_amount_minor: int | None = None,
        liquidity_provider_id: str = "",
        ttl_ms: int = 0,
    ) -> Quote:
        request = pb.CreateQuoteRequest(
            source_currency=source_currency,
            target_currency=target_currency,
            liquidity_provider_id=liquidity_provider_id,
            ttl_ms=ttl_ms,
        )
        if source_amount_minor is not None:
            request.source_amount_minor = source_amount_minor
        if target_amount_minor is not None:
            request.target_amount_minor = target_amount_minor
        if source_amount_minor is not None and target_amount_minor is not None:
            # A oneof holds one of them; send neither, and the bridge refuses as in process.
            request.ClearField("amount")
        reply: pb.CreateQuoteResponse = await self._call(self._bridge.CreateQuote, request)
        return cv.quote_of(reply.quote)

    async def prepare(
        self, transfer_id: str, *, quote_id: str, payer_id: str, payee_id: str, timeout_ms: int
    ) -> Transfer:
        reply: pb.PrepareTransferResponse = await self._call(
            self._bridge.PrepareTransfer,
            pb.PrepareTransferRequest(
                transfer_id=transfer_id,
                quote_id=quote_id,
                payer_id=payer_id,
                payee_id=payee_id,
                timeout_ms=timeout_ms,
            ),
        )
        return cv.transfer_of(reply.transfer, replayed=reply.replayed)

    async def prepare_at_market(
        self,
        transfer_id: str,
        *,
        order: MarketOrder,
        payer_id: str,
        payee_id: str,
        timeout_ms: int,
    ) -> tuple[Quote, Transfer]:
        reply: pb.PrepareTransferResponse = await self._call(
            self._bridge.PrepareTransfer,
            pb.PrepareTransferRequest(
                transfer_id=transfer_id,
                market=cv.market_order_pb(order),
                payer_id=payer_id,
                payee_id=payee_id,
                timeout_ms=timeout_ms,
            ),
        )
        return cv.quote_of(reply.quote), cv.transfer_of(reply.transfer, replayed=reply.replayed)

    async def commit(self, transfer_id: str) -> Transfer:
        reply: pb.CommitTransferResponse = await self._call(
            self._bridge.CommitTransfer, pb.CommitTransferRequest(transfer_id=transfer_id)
        )
        return cv.transfer_of(reply.transfer, replayed=reply.replayed)

    async def commit_final(self, transfer_id: str) -> tuple[Transfer, Finality]:
        reply: pb.CommitTransferResponse = await self._call(
            self._bridge.CommitTransfer,
            pb.CommitTransferRequest(transfer_id=transfer_id, wait_for_finality=True),
        )
        transfer = cv.transfer_of(reply.transfer, replayed=reply.replayed)
        if not reply.HasField("finality"):  # a bridge from before wait_for_finality
            return transfer, Finality(transfer_id, None, None)
        return transfer, cv.finality_of(reply.finality)

    async def abort(self, transfer_id: str) -> Transfer:
        reply: pb.AbortTransferResponse = await self._call(
            self._bridge.AbortTransfer, pb.AbortTransferRequest(transfer_id=transfer_id)
        )
        return cv.transfer_of(reply.transfer, replayed=reply.replayed)

    async def status(self, transfer_id: str) -> Transfer:
        reply: pb.GetTransferResponse = await self._call(
            self._bridge.GetTransfer, pb.GetTransferRequest(transfer_id=transfer_id)
        )
        return cv.transfer_of(reply.transfer)

    async def finality(self, transfer_id: str) -> Finality:
        reply: pb.GetFinalityResponse = await self._call(
            self._bridge.GetFinality, pb.GetFinalityRequest(transfer_id=transfer_id)
        )
        return cv.finality_of(reply)

    async def balances(self, participant_id: str = "") -> tuple[AccountBalance, ...]:
        reply: pb.ListBalancesResponse = await self._call(
            self._bridge.ListBalances, pb.ListBalancesRequest(participant_id=participant_id)
        )
        return tuple(cv.balance_of(b) for b in reply.balances)

    async def supply(self) -> tuple[CurrencySupply, ...]:
        reply: pb.GetSupplyResponse = await self._call(
            self._bridge.GetSupply, pb.GetSupplyRequest()
        )
        return tuple(cv.supply_of(s) for s in reply.supply)

    # ---------------------------------------------------------------- BridgeAdminApi

    async def register_bank(self, participant_id: str, *, name: str = "") -> Participant:
        reply: pb.RegisterBankResponse = await self._call(
            self._admin.RegisterBank,
            pb.RegisterBankRequest(participant_id=participant_id, name=name),
        )
        return cv.participant_of(reply.participant, replayed=reply.replayed)

    async def register_liquidity_provider(
        self, participant_id: str, *, spread_ppm: int
    ) -> Participant:
        reply: pb.RegisterLiquidityProviderResponse = await self._call(
            self._admin.RegisterLiquidityProvider,
            pb.RegisterLiquidityProviderRequest(
                participant_id=participant_id, spread_ppm=spread_ppm
            ),
        )
        return cv.participant_of(reply.participant, replayed=reply.replayed)

    async def publish_rate(self, currency: str, value: Rate) -> PublishedRate:
        reply: pb.PublishRateResponse = await self._call(
            self._admin.PublishRate,
            pb.PublishRateRequest(currency=currency, value=cv.rate_pb(value)),
        )
        return cv.published_rate_of(reply.rate)

    async def issue(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance:
        reply: pb.IssueResponse = await self._call(
            self._admin.Issue,
            pb.IssueRequest(
                request_id=request_id,
                participant_id=participant_id,
                account_kind=cv.account_kind_pb(account_kind),
                amount=cv.money_pb(amount),
            ),
        )
        return cv.issuance_of(request_id, reply)

    async def redeem(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance:
        reply: pb.RedeemResponse = await self._call(
            self._admin.Redeem,
            pb.RedeemRequest(
                request_id=request_id,
                participant_id=participant_id,
                account_kind=cv.account_kind_pb(account_kind),
                amount=cv.money_pb(amount),
            ),
        )
        return cv.issuance_of(request_id, reply)

    async def audit(self) -> AuditReport:
        reply: pb.AuditLedgerResponse = await self._call(
            self._admin.AuditLedger, pb.AuditLedgerRequest()
        )
        return cv.audit_of(reply)

    async def tick(self) -> TickResult:
        reply: pb.TickResponse = await self._call(self._admin.Tick, pb.TickRequest())
        return cv.tick_of(reply)
