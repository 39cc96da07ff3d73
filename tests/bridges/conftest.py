"""Fixtures for the bridge: the in-process bridge and the gRPC one (a real server on an ephemeral
port in this process, over its own bridge), behind the same FaultyBridge, on a shared ManualClock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridges import (
    CENTRAL_BANKS,
    AccountBalance,
    AccountKind,
    AuditReport,
    Bridge,
    BridgeAdminApi,
    BridgeClient,
    CurrencySupply,
    FaultPlan,
    FaultyBridge,
    Finality,
    Identity,
    Issuance,
    Kind,
    ManualClock,
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
from bridges._server import RunningServer, start_server

KEY_SEED = b"condpay-bridge-tests-key-seed-32b"
BANKS = ("BANK-A", "BANK-B")
LP = "LP"
SPREAD_PPM = 2_500
RATES = {
    "CNY": Rate(1, 1),
    "HKD": Rate(9_235, 10_000),
    "THB": Rate(2_010, 10_000),
    "AED": Rate(19_432, 10_000),
    "SAR": Rate(19_025, 10_000),
}
BANK_FUNDS_MINOR = 1_000_000_00
LIQUIDITY_MINOR = 10_000_000_00


async def fund(api: BridgeAdminApi) -> None:
    """Two banks with 1,000,000.00 of every currency; a provider with 10,000,000.00 of each."""
    for bank in (*BANKS, LP):
        await api.register_bank(bank, name=f"{bank} test bank")
    await api.register_liquidity_provider(LP, spread_ppm=SPREAD_PPM)
    for currency, value in RATES.items():
        await api.publish_rate(currency, value)
        for bank in BANKS:
            await api.issue(
                f"fund-{bank}-{currency}",
                participant_id=bank,
                amount=Money(currency, BANK_FUNDS_MINOR),
            )
        await api.issue(
            f"fund-{LP}-{currency}",
            participant_id=LP,
            amount=Money(currency, LIQUIDITY_MINOR),
            account_kind=AccountKind.LIQUIDITY,
        )


OPERATOR = Identity(Kind.OPERATOR, "bridge-operator")
ISSUER_OF = {currency: bank for bank, currency in CENTRAL_BANKS.items()}


def central_bank(currency: str) -> Identity:
    return Identity(Kind.CENTRAL_BANK, ISSUER_OF.get(currency, "PBoC"))


class ActingClient:
    """The gRPC client as the whole cast of a test (the bridge's development mode): each call is
    made by the participant the role x method table expects for it (the payer, the transfer id's
    owner, the currency's central bank, the operator), so the contract tests tell the same story
    on both transports. tests/bridges/test_bridge_trust.py checks the table itself."""

    def __init__(self, client: BridgeClient, quoter: str = BANKS[0]) -> None:
        self.client = client
        self.quoter = quoter  # the bank that asks for quotes (and must be the payer)
        self._as: dict[Identity, BridgeClient] = {}

    def by(self, identity: Identity) -> BridgeClient:
        if identity not in self._as:
            self._as[identity] = self.client.acting_as(identity)
        return self._as[identity]

    def bank(self, participant_id: str) -> BridgeClient:
        return self.by(Identity(Kind.BANK, participant_id))

    def owner(self, transfer_id: str) -> BridgeClient:
        return self.bank(transfer_id.partition(":")[0])

    async def validators(self) -> ValidatorSet:
        return await self.by(OPERATOR).validators()

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
        return await self.bank(self.quoter).quote(
            source_currency,
            target_currency,
            source_amount_minor=source_amount_minor,
            target_amount_minor=target_amount_minor,
            liquidity_provider_id=liquidity_provider_id,
            ttl_ms=ttl_ms,
        )

    async def prepare(
        self, transfer_id: str, *, quote_id: str, payer_id: str, payee_id: str, timeout_ms: int
    ) -> Transfer:
        return await self.bank(payer_id).prepare(
            transfer_id,
            quote_id=quote_id,
            payer_id=payer_id,
            payee_id=payee_id,
            timeout_ms=timeout_ms,
        )

    async def prepare_at_market(
        self,
        transfer_id: str,
        *,
        order: MarketOrder,
        payer_id: str,
        payee_id: str,
        timeout_ms: int,
    ) -> tuple[Quote, Transfer]:
        return await self.bank(payer_id).prepare_at_market(
            transfer_id, order=order, payer_id=payer_id, payee_id=payee_id, timeout_ms=timeout_ms
        )

    async def commit(self, transfer_id: str) -> Transfer:
        return await self.owner(transfer_id).commit(transfer_id)

    async def commit_final(self, transfer_id: str) -> tuple[Transfer, Finality]:
        return await self.owner(transfer_id).commit_final(transfer_id)

    async def abort(self, transfer_id: str) -> Transfer:
        return await self.owner(transfer_id).abort(transfer_id)

    async def status(self, transfer_id: str) -> Transfer:
        return await self.owner(transfer_id).status(transfer_id)

    async def finality(self, transfer_id: str) -> Finality:
        return await self.owner(transfer_id).finality(transfer_id)

    async def balances(self, participant_id: str = "") -> tuple[AccountBalance, ...]:
        return await self.by(OPERATOR).balances(participant_id)

    async def supply(self) -> tuple[CurrencySupply, ...]:
        return await self.by(OPERATOR).supply()

    async def register_bank(self, participant_id: str, *, name: str = "") -> Participant:
        return await self.by(OPERATOR).register_bank(participant_id, name=name)

    async def register_liquidity_provider(
        self, participant_id: str, *, spread_ppm: int
    ) -> Participant:
        return await self.by(OPERATOR).register_liquidity_provider(
            participant_id, spread_ppm=spread_ppm
        )

    async def publish_rate(self, currency: str, value: Rate) -> PublishedRate:
        return await self.by(central_bank(currency)).publish_rate(currency, value)

    async def issue(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance:
        return await self.by(central_bank(amount.currency)).issue(
            request_id, participant_id=participant_id, amount=amount, account_kind=account_kind
        )

    async def redeem(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance:
        return await self.by(central_bank(amount.currency)).redeem(
            request_id, participant_id=participant_id, amount=amount, account_kind=account_kind
        )

    async def audit(self) -> AuditReport:
        return await self.by(OPERATOR).audit()

    async def tick(self) -> TickResult:
        return await self.by(OPERATOR).tick()

    async def close(self) -> None:
        await self.client.close()


@dataclass
class World:
    """One bridge as the core would see it (``api``), with the knobs tests turn."""

    transport: str
    api: BridgeAdminApi
    faulty: FaultyBridge
    clock: ManualClock

    @property
    def bridge(self) -> Bridge:
        return self.faulty.inner


Factory = Callable[..., Awaitable[World]]


@contextlib.asynccontextmanager
async def open_world(
    transport: str, path: Path, plan: FaultPlan | None = None, *, funded: bool = True
) -> AsyncIterator[World]:
    """A bridge on ``path`` behind ``plan``, reached in process or through a real gRPC server;
    audited on the way out (unless it crashed)."""
    clock = ManualClock()
    bridge = await Bridge.open(path, clock=clock, seed=7, key_seed=KEY_SEED)
    if funded:
        await fund(bridge)
    faulty = await FaultyBridge.wrap(bridge, plan or FaultPlan())
    server: RunningServer | None = None
    client: ActingClient | None = None
    if transport == "grpc":
        server = await start_server(faulty, "127.0.0.1:0", insecure=True, block_interval_ms=None)
        client = ActingClient(BridgeClient(f"127.0.0.1:{server.port}"))
    world = World(transport, client or faulty, faulty, clock)
    try:
        yield world
        if not world.faulty.crashed:
            report = await world.bridge.audit()
            assert report.problems == (), report.problems
    finally:
        if client is not None:
            await client.close()
        if server is not None:
            await server.stop(grace_ms=0)
        else:
            await faulty.close()


TRANSPORTS = ("in_process", "grpc")


@pytest.fixture(params=TRANSPORTS)
async def make_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """``await make_world(plan=FaultPlan(...), funded=True)``: a bridge over the parametrized
    transport; every world is audited after the test."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def make(plan: FaultPlan | None = None, *, funded: bool = True) -> World:
            nonlocal count
            count += 1
            path = tmp_path / f"bridge-{count}.db"
            return await stack.enter_async_context(
                open_world(request.param, path, plan, funded=funded)
            )

        yield make


@pytest.fixture
async def world(make_world: Factory) -> World:
    return await make_world()
