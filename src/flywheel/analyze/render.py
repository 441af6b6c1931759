"""An :class:`~flywheel.analyze.Analysis` as JSON, Markdown, or one standalone HTML page.

The HTML page carries its charts as inline SVG (drawn with matplotlib), so it opens offline,
from a file, with nothing fetched.
"""

from __future__ import annotations

import html
import io
import json
import math
from typing import Any

from flywheel.analyze import Q_LEVEL, Analysis
from flywheel.analyze.findings import Interaction, LevelFinding, level_name

FORMATS = ("json", "markdown", "html")


def render(analysis: Analysis, fmt: str) -> str:
    if fmt == "json":
        return to_json(analysis)
    if fmt == "markdown":
        return to_markdown(analysis)
    if fmt == "html":
        return to_html(analysis)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")


def to_json(analysis: Analysis) -> str:
    return json.dumps(analysis.as_dict(), indent=2, default=_plain, allow_nan=False)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _n(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _single_rows(items: tuple[LevelFinding, ...]) -> list[list[str]]:
    return [
        [
            s.factor,
            str(s.level),
            f"{s.rows:,}",
            _n(s.observed),
            f"{_n(s.estimate)} ({_n(s.low)}–{_n(s.high)})",
            f"{s.lift:+.3g} ({s.lift_low:+.3g} to {s.lift_high:+.3g})" + (" *" if s.clear else ""),
        ]
        for s in items
    ]


def _pair_rows(items: tuple[Interaction, ...]) -> list[list[str]]:
    out = []
    for i in sorted(items, key=lambda i: i.p_value):
        c = i.strongest
        out.append(
            [
                i.name,
                f"{level_name(i.factors[0], c.levels[0])}, {level_name(i.factors[1], c.levels[1])}",
                f"{c.effect:+.3g} ({c.low:+.3g} to {c.high:+.3g})",
                f"{c.rows:,}",
                _n(c.observed),
                f"{i.p_value:.2g}",
                f"{i.q_value:.2g}" + (" *" if i.q_value <= Q_LEVEL else ""),
            ]
        )
    return out


def _best_rows(a: Analysis) -> list[list[str]]:
    return [
        [
            b.segment,
            ", ".join(f"{k} = {v}" for k, v in b.params.items()),
            f"{_n(b.expected)} ({_n(b.low)}–{_n(b.high)})",
            f"{b.p_best:.2f}",
            f"{b.lift:+.3g} ({b.lift_low:+.3g} to {b.lift_high:+.3g})",
            f"{b.rows:,}",
        ]
        for b in a.best
    ]


def _readiness_rows(a: Analysis) -> list[list[str]]:
    return [
        [
            " × ".join(r.factors),
            "pair" if r.order == "pair" else "alone",
            f"{r.rows:,}",
            _n(r.mde),
            "ready" if r.ready else (f"~{r.more_rows:,} more rows" if r.more_rows >= 0 else "—"),
        ]
        for r in a.readiness
    ]


HEADERS = {
    "single": ["factor", "level", "rows", "observed", "model (95%)", "lift vs reference (95%)"],
    "pairs": ["pair", "strongest cell", "beyond additive (95%)", "rows", "observed", "p", "q"],
    "best": ["segment", "best combination", "expected (95%)", "P(best)", "lift vs default", "rows"],
    "readiness": ["factors", "kind", "rows per level/cell", "detectable effect", "verdict"],
}


def to_markdown(a: Analysis) -> str:
    parts = [
        f"# Findings of playbook {a.version}",
        f"{a.rows:,} rows up to {a.as_of}; mean result {_n(a.mean)}."
        f" Smallest effect worth finding: {_n(a.findings.effect)}.",
        "## In short",
        "\n".join(f"- {s}" for s in a.sentences) or "- Nothing clear yet.",
    ]
    if a.warnings:
        parts += ["## Warnings", "\n".join(f"- {w}" for w in a.warnings)]
    parts += [
        "## Best combination per segment",
        _table(HEADERS["best"], _best_rows(a)),
        "## Pairs (interactions beyond the additive prediction)",
        _table(HEADERS["pairs"], _pair_rows(a.interactions)),
        f"`*`: found at q ≤ {Q_LEVEL} (Benjamini–Hochberg across every pair tested).",
        "## Single dimensions",
        _table(HEADERS["single"], _single_rows(a.single)),
        "`*`: the lift's 95% interval excludes zero.",
        "## Readiness",
        _table(HEADERS["readiness"], _readiness_rows(a)),
    ]
    return "\n\n".join(parts) + "\n"


# --- HTML ----------------------------------------------------------------------------------------

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
th { background: #f4f4f4; }
.warn { background: #fff4e0; padding: .5rem 1rem; border-left: 4px solid #e69500; }
figure { margin: 1rem 0; }
"""


def to_html(a: Analysis) -> str:
    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    sentences = "".join(f"<li>{html.escape(s)}</li>" for s in a.sentences)
    warnings = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in a.warnings)
    charts = [_lift_chart(a)] + [_pair_chart(i) for i in a.found()[:6]]
    body = f"""<h1>Findings of playbook {a.version}</h1>
<p>{a.rows:,} rows up to {html.escape(a.as_of)}; mean result {_n(a.mean)}.
Smallest effect worth finding: {_n(a.findings.effect)}.</p>
<h2>In short</h2><ul>{sentences}</ul>{warnings}
<h2>Best combination per segment</h2>{table(HEADERS["best"], _best_rows(a))}
<h2>Pairs</h2>{table(HEADERS["pairs"], _pair_rows(a.interactions))}
<h2>Single dimensions</h2>{table(HEADERS["single"], _single_rows(a.single))}
<h2>Charts</h2>{"".join(f"<figure>{c}</figure>" for c in charts if c)}
<h2>Readiness</h2>{table(HEADERS["readiness"], _readiness_rows(a))}"""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Flywheel findings, playbook {a.version}</title><style>{_STYLE}</style>"
        f"</head><body>{body}</body></html>\n"
    )


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _lift_chart(a: Analysis) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knobs = [s for s in a.single if s.kind == "knob"]
    if not knobs:
        return ""
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(knobs) + 1))
    labels = [f"{s.factor} = {s.level}" for s in knobs]
    y = list(range(len(knobs)))[::-1]
    ax.errorbar(
        [s.lift for s in knobs],
        y,
        xerr=[[s.lift - s.lift_low for s in knobs], [s.lift_high - s.lift for s in knobs]],
        fmt="o",
        color="#1f5fa8",
    )
    ax.axvline(0, color="#999", lw=1)
    ax.set_yticks(y, labels)
    ax.set_xlabel("lift over the reference value (95% interval), other factors as observed")
    ax.set_title("Single dimensions")
    svg = _svg(fig)
    plt.close(fig)
    return svg


def _pair_chart(i: Interaction) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    first = list(dict.fromkeys(c.levels[0] for c in i.cells))
    second = list(dict.fromkeys(c.levels[1] for c in i.cells))
    grid = np.zeros((len(first), len(second)))
    for c in i.cells:
        grid[first.index(c.levels[0]), second.index(c.levels[1])] = c.effect
    bound = float(np.abs(grid).max()) or 1.0
    fig, ax = plt.subplots(figsize=(1.1 * len(second) + 2.5, 0.5 * len(first) + 1.5))
    image = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(second)), [str(v) for v in second], rotation=30, ha="right")
    ax.set_yticks(range(len(first)), [str(v) for v in first])
    ax.set_xlabel(i.factors[1])
    ax.set_ylabel(i.factors[0])
    for (r, c), value in np.ndenumerate(grid):
        ax.text(c, r, f"{value:+.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"{i.name}: beyond the additive prediction (q = {i.q_value:.2g})")
    fig.colorbar(image, ax=ax)
    svg = _svg(fig)
    plt.close(fig)
    return svg
