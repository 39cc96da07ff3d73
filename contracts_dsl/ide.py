"""Editor features over one contract text: symbols, hover, definition, references, completion,
quick fixes and the amounts a clause pays for example parameters.

Everything here works on character offsets into the text (code points, as `SourceFile` counts
them); `contracts_dsl.lsp` converts to and from the positions of the Language Server Protocol.
Nothing here raises on bad input: a text with errors gives what can be known about it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Final

from contracts_dsl import ast_nodes as a
from contracts_dsl import currencies
from contracts_dsl.checker import CheckResult
from contracts_dsl.compiled import ActionSpec, CompiledContract
from contracts_dsl.compiler import check_source, compile_checked
from contracts_dsl.diagnostics import Diagnostic
from contracts_dsl.events import BUILTIN_EVENTS
from contracts_dsl.explain import explain_clause, explain_terms
from contracts_dsl.params import BoundParams, bind_params, escrow_minor, requested_minor
from contracts_dsl.parser import keywords
from contracts_dsl.source import SourceFile, Span

KIND_NAME: Final = "name"
"""A parameter or an oracle (they share one namespace)."""
KIND_EVENT: Final = "event"
KIND_ATTRIBUTE: Final = "attribute"
KIND_CLAUSE: Final = "clause"

PARAM_TYPES: Final = ("wallet", "money", "text", "number", "timestamp", "duration", "title")
STATEMENTS: Final = ("param", "oracle", "event", "escrow", "deadline", "clause", "when", "one of")

_KIND_WORDS: Final = {
    "wallet": "a party's wallet: receives money and titles, can attest events (`by buyer`)",
    "money": "an amount in {currency}",
    "text": "a text, compared with text attributes",
    "number": "an exact decimal, compared with number attributes",
    "timestamp": "an instant: a deadline or a `before`/`after` bound",
    "duration": "a length of time for `within`",
    "title": "a digital title (eBL, warehouse receipt) for `deliver title`",
}


@dataclass(frozen=True, slots=True)
class Occurrence:
    """A name in the text: what it names (`kind`, `key`), where, and whether it declares it.
    `key` is the name; for attributes `<event type>:<attribute>`."""

    kind: str
    key: str
    span: Span
    definition: bool


@dataclass(frozen=True, slots=True)
class Completion:
    label: str
    kind: str  # "name" | "event" | "attribute" | "keyword" | "currency" | "type" | "value"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Symbol:
    """An entry of the document outline: `kind` is param, oracle, event, escrow, deadline,
    clause or one_of; `name_span` is what to select."""

    name: str
    kind: str
    detail: str
    span: Span
    name_span: Span
    children: tuple[Symbol, ...] = ()


@dataclass(frozen=True, slots=True)
class Hint:
    """Text shown after `offset` (an inlay hint)."""

    offset: int
    label: str
    tooltip: str = ""


_DID_YOU_MEAN: Final = re.compile(r"did you mean `([^`]+)`\?")
_WRITE_AS: Final = re.compile(r'^write it as (".*")$')


def quick_fix(diagnostic: Diagnostic) -> tuple[str, str] | None:
    """The replacement text for a diagnostic's span, and a title, when its help is a fix."""
    help_text = diagnostic.help or ""
    match = _DID_YOU_MEAN.search(help_text)
    if match is not None:
        return match.group(1), f"Replace with `{match.group(1)}`"
    if diagnostic.code == "CD001" and help_text == "replace it with a plain space":
        return " ", "Replace with a plain space"
    if diagnostic.code == "CD001" and help_text.startswith("remove it"):
        return "", "Remove the character"
    match = _WRITE_AS.match(help_text)
    if match is not None and diagnostic.code == "CD009":
        return match.group(1), f"Replace with {match.group(1)} (NFC)"
    return None


