"""Knob values added and retired at run time, on both backends: served at once with exact
propensities and their start share, never against a skeleton rule, seen by a second process,
reviewed by the guard (a worse newcomer rolled back, a better one promoted), withdrawn when
their text came from a forgotten unit, refused where they would break something."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flywheel
from flywheel import catalogue
from flywheel.catalogue import RETIRE_BELOW
from flywheel.cli import app
from flywheel.errors import InvalidInputError, NotFoundError, SpecError, WrongTypeError
from flywheel.server import keys as api_keys
from flywheel.spec import NEWCOMER_ROWS, Spec
from tests.conftest import WAIT, Clock, Open, wait_for
from tests.server.test_app import serving

SPEC: dict[str, Any] = {
    "name": "values",
    "knobs": {"prompt": {"values": ["v1"], "open": True}, "tone": ["plain", "warm"]},
    "context": {"topic": ["billing", "tech"]},
    "skeleton": {"rules": ["NOT (topic = 'tech' AND tone = 'warm')"]},
    "reward": {"formula": "rating", "window": "1h"},
    "signals": {"rating": {"combine": "last", "min": 0, "max": 1}},
}
RATES = {"v1": 0.3, "v2": 0.7, "bad": 0.02}
"""Each prompt's chance of a good rating (``warm`` adds 0.1)."""

Make = Callable[..., flywheel.Wheel]


@pytest.fixture
def make(wheels: Open) -> Make:
    """Wheels of :data:`SPEC` on the test's store (DuckDB, then PostgreSQL) and clock."""
    return lambda **options: wheels(SPEC, **{"seed": 5, **options})


def play(wheel: flywheel.Wheel, clock: Clock, n: int, rng: random.Random) -> dict[str, int]:
    """``n`` decisions, each rated at once; how many each prompt served."""
    served: dict[str, int] = {}
    for _ in range(n):
        clock.now += 10
        d = wheel.decide({"topic": rng.choice(["billing", "tech"])})
        prompt = d.params["prompt"]
        served[prompt] = served.get(prompt, 0) + 1
        good = RATES[prompt] + (0.1 if d.params["tone"] == "warm" else 0.0)
        wheel.signal(d, "rating", 1.0 if rng.random() < good else 0.0)
    return served


def test_an_open_knob_is_declared_and_checked() -> None:
    spec = Spec.from_dict(SPEC)
    assert spec.knob["prompt"].open and not spec.knob["tone"].open
    bad = {
        "ordinal": {"values": ["a", "b"], "open": True, "ordinal": True},
        "flag": {"values": [True, False], "open": True},
        "yes": {"values": ["a"], "open": "yes"},
    }
    for name, decl in bad.items():
        with pytest.raises(SpecError) as err:
            Spec.from_dict({**SPEC, "knobs": {name: decl}})
        assert any(e.path == f"knobs.{name}.open" for e in err.value.errors), name
    grown = spec.with_values({"prompt": ["v2"]}, {"prompt": ["v1"]})
    assert grown.knob["prompt"].values == ("v1", "v2")
    assert grown.digest != spec.digest
    assert all(
        grown.space.params(int(r))["prompt"] == "v2"
        for r in grown.space.allowed({"topic": "billing"})
    )
    # a retired value's rule shapes what is served, not what the quality checks quarantine
    assert grown.quality.rules == spec.with_values({"prompt": ["v2"]}).quality.rules


def test_an_added_value_is_served_at_once_with_its_start_share(make: Make, clock: Clock) -> None:
    wheel = make()
    rng = random.Random(1)
    play(wheel, clock, 300, rng)
    first = wheel.learn()
    assert first.published
    change = wheel.add_value("prompt", "v2", text="Answer in steps.", start_share=0.2)
    assert change.version == 1 and change.published == (first.version or 0) + 1
    assert wheel.text("prompt", "v2") == "Answer in steps."
    assert wheel.text("prompt", "v1") == "v1"
    playbook = wheel.playbook
    assert playbook is not None and playbook.meta["newcomers"] == [["prompt", "v2", 0.2]]
    space = wheel.spec.space
    i = space.names.index("prompt")
    for topic in ("billing", "tech"):
        table = playbook.segment({"topic": topic})
        holds = space.codes[table.rows, i] == space.dimensions[i].values.index("v2")
        assert float(table.probs[holds].sum()) >= 0.2 - 1e-9
        assert abs(float(table.probs.sum()) - 1.0) < 1e-9
    served = []
    for _ in range(400):
        clock.now += 1
        topic = rng.choice(["billing", "tech"])
        d = wheel.decide({"topic": topic})
        served.append(d)
        table = playbook.segment({"topic": topic})
        row = space.row_of({k: d.params[k] for k in space.names})
        assert row is not None
        position = list(table.rows).index(row)
        assert d.propensity == pytest.approx(float(table.probs[position]), abs=1e-12)
        assert not (topic == "tech" and d.params["tone"] == "warm")  # the rule still holds
    share = sum(d.params["prompt"] == "v2" for d in served) / len(served)
    assert share >= 0.12  # at least its start share of 0.2, less the chance of 400 draws
    entries = {v.value: v for v in wheel.values("prompt")}
    assert entries["v1"].origin == "spec" and entries["v2"].origin == "added"
    assert entries["v2"].state == "active" and entries["v2"].text == "Answer in steps."
    audit = [e for e in wheel.events(10) if e["action"] == "add_value"]
    assert audit and audit[0]["detail"]["value"] == "v2"


