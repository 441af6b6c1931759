"""A simulated help-desk assistant and its users, for the assistant example.

Customers ask about billing, a technical problem or their account; the assistant answers
from templates. Four hidden flaws (the planted themes) make an answer bad:

- ``verbose``: padded with paragraphs nobody asked for;
- ``vague``: no specifics, "it depends";
- ``steps``: a paragraph where the customer needed numbered steps;
- ``formal``: stiff, "Dear valued customer".

Each flaw has a chance per answer (:func:`flaw_rates`) that depends on the situation (the
topic, the kind of user), on the model answering (:data:`MODELS`), on the text of the system
prompt (a line that names the flaw, such as "Avoid what users called 'too long'", makes it
rarer: :data:`CUES`) and on the examples put in front of the model (answers with numbered
steps make the ``steps`` and ``vague`` flaws rarer). Nothing here knows the prompt's or the
examples' names: only their texts count.

Users rate every answer from 1 to 5 (a flawless one 4 or 5, a flawed one 1 or 2), say what
was wrong in their own words (several phrasings per flaw: :data:`PHRASINGS`), sometimes rewrite
a flawed draft into the answer they wanted, and sometimes give a thumbs up or down.
Everything is drawn from one seeded generator: a seed tells the same story.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

THEMES = ("verbose", "vague", "steps", "formal")
TOPICS = ("billing", "tech", "account")
TOPIC_WEIGHTS = (0.35, 0.4, 0.25)
USERS = ("new", "pro")
USER_WEIGHTS = (0.6, 0.4)

MODELS: dict[str, dict[str, float]] = {
    "base": {"verbose": 0.22, "vague": 0.14, "steps": 0.2, "formal": 0.12},
    "tuned-a": {"verbose": 0.7, "vague": 0.35, "steps": 0.4, "formal": 0.35},
    "tuned-b": {"verbose": 0.08, "vague": 0.06, "steps": 0.1, "formal": 0.04},
}
"""Each model's chance of each flaw in a neutral situation: ``base`` is the model the
product starts with, ``tuned-a`` a fine-tune that went wrong, ``tuned-b`` one that worked.
Any other model name answers like ``base``."""

TOPIC_EFFECT: dict[str, dict[str, float]] = {
    "billing": {"steps": 0.6, "vague": 1.3},
    "tech": {"steps": 1.6},
    "account": {"formal": 1.3},
}
USER_EFFECT: dict[str, dict[str, float]] = {
    "new": {"vague": 1.3, "verbose": 0.8},
    "pro": {"verbose": 1.5, "formal": 1.2},
}
"""How much more (or less) often a flaw shows in a topic or for a kind of user."""

CUES: dict[str, tuple[str, ...]] = {
    "verbose": ("long", "verbose", "short", "concise"),
    "vague": ("vague", "specific", "generic"),
    "steps": ("steps", "step"),
    "formal": ("formal", "stiff", "tone"),
}
"""Words of a prompt line that address a flaw: a prompt line with one of them lowers it."""
PROMPT_EFFECT = 0.3
"""A flaw's chance is multiplied by this when a line of the prompt addresses it."""
EXAMPLE_EFFECT = {"steps": 0.35, "vague": 0.6}
"""A flaw's chance is multiplied by this when every example shown has numbered steps (in
proportion when only some have)."""

PHRASINGS: dict[str, tuple[str, ...]] = {
    "verbose": (
        "too long",
        "way too long",
        "far too long to read",
        "too long, get to the point",
        "long winded and too long",
        "answer is too long",
    ),
    "vague": (
        "too vague",
        "vague, nothing specific",
        "vague answer",
        "so vague it is useless",
        "vague and generic",
        "very vague reply",
    ),
    "steps": (
        "no steps",
        "give me the steps",
        "where are the steps",
        "missing the actual steps",
        "I needed steps",
        "steps please, not an essay",
    ),
    "formal": (
        "too formal",
        "stiff and formal",
        "overly formal tone",
        "formal like a legal letter",
        "so formal it reads like a contract",
        "formal and cold",
    ),
}
"""What users say about each flaw: several phrasings sharing the flaw's key word."""
NOISE = ("honestly", "again", "ugh", "seriously", "come on", "please fix this", "meh")
PRAISE = ("great, thanks", "perfect", "exactly what I needed", "clear and quick", "thank you")


@dataclass(frozen=True)
class Question:
    """A question template of a topic: its text (``{slot}`` filled from ``slots``) and the
    steps of the right answer (``{slot}`` filled alike)."""

    text: str
    steps: tuple[str, ...]
    slots: tuple[str, ...] = ()


