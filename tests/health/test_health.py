"""health() on simulated products whose truths are known by construction.

Each scenario runs decisions through the SDK on a clock the test moves, results arriving
after delays it draws, and learn cycles it calls at known moments. The simulation keeps its
own record of every decision (when it was decided, when its result arrived, the true
expected reward of what was served), so the figures health() reports are checked against
what actually happened, not against health()'s own arithmetic. Tolerances are stated beside
each assertion.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import flywheel
from flywheel.health import rate as rate_module
from flywheel.health.rate import learning_rate
from tests.conftest import DAY, HOUR, T0, Clock

COMBOS = [(a, b) for a in ("x", "y") for b in ("p", "q")]


def spec(every: str | None = None) -> dict[str, Any]:
    learn: dict[str, Any] = {"online": False, "half_life": "off"}
    if every:
        learn["every"] = every
    return {
        "name": "health",
        "knobs": {"a": ["x", "y"], "b": ["p", "q"]},
        "context": {"segment": ["s1", "s2"]},
        "signals": {"completed": "max"},
        "reward": {"formula": "completed", "window": "2d"},
        "learn": learn,
    }


@dataclass
class Record:
    """What the simulation knows of one decision."""

    ts: float
    signal: float | None  # when its result arrived (None: never)
    value: float  # the true expected reward of what was served
    version: int | None


@dataclass
class World:
    """Each decision: a unit, a segment; its result (completed 0/1) arrives after an
    exponential delay with mean ``delay`` with chance ``answer``."""

    means: Callable[[str, str, tuple[str, str]], float]
    units: int = 300
    delay: float = 2 * HOUR
    answer: float = 0.8
    seed: int = 1
    records: list[Record] = field(default_factory=list)
    cuts: list[float] = field(default_factory=list)


def simulate(
    wheel: flywheel.Wheel,
    clock: Clock,
    world: World,
    *,
    days: float,
    every: float,
    learn_days: tuple[float, ...],
    until_rate: Callable[[float], float] = lambda day: 1.0,
) -> None:
    """Decide every ``every`` seconds (scaled by ``until_rate(day)``: fewer decisions where
    it is below 1) for ``days``, learning at the start of each day in ``learn_days``."""
    rng = np.random.default_rng(world.seed)
    pending: list[tuple[float, int, str, float]] = []  # (ts, index, decision id, value)
    learn_at = [T0 + d * DAY for d in learn_days]
    t = T0
    while t < T0 + days * DAY:
        while pending and pending[0][0] <= t:
            ts, _, ident, value = heapq.heappop(pending)
            clock.now = ts
            wheel.signal(ident, "completed", value, ts=ts)
        if learn_at and learn_at[0] <= t:
            clock.now = learn_at.pop(0)
            result = wheel.learn(as_of=clock.now)
            if result.published:
                world.cuts.append(clock.now)
        clock.now = t
        unit = f"user-{int(rng.integers(world.units))}"
        segment = "s1" if rng.random() < 0.5 else "s2"
        d = wheel.decide({"segment": segment}, unit=unit)
        combo = (d.params["a"], d.params["b"])
        mean = world.means(unit, segment, combo)
        arrives = rng.random() < world.answer
        at = t + float(rng.exponential(world.delay)) if arrives else None
        world.records.append(Record(t, at, mean, d.playbook))
        if at is not None:
            done = float(rng.random() < mean)
            heapq.heappush(pending, (at, len(world.records), d.id, done))
        day = (t - T0) / DAY
        t += every / max(until_rate(day), 1e-9)
    clock.now = t
    wheel.flush()


def quantiles(values: list[float]) -> tuple[float, float]:
    return float(np.quantile(values, 0.5)), float(np.quantile(values, 0.9))


def shared_best(unit: str, segment: str, combo: tuple[str, str]) -> float:
    best = ("y", "q") if segment == "s1" else ("x", "p")
    return 0.7 if combo == best else 0.3


@pytest.fixture
def turned(each_store: str) -> Iterator[tuple[flywheel.Wheel, Clock, World]]:
    """Eight days, a decision every 2 minutes, a learn cycle at the start of days 1–6 (none
    after: the last two days decisions drop to a quarter, with no cycle)."""
    clock = Clock()
    world = World(shared_best)
    wheel = flywheel.open(spec(every="1d"), store=each_store, clock=clock, background=False, seed=3)
    simulate(
        wheel,
        clock,
        world,
        days=8,
        every=120,
        learn_days=(1, 2, 3, 4, 5, 6),
        until_rate=lambda day: 0.25 if day >= 6 else 1.0,
    )
    yield wheel, clock, world
    wheel.close()


def test_transitions_match_what_happened(turned: tuple[flywheel.Wheel, Clock, World]) -> None:
    wheel, clock, world = turned
    h = wheel.health(window="9d")
    end = clock.now
    records = [r for r in world.records if r.ts <= end]
    assert h.decisions == len(records)
    steps = {t.name: t for t in h.stages.transitions}

    # decided → first signal: the simulation's own delays (the same sample, so within 1%),
    # and the exponential's theoretical quantiles (2 h × ln 2, 2 h × ln 10) within 10%
    delays = [r.signal - r.ts for r in records if r.signal is not None and r.signal <= end]
    p50, p90 = quantiles(delays)
    signal = steps["signal"]
    assert signal.passed == len(delays)
    assert signal.p50_seconds == pytest.approx(p50, rel=0.01)
    assert signal.p90_seconds == pytest.approx(p90, rel=0.01)
    assert signal.p50_seconds == pytest.approx(2 * HOUR * math.log(2), rel=0.1)
    assert signal.p90_seconds == pytest.approx(2 * HOUR * math.log(10), rel=0.1)
    # the window (2 d) closed on every decision but the last two days': 20% never answer
    settled = [r for r in records if r.ts + 2 * DAY <= end]
    silent = sum(r.signal is None or r.signal > end for r in settled)
    assert signal.stopped == silent
    assert signal.stopped / len(settled) == pytest.approx(0.2, abs=0.03)

    # the reward is the signal itself: complete the moment it arrives
    assert steps["complete"].p50_seconds == pytest.approx(0.0, abs=1e-6)

    # complete → learned: the next published cut after the result, as the simulation saw it
    cuts = np.array(world.cuts)
    assert len(cuts) >= 4, "the scenario's cycles should publish"
    done = [
        r.signal for r in records if r.signal is not None and r.signal <= min(end, r.ts + 2 * DAY)
    ]
    waits = [float(cuts[np.searchsorted(cuts, s)] - s) for s in done if s <= cuts[-1]]
    p50, p90 = quantiles(waits)
    learned = steps["learned"]
    assert learned.passed == len(waits)
    assert learned.p50_seconds == pytest.approx(p50, rel=0.01)
    assert learned.p90_seconds == pytest.approx(p90, rel=0.01)
    # with a cycle a day and results spread over it: about 12 h and 21.6 h (within 15%)
    assert learned.p50_seconds == pytest.approx(12 * HOUR, rel=0.15)
    assert learned.p90_seconds == pytest.approx(21.6 * HOUR, rel=0.15)

    # learned → served: the next decision after a cycle, at most one decision gap (2 min)
    assert steps["served"].p90_seconds is not None and steps["served"].p90_seconds <= 120

    # cycle time, decided → served: the simulation's own, within 1%
    first_served: dict[int, float] = {}
    for r in records:
        if r.version is not None:
            first_served.setdefault(r.version, r.ts)
    served_at = [first_served[v] for v in sorted(first_served)]
    cycle = []
    for r in records:
        if r.signal is None or r.signal > min(end, r.ts + 2 * DAY) or r.signal > cuts[-1]:
            continue
        k = int(np.searchsorted(cuts, r.signal))
        later = [s for s in served_at[k:] if s is not None]
        if later:
            cycle.append(min(later) - r.ts)
    p50, p90 = quantiles(cycle)
    assert h.stages.cycle.passed == len(cycle)
    assert h.stages.cycle.p50_seconds == pytest.approx(p50, rel=0.01)
    assert h.stages.cycle.p90_seconds == pytest.approx(p90, rel=0.01)

    # the bottleneck: waiting for the daily cycle is the slowest step; the 20% who never
    # answer are where most decisions stop
    assert h.stages.slowest == "learned"
    assert h.stages.leakiest == "signal"
    assert "complete → learned" in h.stages.bottleneck
    assert "decided → first signal" in h.stages.bottleneck


def test_force_drag_and_coverage(turned: tuple[flywheel.Wheel, Clock, World]) -> None:
    wheel, clock, world = turned
    h = wheel.health(window="9d")
    end = clock.now
    records = [r for r in world.records if r.ts <= end]
    settled = [r for r in records if r.ts + 2 * DAY <= end]
    answered = sum(r.signal is not None and r.signal <= r.ts + 2 * DAY for r in settled)
    # alignment and feedback: the settled decisions that got their result (exactly)
    assert h.force.alignment == pytest.approx(answered / len(settled))
    assert h.force.feedback == pytest.approx(answered / len(settled))
    # closed loop: decisions served by a version (exactly; the first cycle was on day 1)
    assert h.force.closed_loop == pytest.approx(
        sum(r.version is not None for r in records) / len(records)
    )
    assert h.force.value == pytest.approx(
        h.force.alignment * h.force.closed_loop * h.force.feedback
    )
    assert h.force.weakest == min(
        ("alignment", "closed loop", "feedback"),
        key=lambda k: {
            "alignment": h.force.alignment,
            "closed loop": h.force.closed_loop,
            "feedback": h.force.feedback,
        }[k],
    )
    coverage = {c.kind: c.share for c in h.coverage}
    assert coverage["outcomes"] == pytest.approx(answered / len(settled))
    assert coverage["explicit"] == coverage["implicit"] == coverage["edits"] == 0

    drag = {d.name: d for d in h.drag}
    # the last cycle was on day 6 and the spec asks for one a day: 2 days late
    lag = drag["retraining lag"]
    assert lag.status == "warn", lag
    assert lag.figure == pytest.approx(end - (T0 + 6 * DAY))
    # decisions fell to a quarter after the last publish
    usage = drag["usage falling after a publish"]
    assert usage.status == "warn"
    assert usage.figure == pytest.approx(0.25, abs=0.03)

    # trends: the window's weeks, oldest first, counting every decision once
    assert sum(w.decisions for w in h.trends) <= len(records)
    assert h.trends[-1].decisions == sum(r.ts > end - 7 * DAY for r in records)


def test_each_version_result_covers_its_true_value(
    turned: tuple[flywheel.Wheel, Clock, World],
) -> None:
    wheel, _clock, world = turned
    h = wheel.health(window="9d")
    by_version: dict[int | None, list[float]] = {}
    for r in world.records:
        by_version.setdefault(r.version, []).append(r.value)
    entries = [e for e in h.learning.versions if e.rows >= 100]
    assert len(entries) >= 4
    covered = 0
    for e in entries:
        truth = float(np.mean(by_version[e.version]))
        assert e.low is not None and e.high is not None
        covered += e.low <= truth <= e.high
        assert abs(e.result - truth) < 0.08  # type: ignore[operator]
    # 95% intervals: all but at most one of the versions cover the truth
    assert covered >= len(entries) - 1
    # each lift over the entry before, against the true difference: the same
    lifts = [e for e in entries if e.lift is not None]
    assert len(lifts) >= 3
    hits = 0
    for before, e in zip(h.learning.versions, h.learning.versions[1:], strict=False):
        if e.lift is None or e.lift_low is None or e.lift_high is None:
            continue
        truth = float(np.mean(by_version[e.version])) - float(np.mean(by_version[before.version]))
        hits += e.lift_low <= truth <= e.lift_high
    assert hits >= len(lifts) - 1
    # the cold start served uniformly (truth 0.4); the versions learned the best (0.7 each)
    cold = h.learning.versions[0]
    assert cold.served_by == "cold start" and cold.result == pytest.approx(0.4, abs=0.05)
    assert h.learning.per_cycle is not None and h.learning.per_cycle.low > 0


def test_the_same_figures_on_both_stores(
    turned: tuple[flywheel.Wheel, Clock, World], tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """Deterministic: the same data gives the same health, twice and on the other store."""
    wheel, clock, _world = turned
    first = json.dumps(wheel.health(window="9d").as_dict(), sort_keys=True)
    assert json.dumps(wheel.health(window="9d").as_dict(), sort_keys=True) == first
    decisions = wheel.store.query("SELECT * FROM decisions")
    signals = wheel.store.query("SELECT * FROM signals")
    other_url = (
        f"duckdb:///{tmp_path / 'copy.duckdb'}"
        if wheel.store.url.startswith("postgresql")
        else str(request.getfixturevalue("pg_url"))
    )
    with flywheel.open(spec(every="1d"), store=other_url, clock=clock, background=False) as copy:
        copy.store.write({"decisions": decisions, "signals": signals})
        for version, _created, _meta in sorted(wheel.store.playbook_list()):
            found = wheel.store.playbook(version)
            assert found is not None
            copy.store.publish(copy.spec.digest, found[1], found[2])
        assert json.dumps(copy.health(window="9d").as_dict(), sort_keys=True) == first


def individual_best(unit: str, segment: str, combo: tuple[str, str]) -> float:
    best = COMBOS[int(unit.split("-")[1]) % len(COMBOS)]  # as many units for each
    return 0.7 if combo == best else 0.3


def everyone_best(unit: str, segment: str, combo: tuple[str, str]) -> float:
    return 0.7 if combo == ("y", "q") else 0.3


@pytest.mark.parametrize(
    ("means", "kind"), [(everyone_best, "network"), (individual_best, "individual")]
)
def test_learning_type(
    each_store: str,
    means: Callable[[str, str, tuple[str, str]], float],
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shared optimum: what other units teach carries to a new unit (gain 0.7 - 0.4 = 0.3
    per 1,000 rows, within 0.08). Each unit with its own best: nothing carries (gain 0).

    The units' salt is fixed: units fall in folds by their pseudonym, and a store's own salt
    is new each run, so the held-out folds (and the interval's edge) would change from run
    to run."""
    monkeypatch.setenv("FLYWHEEL_UNIT_SALT", "learning-type")
    clock = Clock()
    world = World(means, units=400, answer=1.0, delay=HOUR)
    with flywheel.open(spec(), store=each_store, clock=clock, background=False, seed=5) as wheel:
        simulate(wheel, clock, world, days=6, every=60, learn_days=())
        lt = wheel.health(window="7d").learning_type
    assert lt.kind == kind, lt.text
    assert lt.units == 400
    expected = 0.3 if kind == "network" else 0.0
    assert lt.gain_per_1000 == pytest.approx(expected, abs=0.08)
    assert lt.low is not None and lt.high is not None
    assert lt.low <= expected + 0.02 and expected - 0.02 <= lt.high


