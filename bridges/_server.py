"""The bridge as its own gRPC server (``condpay bridge serve`` / ``python -m bridges serve``).

Every call is made by a participant identity (bridges/_identity.py): the client certificate's
``condpay-bridge://<kind>/<id>`` under mutual TLS, or, only in the ``--insecure`` development
mode, the ``condpay-bridge-participant`` metadata. One wrapper resolves it and checks the role x
method table (bridges/_authz.py) before any handler runs. Handlers parse the request, call the
bridge (a :class:`FaultyBridge` over the in-process :class:`Bridge`, so fault plans mean the same
on both transports) and build the reply; one wrapper maps errors. A timer task does what
:meth:`Bridge.tick` does every ``block_interval_ms``, and GetFinality waits for its next block
rather than sealing one (:meth:`Bridge.finality`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc
from condpay.bridge.v1 import bridge_pb2 as pb
from condpay.bridge.v1 import bridge_pb2_grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bridges import _convert as cv
from bridges import limits
from bridges._api import BridgeAdminApi
from bridges._authz import authorize, issuer_of
from bridges._bridge import Bridge
from bridges._faults import FaultPlan, FaultyBridge, exit_process
from bridges._identity import (
    CURRENT,
    Identity,
    Kind,
    identity_from_auth_context,
    identity_from_metadata,
)
from bridges._metrics import BridgeMetrics, process_metrics, serve_metrics
from bridges._pinning import export_validators
from bridges._status import internal_status, to_status
from bridges._tls import ServerTls
from bridges.errors import BridgeError, Reason, error

log = logging.getLogger("condpay.bridge")
R = TypeVar("R", bound=Message)
SERVICE_NAMES: Final = (
    pb.DESCRIPTOR.services_by_name["BridgeService"].full_name,
    pb.DESCRIPTOR.services_by_name["BridgeAdminService"].full_name,
)


def _handled(
    handler: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]:
    """Identity, authorisation and errors, in one place, before and around every handler: the
    caller is resolved from the transport and checked against the role x method table; the
    handler runs with :data:`bridges._identity.CURRENT` set to it. A BridgeError travels with
    its reason and metadata; anything else is INTERNAL, without its text (which goes to the
    log)."""
    method = handler.__name__

    @functools.wraps(handler)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        started, reason = time.perf_counter(), ""
        status: grpc.Status | None = None
        try:
            caller = self.identify(context)
            authorize(method, caller, request)
            token = CURRENT.set(caller)
            try:
                return await handler(self, request, context)
            finally:
                CURRENT.reset(token)
        except BridgeError as exc:
            status, reason = to_status(exc), exc.reason.value
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            status, reason = internal_status(), "INTERNAL"
        finally:
            metrics: BridgeMetrics | None = self.metrics
            if metrics is not None:
                code = "OK" if status is None else status.code.name
                metrics.rpc(method, code, reason, time.perf_counter() - started)
        await context.abort_with_status(status)
        raise AssertionError("abort_with_status returns only by raising")

    return call


class BridgeServicer(
    bridge_pb2_grpc.BridgeServiceServicer, bridge_pb2_grpc.BridgeAdminServiceServicer
):
    def __init__(
        self, api: BridgeAdminApi, *, insecure: bool, metrics: BridgeMetrics | None = None
    ) -> None:
        self._api = api
        self._insecure = insecure
        self.metrics = metrics

    def identify(self, context: grpc.aio.ServicerContext) -> Identity:
        """The caller: the verified certificate's identity, or in the development mode the
        metadata's (and then never the certificate's, since there is none)."""
        if self._insecure:
            return identity_from_metadata(context.invocation_metadata())
        return identity_from_auth_context(context.auth_context())

    # ---------------------------------------------------------------- BridgeService

    @_handled
    async def ListValidators(
        self, request: pb.ListValidatorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListValidatorsResponse:
        return cv.validators_pb(await self._api.validators())

    @_handled
    async def CreateQuote(
        self, request: pb.CreateQuoteRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateQuoteResponse:
        which = request.WhichOneof("amount")
        quote = await self._api.quote(
            request.source_currency,
            request.target_currency,
            source_amount_minor=request.source_amount_minor
            if which == "source_amount_minor"
            else None,
            target_amount_minor=request.target_amount_minor
            if which == "target_amount_minor"
            else None,
            liquidity_provider_id=request.liquidity_provider_id,
            ttl_ms=request.ttl_ms,
        )
        return pb.CreateQuoteResponse(quote=cv.quote_pb(quote))

    @_handled
    async def PrepareTransfer(
        self, request: pb.PrepareTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.PrepareTransferResponse:
        if request.HasField("market"):
            if request.quote_id:
                raise error(
                    Reason.MALFORMED_REQUEST,
                    "give a quote_id or a market order, not both",
                    field="market",
                )
            quote, transfer = await self._api.prepare_at_market(
                request.transfer_id,
                order=cv.market_order_of(request.market),
                payer_id=request.payer_id,
                payee_id=request.payee_id,
                timeout_ms=request.timeout_ms,
            )
            return pb.PrepareTransferResponse(
                transfer=cv.transfer_pb(transfer),
                replayed=transfer.replayed,
                quote=cv.quote_pb(quote),
            )
        transfer = await self._api.prepare(
            request.transfer_id,
            quote_id=request.quote_id,
            payer_id=request.payer_id,
            payee_id=request.payee_id,
            timeout_ms=request.timeout_ms,
        )
        return pb.PrepareTransferResponse(
            transfer=cv.transfer_pb(transfer), replayed=transfer.replayed
        )

    @_handled
    async def CommitTransfer(
        self, request: pb.CommitTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommitTransferResponse:
        if not request.wait_for_finality:
            transfer = await self._api.commit(request.transfer_id)
            return pb.CommitTransferResponse(
                transfer=cv.transfer_pb(transfer), replayed=transfer.replayed
            )
        transfer, finality = await self._api.commit_final(request.transfer_id)
        return pb.CommitTransferResponse(
            transfer=cv.transfer_pb(transfer),
            replayed=transfer.replayed,
            finality=cv.finality_pb(finality),
        )

    @_handled
    async def AbortTransfer(
        self, request: pb.AbortTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbortTransferResponse:
        transfer = await self._api.abort(request.transfer_id)
        return pb.AbortTransferResponse(
            transfer=cv.transfer_pb(transfer), replayed=transfer.replayed
        )

    @_handled
    async def GetTransfer(
        self, request: pb.GetTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTransferResponse:
        return pb.GetTransferResponse(
            transfer=cv.transfer_pb(await self._api.status(request.transfer_id))
        )

    @_handled
    async def GetFinality(
        self, request: pb.GetFinalityRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFinalityResponse:
        return cv.finality_pb(await self._api.finality(request.transfer_id))

    @_handled
    async def ListBalances(
        self, request: pb.ListBalancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBalancesResponse:
        caller = CURRENT.get()
        assert caller is not None, "set by _handled"
        participant_id = request.participant_id
        if caller.kind in (Kind.BANK, Kind.LIQUIDITY_PROVIDER):
            participant_id = caller.id  # its own (authorize refused anyone else's)
        balances = await self._api.balances(participant_id)
        if caller.kind is Kind.CENTRAL_BANK:  # every holder, of its own currency only
            balances = tuple(b for b in balances if b.currency == issuer_of(caller))
        return pb.ListBalancesResponse(balances=[cv.balance_pb(b) for b in balances])

    @_handled
    async def GetSupply(
        self, request: pb.GetSupplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSupplyResponse:
        return pb.GetSupplyResponse(supply=[cv.supply_pb(s) for s in await self._api.supply()])

    # ---------------------------------------------------------------- BridgeAdminService

    @_handled
    async def RegisterBank(
        self, request: pb.RegisterBankRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterBankResponse:
        participant = await self._api.register_bank(request.participant_id, name=request.name)
        return pb.RegisterBankResponse(
            participant=cv.participant_pb(participant), replayed=participant.replayed
        )

    @_handled
    async def RegisterLiquidityProvider(
        self, request: pb.RegisterLiquidityProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterLiquidityProviderResponse:
        participant = await self._api.register_liquidity_provider(
            request.participant_id, spread_ppm=request.spread_ppm
        )
        return pb.RegisterLiquidityProviderResponse(
            participant=cv.participant_pb(participant), replayed=participant.replayed
        )

    @_handled
    async def PublishRate(
        self, request: pb.PublishRateRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishRateResponse:
        value = cv.required_rate(request.value, request.HasField("value"), "value")
        rate = await self._api.publish_rate(request.currency, value)
        return pb.PublishRateResponse(rate=cv.published_rate_pb(rate))

    @_handled
    async def Issue(
        self, request: pb.IssueRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssueResponse:
        account_kind = cv.account_kind_of(request.account_kind)  # fields in declared order
        amount = cv.required_money(request.amount, request.HasField("amount"), "amount")
        issuance = await self._api.issue(
            request.request_id,
            participant_id=request.participant_id,
            amount=amount,
            account_kind=account_kind,
        )
        return pb.IssueResponse(account=cv.balance_pb(issuance.account), replayed=issuance.replayed)

    @_handled
    async def Redeem(
        self, request: pb.RedeemRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedeemResponse:
        account_kind = cv.account_kind_of(request.account_kind)  # fields in declared order
        amount = cv.required_money(request.amount, request.HasField("amount"), "amount")
        issuance = await self._api.redeem(
            request.request_id,
            participant_id=request.participant_id,
            amount=amount,
            account_kind=account_kind,
        )
        return pb.RedeemResponse(
            account=cv.balance_pb(issuance.account), replayed=issuance.replayed
        )

    @_handled
    async def AuditLedger(
        self, request: pb.AuditLedgerRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuditLedgerResponse:
        return cv.audit_pb(await self._api.audit())

    @_handled
    async def Tick(
        self, request: pb.TickRequest, context: grpc.aio.ServicerContext
    ) -> pb.TickResponse:
        return cv.tick_pb(await self._api.tick())


@dataclass(slots=True)
class RunningServer:
    server: grpc.aio.Server
    port: int
    api: BridgeAdminApi
    timer: asyncio.Task[None] | None

    async def stop(self, grace_ms: int = limits.SHUTDOWN_GRACE_MS) -> None:
        """Stop the timer, let calls in flight finish, close the bridge."""
        if self.timer is not None:
            self.timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.timer
            _timed_bridge(self.api, None)
        await self.server.stop(grace_ms / 1000)
        await self.api.close()


async def _block_timer(
    api: BridgeAdminApi, interval_ms: int, metrics: BridgeMetrics | None
) -> None:
    # A fixed rate: each block is due one interval after the last one was, however long the
    # tick took (a tick that overran its slot is followed at once, not by a burst).
    loop = asyncio.get_running_loop()
    interval = interval_ms / 1000
    due = loop.time()
    while True:
        due = max(due + interval, loop.time())
        await asyncio.sleep(due - loop.time())
        try:
            result = await api.tick()
            if metrics is not None:
                metrics.tick(result)
        except BridgeError:  # e.g. down after an in-process crash: try again next time
            continue
        except Exception:
            log.exception("block timer")


def _timed_bridge(api: BridgeAdminApi, interval_ms: int | None) -> None:
    """Tell the in-process bridge behind ``api`` whether a block timer ticks it (its finality
    then waits for the timer's next block instead of sealing one)."""
    bridge = api.inner if isinstance(api, FaultyBridge) else api
    if isinstance(bridge, Bridge):
        bridge.block_timer_ms = interval_ms


async def start_server(
    api: BridgeAdminApi,
    addr: str,
    *,
    tls: ServerTls | None = None,
    insecure: bool = False,
    reflection_on: bool | None = None,
    block_interval_ms: int | None = limits.BLOCK_INTERVAL_MS,
    metrics: BridgeMetrics | None = None,
) -> RunningServer:
    """Serve ``api`` on ``addr`` (port 0 picks a free port): under mutual TLS with ``tls``, or
    plaintext with identities from metadata when ``insecure`` (one of the two, explicitly).
    ``reflection_on`` None: on in the insecure mode, off under TLS. ``block_interval_ms`` None:
    no timer (blocks are sealed on commit-batch size, on GetFinality and on Tick only); with one,
    GetFinality waits for the timer's next block (at most ``limits.FINALITY_WAIT_MS``)."""
    if (tls is None) == (not insecure):
        raise ValueError("serve with tls=ServerTls(...) or insecure=True, exactly one")
    server = grpc.aio.server()
    servicer = BridgeServicer(api, insecure=insecure, metrics=metrics)
    bridge_pb2_grpc.add_BridgeServiceServicer_to_server(servicer, server)
    bridge_pb2_grpc.add_BridgeAdminServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_on is None:
        reflection_on = insecure
    if reflection_on:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    port = (
        server.add_insecure_port(addr)
        if tls is None
        else server.add_secure_port(addr, tls.credentials())
    )
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    timer = (
        None
        if block_interval_ms is None
        else asyncio.create_task(
            _block_timer(api, block_interval_ms, metrics), name="bridge-blocks"
        )
    )
    _timed_bridge(api, block_interval_ms)
    return RunningServer(server, port, api, timer)


async def serve(
    addr: str,
    state: Path,
    *,
    plan: FaultPlan,
    block_interval_ms: int = limits.BLOCK_INTERVAL_MS,
    bootstrap: bool = False,
    banks: Mapping[str, str] | None = None,
    tls: ServerTls | None = None,
    reflection_on: bool | None = None,
    export_validators_to: Path | None = None,
    metrics_addr: str = "",
) -> None:
    """Run until SIGTERM or SIGINT. Prints one line when ready: ``serving on HOST:PORT``.
    ``tls`` None: the plaintext development mode (identities from metadata).
    ``bootstrap``: the demo set-up first, with ``banks`` registered and funded beside the demo
    banks. ``export_validators_to``: write the validator set there for relying parties to pin.
    ``metrics_addr``: serve Prometheus /metrics there (bridges/_metrics.py)."""
    bridge = await Bridge.open(state)
    api = await FaultyBridge.wrap(bridge, plan, on_crash=exit_process)
    try:
        if bootstrap:
            from bridges._setup import DEMO_BANKS
            from bridges._setup import bootstrap as run_bootstrap

            await run_bootstrap(bridge, banks={**DEMO_BANKS, **(banks or {})})
        if export_validators_to is not None:
            export_validators(await bridge.validators(), export_validators_to)
        running = await start_server(
            api,
            addr,
            tls=tls,
            insecure=tls is None,
            reflection_on=reflection_on,
            block_interval_ms=block_interval_ms,
            metrics=process_metrics() if metrics_addr else None,
        )
        metrics_http = serve_metrics(metrics_addr)[0] if metrics_addr else None
    except BaseException:
        await api.close()
        raise
    # py-ecc raises the recursion limit on import (wallets/bls.py resets it): keep Python's own.
    sys.setrecursionlimit(1000)
    host = addr.rsplit(":", 1)[0]
    print(
        f"condpay bridge: serving on {host}:{running.port} "
        f"({'mutual TLS' if tls else 'INSECURE, identities from metadata'}, state {state}, "
        f"faults {plan.spec() if plan.enabled else 'none'})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
    if metrics_http is not None:
        metrics_http.shutdown()
