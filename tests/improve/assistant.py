"""A small simulated assistant log with known inputs, outputs, ratings and edits, and the
exact rows each training set must hold for it."""

from __future__ import annotations

from typing import Any

import flywheel
from tests.conftest import HOUR, T0, Clock

SPEC: dict[str, Any] = {
    "name": "assistant",
    "knobs": {"style": ["plain", "steps"]},
    "context": {"topic": ["billing", "tech"]},
    "reward": {"formula": "(rating - 1) / 4", "window": "7d"},
    "signals": {"rating": {"combine": "last", "min": 1, "max": 5}},
}
AS_OF = T0 + HOUR
"""Every decision, signal and edit of the log is before this; ratings' windows stay open."""

PASSWORD = "How do I reset my password?"
CANCEL = "Cancel my plan"
BALANCE = "What is my balance?"
TRANSLATE = "Translate 'hello' to Spanish"

# (input, output, rating, edits as (draft, final) in order), one decision a minute
LOG: list[tuple[str | None, str | None, int | None, list[tuple[str, str]]]] = [
    (PASSWORD, "Click 'Forgot password'.", 5, []),  # 1: the best answer to PASSWORD
    (PASSWORD, "Contact support.", 2, []),  # 2: the worst answer to PASSWORD
    (
        CANCEL,
        "Go to Billing > Cancel.",
        4,
        [("Go to Billing > Cancel.", "Go to Billing > Plan > Cancel.")],
    ),  # 3: edited, rated well
    (CANCEL, "I can't help with that.", 1, []),  # 4: the worst answer to CANCEL
    (BALANCE, "It is on the dashboard.", 5, [("It is on the dashboard.",) * 2]),  # 5: no change
    ("Where is my invoice?", None, None, []),  # 6: never answered
    (None, "An answer to nothing.", 5, []),  # 7: no input
    (PASSWORD, "Click 'Forgot password'.", 5, []),  # 8: ties with 1 (the earlier wins)
    (TRANSLATE, "hola", 3, []),  # 9: reward 0.5, the default threshold itself
    (TRANSLATE, "hola", 1, []),  # 10: the same output, rated worse: no pair
    ("Summarise this", "Summary A", None, [("Summary A", "Summary B")]),  # 11: no rating yet
    (
        "Fix the grammar: he go home",
        "He go home.",
        4,
        [("He go home.", "He goes home!"), ("He go home.", "He goes home.")],
    ),  # 12: edited twice: the latest edit counts
]

SFT = [
    (PASSWORD, "Click 'Forgot password'."),
    (CANCEL, "Go to Billing > Plan > Cancel."),
    (BALANCE, "It is on the dashboard."),
    (PASSWORD, "Click 'Forgot password'."),
    (TRANSLATE, "hola"),
    ("Fix the grammar: he go home", "He goes home."),
]
PREFERENCES = [
    (PASSWORD, "Click 'Forgot password'.", "Contact support."),  # rating pair, at 1
    (CANCEL, "Go to Billing > Plan > Cancel.", "Go to Billing > Cancel."),  # edit of 3
    (CANCEL, "Go to Billing > Cancel.", "I can't help with that."),  # rating pair, at 3
    ("Summarise this", "Summary B", "Summary A"),  # edit of 11
    ("Fix the grammar: he go home", "He goes home.", "He go home."),  # latest edit of 12
]
KTO = [
    (PASSWORD, "Click 'Forgot password'.", True),
    (PASSWORD, "Contact support.", False),
    (CANCEL, "Go to Billing > Cancel.", True),
    (CANCEL, "I can't help with that.", False),
    (BALANCE, "It is on the dashboard.", True),
    (PASSWORD, "Click 'Forgot password'.", True),
    (TRANSLATE, "hola", True),
    (TRANSLATE, "hola", False),
    ("Fix the grammar: he go home", "He go home.", True),
]


def play(wheel: flywheel.Wheel, clock: Clock, log: list[Any] | None = None) -> list[str]:
    """Record ``log`` (default :data:`LOG`) through the SDK, a decision a minute; their ids."""
    ids = []
    for i, (prompt, output, rating, edits) in enumerate(LOG if log is None else log):
        clock.now = T0 + 60 * i
        d = wheel.decide({"topic": "billing" if i % 2 else "tech"}, input=prompt)
        ids.append(d.id)
        if output is not None:
            wheel.output(d, output, ts=clock.now + 1)
        for n, (draft, final) in enumerate(edits):
            wheel.edit(d, draft, final, ts=clock.now + 10 * (n + 1))
        if rating is not None:
            wheel.feedback(d, rating=rating, ts=clock.now + 30)
    clock.now = AS_OF
    return ids


def sft_pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """SFT rows as (user, assistant) texts, checking each row's shape on the way."""
    out = []
    for row in rows:
        assert list(row) == ["messages"]
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        out.append((user["content"], assistant["content"]))
    return out
