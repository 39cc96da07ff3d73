"""The formatter: one canonical layout for a contract, comments kept.

`format_source(text)` returns the formatted text, or None with the diagnostics when the source
has syntax errors (a file that does not parse is never rewritten). Formatting is idempotent and
never changes the meaning (the compiled hash), which the property tests check.

Layout: one statement per line; runs of `param` (and of `oracle`) lines align their `:` (`=`);
a clause puts each further `and`/`or` part of its condition on its own line indented by two,
then `-> action`, then each further action on its own line as `   and action`; `one of` blocks
indent their clauses by two. Blank lines: one between statements of different kinds, around
every clause, and wherever the source had at least one. Own-line comments stay before the
line that followed them; end-of-line comments stay at the end of their line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contracts_dsl import _literals, limits
from contracts_dsl import ast_nodes as a
from contracts_dsl.diagnostics import Diagnostic, make
from contracts_dsl.parser import parse
from contracts_dsl.source import SourceFile


@dataclass(frozen=True, slots=True)
class FormatResult:
    text: str | None
    diagnostics: tuple[Diagnostic, ...]
    changed: bool


@dataclass(slots=True)
class _Line:
    text: str
    anchor: int  # source offset of the first token printed on this line (-1: blank line)
    indent: int = 0
    comment: str = ""


def format_source(text: str, path: str = "<input>") -> FormatResult:
    """Format a contract. Never raises; returns None as `text` when it does not parse."""
    parsed = parse(text, path)
    if parsed.tree is None or any(
        d.is_error and d.code in _SYNTAX_CODES for d in parsed.diagnostics
    ):
        return FormatResult(None, parsed.diagnostics, False)
    formatted = format_tree(parsed.tree, parsed.source)
    size = len(formatted.encode("utf-8", errors="surrogatepass"))
    if size > limits.SOURCE_BYTES_MAX:
        # Never turn a file that fits into one that does not: leave it as it is.
        source = parsed.source
        too_large = make(
            "CD006",
            f"formatted, the source would be {size} bytes; the limit is "
            f"{limits.SOURCE_BYTES_MAX} bytes, so it is left as it is",
            source.span(0, 0),
            source,
            label="formatting would make the file too large",
            help="split the contract or shorten it before formatting",
        )
        return FormatResult(None, (*parsed.diagnostics, too_large), False)
    return FormatResult(formatted, parsed.diagnostics, formatted != text)


_SYNTAX_CODES = frozenset({"CD001", "CD002", "CD003", "CD006", "CD007", "CD009"})


def _section(item: a.Item) -> str:
    if isinstance(item, a.EscrowDecl | a.DeadlineDecl):
        return "money"
    if isinstance(item, a.Clause | a.OneOf):
        return "clause"
    return type(item).__name__


def format_tree(tree: a.ContractAst, source: SourceFile) -> str:
    lines: list[_Line] = []
    previous: a.Item | None = None
    items = list(tree.items)
    index = 0
    while index < len(items):
        item = items[index]
        if previous is not None:
            gap = source.text[previous.span.end : item.span.start]
            blank = _has_blank_line(gap) or _section(previous) != _section(item)
            if _section(item) == "clause":
                blank = True
            if blank:
                lines.append(_Line("", -1))
        if isinstance(item, a.ParamDecl | a.OracleDecl):
            run = [item]
            while index + 1 < len(items) and type(items[index + 1]) is type(item):
                following = items[index + 1]
                if _has_blank_line(source.text[run[-1].span.end : following.span.start]):
                    break
                assert isinstance(following, a.ParamDecl | a.OracleDecl)
                run.append(following)
                index += 1
            width = max(len(x.name.name) for x in run)
            for decl in run:
                lines.append(_Line(_declaration(decl, width), decl.span.start))
            previous = run[-1]
        else:
            lines.extend(_item_lines(item))
            previous = item
        index += 1
    _place_comments(lines, tree.comments, source)
    out = []
    for line in lines:
        text = " " * line.indent + line.text if line.text else ""
        if line.comment:
            text = f"{text}  {line.comment}" if text else line.comment
        out.append(text.rstrip())
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def _has_blank_line(gap: str) -> bool:
    lines = gap.split("\n")
    return any(not line.strip() for line in lines[1:-1])


def _place_comments(lines: list[_Line], comments: Sequence[a.Comment], source: SourceFile) -> None:
    code = [i for i, line in enumerate(lines) if line.anchor >= 0]
    inserts: dict[int, list[_Line]] = {}
    trailing_end: list[str] = []
    for comment in comments:
        line_start = source.line_start(comment.span.line)
        own_line = not source.text[line_start : comment.span.start].strip()
        text = comment.text.rstrip()
        if own_line:
            target = next((i for i in code if lines[i].anchor > comment.span.start), None)
            if target is None:
                trailing_end.append(text)
            else:
                host = lines[target]
                indent = host.indent + len(host.text) - len(host.text.lstrip())
                inserts.setdefault(target, []).append(_Line(text, -2, indent))
        else:
            candidates = [i for i in code if lines[i].anchor <= comment.span.start]
            host = lines[candidates[-1]] if candidates else lines[code[0]]
            host.comment = f"{host.comment} {text}" if host.comment else text
    for target in sorted(inserts, reverse=True):
        lines[target:target] = [_Line(c.text, -2, c.indent) for c in inserts[target]]
    if trailing_end:
        if lines:
            lines.append(_Line("", -1))
        lines.extend(_Line(text, -2) for text in trailing_end)


def _declaration(decl: a.ParamDecl | a.OracleDecl, width: int) -> str:
    name = decl.name.name.ljust(width)
    if isinstance(decl, a.ParamDecl):
        return f"param {name} : {_param_type(decl.type)}"
    source = decl.source
    if isinstance(source, a.SingleSource):
        return f"oracle {name} = {_text(source.source)}"
    members = ", ".join(_text(m) for m in source.members)
    return f"oracle {name} = quorum {source.threshold.raw} of [{members}]"


def _param_type(param_type: a.ParamType) -> str:
    if param_type.currency is not None:
        return f"{param_type.kind} {param_type.currency.name}"
    return param_type.kind


def _text(lit: a.TextLit) -> str:
    return _literals.quote_text(lit.value)


def _item_lines(item: a.Item) -> list[_Line]:
    if isinstance(item, a.Header):
        return [_Line(f"contract {_text(item.name)} version {item.version.raw}", item.span.start)]
    if isinstance(item, a.EventDecl):
        attrs = ", ".join(f"{x.name.name}: {x.type}" for x in item.attributes)
        return [_Line(f"event {item.event_type.name}({attrs})", item.span.start)]
    if isinstance(item, a.EscrowDecl):
        return [_Line(f"escrow {_money(item.amount)} from {item.funder.name}", item.span.start)]
    if isinstance(item, a.DeadlineDecl):
        head = _Line(f"deadline {_time(item.at)}", item.span.start)
        return _with_actions([head], item.actions, indent=0, inline=True)
    if isinstance(item, a.Clause):
        return _clause_lines(item, 0)
    assert isinstance(item, a.OneOf)
    lines = [_Line("one of {", item.span.start)]
    for position, clause in enumerate(item.clauses):
        if position > 0:
            lines.append(_Line("", -1))
        lines.extend(_clause_lines(clause, 2))
    lines.append(_Line("}", item.span.end - 1))
    return lines


def _clause_lines(clause: a.Clause, indent: int) -> list[_Line]:
    lines: list[_Line] = []
    if clause.label is not None:
        lines.append(_Line(f"clause {clause.label.name}", clause.span.start, indent))
    condition = clause.condition
    start = clause.condition.span.start if clause.label is not None else clause.span.start
    if isinstance(condition, a.Pattern):
        lines.append(_Line(f"when {_condition(condition, top=True)}", start, indent))
    else:
        joiner = "and" if isinstance(condition, a.AllOf) else "or"
        first, *rest = condition.items
        lines.append(_Line(f"when {_condition(first, top=False)}", start, indent))
        for part in rest:
            lines.append(
                _Line(f"  {joiner} {_condition(part, top=False)}", part.span.start, indent)
            )
    return _with_actions(lines, clause.actions, indent=indent, inline=False)


def _with_actions(
    lines: list[_Line], actions: Sequence[a.Action], *, indent: int, inline: bool
) -> list[_Line]:
    first, *rest = actions
    if inline:
        lines[-1].text += f" -> {_action(first)}"
    else:
        lines.append(_Line(f"  -> {_action(first)}", first.span.start, indent))
    for action in rest:
        lines.append(_Line(f"     and {_action(action)}", action.span.start, indent))
    return lines


def _condition(condition: a.Condition, *, top: bool) -> str:
    if isinstance(condition, a.Pattern):
        return _pattern(condition)
    joiner = " and " if isinstance(condition, a.AllOf) else " or "
    inner = joiner.join(_condition(item, top=False) for item in condition.items)
    return inner if top else f"({inner})"


def _pattern(pattern: a.Pattern) -> str:
    constraints = ", ".join(_constraint(c) for c in pattern.constraints)
    text = f"{pattern.event_type.name}({constraints}) by {pattern.attester.name}"
    for timing in pattern.timings:
        text += " " + _timing(timing)
    return text


def _constraint(constraint: a.Constraint) -> str:
    if constraint.op in ("in", "not in"):
        values = ", ".join(_value(v) for v in constraint.values)
        return f"{constraint.attr.name} {constraint.op} [{values}]"
    assert constraint.value is not None
    return f"{constraint.attr.name} {constraint.op} {_value(constraint.value)}"


def _value(value: a.Value) -> str:
    if isinstance(value, a.Ident):
        return value.name
    if isinstance(value, a.TextLit):
        return _text(value)
    if isinstance(value, a.BoolLit):
        return "true" if value.value else "false"
    return value.raw


def _timing(timing: a.Timing) -> str:
    if isinstance(timing, a.Within):
        duration = timing.duration
        length = (
            duration.name if isinstance(duration, a.Ident) else f"{duration.raw} {duration.unit}"
        )
        return f"within {length} after {timing.anchor.name}"
    word = "before" if isinstance(timing, a.Before) else "after"
    return f"{word} {_time(timing.at)}"


def _time(expr: a.TimeExpr) -> str:
    return expr.name if isinstance(expr, a.Ident) else expr.raw


def _money(expr: a.MoneyExpr) -> str:
    return expr.name if isinstance(expr, a.Ident) else f"{expr.raw} {expr.currency.name}"


def _amount(amount: a.Amount) -> str:
    if isinstance(amount, a.RemainderAmount):
        return "remainder"
    if isinstance(amount, a.PercentAmount):
        of = f" of {_money(amount.of)}" if amount.of is not None else ""
        return f"{amount.raw}%{of}"
    return _money(amount)


def _action(action: a.Action) -> str:
    if isinstance(action, a.PayAction):
        text = f"pay {_amount(action.amount)} to {action.party.name}"
        if action.target_currency is not None:
            text += f" in {action.target_currency.name}"
        if action.penalty:
            text += " as penalty"
        return text
    if isinstance(action, a.RefundAction):
        text = f"refund {_amount(action.amount)}"
        if action.party is not None:
            text += f" to {action.party.name}"
        return text
    return f"deliver title {action.title.name} to {action.party.name}"
