"""The CLI through Typer's runner, in-process, on real files."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    return tmp_path


def test_init_writes_a_valid_spec_and_refuses_to_overwrite(project: Path) -> None:
    assert (project / "flywheel.toml").exists()
    assert runner.invoke(app, ["init"]).exit_code == 1
    assert runner.invoke(app, ["init", "--force"]).exit_code == 0
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0
    assert "132 of 144 combinations allowed" in result.output


def test_check_exits_2_with_field_errors(project: Path) -> None:
    spec = project / "flywheel.toml"
    spec.write_text(spec.read_text().replace("twist_count = [0, 1, 2, 3]", "twist_count = []"))
    result = runner.invoke(app, ["check", "--spec", str(spec)])
    assert result.exit_code == 2
    assert (
        "knobs.twist_count" in result.output
        and "expected a non-empty list of values" in result.output
    )
    result = runner.invoke(app, ["check", "--json"])
    assert result.exit_code == 2
    errors = json.loads(result.output)["errors"]
    assert errors[0]["path"] == "knobs.twist_count" and errors[0]["line"] == 7


def test_check_refuses_a_rule_naming_a_value_a_knob_does_not_have(project: Path) -> None:
    spec = project / "flywheel.toml"
    spec.write_text(
        spec.read_text().replace(
            "rules = [\"NOT (length = 'short' AND twist_count = 3)\"]",
            "rules = [\"NOT (length = 'shrt' AND twist_count = 3)\", \"twist_count != '3'\"]",
        )
    )
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert (
        "skeleton.rules[0]: \"NOT (length = 'shrt' AND twist_count = 3)\" compares length with"
        " 'shrt', which is not one of its values (allowed: 'short', 'medium', 'long') (line 13)"
    ) in output
    assert (
        "skeleton.rules[1]: \"twist_count != '3'\" compares twist_count, an integer knob, with"
        " the text '3' (allowed: 0, 1, 2, 3) (line 13)"
    ) in output


def test_check_warns_of_a_formula_signal_never_declared_and_status_names_it(
    project: Path,
) -> None:
    spec = project / "flywheel.toml"
    spec.write_text(spec.read_text().replace('formula = "completed"', 'formula = "complted"'))
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output  # a warning, not an error
    output = " ".join(result.output.split())
    assert (
        "warning reward.formula: names the signal 'complted', which is not declared under [signals]"
    ) in output
    assert "(line 20)" in output
    warnings = json.loads(runner.invoke(app, ["check", "--json"]).output)["warnings"]
    assert [(w["path"], w["line"]) for w in warnings] == [("reward.formula", 20)]
    with flywheel.open(spec) as wheel:
        d = wheel.decide({"genre": "drama"})
        wheel.signal(d, "completed", 1)
        assert wheel.status().never_received == ("complted",)
    state = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert state["signals_never_received"] == ["complted"] and state["pending"] == 1
    output = " ".join(runner.invoke(app, ["status"]).output.split())
    assert "the formula names 'complted', and no such signal was ever received" in output


def test_status_and_forget(project: Path) -> None:
    with flywheel.open("flywheel.toml") as wheel:
        for unit in ("ann", "ann", "ben"):
            d = wheel.decide({"genre": "drama"}, unit=unit)
            wheel.signal(d, "completed", 1)
        wheel.signal("00000000-0000-4000-8000-000000000009", "completed", 1)
    assert (project / ".flywheel" / "flywheel.duckdb").exists()  # relative to the spec
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert (counts["decisions"], counts["signals"], counts["orphans"], counts["complete"]) == (
        3,
        4,
        1,
        3,
    )
    assert counts["coverage"] == 1.0 and counts["playbook"] is None
    assert counts["signals_never_received"] == []
    assert "coverage" in runner.invoke(app, ["status"]).output
    result = runner.invoke(app, ["forget", "ann"])
    assert result.exit_code == 0
    assert "2 decisions" in result.output
    assert json.loads(runner.invoke(app, ["status", "--json"]).output)["decisions"] == 1


def test_missing_spec_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2
    assert "flywheel init" in result.output


def test_demo_runs_through_the_sdk(tmp_path: Path) -> None:
    spec = tmp_path / "demo" / "flywheel.toml"
    result = runner.invoke(app, ["demo", "--decisions", "2000", "--spec", str(spec)])
    assert result.exit_code == 0, result.output
    assert "aligned rows" in result.output
    assert (tmp_path / "demo" / "demo.duckdb").exists()
    assert (tmp_path / "demo" / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "completion per learn cycle" in result.output and "v1" in result.output
    health = result.output[result.output.index("health of the run") :]
    assert "Cycle time" in health and "slowest step" in health and "Force" in health
    with flywheel.open(spec) as wheel:
        summary = wheel.summary()
        assert wheel.playbook is not None and wheel.playbook.version >= 5  # it learned
    assert summary.decisions == 2000
    assert summary.complete > 1000 and summary.pending > 0 and summary.expired > 0


@pytest.mark.parametrize(
    "command",
    [
        "init",
        "check",
        "status",
        "forget",
        "demo",
        "learn",
        "playbook list",
        "playbook show",
        "playbook rollback",
        "health",
        "design",
        "evaluate",
    ],
)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "--spec" in result.output


def test_learn_and_playbook_commands(project: Path) -> None:
    import random

    from flywheel.demo import StoryWorld

    world, rng = StoryWorld(5), random.Random(5)
    with flywheel.open("flywheel.toml") as wheel:
        for _ in range(1500):
            context = world.context()
            d = wheel.decide(context)
            wheel.signal(d, "completed", rng.random() < world.completion(context, d.params))
    result = runner.invoke(app, ["learn"])
    assert result.exit_code == 0, result.output
    assert "published version 1" in result.output
    again = json.loads(runner.invoke(app, ["learn", "--json"]).output)
    assert (again["published"], again["reason"]) == (False, "no new data since version 1")
    forced = json.loads(runner.invoke(app, ["learn", "--json", "--force"]).output)
    assert (forced["published"], forced["version"]) == (True, 2)

    listed = json.loads(runner.invoke(app, ["playbook", "list", "--json"]).output)
    assert [p["version"] for p in listed] == [2, 1] and listed[0]["rows"] == 1500
    shown = json.loads(runner.invoke(app, ["playbook", "show", "1", "--json"]).output)
    genres = [s["context"]["genre"] for s in shown["segments"]]
    assert genres == ["thriller", "romance", "scifi", "drama"]
    segment = shown["segments"][0]
    assert set(segment["params"]) == {
        "opening_type",
        "twist_count",
        "emotional_density",
        "length",
        "tone",
    }
    assert segment["low"] <= segment["expected"] <= segment["high"]
    table = runner.invoke(app, ["playbook", "show"]).output
    assert "genre = thriller" in table and "opening_type =" in table

    rolled = runner.invoke(app, ["playbook", "rollback", "1"])
    assert rolled.exit_code == 0 and "restored version 1 as version 3" in rolled.output
    missing = runner.invoke(app, ["playbook", "show", "9"])
    assert missing.exit_code == 2 and "no playbook version 9" in missing.output


def test_playbook_show_before_any_learning(project: Path) -> None:
    result = runner.invoke(app, ["playbook", "show"])
    assert result.exit_code == 2
    assert "no playbook has been published" in result.output


def test_health_and_design_commands(project: Path) -> None:
    import random

    from flywheel.demo import StoryWorld

    world, rng = StoryWorld(5), random.Random(5)
    with flywheel.open("flywheel.toml", background=False) as wheel:
        for _ in range(1500):
            context = world.context()
            d = wheel.decide(context, unit=f"reader-{rng.randrange(300)}")
            wheel.signal(d, "completed", rng.random() < world.completion(context, d.params))
        assert wheel.learn().published
        for _ in range(200):
            wheel.decide(world.context(), unit=f"reader-{rng.randrange(300)}")

    shown = json.loads(runner.invoke(app, ["health", "--json"]).output)
    assert shown["decisions"] == 1700
    steps = {t["name"]: t for t in shown["stages"]["transitions"]}
    assert steps["signal"]["passed"] == 1500 and steps["learned"]["passed"] == 1500
    assert [v["served_by"] for v in shown["learning"]["versions"]] == ["cold start", "v1"]
    assert 0 < shown["force"]["value"] < 1
    text = runner.invoke(app, ["health"])
    assert text.exit_code == 0, text.output
    assert "decided → served" in text.output and "Force" in text.output

    at = ["--as-of", shown["as_of"]]
    written = runner.invoke(app, ["design", "-o", "design.md", *at])
    assert written.exit_code == 0, written.output
    document = (project / "design.md").read_text()
    for heading in ("Data audit", "Loops in place and missing", "Metrics", "Moat", "90-day plan"):
        assert heading in document
    assert "- [ ]" in document
    again = runner.invoke(app, ["design", *at])
    assert again.output == document  # the same data and moment: the same document

    bad = runner.invoke(app, ["health", "--window", "soon"])
    assert bad.exit_code == 2 and "window" in bad.output
    bad = runner.invoke(app, ["design", "--as-of", "yesterday"])
    assert bad.exit_code == 2 and "--as-of" in bad.output


def test_evaluate_command(project: Path) -> None:
    import random

    from flywheel.demo import StoryWorld

    world, rng = StoryWorld(5), random.Random(5)
    with flywheel.open("flywheel.toml", background=False) as wheel:
        rows = []
        for _ in range(1500):
            context = world.context()
            allowed = wheel.spec.space.allowed(context)
            params = wheel.spec.space.params(int(allowed[rng.randrange(len(allowed))]))
            done = rng.random() < world.completion(context, params)
            rows.append(
                {"context": context, "params": params, "results": {"completed": done},
                 "policy": "editors", "propensity": 1 / len(allowed)}
            )  # fmt: skip
        wheel.log_many(rows)
        assert wheel.learn().published
    shown = json.loads(runner.invoke(app, ["evaluate", "--playbook", "1", "--json"]).output)
    assert shown["rows"] == 1500 and shown["policies"] == {"editors": 1500}
    methods = {e["method"]: e for e in shown["estimates"]}
    assert set(methods) == {"ips", "snips", "dr"}
    assert all(e["low"] <= e["value"] <= e["high"] for e in methods.values())
    text = runner.invoke(app, ["evaluate", "--playbook", "1", "--greedy"])
    assert text.exit_code == 0 and "v1 (greedy)" in text.output and "DR" in text.output

    policy = project / "policy.csv"
    policy.write_text(
        "genre,opening_type,twist_count,emotional_density,length,probability\n"
        + "".join(
            f"{g},question,1,mid,medium,1\n" for g in ("thriller", "romance", "scifi", "drama")
        )
    )
    table = json.loads(runner.invoke(app, ["evaluate", "--policy", str(policy), "--json"]).output)
    assert table["target"] == "the given policy" and table["rows"] == 1500
    assert runner.invoke(app, ["evaluate"]).exit_code == 2
    missing = runner.invoke(app, ["evaluate", "--playbook", "1", "--logged-by", "nobody"])
    assert missing.exit_code == 2 and "nothing to evaluate" in missing.output


def test_learn_and_status_as_of_a_moment_in_history(project: Path) -> None:
    """History imported with its own times is learned on its own clock: --as-of cuts the
    rows, and status counts what had happened by then."""
    rows = project / "history.csv"
    lines = ["genre,opening_type,twist_count,emotional_density,length,completed,when"]
    for day in range(1, 29):
        for genre in ("thriller", "romance", "scifi", "drama"):
            for n in range(12):
                done = (n + day) % 3 == 0
                lines.append(f"{genre},question,{n % 4},mid,medium,{int(done)},2020-02-{day:02d}")
    rows.write_text("\n".join(lines) + "\n")
    imported = runner.invoke(app, ["import", str(rows), "--time", "when"])
    assert imported.exit_code == 0, imported.output
    early = json.loads(runner.invoke(app, ["status", "--json", "--as-of", "2020-02-11"]).output)
    assert early["decisions"] == 11 * 4 * 12  # 1 to 11 February: up to the moment itself
    learned = json.loads(
        runner.invoke(app, ["learn", "--json", "--as-of", "2020-02-15T00:00Z"]).output
    )
    assert learned["published"], learned
    listed = json.loads(runner.invoke(app, ["playbook", "list", "--json"]).output)
    assert listed[0]["rows"] == 15 * 4 * 12  # the rows decided by 15 February only


def test_history_is_imported_learned_and_analysed_on_its_own_clock(project: Path) -> None:
    """After an import of old logs, import names their span, learn cuts at their newest row
    (the second cycle's gate judges what came after the first's cut), status points at
    their clock, and analyze --as-of reads the findings as they stood then."""
    header = "genre,opening_type,twist_count,emotional_density,length,completed,when"

    def write(name: str, first: int, days: int) -> Path:
        lines, rng = [header], random.Random(first)
        for day in range(first, first + days):
            for genre in ("thriller", "romance", "scifi", "drama"):
                for n in range(12):
                    opening = "suspense" if n % 2 else "question"
                    done = rng.random() < (0.5 if n % 2 else 0.3)
                    when = (datetime(2020, 1, 1, n, tzinfo=UTC) + timedelta(days=day)).isoformat()
                    lines.append(f"{genre},{opening},{n % 4},mid,medium,{int(done)},{when}")
        path = project / name
        path.write_text("\n".join(lines) + "\n")
        return path

    january = runner.invoke(app, ["import", str(write("january.csv", 0, 31)), "--time", "when"])
    assert january.exit_code == 0, january.output
    text = " ".join(january.output.split())
    assert "history from 2020-01-01T00:00:00Z to 2020-01-31T11:00:00Z" in text, text
    assert "learn --as-of TIME" in text

    first = json.loads(runner.invoke(app, ["learn", "--json"]).output)
    assert first["published"], first
    assert "as of 2020-01-31T11:00:00Z, the newest row of the history" in first["reason"]
    status = runner.invoke(app, ["status"])
    assert "history: rows from 2020-01-01T00:00:00Z to 2020-01-31T11:00:00Z" in " ".join(
        status.output.split()
    ), status.output
    assert "status --as-of 2020-01-31T11:00:00Z" in status.output.replace("\n", "")
    shown = runner.invoke(app, ["playbook", "show", "1"])
    assert "learned as of 2020-01-31T11:00:00Z" in shown.output, shown.output

    february = runner.invoke(app, ["import", str(write("february.csv", 31, 29)), "--time", "when"])
    assert february.exit_code == 0, february.output
    second = json.loads(runner.invoke(app, ["learn", "--json"]).output)
    assert second["published"], second
    windows = next(c for c in second["checks"] if c["name"] == "windows")
    assert windows["detail"]["recent_rows"] == 29 * 4 * 12  # February, after version 1's cut
    on_its_clock = runner.invoke(app, ["status", "--as-of", "2020-03-01"])
    assert "flywheel status as of 2020-03-01T00:00:00Z" in on_its_clock.output
    assert "history:" not in on_its_clock.output

    then = runner.invoke(app, ["analyze", "--as-of", "2020-02-15", "--format", "json"])
    assert then.exit_code == 0, then.output
    found = json.loads(then.output)
    assert found["version"] == 1 and found["as_of"].startswith("2020-01-31T11:00:00")
    latest = json.loads(runner.invoke(app, ["analyze", "--format", "json"]).output)
    assert latest["version"] == 2 and latest["as_of"].startswith("2020-02-29T11:00:00")
    too_early = runner.invoke(app, ["analyze", "--as-of", "2019-06-01"])
    assert too_early.exit_code == 2 and "as_of" in too_early.output
