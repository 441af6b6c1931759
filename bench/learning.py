"""Learning benchmark: Flywheel against bandit baselines on simulated worlds.

Every policy faces the same contexts and the same reward draws (common random numbers): for
each decision ``t`` a context and a uniform ``u_t`` are drawn up front, and whatever a policy
plays at ``t`` earns ``1 if u_t < P(reward | context, played, t) else 0``. The reward of
decision ``t`` becomes visible to the policy ``--delay`` decisions later; batch policies refit
every ``--refit`` decisions on the rewards visible by then. Flywheel runs through its public
SDK only (decide / signal / learn) on a fresh DuckDB file, with a simulated clock: decision
``t`` happens at ``T0 + 60 t`` seconds and each reward is signalled when it becomes visible.
Flywheel also learns between its cycles by itself (online updates), so the baselines it is
measured against include VW online (``vw_online_g*``, every reward learnt the moment it is
visible) beside the protocol's policies.

Nobody operates Flywheel: when a learn cycle halts, the halt is counted and stays; the run
goes on with whatever Flywheel serves (``--operator``: an operator lifts each halt at once).

Metrics: cumulative regret (sum over decisions of the oracle's P minus the P of what was
played; true probabilities, not draws), final simple regret (expected regret of the policy's
greedy recommendation per context at the end, weighted exactly by the context law; in a
change world, against its last phase), skeleton violations, wall time, and for Flywheel its
halts, the checks that halted, rollbacks, learn cycles and the changes it recorded.

Run: ``.venv/bin/python bench/learning.py`` (all worlds, 3 seeds, 20,000 decisions);
``--stationary`` or ``--change`` for one set of worlds, ``--worlds`` for a comma list; or a
smoke run: ``.venv/bin/python bench/learning.py --worlds factorial --seeds 1 --decisions 3000``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import worlds as W  # type: ignore[import-not-found]
from _common import report, run_all  # type: ignore[import-not-found]

import flywheel
from flywheel.turn import update_due

T0 = 1_700_000_000.0
GAMMAS = (10, 100, 1000)
BASELINES = ("uniform", "ab_then_commit", "epsilon_greedy", "marginal_greedy")
VW_POLICIES = tuple(f"vw_g{g}" for g in GAMMAS)  # learns at each refit, like everyone
VW_ONLINE = tuple(f"vw_online_g{g}" for g in GAMMAS)  # learns every visible reward at once
POLICIES = ("flywheel", *BASELINES, *VW_POLICIES, *VW_ONLINE, "oracle")
EPSILON = 0.1
COMMIT_SHARE = 0.2
CHECKPOINTS = 10
TIE = 1e-12
NOTES = [
    "Common random numbers: per world and seed, the contexts and the uniforms behind every"
    " reward draw are drawn once; every policy faces the same ones. The worlds' effects are"
    " fixed (drawn from constant seeds), only the contexts, draws and policies vary by seed.",
    "The reward of decision t becomes visible at decision t + delay; every policy refits"
    " every `refit` decisions on the rewards visible by then (the protocol), VW included:"
    " vw_g* learns the visible rewards at each refit. vw_online_g* learns each reward the"
    " moment it becomes visible. At the end, one last refit on what is visible, then the"
    " recommendations.",
    "The best baseline is the best of every policy but Flywheel and the oracle, VW online"
    " included: Flywheel learns online too (between its cycles it serves from a posterior"
    " updated with the results recorded since the last one), so learning from each reward"
    " at once is no longer outside what it does. ratio_to_best is Flywheel's mean over the"
    " best baseline's; the best of the protocol's policies alone (VW online left out) is"
    " reported beside it for reference.",
    "Flywheel: public SDK only, a fresh DuckDB file per run, clock T0 + 60 s per decision,"
    " each reward signalled (0 or 1) at the time it becomes visible, learn(as_of=now) every"
    " refit, an online update (wheel.update(), what the SDK's background thread runs) when"
    " flywheel.turn.update_due says (every 100 rewards; at 20, 40, 60, 90, ... at first), its"
    " serving generator seeded per run, the"
    " world's spec with its default learn"
    " settings (half_life auto; the drift world alone sets a half-life). Its figures still"
    " vary a little from one run to the next for the same seed: the store sums cells in"
    " parallel, so the fits differ in the last bits, and a single different choice changes"
    " the rest of the run.",
    "No operator: when a learn cycle halts (the seatbelt stops publishing), the halt is"
    " counted and nobody lifts it; Flywheel keeps deciding and every later cycle answers"
    " halted (cycles_while_halted). With --operator, each halt is lifted at once"
    " (wheel.resume). halts counts new halts (a guard's rollback halts too); halt_checks the"
    " critical checks that failed (negative_loop for the guard); halts per 200 learn cycles"
    " divides by every cycle run, the open rate by the cycles run while not halted. changes:"
    " the audit trail's 'change' entries at the end of the run (null where it cannot be"
    " read).",
    "Recommendations (simple regret): Flywheel decide(explore=False); VW the most likely"
    " action of its PMF over the full allowed set; marginal_greedy its greedy combination;"
    " uniform, ab_then_commit and epsilon_greedy the allowed combination with the best"
    " observed mean, shrunk by one pseudo-observation at the segment mean (pooled over"
    " segments when a segment has no data). ab_then_commit commits with the same rule.",
    "VW: --cb_explore_adf --squarecb, cost 1 - reward, -q for every knob pair and context x"
    " knob; one action per allowed combination. Where a context allows more than"
    " vw_max_actions combinations (the large world), each decision offers VW a random subset"
    " of that many, which always includes the segment's incumbent (the most likely action of"
    " its previous decision there); the logged probability is the PMF within the subset.",
    "Wall time is per run (one policy, one world, one seed), runs spread over `jobs`"
    " processes (one BLAS thread each).",
]


def _key(*parts: object) -> list[int]:
    """A stable seed sequence from names and numbers (the same in every process)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


