"""Issue 17: the bridge as a network of participants.

Findings 1-5 of the review, each reproduced against the bridge as it was found (the settlement
core with its bridge, that bridge also served over gRPC, here over mutual TLS with a certificate
per participant), each now refused with a typed reason and nothing changed on either ledger: the
simulator's auditor (both audits, supply equals balances on the bridge, the gateway's core
reserve mirroring its bridge account) holds afterwards. Then the role x method matrix (every
bridge RPC, every participant kind, no identity), and the core's link over mutual TLS with a
pinned validator set (an impostor bridge with other validator keys is refused).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from condpay.bridge.v1 import bridge_pb2 as pb
from condpay.bridge.v1 import bridge_pb2_grpc
from condpay.v1 import money_pb2, settlement_pb2

from bridges import (
    Bridge,
    BridgeClient,
    ClientTls,
    Identity,
    Kind,
    Money,
    Rate,
    ServerTls,
    TlsSetupError,
    bootstrap,
    export_validators,
)
from bridges._authz import TABLE
from bridges._identity import METADATA_KEY
from bridges._server import RunningServer, start_server
from bridges._status import from_rpc_error
from bridges.errors import BridgeError, Reason
from settlement.api.server import start_server as start_core_server
from settlement.certs import init_certificates, parse_bridge, parse_identity
from settlement.config import Settings
from settlement.coordination.bridge_link import LinkSecurity, UntrustedBridge, open_bridge
from settlement.ledger.settlements import derive_settlement_id
from settlement.runtime import Runtime
from sim_central_bank.auditor import Auditor
from sim_central_bank.record import Expectations
from tests.settlement.world import (
    CURRENCIES,
    GATEWAY,
    PLATFORM,
    TradeWorld,
    build_world,
)
from tests.support.harness import Harness, start_harness
from tests.support.reflection import reflection_listed

ATTACKER = Identity(Kind.BANK, "ICBC")
OTHER_BANK = Identity(Kind.BANK, "BOCHK")
GATEWAY_ID = Identity(Kind.BANK, GATEWAY)
AUDITOR = Identity(Kind.AUDITOR, "bridge-auditor")
OPERATOR = Identity(Kind.OPERATOR, "bridge-operator")
PBOC = Identity(Kind.CENTRAL_BANK, "PBoC")
HKMA = Identity(Kind.CENTRAL_BANK, "HKMA")
PROVIDER = Identity(Kind.LIQUIDITY_PROVIDER, "FXLP")
IDENTITIES = (ATTACKER, OTHER_BANK, GATEWAY_ID, AUDITOR, OPERATOR, PBOC, HKMA, PROVIDER)
PRICE_CNY = 125_000_00


def make_certs(root: Path) -> Path:
    """``condpay certs init`` with the participants above; returns the bridge's TLS folder."""
    init_certificates(
        root / "certs",
        [parse_identity("platform/intruder")],
        bridge_identities=[parse_bridge(str(i)) for i in IDENTITIES],
    )
    return root / "certs" / "bridge"


@dataclass
class Network:
    """The core (its in-process bridge) and that bridge served over mutual TLS."""

    trade: TradeWorld
    harness: Harness
    tls_dir: Path
    address: str
    auditor: Auditor
    clients: dict[Identity, BridgeClient]

    def as_(self, identity: Identity) -> BridgeClient:
        if identity not in self.clients:
            self.clients[identity] = BridgeClient(
                self.address, tls=ClientTls.for_participant(self.tls_dir, identity)
            )
        return self.clients[identity]

    async def snapshot(self) -> tuple[object, ...]:
        """Every bridge balance and the supply (the auditor's view), and the core's holdings."""
        reader = self.as_(AUDITOR)
        return (await reader.balances(), await reader.supply(), await self.trade.holdings())

    async def assert_audits_hold(self) -> None:
        failing = {r.name: r.detail for r in await self.auditor.check(final=True) if not r.passed}
        assert failing == {}


