"""The static checker: names, types, money and the flow of money and time.

`check(parsed)` returns every diagnostic of a file (the parser's and its own, sorted by position)
and the resolved `Symbols` the compiler uses. It never raises. Checks (codes in diagnostics.py):

* the header (CD011-CD013); names: unknown, duplicate, unused (CD020-CD027);
* types of parameters, attributes and constraint values (CD030-CD034);
* money: currencies, minor units, ranges, currency mismatches (CD040-CD044, CD047);
* escrow and deadline presence (CD048, CD049, CD056, CD057), refunds go to the funder (CD055);
* flow over every path (CD045, CD046, CD050, CD051, CD058, CD059): a path is any set of clauses
  that can all fire in one run, i.e. every standalone clause, at most one clause of each
  `one of` block, then the deadline actions. The deadline's `remainder` is the catch-all and is
  not counted by CD050;
* conditions that can never be met (CD052), `within` windows that cannot open before the
  deadline (CD053) or whose anchor event no clause accepts (CD054);
* oracles (CD060-CD062) and `one of` blocks (CD063).

Only literal timestamps take part in the timing checks: a bound given by a parameter is unknown
until the parameters are bound.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Final

from contracts_dsl import _literals, currencies, dvp, limits
from contracts_dsl import ast_nodes as a
from contracts_dsl.diagnostics import Diagnostic, make, sort_key
from contracts_dsl.events import BUILTIN_EVENTS, EventSchema
from contracts_dsl.parser import ParseResult
from contracts_dsl.source import SourceFile, Span

LANGUAGE_VERSION: Final = 1
BASIS_POINTS_FULL: Final = 10_000
"""100% in basis points (1% = 100 bp, the finest percentage is 0.01%)."""

_TEXT_PARAM_KINDS: Final = frozenset({"text", "wallet", "title"})
_OPS_BY_TYPE: Final = {
    "text": frozenset({"==", "!=", "in", "not in"}),
    "bool": frozenset({"==", "!="}),
    "number": frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "not in"}),
    "timestamp": frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "not in"}),
}


@dataclass(slots=True)
class Symbols:
    """What the checker resolved, for the compiler and `explain`."""

    header: a.Header | None = None
    params: dict[str, a.ParamDecl] = field(default_factory=dict)
    oracles: dict[str, a.OracleDecl] = field(default_factory=dict)
    events: dict[str, EventSchema] = field(default_factory=dict)
    event_decls: dict[str, a.EventDecl] = field(default_factory=dict)
    escrow: a.EscrowDecl | None = None
    escrow_currency: str | None = None
    deadline: a.DeadlineDecl | None = None
    used: set[str] = field(default_factory=set)
    used_events: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class CheckResult:
    parsed: ParseResult
    diagnostics: tuple[Diagnostic, ...]
    symbols: Symbols
    omitted: tuple[Diagnostic, ...] = ()
    """Diagnostics past `limits.DIAGNOSTICS_MAX` (not shown; summarised by `render_all`)."""

    @property
    def ok(self) -> bool:
        """True when there is a tree and no diagnostic is an error (warnings are allowed)."""
        return self.parsed.tree is not None and not any(
            d.is_error for d in (*self.diagnostics, *self.omitted)
        )


def check(parsed: ParseResult) -> CheckResult:
    """Check a parsed contract. All diagnostics of the file, sorted; never raises."""
    symbols = Symbols()
    if parsed.tree is None:
        return CheckResult(parsed, parsed.diagnostics, symbols)
    checker = _Checker(parsed, symbols)
    checker.run(parsed.tree)
    found = sorted(list(parsed.diagnostics) + checker.diagnostics, key=sort_key)
    unique: list[Diagnostic] = []
    for diagnostic in found:
        if diagnostic not in unique:
            unique.append(diagnostic)
    shown, omitted = unique[: limits.DIAGNOSTICS_MAX], unique[limits.DIAGNOSTICS_MAX :]
    return CheckResult(parsed, tuple(shown), symbols, tuple(omitted))


def _suggest(name: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.7)
    return f"did you mean `{close[0]}`?" if close else None


def _join(spans: Sequence[Span], source: SourceFile) -> Span:
    return source.span(min(s.start for s in spans), max(s.end for s in spans))


@dataclass(frozen=True, slots=True)
class _Effect:
    """What one money action takes from the escrow, as far as is known statically."""

    kind: str  # "pct" | "fixed" | "unknown" | "remainder" | "none"
    bp: int = 0
    minor: int = 0


class _Checker:
    def __init__(self, parsed: ParseResult, symbols: Symbols) -> None:
        self.parsed = parsed
        self.source = parsed.source
        self.s = symbols
        self.recovered = parsed.recovered_names
        self.diagnostics: list[Diagnostic] = []

    def report(
        self,
        code: str,
        message: str,
        span: Span,
        *,
        label: str = "",
        notes: Iterable[str] = (),
        help: str | None = None,
    ) -> None:
        self.diagnostics.append(
            make(code, message, span, self.source, label=label, notes=notes, help=help)
        )

    def at(self, span: Span) -> str:
        return f"line {span.line}"

    def errors_so_far(self) -> bool:
        return any(d.is_error for d in self.diagnostics) or any(
            d.is_error for d in self.parsed.diagnostics
        )

    # -- driver ---------------------------------------------------------------------------------

    def run(self, tree: a.ContractAst) -> None:
        self.check_header(tree)
        self.declare(tree)
        self.check_escrow_and_deadline(tree)
        clauses = a.all_clauses(tree)
        self.check_labels(clauses)
        for clause, _ in clauses:
            for pattern in a.iter_patterns(clause.condition):
                self.check_pattern(pattern)
            self.check_actions(clause.actions, in_clause=True)
        for item in tree.items:
            if isinstance(item, a.OneOf) and len(item.clauses) < 2:
                self.report(
                    "CD063",
                    f"a `one of` block with {len(item.clauses)} clause(s) chooses nothing",
                    self.source.span(item.span.start, item.span.start + 6),
                    label="fewer than two clauses",
                    help="remove the block or add the alternative clauses to it",
                )
        if self.errors_so_far():
            return
        self.check_unused(tree)
        self.check_flow(tree)
        self.check_conditions(clauses)

    # -- header and declarations ----------------------------------------------------------------

    def check_header(self, tree: a.ContractAst) -> None:
        headers = [item for item in tree.items if isinstance(item, a.Header)]
        if not headers:
            if "contract" not in self.recovered:
                self.report(
                    "CD011",
                    "the contract has no header",
                    self.source.span(0, 0),
                    label='expected `contract "<name>" version 1` first',
                    help='start the file with: contract "<name>" version 1',
                )
            return
        header = headers[0]
        self.s.header = header
        if tree.items[0] is not header:
            self.report(
                "CD012",
                "the contract header must be the first statement",
                header.span,
                label="move this to the top",
            )
        for extra in headers[1:]:
            self.report(
                "CD012",
                "the contract header appears more than once",
                extra.span,
                label="second header",
                notes=[f"the first header is on {self.at(header.span)}"],
            )
        version = header.version.value
        if version is not None and version != LANGUAGE_VERSION:
            self.report(
                "CD013",
                f"language version {header.version.raw} is not supported",
                header.version.span,
                label=f"this checker knows version {LANGUAGE_VERSION}",
            )
        if not header.name.value.strip() and header.name.raw == '""':
            self.report(
                "CD009", "the contract name is empty", header.name.span, label="give it a name"
            )

    def declare(self, tree: a.ContractAst) -> None:
        names: dict[str, Span] = {}
        for item in tree.items:
            if isinstance(item, a.ParamDecl | a.OracleDecl):
                name = item.name
                if name.name in names:
                    self.report(
                        "CD021",
                        f"`{name.name}` is declared twice",
                        name.span,
                        label="second declaration",
                        notes=[f"first declared on {self.at(names[name.name])}"],
                    )
                    continue
                names[name.name] = name.span
                if isinstance(item, a.ParamDecl):
                    self.s.params[name.name] = item
                    currency = item.type.currency
                    if currency is not None:
                        self.check_currency(currency)
                else:
                    self.s.oracles[name.name] = item
                    self.check_oracle(item)
            elif isinstance(item, a.EventDecl):
                self.declare_event(item)
        self.s.events.update({k: v for k, v in BUILTIN_EVENTS.items() if k not in self.s.events})

    def declare_event(self, item: a.EventDecl) -> None:
        event_type = item.event_type.name
        if event_type in BUILTIN_EVENTS:
            self.report(
                "CD024",
                f"`{event_type}` is a built-in event type and cannot be declared again",
                item.event_type.span,
                label="built-in",
                help="use it without a declaration, or give your event another name",
            )
            return
        if event_type in self.s.event_decls:
            first = self.s.event_decls[event_type]
            self.report(
                "CD024",
                f"event type `{event_type}` is declared twice",
                item.event_type.span,
                label="second declaration",
                notes=[f"first declared on {self.at(first.span)}"],
            )
            return
        attributes: dict[str, str] = {}
        for attr in item.attributes:
            if attr.name.name in attributes:
                self.report(
                    "CD025",
                    f"attribute `{attr.name.name}` is declared twice in `{event_type}`",
                    attr.name.span,
                    label="duplicate",
                )
                continue
            attributes[attr.name.name] = attr.type
        self.s.event_decls[event_type] = item
        self.s.events[event_type] = EventSchema(
            event_type, attributes, f"`{event_type}` was reported", f"发生事件 {event_type}", False
        )

    def check_oracle(self, item: a.OracleDecl) -> None:
        source = item.source
        members = [source.source] if isinstance(source, a.SingleSource) else list(source.members)
        seen: dict[str, Span] = {}
        for member in members:
            if not member.value.strip():
                self.report(
                    "CD062",
                    "an oracle source name cannot be empty",
                    member.span,
                    label="empty",
                    help='name the attesting system, e.g. "customs.cn.shenzhen"',
                )
            elif member.value in seen:
                self.report(
                    "CD061",
                    f'"{member.value}" is listed twice in the quorum of `{item.name.name}`',
                    member.span,
                    label="duplicate member",
                    notes=[f"first listed at column {seen[member.value].column}"],
                )
            else:
                seen[member.value] = member.span
        if isinstance(source, a.QuorumSource) and source.threshold.value is not None:
            threshold = int(source.threshold.value)
            count = len(source.members)
            if threshold < 1 or threshold > count:
                self.report(
                    "CD060",
                    f"a quorum of {threshold} out of {count} source(s) "
                    + ("can never be reached" if threshold > count else "accepts no attestation"),
                    source.threshold.span,
                    label=f"must be between 1 and {count}" if count else "no members",
                )

    def check_currency(self, currency: a.Ident) -> bool:
        if currencies.is_supported(currency.name):
            return True
        self.report(
            "CD040",
            f"currency `{currency.name}` is not supported",
            currency.span,
            label="unsupported",
            notes=[f"supported currencies: {', '.join(currencies.CURRENCY_CODES)}"],
        )
        return False

    # -- names ----------------------------------------------------------------------------------

    def param(self, ident: a.Ident, kinds: Iterable[str], role: str) -> a.ParamDecl | None:
        """Resolve a parameter reference that must have one of `kinds`; report otherwise."""
        kinds = tuple(kinds)
        self.s.used.add(ident.name)
        decl = self.s.params.get(ident.name)
        if decl is None:
            if ident.name in self.s.oracles:
                self.report(
                    "CD030",
                    f"`{ident.name}` is an oracle, but {role} must be a "
                    f"{' or '.join(kinds)} parameter",
                    ident.span,
                    label="oracle",
                )
            elif ident.name not in self.recovered:
                self.report(
                    "CD020",
                    f"unknown name `{ident.name}`",
                    ident.span,
                    label="not declared",
                    help=_suggest(ident.name, list(self.s.params) + list(self.s.oracles))
                    or f"declare it: param {ident.name} : {kinds[0]}",
                )
            return None
        if decl.type.kind not in kinds:
            self.report(
                "CD030",
                f"`{ident.name}` is a {self.describe_type(decl.type)} parameter, but {role} "
                f"must be a {' or '.join(kinds)} parameter",
                ident.span,
                label=f"expected {' or '.join(kinds)}",
                notes=[f"`{ident.name}` is declared on {self.at(decl.span)}"],
            )
            return None
        return decl

    @staticmethod
    def describe_type(param_type: a.ParamType) -> str:
        if param_type.currency is not None:
            return f"{param_type.kind} {param_type.currency.name}"
        return param_type.kind

    # -- escrow and deadline --------------------------------------------------------------------

    def check_escrow_and_deadline(self, tree: a.ContractAst) -> None:
        escrows = [item for item in tree.items if isinstance(item, a.EscrowDecl)]
        anchor_span = self.s.header.span if self.s.header else self.source.span(0, 0)
        if not escrows and "escrow" not in self.recovered:
            self.report(
                "CD048",
                "the contract never says what is escrowed",
                anchor_span,
                label="no `escrow` statement",
                help="add e.g. `escrow price from buyer`",
            )
        for extra_escrow in escrows[1:]:
            self.report(
                "CD049",
                "the escrow is declared twice",
                extra_escrow.span,
                label="second escrow",
                notes=[f"the first is on {self.at(escrows[0].span)}"],
            )
        if escrows:
            escrow = escrows[0]
            self.s.escrow = escrow
            self.param(escrow.funder, ["wallet"], "the funder")
            if isinstance(escrow.amount, a.MoneyLit):
                if self.check_money_literal(escrow.amount, None):
                    self.s.escrow_currency = escrow.amount.currency.name
            else:
                decl = self.param(escrow.amount, ["money"], "the escrowed amount")
                currency = decl.type.currency if decl is not None else None
                if currency is not None and currencies.is_supported(currency.name):
                    self.s.escrow_currency = currency.name
        deadlines = [item for item in tree.items if isinstance(item, a.DeadlineDecl)]
        if not deadlines and "deadline" not in self.recovered:
            self.report(
                "CD056",
                "the contract has no deadline: if no clause pays out, the escrow stays locked",
                anchor_span,
                label="no `deadline` statement",
                help="add e.g. `deadline 2026-12-31T00:00:00+08:00 -> refund remainder to buyer`",
            )
        for extra in deadlines[1:]:
            self.report(
                "CD057",
                "the deadline is declared twice",
                extra.span,
                label="second deadline",
                notes=[f"the first is on {self.at(deadlines[0].span)}"],
            )
        if deadlines:
            self.s.deadline = deadlines[0]
            self.check_time(deadlines[0].at, "the deadline")
            for deadline in deadlines:
                self.check_actions(deadline.actions, in_clause=False)

    def check_time(self, expr: a.TimeExpr, role: str) -> None:
        if isinstance(expr, a.Ident):
            self.param(expr, ["timestamp"], role)

    # -- money ----------------------------------------------------------------------------------

    def check_money_literal(self, lit: a.MoneyLit, expected_currency: str | None) -> bool:
        """Currency supported (and matching), amount positive, in range and in minor units."""
        if not self.check_currency(lit.currency):
            return False
        if expected_currency is not None and lit.currency.name != expected_currency:
            self.report(
                "CD042",
                f"the amount is in {lit.currency.name} but the escrow is in {expected_currency}",
                lit.currency.span,
                label=f"expected {expected_currency}",
                help="amounts are paid out of the escrow in its currency; "
                f"use `in {lit.currency.name}` on the action to pay out in another currency",
            )
            return False
        if lit.amount is None:
            return False
        minor = currencies.minor_from_decimal(lit.amount, lit.currency.name)
        places = currencies.exponent(lit.currency.name)
        if minor is None:
            self.report(
                "CD041",
                f"{lit.raw} {lit.currency.name} is finer than the minor unit of "
                f"{lit.currency.name} ({places} decimal places)",
                lit.span,
                label="too many decimal places",
            )
            return False
        if minor <= 0 or minor > limits.AMOUNT_MINOR_MAX:
            self.report(
                "CD044",
                "an amount must be greater than zero"
                if minor <= 0
                else f"the amount exceeds {limits.AMOUNT_MINOR_MAX} minor units",
                lit.span,
                label="out of range",
            )
            return False
        return True

    def check_money_expr(self, expr: a.MoneyExpr, role: str) -> None:
        escrow_currency = self.s.escrow_currency
        if isinstance(expr, a.MoneyLit):
            self.check_money_literal(expr, escrow_currency)
            return
        decl = self.param(expr, ["money"], role)
        if decl is None or decl.type.currency is None or escrow_currency is None:
            return
        if decl.type.currency.name != escrow_currency:
            self.report(
                "CD042",
                f"`{expr.name}` is in {decl.type.currency.name} but the escrow is in "
                f"{escrow_currency}",
                expr.span,
                label=f"expected money {escrow_currency}",
            )

    def check_amount(self, amount: a.Amount) -> None:
        if isinstance(amount, a.RemainderAmount):
            return
        if isinstance(amount, a.PercentAmount):
            percent = amount.percent
            if percent is not None:
                bp = percent * 100
                if percent <= 0 or percent > 100:
                    self.report(
                        "CD043",
                        f"{amount.raw}% is not between 0% (exclusive) and 100%",
                        self.source.span(
                            amount.span.start, amount.span.start + len(amount.raw) + 1
                        ),
                        label="out of range",
                    )
                elif bp != bp.to_integral_value():
                    self.report(
                        "CD043",
                        f"{amount.raw}% is finer than 0.01%",
                        self.source.span(
                            amount.span.start, amount.span.start + len(amount.raw) + 1
                        ),
                        label="at most two decimal places",
                    )
            if amount.of is not None:
                self.check_money_expr(amount.of, "the base of a percentage")
            return
        self.check_money_expr(amount, "an amount")

    def check_actions(self, actions: Sequence[a.Action], *, in_clause: bool) -> None:
        for action in actions:
            if isinstance(action, a.PayAction):
                self.check_amount(action.amount)
                self.param(action.party, ["wallet"], "the payee")
                target = action.target_currency
                if (
                    target is not None
                    and self.check_currency(target)
                    and target.name == self.s.escrow_currency
                ):
                    self.report(
                        "CD047",
                        f"the escrow is already in {target.name}; `in {target.name}` "
                        "converts nothing",
                        target.span,
                        label="same currency",
                        help=f"remove `in {target.name}`",
                    )
            elif isinstance(action, a.RefundAction):
                self.check_amount(action.amount)
                if action.party is not None:
                    decl = self.param(action.party, ["wallet"], "the refund recipient")
                    escrow = self.s.escrow
                    if (
                        decl is not None
                        and escrow is not None
                        and action.party.name != escrow.funder.name
                    ):
                        self.report(
                            "CD055",
                            f"a refund goes back to the funder `{escrow.funder.name}`, "
                            f"not to `{action.party.name}`",
                            action.party.span,
                            label="not the funder",
                            help=f"use `pay ... to {action.party.name}` to pay someone else",
                        )
            else:
                self.param(action.title, ["title"], "the delivered title")
                self.param(action.party, ["wallet"], "the title's recipient")

    # -- clauses --------------------------------------------------------------------------------

    def check_labels(self, clauses: Sequence[tuple[a.Clause, a.OneOf | None]]) -> None:
        seen: dict[str, Span] = {}
        for clause, _ in clauses:
            if clause.label is None:
                continue
            name = clause.label.name
            if name in seen:
                self.report(
                    "CD027",
                    f"two clauses are labelled `{name}`",
                    clause.label.span,
                    label="second label",
                    notes=[f"the first is on {self.at(seen[name])}"],
                )
            else:
                seen[name] = clause.label.span

    def event_schema(self, ident: a.Ident) -> EventSchema | None:
        schema = self.s.events.get(ident.name)
        if schema is None and ident.name not in self.recovered:
            self.report(
                "CD022",
                f"unknown event type `{ident.name}`",
                ident.span,
                label="not a built-in or declared event type",
                help=_suggest(ident.name, self.s.events)
                or f"declare it: event {ident.name}(<attribute>: <type>, ...)",
            )
        if schema is not None:
            self.s.used_events.add(ident.name)
        return schema

    def check_pattern(self, pattern: a.Pattern) -> None:
        schema = self.event_schema(pattern.event_type)
        attester = pattern.attester
        self.s.used.add(attester.name)
        if attester.name not in self.s.oracles:
            decl = self.s.params.get(attester.name)
            if decl is None:
                if attester.name not in self.recovered:
                    self.report(
                        "CD020",
                        f"unknown attester `{attester.name}`",
                        attester.span,
                        label="not an oracle or wallet",
                        help=_suggest(attester.name, list(self.s.oracles) + list(self.s.params))
                        or f'declare it: oracle {attester.name} = "<source>"',
                    )
            elif decl.type.kind != "wallet":
                self.report(
                    "CD033",
                    f"`{attester.name}` is a {self.describe_type(decl.type)} parameter and "
                    "cannot attest events",
                    attester.span,
                    label="not an oracle or wallet",
                    help="events are attested `by` an oracle or by a party's wallet",
                )
        for constraint in pattern.constraints:
            self.check_constraint(constraint, schema)
        for timing in pattern.timings:
            if isinstance(timing, a.Within):
                if isinstance(timing.duration, a.Ident):
                    self.param(timing.duration, ["duration"], "a window length")
                self.event_schema(timing.anchor)
            else:
                self.check_time(timing.at, "a time bound")

    def check_constraint(self, constraint: a.Constraint, schema: EventSchema | None) -> None:
        values = constraint.values if constraint.op in ("in", "not in") else ()
        if constraint.op in ("in", "not in") and not values:
            self.report(
                "CD034",
                f"`{constraint.attr.name} {constraint.op} []` has an empty list",
                constraint.span,
                label="empty list",
                help="list at least one value",
            )
        all_values = list(values) if constraint.value is None else [constraint.value]
        if schema is None:
            for value in all_values:
                if isinstance(value, a.Ident):
                    self.s.used.add(value.name)
            return
        attr_type = schema.attributes.get(constraint.attr.name)
        if attr_type is None:
            self.report(
                "CD023",
                f"`{schema.event_type}` has no attribute `{constraint.attr.name}`",
                constraint.attr.span,
                label="unknown attribute",
                help=_suggest(constraint.attr.name, schema.attributes)
                or f"its attributes are: {', '.join(sorted(schema.attributes)) or '(none)'}",
            )
            for value in all_values:
                if isinstance(value, a.Ident):
                    self.s.used.add(value.name)
            return
        if constraint.op not in _OPS_BY_TYPE[attr_type]:
            self.report(
                "CD032",
                f"`{constraint.op}` cannot compare {attr_type} attribute `{constraint.attr.name}`",
                constraint.span,
                label=f"{attr_type} allows {', '.join(sorted(_OPS_BY_TYPE[attr_type]))}",
            )
        for value in all_values:
            self.check_value(value, attr_type, constraint.attr.name)

    def check_value(self, value: a.Value, attr_type: str, attr: str) -> None:
        found: str
        if isinstance(value, a.Ident):
            allowed = sorted(_TEXT_PARAM_KINDS) if attr_type == "text" else [attr_type]
            if attr_type == "bool":
                self.s.used.add(value.name)
                self.report(
                    "CD031",
                    f"`{attr}` is a bool attribute; compare it with `true` or `false`",
                    value.span,
                    label="expected true or false",
                )
                return
            self.param(value, allowed, f"a value compared with {attr_type} attribute `{attr}`")
            return
        if isinstance(value, a.TextLit):
            found = "text"
        elif isinstance(value, a.NumberLit):
            found = "number"
        elif isinstance(value, a.BoolLit):
            found = "bool"
        else:
            found = "timestamp"
        if found != attr_type:
            self.report(
                "CD031",
                f"`{attr}` is a {attr_type} attribute but is compared with a {found}",
                value.span,
                label=f"expected a {attr_type}",
            )

    # -- usage ----------------------------------------------------------------------------------

    def check_unused(self, tree: a.ContractAst) -> None:
        for item in tree.items:
            if isinstance(item, a.ParamDecl | a.OracleDecl):
                if item.name.name not in self.s.used:
                    kind = "parameter" if isinstance(item, a.ParamDecl) else "oracle"
                    self.report(
                        "CD026",
                        f"{kind} `{item.name.name}` is never used",
                        item.name.span,
                        label="unused",
                        help="remove it, or use it in a clause",
                    )
            elif isinstance(item, a.EventDecl):
                name = item.event_type.name
                if name not in self.s.used_events and self.s.event_decls.get(name) is item:
                    self.report(
                        "CD026",
                        f"event type `{name}` is declared but never used",
                        item.event_type.span,
                        label="unused",
                    )

    # -- the flow of money ----------------------------------------------------------------------

    def escrow_minor(self) -> int | None:
        escrow = self.s.escrow
        if escrow is None or not isinstance(escrow.amount, a.MoneyLit):
            return None
        if escrow.amount.amount is None or self.s.escrow_currency is None:
            return None
        return currencies.minor_from_decimal(escrow.amount.amount, self.s.escrow_currency)

    def effect(self, action: a.Action) -> _Effect:
        if isinstance(action, a.DeliverAction):
            return _Effect("none")
        amount = action.amount
        escrow = self.s.escrow
        escrow_param = (
            escrow.amount.name
            if escrow is not None and isinstance(escrow.amount, a.Ident)
            else None
        )
        if isinstance(amount, a.RemainderAmount):
            return _Effect("remainder")
        if isinstance(amount, a.PercentAmount):
            assert amount.percent is not None
            bp = int(amount.percent * 100)
            base = amount.of
            if base is None or (isinstance(base, a.Ident) and base.name == escrow_param):
                return _Effect("pct", bp=bp)
            if isinstance(base, a.MoneyLit):
                assert base.amount is not None
                assert self.s.escrow_currency is not None
                minor = currencies.minor_from_decimal(base.amount, self.s.escrow_currency)
                assert minor is not None
                return _Effect("fixed", minor=minor * bp // BASIS_POINTS_FULL)
            return _Effect("unknown")
        if isinstance(amount, a.MoneyLit):
            assert amount.amount is not None
            assert self.s.escrow_currency is not None
            minor = currencies.minor_from_decimal(amount.amount, self.s.escrow_currency)
            assert minor is not None
            return _Effect("fixed", minor=minor)
        if amount.name == escrow_param:
            return _Effect("pct", bp=BASIS_POINTS_FULL)
        return _Effect("unknown")

    def share(self, effect: _Effect, escrow_minor: int | None) -> Fraction:
        """The part of the escrow an effect takes (0 when unknown statically)."""
        if effect.kind == "pct":
            return Fraction(effect.bp, BASIS_POINTS_FULL)
        if effect.kind == "fixed" and escrow_minor:
            return Fraction(effect.minor, escrow_minor)
        return Fraction(0)

    def check_flow(self, tree: a.ContractAst) -> None:
        escrow_minor = self.escrow_minor()
        units: list[list[a.Clause]] = []
        for item in tree.items:
            if isinstance(item, a.Clause):
                units.append([item])
            elif isinstance(item, a.OneOf) and item.clauses:
                units.append(list(item.clauses))
        lists: list[tuple[str, Sequence[a.Action]]] = []
        for unit in units:
            lists.extend(("clause", clause.actions) for clause in unit)
        if self.s.deadline is not None:
            lists.append(("deadline", self.s.deadline.actions))
        for kind, actions in lists:
            self.check_action_list(actions, escrow_minor, in_clause=kind == "clause")
        deadline_actions = list(self.s.deadline.actions) if self.s.deadline else []
        self.check_path_percentages(units, deadline_actions, escrow_minor)
        self.check_path_remainders(units)
        self.check_path_titles(units, deadline_actions)
        if not self.errors_so_far():  # CD064/CD065 assume the flow above is sound
            self.check_delivery_against_payment(tree)

    def check_action_list(
        self, actions: Sequence[a.Action], escrow_minor: int | None, *, in_clause: bool
    ) -> None:
        empty_since: a.Action | None = None
        share = Fraction(0)
        remainder: a.Action | None = None
        for action in actions:
            effect = self.effect(action)
            if effect.kind == "none":
                continue
            if effect.kind == "remainder" and remainder is not None:
                self.report(
                    "CD050",
                    "`remainder` is paid twice in one clause",
                    action.span,
                    label="nothing is left for this",
                    notes=[f"the first `remainder` is at column {remainder.span.column}"],
                )
                continue
            if empty_since is not None:
                self.report(
                    "CD051",
                    "this action can never pay anything: the escrow is already empty",
                    action.span,
                    label="always pays zero",
                    notes=[
                        f"the action at {self.at(empty_since.span)}, column "
                        f"{empty_since.span.column} empties the escrow"
                    ],
                    help="remove the action or lower the amounts before it",
                )
                continue
            if effect.kind == "remainder":
                remainder = action
                empty_since = action
                continue
            share += self.share(effect, escrow_minor)
            if share >= 1:
                empty_since = action
        where = "clause" if in_clause else "deadline"
        for action in actions:
            if not isinstance(action, a.DeliverAction):
                continue
            recipient = action.party.name
            paid_other = any(
                isinstance(x, a.PayAction) and not x.penalty and x.party.name != recipient
                for x in actions
            )
            if not paid_other:
                self.report(
                    "CD058",
                    f"title `{action.title.name}` is delivered to `{recipient}` without a "
                    f"payment to another party in the same {where}",
                    action.span,
                    label="delivery not against payment",
                    notes=[
                        "delivery versus payment: the action list that delivers a title must "
                        "pay its price to someone other than the title's recipient "
                        "(a refund or a penalty is not a payment for it)"
                    ],
                    help="deliver the title in the clause that pays for it, e.g. "
                    f"`pay remainder to seller and deliver title {action.title.name} to "
                    f"{recipient}`",
                )

    def check_path_percentages(
        self,
        units: Sequence[Sequence[a.Clause]],
        deadline_actions: Sequence[a.Action],
        escrow_minor: int | None,
    ) -> None:
        path: list[tuple[a.Action, Fraction, Fraction]] = []  # action, pct share, total share
        for unit in units:
            best: tuple[Fraction, Fraction, a.Clause] | None = None
            for clause in unit:
                pct = sum(
                    (
                        Fraction(self.effect(x).bp, BASIS_POINTS_FULL)
                        for x in clause.actions
                        if self.effect(x).kind == "pct"
                    ),
                    Fraction(0),
                )
                total = sum(
                    (self.share(self.effect(x), escrow_minor) for x in clause.actions),
                    Fraction(0),
                )
                if best is None or (total, pct) > (best[0], best[1]):
                    best = (total, pct, clause)
            if best is not None:
                path.extend(self.action_shares(best[2].actions, escrow_minor))
        path.extend(self.action_shares(deadline_actions, escrow_minor))
        pct_sum = sum((pct for _, pct, _ in path), Fraction(0))
        total_sum = sum((total for _, _, total in path), Fraction(0))
        if pct_sum > 1:
            self.report_over(path, 1, "CD045", pct_sum)
        elif total_sum > 1 and escrow_minor is not None:
            self.report_over(path, 2, "CD046", total_sum)

    def action_shares(
        self, actions: Sequence[a.Action], escrow_minor: int | None
    ) -> list[tuple[a.Action, Fraction, Fraction]]:
        shares = []
        for action in actions:
            effect = self.effect(action)
            pct = Fraction(effect.bp, BASIS_POINTS_FULL) if effect.kind == "pct" else Fraction(0)
            total = self.share(effect, escrow_minor)
            if total:
                shares.append((action, pct, total))
        return shares

    def report_over(
        self,
        path: Sequence[tuple[a.Action, Fraction, Fraction]],
        which: int,
        code: str,
        sum_: Fraction,
    ) -> None:
        running = Fraction(0)
        contributors: list[str] = []
        for action, pct, total in path:
            part = pct if which == 1 else total
            if not part:
                continue
            running += part
            contributors.append(f"{_percent(part)} at {self.at(action.span)}")
            if running > 1:
                what = "percentages" if which == 1 else "amounts"
                self.report(
                    code,
                    f"the {what} paid on one path add up to {_percent(sum_)} of the escrow",
                    action.span,
                    label="this goes over 100%",
                    notes=[
                        "a path is every standalone clause, one clause of each `one of` block, "
                        "then the deadline",
                        "on the largest path: " + ", ".join(contributors),
                    ],
                    help="lower the amounts, use `remainder`, or put alternatives in `one of`",
                )
                return

    def check_path_remainders(self, units: Sequence[Sequence[a.Clause]]) -> None:
        first: a.Action | None = None
        for unit in units:
            unit_first: a.Action | None = None
            for clause in unit:
                for action in clause.actions:
                    if self.effect(action).kind == "remainder":
                        unit_first = unit_first or action
                        break
            if unit_first is None:
                continue
            if first is None:
                first = unit_first
                continue
            self.report(
                "CD050",
                "`remainder` is paid by two clauses that can both fire",
                unit_first.span,
                label="second `remainder` on this path",
                notes=[f"the other `remainder` is on {self.at(first.span)}"],
                help="if only one of them may fire, put both clauses in a `one of { ... }` block",
            )

    def check_path_titles(
        self, units: Sequence[Sequence[a.Clause]], deadline_actions: Sequence[a.Action]
    ) -> None:
        seen: dict[str, a.Action] = {}
        groups: list[list[Sequence[a.Action]]] = [[c.actions for c in unit] for unit in units]
        groups.append([deadline_actions])
        for group in groups:
            in_group: dict[str, a.Action] = {}
            for actions in group:
                in_clause: set[str] = set()
                for action in actions:
                    if not isinstance(action, a.DeliverAction):
                        continue
                    title = action.title.name
                    if title in in_clause or title in seen:
                        first = seen.get(title) or in_group[title]
                        self.report(
                            "CD059",
                            f"title `{title}` is delivered twice on one path",
                            action.span,
                            label="second delivery",
                            notes=[f"it is also delivered on {self.at(first.span)}"],
                            help="a title can be delivered once; "
                            "put alternative deliveries in a `one of` block",
                        )
                        continue
                    in_clause.add(title)
                    in_group.setdefault(title, action)
            seen.update({k: v for k, v in in_group.items() if k not in seen})

    def check_delivery_against_payment(self, tree: a.ContractAst) -> None:
        """CD064 (a delivering action list whose payment can fall short on some path) and CD065
        (a payment another party's `remainder` can starve to zero), on the compiled form (see
        contracts_dsl/dvp.py). Amounts that only parameters decide are checked at binding
        (PV010)."""
        from contracts_dsl.compiler import compile_checked  # the compiler imports the checker

        contract = compile_checked(tree, self.s)
        clauses = [clause for clause, _ in a.all_clauses(tree)]
        by_id = {spec.id: clauses[i] for i, spec in enumerate(contract.clauses)}
        deadline = self.s.deadline

        def actions_of(where: int) -> Sequence[a.Action]:
            if where == dvp.DEADLINE:
                assert deadline is not None
                return deadline.actions
            return clauses[where].actions

        shorts, _ = dvp.delivery_shortfalls(contract, dvp.static_share(contract))
        for short in shorts:
            actions = actions_of(short.where)
            action = actions[short.action_index]
            titles = ", ".join(
                f"`{x.title.name}`" for x in actions if isinstance(x, a.DeliverAction)
            )
            message, label = {
                "starved": (
                    f"this `remainder` can find the escrow empty, so title {titles} could be "
                    "delivered for nothing",
                    "can pay zero",
                ),
                "capped": (
                    "this amount can be capped at what is left in the escrow, so title "
                    f"{titles} could be delivered for less than its price",
                    "can pay short",
                ),
                "zero": (
                    f"this amount rounds to zero, so title {titles} would be delivered for nothing",
                    "pays nothing",
                ),
            }[short.reason]
            notes = [
                f"clause `{who}` on {self.at(by_id[who].span)} can fire first"
                + (" and take everything left" if _pays_remainder(by_id[who]) else "")
                for who in short.takers
            ]
            notes.append(
                "a title is delivered only against payment in full, in the same step; "
                "the evaluator withholds it when a payment of its clause falls short"
            )
            self.report(
                "CD064",
                message,
                action.span,
                label=label,
                notes=notes,
                help="lower what the clauses that can fire first take, or put them in a "
                "`one of` block with the delivering clause",
            )
        for starved in dvp.starvations(contract):
            victim = clauses[starved.victim]
            starver = clauses[starved.by]
            action = victim.actions[starved.action_index]
            remainder = starver.actions[starved.by_action]
            assert isinstance(action, a.PayAction | a.RefundAction)
            assert isinstance(remainder, a.PayAction | a.RefundAction)
            party = self.s.escrow.funder.name if self.s.escrow else "the funder"
            payee = action.party.name if action.party is not None else party
            other = remainder.party.name if remainder.party is not None else party
            self.report(
                "CD065",
                f"this payment to `{payee}` can be starved to zero by the `remainder` paid to "
                f"`{other}` on {self.at(remainder.span)}",
                action.span,
                label="can pay nothing",
                notes=[
                    f"clause `{contract.clauses[starved.by].id}` can fire before clause "
                    f"`{contract.clauses[starved.victim].id}` and leave nothing"
                ],
                help="if this must be paid whatever the order of events, make the clause "
                "paying `remainder` also wait for this clause's events, or have it pay a fixed "
                "share instead",
            )

    # -- conditions and time --------------------------------------------------------------------

    def deadline_us(self) -> int | None:
        deadline = self.s.deadline
        if deadline is None or not isinstance(deadline.at, a.TimestampLit):
            return None
        return deadline.at.value_us

    def check_conditions(self, clauses: Sequence[tuple[a.Clause, a.OneOf | None]]) -> None:
        patterns = [p for clause, _ in clauses for p in a.iter_patterns(clause.condition)]
        deadline = self.deadline_us()
        dead: set[int] = set()
        for index, pattern in enumerate(patterns):
            if self.constraints_unsatisfiable(pattern) or self.timing_empty(pattern, deadline):
                dead.add(index)
        earliest = self.earliest_acceptance(patterns, dead)
        for index, pattern in enumerate(patterns):
            if index in dead:
                continue
            for timing in pattern.timings:
                if not isinstance(timing, a.Within):
                    continue
                anchor = timing.anchor.name
                accepting = [p for p in patterns if p.event_type.name == anchor]
                if not accepting:
                    self.report(
                        "CD054",
                        f"the window waits for `{anchor}`, but no clause accepts that event",
                        timing.anchor.span,
                        label="never happens for this contract",
                        help=f"add a clause with a `{anchor}(...) by ...` pattern, "
                        "or anchor the window on another event",
                    )
                    continue
                self.check_anchor(timing, accepting)
                start = earliest.get(anchor)
                if start is None:
                    self.report(
                        "CD054",
                        f"the window waits for `{anchor}`, which this contract can never accept",
                        timing.anchor.span,
                        label="never accepted",
                        notes=[
                            f"every `{anchor}` pattern can never match or waits on a window "
                            "that waits on this one"
                        ],
                    )
                    continue
                upper = self.upper_bound(pattern, deadline)
                if upper is not None and start >= upper[0]:
                    self.report(
                        "CD053",
                        f"the window after `{anchor}` cannot open before {upper[1]}",
                        timing.span,
                        label="window never opens in time",
                        notes=[
                            f"`{anchor}` is accepted no earlier than {_literals.format_us(start)}",
                            f"{upper[1]} is {_literals.format_us(upper[0])}",
                        ],
                    )

    def check_anchor(self, timing: a.Within, accepting: Sequence[a.Pattern]) -> None:
        """CD066: a window opens at the first accepted event of its anchor type, whichever
        pattern accepted it. When the patterns accepting that type differ (other constraints,
        attester or timing), the window may open on an event that met another clause's pattern."""
        shapes: dict[str, a.Pattern] = {}
        for pattern in accepting:
            shapes.setdefault(self.shape(pattern), pattern)
        if len(shapes) < 2:
            return
        anchor = timing.anchor.name
        self.report(
            "CD066",
            f"the window opens at the first `{anchor}` any clause accepts, and the patterns "
            f"accepting `{anchor}` differ",
            timing.anchor.span,
            label="may open on another clause's event",
            notes=[
                f"`{anchor}` is accepted on "
                + ", ".join(f"{self.at(p.span)} as `{self.shape(p)}`" for p in shapes.values()),
                "the anchor is the earliest event of that type that matches any pattern of the "
                "contract, not only the pattern of a particular clause",
            ],
            help=f"declare an event type of its own for the anchor, or make every `{anchor}` "
            "pattern the same",
        )

    def shape(self, pattern: a.Pattern) -> str:
        """A pattern as written, whitespace collapsed (equal shapes accept the same events)."""
        text = self.source.text[pattern.span.start : pattern.span.end]
        return " ".join(text.split())

    def upper_bound(self, pattern: a.Pattern, deadline: int | None) -> tuple[int, str] | None:
        bounds: list[tuple[int, str]] = []
        if deadline is not None:
            bounds.append((deadline, "the deadline"))
        for timing in pattern.timings:
            at = timing.at if isinstance(timing, a.Before) else None
            if isinstance(at, a.TimestampLit) and at.value_us is not None:
                bounds.append((at.value_us, "its `before` bound"))
        return min(bounds) if bounds else None

    @staticmethod
    def lower_bound(pattern: a.Pattern) -> int:
        found = 0
        for timing in pattern.timings:
            if isinstance(timing, a.After) and isinstance(timing.at, a.TimestampLit):
                found = max(found, timing.at.value_us or 0)
        return found

    def timing_empty(self, pattern: a.Pattern, deadline: int | None) -> bool:
        lower = self.lower_bound(pattern)
        upper = self.upper_bound(pattern, deadline)
        if upper is None or lower < upper[0]:
            return False
        spans = [t.span for t in pattern.timings if isinstance(t, a.After | a.Before)]
        self.report(
            "CD052",
            f"`{pattern.event_type.name}` must be observed at or after "
            f"{_literals.format_us(lower)} but before {upper[1]} ({_literals.format_us(upper[0])})",
            _join(spans, self.source) if spans else pattern.event_type.span,
            label="empty time window",
        )
        return True

    def earliest_acceptance(self, patterns: Sequence[a.Pattern], dead: set[int]) -> dict[str, int]:
        """Earliest time each event type can be accepted (absent: never), by fixpoint."""
        earliest: dict[str, int] = {}
        for _ in range(len(patterns) + 1):
            changed = False
            for index, pattern in enumerate(patterns):
                if index in dead:
                    continue
                start: int | None = self.lower_bound(pattern)
                for timing in pattern.timings:
                    if isinstance(timing, a.Within):
                        anchor = earliest.get(timing.anchor.name)
                        start = None if anchor is None or start is None else max(start, anchor)
                if start is None:
                    continue
                name = pattern.event_type.name
                if name not in earliest or start < earliest[name]:
                    earliest[name] = start
                    changed = True
            if not changed:
                break
        return earliest

    def constraints_unsatisfiable(self, pattern: a.Pattern) -> bool:
        schema = self.s.events.get(pattern.event_type.name)
        if schema is None:
            return False
        by_attr: dict[str, list[a.Constraint]] = {}
        for constraint in pattern.constraints:
            by_attr.setdefault(constraint.attr.name, []).append(constraint)
        for attr, constraints in by_attr.items():
            attr_type = schema.attributes.get(attr)
            if attr_type is None:
                continue
            if any(c.op in ("in", "not in") and not c.values for c in constraints):
                return True  # CD034 already reported the empty list
            if not _satisfiable(constraints):
                shown = " and ".join(
                    f"`{self.source.text[c.span.start : c.span.end]}`" for c in constraints
                )
                self.report(
                    "CD052",
                    f"no `{pattern.event_type.name}` can satisfy {shown}",
                    _join([c.span for c in constraints], self.source),
                    label="contradictory constraints",
                )
                return True
        return False


