"""Every single-factor estimate lies inside its own interval, on a rare outcome."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import flywheel


def test_estimates_lie_inside_their_intervals_on_a_rare_outcome(tmp_path: Path) -> None:
    """Clicks at 0.5% (less lower down) over a 60-value knob and a 30-value feature: the
    plug-in value at the posterior mean fell outside the draws' interval here (position = 1:
    0.00629 against 0.00666 to 0.01654); the posterior median cannot."""
    items, users = [f"i{i}" for i in range(60)], [f"u{i}" for i in range(30)]
    spec: dict[str, Any] = {
        "name": "rare",
        "knobs": {"item": items, "position": [1, 2, 3]},
        "context": {"user": users},
        "signals": {"click": "max"},
        "reward": {"formula": "click", "window": "1d"},
        "learn": {"online": False},
    }
    rng = random.Random(7)
    with flywheel.open(spec, store=f"duckdb:///{tmp_path / 'rare.duckdb'}", background=False) as w:
        rows = []
        for _ in range(8000):
            position = rng.choice([1, 2, 3])
            rate = 0.005 / position
            rows.append(
                {
                    "context": {"user": rng.choice(users)},
                    "params": {"item": rng.choice(items), "position": position},
                    "results": {"click": rng.random() < rate},
                }
            )
        w.log_many(rows)
        assert w.learn().published
        findings = w.analyze().single
    outside = [
        (f.factor, f.level, f.estimate, f.low, f.high)
        for f in findings
        if not f.low <= f.estimate <= f.high
    ]
    assert outside == []
    lifts = [(f.factor, f.level) for f in findings if not f.lift_low <= f.lift <= f.lift_high]
    assert lifts == []