def _version_rows(results: list[tuple[int, float, float]]) -> list[dict[str, Any]]:
    """``versions`` rows as the statement returns them: (version, mean, rows), one segment."""
    rows = []
    for k, mean, n in results:
        var = mean * (1 - mean)
        rows.append(
            {
                "k": k,
                "segment": "",
                "decisions": n,
                "n": n,
                "sum": mean * n,
                "sum2": (var * (n - 1) / n + mean**2) * n,
            }
        )
    return rows


@dataclass
class _Ready:
    factors: tuple[str, ...]
    ready: bool
    more_rows: int
    effect: float


def test_plateau_is_said_with_what_to_try() -> None:
    flat = _version_rows([(-1, 0.40, 5000), *((v, 0.60, 200_000) for v in range(1, 6))])
    rows = {v: 1000 * v for v in range(1, 6)}
    waiting = [_Ready(("a", "b"), False, 4000, 0.02), _Ready(("a",), True, 0, 0.02)]
    rate = learning_rate(flat, rows, readiness=lambda: waiting)
    assert rate.plateau, rate.text
    assert "Plateau" in rate.text
    assert any("longer window" in s and "4,000" in s for s in rate.suggestions)
    ready = learning_rate(flat, rows, readiness=lambda: [_Ready(("a",), True, 0, 0.02)])
    assert any(s.startswith("A new knob") for s in ready.suggestions)

    climbing = _version_rows(
        [(-1, 0.40, 5000), *((v, 0.5 + 0.02 * v, 200_000) for v in range(1, 6))]
    )
    rate = learning_rate(climbing, rows, readiness=lambda: waiting)
    assert not rate.plateau and rate.text.startswith("Still learning")
    assert rate.per_cycle is not None
    assert rate.suggestions == ()
    # too noisy to tell: no plateau claimed
    noisy = _version_rows([(-1, 0.40, 50), *((v, 0.60, 100) for v in range(1, 6))])
    assert not learning_rate(noisy, rows).plateau
    assert rate_module.PLATEAU_CYCLES == 3


