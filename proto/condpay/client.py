"""A small typed asyncio client for the condpay API.

- every mutating call carries a request id (a fresh one unless you give one), and every signed
  document is signed once: a retry resends the same bytes, so it can never apply a call twice;
- retries transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED) with exponential
  backoff, full jitter and an overall deadline (:class:`RetryPolicy`; the defaults ride out a
  server restart of 10 s and more);
- builds requests apart from sending them: ``client.transfer_request(...)`` signs a transfer and
  returns the request, ``client.send(request)`` sends it (and may send it again, byte for byte,
  after a lost reply: the answer is the stored outcome, marked replayed);
- raises the typed errors of :mod:`condpay.errors`.

    async with Client("127.0.0.1:50051", caller="central_bank/pboc") as cb:
        await cb.register_institution("icbc-sz", "ICBC Shenzhen", institution_key.public_key)
        await cb.issue("icbc-sz", "CNY", 100_000_000_00)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from condpay.errors import ApiError, from_rpc_error
from condpay.ids import payment_id_for
from condpay.services import Services, TypedSend
from condpay.tls import secure_channel
from condpay.v1 import (
    asset_pb2,
    central_bank_pb2,
    contract_pb2,
    ledger_pb2,
    money_pb2,
    operation_pb2,
    oracle_pb2,
    payment_pb2,
    settlement_pb2,
    wallet_pb2,
)
from contracts_dsl import BoundParams, CompiledContract, bind_params, escrow_minor
from wallets import (
    AssignmentInstruction,
    CancelInstruction,
    DvPInstruction,
    FundInstruction,
    LockInstruction,
    OwnerKey,
    PaymentPledge,
    PledgeRelease,
    PvPInstruction,
    SignedInstruction,
    TitleIssue,
    TitlePledge,
    TitleSplit,
)

R = TypeVar("R", bound=Message)
CALLER_METADATA_KEY = "condpay-caller"
# Safe to retry because every mutating call carries the same request id: a call the server did
# apply is answered from its stored outcome. CANCELLED is what a draining server gives calls that
# had not reached a handler yet.
TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


#: Channel options of the channels a client opens: after a server restart, reconnect within a
#: second instead of gRPC's default backoff (which grows to minutes).
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a client retries transient failures, always resending the same request bytes.

    ``deadline_seconds`` bounds the whole call, retries and waits included; each attempt waits
    at most ``attempt_timeout_seconds`` (less when the deadline is nearer); between attempts it
    sleeps a random time up to ``first_backoff_seconds`` doubled per attempt, at most
    ``max_backoff_seconds`` (exponential backoff with full jitter, so that many clients that
    lost the same server do not come back at once). ``attempts_max`` (None: as many as the
    deadline allows; 1: no retry) caps the attempts."""

    deadline_seconds: float = 30.0
    attempt_timeout_seconds: float = 10.0
    first_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0
    attempts_max: int | None = None


