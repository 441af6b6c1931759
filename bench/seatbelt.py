"""Seatbelt benchmark: does the seatbelt stop bad data and bad playbooks, and at what cost?

Flywheel runs through its public SDK on a simulated world (the learning benchmark's worlds
and protocol: a fresh DuckDB file per run, a simulated clock of one decision a minute, each
reward visible ``--delay`` decisions late, ``learn(as_of=now)`` every ``--refit`` decisions),
and faults are injected from decision ``T`` (``--fault-at`` of the run) on:

- ``swap``: from ``T`` the product serves locally from the current playbook (a
  :class:`~flywheel.playbook.Decider` on ``wheel.playbook``) and records each decision with
  ``wheel.log(..., playbook=, propensity=)`` once its reward is known; 20% of those rows carry
  two tags of one knob exchanged (the knob's most and least served levels under the playbook
  at ``T``), while the reward is that of what was really served.
- ``bug``: from ``T`` an instrumentation bug reports success (1) for every decision served
  with one knob level (the level of ``--bug-knob`` least often in the best combinations, or
  ``--bug-level``; ``--bug-levels a,b,c`` runs the seeds once for each level); regret still
  counts the true reward. The criterion is per traffic: the bug is caught when the run
  halts (by any check) at or before the first cycle in which the level has at least
  ``--bug-rows`` (60) forced results visible since ``T`` (``caught_by_60``).
- ``bug_off``: the same bug with the seatbelt switched off (``"seatbelt": {"enabled":
  false}``).
- ``inject``: a bad deploy. At the refit at ``T``, instead of the learn cycle,
  ``wheel.rollback(1)`` serves the first, barely trained playbook again (so the version it
  replaces was live for a whole refit interval); ``wheel.check()`` runs every
  ``--check-every`` decisions and ``learn`` runs again from the next refit on. Is the
  injected version rolled back by the guard, and how soon?
- ``inject_after``: the same, but right after the learn cycle at ``T`` (the version it
  replaces was never served).
- ``clean``: no fault; when the seatbelt halts, ``wheel.resume("bench")`` lets the run go on
  and the halt is counted as a false alarm (reported per 200 learn cycles too).

A halt before ``T`` is a false alarm in every scenario and is resumed at once; after ``T``
nobody resumes.

Every scenario of a seed faces the same contexts and reward draws as the learning benchmark's
runs of that seed (common random numbers), and the wheel gets the same serving seed, so the
scenarios of one seed only part at ``T``.

Run: ``.venv/bin/python bench/seatbelt.py`` (the default figures, about 7 minutes on 2
cores), the bug per level: ``.venv/bin/python bench/seatbelt.py --scenarios bug
--bug-levels short,medium,long``, or a smoke run: ``.venv/bin/python bench/seatbelt.py
--quick``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import worlds as W  # type: ignore[import-not-found]
from _common import report, run_all  # type: ignore[import-not-found]
from learning import T0, _key, draws  # type: ignore[import-not-found]

import flywheel
from flywheel.playbook import Decider, Playbook
from flywheel.turn import update_due

SCENARIOS = ("clean", "swap", "bug", "bug_off", "inject", "inject_after")
SWAP_SHARE = 0.2
LOCAL_ID = "00000000-0000-4000-8000-000000000000"
NOTES = [
    "Protocol as in bench/learning.py: decision t at T0 + 60 t seconds, its reward visible"
    " (signalled, or logged with wheel.log) at decision t + delay, learn(as_of=now) every"
    " refit decisions. A 'cycle after T' is a learn call at a refit later than T; the first"
    " one already sees refit - delay decisions of faulty data.",
    "A cycle counts as halted when learn halted in it (a failing data check) or the guard"
    " rolled back in it; cycles run while already halted are counted apart.",
    "Regret: sum over decisions of the best allowed combination's true P minus the true P"
    " of what was served (the faults change what is reported, never what is earned).",
    "Clean runs resume at once after a halt (each halt is a false alarm), and so do the"
    " fault scenarios before T; after T nobody resumes. The clean regret of the regret"
    " comparison is that of the same seeds' clean runs.",
    "Simulated minutes: one decision a minute, so decisions and minutes are the same number.",
    "Bug, per traffic: for each learn cycle after T, rows = the decisions served with the"
    " bugged level, decided at or after T and visible by the cycle (decision index <= the"
    " cycle's - delay, as signalled). The deadline is the first cycle with rows >= bug_rows"
    " (60); caught_by_60: the run halted (any check, or the guard's rollback) after T and at"
    " or before the deadline. A run whose level never reaches bug_rows has no deadline:"
    " caught if it halted at all after T (reached_60 false says so).",
    "Clean runs: halts per 200 learn cycles = 200 x (cycles halted or rolled back) / cycles.",
]


# --- the truth of a playbook ---------------------------------------------------------------------


def _grid_of_rows(world: W.World) -> np.ndarray:
    """The world's grid index of every row of the spec's space."""
    space = world.parsed.space
    return np.array([world.grid_index(space.params(r)) for r in range(len(space))], np.int64)


def true_value(world: W.World, playbook: Playbook | None, rows_grid: np.ndarray) -> float:
    """Expected true reward per decision of a playbook's serving policy (context law)."""
    if playbook is None:
        return float(world.uniform_rate())
    value = 0.0
    for s, context in enumerate(world.segments):
        table = playbook.segment(context)
        p = world.probs[0, s, rows_grid[table.rows]]
        value += world.segment_weights[s] * float(table.probs @ p)
    return value


