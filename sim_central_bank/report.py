"""The simulator's report: what one run did, how fast, and whether the ledger stayed sound.

One :class:`~sim_central_bank.record.RunRecord`, three renderings:

- :func:`summary` / :func:`print_summary`: rich tables for the terminal (operations accepted and
  refused by reason, settlements, latency per RPC, faults injected, each invariant PASS/FAIL with
  its detail) and a final verdict line;
- :func:`write_json`: ``report.json`` for machines, keys in a fixed order, so equal runs give
  equal bytes;
- :func:`write_html`: ``report.html`` for people, one self-contained page (inline CSS, inline SVG
  plots drawn by matplotlib, no external URL) with the same tables and plots of throughput,
  latency, escrow held and supply over time. matplotlib is the ``condpay[sim]`` extra, imported
  only to draw: without it the page says, in place of each plot, how to install it
  (:data:`PLOTS_MISSING`), and ``condpay sim run`` says so in one line.

:func:`write_reports` writes both files into a folder.

Latency percentiles are **nearest-rank**: the p-th percentile of n samples is the smallest sample
with at least p % of the samples at or below it (the ⌈p·n/100⌉-th smallest), so it is always a
latency that was observed, never an interpolation; the same definition as the benchmark's. They
are taken over every call of an RPC, accepted or refused: a refusal costs the caller a round trip
too. Figures are milliseconds rounded to the microsecond.

Every string that came from the run (scenario, RPC names, reasons, invariant details) is data:
it is escaped in the HTML (``html.escape``) and never read as rich markup in the terminal.
"""

from __future__ import annotations

import bisect
import html
import io
import itertools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sim_central_bank.record import ACCEPTED, CallSample, RunRecord, TimelineSample

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

__all__ = [
    "PERCENTILES",
    "PLOTS_MISSING",
    "LatencyStats",
    "OperationRow",
    "latency_stats",
    "nearest_rank",
    "operation_rows",
    "plots_available",
    "print_summary",
    "render_html",
    "report_document",
    "summary",
    "verdict",
    "write_html",
    "write_json",
    "write_reports",
]

PERCENTILES: Final = (50, 95, 99)
JSON_NAME: Final = "report.json"
HTML_NAME: Final = "report.html"

#: RPCs drawn one by one in the latency histogram; the rest are drawn together as "other RPCs".
HISTOGRAM_RPCS_MAX: Final = 6
HISTOGRAM_BINS: Final = 40
#: The accepted-calls curve uses 1-second bins, widened so that a long run has at most this many.
THROUGHPUT_BINS_MAX: Final = 120

#: Said once by ``condpay sim run`` and in place of each plot when matplotlib is not installed.
PLOTS_MISSING: Final = (
    "report.html has no plots: matplotlib is not installed (pip install 'condpay[sim]')"
)

_PASS_COLOUR: Final = "#1a7f37"
_FAIL_COLOUR: Final = "#b42318"


# -- figures shared by the three renderings ------------------------------------------------------


def nearest_rank(sorted_values: Sequence[float], percentile: float) -> float:
    """The smallest value with at least ``percentile`` % of the values at or below it."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(percentile / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """One RPC's latency in milliseconds (nearest-rank percentiles), over all its calls."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, latencies_ms: Iterable[float]) -> LatencyStats:
        ordered = sorted(latencies_ms)
        if not ordered:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        p50, p95, p99 = (round(nearest_rank(ordered, p), 3) for p in PERCENTILES)
        return cls(len(ordered), p50, p95, p99, round(ordered[-1], 3))

    def as_dict(self) -> dict[str, int | float]:
        return {
            "count": self.count,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "max": self.max,
        }


def latency_stats(calls: Iterable[CallSample]) -> dict[str, LatencyStats]:
    """RPC -> its latency figures, RPCs in name order."""
    by_rpc: defaultdict[str, list[float]] = defaultdict(list)
    for call in calls:
        by_rpc[call.rpc].append(call.latency_ms)
    return {rpc: LatencyStats.of(by_rpc[rpc]) for rpc in sorted(by_rpc)}


