"""Scenario files: what a simulator run does, as TOML (docs/simulator.md documents every key).

A scenario is validated whole when loaded; a bad file is a :class:`ScenarioError` naming the file
and the key, never a crash halfway through a run. Amounts are decimal strings in the currency's
major unit (``"800.00"``), parsed to integer minor units here, at the edge.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Final

from wallets import parse_amount
from wallets.currencies import CURRENCY_CODES

#: The trade currencies the simulator's buyers pay in; sellers are Shenzhen makers paid in CNY.
SELLER_CURRENCY: Final = "CNY"
#: An order's size when the scenario does not say, in the currency's major unit.
DEFAULT_SIZE: Final = ("100.00", "10000.00")
SHARES: Final = ("late", "missing", "forged", "replayed", "duplicated")
#: A scenario's name names its directory (var/sim/<name>/, emptied before each run): one path
#: component, never "." or "..", nothing outside lowercase letters, digits and ``._-``.
NAME_PATTERN: Final = r"[a-z0-9][a-z0-9._-]*"


class ScenarioError(ValueError):
    """A scenario file that cannot be run: ``file: key: what is wrong``."""


@dataclass(frozen=True, slots=True)
class Parties:
    platforms: int = 1
    sellers: int = 2
    buyers: int = 4
    financiers: int = 1


@dataclass(frozen=True, slots=True)
class Orders:
    per_round: int = 10
    #: Buyer currency -> weight.
    currency_mix: dict[str, int] = field(default_factory=lambda: {"CNY": 1})
    #: Currency -> (smallest, largest) order in minor units.
    size_minor: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Of the orders not in CNY, the share paid out to the seller in CNY (a PvP per payout).
    pvp_payout: float = 0.0
    #: Share where a financier funds part of the escrow for the buyer (prepayment financing).
    prepayment_financed: float = 0.0
    #: Share where the seller assigns the proceeds to a financier for an advance.
    receivable_financed: float = 0.0
    #: Share delivered against an electronic bill of lading the payment escrows (DvP on release).
    ebl: float = 0.0
    #: Share of sellers selling part of an eBL directly for the buyer's currency (SettleDvP).
    direct_dvp: float = 0.0


@dataclass(frozen=True, slots=True)
class Events:
    #: Pause before each attestation, drawn uniformly: (low, high) in milliseconds.
    delay_ms: tuple[int, int] = (0, 0)
    #: Refund deadline of an order, after its lock.
    deadline_s: int = 3_600
    #: Refund deadline of an order whose arrival will be attested late.
    late_deadline_s: int = 2


@dataclass(frozen=True, slots=True)
class Attestations:
    """Shares of orders whose arrival attestation is late, missing, forged first, replayed
    afterwards or sent twice with the same request id."""

    late: float = 0.0
    missing: float = 0.0
    forged: float = 0.0
    replayed: float = 0.0
    duplicated: float = 0.0


@dataclass(frozen=True, slots=True)
class Loans:
    """Inventory loans (docs/financing.md): each round, ``per_round`` sellers pledge a warehouse
    receipt for FBA stock to a financier and borrow CNY against it. The shares (of the loans;
    they add up to at most 1) say how each one goes; the rest are repaid in full."""

    per_round: int = 0
    #: The price falls through the margin: a margin call, cured by a part repayment (then repaid
    #: in full) or by another receipt pledged (then left open).
    margin_called: float = 0.0
    #: Stock counted SPOILED or MISSING: a margin call, not cured, the default, the disposal.
    defaulted: float = 0.0
    #: Repaid in two parts, the first freeing part of the receipt (split off).
    repaid_in_parts: float = 0.0
    #: Left open at the end of the day, the collateral above the threshold.
    left_open: float = 0.0
    #: Of the defaulted: share whose receipts go to the financier (RETAIN) rather than sold.
    retained: float = 0.0
    #: Of the sold: share sold to a buyer paying in another currency, through the bridge.
    sold_abroad: float = 0.0
    #: Units of a receipt: (fewest, most).
    units: tuple[int, int] = (200, 2_000)
    #: The opening price per unit, in CNY minor units: (lowest, highest).
    unit_price_minor: tuple[int, int] = (50_00, 200_00)
    #: Each valuation moves the price by at most this many ppm (the seeded walk).
    price_step_ppm: int = 50_000


LOAN_SHARES: Final = ("margin_called", "defaulted", "repaid_in_parts", "left_open")


@dataclass(frozen=True, slots=True)
class Faults:
    #: Bridge fault switches (docs/bridge.md), e.g. "drop_reply=20,on=commit".
    bridge: tuple[str, ...] = ()
    #: SIGKILL and restart of the core during the run (only when the simulator started it).
    server_kills: int = 0
    #: SIGKILL and restart of the bridge process (only when the simulator started it).
    bridge_kills: int = 0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    seed: int
    rounds: int
    concurrency: int
    parties: Parties
    orders: Orders
    events: Events
    attestations: Attestations
    faults: Faults
    loans: Loans = field(default_factory=Loans)
    #: Published-rate steps of the seeded random walk: at most this many ppm per round.
    fx_step_ppm: int = 2_000
    #: Core and bridge liquidity of the bridge gateway per currency, in minor units.
    gateway_liquidity_minor: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @property
    def currencies(self) -> tuple[str, ...]:
        return tuple(sorted({SELLER_CURRENCY, *self.orders.currency_mix}))

    @property
    def orders_total(self) -> int:
        return self.rounds * self.orders.per_round

    @property
    def loans_total(self) -> int:
        return self.rounds * self.loans.per_round

    def with_seed(self, seed: int | None) -> Scenario:
        if seed is None:
            return self
        return replace(self, seed=seed)


def builtin_names() -> list[str]:
    folder = resources.files("sim_central_bank") / "scenarios"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load(name_or_path: str) -> Scenario:
    """A built-in scenario by name (``smoke``) or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ScenarioError(f"{path}: no such scenario file")
        return parse(path.read_text(encoding="utf-8"), str(path))
    folder = resources.files("sim_central_bank") / "scenarios"
    builtin = folder / f"{name_or_path}.toml"
    if not builtin.is_file():
        known = ", ".join(builtin_names())
        raise ScenarioError(f"{name_or_path}: no such scenario (built in: {known})")
    return parse(builtin.read_text(encoding="utf-8"), f"{name_or_path}.toml")