def served_shares(world: W.World, playbook: Playbook, knob: str) -> dict[Any, float]:
    """How often the playbook serves each level of a knob (context law)."""
    space = world.parsed.space
    j = [k.name for k in world.parsed.knobs].index(knob)
    values = world.knobs[knob]
    share = np.zeros(len(values))
    for s, context in enumerate(world.segments):
        table = playbook.segment(context)
        codes = space.codes[table.rows, j]
        share += world.segment_weights[s] * np.bincount(codes, table.probs, len(values))
    return dict(zip(values, share.tolist(), strict=True))


def bug_level(world: W.World, knob: str) -> Any:
    """The level of ``knob`` least often in the segments' best combinations (weighted): the
    level whose fake successes cost the most."""
    j = list(world.knobs).index(knob)
    weight = np.zeros(len(world.knobs[knob]))
    for s, g in enumerate(world.best_grid[0]):
        weight[world.grid_codes[g, j]] += world.segment_weights[s]
    # among the levels never best, the one with the worst mean true P under uniform play
    means = [
        np.mean([world.probs[0, s, g[world.grid_codes[g, j] == lv]].mean()
                 for s, g in enumerate(world.allowed_grid)])
        for lv in range(len(weight))
    ]  # fmt: skip
    order = sorted(range(len(weight)), key=lambda lv: (weight[lv], means[lv]))
    return world.knobs[knob][order[0]]


# --- one run -------------------------------------------------------------------------------------


def _outcome(result: Any) -> tuple[str, list[dict[str, str]]]:
    """A learn or check result as one word and its failed checks (name and summary)."""
    failed = [
        {"check": c.name, "summary": c.summary}
        for c in result.checks
        if not c.ok and (c.critical or c.name == "ope")
    ]
    if result.rolled_back and not failed:  # the guard's rollback (a data check's comes halted)
        return "rolled_back", [{"check": "negative_loop", "summary": result.reason}]
    if result.halted and result.reason.startswith("halted since"):
        return "still_halted", []
    if result.halted:
        return "halted", failed
    if result.published:
        return "published", failed
    if any(f["check"] == "ope" for f in failed):
        return "rejected", failed
    return "skipped", failed


def revision() -> dict[str, Any]:
    """The library's commit, and whether its sources differ from it (the figures' code)."""
    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], check=False, cwd=root, capture_output=True, text=True
            )
        except OSError:
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "src_modified": bool(git("status", "--porcelain", "src")),
    }


def fault_point(args: argparse.Namespace) -> int:
    """Decision T: the refit nearest to ``--fault-at`` of the run."""
    refit: int = args.refit
    decisions: int = args.decisions
    share: float = args.fault_at
    return refit * round(share * decisions / refit)


