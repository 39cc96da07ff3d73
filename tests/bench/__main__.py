"""``make bench`` = ``python -m tests.bench``: in one run, the echo baseline and the transfer cells
(:mod:`tests.bench.transfers` -> ``var/bench/transfers.json``), then the conditional-payment
lifecycle cells (:mod:`tests.bench.lifecycles` -> ``var/bench/lifecycles.json``), whose ratios are
to that echo baseline and those transfer cells. Options are the transfer bench's; each part also
runs alone (``python -m tests.bench.transfers``, ``python -m tests.bench.lifecycles``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from tests.bench import lifecycles, transfers


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
    return max(status, lifecycles.finish(lifecycle_report, lifecycle_config.output))


if __name__ == "__main__":
    sys.exit(main())
