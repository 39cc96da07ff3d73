"""Spec files: `x.contract` beside `x.spec.json`, run by `contracts_dsl test`.

A spec is JSON::

    {
      "description": "what the contract is for",
      "params": {"buyer": "wallet-b", "price": "125000.00 CNY"},
      "expect_diagnostics": [{"code": "CD056", "line": 1, "column": 1}],
      "cases": [
        {
          "name": "happy path",
          "params": {"price": "1000.00 CNY"},
          "events": [{"id": "e1", "type": "customs.cleared", "oracle": "customs",
                      "observed_at": "2026-05-01T10:00:00+08:00", "attributes": {}}],
          "now": "2027-01-01T00:00:00+08:00",
          "expect": {
            "legs": [{"clause": "clause#1", "kind": "pay", "party": "seller",
                      "amount_minor": 3750000}],
            "remaining_minor": 0,
            "terminal_reason": "escrow_empty",
            "param_errors": [{"code": "PV009", "field": "price"}]
          }
        }
      ]
    }

`expect_diagnostics` lists every diagnostic the contract must produce (code, and line/column
when given); absent, the contract must check without errors or warnings. A case's `params` are
merged over the top-level ones. Events are fed one at a time (see `simulate`), then time moves
to `now`. `expect.legs` must match the legs in order; each listed key must equal the leg's
field. With `param_errors`, the parameters must fail to bind with exactly those errors.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from contracts_dsl import _literals
from contracts_dsl.compiled import CompiledContract
from contracts_dsl.compiler import compile_source
from contracts_dsl.diagnostics import Diagnostic
from contracts_dsl.errors import SpecFormError
from contracts_dsl.evaluator import Event, parse_event
from contracts_dsl.params import bind_params
from contracts_dsl.simulate import simulate


@dataclass(slots=True)
class SpecOutcome:
    contract_path: Path
    spec_path: Path
    cases: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def spec_path_for(contract_path: Path) -> Path:
    return contract_path.with_name(contract_path.name.removesuffix(".contract") + ".spec.json")


def discover(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Contracts that have a spec, and contracts without one, under the given paths."""
    contracts: list[Path] = []
    for path in paths:
        if path.is_dir():
            contracts.extend(sorted(path.rglob("*.contract")))
        elif path.name.endswith(".spec.json"):
            contracts.append(path.with_name(path.name.removesuffix(".spec.json") + ".contract"))
        else:
            contracts.append(path)
    with_spec = [c for c in contracts if spec_path_for(c).is_file()]
    without = [c for c in contracts if not spec_path_for(c).is_file()]
    return with_spec, without


def _load_spec(path: Path) -> Mapping[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SpecFormError(f"{path}: cannot read the spec: {error}") from None
    if not isinstance(data, dict):
        raise SpecFormError(f"{path}: a spec must be a JSON object")
    return data


SCHEMA_FILE: Final = "spec.schema.json"
"""The JSON Schema of spec files, in this package (`condpay dsl schema` prints it)."""


@functools.cache
def spec_schema() -> Mapping[str, object]:
    """The JSON Schema (draft 2020-12) every spec file must satisfy."""
    text = importlib.resources.files("contracts_dsl").joinpath(SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, object] = json.loads(text)
    return schema


@dataclass(frozen=True, slots=True)
class SpecError:
    """A place where a spec file breaks the schema: a JSON path (`$.cases[0].events[1].id`),
    the path as a list of keys and indices, and a message."""

    path: str
    keys: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def validate_spec(document: object) -> list[SpecError]:
    """Every schema violation of a parsed spec document, in document order."""
    import jsonschema  # loaded only when specs are checked

    validator = jsonschema.Draft202012Validator(spec_schema())
    found = []
    for error in validator.iter_errors(document):
        keys = tuple(error.absolute_path)
        path = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys)
        found.append(SpecError(path, keys, error.message))
    found.sort(key=lambda e: [(0, k, "") if isinstance(k, int) else (1, 0, k) for k in e.keys])
    return found


def run_spec(contract_path: Path) -> SpecOutcome:
    """Run one spec. Problems become failures in the outcome (this never raises)."""
    spec_path = spec_path_for(contract_path)
    outcome = SpecOutcome(contract_path, spec_path)
    try:
        spec = _load_spec(spec_path)
        text = contract_path.read_text(encoding="utf-8")
    except (SpecFormError, OSError, UnicodeDecodeError) as error:
        outcome.failures.append(str(error))
        return outcome
    schema_errors = validate_spec(spec)
    if schema_errors:
        outcome.failures.extend(f"{spec_path}: {error}" for error in schema_errors)
        return outcome
    result = compile_source(text, str(contract_path))
    expected_diagnostics = spec.get("expect_diagnostics", [])
    if not isinstance(expected_diagnostics, list):
        outcome.failures.append("expect_diagnostics must be a list")
        return outcome
    _compare_diagnostics(outcome, expected_diagnostics, result.diagnostics)
    cases = spec.get("cases", [])
    if not isinstance(cases, list):
        outcome.failures.append("cases must be a list")
        return outcome
    if result.contract is None:
        if cases:
            outcome.failures.append("the contract does not compile, so its cases cannot run")
        return outcome
    base_params = spec.get("params", {})
    if not isinstance(base_params, dict):
        outcome.failures.append("params must be an object")
        return outcome
    for number, case in enumerate(cases, 1):
        outcome.cases += 1
        if not isinstance(case, dict):
            outcome.failures.append(f"case {number}: must be an object")
            continue
        name = f"case {number} ({case.get('name', 'unnamed')})"
        try:
            _run_case(outcome, name, case, base_params, result.contract)
        except SpecFormError as error:
            outcome.failures.append(f"{name}: {error}")
    return outcome


