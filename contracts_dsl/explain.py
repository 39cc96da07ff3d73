"""`explain`: a checked contract in plain English or Chinese, for the people who sign it off.

`explain_source(text, lang)` returns the explanation, or None with the diagnostics when the
contract has errors. Languages: `en`, `zh`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from contracts_dsl import _literals, currencies
from contracts_dsl import ast_nodes as a
from contracts_dsl.checker import Symbols
from contracts_dsl.compiler import check_source
from contracts_dsl.diagnostics import Diagnostic

LANGUAGES: Final = ("en", "zh")

_WORDS: Final = {
    "en": {
        "title": 'Contract "{name}" (language version {version})',
        "params": "Terms fixed when a payment is locked:",
        "oracles": "Who attests events:",
        "single": '"{source}"',
        "quorum": "at least {m} of {members}",
        "escrow": "Escrow: {funder} locks {amount} in escrow.",
        "deadline": "Deadline: at {at}, {actions}. Events observed at or after the deadline "
        "do not count.",
        "no_deadline": "There is no deadline: money not paid out by a clause stays in escrow.",
        "clauses": "Payment terms:",
        "one_of": "Only the first of these to happen counts; it cancels the others:",
        "when": "When {condition}: {actions}.",
        "and": " and ",
        "or": " or ",
        "attests": "{who} attests that {what}",
        "with": " ({constraints})",
        "param_ref": "the term `{name}`",
        "within": ", within {duration} after {anchor}",
        "before": ", before {at}",
        "after": ", at or after {at}",
        "pay": "pay {amount} to {party}",
        "penalty": "pay {amount} to {party} as a penalty",
        "in_currency": " (paid out in {currency} through the bridge)",
        "refund": "refund {amount} to {party}",
        "deliver": "hand title `{title}` to {party}",
        "remainder": "whatever remains in escrow",
        "percent": "{percent} of the escrow",
        "percent_of": "{percent} of {base}",
        "then": ", then ",
        "rounding": "Rounding: percentages are rounded down to the minor unit (0.01 {currency}); "
        "what rounding leaves stays in escrow for `remainder` or the deadline. Each term pays "
        "at most once and never more than the escrow still holds.",
        "kinds": {
            "wallet": "a wallet",
            "money": "an amount in {currency}",
            "text": "a text",
            "number": "a number",
            "timestamp": "a date and time",
            "duration": "a length of time",
            "title": "a digital title (e.g. an electronic bill of lading)",
        },
        "ops": {
            "==": "equals",
            "!=": "is not",
            "<": "is below",
            "<=": "is at most",
            ">": "is above",
            ">=": "is at least",
            "in": "is one of",
            "not in": "is none of",
        },
        "units": {"minute": "minute", "hour": "hour", "day": "day", "week": "week"},
        "label": "[{label}] ",
    },
    "zh": {
        "title": "合约「{name}」（语言版本 {version}）",
        "params": "锁定支付时确定的条款：",
        "oracles": "事件证明方：",
        "single": "「{source}」",
        "quorum": "{members} 中至少 {m} 个",
        "escrow": "托管：{funder} 将 {amount} 存入托管。",
        "deadline": "截止时间：{at} 时，{actions}。截止时间及之后发生的事件不再计入。",
        "no_deadline": "未设截止时间：未被条款支付的资金将一直留在托管中。",
        "clauses": "付款条款：",
        "one_of": "以下条款只有最先发生的一条有效，其余随之取消：",
        "when": "当 {condition} 时：{actions}。",
        "and": "，且",
        "or": "，或",
        "attests": "{who} 证明{what}",
        "with": "（{constraints}）",
        "param_ref": "参数 {name}",
        "within": "，且在{anchor}后 {duration}内",
        "before": "，且早于 {at}",
        "after": "，且不早于 {at}",
        "pay": "向 {party} 支付{amount}",
        "penalty": "向 {party} 支付{amount}作为违约金",
        "in_currency": "（经跨境桥以 {currency} 支付）",
        "refund": "将{amount}退还 {party}",
        "deliver": "将权属凭证 {title} 交付 {party}",
        "remainder": "托管余额",
        "percent": "托管金额的 {percent}",
        "percent_of": "{base}的 {percent}",
        "then": "；然后",
        "rounding": "舍入规则：百分比金额向下取整到最小货币单位（0.01 {currency}），舍入余下的金额"
        "留在托管中，由“余额”条款或截止时间处理。每个条款最多执行一次，支付总额不超过托管中剩余的金额。",
        "kinds": {
            "wallet": "钱包",
            "money": "{currency} 金额",
            "text": "文本",
            "number": "数值",
            "timestamp": "日期时间",
            "duration": "时长",
            "title": "数字权属凭证（如电子提单）",
        },
        "ops": {
            "==": "等于",
            "!=": "不等于",
            "<": "小于",
            "<=": "不超过",
            ">": "大于",
            ">=": "不低于",
            "in": "属于",
            "not in": "不属于",
        },
        "units": {"minute": "分钟", "hour": "小时", "day": "天", "week": "周"},
        "label": "【{label}】",
    },
}


@dataclass(frozen=True, slots=True)
class ExplainResult:
    text: str | None
    diagnostics: tuple[Diagnostic, ...]


def explain_source(text: str, lang: str = "en", path: str = "<input>") -> ExplainResult:
    """Explain a contract in `lang` (`en` or `zh`). Never raises."""
    checked = check_source(text, path)
    if not checked.ok or lang not in LANGUAGES:
        return ExplainResult(None, checked.diagnostics)
    assert checked.parsed.tree is not None
    return ExplainResult(
        _Explainer(lang, checked.symbols).explain(checked.parsed.tree), checked.diagnostics
    )


class _Explainer:
    def __init__(self, lang: str, symbols: Symbols) -> None:
        self.w: dict[str, object] = dict(_WORDS[lang])
        self.lang = lang
        self.s = symbols

    def t(self, key: str, **values: str) -> str:
        template = self.w[key]
        assert isinstance(template, str)
        return template.format(**values)

    def table(self, key: str) -> dict[str, str]:
        table = self.w[key]
        assert isinstance(table, dict)
        return table

    def explain(self, tree: a.ContractAst) -> str:
        header = self.s.header
        assert header is not None
        assert self.s.escrow is not None
        out = [self.t("title", name=header.name.value, version=header.version.raw), ""]
        out.append(self.t("params"))
        kinds = self.table("kinds")
        for decl in self.s.params.values():
            kind = kinds[decl.type.kind].format(
                currency=decl.type.currency.name if decl.type.currency else ""
            )
            out.append(
                f"  - {decl.name.name}: {kind}"
                if self.lang == "en"
                else f"  - {decl.name.name}：{kind}"
            )
        if self.s.oracles:
            out.append(self.t("oracles"))
            for oracle in self.s.oracles.values():
                source = oracle.source
                if isinstance(source, a.SingleSource):
                    described = self.t("single", source=source.source.value)
                else:
                    members = ", ".join(self.t("single", source=m.value) for m in source.members)
                    described = self.t("quorum", m=source.threshold.raw, members=members)
                sep = ": " if self.lang == "en" else "："
                out.append(f"  - {oracle.name.name}{sep}{described}")
        out.append("")
        out.append(
            self.t(
                "escrow", funder=self.s.escrow.funder.name, amount=self.money(self.s.escrow.amount)
            )
        )
        deadline = self.s.deadline
        if deadline is None:
            out.append(self.t("no_deadline"))
        else:
            out.append(
                self.t(
                    "deadline", at=self.time(deadline.at), actions=self.actions(deadline.actions)
                )
            )
        out.append("")
        out.append(self.t("clauses"))
        number = 0
        for item in tree.items:
            if isinstance(item, a.Clause):
                number += 1
                out.append(f"  {number}. {self.clause(item)}")
            elif isinstance(item, a.OneOf):
                number += 1
                out.append(f"  {number}. {self.t('one_of')}")
                for index, clause in enumerate(item.clauses):
                    out.append(f"     {chr(ord('a') + index % 26)}) {self.clause(clause)}")
        out.append("")
        currency = self.s.escrow_currency or ""
        out.append(self.t("rounding", currency=currency))
        return "\n".join(out) + "\n"

    def clause(self, clause: a.Clause) -> str:
        label = self.t("label", label=clause.label.name) if clause.label else ""
        return label + self.t(
            "when", condition=self.condition(clause.condition), actions=self.actions(clause.actions)
        )

    def condition(self, condition: a.Condition) -> str:
        if isinstance(condition, a.Pattern):
            return self.pattern(condition)
        joiner = self.t("and") if isinstance(condition, a.AllOf) else self.t("or")
        parts = [self.condition(item) for item in condition.items]
        inner = joiner.join(parts)
        return (
            inner
            if isinstance(condition, a.AllOf)
            else f"({inner})"
            if self.lang == "en"
            else f"（{inner}）"
        )

    def event_phrase(self, event_type: str) -> str:
        schema = self.s.events.get(event_type)
        if schema is None:
            return event_type
        return schema.en if self.lang == "en" else schema.zh

    def pattern(self, pattern: a.Pattern) -> str:
        what = self.event_phrase(pattern.event_type.name)
        if pattern.constraints:
            what += self.t(
                "with",
                constraints=("; " if self.lang == "en" else "；").join(
                    self.constraint(c) for c in pattern.constraints
                ),
            )
        text = self.t("attests", who=pattern.attester.name, what=what)
        units = self.table("units")
        for timing in pattern.timings:
            if isinstance(timing, a.Within):
                duration = timing.duration
                if isinstance(duration, a.Ident):
                    length = self.t("param_ref", name=duration.name)
                else:
                    unit = units[duration.unit.removesuffix("s")]
                    plural = self.lang == "en" and duration.raw != "1"
                    length = f"{duration.raw} {unit}{'s' if plural else ''}"
                anchor = f"{self.event_phrase(timing.anchor.name)} ({timing.anchor.name})"
                text += self.t("within", duration=length, anchor=anchor)
            elif isinstance(timing, a.Before):
                text += self.t("before", at=self.time(timing.at))
            else:
                text += self.t("after", at=self.time(timing.at))
        return text

    def constraint(self, constraint: a.Constraint) -> str:
        op = self.table("ops")[constraint.op]
        if constraint.value is not None:
            shown = self.value(constraint.value)
        else:
            shown = ", ".join(self.value(v) for v in constraint.values)
            shown = f"[{shown}]"
        return f"{constraint.attr.name} {op} {shown}"

    def value(self, value: a.Value) -> str:
        if isinstance(value, a.Ident):
            return self.t("param_ref", name=value.name)
        if isinstance(value, a.TextLit):
            return _literals.quote_text(value.value)
        if isinstance(value, a.BoolLit):
            return "true" if value.value else "false"
        return value.raw

    def time(self, expr: a.TimeExpr) -> str:
        return self.t("param_ref", name=expr.name) if isinstance(expr, a.Ident) else expr.raw

    def money(self, expr: a.MoneyExpr) -> str:
        if isinstance(expr, a.Ident):
            decl = self.s.params.get(expr.name)
            currency = decl.type.currency.name if decl and decl.type.currency else ""
            return (
                f"{expr.name} ({currency})" if self.lang == "en" else f"{expr.name}（{currency}）"
            )
        assert expr.amount is not None
        minor = currencies.minor_from_decimal(expr.amount, expr.currency.name)
        assert minor is not None
        return currencies.format_minor(minor, expr.currency.name)

    def amount(self, amount: a.Amount) -> str:
        if isinstance(amount, a.RemainderAmount):
            return self.t("remainder")
        if isinstance(amount, a.PercentAmount):
            percent = f"{amount.raw}%"
            if amount.of is None:
                return self.t("percent", percent=percent)
            return self.t("percent_of", percent=percent, base=self.money(amount.of))
        return self.money(amount)

    def actions(self, actions: Sequence[a.Action]) -> str:
        parts = []
        for action in actions:
            if isinstance(action, a.PayAction):
                key = "penalty" if action.penalty else "pay"
                text = self.t(key, amount=self.amount(action.amount), party=action.party.name)
                if action.target_currency is not None:
                    text += self.t("in_currency", currency=action.target_currency.name)
            elif isinstance(action, a.RefundAction):
                assert self.s.escrow is not None
                text = self.t(
                    "refund", amount=self.amount(action.amount), party=self.s.escrow.funder.name
                )
            else:
                text = self.t("deliver", title=action.title.name, party=action.party.name)
            parts.append(text)
        return self.t("then").join(parts)


def explain_clause(symbols: Symbols, clause: a.Clause, lang: str = "en") -> str:
    """One clause in plain language (for the language server's hover). `symbols` are those of a
    check without errors."""
    return _Explainer(lang, symbols).clause(clause)


def explain_terms(symbols: Symbols, lang: str = "en") -> tuple[str, str]:
    """The escrow and the deadline sentences of `explain` (for the language server's hover)."""
    explainer = _Explainer(lang, symbols)
    escrow = symbols.escrow
    assert escrow is not None
    escrow_text = explainer.t(
        "escrow", funder=escrow.funder.name, amount=explainer.money(escrow.amount)
    )
    deadline = symbols.deadline
    if deadline is None:
        return escrow_text, explainer.t("no_deadline")
    return escrow_text, explainer.t(
        "deadline", at=explainer.time(deadline.at), actions=explainer.actions(deadline.actions)
    )
