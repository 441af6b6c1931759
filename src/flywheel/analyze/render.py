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
from flywheel.analyze.export import MAX_EXPORTED_SEGMENTS
from flywheel.analyze.findings import Best, Interaction, LevelFinding, level_name

FORMATS = ("json", "markdown", "html")
TOP_SEGMENTS = 20  # segments with rows shown one a line (the most rows first); the rest summed
TOP_LEVELS = 12  # levels of one factor shown one a line; a bigger factor's rest summed
TOP_COMBINATIONS = 3  # combinations recommended by name in "What to do"


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
    """One line per level; a factor of more than :data:`TOP_LEVELS` levels shows its clear
    lifts and biggest levels, its other levels summed in one line."""
    out = []
    for name, shown, rest in _by_factor(items):
        out += [
            [
                s.factor,
                str(s.level),
                f"{s.rows:,}",
                _n(s.observed),
                f"{_n(s.estimate)} ({_n(s.low)}–{_n(s.high)})",
                f"{s.lift:+.3g} ({s.lift_low:+.3g} to {s.lift_high:+.3g})"
                + (" *" if s.clear else ""),
            ]
            for s in shown
        ]
        if rest:
            rows = sum(s.rows for s in rest)
            out.append([name, f"… {len(rest):,} more levels", f"{rows:,}", "", "", "none clear"])
    return out


def _by_factor(
    items: tuple[LevelFinding, ...],
) -> list[tuple[str, list[LevelFinding], list[LevelFinding]]]:
    """Per factor, the levels shown (all, or of a big factor its clear lifts and biggest
    levels, :data:`TOP_LEVELS` in all, in their order) and the rest."""
    factors: dict[str, list[LevelFinding]] = {}
    for s in items:
        factors.setdefault(s.factor, []).append(s)
    out = []
    for name, levels in factors.items():
        keep = sorted(levels, key=lambda s: (not s.clear, -s.rows))[:TOP_LEVELS]
        shown = [s for s in levels if s in keep]
        out.append((name, shown, [s for s in levels if s not in keep]))
    return out


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
    """The segments with the most rows, one a line (at most :data:`TOP_SEGMENTS`)."""
    return [
        [
            b.segment,
            _assignment(b.params),
            f"{_n(b.expected)} ({_n(b.low)}–{_n(b.high)})",
            f"{b.p_best:.2f}",
            f"{b.lift:+.3g} ({b.lift_low:+.3g} to {b.lift_high:+.3g})",
            f"{b.rows:,}",
        ]
        for b in a.best[:TOP_SEGMENTS]  # the most rows first
    ]


def _assignment(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in params.items())


def _more_segments(a: Analysis) -> list[str]:
    """What the best-combination table leaves out, each as one line: the other segments with
    rows, and the segments without (folded: how many, and what they are served)."""
    out = []
    f = a.findings
    with_rows = f.segments - (f.unseen.segments if f.unseen else 0)
    shown = min(len(a.best), TOP_SEGMENTS)
    if with_rows > shown:
        rest = a.rows - sum(b.rows for b in a.best[:shown])
        out.append(
            f"{with_rows - shown:,} more segments with rows ({rest:,} rows) are not shown:"
            " `flywheel export playbook` lists every segment's exact values, its expected"
            " result and its rows (`flywheel export findings` their findings)."
        )
    if f.unseen is not None:
        out.append(_unseen_line(a))
    return out


def _unseen_line(a: Analysis) -> str:
    u = a.findings.unseen
    assert u is not None
    served = "; ".join(
        f"{_assignment(params)} to {count:,}" for params, count in u.served[:TOP_COMBINATIONS]
    )
    others = len(u.served) - TOP_COMBINATIONS
    if others > 0:
        served += f"; {others:,} other combinations to the rest"
    of = f" (of the {u.examined:,} looked at)" if u.examined < u.segments else ""
    return (
        f"{u.segments:,} of the {a.findings.segments:,} segments have no rows yet: the playbook"
        f" serves them what their features' levels predict{of}: {served or 'nothing allowed'}."
    )


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
    "earned": ["estimate", "value (95%)", "effective rows"],
}


