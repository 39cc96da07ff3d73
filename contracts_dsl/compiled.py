"""The compiled contract: a typed, canonical form with a content hash.

`CompiledContract.canonical` is deterministic JSON (UTF-8, keys sorted, no whitespace) and
`CompiledContract.hash` is the hex SHA-256 of those bytes. Formatting, comments, the order of
parameter/oracle/event declarations and the order of commutative parts (items of `and`/`or`,
constraints of a pattern, members of a quorum or a membership list) do not change it; any change
of meaning does. The core locks a payment against this hash plus the bound parameter values.

Money is integer minor units, percentages are basis points (1% = 100 bp), timestamps are Unix
microseconds (UTC), durations are seconds; there are no floats. `load_compiled` reads the bytes
back and raises `CompiledFormError` unless they are exactly a canonical compiled contract.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from contracts_dsl import currencies
from contracts_dsl.errors import CompiledFormError

FORMAT: Final = "condpay.contract/1"

Json: TypeAlias = bool | int | str | list["Json"] | dict[str, "Json"] | None

PARAM_KINDS: Final = ("wallet", "money", "text", "number", "timestamp", "duration", "title")
ATTRIBUTE_KINDS: Final = ("text", "number", "bool", "timestamp")
VALUE_KINDS: Final = ("text", "number", "bool", "timestamp", "param")
COMPARE_OPS: Final = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")
ACTION_KINDS: Final = ("pay", "penalty", "refund", "deliver_title")


def canonical_json(value: Json) -> bytes:
    """The canonical encoding: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sort_key(value: Json) -> bytes:
    return canonical_json(value)


# -- references to literals or parameters -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ref:
    """A value given in the contract (`literal`) or by a parameter (`param`), never both."""

    literal: int | None = None
    param: str | None = None

    def to_json(self, unit: str) -> Json:
        if self.param is not None:
            return {"param": self.param}
        return {unit: self.literal}


