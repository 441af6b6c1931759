"""Offline evaluation benchmark: are ``wheel.evaluate()``'s intervals calibrated, and how far
is each estimator from the truth, on simulated recommender logs with a known value?

Every seed is a fresh world (``bench/recommender.py``: item quality, item × feature affinity,
a position effect) and a fresh log of a skewed logging policy (an earlier ranker's softmax
over a noisy view of quality, 10% uniform), with exact propensities, logged through
``wheel.log_many`` into an in-memory DuckDB store. The target is fixed per world and known
in full, so its true value is computed exactly: the expected click rate over the world's
context distribution (the first feature's skewed levels, positions uniform) of the target's
probabilities times the world's click rates. Scenarios:

- ``catalogue``: one knob, the 80-item catalogue; the four hashed features and the position
  as context (almost every context unique). The target is a softmax over the true click
  logits of the items for the first feature and the position (temperature 1/2).
- ``presentation``: 10 items and two presentation knobs the world ignores (``thumbnail``, 4
  values, and ``headline``, 3: 120 combinations); context: the first feature (4 levels) and
  the position (12 contexts). The ranker shows thumbnail ``t1`` 40% and headline ``h1`` 50%
  of the time, independently of the item; the target always shows ``t4`` and ``h3`` with the
  catalogue target's items, so the combinations' weights are 20 times the items' alone.
- ``presentation-effect``: the same, but thumbnail ``t4`` raises the click log-odds by 0.3
  (a direct effect: marginalising over the thumbnail would be biased).

Per estimator: coverage of the nominal 95% interval (± its binomial standard error), the mean
relative error ``|estimate - truth| / truth``, the root mean squared relative error, the mean
interval width relative to the truth, and for MIPS how often each set of knobs was kept.

Run: ``.venv/bin/python bench/evaluate.py`` (200 seeds per scenario, 4,000 rows each; about 8
minutes on 2 cores), or a smoke run: ``.venv/bin/python bench/evaluate.py --seeds 10``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from _common import report, run_all  # type: ignore[import-not-found]
from recommender import FEATURES, POSITIONS, World, hashed, item_name  # type: ignore[import-not-found]

import flywheel

SCENARIOS = ("catalogue", "presentation", "presentation-effect")
METHODS = ("ips", "snips", "dr", "mips")
THUMBNAILS = ("t1", "t2", "t3", "t4")
HEADLINES = ("h1", "h2", "h3")
LOG_THUMBNAIL = np.array([0.4, 0.2, 0.2, 0.2])
LOG_HEADLINE = np.array([0.5, 0.25, 0.25])
EFFECT = 0.3  # the log-odds thumbnail t4 adds in presentation-effect
TEMPERATURE = 2.0  # the target's softmax: exp(2 × true log-odds)


def target_items(world: World) -> np.ndarray:
    """The target's item probabilities by first-feature level and position: (levels, 3, items)."""
    logit = (
        world.quality[None, None, :] + world.affinity.T[:, None, :] + world.position[None, :, None]
    )
    scores = np.exp(TEMPERATURE * (logit - logit.max(axis=2, keepdims=True)))
    probs: np.ndarray = scores / scores.sum(axis=2, keepdims=True)
    return probs


def truth(world: World, items: np.ndarray, effect: float) -> float:
    """The exact expected click rate of the target: context distribution × its probabilities
    × the world's click rates (with ``effect`` added to the log-odds of thumbnail t4)."""
    weights = 1.0 / np.arange(1, world.levels + 1) ** 0.8
    weights /= weights.sum()
    total = 0.0
    catalogue = np.arange(world.items)
    for level in range(world.levels):
        for pos in range(len(POSITIONS)):
            codes = {"u1": np.full(world.items, level), "position": np.full(world.items, pos)}
            rate = _rate(world, codes, catalogue, effect)
            total += weights[level] / len(POSITIONS) * float(items[level, pos] @ rate)
    return total


def _rate(
    world: World, codes: Mapping[str, np.ndarray], items: np.ndarray, effect: float
) -> np.ndarray:
    rate: np.ndarray = world.click_rate(codes, items)
    if effect == 0:
        return rate
    logit = np.log(rate / (1 - rate)) + effect
    raised: np.ndarray = 1.0 / (1.0 + np.exp(-logit))
    return raised


