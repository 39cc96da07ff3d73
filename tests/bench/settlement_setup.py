"""The settlement benchmark's world and flows: PvP and DvP across currencies through the bridge.

Set-up (untimed, once per core), through the public gRPC API: the central banks issue to a bank
and to the core's gateway institution (``CONDPAY``, the bridge's participant) in every currency;
the bank opens ``pairs`` payers (buyers) funded in the currencies they pay, and as many payees
(sellers); the carrier is registered as a title issuer. Before each DvP cell the carrier issues
one bill of lading per DvP to its seller (untimed: one title per operation).

A flow (:func:`pvp_flows`, :func:`dvp_flows`), *at market* (the default, ``market=True``):

1. ``SettlePvP`` (payer pays CNY, payee receives HKD) or ``SettleDvP`` (the seller's whole title
   against the buyer paying HKD, the seller receiving CNY) with no quote id: exactly 100.00
   arrives, the payer pays the bridge's price, at most :data:`PAY_LIMIT_MINOR`; signed and
   serialized before the clock; the time to FINAL starts at its send;
2. if the reply is not yet FINAL (COMMITTED, or PREPARED/COMMITTING with the bridge slow),
   ``GetSettlement`` every :data:`POLL_SECONDS` until FINAL. ABORTED is a definite refusal: the
   flow ends, counted by its abort reason.

*Quoted* (``market=False``), the two-call flow: ``QuoteFx`` by the platform for the amount to
arrive (pre-serialized), then the Settle call signed by the parties *in the load generator* over
the quote just answered (its id is the bridge's, random: it cannot be signed beforehand), then
the polls as above.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from condpay.client import AtMarket, Price, SettlementsClient, dvp_request, pvp_request
from condpay.ids import settlement_id_for, title_id_for
from condpay.v1 import settlement_pb2

from tests.bench.load import DONE, Flow, Step
from wallets import OwnerKey

T = TypeVar("T")

CENTRAL_BANKS = {"CNY": "central_bank/pboc", "HKD": "central_bank/hkma"}
BANK = "bench-fx-bank"
GATEWAY = "CONDPAY"
GATEWAY_WALLET = f"w_reserve.{GATEWAY}"
PLATFORM = "platform/bench-settle"
CARRIER = "carrier.bench"
RESERVE_MINOR = 1_000_000_000_00  # issued per currency to the bank and to the gateway
FUNDING_MINOR = 1_000_000_00  # per payer and currency it pays in
RECEIVE_MINOR = 100_00  # each settlement delivers 100.00 of the target currency
PAY_LIMIT_MINOR = 10 * RECEIVE_MINOR  # at market: the most a payer signs to pay for it
PVP_PAIR = ("CNY", "HKD")  # (pays, receives)
DVP_PAIR = ("HKD", "CNY")  # the buyer pays HKD, the seller receives CNY
TITLE_UNITS = 40
EXPIRY_SECONDS = 3600
POLL_SECONDS = 0.005
SETUP_CONCURRENCY = 32

QUOTE_METHOD = "/condpay.v1.SettlementService/QuoteFx"
PVP_METHOD = "/condpay.v1.SettlementService/SettlePvP"
DVP_METHOD = "/condpay.v1.SettlementService/SettleDvP"
GET_METHOD = "/condpay.v1.SettlementService/GetSettlement"
STEP_QUOTE = "QuoteFx"
STEP_PVP = "SettlePvP"
STEP_DVP = "SettleDvP"
STEP_POLL = "GetSettlement"

FINAL = settlement_pb2.SETTLEMENT_STATE_FINAL
ABORTED = settlement_pb2.SETTLEMENT_STATE_ABORTED


def _seed(name: str) -> bytes:
    return hashlib.sha256(f"condpay bench {name}".encode()).digest()


@functools.lru_cache(maxsize=4096)
def _key(seed: bytes) -> OwnerKey:
    return OwnerKey.from_seed(seed)


@dataclass(frozen=True, slots=True)
class Party:
    wallet_id: str
    seed: bytes

    @property
    def key(self) -> OwnerKey:
        return _key(self.seed)


@dataclass(frozen=True, slots=True)
class SettlementWorld:
    payers: tuple[Party, ...]  # pay in both currencies (PvP payers and DvP buyers)
    payees: tuple[Party, ...]  # receive (PvP payees and DvP sellers, who hold the titles)
    carrier_seed: bytes
    run: str  # makes this run's seeds and documents its own

    @property
    def carrier_key(self) -> OwnerKey:
        return _key(self.carrier_seed)


async def _bounded(calls: Sequence[Awaitable[T]]) -> list[T]:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def build_settlement_world(address: str, *, pairs: int) -> SettlementWorld:
    if pairs * FUNDING_MINOR > RESERVE_MINOR:
        raise ValueError(
            f"{pairs} payers need more than the bank's reserve: at most "
            f"{RESERVE_MINOR // FUNDING_MINOR}"
        )
    run = str(time.time_ns())
    central_bank = SettlementsClient(address, caller=CENTRAL_BANKS["CNY"])
    try:
        bank_key = _key(_seed(f"{run} bank"))
        for institution, key in ((BANK, bank_key), (GATEWAY, _key(_seed(f"{run} gateway")))):
            await central_bank.register_institution(institution, institution, key.public_key)
            for currency, issuer in CENTRAL_BANKS.items():
                await central_bank.with_caller(issuer).issue(institution, currency, RESERVE_MINOR)
        bank = central_bank.with_caller(f"institution/{BANK}")

        async def open_party(name: str) -> Party:
            seed = _seed(f"{run} {name}")
            reply = await bank.open_wallet(
                BANK, _key(seed).public_key, kind="ENTERPRISE", tier=0, display_name=name
            )
            return Party(reply.wallet.wallet_id, seed)

        payers = await _bounded([open_party(f"payer {i}") for i in range(pairs)])
        payees = await _bounded([open_party(f"payee {i}") for i in range(pairs)])
        await _bounded(
            [
                bank.transfer(bank_key, f"w_reserve.{BANK}", p.wallet_id, currency, FUNDING_MINOR)
                for p in payers
                for currency in CENTRAL_BANKS
            ]
        )
        carrier_seed = _seed(f"{run} carrier")
        await central_bank.register_oracle(CARRIER, "ED25519", _key(carrier_seed).public_key)
    finally:
        await central_bank.close()
    return SettlementWorld(tuple(payers), tuple(payees), carrier_seed, run)


def _caller(name: str) -> tuple[tuple[str, str], ...]:
    return (("condpay-caller", name),)


def _quote_request(request_id: str, pair: tuple[str, str]) -> bytes:
    return settlement_pb2.QuoteFxRequest(
        request_id=request_id,
        source_currency=pair[0],
        target_currency=pair[1],
        target_amount_minor=RECEIVE_MINOR,
    ).SerializeToString()


def _quote_of(reply: bytes) -> settlement_pb2.FxQuote:
    return settlement_pb2.QuoteFxResponse.FromString(reply).quote


def build_pvp(quote_reply: bytes, template: bytes) -> bytes:
    """SettlePvP over the quote just answered, signed by the payer (runs in the load generator)."""
    return _pvp(json.loads(template), _quote_of(quote_reply))


def _pvp(terms: dict[str, Any], price: settlement_pb2.FxQuote | AtMarket) -> bytes:
    request = pvp_request(
        (_key(bytes.fromhex(terms["payer_seed"])), terms["payer"]),
        terms["payee"],
        price,
        submitter=PLATFORM,
        request_id=terms["request_id"],
        expires_at_us=terms["expires_at_us"],
    )
    return request.SerializeToString()


def build_dvp(quote_reply: bytes, template: bytes) -> bytes:
    """SettleDvP over the quote just answered, signed by seller and buyer (in the load
    generator)."""
    return _dvp(json.loads(template), _quote_of(quote_reply))


def _dvp(terms: dict[str, Any], price: Price) -> bytes:
    request = dvp_request(
        (_key(bytes.fromhex(terms["seller_seed"])), terms["seller"]),
        (_key(bytes.fromhex(terms["buyer_seed"])), terms["buyer"]),
        terms["title_id"],
        TITLE_UNITS,
        price,
        submitter=PLATFORM,
        request_id=terms["request_id"],
        expires_at_us=terms["expires_at_us"],
    )
    return request.SerializeToString()


def _market(pair: tuple[str, str]) -> AtMarket:
    return AtMarket(receive=(pair[1], RECEIVE_MINOR), pay_at_most=(pair[0], PAY_LIMIT_MINOR))


def _settlement_verdict(settlement: settlement_pb2.Settlement) -> str:
    if settlement.state == FINAL:
        return DONE
    if settlement.state == ABORTED:
        return f"ABORTED/{settlement.abort_reason or 'unknown'}"
    return ""  # COMMITTED (quorum short) or still in flight: poll


def pvp_verdict(reply: bytes) -> str:
    return _settlement_verdict(settlement_pb2.SettlePvPResponse.FromString(reply).settlement)


def dvp_verdict(reply: bytes) -> str:
    return _settlement_verdict(settlement_pb2.SettleDvPResponse.FromString(reply).settlement)


def poll_verdict(reply: bytes) -> str:
    return _settlement_verdict(settlement_pb2.GetSettlementResponse.FromString(reply).settlement)


def _poll_step(settlement_id: str) -> Step:
    request = settlement_pb2.GetSettlementRequest(settlement_id=settlement_id)
    return Step(
        STEP_POLL,
        GET_METHOD,
        request.SerializeToString(),
        _caller(PLATFORM),
        verdict=poll_verdict,
        poll_seconds=POLL_SECONDS,
    )


def _expiry_us() -> int:
    return int((time.time() + EXPIRY_SECONDS) * 1_000_000)


def _settle_steps(
    tag: str,
    i: int,
    terms: dict[str, Any],
    market: bool,
    kind: tuple[str, str, tuple[str, str]],
    verdict: Callable[[bytes], str],
) -> tuple[Step, ...]:
    """A flow's steps: at market one presigned Settle, else QuoteFx then Settle built over its
    quote in the load generator; then the polls."""
    step, method, pair = kind
    settlement_id = settlement_id_for(PLATFORM, terms["request_id"])
    poll = _poll_step(settlement_id)
    if market:
        request = (_pvp if step == STEP_PVP else _dvp)(terms, _market(pair))
        return (
            Step(step, method, request, _caller(PLATFORM), verdict=verdict, starts_clock=True),
            poll,
        )
    quote = Step(
        STEP_QUOTE, QUOTE_METHOD, _quote_request(f"{tag}-{i:07d}.quote", pair), _caller(PLATFORM)
    )
    build = build_pvp if step == STEP_PVP else build_dvp
    template = json.dumps(terms).encode()
    settle = Step(
        step,
        method,
        template,
        _caller(PLATFORM),
        build=build,
        verdict=verdict,
        starts_clock=True,
    )
    return (quote, settle, poll)


def pvp_flows(world: SettlementWorld, count: int, tag: str, *, market: bool = True) -> list[Flow]:
    """``count`` PvPs, request ids ``<tag>-<i>.settle`` (and ``.quote``); payer ``i mod P``."""
    expires_at_us = _expiry_us()
    flows = []
    for i in range(count):
        payer = world.payers[i % len(world.payers)]
        payee = world.payees[i % len(world.payees)]
        request_id = f"{tag}-{i:07d}.settle"
        terms: dict[str, Any] = {
            "payer": payer.wallet_id,
            "payee": payee.wallet_id,
            "payer_seed": payer.seed.hex(),
            "request_id": request_id,
            "expires_at_us": expires_at_us,
        }
        steps = _settle_steps(tag, i, terms, market, (STEP_PVP, PVP_METHOD, PVP_PAIR), pvp_verdict)
        flows.append(Flow(settlement_id_for(PLATFORM, request_id), steps))
    return flows


def _document(world: SettlementWorld, tag: str, i: int) -> bytes:
    return f"bill of lading {world.run} {tag}-{i:07d}: 40 pallets of LED drivers".encode()


def title_ids(world: SettlementWorld, count: int, tag: str) -> list[str]:
    return [
        title_id_for(CARRIER, hashlib.sha256(_document(world, tag, i)).hexdigest())
        for i in range(count)
    ]


async def issue_titles(address: str, world: SettlementWorld, count: int, tag: str) -> list[str]:
    """The carrier issues one bill of lading per DvP to its seller (payee ``i mod P``)."""
    platform = SettlementsClient(address, caller=PLATFORM)
    try:
        replies = await _bounded(
            [
                platform.issue_title(
                    world.carrier_key,
                    CARRIER,
                    "bill_of_lading",
                    world.payees[i % len(world.payees)].wallet_id,
                    TITLE_UNITS,
                    _document(world, tag, i),
                    request_id=f"{tag}-{i:07d}.title",
                    expires_in_seconds=EXPIRY_SECONDS,
                )
                for i in range(count)
            ]
        )
    finally:
        await platform.close()
    return [reply.title.title_id for reply in replies]


def dvp_flows(
    world: SettlementWorld, titles: Sequence[str], tag: str, *, market: bool = True
) -> list[Flow]:
    """One DvP per title (issued by :func:`issue_titles` with the same tag): the seller holding
    title ``i`` sells all of it to buyer ``i mod P``, paid in HKD, receiving CNY."""
    expires_at_us = _expiry_us()
    flows = []
    for i, title_id in enumerate(titles):
        seller = world.payees[i % len(world.payees)]
        buyer = world.payers[i % len(world.payers)]
        request_id = f"{tag}-{i:07d}.settle"
        terms: dict[str, Any] = {
            "seller": seller.wallet_id,
            "seller_seed": seller.seed.hex(),
            "buyer": buyer.wallet_id,
            "buyer_seed": buyer.seed.hex(),
            "title_id": title_id,
            "request_id": request_id,
            "expires_at_us": expires_at_us,
        }
        steps = _settle_steps(tag, i, terms, market, (STEP_DVP, DVP_METHOD, DVP_PAIR), dvp_verdict)
        flows.append(Flow(settlement_id_for(PLATFORM, request_id), steps))
    return flows
