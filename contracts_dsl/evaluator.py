"""The pure evaluator: contract + parameters + escrow + verified events + now -> legs and state.

`evaluate` has no clock, no I/O and no randomness; the same inputs give the same outputs. It
never raises: inconsistent inputs give an `Evaluation` whose `rejected` lists typed errors, with
no legs and the state unchanged (fail closed).

Semantics (docs/dsl.md, "Evaluation"):

* Events are deduplicated by `event_id` (first wins) and processed in (`observed_at_us`,
  `event_id`) order. Events observed after `now` wait for a later evaluation; events observed at
  or after the deadline are ignored. The caller passes every verified event so far each time:
  clauses fired earlier (recorded in the state) stay fired and are never paid again.
* An event *matches* a pattern when its type and attester (`oracle`: the oracle or wallet
  parameter name of the contract) are the pattern's, every attribute constraint holds and every
  timing holds. An event that matches any pattern is *accepted*; the first accepted event of a
  type is that type's anchor for `within <d> after <type>` (the window is
  `[anchor, anchor + d]`, both ends included).
* A clause fires at the first event after which its condition holds (`and`: every part has
  matched some event; `or`: any part). Clauses firing at the same event fire in contract order.
  Each clause fires at most once; firing a clause of a `one of` block closes the others.
* Money actions are paid in order from the remaining escrow: a percentage is
  `floor(base * bp / 10000)` minor units (base: the funded escrow, or the `of` amount), so
  rounding never pays more than asked and the remainder collects what rounding leaves; every
  leg is capped at what remains, so the legs never exceed the escrow. Zero legs are not emitted.
* Delivery versus payment: a clause's (or the deadline's) `deliver_title` legs come after its
  money legs, and only when every money action of it paid exactly what it asked (none capped,
  none zero) and one is a `pay` to a wallet other than the title's recipient; otherwise the title
  is not delivered (it stays escrowed; the core frees it when the payment ends) and a note says
  why.
* The deadline fires once `now >= deadline`, after every event observed before it has been
  processed; then the contract is terminal.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, TypeVar

from contracts_dsl import _literals, currencies, limits
from contracts_dsl.compiled import (
    ActionSpec,
    ClauseSpec,
    CompiledContract,
    Condition,
    ConstraintSpec,
    Json,
    PatternSpec,
    Value,
    iter_patterns,
)
from contracts_dsl.errors import StateFormError
from contracts_dsl.inputs import InputError
from contracts_dsl.params import BoundParams, Money, escrow_minor, requested_minor

_T = TypeVar("_T")
STATE_FORMAT: Final = "condpay.contract-state/1"
DEADLINE_CLAUSE: Final = "deadline"
_DECIMAL_TEXT: Final = re.compile(r"-?\d{1,24}(?:\.\d{1,24})?")

AttributeValue = str | int | bool


@dataclass(frozen=True, slots=True)
class Event:
    """A verified event. `oracle` is the attester's name *as in the contract* (an oracle name
    such as `customs`, or a wallet parameter name such as `buyer` for `by buyer`); the core sets
    it after verifying the signatures or quorum certificate."""

    event_id: str
    event_type: str
    oracle: str
    attributes: Mapping[str, AttributeValue]
    observed_at_us: int

    def to_json(self) -> dict[str, Json]:
        return {
            "id": self.event_id,
            "type": self.event_type,
            "oracle": self.oracle,
            "observed_at": _literals.format_us(self.observed_at_us),
            "attributes": dict(self.attributes),
        }


def parse_event(data: object) -> tuple[Event | None, tuple[InputError, ...]]:
    """An event from its JSON form::

        {"id": "e1", "type": "customs.cleared", "oracle": "customs",
         "observed_at": "2026-05-01T10:00:00+08:00", "attributes": {"declaration": "D1"}}

    Attribute values are strings, integers, booleans or decimal strings. Never raises."""
    if not isinstance(data, Mapping):
        return None, (InputError("EV010", "event", "an event must be an object"),)
    errors: list[InputError] = []
    fields = {}
    for key in ("id", "type", "oracle"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            errors.append(InputError("EV010", key, "must be a non-empty string"))
        else:
            fields[key] = value
    observed = data.get("observed_at")
    observed_us: int | str = (
        _literals.timestamp_us(observed)
        if isinstance(observed, str)
        else "must be an RFC 3339 timestamp with an offset"
    )
    if isinstance(observed_us, str):
        errors.append(InputError("EV010", "observed_at", observed_us))
    attributes = data.get("attributes", {})
    if not isinstance(attributes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | bool) and not isinstance(v, float)
        for k, v in attributes.items()
    ):
        errors.append(
            InputError("EV010", "attributes", "must map names to strings, integers or booleans")
        )
    unknown = sorted(
        str(k) for k in data if k not in ("id", "type", "oracle", "observed_at", "attributes")
    )
    if unknown:
        errors.append(InputError("EV010", unknown[0], "unknown event field"))
    if errors:
        return None, tuple(errors)
    assert isinstance(observed_us, int)
    assert isinstance(attributes, Mapping)
    event = Event(fields["id"], fields["type"], fields["oracle"], dict(attributes), observed_us)
    problem = _event_problem(event)
    if problem is not None:
        return None, (problem,)
    return event, ()


def _event_problem(event: object) -> InputError | None:
    """Why an event object cannot be used (defensive: the core builds them)."""
    if not isinstance(event, Event):
        return InputError("EV010", "event", "not an Event")
    if not isinstance(event.event_id, str) or not event.event_id:
        return InputError("EV010", "id", "the event id must be a non-empty string")
    if len(event.event_id) > limits.EVENT_ID_CHARS_MAX:
        return InputError("EV010", "id", f"longer than {limits.EVENT_ID_CHARS_MAX} characters")
    if not isinstance(event.event_type, str) or not isinstance(event.oracle, str):
        return InputError("EV010", event.event_id, "type and oracle must be strings")
    observed = event.observed_at_us
    if (
        not isinstance(observed, int)
        or isinstance(observed, bool)
        or not 0 <= observed <= limits.TIMESTAMP_US_MAX
    ):
        return InputError(
            "EV010", event.event_id, "observed_at_us must be an integer between 0 and year 9999"
        )
    attributes = event.attributes
    if not isinstance(attributes, Mapping) or len(attributes) > limits.EVENT_ATTRIBUTES_MAX:
        return InputError(
            "EV010",
            event.event_id,
            f"attributes must be a mapping of at most {limits.EVENT_ATTRIBUTES_MAX} items",
        )
    for key, value in attributes.items():
        if not isinstance(key, str) or not isinstance(value, str | int | bool):
            return InputError("EV010", event.event_id, "attribute values must be str/int/bool")
        if isinstance(value, str) and len(value) > limits.EVENT_ATTRIBUTE_TEXT_CHARS_MAX:
            return InputError("EV010", event.event_id, f"attribute {key!r} is too long")
    return None


@dataclass(frozen=True, slots=True)
class Escrow:
    """The escrow as the core holds it: currency, amount funded, amount still held."""

    currency: str
    funded_minor: int
    remaining_minor: int


@dataclass(frozen=True, slots=True)
class Leg:
    """One thing now due. Money legs (`pay`, `penalty`, `refund`) move `amount_minor` of
    `currency` from the escrow to `wallet` (parameter `party`); with `target_currency` the core
    pays out in that currency through a bridge. A `deliver_title` leg hands the title `title`
    (parameter `title_param`) to `wallet`. The legs of one clause form one linked group: execute
    them together or not at all. `leg_id` is stable (`<clause>/<action index>`): use it as the
    idempotency key."""

    leg_id: str
    clause: str
    action_index: int
    kind: str
    party: str
    wallet: str
    amount_minor: int
    currency: str | None
    target_currency: str | None
    title_param: str | None
    title: str | None
    requested_minor: int
    at_us: int
    trigger_event_ids: tuple[str, ...]
    reason: str

    def to_json(self) -> dict[str, Json]:
        return {
            "leg_id": self.leg_id,
            "clause": self.clause,
            "action_index": self.action_index,
            "kind": self.kind,
            "party": self.party,
            "wallet": self.wallet,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "target_currency": self.target_currency,
            "title_param": self.title_param,
            "title": self.title,
            "requested_minor": self.requested_minor,
            "at": _literals.format_us(self.at_us),
            "trigger_event_ids": list(self.trigger_event_ids),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class FiredClause:
    clause: str
    at_us: int
    event_ids: tuple[str, ...]
    paid_minor: int


@dataclass(frozen=True, slots=True)
class ContractState:
    """What the evaluator remembers between calls; persist it with `to_json`/`from_json`.

    `terminal_reason` is `escrow_empty` (nothing left and nothing else due), `deadline` (the
    deadline fired) or `all_clauses_done` (every clause fired or was closed, and there is no
    deadline to wait for)."""

    contract_hash: str
    fired: tuple[FiredClause, ...] = ()
    closed: tuple[tuple[str, str], ...] = ()
    deadline_fired: bool = False
    terminal: bool = False
    terminal_reason: str | None = None
    events_seen: tuple[str, ...] = ()

    @classmethod
    def initial(cls, contract: CompiledContract) -> ContractState:
        return cls(contract.hash)

    def fired_ids(self) -> frozenset[str]:
        return frozenset(f.clause for f in self.fired)

    def to_json(self) -> dict[str, Json]:
        return {
            "format": STATE_FORMAT,
            "contract_hash": self.contract_hash,
            "fired": [
                {
                    "clause": f.clause,
                    "at_us": f.at_us,
                    "event_ids": list(f.event_ids),
                    "paid_minor": f.paid_minor,
                }
                for f in self.fired
            ],
            "closed": [{"clause": c, "by": b} for c, b in self.closed],
            "deadline_fired": self.deadline_fired,
            "terminal": self.terminal,
            "terminal_reason": self.terminal_reason,
            "events_seen": list(self.events_seen),
        }

    @classmethod
    def from_json(cls, data: object) -> ContractState:
        """Read a persisted state; raises `StateFormError` when it is malformed."""
        try:
            if not isinstance(data, Mapping) or data.get("format") != STATE_FORMAT:
                raise StateFormError(f"not a {STATE_FORMAT} object")
            fired = tuple(
                FiredClause(
                    _expect(f["clause"], str),
                    _expect(f["at_us"], int),
                    tuple(_expect(x, str) for x in _expect(f["event_ids"], list)),
                    _expect(f["paid_minor"], int),
                )
                for f in _expect(data["fired"], list)
            )
            closed = tuple(
                (_expect(c["clause"], str), _expect(c["by"], str))
                for c in _expect(data["closed"], list)
            )
            reason = data["terminal_reason"]
            if reason is not None and reason not in (
                "escrow_empty",
                "deadline",
                "all_clauses_done",
            ):
                raise StateFormError(f"unknown terminal_reason {reason!r}")
            state = cls(
                _expect(data["contract_hash"], str),
                fired,
                closed,
                _expect(data["deadline_fired"], bool),
                _expect(data["terminal"], bool),
                reason,
                tuple(_expect(x, str) for x in _expect(data["events_seen"], list)),
            )
        except (KeyError, TypeError) as error:
            raise StateFormError(f"malformed contract state: {error!r}") from None
        return state


def _expect(value: object, kind: type[_T]) -> _T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StateFormError(f"expected {kind.__name__}, found {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class EventReport:
    """What happened to one newly seen event: the clauses it matched, those it made fire, and
    for each other clause listening to its type why it did not match."""

    event_id: str
    event_type: str
    observed_at_us: int
    status: str  # "processed" | "future" | "after_deadline" | "ignored" | "duplicate"
    matched: tuple[str, ...]
    fired: tuple[str, ...]
    why_not: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The result of one `evaluate` call."""

    legs: tuple[Leg, ...]
    state: ContractState
    escrow: Escrow
    reports: tuple[EventReport, ...] = ()
    rejected: tuple[InputError, ...] = ()
    ignored: tuple[InputError, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.rejected


def _now_us(now: int | dt.datetime) -> int | InputError:
    if isinstance(now, dt.datetime):
        result = _literals.datetime_us(now)
        return InputError("EV005", "now", result) if isinstance(result, str) else result
    if isinstance(now, bool) or not isinstance(now, int):
        return InputError("EV005", "now", "now must be an aware datetime or Unix µs")
    if not 0 <= now <= limits.TIMESTAMP_US_MAX:
        return InputError(
            "EV005", "now", "now must be an aware datetime or Unix µs up to year 9999"
        )
    return now


def _check_inputs(
    contract: CompiledContract,
    params: BoundParams,
    escrow: Escrow,
    events: Sequence[Event],
    state: ContractState,
) -> list[InputError]:
    problems = []
    if params.contract_hash != contract.hash:
        problems.append(
            InputError("EV001", "params", "the parameters were bound for another contract")
        )
    if state.contract_hash != contract.hash:
        problems.append(InputError("EV002", "state", "the state belongs to another contract"))
    if escrow.currency != contract.escrow.currency:
        problems.append(
            InputError(
                "EV003",
                "escrow.currency",
                f"the escrow is in {escrow.currency}, the contract in {contract.escrow.currency}",
            )
        )
    amounts_ok = all(
        isinstance(x, int) and not isinstance(x, bool)
        for x in (escrow.funded_minor, escrow.remaining_minor)
    )
    if not amounts_ok or not 0 <= escrow.remaining_minor <= escrow.funded_minor:
        problems.append(
            InputError("EV004", "escrow", "need integers with 0 <= remaining_minor <= funded_minor")
        )
    elif not problems and escrow.funded_minor != escrow_minor(contract, params):
        problems.append(
            InputError(
                "EV004",
                "escrow.funded_minor",
                f"funded {escrow.funded_minor}, but the contract escrows "
                f"{escrow_minor(contract, params)}",
            )
        )
    if len(events) > limits.EVENTS_PER_EVALUATION_MAX:
        problems.append(
            InputError("EV006", "events", f"more than {limits.EVENTS_PER_EVALUATION_MAX} events")
        )
    return problems


def _wrong_types(
    contract: object, params: object, escrow: object, events: object, state: object
) -> list[InputError]:
    """EV007 for every input that is not of its declared type (callers may not be typed)."""
    wrong = []
    for field_name, value, expected in (
        ("contract", contract, CompiledContract),
        ("params", params, BoundParams),
        ("escrow", escrow, Escrow),
    ):
        if not isinstance(value, expected):
            wrong.append(
                InputError("EV007", field_name, f"expected {expected.__name__}, got {_kind(value)}")
            )
    if not isinstance(events, Sequence) or isinstance(events, str | bytes):
        wrong.append(InputError("EV007", "events", f"expected a sequence, got {_kind(events)}"))
    if state is not None and not isinstance(state, ContractState):
        wrong.append(
            InputError("EV007", "state", f"expected a ContractState or None, got {_kind(state)}")
        )
    return wrong


def _kind(value: object) -> str:
    return "None" if value is None else type(value).__name__


def evaluate(
    contract: CompiledContract,
    params: BoundParams,
    escrow: Escrow,
    events: Sequence[Event],
    now: int | dt.datetime,
    state: ContractState | None = None,
) -> Evaluation:
    """The legs now due and the new state. Pure, deterministic, never raises (see module doc).

    `events` is every verified event so far; `now` is an aware datetime or Unix microseconds;
    `state` is the state returned by the previous call (None the first time)."""
    wrong = _wrong_types(contract, params, escrow, events, state)
    if wrong:
        # Nothing can be read from inputs of the wrong type: pay nothing, give them back.
        return Evaluation((), state, escrow, rejected=tuple(wrong))  # type: ignore[arg-type]
    current = state if state is not None else ContractState.initial(contract)
    now_us = _now_us(now)
    problems = [now_us] if isinstance(now_us, InputError) else []
    problems.extend(_check_inputs(contract, params, escrow, events, current))
    if problems or isinstance(now_us, InputError):
        return Evaluation((), current, escrow, rejected=tuple(problems))
    if current.terminal:
        return Evaluation((), current, escrow, notes=("the contract is already terminal",))
    return _Run(contract, params, escrow, now_us, current).run(events)


def _resolve(ref_literal: int | None, ref_param: str | None, params: BoundParams) -> int:
    if ref_param is not None:
        return params.integer(ref_param)
    assert ref_literal is not None
    return ref_literal


class _Run:
    """One evaluation (mutable scratch state; the inputs are not modified)."""

    def __init__(
        self,
        contract: CompiledContract,
        params: BoundParams,
        escrow: Escrow,
        now_us: int,
        state: ContractState,
    ) -> None:
        self.contract = contract
        self.params = params
        self.escrow = escrow
        self.now_us = now_us
        self.state = state
        self.remaining = escrow.remaining_minor
        self.fired: dict[str, FiredClause] = {f.clause: f for f in state.fired}
        self.closed: dict[str, str] = dict(state.closed)
        self.matched: dict[int, Event] = {}
        self.anchors: dict[str, int] = {}
        self.legs: list[Leg] = []
        self.notes: list[str] = []
        self.deadline_us: int | None = None
        if contract.deadline is not None:
            at = contract.deadline.at
            self.deadline_us = _resolve(at.literal, at.param, params)

    def run(self, events: Sequence[Event]) -> Evaluation:
        seen = set(self.state.events_seen)
        ignored: list[InputError] = []
        usable: dict[str, Event] = {}
        reports: list[EventReport] = []
        for event in events:
            problem = _event_problem(event)
            if problem is not None:
                ignored.append(problem)
                continue
            if event.event_id in usable:
                if usable[event.event_id] != event:
                    ignored.append(
                        InputError("EV011", event.event_id, "another event has this id; ignored")
                    )
                continue
            usable[event.event_id] = event
        ordered = sorted(usable.values(), key=lambda e: (e.observed_at_us, e.event_id))
        newly_seen: list[str] = []
        for event in ordered:
            is_new = event.event_id not in seen
            if event.observed_at_us > self.now_us:
                if is_new:
                    reports.append(self.report(event, "future", (), (), ()))
                continue
            if is_new:
                newly_seen.append(event.event_id)
            if self.deadline_us is not None and event.observed_at_us >= self.deadline_us:
                if is_new:
                    reports.append(self.report(event, "after_deadline", (), (), ()))
                continue
            matched, why_not = self.match_event(event)
            fired = self.fire_ready(event)
            if is_new:
                status = "processed" if matched else "ignored"
                reports.append(self.report(event, status, matched, fired, why_not))
        deadline_fired = self.state.deadline_fired
        if (
            self.contract.deadline is not None
            and self.deadline_us is not None
            and not deadline_fired
            and self.now_us >= self.deadline_us
        ):
            deadline_fired = True
            self.pay(DEADLINE_CLAUSE, self.contract.deadline.actions, self.deadline_us, ())
        terminal_reason = self.terminal_reason(deadline_fired)
        new_state = ContractState(
            self.contract.hash,
            tuple(self.fired[c.id] for c in self.contract.clauses if c.id in self.fired),
            tuple(sorted(self.closed.items())),
            deadline_fired,
            terminal_reason is not None,
            terminal_reason,
            tuple(sorted(seen | set(newly_seen))),
        )
        after = Escrow(self.escrow.currency, self.escrow.funded_minor, self.remaining)
        assert (
            sum(x.amount_minor for x in self.legs) + self.remaining == self.escrow.remaining_minor
        )
        return Evaluation(
            tuple(self.legs),
            new_state,
            after,
            tuple(reports),
            (),
            tuple(ignored),
            tuple(self.notes),
        )

    def report(
        self,
        event: Event,
        status: str,
        matched: Sequence[str],
        fired: Sequence[str],
        why_not: Sequence[tuple[str, str]],
    ) -> EventReport:
        return EventReport(
            event.event_id,
            event.event_type,
            event.observed_at_us,
            status,
            tuple(matched),
            tuple(fired),
            tuple(why_not),
        )

    def terminal_reason(self, deadline_fired: bool) -> str | None:
        if deadline_fired:
            return "deadline"
        live = [
            c for c in self.contract.clauses if c.id not in self.fired and c.id not in self.closed
        ]
        titles_pending = any(a.kind == "deliver_title" for c in live for a in c.actions)
        if self.remaining == 0 and not titles_pending:
            return "escrow_empty"
        if not live and self.contract.deadline is None:
            return "all_clauses_done"
        return None

    # -- matching -------------------------------------------------------------------------------

    def match_event(self, event: Event) -> tuple[list[str], list[tuple[str, str]]]:
        matched_clauses: list[str] = []
        why_not: list[tuple[str, str]] = []
        accepted = False
        for clause in self.contract.clauses:
            reasons = []
            hit = False
            for pattern in iter_patterns(clause.condition):
                if pattern.event_type != event.event_type:
                    continue
                reason = self.mismatch(pattern, event)
                if reason is None:
                    hit = accepted = True
                    self.matched.setdefault(pattern.index, event)
                else:
                    reasons.append(reason)
            if hit:
                matched_clauses.append(clause.id)
            elif reasons:
                why_not.append((clause.id, "; ".join(reasons)))
        if accepted and event.event_type not in self.anchors:
            self.anchors[event.event_type] = event.observed_at_us
        return matched_clauses, why_not

    def mismatch(self, pattern: PatternSpec, event: Event) -> str | None:
        """None when the event matches the pattern, else why not."""
        if event.oracle != pattern.attester:
            return f"attested by `{event.oracle}`, needs `{pattern.attester}`"
        kinds = self.attribute_kinds(pattern.event_type)
        for constraint in pattern.constraints:
            reason = self.constraint_mismatch(constraint, kinds.get(constraint.attr), event)
            if reason is not None:
                return reason
        at = event.observed_at_us
        for timing in pattern.timings:
            if timing.kind == "within":
                assert timing.anchor is not None
                assert timing.duration is not None
                anchor = self.anchors.get(timing.anchor)
                if anchor is None or anchor > at:
                    return f"no `{timing.anchor}` accepted before it"
                length = _resolve(timing.duration.literal, timing.duration.param, self.params)
                if at > anchor + length * 1_000_000:
                    return (
                        f"the window after `{timing.anchor}` closed at "
                        f"{_literals.format_us(anchor + length * 1_000_000)}"
                    )
            else:
                assert timing.at is not None
                bound = _resolve(timing.at.literal, timing.at.param, self.params)
                if timing.kind == "before" and at >= bound:
                    return f"observed at or after {_literals.format_us(bound)}"
                if timing.kind == "after" and at < bound:
                    return f"observed before {_literals.format_us(bound)}"
        return None

    def attribute_kinds(self, event_type: str) -> dict[str, str]:
        for spec in self.contract.events:
            if spec.event_type == event_type:
                return dict(spec.attributes)
        return {}

    def constraint_mismatch(
        self, constraint: ConstraintSpec, kind: str | None, event: Event
    ) -> str | None:
        attr = constraint.attr
        if kind is None or attr not in event.attributes:
            return f"no attribute `{attr}`"
        actual = _attribute(event.attributes[attr], kind)
        if actual is None:
            return f"attribute `{attr}` is not a valid {kind}"
        wanted = [self.value(v, kind) for v in constraint.values]
        op = constraint.op
        ok: bool
        if op == "in":
            ok = actual in wanted
        elif op == "not in":
            ok = actual not in wanted
        elif op == "==":
            ok = actual == wanted[0]
        elif op == "!=":
            ok = actual != wanted[0]
        else:
            left, right = actual, wanted[0]
            if not isinstance(left, Fraction | int) or not isinstance(right, Fraction | int):
                return f"attribute `{attr}` cannot be ordered"
            ok = {
                "<": left < right,
                "<=": left <= right,
                ">": left > right,
                ">=": left >= right,
            }[op]
        if ok:
            return None
        shown = event.attributes[attr]
        return f"`{attr}` is {shown!r}, needs {op} {', '.join(_show(w) for w in wanted)}"

    def value(self, value: Value, kind: str) -> AttributeValue | Fraction:
        if value.kind == "param":
            assert isinstance(value.value, str)
            bound = self.params.values[value.value]
            assert not isinstance(bound, Money)
            return bound
        if value.kind == "number":
            assert isinstance(value.value, str)
            return Fraction(value.value)
        return value.value

    # -- firing and paying ----------------------------------------------------------------------

    def fire_ready(self, event: Event) -> list[str]:
        fired_now: list[str] = []
        for clause in self.contract.clauses:
            if clause.id in self.fired or clause.id in self.closed:
                continue
            triggers = self.satisfied(clause.condition)
            if triggers is None:
                continue
            self.fire(clause, event.observed_at_us, triggers)
            fired_now.append(clause.id)
        return fired_now

    def satisfied(self, condition: Condition) -> tuple[str, ...] | None:
        """The ids of the events that satisfy the condition, or None."""
        if isinstance(condition, PatternSpec):
            event = self.matched.get(condition.index)
            return None if event is None else (event.event_id,)
        found: list[str] = []
        for item in condition.items:
            ids = self.satisfied(item)
            if condition.kind == "any" and ids is not None:
                return ids
            if condition.kind == "all":
                if ids is None:
                    return None
                found.extend(i for i in ids if i not in found)
        return tuple(found) if condition.kind == "all" else None

    def fire(self, clause: ClauseSpec, at_us: int, triggers: tuple[str, ...]) -> None:
        paid = self.pay(clause.id, clause.actions, at_us, triggers)
        self.fired[clause.id] = FiredClause(clause.id, at_us, triggers, paid)
        if clause.group is not None:
            for other in self.contract.clauses:
                if other.group == clause.group and other.id not in self.fired:
                    self.closed.setdefault(other.id, clause.id)

    def pay(
        self, clause_id: str, actions: Sequence[ActionSpec], at_us: int, triggers: tuple[str, ...]
    ) -> int:
        """Pay the money actions in order, then deliver the titles: a title leg is emitted only
        when every money action of the list paid exactly what it asked (none capped, none zero)
        and one of them is a `pay` to a wallet other than the title's recipient. Otherwise the
        title stays escrowed (the core frees it when the payment ends) and a note says why."""
        paid_total = 0
        shortfalls: list[str] = []
        paid_legs: list[Leg] = []
        deliveries: list[tuple[int, ActionSpec]] = []
        currency = self.escrow.currency
        for index, action in enumerate(actions):
            if action.kind == "deliver_title":
                deliveries.append((index, action))
                continue
            wallet = self.params.wallet(action.party)
            requested = requested_minor(
                action, self.params, self.escrow.funded_minor, self.remaining
            )
            amount = max(0, min(requested, self.remaining))
            if amount == 0:
                self.notes.append(
                    f"{clause_id}/{index}: nothing paid "
                    + ("(the escrow is empty)" if self.remaining == 0 else "(rounds to zero)")
                )
                shortfalls.append(f"{clause_id}/{index} paid nothing")
                continue
            self.remaining -= amount
            paid_total += amount
            reason = f"{clause_id}: {_describe(action, self.contract)}"
            if amount < requested:
                reason += f" (capped at the {currencies.format_minor(amount, currency)} left)"
                shortfalls.append(
                    f"{clause_id}/{index} paid {currencies.format_minor(amount, currency)} of "
                    f"{currencies.format_minor(requested, currency)}"
                )
            leg = Leg(
                f"{clause_id}/{index}",
                clause_id,
                index,
                action.kind,
                action.party,
                wallet,
                amount,
                currency,
                action.target_currency,
                None,
                None,
                requested,
                at_us,
                triggers,
                reason,
            )
            paid_legs.append(leg)
            self.legs.append(leg)
        for index, action in deliveries:
            assert action.title is not None
            recipient = self.params.wallet(action.party)
            why_not = "; ".join(shortfalls)
            if not why_not and not any(
                leg.kind == "pay" and leg.wallet != recipient for leg in paid_legs
            ):
                why_not = "nothing was paid to another party"
            if why_not:
                self.notes.append(
                    f"{clause_id}/{index}: title `{action.title}` not delivered ({why_not}); "
                    "it stays escrowed until the payment ends"
                )
                continue
            self.legs.append(
                Leg(
                    f"{clause_id}/{index}",
                    clause_id,
                    index,
                    action.kind,
                    action.party,
                    recipient,
                    0,
                    None,
                    None,
                    action.title,
                    self.params.wallet(action.title),
                    0,
                    at_us,
                    triggers,
                    f"{clause_id}: deliver title `{action.title}` to {action.party}",
                )
            )
        return paid_total


def _attribute(value: object, kind: str) -> AttributeValue | Fraction | None:
    """An event attribute as the contract's type, or None when it is not of that type."""
    if kind == "text":
        return value if isinstance(value, str) else None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "number":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return Fraction(value)
        if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value):
            return Fraction(value)
        return None
    if isinstance(value, str):
        micros = _literals.timestamp_us(value)
        return micros if isinstance(micros, int) else None
    return None