class Analysis:
    """One version of one contract text, checked once; features are computed on demand."""

    def __init__(self, text: str, path: str = "<input>") -> None:
        self.checked: CheckResult = check_source(text, path)
        self.source: SourceFile = self.checked.parsed.source
        self.tree: a.ContractAst | None = self.checked.parsed.tree

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        return self.checked.diagnostics

    @cached_property
    def contract(self) -> CompiledContract | None:
        """The compiled form when the contract has no errors."""
        if not self.checked.ok or self.tree is None:
            return None
        return compile_checked(self.tree, self.checked.symbols)

    # -- names ----------------------------------------------------------------------------------

    @cached_property
    def occurrences(self) -> tuple[Occurrence, ...]:
        if self.tree is None:
            return ()
        return tuple(_Indexer().run(self.tree))

    def at(self, offset: int) -> Occurrence | None:
        """The name at (or just before) an offset."""
        for occurrence in self.occurrences:
            if occurrence.span.start <= offset <= occurrence.span.end:
                return occurrence
        return None

    def definitions(self, occurrence: Occurrence) -> list[Span]:
        return [
            o.span
            for o in self.occurrences
            if o.definition and (o.kind, o.key) == (occurrence.kind, occurrence.key)
        ]

    def references(self, occurrence: Occurrence, include_declaration: bool) -> list[Span]:
        return [
            o.span
            for o in self.occurrences
            if (o.kind, o.key) == (occurrence.kind, occurrence.key)
            and (include_declaration or not o.definition)
        ]

    # -- outline --------------------------------------------------------------------------------

    def outline(self) -> list[Symbol]:
        """The declarations and clauses, in source order (clause ids as the compiler gives them:
        the label, or `clause#N`)."""
        if self.tree is None:
            return []
        found: list[Symbol] = []
        number = 0
        text = self.source.text

        def clause_symbol(clause: a.Clause) -> Symbol:
            name = clause.label.name if clause.label else f"clause#{number}"
            where = clause.label.span if clause.label else clause.span
            first = text[clause.condition.span.start : clause.condition.span.end]
            return Symbol(name, "clause", " ".join(first.split())[:80], clause.span, where)

        for item in self.tree.items:
            if isinstance(item, a.ParamDecl):
                found.append(
                    Symbol(
                        item.name.name,
                        "param",
                        text[item.type.span.start : item.type.span.end],
                        item.span,
                        item.name.span,
                    )
                )
            elif isinstance(item, a.OracleDecl):
                detail = text[item.source.span.start : item.source.span.end]
                found.append(Symbol(item.name.name, "oracle", detail, item.span, item.name.span))
            elif isinstance(item, a.EventDecl):
                attrs = ", ".join(f"{x.name.name}: {x.type}" for x in item.attributes)
                found.append(
                    Symbol(item.event_type.name, "event", attrs, item.span, item.event_type.span)
                )
            elif isinstance(item, a.EscrowDecl | a.DeadlineDecl):
                kind = "escrow" if isinstance(item, a.EscrowDecl) else "deadline"
                detail = " ".join(text[item.span.start : item.span.end].split()[1:])[:80]
                found.append(Symbol(kind, kind, detail, item.span, item.span))
            elif isinstance(item, a.Clause):
                number += 1
                found.append(clause_symbol(item))
            elif isinstance(item, a.OneOf):
                children = []
                for clause in item.clauses:
                    number += 1
                    children.append(clause_symbol(clause))
                head = self.source.span(item.span.start, item.span.start + len("one of"))
                found.append(Symbol("one of", "one_of", "", item.span, head, tuple(children)))
        return found

    # -- hover ----------------------------------------------------------------------------------

    def hover(self, offset: int, example: BoundParams | None = None) -> tuple[str, Span] | None:
        """Markdown for what is at `offset`, and the span it is about."""
        occurrence = self.at(offset)
        if occurrence is not None:
            text = self._hover_name(occurrence, example)
            if text is not None:
                return text, occurrence.span
        return self._hover_statement(offset, example)

    def _hover_name(self, occurrence: Occurrence, example: BoundParams | None) -> str | None:
        symbols = self.checked.symbols
        if occurrence.kind == KIND_NAME:
            param = symbols.params.get(occurrence.key)
            if param is not None:
                currency = param.type.currency.name if param.type.currency else ""
                shown = f"{param.type.kind} {currency}".strip()
                lines = [
                    _code(f"param {occurrence.key} : {shown}"),
                    _KIND_WORDS[param.type.kind].format(currency=currency),
                ]
                if example is not None and occurrence.key in example.values:
                    value = example.to_json().get(occurrence.key)
                    if isinstance(value, dict):  # money: {"currency", "amount_minor"}
                        minor, code = value.get("amount_minor"), value.get("currency")
                        if isinstance(minor, int) and isinstance(code, str):
                            value = currencies.format_minor(minor, code)
                    lines.append(f"Example value (spec file): `{value}`")
                return "\n\n".join(lines)
            oracle = symbols.oracles.get(occurrence.key)
            if oracle is not None:
                source = oracle.source
                if isinstance(source, a.SingleSource):
                    described = f'one source, "{source.source.value}"'
                else:
                    members = ", ".join(f'"{m.value}"' for m in source.members)
                    described = f"a quorum of {source.threshold.raw} of {members}"
                attests = sorted(
                    {
                        p.event_type.name
                        for p in self._patterns()
                        if p.attester.name == occurrence.key
                    }
                )
                lines = [_code(self.source.text[oracle.span.start : oracle.span.end]), described]
                if attests:
                    lines.append("Attests: " + ", ".join(f"`{e}`" for e in attests))
                return "\n\n".join(lines)
            return None
        if occurrence.kind == KIND_EVENT:
            schema = symbols.events.get(occurrence.key) or BUILTIN_EVENTS.get(occurrence.key)
            if schema is None:
                return None
            attrs = ", ".join(f"{name}: {kind}" for name, kind in schema.attributes.items())
            origin = "built-in event type" if schema.builtin else "declared in this contract"
            attesters = sorted(
                {p.attester.name for p in self._patterns() if p.event_type.name == occurrence.key}
            )
            lines = [_code(f"event {occurrence.key}({attrs})"), f"{origin}: {schema.en}"]
            if attesters:
                lines.append("Attested by: " + ", ".join(f"`{x}`" for x in attesters))
            return "\n\n".join(lines)
        if occurrence.kind == KIND_ATTRIBUTE:
            event_type, _, attr = occurrence.key.partition(":")
            schema = symbols.events.get(event_type) or BUILTIN_EVENTS.get(event_type)
            kind = schema.attributes.get(attr) if schema is not None else None
            if kind is None:
                return None
            return _code(f"{attr}: {kind}") + f"\n\nattribute of `{event_type}`"
        clause = self._clause_labelled(occurrence.key)
        if clause is None:
            return None
        return self._explain_clause(clause, example)

    def _hover_statement(self, offset: int, example: BoundParams | None) -> tuple[str, Span] | None:
        if self.tree is None or not self.checked.ok:
            return None
        escrow_text, deadline_text = explain_terms(self.checked.symbols)
        for item in self.tree.items:
            if not item.span.start <= offset <= item.span.end:
                continue
            if isinstance(item, a.EscrowDecl):
                extra = ""
                if example is not None and self.contract is not None:
                    minor = escrow_minor(self.contract, example)
                    extra = f"\n\nWith the spec's example parameters: {_money(minor, self)}"
                return escrow_text + extra, item.span
            if isinstance(item, a.DeadlineDecl):
                return deadline_text, item.span
            clauses = [item] if isinstance(item, a.Clause) else []
            if isinstance(item, a.OneOf):
                clauses = [c for c in item.clauses if c.span.start <= offset <= c.span.end]
            for clause in clauses:
                explained = self._explain_clause(clause, example)
                return (explained, clause.span) if explained is not None else None
        return None

    def _explain_clause(self, clause: a.Clause, example: BoundParams | None) -> str | None:
        if not self.checked.ok:
            return None
        text = explain_clause(self.checked.symbols, clause)
        amounts = [hint.tooltip for hint in self.inlay_hints(example) if _inside(hint, clause)]
        if amounts:
            text += "\n\nWith the spec's example parameters: " + "; ".join(amounts)
        return text

    def _clause_labelled(self, label: str) -> a.Clause | None:
        if self.tree is None:
            return None
        for clause, _ in a.all_clauses(self.tree):
            if clause.label is not None and clause.label.name == label:
                return clause
        return None

    def _patterns(self) -> list[a.Pattern]:
        if self.tree is None:
            return []
        return [p for c, _ in a.all_clauses(self.tree) for p in a.iter_patterns(c.condition)]

    # -- completion -----------------------------------------------------------------------------

    def completions(self, offset: int) -> list[Completion]:
        """What may be typed at `offset`, from the words before it."""
        text = self.source.text
        line_start = text.rfind("\n", 0, offset) + 1
        before = text[line_start:offset]
        typed = re.search(r"[A-Za-z0-9_.]*$", before)
        prefix_start = offset - len(typed.group(0)) if typed else offset
        head = text[line_start:prefix_start]
        words = re.findall(r"[A-Za-z_][A-Za-z0-9_.]*|[^\sA-Za-z0-9_]+", head)
        previous = words[-1] if words else ""
        symbols = self.checked.symbols
        params = symbols.params
        names_of = [
            Completion(n, KIND_NAME, f"param : {d.type.kind}") for n, d in sorted(params.items())
        ]

        def params_of(*kinds: str) -> list[Completion]:
            return [c for c in names_of if params[c.label].type.kind in kinds]

        oracles = [Completion(n, KIND_NAME, "oracle") for n in sorted(symbols.oracles)]
        events = [
            Completion(name, KIND_EVENT, "event: " + ", ".join(schema.attributes))
            for name, schema in sorted({**BUILTIN_EVENTS, **symbols.events}.items())
        ]
        open_pattern = _open_pattern(text, line_start, offset)
        if open_pattern is not None:
            event_type, after_operator = open_pattern
            schema = symbols.events.get(event_type) or BUILTIN_EVENTS.get(event_type)
            if after_operator is not None and schema is not None:
                kind = schema.attributes.get(after_operator)
                if kind == "bool":
                    return [Completion("true", "value"), Completion("false", "value")]
                if kind == "text":
                    return params_of("text", "wallet", "title")
                if kind in ("number", "timestamp"):
                    return params_of(kind)
                return names_of
            if schema is not None and previous in ("(", ","):
                return [
                    Completion(name, KIND_ATTRIBUTE, f"{kind} attribute of {event_type}")
                    for name, kind in schema.attributes.items()
                ]
        if previous == "by":
            return oracles + params_of("wallet")
        if previous in ("to", "from"):
            return params_of("wallet")
        if previous == "title":
            return params_of("title")
        if previous in ("deadline", "before") or (previous == "after" and "within" not in head):
            return params_of("timestamp")
        if previous == "after":
            return events
        if previous == "within":
            return params_of("duration")
        if previous in ("escrow", "of"):
            return params_of("money")
        if previous in ("money",) or (previous == "in" and "pay" in head):
            return [Completion(c, "currency", "currency") for c in currencies.CURRENCY_CODES]
        if previous == ":" and head.lstrip().startswith("param"):
            return [Completion(t, "type", "parameter type") for t in PARAM_TYPES]
        if previous in ("when", "and", "or", "("):
            return events
        if previous in ("pay", "refund"):
            return [Completion("remainder", "keyword"), *params_of("money")]
        if previous == "deliver":
            return [Completion("title", "keyword")]
        if not head.strip():
            return [Completion(s, "keyword", "statement") for s in STATEMENTS]
        words_known = sorted(keywords())
        return [*names_of, *oracles, *events, *(Completion(k, "keyword") for k in words_known)]

    # -- amounts --------------------------------------------------------------------------------

    def inlay_hints(self, example: BoundParams | None) -> list[Hint]:
        """After each money amount, what it pays with the example parameters (`= 375.00 CNY`).
        `remainder` depends on what was paid before it and is not shown."""
        contract = self.contract
        if contract is None or example is None or self.tree is None:
            return []
        if example.contract_hash != contract.hash:
            return []
        funded = escrow_minor(contract, example)
        hints: list[Hint] = []
        lists: list[tuple[Sequence[a.Action], Sequence[ActionSpec]]] = []
        for (clause, _), clause_spec in zip(
            a.all_clauses(self.tree), contract.clauses, strict=True
        ):
            lists.append((clause.actions, clause_spec.actions))
        deadline = self.checked.symbols.deadline
        if deadline is not None and contract.deadline is not None:
            lists.append((deadline.actions, contract.deadline.actions))
        for actions, specs in lists:
            for action, spec in zip(actions, specs, strict=True):
                if isinstance(action, a.DeliverAction) or spec.amount is None:
                    continue
                if isinstance(action.amount, a.RemainderAmount):
                    continue
                minor = requested_minor(spec, example, funded, funded)
                who = action.party.name if action.party is not None else spec.party
                shown = _money(minor, self)
                hints.append(Hint(action.amount.span.end, f" = {shown}", f"{shown} to `{who}`"))
        return hints

    def bind_example(self, values: Mapping[str, object] | None) -> BoundParams | None:
        """The spec file's example parameters bound to this contract (None when they do not
        bind or the contract has errors)."""
        if values is None or self.contract is None:
            return None
        return bind_params(self.contract, dict(values)).params