@contextlib.asynccontextmanager
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    tls_dir = make_certs(tmp_path)
    async with start_harness(f"sqlite:///{tmp_path}/condpay.db") as harness:
        assert harness.runtime.bridge is not None
        server = await start_server(
            harness.runtime.bridge.api,  # type: ignore[arg-type]
            "127.0.0.1:0",
            tls=ServerTls.from_dir(tls_dir),
            block_interval_ms=None,
        )
        net: Network | None = None
        try:
            trade = await build_world(harness)
            await trade.fund("buyer", "HKD", 500_000_00)
            address = f"localhost:{server.port}"
            reader = BridgeClient(address, tls=ClientTls.for_participant(tls_dir, AUDITOR))
            auditor = Auditor(
                trade.cb, reader, Expectations(currencies=CURRENCIES, gateway=GATEWAY)
            )
            await auditor.baseline()
            net = Network(trade, harness, tls_dir, address, auditor, {AUDITOR: reader})
            yield net
        finally:
            if net is not None:
                for client in net.clients.values():
                    await client.close()
            await server.stop(0)


async def refused(reason: Reason, call: Awaitable[object]) -> BridgeError:
    with pytest.raises(BridgeError) as caught:
        await call
    assert caught.value.reason is reason, caught.value
    return caught.value


async def _pvp(net: Network, request_id: str) -> settlement_pb2.Settlement:
    trade = net.trade
    quote = await trade.platform.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
    buyer_key, buyer = trade.party("buyer")
    reply = await trade.platform.settle_pvp(
        buyer_key, buyer, trade.wallets["seller"], quote, request_id=request_id
    )
    return reply.settlement


# -- findings 1-5 ----------------------------------------------------------------------------
async def test_finding_1_nobody_but_the_payer_moves_its_money(tmp_path: Path) -> None:
    """As found: CreateQuote, PrepareTransfer with payer CONDPAY (the gateway) and payee ICBC,
    CommitTransfer: the gateway's CNY paid to ICBC."""
    async with network(tmp_path) as net:
        before = await net.snapshot()
        icbc = net.as_(ATTACKER)
        quote = await icbc.quote("CNY", "HKD", source_amount_minor=1_000_00)
        for transfer_id in ("steal-1", f"{GATEWAY}:steal-1", "ICBC:steal-1"):
            error = await refused(
                Reason.NOT_PAYER,
                icbc.prepare(
                    transfer_id,
                    quote_id=quote.quote_id,
                    payer_id=GATEWAY,
                    payee_id="ICBC",
                    timeout_ms=60_000,
                ),
            )
            assert error.status_code_name == "PERMISSION_DENIED"
        await refused(Reason.TRANSFER_NOT_FOUND, icbc.commit(f"{GATEWAY}:steal-1"))
        await refused(Reason.TRANSFER_NOT_FOUND, icbc.commit("steal-1"))
        assert await net.snapshot() == before
        await net.assert_audits_hold()


async def test_finding_2_only_a_currencys_central_bank_mints_and_only_the_operator_registers(
    tmp_path: Path,
) -> None:
    """As found: Issue 1,000,000.00 HKD to ICBC, Redeem, PublishRate, RegisterBank and
    RegisterLiquidityProvider open to anyone."""
    async with network(tmp_path) as net:
        before = await net.snapshot()
        hkd = Money("HKD", 1_000_000_00)
        for who, reason in (
            (ATTACKER, Reason.ROLE_NOT_ALLOWED),
            (PBOC, Reason.NOT_CURRENCY_ISSUER),
        ):
            client = net.as_(who)
            await refused(reason, client.issue("mint-1", participant_id="ICBC", amount=hkd))
            await refused(reason, client.redeem("burn-1", participant_id="ICBC", amount=hkd))
            await refused(reason, client.publish_rate("HKD", Rate(1, 1_000)))
        for who in (ATTACKER, PBOC, HKMA, AUDITOR, PROVIDER):
            client = net.as_(who)
            await refused(Reason.ROLE_NOT_ALLOWED, client.register_bank("EVIL", name="evil"))
            await refused(
                Reason.ROLE_NOT_ALLOWED,
                client.register_liquidity_provider("ICBC", spread_ppm=0),
            )
        assert await net.snapshot() == before
        # The quoted rate is still the one HKMA published.
        quote = await net.as_(OTHER_BANK).quote("HKD", "CNY", source_amount_minor=100_00)
        assert (quote.rate.numerator, quote.rate.denominator) != (1_000, 1)
        await net.assert_audits_hold()


