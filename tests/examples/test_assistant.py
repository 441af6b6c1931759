"""The assistant example (examples/assistant/) tells its story: the planted themes are found,
the revised prompt and the better model end up served, the worse model is rolled back by the
guard, the example memory refreshes, and the training sets are written as reported."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "assistant"
MARGIN = 0.8
"""How much higher, at least, the last day's mean rating is than the first's."""


def example(name: str) -> ModuleType:
    """A module of the example, which runs as a script with its modules beside it."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    return __import__(name)


@pytest.fixture(scope="module")
def story(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, Any], list[str]]]:
    """The demo's month, told once: in a DuckDB file beside its outputs, or on a schema of
    its own on the PostgreSQL server with ``FLYWHEEL_TEST_STORE=postgresql``."""
    out = tmp_path_factory.mktemp("assistant")
    said: list[str] = []
    store, server, schema = None, None, f"flywheel_test_{uuid.uuid4().hex[:12]}"
    if os.environ.get("FLYWHEEL_TEST_STORE") == "postgresql":
        server = str(request.getfixturevalue("postgres"))
        store = f"{server}?schema={schema}"
    try:
        told = example("demo_assistant").run(out, seed=7, store=store, say=said.append)
        yield out, told, said
    finally:
        if server is not None:
            with psycopg.connect(server, autocommit=True) as con:
                con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def value(told: dict[str, Any], knob: str, name: str) -> dict[str, Any]:
    found = [v for v in told["values"] if v["knob"] == knob and v["value"] == name]
    assert len(found) == 1, (knob, name, told["values"])
    return dict(found[0])


def test_the_planted_themes_are_found(story: tuple[Path, dict[str, Any], list[str]]) -> None:
    themes = story[1]["themes"]
    assert themes["recovered"] == sorted(example("helpdesk").THEMES)
    assert themes["ari"] >= 0.8
    for t in themes["found"]:
        assert t["purity"] >= 0.8, t
    printed = "\n".join(story[2])
    for t in themes["found"]:
        assert f'"{t["label"]}"' in printed


def test_the_revised_prompt_addresses_the_themes_and_wins(
    story: tuple[Path, dict[str, Any], list[str]],
) -> None:
    told = story[1]
    prompt = told["prompt"]
    assert prompt["addresses"] == sorted(example("helpdesk").THEMES)
    assert len(prompt["themes"]) == len(told["themes"]["found"])
    v2 = value(told, "prompt", "v2")
    assert v2["origin"] == "added"
    assert v2["state"] in ("active", "promoted")
    shares = told["final_shares"]["prompt"]
    assert shares["v2"] > 0.5
    assert shares["v2"] > shares.get("v1", 0.0)


def test_the_worse_model_is_rolled_back_by_the_guard(
    story: tuple[Path, dict[str, Any], list[str]],
) -> None:
    told = story[1]
    tuned_a = value(told, "model", "tuned-a")
    assert (tuned_a["state"], tuned_a["retired_by"]) == ("retired", "guard")
    assert "tuned-a" not in told["final_shares"]["model"]
    rollbacks = [e for e in told["events"] if e["action"] == "rollback"]
    assert any("tuned-a" in e["reason"] for e in rollbacks)
    served = [d["shares"]["model"].get("tuned-a", 0.0) for d in told["days_log"]]
    assert max(served) > 0  # it was served before it was rolled back


def test_the_better_model_is_promoted_and_served_most(
    story: tuple[Path, dict[str, Any], list[str]],
) -> None:
    told = story[1]
    assert value(told, "model", "tuned-b")["state"] == "promoted"
    assert any(e["action"] == "promote" and "tuned-b" in e["reason"] for e in told["events"])
    shares = told["final_shares"]["model"]
    assert shares["tuned-b"] > 0.5
    assert shares["tuned-b"] == max(shares.values())


def test_the_example_memory_refreshes(story: tuple[Path, dict[str, Any], list[str]]) -> None:
    told = story[1]
    assert len(told["snapshots"]) >= 2
    assert all(s != "none" for s in told["snapshots"])
    with_examples = [1.0 - d["shares"]["examples"].get("none", 0.0) for d in told["days_log"]]
    assert with_examples[0] == 0.0  # no snapshot before the first cycle
    assert with_examples[-1] > 0.5


