"""Small inline SVG charts for the console's pages: no script, no external URL, text kept as text.

Each function returns one ``<svg>`` element as a string; every label is escaped here
(``html.escape``), so a template may insert the result as it is. Bars are drawn to scale from
integers (counts, minor units), never from rounded figures.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["Bar", "Segment", "bar_chart", "deadline_strip", "stacked_bar"]

#: One colour per meaning, the same on every page.
COLOURS: Final = {
    "LOCKED": "#2f6fb5",
    "PARTIALLY_RELEASED": "#6f9fd8",
    "SETTLED": "#1a7f37",
    "REFUNDED": "#b07d12",
    "EXPIRED": "#8a6d3b",
    "CANCELLED": "#777777",
    "PENDING": "#9b9b9b",
    "PREPARED": "#6f9fd8",
    "COMMITTING": "#2f6fb5",
    "COMMITTED": "#3d9b57",
    "FINAL": "#1a7f37",
    "ABORTING": "#d4694f",
    "ABORTED": "#b42318",
    "held": "#2f6fb5",
    "released": "#1a7f37",
    "refunded": "#b07d12",
    "free": "#c9d6e3",
}
_DEFAULT = "#555555"
_FONT = "font-family:system-ui,sans-serif;font-size:12px"


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    href: str = ""
    colour: str = ""


@dataclass(frozen=True, slots=True)
class Segment:
    label: str
    value: int
    colour: str


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def bar_chart(title: str, bars: Sequence[Bar], *, width: int = 520) -> str:
    """Horizontal bars, one per item, labelled with its value; a bar with ``href`` is a link."""
    row_px, label_px, top_px = 22, 150, 24
    height = top_px + row_px * max(1, len(bars)) + 6
    most = max((b.value for b in bars), default=0) or 1
    span = width - label_px - 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="{_FONT}">',
        f"<title>{_e(title)}</title>",
        f'<text x="0" y="15" font-weight="bold">{_e(title)}</text>',
    ]
    for i, bar in enumerate(bars):
        y = top_px + i * row_px
        length = round(span * bar.value / most) if bar.value else 0
        colour = bar.colour or COLOURS.get(bar.label, _DEFAULT)
        row = (
            f'<text x="{label_px - 6}" y="{y + 14}" text-anchor="end">{_e(bar.label)}</text>'
            f'<rect x="{label_px}" y="{y + 3}" width="{max(length, 1)}" height="15" '
            f'fill="{colour}"><title>{_e(bar.label)}: {bar.value:,}</title></rect>'
            f'<text x="{label_px + max(length, 1) + 5}" y="{y + 14}">{bar.value:,}</text>'
        )
        parts.append(f'<a href="{_e(bar.href)}">{row}</a>' if bar.href else row)
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar(
    title: str, segments: Sequence[Segment], *, width: int = 520, legend_step: int = 170
) -> str:
    """One bar split into segments in proportion (e.g. an escrow: released, refunded, held),
    with a legend naming each segment and its share."""
    total = sum(s.value for s in segments) or 1
    height, bar_y, bar_h = 64, 22, 18
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="{_FONT}">',
        f"<title>{_e(title)}</title>",
        f'<text x="0" y="15" font-weight="bold">{_e(title)}</text>',
        f'<rect x="0" y="{bar_y}" width="{width}" height="{bar_h}" fill="#eeeeee"/>',
    ]
    x = 0.0
    legend_x = 0
    for s in segments:
        length = width * s.value / total
        if length > 0:
            parts.append(
                f'<rect x="{x:.1f}" y="{bar_y}" width="{length:.1f}" height="{bar_h}" '
                f'fill="{s.colour}"><title>{_e(s.label)}</title></rect>'
            )
        x += length
        share = 100 * s.value / total
        shown = f"{share:.0f}" if share >= 1 or share == 0 else f"{share:.2f}"
        parts.append(
            f'<rect x="{legend_x}" y="{bar_y + bar_h + 9}" width="10" height="10" '
            f'fill="{s.colour}"/><text x="{legend_x + 14}" y="{bar_y + bar_h + 18}">'
            f"{_e(s.label)} {shown}%</text>"
        )
        legend_x += legend_step
    parts.append("</svg>")
    return "".join(parts)


def deadline_strip(
    title: str, deadlines: Sequence[tuple[str, int, str]], now_us: int, *, width: int = 520
) -> str:
    """Open escrows on a time axis from now to the latest deadline: one tick per escrow
    (label, deadline µs, href); a deadline already passed sits left of "now", in red."""
    height, axis_y, left, right = 70, 40, 40, width - 10
    dated = [d for d in deadlines if d[1] > 0]
    latest = max((d[1] for d in dated), default=now_us) or now_us
    earliest = min([now_us, *(d[1] for d in dated)])
    span = max(latest - earliest, 1)

    def x_of(us: int) -> float:
        return left + (right - left) * (us - earliest) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="{_FONT}">',
        f"<title>{_e(title)}</title>",
        f'<text x="0" y="15" font-weight="bold">{_e(title)}</text>',
        f'<line x1="{left}" y1="{axis_y}" x2="{right}" y2="{axis_y}" stroke="#888"/>',
        f'<line x1="{x_of(now_us):.1f}" y1="{axis_y - 14}" x2="{x_of(now_us):.1f}" '
        f'y2="{axis_y + 6}" stroke="#000"/>',
        f'<text x="{x_of(now_us):.1f}" y="{axis_y + 20}" text-anchor="middle">now</text>',
    ]
    for label, us, href in dated:
        colour = "#b42318" if us < now_us else COLOURS["LOCKED"]
        tick = (
            f'<circle cx="{x_of(us):.1f}" cy="{axis_y}" r="5" fill="{colour}" '
            f'fill-opacity="0.7"><title>{_e(label)}</title></circle>'
        )
        parts.append(f'<a href="{_e(href)}">{tick}</a>' if href else tick)
    if dated:
        hours = (latest - now_us) / 3_600_000_000
        parts.append(
            f'<text x="{right}" y="{axis_y + 20}" text-anchor="end">'
            f"{'+' if hours >= 0 else ''}{hours:.1f} h</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
