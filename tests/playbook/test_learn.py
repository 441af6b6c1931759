"""The learn cycle through the SDK: publishing, serving, rollback, other processes, decay."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

import flywheel
from flywheel.learn import sql as learn_sql
from flywheel.playbook import publish
from flywheel.seatbelt import gate
from flywheel.seatbelt.monitors import Check
from tests.conftest import T0, Clock, wait_for

GOOD = {"opening": "suspense", "twists": 2}


def spec(**learn: Any) -> dict[str, Any]:
    return {
        "knobs": {"opening": ["question", "suspense", "dialogue"], "twists": [0, 1, 2, 3]},
        "context": {"genre": ["thriller", "romance"]},
        "skeleton": {
            "rules": ["NOT (opening = 'question' AND twists = 3)"],
            "fixed": {"tone": "neutral"},
        },
        "reward": {"formula": "converted", "window": "1000d"},
        "learn": {"min_rows": 50, **learn},
    }


def truth(context: dict[str, Any], params: dict[str, Any], flipped: bool = False) -> float:
    """Thrillers: suspense with exactly two twists; romance: dialogue with none."""
    best = {"thriller": GOOD, "romance": {"opening": "dialogue", "twists": 0}}[context["genre"]]
    if flipped:
        best = {"opening": "question", "twists": 1}
    hits = sum(params[k] == v for k, v in best.items())
    return (0.1, 0.2, 0.6)[hits]


def play(
    wheel: flywheel.Wheel, clock: Clock, n: int, rng: random.Random, flipped: bool = False
) -> float:
    total = 0.0
    for _ in range(n):
        clock.now += 60
        context = {"genre": rng.choice(["thriller", "romance"])}
        d = wheel.decide(context)
        reward = rng.random() < truth(context, d.params, flipped)
        total += reward
        wheel.signal(d, "converted", reward)
    return total / n


def test_learn_publishes_and_decide_serves_from_it(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec())
    result = wheel.learn(as_of=clock.now)
    assert (result.published, result.version, result.reason) == (
        False,
        None,
        "no decisions with a reward yet",
    )
    rng = random.Random(1)
    play(wheel, clock, 20, rng)
    assert "learn.min_rows is 50" in wheel.learn(as_of=clock.now).reason
    cold = play(wheel, clock, 1500, rng)
    result = wheel.learn(as_of=clock.now, seed=1)
    assert result.published and result.version == 1
    assert result.diagnostics["converged"] and result.diagnostics["segments"] == 2
    assert wheel.learn(as_of=clock.now).reason == "no new data since version 1"

    d = wheel.decide({"genre": "thriller"})
    assert (d.policy, d.playbook) == ("thompson", 1)
    table = wheel.playbook.segment({"genre": "thriller"})  # type: ignore[union-attr]
    row = wheel.spec.space.row_of({k: d.params[k] for k in ("opening", "twists")})
    assert d.propensity == pytest.approx(float(table.probs[list(table.rows).index(row)]))
    assert d.low is not None and d.high is not None and d.low <= d.expected <= d.high  # type: ignore[operator]
    greedy = wheel.decide({"genre": "thriller"}, explore=False)
    assert (greedy.policy, greedy.propensity) == ("greedy", 1.0)
    assert {k: greedy.params[k] for k in GOOD} == GOOD
    assert greedy.params["tone"] == "neutral"
    learned = play(wheel, clock, 1500, rng)
    assert learned > cold + 0.1  # the wheel turns
    stored = max(wheel.aligned().to_pylist(), key=lambda r: r["ts"])  # the newest (rows: any order)
    assert (stored["policy"], stored["playbook"]) == ("thompson", 1)


def test_learned_policy_never_breaks_the_skeleton(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(explore_floor=0.5))
    play(wheel, clock, 600, random.Random(2))
    assert wheel.learn(as_of=clock.now).published
    for _ in range(2000):
        d = wheel.decide({"genre": random.choice(["thriller", "romance"])})
        assert not (d.params["opening"] == "question" and d.params["twists"] == 3)


def test_playbook_survives_reopen_and_rollback_restores(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(), seed=3)  # reproducible: the gate judges these decisions
    rng = random.Random(3)
    play(wheel, clock, 300, rng)
    wheel.learn(as_of=clock.now, seed=1)
    first = wheel.playbook
    play(wheel, clock, 300, rng)
    assert wheel.learn(as_of=clock.now, seed=1).version == 2
    wheel.close()
    again = make_wheel(spec())
    assert again.playbook is not None and again.playbook.version == 2
    restored = again.rollback(1)
    assert restored.version == 3 and restored.meta["restored_from"] == 1
    assert first is not None
    for key, table in first.segments.items():
        np.testing.assert_allclose(restored.segments[key].probs, table.probs)
    assert again.decide({"genre": "romance"}).playbook == 3
    versions = [p["version"] for p in again.playbooks()]
    assert versions == [3, 2, 1]
    with pytest.raises(flywheel.InvalidInputError, match="no playbook version 9"):
        again.rollback(9)


def test_a_version_published_elsewhere_is_picked_up(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    serving = make_wheel(spec(), refresh=0.05)
    play(serving, clock, 300, random.Random(4))
    serving.flush()
    learner = make_wheel(spec(), refresh=0)  # another wheel on the same store publishes
    assert learner.learn(as_of=clock.now).published
    assert wait_for(lambda: serving.playbook is not None)  # its next look at the store
    assert serving.playbook is not None and serving.playbook.version == 1


def test_logged_history_counts_as_data(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec())
    rng = random.Random(5)
    for _ in range(800):
        context = {"genre": "thriller"}
        params = {"opening": rng.choice(["suspense", "dialogue"]), "twists": rng.choice([0, 2])}
        wheel.log(
            context=context,
            params=params,
            results={"converted": rng.random() < truth(context, params)},
        )
    result = wheel.learn(as_of=clock.now)
    assert result.published and "800 rows" in result.reason
    best = wheel.decide({"genre": "thriller"}, explore=False)
    assert {k: best.params[k] for k in GOOD} == GOOD


@pytest.mark.parametrize("advantage", [0.0, 4.0])
def test_default_advantage_seeds_the_default(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock, advantage: float
) -> None:
    seeded = spec(default_advantage=advantage, empirical_bayes=False, min_rows=20)
    seeded["skeleton"] = {**seeded["skeleton"], "default": {"opening": "dialogue", "twists": 1}}
    wheel = make_wheel(seeded)
    rng = random.Random(6)
    for _ in range(40):  # a little history that says nothing: every combination converts alike
        params = {
            "opening": rng.choice(["question", "suspense", "dialogue"]),
            "twists": rng.choice([0, 1, 2]),
        }
        wheel.log(
            context={"genre": "thriller"}, params=params, results={"converted": rng.random() < 0.4}
        )
    assert wheel.learn(as_of=clock.now).published
    best = wheel.decide({"genre": "thriller"}, explore=False)
    is_default = (best.params["opening"], best.params["twists"]) == ("dialogue", 1)
    assert is_default == bool(advantage)


@pytest.mark.parametrize("half_life", ["auto", "1d"])
def test_a_changed_world_is_adapted_to_without_a_halt(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock, half_life: str
) -> None:
    """The best combination changes for everyone; the seatbelt tells the change from toxic
    data, finds where it began and keeps publishing. With the default (half_life = "auto")
    it forgets what came before; with a fixed half-life the rows fade as they were told to,
    and either way the gate's later windows start at the change."""
    wheel = make_wheel(spec(half_life=half_life), seed=7)
    rng = random.Random(7)
    for _ in range(4):
        play(wheel, clock, 500, rng)
        assert wheel.learn(as_of=clock.now).published
    changed_at = clock.now
    results = []
    for _ in range(6):
        play(wheel, clock, 500, rng, flipped=True)
        results.append(wheel.learn(as_of=clock.now))
    assert not any(r.halted for r in results), [r.reason for r in results]
    changes = [e for e in wheel.status().events if e["action"] == "change"]
    assert changes, [r.reason for r in results]
    found = changes[-1]["detail"]
    at = datetime.fromisoformat(found["at"]).timestamp()
    assert abs(at - changed_at) <= 500 * 60  # within a cycle of where it began
    assert 0 < found["weight"] < 1 if half_life == "auto" else "weight" not in found
    floor = publish._floor(wheel.store, publish._stored_change(wheel.store))
    assert floor is not None and abs(floor.timestamp() - changed_at) <= 500 * 60
    assert sum(r.published for r in results) >= 5
    best = wheel.decide({"genre": "thriller"}, explore=False)
    assert (best.params["opening"], best.params["twists"]) == ("question", 1)


