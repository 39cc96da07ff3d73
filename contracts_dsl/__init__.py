"""condpay's contract language: grammar, parser, checker, compiler, evaluator and tools.

The pipeline: source text -> `parse` (typed AST with spans) -> `check` (diagnostics) ->
`compile_source` (canonical `CompiledContract` with a content hash) -> `bind_params` (typed
parameter values) -> `evaluate` (pure: legs now due and the new `ContractState`). See docs/dsl.md.

This package imports no other condpay package.
"""

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
from contracts_dsl.simulate import Step, simulate
from contracts_dsl.source import SourceFile, Span
from contracts_dsl.spec import SpecOutcome, run_spec

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