async def test_finding_3_the_cores_transfer_ids_cannot_be_claimed_first(tmp_path: Path) -> None:
    """As found: derive the settlement id from the platform's request, prepare and commit
    ``<sid>.1`` on the bridge first; the core saw a COMMITTED transfer, aborted its side and
    looped in ABORTING. Now the ids are the gateway's and only the gateway prepares them."""
    async with network(tmp_path) as net:
        request_id = "pvp-finding-3"
        sid = derive_settlement_id(PLATFORM, request_id)
        icbc = net.as_(ATTACKER)
        before = await net.snapshot()
        quote = await icbc.quote("HKD", "CNY", target_amount_minor=PRICE_CNY)
        for transfer_id, payer, reason in (
            (f"{sid}.1", "ICBC", Reason.TRANSFER_ID_NOT_OWNED),
            (f"{GATEWAY}:{sid}.1", "ICBC", Reason.TRANSFER_ID_NOT_OWNED),
            (f"{GATEWAY}:{sid}.1", GATEWAY, Reason.NOT_PAYER),
        ):
            await refused(
                reason,
                icbc.prepare(
                    transfer_id,
                    quote_id=quote.quote_id,
                    payer_id=payer,
                    payee_id=payer,
                    timeout_ms=60_000,
                ),
            )
        await refused(Reason.TRANSFER_NOT_FOUND, icbc.commit(f"{GATEWAY}:{sid}.1"))
        assert await net.snapshot() == before
        settlement = await _pvp(net, request_id)
        assert settlement.settlement_id == sid
        assert settlement.state == settlement_pb2.SETTLEMENT_STATE_FINAL, settlement
        coordinator = net.harness.runtime.coordinator
        assert coordinator is not None
        assert coordinator.stuck_count == 0
        assert net.harness.runtime.stuck_settlements == 0
        await net.assert_audits_hold()


async def test_finding_4_nobody_can_tombstone_a_settlement_in_advance(tmp_path: Path) -> None:
    """As found: abort the predictable transfer id first; the tombstone refused the core's
    prepare and every such settlement aborted."""
    async with network(tmp_path) as net:
        request_id = "pvp-finding-4"
        sid = derive_settlement_id(PLATFORM, request_id)
        icbc = net.as_(ATTACKER)
        before = await net.snapshot()
        for transfer_id in (f"{sid}.1", f"{GATEWAY}:{sid}.1", f"{GATEWAY}:{sid}.2"):
            error = await refused(Reason.TRANSFER_NOT_FOUND, icbc.abort(transfer_id))
            # Exactly what an id that does not exist answers.
            assert error.metadata == {"transfer_id": transfer_id}
            assert error.message == f"transfer {transfer_id!r} does not exist"
        # ... and no tombstone was left: the gateway itself has never heard of the id.
        await refused(Reason.TRANSFER_NOT_FOUND, net.as_(GATEWAY_ID).status(f"{GATEWAY}:{sid}.1"))
        assert await net.snapshot() == before
        settlement = await _pvp(net, request_id)
        assert settlement.state == settlement_pb2.SETTLEMENT_STATE_FINAL, settlement
        await net.assert_audits_hold()


