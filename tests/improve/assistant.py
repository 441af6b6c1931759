"""A small simulated assistant log with known inputs, outputs, ratings and edits, and the
exact rows each training set must hold for it."""

from __future__ import annotations

import random
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


# --- planted themes of negative feedback ---------------------------------------------------------

DETAIL, BRIEF, BLUNT = "Answer in detail.", "Answer briefly.", "Be blunt."
THEMES_SPEC: dict[str, Any] = {
    "name": "assistant-themes",
    "knobs": {"prompt": [BRIEF, DETAIL, BLUNT]},
    "context": {"topic": ["billing", "tech"]},
    "reward": {"formula": "(rating - 1) / 4", "window": "7d"},
    "signals": {"rating": {"combine": "last", "min": 1, "max": 5}},
}
WINDOW_DAYS = 28
THEMES_AS_OF = T0 + WINDOW_DAYS * 86400.0
"""The end of the planted log's window: every decision and signal is before it."""

PHRASINGS: dict[str, list[str]] = {
    "verbose": [
        "too long",
        "way too long",
        "too long and verbose",
        "far too long to read",
        "long winded answer",
        "answer is long, get to the point",
    ],
    "outdated": [
        "outdated information",
        "outdated, wrong date",
        "the date is outdated",
        "outdated answer, wrong year",
        "this is outdated",
        "outdated facts",
    ],
    "rude": [
        "rude tone",
        "very rude",
        "condescending and rude",
        "the tone was rude",
        "rude, felt condescending",
        "rude and dismissive",
    ],
    "sources": [
        "missing sources",
        "no sources cited",
        "cite your sources",
        "no citations or sources",
        "sources missing",
        "where are the sources",
    ],
}
"""Each theme's phrasings: several ways of saying it, sharing its key word."""
NOISE = [
    "honestly",
    "please fix this",
    "not helpful",
    "again",
    "ugh",
    "meh",
    "come on",
    "seriously",
    "thanks anyway",
    "bad answer",
]
PRAISE = ["great answer, thanks", "perfect", "helpful and clear", "exactly what I needed"]

RATES: dict[str, dict[str, float]] = {
    "verbose": {BRIEF: 0.03, DETAIL: 0.35, BLUNT: 0.03},
    "rude": {BRIEF: 0.03, DETAIL: 0.03, BLUNT: 0.35},
    "sources": {BRIEF: 0.1, DETAIL: 0.1, BLUNT: 0.1},
    "outdated": {BRIEF: 0.15, DETAIL: 0.15, BLUNT: 0.15},
}
"""Each theme's chance per decision, by prompt version ("outdated": in the second half of the
window only; "sources": the same everywhere)."""


def complaint(rng: random.Random, theme: str) -> str:
    """A comment of ``theme``: one of its phrasings, with noise words before and after."""
    words = [rng.choice(PHRASINGS[theme])]
    if rng.random() < 0.5:
        words.insert(0, rng.choice(NOISE))
    if rng.random() < 0.5:
        words.append(rng.choice(NOISE))
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def play_themes(
    wheel: flywheel.Wheel, clock: Clock, decisions: int = 360, seed: int = 7
) -> dict[str, str | None]:
    """A month of an assistant's decisions, evenly spread over the window that ends at
    :data:`THEMES_AS_OF`; each prompt version draws the planted themes at its :data:`RATES`,
    and a planted decision gets a low rating or a thumbs down with a comment of its theme
    (the others a good rating, some with praise). Returns each decision's planted theme."""
    rng = random.Random(seed)
    step = WINDOW_DAYS * 86400.0 / decisions
    planted: dict[str, str | None] = {}
    for i in range(decisions):
        clock.now = T0 + step * (i + 0.5)
        second_half = i >= decisions // 2
        d = wheel.decide({"topic": "billing" if i % 2 else "tech"}, input=f"question {i}")
        version = d.params["prompt"]
        wheel.output(d, f"answer {i}", ts=clock.now + 1)
        draw, theme = rng.random(), None
        for name, rates in RATES.items():
            rate = rates[version] if name != "outdated" or second_half else 0.0
            if draw < rate:
                theme = name
                break
            draw -= rate
        planted[d.id] = theme
        if theme is None:
            comment = rng.choice(PRAISE) if rng.random() < 0.3 else None
            wheel.feedback(d, rating=rng.choice([4, 5]), comment=comment, ts=clock.now + 60)
        elif rng.random() < 0.5:
            wheel.feedback(
                d, rating=rng.choice([1, 2]), comment=complaint(rng, theme), ts=clock.now + 60
            )
        else:
            wheel.feedback(d, thumbs=False, comment=complaint(rng, theme), ts=clock.now + 60)
    clock.now = THEMES_AS_OF
    return planted
