"""Offline evaluation on logs of an outside policy, against the true value of the target."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import flywheel
from tests.conftest import Clock

COMBOS = [("x", "p"), ("x", "q"), ("y", "p"), ("y", "q")]
LOGGING = {("x", "p"): 0.7, ("x", "q"): 0.1, ("y", "p"): 0.1, ("y", "q"): 0.1}
SPEC: dict[str, Any] = {
    "name": "evaluate",
    "knobs": {"a": ["x", "y"], "b": ["p", "q"]},
    "context": {"segment": ["s1", "s2"]},
    "signals": {"completed": "max"},
    "reward": {"formula": "completed", "window": "2d"},
    "learn": {"online": False},
}


def mean(segment: str, combo: tuple[str, str]) -> float:
    best = ("y", "q") if segment == "s1" else ("x", "q")
    return 0.7 if combo == best else 0.3 if combo != ("x", "p") else 0.4


def log(wheel: flywheel.Wheel, rows: int, seed: int) -> list[str]:
    """``rows`` decisions of an outside ranker that favours ("x", "p"), with propensities."""
    rng = random.Random(seed)
    segments = []
    batch = []
    for _ in range(rows):
        segment = rng.choice(["s1", "s2"])
        combo = rng.choices(COMBOS, weights=[LOGGING[c] for c in COMBOS])[0]
        done = rng.random() < mean(segment, combo)
        batch.append(
            {
                "context": {"segment": segment},
                "params": {"a": combo[0], "b": combo[1]},
                "results": {"completed": done},
                "policy": "ranker",
                "propensity": LOGGING[combo],
            }
        )
        segments.append(segment)
    wheel.log_many(batch)
    return segments


def test_a_playbook_and_a_policy_are_valued_within_their_intervals(tmp_path: Path) -> None:
    """Ten independent logs of 2,000 rows each: the 95% intervals of SNIPS and DR cover the
    true value of the target on the logged contexts at least 8 times in 10 (nominal 9.5)."""
    covered = {"ips": 0, "snips": 0, "dr": 0}
    always = {"ips": 0, "snips": 0, "dr": 0}
    for seed in range(10):
        url = f"duckdb:///{tmp_path / f'seed{seed}.duckdb'}"
        with flywheel.open(SPEC, store=url, clock=Clock(), background=False, seed=seed) as wheel:
            segments = log(wheel, 2000, seed)
            assert wheel.learn().published
            book = wheel.playbook
            assert book is not None
            greedy = wheel.evaluate(book.version, greedy=True)
            truth = sum(mean(s, _best(wheel, s)) for s in segments) / len(segments)
            for e in greedy.estimates:
                covered[e.method] += e.low <= truth <= e.high
            # a callable: always ("y", "q")
            fixed = wheel.evaluate(lambda context: {("y", "q"): 1.0})
            truth = sum(mean(s, ("y", "q")) for s in segments) / len(segments)
            for e in fixed.estimates:
                always[e.method] += e.low <= truth <= e.high
            assert fixed.rows == 2000 and fixed.policies == {"ranker": 2000}
            assert fixed.logged == pytest.approx(
                sum(LOGGING[c] * (mean("s1", c) + mean("s2", c)) / 2 for c in COMBOS), abs=0.04
            )
    assert covered["snips"] >= 8 and covered["dr"] >= 8, covered
    assert always["snips"] >= 8 and always["dr"] >= 8, always


def test_the_same_estimates_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    found = []
    for url in (f"duckdb:///{tmp_path / 'same.duckdb'}", pg_url):
        with flywheel.open(SPEC, store=url, clock=Clock(), background=False, seed=4) as wheel:
            log(wheel, 1500, 4)
            result = wheel.evaluate(lambda context: {("y", "q"): 0.5, ("x", "q"): 0.5})
            found.append(
                [(e.method, round(e.value, 12), round(e.low, 12)) for e in result.estimates]
            )
    assert found[0] == found[1]


def _best(wheel: flywheel.Wheel, segment: str) -> tuple[str, str]:
    book = wheel.playbook
    assert book is not None
    table = book.segment({"segment": segment})
    params = wheel.spec.space.params(int(table.rows[table.best]))
    return (str(params["a"]), str(params["b"]))


def test_thin_support_is_said(tmp_path: Path) -> None:
    """A target that always serves a combination logged with propensity 0.1: weights of 10
    on a tenth of the rows, an effective sample far below the rows."""
    url = f"duckdb:///{tmp_path / 'thin.duckdb'}"
    with flywheel.open(SPEC, store=url, clock=Clock(), background=False) as wheel:
        log(wheel, 1000, 1)
        result = wheel.evaluate(lambda context: {("y", "p"): 1.0})
        assert result.effective_n < 0.2 * result.rows
        assert any("thin support" in w for w in result.warnings)
        with pytest.raises(flywheel.InvalidInputError, match=r"sum to 1\.6, not 1"):
            wheel.evaluate(lambda context: {("y", "p"): 0.8, ("x", "p"): 0.8})
        with pytest.raises(flywheel.InvalidInputError, match=r"sum to 0\.5, not 1"):
            wheel.evaluate(lambda context: {("y", "p"): 0.5})
        with pytest.raises(flywheel.InvalidInputError, match="is not a combination"):
            wheel.evaluate(lambda context: {("y", "z"): 1.0})
        with pytest.raises(flywheel.InvalidInputError, match="greedy"):
            wheel.evaluate(lambda context: {("y", "p"): 1.0}, greedy=True)
        with pytest.raises(flywheel.InvalidInputError, match="nothing to evaluate"):
            wheel.evaluate(lambda context: {("y", "p"): 1.0}, policy="someone else")
        with pytest.raises(flywheel.InvalidInputError, match="no such version"):
            wheel.evaluate(7)


def test_combinations_the_logs_never_hold_are_said(tmp_path: Path) -> None:
    """A ranker that never logs ("y", "p"): a target that serves it half the time has half its
    probability where no estimator can see results, and says so."""
    url = f"duckdb:///{tmp_path / 'unseen.duckdb'}"
    rng = random.Random(3)
    with flywheel.open(SPEC, store=url, clock=Clock(), background=False) as wheel:
        served = [c for c in COMBOS if c != ("y", "p")]
        wheel.log_many(
            [
                {
                    "context": {"segment": "s1"},
                    "params": {"a": c[0], "b": c[1]},
                    "results": {"completed": rng.random() < 0.5},
                    "policy": "ranker",
                    "propensity": 1 / 3,
                }
                for c in (rng.choice(served) for _ in range(600))
            ]
        )
        result = wheel.evaluate(lambda context: {("y", "p"): 0.5, ("y", "q"): 0.5})
        assert any(w.startswith("no support: 50.0%") for w in result.warnings), result.warnings
        never = wheel.evaluate(lambda context: {("y", "p"): 1.0})
        assert [e.method for e in never.estimates] == ["ips", "dr"]  # SNIPS: undefined
        assert never.estimate("snips") is None and never.estimate("dr") is not None


def test_unique_contexts_are_not_taken_for_missing_support(tmp_path: Path) -> None:
    """A uniform logger over contexts that never repeat (an age per row) shows each context
    one combination: a target over every combination is supported all the same, and a
    combination the logs never hold anywhere still is not."""
    url = f"duckdb:///{tmp_path / 'unique.duckdb'}"
    spec = {**SPEC, "context": {"age": "number"}}
    rng = random.Random(5)
    served = [c for c in COMBOS if c != ("y", "p")]
    with flywheel.open(spec, store=url, clock=Clock(), background=False) as wheel:
        wheel.log_many(
            [
                {
                    "context": {"age": 20 + i / 7},
                    "params": {"a": c[0], "b": c[1]},
                    "results": {"completed": rng.random() < 0.5},
                    "policy": "ranker",
                    "propensity": 1 / 3,
                }
                for i, c in enumerate(rng.choice(served) for _ in range(400))
            ]
        )
        supported = wheel.evaluate(lambda context: dict.fromkeys(served, 1 / 3))
        unsupported = wheel.evaluate(lambda context: {("y", "p"): 0.25, ("y", "q"): 0.75})
    assert not [w for w in supported.warnings if w.startswith("no support")], supported.warnings
    assert any(w.startswith("no support: 25.0%") for w in unsupported.warnings), unsupported


def test_a_version_learned_for_another_spec_is_refused(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'other.duckdb'}"
    with flywheel.open(SPEC, store=url, clock=Clock(), background=False) as wheel:
        log(wheel, 800, 2)
        assert wheel.learn().published
    other = {**SPEC, "knobs": {"a": ["y", "x"], "b": ["p", "q"]}}
    with (
        flywheel.open(other, store=url, clock=Clock(), background=False) as wheel,
        pytest.raises(flywheel.InvalidInputError, match="learned for another spec"),
    ):
        wheel.evaluate(1)


ITEMS = [f"i{k}" for k in range(8)]
THUMBS, HEADS = ["t1", "t2", "t3", "t4"], ["h1", "h2", "h3"]
ITEM_LOG = [0.2, 0.15, 0.15, 0.1, 0.1, 0.1, 0.1, 0.1]
THUMB_LOG, HEAD_LOG = [0.4, 0.2, 0.2, 0.2], [0.5, 0.25, 0.25]
WIDE: dict[str, Any] = {
    **SPEC,
    "name": "wide",
    "knobs": {"item": ITEMS, "thumb": THUMBS, "head": HEADS},
}


def clicks(segment: str, item: str, thumb: str = "t1", lift: float = 0.0) -> float:
    """The true result: the item and the segment matter, the thumbnail and headline do not
    (unless ``lift``: what thumbnail t4 adds)."""
    k = ITEMS.index(item)
    return (0.2 + 0.05 * k if segment == "s1" else 0.6 - 0.05 * k) + lift * (thumb == "t4")


def log_wide(
    wheel: flywheel.Wheel, rows: int, seed: int, item_log: list[float], lift: float = 0.0
) -> None:
    """``rows`` decisions of 96 combinations (8 items × 4 thumbnails × 3 headlines) by a
    ranker that picks the three knobs independently, with their propensity."""
    rng = random.Random(seed)
    batch = []
    for _ in range(rows):
        segment = rng.choice(["s1", "s2"])
        k = rng.choices(range(8), weights=item_log)[0]
        t = rng.choices(range(4), weights=THUMB_LOG)[0]
        h = rng.choices(range(3), weights=HEAD_LOG)[0]
        batch.append(
            {
                "context": {"segment": segment},
                "params": {"item": ITEMS[k], "thumb": THUMBS[t], "head": HEADS[h]},
                "results": {"completed": rng.random() < clicks(segment, ITEMS[k], THUMBS[t], lift)},
                "policy": "ranker",
                "propensity": item_log[k] * THUMB_LOG[t] * HEAD_LOG[h],
            }
        )
    wheel.log_many(batch)


def wide_target(context: Mapping[str, Any]) -> dict[tuple[Any, ...], float]:
    """The segment's two best items, half each, always with thumbnail t4 and headline h3."""
    best = ("i6", "i7") if context["segment"] == "s1" else ("i0", "i1")
    return {(item, "t4", "h3"): 0.5 for item in best}


