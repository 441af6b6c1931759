from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.errors import SpecError
from flywheel.spec import Spec, load

EXAMPLE = Path(__file__).parents[1] / "src/flywheel/templates/flywheel.toml"


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "knobs": {"tone": ["warm", "formal"], "length": [1, 2, 3]},
        "context": {"genre": ["a", "b"]},
        "reward": {"formula": "accepted"},
    }
    data.update(overrides)
    return data


def errors_of(data: dict[str, Any] | str) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        if isinstance(data, str):
            Spec.from_toml(data)
        else:
            Spec.from_dict(data)
    return {e.path: e.message for e in caught.value.errors}


def test_example_spec_loads_with_its_allowed_combinations() -> None:
    spec = load(EXAMPLE)
    assert [k.name for k in spec.knobs] == [
        "opening_type",
        "twist_count",
        "emotional_density",
        "length",
    ]
    assert spec.space.total == 4 * 4 * 3 * 3
    # NOT (length = 'short' AND twist_count = 3) removes 4 openings x 3 densities
    assert len(spec.space) == 144 - 12
    assert spec.fixed == {"tone": "neutral"}
    assert spec.reward.window_seconds == 7 * 86400
    assert spec.reward.missing is None
    assert spec.signals["completed"].combine == "max"
    assert spec.base_dir == EXAMPLE.parent.resolve()


def test_error_names_field_reason_and_line() -> None:
    text = EXAMPLE.read_text().replace("twist_count = [0, 1, 2, 3]", "twist_count = []")
    with pytest.raises(SpecError) as caught:
        Spec.from_toml(text)
    (error,) = caught.value.errors
    assert error.path == "knobs.twist_count"
    assert error.message == "expected a non-empty list of values"
    assert text.splitlines()[error.line - 1].startswith("twist_count")  # type: ignore[operator]


def test_every_error_is_reported_at_once() -> None:
    found = errors_of(
        minimal(
            knobs={"tone": ["warm", 1], "Bad-Name": [1]},
            reward={"formula": "accepted", "window": "soon"},
            storage={"url": "duckdb:///x", "colour": "blue"},
        )
    )
    assert found["knobs.tone"] == "values must all be text, all numbers or all booleans"
    assert "lower_snake_case" in found["knobs.Bad-Name"]
    assert "not a duration" in found["reward.window"]
    assert found["storage.colour"] == "is not a known setting"


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("colour = 'red'", "references 'colour', which is not a knob or context feature"),
        ("tone", "is not a boolean expression"),
        ("tone = ", "is not a valid SQL expression"),
        ("DROP TABLE decisions", "is not a valid SQL expression"),
        ("tone = 'warm' FROM decisions", "not a statement"),
        ("tone = (SELECT 1)", "rules do not support"),
    ],
)
def test_bad_rules_are_load_time_errors(rule: str, reason: str) -> None:
    found = errors_of(minimal(skeleton={"rules": [rule]}))
    assert reason in found["skeleton.rules[0]"]


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("tone = 'wram'", "compares tone with 'wram', which is not one of its values"),
        ("length = '3'", "compares length, an integer knob, with the text '3'"),
        ("tone IN ('warm', 'cold')", "compares tone with 'cold', which is not one of its"),
        ("NOT (tone != 'hot')", "compares tone with 'hot', which is not one of its values"),
        ("'cold' <> tone OR length = 2", "compares tone with 'cold', which is not one of its"),
        ("length BETWEEN 1 AND '2'", "compares length, an integer knob, with the text '2'"),
        ("length = 4", "compares length with 4, which is not one of its values"),
        ("genre <> 'c'", "compares genre with 'c', which is not one of its values"),
        ("age = 'old'", "compares age, a numeric context feature, with the text 'old'"),
    ],
)
def test_rules_comparing_a_name_with_a_value_it_cannot_take_are_refused(
    rule: str, reason: str
) -> None:
    found = errors_of(
        minimal(context={"genre": ["a", "b"], "age": "number"}, skeleton={"rules": [rule]})
    )
    message = found["skeleton.rules[0]"]
    assert reason in message
    name = reason.split()[1].rstrip(",")
    allowed = {"tone": "'warm', 'formal'", "length": "1, 2, 3", "genre": "'a', 'b'"}
    if name in allowed:
        assert message.endswith(f"(allowed: {allowed[name]})")


def test_a_rule_naming_a_value_a_knob_lacks_is_refused_with_its_line() -> None:
    text = EXAMPLE.read_text().replace(
        "rules = [\"NOT (length = 'short' AND twist_count = 3)\"]",
        "rules = [\"NOT (length = 'shrt' AND twist_count = 3)\", \"twist_count <> '3'\"]",
    )
    with pytest.raises(SpecError) as caught:
        Spec.from_toml(text)
    first, second = caught.value.errors
    assert (first.path, second.path) == ("skeleton.rules[0]", "skeleton.rules[1]")
    assert first.message.endswith(
        "compares length with 'shrt', which is not one of its values"
        " (allowed: 'short', 'medium', 'long')"
    )
    assert second.message.endswith(
        "compares twist_count, an integer knob, with the text '3' (allowed: 0, 1, 2, 3)"
    )
    assert text.splitlines()[first.line - 1].startswith("rules = ")  # type: ignore[operator]
    with pytest.raises(SpecError, match="wram"):  # the SDK refuses it as well
        flywheel.open(minimal(skeleton={"rules": ["tone = 'wram'"]}), store="duckdb:///:memory:")


