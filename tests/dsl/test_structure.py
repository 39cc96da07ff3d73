"""Package structure: import boundaries, the public API, the currency table."""

from __future__ import annotations

import ast
import importlib

import pytest

import contracts_dsl
from contracts_dsl import CURRENCY_EXPONENTS

from ._support import ROOT

PROJECT_PACKAGES = {"settlement", "wallets", "bridges", "sim_central_bank", "condpay", "proto"}


def test_contracts_dsl_imports_no_other_project_package() -> None:
    for path in (ROOT / "contracts_dsl").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in PROJECT_PACKAGES, f"{path}: imports {name}"


def test_all_is_sorted_and_importable() -> None:
    names = contracts_dsl.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))  # constants first
    for name in names:
        assert hasattr(contracts_dsl, name)


def test_currency_table() -> None:
    assert dict(CURRENCY_EXPONENTS) == {"AED": 2, "CNY": 2, "HKD": 2, "SAR": 2, "THB": 2}


def test_currency_table_matches_the_wallets_package() -> None:
    try:
        wallets_currencies = importlib.import_module("wallets.currencies")
    except ImportError:
        pytest.skip("wallets.currencies is not available")
    table = getattr(wallets_currencies, "CURRENCIES", None)
    if not isinstance(table, dict):
        pytest.skip("wallets.currencies has no CURRENCIES table yet")
    theirs = {code: getattr(c, "exponent", None) for code, c in table.items()}
    assert theirs == dict(CURRENCY_EXPONENTS)


def test_grammar_is_package_data() -> None:
    assert (ROOT / "contracts_dsl" / "contract.lark").is_file()
    assert (ROOT / "contracts_dsl" / "py.typed").is_file()
