"""Analysis benchmark: are ``wheel.analyze()``'s findings right on worlds with known truth?

Every world is a table of P(ok = 1 | seg, knobs) over one categorical context ``seg`` and a
few knobs; rows are logged uniformly at random (observational, no propensities) through
``wheel.log``, then ``wheel.learn()`` publishes a playbook and ``wheel.analyze()`` is read.
The tables are fixed; only the sampled rows (and the analysis's posterior draws) vary by seed.

- ``sparse``: logistic, 4 knobs (3, 2, 3, 2 levels) and seg (3); of the 10 modelled pairs,
  a × b and c × seg interact strongly, b × d weakly, the other 7 not at all.
- ``null``: the same main effects, no interaction at all.
- ``power``: logistic, 4 knobs (2, 2, 2, 3 levels) and seg (2); a × b interacts (a 2 × 2
  contrast of about 0.1 on the reward scale) and c × seg less (about 0.06). It is also
  analysed once at the largest size (``power_final``), for coverage and discoveries.
- ``flat``: additive on the probability scale; a × b (3 × 3) and c × seg (2 × 2) carry the
  only knob effects, so every knob's marginal effect is exactly zero, yet one combination per
  segment is best by 0.12 or more.

Checks: (1) the false discovery rate of interactions reported at q <= 0.1 (``sparse``; and
the share of ``null`` seeds with any discovery); (2) power at the readiness verdict
(``power``: rows grow by steps of sqrt(2); per seed and true pair, the smallest size whose
readiness for that pair, given ``effect=`` the pair's true 2 × 2 contrast, says ready, and
whether the pair is found there; and, in a fresh store per pair, rows grown to exactly the
``rows + more_rows`` the verdict asks for, until it says ready: is the pair found there, where
the verdict promises 80% power?); (3) flat marginals (``flat``: share of non-reference knob
levels whose lift is clear, share of segments whose best combination is the true best);
(4) coverage of the 95% intervals: single-dimension estimates against the true partial
dependence over the logged rows, best-combination intervals against the true probability,
interaction cells against the true double-centred logit interaction (read on the link scale,
and on the reward scale with the true slope). Every ± is a standard error, clustered by seed
where one seed gives several items.

Run: ``.venv/bin/python bench/analysis.py`` (20 seeds; about 2 minutes on 2 cores), or a smoke
run: ``.venv/bin/python bench/analysis.py --quick``.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import report, run_all  # type: ignore[import-not-found]

import flywheel
from flywheel.analyze import Analysis
from flywheel.analyze.findings import Readiness

Q = 0.1
SEG = "seg"
TINY = 1e-9
NOTES = [
    "Rows are logged with wheel.log (observational: uniformly random knob values and seg);"
    " one fresh DuckDB file per world and seed; the seatbelt is off (nothing to guard here);"
    " learn() then analyze(seed=seed). The worlds are fixed; seeds vary the rows only.",
    "A pair is truly present when its logit table, double-centred (what neither main effect"
    " can express), is not zero: the quantity the analysis tests. The flat world is additive"
    " on the probability scale, so on the logit scale every pair interacts a little there:"
    " it is used for the marginal and best-combination checks, not for false discoveries.",
    "FDR: per seed the false discovery proportion (false / found, 0 when nothing is found),"
    " averaged over seeds. Power world: its discoveries at every size are pooled as well.",
    "Readiness: effect= the pair's true 2 × 2 contrast of mean rewards (P11 - P10 - P01 +"
    " P00, the other factors averaged uniformly), one analyze() call per true pair. A pair"
    " never ready within the largest size counts as not reached. The verdict run starts at"
    " the smallest size and jumps to rows + more_rows (at most 4 × the largest size).",
    "Coverage (a): the true partial dependence of a level is the mean, over the logged rows,"
    " of P with that factor set to the level (the analysis's own definition, on the truth)."
    " (b): the best combination's interval against its true P in that segment (the chosen"
    " one is a maximum: winner's curse is part of what is measured). (c): logistic worlds"
    " only; the link-scale interval is the reported one divided by the cell's slope"
    " model × (1 - model); the reward-scale target is the true double-centred logit times"
    " p (1 - p) of the cell's true partial dependence. In the flat world no such target"
    " exists on the probability scale (the analysis linearises a logit-scale quantity), so"
    " (c) is skipped there.",
]


# --- worlds --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """A known table of P(ok = 1) over seg (axis 0) and the knobs (axes 1..)."""

    name: str
    levels: dict[str, list[str]]  # seg first, then the knobs, in axis order
    prob: np.ndarray
    logit_pairs: dict[tuple[str, str], np.ndarray] | None  # None: not a logistic world
    rows: int

    @property
    def factors(self) -> list[str]:
        return list(self.levels)

    @property
    def knobs(self) -> list[str]:
        return self.factors[1:]

    def spec(self) -> dict[str, Any]:
        return {
            "knobs": {k: self.levels[k] for k in self.knobs},
            "context": {SEG: self.levels[SEG]},
            "reward": {"formula": "ok", "window": "1000d"},
            "learn": {"interactions": "pairwise", "min_rows": 20},
            "seatbelt": {"enabled": False},
        }

    def true_pairs(self) -> set[frozenset[str]]:
        assert self.logit_pairs is not None
        return {frozenset(p) for p, t in self.logit_pairs.items() if _is_nonzero(_centre(t))}

    def pair_table(self, a: str, b: str) -> np.ndarray:
        """The true logit pair table in (a, b) orientation (zeros when absent)."""
        assert self.logit_pairs is not None
        if (a, b) in self.logit_pairs:
            return self.logit_pairs[(a, b)]
        if (b, a) in self.logit_pairs:
            return self.logit_pairs[(b, a)].T
        return np.zeros((len(self.levels[a]), len(self.levels[b])))


def _levels(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _centre(table: np.ndarray) -> np.ndarray:
    """Double-centred: row and column means removed."""
    out: np.ndarray = (
        table - table.mean(0, keepdims=True) - table.mean(1, keepdims=True) + table.mean()
    )
    return out


def _is_nonzero(table: np.ndarray) -> bool:
    return bool(np.abs(table).max() > TINY)


def _place(table: np.ndarray, axes: Sequence[int], ndim: int) -> np.ndarray:
    """``table`` broadcast over ``ndim`` axes, its own axes at ``axes`` (increasing)."""
    shape = [1] * ndim
    for axis, size in zip(axes, table.shape, strict=True):
        shape[axis] = size
    return table.reshape(shape)


def _additive(
    levels: Mapping[str, list[str]],
    base: float,
    mains: Mapping[str, Sequence[float]],
    pairs: Mapping[tuple[str, str], np.ndarray],
) -> np.ndarray:
    """base + mains + pairs over the full grid (seg first, then the knobs)."""
    names = list(levels)
    shape = tuple(len(v) for v in levels.values())
    out = np.full(shape, base)
    for f, vec in mains.items():
        out = out + _place(np.asarray(vec, dtype=float), [names.index(f)], len(names))
    for (a, b), table in pairs.items():
        ia, ib = names.index(a), names.index(b)
        placed = table if ia < ib else table.T
        out = out + _place(placed, sorted((ia, ib)), len(names))
    return out


def _logistic(
    name: str,
    levels: dict[str, list[str]],
    base: float,
    mains: Mapping[str, Sequence[float]],
    pairs: dict[tuple[str, str], np.ndarray],
    rows: int,
) -> World:
    logit = _additive(levels, base, mains, pairs)
    return World(name, levels, 1.0 / (1.0 + np.exp(-logit)), pairs, rows)


def _checker(g: float, rows: int = 2, cols: int = 2) -> np.ndarray:
    """+g / -g on the top-left 2 × 2 block, zeros elsewhere."""
    out = np.zeros((rows, cols))
    out[:2, :2] = [[g, -g], [-g, g]]
    return out


SPARSE_LEVELS = {
    SEG: _levels("s", 3),
    "a": _levels("a", 3),
    "b": _levels("b", 2),
    "c": _levels("c", 3),
    "d": _levels("d", 2),
}
SPARSE_MAINS = {
    SEG: [0.0, 0.2, -0.2],
    "a": [0.0, 0.2, -0.1],
    "b": [0.0, 0.15],
    "c": [0.0, -0.1, 0.1],
    "d": [0.0, 0.1],
}


def sparse(rows: int) -> World:
    pairs = {
        ("a", "b"): _checker(0.35, 3, 2),
        ("c", SEG): _checker(0.3, 3, 3),
        ("b", "d"): _checker(0.08),
    }
    return _logistic("sparse", SPARSE_LEVELS, -0.5, SPARSE_MAINS, pairs, rows)


def null(rows: int) -> World:
    return _logistic("null", SPARSE_LEVELS, -0.5, SPARSE_MAINS, {}, rows)


def power(rows: int) -> World:
    levels = {
        SEG: _levels("s", 2),
        "a": _levels("a", 2),
        "b": _levels("b", 2),
        "c": _levels("c", 2),
        "d": _levels("d", 3),
    }
    mains = {SEG: [0.0, 0.2], "a": [0.0, 0.1], "b": [0.0, -0.1], "c": [0.0, 0.1], "d": [0, 0.1, 0]}
    pairs = {("a", "b"): _checker(0.1), ("c", SEG): _checker(0.06)}
    return _logistic("power", levels, -0.2, mains, pairs, rows)


def flat(rows: int) -> World:
    levels = {
        SEG: _levels("s", 2),
        "a": _levels("a", 3),
        "b": _levels("b", 3),
        "c": _levels("c", 2),
    }
    ab = 0.05 * np.array([[4.0, -2, -2], [-2, 1, 1], [-2, 1, 1]])  # zero row and column means
    cs = 0.06 * np.array([[1.0, -1], [-1, 1]])  # (c, seg): c's best level flips with seg
    prob = _additive(levels, 0.4, {SEG: [0.0, 0.03]}, {("a", "b"): ab, ("c", SEG): cs})
    return World("flat", levels, prob, None, rows)


# --- one run: log, learn, analyse ---------------------------------------------------------------


def sample(world: World, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows drawn uniformly over every factor: their codes (n, factors) and rewards."""
    sizes = [len(v) for v in world.levels.values()]
    codes = np.column_stack([rng.integers(0, s, n) for s in sizes])
    rewards = (rng.random(n) < world.prob[tuple(codes.T)]).astype(float)
    return codes, rewards


