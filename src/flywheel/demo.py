"""The demo: a simulated story product whose readers finish stories by a hidden rule.

The hidden truth has interactions a single-dimension report would miss: a suspense opening
works best with exactly two twists, thrillers reward twists while romances punish them, and
short science fiction disappoints. Outcomes arrive late (hours to days after the decision), a
few never arrive, and some readers leave a rating or a comment. Everything goes through the
public SDK into the embedded store, on a simulated clock that ends now.

The product's code never calls ``learn``: the wheel turns by itself. Its spec schedules a
learn cycle every three days (``[learn] every``), and between cycles the serving tables
follow the results as they arrive (online updates). The simulation runs far faster than the
wall clock, so it paces the wheel's background turn: every ``PACE`` decisions it lets the
turn catch up with what is due (``wheel.settle()``), as real time would.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

import flywheel
from flywheel.align import Summary
from flywheel.health import Health
from flywheel.spec import Spec
from flywheel.turn import Cycle as LastCycle

DAY = 86_400.0
PACE = 100  # decisions between two looks of the wheel's turn at the simulated clock
COMMENTS = (
    "loved the twist",
    "too slow in the middle",
    "great opening, email me more at reader{n}@example.com",
    "predictable ending",
    "call me on +44 20 7946 0958 to discuss",
)


def example_text() -> str:
    """The story product's spec, shipped with the package (also what `flywheel init` writes)."""
    return (
        resources.files("flywheel").joinpath("templates/flywheel.toml").read_text(encoding="utf-8")
    )


def example_spec() -> Spec:
    return Spec.from_toml(example_text(), source="flywheel.toml (example)")