async def test_finding_5_quotes_are_bound_and_balances_are_their_owners(tmp_path: Path) -> None:
    """As found: quote ids were bearer tokens and anyone read every participant's balances.
    (The third part, trust on first use of the validators, is the link test below.)"""
    async with network(tmp_path) as net:
        before = await net.snapshot()
        icbc, bochk = net.as_(ATTACKER), net.as_(OTHER_BANK)
        theirs = await bochk.quote("HKD", "CNY", source_amount_minor=1_000_00)
        error = await refused(
            Reason.QUOTE_NOT_FOUND,
            icbc.prepare(
                "ICBC:t-1",
                quote_id=theirs.quote_id,
                payer_id="ICBC",
                payee_id="ICBC",
                timeout_ms=60_000,
            ),
        )
        missing = await refused(
            Reason.QUOTE_NOT_FOUND,
            icbc.prepare(
                "ICBC:t-2", quote_id="q-none", payer_id="ICBC", payee_id="ICBC", timeout_ms=60_000
            ),
        )
        assert (error.message, error.metadata) == (
            f"quote {theirs.quote_id!r} does not exist",
            {"quote_id": theirs.quote_id},
        )
        assert missing.metadata == {"quote_id": "q-none"}
        # The core's quotes (asked in process by the gateway) are nobody else's either.
        core_quote = await net.trade.platform.quote_fx("HKD", "CNY", target_amount_minor=1_000_00)
        await refused(
            Reason.QUOTE_NOT_FOUND,
            icbc.prepare(
                "ICBC:t-3",
                quote_id=core_quote.quote_id,
                payer_id="ICBC",
                payee_id="ICBC",
                timeout_ms=60_000,
            ),
        )
        # Balances: one's own; another's answers like a participant that does not exist.
        await refused(Reason.PARTICIPANT_NOT_FOUND, icbc.balances(GATEWAY))
        nobody = await refused(Reason.PARTICIPANT_NOT_FOUND, icbc.balances("NOBODY"))
        other = await refused(Reason.PARTICIPANT_NOT_FOUND, icbc.balances("BOCHK"))
        assert nobody.message.replace("NOBODY", "X") == other.message.replace("BOCHK", "X")
        assert {b.participant_id for b in await icbc.balances()} == {"ICBC"}
        # A central bank sees every holder, of its own currency only; the auditor sees all.
        assert {b.currency for b in await net.as_(HKMA).balances()} == {"HKD"}
        assert len({b.participant_id for b in await net.as_(HKMA).balances()}) > 1
        assert len({b.participant_id for b in await net.as_(AUDITOR).balances()}) > 2
        # Nothing moved; the refused prepares left no transfer behind.
        for transfer_id in ("ICBC:t-1", "ICBC:t-2", "ICBC:t-3"):
            await refused(Reason.TRANSFER_NOT_FOUND, icbc.status(transfer_id))
        assert await net.snapshot() == before
        await net.assert_audits_hold()


# -- the role x method matrix ----------------------------------------------------------------
def _requests() -> dict[str, tuple[str, Any]]:
    """Every bridge RPC: (service, request) made by a caller of the row's kind for itself. A
    bank is BANK-A; a central bank is HKMA and asks about HKD."""
    hkd = money_pb2.Money(currency="HKD", amount_minor=1_00)
    settlement = pb.ACCOUNT_KIND_SETTLEMENT
    return {
        "ListValidators": ("bridge", pb.ListValidatorsRequest()),
        "GetSupply": ("bridge", pb.GetSupplyRequest()),
        "ListBalances": ("bridge", pb.ListBalancesRequest()),
        "CreateQuote": (
            "bridge",
            pb.CreateQuoteRequest(
                source_currency="HKD", target_currency="CNY", source_amount_minor=100_00
            ),
        ),
        "PrepareTransfer": (
            "bridge",
            pb.PrepareTransferRequest(
                transfer_id="BANK-A:m-1",
                quote_id="q-none",
                payer_id="BANK-A",
                payee_id="BANK-A",
                timeout_ms=60_000,
            ),
        ),
        "CommitTransfer": ("bridge", pb.CommitTransferRequest(transfer_id="BANK-A:m-1")),
        "AbortTransfer": ("bridge", pb.AbortTransferRequest(transfer_id="BANK-A:m-2")),
        "GetTransfer": ("bridge", pb.GetTransferRequest(transfer_id="BANK-A:m-2")),
        "GetFinality": ("bridge", pb.GetFinalityRequest(transfer_id="BANK-A:m-2")),
        "RegisterBank": ("admin", pb.RegisterBankRequest(participant_id="NEW-BANK")),
        "RegisterLiquidityProvider": (
            "admin",
            pb.RegisterLiquidityProviderRequest(participant_id="NEW-BANK", spread_ppm=1_000),
        ),
        "PublishRate": (
            "admin",
            pb.PublishRateRequest(currency="HKD", value=pb.Rate(numerator=9, denominator=10)),
        ),
        "Issue": (
            "admin",
            pb.IssueRequest(
                request_id="m-i", participant_id="BANK-A", account_kind=settlement, amount=hkd
            ),
        ),
        "Redeem": (
            "admin",
            pb.RedeemRequest(
                request_id="m-r", participant_id="BANK-A", account_kind=settlement, amount=hkd
            ),
        ),
        "AuditLedger": ("admin", pb.AuditLedgerRequest()),
        "Tick": ("admin", pb.TickRequest()),
    }


