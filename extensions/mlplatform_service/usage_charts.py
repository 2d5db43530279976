"""Server-rendered SVG charts for the usage page: pure functions, numbers in, an <svg> string out.

No JavaScript and nothing from a CDN: the page is one HTML document the service renders. Every text in
the SVG (names, labels, titles) is escaped here, so the caller may pass what users chose (team, user
and model names).

    stacks(points, starts, key)        the ledger's series → {name: [GPU-hours per bucket]}
    stacked_bars(labels, stacks, ...)  one bar per bucket, one coloured segment per name, a legend
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape

from .usage import hours_text

# Okabe–Ito: told apart by people with the common colour-vision deficiencies; then greys.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
           "#777777", "#AAAAAA")
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, AXIS_HEIGHT = 64, 16, 32, 28
LEGEND_ROW, LEGEND_ITEM_WIDTH = 20, 200


def stacks(points: Sequence[dict], starts: Sequence[datetime], key: str) -> dict[str, list[float]]:
    """{point[key]: GPU-hours per bucket of `starts`} from `UsageLedger.series` points; a bucket without a
    point is 0, a point of no bucket in `starts` is a ValueError. Names sorted; None shows as "(none)"."""
    index = {start: i for i, start in enumerate(starts)}
    out: dict[str, list[float]] = {}
    for point in points:
        if point["start"] not in index:
            raise ValueError(f"a point at {point['start']} is in none of the {len(starts)} buckets")
        name = point[key] if point[key] is not None else "(none)"
        out.setdefault(name, [0.0] * len(starts))[index[point["start"]]] += point["gpu_hours"]
    return dict(sorted(out.items()))


def bucket_label(start: datetime, step: str) -> str:
    """"Dec 7" (a day), "W49 Dec 7" (a week, by its first day shown)."""
    day = f"{start:%b} {start.day}"
    return day if step == "day" else f"W{start.isocalendar()[1]:02d} {day}"


def nice_ceiling(value: float) -> tuple[float, float]:
    """(top of the axis, tick step): a round top at or above `value` in 3 to 5 steps of 1, 2, 2.5 or 5 × 10^n."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw - 1e-12)
    return round(step * math.ceil(value / step - 1e-9), 12), step


def stacked_bars(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str,
                 unit: str = "GPU-hours", width: int = 880, height: int = 300,
                 colours: dict[str, str] | None = None) -> str:
    """A stacked bar chart: one bar per label, one segment per name of `series` (its values per label),
    stacked in the order of `series`. Each segment has a <title> (tooltip) with the name, the label and its
    value. `colours` fixes a name's colour (e.g. a team's, the same on every page); others take the
    palette's in order."""
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
    names = list(series)
    colour = {name: (colours or {}).get(name) or PALETTE[n % len(PALETTE)] for n, name in enumerate(names)}
    legend_rows = math.ceil(len(names) / max(1, (width - MARGIN_LEFT) // LEGEND_ITEM_WIDTH)) if names else 0
    total_height = height + legend_rows * LEGEND_ROW
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - AXIS_HEIGHT
    totals = [sum(series[n][i] for n in names) for i in range(len(labels))]
    top, step = nice_ceiling(max(totals, default=0.0))
    y = lambda v: MARGIN_TOP + plot_h - v / top * plot_h  # noqa: E731

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
           f'height="{total_height}" viewBox="0 0 {width} {total_height}" font-family="sans-serif" font-size="11">',
           f"<title>{escape(title)}</title>",
           f'<text x="{MARGIN_LEFT}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    ticks = round(top / step)
    for i in range(ticks + 1):
        value = i * step
        out.append(f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{MARGIN_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                   f"{escape(hours_text(value))}</text>")
    out.append(f'<text x="12" y="{MARGIN_TOP + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {MARGIN_TOP + plot_h / 2:.1f})">{escape(unit)}</text>')

    if labels:
        slot = plot_w / len(labels)
        bar = max(1.0, slot * 0.7)
        every = max(1, math.ceil(len(labels) / max(1, plot_w // 64)))  # labels ~64 px apart at least
        for i, label in enumerate(labels):
            x = MARGIN_LEFT + i * slot + (slot - bar) / 2
            base = 0.0
            for name in names:
                value = series[name][i]
                if value <= 0:
                    continue
                out.append(f'<rect x="{x:.1f}" y="{y(base + value):.1f}" width="{bar:.1f}" '
                           f'height="{y(base) - y(base + value):.1f}" fill="{escape(colour[name])}">'
                           f"<title>{escape(name)}, {escape(label)}: {escape(hours_text(value))} "
                           f"{escape(unit)}</title></rect>")
                base += value
            if i % every == 0:
                out.append(f'<text x="{x + bar / 2:.1f}" y="{MARGIN_TOP + plot_h + 16}" text-anchor="middle">'
                           f"{escape(label)}</text>")
    if not any(totals):
        out.append(f'<text x="{MARGIN_LEFT + plot_w / 2:.1f}" y="{MARGIN_TOP + plot_h / 2:.1f}" '
                   f'text-anchor="middle" fill="#666">No GPU-hours in this period</text>')
    out.append(f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
               f'stroke="#333"/>')

    per_row = max(1, (width - MARGIN_LEFT) // LEGEND_ITEM_WIDTH)
    for n, name in enumerate(names):
        lx = MARGIN_LEFT + (n % per_row) * LEGEND_ITEM_WIDTH
        ly = height + (n // per_row) * LEGEND_ROW
        total = sum(series[name])
        out.append(f'<g class="legend"><rect x="{lx}" y="{ly - 10}" width="12" height="12" '
                   f'fill="{escape(colour[name])}"/><text x="{lx + 18}" y="{ly}">{escape(name)} '
                   f"({escape(hours_text(total))})</text></g>")
    out.append("</svg>")
    return "\n".join(out)
