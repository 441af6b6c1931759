"""Edge cases found in review: each must end in a clear FlywheelError, never a hang or a crash."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import pytest

import flywheel
from flywheel.errors import SpecError
from tests.conftest import PARAMS, THRILLER, Clock


def test_text_that_cannot_be_stored_is_refused_up_front(wheel: flywheel.Wheel) -> None:
    d = wheel.decide(THRILLER)
    with pytest.raises(flywheel.ValueNotAllowedError, match="comment"):
        wheel.feedback(d, comment="hi \ud800")
    with pytest.raises(flywheel.ValueNotAllowedError, match="final"):
        wheel.edit(d, draft="a", final="b \udfff")
    with pytest.raises(flywheel.WrongTypeError, match="unit"):
        wheel.decide(THRILLER, unit="x\ud800")
    wheel.signal(d, "completed", 1)
    assert wheel.summary().signals == 1  # the store still takes everything else


@pytest.mark.parametrize(
    "call",
    [
        lambda w, d: w.feedback(d, comment="hello\x00world"),
        lambda w, d: w.signal(d, "completed", 1, key="k\x00"),
        lambda w, d: w.edit(d, draft="a\x00", final="b"),
        lambda w, d: w.signal_batch([{"decision": d.id, "comment": "\x00"}]),
    ],
    ids=["comment", "key", "draft", "batch"],
)
def test_a_nul_character_is_refused_before_it_can_stop_the_store(
    wheel: flywheel.Wheel, call: Callable[[flywheel.Wheel, Any], None]
) -> None:
    # PostgreSQL refuses U+0000 in text: accepted, such a row would be retried forever and
    # hold back every row behind it
    d = wheel.decide(THRILLER)
    with pytest.raises(flywheel.ValueNotAllowedError, match="NUL"):
        call(wheel, d)
    wheel.signal(d, "completed", 1)
    wheel.flush()
    assert wheel.summary().signals == 1


def test_closed_wheel_never_hangs(make_wheel: Callable[..., flywheel.Wheel]) -> None:
    wheel = make_wheel()
    wheel.close()
    for call in (wheel.flush, wheel.aligned, wheel.summary, wheel.learn):
        with pytest.raises(flywheel.FlywheelError, match="closed"):
            call()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"ts": 1e300}, flywheel.ValueNotAllowedError),
        ({"ts": 1_767_225_600_000.0}, flywheel.ValueNotAllowedError),  # milliseconds
        ({"ts": float("nan")}, flywheel.ValueNotAllowedError),
        ({"ts": "2026-01-01"}, flywheel.WrongTypeError),
    ],
)
def test_timestamps_out_of_range(
    wheel: flywheel.Wheel, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    d = wheel.decide(THRILLER)
    with pytest.raises(error, match="ts"):
        wheel.signal(d, "completed", 1, **kwargs)


def test_odd_values_get_field_errors(wheel: flywheel.Wheel) -> None:
    d = wheel.decide(THRILLER)
    with pytest.raises(flywheel.WrongTypeError, match="name"):
        wheel.signal(d, ["completed"], 1)  # type: ignore[arg-type]
    with pytest.raises(flywheel.ValueNotAllowedError, match="too large"):
        wheel.signal(d, "completed", 10**400)
    wheel.signal(d, "completed", np.int64(1))  # NumPy scalars are numbers too
    wheel.feedback(d, rating=np.float32(4.0))  # type: ignore[arg-type]
    with pytest.raises(flywheel.WrongTypeError, match="as_of"):
        wheel.aligned(as_of="2024")  # type: ignore[arg-type]
    assert wheel.summary().signals == 2


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"signals": {"comment": "sum"}}, "signals.comment"),
        ({"reward": {"formula": "accepted", "missing": float("nan")}}, "reward.missing"),
        ({"reward": {"formula": "accepted", "window": "99999999999w"}}, "reward.window"),
        ({"knobs": {1: ["a"]}}, "knobs.1"),
        ({"context": {"size": {"type": "number", "min": 5, "max": 1}}}, "context.size"),
        ({"knobs": {"n": {"min": 0, "max": 3, "type": "text"}}}, "knobs.n.type"),
        ({"learn": {"default_advantage": float("inf")}}, "learn.default_advantage"),
    ],
)
def test_spec_holes_are_closed(change: dict[str, Any], path: str) -> None:
    data: dict[str, Any] = {
        "knobs": {"tone": ["a", "b"]},
        "reward": {"formula": "accepted"},
        **change,
    }
    with pytest.raises(SpecError) as caught:
        flywheel.Spec.from_dict(data)
    assert path in [e.path for e in caught.value.errors]


def test_rules_over_a_numeric_context_after_learning(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(
        {
            "knobs": {"k": [1, 2, 3]},
            "context": {"x": {"type": "number", "min": 0}},
            "skeleton": {"rules": ["k <= x"]},
            "reward": {"formula": "converted", "window": "1000d"},
            "learn": {"min_rows": 5},
        }
    )
    rng = np.random.default_rng(1)
    for _ in range(200):
        d = wheel.decide({"x": float(rng.uniform(1, 4))})
        wheel.signal(d, "converted", int(rng.random() < 0.3))
    assert wheel.learn(as_of=clock.now + 60).published
    with pytest.raises(flywheel.SkeletonViolationError):
        wheel.decide({"x": 0.5})
    assert wheel.decide({"x": 3.5}).params["k"] <= 3.5


def test_a_changed_spec_opens_cold_and_refuses_old_playbooks(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    first: dict[str, Any] = {
        "knobs": {"tone": ["a", "b"]},
        "context": {"genre": ["x", "y"]},
        "reward": {"formula": "converted", "window": "1000d"},
        "learn": {"min_rows": 5},
    }
    wheel = make_wheel(first)
    for i in range(50):
        wheel.signal(wheel.decide({"genre": "x"}), "converted", i % 2)
    assert wheel.learn(as_of=clock.now + 1).published
    wheel.close()
    changed = {**first, "context": {}}  # a context feature removed
    reopened = make_wheel(changed)
    assert reopened.playbook is None and reopened.decide().policy == "uniform"
    with pytest.raises(flywheel.InvalidInputError, match="another spec"):
        reopened.rollback(1)


def test_learn_treats_naive_datetimes_as_utc(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(
        {
            "knobs": {"tone": ["a", "b"]},
            "reward": {"formula": "converted"},
            "learn": {"min_rows": 1},
        }
    )
    wheel.signal(wheel.decide(), "converted", 1)
    naive = datetime.utcfromtimestamp(clock.now + 60)
    assert wheel.learn(as_of=naive).published


def test_forget_removes_idempotency_keys(wheel: flywheel.Wheel) -> None:
    d = wheel.decide(THRILLER, unit="alice")
    wheel.signal(d, "completed", 1, key="alice@example.com")
    wheel.forget("alice")
    assert wheel.store.query("SELECT count(*) AS n FROM signal_keys").to_pylist() == [{"n": 0}]
    assert PARAMS  # the shared fixtures stay importable
