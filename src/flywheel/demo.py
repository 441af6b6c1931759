"""The demo: a simulated story product whose readers finish stories by a hidden rule.

The hidden truth has interactions a single-dimension report would miss: a suspense opening
works best with exactly two twists, thrillers reward twists while romances punish them, and
short science fiction disappoints. Outcomes arrive late (hours to days after the decision), a
few never arrive, and some readers leave a rating or a comment. Everything goes through the
public SDK into the embedded store, on a simulated clock that ends now.
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
import pyarrow.compute as pc

import flywheel
from flywheel.align import Summary
from flywheel.spec import Spec

DAY = 86_400.0
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
class DemoResult:
    summary: Summary
    knobs: list[str]
    sample: list[dict[str, Any]]
    by_genre: list[dict[str, Any]]
    spec: str


def run(
    spec_path: Path,
    decisions: int = 20_000,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Simulate ``decisions`` reader visits over 30 days ending now, into a fresh store beside
    the demo spec written to ``spec_path``; return what was stored."""
    spec = write_demo_spec(spec_path)
    store_path = spec.base_dir / "demo.duckdb"
    for stale in (store_path, Path(f"{store_path}.wal")):
        stale.unlink(missing_ok=True)
    world = StoryWorld(seed)
    rng = random.Random(seed + 1)
    end = time.time()
    now = end - 30 * DAY
    step = 30 * DAY / decisions
    clock = [now]
    due: list[tuple[float, int, str, str, Any]] = []  # (when, tiebreak, decision id, kind, value)
    with flywheel.open(spec, clock=lambda: clock[0]) as wheel:
        for i in range(decisions):
            clock[0] = now + i * step
            while due and due[0][0] <= clock[0]:
                when, _, ident, kind, value = heapq.heappop(due)
                _deliver(wheel, ident, kind, value, when)
            ctx = world.context()
            d = wheel.decide(ctx, unit=f"reader-{rng.randrange(5000)}")
            if rng.random() < 0.05:
                continue  # the product never reports on some decisions: they expire
            completed = rng.random() < world.completion(ctx, d.params)
            heapq.heappush(
                due, (clock[0] + rng.uniform(0.05, 3.0) * DAY, i, d.id, "completed", int(completed))
            )
            if rng.random() < 0.2:
                rating = 4 + rng.randrange(2) if completed else 1 + rng.randrange(3)
                heapq.heappush(
                    due, (clock[0] + rng.uniform(0.1, 4.0) * DAY, i, d.id, "rating", rating)
                )
            if rng.random() < 0.01:
                comment = rng.choice(COMMENTS).format(n=i)
                heapq.heappush(
                    due, (clock[0] + rng.uniform(0.1, 2.0) * DAY, i, d.id, "comment", comment)
                )
            if progress and (i + 1) % 500 == 0:
                progress(500)
        clock[0] = end
        while due and due[0][0] <= end:
            when, _, ident, kind, value = heapq.heappop(due)
            _deliver(wheel, ident, kind, value, when)
        summary = wheel.summary(as_of=end)
        rows = wheel.aligned(as_of=end)
    knobs = [k.name for k in spec.knobs]
    commented = rows.filter(rows.column("comment").is_valid()).to_pylist()
    commented.sort(key=lambda r: "[" not in str(r["comment"]))  # show a redacted one first
    sample = [
        {
            "genre": r["genre"],
            "params": " / ".join(str(r[k]) for k in knobs),
            "rating": r["rating"],
            "comment": r["comment"],
            "reward": r["reward"],
            "status": r["status"],
        }
        for r in commented[:3] + rows.slice(rows.num_rows - 3, 3).to_pylist()
    ]
    complete = rows.filter(pc.equal(rows.column("status"), pa.scalar("complete")))
    grouped = complete.group_by("genre").aggregate([("reward", "count"), ("reward", "mean")])
    by_genre = sorted(grouped.to_pylist(), key=lambda r: str(r["genre"]))
    for row in by_genre:
        row["best"], row["best_completion"] = world.best(row["genre"], spec)
    return DemoResult(summary, knobs, sample, by_genre, str(spec_path))


def _deliver(wheel: flywheel.Wheel, ident: str, kind: str, value: Any, when: float) -> None:
    if kind == "comment":
        wheel.feedback(ident, comment=value, ts=when)
    elif kind == "rating":
        wheel.feedback(ident, rating=value, ts=when)
    else:
        wheel.signal(ident, kind, value, ts=when)
