"""Binding parameter values to a compiled contract's typed parameters.

`bind_params(contract, values)` validates a mapping of parameter name -> value and returns a
`ParamBinding`: either `params` (a `BoundParams`) or typed `errors` (never both, never raises).

Accepted values (JSON-friendly; the same forms are produced by `BoundParams.to_json`):

==========  ==================================================================================
wallet      a non-empty string (the wallet id)
title       a non-empty string (the title id, e.g. an eBL number)
text        a string
money CUR   ``{"currency": "CNY", "amount_minor": 12500000}`` or the string ``"125000.00 CNY"``;
            the currency must be CUR, the amount positive and no finer than the minor unit
number      an integer or a decimal string (``"8.5"``); floats are refused
timestamp   an RFC 3339 string with an offset (``"2026-12-31T00:00:00+08:00"``) or an aware
            ``datetime``
duration    ``"14d"``, ``"36h"``, ``"90m"``, ``"2w"``, ``"30s"`` or ISO 8601 ``"P14D"``,
            ``"PT36H"``, ``"P1DT12H"`` (no months or years), or a ``timedelta`` of whole seconds
==========  ==================================================================================

After the values are valid, PV009 checks with the concrete amounts that the fixed amounts on any
path (see the checker) do not exceed the escrow, and PV010 that every title is delivered against
payment in full: with these amounts, no money action of a delivering clause (or deadline) can be
capped, round to zero or (a `remainder`) find the escrow empty on any path, and its payee is
another wallet than the title's recipient (the checker's CD058/CD064, decided with the values).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Final, TypeAlias

from contracts_dsl import _literals, currencies, dvp, limits
from contracts_dsl.compiled import ActionSpec, CompiledContract, Json, canonical_json
from contracts_dsl.inputs import InputError

_MONEY_TEXT: Final = re.compile(r"(-?\d+(?:\.\d+)?) ([A-Z]{3})")
BASIS_POINTS_FULL: Final = 10_000


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: integer minor units and a currency code."""

    currency: str
    amount_minor: int

    def to_json(self) -> dict[str, Json]:
        return {"currency": self.currency, "amount_minor": self.amount_minor}


ParamValue: TypeAlias = str | Money | Fraction | int
"""wallet/title/text: str; money: Money; number: Fraction; timestamp: int (Unix µs);
duration: int (seconds)."""


@dataclass(frozen=True, slots=True)
class BoundParams:
    """Validated parameter values for one compiled contract (by its hash)."""

    contract_hash: str
    kinds: Mapping[str, str]
    values: Mapping[str, ParamValue]

    def wallet(self, name: str) -> str:
        value = self.values[name]
        assert isinstance(value, str)
        return value

    def money_minor(self, name: str) -> int:
        value = self.values[name]
        assert isinstance(value, Money)
        return value.amount_minor

    def integer(self, name: str) -> int:
        value = self.values[name]
        assert isinstance(value, int)
        return value

    def to_json(self) -> dict[str, Json]:
        """The values in the accepted input forms (`bind_params` reads them back unchanged)."""
        out: dict[str, Json] = {}
        for name in sorted(self.values):
            value = self.values[name]
            kind = self.kinds[name]
            if isinstance(value, Money):
                out[name] = value.to_json()
            elif kind == "number":
                assert isinstance(value, Fraction)
                out[name] = _fraction_text(value)
            elif kind == "timestamp":
                assert isinstance(value, int)
                out[name] = _literals.format_us(value)
            elif kind == "duration":
                assert isinstance(value, int)
                out[name] = f"{value}s"
            else:
                assert isinstance(value, str)
                out[name] = value
        return out

    @property
    def canonical(self) -> bytes:
        """Canonical JSON of the contract hash and the values: what a payment is locked on."""
        return canonical_json({"contract_hash": self.contract_hash, "params": self.to_json()})

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class ParamBinding:
    params: BoundParams | None
    errors: tuple[InputError, ...]

    @property
    def ok(self) -> bool:
        return self.params is not None


def _fraction_text(value: Fraction) -> str:
    # Numbers come from decimal text, so the denominator divides a power of ten.
    denominator = value.denominator
    places = 0
    while (10**places) % denominator:
        places += 1
        if places > 64:  # pragma: no cover - not reachable from decimal input
            break
    scaled = value * 10**places
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
    if places == 0:
        return sign + digits
    return f"{sign}{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")


