"""Shared helpers for the contract-language tests (no fixtures with global side effects)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from hypothesis import HealthCheck, settings

from contracts_dsl import (
    BoundParams,
    CompiledContract,
    Escrow,
    Event,
    bind_params,
    compile_source,
    parse_event,
)

ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLES: Final = ROOT / "examples" / "contracts"
GOLDEN: Final = Path(__file__).resolve().parent / "golden"

# Deterministic in CI: derandomize, no deadline (the machine is shared), bounded examples.
# For a longer, randomized local hunt: CONDPAY_DSL_FUZZ_EXAMPLES=5000 pytest tests/dsl -k propert
_FUZZ_EXAMPLES: Final = os.environ.get("CONDPAY_DSL_FUZZ_EXAMPLES")
PROPERTY_SETTINGS: Final = settings(
    derandomize=_FUZZ_EXAMPLES is None,
    deadline=None,
    max_examples=int(_FUZZ_EXAMPLES or 300),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.contract"))


def compile_ok(text: str) -> CompiledContract:
    result = compile_source(text)
    errors = [d for d in result.diagnostics if d.is_error]
    assert result.contract is not None, [f"{d.code} {d.message}" for d in errors]
    return result.contract


def spec_params(contract_path: Path) -> dict[str, Any]:
    spec = json.loads(contract_path.with_name(contract_path.stem + ".spec.json").read_text())
    params: dict[str, Any] = spec["params"]
    return params


def bind(contract: CompiledContract, values: dict[str, Any]) -> BoundParams:
    binding = bind_params(contract, values)
    assert binding.params is not None, binding.errors
    return binding.params


def full_escrow(contract: CompiledContract, params: BoundParams) -> Escrow:
    from contracts_dsl.params import escrow_minor

    amount = escrow_minor(contract, params)
    return Escrow(contract.escrow.currency, amount, amount)


def event(
    event_id: str,
    event_type: str,
    oracle: str,
    observed_at: str,
    **attributes: str | int | bool,
) -> Event:
    parsed, errors = parse_event(
        {
            "id": event_id,
            "type": event_type,
            "oracle": oracle,
            "observed_at": observed_at,
            "attributes": attributes,
        }
    )
    assert parsed is not None, errors
    return parsed


BASE: Final = """\
contract "t" version 1

param buyer  : wallet
param seller : wallet

escrow 100.00 CNY from buyer
deadline 2026-12-31T00:00:00+08:00 -> refund remainder to buyer

"""