def log_rows(wheel: flywheel.Wheel, world: World, codes: np.ndarray, rewards: np.ndarray) -> None:
    names, values = world.factors, list(world.levels.values())
    for row, reward in zip(codes.tolist(), rewards.tolist(), strict=True):
        wheel.log(
            context={SEG: values[0][row[0]]},
            params={k: values[i][row[i]] for i, k in enumerate(names) if i},
            results={"ok": reward},
        )


def partial_dependence(world: World, codes: np.ndarray, fixed: Mapping[str, int]) -> float:
    """Mean of the true P over the logged rows, with the ``fixed`` factors set."""
    index = codes.copy()
    for f, code in fixed.items():
        index[:, world.factors.index(f)] = code
    return float(world.prob[tuple(index.T)].mean())


def contrast(world: World, a: str, b: str) -> float:
    """The true 2 × 2 interaction contrast P11 - P10 - P01 + P00 of levels 0 and 1 of the
    pair, the other factors averaged uniformly."""
    names = world.factors
    others = tuple(i for i, f in enumerate(names) if f not in (a, b))
    cell = world.prob.mean(axis=others)
    if names.index(a) > names.index(b):
        cell = cell.T
    return float(cell[1, 1] - cell[1, 0] - cell[0, 1] + cell[0, 0])