MATRIX_CALLERS: dict[str, Identity | None] = {
    "bank": Identity(Kind.BANK, "BANK-A"),
    "liquidity_provider": Identity(Kind.LIQUIDITY_PROVIDER, "LP"),
    "central_bank": HKMA,
    "operator": OPERATOR,
    "auditor": AUDITOR,
    "no identity": None,
}


def test_the_table_names_every_bridge_rpc() -> None:
    services = [pb.DESCRIPTOR.services_by_name[n] for n in ("BridgeService", "BridgeAdminService")]
    rpcs = {m.name for s in services for m in s.methods}
    assert set(TABLE) == rpcs == set(_requests())


async def matrix_outcomes() -> dict[tuple[str, str], str]:
    """Every RPC by every caller kind and by no identity, against one bridge in the development
    mode (metadata identities): (rpc, caller) -> the reason, or "OK"."""
    from tests.bridges.conftest import fund

    bridge = await Bridge.open(":memory:", key_seed=b"condpay-bridge-matrix-key-seed-32b")
    await fund(bridge)
    server = await start_server(bridge, "127.0.0.1:0", insecure=True, block_interval_ms=None)
    outcomes: dict[tuple[str, str], str] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stubs = {
                "bridge": bridge_pb2_grpc.BridgeServiceStub(channel),
                "admin": bridge_pb2_grpc.BridgeAdminServiceStub(channel),
            }
            for rpc, (service, request) in _requests().items():
                for label, caller in MATRIX_CALLERS.items():
                    metadata = None if caller is None else ((METADATA_KEY, str(caller)),)
                    try:
                        await getattr(stubs[service], rpc)(request, metadata=metadata)
                    except grpc.aio.AioRpcError as exc:
                        outcomes[(rpc, label)] = from_rpc_error(exc).reason.value
                    else:
                        outcomes[(rpc, label)] = "OK"
    finally:
        await server.stop(0)
    return outcomes


async def test_the_role_x_method_matrix() -> None:
    """Every bridge RPC x every participant kind x no identity, against the table."""
    outcomes = await matrix_outcomes()
    wrong = []
    for rpc in sorted(TABLE):
        for label, caller in MATRIX_CALLERS.items():
            outcome = outcomes[(rpc, label)]
            if caller is None:
                expected_ok = outcome == "IDENTITY_MISSING"
            elif caller.kind in TABLE[rpc]:
                # Past the table: the handler's own answer (a quote that does not exist, say).
                expected_ok = outcome not in ("ROLE_NOT_ALLOWED", "IDENTITY_MISSING")
            else:
                expected_ok = outcome == "ROLE_NOT_ALLOWED"
            if not expected_ok:
                wrong.append((rpc, label, outcome))
    assert wrong == []
    # The allowed cells reached the handler: what a bank, HKMA and the operator were answered.
    assert outcomes[("PrepareTransfer", "bank")] == "QUOTE_NOT_FOUND"
    assert outcomes[("CommitTransfer", "bank")] == "TRANSFER_NOT_FOUND"
    assert outcomes[("AbortTransfer", "bank")] == "OK"  # its own tombstone
    for rpc in ("CreateQuote", "GetTransfer", "ListValidators", "GetSupply", "ListBalances"):
        assert outcomes[(rpc, "bank")] == "OK", rpc
    for rpc in ("PublishRate", "Issue", "Redeem"):
        assert outcomes[(rpc, "central_bank")] == "OK", rpc
    assert outcomes[("RegisterBank", "operator")] == "OK"
    assert outcomes[("RegisterLiquidityProvider", "operator")] == "OK"
    assert outcomes[("AuditLedger", "auditor")] == "OK"
    assert outcomes[("Tick", "operator")] == "OK"