# --- policies ------------------------------------------------------------------------------------


class Policy:
    """Plays grid indices (see ``worlds.World.grid_codes``) for context segments.

    ``observe`` is called when a reward becomes visible, ``refit`` every ``--refit``
    decisions, ``choose`` once per decision, ``recommend`` at the end (greedy, no exploration).
    """

    def __init__(self, world: W.World, rng: np.random.Generator, args: argparse.Namespace):
        self.world = world
        self.rng = rng
        self.args = args
        self.notes: dict[str, Any] = {}

    def observe(self, t: int, seg: int, grid: int, reward: int, now: float) -> None:
        pass

    def refit(self, t: int, now: float) -> None:
        pass

    def choose(self, t: int, seg: int, now: float) -> int:
        raise NotImplementedError

    def recommend(self, seg: int, now: float) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _uniform(self, seg: int) -> int:
        allowed = self.world.allowed_grid[seg]
        return int(allowed[self.rng.integers(len(allowed))])


class Oracle(Policy):
    def choose(self, t: int, seg: int, now: float) -> int:
        return int(self.world.best_grid[self.world.phase(t), seg])

    def recommend(self, seg: int, now: float) -> int:
        return int(self.world.best_grid[-1, seg])


class CellPolicy(Policy):
    """Keeps per (segment, combination) counts of the visible rewards."""

    def __init__(self, world: W.World, rng: np.random.Generator, args: argparse.Namespace):
        super().__init__(world, rng, args)
        shape = (len(world.segments), len(world.grid_codes))
        self.n = np.zeros(shape)
        self.s = np.zeros(shape)

    def observe(self, t: int, seg: int, grid: int, reward: int, now: float) -> None:
        self.n[seg, grid] += 1
        self.s[seg, grid] += reward

    def best_observed(self, seg: int) -> int:
        """The allowed combination with the best observed mean in the segment, shrunk by one
        pseudo-observation at the segment's mean (so 1 success in 1 trial does not win);
        pooled over segments when the segment has no data; uniform when nothing is known."""
        allowed = self.world.allowed_grid[seg]
        for counts, sums in ((self.n[seg], self.s[seg]), (self.n.sum(0), self.s.sum(0))):
            n, s = counts[allowed], sums[allowed]
            if n.sum() == 0:
                continue
            prior = s.sum() / n.sum()
            score = np.where(n > 0, (s + prior) / (n + 1), -np.inf)
            return int(allowed[_argmax(score, self.rng)])
        return self._uniform(seg)

    def recommend(self, seg: int, now: float) -> int:
        return self.best_observed(seg)


class Uniform(CellPolicy):
    def choose(self, t: int, seg: int, now: float) -> int:
        return self._uniform(seg)


