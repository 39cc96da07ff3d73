"""`condpay serve` starts fast (issue 11) because it loads only what serving needs: asserted on the
import graph of a fresh interpreter, never on timings (tests/bench/startup.py measures those)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_BLSPY = importlib.util.find_spec("blspy") is not None

#: Never loaded by the server (the simulator's packages, the demo, plotting).
NEVER = ("sim_central_bank", "launcher.demo", "matplotlib")
#: Loaded only on the paths that need them: py-ecc and its eth_* helpers (blspy serves instead; key
#: registration loads py-ecc), alembic (only when the schema is behind), asyncpg (PostgreSQL), the
#: contract parser and its grammar library (the first compile).
LAZY = ("alembic", "asyncpg", "lark", "contracts_dsl.parser", "contracts_dsl.checker")
PY_ECC = ("py_ecc", "eth_typing", "eth_utils")

# The serve path in a fresh interpreter: the `condpay` command's modules, then a runtime started
# on the SQLite file given and a server on a free port (plaintext, reflection on), then stopped.
SERVE = """
import asyncio, json, sys
import launcher, settlement.cli
from settlement.api.server import start_server
from settlement.config import Settings
from settlement.runtime import Runtime

imported = sorted(sys.modules)

async def main() -> None:
    settings = Settings.from_env().replace(
        insecure=True, database_url="sqlite:///" + sys.argv[1],
        addr="127.0.0.1:0", workers=1, log_level="error",
    )
    runtime = Runtime(settings)
    await runtime.start()
    running = await start_server(runtime, settings.addr)
    await running.stop()

asyncio.run(main())
print(json.dumps({"imported": imported, "serving": sorted(sys.modules)}))
"""


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def _fresh_interpreter(code: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDPAY_")}
    env["CONDPAY_LOG_LEVEL"] = "error"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def serve_runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, list[str]]]:
    """Two starts on one database: the first creates the schema, the second finds it at head."""
    db = tmp_path_factory.mktemp("startup") / "condpay.db"
    return [json.loads(_fresh_interpreter(SERVE, str(db))) for _ in range(2)]


def test_serving_never_loads_the_simulator(serve_runs: list[dict[str, list[str]]]) -> None:
    for run in serve_runs:
        assert _loaded(run["serving"], NEVER) == []


@pytest.mark.skipif(not HAS_BLSPY, reason="without blspy, py-ecc is the BLS backend")
def test_serving_with_blspy_never_loads_py_ecc(serve_runs: list[dict[str, list[str]]]) -> None:
    # The in-process bridge derives its validators' keys and proofs at start: hashlib and blspy.
    for run in serve_runs:
        assert _loaded(run["serving"], PY_ECC) == []


def test_the_server_modules_load_only_what_serving_needs(
    serve_runs: list[dict[str, list[str]]],
) -> None:
    first, again = serve_runs
    assert _loaded(first["imported"], LAZY + NEVER) == []
    assert "alembic" in first["serving"]  # a new database: the migrations ran
    # A database already at the newest migration: one query, no alembic; SQLite: no asyncpg; no
    # contract compiled: no parser.
    assert _loaded(again["serving"], LAZY) == []
    assert "grpc_reflection" in again["serving"]  # on in the plaintext development mode


@pytest.mark.skipif(not HAS_BLSPY, reason="without blspy, py-ecc is the BLS backend")
def test_bls_loads_py_ecc_only_when_asked_and_keeps_the_recursion_limit() -> None:
    code = """
import json, sys
sys.setrecursionlimit(1000)
from wallets import bls
key = bls.secret_key(bytes(32))
bls.backend().sign(key, b"m")
before = "py_ecc" in sys.modules
bls.PyEccBackend().public_key(key)
print(json.dumps([before, "py_ecc" in sys.modules, sys.getrecursionlimit()]))
"""
    assert json.loads(_fresh_interpreter(code)) == [False, True, 1000]


def test_the_migration_shortcut_knows_the_newest_revision() -> None:
    """settlement/db/migrate.py skips alembic when the database is at HEAD_REVISION: it must be
    the newest migration (update it with each new one)."""
    from alembic.script import ScriptDirectory

    from settlement.db.migrate import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD_REVISION]