def write_demo_spec(path: Path) -> Spec:
    """Write the example spec to ``path`` with its store beside it, and load it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = example_text().replace(
        'url = "duckdb:///.flywheel/flywheel.duckdb"', 'url = "duckdb:///demo.duckdb"'
    )
    text += '\n[learn]\nevery = "3d"  # the wheel runs a learn cycle every three days by itself\n'
    path.write_text(text, encoding="utf-8")
    return flywheel.load(path)


@dataclass
class StoryWorld:
    """Hidden ground truth: the probability that a reader completes a story."""

    seed: int = 7
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    GENRES = ("thriller", "romance", "scifi", "drama")
    GENRE_WEIGHTS = (0.35, 0.3, 0.2, 0.15)

    def context(self) -> dict[str, Any]:
        return {"genre": self.rng.choices(self.GENRES, self.GENRE_WEIGHTS)[0]}

    @staticmethod
    def completion(context: Mapping[str, Any], params: Mapping[str, Any]) -> float:
        genre, twists = context["genre"], params["twist_count"]
        logit = -0.6
        logit += {"question": 0.1, "suspense": 0.0, "dialogue": 0.15, "description": -0.3}[
            params["opening_type"]
        ]
        logit += {"low": -0.1, "mid": 0.1, "high": 0.0}[params["emotional_density"]]
        logit += {"short": 0.1, "medium": 0.15, "long": -0.2}[params["length"]]
        if params["opening_type"] == "suspense" and twists == 2:
            logit += 1.2  # the combination a single-dimension report misses
        logit += {"thriller": 0.4, "romance": -0.6, "scifi": 0.1, "drama": 0.0}[genre] * (
            twists - 1.5
        )
        if genre == "romance" and params["opening_type"] == "dialogue":
            logit += 0.5
        if genre == "drama" and params["emotional_density"] == "high":
            logit += 0.4
        if genre == "scifi" and params["length"] == "short":
            logit -= 0.8
        return 1.0 / (1.0 + math.exp(-logit))

    def best(self, genre: str, spec: Spec) -> tuple[dict[str, Any], float]:
        """The true best allowed combination for a genre (the oracle)."""
        space, ctx = spec.space, {"genre": genre}
        scored = ((self.completion(ctx, space.params(int(r))), int(r)) for r in space.allowed(ctx))
        p, row = max(scored)
        return space.params(row), p


@dataclass(frozen=True)
class Cycle:
    """One learn cycle of the demo: how the decisions made under it did."""

    number: int
    playbook: int | None
    decisions: int
    expected: float  # mean true completion probability of what was served
    exploring: float  # share of decisions that did not serve the segment's current best
    reason: str  # what the wheel's own cycle at the end of the period did
    online: float = 0.0  # share of decisions served by online updates


@dataclass(frozen=True)
class DemoResult:
    summary: Summary
    knobs: list[str]
    sample: list[dict[str, Any]]
    cycles: list[Cycle]
    genres: list[dict[str, Any]]
    oracle: float  # mean completion if the true best were always served
    uniform: float  # mean completion of uniform play
    spec: str
    chart: str | None
    health: Health


def run(
    spec_path: Path,
    decisions: int = 20_000,
    seed: int = 7,
    cycles: int = 10,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Simulate ``decisions`` reader visits over 30 days ending now, into a fresh store beside
    the demo spec written to ``spec_path``; the wheel learns by itself (``cycles`` periods of
    30 days, each ending with its scheduled cycle). The same ``seed`` tells the same story:
    the world, the readers and the wheel's own exploration are all seeded."""
    spec = write_demo_spec(spec_path)
    store_path = spec.base_dir / "demo.duckdb"
    for stale in (store_path, Path(f"{store_path}.wal")):
        stale.unlink(missing_ok=True)
    world = StoryWorld(seed)
    rng = random.Random(seed + 1)
    end = time.time()
    start = end - 30 * DAY
    step = 30 * DAY / decisions
    per_cycle = max(1, decisions // cycles)
    clock = [start]
    due: list[tuple[float, int, str, str, Any]] = []  # (when, tiebreak, decision id, kind, value)
    history: list[Cycle] = []
    expected, exploring, online = 0.0, 0, 0
    # the wheel's draws get a stream of their own: seeded like the world, its uniform draws
    # would be the world's, and each genre would get the same few combinations
    with flywheel.open(spec, clock=lambda: clock[0], refresh=0, seed=seed + 2) as wheel:
        for i in range(decisions):
            clock[0] = start + i * step
            while due and due[0][0] <= clock[0]:
                when, _, ident, kind, value = heapq.heappop(due)
                _deliver(wheel, ident, kind, value, when)
            ctx = world.context()
            d = wheel.decide(ctx, unit=f"reader-{rng.randrange(5000)}")
            p = world.completion(ctx, d.params)
            expected += p
            exploring += _exploring(wheel, ctx, d)
            online += d.policy == "online"
            if rng.random() >= 0.05:  # the product never reports on some decisions: they expire
                _schedule(due, rng, i, d.id, clock[0], completed=rng.random() < p)
            if (i + 1) % PACE == 0 or i + 1 == decisions:
                wheel.settle()  # what real time would give the wheel's turn: it catches up
            if (i + 1) % per_cycle == 0 or i + 1 == decisions:
                served = (i % per_cycle) + 1
                last = LastCycle.read(wheel.store)
                history.append(
                    Cycle(
                        len(history) + 1,
                        d.playbook,
                        served,
                        expected / served,
                        exploring / served,
                        "no cycle yet" if last is None else last.reason,
                        online / served,
                    )
                )
                expected, exploring, online = 0.0, 0, 0
            if progress and (i + 1) % 500 == 0:
                progress(500)
        clock[0] = end
        while due and due[0][0] <= end:
            when, _, ident, kind, value = heapq.heappop(due)
            _deliver(wheel, ident, kind, value, when)
        summary = wheel.summary(as_of=end)
        rows = wheel.aligned(as_of=end)
        genres = _learned_vs_true(wheel, world, spec)
        health = wheel.health(as_of=end)
    oracle, uniform = _references(world, spec)
    chart = _chart(history, oracle, uniform, spec.base_dir / "demo.png")
    return DemoResult(
        summary,
        [k.name for k in spec.knobs],
        _sample(rows, spec),
        history,
        genres,
        oracle,
        uniform,
        str(spec_path),
        chart,
        health,
    )


def _schedule(
    due: list[tuple[float, int, str, str, Any]],
    rng: random.Random,
    i: int,
    ident: str,
    now: float,
    completed: bool,
) -> None:
    """Outcomes arrive hours to days later; some readers also rate or comment."""
    heapq.heappush(due, (now + rng.uniform(0.05, 3.0) * DAY, i, ident, "completed", int(completed)))
    if rng.random() < 0.2:
        rating = 4 + rng.randrange(2) if completed else 1 + rng.randrange(3)
        heapq.heappush(due, (now + rng.uniform(0.1, 4.0) * DAY, i, ident, "rating", rating))
    if rng.random() < 0.01:
        comment = rng.choice(COMMENTS).format(n=i)
        heapq.heappush(due, (now + rng.uniform(0.1, 2.0) * DAY, i, ident, "comment", comment))


def _exploring(wheel: flywheel.Wheel, context: dict[str, Any], d: flywheel.Decision) -> bool:
    playbook = wheel.playbook
    if playbook is None:
        return True  # the cold start is all exploration
    table = playbook.segment(context)
    return bool(
        wheel.spec.space.row_of({k: d.params[k] for k in wheel.spec.knob}) != table.rows[table.best]
    )


def _learned_vs_true(wheel: flywheel.Wheel, world: StoryWorld, spec: Spec) -> list[dict[str, Any]]:
    out = []
    for genre in StoryWorld.GENRES:
        ctx = {"genre": genre}
        true_best, true_p = world.best(genre, spec)
        learned: dict[str, Any] | None = None
        if wheel.playbook is not None:
            table = wheel.playbook.segment(ctx)
            learned = spec.space.params(int(table.rows[table.best]))
        out.append(
            {
                "genre": genre,
                "learned": learned,
                "learned_completion": world.completion(ctx, learned) if learned else None,
                "true": true_best,
                "true_completion": true_p,
            }
        )
    return out


def _references(world: StoryWorld, spec: Spec) -> tuple[float, float]:
    """Mean completion over the genre mix: always the true best, and uniform play."""
    oracle = uniform = 0.0
    for genre, weight in zip(StoryWorld.GENRES, StoryWorld.GENRE_WEIGHTS, strict=True):
        ctx = {"genre": genre}
        oracle += weight * world.best(genre, spec)[1]
        rows = spec.space.allowed(ctx)
        uniform += (
            weight * sum(world.completion(ctx, spec.space.params(int(r))) for r in rows) / len(rows)
        )
    return oracle, uniform


def _sample(rows: pa.Table, spec: Spec) -> list[dict[str, Any]]:
    knobs = [k.name for k in spec.knobs]
    commented = rows.filter(rows.column("comment").is_valid()).to_pylist()
    commented.sort(key=lambda r: "[" not in str(r["comment"]))  # show a redacted one first
    return [
        {
            "genre": r["genre"],
            "params": " / ".join(str(r[k]) for k in knobs),
            "policy": r["policy"],
            "comment": r["comment"],
            "reward": r["reward"],
            "status": r["status"],
        }
        for r in commented[:2] + rows.slice(rows.num_rows - 3, 3).to_pylist()
    ]


def _chart(history: list[Cycle], oracle: float, uniform: float, path: Path) -> str | None:
    """A PNG of completion per learn cycle against the hidden best and uniform play."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency; keep the demo alive
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    cycles = [c.number for c in history]
    ax.plot(cycles, [c.expected for c in history], marker="o", label="served (true completion)")
    ax.plot(
        cycles,
        [1 - c.exploring for c in history],
        linestyle=":",
        color="gray",
        label="share serving the current best",
    )
    ax.axhline(oracle, color="green", linestyle="--", label=f"hidden best ({oracle:.3f})")
    ax.axhline(uniform, color="red", linestyle="--", label=f"uniform ({uniform:.3f})")
    ax.set_xlabel("learn cycle")
    ax.set_ylabel("completion probability / share")
    ax.set_ylim(0, 1)
    ax.set_title("The wheel turning: completion per learn cycle")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def _deliver(wheel: flywheel.Wheel, ident: str, kind: str, value: Any, when: float) -> None:
    if kind == "comment":
        wheel.feedback(ident, comment=value, ts=when)
    elif kind == "rating":
        wheel.feedback(ident, rating=value, ts=when)
    else:
        wheel.signal(ident, kind, value, ts=when)
