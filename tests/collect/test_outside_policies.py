"""Rows chosen by a policy that is not Flywheel's: its name and its propensity, stored as given."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import flywheel
from flywheel.demo import example_spec
from tests.conftest import Clock

CONTEXT = {"genre": "thriller"}
PARAMS = {
    "opening_type": "question",
    "twist_count": 1,
    "emotional_density": "mid",
    "length": "medium",
}


@pytest.fixture
def wheel(each_store: str) -> Iterator[flywheel.Wheel]:
    with flywheel.open(example_spec(), store=each_store, clock=Clock(), background=False) as w:
        yield w


def stored(wheel: flywheel.Wheel) -> list[dict[str, Any]]:
    wheel.flush()
    return wheel.store.query(
        "SELECT CAST(id AS VARCHAR) AS id, policy, playbook, propensity FROM decisions"
    ).to_pylist()


def test_an_outside_policy_is_stored_with_its_propensity(wheel: flywheel.Wheel) -> None:
    named = wheel.log(
        context=CONTEXT, params=PARAMS, results={"completed": 1}, policy="ranker-v3",
        propensity=0.25,
    )  # fmt: skip
    unnamed = wheel.log(context=CONTEXT, params=PARAMS, results={}, propensity=0.5)
    unknown = wheel.log(context=CONTEXT, params=PARAMS, results={}, policy=" editors ")
    plain = wheel.log(context=CONTEXT, params=PARAMS, results={})
    rows = {r["id"]: r for r in stored(wheel)}
    assert (rows[named]["policy"], rows[named]["playbook"], rows[named]["propensity"]) == (
        "ranker-v3",
        None,
        0.25,
    )
    assert (rows[unnamed]["policy"], rows[unnamed]["propensity"]) == ("outside", 0.5)
    assert (rows[unknown]["policy"], rows[unknown]["propensity"]) == ("editors", None)
    assert (rows[plain]["policy"], rows[plain]["propensity"]) == ("logged", None)


@pytest.mark.parametrize(
    ("given", "field", "reason"),
    [
        ({"propensity": 0}, "propensity", "in (0, 1]"),
        ({"propensity": 1.5}, "propensity", "in (0, 1]"),
        ({"propensity": True}, "propensity", "in (0, 1]"),
        ({"policy": "thompson", "propensity": 0.2}, "policy", "Flywheel gives its own"),
        ({"policy": "", "propensity": 0.2}, "policy", "1 to 100 characters"),
        ({"policy": 7}, "policy", "1 to 100 characters"),
        ({"policy": "ranker", "playbook": 1, "propensity": 0.2}, "policy", "not both"),
    ],
)
def test_a_wrong_policy_or_propensity_is_refused_and_nothing_is_written(
    wheel: flywheel.Wheel, given: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(flywheel.InvalidInputError) as err:
        wheel.log(context=CONTEXT, params=PARAMS, results={"completed": 1}, **given)
    assert err.value.field == field and reason in err.value.reason
    with pytest.raises(flywheel.InvalidInputError) as err:
        wheel.log_many(
            [
                {"context": CONTEXT, "params": PARAMS, "results": {}, "policy": "ranker"},
                {"context": CONTEXT, "params": PARAMS, "results": {}, **given},
            ]
        )
    assert err.value.field == f"rows[1].{field}"
    assert stored(wheel) == []


def test_outside_rows_are_learned_from_but_are_not_the_wheel_s_own_turn(
    wheel: flywheel.Wheel,
) -> None:
    import random

    from flywheel.demo import StoryWorld

    world, rng = StoryWorld(3), random.Random(3)
    for _ in range(600):
        context = world.context()
        allowed = wheel.spec.space.allowed(context)
        params = wheel.spec.space.params(int(allowed[rng.randrange(len(allowed))]))
        done = rng.random() < world.completion(context, params)
        wheel.log(
            context=context, params=params, results={"completed": done}, policy="ranker-v3",
            propensity=1 / len(allowed),
        )  # fmt: skip
    result = wheel.learn()
    assert result.published, result.reason
    health = wheel.health()
    # rows the wheel did not serve: learned from, but not its closed loop nor a version's
    assert health.force.closed_loop == 0
    assert health.learning.versions == ()
    assert health.stages.transitions[2].passed == health.stages.transitions[2].reached