def test_rules_comparing_names_with_values_they_can_take_are_accepted() -> None:
    spec = Spec.from_dict(
        minimal(
            context={"genre": ["a", "b"], "age": "number"},
            skeleton={
                "rules": [
                    "age > 30 OR tone IN ('warm')",
                    "length > 1.5 OR genre = 'a'",
                    "NOT (tone <> 'formal' AND length = -1 + 2)",
                ]
            },
        )
    )
    assert len(spec.rules) == 3


def test_rules_that_exclude_everything() -> None:
    found = errors_of(minimal(skeleton={"rules": ["length > 5"]}))
    assert found["skeleton.rules"] == "exclude every combination of knob values"
    found = errors_of(minimal(skeleton={"rules": ["genre = 'a'"]}))
    assert found["skeleton.rules"] == "exclude every combination when genre = 'b'"


def test_default_must_obey_rules_and_name_real_values() -> None:
    found = errors_of(
        minimal(
            skeleton={
                "rules": ["NOT (tone = 'warm' AND length = 3)"],
                "default": {"tone": "warm", "length": 3},
            }
        )
    )
    assert found["skeleton.default"] == "breaks a skeleton rule"
    found = errors_of(minimal(skeleton={"default": {"tone": "cold", "length": 3}}))
    assert found["skeleton.default.tone"] == "'cold' is not one of ['warm', 'formal']"
    found = errors_of(minimal(skeleton={"default": {"tone": "warm"}}))
    assert found["skeleton.default.length"] == "is missing; the default names every knob"


def test_default_is_first_allowed_combination_when_not_given() -> None:
    spec = Spec.from_dict(minimal(skeleton={"rules": ["tone <> 'warm'"]}))
    assert spec.default == {"tone": "formal", "length": 1}


def test_knob_forms() -> None:
    spec = Spec.from_dict(
        minimal(
            knobs={
                "n": {"min": 1, "max": 9, "step": 4},
                "flag": "boolean",
                "size": {"values": ["s", "m"], "ordinal": True},
            }
        )
    )
    assert [(k.name, k.kind, k.values) for k in spec.knobs] == [
        ("n", "integer", (1, 5, 9)),
        ("flag", "boolean", (False, True)),
        ("size", "ordinal", ("s", "m")),
    ]


def test_values_a_store_cannot_hold_are_spec_errors() -> None:
    found = errors_of(
        '[knobs]\ntone = ["warm", "for\\u0000mal"]\n[context]\ngenre = ["a"]\n'
        '[reward]\nformula = "accepted"\n'
    )
    assert found["knobs.tone"] == (
        "the value 'for\\x00mal' contains a NUL character (U+0000), which cannot be stored"
    )
    found = errors_of(minimal(context={"genre": ["a", "\ud800"]}))
    assert "lone surrogate" in found["context.genre"]


def test_names_must_be_unique_and_not_reserved() -> None:
    found = errors_of(minimal(context={"tone": ["x"]}, signals={"reward": "max"}))
    assert found["context.tone"] == "'tone' is already declared in knobs"
    assert "reserved" in found["signals.reward"]


def test_reward_formula_checks() -> None:
    found = errors_of(minimal(reward={"formula": "random() * accepted"}))
    assert "is not allowed" in found["reward.formula"]
    found = errors_of(minimal(reward={"formula": "comment + 1"}))
    assert "not a signal" in found["reward.formula"]
    spec = Spec.from_dict(
        minimal(reward={"formula": "0.7 * converted + 0.3 * (rating - 1) / 4", "missing": 0})
    )
    assert spec.reward.signals == ("converted", "rating")
    assert spec.reward.missing == 0.0
    either = Spec.from_dict(
        minimal(reward={"formula": "CAST(converted > 0 OR rating >= 4 AS INT)"})
    )
    assert either.reward.signals == ("converted", "rating")
    assert "converted" in spec.signals  # formula names are declared implicitly


def test_a_formula_signal_neither_declared_nor_built_in_is_a_warning() -> None:
    spec = Spec.from_dict(minimal(reward={"formula": "0.5 * convertd + accepted"}))
    (warning,) = spec.warnings
    assert warning.path == "reward.formula"
    assert warning.message.startswith(
        "names the signal 'convertd', which is not declared under [signals]"
    )
    declared = Spec.from_dict(minimal(reward={"formula": "x"}, signals={"x": "max"}))
    assert declared.warnings == ()


def test_context_rules_are_applied_per_context() -> None:
    spec = Spec.from_dict(
        minimal(
            context={"genre": ["a", "b"], "age": "number"},
            skeleton={"rules": ["genre <> 'a' OR length < 3", "length <= age"]},
        )
    )
    allowed = {
        (p["tone"], p["length"])
        for p in map(spec.space.params, spec.space.allowed({"genre": "a", "age": 2.0}))
    }
    assert allowed == {("warm", 1), ("warm", 2), ("formal", 1), ("formal", 2)}
    assert len(spec.space.allowed({"genre": "b", "age": 10.0})) == 6


