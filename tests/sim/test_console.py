"""The supervision console (`condpay console`) end to end: the smoke scenario's real ledger in a
real core (`condpay serve` on SQLite), the console as a user starts it (a child process), its
pages read over HTTP and rendered in headless Chromium, every figure checked against what the
core answers through gRPC; and the identities it must refuse."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest
from condpay.attest import build_attestation, sign_party
from condpay.client import Client, PaymentsClient
from condpay.evidence import verify_bundle
from condpay.v1 import central_bank_pb2, payment_pb2, settlement_pb2
from rich.console import Console

from contracts_dsl import compile_source
from sim_central_bank import scenario as scenarios
from sim_central_bank.console import charts
from sim_central_bank.runner import Target, run
from sim_central_bank.server_process import ServerProcess
from tests.support.browser import png_size, read_png, screenshot
from tests.support.contracts import receipt_contract
from tests.support.harness import start_harness
from wallets import OwnerKey
from wallets.money import format_money

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]
AUDITOR = "auditor/audit"


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    text: str
    headers: dict[str, str]


def get(url: str) -> Page:
    try:
        with urllib.request.urlopen(url, timeout=60) as reply:
            return Page(reply.status, reply.read().decode(), dict(reply.headers))
    except urllib.error.HTTPError as error:
        return Page(error.code, error.read().decode(), dict(error.headers))


def console_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "launcher", "console", *args]


@asynccontextmanager
async def console(server: str, caller: str, certs_dir: Path | None = None) -> AsyncIterator[str]:
    """``condpay console`` on a free port as ``caller`` (mutual TLS with ``certs_dir``, else
    plaintext); yields its base URL."""
    transport = ["--certs-dir", str(certs_dir)] if certs_dir else ["--insecure"]
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed below; a pipe nobody reads could fill)
    process = await asyncio.create_subprocess_exec(
        *console_command("--server", server, "--addr", "127.0.0.1:0", "--caller", caller),
        *transport,
        stdout=asyncio.subprocess.PIPE,
        stderr=errors,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        found = re.search(r"serving (http://127\.0\.0\.1:\d+)/ as (\S+)", line)
        if not found:
            errors.seek(0)
            raise AssertionError(f"{line!r}: {errors.read().decode()[-2000:]}")
        assert found[2] == caller
        yield found[1]
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        errors.close()


@contextmanager
def smoke_core(directory: Path) -> Iterator[ServerProcess]:
    core = ServerProcess(
        f"sqlite:///{directory / 'smoke' / 'condpay.db'}",
        log_path=directory / "core.log",
        extra_env={"CONDPAY_BRIDGE": "none"},  # the run is over: nothing left to settle
        extra_args=("--quiet-calls",),
    )
    core.start()
    try:
        yield core
    finally:
        core.stop()


def cells(html: str, css_class: str) -> list[list[str]]:
    """The rows (as lists of cell texts) of the first table of ``css_class``."""
    table = re.search(rf'<table class="{css_class}">(.*?)</table>\s*(?=<|$)', html, re.S)
    assert table, f"no table {css_class}"
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table[1], re.S):
        texts = [
            " ".join(unescape(re.sub(r"<[^>]+>", " ", c)).split())
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        if texts:
            rows.append(texts)
    return rows


def assert_a_real_picture(png: Path, size: tuple[int, int]) -> None:
    assert png.stat().st_size > 20_000
    assert png_size(png) == size
    # A rendered page (text, tables, coloured charts), not a blank or an error screen.
    assert len(read_png(png).distinct_colours(row_step=4)) > 50


async def test_the_console_shows_a_smoke_runs_ledger_as_the_core_answers_it(
    tmp_path: Path, chromium: Path
) -> None:
    record = await run(
        scenarios.load("smoke"),
        Target(directory=tmp_path),
        console=Console(file=io.StringIO(), width=120),
    )
    assert record.passed
    with smoke_core(tmp_path) as core:
        await core.wait_ready()
        async with Client(core.address, caller=AUDITOR) as auditor:
            supply = await auditor.api.central_bank.get_supply(central_bank_pb2.GetSupplyRequest())
            payments = (
                await auditor.api.payments.list_payments(
                    payment_pb2.ListPaymentsRequest(page_size=500)
                )
            ).payments
            settlements = (
                await auditor.api.settlements.list_settlements(
                    settlement_pb2.ListSettlementsRequest(page_size=500)
                )
            ).settlements
        states = Counter(payment_pb2.PaymentState.Name(p.state)[14:] for p in payments)
        # A payment paid out through the bridge in two legs: its timeline has both attestations,
        # both legs and their settlements.
        paid_out = next(
            p
            for p in payments
            if p.state == payment_pb2.PAYMENT_STATE_SETTLED
            and len(p.legs) >= 2
            and all(leg.paid_to_wallet_id.startswith("s_") for leg in p.legs)
        )
        opened = [p for p in payments if p.state == payment_pb2.PAYMENT_STATE_PARTIALLY_RELEASED]
        assert opened
        assert settlements

        async with console(core.address, AUDITOR) as url:
            # -- the overview: supply and its audit, payments by state, open escrows -------------
            overview = await asyncio.to_thread(get, f"{url}/")
            assert overview.status == 200
            assert f"as of journal entry {supply.as_of_seq}" in overview.text
            supply_rows = {row[0]: row for row in cells(overview.text, "supply")}
            for s in supply.supplies:
                if s.issued.amount_minor:
                    row = supply_rows[s.currency]
                    assert row[3] == format_money(s.in_circulation.amount_minor, s.currency)
                    assert row[5] == format_money(s.held_sum.amount_minor, s.currency)
                    assert row[6] == "consistent"
            for state, count in states.items():
                assert f"<title>{state}: {count:,}</title>" in overview.text
            escrow_ids = [row[0] for row in cells(overview.text, "escrows")]
            assert sorted(escrow_ids) == sorted(p.payment_id for p in opened)
            assert "<svg" in overview.text
            assert "<script" not in overview.text
            assert '<meta http-equiv="refresh" content="5">' in overview.text

            # -- one payment's timeline, verified evidence, and its bundle to download ----------
            timeline = await asyncio.to_thread(get, f"{url}/payments/{paid_out.payment_id}")
            assert timeline.status == 200, timeline.text
            text = timeline.text
            assert text.count('<li class="step">') == paid_out.version
            for a in paid_out.attestations:
                assert a.event_id in text
                for signer in a.signer_ids:
                    assert signer in text
            for leg in paid_out.legs:
                assert f"leg <strong>{leg.leg_id}</strong>" in text
                assert f'href="/settlements/{leg.paid_to_wallet_id}"' in text
            assert "VERIFIED here against checkpoint" in text
            assert "NOT VERIFIED" not in text
            entries = re.findall(
                r'<tr id="entry-(\d+)"><td class="num">\d+</td><td>(\w+)</td>', text
            )
            assert entries[0][1] == "LOCK"
            assert [kind for _, kind in entries[1:]] == ["PVP"] * len(paid_out.legs)
            bundle = await asyncio.to_thread(
                get, f"{url}/payments/{paid_out.payment_id}/evidence.json"
            )
            assert bundle.status == 200
            assert "attachment" in bundle.headers["content-disposition"]
            assert verify_bundle(bundle.text.encode()).payment_id == paid_out.payment_id

            # Every payment of the run (settled, partly released, expired; financed or not; paid
            # out through the bridge or not): one step per version, its evidence verified.
            for p in payments:
                shown = await asyncio.to_thread(get, f"{url}/payments/{p.payment_id}")
                assert shown.status == 200, p.payment_id
                assert shown.text.count('<li class="step">') == p.version, p.payment_id
                assert "VERIFIED here against checkpoint" in shown.text, p.payment_id
                assert "<script" not in shown.text
                assert ("signed fund document" in shown.text) == bool(p.financing)
                assert ("signed assign document" in shown.text) == bool(p.assignments)
                if p.state == payment_pb2.PAYMENT_STATE_EXPIRED:
                    assert "a step of the server&#39;s own (system/deadline-sweep)" in shown.text

            # -- the settlements, filtered by state, and one settlement -------------------------
            listed = await asyncio.to_thread(get, f"{url}/settlements?state=FINAL")
            assert listed.status == 200
            rows = cells(listed.text, "settlements")
            assert {row[0] for row in rows} == {
                s.settlement_id
                for s in settlements
                if s.state == settlement_pb2.SETTLEMENT_STATE_FINAL
            }
            assert {row[1] for row in rows} == {"PVP", "DVP"}
            one = await asyncio.to_thread(
                get, f"{url}/settlements/{paid_out.legs[0].paid_to_wallet_id}"
            )
            assert one.status == 200
            assert "quorum certificate signed by" in one.text

            # -- filters, live follow, what does not exist --------------------------------------
            settled = await asyncio.to_thread(get, f"{url}/payments?state=SETTLED")
            assert len(cells(settled.text, "payments")) == states["SETTLED"]
            follow = opened[0]
            changed = await asyncio.to_thread(
                get, f"{url}/payments/{follow.payment_id}?after={follow.version - 1}"
            )
            assert "Changed while this page waited" in changed.text
            assert f'url=/payments/{follow.payment_id}?after={follow.version}"' in changed.text
            missing = await asyncio.to_thread(get, f"{url}/payments/p_aaaaaaaaaaaaaaaaaaaaaaaaaa")
            assert missing.status == 404
            assert "PAYMENT_NOT_FOUND" in missing.text
            bad = await asyncio.to_thread(get, f"{url}/payments?state=NOPE")
            assert bad.status == 400

            # -- in headless Chromium -------------------------------------------------------------
            shots = {
                "overview": (f"{url}/", (1280, 1400)),
                "timeline": (f"{url}/payments/{paid_out.payment_id}", (1280, 1800)),
                "settlements": (f"{url}/settlements", (1280, 1200)),
            }
            for name, (page_url, size) in shots.items():
                png = await asyncio.to_thread(
                    screenshot, page_url, tmp_path / f"{name}.png", *size, chromium=chromium
                )
                print(f"\nconsole screenshot: {png}")
                assert_a_real_picture(png, size)

        # A central bank sees every payment but the evidence (journal entries) of its own
        # currency's only: the pages show no more.
        hkd = paid_out.escrow.currency
        other = "central_bank/bot" if hkd != "THB" else "central_bank/pboc"
        async with console(core.address, other) as url:
            page = await asyncio.to_thread(get, f"{url}/payments/{paid_out.payment_id}")
            assert page.status == 200
            assert "evidence bundle is not visible to this identity" in page.text
            assert '<table class="entries">' not in page.text
            assert "evidence.json" not in page.text
            refused = await asyncio.to_thread(
                get, f"{url}/payments/{paid_out.payment_id}/evidence.json"
            )
            assert refused.status == 404


async def test_over_mutual_tls_a_central_bank_follows_a_payment_to_its_end(
    tmp_path: Path,
) -> None:
    """The identity is the certificate's; bundles are verified against CERTS_DIR/checkpoint.pub;
    an open payment's page waits on WatchPayment and shows the change that came meanwhile."""
    certs = tmp_path / "certs"
    async with start_harness(f"sqlite:///{tmp_path / 'core.db'}", certs_dir=certs) as h:
        bank_key = await h.institution("icbc-sz")
        await h.client().issue("icbc-sz", "CNY", 1_000_000_00)
        bank = h.client("institution/icbc-sz")
        buyer_key, seller_key = OwnerKey.generate(), OwnerKey.generate()
        buyer, seller = [
            (
                await bank.open_wallet("icbc-sz", key.public_key, kind="ENTERPRISE", tier=0)
            ).wallet.wallet_id
            for key in (buyer_key, seller_key)
        ]
        await bank.transfer(bank_key, "w_reserve.icbc-sz", buyer, "CNY", 2_000_00)
        h.client("platform/gba-trade")  # its certificate
        platform = PaymentsClient(h.address, caller="platform/gba-trade", certs_dir=certs)
        h.clients.append(platform)
        source = receipt_contract("console-receipt")
        locked = await platform.lock_payment(
            buyer_key,
            compile_source(source).contract,
            {"buyer": buyer, "seller": seller, "price": ("CNY", 1_250_00)},
            send_source=source,
        )
        payment = locked.payment
        h.client("central_bank/pboc")
        async with console(h.address, "central_bank/pboc", certs) as url:
            overview = await asyncio.to_thread(get, f"{url}/")
            assert "read-only, as <strong>central_bank/pboc</strong>" in overview.text
            assert [row[0] for row in cells(overview.text, "escrows")] == [payment.payment_id]
            waiting = asyncio.create_task(
                asyncio.to_thread(
                    get, f"{url}/payments/{payment.payment_id}?after={payment.version}"
                )
            )
            await asyncio.sleep(0.5)  # the page is waiting on WatchPayment
            assert not waiting.done()
            now = time.time_ns() // 1000
            receipt = build_attestation(
                oracle_set_version=await platform.oracle_set_version(),
                oracle="buyer",
                event_id="receipt-1",
                payment_id=payment.payment_id,
                contract_hash=payment.contract.contract_hash,
                event_type="receipt.signed",
                attributes={"signer": buyer},
                observed_at_us=now - 1_000_000,
                issued_at_us=now,
                expires_at_us=now + 600_000_000,
            )
            signature = sign_party(receipt.statement, buyer, buyer_key)
            await platform.submit_attestation(receipt.statement, receipt.payload, [signature])
            page = await asyncio.wait_for(waiting, 15)
            assert page.status == 200
            assert '<span class="state SETTLED">SETTLED</span>' in page.text
            assert "Changed while this page waited" in page.text
            assert "VERIFIED here against checkpoint" in page.text
            assert str(certs / "checkpoint.pub") in page.text
            assert f"{buyer} (party)" in page.text
            assert 'http-equiv="refresh"' not in page.text  # terminal: nothing more to follow