def _level_of(world: W.World, knob: str, name: str) -> Any:
    """The knob's level whose text is ``name`` (levels may be numbers)."""
    found = [v for v in world.knobs[knob] if str(v) == name]
    if not found:
        raise SystemExit(f"{knob} has no level {name!r}: {world.knobs[knob]}")
    return found[0]


def run(
    world_name: str,
    seed: int,
    scenario: str,
    args: argparse.Namespace,
    level_name: str | None = None,
) -> dict[str, Any]:
    world = W.make(world_name, args.decisions)
    segs, uniforms = draws(world, seed, args.decisions)
    n, delay, refit = args.decisions, args.delay, args.refit
    fault_at = fault_point(args)  # at a refit
    faulty = scenario != "clean"
    phases = np.array([world.phase(t) for t in range(n)])
    rng = np.random.default_rng(_key("policy", world.name, seed, "flywheel"))
    fault_rng = np.random.default_rng(_key("fault", world.name, seed, scenario))
    probs = world.probs
    knobs = list(world.knobs)
    rows_grid = _grid_of_rows(world)
    played = np.empty(n, dtype=np.int64)
    spec = dict(world.spec)
    if scenario == "bug_off":
        spec["seatbelt"] = {"enabled": False}
    bug_knob = args.bug_knob if args.bug_knob in world.knobs else knobs[0]
    level_name = level_name if level_name is not None else args.bug_level
    level = (
        bug_level(world, bug_knob)
        if level_name is None
        else _level_of(world, bug_knob, str(level_name))
    )
    out: dict[str, Any] = {"world": world_name, "seed": seed, "scenario": scenario}
    cycles: list[dict[str, Any]] = []
    checks_fired: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        now = T0
        wheel = flywheel.open(
            spec,
            store=f"duckdb:///{Path(folder) / 'seatbelt.duckdb'}",
            clock=lambda: now,
            refresh=0,
            seed=int(rng.integers(2**31)),
            background=False,  # online updates below, every online_rows results
        )
        learn = wheel.spec.learn
        unlearned = seen = 0
        local = Decider(wheel.spec, random.Random(int(fault_rng.integers(2**31))))
        pending: dict[int, Any] = {}
        swap: tuple[str, Any, Any] | None = None
        injected: dict[str, Any] | None = None
        bugged: list[tuple[int, float]] = []  # (decision, true P) of each decision the bug hit

        def record(t: int, kind: str, result: Any, judged: Playbook | None) -> None:
            word, failed = _outcome(result)
            entry = {"t": t, "call": kind, "outcome": word, "version": result.version}
            if failed:
                entry["failed"] = failed
            if word in ("halted", "rolled_back"):
                entry["reason"] = result.reason
            if word == "rolled_back":  # was the version rolled back truly worse?
                entry["true_value_judged"] = round(true_value(world, judged, rows_grid), 4)
                entry["true_value_restored"] = round(
                    true_value(world, wheel.playbook, rows_grid), 4
                )
            if faulty and t > fault_at and result.checks:  # every verdict, for diagnosis
                entry["checks"] = {c.name: c.summary for c in result.checks}
                srm = next((c for c in result.checks if c.name == "srm"), None)
                if srm is not None and srm.detail:
                    entry["srm_p"] = {
                        k: v["p_value"] for k, v in srm.detail.items() if isinstance(v, dict)
                    }
                    entry["mislogged_rows"] = srm.detail.get("mislogged_rows", 0)
            if kind == "learn":
                cycles.append(entry)
            elif word != "skipped":
                checks_fired.append(entry)
            # a halt on clean data (any in a clean run, before T in the others) is a false
            # alarm: the operator resumes; after T nobody does
            if word in ("halted", "rolled_back") and (scenario == "clean" or t <= fault_at):
                wheel.resume("bench")

        for t in range(n + 1):
            now = T0 + W.SECONDS_PER_DECISION * t
            s = t - delay
            if s >= 0:  # the reward of decision s becomes visible now
                item = pending.pop(s)
                if isinstance(item, tuple):  # served locally: the whole row is logged now
                    context, params, version, propensity, reward = item
                    wheel.log(
                        context=context,
                        params=params,
                        results={"converted": reward},
                        ts=T0 + W.SECONDS_PER_DECISION * s,
                        playbook=version,
                        propensity=propensity,
                    )
                else:
                    wheel.signal(item["id"], "converted", item["reward"], ts=now)
                unlearned += 1
                seen += 1
                if learn.online and update_due(unlearned, seen, learn):  # the SDK's thread
                    unlearned = 0
                    wheel.update()
            inject_now = scenario.startswith("inject") and t == fault_at
            learn_now = t > 0 and (t % refit == 0 or t == n)
            if learn_now and not (inject_now and scenario == "inject"):
                judged = wheel.playbook
                result = wheel.learn(as_of=now, seed=int(rng.integers(2**31)))
                record(t, "learn", result, judged)
                local.use(wheel.playbook)
            elif injected and args.check_every and t % args.check_every == 0:
                judged = wheel.playbook
                found = wheel.check(as_of=now)
                if found is not None:
                    record(t, "check", found, judged)
                    local.use(wheel.playbook)
            if t == n:
                break
            if inject_now:  # a bad deploy: the first, barely trained version is served again
                before = wheel.playbook
                restored = wheel.rollback(1)
                injected = {
                    "t": t,
                    "replaced_version": None if before is None else before.version,
                    "served_as": restored.version,
                    "true_value_injected": round(true_value(world, restored, rows_grid), 4),
                    "true_value_replaced": round(true_value(world, before, rows_grid), 4),
                }
            seg = int(segs[t])
            context = world.segments[seg]
            if scenario == "swap" and t >= fault_at:
                if swap is None:
                    assert wheel.playbook is not None
                    shares = served_shares(world, wheel.playbook, args.swap_knob)
                    ranked = sorted(shares, key=lambda v: -shares[v])
                    swap = (args.swap_knob, ranked[0], ranked[-1])
                    out["swap"] = {
                        "knob": swap[0],
                        "values": [swap[1], swap[2]],
                        "served_shares": {str(k): round(v, 4) for k, v in shares.items()},
                    }
                d = local.decide(LOCAL_ID, context)
                params = {k: d.params[k] for k in knobs}
                g = world.grid_index(params)
                reward = int(uniforms[t] < probs[phases[t], seg, g])
                logged = dict(params)
                if fault_rng.random() < SWAP_SHARE:
                    k, a, b = swap
                    logged[k] = b if params[k] == a else a if params[k] == b else params[k]
                assert d.playbook is not None
                pending[t] = (dict(context), logged, d.playbook, d.propensity, reward)
            else:
                d = wheel.decide(context)
                g = world.grid_index({k: d.params[k] for k in knobs})
                reward = int(uniforms[t] < probs[phases[t], seg, g])
                reported = reward
                if scenario in ("bug", "bug_off") and t >= fault_at and d.params[bug_knob] == level:
                    reported = 1
                    bugged.append((t, float(probs[phases[t], seg, g])))
                pending[t] = {"id": d.id, "reward": reported}
            played[t] = g
        final_value = true_value(world, wheel.playbook, rows_grid)
        wheel.close()
        wall = time.perf_counter() - started
    regret = world.best_prob[phases, segs] - probs[phases, segs, played]
    out.update(
        fault_at=fault_at if faulty else None,
        cumulative_regret=float(regret.sum()),
        regret_after_fault=float(regret[fault_at:].sum()),
        final_true_value=round(final_value, 4),
        best_rate=round(world.best_rate(), 4),
        cycles=cycles,
        check_calls=checks_fired,
        wall_s=round(wall, 1),
    )
    if scenario in ("bug", "bug_off"):
        out["bug"] = {
            "knob": bug_knob,
            "level": level,
            "first_cycle": first_cycle(bugged, args),
            "per_traffic": per_traffic(bugged, cycles, fault_at, args),
        }
    if injected is not None:
        out["injected"] = injected
    return out


