"""Pairs on a rare outcome over a big knob: cells with no or almost no rows report the prior's
near-zero interaction, inside its own interval, and nothing overflows."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import flywheel

ITEMS = [f"i{i:02d}" for i in range(80)]
USERS = [f"u{i}" for i in range(20)]


def test_empty_and_thin_cells_report_the_prior_not_an_extreme(tmp_path: Path) -> None:
    """Clicks at about 0.4% over an 80-value knob, a 3-value knob and a 20-value feature:
    4,000 rows leave item × user cells with 0 to 2 rows (and no click). The likelihood alone
    put such cells at effects of -0.93 to -0.995 (a probability of about 0.004 cannot fall by
    more than itself) and overflowed numpy's exp; the posterior puts them near zero."""
    spec: dict[str, Any] = {
        "name": "sparse",
        "knobs": {"item": ITEMS, "position": [1, 2, 3]},
        "context": {"user": USERS},
        "signals": {"click": "max"},
        "reward": {"formula": "click", "window": "1d"},
        "learn": {"online": False},
    }
    rng = random.Random(3)
    rows = []
    for _ in range(4000):
        item, position = rng.choice(ITEMS), rng.choice([1, 2, 3])
        rate = 0.004 * (2 if item < "i10" else 1) / position
        rows.append(
            {
                "context": {"user": rng.choice(USERS)},
                "params": {"item": item, "position": position},
                "results": {"click": rng.random() < rate},
            }
        )
    url = f"duckdb:///{tmp_path / 'sparse.duckdb'}"
    with flywheel.open(spec, store=url, background=False) as wheel:
        wheel.log_many(rows)
        assert wheel.learn().published
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow, no division by zero
            analysis = wheel.analyze()
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