class AbThenCommit(CellPolicy):
    """Uniform for the first 20% of decisions, then the best observed combination for good."""

    def __init__(self, world: W.World, rng: np.random.Generator, args: argparse.Namespace):
        super().__init__(world, rng, args)
        self.commit_at = int(COMMIT_SHARE * args.decisions)
        self.committed: list[int] | None = None

    def choose(self, t: int, seg: int, now: float) -> int:
        if t < self.commit_at:
            return self._uniform(seg)
        if self.committed is None:  # on the data visible at the commit time
            self.committed = [self.best_observed(s) for s in range(len(self.world.segments))]
        return self.committed[seg]

    def recommend(self, seg: int, now: float) -> int:
        return self.committed[seg] if self.committed is not None else self.best_observed(seg)


class EpsilonGreedy(CellPolicy):
    """ε = 0.1; otherwise the best cell mean of the last refit (unseen cells count as 1.0,
    ties broken uniformly)."""

    def __init__(self, world: W.World, rng: np.random.Generator, args: argparse.Namespace):
        super().__init__(world, rng, args)
        self.greedy = list(world.allowed_grid)  # before any data: every cell ties

    def refit(self, t: int, now: float) -> None:
        for seg, allowed in enumerate(self.world.allowed_grid):
            n, s = self.n[seg, allowed], self.s[seg, allowed]
            mean = np.where(n > 0, s / np.maximum(n, 1), 1.0)
            self.greedy[seg] = allowed[mean >= mean.max() - TIE]

    def choose(self, t: int, seg: int, now: float) -> int:
        if self.rng.random() < EPSILON:
            return self._uniform(seg)
        best = self.greedy[seg]
        return int(best[self.rng.integers(len(best))])


class MarginalGreedy(CellPolicy):
    """10% uniform; otherwise each knob at the level with the best marginal mean in the
    segment (unseen levels count as 1.0); when the skeleton forbids that combination, the
    allowed one with the best sum of marginal means (the same argmax over allowed rows)."""

    def __init__(self, world: W.World, rng: np.random.Generator, args: argparse.Namespace):
        super().__init__(world, rng, args)
        codes = world.grid_codes
        self.offsets = np.concatenate([[0], np.cumsum([len(v) for v in world.knobs.values()])])
        self.onehot = np.zeros((len(codes), int(self.offsets[-1])))
        for k in range(codes.shape[1]):
            self.onehot[np.arange(len(codes)), self.offsets[k] + codes[:, k]] = 1.0
        self.greedy = list(world.allowed_grid)

    def refit(self, t: int, now: float) -> None:
        for seg, allowed in enumerate(self.world.allowed_grid):
            n, s = self.n[seg] @ self.onehot, self.s[seg] @ self.onehot  # per knob level
            marginal = np.where(n > 0, s / np.maximum(n, 1), 1.0)
            score = self.onehot[allowed] @ marginal
            self.greedy[seg] = allowed[score >= score.max() - TIE]

    def choose(self, t: int, seg: int, now: float) -> int:
        if self.rng.random() < EPSILON:
            return self._uniform(seg)
        best = self.greedy[seg]
        return int(best[self.rng.integers(len(best))])

    def recommend(self, seg: int, now: float) -> int:
        best = self.greedy[seg]
        return int(best[self.rng.integers(len(best))])


