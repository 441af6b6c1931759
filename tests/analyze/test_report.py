"""Reports that stay readable, and analysis of rows logged with propensities."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import flywheel
from flywheel.analyze import Analysis
from flywheel.analyze.render import render

REGIONS = [f"r{i}" for i in range(10)]
TIERS = [f"t{i}" for i in range(10)]
CITIES = [f"c{i}" for i in range(50)]


def test_a_report_of_5000_segments_stays_short_and_says_what_to_do_first(
    tmp_path: Path,
) -> None:
    """Three features of 10, 10 and 50 values: 5,000 segments, of which the rows reach 400
    (4 regions × 5 tiers × 20 cities). The Markdown report opens with what to do, lists the
    segments with the most rows, and folds the 4,600 without rows into one line."""
    spec: dict[str, Any] = {
        "name": "segments",
        "knobs": {"tone": ["plain", "warm", "bold"]},
        "context": {"region": REGIONS, "tier": TIERS, "city": CITIES},
        "skeleton": {"default": {"tone": "plain"}},
        "signals": {"ok": "max"},
        "reward": {"formula": "ok", "window": "1d"},
        "learn": {"online": False, "interactions": "none"},
    }
    rng = random.Random(1)
    rows = []
    for _ in range(6000):
        context = {
            "region": rng.choice(REGIONS[:4]),
            "tier": rng.choice(TIERS[:5]),
            "city": rng.choice(CITIES[:20]),
        }
        tone = rng.choice(["plain", "warm", "bold"])
        p = 0.3 + (0.1 if tone == "warm" else 0.0) + (0.1 if context["region"] == "r1" else 0.0)
        rows.append(
            {"context": context, "params": {"tone": tone}, "results": {"ok": rng.random() < p}}
        )
    with flywheel.open(spec, store=f"duckdb:///{tmp_path / 's.duckdb'}", background=False) as w:
        w.log_many(rows)
        assert w.learn().published
        analysis = w.analyze()
        exported = w.playbook_rows()
    assert analysis.findings.segments == 5000
    assert analysis.findings.unseen is not None and analysis.findings.unseen.segments == 4600
    assert len(analysis.best) == 400 and sum(b.rows for b in analysis.best) == 6000
    markdown = render(analysis, "markdown")
    assert len(markdown.encode()) <= 100_000
    sections = re.findall(r"^## (.+)$", markdown, re.MULTILINE)
    assert sections[0] == "What to do"
    top = markdown.split("## ", 2)[1]
    assert "Serve playbook 1" in top and "tone = warm: best in 400 segments" in top
    assert "Ready: the best combination beats the default clearly" in top
    assert "4,600 segments have no rows" in top
    # the empty segments: one line, not 4,600; the segments with rows: the biggest 20
    folded = [line for line in markdown.splitlines() if "have no rows yet" in line]
    assert len(folded) == 1
    assert folded[0].startswith("4,600 of the 5,000 segments have no rows yet")
    assert "tone = warm to " in folded[0]
    best = markdown.split("## Best combination per segment", 1)[1].split("\n## ", 1)[0]
    assert best.count("\n| region = ") == 20
    assert "380 more segments with rows" in best and "flywheel export playbook" in best
    # the export lists every segment, with its rows
    assert len(exported) == 5000 and sum(r["rows"] for r in exported) == 6000
    page = render(analysis, "html")
    assert page.index("What to do") < page.index("In short")
    assert len(page.encode()) <= 200_000


SPEC: dict[str, Any] = {
    "name": "logged",
    "knobs": {"c": ["u", "v", "w"]},
    "context": {"g": ["m", "n"]},
    "skeleton": {"default": {"c": "u"}},
    "reward": {"formula": "ok", "window": "1000d"},
    "learn": {"online": False},
}


def _logged(tmp_path: Path, propensities: bool) -> Analysis:
    """An outside ranker that tries c = v where everything does badly (g = n) 90% of the time,
    and 10% elsewhere; c = v is better by 0.1 everywhere."""
    rng = random.Random(5)
    rows = []
    for _ in range(4000):
        g = rng.choice("mn")
        tried = 0.9 if g == "n" else 0.1
        chances = {"u": (1 - tried) / 2, "v": tried, "w": (1 - tried) / 2}
        c = rng.choices(list(chances), weights=list(chances.values()))[0]
        p = (0.7 if g == "m" else 0.2) + (0.1 if c == "v" else 0.0)
        row: dict[str, Any] = {
            "context": {"g": g},
            "params": {"c": c},
            "results": {"ok": float(rng.random() < p)},
        }
        if propensities:
            row |= {"policy": "ranker", "propensity": chances[c]}
        rows.append(row)
    url = f"duckdb:///{tmp_path / f'logged{propensities}.duckdb'}"
    with flywheel.open(SPEC, store=url, background=False, seed=0) as wheel:
        wheel.log_many(rows)
        assert wheel.learn().published
        return wheel.analyze()


def _observed(a: Analysis, level: str) -> float:
    found = next(s for s in a.single if (s.factor, s.level) == ("c", level)).observed
    assert found is not None
    return found


def test_rows_with_propensities_are_weighted_not_warned_about(tmp_path: Path) -> None:
    """With the ranker's propensities the observed means weigh each row by their inverse:
    c = v against u comes out near the true +0.1 (the raw means say about -0.28), so neither
    the confounding nor the Simpson warning fires; the playbook is valued on those rows."""
    a = _logged(tmp_path, propensities=True)
    assert a.logging is not None
    assert (a.logging.propensities, a.logging.weighted, a.observational) == (4000, 4000, 0)
    # (standard errors about 0.026 and 0.015: few rows tried v where g = m, or u where g = n)
    assert abs(_observed(a, "v") - _observed(a, "u") - 0.1) < 0.07
    assert abs(_observed(a, "v") - 0.55) < 0.05  # the mean over g as if chosen uniformly
    assert a.warnings == ()
    e = a.evaluation
    assert e is not None and e.rows == 4000 and e.policies == {"ranker": 4000}
    snips, dr = e.estimate("snips"), e.estimate("dr")
    assert snips is not None and dr is not None
    # the playbook serves c = v nearly always: worth about 0.55, against 0.50 logged
    assert snips.low <= 0.55 <= snips.high and dr.low <= 0.55 <= dr.high
    markdown = render(a, "markdown")
    earned = markdown.split("## What it would have earned", 1)[1].split("\n## ", 1)[0]
    assert "by ranker (4,000)" in earned and "| SNIPS |" in earned and "| DR |" in earned


def test_rows_without_propensities_are_warned_about_only_when_not_uniform(
    tmp_path: Path,
) -> None:
    """The same ranker's rows without their propensities: the raw means are confounded, the
    choice visibly depended on g, and the warning says how many rows and why; no offline
    evaluation (no propensity to weigh by)."""
    a = _logged(tmp_path, propensities=False)
    assert a.logging is not None and a.logging.propensities == 0 and a.observational == 4000
    assert _observed(a, "v") - _observed(a, "u") < -0.2
    (warning,) = [w for w in a.warnings if "carry no propensity" in w]
    assert warning.startswith("4,000 of the 4,000 analysed rows carry no propensity")
    assert "c was chosen differently across g" in warning
    assert any("c = v looks" in w and "confounded" in w for w in a.warnings)
    assert a.evaluation is None
    markdown = render(a, "markdown")
    assert "Not evaluated: no analysed row carries a propensity" in markdown
