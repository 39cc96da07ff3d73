"""The immutable, typed syntax tree of a contract, with a source span on every node.

The parser (`contracts_dsl.parser`) builds it; the checker, compiler, formatter and `explain` read
it. Literal values are kept exact (`Decimal`, `int`) together with their source spelling (`raw`),
so the formatter can print what was written. A literal whose text was malformed carries `None` as
its value (the parser has already reported it).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

from contracts_dsl.source import Span


@dataclass(frozen=True, slots=True)
class Ident:
    """A name: a parameter, oracle, clause label, attribute, event type or currency code."""

    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class TextLit:
    value: str
    raw: str
    span: Span


@dataclass(frozen=True, slots=True)
class NumberLit:
    """A decimal number; `negative` when written with a leading `-`."""

    value: Decimal | None
    raw: str
    span: Span


@dataclass(frozen=True, slots=True)
class BoolLit:
    value: bool
    span: Span


@dataclass(frozen=True, slots=True)
class TimestampLit:
    """An RFC 3339 timestamp with an offset; `value_us` is microseconds since the Unix epoch."""

    value_us: int | None
    raw: str
    span: Span


@dataclass(frozen=True, slots=True)
class MoneyLit:
    """`125000.00 CNY`: an exact decimal amount in major units and a currency code."""

    amount: Decimal | None
    raw: str
    currency: Ident
    span: Span


@dataclass(frozen=True, slots=True)
class DurationLit:
    """`14 days`: `seconds` is the exact length (None when the count was malformed)."""

    count: int | None
    raw: str
    unit: str
    seconds: int | None
    span: Span


Value: TypeAlias = TextLit | NumberLit | BoolLit | TimestampLit | Ident
"""A constraint's right-hand side; an `Ident` refers to a parameter."""
MoneyExpr: TypeAlias = MoneyLit | Ident
TimeExpr: TypeAlias = TimestampLit | Ident
DurationExpr: TypeAlias = DurationLit | Ident


@dataclass(frozen=True, slots=True)
class Header:
    name: TextLit
    version: NumberLit
    span: Span


@dataclass(frozen=True, slots=True)
class ParamType:
    """`wallet`, `money CNY`, `text`, `number`, `timestamp`, `duration` or `title`."""

    kind: str
    currency: Ident | None
    span: Span


@dataclass(frozen=True, slots=True)
class ParamDecl:
    name: Ident
    type: ParamType
    span: Span


@dataclass(frozen=True, slots=True)
class SingleSource:
    source: TextLit
    span: Span


@dataclass(frozen=True, slots=True)
class QuorumSource:
    threshold: NumberLit
    members: tuple[TextLit, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class OracleDecl:
    name: Ident
    source: SingleSource | QuorumSource
    span: Span


@dataclass(frozen=True, slots=True)
class AttrDecl:
    name: Ident
    type: str
    type_span: Span
    span: Span


@dataclass(frozen=True, slots=True)
class EventDecl:
    event_type: Ident
    attributes: tuple[AttrDecl, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class EscrowDecl:
    amount: MoneyExpr
    funder: Ident
    span: Span


@dataclass(frozen=True, slots=True)
class PercentAmount:
    """`30%` (of the escrow) or `5% of price`; `percent` is the exact decimal before `%`."""

    percent: Decimal | None
    raw: str
    of: MoneyExpr | None
    span: Span


@dataclass(frozen=True, slots=True)
class RemainderAmount:
    span: Span


Amount: TypeAlias = PercentAmount | RemainderAmount | MoneyLit | Ident


@dataclass(frozen=True, slots=True)
class PayAction:
    """`pay <amount> to <party> [in <CUR>] [as penalty]`."""

    amount: Amount
    party: Ident
    target_currency: Ident | None
    penalty: bool
    span: Span


@dataclass(frozen=True, slots=True)
class RefundAction:
    """`refund <amount> [to <funder>]`; `party` is None when `to` was left out."""

    amount: Amount
    party: Ident | None
    span: Span


@dataclass(frozen=True, slots=True)
class DeliverAction:
    """`deliver title <title param> to <party>`."""

    title: Ident
    party: Ident
    span: Span


Action: TypeAlias = PayAction | RefundAction | DeliverAction


@dataclass(frozen=True, slots=True)
class DeadlineDecl:
    at: TimeExpr
    actions: tuple[Action, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Constraint:
    """`attr <op> value` or `attr [not] in [values]`; `op` is one of
    `== != < <= > >= in` or `not in`. `values` is used by the membership operators only."""

    attr: Ident
    op: str
    value: Value | None
    values: tuple[Value, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Within:
    """`within <duration> after <event type>`."""

    duration: DurationExpr
    anchor: Ident
    span: Span


@dataclass(frozen=True, slots=True)
class Before:
    at: TimeExpr
    span: Span


@dataclass(frozen=True, slots=True)
class After:
    at: TimeExpr
    span: Span


Timing: TypeAlias = Within | Before | After


@dataclass(frozen=True, slots=True)
class Pattern:
    """`event.type(constraints...) by attester timing...`"""

    event_type: Ident
    constraints: tuple[Constraint, ...]
    attester: Ident
    timings: tuple[Timing, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class AllOf:
    """Conditions joined by `and` (at least two items)."""

    items: tuple[Condition, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Conditions joined by `or` (at least two items)."""

    items: tuple[Condition, ...]
    span: Span


Condition: TypeAlias = Pattern | AllOf | AnyOf


@dataclass(frozen=True, slots=True)
class Clause:
    label: Ident | None
    condition: Condition
    actions: tuple[Action, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class OneOf:
    clauses: tuple[Clause, ...]
    span: Span


Item: TypeAlias = (
    Header | ParamDecl | OracleDecl | EventDecl | EscrowDecl | DeadlineDecl | Clause | OneOf
)


@dataclass(frozen=True, slots=True)
class Comment:
    """A `# ...` comment (kept for the formatter; it has no meaning)."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class ContractAst:
    items: tuple[Item, ...]
    comments: tuple[Comment, ...]


def iter_patterns(condition: Condition) -> list[Pattern]:
    """The patterns of a condition, left to right."""
    if isinstance(condition, Pattern):
        return [condition]
    found: list[Pattern] = []
    for item in condition.items:
        found.extend(iter_patterns(item))
    return found


def all_clauses(tree: ContractAst) -> list[tuple[Clause, OneOf | None]]:
    """Every clause in source order with the `one of` block holding it (None when standalone)."""
    found: list[tuple[Clause, OneOf | None]] = []
    for item in tree.items:
        if isinstance(item, Clause):
            found.append((item, None))
        elif isinstance(item, OneOf):
            found.extend((clause, item) for clause in item.clauses)
    return found
