"""Imports go one way (the brief's 'Layout and arrows'), checked on the syntax tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {
    "settlement",
    "wallets",
    "contracts_dsl",
    "bridges",
    "sim_central_bank",
    "condpay",
    "launcher",
}
FORBIDDEN = {
    "contracts_dsl": PROJECT - {"contracts_dsl"},
    "wallets": PROJECT - {"wallets"},
    "bridges": {"settlement", "sim_central_bank", "launcher"},
    "sim_central_bank": {"settlement", "launcher"},
    # The core never imports the simulator (`condpay sim` and `condpay demo` are mounted by the
    # launcher, the one package that may import every part).
    "settlement": {"sim_central_bank", "launcher"},
    # The public API package (stubs and client) must not reach into the server; it may use the
    # leaf packages (wallets to sign, contracts_dsl to hash the parameters a payer signs).
    "condpay": {"settlement", "sim_central_bank", "bridges", "launcher"},
    # The `condpay` command: the one package that may import every part (it mounts their CLIs).
    "launcher": set(),
}
FOLDERS = {"condpay": ROOT / "proto" / "condpay"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_the_arrows_allow(package: str) -> None:
    folder = FOLDERS.get(package, ROOT / package)
    violations = [
        f"{path.relative_to(ROOT)} imports {sorted(imported_packages(path) & FORBIDDEN[package])}"
        for path in sorted(folder.rglob("*.py"))
        if imported_packages(path) & FORBIDDEN[package]
    ]
    assert not violations, "\n".join(violations)


def test_every_package_has_its_arrows() -> None:
    """A new top-level package must say what it may not import (here, in FORBIDDEN)."""
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    packages |= {name for name, folder in FOLDERS.items() if (folder / "__init__.py").exists()}
    assert packages == PROJECT == set(FORBIDDEN)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom settlement.ledger import engine\n")
    assert imported_packages(module) & FORBIDDEN["wallets"] == {"settlement"}
