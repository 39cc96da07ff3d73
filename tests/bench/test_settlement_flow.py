"""The settlement benchmark's flows, short: the bridge and the core as processes (as the bench
runs them) on SQLite, the bench's set-up, a few PvPs and DvPs through the load generator's flow
runner (in this process), the cells and checks they make, and the JSON fields."""

from __future__ import annotations

from pathlib import Path

from sim_central_bank.bridge_process import BridgeProcess
from tests.bench.condpay_server import condpay_server
from tests.bench.load import FlowResult, FlowSpec, measure_flows
from tests.bench.settlement_setup import (
    STEP_DVP,
    STEP_PVP,
    STEP_QUOTE,
    build_settlement_world,
    dvp_flows,
    issue_titles,
    pvp_flows,
    title_ids,
)
from tests.bench.settlements import Seen, SettlementCell, SettlementReport, check_backend


def _cell(kind: str, result: FlowResult) -> SettlementCell:
    return SettlementCell.build(
        kind=kind,
        backend="sqlite",
        mode="closed",
        concurrency=2,
        workers=1,
        start_rate=None,
        attempts=[result],
        quiet_wait_seconds=0.0,
        supply_consistent=True,
    )


async def test_pvp_and_dvp_flows_reach_final_and_both_ledgers_agree(tmp_path: Path) -> None:
    bridge = BridgeProcess(tmp_path / "bridge.sqlite", tmp_path / "bridge-logs")
    await bridge.start()
    try:
        url = f"sqlite:///{tmp_path}/condpay.db"
        async with condpay_server(
            url, log_path=tmp_path / "core.log", env=bridge.core_env()
        ) as server:
            world = await build_settlement_world(server.address, pairs=2)
            titles = await issue_titles(server.address, world, 3, "t-dvp")
            assert titles == title_ids(world, 3, "t-dvp")
            quoted_titles = await issue_titles(server.address, world, 3, "t-dvp-q")
            seen = Seen()
            report = SettlementReport(machine={}, method={}, references=[])
            for kind, market, flows in (
                ("pvp", True, pvp_flows(world, 3, "t-pvp")),
                ("dvp", True, dvp_flows(world, titles, "t-dvp")),
                ("pvp", False, pvp_flows(world, 3, "t-pvp-q", market=False)),
                ("dvp", False, dvp_flows(world, quoted_titles, "t-dvp-q", market=False)),
            ):
                spec = FlowSpec(
                    address=server.address,
                    flows=flows,
                    concurrency=2,
                    warmup_seconds=0.0,
                    seconds=10.0,
                    channels=2,
                )
                result = await measure_flows(spec)
                assert result.flows_exhausted
                assert result.timed.completed == 3, (result.timed.errors, result.timed.outcomes)
                assert result.timed.outcomes == {}
                assert result.timed.clock_latency.p99 > 0
                settle = STEP_PVP if kind == "pvp" else STEP_DVP
                # At market one Settle call (and polls if it answers before FINAL); quoted, a
                # QuoteFx first.
                assert settle in result.timed.steps
                assert (STEP_QUOTE in result.timed.steps) is not market
                seen.add(result, kind)
                report.cells.append(_cell(kind, result))
            await check_backend(
                report,
                "test",
                address=server.address,
                database_url=url,
                bridge=bridge,
                world=world,
                seen=seen,
            )
            assert report.checks, "no checks ran"
            assert all(c.ok for c in report.checks), report.checks
        assert server.exit_status == 0
    finally:
        assert await bridge.stop() == 0

    document = report.document()
    assert document["schema"] == "condpay.bench.settlements/1"
    cells = document["cells"]
    assert isinstance(cells, list)
    assert [c["kind"] for c in cells] == ["pvp", "dvp", "pvp", "dvp"]
    for row in cells:
        assert row["completed"] == 3
        for name in ("per_second", "time_to_final_ms", "cpu_ms_per_settlement", "to_echo"):
            assert name in row
    summary = document["summary"]
    assert isinstance(summary, dict)
    assert summary["sqlite_dvp"]["best_per_second"] == max(
        cells[1]["per_second"], cells[3]["per_second"]
    )