@dataclass(frozen=True, slots=True)
class OperationRow:
    """One operation type: how often it was accepted, and refused by reason."""

    operation: str
    accepted: int
    refused: dict[str, int]  # reason -> count, reasons in name order

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


def operation_rows(operations: Counter[tuple[str, str]]) -> list[OperationRow]:
    """One row per operation type, in name order; every outcome but ACCEPTED is a refusal."""
    accepted: Counter[str] = Counter()
    refused: defaultdict[str, Counter[str]] = defaultdict(Counter)
    names: set[str] = set()
    for (operation, outcome), count in operations.items():
        names.add(operation)
        if outcome == ACCEPTED:
            accepted[operation] += count
        else:
            refused[operation][outcome] += count
    return [
        OperationRow(name, accepted[name], dict(sorted(refused[name].items())))
        for name in sorted(names)
    ]


def verdict(record: RunRecord) -> str:
    """One line: PASS when every invariant held; a run that checked none does not pass."""
    failed = [result.name for result in record.invariants if not result.passed]
    total = len(record.invariants)
    if not total:
        return "FAIL: no invariant was checked"
    if not failed:
        return f"PASS: all {total} invariants held"
    return f"FAIL: {len(failed)} of {total} invariants failed: {', '.join(failed)}"


def _ordered_timeline(timeline: Iterable[TimelineSample]) -> list[TimelineSample]:
    """Samples in time order, one per instant (the last one read at an instant wins)."""
    by_time: dict[float, TimelineSample] = {}
    for sample in sorted(timeline, key=lambda s: s.at_s):
        by_time[sample.at_s] = sample
    return list(by_time.values())


def _currencies(timeline: Sequence[TimelineSample]) -> list[str]:
    found: set[str] = set()
    for sample in timeline:
        found.update(sample.escrow_held_minor, sample.supply_minor)
    return sorted(found)


def _settlement_rate(timeline: Sequence[TimelineSample]) -> tuple[list[float], list[float]]:
    """(edges, settlements per second between consecutive samples); the run starts at 0 with 0."""
    points = [(sample.at_s, sample.settlements_total) for sample in timeline]
    if points and points[0][0] > 0:
        points.insert(0, (0.0, 0))
    edges = [at_s for at_s, _ in points]
    rates = [
        (later - earlier) / (t1 - t0) for (t0, earlier), (t1, later) in itertools.pairwise(points)
    ]
    return (edges, rates) if rates else ([], [])