def _pays_remainder(clause: a.Clause) -> bool:
    return any(
        isinstance(x, a.PayAction | a.RefundAction) and isinstance(x.amount, a.RemainderAmount)
        for x in clause.actions
    )


def _percent(share: Fraction) -> str:
    value = share * 100
    if value.denominator == 1:
        return f"{value.numerator}%"
    return f"{Decimal(value.numerator) / Decimal(value.denominator):.2f}%"


_Literal = str | Decimal | bool | int


def _literal(value: a.Value) -> _Literal | None:
    if isinstance(value, a.TextLit):
        return value.value
    if isinstance(value, a.NumberLit):
        return value.value
    if isinstance(value, a.BoolLit):
        return value.value
    if isinstance(value, a.TimestampLit):
        return value.value_us
    return None


def _satisfiable(constraints: Sequence[a.Constraint]) -> bool:
    """Whether some value satisfies all literal constraints on one attribute (params: unknown)."""
    allowed: set[_Literal] | None = None
    excluded: set[_Literal] = set()
    checks: list[tuple[str, _Literal]] = []
    for constraint in constraints:
        if constraint.op in ("in", "not in"):
            literals = [_literal(v) for v in constraint.values]
            if any(x is None for x in literals):
                continue
            values = {x for x in literals if x is not None}
            if constraint.op == "in":
                allowed = values if allowed is None else allowed & values
            else:
                excluded |= values
            continue
        assert constraint.value is not None
        literal = _literal(constraint.value)
        if literal is None:
            continue
        if constraint.op == "==":
            allowed = {literal} if allowed is None else allowed & {literal}
        elif constraint.op == "!=":
            excluded.add(literal)
        else:
            checks.append((constraint.op, literal))
    if allowed is not None:
        return any(
            x not in excluded and all(_compare(x, op, bound) for op, bound in checks)
            for x in allowed
        )
    if not checks:
        return True
    # A dense interval: lower and upper bounds from the comparisons.
    lower: tuple[_Literal, bool] | None = None  # (value, inclusive)
    upper: tuple[_Literal, bool] | None = None
    for op, bound in checks:
        if op in (">", ">="):
            candidate = (bound, op == ">=")
            if lower is None or _tighter_lower(candidate, lower):
                lower = candidate
        else:
            candidate = (bound, op == "<=")
            if upper is None or _tighter_upper(candidate, upper):
                upper = candidate
    if lower is None or upper is None:
        return True
    if _less(lower[0], upper[0]):
        return True
    if lower[0] == upper[0] and lower[1] and upper[1]:
        return lower[0] not in excluded
    return False


def _less(left: _Literal, right: _Literal) -> bool:
    if isinstance(left, Decimal | int) and isinstance(right, Decimal | int):
        return left < right
    return False


def _compare(value: _Literal, op: str, bound: _Literal) -> bool:
    if not (isinstance(value, Decimal | int) and isinstance(bound, Decimal | int)):
        return True
    if isinstance(value, bool) or isinstance(bound, bool):
        return True
    return {
        "<": value < bound,
        "<=": value <= bound,
        ">": value > bound,
        ">=": value >= bound,
    }[op]


def _tighter_lower(candidate: tuple[_Literal, bool], current: tuple[_Literal, bool]) -> bool:
    if _less(current[0], candidate[0]):
        return True
    return candidate[0] == current[0] and not candidate[1]


def _tighter_upper(candidate: tuple[_Literal, bool], current: tuple[_Literal, bool]) -> bool:
    if _less(candidate[0], current[0]):
        return True
    return candidate[0] == current[0] and not candidate[1]
