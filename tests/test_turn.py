"""The wheel turning by itself: online updates between cycles, cycles on a schedule, one
cycle at a time among processes, and the ``flywheel run`` worker."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app
from flywheel.playbook import LearnResult
from flywheel.seatbelt import breaker
from flywheel.turn import Cycle, due, update_due
from tests.conftest import Clock, Open, wait_for

BEST = {"thriller": ("suspense", 2), "romance": ("dialogue", 0)}


def spec(**learn: Any) -> dict[str, Any]:
    return {
        "knobs": {"opening": ["question", "suspense", "dialogue"], "twists": [0, 1, 2]},
        "context": {"genre": ["thriller", "romance"]},
        "reward": {"formula": "converted", "window": "1000d"},
        "learn": {"min_rows": 50, **learn},
    }


def truth(context: dict[str, Any], params: dict[str, Any]) -> float:
    best = BEST[context["genre"]]
    hits = (params["opening"] == best[0]) + (params["twists"] == best[1])
    return (0.05, 0.2, 0.8)[hits]


def in_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aligned rows in the order their decisions were made (the table's own order is none):
    by time, then id (a process's ids count up)."""
    return sorted(rows, key=lambda r: (r["ts"], r["decision_id"]))


def play(wheel: flywheel.Wheel, clock: Clock, n: int, rng: random.Random) -> list[str]:
    """``n`` decisions, each with its result at once; the policies they were served by."""
    policies = []
    for _ in range(n):
        clock.now += 60
        context = {"genre": rng.choice(["thriller", "romance"])}
        d = wheel.decide(context)
        policies.append(d.policy)
        wheel.signal(d, "converted", float(rng.random() < truth(context, d.params)))
    return policies


def test_the_cold_start_moves_to_thompson_sampling_as_soon_as_there_is_evidence(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(), seed=3)
    rng = random.Random(3)
    assert set(play(wheel, clock, 30, rng)) == {"uniform"}
    assert not wheel.update()  # 30 results: under learn.min_rows
    play(wheel, clock, 270, rng)
    assert wheel.update()
    assert wheel.playbook is None  # nothing was published: the online tables are not a version
    served = [wheel.decide({"genre": "thriller"}) for _ in range(400)]
    assert {d.policy for d in served} == {"online"}
    assert {d.playbook for d in served} == {None}
    best = sum((d.params["opening"], d.params["twists"]) == BEST["thriller"] for d in served)
    assert best > 400 / 9 * 3  # far above the uniform share of the best combination
    # the propensity recorded is the exact probability of what was served
    rows = in_order(wheel.aligned().to_pylist())[-400:]
    assert all(0 < r["propensity"] <= 1 for r in rows)
    assert {r["policy"] for r in rows} == {"online"}


def test_online_updates_follow_the_served_version_until_the_next_cycle(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(), seed=4)
    rng = random.Random(4)
    play(wheel, clock, 300, rng)
    assert wheel.learn().published
    v1 = wheel.playbook
    assert v1 is not None and v1.version == 1
    assert set(play(wheel, clock, 50, rng)) == {"thompson"}
    assert wheel.update()
    assert wheel.playbook is v1  # the published version is unchanged: online tables follow it
    after = play(wheel, clock, 200, rng)
    assert set(after) == {"online"}
    rows = in_order(wheel.aligned().to_pylist())[-200:]
    assert {r["playbook"] for r in rows} == {1}
    result = wheel.learn()  # the gate judges the online rows like any other
    assert result.published and not result.halted, result.reason
    assert set(play(wheel, clock, 20, rng)) == {"thompson"}  # a new checkpoint, served as is