class VowpalWabbit(Policy):
    """``--cb_explore_adf --squarecb`` with context × knob and knob × knob interactions; one
    action per allowed combination, or, above ``--vw-max-actions``, a random subset of that
    many plus the segment's incumbent (the previous decision's most likely action)."""

    def __init__(
        self,
        world: W.World,
        rng: np.random.Generator,
        args: argparse.Namespace,
        gamma: int,
        online: bool,
    ):
        super().__init__(world, rng, args)
        self.online = online
        self.queue: list[list[str]] = []
        from vowpalwabbit import Workspace

        letters = "abcdefghijklmnop"[: len(world.knobs)]  # the context is "x"
        pairs = [f"{a}{b}" for i, a in enumerate(letters) for b in letters[i + 1 :]]
        if world.features:
            pairs += [f"x{a}" for a in letters]
        seed = int(rng.integers(2**31))
        flags = f"--cb_explore_adf --squarecb --gamma_scale {gamma} --quiet --random_seed {seed}"
        self.vw = Workspace(flags + "".join(f" -q {p}" for p in pairs), enable_logging=False)
        self.lines = [
            " ".join(
                f"|{letter} {k}={vals[c]}"
                for letter, (k, vals), c in zip(letters, world.knobs.items(), codes, strict=True)
            )
            for codes in world.grid_codes
        ]
        self.shared = [
            "shared |x " + " ".join(f"{f}={v}" for f, v in ctx.items()) if ctx else None
            for ctx in world.segments
        ]
        self.pending: dict[int, tuple[np.ndarray, int, float]] = {}
        self.max_actions = args.vw_max_actions
        self.incumbent = [int(a[0]) for a in world.allowed_grid]
        subset = any(len(a) > self.max_actions for a in world.allowed_grid)
        self.notes["action_subset"] = self.max_actions if subset else None

    def _example(self, seg: int, actions: np.ndarray, label: tuple[int, str] | None = None):
        lines = [self.lines[g] for g in actions]
        if label is not None:
            lines[label[0]] = label[1] + lines[label[0]]
        shared = self.shared[seg]
        return lines if shared is None else [shared, *lines]

    def choose(self, t: int, seg: int, now: float) -> int:
        allowed = self.world.allowed_grid[seg]
        if len(allowed) > self.max_actions:
            actions = self.rng.choice(allowed, size=self.max_actions, replace=False)
            if self.incumbent[seg] not in actions:
                actions[0] = self.incumbent[seg]
        else:
            actions = allowed
        pmf = np.asarray(self.vw.predict(self._example(seg, actions)), dtype=float)
        pmf /= pmf.sum()
        i = min(int(np.searchsorted(np.cumsum(pmf), self.rng.random(), side="right")), len(pmf) - 1)
        self.incumbent[seg] = int(actions[int(np.argmax(pmf))])
        self.pending[t] = (actions, i, float(pmf[i]))
        return int(actions[i])

    def observe(self, t: int, seg: int, grid: int, reward: int, now: float) -> None:
        actions, i, prob = self.pending.pop(t)
        example = self._example(seg, actions, (i, f"0:{1 - reward}:{prob} "))
        if self.online:
            self.vw.learn(example)
        else:
            self.queue.append(example)

    def refit(self, t: int, now: float) -> None:
        for example in self.queue:  # the protocol: models update at refits
            self.vw.learn(example)
        self.queue.clear()

    def recommend(self, seg: int, now: float) -> int:
        allowed = self.world.allowed_grid[seg]  # the full set, subset or not
        pmf = np.asarray(self.vw.predict(self._example(seg, allowed)), dtype=float)
        return int(allowed[int(np.argmax(pmf))])

    def close(self) -> None:
        self.vw.finish()


class Flywheel(Policy):
    """Flywheel through its SDK: decide, signal the reward when visible, learn every refit.
    A halt stays (nobody resumes) unless ``--operator``."""

    def __init__(
        self, world: W.World, rng: np.random.Generator, args: argparse.Namespace, folder: str
    ):
        super().__init__(world, rng, args)
        self.now = T0
        spec = dict(world.spec)
        spec["learn"] = {**spec.get("learn", {}), **args.learn}
        self.wheel = flywheel.open(
            spec,
            store=f"duckdb:///{Path(folder) / 'learning.duckdb'}",
            clock=lambda: self.now,
            refresh=0,
            seed=int(rng.integers(2**31)),
            background=False,  # online updates below, every online_rows results
        )
        self.learn = self.wheel.spec.learn
        self.unlearned = self.seen = 0
        self.updates = 0
        self.update_seconds = 0.0
        self.knobs = list(world.knobs)
        self.ids: dict[int, str] = {}
        self.published = 0
        self.cycles = 0
        self.cycles_halted = 0  # cycles run while an earlier halt stood
        self.halts = 0
        self.halted_at: list[int] = []
        self.halt_checks: list[str] = []
        self.rollbacks = 0
        self.changes: int | None = None
        self.learn_seconds = 0.0
        self.violations = 0

    def _grid(self, seg: int, params: dict[str, Any]) -> int:
        """The grid index of served knob values; counts skeleton violations."""
        knobs = {k: params[k] for k in self.knobs}
        row = self.world.parsed.space.row_of(knobs)
        allowed = self.world.parsed.space.allowed(self.world.segments[seg])
        if row is None or row not in allowed:
            self.violations += 1
        return int(self.world.grid_index(knobs))

    def choose(self, t: int, seg: int, now: float) -> int:
        self.now = now
        d = self.wheel.decide(self.world.segments[seg])
        self.ids[t] = d.id
        return self._grid(seg, d.params)

    def observe(self, t: int, seg: int, grid: int, reward: int, now: float) -> None:
        self.now = now
        self.wheel.signal(self.ids.pop(t), "converted", reward, ts=now)
        self.unlearned += 1
        self.seen += 1
        if self.learn.online and update_due(self.unlearned, self.seen, self.learn):
            # what the SDK's background thread does at this pace in production; here in the
            # loop, so a simulation faster than real traffic gets the same updates
            self.unlearned = 0
            started = time.perf_counter()
            self.updates += int(self.wheel.update())
            self.update_seconds += time.perf_counter() - started

    def refit(self, t: int, now: float) -> None:
        self.now = now
        started = time.perf_counter()
        result = self.wheel.learn(as_of=now, seed=int(self.rng.integers(2**31)))
        self.learn_seconds += time.perf_counter() - started
        self.cycles += 1
        self.published += int(result.published)
        self.rollbacks += int(result.rolled_back)
        if not result.halted:
            return
        if result.reason.startswith("halted since"):  # an earlier halt, still standing
            self.cycles_halted += 1
            return
        self.halts += 1  # the seatbelt stopped publishing in this cycle
        self.halted_at.append(t)
        failed = [c.name for c in result.checks if c.critical and not c.ok]
        self.halt_checks += failed or ["negative_loop" if result.rolled_back else "unknown"]
        if self.args.operator:  # an operator who trusts the data lifts it at once
            self.wheel.resume("benchmark: the world is as simulated")

    def recommend(self, seg: int, now: float) -> int:
        self.now = now
        return self._grid(seg, self.wheel.decide(self.world.segments[seg], explore=False).params)

    def close(self) -> None:
        try:  # the changes of the world Flywheel recorded in its audit trail
            found = self.wheel.store.query(
                "SELECT count(*) AS n FROM audit WHERE action = 'change'"
            )
            self.changes = int(found.column("n")[0].as_py())
        except Exception:  # a store that cannot answer it: reported as null
            self.changes = None
        self.wheel.close()
        self.notes.update(
            playbooks=self.published,
            learn_cycles=self.cycles,
            cycles_while_halted=self.cycles_halted,
            halts=self.halts,
            halted_at=self.halted_at,
            halt_checks=self.halt_checks,
            rollbacks=self.rollbacks,
            changes=self.changes,
            operator=bool(self.args.operator),
            learn_seconds=round(self.learn_seconds, 2),
            online_updates=self.updates,
            update_seconds=round(self.update_seconds, 2),
            served_violations=self.violations,
        )


