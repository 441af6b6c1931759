"""Themes of negative feedback on both backends: planted themes recovered (adjusted Rand
index), tied to the prompt version that produces them, with their trend and examples; what
counts as negative and which text speaks for it; too few texts; proposals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app
from flywheel.errors import InvalidInputError
from flywheel.improve.themes import HEADING, Theme
from tests.conftest import T0, Clock, Open
from tests.improve.assistant import (
    BLUNT,
    BRIEF,
    DETAIL,
    PHRASINGS,
    THEMES_AS_OF,
    THEMES_SPEC,
    play_themes,
)

Make = Callable[..., flywheel.Wheel]


@pytest.fixture
def make(wheels: Open) -> Make:
    """Wheels on the test's store (DuckDB, then PostgreSQL), on the test's clock."""
    return lambda spec=None: wheels(THEMES_SPEC if spec is None else spec, seed=7)


def _planted_theme(themes: Sequence[Theme], planted: dict[str, str | None], name: str) -> Theme:
    """The found theme holding most of the decisions planted with ``name``."""
    return max(themes, key=lambda t: sum(1 for d in t.decisions if planted[d] == name))


def test_planted_themes_are_recovered(make: Make, clock: Clock) -> None:
    wheel = make()
    planted = play_themes(wheel, clock)
    found = wheel.themes("28d", as_of=THEMES_AS_OF)
    negative = [d for d, theme in planted.items() if theme is not None]
    assert (found.served, found.negative, found.texts) == (
        len(planted),
        len(negative),
        len(negative),
    )
    assert found.reason is None and len(found.themes) == len(PHRASINGS)

    cluster = {d: i for i, t in enumerate(found.themes) for d in t.decisions}
    assert sorted(cluster) == sorted(negative)  # praise is not negative feedback
    score = adjusted_rand_score([planted[d] for d in negative], [cluster[d] for d in negative])
    assert score >= 0.8, f"adjusted Rand index {score:.3f}"

    verbose, rude = (_planted_theme(found.themes, planted, n) for n in ("verbose", "rude"))
    outdated, sources = (_planted_theme(found.themes, planted, n) for n in ("outdated", "sources"))
    assert "long" in verbose.terms and "rude" in rude.terms and "sources" in sources.terms

    # the theme most tied to a prompt version is the one planted there
    def rate_at_top(theme: Theme) -> float:
        top = theme.top("prompt")
        return 0.0 if top is None or top.rate is None else top.rate

    by_detail = max(found.themes, key=rate_at_top)
    assert verbose.top("prompt") is not None and verbose.top("prompt").value == DETAIL  # type: ignore[union-attr]
    assert rude.top("prompt").value == BLUNT  # type: ignore[union-attr]
    assert by_detail in (verbose, rude)
    shares = {v.value: v for v in verbose.by_knob["prompt"]}
    assert shares[DETAIL].rate is not None and shares[BRIEF].rate is not None
    assert (shares[DETAIL].rate or 0.0) > 3 * (shares[BRIEF].rate or 0.0)
    assert sum(v.served for v in shares.values()) == len(planted)
    # planted in the second half only: rising, nothing before
    assert outdated.trend.direction == "rising" and outdated.trend.first == 0
    assert outdated.trend.second == outdated.size
    # examples come from the theme
    for theme in found.themes:
        assert 1 <= len(theme.examples) <= 3
        texts = set(theme.examples)
        assert len(texts) == len(theme.examples)
    assert all(any(p in e.lower() for p in PHRASINGS["rude"]) for e in rude.examples)
    assert all(any(p in e.lower() for p in PHRASINGS["verbose"]) for e in verbose.examples)
    assert sum(t.size for t in found.themes) == found.texts
    as_dict = found.as_dict()
    assert as_dict["themes"][0]["label"] == found.themes[0].label
    assert "decisions" not in as_dict["themes"][0]
    print(f"adjusted Rand index: {score:.3f}")

    # the same rows give the same themes
    again = wheel.themes("28d", as_of=THEMES_AS_OF)
    assert again.as_dict() == as_dict

    # the rule-based proposal: one instruction per theme produced by the version
    proposal = wheel.propose("prompt", DETAIL, as_of=THEMES_AS_OF)
    assert proposal.reviser == "rules" and proposal.reason is None
    assert proposal.text.startswith(DETAIL + "\n\n" + HEADING + "\n")
    lines = proposal.text.split(HEADING + "\n", 1)[1].splitlines()
    assert len(lines) == len(proposal.themes) >= 1
    assert proposal.themes[0] is not None and proposal.themes[0].label == verbose.label
    for line, theme in zip(lines, proposal.themes, strict=True):
        assert line == (
            f'- Avoid what users called "{theme.label}" ({theme.share:.0%} of the negative'
            " feedback)."
        )


def test_negative_rules_and_texts(make: Make, clock: Clock) -> None:
    wheel = make()
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"rating": 2, "comment": "meh"}, "meh"),  # low rating: its comment
        ({"rating": 3, "comment": "fine"}, None),  # the middle of 1-5 is not negative
        ({"thumbs": False}, "output 2"),  # thumbs down, no comment: the output
        ({"thumbs": True, "comment": "nice"}, None),
        ({"event": "requeried"}, "output 4"),
        ({"event": "abandoned"}, "output 5"),
        ({"edit": ("the date is 1 March 2019", "Today is Monday, 2 March 2026")}, None),
        ({"edit": ("a b c d e f g h i j", "a b c d e f g h i k")}, None),  # small edit
        ({"event": "accepted"}, None),
    ]
    ids = []
    for i, (what, _) in enumerate(cases):
        clock.now = T0 + 3600 * (i + 1)
        d = wheel.decide({"topic": "tech"})
        ids.append(d.id)
        wheel.output(d, f"output {i}", ts=clock.now + 1)
        if "event" in what:
            wheel.implicit(d, what["event"], ts=clock.now + 2)
        elif "edit" in what:
            wheel.edit(d, *what["edit"], ts=clock.now + 2)
        else:
            wheel.feedback(d, **what, ts=clock.now + 2)
    found = wheel.themes("1d", as_of=T0 + 86400)
    assert found.negative == 5 and found.texts == 5 and found.served == len(cases)
    assert found.themes == () and found.reason is not None and "5 negative texts" in found.reason
    assert found.rule["rating"] == "<= 2.6"
    from flywheel.improve import themes as loop

    window = loop.read(wheel.store, wheel.spec, flywheel_moment(T0), flywheel_moment(T0 + 86400))
    texts = {n.decision_id: (n.text, n.source, n.reasons) for n in window.negatives}
    assert texts[ids[0]] == ("meh", "comment", ("rating",))
    assert texts[ids[2]] == ("output 2", "output", ("thumbs",))
    assert texts[ids[4]] == ("output 4", "output", ("requeried",))
    assert texts[ids[5]] == ("output 5", "output", ("abandoned",))
    assert texts[ids[6]] == (
        "the date is 1 March 2019 Today is Monday, 2 March 2026",
        "edit",
        ("edit",),
    )
    assert set(texts) == {ids[i] for i in (0, 2, 4, 5, 6)}


def flywheel_moment(seconds: float) -> Any:
    from flywheel.align import moment

    return moment(seconds)


def test_too_few_texts_and_bad_input(make: Make, clock: Clock) -> None:
    wheel = make()
    found = wheel.themes("28d", as_of=T0)
    assert (
        found.themes == ()
        and found.texts == 0
        and "themes need at least 10" in (found.reason or "")
    )
    proposal = wheel.propose("prompt", BRIEF, as_of=T0)
    assert proposal.text == BRIEF and proposal.themes == () and proposal.reason
    with pytest.raises(InvalidInputError, match="knob"):
        wheel.propose("tone", BRIEF)
    with pytest.raises(InvalidInputError, match="window"):
        wheel.themes("soon")


def test_a_reviser_of_ones_own_and_a_free_text(make: Make, clock: Clock) -> None:
    wheel = make()
    play_themes(wheel, clock, decisions=120, seed=3)
    seen: list[tuple[str, int]] = []

    def my_model(base: str, themes: Sequence[Theme]) -> str:
        seen.append((base, len(themes)))
        return base + " Be concise."

    proposal = wheel.propose("prompt", "Answer politely.", my_model, as_of=THEMES_AS_OF)
    assert proposal.text == "Answer politely. Be concise." and proposal.reviser == "my_model"
    assert seen == [("Answer politely.", len(proposal.themes))] and proposal.themes
    assert proposal.as_dict()["themes"] == [t.label for t in proposal.themes]


def test_the_command(make: Make, clock: Clock, tmp_path: Any, each_store: str) -> None:
    wheel = make()
    play_themes(wheel, clock, decisions=120, seed=3)
    wheel.close()
    import tomllib  # noqa: F401  (the spec is written as TOML below)

    spec = tmp_path / "flywheel.toml"
    spec.write_text(_toml(each_store))
    at = "2026-01-29T00:00:00Z"
    result = CliRunner().invoke(app, ["themes", "-s", str(spec), "--as-of", at, "--json"])
    assert result.exit_code == 0, result.output
    assert '"themes"' in result.output
    table = CliRunner().invoke(app, ["themes", "-s", str(spec), "--as-of", at])
    assert table.exit_code == 0, table.output
    assert "most with" in table.output and "prompt =" in table.output


def _toml(store: str) -> str:
    values = ", ".join(f'"{v}"' for v in THEMES_SPEC["knobs"]["prompt"])
    return f"""name = "assistant-themes"

[knobs]
prompt = [{values}]

[context]
topic = ["billing", "tech"]

[reward]
formula = "(rating - 1) / 4"
window = "7d"

[signals]
rating = {{ combine = "last", min = 1, max = 5 }}

[storage]
url = "{store}"
"""
