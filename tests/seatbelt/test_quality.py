"""[quality] rules and the quarantine, through the SDK and the CLI, on real DuckDB files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app
from flywheel.errors import SpecError
from tests.conftest import DAY, Clock


def sales(**quality: Any) -> dict[str, Any]:
    return {
        "name": "sales",
        "knobs": {"offer": ["discount", "trial", "demo"], "channel": ["email", "call"]},
        "context": {"stage": ["lead", "won", "lost"], "lead_id": "number"},
        "signals": {"amount": "last", "probability": "last", "closed": "max"},
        "reward": {"formula": "closed", "window": "30d"},
        "quality": {
            "rules": ["amount > 0", "stage IN ('lead', 'won')"],
            "required": ["amount"],
            "ranges": {"probability": [0, 100]},
            "unique": ["lead_id"],
            **quality,
        },
        "learn": {"min_rows": 10},
    }


def row(lead: int, **results: Any) -> dict[str, Any]:
    return {
        "context": {"stage": "lead", "lead_id": float(lead)},
        "params": {"offer": ["discount", "trial", "demo"][lead % 3], "channel": "email"},
        "results": {"closed": lead % 2, "amount": 100.0, "probability": 50.0, **results},
    }


def test_invalid_quality_rules_are_load_errors_naming_each_rule() -> None:
    bad = sales(
        rules=["amount >", "nope > 1", "stage > 5", "amount + 1"],
        required=["missing"],
        ranges={"stage": [0, 1], "amount": [5, 1]},
        unique=["ghost"],
    )
    with pytest.raises(SpecError) as caught:
        flywheel.Spec.from_dict(bad)
    found = {e.path: e.message for e in caught.value.errors}
    assert "not a valid SQL expression" in found["quality.rules[0]"]
    assert "'nope'" in found["quality.rules[1]"]
    assert "cannot be evaluated" in found["quality.rules[2]"]
    assert "not a boolean condition" in found["quality.rules[3]"]
    assert found["quality.required.missing"] == "is not a signal"
    assert found["quality.ranges.stage"] == "is not numeric"
    assert "low <= high" in found["quality.ranges.amount"]
    assert "is not a knob" in found["quality.unique.ghost"]


def test_rules_may_combine_conditions_with_and_or_not() -> None:
    rules = ["amount IS NULL OR amount > 0", "probability >= 0 AND NOT (stage = 'lost')"]
    spec = flywheel.Spec.from_dict(sales(rules=rules))
    assert list(spec.quality.rules)[:2] == rules


def test_quality_settings_do_not_change_the_playbook_digest() -> None:
    a = flywheel.Spec.from_dict(sales())
    b = flywheel.Spec.from_dict({**sales(rules=[]), "seatbelt": {"alpha": 0.001}})
    assert a.digest == b.digest


def _load(wheel: flywheel.Wheel) -> dict[str, str]:
    """40 good rows and 12 bad ones; returns the ids of the bad ones by what is wrong."""
    ids = {}
    for lead in range(40):
        wheel.log(**row(lead))
    ids["negative"] = wheel.log(**row(100, amount=-5.0))
    ids["zero"] = wheel.log(**row(101, amount=0.0))
    ids["no_amount"] = wheel.log(**row(102, amount=None))
    ids["range"] = wheel.log(**row(103, probability=150.0))
    ids["stage"] = wheel.log(**{**row(104), "context": {"stage": "lost", "lead_id": 104.0}})
    ids["duplicate"] = wheel.log(**row(7))  # lead 7 again: the later row is the duplicate
    ids["two"] = wheel.log(**row(105, amount=-1.0, probability=-3.0))
    return ids


def test_failing_rows_are_quarantined_with_every_failed_check(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel({**sales(), "seatbelt": {"max_quarantined": 0.2}})
    ids = _load(wheel)
    clock.now += DAY
    state = wheel.status()
    assert state.quality is not None
    q = state.quality
    assert (q.received, q.quarantined) == (47, 7)
    assert q.received == q.accepted + q.quarantined
    lines = {r.rule: r.line() for r in q.rules}
    assert lines["amount > 0"] == "amount > 0: kept 44/47 (93.6%)"
    assert lines["amount is required"].startswith("amount is required: kept 46/47")
    assert lines["duplicate lead_id"].startswith("duplicate lead_id: kept 46/47")

    table = {r["decision_id"]: r["failed"].split("\n") for r in wheel.quarantined().to_pylist()}
    assert set(table) == set(ids.values())
    assert table[ids["negative"]] == ["amount > 0"]
    assert table[ids["no_amount"]] == ["amount is required"]
    assert table[ids["range"]] == ["probability in [0, 100]"]
    assert table[ids["stage"]] == ["stage IN ('lead', 'won')"]
    assert table[ids["duplicate"]] == ["duplicate lead_id"]
    assert sorted(table[ids["two"]]) == ["amount > 0", "probability in [0, 100]"]

    result = wheel.learn()  # the learner reads only the accepted rows
    assert result.published
    playbook = wheel.playbook
    assert playbook is not None and playbook.meta["training"]["rows"] == q.accepted == 40


def test_release_rechecks_after_a_data_fix_and_accept_is_an_audited_override(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(sales())
    ids = _load(wheel)
    clock.now += 60
    assert wheel.release() == (0, 7)  # nothing fixed yet: all stay
    wheel.signal(ids["negative"], "amount", 250.0)  # the corrected amount (combine = last)
    clock.now += 60
    assert wheel.release([ids["negative"], ids["zero"]]) == (1, 1)
    history = wheel.quarantine_history(ids["negative"])
    assert [h["action"] for h in history] == ["quarantined", "released"]
    state = wheel.status()
    assert state.quality is not None and state.quality.quarantined == 6  # stays released
    with pytest.raises(flywheel.InvalidInputError, match="not in quarantine"):
        wheel.release([ids["negative"]])
    assert wheel.release(accept=True) == (6, 0)
    assert wheel.status().quality.quarantined == 0  # type: ignore[union-attr]
    events = [e for e in wheel.status().events if e["action"] == "override"]
    assert events and "accepted 6 quarantined rows" in events[0]["reason"]


def test_forget_removes_quarantine_entries(make_wheel: Callable[..., flywheel.Wheel]) -> None:
    wheel = make_wheel(sales())
    wheel.log(**row(1, amount=-1.0), unit="ada@example.com")
    wheel.status()
    assert len(wheel.quarantined()) == 1
    wheel.forget("ada@example.com")
    assert wheel.store.query("SELECT count(*) AS n FROM quarantine")["n"][0].as_py() == 0


def test_cli_quarantine_and_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "flywheel.toml"
    spec.write_text(
        """