def _transient(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in TRANSIENT


@dataclass(frozen=True, slots=True)
class AtMarket:
    """A cross-currency price settled at the bridge's rate when the core settles, with no
    QuoteFx call first: exactly ``receive`` (currency, minor units) arrives, and the payer pays
    the bridge's price for it, at most ``pay_at_most`` (refused with QUOTE_ABOVE_LIMIT, nothing
    moved, if the price is higher)."""

    receive: tuple[str, int]
    pay_at_most: tuple[str, int]


Price = tuple[str, int] | settlement_pb2.FxQuote | AtMarket


def _sides(price: Price) -> tuple[tuple[str, int], tuple[str, int], str]:
    """(pay, receive, quote id) of a price: one currency, a quote, or at market."""
    if isinstance(price, AtMarket):
        return price.pay_at_most, price.receive, ""
    if isinstance(price, tuple):
        return price, price, ""
    return (
        (price.source.currency, price.source.amount_minor),
        (price.target.currency, price.target.amount_minor),
        price.quote_id,
    )


class Client(TypedSend):
    def __init__(
        self,
        target: str,
        *,
        caller: str,
        certs_dir: str | Path | None = None,
        server_name: str | None = None,
        channel: grpc.aio.Channel | None = None,
        timeout_seconds: float | None = None,
        attempts_max: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``caller`` is ``<role>/<id>``. With ``certs_dir`` (made by ``condpay certs init``) the
        client connects over mutual TLS with that identity's certificate, and the server takes
        the identity from the certificate; without it, plaintext, and the identity is sent as
        metadata, which only a server in development mode (--insecure) accepts.

        ``retry`` is the :class:`RetryPolicy`; ``timeout_seconds`` (per attempt) and
        ``attempts_max`` override its fields."""
        self._target, self._certs_dir, self._server_name = target, certs_dir, server_name
        if channel is None:
            channel = (
                grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
                if certs_dir is None
                else secure_channel(
                    target, certs_dir, caller, server_name=server_name, options=CHANNEL_OPTIONS
                )
            )
            self._own_channel = True
        else:
            self._own_channel = False
        self._channel = channel
        self._metadata = ((CALLER_METADATA_KEY, caller),)
        # The submitter every document this client signs names (condpay.*.v2): the server
        # refuses a document whose submitter is not the caller.
        self.caller = caller
        policy = retry or RetryPolicy()
        if timeout_seconds is not None:
            policy = dataclasses.replace(policy, attempt_timeout_seconds=timeout_seconds)
        if attempts_max is not None:
            policy = dataclasses.replace(policy, attempts_max=attempts_max)
        self.retry_policy = policy
        self._attempts_max = policy.attempts_max
        # Typed facades of every service (client.api.wallets.transfer(request), ...) and the
        # routing of send(request) by its type.
        self.api = Services(self, self._channel)
        self.retries = 0

    @property
    def channel(self) -> grpc.aio.Channel:
        """The connection, for a generated stub of your own (e.g. to set metadata yourself)."""
        return self._channel

    async def __aenter__(self) -> Self:
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

    def with_caller(self, caller: str) -> Self:
        """Another identity (a client of the same kind): over the same connection in development
        mode; under TLS the identity is the connection's certificate, so a new connection with
        that identity's."""
        return type(self)(
            self._target,
            caller=caller,
            certs_dir=self._certs_dir,
            server_name=self._server_name,
            channel=None if self._certs_dir is not None else self._channel,
            retry=dataclasses.replace(self.retry_policy, attempts_max=self._attempts_max),
        )

    async def call(self, method: Callable[..., Awaitable[R]], request: Message) -> R:
        """Call ``method`` with retries of transient failures (:class:`RetryPolicy`), always
        with the same request bytes; typed errors otherwise."""
        if (
            hasattr(request, "request_id")
            and hasattr(request, "dry_run")
            and not request.request_id
        ):
            request.request_id = new_request_id()
        policy = self.retry_policy
        deadline = time.monotonic() + policy.deadline_seconds
        stop: stop_base = stop_before_delay(policy.deadline_seconds)
        if self._attempts_max is not None:
            stop = stop | stop_after_attempt(self._attempts_max)
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=wait_random_exponential(
                multiplier=policy.first_backoff_seconds, max=policy.max_backoff_seconds
            ),
            stop=stop,
            before_sleep=self._count_retry,
            reraise=True,
        )
        # The server's last answer: when the overall deadline cuts the final attempt short, the
        # caller learns what the server said (e.g. BRIDGE_UNAVAILABLE), not our own timeout.
        answered: grpc.aio.AioRpcError | None = None
        try:
            async for attempt in retrying:
                with attempt:
                    timeout = min(policy.attempt_timeout_seconds, deadline - time.monotonic())
                    cut = timeout < policy.attempt_timeout_seconds
                    try:
                        return await method(
                            request, metadata=self._metadata, timeout=max(timeout, 0.001)
                        )
                    except grpc.aio.AioRpcError as error:
                        if not (cut and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
                            answered = error
                        elif answered is not None:
                            raise answered from None
                        raise
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        raise AssertionError("unreachable: reraise=True raises the last error")

    async def stream(
        self, method: Callable[..., grpc.aio.UnaryStreamCall[Message, R]], request: Message
    ) -> AsyncIterator[R]:
        """A server stream of ``method`` (no retries: resume from the last item seen), with
        typed errors. However the reading stops (the stream ended, an error, the reader
        cancelled or closed), the call is cancelled, so the server gives its stream slot back at
        once: grpc.aio cancels an abandoned stream itself only when the reader was waiting for
        a message, not when it was cancelled while the request was still being sent."""
        call = method(request, metadata=self._metadata)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()  # (a call that has ended already is left as it is)

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1

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
        return await self.api.central_bank.register_institution(
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
        return await self.api.central_bank.issue(
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
        return await self.api.central_bank.redeem(
            central_bank_pb2.RedeemRequest(
                request_id=request_id,
                dry_run=dry_run,
                institution_id=institution_id,
                amount=money_pb2.Money(currency=currency, amount_minor=amount_minor),
                memo=memo,
            ),
        )

    async def get_supply(self, *currencies: str) -> central_bank_pb2.GetSupplyResponse:
        return await self.api.central_bank.get_supply(
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
        return await self.api.wallets.open_wallet(
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
        reply = await self.api.wallets.get_wallet(wallet_pb2.GetWalletRequest(wallet_id=wallet_id))
        return reply.wallet

    async def transfer_signed(
        self, payload: bytes, signature: bytes, request_id: str, *, dry_run: bool = False
    ) -> wallet_pb2.TransferResponse:
        return await self.api.wallets.transfer(
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
        """Build, sign (with the source owner's ``wallets.OwnerKey``) and send a transfer. To
        resend it after a lost reply, build it with :meth:`transfer_request` and :meth:`send`
        that: signing again makes a new document (a new expiry), which the server refuses under
        the same request id (IDEMPOTENCY_KEY_REUSED, saying what the first one did)."""
        return await self.send(
            self.transfer_request(
                key,
                source,
                target,
                currency,
                amount_minor,
                memo=memo,
                request_id=request_id,
                expires_in_seconds=expires_in_seconds,
                dry_run=dry_run,
            )
        )

    def transfer_request(
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
    ) -> wallet_pb2.TransferRequest:
        """A transfer signed once by the source owner's key, for :meth:`send`."""
        from wallets import TransferInstruction, sign_transfer

        request_id = request_id or new_request_id()
        instruction = TransferInstruction(
            source=source,
            target=target,
            currency=currency,
            amount_minor=amount_minor,
            submitter=self.caller,
            request_id=request_id,
            expires_at_us=int((time.time() + expires_in_seconds) * 1e6),
            memo=memo,
        )
        signed = sign_transfer(key, instruction)  # type: ignore[arg-type]
        return wallet_pb2.TransferRequest(
            request_id=request_id,
            dry_run=dry_run,
            instruction=wallet_pb2.SignedInstruction(
                payload=signed.payload, signature=signed.signature
            ),
        )

    async def journal(
        self, wallet_id: str = "", *, after_seq: int = 0, page_size: int = 500
    ) -> AsyncIterator[ledger_pb2.JournalEntry]:
        """Every journal entry touching ``wallet_id`` (or all, for auditors), in order; only
        those after entry ``after_seq`` if given (to follow the journal from where one left)."""
        token = ""
        while True:
            page = await self.api.wallets.list_journal(
                wallet_pb2.ListJournalRequest(
                    wallet_id=wallet_id, page_size=page_size, page_token=token, after_seq=after_seq
                ),
            )
            for entry in page.entries:
                yield entry
            token = page.next_page_token
            if not token:
                return

    # -- operations ----------------------------------------------------------------------------
    async def get_operation(self, request_id: str) -> operation_pb2.Operation:
        reply = await self.api.operations.get_operation(
            operation_pb2.GetOperationRequest(request_id=request_id),
        )
        return reply.operation


# -- conditional payments --------------------------------------------------------------------------
def param_values(
    contract: CompiledContract, values: Mapping[str, object]
) -> dict[str, contract_pb2.ParamValue]:
    """Python values -> API parameter values, by the contract's parameter kinds. Money is
    ``(currency, amount_minor)`` or ``{"currency", "amount_minor"}``; timestamps aware datetimes
    or RFC 3339 text; durations ``timedelta`` or seconds; numbers ``Decimal``/``int``/text."""
    kinds = {p.name: p.kind for p in contract.params}
    out: dict[str, contract_pb2.ParamValue] = {}
    for name, value in values.items():
        kind = kinds.get(name)
        if kind in ("wallet", "title"):
            out[name] = contract_pb2.ParamValue(id=str(value))
        elif kind == "money":
            pair: Any = (
                (value["currency"], value["amount_minor"]) if isinstance(value, Mapping) else value
            )
            out[name] = contract_pb2.ParamValue(
                money=money_pb2.Money(currency=str(pair[0]), amount_minor=int(pair[1]))
            )
        elif kind == "number":
            out[name] = contract_pb2.ParamValue(number=str(value))
        elif kind == "timestamp":
            moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
            stamp = Timestamp()
            stamp.FromDatetime(moment)  # type: ignore[arg-type]
            out[name] = contract_pb2.ParamValue(timestamp=stamp)
        elif kind == "duration":
            seconds: Any = value.total_seconds() if isinstance(value, dt.timedelta) else value
            out[name] = contract_pb2.ParamValue(duration=Duration(seconds=int(seconds)))
        else:
            out[name] = contract_pb2.ParamValue(text=str(value))
    return out


def bound_params(contract: CompiledContract, values: Mapping[str, object]) -> BoundParams:
    """The parameters as the server will bind them from :func:`param_values` (the payer signs
    their hash)."""
    inputs: dict[str, object] = {}
    for name, value in param_values(contract, values).items():
        which = value.WhichOneof("value")
        if which == "money":
            inputs[name] = {
                "currency": value.money.currency,
                "amount_minor": value.money.amount_minor,
            }
        elif which == "timestamp":
            inputs[name] = value.timestamp.ToDatetime(tzinfo=dt.UTC).isoformat()
        elif which == "duration":
            inputs[name] = f"{value.duration.seconds}s"
        else:
            inputs[name] = getattr(value, str(which))
    binding = bind_params(contract, inputs)
    if binding.params is None:
        raise ValueError(f"the parameters do not fit the contract: {binding.errors}")
    return binding.params


class PaymentsClient(Client):
    """The conditional-payment, contract and oracle services on top of :class:`Client`."""

    # contracts
    async def validate_contract(self, source: str) -> contract_pb2.ValidateContractResponse:
        return await self.api.contracts.validate_contract(
            contract_pb2.ValidateContractRequest(source=source)
        )

    async def register_contract(
        self, source: str, *, request_id: str = "", dry_run: bool = False
    ) -> contract_pb2.RegisterContractResponse:
        return await self.api.contracts.register_contract(
            contract_pb2.RegisterContractRequest(
                request_id=request_id, dry_run=dry_run, source=source
            ),
        )

    # payments
    async def lock_payment(
        self,
        payer_key: OwnerKey,
        contract: CompiledContract,
        params: Mapping[str, object],
        *,
        send_source: str = "",
        request_id: str = "",
        expires_in_seconds: float = 300.0,
        dry_run: bool = False,
        title_pledges: Sequence[SignedInstruction] = (),
    ) -> payment_pb2.LockPaymentResponse:
        """As :meth:`lock_payment_request`, sent (:meth:`send`)."""
        return await self.send(
            self.lock_payment_request(
                payer_key,
                contract,
                params,
                send_source=send_source,
                request_id=request_id,
                expires_in_seconds=expires_in_seconds,
                dry_run=dry_run,
                title_pledges=title_pledges,
            )
        )

    def lock_payment_request(
        self,
        payer_key: OwnerKey,
        contract: CompiledContract,
        params: Mapping[str, object],
        *,
        send_source: str = "",
        request_id: str = "",
        expires_in_seconds: float = 300.0,
        dry_run: bool = False,
        title_pledges: Sequence[SignedInstruction] = (),
    ) -> payment_pb2.LockPaymentRequest:
        """Lock a payment against ``contract`` (registered, or sent as ``send_source``), signed
        by the payer over the contract hash, the parameters' hash and the escrow amount. Each
        title the contract delivers comes with its holder's pledge to the payment
        (:meth:`SettlementsClient.pledge_to_payment` makes one)."""
        request_id = request_id or new_request_id()
        bound = bound_params(contract, params)
        lock = LockInstruction(
            payer=bound.wallet(contract.escrow.funder),
            contract_hash=contract.hash,
            params_hash=bound.hash,
            currency=contract.escrow.currency,
            amount_minor=escrow_minor(contract, bound),
            submitter=self.caller,
            request_id=request_id,
            expires_at_us=int((time.time() + expires_in_seconds) * 1e6),
        )
        signed = lock.sign(payer_key)
        request = payment_pb2.LockPaymentRequest(
            request_id=request_id,
            dry_run=dry_run,
            params=param_values(contract, params),
            payer_instruction=wallet_pb2.SignedInstruction(
                payload=signed.payload, signature=signed.signature
            ),
            title_pledges=[
                wallet_pb2.SignedInstruction(payload=p.payload, signature=p.signature)
                for p in title_pledges
            ],
        )
        if send_source:
            request.contract_source = send_source
        else:
            request.contract_hash = contract.hash
        return request

    async def fund_escrow(
        self,
        financier_key: OwnerKey,
        financier_wallet: str,
        payment_id: str,
        currency: str,
        amount_minor: int,
        *,
        payer_key: OwnerKey,
        payer_wallet: str,
        fee_minor: int = 0,
        due_at_us: int = 0,
        request_id: str = "",
        expires_in_seconds: float = 300.0,
    ) -> payment_pb2.FundEscrowResponse:
        """As :meth:`fund_escrow_request`, sent (:meth:`send`)."""
        return await self.send(
            self.fund_escrow_request(
                financier_key,
                financier_wallet,
                payment_id,
                currency,
                amount_minor,
                payer_key=payer_key,
                payer_wallet=payer_wallet,
                fee_minor=fee_minor,
                due_at_us=due_at_us,
                request_id=request_id,
                expires_in_seconds=expires_in_seconds,
            )
        )

    def fund_escrow_request(
        self,
        financier_key: OwnerKey,
        financier_wallet: str,
        payment_id: str,
        currency: str,
        amount_minor: int,
        *,
        payer_key: OwnerKey,
        payer_wallet: str,
        fee_minor: int = 0,
        due_at_us: int = 0,
        request_id: str = "",
        expires_in_seconds: float = 300.0,
    ) -> payment_pb2.FundEscrowRequest:
        """Fund part of ``payment_id``'s escrow for its payer: the condpay.fund.v2 document is
        signed by the financier's wallet owner and by the payer (its consent to the terms)."""
        request_id = request_id or new_request_id()
        signed = FundInstruction(
            financier=financier_wallet,
            payer=payer_wallet,
            payment_id=payment_id,
            currency=currency,
            amount_minor=amount_minor,
            fee_minor=fee_minor,
            due_at_us=due_at_us,
            submitter=self.caller,
            request_id=request_id,
            expires_at_us=int((time.time() + expires_in_seconds) * 1e6),
        ).sign(financier_key)
        return payment_pb2.FundEscrowRequest(
            request_id=request_id,
            financier_instruction=wallet_pb2.SignedInstruction(
                payload=signed.payload, signature=signed.signature
            ),
            payer_signature=payer_key.sign(signed.payload),
        )

    async def assign_proceeds(
        self,
        payee_key: OwnerKey,
        financier_key: OwnerKey,
        instruction: AssignmentInstruction,
    ) -> payment_pb2.AssignProceedsResponse:
        """As :meth:`assign_proceeds_request`, sent (:meth:`send`)."""
        return await self.send(self.assign_proceeds_request(payee_key, financier_key, instruction))

    def assign_proceeds_request(
        self,
        payee_key: OwnerKey,
        financier_key: OwnerKey,
        instruction: AssignmentInstruction,
    ) -> payment_pb2.AssignProceedsRequest:
        payload = instruction.to_bytes()
        return payment_pb2.AssignProceedsRequest(
            request_id=instruction.request_id,
            payload=payload,
            payee_signature=payee_key.sign(payload),
            financier_signature=financier_key.sign(payload),
        )

    async def cancel_payment(
        self,
        payment_id: str,
        signers: Mapping[str, OwnerKey],
        *,
        request_id: str = "",
        expires_in_seconds: float = 300.0,
    ) -> payment_pb2.CancelPaymentResponse:
        """As :meth:`cancel_payment_request`, sent (:meth:`send`)."""
        return await self.send(
            self.cancel_payment_request(
                payment_id, signers, request_id=request_id, expires_in_seconds=expires_in_seconds
            )
        )

    def cancel_payment_request(
        self,
        payment_id: str,
        signers: Mapping[str, OwnerKey],
        *,
        request_id: str = "",
        expires_in_seconds: float = 300.0,
    ) -> payment_pb2.CancelPaymentRequest:
        """``signers``: wallet id -> key, for the payer and every other party."""
        request_id = request_id or new_request_id()
        payload = CancelInstruction(
            payment_id=payment_id,
            submitter=self.caller,
            request_id=request_id,
            expires_at_us=int((time.time() + expires_in_seconds) * 1e6),
        ).to_bytes()
        return payment_pb2.CancelPaymentRequest(
            request_id=request_id,
            payload=payload,
            signatures=[
                payment_pb2.PartySignature(wallet_id=w, signature=k.sign(payload))
                for w, k in signers.items()
            ],
        )

    async def get_payment(
        self,
        payment_id: str,
        *,
        view: payment_pb2.PaymentView.ValueType = payment_pb2.PAYMENT_VIEW_UNSPECIFIED,
    ) -> payment_pb2.Payment:
        """The payment, FULL unless ``view`` asks for BASIC (no contract source, no
        attestations: what a poll for its state needs)."""
        reply = await self.api.payments.get_payment(
            payment_pb2.GetPaymentRequest(payment_id=payment_id, view=view),
        )
        return reply.payment

    async def watch_payment(
        self, payment_id: str, after_version: int = 0
    ) -> AsyncIterator[payment_pb2.WatchPaymentResponse]:
        """Every change from ``after_version`` on, until the payment is terminal (resume from the
        last version seen after a broken stream)."""
        request = payment_pb2.WatchPaymentRequest(
            payment_id=payment_id, after_version=after_version
        )
        async for update in self.api.payments.watch_payment(request):
            yield update

    # oracles
    async def oracle_set_version(self) -> int:
        reply = await self.api.oracles.get_oracle_set(oracle_pb2.GetOracleSetRequest())
        return reply.version

    async def register_oracle(
        self,
        oracle_id: str,
        scheme: str,
        public_key: bytes,
        *,
        proof_of_possession: bytes = b"",
        request_id: str = "",
    ) -> oracle_pb2.RegisterOracleResponse:
        return await self.api.oracles.register_oracle(
            oracle_pb2.RegisterOracleRequest(
                request_id=request_id,
                oracle_id=oracle_id,
                scheme=oracle_pb2.KeyScheme.Value(f"KEY_SCHEME_{scheme}"),
                public_key=public_key,
                proof_of_possession=proof_of_possession,
            ),
        )

    async def submit_attestation(
        self,
        statement: bytes,
        payload: bytes,
        signatures: Sequence[tuple[str, bytes]] = (),
        bls_aggregate: tuple[Sequence[str], bytes] | None = None,
        *,
        request_id: str = "",
    ) -> oracle_pb2.SubmitAttestationResponse:
        request = oracle_pb2.SubmitAttestationRequest(
            request_id=request_id,
            statement=statement,
            payload=payload,
            signatures=[
                oracle_pb2.SignerSignature(signer_id=s, signature=sig) for s, sig in signatures
            ],
        )
        if bls_aggregate is not None:
            request.bls_aggregate.signer_ids.extend(bls_aggregate[0])
            request.bls_aggregate.signature = bls_aggregate[1]
        return await self.api.oracles.submit_attestation(request)


def _expiry(seconds: float) -> int:
    return int((time.time() + seconds) * 1e6)


def _signed(document: SignedInstruction) -> wallet_pb2.SignedInstruction:
    return wallet_pb2.SignedInstruction(payload=document.payload, signature=document.signature)


class SettlementsClient(PaymentsClient):
    """Digital titles (AssetService) and PvP/DvP settlement (SettlementService) on top of
    :class:`PaymentsClient`. Each helper signs the instruction with the key it is given."""

    # titles
    async def issue_title(
        self,
        issuer_key: OwnerKey,
        issuer_id: str,
        kind: str,
        holder_wallet_id: str,
        units: int,
        document: bytes,
        *,
        description: str = "",
        request_id: str = "",
        expires_in_seconds: float = 300.0,
    ) -> asset_pb2.IssueTitleResponse:
        """As :meth:`issue_title_request`, sent (:meth:`send`)."""
        return await self.send(
            self.issue_title_request(
                issuer_key,
                issuer_id,
                kind,
                holder_wallet_id,
                units,
                document,
                description=description,
                request_id=request_id,
                expires_in_seconds=expires_in_seconds,
            )
        )

    def issue_title_request(
        self,
        issuer_key: OwnerKey,
        issuer_id: str,
        kind: str,
        holder_wallet_id: str,
        units: int,
        document: bytes,
        *,
        description: str = "",
        request_id: str = "",
        expires_in_seconds: float = 300.0,
    ) -> asset_pb2.IssueTitleRequest:
        """The issuer signs a title over the SHA-256 of ``document`` (the bill of lading...)."""
        request_id = request_id or new_request_id()
        issue = TitleIssue(
            issuer=issuer_id,
            kind=kind,
            holder=holder_wallet_id,
            units=units,
            description=description,
            document_sha256=hashlib.sha256(document).hexdigest(),
            submitter=self.caller,
            request_id=request_id,
            expires_at_us=_expiry(expires_in_seconds),
        )
        return asset_pb2.IssueTitleRequest(
            request_id=request_id, issuer_instruction=_signed(issue.sign(issuer_key))
        )

    async def split_title(
        self,
        holder_key: OwnerKey,
        holder_wallet_id: str,
        title_id: str,
        units_first: int,
        *,
        request_id: str = "",
    ) -> asset_pb2.SplitTitleResponse:
        """As :meth:`split_title_request`, sent (:meth:`send`)."""
        return await self.send(
            self.split_title_request(
                holder_key, holder_wallet_id, title_id, units_first, request_id=request_id
            )
        )

    def split_title_request(
        self,
        holder_key: OwnerKey,
        holder_wallet_id: str,
        title_id: str,
        units_first: int,
        *,
        request_id: str = "",
    ) -> asset_pb2.SplitTitleRequest:
        request_id = request_id or new_request_id()
        split = TitleSplit(
            title_id, holder_wallet_id, units_first, self.caller, request_id, _expiry(300)
        )
        return asset_pb2.SplitTitleRequest(
            request_id=request_id, holder_instruction=_signed(split.sign(holder_key))
        )

    async def pledge_title(
        self,
        holder_key: OwnerKey,
        holder_wallet_id: str,
        title_id: str,
        pledgee_wallet_id: str,
        *,
        request_id: str = "",
    ) -> asset_pb2.PledgeTitleResponse:
        """As :meth:`pledge_title_request`, sent (:meth:`send`)."""
        return await self.send(
            self.pledge_title_request(
                holder_key, holder_wallet_id, title_id, pledgee_wallet_id, request_id=request_id
            )
        )

    def pledge_title_request(
        self,
        holder_key: OwnerKey,
        holder_wallet_id: str,
        title_id: str,
        pledgee_wallet_id: str,
        *,
        request_id: str = "",
    ) -> asset_pb2.PledgeTitleRequest:
        request_id = request_id or new_request_id()
        pledge = TitlePledge(
            title_id, holder_wallet_id, pledgee_wallet_id, self.caller, request_id, _expiry(300)
        )
        return asset_pb2.PledgeTitleRequest(
            request_id=request_id, holder_instruction=_signed(pledge.sign(holder_key))
        )

    def pledge_to_payment(
        self,
        holder_key: OwnerKey,
        holder_wallet_id: str,
        title_id: str,
        payment_id: str,
        contract_hash: str,
        params_hash: str,
    ) -> SignedInstruction:
        """The holder's pledge (condpay.payment-pledge.v2) of a title to a payment about to be
        locked by this client, for :meth:`lock_payment`'s ``title_pledges``: bound to the
        payment, its contract and its parameters' hash (``bound_params(contract, p).hash``).
        The payment's id follows from the locking platform and the lock's request id
        (:func:`payment_id_for`)."""
        return PaymentPledge(
            title_id=title_id,
            holder=holder_wallet_id,
            payment_id=payment_id,
            contract_hash=contract_hash,
            params_hash=params_hash,
            submitter=self.caller,
            request_id=f"pledge.{payment_id}",
            expires_at_us=_expiry(300),
        ).sign(holder_key)

    async def release_pledge(
        self, pledgee_key: OwnerKey, pledgee_wallet_id: str, title_id: str, *, request_id: str = ""
    ) -> asset_pb2.ReleasePledgeResponse:
        """As :meth:`release_pledge_request`, sent (:meth:`send`)."""
        return await self.send(
            self.release_pledge_request(
                pledgee_key, pledgee_wallet_id, title_id, request_id=request_id
            )
        )

    def release_pledge_request(
        self, pledgee_key: OwnerKey, pledgee_wallet_id: str, title_id: str, *, request_id: str = ""
    ) -> asset_pb2.ReleasePledgeRequest:
        request_id = request_id or new_request_id()
        release = PledgeRelease(title_id, pledgee_wallet_id, self.caller, request_id, _expiry(300))
        return asset_pb2.ReleasePledgeRequest(
            request_id=request_id, pledgee_instruction=_signed(release.sign(pledgee_key))
        )

    async def get_title(self, title_id: str) -> asset_pb2.GetTitleResponse:
        return await self.api.assets.get_title(asset_pb2.GetTitleRequest(title_id=title_id))

    # settlements
    async def quote_fx(
        self,
        source_currency: str,
        target_currency: str,
        *,
        source_amount_minor: int | None = None,
        target_amount_minor: int | None = None,
        request_id: str = "",
    ) -> settlement_pb2.FxQuote:
        request = settlement_pb2.QuoteFxRequest(
            request_id=request_id,
            source_currency=source_currency,
            target_currency=target_currency,
        )
        if source_amount_minor is not None:
            request.source_amount_minor = source_amount_minor
        if target_amount_minor is not None:
            request.target_amount_minor = target_amount_minor
        reply = await self.api.settlements.quote_fx(request)
        return reply.quote

    async def settle_pvp(
        self,
        payer_key: OwnerKey,
        payer_wallet_id: str,
        payee_wallet_id: str,
        quote: settlement_pb2.FxQuote | AtMarket,
        *,
        request_id: str = "",
        expires_in_seconds: float = 300.0,
        dry_run: bool = False,
    ) -> settlement_pb2.SettlePvPResponse:
        """As :meth:`settle_pvp_request`, sent (:meth:`send`)."""
        return await self.send(
            self.settle_pvp_request(
                payer_key,
                payer_wallet_id,
                payee_wallet_id,
                quote,
                request_id=request_id,
                expires_in_seconds=expires_in_seconds,
                dry_run=dry_run,
            )
        )

    def settle_pvp_request(
        self,
        payer_key: OwnerKey,
        payer_wallet_id: str,
        payee_wallet_id: str,
        quote: settlement_pb2.FxQuote | AtMarket,
        *,
        request_id: str = "",
        expires_in_seconds: float = 300.0,
        dry_run: bool = False,
    ) -> settlement_pb2.SettlePvPRequest:
        """Pay the quote's source amount from the payer; the payee receives its target amount.
        Or, :class:`AtMarket`, with no quote asked for first: the payee receives exactly its
        ``receive``, the payer pays the bridge's price then, at most ``pay_at_most``."""
        request = pvp_request(
            (payer_key, payer_wallet_id),
            payee_wallet_id,
            quote,
            submitter=self.caller,
            request_id=request_id or new_request_id(),
            expires_at_us=_expiry(expires_in_seconds),
            dry_run=dry_run,
        )
        return request

    async def settle_dvp(
        self,
        seller: tuple[OwnerKey, str],
        buyer: tuple[OwnerKey, str],
        title_id: str,
        units: int,
        price: Price,
        *,
        request_id: str = "",
        expires_in_seconds: float = 300.0,
        dry_run: bool = False,
    ) -> settlement_pb2.SettleDvPResponse:
        """As :meth:`settle_dvp_request`, sent (:meth:`send`)."""
        return await self.send(
            self.settle_dvp_request(
                seller,
                buyer,
                title_id,
                units,
                price,
                request_id=request_id,
                expires_in_seconds=expires_in_seconds,
                dry_run=dry_run,
            )
        )

    def settle_dvp_request(
        self,
        seller: tuple[OwnerKey, str],
        buyer: tuple[OwnerKey, str],
        title_id: str,
        units: int,
        price: Price,
        *,
        request_id: str = "",
        expires_in_seconds: float = 300.0,
        dry_run: bool = False,
    ) -> settlement_pb2.SettleDvPRequest:
        """``units`` of the title from seller to buyer against ``price``: (currency, minor) in
        one currency, a quote (the buyer pays its source, the seller receives its target), or
        :class:`AtMarket` (the seller receives exactly its ``receive``, the buyer pays the
        bridge's price then, at most ``pay_at_most``)."""
        request = dvp_request(
            seller,
            buyer,
            title_id,
            units,
            price,
            submitter=self.caller,
            request_id=request_id or new_request_id(),
            expires_at_us=_expiry(expires_in_seconds),
            dry_run=dry_run,
        )
        return request

    async def get_settlement(self, settlement_id: str) -> settlement_pb2.Settlement:
        reply = await self.api.settlements.get_settlement(
            settlement_pb2.GetSettlementRequest(settlement_id=settlement_id),
        )
        return reply.settlement


def pvp_request(
    payer: tuple[OwnerKey, str],
    payee_wallet_id: str,
    price: settlement_pb2.FxQuote | AtMarket,
    *,
    submitter: str,
    request_id: str,
    expires_at_us: int,
    dry_run: bool = False,
) -> settlement_pb2.SettlePvPRequest:
    """A SettlePvP request signed by the payer (its key, its wallet id), for ``submitter`` (the
    caller that will send it) to submit."""
    pay, receive, quote_id = _sides(price)
    pvp = PvPInstruction(
        payer=payer[1],
        payee=payee_wallet_id,
        quote_id=quote_id,
        pay_currency=pay[0],
        pay_minor=pay[1],
        receive_currency=receive[0],
        receive_minor=receive[1],
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us,
    )
    return settlement_pb2.SettlePvPRequest(
        request_id=request_id, dry_run=dry_run, payer_instruction=_signed(pvp.sign(payer[0]))
    )


def dvp_request(
    seller: tuple[OwnerKey, str],
    buyer: tuple[OwnerKey, str],
    title_id: str,
    units: int,
    price: Price,
    *,
    submitter: str,
    request_id: str,
    expires_at_us: int,
    dry_run: bool = False,
) -> settlement_pb2.SettleDvPRequest:
    """A SettleDvP request signed by both parties (the DvP instruction's bytes), for
    ``submitter`` (the caller that will send it) to submit."""
    pay, receive, quote_id = _sides(price)
    payload = DvPInstruction(
        title_id=title_id,
        units=units,
        seller=seller[1],
        buyer=buyer[1],
        pay_currency=pay[0],
        pay_minor=pay[1],
        receive_currency=receive[0],
        receive_minor=receive[1],
        quote_id=quote_id,
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us,
    ).to_bytes()
    return settlement_pb2.SettleDvPRequest(
        request_id=request_id,
        dry_run=dry_run,
        payload=payload,
        seller_signature=seller[0].sign(payload),
        buyer_signature=buyer[0].sign(payload),
    )


__all__ = [
    "ApiError",
    "AtMarket",
    "Client",
    "PaymentsClient",
    "Price",
    "RetryPolicy",
    "SettlementsClient",
    "bound_params",
    "dvp_request",
    "new_request_id",
    "param_values",
    "payment_id_for",
    "pvp_request",
]
