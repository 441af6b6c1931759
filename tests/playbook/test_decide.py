"""The cold-start policy never serves a combination the skeleton forbids."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from flywheel.collect.record import IdFactory
from flywheel.errors import SkeletonViolationError, SpecError
from flywheel.playbook import Decider
from flywheel.rules import compile_rule
from flywheel.spec import Spec

LEVELS = ["a", "b", "c"]


@st.composite
def specs(draw: st.DrawFn) -> tuple[Spec, list[str]]:
    n_knobs = draw(st.integers(1, 3))
    knobs = {f"k{i}": LEVELS[: draw(st.integers(1, 3))] for i in range(n_knobs)}
    knobs["n"] = [0, 1, 2, 3]  # type: ignore[list-item]
    clauses = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(knobs)))
        value = draw(st.sampled_from(knobs[name]))
        other = draw(
            st.sampled_from(["n <= 2", "n > 0", "g = 'x'", "n < 3 OR g <> 'y'", "n <= size"])
        )
        literal = f"'{value}'" if isinstance(value, str) else str(value)
        clauses.append(f"NOT ({name} = {literal} AND {other})")
    data: dict[str, Any] = {
        "knobs": knobs,
        "context": {"g": ["x", "y"], "size": "number"},
        "skeleton": {"rules": clauses, "fixed": {"mode": "safe"}},
        "reward": {"formula": "accepted"},
    }
    try:
        return Spec.from_dict(data), clauses
    except SpecError:  # rules that exclude everything for some context are rightly refused
        reject()
        raise


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],  # on busy machines
)
@given(specs(), st.sampled_from(["x", "y"]), st.integers(0, 4), st.booleans())
def test_no_served_combination_breaks_a_rule(
    case: tuple[Spec, list[str]], g: str, size: int, explore: bool
) -> None:
    spec, clauses = case
    names = [k.name for k in spec.knobs] + ["g", "size"]
    rules = [compile_rule(c, names) for c in clauses]
    decider = Decider(spec)
    context = {"g": g, "size": float(size)}
    if len(spec.space.allowed(context)) == 0:
        with pytest.raises(SkeletonViolationError, match="allow no combination"):
            decider.decide("t", context, explore)
        return
    for _ in range(30):
        decision = decider.decide("t", context, explore)
        params, propensity = decision.params, decision.propensity
        assert params["mode"] == "safe"
        assert 0 < propensity <= 1
        columns = {**{k: params[k] for k in params}, **context}
        for rule in rules:
            assert bool(rule.holds(columns, 1)[0]), (rule.sql, params, context)


def test_uniform_policy_is_uniform_over_allowed() -> None:
    spec = Spec.from_dict(
        {"knobs": {"a": [1, 2, 3]}, "skeleton": {"rules": ["a <> 2"]}, "reward": {"formula": "x"}}
    )
    decider = Decider(spec)
    counts = Counter(decider.decide("t", {}).params["a"] for _ in range(6000))
    assert set(counts) == {1, 3}
    assert abs(counts[1] - 3000) < 300  # ~6 standard deviations


def test_ids_are_unique_and_uuid_shaped() -> None:
    import uuid

    ids = IdFactory()
    made = [ids() for _ in range(10_000)]
    assert len(set(made)) == 10_000
    assert all(uuid.UUID(i).version == 4 for i in made[:10])
    assert IdFactory()() != IdFactory()()
