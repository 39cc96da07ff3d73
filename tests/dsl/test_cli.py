"""The command line, through `main([...])` and `python -m contracts_dsl`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contracts_dsl.cli import main

from ._support import EXAMPLES, ROOT

OWD = EXAMPLES / "overseas-warehouse-delivery.contract"
CLEAN = EXAMPLES / "dvp-ebl.contract"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "check", str(CLEAN))
    assert code == 0
    assert out.startswith(f"{CLEAN}: ok (")
    assert len(out.split("(")[1].rstrip(")\n")) == 64
    # A warning does not fail the check.
    code, out = _run(capsys, "check", str(OWD))
    assert code == 0
    assert out.startswith("warning[CD065]: ")
    assert out.endswith(f"{OWD}: 0 error(s), 1 warning(s)\n")


def test_check_errors_exit_1_with_carets(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.contract"
    bad.write_text(OWD.read_text().replace("pay 30% to seller", "pay 30% to sellr"))
    code, out = _run(capsys, "check", str(OWD), str(bad))
    assert code == 1
    assert "error[CD020]: unknown name `sellr`" in out
    assert f"--> {bad}:21:17" in out
    assert "^^^^^ not declared" in out


def test_check_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.contract"
    bad.write_text('contract "x" version 1\nparam a : walet\n')
    code, out = _run(capsys, "check", "--json", str(OWD), str(bad), str(tmp_path / "missing"))
    assert code == 1
    reports = json.loads(out)
    assert [r["ok"] for r in reports] == [True, False, False]
    found = {(d["code"], d["line"], d["column"]) for d in reports[1]["diagnostics"]}
    assert ("CD002", 2, 11) in found
    assert reports[2]["error"] == "unreadable"


def test_warnings_do_not_fail_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    warned = tmp_path / "w.contract"
    warned.write_text(
        OWD.read_text().replace(
            "param declaration : text", "param declaration : text\nparam spare : text"
        )
    )
    code, out = _run(capsys, "check", str(warned))
    assert code == 0
    assert "warning[CD026]" in out


def test_fmt_check_and_rewrite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    messy = tmp_path / "m.contract"
    messy.write_text(OWD.read_text().replace("param buyer       : wallet", "param buyer:wallet"))
    code, out = _run(capsys, "fmt", "--check", str(messy))
    assert (code, out.strip()) == (1, f"{messy}: would be reformatted")
    code, out = _run(capsys, "fmt", str(messy))
    assert code == 0
    assert messy.read_text() == OWD.read_text()
    code, out = _run(capsys, "fmt", "--check", str(messy))
    assert (code, out) == (0, "")


def test_fmt_refuses_syntax_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.contract"
    bad.write_text('contract "x" version 1\nparam a : walet\n')
    code, out = _run(capsys, "fmt", str(bad))
    assert code == 1
    assert "CD002" in out
    assert bad.read_text() == 'contract "x" version 1\nparam a : walet\n'


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "explain", str(OWD))
    assert code == 0
    assert "Payment terms:" in out
    code, out = _run(capsys, "explain", str(OWD), "--lang", "zh")
    assert code == 0
    assert "付款条款：" in out


def test_simulate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    params = tmp_path / "p.json"
    params.write_text(
        json.dumps({"buyer": "wb", "seller": "ws", "price": "100.00 CNY", "declaration": "D"})
    )
    events = tmp_path / "e.jsonl"
    events.write_text(
        "\n".join(
            json.dumps(e)
            for e in [
                {
                    "id": "c1",
                    "type": "customs.cleared",
                    "oracle": "customs",
                    "observed_at": "2026-05-01T00:00:00Z",
                    "attributes": {"declaration": "D"},
                },
                {
                    "id": "a1",
                    "type": "iot.arrived",
                    "oracle": "sensors",
                    "observed_at": "2026-05-02T00:00:00Z",
                    "attributes": {"site": "ELSEWHERE"},
                },
                {
                    "id": "a2",
                    "type": "iot.arrived",
                    "oracle": "sensors",
                    "observed_at": "2026-05-03T00:00:00Z",
                    "attributes": {"site": "LAX-FBA-3"},
                },
            ]
        )
        + "\n"
    )
    code, out = _run(
        capsys,
        "simulate",
        str(OWD),
        "--params",
        str(params),
        "--events",
        str(events),
        "--now",
        "2027-01-01T00:00:00Z",
    )
    assert code == 0
    assert "step 2: event a1 iot.arrived by sensors at 2026-05-02T00:00:00Z" in out
    assert "no match for arrival: `site` is 'ELSEWHERE', needs == 'LAX-FBA-3'" in out
    assert "leg arrival/0: pay 30.00 CNY to seller (ws)" in out
    assert "step 4: time passes to 2027-01-01T00:00:00Z" in out
    assert "leg deadline/0: refund 70.00 CNY to buyer (wb)" in out
    assert out.rstrip().endswith("escrow left: 0.00 CNY; terminal (deadline)")
    code, out = _run(
        capsys, "simulate", str(OWD), "--params", str(params), "--events", str(events), "--json"
    )
    assert code == 0
    steps = json.loads(out)
    assert [leg["amount_minor"] for step in steps for leg in step["legs"]] == [3000]


def test_simulate_bad_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"buyer": "wb"}))
    events = tmp_path / "e.jsonl"
    events.write_text('{"id": "x"}\n')
    code, out = _run(capsys, "simulate", str(OWD), "--params", str(params), "--events", str(events))
    assert code == 2
    assert "e.jsonl:1" in out
    events.write_text("")
    code, out = _run(capsys, "simulate", str(OWD), "--params", str(params), "--events", str(events))
    assert code == 1
    assert "parameter error PV001 declaration" in out


def test_test_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = _run(capsys, "test", str(EXAMPLES))
    assert code == 0
    assert out.count("PASS ") == len(list(EXAMPLES.glob("*.contract")))
    shutil.copy(OWD, tmp_path / "x.contract")
    spec = json.loads(OWD.with_name("overseas-warehouse-delivery.spec.json").read_text())
    spec["cases"][0]["expect"]["legs"][0]["amount_minor"] = 1
    (tmp_path / "x.spec.json").write_text(json.dumps(spec))
    (tmp_path / "lonely.contract").write_text(OWD.read_text())
    code, out = _run(capsys, "test", str(tmp_path))
    assert code == 1
    assert "FAIL" in out
    assert "amount_minor is 3750000, expected 1" in out
    assert "SKIP" in out
    assert "lonely" in out


def test_expected_diagnostics_in_a_spec(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "bad.contract").write_text(
        OWD.read_text().replace("pay 30% to seller", "pay 96% to seller")
    )
    (tmp_path / "bad.spec.json").write_text(
        json.dumps({"expect_diagnostics": [{"code": "CD045", "line": 29}]})
    )
    code, out = _run(capsys, "test", str(tmp_path / "bad.contract"))
    assert code == 0, out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert main(["explain", str(OWD), "--lang", "fr"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_python_dash_m(tmp_path: Path) -> None:
    bad = tmp_path / "bad.contract"
    bad.write_text('contract "x" version 1\nparam a : walet\n')
    result = subprocess.run(
        [sys.executable, "-m", "contracts_dsl", "check", str(CLEAN), str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "\x1b[" not in result.stdout  # no terminal control codes when not a TTY
    assert "error[CD002]: unexpected `walet`" in result.stdout
    assert f"{CLEAN}: ok" in result.stdout
