"""What the bad-input and idempotency tests share, all through the public gRPC API:

- :func:`take_snapshot`: the journal, every balance and the supply, to prove a call changed nothing;
- :func:`expect_error`: a call must fail with one status code and ErrorInfo reason;
- :func:`raw_call`: a call with exactly the metadata and fields given (the typed client fills in
  request ids and the caller, which some tests must leave out);
- :func:`build_world`: an institution, issued money and funded wallets of several tiers.

Plain ``assert`` is not rewritten by pytest in this module, so every assert carries its message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import pytest
from condpay.client import CALLER_METADATA_KEY, Client, new_request_id
from condpay.errors import ApiError, from_rpc_error
from condpay.v1 import ledger_pb2, wallet_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from settlement.clock import ManualClock
from settlement.errors import DOMAIN
from tests.support.harness import AUDITOR, CENTRAL_BANK
from wallets import OwnerKey, TransferInstruction

BANK = "institution/icbc-sz"
INSTITUTION_ID = "icbc-sz"
RESERVE = "w_reserve.icbc-sz"
ISSUED_CNY = 10_000_000_00
_CODES = {code.value[0]: code for code in grpc.StatusCode}


# -- snapshots ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LedgerSnapshot:
    """Everything a refused call must leave as it was, as the API reports it."""

    journal: tuple[tuple[int, bytes], ...]  # (seq, hash) of every entry
    # wallet -> (currency, available, held, spent today) per currency
    balances: dict[str, tuple[tuple[str, int, int, int], ...]]
    supply: tuple[tuple[str, int, int, int, int], ...]  # (cur, issued, redeemed, sum, held sum)
    as_of_seq: int

    @property
    def journal_length(self) -> int:
        return len(self.journal)


async def take_snapshot(central_bank: Client, wallet_ids: Iterable[str] = ()) -> LedgerSnapshot:
    """The whole journal, the balances of ``wallet_ids`` and of every wallet the journal names,
    and the supply, read through the API by an auditor on a central-bank client's connection
    (a central bank sees only its own currencies)."""
    central_bank = central_bank.with_caller(AUDITOR)
    entries = [e async for e in central_bank.journal(page_size=1000)]
    ids = set(wallet_ids) | {
        p.account_id for e in entries for p in e.postings if p.bucket != ledger_pb2.BUCKET_ISSUANCE
    }
    wallets = await asyncio.gather(*(central_bank.get_wallet(w) for w in sorted(ids)))
    supply = await central_bank.get_supply()
    return LedgerSnapshot(
        journal=tuple((e.seq, e.hash) for e in entries),
        balances={
            w.wallet_id: tuple(
                (
                    b.available.currency,
                    b.available.amount_minor,
                    b.held.amount_minor,
                    b.spent_today.amount_minor,
                )
                for b in w.balances
            )
            for w in wallets
        },
        supply=tuple(
            (
                s.currency,
                s.issued.amount_minor,
                s.redeemed.amount_minor,
                s.balances_sum.amount_minor,
                s.held_sum.amount_minor,
            )
            for s in supply.supplies
        ),
        as_of_seq=supply.as_of_seq,
    )


# -- errors ------------------------------------------------------------------------------------
def status_code(error: ApiError) -> grpc.StatusCode:
    return _CODES.get(error.status.code, grpc.StatusCode.UNKNOWN)


def error_info(error: ApiError) -> error_details_pb2.ErrorInfo | None:
    return error.detail(error_details_pb2.ErrorInfo)


async def expect_error(
    call: Awaitable[object],
    code: grpc.StatusCode,
    reason: str | tuple[str, ...],
    **metadata: str,
) -> ApiError:
    """Await ``call``; it must fail with ``code`` and an ErrorInfo (domain condpay.v1) whose reason
    is ``reason`` (or one of them) and whose metadata includes ``metadata``."""
    with pytest.raises(ApiError) as caught:
        await call
    error = caught.value
    reasons = (reason,) if isinstance(reason, str) else reason
    got = (status_code(error).name, error.reason)
    expected = f"expected {code.name} {'|'.join(reasons)}, got {got[0]} {got[1]}: {error.message!r}"
    assert got[0] == code.name, expected
    assert got[1] in reasons, expected
    info = error_info(error)
    assert info is not None, f"no ErrorInfo: {error.status}"
    assert info.domain == DOMAIN, f"ErrorInfo domain {info.domain!r}"
    for key, value in metadata.items():
        assert error.metadata.get(key) == value, (
            f"ErrorInfo metadata {key}={error.metadata.get(key)!r}, expected {value!r}"
        )
    return error


# -- raw calls ---------------------------------------------------------------------------------
def response_type(method: str) -> type[Message]:
    """The reply type of a method: /condpay.v1.WalletService/Transfer -> TransferResponse."""
    descriptor = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    cls: type[Message] = message_factory.GetMessageClass(descriptor.output_type)
    return cls


async def raw_call(
    address: str,
    method: str,
    request: Message | bytes,
    *,
    caller: str | None = CENTRAL_BANK,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Any:
    """Call ``method`` with exactly ``request`` (a message, or raw bytes sent as they are) and the
    ``condpay-caller`` metadata (none when ``caller`` is None); typed ApiError on failure."""
    sent = (((CALLER_METADATA_KEY, caller),) if caller is not None else ()) + metadata
    descriptor = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    async with grpc.aio.insecure_channel(address) as channel:
        if descriptor.server_streaming:  # the first message (or the error) of the stream
            stream = channel.unary_stream(
                method,
                request_serializer=lambda r: r if isinstance(r, bytes) else r.SerializeToString(),
                response_deserializer=response_type(method).FromString,
            )(request, metadata=sent, timeout=10)
            try:
                async for reply in stream:
                    stream.cancel()
                    return reply
                return None
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error) from None
        stub = channel.unary_unary(
            method,
            request_serializer=lambda r: r if isinstance(r, bytes) else r.SerializeToString(),
            response_deserializer=response_type(method).FromString,
        )
        try:
            return await stub(request, metadata=sent, timeout=10)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None


# -- a small world -----------------------------------------------------------------------------
class Server(Protocol):
    """What a world needs of a server: a Harness, or a server in a child process."""

    address: str

    def client(self, caller: str = CENTRAL_BANK) -> Client: ...

    async def institution(self, institution_id: str = ...) -> OwnerKey: ...


def seeded_key(name: str) -> OwnerKey:
    return OwnerKey.from_seed(name.encode().ljust(32, b".")[:32])


@dataclass
class Signed:
    request_id: str
    payload: bytes
    signature: bytes


@dataclass
class World:
    """Institution icbc-sz with ISSUED_CNY issued to its reserve, and personal wallets:

    ============ ==== ============== ========================================================
    name         tier CNY balance    caps (CNY minor units: balance / single / daily)
    ============ ==== ============== ========================================================
    alice        2    200,000.00     50,000,000 / 5,000,000 / 10,000,000
    bob          3     19,000.00      2,000,000 /   500,000 /  1,000,000
    carol        1          0.00     none
    dave         2         10.00     as alice
    ============ ==== ============== ========================================================
    """

    harness: Server
    cb: Client
    bank: Client
    clock: ManualClock | None  # the server's clock when the test drives it
    keys: dict[str, OwnerKey] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def wallet_ids(self) -> list[str]:
        return [RESERVE, *self.ids.values()]

    def expiry_us(self, seconds: float = 300.0) -> int:
        now_us = self.clock.now_us() if self.clock is not None else time.time_ns() // 1000
        return now_us + int(seconds * 1_000_000)

    def instruction(
        self,
        source: str,
        target: str,
        amount_minor: int,
        *,
        currency: str = "CNY",
        request_id: str | None = None,
        expires_at_us: int | None = None,
        memo: str = "",
        submitter: str | None = None,
    ) -> TransferInstruction:
        """``source``/``target``: a wallet name of this world, "reserve", or a wallet id;
        ``submitter``: who may send it (by default the bank, which :meth:`send` uses)."""
        return TransferInstruction(
            source=self.id_of(source),
            target=self.id_of(target),
            currency=currency,
            amount_minor=amount_minor,
            submitter=submitter or self.bank.caller,
            request_id=request_id or new_request_id(),
            expires_at_us=self.expiry_us() if expires_at_us is None else expires_at_us,
            memo=memo,
        )

    def id_of(self, name: str) -> str:
        return RESERVE if name == "reserve" else self.ids.get(name, name)

    def key_of(self, name: str) -> OwnerKey:
        return self.keys[name]

    def sign(self, signer: str, instruction: TransferInstruction) -> Signed:
        """Sign the instruction's canonical bytes with ``signer``'s key (a name of this world)."""
        payload = instruction.to_bytes()
        return Signed(instruction.request_id, payload, self.key_of(signer).sign(payload))

    def signed(self, source: str, target: str, amount_minor: int, **kwargs: Any) -> Signed:
        """A correctly signed instruction from ``source`` (a name of this world)."""
        return self.sign(source, self.instruction(source, target, amount_minor, **kwargs))

    async def send(
        self, signed: Signed, *, client: Client | None = None, dry_run: bool = False
    ) -> wallet_pb2.TransferResponse:
        return await (client or self.bank).transfer_signed(
            signed.payload, signed.signature, signed.request_id, dry_run=dry_run
        )

    async def snapshot(self) -> LedgerSnapshot:
        return await take_snapshot(self.cb, self.wallet_ids)


_WALLETS = (("alice", 2, 200_000_00), ("bob", 3, 19_000_00), ("carol", 1, 0), ("dave", 2, 10_00))


async def build_world(harness: Server, *, clock: ManualClock | None = None) -> World:
    cb = harness.client()
    world = World(harness, cb, harness.client(BANK), clock)
    world.keys["reserve"] = await harness.institution(INSTITUTION_ID)
    await cb.issue(INSTITUTION_ID, "CNY", ISSUED_CNY)
    for name, _, _ in _WALLETS:
        world.keys[name] = seeded_key(name)
    opened = await asyncio.gather(
        *(
            world.bank.open_wallet(INSTITUTION_ID, world.keys[name].public_key, tier=tier)
            for name, tier, _ in _WALLETS
        )
    )
    for (name, _, _), reply in zip(_WALLETS, opened, strict=True):
        world.ids[name] = reply.wallet.wallet_id
    await asyncio.gather(
        *(
            world.send(world.signed("reserve", name, amount))
            for name, _, amount in _WALLETS
            if amount
        )
    )
    return world


def balance(wallet: wallet_pb2.Wallet, currency: str = "CNY") -> wallet_pb2.CurrencyBalance:
    return next(b for b in wallet.balances if b.available.currency == currency)