def one(task: tuple[str, int, int, float]) -> dict[str, Any]:
    """One scenario and seed: log, evaluate, compare with the truth."""
    scenario, seed, rows, base_rate = task
    started = time.perf_counter()
    presentation = scenario != "catalogue"
    world = (
        World(seed, items=10, levels=4, base_rate=base_rate)
        if presentation
        else World(seed, base_rate=base_rate)
    )
    items = target_items(world)
    levels = {hashed("u1", v): v for v in range(world.levels)}
    effect = EFFECT if scenario == "presentation-effect" else 0.0
    if presentation:
        batch, spec = _presentation(world, rows, seed, effect)
    else:
        log = world.log(rows, "thompson", seed)
        batch, spec = log.rows(), world.spec()
    spec["learn"] = {"online": False}
    spec["storage"] = {"url": "duckdb:///:memory:"}

    def target(context: Mapping[str, Any]) -> dict[tuple[Any, ...], float]:
        probs = items[levels[context["u1"]], POSITIONS.index(context["position"])]
        if presentation:
            return {(item_name(i), "t4", "h3"): float(p) for i, p in enumerate(probs)}
        return {(item_name(i),): float(p) for i, p in enumerate(probs)}

    with flywheel.open(spec, background=False) as wheel:
        wheel.log_many(batch)
        result = wheel.evaluate(target)
    true = truth(world, items, effect)
    found = {e.method: (e.value, e.low, e.high) for e in [*result.estimates, result.marginal]}
    return {
        "scenario": scenario,
        "seed": seed,
        "truth": true,
        "estimates": found,
        "kept": list(result.marginal_knobs),
        "mips_effective_n": result.marginal.effective_n,
        "effective_n": result.effective_n,
        "seconds": time.perf_counter() - started,
    }


def _presentation(
    world: World, rows: int, seed: int, effect: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows with the item, a thumbnail and a headline, logged by the skewed ranker (the
    presentation chosen independently of the item), and their spec."""
    rng = np.random.default_rng((world.seed, seed, 7))
    codes = world.contexts(rows, rng)
    items = rng.choice(world.items, rows, p=world.logging)
    thumb = rng.choice(len(THUMBNAILS), rows, p=LOG_THUMBNAIL)
    head = rng.choice(len(HEADLINES), rows, p=LOG_HEADLINE)
    rate = _rate(world, codes, items, 0.0)
    if effect:
        rate = np.where(thumb == 3, _rate(world, codes, items, effect), rate)
    clicks = rng.random(rows) < rate
    propensity = world.logging[items] * LOG_THUMBNAIL[thumb] * LOG_HEADLINE[head]
    batch = [
        {
            "context": {
                "u1": hashed("u1", int(codes["u1"][i])),
                "position": POSITIONS[int(codes["position"][i])],
            },
            "params": {
                "item": item_name(int(items[i])),
                "thumbnail": THUMBNAILS[int(thumb[i])],
                "headline": HEADLINES[int(head[i])],
            },
            "results": {"click": int(clicks[i])},
            "ts": 1.5e9 + 60.0 * i,
            "policy": "ranker-thompson",
            "propensity": float(propensity[i]),
        }
        for i in range(rows)
    ]
    spec = world.spec()
    spec["context"] = {
        "u1": [hashed("u1", v) for v in range(world.levels)],
        "position": list(POSITIONS),
    }
    spec["knobs"] = {
        "item": [item_name(i) for i in range(world.items)],
        "thumbnail": list(THUMBNAILS),
        "headline": list(HEADLINES),
    }
    assert set(FEATURES) >= {"u1"}
    return batch, spec


def summary(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Coverage, errors and widths per estimator over the seeds of one scenario."""
    out: dict[str, Any] = {"seeds": len(found)}
    truths = np.array([f["truth"] for f in found])
    out["truth_mean"] = round(float(truths.mean()), 5)
    for method in METHODS:
        have = [(f["estimates"][method], f["truth"]) for f in found if method in f["estimates"]]
        if not have:
            continue
        value = np.array([v[0] for v, _ in have])
        low = np.array([v[1] for v, _ in have])
        high = np.array([v[2] for v, _ in have])
        true = np.array([t for _, t in have])
        covered = (low <= true) & (true <= high)
        rel = (value - true) / true
        cover = float(covered.mean())
        out[method] = {
            "coverage": round(cover, 3),
            "coverage_se": round(math.sqrt(cover * (1 - cover) / len(have)), 3),
            "mean_relative_error": round(float(np.abs(rel).mean()), 4),
            "rmse_relative": round(float(np.sqrt((rel**2).mean())), 4),
            "bias_relative": round(float(rel.mean()), 4),
            "width_relative": round(float(((high - low) / true).mean()), 4),
            "seeds": len(have),
        }
    kept = Counter(", ".join(f["kept"]) for f in found)
    out["mips_kept"] = dict(kept.most_common())
    out["mips_effective_n_median"] = round(float(np.median([f["mips_effective_n"] for f in found])))
    out["effective_n_median"] = round(float(np.median([f["effective_n"] for f in found])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--base-rate", type=float, default=0.05)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    tasks = [(s, seed, args.rows, args.base_rate) for s in scenarios for seed in range(args.seeds)]
    started = time.perf_counter()
    found = run_all(one, tasks, args.jobs)
    results: dict[str, Any] = {
        "seeds": args.seeds,
        "rows": args.rows,
        "base_rate": args.base_rate,
        "jobs": args.jobs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    for scenario in scenarios:
        results[scenario] = summary([f for f in found if f["scenario"] == scenario])
    report("evaluate", results)


if __name__ == "__main__":
    main()
