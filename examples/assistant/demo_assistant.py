"""An assistant that improves itself: every loop of the wheel turning (``make demo-assistant``).

The product is a help-desk assistant (``helpdesk.py``). For each question it asks the wheel
which system prompt, model and examples to answer with (``decide``, with the question as
``input``), reads the prompt's text (``wheel.text``) and, unless the decision says
``examples = "none"``, the examples the memory holds for the question (``wheel.examples``),
answers (``output``), and reports what the user did: a rating, a comment, sometimes a thumb
or an edit of the draft (``feedback``, ``edit``). Users dislike four hidden flaws (too long,
too vague, no steps, too formal), whose chances depend on the prompt's text, the examples
and the model.

The wheel turns by itself: a learn cycle a day (``[learn] every``), and between cycles
serving follows the ratings. Over a simulated month the product closes every loop:

1. day 0: one prompt (``v1``), one model (``base``), no examples;
2. every cycle the example memory (``[memory]``) keeps the best-rated answers as a snapshot,
   a new value of the ``examples`` knob, tested against answering without examples;
3. day 7: ``wheel.themes()`` finds the planted flaws in the negative feedback,
   ``wheel.propose("prompt", "v1")`` writes a prompt that addresses them, and
   ``wheel.add_value("prompt", "v2", text=...)`` serves it at once, beside ``v1``;
4. day 14: the SFT, preference and KTO sets are exported (``wheel.training_set``), and the
   model fine-tuned on them is added (``add_value("model", "tuned-a")``): it answers worse,
   and the wheel's guard rolls it back;
5. once the guard has rolled ``tuned-a`` back (from day 18 on; day 21 at the latest), a
   second fine-tune (``tuned-b``) is added: it answers better, and the guard promotes it.

Run it from the repository root::

    python examples/assistant/demo_assistant.py [--seed 7] [--days 30] [--out .flywheel/assistant]

It writes the store, the three training sets, ``summary.json`` (the mean rating of the first
and the last day and the hidden best's), ``story.json`` (what each loop did) and
``assistant.png`` into ``--out``.

**Your own assistant.** Replace ``Helpdesk.answer`` with your model call (the prompt's text,
the model's name and the examples' outputs are what it gets) and ``Helpdesk.react`` with what
your users send back, keep the spec's three open knobs, and call ``propose`` and
``add_value`` when the themes say the prompt needs work, and ``add_value("model", ...)`` for
each model you fine-tune on the exported sets. In production the wheel's background turn runs
the cycles on the wall clock: there is no clock to advance and no ``settle`` to call.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import helpdesk

import flywheel
from flywheel.catalogue import KnobValue
from flywheel.improve.datasets import KINDS
from flywheel.improve.themes import Themes

HERE = Path(__file__).resolve().parent
SPEC = HERE / "assistant.toml"
DAY = 86_400.0
START = datetime(2026, 2, 2, tzinfo=UTC).timestamp()  # a fixed clock: the same story every run
PACE = 150  # decisions between two looks of the wheel's turn at the simulated clock
KNOBS = ("prompt", "model", "examples")

PROMPT_DAY = 7  # the themes are read and the revised prompt is added
MODEL_DAY = 14  # the training sets are exported and the first fine-tune is added
SECOND_MODEL_DAY = 18  # the second fine-tune is added once the first is rolled back ...
LAST_MODEL_DAY = 21  # ... or on this day, whichever comes first
WINDOW = f"{PROMPT_DAY}d"  # the themes' window: everything so far
MODEL_SHARE = 0.2  # the share of the traffic a new model gets until it has results
EVENTS = ("add_value", "retire_value", "rollback", "promote", "ready")
"""The audit entries the story keeps: values added and retired, the guard's verdicts on
them, and the training sets becoming ready to tune on."""

Due = tuple[float, int, str, str, Any]  # (when, tiebreak, decision id, kind, value)


@dataclass
class Day:
    """What was served one day and how users rated it."""

    number: int
    decisions: int = 0
    rating: float = 0.0  # the mean rating users gave
    expected: float = 0.0  # the mean hidden expected rating of what was served
    served: dict[str, Counter[str]] = field(
        default_factory=lambda: {k: Counter[str]() for k in KNOBS}
    )

    def add(self, params: Mapping[str, Any], rating: int, expected: float) -> None:
        self.decisions += 1
        self.rating += rating
        self.expected += expected
        for knob in KNOBS:
            self.served[knob][str(params[knob])] += 1

    def close(self) -> None:
        self.rating = round(self.rating / max(self.decisions, 1), 4)
        self.expected = round(self.expected / max(self.decisions, 1), 4)

    def share(self, knob: str, value: str) -> float:
        """The share of the day's decisions served ``value`` of ``knob``."""
        return self.served[knob][value] / max(self.decisions, 1)

    def shares(self, knob: str) -> dict[str, float]:
        return {v: round(n / max(self.decisions, 1), 4) for v, n in self.served[knob].items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=30, help="days of questions (default 30)")
    parser.add_argument("--questions", type=int, default=300, help="questions a day (300)")
    parser.add_argument("--out", type=Path, default=Path(".flywheel/assistant"))
    args = parser.parse_args(argv)
    return run(args.out, seed=args.seed, days=args.days, per_day=args.questions)