def test_a_knob_the_world_changes_on_moves_from_when_it_was_first_found(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """The gate reads a level that rises alone on a knob the world was found changing on,
    within the windows it judges, as that change going on (``gate.Windows.moving``). A
    change found while it goes on does not prolong it: that would let a fault that begins
    then pass for the change for ever."""
    store = make_wheel(spec()).store
    now = datetime.fromtimestamp(clock.now, tz=UTC)
    hour = timedelta(hours=1)

    def record(
        found: datetime, moving: frozenset[str], *knobs: str, by: str = "levels"
    ) -> dict[str, str]:
        detail = {"knobs": list(knobs)} if knobs else {"by": by}
        check = Check("change", False, False, "", detail)
        every = ["opening", "twists"]
        started = publish._in_motion(publish._stored_change(store), check, moving, found, every)
        change = {"at": (found - hour).isoformat(), "weight": 0.1, "found": found.isoformat()}
        store.set_meta(publish.CHANGE_KEY, json.dumps({**change, "knobs": started}))
        return started

    def moving_since(since: datetime) -> frozenset[str]:
        return publish._moving(publish._stored_change(store), since)

    assert moving_since(now - hour) == frozenset()  # no change yet
    record(now, frozenset(), "opening")
    assert moving_since(now - hour) == {"opening"}
    assert moving_since(now) == frozenset()  # found before the windows began
    # two cycles later: found again on opening (as the change going on) and on twists
    later = now + 2 * hour
    assert record(later, frozenset({"opening"}), "opening", "twists") == {
        "opening": now.isoformat(),
        "twists": later.isoformat(),
    }
    assert moving_since(now + hour) == {"twists"}
    # a change that names no knob keeps those still moving
    assert record(later + hour, frozenset({"twists"})) == {"twists": later.isoformat()}
    # one found by prediction (the world moved everywhere a little) moves every knob, from
    # when it was found unless still moving
    last = later + 2 * hour
    assert record(last, frozenset({"twists"}), by="prediction") == {
        "twists": later.isoformat(),
        "opening": last.isoformat(),
    }
    assert moving_since(later + hour) == {"opening"}


def test_draws_widen_as_far_as_the_world_moved(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """Narrower draws (``explore_spread`` below 1) bet that the history holds. Once the
    learner forgets the rows before a change of the world, the cycles and the online updates
    draw wider, as far as the world moved: rows before the change weighing 0.2 take the
    spread 80% of the way from 0.75 to 1. A change that forgot nothing leaves it, and a
    spread of 1 or more stays as set."""
    wheel = make_wheel(spec(), seed=3)
    rng = random.Random(3)
    play(wheel, clock, 600, rng)
    now = datetime.fromtimestamp(clock.now, tz=UTC)
    kept = {"at": now.isoformat(), "weight": 1.0, "found": now.isoformat()}
    wheel.store.set_meta(publish.CHANGE_KEY, json.dumps(kept))
    assert wheel.learn(as_of=clock.now, seed=1).published
    before = wheel.playbook
    assert before is not None and before.redraw is not None
    assert before.redraw.spread == before.meta["settings"]["explore_spread"] == 0.75
    forgot = {**kept, "weight": 0.2, "steps": [[now.isoformat(), 0.2]]}
    wheel.store.set_meta(publish.CHANGE_KEY, json.dumps(forgot))
    play(wheel, clock, 300, rng)
    assert wheel.learn(as_of=clock.now, seed=1).published
    after = wheel.playbook
    assert after is not None and after.redraw is not None
    assert after.redraw.spread == after.meta["settings"]["explore_spread"] == pytest.approx(0.95)
    play(wheel, clock, 100, rng)
    assert wheel.update()
    served = wheel._decider.playbook
    assert served is not None and served.online
    assert served.spec.learn.explore_spread == pytest.approx(0.95)
    assert wheel.spec.learn.explore_spread == 0.75  # the settings themselves are untouched
    steps = publish.forgetting(wheel.store, wheel.spec)
    wide = replace(wheel.spec, learn=replace(wheel.spec.learn, explore_spread=1.2))
    assert publish._drawing(wide, steps) is wide
    assert publish._drawing(wheel.spec, ()) is wheel.spec


def test_numeric_context_is_learned_in_bins(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    numeric = {
        "knobs": {"offer": ["small", "large"]},
        "context": {"size": {"type": "number", "min": 0}},
        "reward": {"formula": "converted", "window": "1000d"},
        "learn": {"context_bins": 2, "min_rows": 10},
    }
    wheel = make_wheel(numeric)
    rng = random.Random(8)
    for _ in range(3000):
        size = rng.uniform(0, 100)
        d = wheel.decide({"size": size})
        good = "large" if size > 50 else "small"
        wheel.signal(d, "converted", rng.random() < (0.6 if d.params["offer"] == good else 0.2))
    assert wheel.learn(as_of=clock.now + 60).published
    assert wheel.decide({"size": 90.0}, explore=False).params["offer"] == "large"
    assert wheel.decide({"size": 10.0}, explore=False).params["offer"] == "small"
    segments = wheel.playbook.best()  # type: ignore[union-attr]
    assert len(segments) == 2 and "size" in segments[0]["context"]["size"]


def test_t0_is_the_test_clock_origin() -> None:
    assert T0 > 0


def test_a_slow_drift_is_forgotten_as_it_goes(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """The world moves from one best combination to another over 4,000 decisions, a little
    each cycle: no knob level jumps, but the rows' own predictions show the move, and the
    rows from before it fade (half_life = "auto"); the drift's end is served."""
    wheel = make_wheel(spec(), seed=11)
    rng = random.Random(11)
    for _ in range(4):
        play(wheel, clock, 500, rng)
        assert wheel.learn(as_of=clock.now).published
    results = []
    for step in range(8):
        for i in range(500):  # a blend: the new world's share grows decision by decision
            clock.now += 60
            context = {"genre": rng.choice(["thriller", "romance"])}
            d = wheel.decide(context)
            share = (step * 500 + i) / 4000
            p = (1 - share) * truth(context, d.params) + share * truth(context, d.params, True)
            wheel.signal(d, "converted", rng.random() < p)
        results.append(wheel.learn(as_of=clock.now))
    for _ in range(3):
        play(wheel, clock, 500, rng, flipped=True)
        results.append(wheel.learn(as_of=clock.now))
    assert not any(r.halted for r in results), [r.reason for r in results]
    changes = [e for e in wheel.status().events if e["action"] == "change"]
    assert any(e["detail"].get("by") == "prediction" for e in changes), changes
    best = wheel.decide({"genre": "romance"}, explore=False)
    assert (best.params["opening"], best.params["twists"]) == ("question", 1)


def test_the_learner_and_the_gate_weigh_forgotten_rows_alike(each_store: str, clock: Clock) -> None:
    """However many changes were forgotten, the cells a cycle fits (in the store's SQL) weigh
    each row as the seatbelt's stuck test weighs it (:func:`flywheel.seatbelt.gate.weights`)."""
    with flywheel.open(spec(), store=each_store, clock=clock, background=False, seed=3) as wheel:
        play(wheel, clock, 1_200, random.Random(3))
        wheel.flush()
        moment = datetime.fromtimestamp(clock.now, tz=UTC)
        when = {"as_of": moment}
        start = datetime.fromtimestamp(T0, tz=UTC)
        steps = tuple((start + timedelta(hours=h), 0.5) for h in (4, 9, 15))
        encoding = publish._encoding(wheel.store, wheel.spec, when)
        rows = gate.windows(wheel.store, wheel.spec, moment, moment).reference
        shares = tuple((at, 0.5**k) for k, (at, _) in enumerate(steps))
        for forget in [(), steps[:1], steps, shares]:
            table = publish._cells_table(wheel.store, wheel.spec, encoding, when, forget)
            counted = float(np.sum(table.column(learn_sql.N).to_numpy()))
            assert counted == pytest.approx(gate.weights(rows, forget).sum())


def test_a_change_stored_before_the_steps_were_kept_is_still_read(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """A store written before every step was kept holds the last change and the one
    before it (``earlier``): they are read as two steps, and a change that forgot nothing
    as none."""
    wheel = make_wheel(spec())
    first, second = (datetime(2026, 1, d, tzinfo=UTC) for d in (2, 5))
    old = {
        "at": second.isoformat(),
        "weight": 0.25,
        "earlier": {"at": first.isoformat(), "weight": 0.05},
    }
    wheel.store.set_meta(publish.CHANGE_KEY, json.dumps(old))
    assert publish.forgetting(wheel.store, wheel.spec) == ((first, 0.05), (second, 0.25))
    kept = {"at": second.isoformat(), "weight": 1.0}
    wheel.store.set_meta(publish.CHANGE_KEY, json.dumps(kept))
    assert publish.forgetting(wheel.store, wheel.spec) == ()
