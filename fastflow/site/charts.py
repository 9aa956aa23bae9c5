"""Inline SVG charts for the status site: pure functions from numbers to SVG text.

No JavaScript, no external resources, deterministic output (numbers are rounded to one decimal, so
the same input always gives the same bytes). Every chart is an `<svg role="img">` with an
`aria-label` and a `<title>` that say what it shows in words, and each bar or point carries its own
`<title>` (a tooltip on hover). Colours come from CSS classes (`ff-ok`, `ff-bad`, ...) that the
site's stylesheet themes for light and dark mode; presentation attributes give sensible fallback
colours when an SVG is viewed on its own.

Resource samples follow the Docker sampler's shape (`fastflow.executors.docker.stats`):
`{"t": seconds since the run started, "mem": bytes or None, "cpu": cores or None}`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable, Iterable, Sequence

from fastflow.humanize import format_bytes, format_cores, format_seconds

SVG_NS = "http://www.w3.org/2000/svg"

# Status -> CSS class; the same families as the site's badges.
STATUS_CLASS = {
    "succeeded": "ff-ok",
    "failed": "ff-bad",
    "lost": "ff-bad",
    "timed_out": "ff-warn",
    "oom_killed": "ff-warn",
    "cancelled": "ff-muted",
    "skipped": "ff-muted",
    "running": "ff-info",
    "queued": "ff-info",
}
_FALLBACK_FILL = {
    "ff-ok": "#1a7f4b", "ff-bad": "#c62f3a", "ff-warn": "#b35c00",
    "ff-muted": "#7b8391", "ff-info": "#2563eb", "ff-series": "#2563eb",
}

Formatter = Callable[[float], str]


@dataclass(frozen=True)
class Bar:
    """One bar of a bar chart: its value (None = unknown, drawn as a stub), status and tooltip."""

    value: float | None
    status: str | None = None
    label: str = ""


@dataclass(frozen=True)
class LimitLine:
    """A horizontal reference line (a soft or hard limit) drawn across a chart."""

    value: float
    label: str
    hard: bool = True


def _n(x: float) -> str:
    """A coordinate rounded to one decimal, without a trailing `.0` (deterministic, compact)."""
    text = f"{round(x, 1):.1f}"
    text = text[:-2] if text.endswith(".0") else text
    return "0" if text == "-0" else text


def _class_fill(cls: str) -> str:
    return f'class="{cls}" fill="{_FALLBACK_FILL.get(cls, "#7b8391")}"'


def _open_svg(width: int, height: int, label: str, extra_class: str) -> list[str]:
    text = escape(label)
    return [
        f'<svg xmlns="{SVG_NS}" class="ff-chart {extra_class}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{text}" '
        f'preserveAspectRatio="xMinYMid meet">',
        f"<title>{text}</title>",
    ]


def nice_ticks(high: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least `high` (1, 2, 2.5 or 5 times a power of ten)."""
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    ticks = [0.0]
    while ticks[-1] < high - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _unit(high: float, fmt: Formatter) -> float:
    """The unit ticks are counted in, so they land on round values of what the reader sees."""
    if fmt is format_bytes:
        return next((u for u in (1024**3, 1024**2, 1024) if high >= u), 1)
    if fmt is format_seconds:
        return 3600 if high >= 7200 else 60 if high >= 120 else 1
    return 1


def scaled_ticks(high: float, fmt: Formatter, count: int = 4) -> list[float]:
    """`nice_ticks` in the unit `fmt` shows (MiB for bytes, minutes for long durations)."""
    unit = _unit(high, fmt)
    return [t * unit for t in nice_ticks(high / unit, count)]


def sparkline(bars: Sequence[Bar], *, label: str, width: int = 120, height: int = 28) -> str:
    """A tiny bar chart (one bar per run, oldest left, coloured by status) for the overview.

    Bar height is the run's duration relative to the longest in view; a run without a duration
    is a short stub so it still shows its status. An empty sequence gives a dashed baseline.
    """
    out = _open_svg(width, height, label, "ff-spark")
    if not bars:
        out.append(f'<line x1="0" y1="{height - 1}" x2="{width}" y2="{height - 1}" '
                   'class="ff-axis" stroke="#7b8391" stroke-dasharray="3 3"/>')
        return "".join(out) + "</svg>"
    high = max((b.value for b in bars if b.value), default=0.0) or 1.0
    slot = width / max(len(bars), 1)
    gap = 1.0 if slot >= 3 else 0.0
    for i, bar in enumerate(bars):
        h = 2.0 if not bar.value else max(2.0, (height - 2) * bar.value / high)
        cls = STATUS_CLASS.get(bar.status or "", "ff-muted")
        tip = f"<title>{escape(bar.label)}</title>" if bar.label else ""
        out.append(f'<rect x="{_n(i * slot)}" y="{_n(height - h)}" width="{_n(slot - gap)}" '
                   f'height="{_n(h)}" rx="1" {_class_fill(cls)}>{tip}</rect>')
    return "".join(out) + "</svg>"


