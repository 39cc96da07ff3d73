"""The pipeline entry point: source text -> diagnostics and, when clean, a `CompiledContract`.

`compile_source` parses, checks and compiles. It never raises; `CompileResult.contract` is None
whenever a diagnostic is an error (warnings do not block compilation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal

from contracts_dsl import ast_nodes as a
from contracts_dsl import currencies
from contracts_dsl.checker import LANGUAGE_VERSION, CheckResult, Symbols, check
from contracts_dsl.compiled import (
    ActionSpec,
    Amount,
    ClauseSpec,
    CompiledContract,
    Condition,
    CondSpec,
    ConstraintSpec,
    DeadlineSpec,
    EscrowSpec,
    EventSpec,
    OracleSpec,
    ParamSpec,
    PatternSpec,
    Ref,
    TimingSpec,
    Value,
    canonical_json,
    mark_verified,
    number_patterns,
    sort_canonically,
)
from contracts_dsl.diagnostics import Diagnostic
from contracts_dsl.parser import parse
from contracts_dsl.source import SourceFile


@dataclass(frozen=True, slots=True)
class CompileResult:
    """Diagnostics (all of them, sorted) and the compiled contract when there is no error."""

    source: SourceFile
    diagnostics: tuple[Diagnostic, ...]
    contract: CompiledContract | None
    checked: CheckResult

    @property
    def ok(self) -> bool:
        return self.contract is not None


def check_source(text: str, path: str = "<input>") -> CheckResult:
    """Parse and check; every diagnostic of the file."""
    return check(parse(text, path))


def compile_source(text: str, path: str = "<input>") -> CompileResult:
    """Parse, check and compile a contract source text. Never raises."""
    checked = check_source(text, path)
    contract = None
    if checked.ok:
        assert checked.parsed.tree is not None
        contract = compile_checked(checked.parsed.tree, checked.symbols)
        mark_verified(contract.hash)
    return CompileResult(checked.parsed.source, checked.diagnostics, contract, checked)


@functools.lru_cache(maxsize=16_384)
def _key(spec: Value | ConstraintSpec) -> bytes:
    """The canonical bytes of a value or constraint: the order they are sorted in (memoised:
    an editor re-checks the same contract at every keystroke)."""
    return canonical_json(spec.to_json())


def canonical_decimal(value: Decimal) -> str:
    """`Decimal("8.50")` -> `"8.5"`, `Decimal("-0")` -> `"0"`, never an exponent."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def compile_checked(tree: a.ContractAst, symbols: Symbols) -> CompiledContract:
    """Compile a tree the checker found free of errors (asserts what the checker guarantees)."""
    return number_patterns(_Compiler(symbols).contract(tree))


