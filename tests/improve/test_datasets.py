"""Training sets on both backends: exact rows and counts for a known log, redaction,
forgetting, quarantine, the warm tier, and the "ready to tune" entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.errors import InvalidInputError, WrongTypeError
from flywheel.improve import datasets
from tests.conftest import DAY, HOUR, T0, Clock, Open
from tests.improve.assistant import AS_OF, KTO, LOG, PREFERENCES, SFT, SPEC, play, sft_pairs

Make = Callable[..., flywheel.Wheel]


@pytest.fixture
def make(wheels: Open) -> Make:
    """Wheels on the test's store (DuckDB, then PostgreSQL), on the test's clock."""
    return lambda spec=None: wheels(SPEC if spec is None else spec)


def test_each_set_holds_exactly_the_eligible_rows(make: Make, clock: Clock) -> None:
    wheel = make()
    play(wheel, clock)
    sft = wheel.training_set("sft", as_of=AS_OF)
    assert sft_pairs(sft.rows) == SFT
    preferences = wheel.training_set("preferences", as_of=AS_OF)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in preferences.rows] == PREFERENCES
    assert all(list(r) == ["prompt", "chosen", "rejected"] for r in preferences.rows)
    assert all(r["chosen"] != r["rejected"] for r in preferences.rows)
    kto = wheel.training_set("kto", as_of=AS_OF)
    assert [(r["prompt"], r["completion"], r["label"]) for r in kto.rows] == KTO
    assert all(list(r) == ["prompt", "completion", "label"] for r in kto.rows)
    assert all(type(r["label"]) is bool for r in kto.rows)

    for found, expected in ((sft, SFT), (preferences, PREFERENCES), (kto, KTO)):
        lineage = found.lineage
        assert (lineage.rows_read, lineage.rows_eligible) == (len(LOG), len(expected))
        assert lineage.spec_digest == wheel.spec.digest and lineage.spec_name == "assistant"
        assert lineage.as_of == "2026-01-01T01:00:00Z"
        assert lineage.filters["quarantined"] == "left out"
    assert preferences.lineage.sources == {"edits": 3, "ratings": 2}
    assert sft.lineage.filters["min_reward"] == 0.5

    counts = datasets.readiness(wheel.store, wheel.spec, AS_OF)
    assert (counts.sft, counts.preferences) == (len(SFT), len(PREFERENCES))


def test_as_of_and_min_reward_choose_the_rows(make: Make, clock: Clock) -> None:
    wheel = make()
    play(wheel, clock)
    # a higher bar: 'hola' (0.5) is no longer good enough, 'Go to Billing' (0.75) still is
    strict = wheel.training_set("sft", as_of=AS_OF, min_reward=0.75)
    assert sft_pairs(strict.rows) == [p for p in SFT if p[1] != "hola"]
    labels = wheel.training_set("kto", as_of=AS_OF, min_reward=0.75).rows
    assert [r["label"] for r in labels] == [good and c != "hola" for _, c, good in KTO]
    # before the fifth decision: only what had happened by then
    early = wheel.training_set("preferences", as_of=T0 + 4 * 60 - 1)
    assert [(r["prompt"], r["chosen"]) for r in early.rows] == [
        (p, c) for p, c, _ in PREFERENCES[:3]
    ]
    assert early.lineage.rows_read == 4
    # an empty store: no rows, a lineage all the same
    empty = wheel.training_set("sft", as_of=T0 - DAY)
    assert (empty.rows, empty.lineage.rows_read, empty.lineage.rows_eligible) == ([], 0, 0)
    with pytest.raises(InvalidInputError, match="min_reward"):
        wheel.training_set("preferences", min_reward=0.5)
    with pytest.raises(WrongTypeError, match="min_reward"):
        wheel.training_set("sft", min_reward="high")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="kind"):
        wheel.training_set("dpo")  # type: ignore[arg-type]


SECRET = "ada@example.com"


def _texts(wheel: flywheel.Wheel) -> str:
    """Every text of every set, in one string."""
    rows = [r for kind in datasets.KINDS for r in wheel.training_set(kind, as_of=AS_OF).rows]
    return repr(rows)


def _secret_log() -> list[Any]:
    return [
        (f"Mail {SECRET} my invoice", f"Sent to {SECRET}.", 5, []),
        (f"Mail {SECRET} my invoice", "I cannot.", 1, [("I cannot.", f"Sent to {SECRET}!")]),
    ]


def test_texts_are_redacted_in_every_set(make: Make, clock: Clock) -> None:
    wheel = make()
    play(wheel, clock, _secret_log())
    texts = _texts(wheel)
    assert SECRET not in texts and texts.count("[email]") == 9
    sets = {kind: wheel.training_set(kind, as_of=AS_OF).rows for kind in datasets.KINDS}
    assert sft_pairs(sets["sft"]) == [("Mail [email] my invoice", "Sent to [email].")]
    assert sets["preferences"] == [
        {
            "prompt": "Mail [email] my invoice",
            "chosen": "Sent to [email].",
            "rejected": "I cannot.",
        },
        {
            "prompt": "Mail [email] my invoice",
            "chosen": "Sent to [email]!",
            "rejected": "I cannot.",
        },
    ]
    assert [r["completion"] for r in sets["kto"]] == ["Sent to [email].", "I cannot."]


def test_texts_are_kept_as_given_without_redaction(make: Make, clock: Clock) -> None:
    wheel = make({**SPEC, "privacy": {"redact_text": False}})
    play(wheel, clock, _secret_log())
    texts = _texts(wheel)
    assert texts.count(SECRET) == 9 and "[email]" not in texts


def test_a_forgotten_units_texts_are_in_no_set(make: Make, clock: Clock) -> None:
    wheel = make()
    play(wheel, clock)
    clock.now = T0 + 30 * 60
    for n, unit in enumerate(("eve", "eve", "bob")):
        d = wheel.decide({"topic": "tech"}, unit=unit, input=f"{unit} asks {n}", explore=False)
        wheel.output(d, f"{unit} is told {n}", unit=unit)
        wheel.feedback(d, rating=5)
        wheel.edit(d, f"{unit} is told {n}", f"{unit} is answered {n}")
    clock.now = AS_OF
    assert "eve" in _texts(wheel)
    before = {k: len(wheel.training_set(k, as_of=AS_OF).rows) for k in datasets.KINDS}
    assert wheel.forget("eve")["decisions"] == 2
    texts = _texts(wheel)
    assert "eve" not in texts and "bob asks 2" in texts
    after = {k: len(wheel.training_set(k, as_of=AS_OF).rows) for k in datasets.KINDS}
    # eve's two decisions: an SFT row each, an edit pair each (and a rating pair for neither:
    # every input differs), a KTO row each
    assert {k: before[k] - after[k] for k in datasets.KINDS} == {
        "sft": 2,
        "preferences": 2,
        "kto": 2,
    }
    assert wheel.training_set("sft", as_of=AS_OF).lineage.rows_read == len(LOG) + 1


def test_quarantined_rows_are_left_out(make: Make, clock: Clock) -> None:
    wheel = make({**SPEC, "quality": {"rules": ["rating <> 4"]}})
    play(wheel, clock)
    quarantined = wheel.quarantined()  # the scan that quarantines decisions 3 and 12
    assert quarantined.num_rows == 2
    sft = wheel.training_set("sft", as_of=AS_OF)
    assert sft_pairs(sft.rows) == [SFT[0], SFT[2], SFT[3], SFT[4]]
    pairs = [r["prompt"] for r in wheel.training_set("preferences", as_of=AS_OF).rows]
    assert pairs == [PREFERENCES[0][0], PREFERENCES[3][0]]  # no CANCEL pair: 3 is out


def test_a_set_reads_the_warm_tier_as_one_with_the_store(
    make: Make, clock: Clock, tmp_path: Path
) -> None:
    wheel = make({**SPEC, "storage": {"archive": {"url": str(tmp_path / "warm")}}})
    play(wheel, clock)
    hot = {k: wheel.training_set(k, as_of=AS_OF) for k in datasets.KINDS}
    clock.now = AS_OF + 2 * DAY
    moved = wheel.archive(DAY)  # every decision, with its signals and edits
    assert moved.rows["decisions"] == len(LOG)
    assert wheel.store.query("SELECT count(*) AS n FROM edits").to_pylist()[0]["n"] == 5
    for kind, before in hot.items():
        after = wheel.training_set(kind, as_of=AS_OF)
        assert after.jsonl() == before.jsonl() and after.lineage.rows_read == len(LOG)


def test_a_learn_cycle_records_ready_to_tune_once_per_crossing(make: Make, clock: Clock) -> None:
    wheel = make({**SPEC, "datasets": {"sft_min": 6, "preferences_min": 6}})
    play(wheel, clock)
    wheel.learn()  # 6 SFT rows: ready; 5 pairs: not yet
    ready = [e for e in wheel.events() if e["action"] == "ready"]
    assert [e["reason"] for e in ready] == ["ready to tune: 6 SFT rows (sft_min is 6)"]
    assert ready[0]["actor"] == "datasets"
    assert ready[0]["detail"]["command"].startswith("flywheel export sft -f jsonl")
    state = wheel.status()  # good news: no halt, and no monitor of its own to fail
    assert state.halt is None and not [m for m in state.monitors if "datasets" in m.name]

    clock.now += HOUR
    d = wheel.decide({"topic": "tech"}, input="One more", unit="zed")
    wheel.edit(d, "draft", "final", unit="zed")
    wheel.learn(force=True)  # 6 pairs now; SFT still ready: told nothing again
    reasons = [e["reason"] for e in wheel.events() if e["action"] == "ready"]
    assert reasons == [
        "ready to tune: 6 preference pairs (preferences_min is 6)",
        "ready to tune: 6 SFT rows (sft_min is 6)",
    ]
    wheel.learn(force=True)
    assert len([e for e in wheel.events() if e["action"] == "ready"]) == 2
    wheel.forget("zed")  # below the minimum again ...
    wheel.learn(force=True)
    d = wheel.decide({"topic": "tech"}, input="Once more", unit="zed")
    wheel.edit(d, "draft", "final")
    wheel.learn(force=True)  # ... and ready again: told again
    assert len([e for e in wheel.events() if e["action"] == "ready"]) == 3


def test_without_a_datasets_section_cycles_count_nothing(make: Make, clock: Clock) -> None:
    wheel = make()
    assert not wheel.spec.datasets.declared
    play(wheel, clock)
    wheel.learn()
    assert wheel.store.get_meta(datasets.READY_KEY) is None
    assert not [e for e in wheel.events() if e["action"] == "ready"]