def test_traffic_mix_is_corrected() -> None:
    """Two versions equally good in each segment, one serving mostly the better segment:
    raw means differ, post-stratified ones agree."""
    rows = []
    for k, share in ((1, 0.5), (2, 0.9)):
        for segment, mean in (("good", 0.8), ("bad", 0.2)):
            n = 10_000 * (share if segment == "good" else 1 - share)
            rows.append(
                {
                    "k": k,
                    "segment": segment,
                    "decisions": n,
                    "n": n,
                    "sum": mean * n,
                    "sum2": mean * n,
                }
            )
    rate = learning_rate(rows, {1: 1000, 2: 2000})
    one, two = rate.versions
    assert one.corrected and two.corrected
    reference = (0.5 * 10_000 + 0.9 * 10_000) / 20_000  # the window's share of "good"
    truth = reference * 0.8 + (1 - reference) * 0.2
    assert one.result == pytest.approx(truth, abs=1e-9)
    assert two.result == pytest.approx(truth, abs=1e-9)
    assert one.lift == pytest.approx(0.0, abs=1e-9) or one.lift is None
    assert two.lift == pytest.approx(0.0, abs=1e-9)
    # the same mix as the window's: the correction changes nothing
    same = learning_rate([r for r in rows if r["k"] == 1], {1: 1000})
    assert same.versions[0].result == pytest.approx(0.5, abs=1e-9)
    assert same.versions[0].mix_covered == 1
    # a version that never served a segment: its result covers only part of the mix
    partial = learning_rate([*rows, {**rows[0], "k": 3, "segment": "good"}], {3: 3000})
    good = (0.5 * 10_000 + 0.9 * 10_000 + 5_000) / 25_000  # the window's share of "good" now
    assert partial.versions[-1].mix_covered == pytest.approx(good)
    # a restored version is labelled and is no learning cycle
    restored = learning_rate(rows, {1: 1000, 2: 1000}, restored={2: 1})
    assert restored.versions[-1].served_by == "v2 (v1 restored)"
    assert restored.per_cycle is None  # one learning cycle left: no slope


