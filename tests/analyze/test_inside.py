"""Every estimate lies inside its own interval on a rare outcome: single factors, and pairs
whose cells have no or almost no rows (they report the prior's near-zero interaction)."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flywheel
from flywheel.analyze import Analysis


def rare_clicks(
    path: Path,
    items: list[str],
    users: list[str],
    rows: int,
    rate: Callable[[str, int], float],
    seed: int,
) -> Analysis:
    """The analysis of ``rows`` clicks over an item and a position knob and a user feature,
    each row clicked with probability ``rate(item, position)``; no numeric warning allowed."""
    spec: dict[str, Any] = {
        "name": "rare",
        "knobs": {"item": items, "position": [1, 2, 3]},
        "context": {"user": users},
        "signals": {"click": "max"},
        "reward": {"formula": "click", "window": "1d"},
        "learn": {"online": False},
    }
    rng = random.Random(seed)
    logged = []
    for _ in range(rows):
        item, position = rng.choice(items), rng.choice([1, 2, 3])
        logged.append(
            {
                "context": {"user": rng.choice(users)},
                "params": {"item": item, "position": position},
                "results": {"click": rng.random() < rate(item, position)},
            }
        )
    with flywheel.open(spec, store=f"duckdb:///{path}", background=False) as wheel:
        wheel.log_many(logged)
        assert wheel.learn().published
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow, no division by zero
            return wheel.analyze()


def test_estimates_lie_inside_their_intervals_on_a_rare_outcome(tmp_path: Path) -> None:
    """Clicks at 0.5% (less lower down) over a 60-value knob and a 30-value feature: the
    plug-in value at the posterior mean fell outside the draws' interval here (position = 1:
    0.00629 against 0.00666 to 0.01654); the posterior median cannot."""
    items, users = [f"i{i}" for i in range(60)], [f"u{i}" for i in range(30)]
    analysis = rare_clicks(
        tmp_path / "rare.duckdb", items, users, 8000, lambda _, position: 0.005 / position, 7
    )
    findings = analysis.single
    outside = [
        (f.factor, f.level, f.estimate, f.low, f.high)
        for f in findings
        if not f.low <= f.estimate <= f.high
    ]
    assert outside == []
    lifts = [(f.factor, f.level) for f in findings if not f.lift_low <= f.lift <= f.lift_high]
    assert lifts == []


def test_empty_and_thin_cells_report_the_prior_not_an_extreme(tmp_path: Path) -> None:
    """Clicks at about 0.4% over an 80-value knob, a 3-value knob and a 20-value feature:
    4,000 rows leave item × user cells with 0 to 2 rows (and no click). The likelihood alone
    put such cells at effects of -0.93 to -0.995 (a probability of about 0.004 cannot fall by
    more than itself) and overflowed numpy's exp; the posterior puts them near zero."""
    items, users = [f"i{i:02d}" for i in range(80)], [f"u{i}" for i in range(20)]
    analysis = rare_clicks(
        tmp_path / "sparse.duckdb",
        items,
        users,
        4000,
        lambda item, position: 0.004 * (2 if item < "i10" else 1) / position,
        3,
    )
    pairs = {i.name: i for i in analysis.interactions}
    cells = [c for i in analysis.interactions for c in i.cells]
    assert len(cells) == 80 * 3 + 80 * 20 + 3 * 20
    outside = [
        (c.levels, c.effect, c.low, c.high) for c in cells if not c.low <= c.effect <= c.high
    ]
    assert outside == []
    thin = [c for c in pairs["item × user"].cells if c.rows <= 2]
    assert any(c.rows == 0 for c in thin) and any(c.rows > 0 for c in thin)
    # the click rate is about 0.004: an interaction cannot move it by more than a few times it
    assert max(abs(c.effect) for c in thin) < 0.004
    assert max(abs(c.effect) for c in cells) < 0.01
    assert all(c.high - c.low < 0.2 for c in thin)  # the prior's width, not [-1, +1]
    assert all(c.low > -0.02 for c in cells)
    assert analysis.found() == []  # nothing interacts in this world
    single = [s for s in analysis.single if not s.low <= s.estimate <= s.high]
    assert single == []