async def test_no_identity_under_mutual_tls_is_refused(tmp_path: Path) -> None:
    """A certificate from the CA without a bridge identity (a core caller's) names nobody on the
    bridge; a client without a certificate never gets past the handshake."""
    tls_dir = make_certs(tmp_path)
    bridge = await Bridge.open(":memory:")
    server = await start_server(
        bridge, "127.0.0.1:0", tls=ServerTls.from_dir(tls_dir), block_interval_ms=None
    )
    try:
        clients = tmp_path / "certs" / "clients"
        core_caller = ClientTls(
            clients / "platform_intruder.pem", clients / "platform_intruder.key", tls_dir / "ca.pem"
        )
        async with BridgeClient(f"localhost:{server.port}", tls=core_caller) as client:
            await refused(Reason.IDENTITY_MISSING, client.supply())
        bare = grpc.ssl_channel_credentials(root_certificates=(tls_dir / "ca.pem").read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{server.port}", bare) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await bridge_pb2_grpc.BridgeServiceStub(channel).GetSupply(
                    pb.GetSupplyRequest(), timeout=5
                )
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        # The metadata is never looked at under TLS.
        async with BridgeClient(
            f"localhost:{server.port}", tls=ClientTls.for_participant(tls_dir, ATTACKER)
        ) as icbc:
            admin = bridge_pb2_grpc.BridgeAdminServiceStub(icbc._channel)
            with pytest.raises(grpc.aio.AioRpcError) as claimed:
                await admin.RegisterBank(
                    pb.RegisterBankRequest(participant_id="EVIL"),
                    metadata=((METADATA_KEY, str(OPERATOR)),),
                    timeout=5,
                )
            assert from_rpc_error(claimed.value).reason is Reason.ROLE_NOT_ALLOWED
    finally:
        await server.stop(0)
        await bridge.close()


def test_a_server_refuses_a_tls_dir_holding_the_ca_key(tmp_path: Path) -> None:
    tls_dir = make_certs(tmp_path)
    (tls_dir / "ca.key").write_bytes((tmp_path / "certs" / ".." / "ca" / "ca.key").read_bytes())
    with pytest.raises(TlsSetupError, match="CA private key"):
        ServerTls.from_dir(tls_dir)


# -- the core's link: mutual TLS, the validator set pinned -------------------------------------
@contextlib.asynccontextmanager
async def served_bridge(
    state: Path, tls_dir: Path, key_seed: bytes
) -> AsyncIterator[tuple[RunningServer, Path]]:
    """A bridge of its own (its genesis from ``key_seed``) over mutual TLS, bootstrapped with the
    gateway; its validator set exported beside its state."""
    bridge = await Bridge.open(state, key_seed=key_seed)
    await bootstrap(bridge, banks={GATEWAY: "condpay gateway"})
    validators = state.with_suffix(".validators.json")
    export_validators(await bridge.validators(), validators)
    server = await start_server(bridge, "127.0.0.1:0", tls=ServerTls.from_dir(tls_dir))
    try:
        yield server, validators
    finally:
        await server.stop(0)


GENUINE_SEED = b"condpay-bridge-genuine-seed-0032b"
IMPOSTOR_SEED = b"condpay-bridge-impostor-seed-032b"