def what_to_do(a: Analysis) -> list[str]:
    """The answer to "what should I do?", first in every report: what to serve, what is
    ready to act on, what needs more data, what to check first."""
    out = []
    f = a.findings
    if len(a.best) == 1 and f.segments == 1:
        b = a.best[0]
        out.append(
            f"Use {_assignment(b.params)}: expected {_n(b.expected)}"
            f" ({_n(b.low)}–{_n(b.high)}) against {_n(b.default)} for the default"
            f" (lift {b.lift:+.3g}, {b.lift_low:+.3g} to {b.lift_high:+.3g};"
            f" P(best) = {b.p_best:.2f}). Playbook {a.version} serves it."
        )
    elif a.best:
        combos: dict[str, list[Best]] = {}
        for b in a.best:
            combos.setdefault(_assignment(b.params), []).append(b)
        ranked = sorted(combos.items(), key=lambda item: -sum(b.rows for b in item[1]))
        rows = sum(b.rows for b in a.best)
        lines = [
            f"{name}: best in {len(group):,} segments ({sum(b.rows for b in group):,} of"
            f" {rows:,} rows), lift over the default"
            f" {_n(min(b.lift for b in group))} to {_n(max(b.lift for b in group))}"
            for name, group in ranked[:TOP_COMBINATIONS]
        ]
        if len(ranked) > TOP_COMBINATIONS:
            lines.append(f"{len(ranked) - TOP_COMBINATIONS:,} other combinations elsewhere")
        listed = "them all" if f.segments <= MAX_EXPORTED_SEGMENTS else "the first"
        out.append(
            f"Serve playbook {a.version}: it gives each segment its best combination"
            f" (`flywheel export playbook` writes {listed} as exact values). Most often: "
            + "; ".join(lines)
            + "."
        )
    clear = [b for b in a.best if b.lift_low > 0]
    unclear = [b for b in a.best if b.lift_low <= 0]
    found = a.found()
    ready = []
    if clear:
        ready.append(
            f"the best combination beats the default clearly (its lift's 95% interval above"
            f" zero) in {len(clear):,} of {len(a.best):,} segments with rows"
            f" ({sum(b.rows for b in clear):,} rows)"
        )
    if found:
        names = ", ".join(i.name for i in found[:5]) + (", …" if len(found) > 5 else "")
        ready.append(f"{len(found)} interactions found at q ≤ {Q_LEVEL} ({names})")
    out.append("Ready: " + ("; ".join(ready) if ready else "nothing clear yet") + ".")
    needs = []
    if unclear:
        needs.append(
            f"{len(unclear):,} segments with rows ({sum(b.rows for b in unclear):,} rows) where"
            " the best is not yet clearly better than the default: keep exploring there"
        )
    waiting = sorted((r for r in f.readiness if not r.ready), key=lambda r: r.more_rows)
    if waiting:
        named = ", ".join(
            " × ".join(r.factors)
            + (f" (~{r.more_rows:,} more rows)" if r.more_rows >= 0 else " (rows in every cell)")
            for r in waiting[:5]
        )
        more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
        needs.append(f"effects of {_n(f.effect)} cannot be detected yet for {named}{more}")
    if f.unseen is not None:
        needs.append(f"{f.unseen.segments:,} segments have no rows at all (see below)")
    if needs:
        out.append("Needs more data: " + "; ".join(needs) + ".")
    if a.warnings:
        out.append(f"Read the {len(a.warnings)} warnings below before acting on the findings.")
    return out


def _earned(a: Analysis) -> tuple[str, list[list[str]], list[str]]:
    """What the playbook would have earned on the rows logged with propensities: a sentence,
    a table of estimates, and the evaluation's own warnings."""
    e = a.evaluation
    if e is None:
        return f"Not evaluated: {a.evaluation_note}.", [], []
    policies = ", ".join(f"{name} ({rows:,})" for name, rows in e.policies.items())
    text = (
        f"Playbook {e.target} on the {e.rows:,} analysed rows logged with"
        f" propensities, by {policies}: the logging policies earned {_n(e.logged)} on them."
    )
    rows = [
        [
            x.method.upper(),
            f"{_n(x.value)} ({_n(x.low)}–{_n(x.high)})",
            f"{x.effective_n:,.0f}",
        ]
        for x in e.estimates
        if x.method in ("snips", "dr")
    ]
    return text, rows, list(e.warnings)


def to_markdown(a: Analysis) -> str:
    parts = [
        f"# Findings of playbook {a.version}",
        f"{a.rows:,} rows up to {a.as_of}; mean result {_n(a.mean)}."
        f" Smallest effect worth finding: {_n(a.findings.effect)}.",
        "## What to do",
        "\n".join(f"- {s}" for s in what_to_do(a)),
        "## In short",
        "\n".join(f"- {s}" for s in a.sentences) or "- Nothing clear yet.",
    ]
    if a.warnings:
        parts += ["## Warnings", "\n".join(f"- {w}" for w in a.warnings)]
    earned, estimates, cautions = _earned(a)
    parts += ["## What it would have earned", earned]
    if estimates:
        parts.append(_table(HEADERS["earned"], estimates))
    if cautions:
        parts.append("\n".join(f"- {c}" for c in cautions))
    parts += [
        "## Best combination per segment",
        _table(HEADERS["best"], _best_rows(a)),
        *_more_segments(a),
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

    def items(lines: list[str]) -> str:
        return "".join(f"<li>{html.escape(s)}</li>" for s in lines)

    def paragraphs(lines: list[str], kind: str = "") -> str:
        attribute = f" class='{kind}'" if kind else ""
        return "".join(f"<p{attribute}>{html.escape(s)}</p>" for s in lines)

    warnings = paragraphs(list(a.warnings), "warn")
    charts = [_lift_chart(a)] + [_pair_chart(i) for i in a.found()[:6] if len(i.cells) <= 900]
    earned, estimates, cautions = _earned(a)
    earned_html = (
        paragraphs([earned])
        + (table(HEADERS["earned"], estimates) if estimates else "")
        + paragraphs(cautions, "warn")
    )
    body = f"""<h1>Findings of playbook {a.version}</h1>
<p>{a.rows:,} rows up to {html.escape(a.as_of)}; mean result {_n(a.mean)}.
Smallest effect worth finding: {_n(a.findings.effect)}.</p>
<h2>What to do</h2><ul>{items(what_to_do(a))}</ul>
<h2>In short</h2><ul>{items(list(a.sentences))}</ul>{warnings}
<h2>What it would have earned</h2>{earned_html}
<h2>Best combination per segment</h2>{table(HEADERS["best"], _best_rows(a))}
{paragraphs(_more_segments(a))}
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

    knobs = [s for _, shown, _ in _by_factor(a.single) for s in shown if s.kind == "knob"]
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
    if grid.size <= 144:  # a number in each cell while they stay legible
        for (r, c), value in np.ndenumerate(grid):
            ax.text(c, r, f"{value:+.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"{i.name}: beyond the additive prediction (q = {i.q_value:.2g})")
    fig.colorbar(image, ax=ax)
    svg = _svg(fig)
    plt.close(fig)
    return svg
