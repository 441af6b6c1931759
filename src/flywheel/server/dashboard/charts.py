"""Charts for the dashboard, drawn as SVG on the server: no script, nothing fetched.

Four shapes cover every page: :func:`lines` (series over time), :func:`intervals` (a value
with its 95% interval per category, in order: a playbook's versions over time),
:func:`forest` (the same, one row under the other, for long labels: an effect per
interaction) and :func:`bars` (one figure per category). Each chart is an ``<svg role="img">``
whose title and description say in words what it shows (its text alternative); the page also
offers the numbers as a table. Colours keep a contrast of at least 4.5:1 on white.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44
COLOURS = ("#1f5fa8", "#a34400", "#276a2b", "#6a3d9a")  # ≥ 4.5:1 on white
INK, GRID = "#1a1a1a", "#d0d0d0"


def lines(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    unit: str = "",
    zero: bool = False,
) -> str:
    """One line per series over ``labels`` (gaps where a value is ``None``; the axis starts
    at zero with ``zero``, for counts)."""
    values = [v for vs in series.values() for v in vs if v is not None] + ([0.0] if zero else [])
    low, high = _range(values)
    x = _positions(len(labels))
    parts = _axes(low, high, labels, x)
    for vs, colour in zip(series.values(), COLOURS, strict=False):
        for run in _runs(vs):
            points = " ".join(f"{x[i]:.1f},{_y(vs[i], low, high):.1f}" for i in run)  # type: ignore[arg-type]
            if len(run) == 1:
                i = run[0]
                parts.append(_dot(x[i], _y(vs[i], low, high), colour))  # type: ignore[arg-type]
            else:
                parts.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
                )
    parts.append(_legend(list(series)))
    described = "; ".join(
        f"{name}: {_span(vs)}{(' ' + unit) if unit else ''}" for name, vs in series.items()
    )
    return _svg(title, f"{title}. {described}.", parts)


def intervals(
    title: str,
    points: Sequence[tuple[str, float | None, float | None, float | None]],
    *,
    reference: float | None = None,
    joined: bool = False,
) -> str:
    """``(label, value, low, high)`` per category, in order: a dot with its interval (and a
    line through the dots when ``joined``, for versions over time; a dashed line at
    ``reference``, such as zero for effects)."""
    values = [v for _, *vs in points for v in vs if v is not None]
    if reference is not None:
        values.append(reference)
    low, high = _range(values)
    x = _positions(len(points))
    parts = _axes(low, high, [p[0] for p in points], x)
    if reference is not None:
        y = _y(reference, low, high)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{INK}"'
            ' stroke-dasharray="4 3"/>'
        )
    if joined:
        known = [(x[i], _y(p[1], low, high)) for i, p in enumerate(points) if p[1] is not None]
        if len(known) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in known)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{GRID}" stroke-width="2"/>'
            )
    for i, (_, value, lo, hi) in enumerate(points):
        if lo is not None and hi is not None:
            parts.append(
                f'<line x1="{x[i]:.1f}" x2="{x[i]:.1f}" y1="{_y(lo, low, high):.1f}"'
                f' y2="{_y(hi, low, high):.1f}" stroke="{COLOURS[0]}" stroke-width="2"/>'
            )
        if value is not None:
            parts.append(_dot(x[i], _y(value, low, high), COLOURS[0]))
    described = "; ".join(
        f"{label}: {_fmt(value)}" + (f" ({_fmt(lo)} to {_fmt(hi)})" if lo is not None else "")
        for label, value, lo, hi in points
    )
    return _svg(title, f"{title}. {described or 'no data yet'}.", parts)


def forest(
    title: str,
    rows: Sequence[tuple[str, float, float, float]],
    *,
    reference: float = 0.0,
) -> str:
    """``(label, value, low, high)`` per row, one row under the other with its label on the
    left (for long labels: the effect of each interaction), and a dashed line at
    ``reference``."""
    label_width, row = 270, 26
    height = TOP + BOTTOM // 2 + row * max(1, len(rows))
    low, high = _range([reference, *(v for _, *vs in rows for v in vs)])

    def x(value: float) -> float:
        return label_width + (WIDTH - RIGHT - label_width) * (value - low) / (high - low)

    zero = x(reference)
    parts = [
        f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{TOP}" y2="{height - BOTTOM // 2}"'
        f' stroke="{INK}" stroke-dasharray="4 3"/>'
    ]
    for tick in _ticks(low, high):
        parts.append(
            f'<text x="{x(tick):.1f}" y="{height - 4}" text-anchor="middle" fill="{INK}">'
            f"{_fmt(tick)}</text>"
        )
    for i, (label, value, lo, hi) in enumerate(rows):
        y = TOP + row * i + row / 2
        short = label if len(label) <= 36 else label[:35] + "…"
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 4:.1f}" text-anchor="end" fill="{INK}">'
            f"<title>{escape(label)}</title>{escape(short)}</text>"
            f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{y:.1f}" y2="{y:.1f}"'
            f' stroke="{COLOURS[0]}" stroke-width="2"/>' + _dot(x(value), y, COLOURS[0])
        )
    described = "; ".join(
        f"{label}: {_fmt(value)} ({_fmt(lo)} to {_fmt(hi)})" for label, value, lo, hi in rows
    )
    return _svg(title, f"{title}. {described or 'no data yet'}.", parts, height)


def bars(title: str, items: Sequence[tuple[str, float | None]], *, unit: str = "") -> str:
    """One bar per category (none where the value is ``None``: nothing measured)."""
    low, high = _range([0.0, *(v for _, v in items if v is not None)])
    x = _positions(len(items))
    parts = _axes(low, high, [label for label, _ in items], x)
    width = max(4.0, min(40.0, (WIDTH - LEFT - RIGHT) / max(1, len(items)) * 0.6))
    base = _y(0.0, low, high)
    for i, (_, value) in enumerate(items):
        if value is None:
            continue
        top = _y(value, low, high)
        parts.append(
            f'<rect x="{x[i] - width / 2:.1f}" y="{min(top, base):.1f}" width="{width:.1f}"'
            f' height="{abs(base - top):.1f}" fill="{COLOURS[0]}"/>'
        )
    suffix = f" {unit}" if unit else ""
    described = "; ".join(
        f"{label}: {_fmt(v)}{suffix}" if v is not None else f"{label}: not measured"
        for label, v in items
    )
    return _svg(title, f"{title}. {described or 'no data yet'}.", parts)


# --- drawing ---------------------------------------------------------------------------------


def _svg(title: str, description: str, parts: list[str], height: float = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" role="img"'
        f' aria-label="{escape(description)}" font-family="system-ui, sans-serif" font-size="12">'
        f"<title>{escape(title)}</title><desc>{escape(description)}</desc>"
        + "".join(parts)
        + "</svg>"
    )


def _range(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.08
    return low - pad, high + pad


def _positions(n: int) -> list[float]:
    span = WIDTH - LEFT - RIGHT
    if n <= 1:
        return [LEFT + span / 2] * n
    step = span / n
    return [LEFT + step * (i + 0.5) for i in range(n)]


def _y(value: float, low: float, high: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - (value - low) / (high - low))


def _axes(low: float, high: float, labels: Sequence[str], x: Sequence[float]) -> list[str]:
    parts = []
    for tick in _ticks(low, high):
        y = _y(tick, low, high)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{INK}">'
            f"{_fmt(tick)}</text>"
        )
    every = max(1, math.ceil(len(labels) / 10))  # at most ten labels under the axis
    for i, label in enumerate(labels):
        if i % every == 0:
            parts.append(
                f'<text x="{x[i]:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle"'
                f' fill="{INK}">{escape(label)}</text>'
            )
    bottom = HEIGHT - BOTTOM
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="{INK}"/>'
    )
    return parts


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(count + 2) if first + i * step <= high]


def _dot(x: float, y: float, colour: str) -> str:
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>'


def _legend(names: Sequence[str]) -> str:
    parts = []
    x = LEFT
    for name, colour in zip(names, COLOURS, strict=False):
        parts.append(
            f'<rect x="{x}" y="{HEIGHT - 14}" width="12" height="4" fill="{colour}"/>'
            f'<text x="{x + 16}" y="{HEIGHT - 9}" fill="{INK}">{escape(name)}</text>'
        )
        x += 24 + 7 * len(name)
    return "".join(parts)


def _runs(values: Sequence[float | None]) -> list[list[int]]:
    """The indices of each unbroken stretch of known values."""
    runs: list[list[int]] = []
    current: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(i)
    if current:
        runs.append(current)
    return runs


def _span(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "no data"
    return f"from {_fmt(known[0])} to {_fmt(known[-1])}, highest {_fmt(max(known))}"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"