def run(
    out: Path,
    *,
    seed: int = 7,
    days: int = 30,
    per_day: int = 300,
    store: str | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Simulate ``days`` days of ``per_day`` questions into a fresh store in ``out`` (or
    ``store``, a store URL), closing each loop on its day; write the training sets,
    ``summary.json``, ``story.json`` and ``assistant.png`` into ``out``; return the story."""
    if days < LAST_MODEL_DAY + 5:
        raise SystemExit(f"--days must be at least {LAST_MODEL_DAY + 5}: the story needs them")
    out.mkdir(parents=True, exist_ok=True)
    if store is None:
        path = (out / "assistant.duckdb").resolve()  # relative URLs resolve beside the spec
        for stale in (path, Path(f"{path}.wal")):
            stale.unlink(missing_ok=True)
        store = f"duckdb:///{path}"
    clock = [START]
    history: list[Day] = []
    story: dict[str, Any] = {"seed": seed, "days": days, "questions_per_day": per_day}
    with flywheel.open(
        SPEC, store=store, clock=lambda: clock[0], refresh=0, seed=seed + 1
    ) as wheel:
        product = Product(wheel, helpdesk.Helpdesk(seed))
        for day in range(days):
            clock[0] = START + day * DAY
            product.deliver(clock[0])
            wheel.settle()  # the cycle due at midnight runs before the day starts
            if day == PROMPT_DAY:
                story["themes"], story["prompt"] = _improve_prompt(wheel, product.planted, say)
            elif day == MODEL_DAY:
                story["datasets"] = _export(wheel, out, say)
                story["tuned-a"] = _add_model(wheel, "tuned-a", story["datasets"], say)
                story["tuned-a"]["day"] = day
            elif day >= SECOND_MODEL_DAY and "tuned-b" not in story:
                retired = any(v.state == "retired" for v in wheel.values("model"))
                if retired or day >= LAST_MODEL_DAY:
                    story["tuned-b"] = _add_model(wheel, "tuned-b", story["datasets"], say)
                    story["tuned-b"]["day"] = day
            history.append(Day(day))
            for k in range(per_day):
                clock[0] = START + (day + (k + 0.5) / per_day) * DAY
                product.deliver(clock[0])
                product.question(clock[0], history[-1])
                if (k + 1) % PACE == 0:
                    wheel.settle()
            history[-1].close()
            _say_day(history[-1], say)
        clock[0] = START + days * DAY
        product.deliver(clock[0])
        wheel.settle()
        story["values"] = [_value(v) for v in wheel.values()]
        story["events"] = [
            {
                "day": round((e["ts"].timestamp() - START) / DAY, 2),
                **{k: e[k] for k in ("action", "reason", "actor")},
                "value": (e["detail"] or {}).get("value"),
            }
            for e in reversed(wheel.events(limit=500))
            if e["action"] in EVENTS
        ]
    story["snapshots"] = [
        v["value"] for v in story["values"] if v["knob"] == "examples" and v["origin"] == "added"
    ]
    last = history[-1]
    story["final_shares"] = {k: last.shares(k) for k in KNOBS}
    story["first_rating"], story["last_rating"] = history[0].rating, last.rating
    story["days_log"] = [
        {
            "day": d.number,
            "decisions": d.decisions,
            "rating": d.rating,
            "expected": d.expected,
            "shares": {k: d.shares(k) for k in KNOBS},
        }
        for d in history
    ]
    best = _hidden_best(str(story["prompt"]["text"]))
    summary = {
        "metric": "mean rating",
        "better": "higher",
        "first": history[0].rating,
        "last": last.rating,
        "best": round(best, 4),
    }
    added = [
        (PROMPT_DAY, "prompt v2"),
        (story["tuned-a"]["day"], "tuned-a"),
        (story["tuned-b"]["day"], "tuned-b"),
    ]
    story["chart"] = _chart(history, best, added, story["events"], out / "assistant.png")
    for name, data in (("summary", summary), ("story", story)):
        (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    _say_end(story, summary, say)
    return story


class Product:
    """The help-desk product on the wheel: it answers each question as the decision says and
    records what the user did about the answer at the time the user did it."""

    def __init__(self, wheel: flywheel.Wheel, desk: helpdesk.Helpdesk) -> None:
        self.wheel = wheel
        self.desk = desk
        self.due: list[Due] = []  # what users will do, by when
        self.planted: dict[str, str] = {}  # decision id -> the flaw its comment is about
        self.shown: dict[tuple[Any, ...], list[str]] = {}  # the examples, per snapshot and ask
        self.order = itertools.count()  # ties of time go in the order things were scheduled

    def question(self, now: float, today: Day) -> None:
        """One question: decide, answer with the prompt, model and examples chosen, and
        schedule what the user does about the answer."""
        wheel, desk = self.wheel, self.desk
        context = desk.context()
        question, steps = desk.question(context["topic"])
        d = wheel.decide(context, input=question)
        prompt = wheel.text("prompt", d.params["prompt"])
        model = str(d.params["model"])
        shown = self.examples(d, question)
        answer = desk.answer(context, question, steps, prompt, model, shown)
        wheel.output(d, answer.text, ts=now)
        reaction = desk.react(context["user"], answer)
        if reaction.theme is not None:
            self.planted[d.id] = reaction.theme
        rates = helpdesk.flaw_rates(context["topic"], context["user"], prompt, model, shown)
        today.add(d.params, reaction.rating, helpdesk.expected_rating(rates))
        later = now + desk.rng.uniform(0.01, 0.2) * DAY  # users react within hours
        if reaction.edit is not None:
            self._after(later - 60.0, d.id, "edit", (answer.text, reaction.edit))
        feedback = {
            "rating": reaction.rating,
            "comment": reaction.comment,
            "thumbs": reaction.thumbs,
        }
        self._after(later, d.id, "feedback", feedback)

    def examples(self, d: flywheel.Decision, question: str) -> list[str]:
        """The outputs of the examples the decision's snapshot holds for the question (none
        when it says ``examples = "none"``): a snapshot never changes, so the examples of
        one question in one context are looked up once."""
        key = (d.params["examples"], *sorted(d.context.items()), question)
        if key not in self.shown:
            self.shown[key] = [e.output for e in self.wheel.examples(d, input=question)]
        return self.shown[key]

    def _after(self, when: float, ident: str, kind: str, value: Any) -> None:
        heapq.heappush(self.due, (when, next(self.order), ident, kind, value))

    def deliver(self, now: float) -> None:
        """Record what users did up to ``now``, at the time they did it."""
        while self.due and self.due[0][0] <= now:
            when, _, ident, kind, value = heapq.heappop(self.due)
            if kind == "edit":
                self.wheel.edit(ident, value[0], value[1], ts=when)
            else:
                self.wheel.feedback(ident, **value, ts=when)


def _improve_prompt(
    wheel: flywheel.Wheel, planted: Mapping[str, str], say: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the themes of the negative feedback, match them with the planted flaws, and add
    the prompt the rule-based reviser proposes from them as ``v2``."""
    found = wheel.themes(window=WINDOW)
    themes = _match(found, planted)
    say(f"\nday {PROMPT_DAY}: {found.negative} negative answers of {found.served}; themes:")
    for t in themes["found"]:
        say(
            f'  "{t["label"]}": {t["share"]:.0%} of the negative feedback, '
            f"{t['size']} texts, planted flaw {t['planted']} ({t['purity']:.0%} of its texts)"
        )
    say(f"  adjusted Rand index against the planted flaws: {themes['ari']:.3f}")
    proposal = wheel.propose("prompt", "v1", window=WINDOW)
    derived = sorted({ident for t in proposal.themes for ident in t.decisions})
    change = wheel.add_value("prompt", "v2", text=proposal.text, derived_from=derived, actor="demo")
    say("  revised prompt v2, served at once beside v1:")
    for line in proposal.text.splitlines():
        say(f"    | {line}")
    prompt = {
        "text": proposal.text,
        "themes": [t.label for t in proposal.themes],
        "addresses": sorted(helpdesk.addressed(proposal.text)),
        "version": change.version,
        "published": change.published,
    }
    return themes, prompt