def test_a_second_process_serves_the_new_value(make: Make, clock: Clock) -> None:
    first = make()
    second = make(refresh=0.05)
    rng = random.Random(2)
    play(first, clock, 200, rng)
    first.learn()
    assert wait_for(lambda: second.playbook is not None)
    first.add_value("prompt", "v2", text="Answer in steps.", start_share=0.5)
    assert wait_for(lambda: "v2" in second.spec.knob["prompt"].values)
    assert wait_for(lambda: second.playbook is not None)
    assert second.text("prompt", "v2") == "Answer in steps."
    served = {second.decide({"topic": "billing"}).params["prompt"] for _ in range(200)}
    assert "v2" in served
    # a retirement is served at once, without waiting for a playbook
    first.retire_value("prompt", "v2", reason="tested enough")
    assert wait_for(lambda: "v2" not in _served(second))
    assert all(
        second.decide({"topic": t}).params["prompt"] == "v1"
        for t in ("billing", "tech")
        for _ in range(100)
    )


def _served(wheel: flywheel.Wheel) -> set[Any]:
    space = wheel.spec.space
    return {space.params(int(r))["prompt"] for r in space.allowed({"topic": "billing"})}


def test_the_guard_rolls_back_a_worse_value_and_promotes_a_better_one(
    make: Make, clock: Clock
) -> None:
    wheel = make()
    rng = random.Random(3)
    play(wheel, clock, 500, rng)
    wheel.learn()
    wheel.add_value("prompt", "bad", text="Be vague.", start_share=0.3)
    wheel.add_value("prompt", "v2", text="Answer in steps.", start_share=0.3)
    for _ in range(6):
        play(wheel, clock, 400, rng)
        wheel.learn()
    states = {v.value: v for v in wheel.values("prompt")}
    assert states["bad"].state == "retired" and states["bad"].retired_by == "guard"
    assert states["v2"].state == "promoted"
    rollback = next(e for e in wheel.events(50) if e["action"] == "rollback")
    assert rollback["actor"] == "guard" and rollback["detail"]["value"] == "bad"
    assert rollback["detail"]["results"] >= NEWCOMER_ROWS
    assert rollback["detail"]["win_share_max"] < RETIRE_BELOW
    last = play(wheel, clock, 300, rng)
    assert "bad" not in last
    assert last.get("v2", 0) > 0.8 * 300


def test_retiring_checks_what_is_left(make: Make, clock: Clock) -> None:
    wheel = make()
    play(wheel, clock, 100, random.Random(4))
    with pytest.raises(InvalidInputError, match="skeleton"):
        wheel.retire_value("prompt", "v1")  # the only value
    wheel.add_value("prompt", "v2")
    change = wheel.retire_value("prompt", "v1", reason="v2 replaces it")
    assert change.version == 2
    assert {wheel.decide({"topic": "tech"}).params["prompt"] for _ in range(50)} == {"v2"}
    entry = next(v for v in wheel.values("prompt") if v.value == "v1")
    assert entry.state == "retired" and entry.reason == "v2 replaces it"
    with pytest.raises(InvalidInputError, match="already retired"):
        wheel.retire_value("prompt", "v1")
    declared = {
        **SPEC,
        "skeleton": {**SPEC["skeleton"], "default": {"prompt": "v1", "tone": "plain"}},
    }
    with pytest.raises(InvalidInputError, match="skeleton's default"):
        catalogue.retire(
            Spec.from_dict(declared),
            catalogue.Catalogue(),
            "prompt",
            "v1",
            reason="",
            actor="t",
            now=wheel.now(),
        )
    # the rows served with v1 are still learned from, not quarantined
    playbook = wheel.playbook
    assert playbook is not None and playbook.version == change.published
    assert playbook.meta["training"]["rows"] == 100
    assert playbook.meta["seatbelt"]["quality"]["quarantined"] == 0


