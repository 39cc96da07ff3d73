"""A trade world for conditional-payment tests: the central bank, a bank, a Shenzhen seller, a
buyer, a financier and the oracles of examples/contracts/overseas-warehouse-delivery.contract,
all through the real gRPC server."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from condpay.attest import (
    bls_registration,
    build_attestation,
    sign_bls_aggregate,
    sign_ed25519,
    sign_party,
)
from condpay.client import PaymentsClient
from condpay.v1 import oracle_pb2, payment_pb2

from contracts_dsl import CompiledContract, compile_source
from settlement.clock import ManualClock
from tests.support.harness import Harness
from wallets import OwnerKey, bls

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "contracts"
WAREHOUSE = (EXAMPLES / "overseas-warehouse-delivery.contract").read_text()
BANK = "icbc-sz"
RESERVE = f"w_reserve.{BANK}"
PLATFORM = "platform/gba-trade"
FINANCIER = "financier/bank-a"


def compiled(source: str) -> CompiledContract:
    result = compile_source(source, "<test>")
    assert result.contract is not None, [d.message for d in result.diagnostics]
    return result.contract


def key(name: str) -> OwnerKey:
    return OwnerKey.from_seed(name.encode().ljust(32, b".")[:32])


START_US = 1_795_766_400_000_000  # 2026-11-27T08:00:00Z


@dataclass
class TradeWorld:
    harness: Harness
    wallets: dict[str, str] = field(default_factory=dict)
    keys: dict[str, OwnerKey] = field(default_factory=dict)
    clock: ManualClock | None = None

    def now_us(self) -> int:
        return self.clock.now_us() if self.clock is not None else int(time.time() * 1e6)

    def client(self, caller: str) -> PaymentsClient:
        client = PaymentsClient(self.harness.address, caller=caller)
        self.harness.clients.append(client)
        return client

    @property
    def cb(self) -> PaymentsClient:
        return self.client("central_bank/pboc")

    @property
    def platform(self) -> PaymentsClient:
        return self.client(PLATFORM)

    async def balance(self, name: str, currency: str = "CNY") -> tuple[int, int]:
        wallet = await self.cb.get_wallet(self.wallets[name])
        line = next(b for b in wallet.balances if b.available.currency == currency)
        return line.available.amount_minor, line.held.amount_minor

    async def lock(
        self,
        contract: CompiledContract,
        params: dict[str, object],
        *,
        source: str = "",
        request_id: str = "",
    ) -> payment_pb2.Payment:
        reply = await self.platform.lock_payment(
            self.keys["buyer"], contract, params, send_source=source, request_id=request_id
        )
        return reply.payment


async def build_trade_world(h: Harness, funding: dict[str, int] | None = None) -> TradeWorld:
    world = TradeWorld(h)
    cb = world.cb
    bank_key = key("bank")
    await cb.register_institution(BANK, "ICBC Shenzhen", bank_key.public_key)
    await cb.issue(BANK, "CNY", 100_000_000_00)
    bank = world.client(f"institution/{BANK}")
    for name in ("buyer", "seller", "financier"):
        world.keys[name] = key(name)
        opened = await bank.open_wallet(
            BANK,
            world.keys[name].public_key,
            kind="ENTERPRISE",
            tier=0,
            display_name=name,
            request_id=f"open-{name}",
        )
        world.wallets[name] = opened.wallet.wallet_id
    for name, amount in (funding or {"buyer": 200_000_00, "financier": 1_000_000_00}).items():
        if amount:
            await bank.transfer(bank_key, RESERVE, world.wallets[name], "CNY", amount)
    return world


def warehouse_params(world: TradeWorld, price_minor: int = 125_000_00) -> dict[str, object]:
    return {
        "buyer": world.wallets["buyer"],
        "seller": world.wallets["seller"],
        "price": ("CNY", price_minor),
        "declaration": "D-2026-1127",
    }


CUSTOMS = "customs.cn.shenzhen"
SENSORS = ("iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid")


@dataclass
class Oracles:
    """The example contract's oracles: customs signs with Ed25519, the three LAX-3 sensors are
    a BLS committee (2 of 3)."""

    customs: OwnerKey
    sensors: dict[str, int]  # BLS secret keys


async def register_oracles(world: TradeWorld) -> Oracles:
    cb = world.cb
    customs = key("customs")
    await cb.register_oracle(CUSTOMS, "ED25519", customs.public_key, request_id="reg-customs")
    sensors = {}
    for name in SENSORS:
        secret = bls.secret_key(name.encode().ljust(32, b"*"))
        registration = bls_registration(secret)
        await cb.register_oracle(
            name,
            "BLS12_381",
            registration.public_key,
            proof_of_possession=registration.proof_of_possession,
            request_id=f"reg-{name}",
        )
        sensors[name] = secret
    return Oracles(customs, sensors)


async def attest(
    world: TradeWorld,
    payment: payment_pb2.Payment,
    *,
    oracle: str,
    event_type: str,
    attributes: dict[str, str | int | bool],
    event_id: str,
    sign: Callable[[bytes], tuple[list[tuple[str, bytes]], tuple[tuple[str, ...], bytes] | None]],
    client: PaymentsClient | None = None,
    observed_at_us: int | None = None,
) -> oracle_pb2.SubmitAttestationResponse:
    now = world.now_us()
    version = await world.cb.oracle_set_version()
    attestation = build_attestation(
        oracle_set_version=version,
        oracle=oracle,
        event_id=event_id,
        payment_id=payment.payment_id,
        contract_hash=payment.contract.contract_hash,
        event_type=event_type,
        attributes=attributes,
        observed_at_us=observed_at_us if observed_at_us is not None else now - 60_000_000,
        issued_at_us=now,
        expires_at_us=now + 600_000_000,
    )
    signatures, aggregate = sign(attestation.statement)
    submitter = client or world.client("oracle/customs.cn.shenzhen")
    return await submitter.submit_attestation(
        attestation.statement, attestation.payload, signatures, aggregate, request_id=event_id
    )


def by_customs(oracles: Oracles) -> Callable[[bytes], tuple[list[tuple[str, bytes]], None]]:
    return lambda statement: ([tuple(sign_ed25519(statement, CUSTOMS, oracles.customs))], None)


def by_sensors(
    oracles: Oracles, *names: str
) -> Callable[[bytes], tuple[list[tuple[str, bytes]], tuple[tuple[str, ...], bytes]]]:
    def sign(statement: bytes) -> tuple[list[tuple[str, bytes]], tuple[tuple[str, ...], bytes]]:
        aggregate = sign_bls_aggregate(statement, [(n, oracles.sensors[n]) for n in names])
        return [], (aggregate.signer_ids, aggregate.signature)

    return sign


def by_party(
    wallet_id: str, party_key: OwnerKey
) -> Callable[[bytes], tuple[list[tuple[str, bytes]], None]]:
    return lambda statement: ([tuple(sign_party(statement, wallet_id, party_key))], None)