def _text(name: str, value: object, kind: str) -> str | InputError:
    if not isinstance(value, str):
        return InputError("PV003", name, f"a {kind} value must be a string")
    if len(value) > limits.PARAM_TEXT_CHARS_MAX:
        return InputError("PV008", name, f"longer than {limits.PARAM_TEXT_CHARS_MAX} characters")
    if kind in ("wallet", "title") and not value.strip():
        return InputError("PV008", name, f"a {kind} id cannot be empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return InputError("PV008", name, "control characters are not allowed")
    return value


def _money(name: str, value: object, currency: str) -> Money | InputError:
    if isinstance(value, str):
        match = _MONEY_TEXT.fullmatch(value)
        if match is None:
            return InputError("PV004", name, 'expected "<decimal> <CUR>", e.g. "125000.00 CNY"')
        amount = _literals.decimal(match.group(1))
        if isinstance(amount, str):
            return InputError("PV004", name, amount)
        code = match.group(2)
        if code != currency:
            return InputError("PV004", name, f"the amount is in {code}, expected {currency}")
        minor = currencies.minor_from_decimal(amount, currency)
        if minor is None:
            return InputError(
                "PV004", name, f"{match.group(1)} is finer than the minor unit of {currency}"
            )
    elif isinstance(value, Mapping):
        if set(value) != {"currency", "amount_minor"}:
            return InputError("PV004", name, 'expected {"currency": ..., "amount_minor": ...}')
        code_value = value["currency"]
        minor_value = value["amount_minor"]
        if not isinstance(minor_value, int) or isinstance(minor_value, bool):
            return InputError("PV004", name, "amount_minor must be an integer")
        if code_value != currency:
            return InputError("PV004", name, f"the currency is {code_value!r}, expected {currency}")
        minor = minor_value
    else:
        return InputError("PV003", name, "a money value must be an object or a string")
    if minor <= 0 or minor > limits.AMOUNT_MINOR_MAX:
        return InputError("PV004", name, "the amount must be positive and fit in 64 bits")
    return Money(currency, minor)


def _number(name: str, value: object) -> Fraction | InputError:
    if isinstance(value, (bool, float)):
        return InputError("PV007", name, "expected an integer or a decimal string, not a float")
    if isinstance(value, int):
        if abs(value) >= 10**limits.NUMBER_DIGITS_MAX:
            return InputError("PV007", name, "the number has too many digits")
        return Fraction(value)
    if isinstance(value, str):
        parsed = _literals.decimal(value)
        if isinstance(parsed, str):
            return InputError("PV007", name, parsed)
        return Fraction(parsed)
    return InputError("PV003", name, "a number must be an integer or a decimal string")


def _timestamp(name: str, value: object) -> int | InputError:
    if isinstance(value, dt.datetime):
        result = _literals.datetime_us(value)
    elif isinstance(value, str):
        result = _literals.timestamp_us(value)
    else:
        return InputError("PV003", name, "a timestamp must be an RFC 3339 string")
    if isinstance(result, str):
        return InputError("PV005", name, result)
    return result


def _duration(name: str, value: object) -> int | InputError:
    if isinstance(value, dt.timedelta):
        if value.microseconds or value.total_seconds() <= 0:
            return InputError(
                "PV006", name, "a duration must be a positive whole number of seconds"
            )
        seconds = value.days * 86400 + value.seconds
        if seconds > limits.DURATION_SECONDS_MAX:
            return InputError("PV006", name, "the duration is too long")
        return seconds
    if not isinstance(value, str):
        return InputError("PV003", name, 'a duration must be a string like "14d" or "P14D"')
    result = _literals.duration_seconds(value)
    if isinstance(result, str):
        return InputError("PV006", name, result)
    return result


def bind_params(contract: CompiledContract, values: Mapping[str, object]) -> ParamBinding:
    """Validate parameter values against the contract's parameters. Never raises."""
    errors: list[InputError] = []
    bound: dict[str, ParamValue] = {}
    if not isinstance(values, Mapping):
        return ParamBinding(None, (InputError("PV003", "", "parameters must be an object"),))
    declared = {p.name: p for p in contract.params}
    for key in sorted((k for k in values if not isinstance(k, str) or k not in declared), key=str):
        errors.append(InputError("PV002", str(key), "the contract has no such parameter"))
    for name, spec in sorted(declared.items()):
        if name not in values:
            errors.append(InputError("PV001", name, f"missing {spec.kind} parameter"))
            continue
        value = values[name]
        result: ParamValue | InputError
        if spec.kind in ("wallet", "title", "text"):
            result = _text(name, value, spec.kind)
        elif spec.kind == "money":
            assert spec.currency is not None
            result = _money(name, value, spec.currency)
        elif spec.kind == "number":
            result = _number(name, value)
        elif spec.kind == "timestamp":
            result = _timestamp(name, value)
        else:
            result = _duration(name, value)
        if isinstance(result, InputError):
            errors.append(result)
        else:
            bound[name] = result
    if errors:
        return ParamBinding(None, tuple(errors))
    params = BoundParams(
        contract.hash,
        MappingProxyType({p.name: p.kind for p in contract.params}),
        MappingProxyType(bound),
    )
    over = _path_excess(contract, params) or _short_delivery(contract, params)
    if over is not None:
        return ParamBinding(None, (over,))
    return ParamBinding(params, ())


def escrow_minor(contract: CompiledContract, params: BoundParams) -> int:
    """The escrow amount in minor units with these parameters."""
    amount = contract.escrow.amount
    if amount.param is not None:
        return params.money_minor(amount.param)
    assert amount.literal is not None
    return amount.literal


def deadline_us(contract: CompiledContract, params: BoundParams) -> int | None:
    """The absolute deadline in Unix microseconds with these parameters, or None."""
    if contract.deadline is None:
        return None
    at = contract.deadline.at
    if at.param is not None:
        return params.integer(at.param)
    assert at.literal is not None
    return at.literal


def requested_minor(
    action: ActionSpec, params: BoundParams, funded_minor: int, remaining_minor: int
) -> int:
    """What a money action asks for, before the cap at the remaining escrow.

    Percentages round down to the minor unit: floor(base * bp / 10000)."""
    amount = action.amount
    assert amount is not None
    if amount.kind == "remainder":
        return remaining_minor
    if amount.kind == "percent":
        base = funded_minor
        if amount.base is not None:
            base = (
                params.money_minor(amount.base.param)
                if amount.base.param is not None
                else amount.base.literal or 0
            )
        return base * amount.bp // BASIS_POINTS_FULL
    assert amount.money is not None
    if amount.money.param is not None:
        return params.money_minor(amount.money.param)
    return amount.money.literal or 0


def _path_excess(contract: CompiledContract, params: BoundParams) -> InputError | None:
    funded = escrow_minor(contract, params)

    def fixed(actions: tuple[ActionSpec, ...]) -> int:
        return sum(
            requested_minor(a, params, funded, 0)
            for a in actions
            if a.amount is not None and a.amount.kind != "remainder"
        )

    total = 0
    groups: dict[str, int] = {}
    for clause in contract.clauses:
        if clause.group is None:
            total += fixed(clause.actions)
        else:
            groups[clause.group] = max(groups.get(clause.group, 0), fixed(clause.actions))
    total += sum(groups.values())
    if contract.deadline is not None:
        total += fixed(contract.deadline.actions)
    if total > funded:
        currency = contract.escrow.currency
        return InputError(
            "PV009",
            contract.escrow.amount.param or "escrow",
            f"the fixed amounts on one path add up to {currencies.format_minor(total, currency)}, "
            f"more than the escrow of {currencies.format_minor(funded, currency)}",
        )
    return None


def _short_delivery(contract: CompiledContract, params: BoundParams) -> InputError | None:
    """PV010: a title could be delivered against less than its payment with these values."""
    funded = escrow_minor(contract, params)
    share = dvp.bound_share(funded, lambda action: requested_minor(action, params, funded, 0))
    shorts, _ = dvp.delivery_shortfalls(contract, share)
    escrow_field = contract.escrow.amount.param or "escrow"
    for where, actions in dvp.delivering_lists(contract):
        name = "the deadline" if where == dvp.DEADLINE else f"clause `{contract.clauses[where].id}`"
        for action in actions:
            if action.kind != "deliver_title":
                continue
            recipient = params.wallet(action.party)
            if not any(x.kind == "pay" and params.wallet(x.party) != recipient for x in actions):
                return InputError(
                    "PV010",
                    action.party,
                    f"{name} delivers title `{action.title}` to wallet {recipient!r}, which is "
                    "also the wallet of every party it pays: the title would not be paid for",
                )
    if not shorts:
        return None
    short = shorts[0]
    actions = (
        contract.deadline.actions
        if short.where == dvp.DEADLINE and contract.deadline is not None
        else contract.clauses[short.where].actions
    )
    action = actions[short.action_index]
    name = (
        "the deadline"
        if short.where == dvp.DEADLINE
        else f"clause `{contract.clauses[short.where].id}`"
    )
    field_name = escrow_field
    if action.amount is not None and action.amount.money is not None and action.amount.money.param:
        field_name = action.amount.money.param
    elif action.amount is not None and action.amount.base is not None and action.amount.base.param:
        field_name = action.amount.base.param
    why = {
        "starved": "its `remainder` can find the escrow empty",
        "capped": "an amount it pays can be capped at what is left",
        "zero": "an amount it pays rounds to zero",
    }[short.reason]
    first = f" ({', '.join(short.takers)} can fire first)" if short.takers else ""
    return InputError(
        "PV010",
        field_name,
        f"{name} delivers a title, but with these amounts {why}{first}: the title could be "
        "delivered for less than its price",
    )