QUESTIONS: dict[str, tuple[Question, ...]] = {
    "billing": (
        Question(
            "Why was I charged twice this month?",
            (
                "Open Billing > History.",
                "Find the two charges with the same date.",
                "Click 'Report a duplicate' on the second one: it is refunded in 3 days.",
            ),
        ),
        Question(
            "How do I update my card?",
            (
                "Open Billing > Payment methods.",
                "Click 'Add card' and enter the new card.",
                "Make it the default and remove the old one.",
            ),
        ),
        Question(
            "Can I get a refund for my {slot} plan?",
            (
                "Open Billing > Plans and select {slot}.",
                "Click 'Cancel and refund': refunds cover the unused days.",
                "The refund reaches your card within 5 days.",
            ),
            ("Basic", "Pro", "Team"),
        ),
        Question(
            "Where do I find my invoices?",
            (
                "Open Billing > Invoices.",
                "Pick the month and click 'Download PDF'.",
            ),
        ),
    ),
    "tech": (
        Question(
            "The app crashes when I {slot}.",
            (
                "Update the app to the latest version.",
                "Sign out and sign in again.",
                "If it still crashes, send the log from Help > Diagnostics.",
            ),
            ("open a report", "upload a file", "log in"),
        ),
        Question(
            "How do I connect {slot}?",
            (
                "Open Settings > Integrations.",
                "Click 'Connect' next to {slot} and sign in there.",
                "Choose the folders or channels to share.",
            ),
            ("Slack", "Google Drive", "Zapier"),
        ),
        Question(
            "Sync stopped working on my {slot}.",
            (
                "Check that the {slot} is online.",
                "Open Settings > Sync and click 'Sync now'.",
                "If it fails, remove the account and add it again.",
            ),
            ("phone", "laptop"),
        ),
    ),
    "account": (
        Question(
            "How do I reset my password?",
            (
                "Open the sign-in page and click 'Forgot password'.",
                "Enter your email address.",
                "Follow the link in the email we send you.",
            ),
        ),
        Question(
            "How do I add a teammate?",
            (
                "Open Settings > Team.",
                "Click 'Invite' and enter their email address.",
                "They join once they accept the invitation.",
            ),
        ),
        Question(
            "How do I change my email address?",
            (
                "Open Settings > Profile.",
                "Edit the email address and save.",
                "Confirm the change from the link sent to the new address.",
            ),
        ),
    ),
}

_STEP = re.compile(r"^\s*\d+\.\s", re.M)


def has_steps(text: str) -> bool:
    """Whether ``text`` has at least two numbered lines ("1. ...")."""
    return len(_STEP.findall(text)) >= 2