def _match(found: Themes, planted: Mapping[str, str]) -> dict[str, Any]:
    """Each theme found with the planted flaw most of its texts are about (and that share:
    its purity), and the adjusted Rand index of the themes against the planted flaws over
    the texts the themes hold."""
    from sklearn.metrics import adjusted_rand_score

    rows, truth, labels = [], [], []
    for n, t in enumerate(found.themes):
        flaws = Counter(planted.get(ident, "none") for ident in t.decisions)
        flaw, count = flaws.most_common(1)[0]
        rows.append(
            {
                "label": t.label,
                "terms": list(t.terms),
                "size": t.size,
                "share": round(t.share, 4),
                "planted": flaw,
                "purity": round(count / max(len(t.decisions), 1), 4),
            }
        )
        for ident in t.decisions:
            truth.append(planted.get(ident, "none"))
            labels.append(n)
    ari = float(adjusted_rand_score(truth, labels)) if truth else 0.0
    return {
        "negative": found.negative,
        "texts": found.texts,
        "found": rows,
        "ari": round(ari, 4),
        "recovered": sorted({r["planted"] for r in rows} & set(helpdesk.THEMES)),
    }


def _export(wheel: flywheel.Wheel, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Write the three training sets into ``out``; their files and row counts."""
    say(f"\nday {MODEL_DAY}: training sets exported")
    sets: dict[str, Any] = {}
    for kind in KINDS:
        data = wheel.training_set(kind)
        path = out / f"{kind}.jsonl"
        data.write(path)
        sets[kind] = {"file": path.name, "rows": len(data.rows)}
        say(f"  {kind}: {len(data.rows):,} rows -> {path}")
    return sets


def _add_model(
    wheel: flywheel.Wheel, name: str, sets: Mapping[str, Any], say: Callable[[str], None]
) -> dict[str, Any]:
    """Add a fine-tuned model as a value of the ``model`` knob: served at once, to at least
    :data:`MODEL_SHARE` of the traffic until it has results, and tested live."""
    recipe = {
        "tuned-a": f"base fine-tuned on sft.jsonl ({sets['sft']['rows']} rows)",
        "tuned-b": (
            f"base fine-tuned on sft.jsonl, then preference-tuned on preferences.jsonl "
            f"({sets['preferences']['rows']} pairs)"
        ),
    }[name]
    change = wheel.add_value("model", name, text=recipe, start_share=MODEL_SHARE, actor="demo")
    say(f"  model {name} added ({recipe}): catalogue version {change.version}")
    return {"recipe": recipe, "version": change.version, "published": change.published}


def _value(v: KnobValue) -> dict[str, Any]:
    """What the story keeps of a knob's value."""
    return {
        "knob": v.knob,
        "value": v.value,
        "origin": v.origin,
        "state": v.state,
        "retired_by": v.retired_by,
        "reason": v.reason,
    }


def _hidden_best(v2: str) -> float:
    """The mean expected rating over the question mix when every answer uses the best the
    product could serve: the revised prompt, the better fine-tune and examples with steps."""
    steps = ["1. one\n2. two"] * 3
    best = 0.0
    for topic, tw in zip(helpdesk.TOPICS, helpdesk.TOPIC_WEIGHTS, strict=True):
        for user, uw in zip(helpdesk.USERS, helpdesk.USER_WEIGHTS, strict=True):
            best += (
                tw
                * uw
                * max(
                    helpdesk.expected_rating(helpdesk.flaw_rates(topic, user, p, m, e))
                    for p in ("v1", v2)
                    for m in helpdesk.MODELS
                    for e in ((), steps)
                )
            )
    return best


def _say_day(d: Day, say: Callable[[str], None]) -> None:
    parts = [
        f"{knob} " + " ".join(f"{v}:{s:.0%}" for v, s in sorted(d.shares(knob).items()))
        for knob in ("prompt", "model")
    ]
    examples = 1.0 - d.share("examples", "none")
    say(
        f"day {d.number:>2}: mean rating {d.rating:.2f}  {'  '.join(parts)}  "
        f"examples:{examples:.0%}"
    )


def _say_end(
    story: Mapping[str, Any], summary: Mapping[str, Any], say: Callable[[str], None]
) -> None:
    snapshots = set(story["snapshots"])
    say("\nwhat was added, rolled back and promoted (the audit trail, without the memory's):")
    for e in story["events"]:
        if e["value"] not in snapshots:
            say(f"  day {e['day']:>2.0f} {e['action']} ({e['actor']}): {e['reason']}")
    states = Counter(
        v["state"] for v in story["values"] if v["knob"] == "examples" and v["origin"] == "added"
    )
    promoted = sum(
        1 for e in story["events"] if e["action"] == "promote" and e["value"] in snapshots
    )
    say(
        f"example memory: {len(snapshots)} snapshots added, one a cycle (the memory serves "
        f"the newest two and retires the older ones); the guard promoted {promoted}; "
        f"{states['active'] + states['promoted']} served at the end"
    )
    say("values at the end:")
    for v in story["values"]:
        if v["value"] not in snapshots:
            by = f" by {v['retired_by']}" if v["retired_by"] else ""
            say(f"  {v['knob']} = {v['value']}: {v['state']}{by}")
    say(
        f"mean rating: first day {summary['first']:.2f}, last day {summary['last']:.2f}, "
        f"hidden best {summary['best']:.2f}"
    )


def _chart(
    history: Sequence[Day],
    best: float,
    added: Sequence[tuple[int, str]],
    events: Sequence[Mapping[str, Any]],
    path: Path,
) -> str:
    """A PNG: the mean rating per day against the hidden best, and the share of the traffic
    each added prompt and model and the examples got, with the guard's verdicts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d.number for d in history]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), dpi=110, sharex=True)
    top.plot(days, [d.rating for d in history], marker="o", label="mean rating")
    top.axhline(best, color="green", linestyle="--", label=f"hidden best ({best:.2f})")
    top.set_ylabel("rating (1-5)")
    top.set_ylim(1, 5)
    top.set_title("An assistant improving itself: every loop of the wheel")
    for day, what in added:
        top.axvline(day, color="gray", linestyle=":")
        top.annotate(what, (day + 0.2, 1.2), fontsize=8, color="gray")
    top.legend(loc="lower right", fontsize=8)
    lines = (
        ("prompt", "v2", "prompt v2"),
        ("model", "tuned-a", "model tuned-a (worse)"),
        ("model", "tuned-b", "model tuned-b (better)"),
    )
    marks = {"rollback": ("X", "rolled back"), "promote": ("*", "promoted")}
    for knob, value, label in lines:
        shares = [d.share(knob, value) for d in history]
        (line,) = bottom.plot(days, shares, label=label)
        for e in events:
            if e["action"] in marks and e["value"] == value:
                day = min(int(e["day"]), len(shares) - 1)
                y = max(shares[max(day - 1, 0)], shares[day])  # the share it had, or won
                marker, what = marks[e["action"]]
                bottom.plot(day, y, marker=marker, markersize=11, color=line.get_color())
                bottom.annotate(what, (day + 0.3, y + 0.03), fontsize=8)
    bottom.plot(
        days,
        [1.0 - d.share("examples", "none") for d in history],
        linestyle="--",
        label="with examples (a memory snapshot)",
    )
    bottom.set_ylabel("share of the questions")
    bottom.set_xlabel("day")
    bottom.set_ylim(0, 1.1)
    bottom.legend(loc="center left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


if __name__ == "__main__":
    main()