def test_online_updates_learn_the_results_that_come_after_the_cycle(
    wheels: Open, clock: Clock
) -> None:
    """A product whose results take longer than a cycle: the results of decisions made
    before the cycle's cut-off, recorded after it, move the tables served until the next
    (on each store)."""
    wheel = wheels(spec(), seed=6)
    rng = random.Random(6)
    play(wheel, clock, 300, rng)
    waiting = []
    for _ in range(150):  # decided now, their results known only after the cycle
        clock.now += 60
        context = {"genre": rng.choice(["thriller", "romance"])}
        waiting.append((wheel.decide(context), context))
    assert wheel.learn().published
    v1 = wheel.playbook
    assert v1 is not None and v1.meta["training"]["rows"] == 300
    assert not wheel.update()  # nothing new yet
    clock.now += 60
    for d, context in waiting[:100]:
        wheel.signal(d, "converted", float(rng.random() < truth(context, d.params)))
    assert wheel.update()
    served = wheel._decider.playbook
    assert served is not None and served.online and served.version == 1
    assert served.meta["online"]["rows"] == 100  # each late result once, the pending left out
    assert served.posterior.weight == pytest.approx(v1.posterior.weight + 100)
    assert {wheel.decide({"genre": "romance"}).policy for _ in range(20)} == {"online"}
    clock.now += 60
    for d, context in waiting[100:]:
        wheel.signal(d, "converted", float(rng.random() < truth(context, d.params)))
    play(wheel, clock, 10, rng)
    assert wheel.update()
    served = wheel._decider.playbook
    assert served is not None and served.meta["online"]["rows"] == 160


def test_no_online_update_while_halted_or_from_a_restored_version(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(), seed=5)
    rng = random.Random(5)
    play(wheel, clock, 300, rng)
    assert wheel.learn().published
    play(wheel, clock, 100, rng)
    assert wheel.update()
    breaker.halt(wheel.store, wheel.now(), "reward_shift", "a test halt")
    assert not wheel.update()  # data in doubt: back to the checked version
    assert set(play(wheel, clock, 20, rng)) == {"thompson"}
    wheel.resume("checked")
    play(wheel, clock, 300, rng)
    assert wheel.learn().published
    wheel.rollback(1)
    play(wheel, clock, 100, rng)
    assert not wheel.update()  # a restored version serves exactly as it was published


def test_online_updates_run_in_the_background(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(online_rows=20), seed=6, background=True)
    rng = random.Random(6)
    play(wheel, clock, 100, rng)

    def served_online() -> bool:
        play(wheel, clock, 1, rng)
        return wheel.decide({"genre": "romance"}).policy == "online"

    assert wait_for(served_online)


def test_a_cycle_runs_by_itself_after_enough_new_rows(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(after=150, online=False), seed=7, background=True)
    rng = random.Random(7)
    play(wheel, clock, 160, rng)
    assert wait_for(lambda: wheel.store.latest_version() == 1)
    cycles = wheel.status().cycles
    assert cycles is not None and cycles["last"]["trigger"] == "after"
    assert cycles["last"]["published"] and cycles["last"]["version"] == 1
    assert cycles["rows_to_go"] == 150  # counted again from the last cycle


def test_a_cycle_runs_by_itself_on_the_wheel_clock(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(every="1h", online=False), seed=8, background=True)
    rng = random.Random(8)
    # the first look finds no cycle yet: it runs one (nothing to learn from)
    assert wait_for(lambda: Cycle.read(wheel.store) is not None)
    first = Cycle.read(wheel.store)
    assert first is not None and not first.published and first.trigger == "every"
    play(wheel, clock, 100, rng)  # 100 minutes on the wheel's clock
    assert wait_for(lambda: wheel.store.latest_version() == 1)
    cycles = wheel.status().cycles
    assert cycles is not None and cycles["every_seconds"] == 3600
    last = Cycle.read(wheel.store)
    assert last is not None and cycles["next"] == (last.at + timedelta(hours=1)).isoformat()


def test_a_cycle_that_is_not_due_or_locked_elsewhere_does_not_run(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(every="1h", online=False), seed=9)
    play(wheel, clock, 100, random.Random(9))
    assert due(wheel.store, wheel.spec, wheel.now()) == "every"
    with wheel.store.exclusive("learn") as mine:  # another cycle holds the lock
        assert mine
        assert wheel.cycle("every") is None
        assert wheel.store.latest_version() is None
    result = wheel.cycle("every")
    assert result is not None and result.published
    assert due(wheel.store, wheel.spec, wheel.now()) is None  # ran: not due for an hour
    assert wheel.cycle("every") is None