def _money(minor: int, analysis: Analysis) -> str:
    currency = analysis.checked.symbols.escrow_currency or ""
    return currencies.format_minor(minor, currency)


def _inside(hint: Hint, clause: a.Clause) -> bool:
    return clause.span.start <= hint.offset <= clause.span.end


def _code(text: str) -> str:
    return f"```condpay\n{text}\n```"


_PATTERN_OPEN: Final = re.compile(r"([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)\(([^()]*)$")
_AFTER_OPERATOR: Final = re.compile(
    r"([a-z_][a-z0-9_]*)\s*(?:==|!=|<=|>=|<|>|in\s*\[|not\s+in\s*\[)[^,]*$"
)


def _open_pattern(text: str, line_start: int, offset: int) -> tuple[str, str | None] | None:
    """Inside `event.type(...` on this line: the event type, and the attribute whose value is
    being typed (after its operator) or None."""
    match = _PATTERN_OPEN.search(text[line_start:offset])
    if match is None:
        return None
    inside = match.group(2)
    last = inside.rsplit(",", 1)[-1]
    operator = _AFTER_OPERATOR.search(last)
    return match.group(1), operator.group(1) if operator else None


class _Indexer:
    """Every name occurrence of a tree, in source order."""

    def __init__(self) -> None:
        self.found: list[Occurrence] = []

    def add(self, kind: str, ident: a.Ident, definition: bool = False, key: str = "") -> None:
        self.found.append(Occurrence(kind, key or ident.name, ident.span, definition))

    def run(self, tree: a.ContractAst) -> list[Occurrence]:
        for item in tree.items:
            if isinstance(item, a.ParamDecl | a.OracleDecl):
                self.add(KIND_NAME, item.name, definition=True)
            elif isinstance(item, a.EventDecl):
                self.add(KIND_EVENT, item.event_type, definition=True)
                for attr in item.attributes:
                    key = f"{item.event_type.name}:{attr.name.name}"
                    self.add(KIND_ATTRIBUTE, attr.name, definition=True, key=key)
            elif isinstance(item, a.EscrowDecl):
                self.money(item.amount)
                self.add(KIND_NAME, item.funder)
            elif isinstance(item, a.DeadlineDecl):
                self.time(item.at)
                self.actions(item.actions)
            elif isinstance(item, a.Clause):
                self.clause(item)
            elif isinstance(item, a.OneOf):
                for clause in item.clauses:
                    self.clause(clause)
        self.found.sort(key=lambda o: o.span.start)
        return self.found

    def clause(self, clause: a.Clause) -> None:
        if clause.label is not None:
            self.add(KIND_CLAUSE, clause.label, definition=True)
        for pattern in a.iter_patterns(clause.condition):
            event = pattern.event_type.name
            self.add(KIND_EVENT, pattern.event_type)
            for constraint in pattern.constraints:
                self.add(KIND_ATTRIBUTE, constraint.attr, key=f"{event}:{constraint.attr.name}")
                values = (constraint.value,) if constraint.value is not None else constraint.values
                for value in values:
                    if isinstance(value, a.Ident):
                        self.add(KIND_NAME, value)
            self.add(KIND_NAME, pattern.attester)
            for timing in pattern.timings:
                if isinstance(timing, a.Within):
                    if isinstance(timing.duration, a.Ident):
                        self.add(KIND_NAME, timing.duration)
                    self.add(KIND_EVENT, timing.anchor)
                else:
                    self.time(timing.at)
        self.actions(clause.actions)

    def actions(self, actions: Sequence[a.Action]) -> None:
        for action in actions:
            if isinstance(action, a.DeliverAction):
                self.add(KIND_NAME, action.title)
                self.add(KIND_NAME, action.party)
                continue
            amount = action.amount
            if isinstance(amount, a.Ident | a.MoneyLit):
                self.money(amount)
            elif isinstance(amount, a.PercentAmount) and amount.of is not None:
                self.money(amount.of)
            if action.party is not None:
                self.add(KIND_NAME, action.party)

    def money(self, expr: a.MoneyExpr) -> None:
        if isinstance(expr, a.Ident):
            self.add(KIND_NAME, expr)

    def time(self, expr: a.TimeExpr) -> None:
        if isinstance(expr, a.Ident):
            self.add(KIND_NAME, expr)