def addressed(prompt: str) -> frozenset[str]:
    """The flaws a prompt text addresses: those named by a cue word in one of its lines."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    return frozenset(theme for theme, cues in CUES.items() if words & set(cues))


def flaw_rates(
    topic: str, user: str, prompt: str, model: str, examples: Sequence[str] = ()
) -> dict[str, float]:
    """Each flaw's chance in an answer to a ``user`` of ``topic`` by ``model`` under the
    ``prompt`` text, with the outputs of ``examples`` shown to the model."""
    rates = dict(MODELS.get(model, MODELS["base"]))
    fixed = addressed(prompt)
    with_steps = sum(has_steps(e) for e in examples) / len(examples) if examples else 0.0
    for theme in THEMES:
        rate = rates[theme]
        rate *= TOPIC_EFFECT[topic].get(theme, 1.0) * USER_EFFECT[user].get(theme, 1.0)
        if theme in fixed:
            rate *= PROMPT_EFFECT
        if theme in EXAMPLE_EFFECT:
            rate *= 1.0 - (1.0 - EXAMPLE_EFFECT[theme]) * with_steps
        rates[theme] = min(rate, 0.95)
    return rates


def mean_rating(flaws: int) -> float:
    """The mean rating users give an answer with this many flaws (:meth:`Helpdesk.react`)."""
    if flaws == 0:
        return 0.05 * 3 + 0.95 * (0.6 * 5 + 0.4 * 4)
    if flaws == 1:
        return 0.7 * 2 + 0.3 * 1
    return 1.0


def expected_rating(rates: Mapping[str, float]) -> float:
    """The mean rating users give answers with these flaw chances (see :meth:`Helpdesk.react`)."""
    total = 0.0
    for present in itertools.product((False, True), repeat=len(THEMES)):
        p = 1.0
        for theme, on in zip(THEMES, present, strict=True):
            p *= rates[theme] if on else 1.0 - rates[theme]
        total += p * mean_rating(sum(present))
    return total


@dataclass(frozen=True)
class Answer:
    """What the assistant answered to a question, the flaws it has and the answer the user
    wanted (the fixed steps)."""

    question: str
    text: str
    flaws: tuple[str, ...]
    ideal: str


@dataclass
class Helpdesk:
    """The customers, the assistant and the users' reactions, from one seeded generator."""

    seed: int = 7
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def context(self) -> dict[str, str]:
        """The next customer: a topic and a kind of user."""
        return {
            "topic": self.rng.choices(TOPICS, TOPIC_WEIGHTS)[0],
            "user": self.rng.choices(USERS, USER_WEIGHTS)[0],
        }

    def question(self, topic: str) -> tuple[str, tuple[str, ...]]:
        """A question of ``topic`` and the steps of its right answer."""
        q = self.rng.choice(QUESTIONS[topic])
        slot = self.rng.choice(q.slots) if q.slots else ""
        return q.text.format(slot=slot), tuple(s.format(slot=slot) for s in q.steps)

    def answer(
        self,
        context: Mapping[str, str],
        question: str,
        steps: Sequence[str],
        prompt: str,
        model: str,
        examples: Sequence[str] = (),
    ) -> Answer:
        """The assistant's answer: each flaw drawn at its :func:`flaw_rates` chance, and the
        text written with the flaws drawn."""
        rates = flaw_rates(context["topic"], context["user"], prompt, model, examples)
        flaws = tuple(t for t in THEMES if self.rng.random() < rates[t])
        return Answer(question, write(steps, flaws), flaws, write(steps, ()))

    def react(self, user: str, answer: Answer) -> Reaction:
        """A user's reaction to ``answer``: a flawless one gets 4 or 5 (3 now and then), one
        flaw 1 or 2, more flaws 1; a flawed answer gets a comment about one of its flaws, a pro
        user rewrites it half the time, and some users give a thumb."""
        rng = self.rng
        if not answer.flaws:
            rating = 3 if rng.random() < 0.05 else 5 if rng.random() < 0.6 else 4
            comment = rng.choice(PRAISE) if rng.random() < 0.2 else None
            thumbs = True if rng.random() < 0.3 else None
            return Reaction(rating, comment, None, thumbs, None)
        rating = (2 if rng.random() < 0.7 else 1) if len(answer.flaws) == 1 else 1
        theme = rng.choice(answer.flaws)
        words = [rng.choice(PHRASINGS[theme])]
        if rng.random() < 0.4:
            words.insert(0, rng.choice(NOISE))
        if rng.random() < 0.4:
            words.append(rng.choice(NOISE))
        comment = " ".join(words)
        comment = comment[0].upper() + comment[1:] + "."
        edit = answer.ideal if user == "pro" and rng.random() < 0.5 else None
        thumbs = False if rng.random() < 0.3 else None
        return Reaction(rating, comment, edit, thumbs, theme)


def write(steps: Sequence[str], flaws: Sequence[str]) -> str:
    """An answer's text: the steps, numbered, unless the answer has flaws that change it."""
    if "vague" in flaws:
        body = [
            "It depends on your setup and on what you see on your screen.",
            "Usually the relevant settings are somewhere in the app; have a look around.",
        ]
    else:
        body = list(steps)
    if "steps" in flaws:
        lines = [" ".join(s.rstrip(".") + "," for s in body).rstrip(",") + "."]
    else:
        lines = [f"{n}. {s}" for n, s in enumerate(body, 1)]
    if "verbose" in flaws:
        lines = [
            "Thank you for your question, which is a very common one among our customers.",
            "Before we start, it helps to understand how the app organises its settings, "
            "which are grouped by area and which change from one version to the next.",
            *lines,
            "Note that some of these options depend on your plan, your region and on the "
            "permissions your administrator gave you, so results may vary.",
            "We hope this explanation has been useful and covers everything you needed.",
        ]
    if "formal" in flaws:
        lines = [
            "Dear valued customer,",
            "We hereby acknowledge receipt of your enquiry.",
            *lines,
            "Yours faithfully, the Customer Support Department.",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Reaction:
    """A user's reaction: the rating, the comment (``None``: none), the text the user rewrote
    the draft into (``None``: no edit), a thumb (``None``: none) and the flaw the comment is
    about (``None``: the answer had none)."""

    rating: int
    comment: str | None
    edit: str | None
    thumbs: bool | None
    theme: str | None