@dataclass(frozen=True)
class _Frame:
    """Plot geometry: the SVG size and the inner plot rectangle."""

    width: int
    height: int
    left: int = 64
    right: int = 12
    top: int = 12
    bottom: int = 26

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom

    def y(self, value: float, high: float) -> float:
        return self.top + self.plot_h * (1 - value / high)


def _y_axis(frame: _Frame, ticks: list[float], fmt: Formatter) -> list[str]:
    high = ticks[-1]
    out = []
    for tick in ticks:
        y = _n(frame.y(tick, high))
        out.append(f'<line x1="{frame.left}" y1="{y}" x2="{frame.width - frame.right}" y2="{y}" '
                   'class="ff-grid" stroke="#d0d4da" stroke-width="1"/>')
        out.append(f'<text x="{frame.left - 6}" y="{y}" dy="0.32em" text-anchor="end" '
                   f'class="ff-tick" fill="#5b6270" font-size="11">{escape(fmt(tick))}</text>')
    return out


def _limit_lines(frame: _Frame, limits: Iterable[LimitLine], high: float,
                 fmt: Formatter) -> list[str]:
    out = []
    for limit in limits:
        y = _n(frame.y(limit.value, high))
        kind = "hard" if limit.hard else "soft"
        dash = "" if limit.hard else ' stroke-dasharray="6 4"'
        text = f"{limit.label}: {fmt(limit.value)}"
        out.append(f'<g class="ff-limit ff-limit-{kind}"><title>{escape(text)}</title>'
                   f'<line x1="{frame.left}" y1="{y}" x2="{frame.width - frame.right}" y2="{y}" '
                   f'stroke="#c62f3a" stroke-width="1.5"{dash}/>'
                   f'<text x="{frame.width - frame.right - 4}" y="{y}" dy="-0.35em" '
                   f'text-anchor="end" fill="#c62f3a" font-size="11">{escape(text)}</text></g>')
    return out


def bar_chart(bars: Sequence[Bar], *, label: str, fmt: Formatter = format_seconds,
              limits: Sequence[LimitLine] = (), width: int = 720, height: int = 180,
              x_caption: str = "") -> str:
    """A bar chart of one value per run (oldest left), bars coloured by status, with a y axis.

    Used for run durations and peak memory on the pipeline page; `limits` draws reference lines
    (a memory limit), and `x_caption` labels the horizontal axis (e.g. "last 50 runs").
    """
    frame = _Frame(width, height)
    values = [b.value for b in bars if b.value is not None]
    high = max(values + [lim.value for lim in limits] + [0.0])
    ticks = scaled_ticks(high, fmt)
    out = _open_svg(width, height, label, "ff-bars")
    out += _y_axis(frame, ticks, fmt)
    slot = frame.plot_w / max(len(bars), 1)
    bar_w = max(slot * 0.72, 1.0)
    for i, bar in enumerate(bars):
        value = bar.value or 0.0
        h = max(frame.plot_h * value / ticks[-1], 1.5)
        x = frame.left + i * slot + (slot - bar_w) / 2
        cls = STATUS_CLASS.get(bar.status or "", "ff-muted")
        tip = bar.label or (fmt(value) if bar.value is not None else "no value")
        out.append(f'<rect x="{_n(x)}" y="{_n(frame.top + frame.plot_h - h)}" width="{_n(bar_w)}" '
                   f'height="{_n(h)}" rx="1.5" {_class_fill(cls)}><title>{escape(tip)}</title></rect>')
    out += _limit_lines(frame, limits, ticks[-1], fmt)
    out.append(_baseline(frame))
    if x_caption:
        out.append(f'<text x="{frame.left}" y="{height - 8}" class="ff-tick" fill="#5b6270" '
                   f'font-size="11">{escape(x_caption)}</text>')
    return "".join(out) + "</svg>"


def _baseline(frame: _Frame) -> str:
    y = _n(frame.top + frame.plot_h)
    return (f'<line x1="{frame.left}" y1="{y}" x2="{frame.width - frame.right}" y2="{y}" '
            'class="ff-axis" stroke="#5b6270" stroke-width="1"/>')


