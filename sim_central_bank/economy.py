"""The simulated economy, set up through the public gRPC API as its members would set it up.

Each central bank (PBoC, HKMA, BOT, CBUAE, SAMA: one per currency of the scenario) registers its
operating institution in the core and issues to it (two-tier issuance), registers its customs
authority (Ed25519) and its warehouse IoT gateways (BLS12-381, 2 of 3) as oracles, and issues the
bridge gateway's liquidity in the core and on the bridge (the same amount on both sides: the
gateway's core reserve mirrors its bridge account). The institutions open enterprise wallets for
the sellers (Shenzhen makers, CNY), the buyers (in the currency of their jurisdiction) and the
financiers, and fund them. The platforms register one contract per kind of order.

Every key is derived from the seed and every request id from the run's prefix, so a rerun of a
set-up that was interrupted replays instead of doubling anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Final

from condpay.attest import bls_registration
from condpay.errors import AlreadyExists

import bridges
from bridges import (
    DEMO_BANK_BALANCE_MINOR,
    BridgeClient,
    Identity,
    Kind,
    Money,
    Rate,
)
from contracts_dsl import CompiledContract, compile_source
from sim_central_bank.metered import MeteredClient
from sim_central_bank.plan import (
    CENTRAL_BANKS,
    LOAN_INTEREST_MINOR,
    SENSORS_PER_SITE,
    LoanOutcome,
    Order,
    Plan,
)
from sim_central_bank.record import GATEWAY
from sim_central_bank.scenario import SELLER_CURRENCY
from wallets import OwnerKey, bls

CARRIER: Final = "carrier.cosco"
#: The oracles of inventory loans (docs/financing.md): the FBA warehouse's system (issues the
#: warehouse receipts, counts the stock), a price feed for the goods, and three IoT sensors in
#: the warehouse (2 of 3 sign each stock count with the warehouse).
WAREHOUSE: Final = "warehouse.fba-ont8"
PRICE_ORACLE: Final = "price.sz-electronics"
LOAN_SENSORS: Final = tuple(f"iot.ont8.{s}" for s in SENSORS_PER_SITE)


@dataclass(frozen=True, slots=True)
class Party:
    name: str  # "buyer-007"
    key: OwnerKey
    wallet_id: str
    currency: str  # the currency of its jurisdiction


@dataclass(frozen=True, slots=True)
class Site:
    """A destination jurisdiction's oracles, as its central bank registered them."""

    customs: str
    customs_key: OwnerKey
    sensors: tuple[tuple[str, int], ...]  # (oracle id, BLS secret key)
    warehouse: str


@dataclass(frozen=True, slots=True)
class LoanOracles:
    """The inventory loans' oracles, as PBoC registered them."""

    warehouse: str
    warehouse_key: OwnerKey
    price: str
    price_key: OwnerKey
    sensors: tuple[tuple[str, int], ...]  # (oracle id, BLS secret key)


@dataclass(slots=True)
class Economy:
    prefix: str  # of every request id of the run
    plan: Plan
    sellers: list[Party] = field(default_factory=list)
    buyers: list[Party] = field(default_factory=list)
    financiers: list[Party] = field(default_factory=list)
    sites: dict[str, Site] = field(default_factory=dict)  # currency -> destination oracles
    contracts: dict[tuple[str, bool, bool], CompiledContract] = field(default_factory=dict)
    carrier_key: OwnerKey | None = None
    loan_oracles: LoanOracles | None = None
    oracle_set_version: int = 0

    def key(self, name: str) -> OwnerKey:
        return derive_key(self.plan.scenario.seed, name)

    def rid(self, *parts: object) -> str:
        return ".".join((self.prefix, *(str(p) for p in parts)))

    def contract(self, order: Order) -> CompiledContract:
        return self.contracts[(order.currency, order.pvp_payout, order.ebl_units > 0)]


def derive_key(seed: int, name: str) -> OwnerKey:
    return OwnerKey.from_seed(hashlib.sha256(f"condpay-sim:{seed}:{name}".encode()).digest())