name = "sales"
[knobs]
offer = ["discount", "trial"]
[context]
stage = ["lead", "won", "lost"]
[signals]
amount = "last"
[reward]
formula = "amount"
[quality]
rules = ["amount > 0"]
"""
    )
    with flywheel.open(spec) as wheel:
        bad = wheel.log(
            context={"stage": "lead"}, params={"offer": "trial"}, results={"amount": -2}
        )
        wheel.log(context={"stage": "won"}, params={"offer": "trial"}, results={"amount": 5})
    runner = CliRunner()
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "received 2 = accepted 1 + quarantined 1" in status.output
    assert "amount > 0: kept 1/2 (50.0%)" in status.output
    listed = runner.invoke(app, ["quarantine", "list", "--json"])
    assert json.loads(listed.output)[0]["decision_id"] == bad
    shown = json.loads(runner.invoke(app, ["quarantine", "show", bad]).output)
    assert shown["row"]["failed"] == "amount > 0" and shown["history"][0]["actor"] == "seatbelt"
    released = runner.invoke(app, ["quarantine", "release"])
    assert "released 0; still quarantined 1" in released.output
    released = runner.invoke(app, ["quarantine", "release", bad, "--accept"])
    assert "released 1; still quarantined 0" in released.output
    assert json.loads(runner.invoke(app, ["status", "--json"]).output)["quality"]["accepted"] == 2


def stories(**skeleton: Any) -> dict[str, Any]:
    return {
        "knobs": {"length": ["short", "long"], "twists": [0, 1, 2, 3]},
        "context": {"genre": ["thriller", "drama"]},
        "skeleton": {
            "rules": ["NOT (length = 'short' AND twists = 3)", "genre <> 'drama' OR twists < 2"],
            **skeleton,
        },
        "signals": {"completed": "max"},
        "reward": {"formula": "completed"},
        "learn": {"min_rows": 10},
        "seatbelt": {"max_quarantined": 0.1},  # 2 of 22 rows break a rule here
    }


def _story(i: int, genre: str = "thriller", length: str = "long", twists: int = 1) -> Any:
    return {
        "context": {"genre": genre},
        "params": {"length": length, "twists": twists},
        "results": {"completed": i % 2},
    }


@pytest.mark.parametrize("backend", ["duckdb", "postgresql"])
def test_logged_rows_that_break_a_skeleton_rule_are_quarantined_with_it(
    backend: str, request: pytest.FixtureRequest, db: Path, clock: Clock
) -> None:
    url = f"duckdb:///{db}" if backend == "duckdb" else request.getfixturevalue("pg_url")
    with flywheel.open(stories(), store=url, clock=clock) as wheel:
        for i in range(20):
            wheel.log(**_story(i, twists=i % 4))
        short = wheel.log(**_story(0, length="short", twists=3))
        drama = wheel.log(**_story(1, genre="drama", twists=2))
        clock.now += 60
        result = wheel.learn()  # never learned from, though the spec has no [quality] checks
        assert result.published and wheel.playbook is not None
        assert wheel.playbook.meta["training"]["rows"] == 20
        assert result.quality is not None and result.quality.quarantined == 2
        q = wheel.status().quality
        assert q is not None and (q.received, q.accepted, q.quarantined) == (22, 20, 2)
        failed = {r["decision_id"]: r["failed"] for r in wheel.quarantined().to_pylist()}
        assert failed == {
            short: "skeleton rule: NOT (length = 'short' AND twists = 3)",
            drama: "skeleton rule: genre <> 'drama' OR twists < 2",
        }
        assert wheel.release() == (0, 2)  # a re-check still finds the rule broken


def test_complete_rows_posted_over_http_that_break_a_skeleton_rule_are_quarantined(
    db: Path,
) -> None:
    from tests.server.test_app import serving

    with flywheel.open(stories(), store=f"duckdb:///{db}", refresh=0) as wheel:
        with serving(wheel) as client:
            rows = [_story(0), _story(1, length="short", twists=3)]
            status, posted = client.call("POST", "/v1/rows", {"rows": rows})
            assert status == 200, posted
            status, answer = client.call("GET", "/v1/status")
            assert status == 200, answer
        assert answer["quality"]["received"] == 2
        assert answer["quality"]["quarantined"] == 1
        (held,) = wheel.quarantined().to_pylist()
        assert held["decision_id"] == posted["ids"][1]
        assert held["failed"] == "skeleton rule: NOT (length = 'short' AND twists = 3)"


def test_cli_quarantine_list_names_the_failed_checks_beside_a_knob_called_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flywheel.toml").write_text(
        """
[knobs]
failed = ["knob-a", "knob-b"]
[reward]
formula = "amount"
[signals]
amount = "last"
[quality]
rules = ["amount > 0"]
"""
    )
    with flywheel.open(tmp_path / "flywheel.toml") as wheel:
        wheel.log(context={}, params={"failed": "knob-a"}, results={"amount": -1})
    listed = CliRunner().invoke(app, ["quarantine", "list"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert "amount > 0" in listed.output and "knob-a" not in listed.output


def test_the_first_cycle_publishes_nothing_above_the_quarantine_limit(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(sales())  # seatbelt.max_quarantined: 5% by default
    _load(wheel)
    clock.now += DAY
    result = wheel.learn()
    assert not result.published and wheel.playbook is None
    assert "7 of 47 rows quarantined (14.9%" in result.reason
    assert "seatbelt.max_quarantined is 5.0%" in result.reason
    assert wheel.status().events[0]["action"] == "rejected"
    # the limit's earlier name, [quality] max_failure_rate, still sets it
    looser = make_wheel(sales(max_failure_rate=0.2))
    assert looser.spec.seatbelt.max_quarantined == 0.2
    assert looser.learn().published