def test_the_training_sets_are_written_with_the_counts_reported(
    story: tuple[Path, dict[str, Any], list[str]],
) -> None:
    out, told, said = story
    sets = told["datasets"]
    assert sorted(sets) == ["kto", "preferences", "sft"]
    for kind, reported in sets.items():
        path = out / reported["file"]
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) == reported["rows"] > 0, kind
        lineage = json.loads((out / f"{reported['file']}.lineage.json").read_text())
        assert lineage["rows_eligible"] == reported["rows"]
        assert any(f"{kind}: {reported['rows']:,} rows" in line for line in said)
    assert sets["kto"]["rows"] > sets["sft"]["rows"]  # KTO keeps the bad answers too


def test_users_rate_the_answers_better(story: tuple[Path, dict[str, Any], list[str]]) -> None:
    out, told, _ = story
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"metric", "better", "first", "last", "best"}
    assert summary["better"] == "higher"
    assert summary["last"] >= summary["first"] + MARGIN
    assert summary["last"] <= summary["best"] + 0.3  # no better than the hidden best allows
    assert (summary["first"], summary["last"]) == (told["first_rating"], told["last_rating"])
    assert json.loads((out / "story.json").read_text()) == told
    assert (out / "assistant.png").read_bytes().startswith(b"\x89PNG")


# --- the simulated assistant itself ---------------------------------------------------------------


def test_a_prompt_line_naming_a_flaw_makes_it_rarer() -> None:
    desk = example("helpdesk")
    plain = desk.flaw_rates("tech", "pro", "v1", "base")
    revised = 'v1\n\nAvoid what users disliked:\n- Avoid what users called "long" (40%).'
    assert desk.addressed(revised) == {"verbose"}
    lowered = desk.flaw_rates("tech", "pro", revised, "base")
    assert lowered["verbose"] == pytest.approx(plain["verbose"] * desk.PROMPT_EFFECT)
    assert {t: lowered[t] for t in desk.THEMES if t != "verbose"} == {
        t: plain[t] for t in desk.THEMES if t != "verbose"
    }


def test_examples_with_steps_and_a_better_model_make_answers_rate_better() -> None:
    desk = example("helpdesk")
    steps = desk.write(["Open Settings.", "Click Save."], ())
    assert desk.has_steps(steps)
    assert not desk.has_steps(desk.write(["Open Settings.", "Click Save."], ("steps",)))

    def rating(model: str, examples: tuple[str, ...] = ()) -> float:
        return float(desk.expected_rating(desk.flaw_rates("tech", "new", "v1", model, examples)))

    assert rating("base", (steps,) * 3) > rating("base")
    assert rating("tuned-b") > rating("base") > rating("tuned-a")
    assert rating("some-other-model") == rating("base")


def test_users_react_as_the_flaws_say_and_a_seed_repeats_itself() -> None:
    desk = example("helpdesk")

    def session(seed: int, n: int = 300) -> tuple[list[Any], float, float]:
        d = desk.Helpdesk(seed)
        out, given, expected = [], 0, 0.0
        for _ in range(n):
            ctx = d.context()
            question, steps = d.question(ctx["topic"])
            answer = d.answer(ctx, question, steps, "v1", "base")
            reaction = d.react(ctx["user"], answer)
            if answer.flaws:
                assert reaction.rating <= 2 and reaction.theme in answer.flaws
                assert reaction.comment is not None
            else:
                assert reaction.rating >= 3 and reaction.theme is None and reaction.edit is None
            out.append((question, answer.text, reaction))
            given += reaction.rating
            rates = desk.flaw_rates(ctx["topic"], ctx["user"], "v1", "base")
            expected += desk.expected_rating(rates)
        return out, given / n, expected / n

    assert session(3) == session(3)
    assert session(3)[0] != session(4)[0]
    _, given, expected = session(5, 4000)
    assert given == pytest.approx(expected, abs=0.08)  # users rate as expected_rating says