class _Compiler:
    def __init__(self, symbols: Symbols) -> None:
        self.s = symbols
        assert symbols.escrow_currency is not None
        self.currency: str = symbols.escrow_currency

    def contract(self, tree: a.ContractAst) -> CompiledContract:
        header = self.s.header
        assert header is not None
        assert self.s.escrow is not None
        params = tuple(
            ParamSpec(
                decl.name.name,
                decl.type.kind,
                None if decl.type.currency is None else decl.type.currency.name,
            )
            for decl in sorted(self.s.params.values(), key=lambda d: d.name.name)
        )
        oracles = []
        for decl in sorted(self.s.oracles.values(), key=lambda d: d.name.name):
            source = decl.source
            if isinstance(source, a.SingleSource):
                oracles.append(OracleSpec(decl.name.name, 1, (source.source.value,)))
            else:
                assert source.threshold.value is not None
                members = tuple(sorted({m.value for m in source.members}))
                oracles.append(OracleSpec(decl.name.name, int(source.threshold.value), members))
        used = set(self.s.used_events) | set(self.s.event_decls)
        events = tuple(
            EventSpec(
                name,
                tuple(sorted(self.s.events[name].attributes.items())),
                self.s.events[name].builtin,
            )
            for name in sorted(used)
        )
        escrow = EscrowSpec(
            self.currency, self.money_ref(self.s.escrow.amount), self.s.escrow.funder.name
        )
        deadline = None
        if self.s.deadline is not None:
            deadline = DeadlineSpec(
                self.time_ref(self.s.deadline.at), self.actions(self.s.deadline.actions)
            )
        clauses = []
        groups = 0
        counter = 0
        for item in tree.items:
            if isinstance(item, a.Clause):
                counter += 1
                clauses.append(self.clause(item, counter, None))
            elif isinstance(item, a.OneOf):
                groups += 1
                for clause in item.clauses:
                    counter += 1
                    clauses.append(self.clause(clause, counter, f"one_of#{groups}"))
        assert header.version.value == LANGUAGE_VERSION
        return CompiledContract(
            header.name.value,
            LANGUAGE_VERSION,
            params,
            tuple(oracles),
            events,
            escrow,
            deadline,
            tuple(clauses),
        )

    def money_ref(self, expr: a.MoneyExpr) -> Ref:
        if isinstance(expr, a.Ident):
            return Ref(param=expr.name)
        assert expr.amount is not None
        minor = currencies.minor_from_decimal(expr.amount, expr.currency.name)
        assert minor is not None
        return Ref(literal=minor)

    def time_ref(self, expr: a.TimeExpr) -> Ref:
        if isinstance(expr, a.Ident):
            return Ref(param=expr.name)
        assert expr.value_us is not None
        return Ref(literal=expr.value_us)

    def amount(self, amount: a.Amount) -> Amount:
        if isinstance(amount, a.RemainderAmount):
            return Amount("remainder")
        if isinstance(amount, a.PercentAmount):
            assert amount.percent is not None
            base = None if amount.of is None else self.money_ref(amount.of)
            escrow_ref = self.money_ref(self.s.escrow.amount) if self.s.escrow else None
            if base == escrow_ref:
                base = None  # `5% of price` where price is the escrow amount is `5%`
            return Amount("percent", bp=int(amount.percent * 100), base=base)
        return Amount("fixed", money=self.money_ref(amount))

    def actions(self, actions: tuple[a.Action, ...]) -> tuple[ActionSpec, ...]:
        compiled = []
        escrow = self.s.escrow
        assert escrow is not None
        for action in actions:
            if isinstance(action, a.PayAction):
                target = action.target_currency
                compiled.append(
                    ActionSpec(
                        "penalty" if action.penalty else "pay",
                        action.party.name,
                        self.amount(action.amount),
                        None if target is None or target.name == self.currency else target.name,
                    )
                )
            elif isinstance(action, a.RefundAction):
                compiled.append(
                    ActionSpec("refund", escrow.funder.name, self.amount(action.amount))
                )
            else:
                compiled.append(
                    ActionSpec("deliver_title", action.party.name, title=action.title.name)
                )
        return tuple(compiled)

    def clause(self, clause: a.Clause, number: int, group: str | None) -> ClauseSpec:
        label = clause.label.name if clause.label is not None else f"clause#{number}"
        return ClauseSpec(
            label, group, self.condition(clause.condition), self.actions(clause.actions)
        )

    def condition(self, condition: a.Condition) -> Condition:
        if isinstance(condition, a.Pattern):
            return self.pattern(condition)
        kind = "all" if isinstance(condition, a.AllOf) else "any"
        items = sort_canonically([self.condition(i) for i in condition.items])
        if len(items) == 1:
            return items[0]
        return CondSpec(kind, items)

    def pattern(self, pattern: a.Pattern) -> PatternSpec:
        constraints: dict[bytes, ConstraintSpec] = {}
        for constraint in pattern.constraints:
            raw_values = (constraint.value,) if constraint.value is not None else constraint.values
            values = {_key(v): v for v in (self.value(x) for x in raw_values)}
            spec = ConstraintSpec(
                constraint.attr.name, constraint.op, tuple(values[k] for k in sorted(values))
            )
            constraints.setdefault(_key(spec), spec)
        timings: dict[bytes, TimingSpec] = {}
        for timing in pattern.timings:
            if isinstance(timing, a.Within):
                duration = timing.duration
                ref = (
                    Ref(param=duration.name)
                    if isinstance(duration, a.Ident)
                    else Ref(literal=duration.seconds)
                )
                spec_t = TimingSpec("within", duration=ref, anchor=timing.anchor.name)
            else:
                kind = "before" if isinstance(timing, a.Before) else "after"
                spec_t = TimingSpec(kind, at=self.time_ref(timing.at))
            timings.setdefault(canonical_json(spec_t.to_json()), spec_t)
        attester_kind = "oracle" if pattern.attester.name in self.s.oracles else "party"
        return PatternSpec(
            pattern.event_type.name,
            pattern.attester.name,
            attester_kind,
            tuple(constraints[k] for k in sorted(constraints)),
            tuple(timings[k] for k in sorted(timings)),
        )

    def value(self, value: a.Value) -> Value:
        if isinstance(value, a.Ident):
            return Value("param", value.name)
        if isinstance(value, a.TextLit):
            return Value("text", value.value)
        if isinstance(value, a.BoolLit):
            return Value("bool", value.value)
        if isinstance(value, a.TimestampLit):
            assert value.value_us is not None
            return Value("timestamp", value.value_us)
        assert value.value is not None
        return Value("number", canonical_decimal(value.value))