def first_cycle(bugged: list[tuple[int, float]], args: argparse.Namespace) -> dict[str, Any]:
    """What the first learn cycle after T can know of the bug: the bugged level's rows whose
    (forced) result it sees, and the chance that the world itself, with no bug, gives all of
    them success (the product of their true P). That chance bounds every test: one that
    alarms on all-successes with a false-alarm rate of at most ``a`` catches the bug with a
    probability of at most ``a`` divided by it (Neyman-Pearson: seeing only these rows, no
    test does better), even knowing the world and which level to watch."""
    visible = fault_point(args) + args.refit - args.delay  # the last decision it sees
    chances = [p for t, p in bugged if t <= visible]
    chance = float(np.prod(chances))
    return {
        "rows": len(chances),
        "all_success_chance": chance,
        "best_detection_at_1pct": round(min(1.0, 0.01 / chance), 4),
    }


def per_traffic(
    bugged: list[tuple[int, float]],
    cycles: list[dict[str, Any]],
    fault_at: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The bug caught per traffic: per learn cycle after T, the bugged level's rows (decided
    at or after T) whose forced result it sees; the first cycle where they reach
    ``--bug-rows``; whether the run halted (any check) at or before it."""
    decided = np.array([t for t, _ in bugged], dtype=np.int64)
    need: int = args.bug_rows
    after = [c for c in cycles if c["t"] > fault_at]
    rows = [int((decided <= c["t"] - args.delay).sum()) for c in after]
    reached = next((i for i, n in enumerate(rows) if n >= need), None)
    halt = next((i for i, c in enumerate(after) if c["outcome"] in ("halted", "rolled_back")), None)
    caught = halt is not None and (reached is None or halt <= reached)
    return {
        "need": need,
        "reached_60": reached is not None,
        "cycle_60": None if reached is None else reached + 1,  # 1: the first cycle after T
        "t_60": None if reached is None else after[reached]["t"],
        "rows_at_60": None if reached is None else rows[reached],
        "halted_cycle": None if halt is None else halt + 1,
        "halted_t": None if halt is None else after[halt]["t"],
        "rows_at_halt": None if halt is None else rows[halt],
        "caught_by_60": caught,
        "rows_per_cycle": rows,
    }


def _run(task: tuple[str, int, str, argparse.Namespace, str | None]) -> dict[str, Any]:
    return run(*task)


# --- the report ----------------------------------------------------------------------------------


def _after(run_: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in run_["cycles"] if c["t"] > run_["fault_at"]]


def detection(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Cycles after T until the first halt, which check fired, publishes from faulty data."""
    per_run = []
    for r in runs:
        after = _after(r)
        first = next((i for i, c in enumerate(after) if c["outcome"] in ("halted",)), None)
        checks = [] if first is None else [f["check"] for f in after[first].get("failed", [])]
        summaries = [] if first is None else [f["summary"] for f in after[first].get("failed", [])]
        published = [c["t"] for c in after if c["outcome"] == "published"]
        per_run.append(
            {
                "seed": r["seed"],
                "cycles_to_halt": None if first is None else first + 1,
                "halted_at": None if first is None else after[first]["t"],
                "checks": checks,
                "summaries": summaries,
                "published_after_fault": published,
                "halts_before_fault": sum(
                    c["outcome"] in ("halted", "rolled_back")
                    for c in r["cycles"]
                    if c["t"] <= r["fault_at"]
                ),
                **({"swap": r["swap"]} if "swap" in r else {}),
                **({"bug": r["bug"]} if "bug" in r else {}),
            }
        )
    found = [p["cycles_to_halt"] for p in per_run if p["cycles_to_halt"] is not None]
    bounds = [r["bug"]["first_cycle"] for r in runs if "bug" in r]
    traffic = [r["bug"]["per_traffic"] for r in runs if "bug" in r]
    return {
        "runs": len(runs),
        "halted": len(found),
        **(
            {  # the per-traffic criterion (see per_traffic)
                "level": str(runs[0]["bug"]["level"]),
                "caught_by_60": sum(t["caught_by_60"] for t in traffic),
                "reached_60": sum(t["reached_60"] for t in traffic),
                "cycles_to_60": [t["cycle_60"] for t in traffic],
                "halted_cycles": [t["halted_cycle"] for t in traffic],
            }
            if traffic
            else {}
        ),
        "cycles_to_halt": sorted(found),
        "within_one_cycle": sum(c == 1 for c in found),
        **(
            {  # the most runs any test could catch in the first cycle (see first_cycle)
                "first_cycle_rows": [b["rows"] for b in bounds],
                "first_cycle_best_detection_at_1pct": round(
                    sum(b["best_detection_at_1pct"] for b in bounds), 2
                ),
            }
            if bounds
            else {}
        ),
        "checks": dict(Counter(c for p in per_run for c in p["checks"])),
        "runs_publishing_after_fault": sum(bool(p["published_after_fault"]) for p in per_run),
        "per_run": per_run,
    }


