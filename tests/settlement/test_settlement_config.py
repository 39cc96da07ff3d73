"""Settlement settings: PvP timings that could never commit are refused at load, and the workers
of ``condpay serve --workers N`` never each open an in-process bridge."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest
from condpay.v1 import settlement_pb2

from settlement.api import workers
from settlement.clock import ManualClock
from settlement.config import Settings, check_pvp_timing
from tests.settlement.audit import open_trade
from tests.settlement.world import pvp_request

PG = "postgresql://condpay@db.example/condpay"


# -- PvP timing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("hold", "margin"), [("10000", "5000"), ("9000", "5000"), ("0", "0")])
def test_a_hold_not_above_twice_the_margin_is_refused_at_load(hold: str, margin: str) -> None:
    env = {"CONDPAY_PVP_HOLD_MS": hold, "CONDPAY_PVP_MARGIN_MS": margin}
    with pytest.raises(ValueError, match="more than twice") as refused:
        Settings.from_env(env)
    assert "CONDPAY_PVP_HOLD_MS" in str(refused.value)
    assert "CONDPAY_PVP_MARGIN_MS" in str(refused.value)


def test_a_negative_margin_is_refused_and_sane_timings_load() -> None:
    with pytest.raises(ValueError, match="CONDPAY_PVP_MARGIN_MS"):
        Settings.from_env({"CONDPAY_PVP_HOLD_MS": "30000", "CONDPAY_PVP_MARGIN_MS": "-1"})
    assert (Settings.from_env({}).pvp_hold_ms, Settings.from_env({}).pvp_margin_ms) == (
        30_000,
        5_000,
    )
    loaded = Settings.from_env({"CONDPAY_PVP_HOLD_MS": "10001", "CONDPAY_PVP_MARGIN_MS": "5000"})
    assert (loaded.pvp_hold_ms, loaded.pvp_margin_ms) == (10_001, 5_000)
    check_pvp_timing(1, 0)


@pytest.mark.parametrize(
    ("hold_ms", "state"),
    [
        (10_000, settlement_pb2.SETTLEMENT_STATE_ABORTED),
        (10_001, settlement_pb2.SETTLEMENT_STATE_FINAL),
    ],
)
async def test_the_timing_rule_is_the_coordinators(
    database_url: str, hold_ms: int, state: settlement_pb2.SettlementState
) -> None:
    """With no time passing between the hold and the bridge prepare (a ManualClock), a hold of
    exactly twice the margin still aborts every settlement, and one more millisecond commits:
    the rule check_pvp_timing enforces is the coordinator's own boundary."""
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock, pvp_hold_ms=hold_ms) as trade:
        await trade.fund("buyer", "HKD", 200_000_00)
        client = trade.platform
        buyer_key, buyer = trade.party("buyer")
        quote = await client.quote_fx("HKD", "CNY", target_amount_minor=10_000_00)
        reply = await client.api.settlements.settle_pvp(
            pvp_request(buyer_key, buyer, trade.wallets["seller"], quote, request_id="timing"),
        )
        assert reply.settlement.state == state, reply.settlement
        if state == settlement_pb2.SETTLEMENT_STATE_ABORTED:
            assert reply.settlement.abort_reason == "DECISION_DEADLINE"


# -- workers and the bridge ------------------------------------------------------------------------
class _Child:
    pid = 4242

    def poll(self) -> int:
        return 0


def started_workers(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, environ: dict[str, str]
) -> tuple[list[dict[str, str]], list[tuple[str, dict[str, Any]]]]:
    """Run serve_workers with the children's processes, the migration and the signal handlers
    stubbed out; returns each child's environment and the warnings logged."""
    children: list[dict[str, str]] = []
    warnings: list[tuple[str, dict[str, Any]]] = []

    def popen(args: list[str], *, env: dict[str, str], **_kwargs: Any) -> _Child:
        children.append(env)
        return _Child()

    async def migrate(_settings: Settings) -> None:
        return None

    class Log:
        def warning(self, event: str, **fields: Any) -> None:
            warnings.append((event, fields))

        def info(self, event: str, **fields: Any) -> None:
            pass

        def error(self, event: str, **fields: Any) -> None:
            pass

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(workers, "_migrate", migrate)
    monkeypatch.setattr(workers, "log", Log())
    monkeypatch.setattr(workers.signal, "signal", lambda *_args: None)
    for name in [n for n in workers.os.environ if n.startswith("CONDPAY_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert workers.serve_workers(settings) == 0
    return children, warnings


def test_workers_with_the_auto_bridge_run_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONDPAY_BRIDGE=auto means no bridge with more than one worker: each child is told
    ``none`` (it sees CONDPAY_WORKERS=1, so it cannot tell by itself), warned once."""
    settings = Settings(addr="127.0.0.1:50099", database_url=PG, workers=3, bridge="auto")
    children, warnings = started_workers(monkeypatch, settings, {"CONDPAY_BRIDGE": "auto"})
    assert len(children) == 3
    for env in children:
        assert env["CONDPAY_BRIDGE"] == "none"
        assert env["CONDPAY_WORKERS"] == "1"
        assert Settings.from_env(env).worker_count() == 1
    assert [event for event, _ in warnings] == ["bridge_disabled"]


def test_auto_workers_on_postgresql_also_run_without_a_bridge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    settings = Settings(addr="127.0.0.1:50099", database_url=PG, workers=0, bridge="auto")
    children, warnings = started_workers(monkeypatch, settings, {})
    assert [env["CONDPAY_BRIDGE"] for env in children] == ["none", "none"]
    assert [event for event, _ in warnings] == ["bridge_disabled"]


def test_workers_keep_a_bridge_they_can_share(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        addr="127.0.0.1:50099", database_url=PG, workers=2, bridge="grpc://bridge:50061"
    )
    children, warnings = started_workers(
        monkeypatch, settings, {"CONDPAY_BRIDGE": "grpc://bridge:50061"}
    )
    assert [env["CONDPAY_BRIDGE"] for env in children] == ["grpc://bridge:50061"] * 2
    assert warnings == []


# -- BLS verification threads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "database_url", "workers_", "setting", "each_child"),
    [
        (2, PG, 0, "auto", 0),  # one worker per CPU: no CPU spare, verify on the loop
        (4, PG, 2, "auto", 2),  # two CPUs spare
        (2, PG, 2, "3", 3),  # set: kept as set
    ],
)
def test_workers_verify_beside_the_loop_with_the_cpus_the_group_leaves_spare(
    monkeypatch: pytest.MonkeyPatch,
    cpus: int,
    database_url: str,
    workers_: int,
    setting: str,
    each_child: int,
) -> None:
    """A worker sees CONDPAY_WORKERS=1, so the group's count comes from the parent."""
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    env = {"CONDPAY_WORKERS": str(workers_ or "auto"), "CONDPAY_VERIFY_THREADS": setting}
    settings = Settings.from_env({**env, "CONDPAY_DATABASE_URL": database_url})
    children, _ = started_workers(monkeypatch, settings, env)
    assert len(children) == settings.worker_count()
    for child in children:
        assert Settings.from_env(child).verify_thread_count() == each_child


def test_one_sqlite_process_verifies_beside_the_loop_and_a_bad_count_is_refused() -> None:
    assert Settings.from_env({}).verify_thread_count() == max(0, (os.cpu_count() or 1) - 1)
    assert Settings.from_env({"CONDPAY_VERIFY_THREADS": "0"}).verify_thread_count() == 0
    with pytest.raises(ValueError, match="CONDPAY_VERIFY_THREADS"):
        Settings.from_env({"CONDPAY_VERIFY_THREADS": "-1"})
