"""The lifecycle benchmark's flow, short: one real server on SQLite, the bench's own set-up and
pre-signed lifecycles, the load generator's flow runner (in this process), the cell it makes and
its JSON fields."""

from __future__ import annotations

from pathlib import Path

from condpay.client import PaymentsClient
from condpay.v1 import payment_pb2

from tests.bench.lifecycle_setup import (
    PRICE_MINOR,
    RELEASED_BY_STEP,
    STEPS,
    build_lifecycle_world,
    contract_source,
    lifecycle_flows,
    oracle_set_version,
)
from tests.bench.lifecycles import LifecycleCell, LifecycleReport, Moved, check_server
from tests.bench.load import FlowSpec, measure_flows
from tests.support.harness import CENTRAL_BANK, start_harness


def test_the_deadline_is_moved_ahead() -> None:
    source = contract_source()
    (line,) = [text for text in source.splitlines() if text.startswith("deadline ")]
    assert "2026-12-31" not in line
    assert line.endswith("-> refund remainder to buyer")


async def test_a_lifecycle_flow_completes_and_reports(tmp_path: Path) -> None:
    async with start_harness(f"sqlite:///{tmp_path}/condpay.db") as harness:
        world = await build_lifecycle_world(harness.address, pairs=2)
        version = await oracle_set_version(harness.address)
        flows = lifecycle_flows(world, 3, "test", version)
        spec = FlowSpec(
            address=harness.address,
            flows=flows,
            concurrency=2,
            warmup_seconds=0.0,
            seconds=5.0,
            channels=2,
        )
        result = await measure_flows(spec)

        assert result.flows_exhausted
        assert result.timed.completed == 3
        assert result.timed.errors == {}
        assert sorted(result.timed.completed_labels) == sorted(f.label for f in flows)
        assert set(result.timed.steps) == set(STEPS)
        assert {n for n, s in result.timed.steps.items() if s.releases} == set(RELEASED_BY_STEP)
        assert result.timed.release_latency.p99 > 0

        client = PaymentsClient(harness.address, caller=CENTRAL_BANK)
        try:
            payment = await client.get_payment(flows[0].label)
        finally:
            await client.close()
        assert payment.state == payment_pb2.PAYMENT_STATE_SETTLED
        assert payment.released.amount_minor == PRICE_MINOR

        moved = Moved()
        moved.add(result)
        report = LifecycleReport(machine={}, method={}, references=[])
        await check_server(report, "test", harness.address, world, moved)
        assert [c.ok for c in report.checks] == [True, True, True], report.checks

        cell = LifecycleCell.build(
            backend="sqlite",
            mode="closed",
            concurrency=2,
            workers=1,
            start_rate=None,
            attempts=[result],
            quiet_wait_seconds=0.0,
            supply_consistent=True,
        )
        report.cells.append(cell)
        document = report.document()
        assert document["schema"] == "condpay.bench.lifecycles/1"
        cells = document["cells"]
        assert isinstance(cells, list)
        (row,) = cells
        assert isinstance(row, dict)
        for name in (
            "per_second",
            "rpc_ms",
            "release_latency_ms",
            "cpu_ms_per_lifecycle",
            "request_bytes",
            "response_bytes",
            "to_echo",
            "to_transfers",
        ):
            assert name in row
        assert row["completed"] == 3
        assert set(row["rpc_ms"]) == set(STEPS)
        assert row["response_bytes"]["LockPayment"] > 0
        summary = document["summary"]
        assert isinstance(summary, dict)
        assert summary["targets"]["sqlite_per_second"]["measured"] == cell.per_second