WIDE_TRUTH = (
    sum(clicks("s1", i) for i in ("i6", "i7")) + sum(clicks("s2", i) for i in ("i0", "i1"))
) / 4


def test_mips_marginalises_the_knobs_that_do_not_matter(tmp_path: Path) -> None:
    """96 combinations, a target that always shows the thumbnail and headline the ranker
    rarely shows: the combinations' weights are 20 times the items'. Marginalised over those
    two knobs (they do not change the result, which MIPS does not take on trust: it estimates
    their effects and pays for their uncertainty), MIPS covers the truth and errs less than
    IPS on the same logs."""
    errors: dict[str, list[float]] = {"ips": [], "mips": []}
    covered = 0
    for seed in range(6):
        url = f"duckdb:///{tmp_path / f'wide{seed}.duckdb'}"
        with flywheel.open(WIDE, store=url, clock=Clock(), background=False) as wheel:
            log_wide(wheel, 4000, seed, ITEM_LOG)
            result = wheel.evaluate(wide_target)
        mips = result.estimate("mips")
        ips = result.estimate("ips")
        assert mips is result.marginal and ips is not None
        assert result.marginal_knobs == ("item",)
        assert mips.effective_n > 5 * ips.effective_n
        covered += mips.low <= WIDE_TRUTH <= mips.high
        errors["mips"].append(abs(mips.value - WIDE_TRUTH))
        errors["ips"].append(abs(ips.value - WIDE_TRUTH))
    assert covered >= 5, covered
    assert sum(errors["mips"]) < 0.75 * sum(errors["ips"]), errors


