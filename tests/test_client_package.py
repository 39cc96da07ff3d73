"""condpay-client alone (issue 12): the client-only wheel built from proto/ holds exactly condpay,
wallets and contracts_dsl; installed by itself in a fresh virtual environment (no system site
packages, its dependencies from the package index or pip's cache) it imports every module of the
SDK and, against a real `condpay serve`, funds a wallet with a signed transfer, locks a
conditional payment the buyer signed and releases it with the buyer's signed receipt, and
verifies the journal's hash chain, while none of the server's packages can be imported there.
The environment's installed size is printed (docs/packaging.md keeps the figure)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

from sim_central_bank.server_process import ServerProcess
from tests.support.contracts import receipt_contract

ROOT = Path(__file__).resolve().parents[1]
CLIENT_PACKAGES = {"condpay", "wallets", "contracts_dsl"}
# Importable in the server's environment, never in the client's.
SERVER_ONLY = (
    "settlement",
    "bridges",
    "sim_central_bank",
    "launcher",
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "asyncpg",
    "structlog",
    "matplotlib",
    "numpy",
)
# Our own distributions: the wheel under test, and the server (never installed there).
OURS = {"condpay", "condpay-client"}

CLIENT_SCRIPT = r'''
"""Runs in the client-only environment: python -I client.py ADDRESS SOURCE_FILE"""
import asyncio
import importlib
import importlib.util
import json
import pkgutil
import sys
import time
from pathlib import Path

ADDRESS, SOURCE = sys.argv[1], Path(sys.argv[2]).read_text()
SERVER_ONLY = json.loads(sys.argv[3])


def import_every_module() -> list[str]:
    names = []
    for package in ("condpay", "wallets", "contracts_dsl"):
        module = importlib.import_module(package)
        assert module.__file__.startswith(sys.prefix), (package, module.__file__)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if info.name.endswith(".__main__"):
                continue
            importlib.import_module(info.name)
            names.append(info.name)
    return names


async def trade() -> dict[str, object]:
    from condpay import journal
    from condpay.attest import build_attestation, sign_party
    from condpay.client import Client, PaymentsClient
    from contracts_dsl import compile_source
    from wallets import OwnerKey

    contract = compile_source(SOURCE, "<receipt>").contract
    bank_key, buyer_key, seller_key = (OwnerKey.generate() for _ in range(3))
    async with Client(ADDRESS, caller="central_bank/pboc") as cb:
        await cb.register_institution("icbc-sz", "ICBC Shenzhen", bank_key.public_key)
        await cb.issue("icbc-sz", "CNY", 1_000_000_00)
    async with Client(ADDRESS, caller="institution/icbc-sz") as bank:
        buyer, seller = [
            (await bank.open_wallet("icbc-sz", key.public_key, kind="ENTERPRISE", tier=0))
            .wallet.wallet_id
            for key in (buyer_key, seller_key)
        ]
        # Signed by the bank's reserve key: the smallest real signed operation.
        funded = await bank.transfer(
            bank_key, "w_reserve.icbc-sz", buyer, "CNY", 2_000_00, memo="funding"
        )
        async with PaymentsClient(ADDRESS, caller="platform/client-only") as platform:
            locked = await platform.lock_payment(
                buyer_key,
                contract,
                {"buyer": buyer, "seller": seller, "price": ("CNY", 1_250_00)},
                send_source=SOURCE,
            )
            payment_id = locked.payment.payment_id
            now = int(time.time() * 1e6)
            receipt = build_attestation(
                oracle_set_version=await platform.oracle_set_version(),
                oracle="buyer",
                event_id="receipt-1",
                payment_id=payment_id,
                contract_hash=locked.payment.contract.contract_hash,
                event_type="receipt.signed",
                attributes={"signer": buyer},
                observed_at_us=now - 1_000_000,
                issued_at_us=now,
                expires_at_us=now + 600_000_000,
            )
            signature = sign_party(receipt.statement, buyer, buyer_key)
            await platform.submit_attestation(
                receipt.statement, receipt.payload, [tuple(signature)]
            )
            payment = await platform.get_payment(payment_id)
        balances = {}
        for name, wallet_id in (("buyer", buyer), ("seller", seller)):
            wallet = await bank.get_wallet(wallet_id)
            (cny,) = [b for b in wallet.balances if b.available.currency == "CNY"]
            balances[name] = [cny.available.amount_minor, cny.held.amount_minor]
    async with Client(ADDRESS, caller="auditor/audit") as auditor:
        entries = [entry async for entry in auditor.journal()]
    return {
        "transfer_seq": funded.entry.seq,
        "held_at_lock": locked.payment.held.amount_minor,
        "payment_held_after_receipt": payment.held.amount_minor,
        "balances": balances,
        "journal_entries": len(entries),
        "journal_broken_at": journal.verify_entries(entries),
    }


def bls_backend() -> str:
    from condpay.attest import bls_registration
    from wallets import bls

    secret = bls.secret_key(b"client-only environment, one oracle key")
    registration = bls_registration(secret)
    scheme = bls.backend()
    assert scheme.pop_verify(registration.public_key, registration.proof_of_possession)
    return scheme.name


report = {
    "modules": import_every_module(),
    "server_only_importable": [n for n in SERVER_ONLY if importlib.util.find_spec(n)],
    "bls_backend": bls_backend(),
    "trade": asyncio.run(trade()),
}
print(json.dumps(report))
'''


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _size_mb(folder: Path) -> float:
    files = (path for path in folder.rglob("*") if path.is_file() and not path.is_symlink())
    return sum(path.stat().st_size for path in files) / 1e6


def test_versions_agree() -> None:
    """The server pins the client at its own version: released together, always."""
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((ROOT / "proto" / "pyproject.toml").read_text())["project"]
    assert client["version"] == server["version"]
    pins = [d for d in server["dependencies"] if d.startswith("condpay-client")]
    assert pins == [f"condpay-client[py-ecc]=={client['version']}"]


async def test_the_client_wheel_alone_calls_a_real_server(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path}/condpay.db", log_path=tmp_path / "server.log")
    server.start()  # it starts while the wheel is built and installed
    try:
        # The wheel, as `make client-wheel` builds it.
        await asyncio.to_thread(
            _run,
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--wheel-dir", tmp_path / "dist", ROOT / "proto"),
        )
        (wheel,) = (tmp_path / "dist").glob("condpay_client-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
        assert {name.split("/")[0] for name in names} == CLIENT_PACKAGES | {
            f"{wheel.name.split('-py3')[0]}.dist-info"
        }
        for package, folder in (
            ("condpay", ROOT / "proto" / "condpay"),
            ("wallets", ROOT / "wallets"),
            ("contracts_dsl", ROOT / "contracts_dsl"),
        ):
            sources = {
                f"{package}/{path.relative_to(folder).as_posix()}"
                for path in folder.rglob("*")
                if path.suffix in {".py", ".pyi", ".lark", ".proto", ".typed"}
            }
            assert sources <= set(names), sorted(sources - set(names))

        # A fresh environment: no pip, no system site packages; the repository's pip installs
        # the wheel into it, its dependencies from the index (or pip's cache) at the versions
        # the server's tests run with, so that a warm cache makes this fast.
        env_dir = tmp_path / "client-venv"
        venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
        python = env_dir / "bin" / "python"
        pins = tmp_path / "constraints.txt"
        pins.write_text(
            "".join(
                f"{d.metadata['Name']}=={d.version}\n"
                for d in importlib.metadata.distributions()
                if d.metadata["Name"] not in OURS
            )
        )
        await asyncio.to_thread(
            _run,
            *(sys.executable, "-m", "pip", "--python", python, "install", "--quiet"),
            *("--constraint", pins, wheel),
        )
        (site_packages,) = env_dir.glob("lib/python3*/site-packages")
        distributions = json.loads(
            _run(
                python,
                "-I",
                "-c",
                "import importlib.metadata as m, json; "
                "print(json.dumps(sorted(f\"{d.metadata['Name']} {d.version}\" "
                "for d in m.distributions())))",
            )
        )
        size_mb = _size_mb(site_packages)
        print(f"\nclient-only environment: {size_mb:.1f} MB installed in {site_packages}")
        print("distributions: " + ", ".join(distributions))
        assert any(d.startswith("condpay-client ") for d in distributions)
        assert not any(d.split()[0].lower() in {"condpay", "py-ecc"} for d in distributions)

        await server.wait_ready()
        script, source = tmp_path / "client.py", tmp_path / "receipt.contract"
        script.write_text(CLIENT_SCRIPT)
        source.write_text(receipt_contract("client-only-receipt"))
        output = await asyncio.to_thread(
            _run,
            *(python, "-I", script, server.address, source, json.dumps(SERVER_ONLY)),
            cwd=tmp_path,
        )
    finally:
        await asyncio.to_thread(server.stop)
    report = json.loads(output.splitlines()[-1])

    assert {
        "condpay.client",
        "condpay.v1.wallet_pb2",
        "wallets.keys",
        "contracts_dsl.compiler",
    } <= set(report["modules"])
    assert report["server_only_importable"] == []
    assert report["bls_backend"] == "blspy"
    trade = report["trade"]
    assert trade["transfer_seq"] >= 1
    assert trade["held_at_lock"] == 1_250_00
    assert trade["payment_held_after_receipt"] == 0
    # The buyer: 2,000.00 funded, 1,250.00 paid on the receipt; the seller was paid it.
    assert trade["balances"] == {"buyer": [750_00, 0], "seller": [1_250_00, 0]}
    assert trade["journal_entries"] >= 4  # issue, funding, lock, release
    assert trade["journal_broken_at"] is None
