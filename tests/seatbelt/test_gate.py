"""The gate before publishing: each critical check halts a simulated wheel that needs it,
and stays quiet on clean data."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import flywheel
from flywheel.playbook import Decider, LearnResult, Playbook
from flywheel.seatbelt import gate
from flywheel.seatbelt.breaker import halted
from flywheel.seatbelt.monitors import Check
from tests.conftest import Clock

OPENINGS = ["question", "suspense", "dialogue"]


def spec(**seatbelt: Any) -> dict[str, Any]:
    return {
        "knobs": {"opening": OPENINGS, "twists": [0, 1, 2]},
        "context": {"genre": ["thriller", "romance"]},
        "reward": {"formula": "converted", "window": "1000d"},
        "learn": {"min_rows": 50},
        "seatbelt": {"min_rows": 100, **seatbelt},
    }


def truth(context: dict[str, Any], params: dict[str, Any]) -> float:
    best = {"thriller": ("suspense", 2), "romance": ("dialogue", 0)}[context["genre"]]
    hits = (params["opening"] == best[0]) + (params["twists"] == best[1])
    return (0.15, 0.3, 0.6)[hits]


class Sim:
    """A product in front of a wheel: contexts, decisions, results (through the SDK)."""

    def __init__(self, wheel: flywheel.Wheel, clock: Clock, seed: int) -> None:
        self.wheel, self.clock, self.rng = wheel, clock, random.Random(seed)
        self.romance_share = 0.5

    def context(self) -> dict[str, Any]:
        return {"genre": "romance" if self.rng.random() < self.romance_share else "thriller"}

    def play(self, n: int, bug: Callable[[dict[str, Any], float], float] | None = None) -> None:
        for _ in range(n):
            self.clock.now += 60
            context = self.context()
            d = self.wheel.decide(context)
            reward = float(self.rng.random() < truth(context, d.params))
            self.wheel.signal(d, "converted", bug(d.params, reward) if bug else reward)

    def play_locally(self, n: int, swap: float) -> None:
        """Serve from the playbook in the product and log it, mislabelling a share of rows."""
        playbook = self.wheel.playbook
        decider = Decider(self.wheel.spec, random.Random(self.rng.random()))
        decider.use(playbook)
        swapped = {"suspense": "dialogue", "dialogue": "suspense", "question": "question"}
        for _ in range(n):
            self.clock.now += 60
            context = self.context()
            d = decider.decide("00000000-0000-4000-8000-000000000000", context)
            reward = float(self.rng.random() < truth(context, d.params))
            logged = dict(d.params)
            if self.rng.random() < swap:
                logged["opening"] = swapped[logged["opening"]]
            self.wheel.log(
                context=context,
                params=logged,
                results={"converted": reward},
                playbook=d.playbook,
                propensity=d.propensity,
            )

    def learn(self) -> LearnResult:
        return self.wheel.learn(seed=self.rng.randrange(2**31))


def warmed(make_wheel: Callable[..., flywheel.Wheel], clock: Clock, seed: int = 1) -> Sim:
    sim = Sim(make_wheel(spec(), seed=seed), clock, seed)
    for _ in range(3):
        sim.play(600)
        result = sim.learn()
        assert result.published and not result.halted, result.reason
    return sim


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_cycles_publish_without_alarms(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock, seed: int
) -> None:
    sim = warmed(make_wheel, clock, seed)
    for _ in range(3):
        sim.play(600)
        result = sim.learn()
        assert result.published, result.reason
        names = {c.name for c in result.checks}
        assert {"quality", "drift", "srm", "reward_shift", "ope"} <= names
        assert all(c.ok for c in result.checks if c.critical), result.checks


def test_an_instrumentation_bug_halts_learning_until_a_person_resumes(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    sim = warmed(make_wheel, clock)
    before = sim.wheel.playbook
    sim.play(600, bug=lambda params, r: 1.0 if params["twists"] == 0 else r)
    result = sim.learn()
    assert result.halted and not result.published
    assert "reward_shift" in result.reason and "twists = 0" in result.reason
    # the versions learned inside the window the check looked at are in doubt: the one
    # before it is served again (this run has three; the window spans them)
    served = sim.wheel.playbook
    assert result.rolled_back and served is not None and served is not before
    assert served.meta["restored_from"] == 1 and served.meta["replaces"] is None

    status = sim.wheel.status()
    assert status.halted and status.halt is not None and status.halt.check == "reward_shift"
    again = sim.learn()
    assert again.halted and again.reason.startswith("halted since")
    lifted = sim.wheel.resume("metric fixed; the bad rows were removed", actor="ops")
    assert lifted is not None and lifted.check == "reward_shift"
    actions = [(e["action"], e["actor"]) for e in sim.wheel.status().events]
    assert actions[:3] == [("resume", "ops"), ("rollback", "seatbelt"), ("halt", "seatbelt")]
    trail = sim.wheel.events(limit=2)
    assert [e["action"] for e in trail] == ["resume", "rollback"]
    assert set(trail[1]) == {"ts", "action", "reason", "detail", "actor"} and trail[1]["reason"]
    with pytest.raises(flywheel.FlywheelError, match="limit"):
        sim.wheel.events(limit=0)
    assert halted(sim.wheel.store) is None


def test_mislogged_knob_tags_trip_the_sample_ratio_check(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    sim = warmed(make_wheel, clock)
    sim.play_locally(600, swap=0.0)  # served locally, logged right: nothing to see
    clean = sim.learn()
    assert clean.published
    assert next(c for c in clean.checks if c.name == "srm").detail["mislogged_rows"] == 0
    sim.play_locally(600, swap=0.2)
    result = sim.learn()
    assert result.halted, result.reason
    srm = next(c for c in result.checks if c.name == "srm")
    assert not srm.ok and "opening" in srm.summary


def test_a_sample_ratio_mismatch_is_judged_at_a_tenth_of_one_experiments_level(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """Every cycle tests the logged shares again, so the level is 0.0001 a cycle across the
    knobs (gate.SRM_LEVEL), not the 0.001 of one experiment's analysis: a combination the
    policy seldom serves logged more and more often passes while the mismatch is one that
    0.001 would call, and halts once it is past 0.0001."""
    sim, incumbent, data = played_since_learning(make_wheel, clock, 600)
    spec = sim.wheel.spec
    recent = data.recent
    propensity = recent.column("propensity").to_numpy()
    rare = recent.slice(int(np.argmin(propensity)), 1)  # a combination seldom served here
    assert propensity.min() < 0.01
    level = 0.0001 / len(spec.knobs)

    def check(extra: int) -> tuple[float, bool]:
        logged = pa.concat_tables([recent, *[rare] * extra])
        found = gate._srm(spec, dataclasses.replace(data, recent=logged), lambda _: incumbent, 0.01)
        tests = [v["p_value"] for v in found.detail.values() if isinstance(v, dict)]
        return min(tests), found.ok

    seen = [check(extra) for extra in range(12)]
    assert seen[0][1], seen
    assert any(level < p < 10 * level and ok for p, ok in seen), seen
    assert any(p < level and not ok for p, ok in seen), seen
    assert all(ok == (p >= level) for p, ok in seen), seen


def test_a_few_mislogged_rows_contradict_their_logged_propensity(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """Too few swapped tags for any share to move, but each swapped row names a combination
    its playbook gives another probability than the one logged with it."""
    sim = warmed(make_wheel, clock)
    sim.play_locally(600, swap=0.03)
    result = sim.learn()
    srm = next(c for c in result.checks if c.name == "srm")
    assert result.halted and not srm.ok, result.reason
    assert "logged a combination" in srm.summary
    assert 3 <= srm.detail["mislogged_rows"] <= 600 * 0.06


def test_a_context_shift_trips_the_drift_check(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    sim = warmed(make_wheel, clock)
    sim.romance_share = 0.95
    sim.play(600)
    result = sim.learn()  # by default, reported: the model conditions on the context
    drift = next(c for c in result.checks if c.name == "drift")
    assert not drift.ok and not drift.critical and "genre" in drift.summary
    assert not result.halted, result.reason


def test_a_context_shift_halts_where_the_spec_asks(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    strict = Sim(make_wheel(spec(halt_on=["drift"]), seed=1), clock, 1)
    for _ in range(3):
        strict.play(600)
        assert strict.learn().published
    strict.romance_share = 0.95
    strict.play(600)
    result = strict.learn()
    assert result.halted and "drift" in result.reason and "genre" in result.reason


def test_a_high_quarantine_rate_halts(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    rules = {"quality": {"rules": ["converted IN (0, 1)"], "max_failure_rate": 0.1}}
    sim = Sim(make_wheel({**spec(), **rules}, seed=4), clock, 4)
    for _ in range(3):
        sim.play(600)
        assert sim.learn().published
    sim.play(600, bug=lambda params, r: 2.0 if r and params["opening"] == "suspense" else r)
    result = sim.learn()
    assert result.halted and "quality" in result.reason
    assert result.quality is not None and result.quality.recent_quarantined > 60


def test_the_off_policy_check_refuses_a_worse_candidate(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock, tmp_path: Path
) -> None:
    sim = warmed(make_wheel, clock)
    sim.play(300)
    sim.wheel.flush()
    good = sim.wheel.playbook
    assert good is not None
    data = gate.windows(
        sim.wheel.store,
        sim.wheel.spec,
        flywheel.align.moment(clock.now),
        flywheel.align.moment(clock.now - 300 * 60),
    )
    # a candidate learned where every result was inverted: it prefers the worst combinations
    with flywheel.open(
        spec(), store=f"duckdb:///{tmp_path / 'other.duckdb'}", clock=clock
    ) as other:
        Sim(other, clock, 9).play(600, bug=lambda params, r: 1.0 - r)
        assert other.learn().published
        bad = other.playbook
    assert bad is not None
    worse = gate.ope_check(sim.wheel.spec, bad, good, data)
    assert not worse.ok and worse.detail["high"] < -0.1, worse.summary
    same = gate.ope_check(sim.wheel.spec, good, good, data)
    assert same.ok and abs(same.detail["difference"]) < 1e-9


def played_since_learning(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock, decisions: int
) -> tuple[Sim, Playbook, gate.Windows]:
    """A warmed wheel that then served ``decisions`` more, its playbook, and the windows
    split where those began."""
    sim = warmed(make_wheel, clock)
    sim.play(decisions)
    sim.wheel.flush()
    incumbent = sim.wheel.playbook
    assert incumbent is not None
    now = flywheel.align.moment(clock.now)
    cut = flywheel.align.moment(clock.now - decisions * 60)
    return sim, incumbent, gate.windows(sim.wheel.store, sim.wheel.spec, now, cut)


def test_a_level_that_rises_alone_is_a_change_going_on_where_the_world_just_changed(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """Levels whose results rise while nothing else moves: a fault, unless a change of the
    world was just found on their knobs (one of their levels fell a cycle before, say: a
    world moving from one level to another shows on one, then on the other). Results that
    are all successes are a fault whatever moves."""
    sim, incumbent, data = played_since_learning(make_wheel, clock, 600)
    spec = sim.wheel.spec
    twists = np.asarray(data.recent.column("twists").to_pylist())
    reward = data.recent.column("reward").to_numpy()
    at = data.recent.schema.get_field_index("reward")
    rng = np.random.default_rng(5)
    rise = np.where((twists == 0) & (rng.random(len(reward)) < 0.6), 1.0, reward)
    alpha = spec.seatbelt.alpha / 8

    def verdict(results: np.ndarray, *moving: str) -> dict[str, Check]:
        recent = data.recent.set_column(at, "reward", pa.array(results))
        assert data.long_recent.equals(data.recent)  # one cycle: the long span is the same
        changed = dataclasses.replace(
            data, recent=recent, long_recent=recent, moving=frozenset(moving)
        )
        return {c.name: c for c in gate._reward_shift(spec, changed, incumbent, alpha)}

    # the policy serves twists = 0 with dialogue openings: both levels rose alone
    fault = verdict(rise)
    assert not fault["reward_shift"].ok and "twists = 0" in fault["reward_shift"].summary
    assert "opening = 'dialogue'" in fault["reward_shift"].summary
    assert not any("all 1" in s for s in fault["reward_shift"].detail), "not stuck: it rose"
    for knob in ("opening", "twists"):  # a change on one knob does not explain the other
        assert not verdict(rise, knob)["reward_shift"].ok
    going_on = verdict(rise, "opening", "twists")
    assert going_on["reward_shift"].ok and not going_on["change"].ok
    assert going_on["change"].detail["knobs"] == ["opening", "twists"]
    # every result a success: an impossible rate, a fault even where the world is changing
    forced = verdict(np.where(twists == 0, 1.0, reward), "opening", "twists")
    assert not forced["reward_shift"].ok and "are all 1" in forced["reward_shift"].summary


def test_a_stuck_outcome_is_caught_from_a_few_dozen_rows(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    sim, incumbent, data = played_since_learning(make_wheel, clock, 600)
    assert gate._stuck(sim.wheel.spec, data.reference, data.recent, incumbent, 0.01) == []
    twists = np.asarray(data.recent.column("twists").to_pylist())
    assert (twists == 0).sum() >= 45, "the policy should still serve twists = 0 now and then"

    def forced(run: int) -> list[gate.Alarm]:
        """The alarms with ``run`` of the recent rows with twists = 0 (a value served that
        rarely) kept, every one of them reported as a success."""
        keep = (twists != 0) | (np.cumsum(twists == 0) <= run)
        recent = data.recent.filter(pa.array(keep))
        kept = twists[keep] == 0
        forced = np.where(kept, 1.0, recent.column("reward").to_numpy())
        at = recent.schema.get_field_index("reward")
        recent = recent.set_column(at, "reward", pa.array(forced))
        return gate._stuck(sim.wheel.spec, data.reference, recent, incumbent, 0.01)

    alarms = forced(45)
    # (the policy serves twists = 0 only with dialogue openings: both levels carry the 45)
    assert any(a.text.startswith("twists = 0: the last 45 results are all 1") for a in alarms)
    assert all("results are all 1" in a.text for a in alarms), alarms
    # 39 in a row is not judged: a policy settled on cells served at 60-70% draws runs of
    # 20-30 by chance, and each cycle judges the run again
    assert forced(39) == []


def test_a_stuck_outcome_that_began_inside_the_window_is_measured_from_where_it_began(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    sim, incumbent, data = played_since_learning(make_wheel, clock, 900)
    recent = data.recent.sort_by("ts")
    twists = np.asarray(recent.column("twists").to_pylist())
    rows = np.flatnonzero(twists == 0)
    assert len(rows) > 46, "the policy should still serve twists = 0 now and then"
    # the bug begins with the 45th-last twists = 0 row; the one before it was a failure
    reward = recent.column("reward").to_numpy().copy()
    reward[rows[-46]] = 0.0
    reward[rows[-45:]] = 1.0
    at = recent.schema.get_field_index("reward")

    def stuck() -> list[gate.Alarm]:
        reported = recent.set_column(at, "reward", pa.array(reward))
        return gate._stuck(sim.wheel.spec, data.reference, reported, incumbent, 0.01)

    alarms = stuck()
    assert any(a.text.startswith("twists = 0: the last 45 results are all 1") for a in alarms), (
        alarms
    )
    # a failure last: the run is one result long, too short to judge
    reward[rows[-1]] = 0.0
    alarms = stuck()
    assert not any(a.text.startswith("twists = 0") for a in alarms), alarms


def test_a_run_is_judged_by_the_rows_as_the_learner_weighs_them(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """After a change of the world the learner forgot, the reference's rows from before it
    weigh as little for the stuck-outcome test as for the learner: a level that succeeds
    15 times in 16 since may well succeed 45 times in a row, while the world it left
    (where it always failed) would make that run a fault."""
    sim, incumbent, data = played_since_learning(make_wheel, clock, 900)
    spec = sim.wheel.spec
    reference, recent = data.reference.sort_by("ts"), data.recent.sort_by("ts")
    old = np.asarray(reference.column("twists").to_pylist()) == 0
    assert old.sum() > 60, "the learning period should serve twists = 0 now and then"
    ts = [t for t in reference.column("ts").to_pylist() if isinstance(t, datetime)]
    assert len(ts) == reference.num_rows
    changed = ts[int(np.flatnonzero(old)[old.sum() // 2])]  # half its rows before, half after
    after = np.array([t > changed for t in ts])
    before_rows = old & ~after
    reward = reference.column("reward").to_numpy().copy()
    reward[before_rows] = 0.0
    reward[old & after] = np.where(np.arange((old & after).sum()) % 16 == 0, 0.0, 1.0)
    reference = reference.set_column(
        reference.schema.get_field_index("reward"), "reward", pa.array(reward)
    )
    rows = np.flatnonzero(np.asarray(recent.column("twists").to_pylist()) == 0)
    assert len(rows) > 46
    ran = recent.column("reward").to_numpy().copy()
    ran[rows[:-46]] = np.where(np.arange(len(rows) - 46) % 16 == 0, 0.0, 1.0)  # as since
    ran[rows[-46]], ran[rows[-45:]] = 0.0, 1.0
    recent = recent.set_column(recent.schema.get_field_index("reward"), "reward", pa.array(ran))

    def stuck(forgotten: tuple[tuple[datetime, float], ...]) -> list[str]:
        alarms = gate._stuck(spec, reference, recent, incumbent, 0.01, forgotten)
        return [a.text for a in alarms if a.text.startswith("twists = 0")]

    assert any("the last 45 results are all 1" in t for t in stuck(())), stuck(())
    assert stuck(((changed, 0.02),)) == []
    weight = gate.weights(reference, ((changed, 0.02),))
    assert np.all(weight[after] == 1.0) and np.all(weight[~after] == 0.02)


def test_a_run_is_judged_by_every_row_before_it(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """The recent rows before a run count with the reference: after a change of the world
    the learner forgot (the reference weighs little), a level that failed half the time
    before it but succeeds 19 times in 20 since may succeed 45 times in a row; the same run
    after recent rows like the reference's is a fault."""
    sim, incumbent, data = played_since_learning(make_wheel, clock, 900)
    spec = sim.wheel.spec
    reference, recent = data.reference.sort_by("ts"), data.recent.sort_by("ts")
    old = np.asarray(reference.column("twists").to_pylist()) == 0
    fell = np.where(old, np.arange(len(old)) % 2, reference.column("reward").to_numpy())
    reference = reference.set_column(
        reference.schema.get_field_index("reward"), "reward", pa.array(fell.astype(float))
    )
    changed = max(t for t in reference.column("ts").to_pylist() if isinstance(t, datetime))
    rows = np.flatnonzero(np.asarray(recent.column("twists").to_pylist()) == 0)
    assert len(rows) > 100, "the policy should still serve twists = 0 now and then"
    at = recent.schema.get_field_index("reward")

    def stuck(late: int) -> list[str]:
        """The run of 45 after the level's earlier recent rows, ``late`` in 20 of them
        successes."""
        ran = recent.column("reward").to_numpy().copy()
        earlier = rows[:-46]
        ran[earlier] = (np.arange(len(earlier)) % 20 < late).astype(float)
        ran[rows[-46]], ran[rows[-45:]] = 0.0, 1.0
        reported = recent.set_column(at, "reward", pa.array(ran))
        alarms = gate._stuck(spec, reference, reported, incumbent, 0.01, ((changed, 0.02),))
        return [a.text for a in alarms if a.text.startswith("twists = 0")]

    assert any("the last 45 results are all 1" in t for t in stuck(10)), stuck(10)
    assert stuck(19) == []