def test_mips_corrects_for_a_dropped_knob_that_matters_a_little(tmp_path: Path) -> None:
    """Thumbnail t4 adds 0.06 to the rate, too little for the selection to keep the knob in
    every log: MIPS marginalised over it would carry about -0.04 of bias. It estimates the
    dropped knobs' effects instead, so its intervals still cover the truth."""
    lift = 0.06
    covered, errors = 0, []
    for seed in range(20):
        url = f"duckdb:///{tmp_path / f'lift{seed}.duckdb'}"
        with flywheel.open(WIDE, store=url, clock=Clock(), background=False) as wheel:
            log_wide(wheel, 4000, seed, ITEM_LOG, lift)
            mips = wheel.evaluate(wide_target).marginal
        truth = WIDE_TRUTH + lift
        covered += mips.low <= truth <= mips.high
        errors.append(mips.value - truth)
    assert covered >= 17, (covered, errors)
    assert abs(sum(errors) / len(errors)) < 0.02, errors


def test_mips_the_same_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    found = []
    for url in (f"duckdb:///{tmp_path / 'wide.duckdb'}", pg_url):
        with flywheel.open(WIDE, store=url, clock=Clock(), background=False) as wheel:
            log_wide(wheel, 4000, 9, ITEM_LOG)
            result = wheel.evaluate(wide_target)
            m = result.marginal
            found.append((result.marginal_knobs, round(m.value, 12), round(m.low, 12), m.high))
    assert found[0] == found[1]
    assert found[0][2] <= WIDE_TRUTH <= found[0][3]


def test_mips_says_thin_and_missing_support(tmp_path: Path) -> None:
    """A ranker that shows the target's items in s1 one time in 200 each: MIPS's marginal
    weights are worth few rows, and it says so; an item never shown is no support."""
    url = f"duckdb:///{tmp_path / 'wide-thin.duckdb'}"
    rare = [0.3, 0.2, 0.2, 0.15, 0.14, 0.005, 0.005, 0.0]
    with flywheel.open(WIDE, store=url, clock=Clock(), background=False) as wheel:
        log_wide(wheel, 3000, 1, rare)
        result = wheel.evaluate(wide_target)
    assert result.marginal_knobs == ("item",)
    assert result.marginal.effective_n < 0.1 * result.rows
    said = [w for w in result.warnings if "(MIPS, on item)" in w]
    assert any(w.startswith("thin support (MIPS, on item)") for w in said), result.warnings
    assert any(w.startswith("no support (MIPS, on item): 24.7%") for w in said), said