def test_bad_values_are_refused_with_the_field(make: Make, clock: Clock) -> None:
    wheel = make()
    with pytest.raises(InvalidInputError, match="not open") as err:
        wheel.add_value("tone", "loud")
    assert err.value.field == "knob"
    with pytest.raises(NotFoundError):
        wheel.add_value("voice", "v2")
    with pytest.raises(WrongTypeError) as wrong:
        wheel.add_value("prompt", 2)
    assert wrong.value.field == "value"
    with pytest.raises(InvalidInputError, match="already a value"):
        wheel.add_value("prompt", "v1")
    with pytest.raises(InvalidInputError) as share:
        wheel.add_value("prompt", "v2", start_share=1.5)
    assert share.value.field == "start_share"
    assert wheel.values("prompt")[0].value == "v1" and len(wheel.values("prompt")) == 1


def test_a_value_derived_from_a_forgotten_unit_is_withdrawn(make: Make, clock: Clock) -> None:
    wheel = make()
    rng = random.Random(6)
    play(wheel, clock, 100, rng)
    complaint = wheel.decide({"topic": "billing"}, unit="ann@example.com")
    wheel.signal(complaint, "rating", 0.0)
    wheel.add_value("prompt", "v2", text="Never say what Ann hated.", derived_from=[complaint.id])
    deleted = wheel.forget("ann@example.com")
    assert deleted["catalogue"] == 1
    entry = next(v for v in wheel.values("prompt") if v.value == "v2")
    assert entry.text is None and entry.state == "retired" and entry.retired_by == "forget"
    assert wheel.text("prompt", "v2") == "v2"
    assert "Ann" not in repr(wheel.store.get_meta("knobs.values"))
    assert {wheel.decide({"topic": "billing"}).params["prompt"] for _ in range(50)} == {"v1"}


def test_values_are_not_added_while_halted(make: Make, clock: Clock) -> None:
    from flywheel.seatbelt import breaker

    wheel = make()
    breaker.halt(wheel.store, wheel.now(), "test", "stopped by hand", {})
    with pytest.raises(InvalidInputError, match="halted"):
        wheel.add_value("prompt", "v2")
    assert wheel.values("prompt")[-1].value == "v1"


def test_values_over_http_with_an_admin_key(tmp_path: Path, clock: Clock) -> None:
    wheel = flywheel.open(
        SPEC, store=f"duckdb:///{tmp_path / 'api.duckdb'}", clock=clock, refresh=0, seed=1
    )
    try:
        play(wheel, clock, 100, random.Random(7))
        decide_key = api_keys.create(wheel.store, "decide")[1]
        admin_key = api_keys.create(wheel.store, "admin")
        body = {"knob": "prompt", "value": "v2", "text": "Answer in steps.", "start_share": 0.1}
        with serving(wheel, api_keys.KeyRing(wheel.store)) as client:
            assert client.call("POST", "/v1/values", body, key=decide_key)[0] == 403
            status, added = client.call("POST", "/v1/values", body, key=admin_key[1])
            assert status == 200 and added["version"] == 1 and added["published"] is not None
            status, bad = client.call(
                "POST", "/v1/values", {**body, "value": "v3", "start_share": 2}, key=admin_key[1]
            )
            assert status == 422 and bad["errors"][0]["field"].endswith("start_share")
            status, listed = client.call("GET", "/v1/values", key=decide_key)
            assert status == 200
            assert [(v["value"], v["text"]) for v in listed["values"]] == [
                ("v1", None),
                ("v2", "Answer in steps."),
            ]
            assert listed["values"][1]["actor"] == f"key {admin_key[0].id}"
            retire = {"knob": "prompt", "value": "v1", "reason": "replaced"}
            status, retired = client.call("POST", "/v1/values/retire", retire, key=admin_key[1])
            assert status == 200 and retired["version"] == 2
            status, again = client.call("POST", "/v1/values/retire", retire, key=admin_key[1])
            assert status == 422 and "already retired" in json.dumps(again)
        assert {wheel.decide({"topic": "billing"}).params["prompt"] for _ in range(30)} == {"v2"}
    finally:
        wheel.close()