def test_no_data_and_bad_window(make_wheel: Callable[..., flywheel.Wheel]) -> None:
    wheel = make_wheel()
    h = wheel.health()
    assert h.decisions == 0
    assert h.stages.bottleneck == "No decisions in the window."
    assert h.learning_type.kind == "unknown"
    assert h.force.value == 0
    with pytest.raises(flywheel.InvalidInputError, match="window"):
        wheel.health(window="soon")


def test_many_cuts_are_joined_with_the_same_result(
    turned: tuple[flywheel.Wheel, Clock, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past a few learned moments a row's is found by a range join instead of a CASE: the
    figures are the same either way."""
    from flywheel.health import sql

    wheel, _clock, _world = turned
    by_case = wheel.health(window="9d").as_dict()
    monkeypatch.setattr(sql, "CASE_CUTS", 2)
    assert wheel.health(window="9d").as_dict() == by_case


def test_coverage_and_weeks_when_nothing_has_settled_and_the_window_is_not_whole_weeks(
    each_store: str,
) -> None:
    """A reward window longer than the health window: no decision has settled, so coverage
    counts every decision (as force does); a 10-day window has two weeks, the older cut at
    the window's start, and the quality drag waits for two full weeks."""
    clock = Clock()
    long = {**spec(), "reward": {"formula": "completed", "window": "30d"}}
    world = World(shared_best, answer=1.0)
    with flywheel.open(long, store=each_store, clock=clock, background=False, seed=2) as wheel:
        simulate(wheel, clock, world, days=10, every=600, learn_days=())
        h = wheel.health(window="10d")
    coverage = {c.kind: c for c in h.coverage}
    assert coverage["outcomes"].share == pytest.approx(h.force.feedback)
    assert coverage["outcomes"].share > 0.9
    assert len(h.trends) == 2
    assert sum(w.decisions for w in h.trends) == h.decisions
    from datetime import datetime, timedelta

    end = datetime.fromisoformat(h.as_of)
    assert h.trends[0].start == (end - timedelta(days=10)).isoformat()
    assert h.trends[1].start == (end - timedelta(days=7)).isoformat()
    quality = next(d for d in h.drag if d.name == "quality falling while volume grows")
    assert quality.status == "ok" and quality.figure is None
    json.dumps(h.as_dict(), allow_nan=False)  # no NaN or infinity in the JSON


def test_inputs_and_outputs_are_not_feedback(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """What the product was asked and what it answered start no stage: a decision with both
    and no signal from the person is not heard."""
    wheel = make_wheel()
    for i in range(10):
        clock.now = T0 + i * HOUR
        d = wheel.decide({"genre": "drama"}, input=f"a story about {i}")
        wheel.output(d, f"once upon a time, {i}", ts=clock.now + 60)
        if i % 2:
            wheel.signal(d, "completed", True, ts=clock.now + HOUR)
    clock.now = T0 + 2 * DAY
    h = wheel.health()
    assert h.decisions == 10
    assert h.force.feedback == pytest.approx(0.5)
