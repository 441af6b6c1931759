"""Example memory on both backends: the best-rated outputs per context and input, what is left
out (quarantine, a low reward, negative feedback), eviction with its reasons, deterministic
versioned snapshots stored and forgotten, and documents ranked by their feedback."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest

import flywheel
from flywheel.errors import InvalidInputError, WrongTypeError
from flywheel.improve import memory
from flywheel.improve.memory import MemorySettings, Snapshot
from tests.conftest import HOUR, T0, Clock, Open

Make = Callable[..., flywheel.Wheel]

SPEC: dict[str, Any] = {
    "name": "assistant-memory",
    "knobs": {"style": ["plain", "steps"]},
    "context": {"topic": ["billing", "tech"]},
    "reward": {"formula": "(rating - 1) / 4", "window": "7d"},
    "signals": {"rating": {"combine": "last", "min": 1, "max": 5}, "docs": {"kind": "text"}},
}
AS_OF = T0 + HOUR
LATER = T0 + 2 * HOUR
SETTINGS = MemorySettings()

PASSWORD = "How do I reset my password?"
# (topic, input, output, rating, edit (draft, final) or None, implicit event or None),
# one decision a minute
LOG: list[tuple[str, str | None, str | None, int | None, tuple[str, str] | None, str | None]] = [
    ("tech", PASSWORD, "Click 'Forgot password'.", 5, None, None),  # 0: best, tied with 3, 10
    ("tech", PASSWORD, "Contact support.", 2, None, None),  # 1: below min_reward, negative
    (
        "billing",
        "Cancel my plan",
        "Go to Billing > Cancel.",
        4,
        ("Go to Billing > Cancel.", "Go to Billing > Plan > Cancel."),
        None,
    ),  # 2: edited a little: its final text is the example
    ("billing", "Why was I charged twice?", "We refunded the second charge.", 5, None, None),
    ("tech", "My laptop will not start", "Hold the power button for ten seconds.", 4, None, None),
    ("billing", "Where is my invoice?", None, None, None, None),  # 5: never answered
    ("tech", None, "An answer to nothing.", 5, None, None),  # 6: no input
    ("tech", "Translate 'hello' to Spanish", "hola", 3, None, None),  # 7: reward 0.5, the bar
    ("tech", "Summarise this", "Summary", None, None, None),  # 8: not rated
    ("billing", "Update my card", "Card updated.", 5, None, "rejected"),  # 9: rated, rejected
    ("tech", PASSWORD, "Click 'Forgot password'.", 5, None, None),  # 10: the same as 0
]
ENTRIES = [10, 3, 0, 4, 2, 7]
"""The entries, best first: reward 1 (newest first), 0.75 (newest first), then 0.5."""


@pytest.fixture
def make(wheels: Open) -> Make:
    """Wheels on the test's store (DuckDB, then PostgreSQL), on the test's clock."""
    return lambda spec=None: wheels(SPEC if spec is None else spec, seed=7)


def play(wheel: flywheel.Wheel, clock: Clock, log: list[Any] | None = None) -> list[str]:
    """Record ``log`` (default :data:`LOG`), a decision a minute; their ids."""
    ids = []
    for i, (topic, prompt, output, rating, edit, event) in enumerate(LOG if log is None else log):
        clock.now = T0 + 60 * i
        d = wheel.decide({"topic": topic}, input=prompt)
        ids.append(d.id)
        if output is not None:
            wheel.output(d, output, ts=clock.now + 1)
        if edit is not None:
            wheel.edit(d, *edit, ts=clock.now + 10)
        if rating is not None:
            wheel.feedback(d, rating=rating, ts=clock.now + 30)
        if event is not None:
            wheel.implicit(d, event, ts=clock.now + 40)
    clock.now = AS_OF
    wheel.flush()
    return ids


def build(
    wheel: flywheel.Wheel,
    settings: MemorySettings = SETTINGS,
    as_of: float = AS_OF,
    previous: Snapshot | None = None,
) -> Snapshot:
    wheel.flush()
    return memory.build(wheel.store, wheel.spec, settings, as_of, previous, now=as_of)


def test_the_best_rated_outputs_come_back_for_a_matching_context(make: Make, clock: Clock) -> None:
    wheel = make()
    ids = play(wheel, clock)
    snapshot = build(wheel)
    assert [e.decision_id for e in snapshot.entries] == [ids[i] for i in ENTRIES]
    assert [e.reward for e in snapshot.entries] == [1.0, 1.0, 1.0, 0.75, 0.75, 0.5]
    by_id = {e.decision_id: e for e in snapshot.entries}
    assert by_id[ids[2]].output == "Go to Billing > Plan > Cancel."  # the edit's final text
    assert by_id[ids[2]].input == "Cancel my plan"
    assert dict(by_id[ids[3]].context) == {"topic": "billing"}
    assert snapshot.min_reward == 0.5 and snapshot.features == ("topic",)
    assert snapshot.evicted == () and snapshot.documents == {}

    tech = snapshot.examples({"topic": "tech"}, k=3)
    # 0 says what 10 says: one of them is enough
    assert [x.decision_id for x in tech] == [ids[10], ids[4], ids[7]]
    assert [x.similarity for x in tech] == [1.0, 1.0, 1.0]
    assert tech[0].output == "Click 'Forgot password'." and tech[0].reward == 1.0
    billing = snapshot.examples({"topic": "billing"}, k=5)
    # the matching context first, then the best of the others
    assert [x.decision_id for x in billing] == [ids[i] for i in (3, 2, 10, 4, 7)]
    assert [x.similarity for x in billing] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert [x.decision_id for x in snapshot.examples({}, k=2)] == [ids[10], ids[3]]


def test_a_similar_input_ranks_first(make: Make, clock: Clock) -> None:
    wheel = make()
    ids = play(wheel, clock)
    snapshot = build(wheel)
    found = snapshot.examples({"topic": "tech"}, k=2, input="Translate 'goodbye' to Spanish")
    assert [x.decision_id for x in found] == [ids[7], ids[10]]  # the 0.5 before the 1.0
    assert 0.5 < found[0].similarity < 1.0 and found[1].similarity == 0.5
    laptop = snapshot.examples({}, k=1, input="my laptop will not start")
    assert [x.decision_id for x in laptop] == [ids[4]]
    assert laptop[0].similarity == pytest.approx(1.0)
    # a matching context counts as much as a matching input: a tie, to the higher reward
    tied = snapshot.examples({"topic": "billing"}, k=2, input="my laptop will not start")
    assert [(x.decision_id, x.similarity) for x in tied] == [(ids[3], 0.5), (ids[4], 0.5)]
    # words that no entry holds: the context alone decides
    assert [x.decision_id for x in snapshot.examples({"topic": "billing"}, 1, "zzz")] == [ids[3]]


def test_quarantined_and_low_rewarded_rows_are_left_out(make: Make, clock: Clock) -> None:
    wheel = make({**SPEC, "quality": {"rules": ["rating <> 4"]}})
    ids = play(wheel, clock)
    before = build(wheel)
    assert wheel.quarantined().num_rows == 2  # the scan that quarantines 2 and 4
    after = build(wheel, previous=before)
    assert [e.decision_id for e in after.entries] == [ids[i] for i in (10, 3, 0, 7)]
    assert {e.decision_id: e.reasons for e in after.evicted} == {
        ids[2]: ("quarantined",),
        ids[4]: ("quarantined",),
    }
    strict = build(wheel, MemorySettings(min_reward=0.75))
    assert [e.decision_id for e in strict.entries] == [ids[i] for i in (10, 3, 0)]
    assert strict.min_reward == 0.75
    small = build(wheel, MemorySettings(size=2))
    assert [e.decision_id for e in small.entries] == [ids[10], ids[3]]


def test_the_datasets_bar_is_the_default(make: Make, clock: Clock) -> None:
    wheel = make({**SPEC, "datasets": {"min_reward": 0.9}})
    ids = play(wheel, clock)
    snapshot = build(wheel)
    assert [e.decision_id for e in snapshot.entries] == [ids[i] for i in (10, 3, 0)]
    assert snapshot.min_reward == 0.9
    # decisions 9 (rejected) and 10 in the last two and a half minutes
    window = build(wheel, MemorySettings(window=2.5 * 60), as_of=T0 + 11 * 60)
    assert [e.decision_id for e in window.entries] == [ids[10]]


def test_an_example_that_draws_negative_feedback_is_evicted(make: Make, clock: Clock) -> None:
    wheel = make()
    ids = play(wheel, clock)
    first = build(wheel)
    clock.now = AS_OF + 60
    wheel.feedback(ids[3], thumbs=False)
    wheel.feedback(ids[4], rating=1)  # rated again: the last rating counts
    wheel.implicit(ids[10], "requeried")
    wheel.edit(ids[0], "Click 'Forgot password'.", "Use the link in the email we sent you.")
    wheel.edit(ids[2], "Go to Billing > Plan > Cancel.", "Go to Billing > Plan > Cancel it.")
    second = build(wheel, as_of=LATER, previous=first)
    assert [e.decision_id for e in second.entries] == [ids[2], ids[7]]
    assert second.entries[0].output == "Go to Billing > Plan > Cancel it."  # the latest edit
    assert [(e.decision_id, e.reasons) for e in second.evicted] == [
        (ids[10], ("requeried",)),
        (ids[4], ("rating", "reward")),
        (ids[3], ("thumbs",)),
        (ids[0], ("edit",)),
    ]
    assert second.id != first.id
    # evictions are against the previous version only: once gone, not evicted again
    third = build(wheel, as_of=LATER, previous=second)
    assert third.evicted == () and third.id == second.id


def test_the_id_is_deterministic_and_follows_the_entries(make: Make, clock: Clock) -> None:
    wheel = make()
    ids = play(wheel, clock)
    first = build(wheel)
    assert re.fullmatch(r"m[0-9a-f]{8}", first.id)
    again = memory.build(wheel.store, wheel.spec, SETTINGS, AS_OF, now=AS_OF + 5 * HOUR)
    assert again.id == first.id and again.created_at != first.created_at
    assert build(wheel, as_of=LATER).id == first.id  # nothing new by then
    clock.now = AS_OF + 60
    wheel.feedback(ids[8], rating=5)  # the unrated one is rated now
    changed = build(wheel, as_of=LATER)
    assert ids[8] in [e.decision_id for e in changed.entries]
    assert changed.id != first.id
    assert memory.snapshot_id(first.entries, {}) == first.id
    assert memory.snapshot_id(first.entries[1:], {}) != first.id


def test_snapshots_are_saved_versioned_and_loaded(make: Make, clock: Clock) -> None:
    wheel = make()
    ids = play(wheel, clock)
    store = wheel.store
    assert memory.current(store) is None and memory.versions(store) == []
    first = build(wheel)
    memory.save(store, first)
    clock.now = AS_OF + 60
    wheel.feedback(ids[3], thumbs=False)
    wheel.flush()
    second = memory.refresh(store, wheel.spec, SETTINGS, LATER, now=LATER)
    assert [e.decision_id for e in second.evicted] == [ids[3]]  # against the current one
    assert memory.versions(store) == [first.id, second.id]
    assert memory.current(store) == second
    assert memory.load(store, first.id) == first
    assert Snapshot.from_json(second.to_json()) == second
    assert store.get_meta(f"memory.snapshot.{first.id}") == first.to_json()

    memory.save(store, first)  # back to the first: it is current again
    assert memory.versions(store) == [second.id, first.id]
    assert memory.current(store) == first
    memory.save(store, first)
    assert memory.versions(store) == [second.id, first.id]
    memory.save(store, second, keep=1)  # the older ones are dropped
    assert memory.versions(store) == [second.id]
    assert memory.load(store, first.id) is None and memory.current(store) == second
    assert memory.load(store, "m00000000") is None
    with pytest.raises(InvalidInputError, match="snapshot"):
        memory.load(store, "memory.snapshots")


def test_forget_removes_a_units_entries_from_every_snapshot(make: Make, clock: Clock) -> None:
    wheel = make({**SPEC, "privacy": {"redact_text": False}})  # ids as documents, as given
    store = wheel.store
    people: dict[str, list[str]] = {"eve": [], "bob": []}
    for n, unit in enumerate(("eve", "bob", "eve")):
        clock.now = T0 + 60 * n
        d = wheel.decide({"topic": "tech"}, unit=unit, input=f"{unit} asks {n}")
        wheel.output(d, f"{unit} is told {n}", unit=unit)
        wheel.feedback(d, rating=5, unit=unit)
        people[unit].append(d.id)
    first = build(wheel, MemorySettings(documents="docs"))
    memory.save(store, first)
    clock.now = AS_OF + 60
    d = wheel.decide({"topic": "tech"}, unit="eve", input="eve asks again")
    wheel.output(d, "eve is told again", unit="eve")
    wheel.feedback(d, rating=5, unit="eve")
    wheel.signal(d, "docs", f"{people['eve'][0]} {people['bob'][0]}", unit="eve")
    people["eve"].append(d.id)
    second = build(wheel, MemorySettings(documents="docs"), LATER, first)
    memory.save(store, second)
    assert set(second.documents) == {people["eve"][0], people["bob"][0]}
    eve = {e.unit for e in second.entries if e.decision_id in people["eve"]}
    bob = {e.unit for e in second.entries if e.decision_id in people["bob"]}
    assert len(eve) == len(bob) == 1 and eve != bob and None not in eve
    (pseudonym,) = eve
    assert isinstance(pseudonym, str) and pseudonym != "eve"  # stored pseudonymised

    assert memory.forget(store, pseudonym) == 2 + 3
    for before in (first, second):
        after = memory.load(store, before.id)
        assert after is not None and after.id == before.id
        assert [e.decision_id for e in after.entries] == people["bob"]
        assert "eve" not in after.to_json()
        assert pseudonym not in after.to_json()
    forgotten = memory.load(store, second.id)
    assert forgotten is not None and set(forgotten.documents) == {people["bob"][0]}
    assert memory.current(store) == forgotten
    assert memory.forget(store, pseudonym) == 0
    wheel.forget("eve")
    assert [e.decision_id for e in build(wheel, as_of=LATER).entries] == people["bob"]


def _use(wheel: flywheel.Wheel, clock: Clock, docs: str, rating: int) -> None:
    """A decision that used ``docs`` and was rated ``rating``; it has no output of its own."""
    clock.now += 60
    d = wheel.decide({"topic": "tech"}, input="a question")
    wheel.signal(d, "docs", docs)
    wheel.feedback(d, rating=rating)


def test_documents_rank_by_their_feedback(make: Make, clock: Clock) -> None:
    wheel = make()
    for _ in range(4):
        _use(wheel, clock, "good, shared", 5)
        _use(wheel, clock, "bad  shared bad", 1)  # listed twice: used once
    _use(wheel, clock, "once", 5)
    snapshot = build(wheel, MemorySettings(documents="docs"), as_of=clock.now + 60)
    docs = snapshot.documents
    assert set(docs) == {"good", "bad", "shared", "once"}
    assert (docs["good"].uses, docs["good"].rated, docs["good"].negative) == (4, 4, 0)
    assert (docs["bad"].uses, docs["bad"].rated, docs["bad"].negative) == (4, 4, 4)
    assert (docs["shared"].uses, docs["shared"].negative, docs["once"].uses) == (8, 4, 1)
    assert docs["good"].mean == 1.0 and docs["bad"].mean == 0.0
    prior = 5 / 9  # the mean reward of the nine decisions that used a document
    sd = math.sqrt(prior * (1 - prior))
    assert docs["good"].score == pytest.approx((4 + 2 * prior) / 6)
    assert docs["once"].score == pytest.approx((1 + 2 * prior) / 3)
    assert docs["bad"].lift == pytest.approx(max(-1.0, (2 * prior / 6 - prior) / sd))
    assert docs["good"].lift > docs["once"].lift > 0 > docs["bad"].lift

    ranked = snapshot.rank(["bad", "new", "good"], [0.9, 0.8, 0.7])
    assert [doc for doc, _ in ranked] == ["good", "new", "bad"]
    assert dict(ranked)["new"] == 0.8  # no feedback: its own score
    assert dict(ranked)["good"] == pytest.approx(0.7 + 0.2 * docs["good"].lift)
    equal = snapshot.rank(["bad", "once", "new", "good"])
    assert [doc for doc, _ in equal] == ["good", "once", "new", "bad"]  # one rating: less
    assert dict(ranked)["bad"] == pytest.approx(0.9 + 0.2 * docs["bad"].lift)
    half = snapshot.rank(["bad", "new", "good"], [0.9, 0.8, 0.7], weight=0.1)
    assert [doc for doc, _ in half] == ["bad", "new", "good"]  # a small weight: little moves
    assert snapshot.rank([]) == []

    top = build(wheel, MemorySettings(documents="docs", max_documents=2), as_of=clock.now + 60)
    assert list(top.documents) == ["shared", "bad"]  # the most used (ties: by id)


def test_an_example_whose_users_did_badly_is_evicted(make: Make, clock: Clock) -> None:
    # the examples' ids are listed as documents: kept as given (these tests' ids end in a run
    # of digits that redaction would take for a phone number)
    wheel = make({**SPEC, "privacy": {"redact_text": False}})
    ids = play(wheel, clock)
    settings = MemorySettings(documents="docs")
    first = build(wheel, settings)
    clock.now = AS_OF
    _use(wheel, clock, ids[3], 5)  # shown once with a good result ...
    for _ in range(3):
        _use(wheel, clock, f"{ids[3]} {ids[4]}", 1)  # ... then three times with a bad one
    _use(wheel, clock, ids[7], 5)
    second = build(wheel, settings, LATER, first)
    assert [(e.decision_id, e.reasons) for e in second.evicted] == [
        (ids[4], ("used",)),
        (ids[3], ("used",)),
    ]
    assert [e.decision_id for e in second.entries] == [ids[i] for i in (10, 0, 2, 7)]
    assert second.documents[ids[7]].lift > 0 > second.documents[ids[3]].lift


def test_bad_settings_and_arguments_are_refused(make: Make, clock: Clock) -> None:
    wheel = make()
    play(wheel, clock)
    with pytest.raises(InvalidInputError, match="size"):
        MemorySettings(size=0)
    with pytest.raises(WrongTypeError, match="k"):
        MemorySettings(k=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="window"):
        MemorySettings(window=0)
    with pytest.raises(InvalidInputError, match="min_reward"):
        MemorySettings(min_reward=math.nan)
    with pytest.raises(InvalidInputError, match="comment"):
        build(wheel, MemorySettings(documents="comment_x"))  # no such signal
    with pytest.raises(InvalidInputError, match="rating"):
        build(wheel, MemorySettings(documents="rating"))  # a number, not a text
    snapshot = build(wheel)
    with pytest.raises(InvalidInputError, match="k"):
        snapshot.examples({"topic": "tech"}, k=0)
    with pytest.raises(InvalidInputError, match="scores"):
        snapshot.rank(["a", "b"], [1.0])
