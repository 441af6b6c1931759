"""Alignment cases with fixed timestamps: complete, pending, expired, late, repeated signals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import flywheel
from flywheel.align.sql import aligned_rows_sql
from tests.conftest import DAY, HOUR, T0, Clock, Open

CTX = {"genre": "a"}


def spec(**reward: Any) -> dict[str, Any]:
    return {
        "knobs": {"tone": ["warm", "formal"]},
        "context": {"genre": ["a", "b"]},
        "reward": {"formula": "converted", "window": "2d", **reward},
        "signals": {
            "converted": "max",
            "rating": "last",
            "first_rating": "first",
            "spend": "sum",
            "low": "min",
            "score": "mean",
        },
    }


def rows_by_id(wheel: flywheel.Wheel, as_of: float) -> dict[str, dict[str, Any]]:
    return {r["decision_id"]: r for r in wheel.aligned(as_of=as_of).to_pylist()}


def test_complete_pending_and_expired(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec())
    done = wheel.decide(CTX)
    waiting = wheel.decide(CTX)
    clock.now = T0 - 3 * DAY
    silent = wheel.decide(CTX)  # its 2-day window closed a day ago
    wheel.signal(done, "converted", 1, ts=T0 + HOUR)
    rows = rows_by_id(wheel, T0 + 2 * HOUR)
    assert (rows[done.id]["status"], rows[done.id]["reward"]) == ("complete", 1.0)
    assert (rows[waiting.id]["status"], rows[waiting.id]["reward"]) == ("pending", None)
    assert (rows[silent.id]["status"], rows[silent.id]["reward"]) == ("expired", None)
    summary = wheel.summary(as_of=T0 + 2 * HOUR)
    assert (summary.complete, summary.pending, summary.expired) == (1, 1, 1)
    assert summary.coverage == pytest.approx(1 / 3)


def test_expired_rows_take_the_missing_reward(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(missing=0))
    d = wheel.decide(CTX)
    row = rows_by_id(wheel, T0 + 3 * DAY)[d.id]
    assert (row["status"], row["reward"]) == ("expired", 0.0)
    assert rows_by_id(wheel, T0 + DAY)[d.id]["status"] == "pending"  # window still open


def test_late_signals_are_counted_but_do_not_change_the_row(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec())
    d = wheel.decide(CTX)
    wheel.signal(d, "converted", 0, ts=T0 + DAY)
    wheel.signal(d, "converted", 1, ts=T0 + 3 * DAY)  # after the 2-day window
    row = rows_by_id(wheel, T0 + 4 * DAY)[d.id]
    assert (row["reward"], row["n_signals"], row["late_signals"]) == (0.0, 1, 1)
    assert wheel.summary(as_of=T0 + 4 * DAY).late_signals == 1
    assert wheel.summary(as_of=T0 + 4 * DAY).signals == 2  # stored all the same


def test_signals_after_as_of_are_not_seen_yet(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec())
    d = wheel.decide(CTX)
    wheel.signal(d, "converted", 1, ts=T0 + DAY)
    assert rows_by_id(wheel, T0 + HOUR)[d.id]["status"] == "pending"
    assert rows_by_id(wheel, T0 + DAY)[d.id]["status"] == "complete"
    assert wheel.aligned(as_of=T0 - 1).num_rows == 0  # not decided yet


def test_repeated_signals_combine_as_declared(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec())
    d = wheel.decide(CTX)
    for hours, value in ((3, 2.0), (1, 4.0), (2, 3.0)):  # sent out of order
        at = T0 + hours * HOUR
        for name in ("converted", "rating", "first_rating", "spend", "low", "score"):
            wheel.signal(d, name, value, ts=at)
    row = rows_by_id(wheel, T0 + DAY)[d.id]
    assert row["converted"] == 4.0  # max
    assert row["rating"] == 2.0  # last by time (3h)
    assert row["first_rating"] == 4.0  # first by time (1h)
    assert row["spend"] == 9.0  # sum
    assert row["low"] == 2.0  # min
    assert row["score"] == pytest.approx(3.0)  # mean
    assert row["n_signals"] == 18


def test_formula_over_several_signals(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(formula="0.7 * converted + 0.3 * (rating - 1) / 4"))
    both, one = wheel.decide(CTX), wheel.decide(CTX)
    wheel.signal(both, "converted", 1, ts=T0 + HOUR)
    wheel.signal(both, "rating", 5, ts=T0 + HOUR)
    wheel.signal(one, "converted", 1, ts=T0 + HOUR)  # the formula needs both: still pending
    rows = rows_by_id(wheel, T0 + DAY)
    assert rows[both.id]["reward"] == pytest.approx(1.0)
    assert rows[one.id]["status"] == "pending"


def test_boolean_formula_is_a_number(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec(formula="rating >= 4"))
    d = wheel.decide(CTX)
    wheel.signal(d, "rating", 4.5, ts=T0 + HOUR)
    assert rows_by_id(wheel, T0 + DAY)[d.id]["reward"] == 1.0


def test_aligned_rows_carry_features_and_results(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec())
    d = wheel.decide({"genre": "b"}, unit="x")
    table = wheel.aligned(as_of=T0 + HOUR)
    assert table.column_names[:8] == [
        "decision_id",
        "ts",
        "unit",
        "policy",
        "playbook",
        "propensity",
        "genre",
        "tone",
    ]
    assert {"converted", "rating", "reward", "status", "n_signals", "late_signals"} <= set(
        table.column_names
    )
    row = table.to_pylist()[0]
    assert (row["genre"], row["tone"]) == ("b", d.params["tone"])
    assert row["ts"].timestamp() == T0


@pytest.mark.parametrize("missing", [None, 0.0])
def test_the_rows_a_learner_at_a_cut_off_has_not_seen(
    wheels: Open, clock: Clock, missing: float | None
) -> None:
    """``since`` and ``late``: the rows decided after the cut-off, and those decided before
    it whose reward was not known at it and is now (a signal since, or the window's end
    with a ``missing`` reward); not the rows known then, even if a signal came since."""
    extra = {} if missing is None else {"missing": missing}
    wheel = wheels(spec(formula="0.7 * converted + 0.3 * (rating - 1) / 4", **extra))

    def at(when: float, name: str) -> flywheel.Decision:
        clock.now = when
        d = wheel.decide(CTX)
        names[d.id] = name
        return d

    names: dict[str, str] = {}
    at(T0 - 3 * DAY, "expired before the cut-off")
    at(T0 - DAY - 12 * HOUR, "expiring after the cut-off")
    known = at(T0 - HOUR, "known at the cut-off")
    half = at(T0 - HOUR, "half known at the cut-off")
    late = at(T0 - HOUR, "known after the cut-off")
    at(T0 - HOUR, "never known")
    after = at(T0 + HOUR, "decided after the cut-off")
    for d, ts in [(known, T0 - HOUR / 2), (half, T0 - HOUR / 2), (late, T0 + HOUR)]:
        wheel.signal(d, "converted", 1, ts=ts)
    for d, ts in [(known, T0 - HOUR / 2), (known, T0 + HOUR), (half, T0 + HOUR)]:
        wheel.signal(d, "rating", 5, ts=ts)
    wheel.signal(late, "rating", 1, ts=T0 + HOUR)
    wheel.signal(after, "converted", 0, ts=T0 + 2 * HOUR)
    wheel.signal(after, "rating", 1, ts=T0 + 2 * HOUR)
    wheel.flush()
    moments = {"since": T0, "as_of": T0 + DAY}
    params = {k: datetime.fromtimestamp(v, tz=UTC) for k, v in moments.items()}
    rows = wheel.store.query(aligned_rows_sql(wheel.spec, since=True, late=True), params)
    found = {names[r["decision_id"]]: r["reward"] for r in rows.to_pylist()}
    expected: dict[str, Any] = {
        "half known at the cut-off": pytest.approx(1.0),
        "known after the cut-off": pytest.approx(0.7),
        "decided after the cut-off": pytest.approx(0.0),
    }
    if missing is not None:
        expected["expiring after the cut-off"] = missing
    assert found == expected
