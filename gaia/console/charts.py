"""Server-rendered SVG line charts for the console's monitoring pages.

In: series of ``(unix seconds, value)`` points as ``GET /api/v1/monitoring/series`` returns
them, the time window they were asked for, and a unit. Out: ``Markup`` holding one ``<figure>``
with an ``<svg role="img">`` (a ``<title>`` and ``<desc>`` name it for screen readers; axes
with unit-formatted ticks and UTC time labels; one ``<polyline>`` per series; a legend) and,
beneath it, a ``<details>`` table of each series' latest, lowest and highest values: the
accessible fallback, and what a keyboard user reads instead of the picture.

Pure functions of their arguments, no I/O, no JavaScript: a chart is a few kilobytes of markup
that renders in any browser, prints, and is tested as text. The x axis is always the asked-for
window (not the data's extent), so small multiples of one page line up; the y axis starts at
zero and ends at a "nice" number above the highest value, in the unit people read (percent
charts end at 100 at least).
Series are told apart by colour *and* dash pattern, so the chart reads without colour vision.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from markupsafe import Markup, escape

Unit = Literal["percent", "bytes", "bytes/s", "count"]
Translate = Callable[..., str]

# Colours that stay apart for the common colour-vision deficiencies (Okabe-Ito), plus dashes.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "1 2", "10 4", "4 4")
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 12, 12, 28
MAX_POINTS = 2000  # per polyline; the API's step already bounds it, this guards the markup


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]

    @property
    def latest(self) -> float | None:
        return self.points[-1][1] if self.points else None


def format_value(value: float | None, unit: Unit) -> str:
    """A value in its unit for people: ``42.5%``, ``1.5 GiB``, ``320 KiB/s``, ``12``."""
    if value is None or math.isnan(value):
        return "-"
    if unit == "percent":
        return f"{value:.1f}%" if abs(value) < 10 else f"{value:.0f}%"
    if unit in ("bytes", "bytes/s"):
        suffix = "/s" if unit == "bytes/s" else ""
        size = float(value)
        for name in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(size) < 1024 or name == "TiB":
                text = f"{size:.0f}" if name == "B" or abs(size) >= 100 else f"{size:.1f}"
                return f"{text} {name}{suffix}"
            size /= 1024
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def format_measure(value: float | None, unit: str) -> str:
    """A value of a catalogue metric (``unit`` as ``GET /api/v1/monitoring/metrics`` names it)
    rounded to what its unit needs, with the unit's symbol: ``87.3%``, ``1.5 GiB``,
    ``850 ms``, ``2.5 s``, ``250m`` (millicores, as Kubernetes writes them), ``0.873``; a unit
    the console does not know, or none, keeps three significant digits (an alert's value is
    read beside its threshold, never as 0.8733333333)."""
    if value is None or math.isnan(value):
        return "-"
    chart_unit: dict[str, Unit] = {"percent": "percent", "bytes": "bytes", "bytes/s": "bytes/s"}
    if unit in chart_unit:
        return format_value(value, chart_unit[unit])
    if unit == "seconds":
        if abs(value) < 1:
            return f"{value * 1000:.0f} ms"
        return f"{_significant(value)} s" if abs(value) < 120 else f"{value / 60:.1f} min"
    if unit == "millicores":
        return f"{value:.0f}m"
    return _significant(value)


def _significant(value: float) -> str:
    """Whole numbers as they are, others to three significant digits (at most two decimals
    from 1 up): ``12``, ``0.873``, ``2.5``, ``1234.57`` is ``1235``."""
    if float(value).is_integer():
        return f"{value:.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def nice_axis(value: float, unit: Unit) -> tuple[float, float]:
    """The top of the y axis and its tick step, for a highest value of ``value``: at most four
    steps of 1, 2, 2.5 or 5 times a power of ten, counted in the unit people read (212 GiB ends
    at 250 GiB in steps of 50 GiB, not at 10 GiB); percent charts end at 100 unless a value is
    above it."""
    if unit == "percent" and value <= 100:
        return 100.0, 25.0
    if value <= 0:
        return 1.0, 0.25
    scale = 1.0
    if unit in ("bytes", "bytes/s") and value >= 1024:
        scale = 1024.0 ** min(math.floor(math.log(value, 1024)), 4)  # B, KiB ... TiB
    scaled = value / scale
    raw = scaled / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(f * magnitude for f in (1, 2, 2.5, 5, 10) if f * magnitude >= raw * (1 - 1e-9))
    top = math.ceil(scaled / step - 1e-9) * step
    return top * scale, step * scale


def nice_ceiling(value: float, unit: Unit) -> float:
    """The top of the y axis (``nice_axis``)."""
    return nice_axis(value, unit)[0]


def time_ticks(start: float, end: float, count: int = 5) -> list[tuple[float, str]]:
    """``count`` evenly spaced times over the window, labelled ``HH:MM`` (UTC); with the date
    when the window spans more than a day."""
    if end <= start:
        return []
    fmt = "%m-%d %H:%M" if end - start > 86_400 else "%H:%M"
    step = (end - start) / (count - 1)
    return [
        (t, dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt))
        for t in (start + i * step for i in range(count))
    ]


def _downsample(points: Sequence[tuple[float, float]]) -> Sequence[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    stride = math.ceil(len(points) / MAX_POINTS)
    return [*points[::stride], points[-1]]


def line_chart(
    *,
    title: str,
    series: Sequence[Series],
    unit: Unit,
    start: float,
    end: float,
    _: Translate,
    chart_id: str,
    width: int = 640,
    height: int = 220,
) -> Markup:
    """One chart (``<figure>``) with its legend and its table fallback."""
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    values = [v for s in series for _t, v in s.points if not math.isnan(v)]
    top, tick = nice_axis(max(values, default=0.0), unit)
    span = max(end - start, 1e-9)

    def x(t: float) -> float:
        return MARGIN_LEFT + (min(max(t, start), end) - start) / span * plot_w

    def y(v: float) -> float:
        return MARGIN_TOP + plot_h - (max(0.0, min(v, top)) / top) * plot_h

    window = _("{start} to {end} UTC", start=_stamp(start), end=_stamp(end))
    if values:
        latest = "; ".join(f"{s.label}: {format_value(s.latest, unit)}" for s in series)
        desc = _("{window}. Latest: {latest}.", window=window, latest=latest)
    else:
        desc = _("{window}. No data in this range.", window=window)

    parts: list[str] = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]
    # y grid and labels
    for i in range(round(top / tick) + 1):
        value = tick * i
        py = y(value)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{py:.1f}" y2="{py:.1f}" '
            f'stroke="#d0d7de" stroke-width="{1 if i == 0 else 0.5}"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#57606a">{escape(format_value(value, unit))}</text>'
        )
    # x labels
    for t, label in time_ticks(start, end):
        px = x(t)
        anchor = "start" if t == start else "end" if t == end else "middle"
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{MARGIN_TOP + plot_h}" '
            f'y2="{MARGIN_TOP + plot_h + 4}" stroke="#57606a"/>'
            f'<text x="{px:.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="11" '
            f'fill="#57606a">{escape(label)}</text>'
        )
    if not values:
        parts.append(
            f'<text x="{MARGIN_LEFT + plot_w / 2:.1f}" y="{MARGIN_TOP + plot_h / 2:.1f}" '
            f'text-anchor="middle" font-size="13" fill="#57606a">'
            f"{escape(_('No data in this range'))}</text>"
        )
    for n, s in enumerate(series):
        drawn = [(x(t), y(v)) for t, v in _downsample(s.points) if not math.isnan(v)]
        if not drawn:
            continue
        if len(drawn) == 1:
            # one sample (a fresh instance): a line needs two, so show the point itself
            (cx, cy), colour = drawn[0], PALETTE[n % len(PALETTE)]
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(s.label)}</title></circle>"
            )
            continue
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in drawn)
        dash = DASHES[n % len(DASHES)]
        parts.append(
            f'<polyline fill="none" stroke="{PALETTE[n % len(PALETTE)]}" stroke-width="1.8" '
            + (f'stroke-dasharray="{dash}" ' if dash else "")
            + f'points="{coords}"><title>{escape(s.label)}</title></polyline>'
        )
    parts.append("</svg>")
    # every text placed in the markup above went through escape(); numbers and our own ids
    # are the rest
    return Markup(  # noqa: S704
        f'<figure class="chart" id="{chart_id}">'
        f"<figcaption>{escape(title)}</figcaption>"
        + "".join(parts)
        + _legend(series)
        + _table(title=title, series=series, unit=unit, _=_)
        + "</figure>"
    )


def _legend(series: Sequence[Series]) -> str:
    if len(series) < 2:
        return ""
    items = []
    for n, s in enumerate(series):
        dash = DASHES[n % len(DASHES)]
        swatch = (
            '<svg width="22" height="8" aria-hidden="true"><line x1="0" x2="22" y1="4" y2="4" '
            f'stroke="{PALETTE[n % len(PALETTE)]}" stroke-width="2"'
            + (f' stroke-dasharray="{dash}"' if dash else "")
            + "/></svg>"
        )
        items.append(f"<li>{swatch} {escape(s.label)}</li>")
    return '<ul class="legend">' + "".join(items) + "</ul>"


def _table(*, title: str, series: Sequence[Series], unit: Unit, _: Translate) -> str:
    rows = []
    for s in series:
        vals = [v for _t, v in s.points if not math.isnan(v)]
        rows.append(
            f'<tr><th scope="row">{escape(s.label)}</th>'
            f'<td class="num">{escape(format_value(s.latest, unit))}</td>'
            f'<td class="num">{escape(format_value(min(vals) if vals else None, unit))}</td>'
            f'<td class="num">{escape(format_value(max(vals) if vals else None, unit))}</td></tr>'
        )
    if not rows:
        rows.append(f'<tr><td colspan="4">{escape(_("No data in this range"))}</td></tr>')
    return (
        f"<details><summary>{escape(_('Values of {title}', title=title))}</summary>"
        f'<table><thead><tr><th scope="col">{escape(_("Series"))}</th>'
        f'<th scope="col" class="num">{escape(_("Latest"))}</th>'
        f'<th scope="col" class="num">{escape(_("Lowest"))}</th>'
        f'<th scope="col" class="num">{escape(_("Highest"))}</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></details>"
    )


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


def mean_series(label: str, many: Sequence[Series]) -> Series:
    """The mean of several series at each time any of them has a point (the app's GPU
    utilisation from its instances')."""
    sums: dict[float, tuple[float, int]] = {}
    for s in many:
        for t, v in s.points:
            if not math.isnan(v):
                total, n = sums.get(t, (0.0, 0))
                sums[t] = (total + v, n + 1)
    return Series(label, [(t, total / n) for t, (total, n) in sorted(sums.items())])