def parse(text: str, source: str) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{source}: {error}") from None
    reader = _Reader(source, data)
    name = reader.text("name")
    if not re.fullmatch(NAME_PATTERN, name):
        raise ScenarioError(
            f"{source}: name: {name!r} is not a valid scenario name (it names the directory "
            "var/sim/<name>: lowercase letters, digits, '.', '_' and '-', starting with a letter "
            "or a digit)"
        )
    scenario = Scenario(
        name=name,
        description=reader.text("description", ""),
        seed=reader.integer("seed", 0, low=0),
        rounds=reader.integer("rounds", 1, low=1, high=10_000),
        concurrency=reader.integer("concurrency", 8, low=1, high=512),
        fx_step_ppm=reader.integer("fx_step_ppm", 2_000, low=0, high=100_000),
        parties=Parties(
            **{
                key: reader.integer(f"parties.{key}", default, low=1, high=10_000)
                for key, default in (
                    ("platforms", 1),
                    ("sellers", 2),
                    ("buyers", 4),
                    ("financiers", 1),
                )
            }
        ),
        orders=_orders(reader),
        events=Events(
            delay_ms=reader.pair("events.delay_ms", (0, 0), low=0, high=60_000),
            deadline_s=reader.integer("events.deadline_s", 3_600, low=1, high=365 * 86_400),
            late_deadline_s=reader.integer("events.late_deadline_s", 2, low=1, high=3_600),
        ),
        attestations=Attestations(**{k: reader.share(f"attestations.{k}") for k in SHARES}),
        faults=Faults(
            bridge=tuple(reader.strings("faults.bridge")),
            server_kills=reader.integer("faults.server_kills", 0, low=0, high=100),
            bridge_kills=reader.integer("faults.bridge_kills", 0, low=0, high=100),
        ),
        loans=_loans(reader),
        gateway_liquidity_minor=reader.amounts("bridge.gateway_liquidity"),
        source=source,
    )
    if sum(getattr(scenario.loans, k) for k in LOAN_SHARES) > 1:
        raise ScenarioError(f"{source}: loans: the shares add up to more than 1")
    if sum(getattr(scenario.attestations, k) for k in SHARES) > 1:
        raise ScenarioError(f"{source}: attestations: the shares add up to more than 1")
    for currency in scenario.currencies:
        if currency not in scenario.gateway_liquidity_minor and len(scenario.currencies) > 1:
            raise ScenarioError(f"{source}: bridge.gateway_liquidity: {currency} is missing")
    reader.refuse_unknown()
    return scenario


def _orders(reader: _Reader) -> Orders:
    mix = reader.table("orders.currency_mix", {"CNY": 1})
    weights: dict[str, int] = {}
    for currency, weight in mix.items():
        reader.currency(f"orders.currency_mix.{currency}", currency)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise ScenarioError(f"{reader.source}: orders.currency_mix.{currency}: a weight >= 0")
        if weight:
            weights[currency] = weight
    if not weights:
        raise ScenarioError(f"{reader.source}: orders.currency_mix: no currency has a weight")
    reader.table("orders.size", {})
    sizes: dict[str, tuple[int, int]] = {}
    for currency in weights:
        low, high = reader.amount_pair(f"orders.size.{currency}", currency)
        sizes[currency] = (low, high)
    return Orders(
        per_round=reader.integer("orders.per_round", 10, low=1, high=100_000),
        currency_mix=weights,
        size_minor=sizes,
        pvp_payout=reader.share("orders.pvp_payout"),
        prepayment_financed=reader.share("orders.prepayment_financed"),
        receivable_financed=reader.share("orders.receivable_financed"),
        ebl=reader.share("orders.ebl"),
        direct_dvp=reader.share("orders.direct_dvp"),
    )