def test_a_run_in_cells_the_reference_never_saw_is_no_evidence(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    """The model's rate for a cell the reference never saw is a guess (and an optimistic one
    where a policy has just begun to serve): a run of failures there is not a fault."""
    sim, incumbent, data = played_since_learning(make_wheel, clock, 900)
    recent = data.recent.sort_by("ts")
    twists = np.asarray(recent.column("twists").to_pylist())
    assert (twists == 0).sum() >= 45, "the policy should still serve twists = 0 now and then"
    failed = np.where(twists == 0, 0.0, recent.column("reward").to_numpy())
    recent = recent.set_column(recent.schema.get_field_index("reward"), "reward", pa.array(failed))
    seen = gate._stuck(sim.wheel.spec, data.reference, recent, incumbent, 0.01)
    assert any(a.text.startswith("twists = 0: the last") for a in seen), seen
    # the same run, against a reference that never served twists = 0
    served = np.asarray(data.reference.column("twists").to_pylist()) != 0
    unseen = data.reference.filter(pa.array(served))
    alarms = gate._stuck(sim.wheel.spec, unseen, recent, incumbent, 0.01)
    assert not any(a.text.startswith("twists = 0") for a in alarms), alarms


def test_a_halt_reason_leads_with_its_strongest_evidence() -> None:
    alarms = [gate.Alarm(float(z), f"level {z}") for z in (2.5, 9.0, 4.0, 3.1, 6.0)]
    assert gate.lead(alarms) == "level 9.0; level 6.0; level 4.0; and 2 more"
    assert gate.lead(alarms[:2]) == "level 9.0; level 2.5"


def test_a_change_point_is_found_where_results_began_to_move(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    sim, incumbent, data = played_since_learning(make_wheel, clock, 900)
    rows = pa.concat_tables([data.reference, data.recent]).sort_by("ts")
    # from the 1,200th row on, suspense openings fail and question openings succeed
    opening = np.asarray(rows.column("opening").to_pylist())
    reward = rows.column("reward").to_numpy().copy()
    late = np.arange(rows.num_rows) >= 1200
    reward[late & (opening == "suspense")] = 0.0
    reward[late & (opening == "question")] = 1.0
    moved = rows.set_column(rows.schema.get_field_index("reward"), "reward", pa.array(reward))
    at = gate.change_point(sim.wheel.spec, moved, incumbent)
    times = [t.timestamp() for t in rows.column("ts").to_pylist() if t is not None]
    found = int(np.searchsorted(times, at.timestamp()))
    assert abs(found - 1199) <= rows.num_rows / gate.CHANGE_CHUNKS + 1


def test_the_reward_shift_is_calibrated_when_some_cells_are_noisier(tmp_path: Path) -> None:
    """Numeric results where one opening's cells are ten times noisier than the rest, and
    nothing moves between the windows: each level's z is a standard normal draw (its cells'
    own spread, not one spread for all, which made the noisy level's z about 1.3 times too
    wide and halted clean runs)."""
    numeric = {**spec(), "reward": {"formula": "score", "window": "1000d"}}
    url = f"duckdb:///{tmp_path / 'numeric.duckdb'}"
    rng = np.random.default_rng(4)
    combos = [(g, o, t) for g in ("thriller", "romance") for o in OPENINGS for t in (0, 1, 2)]

    def rows(n: int) -> pa.Table:
        picked = [combos[i] for i in rng.integers(len(combos), size=n)]
        noise = np.array([3.0 if o == "question" else 0.3 for _, o, _ in picked])
        return pa.table(
            {
                "genre": [g for g, _, _ in picked],
                "opening": [o for _, o, _ in picked],
                "twists": [t for _, _, t in picked],
                "reward": 5.0 + noise * rng.standard_normal(n),
            }
        )

    with flywheel.open(numeric, store=url, clock=Clock(), background=False, seed=1) as wheel:
        wheel.log_many(
            [
                {
                    "context": {"genre": g},
                    "params": {"opening": o, "twists": t},
                    "results": {"score": r},
                }
                for g, o, t, r in zip(*rows(300).to_pydict().values(), strict=True)
            ]
        )
        assert wheel.learn().published
        incumbent = wheel.playbook
        assert incumbent is not None
        parsed = wheel.spec
    z: dict[str, list[float]] = {}
    for _ in range(200):
        _, found = gate._shift(parsed, rows(600), rows(600), incumbent, alpha=1.0, min_shift=0)
        for level, figures in found.items():
            z.setdefault(level, []).append(figures["z"])
    for level in ("opening=question", "opening=suspense", "twists=1"):
        assert 0.8 < float(np.std(z[level])) < 1.2, (level, np.std(z[level]))
