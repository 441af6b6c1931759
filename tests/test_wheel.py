"""The SDK end to end on a real DuckDB file: validation, signals of every kind, orphans."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

import flywheel
from flywheel.collect.writer import to_arrow
from flywheel.errors import (
    FlywheelError,
    InvalidInputError,
    UnknownNameError,
    ValueNotAllowedError,
    WrongTypeError,
)
from tests.conftest import HOUR, PARAMS, THRILLER, Clock


def test_decide_returns_allowed_params_with_fixed_values(wheel: flywheel.Wheel) -> None:
    d = wheel.decide(THRILLER, unit="user-42")
    assert d.params["tone"] == "neutral"
    knobs = {k: v for k, v in d.params.items() if k != "tone"}
    assert wheel.spec.space.row_of(knobs) is not None
    assert d.policy == "uniform"
    assert d.propensity == pytest.approx(1 / 132)
    assert d.playbook is None
    row = wheel.aligned().to_pylist()[0]
    assert row["decision_id"] == d.id
    assert row["propensity"] == pytest.approx(1 / 132)
    assert row["unit"] != "user-42" and len(row["unit"]) == 32


def test_explore_false_serves_the_default(wheel: flywheel.Wheel) -> None:
    d = wheel.decide(THRILLER, explore=False)
    assert {k: d.params[k] for k in wheel.spec.default} == dict(wheel.spec.default)
    assert (d.policy, d.propensity) == ("default", 1.0)


def test_spec_without_exploration_serves_the_default(
    make_wheel: Callable[..., flywheel.Wheel],
) -> None:
    wheel = make_wheel(
        {
            "knobs": {"tone": ["warm", "formal"]},
            "reward": {"formula": "accepted"},
            "policy": {"explore": False},
        }
    )
    assert {wheel.decide().params["tone"] for _ in range(20)} == {"warm"}


@pytest.mark.parametrize(
    ("call", "error", "field", "decided"),
    [
        (lambda w: w.decide({"genre": "horror"}), ValueNotAllowedError, "context.genre", 0),
        (lambda w: w.decide({"genre": 3}), WrongTypeError, "context.genre", 0),
        (lambda w: w.decide({"genre": "drama", "mood": "x"}), UnknownNameError, "context.mood", 0),
        (lambda w: w.decide({}), ValueNotAllowedError, "context.genre", 0),
        (lambda w: w.decide("thriller"), WrongTypeError, "context", 0),
        (lambda w: w.decide(THRILLER, unit=["x"]), WrongTypeError, "unit", 0),
        (lambda w: w.signal("not-an-id", "completed", 1), WrongTypeError, "decision", 0),
        (lambda w: w.signal(w.decide(THRILLER), "complete", 1), UnknownNameError, "complete", 1),
        (
            lambda w: w.signal(w.decide(THRILLER), "completed", "yes"),
            WrongTypeError,
            "completed",
            1,
        ),
        (
            lambda w: w.signal(w.decide(THRILLER), "completed", float("nan")),
            ValueNotAllowedError,
            "completed",
            1,
        ),
        (lambda w: w.feedback(w.decide(THRILLER), rating=9), ValueNotAllowedError, "rating", 1),
        (
            lambda w: w.feedback(w.decide(THRILLER), rating=4, comment=5),
            WrongTypeError,
            "comment",
            1,
        ),
        (lambda w: w.implicit(w.decide(THRILLER), "clicked"), ValueNotAllowedError, "event", 1),
        (lambda w: w.edit(w.decide(THRILLER), "draft", None), WrongTypeError, "final", 1),
        (
            lambda w: w.log(context=THRILLER, params={**PARAMS, "length": "epic"}, results={}),
            ValueNotAllowedError,
            "params.length",
            0,
        ),
        (
            lambda w: w.log(context=THRILLER, params={**PARAMS, "tone": "loud"}, results={}),
            ValueNotAllowedError,
            "params.tone",
            0,
        ),
        (
            lambda w: w.log(context=THRILLER, params={"opening_type": "suspense"}, results={}),
            ValueNotAllowedError,
            "params.twist_count",
            0,
        ),
        (
            lambda w: w.log(context=THRILLER, params=PARAMS, results={"completed": "x"}),
            WrongTypeError,
            "completed",
            0,
        ),
        (
            lambda w: w.signal(w.decide(THRILLER), "completed", 1, ts="yesterday"),
            WrongTypeError,
            "ts",
            1,
        ),
        (  # a version no store column could hold: refused here, or no later write succeeds
            lambda w: w.log(
                context=THRILLER, params=PARAMS, results={}, playbook=2**63, propensity=0.5
            ),
            ValueNotAllowedError,
            "playbook",
            0,
        ),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    wheel: flywheel.Wheel,
    call: Callable[[flywheel.Wheel], Any],
    error: type[FlywheelError],
    field: str,
    decided: int,
) -> None:
    before = wheel.summary()
    with pytest.raises(error) as caught:
        call(wheel)
    assert caught.value.field == field  # type: ignore[attr-defined]
    after = wheel.summary()
    assert (after.signals, after.edits) == (before.signals, before.edits)
    # only the decision some cases make first, to have something to attach a signal to
    assert after.decisions - before.decisions == decided


def test_log_with_bad_results_writes_no_decision(wheel: flywheel.Wheel) -> None:
    with pytest.raises(WrongTypeError):
        wheel.log(context=THRILLER, params=PARAMS, results={"completed": 1, "rating": "great"})
    assert wheel.summary().decisions == 0


def test_feedback_implicit_edit_and_log(wheel: flywheel.Wheel, clock: Clock) -> None:
    d = wheel.decide(THRILLER, unit="u1")
    wheel.feedback(d, rating=4, thumbs=True, comment="too slow")
    wheel.implicit(d, "accepted", dwell_ms=1500)
    wheel.implicit(d.id, dwell_ms=500)
    distance = wheel.edit(d, draft="The cat sat.", final="The cat sat down.")
    wheel.signal(d, "completed", True)
    ident = wheel.log(
        context={"genre": "drama"}, params=PARAMS, results={"completed": 0, "rating": 2}, unit="u2"
    )
    rows = {r["decision_id"]: r for r in wheel.aligned().to_pylist()}
    row = rows[d.id]
    assert (row["rating"], row["thumbs"], row["comment"], row["accepted"]) == (
        4.0,
        1.0,
        "too slow",
        1.0,
    )
    assert row["dwell_ms"] == 2000.0  # dwell_ms sums
    assert row["edit_distance"] == pytest.approx(distance) == pytest.approx(5 / 17)
    assert (row["reward"], row["status"]) == (1.0, "complete")
    logged = rows[ident]
    assert (logged["policy"], logged["propensity"], logged["reward"], logged["rating"]) == (
        "logged",
        None,
        0.0,
        2.0,
    )
    edit = wheel.store.query("SELECT draft, final, diff, distance FROM edits").to_pylist()[0]
    assert edit["draft"] == "The cat sat." and edit["final"] == "The cat sat down."
    assert "-The cat sat.\n+The cat sat down.\n" in edit["diff"]


def test_a_signal_batch_mixes_every_kind_all_or_none(wheel: flywheel.Wheel) -> None:
    d = wheel.decide(THRILLER, unit="u1")
    items: list[dict[str, Any]] = [
        {"decision": d.id, "name": "completed", "value": True, "key": "c1"},
        {"decision": d.id, "rating": 4, "comment": "too slow"},
        {"decision": d.id, "event": "accepted", "dwell_ms": 1500},
        {"decision": d.id, "draft": "The cat sat.", "final": "The cat sat down."},
    ]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"decision": d.id, "draft": "only a draft"}, "signals[4].final"),
        ({"decision": d.id, "name": "rating", "value": 4, "event": "accepted"}, "signals[4].name"),
        ({"decision": d.id, "event": "clicked"}, "signals[4].event"),
        ({"decision": d.id, "name": "rating"}, "signals[4].value"),
    ]
    for bad, field in cases:
        with pytest.raises(InvalidInputError) as caught:
            wheel.signal_batch([*items, bad])
        assert caught.value.field == field
    wheel.flush()
    assert wheel.summary().signals == 0  # nothing of a rejected batch
    assert wheel.signal_batch(items).recorded == 4
    row = wheel.aligned().to_pylist()[0]
    got = (row["completed"], row["rating"], row["comment"], row["accepted"], row["dwell_ms"])
    assert got == (1.0, 4.0, "too slow", 1.0, 1500.0)
    assert row["edit_distance"] == pytest.approx(5 / 17)
    assert wheel.store.query("SELECT count(*) AS n FROM edits").to_pylist() == [{"n": 1}]


def test_orphan_signals_are_kept_and_reported(wheel: flywheel.Wheel) -> None:
    ghost = "00000000-0000-4000-8000-000000000001"
    wheel.signal(ghost, "completed", 1)
    summary = wheel.summary()
    assert (summary.orphans, summary.signals, summary.decisions) == (1, 1, 0)
    orphans = wheel.store.query(
        "SELECT CAST(decision_id AS VARCHAR) AS id FROM orphans"
    ).to_pylist()
    assert orphans == [{"id": ghost}]


def test_signal_stored_before_its_decision_joins_once_the_decision_lands(
    wheel: flywheel.Wheel, clock: Clock
) -> None:
    """Out of order across processes: the signal is an orphan until its decision is stored."""
    ident = "0badc0de-0000-4000-8000-000000000042"
    wheel.signal(ident, "completed", 1, ts=clock.now + HOUR)
    assert wheel.summary(as_of=clock.now + 2 * HOUR).orphans == 1
    # the decision arrives later, written by another process (here: straight into the store)
    row = (ident, clock.now, None, "uniform", None, 0.5, "thriller", *PARAMS.values())
    wheel.store.write({"decisions": to_arrow([row], wheel.tables.decisions)})
    summary = wheel.summary(as_of=clock.now + 2 * HOUR)
    assert (summary.orphans, summary.complete) == (0, 1)


def test_idempotency_keys_store_a_signal_once(wheel: flywheel.Wheel) -> None:
    d = wheel.decide(THRILLER)
    wheel.signal(d, "completed", 1, key="evt-1")
    wheel.signal(d, "completed", 1, key="evt-1")  # same batch
    wheel.flush()
    wheel.signal(d, "completed", 1, key="evt-1")  # later batch
    wheel.signal(d, "completed", 0, key="evt-2")
    wheel.signal(d, "completed", 0)  # no key: always stored
    wheel.feedback(d, rating=5, comment="ok", key="fb-1")
    wheel.feedback(d, rating=5, comment="ok", key="fb-1")
    assert wheel.summary().signals == 2 + 1 + 2


def test_concurrent_writers_lose_nothing(wheel: flywheel.Wheel) -> None:
    import threading

    ids = [wheel.decide(THRILLER).id for _ in range(50)]

    def send(offset: int) -> None:
        for i in range(2000):
            wheel.signal(ids[(i + offset) % 50], "rating", 1 + i % 5)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wheel.summary().signals == 8000


def test_closed_wheel_refuses_writes(make_wheel: Callable[..., flywheel.Wheel]) -> None:
    wheel = make_wheel()
    wheel.close()
    wheel.close()  # twice is fine
    with pytest.raises(FlywheelError, match="closed"):
        wheel.decide(THRILLER)


@pytest.mark.duckdb_file
def test_second_process_gets_a_clear_lock_error(wheel: flywheel.Wheel, db: Any) -> None:
    import subprocess
    import sys

    code = f"import flywheel\nfrom flywheel.demo import example_spec\nflywheel.open(example_spec(), store='duckdb:///{db}')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "StoreLockedError" in result.stderr and "another process" in result.stderr


def test_spec_change_adds_columns_and_refuses_type_changes(
    make_wheel: Callable[..., flywheel.Wheel],
) -> None:
    base: dict[str, Any] = {
        "knobs": {"tone": ["warm", "formal"]},
        "reward": {"formula": "accepted"},
    }
    first = make_wheel(base)
    first.decide()
    first.close()
    second = make_wheel({**base, "knobs": {"tone": ["warm", "formal"], "size": [1, 2]}})
    assert second.aligned().column("size").to_pylist() == [None]
    second.close()
    with pytest.raises(flywheel.StoreError, match=r"decisions\.size"):
        make_wheel({**base, "knobs": {"tone": ["warm"], "size": ["s", "m"]}})


def test_counts_and_rows_read_the_wheels_own_clock(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    # a simulation ahead of the wall clock: what it decided is already "now" for its wheel
    clock.now = time.time() + 30 * 24 * HOUR
    wheel = make_wheel()
    d = wheel.decide(THRILLER)
    wheel.signal(d, "completed", 1)
    assert wheel.summary().decisions == 1
    assert wheel.summary().complete == 1
    assert wheel.aligned().column("decision_id").to_pylist() == [d.id]
