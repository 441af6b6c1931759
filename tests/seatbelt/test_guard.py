"""The negative-loop guard: an always-valid sequential test, and automatic rollback."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import norm

import flywheel
from flywheel.seatbelt.guard import msprt
from tests.conftest import DAY, HOUR, Clock
from tests.seatbelt.test_gate import Sim, spec


def _peeks(
    rng: np.random.Generator, drop: float, looks: int = 40, every: int = 100
) -> tuple[bool, bool]:
    """Look after every batch; return (mSPRT ever alarmed, naive z-test ever alarmed)."""
    new = rng.random(looks * every) < 0.5 - drop
    old = rng.random(looks * every) < 0.5
    ever_sequential = ever_naive = False
    for k in range(1, looks + 1):
        a, b = new[: k * every], old[: k * every]
        ever_sequential |= msprt(a, b, alpha=0.05).drop
        diff = a.mean() - b.mean()
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        ever_naive |= diff / se < -norm.ppf(0.975)
    return ever_sequential, ever_naive


def test_looking_often_does_not_inflate_false_alarms() -> None:
    rng = np.random.default_rng(0)
    runs = [_peeks(rng, drop=0.0) for _ in range(300)]
    sequential = float(np.mean([r[0] for r in runs]))
    naive = float(np.mean([r[1] for r in runs]))
    assert sequential <= 0.05  # one-sided alarms of a two-sided 5% test, 40 looks each
    assert naive > 2 * max(sequential, 0.01)  # what peeking does to a fixed-sample test


def test_a_real_drop_is_found() -> None:
    rng = np.random.default_rng(1)
    found = np.mean([_peeks(rng, drop=0.1)[0] for _ in range(50)])
    assert found >= 0.9
    result = msprt(rng.random(3000) < 0.4, rng.random(3000) < 0.5)
    assert result.drop and result.high < 0 and result.p_value < 0.05
    assert not msprt([1.0], [0.0]).drop  # too little to say anything


def test_a_drop_one_version_can_show_is_found_within_its_life() -> None:
    """A version lives for a cycle, a few hundred results: the test is tuned to the drops
    those can show. Exactly 0.5 against 0.3 (about 0.4 standard deviations), 200 results each."""
    old = np.tile([1.0, 0.0], 100)
    new = np.repeat([1.0, 0.0], [60, 140])
    result = msprt(new, old, alpha=0.01)
    assert result.difference == pytest.approx(-0.2)
    assert result.drop


def test_a_worse_version_is_rolled_back_and_publishing_halts(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    sim = Sim(make_wheel(spec(), seed=5), clock, 5)
    sim.play(60)
    assert sim.learn().published  # version 1: little data, a timid policy
    for _ in range(3):
        sim.play(600)
        assert sim.learn().published
    good = sim.wheel.playbook
    assert good is not None and good.version == 4
    worse = sim.wheel.rollback(1)  # a person restores an old, worse version
    assert worse.version == 5 and worse.meta["replaces"] == 4
    rolled = None
    # within 300 decisions: version 4's model (learned from more rows) foresees the drop, so
    # a change of the world is not taken out of it (the two share few cells: its estimate
    # is loose, and taking it out kept such a version live for 500 to 1,400 decisions)
    for _ in range(3):
        sim.play(100)
        rolled = sim.wheel.check()
        if rolled is not None:
            break
    assert rolled is not None and rolled.rolled_back and rolled.halted
    assert "earned" in rolled.reason
    served = sim.wheel.playbook
    assert served is not None and served.version == rolled.version == 6
    assert served.meta["restored_from"] == 4
    assert "rolled back to version 4" in rolled.reason
    assert sim.wheel.status().halt is not None
    assert sim.learn().halted  # nothing is published until a person resumes
    actions = [e["action"] for e in sim.wheel.status().events]
    assert actions[:3] == ["halt", "rollback", "rollback"]  # guard's, and the person's before


def test_volume_and_staleness_monitors(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel({**spec(), "quality": {"required": ["converted"]}})
    for _day in range(8):
        for _ in range(50):
            clock.now += DAY / 50
            d = wheel.decide({"genre": "thriller"})
            wheel.signal(d, "converted", 1)
    checks = {c.name: c for c in wheel.status().monitors}
    assert checks["volume.decisions"].ok and checks["staleness.converted"].ok
    for _ in range(10):  # a quiet day: a fifth of the usual decisions, and no results
        clock.now += DAY / 10
        wheel.decide({"genre": "thriller"})
    clock.now += 7 * DAY + HOUR
    checks = {c.name: c for c in wheel.status().monitors}
    assert not checks["staleness.converted"].ok
    assert "last converted signal 8.0d ago" in checks["staleness.converted"].summary
    clock.now -= 7 * DAY + HOUR
    checks = {c.name: c for c in wheel.status().monitors}
    assert not checks["volume.decisions"].ok and "(20%)" in checks["volume.decisions"].summary
    assert not checks["volume.signals"].ok


def test_a_world_that_got_worse_for_everyone_rolls_nothing_back(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """A new version goes live as every result falls by a third: compared on the same period
    (the fall both versions would have seen, measured in the cells both served, taken out),
    it is no worse than the one before, and stays."""
    sim = Sim(make_wheel(spec(), seed=6), clock, 6)
    for _ in range(4):
        sim.play(600)
        assert sim.learn().published
    served = sim.wheel.playbook
    assert served is not None and served.meta["replaces"] is not None
    for _ in range(10):
        sim.play(200, bug=lambda params, r: r * (sim.rng.random() < 0.66))  # a worse world
        assert sim.wheel.check() is None
    assert sim.wheel.status().halt is None
    # the plain comparison, period against period, would have called it a drop
    from flywheel.seatbelt.guard import msprt

    rows = sim.wheel.aligned().to_pylist()
    old = [r["reward"] for r in rows if r["playbook"] == served.meta["replaces"]]
    new = [r["reward"] for r in rows if r["playbook"] == served.version]
    assert msprt(new, old, 0.01).drop