def rollback(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Was the injected version rolled back by the guard, by which call, how soon?"""
    per_run = []
    for r in runs:
        inj = r["injected"]
        events = sorted(
            (e for e in [*r["cycles"], *r["check_calls"]] if e["t"] > inj["t"]),
            key=lambda e: e["t"],
        )
        first: dict[str, Any] = next(
            (e for e in events if e["outcome"] in ("rolled_back", "published")), {}
        )
        rolled = first.get("outcome") == "rolled_back"
        per_run.append(
            {
                "seed": r["seed"],
                **inj,
                "rolled_back": rolled,
                "by": first.get("call"),
                "replaced_by_learning": first.get("outcome") == "published",
                "decisions_to_rollback": (first["t"] - inj["t"]) if rolled else None,
                "reason": first.get("reason") if rolled else None,
                "other_halts": [
                    e for e in events if e["outcome"] == "halted" and e["t"] > inj["t"]
                ][:3],
            }
        )
    times = [p["decisions_to_rollback"] for p in per_run if p["rolled_back"]]
    return {
        "runs": len(runs),
        "rolled_back": len(times),
        "replaced_by_learning": sum(p["replaced_by_learning"] for p in per_run),
        "decisions_to_rollback": sorted(times),
        "median_decisions": float(np.median(times)) if times else None,
        "per_run": per_run,
    }


def false_alarms(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cycles = [c for r in runs for c in r["cycles"]]
    alarms = [c for c in cycles if c["outcome"] in ("halted", "rolled_back")]
    fired = Counter(f["check"] for c in alarms for f in c.get("failed", []))
    return {
        "runs": len(runs),
        "cycles": len(cycles),
        "halted_or_rolled_back": len(alarms),
        "share": round(len(alarms) / max(len(cycles), 1), 4),
        "per_200_cycles": round(200 * len(alarms) / max(len(cycles), 1), 2),
        "runs_with_an_alarm": sum(
            any(c["outcome"] in ("halted", "rolled_back") for c in r["cycles"]) for r in runs
        ),
        "checks": dict(fired),
        "rejected_by_ope": sum(c["outcome"] == "rejected" for c in cycles),
        "rollbacks_of_truly_worse_versions": sum(
            bool(c["true_value_judged"] < c["true_value_restored"])
            for c in alarms
            if c["outcome"] == "rolled_back"
        ),
        "alarms": [
            {
                "seed": r["seed"],
                "t": c["t"],
                "failed": c.get("failed", []),
                **{k: v for k, v in c.items() if k.startswith("true_value")},
            }
            for r in runs
            for c in r["cycles"]
            if c["outcome"] in ("halted", "rolled_back")
        ],
    }


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "mean": round(float(np.mean(values)), 1),
        "min": round(float(np.min(values)), 1),
        "max": round(float(np.max(values)), 1),
        "per_seed": [round(float(v), 1) for v in values],
    }


def regret(runs: list[dict[str, Any]], world: str) -> dict[str, Any]:
    by = {
        s: {r["seed"]: r for r in runs if r["scenario"] == s and r["world"] == world}
        for s in ("clean", "bug", "bug_off")
    }
    seeds = sorted(set(by["clean"]) & set(by["bug"]) & set(by["bug_off"]))
    if not seeds:
        return {}
    table = {s: _stats([by[s][k]["cumulative_regret"] for k in seeds]) for s in by}
    clean = table["clean"]["mean"]
    return {
        "seeds": seeds,
        "cumulative_regret": table,
        "final_true_value": {
            s: round(float(np.mean([by[s][k]["final_true_value"] for k in seeds])), 4) for s in by
        },
        "ratio_toxic_seatbelt_vs_clean": round(table["bug"]["mean"] / clean, 3),
        "ratio_toxic_no_seatbelt_vs_clean": round(table["bug_off"]["mean"] / clean, 3),
    }


def print_table(results: dict[str, Any]) -> None:
    print()
    for world, r in results["worlds"].items():
        print(f"== {world}")
        for name in ("swap", "bug"):
            d = r.get(name)
            if d:
                print(
                    f"{name:<8} halted {d['halted']}/{d['runs']}, cycles to halt"
                    f" {d['cycles_to_halt']}, checks {d['checks']}, runs publishing after"
                    f" the fault {d['runs_publishing_after_fault']}"
                )
                if "first_cycle_rows" in d:
                    print(
                        f"{'':<8} bugged rows in the first cycle {d['first_cycle_rows']}; any"
                        " test alarming at 1% catches at most"
                        f" {d['first_cycle_best_detection_at_1pct']:.1f} runs in it"
                    )
                if "caught_by_60" in d:
                    _print_traffic(d)
        for level, d in r.get("bug_by_level", {}).items():
            print(
                f"bug {level:<4} halted {d['halted']}/{d['runs']}, cycles to halt"
                f" {d['cycles_to_halt']}, checks {d['checks']}"
            )
            _print_traffic(d)
        for name in ("inject", "inject_after"):
            d = r.get(name)
            if d:
                print(
                    f"{name:<8} rolled back {d['rolled_back']}/{d['runs']}, decisions to"
                    f" rollback {d['decisions_to_rollback']}, replaced by learning"
                    f" {d['replaced_by_learning']}"
                )
        g = r.get("regret")
        if g:
            c = g["cumulative_regret"]
            print(
                f"regret   clean {c['clean']['mean']:.0f}, toxic ({g['bug_level']})+seatbelt"
                f" {c['bug']['mean']:.0f}"
                f" ({g['ratio_toxic_seatbelt_vs_clean']:.2f}x), toxic no seatbelt"
                f" {c['bug_off']['mean']:.0f} ({g['ratio_toxic_no_seatbelt_vs_clean']:.2f}x)"
            )
        f = r.get("false_alarms")
        if f:
            print(
                f"clean    {f['halted_or_rolled_back']}/{f['cycles']} cycles halted or rolled"
                f" back ({f['share']:.1%}, {f['per_200_cycles']:.2f} per 200 learn cycles),"
                f" checks {f['checks']}, rollbacks of truly worse"
                f" versions {f['rollbacks_of_truly_worse_versions']}, ope rejections"
                f" {f['rejected_by_ope']}"
            )


def _print_traffic(d: dict[str, Any]) -> None:
    """The per-traffic criterion of one bugged level."""
    never = d["runs"] - d["reached_60"]
    print(
        f"{'':<8} level {d['level']}: caught in the first cycle with >= 60 results:"
        f" {d['caught_by_60']} of {d['runs']}"
        + (f" ({never} never reached 60 results)" if never else "")
        + f"; cycle with 60 {d['cycles_to_60']}, halted in {d['halted_cycles']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", default="factorial", help="faults: the first world only")
    parser.add_argument(
        "--clean-worlds", default="rare,flat_marginals", help="more worlds for false alarms"
    )
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the fault scenarios")
    parser.add_argument("--clean-seeds", type=int, default=20, help="seeds of the clean runs")
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--delay", type=int, default=200)
    parser.add_argument("--refit", type=int, default=500)
    parser.add_argument("--fault-at", type=float, default=0.4, help="share of the run")
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--swap-knob", default="tone")
    parser.add_argument("--bug-knob", default="length")
    parser.add_argument(
        "--bug-level", default=None, help="the bugged level (default: the worst, never best)"
    )
    parser.add_argument(
        "--bug-levels",
        default="",
        help="a comma list of bugged levels: the bug scenarios run every seed for each",
    )
    parser.add_argument(
        "--bug-rows",
        type=int,
        default=60,
        help="the per-traffic criterion: caught by the first cycle with this many results",
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--out", default="seatbelt", help="the results' name: bench/results/NAME.json"
    )
    parser.add_argument("--quick", action="store_true", help="2 seeds, 6,000 decisions")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.clean_seeds, args.decisions = 2, 2, 6_000
    scenarios = [s for s in args.scenarios.split(",") if s]
    worlds = [w for w in args.worlds.split(",") if w]
    clean_worlds = [w for w in args.clean_worlds.split(",") if w and w not in worlds]
    unknown = [s for s in scenarios if s not in SCENARIOS] + [
        w for w in [*worlds, *clean_worlds] if w not in W.WORLDS
    ]
    if unknown:
        parser.error(f"unknown scenario or world: {', '.join(unknown)}")
    levels: list[str | None] = [v for v in args.bug_levels.split(",") if v] or [args.bug_level]
    tasks: list[tuple[str, int, str, argparse.Namespace, str | None]] = []
    for w in worlds:
        for s in scenarios:
            seeds = args.clean_seeds if s == "clean" else args.seeds
            for lv in levels if s in ("bug", "bug_off") else [None]:
                tasks += [(w, seed, s, args, lv) for seed in range(seeds)]
    if "clean" in scenarios:
        tasks += [
            (w, seed, "clean", args, None) for w in clean_worlds for seed in range(args.clean_seeds)
        ]
    code = revision()
    started = time.perf_counter()
    runs = run_all(_run, tasks, args.jobs)
    results: dict[str, Any] = {
        "settings": {
            "decisions": args.decisions,
            "fault_seeds": args.seeds,
            "clean_seeds": args.clean_seeds,
            "delay": args.delay,
            "refit": args.refit,
            "fault_at": fault_point(args),
            "bug_levels": levels,
            "bug_rows": args.bug_rows,
            "check_every": args.check_every,
            "swap_share": SWAP_SHARE,
            "jobs": args.jobs,
            "total_wall_s": round(time.perf_counter() - started, 1),
            **code,
            "run_wall_s": round(float(np.mean([r["wall_s"] for r in runs])), 1),
        },
        "notes": NOTES,
        "worlds": {},
    }
    for w in [*worlds, *clean_worlds]:
        mine = [r for r in runs if r["world"] == w]
        if not mine:  # a clean world while the clean scenario does not run
            continue
        out: dict[str, Any] = {}
        for name in ("swap", "bug"):
            picked = [r for r in mine if r["scenario"] == name]
            by_level: dict[str, list[dict[str, Any]]] = {}
            for r in picked if name == "bug" else []:
                by_level.setdefault(str(r["bug"]["level"]), []).append(r)
            if len(by_level) > 1:  # --bug-levels: one detection a level
                out["bug_by_level"] = {lv: detection(rs) for lv, rs in by_level.items()}
            elif picked:
                out[name] = detection(picked)
        for name in ("inject", "inject_after"):
            picked = [r for r in mine if r["scenario"] == name]
            if picked:
                out[name] = rollback(picked)
        # the regret comparison pairs seeds: with several bugged levels, the first one's runs
        level = next((str(r["bug"]["level"]) for r in mine if "bug" in r), None)
        paired = [r for r in mine if "bug" not in r or str(r["bug"]["level"]) == level]
        out["regret"] = regret(paired, w)
        if out["regret"]:
            out["regret"]["bug_level"] = level
        clean = [r for r in mine if r["scenario"] == "clean"]
        if clean:
            out["false_alarms"] = false_alarms(clean)
        out["runs"] = [
            {k: v for k, v in r.items() if k not in ("world",)}
            for r in sorted(mine, key=lambda r: (r["scenario"], r["seed"]))
        ]
        results["worlds"][w] = out
    print_table(results)
    report(args.out, results)


if __name__ == "__main__":
    main()