def test_values_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "flywheel.toml"
    store = tmp_path / "cli.duckdb"
    path.write_text(
        'name = "cli"\n[knobs]\nprompt = { values = ["v1"], open = true }\n'
        f'[reward]\nformula = "rating"\n[storage]\nurl = "duckdb:///{store}"\n',
        encoding="utf-8",
    )
    text = tmp_path / "v2.txt"
    text.write_text("Answer in steps.\n", encoding="utf-8")
    runner = CliRunner()
    added = runner.invoke(
        app, ["values", "add", "prompt", "v2", "--text", str(text), "-s", str(path)]
    )
    assert added.exit_code == 0, added.output
    assert "catalogue version 1" in added.output
    listed = runner.invoke(app, ["values", "list", "--json", "-s", str(path)])
    assert listed.exit_code == 0
    assert [(v["value"], v["state"]) for v in json.loads(listed.output)] == [
        ("v1", "active"),
        ("v2", "active"),
    ]
    refused = runner.invoke(app, ["values", "add", "prompt", "v2", "-s", str(path)])
    assert refused.exit_code != 0 and "already a value" in refused.output
    retired = runner.invoke(app, ["values", "retire", "prompt", "v1", "-r", "old", "-s", str(path)])
    assert retired.exit_code == 0 and "catalogue version 2" in retired.output


SERVER = """
import json, sys, time
import flywheel
spec = json.loads(sys.argv[1])
with flywheel.open(spec, store=sys.argv[2], refresh=0.1, background=False, seed=3) as wheel:
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < deadline:
        d = wheel.decide({"topic": "billing"})
        if d.params["prompt"] == "v2":
            print("served", wheel.text("prompt", "v2"), d.propensity, flush=True)
            break
        time.sleep(0.02)
    else:
        print("never", flush=True)
"""


def test_a_server_in_another_process_serves_the_new_value(pg_url: str, clock: Clock) -> None:
    """On PostgreSQL (the store processes share), a value added here is served there."""
    wheel = flywheel.open(SPEC, store=pg_url, clock=clock, background=False, seed=2)
    try:
        play(wheel, clock, 200, random.Random(8))
        wheel.learn()
        with subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(SPEC), pg_url, str(WAIT)],
            stdout=subprocess.PIPE,
            text=True,
        ) as other:
            assert other.stdout is not None
            assert other.stdout.readline().strip() == "ready"
            wheel.add_value("prompt", "v2", text="Answer in steps.", start_share=0.5)
            answer = other.stdout.readline().split(maxsplit=1)
            other.wait(timeout=WAIT)
        assert answer[0] == "served", answer
        text, propensity = answer[1].rsplit(maxsplit=1)
        assert text == "Answer in steps." and 0 < float(propensity) <= 1
    finally:
        wheel.close()


def test_the_version_guard_does_not_restore_a_version_of_other_values(
    make: Make, clock: Clock
) -> None:
    """After a value is added, the version that served before it cannot serve the new set of
    values: the guard leaves it (the catalogue's review judges the newcomer) rather than fail
    to restore it, and the seatbelt does not halt."""
    wheel = make()
    rng = random.Random(9)
    for _ in range(2):
        play(wheel, clock, 400, rng)
        assert wheel.learn().published
    # a newcomer served nine times in ten, and far worse: the version serving it does worse
    # live than the one before, which served other values
    wheel.add_value("prompt", "bad", text="Be vague.", start_share=0.9)
    for _ in range(8):  # enough for the live comparison to call it a drop
        play(wheel, clock, 300, rng)
        assert wheel.check() is None
    assert wheel.status().halt is None
    states = {v.value: v.state for v in wheel.values("prompt")}
    assert states["bad"] == "active"
    wheel.learn()  # learns from its results; the next cycle's review judges it instead
    play(wheel, clock, 100, rng)
    wheel.learn()
    assert {v.value: v.state for v in wheel.values("prompt")}["bad"] == "retired"


def test_a_spec_edited_against_its_values_is_served_as_declared(
    make: Make, wheels: Open, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Values retired at run time that the spec, edited since, cannot do without (here, its
    new default): the wheel serves the spec as declared, says why, and keeps learning."""
    wheel = make()
    play(wheel, clock, 200, random.Random(10))
    wheel.add_value("prompt", "v2")
    wheel.retire_value("prompt", "v1")
    wheel.close()
    edited = {
        **SPEC,
        "skeleton": {**SPEC["skeleton"], "default": {"prompt": "v1", "tone": "plain"}},
    }
    reopened = wheels(edited, seed=5)
    assert "do not fit the spec" in caplog.text
    assert reopened.spec.knob["prompt"].values == ("v1",)
    play(reopened, clock, 50, random.Random(11))
    assert reopened.learn().published