def _argmax(score: np.ndarray, rng: np.random.Generator) -> int:
    best = np.flatnonzero(score >= score.max() - TIE)
    return int(best[rng.integers(len(best))])


def make_policy(name: str, world: W.World, rng: np.random.Generator, args, folder: str) -> Policy:
    if name == "flywheel":
        return Flywheel(world, rng, args, folder)
    if name.startswith("vw_g"):
        return VowpalWabbit(world, rng, args, int(name.removeprefix("vw_g")), online=False)
    if name.startswith("vw_online_g"):
        return VowpalWabbit(world, rng, args, int(name.removeprefix("vw_online_g")), online=True)
    classes: dict[str, type[Policy]] = {
        "uniform": Uniform,
        "ab_then_commit": AbThenCommit,
        "epsilon_greedy": EpsilonGreedy,
        "marginal_greedy": MarginalGreedy,
        "oracle": Oracle,
    }
    return classes[name](world, rng, args)


# --- one run -------------------------------------------------------------------------------------


def draws(world: W.World, seed: int, decisions: int) -> tuple[np.ndarray, np.ndarray]:
    """The contexts (segment indices) and uniforms every policy faces in one run."""
    rng = np.random.default_rng(_key("draws", world.name, seed))
    return world.sample_segments(rng, decisions), rng.random(decisions)


