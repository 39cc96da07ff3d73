"""A compiled contract back to source text, so that `load_compiled` can run the checker on it.

Canonical bytes can be edited by hand (or by a bug) into a contract the checker would refuse:
basis points over 100%, a refund to someone other than the funder, the same title delivered
twice. `load_compiled` therefore re-checks what it loads: it prints the contract as source with
`source_of`, compiles that, and accepts the bytes only when there is no error and the result has
the same hash. Anything this module cannot print in the language raises `CompiledFormError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from contracts_dsl import _literals, currencies
from contracts_dsl.compiled import (
    ActionSpec,
    Amount,
    ClauseSpec,
    CompiledContract,
    Condition,
    CondSpec,
    PatternSpec,
    Ref,
    TimingSpec,
    Value,
)
from contracts_dsl.errors import CompiledFormError


def source_of(contract: CompiledContract) -> str:
    """The contract as source text whose compilation gives back the same canonical form when the
    compiled form is one the compiler makes."""
    return _Printer(contract).contract()


class _Printer:
    def __init__(self, contract: CompiledContract) -> None:
        self.c = contract
        self.currency = contract.escrow.currency

    def contract(self) -> str:
        c = self.c
        lines = [f"contract {_literals.quote_text(c.name)} version {c.language_version}", ""]
        for param in c.params:
            kind = param.kind if param.currency is None else f"{param.kind} {param.currency}"
            lines.append(f"param {param.name} : {kind}")
        for oracle in c.oracles:
            sources = [_literals.quote_text(s) for s in oracle.sources]
            if oracle.threshold == 1 and len(sources) == 1:
                lines.append(f"oracle {oracle.name} = {sources[0]}")
            else:
                members = ", ".join(sources)
                lines.append(f"oracle {oracle.name} = quorum {oracle.threshold} of [{members}]")
        for event in c.events:
            if not event.builtin:
                attrs = ", ".join(f"{name}: {kind}" for name, kind in event.attributes)
                lines.append(f"event {event.event_type}({attrs})")
        lines.append(f"escrow {self.money(c.escrow.amount)} from {c.escrow.funder}")
        if c.deadline is not None:
            at = self.time(c.deadline.at)
            lines.append(f"deadline {at} -> {self.actions(c.deadline.actions)}")
        group: str | None = None
        for number, clause in enumerate(c.clauses, 1):
            if clause.group != group:
                if group is not None:
                    lines.append("}")
                if clause.group is not None:
                    lines.append("one of {")
                group = clause.group
            lines.append(self.clause(clause, number))
        if group is not None:
            lines.append("}")
        return "\n".join(lines) + "\n"

    def clause(self, clause: ClauseSpec, number: int) -> str:
        label = "" if clause.id == f"clause#{number}" else f"clause {clause.id} "
        condition = self.condition(clause.condition, top=True)
        return f"{label}when {condition} -> {self.actions(clause.actions)}"

    def condition(self, condition: Condition, *, top: bool) -> str:
        if isinstance(condition, PatternSpec):
            return self.pattern(condition)
        assert isinstance(condition, CondSpec)
        joiner = " and " if condition.kind == "all" else " or "
        inner = joiner.join(self.condition(item, top=False) for item in condition.items)
        return inner if top else f"({inner})"

    def pattern(self, pattern: PatternSpec) -> str:
        constraints = []
        for constraint in pattern.constraints:
            if constraint.op in ("in", "not in"):
                values = ", ".join(self.value(v) for v in constraint.values)
                constraints.append(f"{constraint.attr} {constraint.op} [{values}]")
            elif len(constraint.values) == 1:
                constraints.append(
                    f"{constraint.attr} {constraint.op} {self.value(constraint.values[0])}"
                )
            else:
                raise CompiledFormError(f"constraint on {constraint.attr!r}: expected one value")
        text = f"{pattern.event_type}({', '.join(constraints)}) by {pattern.attester}"
        for timing in pattern.timings:
            text += " " + self.timing(timing)
        return text

    def timing(self, timing: TimingSpec) -> str:
        if timing.kind == "within":
            assert timing.duration is not None
            return f"within {self.duration(timing.duration)} after {timing.anchor}"
        assert timing.at is not None
        return f"{timing.kind} {self.time(timing.at)}"

    def value(self, value: Value) -> str:
        if value.kind == "param" or value.kind == "number":
            return str(value.value)
        if value.kind == "text":
            return _literals.quote_text(str(value.value))
        if value.kind == "bool":
            return "true" if value.value is True else "false"
        if isinstance(value.value, int) and not isinstance(value.value, bool):
            return _literals.format_us(value.value)
        raise CompiledFormError(f"a timestamp value must be an integer, not {value.value!r}")

    def actions(self, actions: Sequence[ActionSpec]) -> str:
        if not actions:
            raise CompiledFormError("an action list is empty")
        return " and ".join(self.action(action) for action in actions)

    def action(self, action: ActionSpec) -> str:
        if action.kind == "deliver_title":
            return f"deliver title {action.title} to {action.party}"
        if action.amount is None:
            raise CompiledFormError(f"a {action.kind} action has no amount")
        amount = self.amount(action.amount)
        if action.kind == "refund":
            return f"refund {amount} to {action.party}"
        text = f"pay {amount} to {action.party}"
        if action.target_currency is not None:
            text += f" in {action.target_currency}"
        if action.kind == "penalty":
            text += " as penalty"
        return text

    def amount(self, amount: Amount) -> str:
        if amount.kind == "remainder":
            return "remainder"
        if amount.kind == "percent":
            percent = format(Decimal(amount.bp).scaleb(-2).normalize(), "f")
            return f"{percent}%" + ("" if amount.base is None else f" of {self.money(amount.base)}")
        if amount.money is None:
            raise CompiledFormError("a fixed amount has no money")
        return self.money(amount.money)

    def money(self, ref: Ref) -> str:
        if ref.param is not None:
            return ref.param
        if ref.literal is None:
            raise CompiledFormError("an amount is neither a literal nor a parameter")
        return currencies.format_minor(ref.literal, self.currency)

    def time(self, ref: Ref) -> str:
        if ref.param is not None:
            return ref.param
        if ref.literal is None:
            raise CompiledFormError("a time is neither a literal nor a parameter")
        return _literals.format_us(ref.literal)

    def duration(self, ref: Ref) -> str:
        if ref.param is not None:
            return ref.param
        if ref.literal is None or ref.literal % 60:
            raise CompiledFormError(f"a duration of {ref.literal!r} seconds is not whole minutes")
        return f"{ref.literal // 60} minutes"
