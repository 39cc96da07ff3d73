"""condpay's contract language: grammar, parser, checker, compiler, evaluator and tools.

The pipeline: source text -> `parse` (typed AST with spans) -> `check` (diagnostics) ->
`compile_source` (canonical `CompiledContract` with a content hash) -> `bind_params` (typed
parameter values) -> `evaluate` (pure: legs now due and the new `ContractState`). See docs/dsl.md.

This package imports no other condpay package.

The names below load their module on first use (PEP 562), so that a program that needs only the
compiled form and the evaluator (the settlement server) does not load the parser, its grammar
library (lark) or the checker and tools.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contracts_dsl.checker import CheckResult, check
    from contracts_dsl.compiled import (
        ActionSpec,
        ClauseSpec,
        CompiledContract,
        EventSpec,
        OracleSpec,
        ParamSpec,
        load_compiled,
    )
    from contracts_dsl.compiler import CompileResult, check_source, compile_source
    from contracts_dsl.currencies import CURRENCY_CODES, CURRENCY_EXPONENTS
    from contracts_dsl.diagnostics import CODES, CodeInfo, Diagnostic, Severity, render, render_all
    from contracts_dsl.errors import CompiledFormError, DslError, SpecFormError, StateFormError
    from contracts_dsl.evaluator import (
        ContractState,
        Escrow,
        Evaluation,
        Event,
        EventReport,
        FiredClause,
        Leg,
        evaluate,
        parse_event,
    )
    from contracts_dsl.events import BUILTIN_EVENTS, EventSchema
    from contracts_dsl.explain import ExplainResult, explain_source
    from contracts_dsl.formatter import FormatResult, format_source
    from contracts_dsl.inputs import InputError
    from contracts_dsl.params import (
        BoundParams,
        Money,
        ParamBinding,
        bind_params,
        deadline_us,
        escrow_minor,
    )
    from contracts_dsl.parser import ParseResult, parse
    from contracts_dsl.source import SourceFile, Span
    from contracts_dsl.spec import SpecOutcome, run_spec

# Loaded now: the function `simulate` shares its name with its module, and a module imported
# later would otherwise take the package attribute `simulate`. (It needs only the compiled form,
# the evaluator and the parameters, which every user of the package loads anyway.)
from contracts_dsl.simulate import Step, simulate

#: public name -> the module that defines it (loaded on first use)
_WHERE: dict[str, str] = {
    **dict.fromkeys(("CheckResult", "check"), "contracts_dsl.checker"),
    **dict.fromkeys(
        (
            "ActionSpec",
            "ClauseSpec",
            "CompiledContract",
            "EventSpec",
            "OracleSpec",
            "ParamSpec",
            "load_compiled",
        ),
        "contracts_dsl.compiled",
    ),
    **dict.fromkeys(("CompileResult", "check_source", "compile_source"), "contracts_dsl.compiler"),
    **dict.fromkeys(("CURRENCY_CODES", "CURRENCY_EXPONENTS"), "contracts_dsl.currencies"),
    **dict.fromkeys(
        ("CODES", "CodeInfo", "Diagnostic", "Severity", "render", "render_all"),
        "contracts_dsl.diagnostics",
    ),
    **dict.fromkeys(
        ("CompiledFormError", "DslError", "SpecFormError", "StateFormError"), "contracts_dsl.errors"
    ),
    **dict.fromkeys(
        (
            "ContractState",
            "Escrow",
            "Evaluation",
            "Event",
            "EventReport",
            "FiredClause",
            "Leg",
            "evaluate",
            "parse_event",
        ),
        "contracts_dsl.evaluator",
    ),
    **dict.fromkeys(("BUILTIN_EVENTS", "EventSchema"), "contracts_dsl.events"),
    **dict.fromkeys(("ExplainResult", "explain_source"), "contracts_dsl.explain"),
    **dict.fromkeys(("FormatResult", "format_source"), "contracts_dsl.formatter"),
    **dict.fromkeys(("InputError",), "contracts_dsl.inputs"),
    **dict.fromkeys(
        ("BoundParams", "Money", "ParamBinding", "bind_params", "deadline_us", "escrow_minor"),
        "contracts_dsl.params",
    ),
    **dict.fromkeys(("ParseResult", "parse"), "contracts_dsl.parser"),
    **dict.fromkeys(("SourceFile", "Span"), "contracts_dsl.source"),
    **dict.fromkeys(("SpecOutcome", "run_spec"), "contracts_dsl.spec"),
}

__all__ = [
    "BUILTIN_EVENTS",
    "CODES",
    "CURRENCY_CODES",
    "CURRENCY_EXPONENTS",
    "ActionSpec",
    "BoundParams",
    "CheckResult",
    "ClauseSpec",
    "CodeInfo",
    "CompileResult",
    "CompiledContract",
    "CompiledFormError",
    "ContractState",
    "Diagnostic",
    "DslError",
    "Escrow",
    "Evaluation",
    "Event",
    "EventReport",
    "EventSchema",
    "EventSpec",
    "ExplainResult",
    "FiredClause",
    "FormatResult",
    "InputError",
    "Leg",
    "Money",
    "OracleSpec",
    "ParamBinding",
    "ParamSpec",
    "ParseResult",
    "Severity",
    "SourceFile",
    "Span",
    "SpecFormError",
    "SpecOutcome",
    "StateFormError",
    "Step",
    "bind_params",
    "check",
    "check_source",
    "compile_source",
    "deadline_us",
    "escrow_minor",
    "evaluate",
    "explain_source",
    "format_source",
    "load_compiled",
    "parse",
    "parse_event",
    "render",
    "render_all",
    "run_spec",
    "simulate",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'contracts_dsl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