@dataclass(frozen=True, slots=True)
class Value:
    """A constraint value: kind text/number/bool/timestamp/param. Numbers are canonical
    decimal strings (`"8.5"`), timestamps Unix microseconds, params a parameter name."""

    kind: str
    value: str | int | bool

    def to_json(self) -> Json:
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True, slots=True)
class Amount:
    """`percent` (bp of the escrow, or of `base`), `fixed` (`money`) or `remainder`."""

    kind: str
    bp: int = 0
    base: Ref | None = None
    money: Ref | None = None

    def to_json(self) -> Json:
        if self.kind == "percent":
            return {
                "kind": "percent",
                "bp": self.bp,
                "of": None if self.base is None else self.base.to_json("minor"),
            }
        if self.kind == "fixed":
            assert self.money is not None
            return {"kind": "fixed", "money": self.money.to_json("minor")}
        return {"kind": "remainder"}


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One action: `pay`/`penalty`/`refund` move money to `party`; `deliver_title` hands the
    title parameter `title` to `party`. `target_currency` is the bridge payout currency."""

    kind: str
    party: str
    amount: Amount | None = None
    target_currency: str | None = None
    title: str | None = None

    def to_json(self) -> Json:
        return {
            "kind": self.kind,
            "party": self.party,
            "amount": None if self.amount is None else self.amount.to_json(),
            "target_currency": self.target_currency,
            "title": self.title,
        }


@dataclass(frozen=True, slots=True)
class ConstraintSpec:
    attr: str
    op: str
    values: tuple[Value, ...]

    def to_json(self) -> Json:
        return {"attr": self.attr, "op": self.op, "values": [v.to_json() for v in self.values]}


@dataclass(frozen=True, slots=True)
class TimingSpec:
    """`within` (`duration` seconds after the first accepted `anchor` event), `before` or
    `after` (`at`, microseconds)."""

    kind: str
    at: Ref | None = None
    duration: Ref | None = None
    anchor: str | None = None

    def to_json(self) -> Json:
        if self.kind == "within":
            assert self.duration is not None
            return {
                "kind": "within",
                "duration": self.duration.to_json("seconds"),
                "anchor": self.anchor,
            }
        assert self.at is not None
        return {"kind": self.kind, "at": self.at.to_json("us")}


@dataclass(frozen=True, slots=True)
class PatternSpec:
    """An event pattern. `index` numbers the patterns of a contract (canonical order)."""

    event_type: str
    attester: str
    attester_kind: str  # "oracle" | "party"
    constraints: tuple[ConstraintSpec, ...]
    timings: tuple[TimingSpec, ...]
    index: int = field(default=0, compare=False)

    def to_json(self) -> Json:
        return {
            "kind": "event",
            "event_type": self.event_type,
            "attester": {"kind": self.attester_kind, "name": self.attester},
            "constraints": [c.to_json() for c in self.constraints],
            "timings": [t.to_json() for t in self.timings],
        }


@dataclass(frozen=True, slots=True)
class CondSpec:
    """`all` or `any` of `items` (each a CondSpec or a PatternSpec)."""

    kind: str
    items: tuple[CondSpec | PatternSpec, ...]

    def to_json(self) -> Json:
        return {"kind": self.kind, "items": [i.to_json() for i in self.items]}


Condition: TypeAlias = CondSpec | PatternSpec


@dataclass(frozen=True, slots=True)
class ClauseSpec:
    """A clause. `id` is its label or `clause#N` (N counts clauses from 1 in source order);
    `group` is `one_of#K` for the K-th `one of` block, None when standalone."""

    id: str
    group: str | None
    condition: Condition
    actions: tuple[ActionSpec, ...]

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "group": self.group,
            "when": self.condition.to_json(),
            "actions": [a.to_json() for a in self.actions],
        }


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    kind: str
    currency: str | None = None

    def to_json(self) -> Json:
        return {"name": self.name, "kind": self.kind, "currency": self.currency}


@dataclass(frozen=True, slots=True)
class OracleSpec:
    """A named attester: `threshold` of `sources` must sign (1 of 1 for a single source)."""

    name: str
    threshold: int
    sources: tuple[str, ...]

    def to_json(self) -> Json:
        return {"name": self.name, "threshold": self.threshold, "sources": list(self.sources)}


@dataclass(frozen=True, slots=True)
class EventSpec:
    event_type: str
    attributes: tuple[tuple[str, str], ...]
    builtin: bool

    def to_json(self) -> Json:
        return {
            "event_type": self.event_type,
            "attributes": [{"name": n, "kind": k} for n, k in self.attributes],
            "builtin": self.builtin,
        }


@dataclass(frozen=True, slots=True)
class EscrowSpec:
    currency: str
    amount: Ref
    funder: str

    def to_json(self) -> Json:
        return {
            "currency": self.currency,
            "amount": self.amount.to_json("minor"),
            "funder": self.funder,
        }


@dataclass(frozen=True, slots=True)
class DeadlineSpec:
    at: Ref
    actions: tuple[ActionSpec, ...]

    def to_json(self) -> Json:
        return {"at": self.at.to_json("us"), "actions": [a.to_json() for a in self.actions]}


@dataclass(frozen=True, slots=True)
class CompiledContract:
    """A checked contract in canonical form. Build it with `compile_source` or
    `load_compiled`; `canonical` and `hash` are computed from the other fields."""

    name: str
    language_version: int
    params: tuple[ParamSpec, ...]
    oracles: tuple[OracleSpec, ...]
    events: tuple[EventSpec, ...]
    escrow: EscrowSpec
    deadline: DeadlineSpec | None
    clauses: tuple[ClauseSpec, ...]
    patterns: tuple[PatternSpec, ...] = field(init=False, repr=False, compare=False)
    _canonical: bytes | None = field(init=False, default=None, repr=False, compare=False)
    _hash: str | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        found: list[PatternSpec] = []
        for clause in self.clauses:
            found.extend(iter_patterns(clause.condition))
        object.__setattr__(self, "patterns", tuple(found))

    @property
    def canonical(self) -> bytes:
        """The canonical bytes (computed on first use: the checker builds compiled forms it
        never encodes, at every keystroke in an editor)."""
        if self._canonical is None:
            object.__setattr__(self, "_canonical", canonical_json(self.to_json()))
        assert self._canonical is not None
        return self._canonical

    @property
    def hash(self) -> str:
        """The hex SHA-256 of `canonical`."""
        if self._hash is None:
            object.__setattr__(self, "_hash", hashlib.sha256(self.canonical).hexdigest())
        assert self._hash is not None
        return self._hash

    def to_json(self) -> Json:
        return {
            "format": FORMAT,
            "name": self.name,
            "language_version": self.language_version,
            "params": [p.to_json() for p in self.params],
            "oracles": [o.to_json() for o in self.oracles],
            "events": [e.to_json() for e in self.events],
            "escrow": self.escrow.to_json(),
            "deadline": None if self.deadline is None else self.deadline.to_json(),
            "clauses": [c.to_json() for c in self.clauses],
        }

    # -- what the settlement core needs to route and validate ------------------------------

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def oracle(self, name: str) -> OracleSpec | None:
        return next((o for o in self.oracles if o.name == name), None)

    def attesters_by_event_type(self) -> dict[str, tuple[str, ...]]:
        """For each event type the contract listens to, the attester names (oracle names or
        wallet parameter names) whose attestations it accepts: route attestations by this."""
        routes: dict[str, set[str]] = {}
        for pattern in self.patterns:
            routes.setdefault(pattern.event_type, set()).add(pattern.attester)
        return {k: tuple(sorted(v)) for k, v in sorted(routes.items())}

    def attesters_by_clause(self) -> dict[str, tuple[str, ...]]:
        """For each clause id, the attester names its condition needs."""
        return {
            clause.id: tuple(sorted({p.attester for p in iter_patterns(clause.condition)}))
            for clause in self.clauses
        }

    def event_types_by_clause(self) -> dict[str, tuple[str, ...]]:
        """For each clause id, the event types its condition mentions."""
        return {
            clause.id: tuple(sorted({p.event_type for p in iter_patterns(clause.condition)}))
            for clause in self.clauses
        }


def iter_patterns(condition: Condition) -> list[PatternSpec]:
    if isinstance(condition, PatternSpec):
        return [condition]
    found: list[PatternSpec] = []
    for item in condition.items:
        found.extend(iter_patterns(item))
    return found


def sort_canonically(items: Sequence[CondSpec | PatternSpec]) -> tuple[Condition, ...]:
    unique: dict[bytes, Condition] = {}
    for item in items:
        unique.setdefault(_sort_key(item.to_json()), item)
    return tuple(unique[k] for k in sorted(unique))


def number_patterns(contract: CompiledContract) -> CompiledContract:
    """Give every pattern its index in canonical order (used in evaluator traces)."""
    counter = iter(range(1_000_000))

    def renumber(condition: Condition) -> Condition:
        if isinstance(condition, PatternSpec):
            return PatternSpec(
                condition.event_type,
                condition.attester,
                condition.attester_kind,
                condition.constraints,
                condition.timings,
                next(counter),
            )
        return CondSpec(condition.kind, tuple(renumber(i) for i in condition.items))

    clauses = tuple(
        ClauseSpec(c.id, c.group, renumber(c.condition), c.actions) for c in contract.clauses
    )
    return CompiledContract(
        contract.name,
        contract.language_version,
        contract.params,
        contract.oracles,
        contract.events,
        contract.escrow,
        contract.deadline,
        clauses,
    )


# -- loading ------------------------------------------------------------------------------------


class _Reader:
    """Typed access to untrusted JSON; every failure is a CompiledFormError."""

    @staticmethod
    def obj(value: object, where: str) -> Mapping[str, object]:
        if not isinstance(value, dict):
            raise CompiledFormError(f"{where}: expected an object")
        return value

    @staticmethod
    def seq(value: object, where: str) -> list[object]:
        if not isinstance(value, list):
            raise CompiledFormError(f"{where}: expected a list")
        return value

    @staticmethod
    def text(value: object, where: str, choices: Sequence[str] | None = None) -> str:
        if not isinstance(value, str):
            raise CompiledFormError(f"{where}: expected a string")
        if choices is not None and value not in choices:
            raise CompiledFormError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value

    @staticmethod
    def opt_text(value: object, where: str) -> str | None:
        return None if value is None else _Reader.text(value, where)

    @staticmethod
    def integer(value: object, where: str, minimum: int = 0) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise CompiledFormError(f"{where}: expected an integer >= {minimum}")
        return value


_r = _Reader


def _ref(value: object, unit: str, where: str) -> Ref:
    data = _r.obj(value, where)
    if "param" in data:
        return Ref(param=_r.text(data["param"], where))
    return Ref(literal=_r.integer(data.get(unit), f"{where}.{unit}"))


def _amount(value: object, where: str) -> Amount:
    data = _r.obj(value, where)
    kind = _r.text(data.get("kind"), where, ("percent", "fixed", "remainder"))
    if kind == "percent":
        base = data.get("of")
        return Amount(
            "percent",
            bp=_r.integer(data.get("bp"), f"{where}.bp", 1),
            base=None if base is None else _ref(base, "minor", f"{where}.of"),
        )
    if kind == "fixed":
        return Amount("fixed", money=_ref(data.get("money"), "minor", f"{where}.money"))
    return Amount("remainder")


def _action(value: object, where: str) -> ActionSpec:
    data = _r.obj(value, where)
    kind = _r.text(data.get("kind"), where, ACTION_KINDS)
    amount = data.get("amount")
    return ActionSpec(
        kind,
        _r.text(data.get("party"), f"{where}.party"),
        None if amount is None else _amount(amount, f"{where}.amount"),
        _r.opt_text(data.get("target_currency"), f"{where}.target_currency"),
        _r.opt_text(data.get("title"), f"{where}.title"),
    )


def _value(value: object, where: str) -> Value:
    data = _r.obj(value, where)
    kind = _r.text(data.get("kind"), where, VALUE_KINDS)
    raw = data.get("value")
    if kind == "bool":
        if not isinstance(raw, bool):
            raise CompiledFormError(f"{where}: expected a bool")
        return Value(kind, raw)
    if kind == "timestamp":
        return Value(kind, _r.integer(raw, where))
    return Value(kind, _r.text(raw, where))


def _condition(value: object, where: str) -> Condition:
    data = _r.obj(value, where)
    kind = _r.text(data.get("kind"), where, ("event", "all", "any"))
    if kind != "event":
        items = _r.seq(data.get("items"), where)
        return CondSpec(kind, tuple(_condition(x, f"{where}.items") for x in items))
    attester = _r.obj(data.get("attester"), f"{where}.attester")
    constraints = []
    for raw in _r.seq(data.get("constraints"), f"{where}.constraints"):
        c = _r.obj(raw, f"{where}.constraints")
        values = _r.seq(c.get("values"), f"{where}.values")
        constraints.append(
            ConstraintSpec(
                _r.text(c.get("attr"), f"{where}.attr"),
                _r.text(c.get("op"), f"{where}.op", COMPARE_OPS),
                tuple(_value(v, f"{where}.values") for v in values),
            )
        )
    timings = []
    for raw in _r.seq(data.get("timings"), f"{where}.timings"):
        t = _r.obj(raw, f"{where}.timings")
        kind_t = _r.text(t.get("kind"), f"{where}.timings", ("within", "before", "after"))
        if kind_t == "within":
            timings.append(
                TimingSpec(
                    "within",
                    duration=_ref(t.get("duration"), "seconds", f"{where}.duration"),
                    anchor=_r.text(t.get("anchor"), f"{where}.anchor"),
                )
            )
        else:
            timings.append(TimingSpec(kind_t, at=_ref(t.get("at"), "us", f"{where}.at")))
    return PatternSpec(
        _r.text(data.get("event_type"), f"{where}.event_type"),
        _r.text(attester.get("name"), f"{where}.attester.name"),
        _r.text(attester.get("kind"), f"{where}.attester.kind", ("oracle", "party")),
        tuple(constraints),
        tuple(timings),
    )


def load_compiled(data: bytes) -> CompiledContract:
    """Read canonical bytes back into a `CompiledContract`.

    Raises `CompiledFormError` when the bytes are not valid UTF-8 JSON of the right shape, name an
    unknown format, or are not exactly canonical (so the hash of what was stored is the hash of
    what is loaded)."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CompiledFormError(f"not UTF-8 JSON: {error}") from None
    root = _r.obj(document, "contract")
    if root.get("format") != FORMAT:
        raise CompiledFormError(f"unknown format {root.get('format')!r}; expected {FORMAT!r}")
    params = []
    for raw in _r.seq(root.get("params"), "params"):
        p = _r.obj(raw, "params")
        params.append(
            ParamSpec(
                _r.text(p.get("name"), "params.name"),
                _r.text(p.get("kind"), "params.kind", PARAM_KINDS),
                _r.opt_text(p.get("currency"), "params.currency"),
            )
        )
    oracles = []
    for raw in _r.seq(root.get("oracles"), "oracles"):
        o = _r.obj(raw, "oracles")
        sources = _r.seq(o.get("sources"), "oracles.sources")
        oracles.append(
            OracleSpec(
                _r.text(o.get("name"), "oracles.name"),
                _r.integer(o.get("threshold"), "oracles.threshold", 1),
                tuple(_r.text(s, "oracles.sources") for s in sources),
            )
        )
    events = []
    for raw in _r.seq(root.get("events"), "events"):
        e = _r.obj(raw, "events")
        attributes = []
        for attr in _r.seq(e.get("attributes"), "events.attributes"):
            x = _r.obj(attr, "events.attributes")
            attributes.append(
                (
                    _r.text(x.get("name"), "events.attributes.name"),
                    _r.text(x.get("kind"), "events.attributes.kind", ATTRIBUTE_KINDS),
                )
            )
        builtin = e.get("builtin")
        if not isinstance(builtin, bool):
            raise CompiledFormError("events.builtin: expected a bool")
        events.append(
            EventSpec(_r.text(e.get("event_type"), "events.event_type"), tuple(attributes), builtin)
        )
    escrow_data = _r.obj(root.get("escrow"), "escrow")
    currency = _r.text(escrow_data.get("currency"), "escrow.currency")
    if not currencies.is_supported(currency):
        raise CompiledFormError(f"escrow.currency: {currency!r} is not supported")
    escrow = EscrowSpec(
        currency,
        _ref(escrow_data.get("amount"), "minor", "escrow.amount"),
        _r.text(escrow_data.get("funder"), "escrow.funder"),
    )
    deadline = None
    if root.get("deadline") is not None:
        d = _r.obj(root.get("deadline"), "deadline")
        deadline = DeadlineSpec(
            _ref(d.get("at"), "us", "deadline.at"),
            tuple(_action(x, "deadline.actions") for x in _r.seq(d.get("actions"), "deadline")),
        )
    clauses = []
    for raw in _r.seq(root.get("clauses"), "clauses"):
        c = _r.obj(raw, "clauses")
        clauses.append(
            ClauseSpec(
                _r.text(c.get("id"), "clauses.id"),
                _r.opt_text(c.get("group"), "clauses.group"),
                _condition(c.get("when"), "clauses.when"),
                tuple(_action(x, "clauses.actions") for x in _r.seq(c.get("actions"), "clauses")),
            )
        )
    contract = number_patterns(
        CompiledContract(
            _r.text(root.get("name"), "name"),
            _r.integer(root.get("language_version"), "language_version", 1),
            tuple(params),
            tuple(oracles),
            tuple(events),
            escrow,
            deadline,
            tuple(clauses),
        )
    )
    if contract.canonical != data:
        raise CompiledFormError("the bytes are not in canonical form (re-encoding differs)")
    _recheck(contract)
    return contract