def member_key(name: str) -> OwnerKey:
    """The key of a standing member of the simulated economy (an institution's reserve, an
    oracle, the carrier): the same in every run, so a run against a ledger an earlier run set up
    finds them registered with the keys it signs with."""
    return OwnerKey.from_seed(hashlib.sha256(f"condpay-sim:member:{name}".encode()).digest())


def sensor_key(name: str) -> int:
    return bls.secret_key(hashlib.sha256(f"condpay-sim:sensor:{name}".encode()).digest())


async def registered(call: Awaitable[object]) -> None:
    """A registration that an earlier run against the same ledger may have made already."""
    try:
        await call
    except AlreadyExists as error:
        if error.reason not in ("INSTITUTION_EXISTS", "ORACLE_EXISTS"):
            raise


def central_bank_caller(currency: str) -> str:
    return f"central_bank/{CENTRAL_BANKS[currency][0]}"


def institution(currency: str) -> str:
    return CENTRAL_BANKS[currency][1]


def contract_source(currency: str, pvp_payout: bool, ebl: bool) -> str:
    """One kind of order: escrow in the buyer's ``currency``; 30% to the seller when customs
    clears, the rest on arrival at the buyer's warehouse (2 of 3 sensors), paid in CNY through the
    bridge when ``pvp_payout``, with the escrowed eBL delivered to the buyer when ``ebl``."""
    _, _, customs, site = CENTRAL_BANKS[currency]
    sensors = ", ".join(f'"iot.{site}.{s}"' for s in SENSORS_PER_SITE)
    payout = f" in {SELLER_CURRENCY}" if pvp_payout else ""
    name = f"gba-{currency.lower()}{'-pvp' if pvp_payout else ''}{'-ebl' if ebl else ''}"
    return "\n".join(
        [
            f'contract "{name}" version 1',
            "",
            "param buyer       : wallet",
            "param seller      : wallet",
            f"param price       : money {currency}",
            "param declaration : text",
            "param ship_by     : timestamp",
            *(["param bol         : title"] if ebl else []),
            "",
            f'oracle customs = "{customs}"',
            f"oracle sensors = quorum 2 of [{sensors}]",
            "",
            "escrow price from buyer",
            "deadline ship_by -> refund remainder to buyer",
            "",
            "clause cleared",
            "when customs.cleared(declaration == declaration) by customs",
            f"  -> pay 30% to seller{payout}",
            "",
            "clause arrived",
            f'when iot.arrived(site == "{warehouse_name(currency)}") by sensors',
            f"  -> pay remainder to seller{payout}",
            *(["     and deliver title bol to buyer"] if ebl else []),
            "",
        ]
    )


def warehouse_name(currency: str) -> str:
    return f"{CENTRAL_BANKS[currency][3].upper()}-WH-1"