def _open(world: World, folder: str, seed: int) -> flywheel.Wheel:
    store = f"duckdb:///{Path(folder) / 'x.duckdb'}"
    return flywheel.open(world.spec(), store=store, refresh=0, seed=seed)


def run_fixed(world: World, seed: int) -> dict[str, Any]:
    """One world at its row count: discoveries, flat-marginal figures and coverage."""
    rng = np.random.default_rng([seed, zlib.crc32(world.name.encode())])
    codes, rewards = sample(world, world.rows, rng)
    with tempfile.TemporaryDirectory() as folder, _open(world, folder, seed) as wheel:
        started = time.perf_counter()
        log_rows(wheel, world, codes, rewards)
        wheel.learn()
        analysis = wheel.analyze(seed=seed)
        seconds = time.perf_counter() - started
    return {
        "world": world.name,
        "seed": seed,
        "seconds": seconds,
        "discoveries": discoveries(world, analysis),
        "single": single_records(world, analysis, codes),
        "best": best_records(world, analysis),
        "cells": cell_records(world, analysis, codes) if world.logit_pairs is not None else [],
    }


def run_power(world: World, seed: int, sizes: Sequence[int]) -> dict[str, Any]:
    """The power world at growing row counts (nested samples): readiness and discoveries."""
    rng = np.random.default_rng([seed, zlib.crc32(world.name.encode())])
    codes, rewards = sample(world, max(sizes), rng)
    targets = {p: contrast(world, *p) for p in sorted(_pair(n) for n in world.true_pairs())}
    steps = []
    with tempfile.TemporaryDirectory() as folder, _open(world, folder, seed) as wheel:
        done = 0
        for size in sizes:
            log_rows(wheel, world, codes[done:size], rewards[done:size])
            done = size
            wheel.learn()
            step: dict[str, Any] = {"rows": size, "pairs": {}}
            for pair, effect in targets.items():
                analysis = wheel.analyze(effect=abs(effect), seed=seed)
                verdict = _readiness(analysis, pair)
                step["pairs"][" × ".join(pair)] = {
                    "effect": effect,
                    "ready": verdict.ready,
                    "mde": verdict.mde,
                    "found": any(
                        frozenset(i.factors) == frozenset(pair) for i in analysis.found(Q)
                    ),
                }
            step["discoveries"] = discoveries(world, analysis)
            steps.append(step)
    return {"world": world.name, "seed": seed, "steps": steps}


