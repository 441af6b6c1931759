"""Open categorical context features (levels learned from the data, every other value served
as ``other``) and numbers given as strings, on both stores."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.errors import SpecError, ValueNotAllowedError, WrongTypeError
from flywheel.learn.design import OTHER
from flywheel.playbook.publish import training_cells
from flywheel.spec import DEFAULT_OPEN_LEVELS, MAX_OPEN_TEXT, Spec
from tests.conftest import Clock
from tests.server.test_app import serving

HINT = 'numbers may be given as strings like "12.5"'

# Logged counts per product: three clear leaders, a tie at the cut (broken by value order)
# and thirty rare products seen twice each; max_levels = 4.
LEADERS = {"p0": 60, "p1": 50, "p2": 45, "b_tie": 40, "a_tie": 40}
RARE = [f"r{i:02d}" for i in range(30)]


def open_spec(rule: str = "NOT (product = 'banned' AND tone = 'loud')", **product: Any) -> Spec:
    return Spec.from_dict(
        {
            "knobs": {"tone": ["calm", "loud"], "twist_count": [0, 1, 2, 3]},
            "context": {
                "product": {"type": "category", "open": True, "max_levels": 4, **product},
                "age": {"type": "number", "min": 0, "max": 120},
            },
            "skeleton": {"rules": [rule]},
            "reward": {"formula": "clicked", "window": "1000d"},
            "signals": {"clicked": "max"},
            "learn": {"min_rows": 20},
        }
    )


@pytest.fixture
def wheel(each_store: str, clock: Clock) -> Iterator[flywheel.Wheel]:
    opened = flywheel.open(open_spec(), store=each_store, clock=clock, background=False)
    yield opened
    opened.close()


def clicked(product: str, tone: str) -> int:
    """p0 wants loud; every other product wants calm."""
    return int((tone == "loud") == (product == "p0"))


def log_history(wheel: flywheel.Wheel, clock: Clock) -> int:
    counts = {**LEADERS, **dict.fromkeys(RARE, 2)}
    rows = 0
    for product, count in counts.items():
        for i in range(count):
            clock.now += 1
            tone = ("calm", "loud")[i % 2]
            wheel.log(
                context={"product": product, "age": 30 + i % 7},
                params={"tone": tone, "twist_count": i % 4},
                results={"clicked": clicked(product, tone)},
            )
            rows += 1
    wheel.flush()
    return rows


def test_decide_before_any_playbook_takes_unseen_values(wheel: flywheel.Wheel) -> None:
    for product in ("never-seen", "another one", 42):
        decision = wheel.decide({"product": product, "age": 30})
        assert decision.policy == "uniform" and decision.playbook is None
        assert decision.context["product"] == str(product)
    for _ in range(30):  # the rule reads the raw value, with no value list to check it
        assert wheel.decide({"product": "banned", "age": 30}).params["tone"] == "calm"
    wheel.flush()
    rows = sorted(wheel.aligned().to_pylist(), key=lambda r: (r["ts"], r["decision_id"]))
    assert [r["product"] for r in rows[:3]] == ["never-seen", "another one", "42"]


def test_levels_are_learned_and_unseen_values_serve_as_other(
    wheel: flywheel.Wheel, clock: Clock
) -> None:
    rows = log_history(wheel, clock)
    result = wheel.learn(as_of=clock.now)
    assert result.published, result.reason
    playbook = wheel.playbook
    assert playbook is not None
    encoding = playbook.encoding
    # the four most frequent values (the tie at the cut broken by value order), then other
    assert dict(encoding.categorical["product"]) == {"p0": 0, "p1": 1, "p2": 2, "a_tie": 3}
    assert encoding.levels()["product"] == 5 and encoding.other("product") == 4
    assert encoding.labels("product")[-1] == OTHER

    # stored with the playbook: a reload serves the same levels
    reloaded = wheel.load_playbook(playbook.version)
    assert reloaded is not None
    assert dict(reloaded.encoding.categorical["product"]) == dict(encoding.categorical["product"])
    assert reloaded.encoding.open == frozenset({"product"})

    # the rare values (and b_tie) train the other level, aggregated into its own cells
    as_of = datetime.fromtimestamp(clock.now, tz=UTC)
    cells = training_cells(wheel.store, wheel.spec, encoding, as_of)
    assert cells.rows == rows
    other = cells.codes["product"] == 4
    assert round(float(cells.n[other].sum())) == 40 + 2 * len(RARE)
    assert set(cells.codes["product"].tolist()) == {0, 1, 2, 3, 4}

    # raw values are stored as given
    assert "r07" in wheel.aligned().column("product").to_pylist()

    frequent = wheel.decide({"product": "p0", "age": 33}, explore=False)
    unseen = wheel.decide({"product": "never-seen", "age": 33}, explore=False)
    rare = wheel.decide({"product": "r07", "age": 33}, explore=False)
    assert frequent.playbook == unseen.playbook == playbook.version
    assert playbook.key({"product": "p0", "age": 33})[0] == 0
    assert playbook.key({"product": "never-seen", "age": 33})[0] == 4
    assert frequent.params["tone"] == "loud"  # its own segment learned loud wins
    assert unseen.params["tone"] == "calm"  # the other segment: calm wins
    assert (unseen.params, unseen.expected) == (rare.params, rare.expected)
    described = {b["context"]["product"] for b in playbook.best()}
    assert described == {"p0", "p1", "p2", "a_tie", OTHER}


def test_a_rule_on_an_open_feature_holds_with_a_playbook(
    wheel: flywheel.Wheel, clock: Clock
) -> None:
    log_history(wheel, clock)
    assert wheel.learn(as_of=clock.now).published
    for _ in range(40):  # banned is in the other segment, where loud is otherwise allowed
        assert wheel.decide({"product": "banned", "age": 30}).params["tone"] == "calm"
    playbook = wheel.playbook
    assert playbook is not None

    def tones(product: str) -> set[Any]:
        table = playbook.segment({"product": product, "age": 30})
        return {wheel.spec.space.params(int(row))["tone"] for row in table.rows}

    # one level (other), two allowed sets: the rule reads the raw value
    assert playbook.key({"product": "banned", "age": 30}) == playbook.key(
        {"product": "never-seen", "age": 30}
    )
    assert tones("banned") == {"calm"}
    assert tones("never-seen") == {"calm", "loud"}


def test_integer_open_feature_converts_strings(each_store: str, clock: Clock) -> None:
    spec = open_spec("NOT (product = 99 AND tone = 'loud')", values=[7, 8])
    assert spec.feature["product"].dtype == "integer"
    with flywheel.open(spec, store=each_store, clock=clock, background=False) as wheel:
        assert wheel.decide({"product": " 12 ", "age": 1}).context["product"] == 12
        assert wheel.decide({"product": 13.0, "age": 1}).context["product"] == 13
        with pytest.raises(WrongTypeError) as err:
            wheel.decide({"product": "abc", "age": 1})
        assert err.value.field == "context.product"
        assert 'numbers may be given as strings like "12"' in str(err.value)
        with pytest.raises(WrongTypeError, match=re.escape("context.product: expected an integer")):
            wheel.decide({"product": 1.5, "age": 1})


def test_seed_values_are_always_levels(each_store: str, clock: Clock) -> None:
    spec = open_spec("NOT (product = 99 AND tone = 'loud')", values=[7], max_levels=2)
    with flywheel.open(spec, store=each_store, clock=clock, background=False) as wheel:
        for product, count in ((1, 30), (2, 20), (3, 10)):
            for i in range(count):
                clock.now += 1
                wheel.log(
                    context={"product": str(product), "age": 30},
                    params={"tone": ("calm", "loud")[i % 2], "twist_count": 0},
                    results={"clicked": i % 3 == 0},
                )
        assert wheel.learn(as_of=clock.now).published
        playbook = wheel.playbook
        assert playbook is not None
        assert dict(playbook.encoding.categorical["product"]) == {7: 0, 1: 1}
        assert [playbook.key({"product": p, "age": 30})[0] for p in (7, 1, 2, 3, 99)] == [
            0,
            1,
            2,
            2,
            2,
        ]
        reloaded = wheel.load_playbook()
        assert reloaded is not None
        assert dict(reloaded.encoding.categorical["product"]) == {7: 0, 1: 1}
        assert wheel.decide({"product": "2", "age": 30}, explore=False).playbook == 1


def test_open_values_are_checked(wheel: flywheel.Wheel) -> None:
    expected = "context.product: expected text or an integer"
    with pytest.raises(WrongTypeError, match=re.escape(expected)):
        wheel.decide({"product": 1.5, "age": 1})
    with pytest.raises(WrongTypeError, match=re.escape("context.product")):
        wheel.decide({"product": True, "age": 1})
    too_long = "context.product: is 257 characters long"
    with pytest.raises(ValueNotAllowedError, match=re.escape(too_long)):
        wheel.decide({"product": "x" * (MAX_OPEN_TEXT + 1), "age": 1})
    with pytest.raises(ValueNotAllowedError, match=re.escape("context.product: contains a NUL")):
        wheel.decide({"product": "a\x00b", "age": 1})


def test_numbers_as_strings_in_decide_log_and_signal(wheel: flywheel.Wheel) -> None:
    decision = wheel.decide({"product": "p0", "age": "12"})
    assert decision.context["age"] == 12.0
    wheel.signal(decision, "clicked", " 1 ")
    wheel.log(
        context={"product": "p1", "age": " 2.5 "},
        params={"tone": "calm", "twist_count": "3"},
        results={"clicked": "0"},
    )
    wheel.flush()
    rows = {r["product"]: r for r in wheel.aligned().to_pylist()}
    assert rows["p0"]["age"] == 12.0 and rows["p0"]["clicked"] == 1.0
    assert (rows["p1"]["age"], rows["p1"]["twist_count"], rows["p1"]["clicked"]) == (2.5, 3, 0.0)
    assert isinstance(rows["p1"]["twist_count"], int)

    with pytest.raises(WrongTypeError) as err:
        wheel.decide({"product": "p0", "age": "abc"})
    assert str(err.value) == f"context.age: expected a number, got 'abc' (a string); {HINT}"
    for bad in ("", "1,5", "nan", "inf", "1_000", "0x10"):
        with pytest.raises(WrongTypeError, match=re.escape("context.age: expected a number")):
            wheel.decide({"product": "p0", "age": bad})
    with pytest.raises(ValueNotAllowedError, match=re.escape("context.age")):
        wheel.decide({"product": "p0", "age": "121"})  # converted, then checked
    with pytest.raises(WrongTypeError) as err:
        wheel.log(
            context={"product": "p0", "age": 3},
            params={"tone": "calm", "twist_count": "two"},
            results={"clicked": 1},
        )
    assert err.value.field == "params.twist_count"
    assert (
        "expected an integer, got 'two' (a string); numbers may be given as strings like \"12\""
        in (err.value.reason)
    )
    not_one = "params.twist_count: 2.5 is not one of"
    with pytest.raises(ValueNotAllowedError, match=re.escape(not_one)):
        wheel.log(
            context={"product": "p0", "age": 3},
            params={"tone": "calm", "twist_count": "2.5"},
            results={"clicked": 1},
        )
    signal = f"clicked: expected a number, got 'yes' (a string); {HINT}"
    with pytest.raises(WrongTypeError, match=re.escape(signal)):
        wheel.signal(decision, "clicked", "yes")


def test_numbers_as_strings_in_import(wheel: flywheel.Wheel, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["product", "age", "tone", "twist_count", "clicked"])
        writer.writerow(["r01", "12", "calm", "1", "1"])
        writer.writerow(["17", " 40.5 ", "loud", "2", "0"])
        writer.writerow(["r02", "abc", "loud", "2", "0"])
        writer.writerow(["x" * (MAX_OPEN_TEXT + 1), "3", "loud", "2", "0"])
    report = wheel.import_rows([path])
    reasons = {row: reason for _, row, reason in report.rejections}
    assert reasons == {
        4: "age: 'abc' is not a number",
        5: f"product: {'x' * (MAX_OPEN_TEXT + 1)!r} is longer than {MAX_OPEN_TEXT} characters",
    }
    rows = {r["product"]: r for r in wheel.aligned().to_pylist()}
    assert (rows["r01"]["age"], rows["r01"]["twist_count"]) == (12.0, 1)
    assert rows["17"]["age"] == 40.5


def test_http_converts_numbers_and_names_the_field(wheel: flywheel.Wheel) -> None:
    with serving(wheel) as client:
        status, body = client.call(
            "POST", "/v1/decide", {"context": {"product": "anything", "age": "12"}}
        )
        assert status == 200, body
        status, body = client.call(
            "POST", "/v1/decide", {"context": {"product": "anything", "age": "abc"}}
        )
        assert status == 422
        assert body["errors"][0]["field"] == "context.age"
        assert HINT in body["errors"][0]["reason"]
    assert wheel.aligned().column("age").to_pylist() == [12.0]


def test_spec_forms_of_an_open_feature() -> None:
    feature = open_spec().feature["product"]
    assert (feature.open, feature.max_levels, feature.dtype, feature.values) == (
        True,
        4,
        "text",
        (),
    )
    assert not feature.listed
    default = Spec.from_dict(
        {
            "knobs": {"tone": ["calm", "loud"]},
            "context": {"city": {"type": "category", "open": True}},
            "reward": {"formula": "clicked"},
        }
    )
    assert default.feature["city"].max_levels == DEFAULT_OPEN_LEVELS
    closed = Spec.from_dict(
        {
            "knobs": {"tone": ["calm", "loud"]},
            "context": {"city": {"type": "category", "values": ["oslo", "lima"]}},
            "skeleton": {"rules": ["city <> 'oslo' OR tone = 'calm'"]},
            "reward": {"formula": "clicked"},
        }
    )
    assert closed.feature["city"].listed and closed.feature["city"].values == ("oslo", "lima")
    with pytest.raises(SpecError, match="not one of its values"):  # listed: values checked
        Spec.from_dict({**closed.raw, "skeleton": {"rules": ["city <> 'rome'"]}})
    open_rule = open_spec(values=["seed"]).rules[0]  # open: any value may be named
    assert open_rule.names == ("product", "tone")
    typed = "compares product, an open categorical context feature"
    with pytest.raises(SpecError, match=typed):
        Spec.from_dict({**open_spec().raw, "skeleton": {"rules": ["product = 3"]}})


@pytest.mark.parametrize(
    ("decl", "path", "message"),
    [
        ({"max_levels": 0}, "context.product.max_levels", "expected an integer from 1 to 1000"),
        ({"max_levels": 5000}, "context.product.max_levels", "from 1 to 1000"),
        ({"max_levels": "5"}, "context.product.max_levels", "from 1 to 1000"),
        ({"open": "yes"}, "context.product.open", "expected true or false"),
        ({"bins": 3}, "context.product", "unknown keys ['bins']"),
        ({"values": [1.5, 2.5]}, "context.product.values", "text or integers"),
        ({"values": ["a", "b", "c", "d", "e"]}, "context.product.values", "more than max_levels"),
        ({"open": False}, "context.product.max_levels", "is for an open category"),
    ],
)
def test_bad_open_features_name_the_field(decl: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        open_spec(**decl)
    assert [(e.path, message in e.message) for e in err.value.errors] == [(path, True)], (
        err.value.errors
    )