def test_invalid_toml_reports_the_line() -> None:
    with pytest.raises(SpecError) as caught:
        Spec.from_toml("[knobs]\ntone = [\n")
    assert caught.value.errors[0].path == "<toml>"
    assert caught.value.errors[0].line is not None


def test_missing_file_says_how_to_start(tmp_path: Path) -> None:
    with pytest.raises(flywheel.FlywheelError, match="flywheel init"):
        load(tmp_path / "flywheel.toml")


def test_digest_is_stable_and_changes_with_content() -> None:
    assert Spec.from_dict(minimal()).digest == Spec.from_dict(minimal()).digest
    assert (
        Spec.from_dict(minimal()).digest != Spec.from_dict(minimal(knobs={"tone": ["warm"]})).digest
    )


def test_a_spec_round_trips_through_its_raw_mapping() -> None:
    spec = Spec.from_dict(
        {
            "knobs": {"a": ["x", "y"]},
            "reward": {"formula": "ok"},
            "import": {"key": "lead_id"},
            "quality": {"rules": ["ok >= 0"]},
        }
    )
    again = Spec.from_dict(spec.raw)
    assert again.digest == spec.digest and again.imports.key == "lead_id"
    assert dict(again.quality.rules) == dict(spec.quality.rules)


def test_traces_map_targets_are_checked_at_load_and_leave_the_digest_alone() -> None:
    mapped = Spec.from_dict(
        minimal(
            signals={"tokens": "sum"},
            traces={
                "map": {
                    "gen_ai.request.model": "tone",
                    "gen_ai.usage.output_tokens": "tokens",
                    "app.genre": "genre",
                    "enduser.id": "unit",
                }
            },
        )
    )
    assert mapped.traces.map["gen_ai.request.model"] == "tone"
    assert mapped.digest == Spec.from_dict(minimal(signals={"tokens": "sum"})).digest
    text = (
        '[knobs]\ntone = ["warm", "formal"]\n[reward]\nformula = "accepted"\n'
        '[traces]\nmap = { "gen_ai.request.model" = "model", "flywheel.knob.tone" = "tone" }\n'
    )
    found = errors_of(text)
    assert found == {
        'traces.map."gen_ai.request.model"': (
            "'model' is not a knob, context feature, signal or unit"
        ),
        'traces.map."flywheel.knob.tone"': (
            "flywheel.* attributes map by convention; map other keys"
        ),
    }
    assert "traces.map.x" in errors_of(minimal(traces={"map": {"x": 1}}))


def test_an_open_category_from_toml() -> None:
    text = """
[knobs]
tone = ["warm", "formal"]

[context]
city = { type = "category", open = true, max_levels = 20, values = ["oslo"] }
segment = { type = "category", open = true }

[skeleton]
rules = ["city <> 'lima' OR tone = 'warm'"]

[reward]
formula = "accepted"
"""
    spec = Spec.from_toml(text)
    city, segment = spec.feature["city"], spec.feature["segment"]
    assert (city.open, city.max_levels, city.values, city.dtype) == (True, 20, ("oslo",), "text")
    assert (segment.open, segment.max_levels, segment.values) == (True, 100, ())
    # the rule reads any value of the feature, listed or not
    assert len(spec.space.allowed({"city": "lima", "segment": "x"})) == 1
    assert len(spec.space.allowed({"city": "never listed", "segment": "x"})) == 2
    again = Spec.from_dict(spec.raw)
    assert again.digest == spec.digest and again.feature["city"] == city
    fewer = Spec.from_toml(text.replace("max_levels = 20", "max_levels = 10"))
    assert fewer.digest != spec.digest  # a playbook learned other levels: it cannot serve


def test_a_bad_open_category_names_its_line() -> None:
    text = """
[knobs]
tone = ["warm", "formal"]

[context]
city = { type = "category", open = true, max_levels = 0 }
size = { type = "category", open = true, colour = "red" }

[reward]
formula = "accepted"
"""
    with pytest.raises(SpecError) as caught:
        Spec.from_toml(text)
    found = {e.path: (e.message, e.line) for e in caught.value.errors}
    assert found == {
        "context.city.max_levels": ("expected an integer from 1 to 1000", 6),
        "context.size": (
            "unknown keys ['colour']; a category takes open, max_levels and values",
            7,
        ),
    }


def test_sampling_is_thompson_by_default_and_names_a_wrong_value() -> None:
    assert Spec.from_dict(minimal()).learn.sampling == "thompson"
    hopeful = Spec.from_dict(minimal(learn={"sampling": "optimistic"}))
    assert hopeful.learn.sampling == "optimistic"
    assert hopeful.digest != Spec.from_dict(minimal()).digest  # it shapes the serving tables
    errors = errors_of(minimal(learn={"sampling": "greedy"}))
    assert list(errors) == ["learn.sampling"] and "optimistic" in errors["learn.sampling"]
