"""SettlementService: FX quotes, PvP and DvP settlements, and reading them.

A settlement is prepared by a ledger command (idempotent by request id: its stored outcome is
the settlement as prepared), then driven to its outcome by the coordinator in this call; a retry
with the same request id replays the preparation and drives again, so it answers the settlement
as it now is. What a crash interrupts, the recovery sweep finishes (docs/settlement.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Generic, TypeVar

import grpc
from condpay.v1 import finance_pb2, operation_pb2, settlement_pb2, settlement_pb2_grpc

from bridges import MarketOrder
from bridges.errors import BridgeError, Unavailable
from settlement.api import requests, scopes
from settlement.api import settlement_views as views
from settlement.api.identity import current_caller
from settlement.api.replies import Reply, ReplyT, replay_stored
from settlement.api.signatures import check_wallet_signature
from settlement.coordination.coordinator import quote_record
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import commands, settlements
from settlement.ledger.commands import reserve_wallet_id
from settlement.ledger.engine import OperationInfo, StoredFailure
from settlement.ledger.records import QuoteRecord, SettlementKind, SettlementRecord
from settlement.runtime import Runtime
from wallets import DvPInstruction, PvPInstruction

_SERVICE = "/condpay.v1.SettlementService/"
SettleReplyT = TypeVar(
    "SettleReplyT",
    settlement_pb2.SettlePvPResponse,
    settlement_pb2.SettleDvPResponse,
    finance_pb2.DisposeCollateralResponse,
)


def _quote_reply(result: object, op: operation_pb2.OperationInfo) -> settlement_pb2.QuoteFxResponse:
    assert isinstance(result, QuoteRecord)
    return settlement_pb2.QuoteFxResponse(operation=op, quote=views.quote(result))


class _Kept(Generic[ReplyT]):
    """A reply codec that also keeps the settlement the command answered, for the coordinator to
    drive without reading it back (a replayed call has none: the coordinator reads it)."""

    def __init__(self, codec: Reply[ReplyT]) -> None:
        self._codec = codec
        self.settlement: SettlementRecord | None = None

    def build(self, result: object, info: OperationInfo) -> ReplyT:
        if isinstance(result, SettlementRecord):
            self.settlement = replace(result)
        return self._codec.build(result, info)

    def replay(self, stored: bytes) -> ReplyT:
        return self._codec.replay(stored)


class SettlementService(settlement_pb2_grpc.SettlementServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._gateway = reserve_wallet_id(runtime.settings.bridge_gateway)

        def pvp(
            result: object, op: operation_pb2.OperationInfo
        ) -> settlement_pb2.SettlePvPResponse:
            assert isinstance(result, SettlementRecord)
            return settlement_pb2.SettlePvPResponse(
                operation=op, settlement=views.settlement(result, self._gateway)
            )

        def dvp(
            result: object, op: operation_pb2.OperationInfo
        ) -> settlement_pb2.SettleDvPResponse:
            assert isinstance(result, SettlementRecord)
            return settlement_pb2.SettleDvPResponse(
                operation=op, settlement=views.settlement(result, self._gateway)
            )

        self._pvp = Reply(settlement_pb2.SettlePvPResponse, pvp)
        self._dvp = Reply(settlement_pb2.SettleDvPResponse, dvp)
        self._quote = Reply(settlement_pb2.QuoteFxResponse, _quote_reply)

    def view(self, settlement: SettlementRecord) -> settlement_pb2.Settlement:
        return views.settlement(settlement, self._gateway)

    def bridge_needed(self) -> None:
        if self._rt.bridge is None:
            raise SettlementError(
                Reason.BRIDGE_NOT_CONFIGURED,
                "this server has no bridge for cross-currency settlement (CONDPAY_BRIDGE)",
            )

    # -- quotes --------------------------------------------------------------------------------
    async def QuoteFx(
        self, request: settlement_pb2.QuoteFxRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.QuoteFxResponse:
        base = requests.command_fields(_SERVICE + "QuoteFx", current_caller(), request)
        stored = await self._rt.reader.operation(base["caller"], base["request_id"])
        if stored is not None:  # a retry: answered from storage, without asking for a new quote
            return replay_stored(stored, base, self._quote)
        command: commands.Command
        try:
            quote = await self._bridge_quote(request, base["caller"])
        except SettlementError as error:
            if error.reason in (Reason.BRIDGE_UNAVAILABLE, Reason.BRIDGE_NOT_CONFIGURED):
                raise  # transient or this server's set-up: not the request's stored outcome
            command = commands.Refuse(**base, error=error)
        else:
            command = settlements.RecordQuote(**base, quote=quote)
        return await self._rt.engine.execute(command, self._quote)

    async def _bridge_quote(
        self, request: settlement_pb2.QuoteFxRequest, caller: str
    ) -> QuoteRecord:
        source = requests.currency(request.source_currency, "source_currency")
        target = requests.currency(request.target_currency, "target_currency")
        if source == target:
            raise requests.invalid(
                Reason.SAME_CURRENCY, "target_currency", "a quote converts between two currencies"
            )
        which = request.WhichOneof("amount")
        if which is None:
            raise requests.invalid(
                Reason.MISSING_FIELD, "amount", "source_amount_minor or target_amount_minor"
            )
        amount = requests.positive_amount(getattr(request, which), which)
        if which == "source_amount_minor":
            return await self._ask_bridge(source, target, caller, source_amount_minor=amount)
        return await self._ask_bridge(source, target, caller, target_amount_minor=amount)

    async def _ask_bridge(
        self,
        source: str,
        target: str,
        caller: str,
        *,
        source_amount_minor: int | None = None,
        target_amount_minor: int | None = None,
    ) -> QuoteRecord:
        self.bridge_needed()
        assert self._rt.bridge is not None
        try:
            quote = await self._rt.bridge.quote(
                source,
                target,
                source_amount_minor=source_amount_minor,
                target_amount_minor=target_amount_minor,
            )
        except Unavailable:
            raise SettlementError(
                Reason.BRIDGE_UNAVAILABLE, "the bridge did not answer; retry"
            ) from None
        except BridgeError as error:
            raise SettlementError(
                Reason.BRIDGE_REFUSED,
                f"the bridge refused the quote: {error.message}",
                metadata={"bridge_reason": error.reason.name, **error.metadata},
            ) from None
        return quote_record(quote, caller)

    async def _market_quote(self, terms: settlements.Terms, caller: str) -> QuoteRecord | None:
        """At market (a cross-currency instruction without a quote id): the bridge's quote for
        the amount to arrive, asked for now, in this call; None for a quoted or one-currency
        instruction."""
        if terms.quote_id or terms.pay_currency == terms.receive_currency:
            return None
        return await self._ask_bridge(
            terms.pay_currency,
            terms.receive_currency,
            caller,
            target_amount_minor=terms.receive_minor,
        )

    # -- settlements ---------------------------------------------------------------------------
    async def settle(
        self,
        base: requests.CommandFields,
        prepare: commands.Command | SettlementError,
        codec: Reply[SettleReplyT],
    ) -> SettleReplyT:
        """Prepare the settlement (or store the refusal), then carry it out: the reply shows it
        as it then is. A bridge that did not answer an at-market quote is no outcome to store: a
        retry of a request whose outcome is stored is answered with it, anything else is
        BRIDGE_UNAVAILABLE, to retry with the same request id."""
        if isinstance(prepare, SettlementError):
            if prepare.reason is Reason.BRIDGE_UNAVAILABLE:
                stored = await self._rt.reader.operation(base["caller"], base["request_id"])
                if stored is None:
                    raise prepare
                return await self._carry_out(replay_stored(stored, base, codec), None, base)
            prepare = commands.Refuse(**base, error=prepare)
        kept = _Kept(codec)
        try:
            reply = await self._rt.engine.execute(prepare, kept)
        except (SettlementError, StoredFailure) as error:
            # A refusal (now or stored before) or a write that never ran: no settlement took
            # this call's bridge leg. Not after a write whose outcome may be unknown:
            # that leg is left to expire (STORAGE_UNAVAILABLE).
            if (
                not isinstance(error, SettlementError)
                or error.reason is not Reason.STORAGE_UNAVAILABLE
            ):
                await self._after_prepare(prepare, None)
            raise
        await self._after_prepare(prepare, kept.settlement)
        return await self._carry_out(reply, kept.settlement, base)

    async def _after_prepare(
        self, prepare: commands.Command, taken: SettlementRecord | None
    ) -> None:
        coordinator = self._rt.coordinator
        if isinstance(prepare, settlements.PrepareSettlement) and coordinator is not None:
            await coordinator.after_prepare(prepare, taken)

    async def _carry_out(
        self,
        reply: SettleReplyT,
        known: SettlementRecord | None,
        base: requests.CommandFields,
    ) -> SettleReplyT:
        """Drive the prepared settlement as far as it goes now (a no-op for a dry run, a
        one-currency DvP, final at once, or a settlement already done)."""
        settlement = reply.settlement
        coordinator = self._rt.coordinator
        if base["dry_run"] or coordinator is None or not settlement.settlement_id:
            return reply
        driven = await coordinator.drive(settlement.settlement_id, known)
        settlement.CopyFrom(views.settlement(driven, self._gateway))
        return reply

    async def SettlePvP(
        self, request: settlement_pb2.SettlePvPRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.SettlePvPResponse:
        base = requests.command_fields(_SERVICE + "SettlePvP", current_caller(), request)
        try:
            signed = request.payer_instruction
            pvp = requests.signed(
                self._rt, base, PvPInstruction, signed.payload, "payer_instruction.payload", "PvP"
            )
            requests.currency(pvp.pay_currency, "payer_instruction.pay_currency")
            requests.currency(pvp.receive_currency, "payer_instruction.receive_currency")
            if pvp.pay_currency == pvp.receive_currency:
                raise requests.invalid(
                    Reason.SAME_CURRENCY,
                    "payer_instruction.receive_currency",
                    "PvP exchanges two currencies; pay in one currency with WalletService.Transfer",
                )
            requests.positive_amount(pvp.pay_minor, "payer_instruction.pay_minor")
            requests.positive_amount(pvp.receive_minor, "payer_instruction.receive_minor")
            self.bridge_needed()
            await check_wallet_signature(self._rt, pvp.payer, signed.signature, signed.payload)
            terms = settlements.Terms(
                payer=pvp.payer,
                pay_currency=pvp.pay_currency,
                pay_minor=pvp.pay_minor,
                payee=pvp.payee,
                receive_currency=pvp.receive_currency,
                receive_minor=pvp.receive_minor,
                quote_id=pvp.quote_id,
                expires_at_us=pvp.expires_at_us,
            )
            prepare: commands.Command | SettlementError = await self.prepare(
                base, SettlementKind.PVP, terms
            )
        except SettlementError as error:
            prepare = error
        return await self.settle(base, prepare, self._pvp)

    async def prepare(
        self,
        base: requests.CommandFields,
        kind: SettlementKind,
        terms: settlements.Terms,
        *,
        loan_id: str = "",
    ) -> settlements.PrepareSettlement:
        """The command that prepares a settlement of ``terms``; ``loan_id``: the sale of a
        defaulted loan's receipt. At market, the bridge is asked for the quote now, and its leg
        prepared with it before the core's write, which then holds and decides in one
        (docs/settlement.md, "At market")."""
        settlement_id = settlements.derive_settlement_id(base["caller"], base["request_id"])
        caller, coordinator = base["caller"], self._rt.coordinator
        market_quote: QuoteRecord | None = None
        attempt, leg = 1, None
        at_market = not terms.quote_id and terms.pay_currency != terms.receive_currency
        if at_market and coordinator is not None and not base["dry_run"]:
            order = MarketOrder(
                terms.pay_currency, terms.receive_currency, target_amount_minor=terms.receive_minor
            )
            quote, attempt, leg = await coordinator.prepare_at_market(settlement_id, order)
            if quote is not None:
                market_quote = quote_record(quote, caller)
        if market_quote is None:  # quoted, one currency, a dry run, or the bridge said no
            market_quote = await self._market_quote(terms, caller)
        return settlements.PrepareSettlement(
            **base,
            settlement_id=settlement_id,
            kind=kind,
            terms=terms,
            gateway=self._gateway,
            hold_ms=self._rt.settings.pvp_hold_ms,
            market_quote=market_quote,
            loan_id=loan_id,
            attempt=attempt,
            bridge_leg=leg,
        )

    async def SettleDvP(
        self, request: settlement_pb2.SettleDvPRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.SettleDvPResponse:
        base = requests.command_fields(_SERVICE + "SettleDvP", current_caller(), request)
        try:
            dvp = requests.signed(self._rt, base, DvPInstruction, request.payload, "payload", "DvP")
            requests.currency(dvp.pay_currency, "payload.pay_currency")
            requests.currency(dvp.receive_currency, "payload.receive_currency")
            requests.positive_amount(dvp.pay_minor, "payload.pay_minor")
            requests.positive_amount(dvp.receive_minor, "payload.receive_minor")
            if dvp.units <= 0:
                raise requests.invalid(Reason.INVALID_UNITS, "payload.units", "units must be > 0")
            if dvp.seller == dvp.buyer:
                raise requests.invalid(
                    Reason.SAME_SOURCE_AND_TARGET, "payload.buyer", "the buyer is the seller"
                )
            if dvp.pay_currency == dvp.receive_currency:
                if dvp.pay_minor != dvp.receive_minor or dvp.quote_id:
                    raise requests.mismatch(
                        "payload.receive_minor",
                        "in one currency the seller receives what the buyer pays, with no quote",
                    )
            else:
                self.bridge_needed()
            await check_wallet_signature(
                self._rt, dvp.seller, request.seller_signature, request.payload
            )
            await check_wallet_signature(
                self._rt, dvp.buyer, request.buyer_signature, request.payload
            )
            terms = settlements.Terms(
                payer=dvp.buyer,
                pay_currency=dvp.pay_currency,
                pay_minor=dvp.pay_minor,
                payee=dvp.seller,
                receive_currency=dvp.receive_currency,
                receive_minor=dvp.receive_minor,
                quote_id=dvp.quote_id,
                title_id=dvp.title_id,
                title_units=dvp.units,
                expires_at_us=dvp.expires_at_us,
            )
            prepare: commands.Command | SettlementError = await self.prepare(
                base, SettlementKind.DVP, terms
            )
        except SettlementError as error:
            prepare = error
        return await self.settle(base, prepare, self._dvp)

    # -- reads ---------------------------------------------------------------------------------
    async def GetSettlement(
        self, request: settlement_pb2.GetSettlementRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.GetSettlementResponse:
        requests.identifier(request.settlement_id, "settlement_id")
        found = await self._rt.settlements.settlement(
            request.settlement_id, scopes.settlements(current_caller())
        )
        if found is None:  # or not the caller's to see: the same answer
            raise not_found(Reason.SETTLEMENT_NOT_FOUND, "settlement", request.settlement_id)
        return settlement_pb2.GetSettlementResponse(
            settlement=views.settlement(found, self._gateway)
        )

    async def ListSettlements(
        self, request: settlement_pb2.ListSettlementsRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.ListSettlementsResponse:
        caller = current_caller()
        size = scopes.page_size(request.page_size)
        state = views.STATES_BY_PROTO.get(request.state)
        method = _SERVICE + "ListSettlements"
        filters = {
            "state": state.value if state else "",
            "origin_payment_id": request.origin_payment_id,
        }
        after = self._rt.page_tokens.open(caller, method, filters, request.page_token)
        found = await self._rt.settlements.settlements(
            states=(state.value,) if state else (),
            origin_payment_id=request.origin_payment_id or None,
            after_id=after,
            limit=size + 1,
            visible=scopes.settlements(caller),
        )
        more = len(found) > size
        found = found[:size]
        return settlement_pb2.ListSettlementsResponse(
            settlements=[views.settlement(s, self._gateway) for s in found],
            next_page_token=(
                self._rt.page_tokens.seal(caller, method, filters, found[-1].settlement_id)
                if more
                else ""
            ),
        )