async def test_the_core_links_over_mutual_tls_and_refuses_an_impostor(tmp_path: Path) -> None:
    tls_dir = make_certs(tmp_path)
    async with (
        served_bridge(tmp_path / "genuine.db", tls_dir, GENUINE_SEED) as (genuine, pinned),
        served_bridge(tmp_path / "impostor.db", tls_dir, IMPOSTOR_SEED) as (impostor, _),
    ):
        security = LinkSecurity(certs_dir=tls_dir, validators=pinned)
        # The impostor (same CA, another validator set) is refused before anything is sent.
        with pytest.raises(UntrustedBridge):
            await open_bridge(
                f"grpc://localhost:{impostor.port}", GATEWAY, tmp_path / "x.db", None, security
            )
        # Without a pinned set there is no grpc:// link at all (no trust on first use).
        with pytest.raises(ValueError, match="CONDPAY_BRIDGE_VALIDATORS"):
            await open_bridge(
                f"grpc://localhost:{genuine.port}",
                GATEWAY,
                tmp_path / "x.db",
                None,
                LinkSecurity(certs_dir=tls_dir),
            )
        # The genuine bridge: a whole PvP through the core over the authenticated link.
        settings = Settings(
            addr="127.0.0.1:0",
            database_url=f"sqlite:///{tmp_path}/core.db",
            insecure=True,
            log_calls=False,
            bridge=f"grpc://localhost:{genuine.port}",
            bridge_certs_dir=str(tls_dir),
            bridge_validators=str(pinned),
        )
        runtime = Runtime(settings)
        await runtime.start()
        server = await start_core_server(runtime, "127.0.0.1:0")
        harness = Harness(runtime, server, f"127.0.0.1:{server.port}")
        try:
            assert runtime.bridge is not None
            assert sorted(await runtime.bridge.keys()) == sorted(
                json.loads(pinned.read_text())["validators"]
            )
            trade = await build_world(harness)
            await trade.fund("buyer", "HKD", 500_000_00)
            quote = await trade.platform.quote_fx("HKD", "CNY", target_amount_minor=PRICE_CNY)
            buyer_key, buyer = trade.party("buyer")
            reply = await trade.platform.settle_pvp(
                buyer_key, buyer, trade.wallets["seller"], quote
            )
            s = reply.settlement
            assert s.state == settlement_pb2.SETTLEMENT_STATE_FINAL, s
            # On the bridge the transfer is the gateway's, and only the gateway reads it.
            gateway = BridgeClient(
                f"localhost:{genuine.port}", tls=ClientTls.for_participant(tls_dir, GATEWAY_ID)
            )
            icbc = BridgeClient(
                f"localhost:{genuine.port}", tls=ClientTls.for_participant(tls_dir, ATTACKER)
            )
            try:
                on_bridge = f"{GATEWAY}:{s.transfer_id}"
                transfer = await gateway.status(on_bridge)
                assert transfer.state.value == "COMMITTED"
                await refused(Reason.TRANSFER_NOT_FOUND, icbc.status(on_bridge))
            finally:
                await gateway.close()
                await icbc.close()
            # A retried finality read against the impostor would be refused the same way: the
            # link verifies every certificate with the pinned keys only.
        finally:
            await harness.close()


async def test_bridge_reflection_is_off_under_mutual_tls_unless_asked(tmp_path: Path) -> None:
    tls_dir = make_certs(tmp_path)
    auditor = ClientTls.for_participant(tls_dir, AUDITOR).credentials()
    bridge = await Bridge.open(":memory:")
    try:
        for reflection_on, expected in ((None, False), (True, True)):
            server = await start_server(
                bridge,
                "127.0.0.1:0",
                tls=ServerTls.from_dir(tls_dir),
                reflection_on=reflection_on,
                block_interval_ms=None,
            )
            try:
                address = f"localhost:{server.port}"
                async with grpc.aio.secure_channel(address, auditor) as channel:
                    assert await reflection_listed(channel) is expected
            finally:
                await server.server.stop(0)
        server = await start_server(bridge, "127.0.0.1:0", insecure=True, block_interval_ms=None)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                assert await reflection_listed(channel)  # the development mode: on
        finally:
            await server.server.stop(0)
    finally:
        await bridge.close()


def test_serve_wants_tls_or_insecure_explicitly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridges.cli import main

    assert main(["serve", "--state", str(tmp_path / "x.db")]) == 2
    assert "--tls-dir DIR (mutual TLS) or --insecure" in capsys.readouterr().err
    tls_dir = make_certs(tmp_path)
    (tls_dir / "ca.key").write_bytes((tmp_path / "ca" / "ca.key").read_bytes())
    assert main(["serve", "--state", str(tmp_path / "x.db"), "--tls-dir", str(tls_dir)]) == 2
    assert "CA private key" in capsys.readouterr().err