def run(world_name: str, seed: int, policy_name: str, args: argparse.Namespace) -> dict[str, Any]:
    world = W.make(world_name, args.decisions)
    segs, uniforms = draws(world, seed, args.decisions)
    n, delay, refit = args.decisions, args.delay, args.refit
    phases = np.array([world.phase(t) for t in range(n)])
    rng = np.random.default_rng(_key("policy", world.name, seed, policy_name))
    played = np.empty(n, dtype=np.int64)
    rewards = np.empty(n, dtype=np.int64)
    probs = world.probs
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        policy = make_policy(policy_name, world, rng, args, folder)
        for t in range(n):
            now = T0 + W.SECONDS_PER_DECISION * t
            s = t - delay
            if s >= 0:  # the reward of decision s becomes visible now, not before
                policy.observe(s, int(segs[s]), int(played[s]), int(rewards[s]), now)
            if t > 0 and t % refit == 0:
                policy.refit(t, now)
            seg = int(segs[t])
            g = policy.choose(t, seg, now)
            played[t] = g
            rewards[t] = int(uniforms[t] < probs[phases[t], seg, g])
        now = T0 + W.SECONDS_PER_DECISION * n  # the end: what is visible then, one last refit
        for s in range(max(0, n - delay), n + 1 - delay):
            policy.observe(s, int(segs[s]), int(played[s]), int(rewards[s]), now)
        policy.refit(n, now)
        recommended = [policy.recommend(seg, now) for seg in range(len(world.segments))]
        policy.close()
        wall = time.perf_counter() - started
    regret = world.best_prob[phases, segs] - probs[phases, segs, played]
    last = world.phase(n - 1)
    simple = world.best_prob[last] - probs[last, np.arange(len(recommended)), recommended]
    allowed = [np.zeros(probs.shape[2], dtype=bool) for _ in world.segments]
    for seg, grid in enumerate(world.allowed_grid):
        allowed[seg][grid] = True
    violations = sum(int(not allowed[s][g]) for s, g in zip(segs, played, strict=True))
    marks = np.linspace(n / CHECKPOINTS, n, CHECKPOINTS).astype(int) - 1
    return {
        "world": world_name,
        "seed": seed,
        "policy": policy_name,
        "cumulative_regret": float(regret.sum()),
        "curve": [round(float(c), 2) for c in np.cumsum(regret)[marks]],
        "simple_regret": float(np.dot(world.segment_weights, simple)),
        "mean_reward": float(rewards.mean()),
        "violations": violations,
        "wall_s": wall,
        "notes": policy.notes,
    }


def _run(task: tuple[str, int, str, argparse.Namespace]) -> dict[str, Any]:
    return run(*task)


# --- the report ----------------------------------------------------------------------------------


def _stats(values: list[float], digits: int) -> dict[str, Any]:
    return {
        "mean": round(float(np.mean(values)), digits),
        "min": round(float(np.min(values)), digits),
        "max": round(float(np.max(values)), digits),
        "per_seed": [round(float(v), digits) for v in values],
    }