@pytest.mark.parametrize(
    "caller", ["platform/gba-trade", "institution/icbc-sz", "financier/trade-bank", "oracle/x"]
)
def test_a_non_supervisor_identity_is_refused_at_start_in_one_line(caller: str) -> None:
    done = subprocess.run(
        console_command("--server", "127.0.0.1:1", "--caller", caller, "--insecure"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"condpay console: {caller} may not supervise: the console reads as a central bank "
        "(central_bank/<id>) or an auditor (auditor/<id>)\n"
    )


def test_without_the_web_libraries_it_says_how_to_install_them() -> None:
    script = (
        "import sys; sys.modules['uvicorn'] = None; from launcher import main; "
        "sys.exit(main(['console', '--server', '127.0.0.1:1', '--caller', 'auditor/a', "
        "'--insecure']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.strip().endswith("(pip install 'condpay[sim]')")
    assert done.stderr.count("\n") == 1


def test_chart_labels_are_escaped() -> None:
    svg = charts.bar_chart("<b>", [charts.Bar('<script>alert(1)</script>"', 3, href='/x?a="1"')])
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert 'href="/x?a=&quot;1&quot;"' in svg
    assert "<title>&lt;b&gt;</title>" in svg


def test_a_core_that_does_not_answer_is_one_line_and_exit_3() -> None:
    done = subprocess.run(
        console_command("--server", "127.0.0.1:9", "--caller", AUDITOR, "--insecure"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ},
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == "condpay console: the core at 127.0.0.1:9 does not answer (UNAVAILABLE)\n"