def line_chart(points: Sequence[tuple[float, float]], *, label: str, fmt: Formatter,
               limits: Sequence[LimitLine] = (), width: int = 720, height: int = 170,
               series_class: str = "ff-series") -> str:
    """A line-and-area chart of (seconds since start, value) points with limit lines.

    The x axis is time since the run started (ticks formatted as durations); the y axis starts at
    zero and reaches the larger of the data and the limits, so a limit is always visible.
    """
    frame = _Frame(width, height)
    out = _open_svg(width, height, label, "ff-line")
    high = max([p[1] for p in points] + [lim.value for lim in limits] + [0.0])
    ticks = scaled_ticks(high, fmt)
    out += _y_axis(frame, ticks, fmt)
    t_end = max((p[0] for p in points), default=0.0) or 1.0
    x_ticks = scaled_ticks(t_end, format_seconds, 5)
    span = x_ticks[-1]

    def x(t: float) -> float:
        return frame.left + frame.plot_w * t / span

    for tick in x_ticks:
        out.append(f'<text x="{_n(x(tick))}" y="{height - 8}" text-anchor="middle" class="ff-tick" '
                   f'fill="#5b6270" font-size="11">{escape(format_seconds(tick) if tick else "0")}</text>')
    if points:
        coords = [(x(t), frame.y(v, ticks[-1])) for t, v in points]
        line = " ".join(f"{_n(px)},{_n(py)}" for px, py in coords)
        base = _n(frame.top + frame.plot_h)
        area = f"{_n(coords[0][0])},{base} {line} {_n(coords[-1][0])},{base}"
        out.append(f'<polygon points="{area}" class="{series_class} ff-area" '
                   f'fill="{_FALLBACK_FILL["ff-series"]}" fill-opacity="0.15"/>')
        out.append(f'<polyline points="{line}" class="{series_class} ff-stroke" fill="none" '
                   f'stroke="{_FALLBACK_FILL["ff-series"]}" stroke-width="2" '
                   'stroke-linejoin="round"/>')
        peak_t, peak_v = max(points, key=lambda p: (p[1], -p[0]))
        out.append(f'<circle cx="{_n(x(peak_t))}" cy="{_n(frame.y(peak_v, ticks[-1]))}" r="3" '
                   f'class="{series_class} ff-dot" fill="{_FALLBACK_FILL["ff-series"]}">'
                   f'<title>peak {escape(fmt(peak_v))} at {escape(format_seconds(peak_t))}</title>'
                   '</circle>')
    out += _limit_lines(frame, limits, ticks[-1], fmt)
    out.append(_baseline(frame))
    return "".join(out) + "</svg>"


def _series(samples: Sequence[dict], key: str) -> list[tuple[float, float]]:
    out = []
    for sample in samples:
        t, value = sample.get("t"), sample.get(key)
        if isinstance(t, (int, float)) and isinstance(value, (int, float)):
            out.append((float(t), float(value)))
    return sorted(out)


def memory_chart(samples: Sequence[dict], *, soft: float | None = None,
                 hard: float | None = None) -> str | None:
    """Memory over the run against its soft and hard limits; None when no sample has memory."""
    return _resource_chart(samples, "mem", "Memory", "memory", format_bytes, soft, hard)


def cpu_chart(samples: Sequence[dict], *, soft: float | None = None,
              hard: float | None = None) -> str | None:
    """CPU (cores) over the run against its soft and hard limits; None when no sample has CPU."""
    return _resource_chart(samples, "cpu", "CPU", "CPU", format_cores, soft, hard)


def _resource_chart(samples: Sequence[dict], key: str, title: str, limit_name: str,
                    fmt: Formatter, soft: float | None, hard: float | None) -> str | None:
    points = _series(samples, key)
    if not points:
        return None
    limits = _limits(soft, hard, limit_name)
    peak = max(v for _, v in points)
    label = f"{title} over time: peak {fmt(peak)}" + _limits_words(limits, fmt)
    return line_chart(points, label=label, fmt=fmt, limits=limits,
                      series_class=f"ff-series ff-{key}")


def _limits(soft: float | None, hard: float | None, what: str) -> list[LimitLine]:
    out = []
    if soft is not None and soft > 0:
        out.append(LimitLine(float(soft), f"soft {what} limit", hard=False))
    if hard is not None and hard > 0:
        out.append(LimitLine(float(hard), f"hard {what} limit", hard=True))
    return out


def _limits_words(limits: Sequence[LimitLine], fmt: Formatter) -> str:
    if not limits:
        return "; no limits set"
    return "; " + ", ".join(f"{lim.label} {fmt(lim.value)}" for lim in limits)