def funding_needs(plan: Plan) -> dict[str, dict[str, int]]:
    """Party name -> currency -> what to fund it with: its orders' escrows (buyers), principals
    and advances (financiers), each with headroom."""
    needs: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for order in plan.orders:
        needs[f"buyer-{order.buyer:03d}"][order.currency] += order.amount_minor
        if order.prepayment:
            financier, principal = order.prepayment
            needs[f"financier-{financier:03d}"][order.currency] += principal
        if order.receivable:
            financier, advance = order.receivable
            needs[f"financier-{financier:03d}"][order.currency] += advance
    for loan in plan.loans:
        # The principal (financier); the fee and each repayment's fen of interest (seller, who
        # repays the principal out of the principal); the buyer's side of a sale.
        needs[f"financier-{loan.financier:03d}"][SELLER_CURRENCY] += loan.principal_minor
        seller = needs[f"seller-{loan.seller:03d}"]
        seller[SELLER_CURRENCY] += loan.fee_minor + 2 * LOAN_INTEREST_MINOR
        if loan.outcome is LoanOutcome.DEFAULTED and loan.disposal == "SELL":
            currency = plan.buyer_currency[loan.buyer]
            numerator, denominator = min(rates[currency] for rates in plan.rates)
            needs[f"buyer-{loan.buyer:03d}"][currency] += sale_pay_max(
                loan.sale_minor, (numerator, denominator), currency
            )
    for direct in (d for dvps in plan.direct for d in dvps):
        # At most 1.5 units of the buyer's currency per fen at any rate of the walk, spread in.
        numerator, denominator = min(rates[direct.currency] for rates in plan.rates)
        needs[f"buyer-{direct.buyer:03d}"][direct.currency] += (
            direct.cny_minor * denominator * 3 // (numerator * 2) + 1
        )
    return {
        name: {c: amount + amount // 4 + 1_000_00 for c, amount in by_currency.items()}
        for name, by_currency in needs.items()
    }


def sale_pay_max(cny_minor: int, rate: tuple[int, int], currency: str) -> int:
    """The most a buyer paying ``currency`` offers for ``cny_minor`` at ``rate`` (fen per minor
    unit: numerator / denominator): 1.5 times the amount at that rate, spread and fees included;
    the bridge charges the market amount."""
    if currency == SELLER_CURRENCY:
        return cny_minor
    numerator, denominator = rate
    return cny_minor * denominator * 3 // (numerator * 2) + 1


async def set_up(
    core: MeteredClient, bridge: BridgeClient | None, plan: Plan, prefix: str
) -> Economy:
    economy = Economy(prefix, plan)
    scenario = plan.scenario
    needs = funding_needs(plan)
    currencies = scenario.currencies
    gateway = GATEWAY
    for currency in currencies:
        central_bank = core.with_caller(central_bank_caller(currency))
        bank = institution(currency)
        await registered(
            central_bank.register_institution(
                bank,
                f"{bank} (operating institution)",
                member_key(f"reserve:{bank}").public_key,
                request_id=economy.rid("institution", bank),
            )
        )
        reserve_needs = sum(n.get(currency, 0) for n in needs.values())
        await central_bank.issue(
            bank,
            currency,
            reserve_needs + 1_000_000_00,
            memo="two-tier issuance",
            request_id=economy.rid("issue", bank, currency),
        )
        economy.sites[currency] = await _register_site(economy, central_bank, currency)
    pboc = core.with_caller(central_bank_caller(SELLER_CURRENCY))
    if len(currencies) > 1:
        await registered(
            pboc.register_institution(
                gateway,
                "condpay bridge gateway",
                member_key("reserve:gateway").public_key,
                request_id=economy.rid("institution", gateway),
            )
        )
        for currency in currencies:
            liquidity = scenario.gateway_liquidity_minor[currency]
            await core.with_caller(central_bank_caller(currency)).issue(
                gateway,
                currency,
                liquidity,
                memo="bridge gateway liquidity",
                request_id=economy.rid("issue", gateway, currency),
            )
            if bridge is not None and liquidity > DEMO_BANK_BALANCE_MINOR:
                await bridge_issuer(bridge, currency).issue(
                    economy.rid("bridge-issue", gateway, currency),
                    participant_id=gateway,
                    amount=Money(currency, liquidity - DEMO_BANK_BALANCE_MINOR),
                )
    economy.carrier_key = member_key(CARRIER)
    await registered(
        pboc.register_oracle(
            CARRIER,
            "ED25519",
            economy.carrier_key.public_key,
            request_id=economy.rid("oracle", CARRIER),
        )
    )
    if plan.loans:
        economy.loan_oracles = await _register_loan_oracles(economy, pboc)
    # The contracts meanwhile: the first one waits for the server's compiler to start (0.7 s),
    # which the wallets need not wait for (neither depends on the other, nor does the ledger).
    contracts = asyncio.create_task(_register_contracts(economy, core))
    try:
        await _open_parties(economy, core, needs)
    except BaseException:
        contracts.cancel()
        with contextlib.suppress(BaseException):
            await contracts
        raise
    await contracts
    economy.oracle_set_version = await core.oracle_set_version()
    if bridge is not None:
        await publish_rates(bridge, plan, 0)
    return economy


async def _register_site(economy: Economy, central_bank: MeteredClient, currency: str) -> Site:
    _, _, customs, site = CENTRAL_BANKS[currency]
    customs_key = member_key(customs)
    await registered(
        central_bank.register_oracle(
            customs, "ED25519", customs_key.public_key, request_id=economy.rid("oracle", customs)
        )
    )
    sensors = [
        await _register_sensor(economy, central_bank, f"iot.{site}.{part}")
        for part in SENSORS_PER_SITE
    ]
    return Site(customs, customs_key, tuple(sensors), warehouse_name(currency))


async def _register_loan_oracles(economy: Economy, pboc: MeteredClient) -> LoanOracles:
    warehouse_key, price_key = member_key(WAREHOUSE), member_key(PRICE_ORACLE)
    for name, key in ((WAREHOUSE, warehouse_key), (PRICE_ORACLE, price_key)):
        await registered(
            pboc.register_oracle(
                name, "ED25519", key.public_key, request_id=economy.rid("oracle", name)
            )
        )
    sensors = [await _register_sensor(economy, pboc, name) for name in LOAN_SENSORS]
    return LoanOracles(WAREHOUSE, warehouse_key, PRICE_ORACLE, price_key, tuple(sensors))


async def _register_sensor(
    economy: Economy, central_bank: MeteredClient, name: str
) -> tuple[str, int]:
    """A BLS sensor oracle with its key derived from its name (proof of possession included):
    (its name, its secret key)."""
    secret = sensor_key(name)
    registration = bls_registration(secret)
    await registered(
        central_bank.register_oracle(
            name,
            "BLS12_381",
            registration.public_key,
            proof_of_possession=registration.proof_of_possession,
            request_id=economy.rid("oracle", name),
        )
    )
    return name, secret


async def _open_parties(
    economy: Economy, core: MeteredClient, needs: dict[str, dict[str, int]]
) -> None:
    scenario = economy.plan.scenario
    groups = (
        ("seller", [SELLER_CURRENCY] * scenario.parties.sellers, economy.sellers),
        ("buyer", list(economy.plan.buyer_currency), economy.buyers),
        ("financier", [SELLER_CURRENCY] * scenario.parties.financiers, economy.financiers),
    )
    for role, currencies, parties in groups:
        for i, currency in enumerate(currencies):
            name = f"{role}-{i:03d}"
            bank = core.with_caller(f"institution/{institution(currency)}")
            key = economy.key(name)
            opened = await bank.open_wallet(
                institution(currency),
                key.public_key,
                kind="ENTERPRISE",
                tier=0,
                display_name=name,
                request_id=economy.rid("wallet", name),
            )
            party = Party(name, key, opened.wallet.wallet_id, currency)
            parties.append(party)
            for funded_in, amount in sorted(needs.get(name, {}).items()):
                source_bank = institution(funded_in)
                await core.with_caller(f"institution/{source_bank}").transfer(
                    member_key(f"reserve:{source_bank}"),
                    f"w_reserve.{source_bank}",
                    party.wallet_id,
                    funded_in,
                    amount,
                    memo=f"funding {name}",
                    request_id=economy.rid("fund", name, funded_in),
                )


async def _register_contracts(economy: Economy, core: MeteredClient) -> None:
    kinds = {(o.currency, o.pvp_payout, o.ebl_units > 0) for o in economy.plan.orders}
    platform = core.with_caller("platform/sim-0")
    for kind in sorted(kinds):
        source = contract_source(*kind)
        compiled = compile_source(source, f"{kind[0]}.contract")
        assert compiled.contract is not None, compiled.diagnostics
        await platform.register_contract(source, request_id=economy.rid("contract", *kind))
        economy.contracts[kind] = compiled.contract


#: The simulator's reader of the bridge (the bridge's development mode: identities by metadata).
SIM_AUDITOR = Identity(Kind.AUDITOR, "sim-auditor")
_ISSUER_OF = {currency: bank for bank, currency in bridges.CENTRAL_BANKS.items()}


def bridge_issuer(bridge: BridgeClient, currency: str) -> BridgeClient:
    """The bridge as the central bank that issues ``currency``."""
    return bridge.acting_as(Identity(Kind.CENTRAL_BANK, _ISSUER_OF[currency]))


async def publish_rates(bridge: BridgeClient, plan: Plan, round_index: int) -> None:
    """The round's rates of the seeded walk, each published on the bridge by the currency's
    central bank (its rate authority)."""
    for currency, (numerator, denominator) in sorted(plan.rates[round_index].items()):
        await bridge_issuer(bridge, currency).publish_rate(currency, Rate(numerator, denominator))