def run_verdict(world: World, seed: int, start: int, limit: int) -> dict[str, Any]:
    """Per true pair, a fresh store grown to exactly the rows its readiness verdict asks for
    (``rows + more_rows``, again until it says ready): is the pair found there?"""
    rng = np.random.default_rng([seed, zlib.crc32(world.name.encode())])
    codes, rewards = sample(world, limit, rng)
    out = {}
    for pair in sorted(_pair(n) for n in world.true_pairs()):
        names = frozenset(pair)
        effect = abs(contrast(world, *pair))
        with tempfile.TemporaryDirectory() as folder, _open(world, folder, seed) as wheel:
            done, size, asked = 0, start, []
            for _ in range(6):
                log_rows(wheel, world, codes[done:size], rewards[done:size])
                done = size
                wheel.learn()
                analysis = wheel.analyze(effect=effect, seed=seed)
                verdict = _readiness(analysis, pair)
                if verdict.ready or size >= limit:
                    break
                size = min(size + verdict.more_rows, limit)
                asked.append(size)
        out[" × ".join(pair)] = {
            "rows": size,
            "asked": asked,
            "ready": verdict.ready,
            "found": any(frozenset(i.factors) == names for i in analysis.found(Q)),
        }
    return {"world": world.name, "seed": seed, "pairs": out}


def _pair(names: frozenset[str]) -> tuple[str, str]:
    a, b = sorted(names)
    return a, b


def _readiness(analysis: Analysis, pair: tuple[str, str]) -> Readiness:
    for r in analysis.readiness:
        if r.order == "pair" and frozenset(r.factors) == frozenset(pair):
            return r
    raise KeyError(pair)


# --- records -------------------------------------------------------------------------------------


def discoveries(world: World, analysis: Analysis) -> dict[str, Any]:
    """Found pairs at q <= Q, split into true and false (logistic worlds only)."""
    found = [frozenset(i.factors) for i in analysis.found(Q)]
    if world.logit_pairs is None:
        return {"found": sorted(" × ".join(sorted(f)) for f in found), "false": None}
    truth = world.true_pairs()
    return {
        "found": sorted(" × ".join(sorted(f)) for f in found),
        "false": sum(f not in truth for f in found),
        "true_found": sorted(" × ".join(sorted(f)) for f in found if f in truth),
        "null_p": [i.p_value for i in analysis.interactions if frozenset(i.factors) not in truth],
    }