def _compare_diagnostics(
    outcome: SpecOutcome, expected: Sequence[object], actual: Sequence[Diagnostic]
) -> None:
    found = list(actual)
    if len(expected) != len(found):
        codes = ", ".join(f"{d.code}@{d.span.line}:{d.span.column}" for d in found) or "none"
        outcome.failures.append(
            f"expected {len(expected)} diagnostic(s), found {len(found)}: {codes}"
        )
        return
    for want, got in zip(expected, found, strict=True):
        if not isinstance(want, dict):
            outcome.failures.append("each expected diagnostic must be an object")
            continue
        checks = {"code": got.code, "line": got.span.line, "column": got.span.column}
        for key, value in want.items():
            if key not in checks:
                outcome.failures.append(f"unknown key {key!r} in an expected diagnostic")
            elif checks[key] != value:
                outcome.failures.append(
                    f"diagnostic {got.code} at {got.span.line}:{got.span.column}: "
                    f"{key} is {checks[key]!r}, expected {value!r}"
                )


def _run_case(
    outcome: SpecOutcome,
    name: str,
    case: Mapping[str, object],
    base_params: Mapping[str, object],
    contract: CompiledContract,
) -> None:
    case_params = case.get("params", {})
    if not isinstance(case_params, dict):
        raise SpecFormError("params must be an object")
    expect = case.get("expect", {})
    if not isinstance(expect, dict):
        raise SpecFormError("expect must be an object")
    binding = bind_params(contract, {**base_params, **case_params})
    if "param_errors" in expect:
        got_errors = [{"code": e.code, "field": e.field} for e in binding.errors]
        if got_errors != expect["param_errors"]:
            outcome.failures.append(
                f"{name}: param errors {got_errors}, expected {expect['param_errors']}"
            )
        return
    if binding.params is None:
        shown = "; ".join(str(e) for e in binding.errors)
        outcome.failures.append(f"{name}: the parameters do not bind: {shown}")
        return
    raw_events = case.get("events", [])
    if not isinstance(raw_events, list):
        raise SpecFormError("events must be a list")
    events: list[Event] = []
    for raw in raw_events:
        event, errors = parse_event(raw)
        if event is None:
            raise SpecFormError("bad event: " + "; ".join(str(e) for e in errors))
        events.append(event)
    now_text = case.get("now")
    final_now = None
    if now_text is not None:
        parsed = _literals.timestamp_us(now_text) if isinstance(now_text, str) else "not a string"
        if isinstance(parsed, str):
            raise SpecFormError(f"now: {parsed}")
        final_now = parsed
    steps = simulate(contract, binding.params, events, final_now)
    legs = [leg for step in steps for leg in step.evaluation.legs]
    rejected = [str(p) for step in steps for p in step.evaluation.rejected]
    if rejected:
        outcome.failures.append(f"{name}: evaluation rejected: {'; '.join(rejected)}")
    if "legs" in expect:
        wanted = expect["legs"]
        if not isinstance(wanted, list):
            raise SpecFormError("expect.legs must be a list")
        actual = [leg.to_json() for leg in legs]
        if len(wanted) != len(actual):
            shown = ", ".join(f"{x['leg_id']}={x['amount_minor']}" for x in actual) or "none"
            outcome.failures.append(
                f"{name}: expected {len(wanted)} leg(s), got {len(actual)}: {shown}"
            )
        else:
            for index, (want, got) in enumerate(zip(wanted, actual, strict=True), 1):
                if not isinstance(want, dict):
                    raise SpecFormError("each expected leg must be an object")
                for key, value in want.items():
                    if key not in got:
                        raise SpecFormError(f"unknown leg field {key!r}")
                    if got[key] != value:
                        outcome.failures.append(
                            f"{name}: leg {index} ({got['leg_id']}): {key} is {got[key]!r}, "
                            f"expected {value!r}"
                        )
    final = steps[-1].evaluation if steps else None
    for key in ("remaining_minor", "terminal_reason", "fired"):
        if key not in expect:
            continue
        if final is None:
            outcome.failures.append(f"{name}: no evaluation ran (no events and no `now`)")
            break
        got_value: object
        if key == "remaining_minor":
            got_value = final.escrow.remaining_minor
        elif key == "terminal_reason":
            got_value = final.state.terminal_reason
        else:
            got_value = [f.clause for f in final.state.fired]
        if got_value != expect[key]:
            outcome.failures.append(f"{name}: {key} is {got_value!r}, expected {expect[key]!r}")
