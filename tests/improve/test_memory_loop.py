"""The example memory turning with the wheel, on both backends: each cycle's changed snapshot
becomes a value of the memory's knob (older ones retired), a decision's examples are those of
the snapshot it was served, a badly rated example is evicted from the next one, documents
rank by their feedback, and forgetting a unit reaches every snapshot."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

import flywheel
from flywheel.errors import InvalidInputError
from tests.conftest import HOUR, Clock, Open

SPEC: dict[str, Any] = {
    "name": "memory",
    "knobs": {
        "examples": {"values": ["none"], "open": True},
        "tone": ["plain", "warm"],
    },
    "context": {"topic": ["billing", "tech"]},
    "reward": {"formula": "(rating - 1) / 4", "window": "1d"},
    "signals": {
        "rating": {"combine": "last", "min": 1, "max": 5},
        "sources": {"combine": "last", "kind": "text"},
    },
    "privacy": {"redact_text": False},
    "memory": {"knob": "examples", "k": 2, "keep": 2, "documents": "sources"},
}
QUESTIONS = {
    "billing": ["Why was I charged twice?", "How do I get a refund?"],
    "tech": ["The app crashes on start", "How do I reset my password?"],
}

Make = Callable[..., flywheel.Wheel]


@pytest.fixture
def make(wheels: Open) -> Make:
    return lambda: wheels(SPEC, seed=11)


def day(wheel: flywheel.Wheel, clock: Clock, rng: random.Random, n: int = 60) -> list[Any]:
    """A day of answered and rated questions: answers citing the good guide rate well, those
    citing the old one badly; the first of each day is also the day's best answer."""
    made = []
    for i in range(n):
        clock.now += HOUR * 20 / n
        topic = rng.choice(["billing", "tech"])
        question = rng.choice(QUESTIONS[topic])
        d = wheel.decide({"topic": topic}, input=question)
        good = rng.random() < 0.6
        source = "guide-new" if good else "guide-old"
        wheel.output(d, f"Answer {i} to {question!r} from {source}")
        wheel.signal(d, "sources", f"{source}, faq")
        wheel.signal(d, "rating", 5 if good else 2)
        made.append(d)
    clock.now += HOUR * 4
    return made


def test_each_cycle_refreshes_the_memory_as_a_knob_value(make: Make, clock: Clock) -> None:
    wheel = make()
    rng = random.Random(3)
    day(wheel, clock, rng)
    assert wheel.examples({"topic": "billing"}) == []  # no snapshot yet
    assert wheel.learn().published
    snapshots = [v for v in wheel.values("examples") if v.origin == "added"]
    assert len(snapshots) == 1 and snapshots[0].actor == "memory"
    first = str(snapshots[0].value)
    assert first.startswith("m") and first in wheel.spec.knob["examples"].values
    found = wheel.examples({"topic": "billing"}, input="How do I get a refund?")
    assert len(found) == 2
    assert found[0].context["topic"] == "billing" and found[0].input == "How do I get a refund?"
    assert all(e.reward == 1.0 for e in found)
    # a decision's examples are its snapshot's; the knob's own value means none
    served = [wheel.decide({"topic": "tech"}, input="The app crashes on start") for _ in range(80)]
    with_memory = [d for d in served if d.params["examples"] == first]
    without = [d for d in served if d.params["examples"] == "none"]
    assert with_memory and without
    assert wheel.examples(without[0]) == []
    shown = wheel.examples(with_memory[0], k=1, input="The app crashes on start")
    assert len(shown) == 1 and shown[0].context["topic"] == "tech"
    # three more days: each cycle adds the changed snapshot; only the newest two stay served
    for _ in range(3):
        day(wheel, clock, rng)
        wheel.learn()
    added = [v for v in wheel.values("examples") if v.origin == "added"]
    assert len(added) == 4
    assert [v.state for v in added] == ["retired", "retired", "active", "active"]
    assert all(v.retired_by == "memory" for v in added[:2])
    assert {
        d.params["examples"] for d in (wheel.decide({"topic": "tech"}) for _ in range(200))
    } <= {
        "none",
        added[2].value,
        added[3].value,
    }


def test_a_badly_rated_example_is_evicted_and_documents_rank_by_feedback(
    make: Make, clock: Clock
) -> None:
    wheel = make()
    rng = random.Random(5)
    day(wheel, clock, rng)
    wheel.learn()
    served = [wheel.decide({"topic": "billing"}) for _ in range(40)]
    mine = next(d for d in served if d.params["examples"] != "none")
    best = wheel.examples({"topic": "billing"}, k=1)[0]
    assert best.decision_id in [e.decision_id for e in wheel.examples(mine, k=50)]
    wheel.signal(best.decision_id, "rating", 1)  # the user changed their mind
    clock.now += HOUR  # the next cycle comes before a new snapshot is due ([memory] refresh)
    wheel.learn(force=True)
    assert len([v for v in wheel.values("examples") if v.origin == "added"]) == 1
    # evicted from the snapshot served, which keeps its id, at once
    assert best.decision_id not in [e.decision_id for e in wheel.examples(mine, k=50)]
    fresh = [e.decision_id for e in wheel.examples({"topic": "billing"}, k=50)]
    assert best.decision_id not in fresh
    # retrieval put the old guide first; feedback puts the new one first and the old one last
    ranked = wheel.rank(["guide-old", "faq", "guide-new", "unknown"], [0.4, 0.3, 0.2, 0.15])
    order = [doc for doc, _ in ranked]
    assert order.index("guide-new") < order.index("faq") < order.index("guide-old")
    assert order[0] == "guide-new" and dict(ranked)["unknown"] == 0.15


def test_forgetting_a_unit_reaches_every_snapshot(make: Make, clock: Clock) -> None:
    wheel = make()
    rng = random.Random(7)
    d = wheel.decide({"topic": "billing"}, unit="ann@example.com", input="Refund for Ann?")
    wheel.output(d, "Ann's refund is on its way")
    wheel.signal(d, "rating", 5)
    day(wheel, clock, rng)
    wheel.learn()
    assert any(e.decision_id == d.id for e in wheel.examples({"topic": "billing"}, k=200))
    other = make()  # another process serving the same store, which has read the snapshot
    assert any(e.decision_id == d.id for e in other.examples({"topic": "billing"}, k=200))
    deleted = wheel.forget("ann@example.com")
    assert all(e.decision_id != d.id for e in other.examples({"topic": "billing"}, k=200))
    assert deleted["memory"] >= 1
    for value in wheel.spec.knob["examples"].values[1:]:
        snapshot = wheel._snapshot(str(value))
        assert snapshot is not None and all(e.decision_id != d.id for e in snapshot.entries)
    assert "Ann" not in str(wheel.examples({"topic": "billing"}, k=200))


def test_without_a_memory_section_examples_are_refused(each_store: str, clock: Clock) -> None:
    spec = {**SPEC}
    del spec["memory"]
    with (
        flywheel.open(spec, store=each_store, clock=clock, background=False) as wheel,
        pytest.raises(InvalidInputError, match=r"\[memory\]"),
    ):
        wheel.examples({"topic": "billing"})
