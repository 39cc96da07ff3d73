"""The simulator's report from a hand-built run: report.json's figures, the terminal summary, and
report.html as Chromium renders it."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from sim_central_bank.record import (
    ACCEPTED,
    CallSample,
    InvariantResult,
    RunRecord,
    TimelineSample,
)
from sim_central_bank.report import (
    PLOTS_MISSING,
    nearest_rank,
    print_summary,
    render_html,
    write_html,
    write_json,
    write_reports,
)
from tests.support.browser import png_size, read_png, screenshot

HOSTILE = '<script>alert("x")</script> & [bold red]not markup[/] </td><img src=x>'
FAIL_COLOUR = (0xB4, 0x23, 0x18)  # report.py's _FAIL_COLOUR: the FAIL badge's background


def _run() -> RunRecord:
    """A 10-second run: payments locked and released, forged and replayed attestations refused,
    a server kill (UNAVAILABLE), PvP on the bridge; one invariant fails with a hostile detail."""
    record = RunRecord(
        scenario="trade-finance <mixed>",
        seed=42,
        server="127.0.0.1:50051",
        database="postgresql",
        started_at="2025-06-01T08:00:00Z",
        duration_s=10.0,
        ledger_fingerprint="9f2c" * 16,
    )
    # LockPayment: 100 calls of 1..100 ms (given out of order), 1 refused.
    for i in range(100):
        latency = float(100 - i)
        outcome = "INSUFFICIENT_FUNDS" if i == 7 else ACCEPTED
        record.calls.append(CallSample("LockPayment", i * 0.1, latency, outcome))
    # SubmitAttestation: 3 calls, 5, 1, 3 ms; two refused.
    for started, latency, outcome in [
        (1.0, 5.0, "SIGNATURE_INVALID"),
        (2.0, 1.0, "ATTESTATION_REPLAYED"),
        (3.0, 3.0, ACCEPTED),
    ]:
        record.calls.append(CallSample("SubmitAttestation", started, latency, outcome))
    # SettlePvP: 10 calls 2.5, 5.0, ... 25.0 ms, the 4th during the server kill.
    for i in range(10):
        outcome = "UNAVAILABLE" if i == 3 else ACCEPTED
        record.calls.append(CallSample("SettlePvP", 0.5 + i, 2.5 * (i + 1), outcome))
    record.operations = Counter(
        {
            ("payment.lock", ACCEPTED): 99,
            ("payment.lock", "INSUFFICIENT_FUNDS"): 1,
            ("attestation.forged", "SIGNATURE_INVALID"): 1,
            ("attestation.replayed", "ATTESTATION_REPLAYED"): 1,
            ("attestation.valid", ACCEPTED): 1,
            ("settlement.pvp", ACCEPTED): 9,
            ("settlement.pvp", "UNAVAILABLE"): 1,
        }
    )
    for second in range(1, 11):
        record.timeline.append(
            TimelineSample(
                at_s=float(second),
                settlements_total=second * 12,
                escrow_held_minor={"CNY": 1_000_000 * (second % 4), "HKD": 250_000 * second},
                supply_minor={"CNY": 50_000_000_00, "HKD": 8_000_000_00 + 10_000 * second},
            )
        )
    record.settlements_total = 120
    record.faults = Counter({"server_kill": 1, "bridge:drop_reply": 7})
    record.invariants = [
        InvariantResult("supply_equals_balances", True, "CNY 5,000,000,000 = Σ balances; HKD too"),
        InvariantResult("no_negative_balance", True, "412 wallets, none below zero", "round 3"),
        InvariantResult("forged_attestations_refused", False, HOSTILE),
    ]
    return record


def test_nearest_rank_is_an_observed_value() -> None:
    values = [1.0, 3.0, 5.0]
    assert [nearest_rank(values, p) for p in (1, 33, 34, 50, 66, 67, 100)] == [
        1.0,
        1.0,
        3.0,
        3.0,
        3.0,
        5.0,
        5.0,
    ]
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 50)


def test_report_json_figures(tmp_path: Path) -> None:
    record = _run()
    path = write_json(record, tmp_path / "report.json")
    document = orjson.loads(path.read_bytes())

    assert list(document) == [
        "scenario",
        "seed",
        "passed",
        "started_at",
        "duration_s",
        "server",
        "database",
        "ledger_fingerprint",
        "settlements_total",
        "settlements_per_second",
        "operations",
        "latency_ms",
        "invariants",
        "faults",
        "timeline",
    ]
    assert document["scenario"] == "trade-finance <mixed>"
    assert document["seed"] == 42
    assert document["passed"] is False
    assert document["settlements_total"] == 120
    assert document["settlements_per_second"] == 12.0
    assert [(i["name"], i["pass"], i["when"]) for i in document["invariants"]] == [
        ("supply_equals_balances", True, "final"),
        ("no_negative_balance", True, "round 3"),
        ("forged_attestations_refused", False, "final"),
    ]
    assert document["invariants"][2]["detail"] == HOSTILE

    # Nearest rank over every call, refused ones included.
    assert document["latency_ms"] == {
        "LockPayment": {"count": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0},
        "SettlePvP": {"count": 10, "p50": 12.5, "p95": 25.0, "p99": 25.0, "max": 25.0},
        "SubmitAttestation": {"count": 3, "p50": 3.0, "p95": 5.0, "p99": 5.0, "max": 5.0},
    }
    assert {"operation": "payment.lock", "outcome": "INSUFFICIENT_FUNDS", "count": 1} in document[
        "operations"
    ]
    assert document["operations"] == sorted(
        document["operations"], key=lambda o: (o["operation"], o["outcome"])
    )
    assert sum(o["count"] for o in document["operations"]) == 113
    assert document["faults"] == {"bridge:drop_reply": 7, "server_kill": 1}
    assert len(document["timeline"]) == 10
    assert document["timeline"][-1] == {
        "at_s": 10.0,
        "settlements_total": 120,
        "escrow_held_minor": {"CNY": 2_000_000, "HKD": 2_500_000},
        "supply_minor": {"CNY": 50_000_000_00, "HKD": 8_001_000_00},
    }

    # Deterministic: the same run gives the same bytes.
    again = write_json(record, tmp_path / "again.json")
    assert again.read_bytes() == path.read_bytes()


def test_a_run_without_invariants_does_not_pass(tmp_path: Path) -> None:
    record = RunRecord(scenario="empty", seed=1, server="s", database="sqlite")
    json_path, html_path = write_reports(record, tmp_path / "out")
    assert orjson.loads(json_path.read_bytes())["passed"] is False
    page = html_path.read_text()
    assert "FAIL: no invariant was checked" in page
    assert "<svg" not in page  # no data, no empty plots


def test_summary_names_every_invariant_with_its_result() -> None:
    record = _run()
    console = Console(record=True, width=120, file=io.StringIO())
    print_summary(record, console)
    text = console.export_text()

    for name, result in [
        ("supply_equals_balances", "PASS"),
        ("forged_attestations_refused", "FAIL"),
        # A check during the run that held is folded into one line.
        ("(checks during the run)", "PASS"),
    ]:
        line = next(line for line in text.splitlines() if name in line)
        assert result in line, line
    assert "no_negative_balance" not in text
    assert "1 of 1 held" in text
    assert "[bold red]not markup[/]" in text  # a detail is shown as it is, never read as markup
    assert "SIGNATURE_INVALID 1" in text
    assert "bridge:drop_reply" in text
    assert text.rstrip().splitlines()[-1] == (
        "FAIL: 1 of 3 invariants failed: forged_attestations_refused"
    )


def test_a_check_that_failed_during_the_run_is_shown_whole() -> None:
    record = _run()
    record.invariants.append(
        InvariantResult("held_equals_open_escrows", False, "CNY held 5 != escrows 4", "round 2")
    )
    console = Console(record=True, width=120, file=io.StringIO())
    print_summary(record, console)
    text = console.export_text()
    line = next(line for line in text.splitlines() if "held_equals_open_escrows" in line)
    assert "FAIL" in line
    assert "round 2" in line
    assert "1 of 2 held" in text


def test_report_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    record = _run()
    page = write_html(record, tmp_path / "report.html").read_text()

    assert len(re.findall(r"<svg\b", page)) == 4
    for plot in ("throughput", "latency", "escrow", "supply"):
        assert f'id="plot-{plot}"' in page
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;" in page
    assert "trade-finance &lt;mixed&gt;" in page
    assert '<span class="badge fail">FAIL</span>' in page
    # One entry per currency in the per-currency plots' legends.
    assert page.count(">CNY</text>") == 2
    assert page.count(">HKD</text>") == 2
    assert render_html(record) == page  # deterministic


def test_without_matplotlib_the_report_says_how_to_get_its_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """matplotlib is the condpay[sim] extra: without it report.html keeps its tables and says,
    in place of each plot, how to install it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` -> ImportError
    page = write_html(_run(), tmp_path / "report.html").read_text()
    assert "<svg" not in page
    assert page.count("matplotlib is not installed (pip install &#x27;condpay[sim]&#x27;)") == 4
    assert "forged_attestations_refused" in page  # the rest of the report is all there


def test_without_matplotlib_condpay_sim_run_says_so_in_one_line() -> None:
    """In a fresh interpreter where matplotlib cannot be imported: the simulator's modules import
    (matplotlib is imported only to draw), and `condpay sim run` says so in one line."""
    script = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from launcher import main\n"
        # A run refused before any trade (--bridge without --server): the notice comes first.
        "sys.exit(main(['sim', 'run', 'smoke', '--bridge', '127.0.0.1:1']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"condpay sim: {PLOTS_MISSING}"
    assert lines[1].startswith("condpay sim: --bridge goes with --server")
    assert len(lines) == 2
    assert done.stderr == ""


def test_report_html_renders_in_chromium(tmp_path: Path, chromium: Path) -> None:
    _, html_path = write_reports(_run(), tmp_path)
    png = screenshot(html_path, tmp_path / "report.png", width=1280, height=1600, chromium=chromium)
    print(f"\nreport screenshot: {png}")

    assert png.stat().st_size > 10_000
    assert png_size(png) == (1280, 1600)
    image = read_png(png)
    assert (image.width, image.height) == (1280, 1600)
    colours = {pixel[:3] for pixel in image.distinct_colours(row_step=4)}
    assert len(colours) > 50, "a blank or near-blank page"
    assert bytes(FAIL_COLOUR) in colours, "the red FAIL badge is not on screen"
