"""The committed stubs and the typed facades (condpay/services.py) are exactly what `make proto`
generates from the .proto sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("condpay/v1", "condpay/bridge/v1")


def test_regenerating_the_stubs_changes_nothing(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = {
        p.relative_to(tmp_path): p.read_bytes()
        for package in PACKAGES
        for p in (tmp_path / package).iterdir()
    }
    committed = {
        p.relative_to(ROOT / "proto"): p.read_bytes()
        for package in PACKAGES
        for p in (ROOT / "proto" / package).iterdir()
        if "_pb2" in p.name
    }
    assert sorted(generated) == sorted(committed), "stub files differ: run `make proto`"
    stale = [str(name) for name in generated if generated[name] != committed[name]]
    assert not stale, f"stale generated stubs (run `make proto`): {stale}"
    facades = (tmp_path / "condpay" / "services.py").read_text()
    assert facades == (ROOT / "proto" / "condpay" / "services.py").read_text(), (
        "stale condpay/services.py (run `make proto`)"
    )


def test_stubs_import_without_the_server_package() -> None:
    code = (
        "import sys\n"
        "from condpay.v1 import wallet_pb2_grpc, central_bank_pb2_grpc, operation_pb2_grpc\n"
        "import condpay.client\n"
        "assert not any(m == 'settlement' or m.startswith('settlement.') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('settlement'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