def _show(value: object) -> str:
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        return str(value)
    return repr(value)


def percent_text(bp: int) -> str:
    """Basis points for display: 3000 -> `30%`, 1250 -> `12.5%`, 1 -> `0.01%`."""
    whole, part = divmod(bp, 100)
    return f"{whole}%" if part == 0 else f"{whole}.{part:02d}".rstrip("0") + "%"


def _describe(action: ActionSpec, contract: CompiledContract) -> str:
    amount = action.amount
    assert amount is not None
    if amount.kind == "remainder":
        what = "the remainder"
    elif amount.kind == "percent":
        of = "the escrow"
        if amount.base is not None:
            of = (
                f"`{amount.base.param}`"
                if amount.base.param is not None
                else currencies.format_minor(amount.base.literal or 0, contract.escrow.currency)
            )
        what = f"{percent_text(amount.bp)} of {of}"
    else:
        assert amount.money is not None
        what = (
            f"`{amount.money.param}`"
            if amount.money.param is not None
            else currencies.format_minor(amount.money.literal or 0, contract.escrow.currency)
        )
    verb = {"pay": "pay", "penalty": "pay (penalty)", "refund": "refund"}[action.kind]
    tail = f" in {action.target_currency}" if action.target_currency else ""
    return f"{verb} {what} to {action.party}{tail}"
