"""History: rows logged or imported with their own times are learned, gated, counted and
analysed on their own clock (``as_of``), not on the wall clock of the day they arrived."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import flywheel
from flywheel.demo import example_spec
from flywheel.errors import InvalidInputError
from flywheel.seatbelt.monitors import Check

JANUARY = datetime(2020, 1, 1, tzinfo=UTC)
FEBRUARY = datetime(2020, 2, 1, tzinfo=UTC)
MARCH = datetime(2020, 3, 1, tzinfo=UTC)
GENRES = ("thriller", "romance", "scifi", "drama")


def month(start: datetime, end: datetime, seed: int) -> list[dict[str, Any]]:
    """A row every 40 minutes from 00:20 on ``start`` to before ``end``, each with its
    result: a suspense opening completes more often."""
    rng = random.Random(seed)
    rows, ts = [], start + timedelta(minutes=20)
    while ts < end:
        params = {
            "opening_type": rng.choice(["question", "suspense"]),
            "twist_count": rng.choice([0, 1]),
            "emotional_density": "mid",
            "length": rng.choice(["short", "long"]),
        }
        rate = 0.3 + 0.2 * (params["opening_type"] == "suspense")
        rows.append(
            {
                "context": {"genre": rng.choice(GENRES)},
                "params": params,
                "results": {"completed": float(rng.random() < rate)},
                "unit": f"reader-{rng.randrange(300)}",
                "ts": ts,
            }
        )
        ts += timedelta(minutes=40)
    return rows


@pytest.fixture
def history(each_store: str) -> Iterator[flywheel.Wheel]:
    """A wheel on the wall clock (on each backend), nothing decided yet."""
    with flywheel.open(example_spec(), store=each_store, background=False, seed=3) as wheel:
        yield wheel


def named(checks: tuple[Check, ...], name: str) -> Check:
    return next(c for c in checks if c.name == name)


def test_two_months_of_history_are_learned_gated_and_counted_on_their_own_clock(
    history: flywheel.Wheel,
) -> None:
    january, february = month(JANUARY, FEBRUARY, 1), month(FEBRUARY, MARCH, 2)
    history.log_many(january + february)
    history.log(  # no result: its attribution window (7 days) is open on 1 February
        context={"genre": "drama"},
        params={**january[0]["params"]},
        results={},
        ts=datetime(2020, 1, 30, tzinfo=UTC),
    )

    first = history.learn(as_of=FEBRUARY)
    assert first.published and first.version == 1, first.reason
    assert history.status(FEBRUARY).counts.pending == 1  # measured against 1 February
    version_1 = history.load_playbook(1)
    assert version_1 is not None and version_1.meta["training"]["rows"] == len(january)

    second = history.learn(as_of=MARCH)
    assert second.published and second.version == 2, second.reason
    windows = named(second.checks, "windows")
    # the gate judged February, the rows decided after version 1's cut, up to 1 March
    assert windows.detail["recent_rows"] == len(february)
    assert windows.detail["reference_rows"] == len(january)
    assert datetime.fromisoformat(windows.detail["cut"]) == FEBRUARY
    assert datetime.fromisoformat(windows.detail["as_of"]) == MARCH
    drift = named(second.checks, "drift")
    assert not drift.summary.startswith("not judged"), drift.summary
    assert {"srm", "reward_shift", "reward_drift", "ope"} <= {c.name for c in second.checks}

    state = history.status(MARCH)
    assert state.counts.decisions == len(january) + len(february) + 1
    assert state.counts.expired == 1 and state.counts.pending == 0  # the window closed by then
    assert state.as_of is not None and datetime.fromisoformat(state.as_of) == MARCH
    stale = named(state.monitors, "staleness.completed")
    assert stale.ok and stale.summary == "last completed signal 20.0m ago", stale.summary
    assert all(m.ok for m in state.monitors), state.monitors
    assert state.history is None  # a moment was given: nothing to point at
    cycle = (state.cycles or {})["last"]
    assert datetime.fromisoformat(cycle["at"]) == MARCH and cycle["version"] == 2

    now = history.status()  # on the wall clock the monitors see years without a result
    assert not named(now.monitors, "staleness.completed").ok
    assert now.history is not None
    assert now.history.first == JANUARY + timedelta(minutes=20)
    assert now.history.last == MARCH - timedelta(minutes=20)

    analysis = history.analyze(as_of=MARCH)
    assert analysis.version == 2
    assert datetime.fromisoformat(analysis.as_of) == MARCH  # "rows up to" the history's date
    assert analysis.rows == len(january) + len(february)
    earlier = history.analyze(as_of=datetime(2020, 2, 15, tzinfo=UTC))
    assert earlier.version == 1 and datetime.fromisoformat(earlier.as_of) == FEBRUARY
    assert earlier.rows == len(january)
    with pytest.raises(InvalidInputError) as before:
        history.analyze(as_of=datetime(2019, 12, 31, tzinfo=UTC))
    assert before.value.field == "as_of"
    with pytest.raises(InvalidInputError) as later:
        history.analyze(2, as_of=datetime(2020, 2, 15, tzinfo=UTC))
    assert later.value.field == "as_of" and "after" in str(later.value)


def test_history_without_as_of_learns_as_of_its_newest_row(history: flywheel.Wheel) -> None:
    january, february = month(JANUARY, FEBRUARY, 4), month(FEBRUARY, MARCH, 5)
    history.log_many(january)
    end = january[-1]["ts"]
    span = history.history()
    assert span is not None and span.first == JANUARY + timedelta(minutes=20) and span.last == end

    first = history.learn()
    assert first.published, first.reason
    assert "as of 2020-01-31T23:40:00Z, the newest row of the history" in first.reason
    playbook = history.load_playbook(1)
    assert playbook is not None
    assert datetime.fromisoformat(playbook.meta["training"]["as_of"]) == end

    history.log_many(february)
    second = history.learn()
    assert second.published, second.reason
    windows = named(second.checks, "windows")
    assert windows.detail["recent_rows"] == len(february)  # the gate judges February
    assert datetime.fromisoformat(windows.detail["cut"]) == end
    assert not named(second.checks, "drift").summary.startswith("not judged")
    assert history.analyze().as_of == february[-1]["ts"].isoformat()


def test_a_live_store_learns_as_of_now(history: flywheel.Wheel) -> None:
    """One decision the wheel made itself makes the store live: learn keeps the wall clock."""
    history.log_many(month(JANUARY, FEBRUARY, 6))
    history.decide({"genre": "drama"})
    assert history.history() is None
    before = datetime.now(tz=UTC)
    result = history.learn()
    assert result.published and "history" not in result.reason, result.reason
    playbook = history.load_playbook(1)
    assert playbook is not None
    assert datetime.fromisoformat(playbook.meta["training"]["as_of"]) >= before


def test_recent_logs_are_not_history(history: flywheel.Wheel) -> None:
    """Rows logged as they happen (the newest within seatbelt.stale_after) keep the wall
    clock too: a live log is not history."""
    now = datetime.now(tz=UTC)
    history.log_many(month(now - timedelta(days=3), now - timedelta(hours=1), 7))
    assert history.history() is None
    assert history.status().history is None
