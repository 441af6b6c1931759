"""The satisfaction trigger: once per fall of a signal's mean below its threshold, audited and
sent to the webhook, on every backend; a learn cycle when asked; nothing on too few values."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flywheel
from flywheel.align import stamp
from flywheel.cli import app
from flywheel.errors import SpecError
from flywheel.improve import triggers
from flywheel.spec import Spec
from flywheel.turn import Cycle
from tests.conftest import DAY, Clock, wait_for
from tests.improve.assistant import SPEC
from tests.improve.test_outputs import _Hook, hook  # noqa: F401  (the webhook fixture)

CONTEXT = {"topic": "tech"}
SATISFACTION = {"signal": "rating", "below": 3.5, "window": "7d", "min_count": 5}


def spec_with(**satisfaction: Any) -> dict[str, Any]:
    return {**SPEC, "triggers": {"satisfaction": {**SATISFACTION, **satisfaction}}}


def rate(wheel: flywheel.Wheel, ratings: list[float]) -> None:
    """One decision per rating, rated at once (at the wheel's clock)."""
    for rating in ratings:
        wheel.feedback(wheel.decide(CONTEXT), rating=rating)
    wheel.flush()


def fired(wheel: flywheel.Wheel) -> list[dict[str, Any]]:
    """The trigger's audit entries, oldest first."""
    return [e for e in reversed(wheel.events(limit=100)) if e["action"] == "trigger"]


def test_fires_once_per_crossing_audited_and_at_the_webhook(
    each_store: str,
    hook: _Hook,  # noqa: F811
    clock: Clock,
) -> None:
    spec = {**spec_with(), "alerts": {"webhook": hook.url}}
    wheel = flywheel.open(spec, store=each_store, clock=clock, background=False)
    try:
        rate(wheel, [5] * 5)
        wheel.watch()  # mean 5: above
        assert fired(wheel) == []
        clock.now += DAY
        rate(wheel, [1] * 10)  # (5 * 5 + 10) / 15
        wheel.watch()
        reason = "satisfaction: mean rating 2.33 over the last 7d (15 decisions) fell below 3.5"
        assert [e["reason"] for e in fired(wheel)] == [reason]
        entry = fired(wheel)[0]
        assert entry["actor"] == "triggers"
        detail = entry["detail"]
        assert detail["trigger"] == "satisfaction" and detail["count"] == 15
        assert detail["mean"] == pytest.approx(35 / 15) and detail["below"] == 3.5
        assert detail["action"] == "alert" and detail["as_of"] == stamp(clock.now)
        rate(wheel, [2] * 5)
        wheel.watch()  # still below: nothing more
        assert len(fired(wheel)) == 1
        state = wheel.status().triggers
        assert state is not None and state["satisfaction"]["state"] == "below"
        assert state["satisfaction"]["since"] == stamp(clock.now)

        clock.now += 8 * DAY  # the low ratings leave the window
        rate(wheel, [5] * 10)
        wheel.watch()  # back above: re-armed, nothing recorded
        assert len(fired(wheel)) == 1
        state = wheel.status().triggers
        assert state is not None and state["satisfaction"]["state"] == "above"
        rate(wheel, [1] * 20)  # (10 * 5 + 20) / 30
        wheel.watch()
        assert [e["reason"] for e in fired(wheel)][1] == (
            "satisfaction: mean rating 2.33 over the last 7d (30 decisions) fell below 3.5"
        )
        assert len(fired(wheel)) == 2
        assert wait_for(lambda: len(hook.bodies) >= 2)
    finally:
        wheel.close()  # flushes the alerts
    assert [(b["event"], b["actor"], b["flywheel"]) for b in hook.bodies] == [
        ("trigger", "triggers", "assistant")
    ] * 2
    assert hook.bodies[0]["reason"] == reason
    assert hook.bodies[0]["detail"]["count"] == 15


def test_one_process_fires_among_those_sharing_the_store(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    first = make_wheel(spec_with())
    rate(first, [1] * 6)
    event = triggers.satisfaction(first.store, first.spec, first.now())
    assert event is not None and event["event"] == "trigger"
    # another check of the same crossing (another process reading the same store) claims
    # nothing: the state in the store is already below
    assert triggers.satisfaction(first.store, first.spec, first.now()) is None
    assert len(fired(first)) == 1


def test_action_learn_runs_a_cycle_started_by_the_trigger(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec_with(action="learn"))
    rate(wheel, [2, 1, 2, 1, 2, 1])
    assert Cycle.read(wheel.store) is None
    wheel.watch()
    cycle = Cycle.read(wheel.store)
    assert cycle is not None and cycle.trigger == "satisfaction"
    assert fired(wheel)[0]["detail"]["action"] == "learn"
    cycles = wheel.status().cycles
    assert cycles is not None and cycles["last"]["trigger"] == "satisfaction"
    wheel.watch()  # still below: no second cycle
    assert Cycle.read(wheel.store) == cycle


def test_nothing_fires_below_min_count(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(spec_with(action="learn"))
    rate(wheel, [1] * 4)
    wheel.decide(CONTEXT)  # a decision without a rating counts for nothing
    wheel.watch()
    assert fired(wheel) == [] and Cycle.read(wheel.store) is None
    state = wheel.status().triggers
    assert state is not None
    assert state["satisfaction"]["count"] == 4 and state["satisfaction"]["decisions"] == 5
    assert not state["satisfaction"]["judged"] and state["satisfaction"]["state"] == "above"
    rate(wheel, [1])
    wheel.watch()
    assert len(fired(wheel)) == 1


def test_status_shows_the_trigger_in_one_line(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "flywheel.toml"
    path.write_text(
        f"""name = "assistant"
[knobs]
style = ["plain", "steps"]
[context]
topic = ["billing", "tech"]
[reward]
formula = "(rating - 1) / 4"
[storage]
url = "duckdb:///{tmp_path / "flywheel.duckdb"}"
[triggers]
satisfaction = {{ signal = "rating", below = 3.5, min_count = 2 }}
"""
    )
    with flywheel.open(path, clock=clock, background=False) as wheel:
        rate(wheel, [2, 3])
        wheel.watch()
    result = CliRunner().invoke(app, ["status", "--spec", str(path), "--as-of", stamp(clock.now)])
    assert result.exit_code == 0, result.output
    assert (
        "trigger satisfaction (alert): below 3.5 since 2026-01-01T00:00:00; now mean rating 2.5"
        " over the last 7d (2 decisions)"
    ) in " ".join(result.output.split())
    state = json.loads(
        CliRunner()
        .invoke(app, ["status", "--spec", str(path), "--json", "--as-of", stamp(clock.now)])
        .output
    )
    assert state["triggers"]["satisfaction"]["state"] == "below"


def test_the_section_is_optional_and_outside_the_digest() -> None:
    plain = Spec.from_dict(SPEC)
    assert plain.triggers.satisfaction is None
    spec = Spec.from_dict(spec_with())
    found = spec.triggers.satisfaction
    assert found is not None and found.window_seconds == 7 * DAY and found.action == "alert"
    assert found.below == 3.5 and found.min_count == 5
    assert spec.digest == plain.digest
    defaults = Spec.from_dict(
        {**SPEC, "triggers": {"satisfaction": {"signal": "thumbs", "below": 1}}}
    )
    found = defaults.triggers.satisfaction
    assert found is not None and (found.window, found.action, found.min_count) == (
        "7d",
        "alert",
        30,
    )


@pytest.mark.parametrize(
    ("given", "path", "message"),
    [
        ({"signal": "ratng"}, "triggers.satisfaction.signal", "'ratng' is not a signal"),
        ({"signal": "comment"}, "triggers.satisfaction.signal", "'comment' is a text signal"),
        ({"window": "7x"}, "triggers.satisfaction.window", "is not a duration"),
        ({"window": "0d"}, "triggers.satisfaction.window", "longer than zero"),
        ({"action": "page"}, "triggers.satisfaction.action", "learn"),
        ({"below": "low"}, "triggers.satisfaction.below", ""),
        ({"min_count": 0}, "triggers.satisfaction.min_count", ""),
        ({"when": "now"}, "triggers.satisfaction.when", ""),
    ],
)
def test_spec_errors_name_the_field(given: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        Spec.from_dict(spec_with(**given))
    assert [e.path for e in err.value.errors] == [path]
    assert message in err.value.errors[0].message