def test_learn_waits_for_a_cycle_running_elsewhere(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(), seed=10)
    play(wheel, clock, 100, random.Random(10))
    held, release = threading.Event(), threading.Event()

    def other() -> None:
        with wheel.store.exclusive("learn") as mine:
            assert mine
            held.set()
            release.wait()

    thread = threading.Thread(target=other)
    thread.start()
    assert held.wait(60)
    results: list[LearnResult] = []
    learner = threading.Thread(target=lambda: results.append(wheel.learn()))
    learner.start()
    assert not results  # waiting for the lock (it cannot have run: the lock is held)
    release.set()
    learner.join()
    thread.join()
    assert results and results[0].published


def test_on_postgresql_one_process_holds_the_cycle_lock(pg_url: str, tmp_path: Path) -> None:
    first = flywheel.open(spec(), store=pg_url, refresh=0, background=False)
    second = flywheel.open(spec(), store=pg_url, refresh=0, background=False)
    try:
        with first.store.exclusive("learn") as mine:
            assert mine
            with second.store.exclusive("learn") as theirs:  # another connection: a process
                assert not theirs
        with second.store.exclusive("learn") as theirs:
            assert theirs
    finally:
        first.close()
        second.close()


def test_flywheel_run_turns_the_wheel_without_http(tmp_path: Path, clock: Clock) -> None:
    db = tmp_path / "run.duckdb"
    path = tmp_path / "flywheel.toml"
    path.write_text(
        f"""
[knobs]
opening = ["question", "suspense", "dialogue"]
twists = [0, 1, 2]

[context]
genre = ["thriller", "romance"]

[reward]
formula = "converted"
window = "1000d"

[storage]
url = "duckdb:///{db}"

[learn]
min_rows = 50
after = 100
"""
    )
    rng = np.random.default_rng(11)
    with flywheel.open(path, background=False) as wheel:
        for _ in range(120):
            context = {"genre": str(rng.choice(["thriller", "romance"]))}
            params = {"opening": str(rng.choice(["suspense", "dialogue"])), "twists": 2}
            wheel.log(context=context, params=params, results={"converted": rng.random() < 0.5})
    result = CliRunner().invoke(app, ["run", "--spec", str(path), "--stop-after", "1"])
    assert result.exit_code == 0, result.output
    assert "published version 1" in result.output
    with flywheel.open(path, background=False) as wheel:
        cycles = wheel.status().cycles
        assert cycles is not None and cycles["last"]["trigger"] == "after"


def test_scheduling_settings_do_not_change_the_digest() -> None:
    plain = flywheel.Spec.from_dict(spec())
    scheduled = flywheel.Spec.from_dict(spec(every="15m", after=1000, online=False))
    assert plain.digest == scheduled.digest
    assert scheduled.learn.every_seconds == 900 and scheduled.learn.after_rows == 1000


@pytest.mark.parametrize(
    ("learn", "field"),
    [
        ({"every": "soon"}, "learn.every"),
        ({"after": 0}, "learn.after"),
        ({"online_interval": "0s"}, "learn.online_interval"),
        ({"half_life": "later"}, "learn.half_life"),
    ],
)
def test_bad_schedules_name_the_field(learn: dict[str, Any], field: str) -> None:
    with pytest.raises(flywheel.SpecError) as caught:
        flywheel.Spec.from_dict(spec(**learn))
    assert field in str(caught.value)


def test_online_updates_come_sooner_while_results_are_few() -> None:
    learn = flywheel.Spec.from_dict(spec(min_rows=20, online_rows=100)).learn
    updates, pending = [], 0
    for seen in range(1, 701):
        pending += 1
        if update_due(pending, seen, learn):
            updates.append(seen)
            pending = 0
    assert updates[:6] == [20, 40, 60, 90, 135, 202]
    assert all(b - a == 100 for a, b in itertools.pairwise(updates[5:]))