def _accepted_call_rate(record: RunRecord) -> tuple[list[float], list[float]]:
    """(edges, accepted RPCs per second in each bin), all RPC types together."""
    accepted = [call.started_s for call in record.calls if call.outcome == ACCEPTED]
    if not accepted:
        return [], []
    span_s = max(record.duration_s, max(accepted), 1e-9)
    width_s = max(1.0, math.ceil(span_s / THROUGHPUT_BINS_MAX))
    bins = max(1, math.ceil(span_s / width_s))
    counts = [0] * bins
    for started_s in accepted:
        counts[min(bins - 1, max(0, int(started_s // width_s)))] += 1
    return [i * width_s for i in range(bins + 1)], [count / width_s for count in counts]


# -- report.json ---------------------------------------------------------------------------------


def report_document(record: RunRecord) -> dict[str, Any]:
    """What report.json holds, keys in a fixed order (maps inside sorted by key)."""
    return {
        "scenario": record.scenario,
        "seed": record.seed,
        "passed": record.passed,
        "started_at": record.started_at,
        "duration_s": record.duration_s,
        "server": record.server,
        "database": record.database,
        "ledger_fingerprint": record.ledger_fingerprint,
        "settlements_total": record.settlements_total,
        "settlements_per_second": round(record.settlements_per_second, 3),
        "operations": [
            {"operation": operation, "outcome": outcome, "count": count}
            for (operation, outcome), count in sorted(record.operations.items())
        ],
        "latency_ms": {rpc: stats.as_dict() for rpc, stats in latency_stats(record.calls).items()},
        "invariants": [
            {
                "name": result.name,
                "pass": result.passed,
                "detail": result.detail,
                "when": result.when,
            }
            for result in record.invariants
        ],
        "faults": dict(sorted(record.faults.items())),
        "timeline": [
            {
                "at_s": sample.at_s,
                "settlements_total": sample.settlements_total,
                "escrow_held_minor": dict(sorted(sample.escrow_held_minor.items())),
                "supply_minor": dict(sorted(sample.supply_minor.items())),
            }
            for sample in sorted(record.timeline, key=lambda s: s.at_s)
        ],
    }


def write_json(record: RunRecord, path: Path | str) -> Path:
    path = Path(path)
    document = report_document(record)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    return path


# -- the terminal --------------------------------------------------------------------------------


def _passfail(passed: bool) -> Text:
    return Text("PASS", style="bold green") if passed else Text("FAIL", style="bold red")


def summary(record: RunRecord) -> Group:
    """The run as rich renderables: header, tables, and the verdict line last."""
    header = Text.assemble(
        ("Scenario ", "bold"),
        (record.scenario, "bold cyan"),
        (f", seed {record.seed}", "bold"),
        f" — {record.database} at {record.server}",
        f", started {record.started_at or '?'}, {record.duration_s:.1f} s",
    )

    operations = Table(title="Operations", title_justify="left")
    operations.add_column("Operation", no_wrap=True)
    operations.add_column("Accepted", justify="right")
    operations.add_column("Refused", justify="right")
    operations.add_column("Refused by reason", overflow="fold")
    for row in operation_rows(record.operations):
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in row.refused.items())
        operations.add_row(
            Text(row.operation), f"{row.accepted:,}", f"{row.refused_total:,}", Text(reasons)
        )

    settlements = Table(title="Settlements", title_justify="left")
    settlements.add_column("Settled", justify="right")
    settlements.add_column("Per second", justify="right")
    settlements.add_column("Duration s", justify="right")
    settlements.add_column("Calls", justify="right")
    settlements.add_column("Ledger fingerprint", overflow="fold")
    settlements.add_row(
        f"{record.settlements_total:,}",
        f"{record.settlements_per_second:,.1f}",
        f"{record.duration_s:,.1f}",
        f"{len(record.calls):,}",
        Text(record.ledger_fingerprint or "-"),
    )

    latency = Table(title="Latency per RPC (ms, nearest rank)", title_justify="left")
    latency.add_column("RPC", no_wrap=True)
    for name in ("Calls", "p50", "p95", "p99", "max"):
        latency.add_column(name, justify="right")
    for rpc, stats in latency_stats(record.calls).items():
        latency.add_row(
            Text(rpc),
            f"{stats.count:,}",
            f"{stats.p50:.3f}",
            f"{stats.p95:.3f}",
            f"{stats.p99:.3f}",
            f"{stats.max:.3f}",
        )

    faults = Table(title="Faults injected", title_justify="left")
    faults.add_column("Fault", no_wrap=True)
    faults.add_column("Times", justify="right")
    for fault, count in sorted(record.faults.items()):
        faults.add_row(Text(fault), f"{count:,}")
    if not record.faults:
        faults.add_row(Text("none", style="dim"), "")

    invariants = Table(title="Invariants", title_justify="left")
    invariants.add_column("Invariant", no_wrap=True)
    invariants.add_column("Result", no_wrap=True)
    invariants.add_column("When", no_wrap=True)
    invariants.add_column("Detail", overflow="fold")
    # The checks made during the run are folded into one line unless one failed; the final
    # checks are shown whole (report.html has every check).
    during = [r for r in record.invariants if r.when != "final"]
    for result in record.invariants:
        if result.when == "final" or not result.passed:
            invariants.add_row(
                Text(result.name), _passfail(result.passed), Text(result.when), Text(result.detail)
            )
    if during:
        rounds = len({r.when for r in during})
        held = sum(r.passed for r in during)
        invariants.add_row(
            Text("(checks during the run)", style="dim"),
            _passfail(held == len(during)),
            Text(f"{rounds} rounds"),
            Text(f"{held} of {len(during)} held"),
        )

    line = verdict(record)
    return Group(
        header,
        operations,
        settlements,
        latency,
        faults,
        invariants,
        Text(line, style="bold green" if record.passed else "bold red"),
    )


def print_summary(record: RunRecord, console: Console | None = None) -> None:
    (console or Console()).print(summary(record))


# -- plots (matplotlib, Agg, inline SVG) ---------------------------------------------------------


def plots_available() -> bool:
    """Whether matplotlib (the ``condpay[sim]`` extra) can be imported to draw the plots."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


_RC: Final[dict[RcKeyType, Any]] = {
    "svg.fonttype": "none",  # text stays text: small, selectable, escaped by matplotlib's writer
    "text.parse_math": False,  # a "$" in an RPC or currency name is a character, not TeX
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _new_figure() -> tuple[Figure, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 3.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(alpha=0.3)
    return figure, axes


def _inline_svg(figure: Figure, name: str, label: str) -> str:
    """The figure as an <svg> element for an HTML page: no XML prolog, DTD, metadata or namespace
    URLs; ids salted by the plot's name so that several plots on a page never share one."""
    import matplotlib

    buffer = io.StringIO()
    salted: dict[RcKeyType, Any] = {**_RC, "svg.hashsalt": f"condpay-{name}"}
    with matplotlib.rc_context(salted):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    svg = re.sub(r'\s+xmlns(?::\w+)?="[^"]*"', "", svg)
    svg = svg.replace("xlink:href=", "href=")
    attributes = f'<svg class="plot" id="plot-{name}" role="img" aria-label="{html.escape(label)}" '
    return svg.replace("<svg ", attributes, 1).strip()


def _thousands(value: float, _position: float) -> str:
    return f"{value:,.0f}"


def _plain(value: float, _position: float) -> str:
    return f"{value:g}"


def _throughput_plot(record: RunRecord, timeline: Sequence[TimelineSample]) -> str | None:
    settled_edges, settled = _settlement_rate(timeline)
    call_edges, calls = _accepted_call_rate(record)
    if not settled and not calls:
        return None
    import matplotlib

    with matplotlib.rc_context(_RC):
        figure, axes = _new_figure()
        if settled:
            axes.stairs(
                settled, settled_edges, baseline=None, label="settlements/s (ledger)", linewidth=2
            )
        if calls:
            axes.stairs(
                calls,
                call_edges,
                baseline=None,
                label="accepted RPCs/s (all RPCs)",
                linestyle="--",
                alpha=0.8,
            )
        axes.set_xlabel("seconds since the run started")
        axes.set_ylabel("per second")
        axes.set_ylim(bottom=0)
        figure.legend(loc="outside right upper")
    return _inline_svg(figure, "throughput", "Throughput over time")


def _log_edges(low: float, high: float, bins: int) -> list[float]:
    if high <= low * 1.000001:
        low, high = low / 2, high * 2
    ratio = math.log(high / low)
    return [low * math.exp(ratio * i / bins) for i in range(bins + 1)]


def _latency_plot(calls: Sequence[CallSample]) -> str | None:
    by_rpc: defaultdict[str, list[float]] = defaultdict(list)
    for call in calls:
        by_rpc[call.rpc].append(call.latency_ms)
    positive = [value for values in by_rpc.values() for value in values if value > 0]
    if not positive:
        return None
    edges = _log_edges(min(positive), max(positive), HISTOGRAM_BINS)
    ranked = sorted(by_rpc, key=lambda rpc: (-len(by_rpc[rpc]), rpc))
    series = [(rpc, by_rpc[rpc]) for rpc in ranked[:HISTOGRAM_RPCS_MAX]]
    others = [value for rpc in ranked[HISTOGRAM_RPCS_MAX:] for value in by_rpc[rpc]]
    if others:
        series.append(("other RPCs", others))
    import matplotlib
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    with matplotlib.rc_context(_RC):
        figure, axes = _new_figure()
        for name, values in series:
            counts = [0] * HISTOGRAM_BINS
            for value in values:
                index = bisect.bisect_right(edges, value) - 1  # at or below 0 ms: the first bin
                counts[min(HISTOGRAM_BINS - 1, max(0, index))] += 1
            axes.stairs(counts, edges, label=f"{name} (n={len(values):,})", linewidth=1.5)
        axes.set_xscale("log")
        # Plain numbers: mathtext is off (see _RC), so the default "10^k" labels would be raw TeX.
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(FuncFormatter(_plain))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("latency, ms (log scale)")
        axes.set_ylabel("calls")
        figure.legend(loc="outside right upper")
    return _inline_svg(figure, "latency", "Latency histogram per RPC")


def _per_currency_plot(
    timeline: Sequence[TimelineSample], field: str, name: str, title: str
) -> str | None:
    currencies = _currencies(timeline)
    if not timeline or not currencies:
        return None
    times = [sample.at_s for sample in timeline]
    import matplotlib
    from matplotlib.ticker import FuncFormatter

    with matplotlib.rc_context(_RC):
        figure, axes = _new_figure()
        for index, currency in enumerate(currencies):
            values = [getattr(sample, field).get(currency, 0) for sample in timeline]
            axes.step(
                times, values, where="post", label=currency, color=f"C{index % 10}", linewidth=1.8
            )
        axes.set_xlabel("seconds since the run started")
        axes.set_ylabel("minor units")
        axes.yaxis.set_major_formatter(FuncFormatter(_thousands))
        figure.legend(loc="outside right upper")
    return _inline_svg(figure, name, title)


# -- report.html ---------------------------------------------------------------------------------

_CSS: Final = f"""
:root {{ color-scheme: light; }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, "DejaVu Sans", sans-serif;
  color: #1f2328; background: #ffffff; }}
header {{ border-left: 8px solid; padding: 12px 20px; margin-bottom: 24px; background: #f6f8fa; }}
header.pass {{ border-color: {_PASS_COLOUR}; }}
header.fail {{ border-color: {_FAIL_COLOUR}; }}
h1 {{ margin: 0 0 6px; font-size: 24px; }}
h2 {{ margin: 28px 0 8px; font-size: 18px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }}
.badge {{ display: inline-block; padding: 2px 12px; border-radius: 4px; color: #ffffff;
  font-weight: 700; }}
.badge.pass {{ background: {_PASS_COLOUR}; }}
.badge.fail {{ background: {_FAIL_COLOUR}; }}
.verdict {{ font-weight: 700; margin: 4px 0 10px; }}
.verdict.pass {{ color: {_PASS_COLOUR}; }}
.verdict.fail {{ color: {_FAIL_COLOUR}; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }}
dt {{ color: #59636e; }}
dd {{ margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  overflow-wrap: anywhere; }}
table {{ border-collapse: collapse; margin: 4px 0 12px; }}
th, td {{ border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.detail {{ max-width: 720px; overflow-wrap: anywhere; white-space: pre-wrap;
  font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }}
td.pass {{ color: {_PASS_COLOUR}; font-weight: 700; }}
td.fail {{ color: {_FAIL_COLOUR}; font-weight: 700; }}
figure {{ margin: 8px 0 20px; }}
figcaption {{ color: #59636e; font-size: 13px; }}
svg.plot {{ display: block; max-width: 100%; height: auto; }}
.none {{ color: #59636e; font-style: italic; }}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> str:
    """An HTML table; each cell is (already escaped HTML, CSS class)."""
    head = "".join(f"<th>{_e(name)}</th>" for name in headers)
    body = "\n".join(
        "<tr>"
        + "".join(
            f'<td class="{cls}">{cell}</td>' if cls else f"<td>{cell}</td>" for cell, cls in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _figure(draw: Callable[[], str | None], caption: str, plots: bool) -> str:
    """The plot ``draw`` makes, captioned; a line instead when there is no data to plot or no
    matplotlib to draw with (``plots``)."""
    if not plots:
        return f'<p class="none">{_e(caption)}: {_e(PLOTS_MISSING)}.</p>'
    svg = draw()
    if svg is None:
        return f'<p class="none">{_e(caption)}: no data recorded.</p>'
    return f"<figure>\n{svg}\n<figcaption>{_e(caption)}</figcaption>\n</figure>"


def render_html(record: RunRecord) -> str:
    """report.html's text: one page, no external resources, every recorded string escaped."""
    state = "pass" if record.passed else "fail"
    timeline = _ordered_timeline(record.timeline)
    plots = plots_available()

    facts = [
        ("Started", record.started_at or "?"),
        ("Duration", f"{record.duration_s:,.1f} s"),
        ("Server", record.server),
        ("Database", record.database),
        ("Settlements", f"{record.settlements_total:,} ({record.settlements_per_second:,.1f}/s)"),
        ("Calls", f"{len(record.calls):,}"),
        ("Ledger fingerprint", record.ledger_fingerprint or "-"),
    ]
    facts_html = "\n".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in facts)

    invariants = _table(
        ["Invariant", "Result", "When", "Detail"],
        [
            [
                (_e(result.name), ""),
                ("PASS" if result.passed else "FAIL", "pass" if result.passed else "fail"),
                (_e(result.when), ""),
                (_e(result.detail), "detail"),
            ]
            for result in record.invariants
        ],
    )
    operations = _table(
        ["Operation", "Accepted", "Refused", "Refused by reason"],
        [
            [
                (_e(row.operation), ""),
                (f"{row.accepted:,}", "num"),
                (f"{row.refused_total:,}", "num"),
                (_e(", ".join(f"{reason} {count:,}" for reason, count in row.refused.items())), ""),
            ]
            for row in operation_rows(record.operations)
        ],
    )
    latency = _table(
        ["RPC", "Calls", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [
            [(_e(rpc), ""), (f"{stats.count:,}", "num")]
            + [(f"{value:.3f}", "num") for value in (stats.p50, stats.p95, stats.p99, stats.max)]
            for rpc, stats in latency_stats(record.calls).items()
        ],
    )
    faults = (
        _table(
            ["Fault", "Times injected"],
            [
                [(_e(fault), ""), (f"{count:,}", "num")]
                for fault, count in sorted(record.faults.items())
            ],
        )
        if record.faults
        else '<p class="none">No fault was injected.</p>'
    )

    sections = [
        f'<header class="{state}">',
        f"<h1>Scenario {_e(record.scenario)}, seed {_e(record.seed)} "
        f'<span class="badge {state}">{state.upper()}</span></h1>',
        f'<p class="verdict {state}">{_e(verdict(record))}</p>',
        f"<dl>\n{facts_html}\n</dl>",
        "</header>",
        "<h2>Invariants</h2>",
        invariants if record.invariants else '<p class="none">No invariant was checked.</p>',
        "<h2>Throughput</h2>",
        _figure(
            lambda: _throughput_plot(record, timeline),
            "Settlements per second between ledger samples, and accepted RPCs per second",
            plots,
        ),
        "<h2>Operations</h2>",
        operations if record.operations else '<p class="none">No operation was recorded.</p>',
        "<h2>Latency</h2>",
        latency if record.calls else '<p class="none">No call was recorded.</p>',
        "<p>Percentiles are nearest-rank over every call of the RPC, accepted or refused.</p>",
        _figure(
            lambda: _latency_plot(record.calls),
            "Latency histogram per RPC (log-spaced bins)",
            plots,
        ),
        "<h2>Escrow held</h2>",
        _figure(
            lambda: _per_currency_plot(
                timeline, "escrow_held_minor", "escrow", "Escrow held over time"
            ),
            "Held in open escrows, per currency (minor units)",
            plots,
        ),
        "<h2>Supply</h2>",
        _figure(
            lambda: _per_currency_plot(timeline, "supply_minor", "supply", "Supply over time"),
            "Issued minus redeemed, per currency (minor units)",
            plots,
        ),
        "<h2>Faults injected</h2>",
        faults,
    ]
    body = "\n".join(sections)
    title = f"condpay simulator: {record.scenario}, seed {record.seed}: {state.upper()}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def write_html(record: RunRecord, path: Path | str) -> Path:
    path = Path(path)
    path.write_text(render_html(record), encoding="utf-8")
    return path


def write_reports(record: RunRecord, directory: Path | str) -> tuple[Path, Path]:
    """report.json and report.html in ``directory`` (created when missing)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    return write_json(record, folder / JSON_NAME), write_html(record, folder / HTML_NAME)
