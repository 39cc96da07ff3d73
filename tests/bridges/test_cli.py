"""``serve``'s fault plan: the environment's plan, then each ``--fault`` over it, a ``seed=N``
inside ``--fault`` included, then ``--fault-seed`` when given."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bridges._server
from bridges import FaultPlan
from bridges.cli import fault_plan, main

ENV = {"CONDPAY_BRIDGE_FAULTS": "reject=50", "CONDPAY_BRIDGE_FAULT_SEED": "4"}


def test_a_seed_inside_fault_is_kept() -> None:
    assert fault_plan(["drop_reply=30,seed=7"], env={}) == FaultPlan(seed=7, drop_reply_percent=30)


def test_the_seed_precedence_is_env_then_fault_then_fault_seed() -> None:
    assert fault_plan([], env=ENV) == FaultPlan(seed=4, reject_percent=50)
    assert fault_plan(["drop_reply=30"], env=ENV) == FaultPlan(
        seed=4, reject_percent=50, drop_reply_percent=30
    )
    assert fault_plan(["drop_reply=30,seed=7"], env=ENV).seed == 7
    assert fault_plan(["seed=7", "drop_reply=30"], env=ENV).seed == 7
    assert fault_plan(["drop_reply=30,seed=7"], 9, env=ENV).seed == 9
    assert fault_plan([], 9, env=ENV).seed == 9
    only_seed = {"CONDPAY_BRIDGE_FAULT_SEED": "5"}  # a seed without faults still counts
    assert fault_plan(["drop_reply=30"], env=only_seed).seed == 5
    assert fault_plan([], env={}) == FaultPlan()


def test_a_later_switch_overrides_the_environments() -> None:
    plan = fault_plan(["reject=10"], env=ENV)
    assert (plan.reject_percent, plan.seed) == (10, 4)


@pytest.mark.parametrize(
    ("argv", "env", "seed"),
    [
        (["--fault", "drop_reply=30,seed=7"], {}, 7),
        (["--fault", "drop_reply=30,seed=7"], ENV, 7),
        (["--fault", "drop_reply=30,seed=7", "--fault-seed", "9"], ENV, 9),
        (["--fault", "drop_reply=30"], ENV, 4),
    ],
)
def test_serve_gets_the_seed_by_that_precedence(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    seed: int,
) -> None:
    served: dict[str, Any] = {}

    async def serve(*args: object, **kwargs: Any) -> None:
        served.update(kwargs)

    monkeypatch.setattr(bridges._server, "serve", serve)
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    for name in ("CONDPAY_BRIDGE_FAULTS", "CONDPAY_BRIDGE_FAULT_SEED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--state", str(tmp_path / "x.db"), "--insecure", *argv]) == 0
    plan = served["plan"]
    assert (plan.seed, plan.drop_reply_percent) == (seed, 30)


def test_a_bad_environment_spec_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONDPAY_BRIDGE_FAULTS", "explode")
    assert main(["serve", "--state", str(tmp_path / "x.db")]) == 2
    assert "unknown fault switch 'explode'" in capsys.readouterr().err


def test_the_bridge_logs_json_lines_like_the_core() -> None:
    """`bridge serve` configures this: each record, tracebacks included, is one JSON object."""
    code = (
        "import logging\n"
        "from bridges._logging import configure_json_logging\n"
        "configure_json_logging()\n"
        "log = logging.getLogger('condpay.bridge')\n"
        "log.info('block %d sealed', 7)\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    log.exception('block timer')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(r["event"], r["level"], r["logger"]) for r in lines] == [
        ("block 7 sealed", "info", "condpay.bridge"),
        ("block timer", "error", "condpay.bridge"),
    ]
    assert "ZeroDivisionError" in lines[1]["exception"]
    assert all(r["timestamp"].endswith("Z") for r in lines)