def summarise(world: W.World, runs: list[dict[str, Any]], policies: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name in policies:
        mine = sorted((r for r in runs if r["policy"] == name), key=lambda r: r["seed"])
        table[name] = {
            "cumulative_regret": _stats([r["cumulative_regret"] for r in mine], 1),
            "simple_regret": _stats([r["simple_regret"] for r in mine], 4),
            "mean_reward": round(float(np.mean([r["mean_reward"] for r in mine])), 4),
            "violations": sum(r["violations"] for r in mine),
            "wall_s": round(float(np.mean([r["wall_s"] for r in mine])), 2),
            "curve": [round(float(c), 1) for c in np.mean([r["curve"] for r in mine], axis=0)],
            "notes": mine[0]["notes"],
        }
    out: dict[str, Any] = {**world.summary(), "policies": table}
    vws = [v for v in VW_POLICIES if v in table]
    # the best baseline: every policy but Flywheel and the oracle, VW online included
    others = [p for p in table if p not in ("flywheel", "oracle")]
    protocol = [p for p in others if p not in VW_ONLINE]
    online = [v for v in VW_ONLINE if v in table]
    for metric in ("cumulative_regret", "simple_regret"):
        mean = {name: table[name][metric]["mean"] for name in table}
        if vws:
            best_vw = min(vws, key=lambda v: mean[v])
            out[f"vw_best_gamma_{metric}"] = int(best_vw.removeprefix("vw_g"))
        if "flywheel" not in table:
            continue
        for key, candidates in (
            ("best_baseline", others),
            ("protocol_best", protocol),  # for reference: VW online left out
            ("vw_online", online),
        ):
            if candidates:
                out[f"flywheel_vs_{key}_{metric}"] = _versus(mean, candidates)
    fly = sorted((r for r in runs if r["policy"] == "flywheel"), key=lambda r: r["seed"])
    if fly:
        out["flywheel"] = _flywheel_summary(table["flywheel"], [r["notes"] for r in fly], out)
    return out


def _versus(mean: dict[str, float], candidates: list[str]) -> dict[str, Any]:
    """Flywheel's mean against the best (lowest) of the candidates'."""
    best = min(candidates, key=lambda b: mean[b])
    ratio = mean["flywheel"] / mean[best] if mean[best] > 0 else None
    return {
        "baseline": best,
        "baseline_value": mean[best],
        "flywheel_value": mean["flywheel"],
        "ratio_to_best": None if ratio is None else round(ratio, 3),
    }


def _flywheel_summary(
    row: dict[str, Any], notes: list[dict[str, Any]], out: dict[str, Any]
) -> dict[str, Any]:
    """Flywheel's line of a world: regret, its best baseline, halts over the seeds."""
    cycles = sum(n["learn_cycles"] for n in notes)
    open_cycles = cycles - sum(n["cycles_while_halted"] for n in notes)
    halts = sum(n["halts"] for n in notes)
    versus = out.get("flywheel_vs_best_baseline_cumulative_regret", {})
    protocol = out.get("flywheel_vs_protocol_best_cumulative_regret", {})
    simple = row["simple_regret"]
    return {
        "cumulative_regret": {k: row["cumulative_regret"][k] for k in ("mean", "min", "max")},
        "best_baseline": versus.get("baseline"),
        "best_baseline_regret": versus.get("baseline_value"),
        "ratio_to_best": versus.get("ratio_to_best"),
        "protocol_best": protocol.get("baseline"),
        "ratio_to_protocol_best": protocol.get("ratio_to_best"),
        "simple_regret": {"mean": simple["mean"], "max": simple["max"]},
        "violations": row["violations"],
        "halts": halts,
        "halts_per_200_cycles": round(200 * halts / cycles, 2) if cycles else None,
        "halts_per_200_open_cycles": round(200 * halts / open_cycles, 2) if open_cycles else None,
        "halt_checks": dict(Counter(c for n in notes for c in n["halt_checks"])),
        "halted_at": [n["halted_at"] for n in notes],
        "rollbacks": sum(n["rollbacks"] for n in notes),
        "learn_cycles": cycles,
        "cycles_while_halted": cycles - open_cycles,
        "changes": [n["changes"] for n in notes],
        "operator": notes[0]["operator"],
    }


def print_table(name: str, summary: dict[str, Any]) -> None:
    print(f"\n== {name}: {summary['combinations']} combinations, {summary['segments']} segments")
    header = (
        f"{'policy':<16}{'cum regret':>12}{'(min-max)':>20}{'simple':>9}{'viol':>6}{'wall s':>8}"
    )
    print(header)
    for policy, row in summary["policies"].items():
        c, s = row["cumulative_regret"], row["simple_regret"]
        spread = f"{c['min']:.0f}-{c['max']:.0f}"
        print(
            f"{policy:<16}{c['mean']:>12.1f}{spread:>20}{s['mean']:>9.4f}"
            f"{row['violations']:>6}{row['wall_s']:>8.2f}"
        )
    for metric in ("cumulative_regret", "simple_regret"):
        for key, label in (("best_baseline", "best"), ("protocol_best", "protocol's best")):
            versus = summary.get(f"flywheel_vs_{key}_{metric}")
            if versus:
                ratio = versus["ratio_to_best"]
                shown = "n/a (the baseline is at 0)" if ratio is None else f"{ratio:.3f}"
                print(f"flywheel / {versus['baseline']} ({label}, {metric}): {shown}")
    fly = summary.get("flywheel")
    if fly:
        print(
            f"flywheel: halts {fly['halts']} in {fly['learn_cycles']} learn cycles, checks"
            f" {fly['halt_checks']}, rollbacks {fly['rollbacks']}, cycles while halted"
            f" {fly['cycles_while_halted']}, changes {fly['changes']}"
        )


def print_overview(worlds: dict[str, dict[str, Any]]) -> None:
    """One line a world: Flywheel against its best baseline, simple regret, halts."""
    rows = {name: s["flywheel"] for name, s in worlds.items() if "flywheel" in s}
    if not rows:
        return
    print("\n== Flywheel, per world (cumulative regret: mean over seeds, min-max)")
    print(
        f"{'world':<16}{'regret':>9}{'(min-max)':>14}  {'best baseline':<18}{'regret':>9}"
        f"{'ratio':>7}{'simple':>8}{'max':>8}{'viol':>6}{'halts':>7}{'/200cyc':>9}"
        f"{'rollbk':>8}{'changes':>9}"
    )
    for name, f in rows.items():
        c = f["cumulative_regret"]
        spread = f"{c['min']:.0f}-{c['max']:.0f}"
        base = f["best_baseline"] or "-"
        base_regret = f["best_baseline_regret"]
        ratio = f["ratio_to_best"]
        rate = f["halts_per_200_cycles"]
        changes = ",".join("-" if n is None else str(n) for n in f["changes"])
        print(
            f"{name:<16}{c['mean']:>9.1f}{spread:>14}  {base:<18}"
            f"{'-' if base_regret is None else f'{base_regret:.1f}':>9}"
            f"{'-' if ratio is None else f'{ratio:.3f}':>7}"
            f"{f['simple_regret']['mean']:>8.4f}{f['simple_regret']['max']:>8.4f}"
            f"{f['violations']:>6}{f['halts']:>7}{'-' if rate is None else f'{rate:.2f}':>9}"
            f"{f['rollbacks']:>8}{changes:>9}"
        )


def _reused(args: argparse.Namespace) -> dict[tuple[str, int, str], dict[str, Any]]:
    """The baselines' runs of an earlier result file with the same protocol."""
    path = Path(__file__).parent / "results" / f"{args.reuse}.json"
    earlier = json.loads(path.read_text())["results"]
    settings = earlier["settings"]
    same = all(settings[k] == getattr(args, k) for k in ("decisions", "delay", "refit"))
    if not same:
        raise SystemExit(f"{path}: another protocol (decisions, delay or refit differ)")
    return {
        (r["world"], r["seed"], r["policy"]): r
        for r in earlier.get("runs", [])
        if r["policy"] != "flywheel"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--worlds", default="", help="a comma list of worlds (default: every world)"
    )
    parser.add_argument(
        "--stationary",
        action="store_true",
        help=f"the stationary worlds: {','.join(W.STATIONARY)}",
    )
    parser.add_argument(
        "--change", action="store_true", help=f"the change worlds: {','.join(W.CHANGE)}"
    )
    parser.add_argument(
        "--operator",
        action="store_true",
        help="an operator lifts each seatbelt halt at once (by default nobody does)",
    )
    parser.add_argument("--policies", default=",".join(POLICIES), help="'vw': all gammas")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--delay", type=int, default=200)
    parser.add_argument("--refit", type=int, default=500)
    parser.add_argument("--vw-max-actions", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--out", default="learning", help="the results' name: bench/results/NAME.json"
    )
    parser.add_argument(
        "--reuse",
        default="",
        metavar="NAME",
        help="take the baselines' runs from bench/results/NAME.json (same decisions, delay and"
        " refit) instead of running them again; Flywheel always runs",
    )
    parser.add_argument(
        "--learn",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [learn] setting of Flywheel's spec (JSON value), e.g. explore_floor=0.01",
    )
    args = parser.parse_args()
    args.learn = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.learn)}
    picked = [w for w in args.worlds.split(",") if w]
    picked += [*(W.STATIONARY if args.stationary else ()), *(W.CHANGE if args.change else ())]
    world_names = list(dict.fromkeys(picked)) or list(W.WORLDS)
    policies: list[str] = []
    for p in args.policies.split(","):
        policies += (
            list(VW_POLICIES)
            if p == "vw"
            else list(VW_ONLINE)
            if p == "vw_online"
            else [p]
            if p
            else []
        )
    unknown = [p for p in policies if p not in POLICIES] + [
        w for w in world_names if w not in W.WORLDS
    ]
    if unknown:
        parser.error(f"unknown world or policy: {', '.join(unknown)}")
    tasks = [
        (w, seed, p, args) for w in world_names for seed in range(args.seeds) for p in policies
    ]
    reused = _reused(args) if args.reuse else {}
    tasks = [t for t in tasks if t[2] == "flywheel" or (t[0], t[1], t[2]) not in reused]
    # slowest first, so the pool stays busy to the end
    tasks.sort(
        key=lambda t: (t[2] in ("flywheel", *VW_POLICIES, *VW_ONLINE), t[0] == "large"),
        reverse=True,
    )
    started = time.perf_counter()
    runs = run_all(_run, tasks, args.jobs)
    runs += [r for key, r in reused.items() if key[0] in world_names and key[2] in policies]
    results: dict[str, Any] = {
        "settings": {
            "decisions": args.decisions,
            "seeds": args.seeds,
            "delay": args.delay,
            "refit": args.refit,
            "seconds_per_decision": W.SECONDS_PER_DECISION,
            "vw_max_actions": args.vw_max_actions,
            "jobs": args.jobs,
            "operator": args.operator,
            "learn_overrides": args.learn,
            "total_wall_s": round(time.perf_counter() - started, 1),
        },
        "notes": NOTES,
        "worlds": {},
        "runs": runs,
    }
    for name in world_names:
        world = W.make(name, args.decisions)
        summary = summarise(world, [r for r in runs if r["world"] == name], policies)
        results["worlds"][name] = summary
        print_table(name, summary)
    print_overview(results["worlds"])
    report(args.out, results)


if __name__ == "__main__":
    main()
