"""Simulated worlds for the learning benchmark: hidden Bernoulli reward models.

Each world is a logistic model of P(reward = 1 | context, knob values, t): a base rate, main
effects, knob × knob and knob × context effects. The effects are drawn once from a fixed seed
(the world is the same for every benchmark seed), the base is calibrated so that uniform play
reaches a target reward rate, and every probability is tabulated over the full grid of knob
values (rules ignored) for every context segment and phase, so lookups are cheap.

Change worlds hold several phases: ``drift``, ``change_same`` and ``change_drop`` switch at
half the run; ``gradual`` moves its logit linearly from one phase to the next over a window
around half the run, tabulated as ``GRADUAL_STEPS + 1`` phases (``phase(t)`` picks the
nearest), so every probability and oracle stays a table lookup.

A world exposes its flywheel spec (``spec``), a context sampler (``sample_context``),
``prob(context, params, t)`` and ``oracle(context, t)``: the best combination that the
skeleton allows for the context, found by enumerating ``spec.space.allowed(context)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import flywheel

Value = str | int

STATIONARY = ("factorial", "rare", "flat_marginals", "large", "strong_early")
CHANGE = ("drift", "change_same", "change_drop", "gradual")
WORLDS = (
    "factorial",
    "rare",
    "flat_marginals",
    "large",
    "drift",
    "strong_early",
    "change_same",
    "change_drop",
    "gradual",
)
SECONDS_PER_DECISION = 60
DRIFT_HALF_LIFE = "42h"  # 151,200 s: 2,520 decisions at one decision a minute
GRADUAL_WINDOW = 5_000  # decisions of the gradual drift (a quarter of the run when shorter)
GRADUAL_STEPS = 50  # the gradual drift is tabulated as this many steps (51 phases)


@dataclass
class Effects:
    """The logit of one phase, as additive tables over knob and context codes."""

    mains: dict[str, np.ndarray] = field(default_factory=dict)
    pairs: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    context: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (feature, knob)
    base: float = 0.0


@dataclass
class World:
    """A hidden reward model and the flywheel spec that faces it."""

    name: str
    description: str
    spec: dict[str, Any]
    knobs: dict[str, list[Value]]
    features: dict[str, list[Value]]
    weights: dict[str, np.ndarray]  # context feature -> probability of each value
    switch: int | None = None  # decision index from which the second phase holds (drift)
    ramp: tuple[int, int] | None = None  # (start, end): phase 0 to the last, linearly
    parsed: flywheel.Spec = field(init=False, repr=False)
    probs: np.ndarray = field(init=False, repr=False)  # (phases, segments, grid)
    segments: list[dict[str, Value]] = field(init=False, repr=False)
    segment_weights: np.ndarray = field(init=False, repr=False)
    grid_codes: np.ndarray = field(init=False, repr=False)  # (grid, knobs): every assignment
    allowed_grid: list[np.ndarray] = field(init=False, repr=False)  # per segment, grid indices
    best_grid: np.ndarray = field(init=False, repr=False)  # (phases, segments)
    best_prob: np.ndarray = field(init=False, repr=False)  # (phases, segments)

    def prepare(self) -> World:
        """Parse the spec; tabulate segments, the grid and the allowed combinations."""
        self.parsed = flywheel.Spec.from_dict(self.spec)
        names = list(self.knobs)
        assert [k.name for k in self.parsed.knobs] == names
        sizes = [len(v) for v in self.knobs.values()]
        self.grid_codes = np.indices(sizes).reshape(len(sizes), -1).T
        self._strides = np.array([math.prod(sizes[i + 1 :]) for i in range(len(sizes))])
        self._level = {k: {v: i for i, v in enumerate(vals)} for k, vals in self.knobs.items()}
        feats = list(self.features)
        combos = itertools.product(*(range(len(self.features[f])) for f in feats))
        seg_codes = [dict(zip(feats, c, strict=True)) for c in combos]
        self.segments = [{f: self.features[f][c[f]] for f in feats} for c in seg_codes]
        self.segment_weights = np.array(
            [math.prod(float(self.weights[f][c[f]]) for f in feats) for c in seg_codes]
        )
        self._segment_of = {self._key(s): i for i, s in enumerate(self.segments)}
        space = self.parsed.space
        row_grid = space.codes.astype(np.int64) @ self._strides
        self.allowed_grid = [row_grid[space.allowed(s)] for s in self.segments]
        return self

    def build(self, phases: Sequence[Effects]) -> World:
        """Tabulate every probability and the oracle of every segment and phase."""
        self.prepare()
        seg_codes = [self._codes(s) for s in range(len(self.segments))]
        logits = np.stack([[self._logit(e, c) for c in seg_codes] for e in phases])
        self.probs = 1.0 / (1.0 + np.exp(-logits))
        best = [[self._enumerate_best(p, s) for s in range(len(self.segments))] for p in phases]
        self.best_grid = np.array([[g for g, _ in row] for row in best], dtype=np.int64)
        self.best_prob = np.array([[q for _, q in row] for row in best])
        return self

    # --- the interface -------------------------------------------------------------------------

    def sample_context(self, rng: np.random.Generator) -> dict[str, Value]:
        return self.segments[int(self.sample_segments(rng, 1)[0])]

    def sample_segments(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` context segments (indices into ``segments``), drawn from the context law."""
        return rng.choice(len(self.segments), size=n, p=self.segment_weights)

    def phase(self, t: int) -> int:
        if self.ramp is not None:  # the nearest tabulated step of a gradual drift
            start, end = self.ramp
            last = self.probs.shape[0] - 1
            return int(min(max(round((t - start) / (end - start) * last), 0), last))
        return int(self.switch is not None and t >= self.switch)

    def prob(self, context: Mapping[str, Any], params: Mapping[str, Any], t: int) -> float:
        """P(reward = 1) for these knob values in this context at decision ``t``."""
        return float(self.probs[self.phase(t), self.segment(context), self.grid_index(params)])

    def oracle(self, context: Mapping[str, Any], t: int) -> tuple[dict[str, Value], float]:
        """The best combination the skeleton allows for ``context`` at ``t``, and its P."""
        s, p = self.segment(context), self.phase(t)
        return self.params(int(self.best_grid[p, s])), float(self.best_prob[p, s])

    # --- helpers -------------------------------------------------------------------------------

    def segment(self, context: Mapping[str, Any]) -> int:
        return self._segment_of[self._key(context)]

    def grid_index(self, params: Mapping[str, Any]) -> int:
        codes = [self._level[k][params[k]] for k in self.knobs]
        return int(np.dot(codes, self._strides))

    def params(self, grid: int) -> dict[str, Value]:
        codes = self.grid_codes[grid]
        return {k: vals[codes[i]] for i, (k, vals) in enumerate(self.knobs.items())}

    def uniform_rate(self, phase: int = 0) -> float:
        """Expected reward of uniform play over the allowed combinations."""
        rates = [self.probs[phase, s, g].mean() for s, g in enumerate(self.allowed_grid)]
        return float(np.dot(self.segment_weights, rates))

    def best_rate(self, phase: int = 0) -> float:
        return float(np.dot(self.segment_weights, self.best_prob[phase]))

    def summary(self) -> dict[str, Any]:
        phases = range(self.probs.shape[0])
        return {
            "description": self.description,
            "combinations": len(self.parsed.space),
            "segments": len(self.segments),
            "uniform_rate": [round(self.uniform_rate(p), 4) for p in phases],
            "best_rate": [round(self.best_rate(p), 4) for p in phases],
            "switch_at": self.switch,
            **({"ramp": list(self.ramp)} if self.ramp is not None else {}),
        }

    def _key(self, context: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(context[f] for f in self.features)

    def _logit(self, e: Effects, seg: Mapping[str, int]) -> np.ndarray:
        col = {k: self.grid_codes[:, i] for i, k in enumerate(self.knobs)}
        out = np.full(len(self.grid_codes), e.base)
        for k, table in e.mains.items():
            out += table[col[k]]
        for (a, b), table in e.pairs.items():
            out += table[col[a], col[b]]
        for (f, k), table in e.context.items():
            out += table[seg[f], col[k]]
        return out

    def _enumerate_best(self, effects: Effects, s: int) -> tuple[int, float]:
        """Best allowed combination of a segment, from the spec's own allowed rows."""
        space = self.parsed.space
        best, best_p = -1, -1.0
        p = 1.0 / (1.0 + np.exp(-self._logit(effects, self._codes(s))))
        for row in space.allowed(self.segments[s]):
            g = self.grid_index(space.params(int(row)))
            if p[g] > best_p:
                best, best_p = g, float(p[g])
        return best, best_p

    def _codes(self, s: int) -> dict[str, int]:
        return {f: self.features[f].index(v) for f, v in self.segments[s].items()}


# --- construction helpers ------------------------------------------------------------------------


def _spec(
    knobs: Mapping[str, list[Value]],
    features: Mapping[str, list[Value]],
    rules: Sequence[str] = (),
    learn: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "knobs": {k: list(v) for k, v in knobs.items()},
        "reward": {"formula": "converted", "window": "1000d"},
        "signals": {"converted": "max"},
    }
    if features:
        spec["context"] = {f: list(v) for f, v in features.items()}
    if rules:
        spec["skeleton"] = {"rules": list(rules)}
    if learn:
        spec["learn"] = dict(learn)
    return spec


def _calibrate(effects: Effects, world: World, target: float) -> Effects:
    """Set the base so that uniform play over the allowed combinations earns ``target``."""

    world.prepare()
    logits = [world._logit(effects, world._codes(s)) for s in range(len(world.segments))]

    def rate(base: float) -> float:
        rates = [
            (1.0 / (1.0 + np.exp(-(base + x[g])))).mean()
            for x, g in zip(logits, world.allowed_grid, strict=True)
        ]
        return float(np.dot(world.segment_weights, rates))

    lo, hi = -10.0, 10.0
    effects.base = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rate(mid) < target else (lo, mid)
    effects.base = (lo + hi) / 2
    return effects


def _random_effects(
    rng: np.random.Generator,
    knobs: Mapping[str, list[Value]],
    features: Mapping[str, list[Value]],
    mains: Mapping[str, float],
    pairs: Mapping[tuple[str, str], float],
    context: Mapping[tuple[str, str], float],
) -> Effects:
    """Centred normal effects with the given scales (each table sums to zero per axis)."""

    def centred(shape: tuple[int, ...], scale: float) -> np.ndarray:
        x = rng.normal(0.0, scale, size=shape)
        for axis in range(len(shape)):
            x = x - x.mean(axis=axis, keepdims=True)
        return x

    n = {k: len(v) for k, v in knobs.items()}
    return Effects(
        mains={k: centred((n[k],), s) for k, s in mains.items()},
        pairs={(a, b): centred((n[a], n[b]), s) for (a, b), s in pairs.items()},
        context={(f, k): centred((len(features[f]), n[k]), s) for (f, k), s in context.items()},
    )


def _quote(v: Value) -> str:
    return f"'{v}'" if isinstance(v, str) else str(v)


# --- the worlds ----------------------------------------------------------------------------------

FACTORIAL_KNOBS: dict[str, list[Value]] = {
    "opening": ["question", "suspense", "dialogue"],
    "tone": ["warm", "formal", "playful", "urgent"],
    "length": ["short", "medium", "long"],
    "twists": [0, 1, 2, 3],
}
FACTORIAL_CONTEXT: dict[str, list[Value]] = {"genre": ["thriller", "romance", "scifi"]}
FACTORIAL_WEIGHTS = {"genre": np.array([0.5, 0.3, 0.2])}


def _factorial_effects(seed: int) -> Effects:
    return _random_effects(
        np.random.default_rng(seed),
        FACTORIAL_KNOBS,
        FACTORIAL_CONTEXT,
        mains=dict.fromkeys(FACTORIAL_KNOBS, 0.25),
        pairs={("opening", "twists"): 0.7, ("tone", "length"): 0.7},
        context={("genre", "opening"): 0.6, ("genre", "tone"): 0.6, ("genre", "twists"): 0.4},
    )


def _factorial_like(name: str, description: str, phases: int, decisions: int) -> World:
    """Factorial (one phase) or drift (a second, independent draw of the effects)."""
    effects = [_factorial_effects(101), _factorial_effects(202)][:phases]
    learn = {"half_life": DRIFT_HALF_LIFE} if phases > 1 else None
    probe = World(
        name,
        description,
        _spec(FACTORIAL_KNOBS, FACTORIAL_CONTEXT, (), learn),
        dict(FACTORIAL_KNOBS),
        dict(FACTORIAL_CONTEXT),
        FACTORIAL_WEIGHTS,
    )
    for e in effects:
        _calibrate(e, probe, 0.25)
    # The rule forbids the (opening, twists) pair of the unconstrained best for thrillers.
    probe.build(effects[:1])
    best = probe.params(int(probe.best_grid[0, probe.segment({"genre": "thriller"})]))
    rule = (
        f"NOT (genre = 'thriller' AND opening = {_quote(best['opening'])}"
        f" AND twists = {_quote(best['twists'])})"
    )
    world = World(
        name,
        description,
        _spec(FACTORIAL_KNOBS, FACTORIAL_CONTEXT, [rule], learn),
        dict(FACTORIAL_KNOBS),
        dict(FACTORIAL_CONTEXT),
        FACTORIAL_WEIGHTS,
        switch=decisions // 2 if phases > 1 else None,
    ).build(effects)
    thriller = world.segment({"genre": "thriller"})
    assert world.best_prob[0, thriller] < probe.best_prob[0, thriller]  # the rule bites
    if phases > 1:  # the best combination changes in every context
        assert np.all(world.best_grid[0] != world.best_grid[1])
    return world


def factorial(decisions: int) -> World:
    return _factorial_like(
        "factorial",
        "4 knobs (3-4 levels, 144 combinations), genre context (3 values); strong knob x knob"
        " and knob x context effects; a rule forbids the unconstrained best for thrillers",
        1,
        decisions,
    )


def drift(decisions: int) -> World:
    return _factorial_like(
        "drift",
        "factorial's structure; at half the run every effect is redrawn and the best"
        f" combination changes in every context; flywheel's half-life {DRIFT_HALF_LIFE}"
        " (about 2,500 decisions)",
        2,
        decisions,
    )


def rare(decisions: int) -> World:
    knobs: dict[str, list[Value]] = {
        "layout": ["grid", "list", "hero"],
        "image": ["photo", "drawing", "none"],
        "badge": [False, True],
        "offer": ["none", "ship_free", "pct_10", "pct_20"],
    }
    features: dict[str, list[Value]] = {
        "region": ["north", "south", "east", "west", "central"],
        "device": ["desktop", "mobile", "tablet", "tv"],
    }
    weights = {
        "region": np.array([0.35, 0.25, 0.2, 0.12, 0.08]),
        "device": np.array([0.5, 0.35, 0.1, 0.05]),
    }
    effects = _random_effects(
        np.random.default_rng(303),
        knobs,
        features,
        mains=dict.fromkeys(knobs, 0.2),
        pairs={("image", "offer"): 0.3},
        context={("region", "offer"): 0.3, ("device", "layout"): 0.3},
    )
    world = World(
        "rare",
        "4 knobs (72 combinations), region x device context (20 segments, skewed); rare"
        " reward (4% under uniform play), modest effects",
        _spec(knobs, features),
        knobs,
        features,
        weights,
    )
    return world.build([_calibrate(effects, world, 0.04)])


def flat_marginals(decisions: int) -> World:
    knobs: dict[str, list[Value]] = {
        "headline": ["plain", "bold", "question"],
        "image": ["photo", "drawing", "none"],
        "layout": ["grid", "list", "hero"],
        "cta": ["buy", "try", "learn"],
    }
    a = 0.5
    same = np.where(np.eye(3, dtype=bool), 2 * a, -a)  # headline x image: match the levels
    shift = np.array([[2 * a if (i - j) % 3 == 1 else -a for j in range(3)] for i in range(3)])
    effects = Effects(pairs={("headline", "image"): same, ("layout", "cta"): shift})
    world = World(
        "flat_marginals",
        "4 knobs x 3 levels (81 combinations), no context; no main effects, two XOR-like"
        " pairs: every single-knob marginal is exactly flat under uniform play",
        _spec(knobs, {}),
        knobs,
        {},
        {},
    )
    world = world.build([_calibrate(effects, world, 0.25)])
    # Every level of every knob has the same mean reward under uniform play of the others:
    # each row of both pair tables holds the same values (2a, -a, -a), only permuted.
    for i in range(len(knobs)):
        means = [world.probs[0, 0, world.grid_codes[:, i] == lv].mean() for lv in range(3)]
        assert max(means) - min(means) < 1e-12, means
    return world


def large(decisions: int) -> World:
    names = ["font", "color", "layout", "image", "headline", "cta", "badge", "motion"]
    knobs: dict[str, list[Value]] = {k: ["a", "b", "c"] for k in names}
    features: dict[str, list[Value]] = {"platform": ["web", "app"]}
    effects = _random_effects(
        np.random.default_rng(404),
        knobs,
        features,
        mains={"font": 0.5, "layout": 0.5, "cta": 0.5},
        pairs={("color", "image"): 0.6, ("headline", "cta"): 0.6, ("badge", "motion"): 0.6},
        context={("platform", "layout"): 0.5},
    )
    world = World(
        "large",
        "8 knobs x 3 levels (6,561 combinations), platform context (2 values); sparse effects:"
        " 3 mains, 3 pairs, 1 knob x context",
        _spec(knobs, features),
        knobs,
        features,
        {"platform": np.array([0.6, 0.4])},
    )
    return world.build([_calibrate(effects, world, 0.10)])


# --- factorial's structure with other effects, and worlds that change ---------------------------


def _factorial_probe() -> World:
    """Factorial's knobs and context without the rule: for calibration and the rule itself."""
    return World(
        "probe",
        "",
        _spec(FACTORIAL_KNOBS, FACTORIAL_CONTEXT),
        dict(FACTORIAL_KNOBS),
        dict(FACTORIAL_CONTEXT),
        FACTORIAL_WEIGHTS,
    )


def _thriller_rule(effects: Effects) -> tuple[str, dict[str, Value], float]:
    """The rule forbidding the (opening, twists) pair of the unconstrained best for
    thrillers under ``effects``; that best, and its P."""
    probe = _factorial_probe().build([effects])
    thriller = probe.segment({"genre": "thriller"})
    best = probe.params(int(probe.best_grid[0, thriller]))
    rule = (
        f"NOT (genre = 'thriller' AND opening = {_quote(best['opening'])}"
        f" AND twists = {_quote(best['twists'])})"
    )
    return rule, best, float(probe.best_prob[0, thriller])


def _factorial_world(
    name: str,
    description: str,
    phases: Sequence[Effects],
    *,
    switch: int | None = None,
    ramp: tuple[int, int] | None = None,
) -> World:
    """Factorial's knobs, context and rule (from the first phase) with the spec's default
    learn settings, over the given phases."""
    rule, _, unconstrained = _thriller_rule(phases[0])
    world = World(
        name,
        description,
        _spec(FACTORIAL_KNOBS, FACTORIAL_CONTEXT, [rule]),
        dict(FACTORIAL_KNOBS),
        dict(FACTORIAL_CONTEXT),
        FACTORIAL_WEIGHTS,
        switch=switch,
        ramp=ramp,
    ).build(phases)
    assert world.best_prob[0, world.segment({"genre": "thriller"})] < unconstrained  # it bites
    return world


def _permuted(effects: Effects, perm: Mapping[str, np.ndarray]) -> Effects:
    """The effects with each knob's levels relabelled: level ``l`` gets the effects level
    ``perm[knob][l]`` had, in every table (so P_new(combination) = P_old(its image))."""
    return Effects(
        mains={k: t[perm[k]] for k, t in effects.mains.items()},
        pairs={(a, b): t[np.ix_(perm[a], perm[b])] for (a, b), t in effects.pairs.items()},
        context={(f, k): t[:, perm[k]] for (f, k), t in effects.context.items()},
        base=effects.base,
    )


def _blend(a: Effects, b: Effects, w: float) -> Effects:
    """The logit ``(1 - w) a + w b`` (every table is additive in the logit)."""
    return Effects(
        mains={k: (1 - w) * t + w * b.mains[k] for k, t in a.mains.items()},
        pairs={k: (1 - w) * t + w * b.pairs[k] for k, t in a.pairs.items()},
        context={k: (1 - w) * t + w * b.context[k] for k, t in a.context.items()},
        base=(1 - w) * a.base + w * b.base,
    )


def _change_phases() -> tuple[Effects, Effects]:
    """Factorial's effects (phase A, so the first half is the factorial world) and the same
    effects with every knob's levels permuted (phase B). The permutation keeps the thriller
    rule's opening and twists levels in place (the other levels of those two knobs move) and
    moves every level of tone and length: the skeleton's allowed set maps onto itself, so
    every segment's allowed probabilities are the same multiset in both phases (the uniform
    and the best rates are unchanged), while every segment's best combination changes (its
    tone differs)."""
    a = _calibrate(_factorial_effects(101), _factorial_probe(), 0.25)
    _, best, _ = _thriller_rule(a)

    def fixing(knob: str) -> np.ndarray:  # keep the rule's level, move the others
        n, keep = len(FACTORIAL_KNOBS[knob]), FACTORIAL_KNOBS[knob].index(best[knob])
        others = [lv for lv in range(n) if lv != keep]
        perm = np.arange(n)
        perm[others] = np.roll(others, 1)
        return perm

    perm = {
        "opening": fixing("opening"),
        "twists": fixing("twists"),
        "tone": np.roll(np.arange(len(FACTORIAL_KNOBS["tone"])), 1),
        "length": np.roll(np.arange(len(FACTORIAL_KNOBS["length"])), 1),
    }
    return a, _permuted(a, perm)


def _assert_new_best(world: World) -> None:
    """The best combination of the last phase differs from the first's in every context."""
    assert np.all(world.best_grid[0] != world.best_grid[-1]), world.best_grid[[0, -1]]


def change_same(decisions: int) -> World:
    a, b = _change_phases()
    world = _factorial_world(
        "change_same",
        "factorial until half the run (the same world); then every knob's levels swap their"
        " effects (a permutation that maps the allowed set onto itself): the best"
        " combination changes in every context while the uniform rate (0.25) and every"
        " context's best P stay the same; spec's default learn settings (half_life auto)",
        [a, b],
        switch=decisions // 2,
    )
    _assert_new_best(world)
    assert abs(world.uniform_rate(0) - world.uniform_rate(1)) < 0.005
    assert abs(world.best_rate(0) - world.best_rate(1)) < 0.005
    return world


def change_drop(decisions: int) -> World:
    a, b = _change_phases()
    b.base = 0.0  # calibrated afresh, on the allowed combinations (the rule's world)
    _calibrate(b, _factorial_world("probe", "", [a]), 0.18)
    world = _factorial_world(
        "change_drop",
        "change_same's change, and at the same time the base drops so the uniform rate falls"
        " from 0.24 to 0.18: worse for everyone (uniform and best P lower in every context),"
        " with a new best combination in every context; spec's default learn settings"
        " (half_life auto)",
        [a, b],
        switch=decisions // 2,
    )
    _assert_new_best(world)
    for s, allowed in enumerate(world.allowed_grid):
        assert world.probs[1, s, allowed].mean() < world.probs[0, s, allowed].mean()
        assert world.best_prob[1, s] < world.best_prob[0, s]
    assert abs(world.uniform_rate(1) - 0.18) < 0.005
    return world


def gradual(decisions: int) -> World:
    a, b = _change_phases()
    window = max(1, min(GRADUAL_WINDOW, decisions // 4))
    start = decisions // 2 - window // 2
    world = _factorial_world(
        "gradual",
        "change_same's two phases, but the logit moves linearly from the first to the second"
        f" over {GRADUAL_WINDOW:,} decisions centred on half the run (a quarter of the run"
        f" when shorter), tabulated in {GRADUAL_STEPS} steps; half-way the effects are"
        " flatter (best P about 0.53 instead of 0.72); simple regret against the last phase;"
        " spec's default learn settings (half_life auto)",
        [_blend(a, b, k / GRADUAL_STEPS) for k in range(GRADUAL_STEPS + 1)],
        ramp=(start, start + window),
    )
    _assert_new_best(world)
    assert world.phase(start) == 0 and world.phase(start + window) == GRADUAL_STEPS
    assert abs(world.uniform_rate(0) - world.uniform_rate(GRADUAL_STEPS)) < 0.005
    return world


def strong_early(decisions: int) -> World:
    effects = _random_effects(
        np.random.default_rng(505),
        FACTORIAL_KNOBS,
        FACTORIAL_CONTEXT,
        mains=dict.fromkeys(FACTORIAL_KNOBS, 0.8),
        pairs={("opening", "twists"): 1.5, ("tone", "length"): 1.5},
        context={("genre", "opening"): 0.6, ("genre", "tone"): 0.6, ("genre", "twists"): 0.4},
    )
    # the rule does not depend on the base: calibrate on the allowed combinations
    _calibrate(effects, _factorial_world("probe", "", [effects]), 0.25)
    return _factorial_world(
        "strong_early",
        "factorial's knobs, context and kind of rule with strong effects (mains 0.8, pairs 1.5"
        " on the logit; best P 0.98 on average), uniform rate 0.25: the first few hundred"
        " results already show the way, so staying uniform until the first learn cycle"
        " costs; spec's default learn settings",
        [effects],
    )


BUILDERS: dict[str, Callable[[int], World]] = {
    "factorial": factorial,
    "rare": rare,
    "flat_marginals": flat_marginals,
    "large": large,
    "drift": drift,
    "strong_early": strong_early,
    "change_same": change_same,
    "change_drop": change_drop,
    "gradual": gradual,
}
assert set(BUILDERS) == set(WORLDS) == {*STATIONARY, *CHANGE}


def make(name: str, decisions: int) -> World:
    """A world by name; ``decisions`` places a change world's switch (or its gradual drift)
    at half the run."""
    return BUILDERS[name](decisions)