def _loans(reader: _Reader) -> Loans:
    low, high = reader.amount_pair("loans.unit_price", SELLER_CURRENCY, ("50.00", "200.00"))
    return Loans(
        per_round=reader.integer("loans.per_round", 0, low=0, high=10_000),
        margin_called=reader.share("loans.margin_called"),
        defaulted=reader.share("loans.defaulted"),
        repaid_in_parts=reader.share("loans.repaid_in_parts"),
        left_open=reader.share("loans.left_open"),
        retained=reader.share("loans.retained"),
        sold_abroad=reader.share("loans.sold_abroad"),
        units=reader.pair("loans.units", (200, 2_000), low=10, high=1_000_000),
        unit_price_minor=(low, high),
        price_step_ppm=reader.integer("loans.price_step_ppm", 50_000, low=0, high=200_000),
    )


class _Reader:
    """Typed access to dotted keys, remembering which were read to refuse unknown ones."""

    def __init__(self, source: str, data: dict[str, Any]) -> None:
        self.source, self._data, self._seen = source, data, set[str]()

    def _get(self, key: str, default: object) -> Any:
        node: Any = self._data
        parts = key.split(".")
        for i, part in enumerate(parts):
            self._seen.add(".".join(parts[: i + 1]))
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def _fail(self, key: str, what: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {key}: {what}")

    def text(self, key: str, default: str | None = None) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or (default is None and not value):
            raise self._fail(key, "a non-empty string is required")
        return value

    def integer(self, key: str, default: int, *, low: int, high: int = 2**62) -> int:
        value = self._get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self._fail(key, f"an integer from {low} to {high} is required")
        return value

    def share(self, key: str) -> float:
        value = self._get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self._fail(key, "a share from 0 to 1 is required")
        return float(value)

    def pair(self, key: str, default: tuple[int, int], *, low: int, high: int) -> tuple[int, int]:
        value = self._get(key, list(default))
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not low <= value[0] <= value[1] <= high
        ):
            raise self._fail(key, f"[low, high] integers with {low} <= low <= high <= {high}")
        return value[0], value[1]

    def strings(self, key: str) -> list[str]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings is required")
        return value

    def table(self, key: str, default: dict[str, Any]) -> dict[str, Any]:
        value = self._get(key, default)
        if not isinstance(value, dict):
            raise self._fail(key, "a table is required")
        for inner in value:
            self._seen.add(f"{key}.{inner}")
        return value

    def currency(self, key: str, code: str) -> str:
        if code not in CURRENCY_CODES:
            raise self._fail(key, f"unknown currency (one of {', '.join(CURRENCY_CODES)})")
        return code

    def _amount(self, key: str, value: object, currency: str) -> int:
        if not isinstance(value, str):
            raise self._fail(key, 'an amount as a decimal string, e.g. "800.00"')
        try:
            amount = parse_amount(value, currency)
        except ValueError as error:
            raise self._fail(key, str(error)) from None
        if amount <= 0:
            raise self._fail(key, "a positive amount is required")
        return amount

    def amount_pair(
        self, key: str, currency: str, default: tuple[str, str] = DEFAULT_SIZE
    ) -> tuple[int, int]:
        value = self._get(key, list(default))
        if not isinstance(value, list) or len(value) != 2:
            raise self._fail(key, 'a ["low", "high"] pair of amounts is required')
        low, high = (self._amount(key, v, currency) for v in value)
        if low > high:
            raise self._fail(key, "low is above high")
        return low, high

    def amounts(self, key: str) -> dict[str, int]:
        return {
            self.currency(f"{key}.{code}", code): self._amount(f"{key}.{code}", value, code)
            for code, value in self.table(key, {}).items()
        }

    def refuse_unknown(self) -> None:
        def walk(node: Any, prefix: str) -> list[str]:
            found = []
            for key, value in node.items():
                dotted = f"{prefix}{key}"
                if dotted not in self._seen:
                    found.append(dotted)
                elif isinstance(value, dict):
                    found += walk(value, f"{dotted}.")
            return found

        unknown = walk(self._data, "")
        if unknown:
            raise self._fail(unknown[0], "unknown key (docs/simulator.md lists the keys)")
