"""``make bench`` = ``python -m tests.bench``: in one run, the echo baseline and the transfer cells
(:mod:`tests.bench.transfers` -> ``var/bench/transfers.json``), then the conditional-payment
lifecycle cells (:mod:`tests.bench.lifecycles` -> ``var/bench/lifecycles.json``), then the PvP
and DvP cells through the bridge (:mod:`tests.bench.settlements` ->
``var/bench/settlements.json``), whose ratios are to that echo baseline and those transfer cells,
then the contract language server (:mod:`tests.bench.dsl_lsp` -> ``var/bench/dsl_lsp.json``).
Options are the transfer bench's (``--concurrency`` sets the lifecycle cells' too; the settlement
cells keep 16, 64, 256 unless another is given); each part also runs alone (``python -m
tests.bench.transfers``, ``... lifecycles``, ``... settlements``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from tests.bench import dsl_lsp, lifecycles, settlements, transfers


def main(argv: Sequence[str] | None = None) -> int:
    config = transfers.parse_args(argv)
    report = asyncio.run(transfers.run(config))
    status = transfers.finish(report, config)
    lifecycle_config = lifecycles.LifecycleConfig(
        seconds=config.seconds,
        warmup_seconds=config.warmup_seconds,
        concurrencies=config.concurrencies,
        backends=config.backends,
    )
    lifecycle_report = asyncio.run(lifecycles.run(lifecycle_config, references=report.cells))
    status = max(status, lifecycles.finish(lifecycle_report, lifecycle_config.output))
    given = config.concurrencies != transfers.BenchConfig().concurrencies
    settlement_config = settlements.SettlementConfig(
        seconds=config.seconds,
        warmup_seconds=config.warmup_seconds,
        concurrencies=(
            config.concurrencies if given else settlements.SettlementConfig().concurrencies
        ),
        backends=config.backends,
    )
    settlement_report = asyncio.run(settlements.run(settlement_config, references=report.cells))
    status = max(status, settlements.finish(settlement_report, settlement_config.output))
    return max(status, dsl_lsp.main([]))  # the language server on a 64 KiB contract


if __name__ == "__main__":
    sys.exit(main())