_VERIFIED_MAX: Final = 4096
_verified: dict[str, None] = {}
"""Hashes of compiled forms known to pass the checker (insertion-ordered, oldest dropped)."""
_verified_lock: Final = threading.Lock()


def mark_verified(contract_hash: str) -> None:
    """Record that the compiler made this compiled form from checked source (the compiler calls
    it), so `load_compiled` need not check it again."""
    with _verified_lock:
        _verified[contract_hash] = None
        while len(_verified) > _VERIFIED_MAX:
            del _verified[next(iter(_verified))]


def _recheck(contract: CompiledContract) -> None:
    """Raise `CompiledFormError` unless the checker accepts the contract and compiles it to the
    same form: canonical bytes edited by hand may be well-formed JSON the checker would refuse
    (basis points over 100%, a refund to someone other than the funder, a title delivered twice).
    The contract is printed back as source (contracts_dsl.decompile) and compiled."""
    with _verified_lock:
        if contract.hash in _verified:
            return
    # Loaded here: a program that only evaluates stored contracts it compiled itself never
    # needs the parser and checker (see the package docstring).
    from contracts_dsl.compiler import compile_source
    from contracts_dsl.decompile import source_of

    result = compile_source(source_of(contract), "<compiled form>")
    if result.contract is None:
        errors = [f"{d.code} {d.message}" for d in result.diagnostics if d.is_error]
        raise CompiledFormError("the checker refuses this contract: " + "; ".join(errors[:5]))
    if result.contract.hash != contract.hash:
        raise CompiledFormError(
            "the compiled form is not one the compiler makes (its source compiles differently)"
        )