def single_records(world: World, analysis: Analysis, codes: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for s in analysis.single:
        code = world.levels[s.factor].index(str(s.level))
        truth = partial_dependence(world, codes, {s.factor: code})
        out.append(
            {
                "factor": s.factor,
                "kind": s.kind,
                "reference": str(s.level) == str(s.reference),
                "clear": bool(s.clear),
                "covered": s.low <= truth <= s.high,
            }
        )
    return out


def best_records(world: World, analysis: Analysis) -> list[dict[str, Any]]:
    out = []
    for b in analysis.best:
        seg = world.levels[SEG].index(str(b.context[SEG]))
        table = world.prob[seg]
        index = tuple(world.levels[k].index(str(b.params[k])) for k in world.knobs)
        truth = float(table[index])
        top = float(table.max())
        out.append(
            {
                "match": truth >= top - TINY,
                "regret": top - truth,
                "covered": b.low <= truth <= b.high,
            }
        )
    return out


def cell_records(world: World, analysis: Analysis, codes: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for inter in analysis.interactions:
        a, b = inter.factors
        centred = _centre(world.pair_table(a, b))
        present = _is_nonzero(centred)
        for c in inter.cells:
            i, j = world.levels[a].index(str(c.levels[0])), world.levels[b].index(str(c.levels[1]))
            slope = c.model * (1.0 - c.model)
            p = partial_dependence(world, codes, {a: i, b: j})
            link, reward = centred[i, j], centred[i, j] * p * (1.0 - p)
            out.append(
                {
                    "pair": " × ".join(sorted(inter.factors)),
                    "present": present,
                    "nonzero": bool(abs(link) > TINY),
                    "link": c.low / slope <= link <= c.high / slope,
                    "reward": c.low <= reward <= c.high,
                }
            )
    return out


# --- summaries -----------------------------------------------------------------------------------


def rate(flags: Sequence[bool]) -> dict[str, Any]:
    """A share with its binomial standard error."""
    n = len(flags)
    share = sum(flags) / n if n else float("nan")
    se = math.sqrt(share * (1 - share) / n) if n else float("nan")
    return {"rate": round(share, 4), "se": round(se, 4), "n": n}


def fdr(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    fdp = [d["false"] / len(d["found"]) if d["found"] else 0.0 for d in records]
    se = float(np.std(fdp, ddof=1) / math.sqrt(len(fdp))) if len(fdp) > 1 else float("nan")
    return {
        "fdr": round(float(np.mean(fdp)), 4),
        "se": round(se, 4),
        "runs": len(fdp),
        "runs_with_a_false_discovery": sum(d["false"] > 0 for d in records),
        "discoveries": sum(len(d["found"]) for d in records),
        "false_discoveries": sum(d["false"] for d in records),
        "absent_pairs_p_below_0.05": rate([p < 0.05 for d in records for p in d["null_p"]]),
    }


def found_rates(world: World, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    names = sorted(" × ".join(sorted(p)) for p in world.true_pairs())
    return {n: round(float(np.mean([n in d["found"] for d in records])), 4) for n in names}


def share(groups: Sequence[Sequence[bool]]) -> dict[str, Any]:
    """A share over every item, its standard error clustered by seed (the items of one seed,
    such as every level's interval, share one fit and move together)."""
    hits = np.array([sum(g) for g in groups], dtype=float)
    sizes = np.array([len(g) for g in groups], dtype=float)
    total, clusters = float(sizes.sum()), int((sizes > 0).sum())
    if not total:
        return {"rate": float("nan"), "se": float("nan"), "n": 0}
    p = float(hits.sum() / total)
    spread = float(np.sum((hits - p * sizes) ** 2)) * clusters / max(clusters - 1, 1)
    return {"rate": round(p, 4), "se": round(math.sqrt(spread) / total, 4), "n": int(total)}


Record = dict[str, Any]


def _everything(record: Record) -> bool:
    return True


def _where(key: str, value: Any) -> Callable[[Record], bool]:
    return lambda record: bool(record[key] == value)


def pick(
    runs: Sequence[Record], key: str, keep: Callable[[Record], bool], field: str = "covered"
) -> dict[str, Any]:
    """The share of ``field`` over the ``key`` records that ``keep`` selects, by seed."""
    return share([[r[field] for r in run[key] if keep(r)] for run in runs])


def coverage(runs: Sequence[Record]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "single_estimate": pick(runs, "single", _everything),
        "single_estimate_knob": pick(runs, "single", _where("kind", "knob")),
        "single_estimate_context": pick(runs, "single", _where("kind", "context")),
        "best_expected": pick(runs, "best", _everything),
    }
    present = sorted({r["pair"] for run in runs for r in run["cells"] if r["present"]})
    for pair in present:
        for field in ("link", "reward"):
            out[f"cells {pair} ({field})"] = pick(runs, "cells", _where("pair", pair), field)
    if any(run["cells"] for run in runs):
        for field in ("link", "reward"):
            out[f"cells with a true interaction ({field})"] = pick(
                runs, "cells", _where("nonzero", True), field
            )
        for field in ("link", "reward"):
            out[f"cells of absent pairs ({field})"] = pick(
                runs, "cells", _where("present", False), field
            )
    return out


def summarise_fixed(world: World, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": world.rows, "seeds": len(runs)}
    records = [run["discoveries"] for run in runs]
    if world.logit_pairs is not None:
        out["discoveries"] = fdr(records)
        out["found_rate_true_pairs"] = found_rates(world, records)
        out["seeds_with_any_discovery"] = rate([bool(d["found"]) for d in records])
    else:
        counted: dict[str, int] = {}
        for d in records:
            for name in d["found"]:
                counted[name] = counted.get(name, 0) + 1
        out["found_rate_by_pair"] = {k: round(v / len(runs), 4) for k, v in sorted(counted.items())}
        out["knob_levels_clear"] = share(
            [
                [r["clear"] for r in run["single"] if r["kind"] == "knob" and not r["reference"]]
                for run in runs
            ]
        )
        regrets = [r["regret"] for run in runs for r in run["best"]]
        out["best_mean_regret"] = round(float(np.mean(regrets)), 5)
    out["best_matches_truth"] = share([[r["match"] for r in run["best"]] for run in runs])
    out["coverage"] = coverage(runs)
    out["seconds_per_run"] = round(float(np.mean([run["seconds"] for run in runs])), 3)
    return out


def summarise_power(
    world: World, runs: Sequence[dict[str, Any]], sizes: Sequence[int]
) -> dict[str, Any]:
    pairs = list(runs[0]["steps"][0]["pairs"])
    out: dict[str, Any] = {"sizes": list(sizes), "seeds": len(runs), "pairs": {}}
    for pair in pairs:
        first: list[int | None] = []
        found_there: list[bool] = []
        found_before: list[bool] = []
        for run in runs:
            k = next((k for k, s in enumerate(run["steps"]) if s["pairs"][pair]["ready"]), None)
            first.append(None if k is None else run["steps"][k]["rows"])
            if k is not None:
                found_there.append(bool(run["steps"][k]["pairs"][pair]["found"]))
            if k:
                found_before.append(bool(run["steps"][k - 1]["pairs"][pair]["found"]))
        steps = [[s["pairs"][pair] for s in run["steps"]] for run in runs]
        out["pairs"][pair] = {
            "true_contrast": round(runs[0]["steps"][0]["pairs"][pair]["effect"], 4),
            "first_ready_rows": first,
            "median_first_ready_rows": _median(first),
            "found_at_first_ready": rate(found_there),
            "found_one_size_before": rate(found_before),
            "never_ready": sum(f is None for f in first),
            "by_size": [
                {
                    "rows": size,
                    "ready": rate([run[k]["ready"] for run in steps]),
                    "found": rate([run[k]["found"] for run in steps]),
                    "mde": round(float(np.median([run[k]["mde"] for run in steps])), 4),
                }
                for k, size in enumerate(sizes)
            ],
        }
    pooled = [s["discoveries"] for run in runs for s in run["steps"]]
    out["discoveries_all_sizes"] = fdr(pooled)
    del world
    return out


def summarise_verdict(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for pair in runs[0]["pairs"]:
        rows = [run["pairs"][pair] for run in runs]
        reached = [r for r in rows if r["ready"]]
        out[pair] = {
            "median_rows": float(np.median([r["rows"] for r in reached])) if reached else None,
            "ready": rate([r["ready"] for r in rows]),
            "found_when_ready": rate([r["found"] for r in reached]),
            "verdicts_per_seed": round(float(np.mean([len(r["asked"]) + 1 for r in rows])), 2),
        }
    return out


def _median(values: Sequence[int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.median(known)) if len(known) * 2 > len(values) else None


# --- printing ------------------------------------------------------------------------------------


def _pct(r: Mapping[str, Any]) -> str:
    return f"{100 * r['rate']:5.1f}% ± {100 * r['se']:.1f} (n={r['n']})"


def print_table(results: Mapping[str, Any]) -> None:
    s, n, f, p = (results[w] for w in ("sparse", "null", "flat", "power"))
    d = s["discoveries"]
    print(f"\n1. FDR at q <= {Q}")
    print(
        f"   sparse ({s['rows']} rows): FDR {100 * d['fdr']:.1f}% ± {100 * d['se']:.1f}"
        f"  ({d['false_discoveries']} false of {d['discoveries']}; true pairs found"
        f" {s['found_rate_true_pairs']})"
    )
    print(
        f"   null ({n['rows']} rows): seeds with any discovery"
        f" {_pct(n['seeds_with_any_discovery'])}"
    )
    for name in ("sparse", "null"):
        absent = results[name]["discoveries"]["absent_pairs_p_below_0.05"]
        print(f"   {name}: absent pairs with p < 0.05 {_pct(absent)} (nominal 5%)")
    pd = p["discoveries_all_sizes"]
    print(f"   power world, all sizes pooled: FDR {100 * pd['fdr']:.1f}% ± {100 * pd['se']:.1f}")
    print("2. Power at the readiness verdict")
    for name, row in p["pairs"].items():
        print(
            f"   {name} (contrast {row['true_contrast']:+.3f}): first ready at median"
            f" {row['median_first_ready_rows']} rows; found there"
            f" {_pct(row['found_at_first_ready'])};"
            f" never ready {row['never_ready']}; found one size before"
            f" {_pct(row['found_one_size_before'])}"
        )
        curve = ", ".join(
            f"{b['rows']}: {100 * b['ready']['rate']:.0f}/{100 * b['found']['rate']:.0f}"
            for b in row["by_size"]
        )
        print(f"     rows: % ready / % found  {curve}")
    for name, row in results["verdict"].items():
        print(
            f"   {name} at exactly the rows its verdict asks for (median {row['median_rows']}):"
            f" found {_pct(row['found_when_ready'])}; ready {_pct(row['ready'])}"
        )
    print(f"3. Flat marginals ({f['rows']} rows)")
    print(f"   knob levels with a clear lift {_pct(f['knob_levels_clear'])}")
    print(f"   best combination = true best {_pct(f['best_matches_truth'])}")
    print("4. Coverage of 95% intervals")
    for name in ("sparse", "null", "flat", "power_final"):
        for key, value in results[name]["coverage"].items():
            if value["n"]:
                print(f"   {name:<12}{key:<40}{_pct(value)}")


# --- main ----------------------------------------------------------------------------------------


def _task(task: tuple[str, int, int, tuple[int, ...]]) -> dict[str, Any]:
    name, seed, rows, sizes = task
    if name == "power":
        return run_power(power(max(sizes)), seed, sizes)
    if name == "power_final":
        return run_fixed(power(rows), seed)
    if name == "verdict":
        return run_verdict(power(rows), seed, min(sizes), rows)
    return run_fixed(WORLDS[name](rows), seed)


WORLDS = {"sparse": sparse, "null": null, "flat": flat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--rows", type=int, default=4000, help="rows of sparse, null and flat")
    parser.add_argument("--max-rows", type=int, default=16_000, help="largest power-world size")
    parser.add_argument("--quick", action="store_true", help="3 seeds, power up to 4,000 rows")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_rows = 3, 4000
    steps = round(2 * math.log2(args.max_rows / 1000)) + 1
    sizes = tuple(round(1000 * 2 ** (k / 2)) for k in range(steps))
    rows = {"power_final": args.max_rows, "verdict": 4 * args.max_rows}
    tasks = [
        (name, seed, rows.get(name, args.rows), sizes)
        for name in ("power", "verdict", "sparse", "null", "flat", "power_final")
        for seed in range(args.seeds)
    ]
    started = time.perf_counter()
    runs = run_all(_task, tasks, args.jobs)
    by_world: dict[str, list[dict[str, Any]]] = {}
    for task, run in zip(tasks, runs, strict=True):
        by_world.setdefault(task[0], []).append(run)
    results: dict[str, Any] = {
        "settings": {
            "seeds": args.seeds,
            "rows": args.rows,
            "power_sizes": list(sizes),
            "q": Q,
            "jobs": args.jobs,
            "total_wall_s": round(time.perf_counter() - started, 1),
        },
        "notes": NOTES,
    }
    for name in ("sparse", "null", "flat"):
        results[name] = summarise_fixed(WORLDS[name](args.rows), by_world[name])
    results["power"] = summarise_power(power(max(sizes)), by_world["power"], sizes)
    results["verdict"] = summarise_verdict(by_world["verdict"])
    results["power_final"] = summarise_fixed(power(args.max_rows), by_world["power_final"])
    report("analysis", results)
    print_table(results)


if __name__ == "__main__":
    main()
