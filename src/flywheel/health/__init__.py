"""health: how fast the wheel turns, where it drags, and what its data is becoming.

``health(store, spec, window="28d")`` returns a :class:`Health`: the stages each decision
goes through and the bottleneck (:mod:`.stages`), the learning rate and plateau
(:mod:`.rate`), force, drag, coverage and weekly trends (:mod:`.force`), and the learning type
(:mod:`.network`). :mod:`.design` writes the flywheel design document from it.
Every figure is computed from the store alone, in four statements, so it is the same for the
same data (deterministic) and costs one pass over the window's signals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flywheel.align import moment
from flywheel.errors import InvalidInputError
from flywheel.health.force import Coverage, Drag, Force, Week, coverage, drag, force, weeks
from flywheel.health.network import LearningType, learning_type
from flywheel.health.rate import LearningRate, VersionResult, learning_rate
from flywheel.health.sql import (
    FIRST_SERVED_SQL,
    RETENTION_SQL,
    WEEK,
    Cut,
    health_sql,
    outcome_signals,
    sample_sql,
)
from flywheel.health.stages import Stages, Transition, stages
from flywheel.spec import Spec, duration
from flywheel.store import Store

__all__ = [
    "Coverage",
    "Drag",
    "Force",
    "Health",
    "LearningRate",
    "LearningType",
    "Stages",
    "Transition",
    "VersionResult",
    "Week",
    "health",
]

MAX_SEGMENTS = 256  # the context segments results are post-stratified on, at most
SAMPLE_ROWS = 200_000  # rows of the held-out-units test, at most (a sample of units)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Health:
    """The wheel's velocity and health over ``window_seconds`` up to ``as_of``."""

    as_of: str
    window_seconds: float
    decisions: int
    stages: Stages
    learning: LearningRate
    force: Force
    drag: tuple[Drag, ...]
    coverage: tuple[Coverage, ...]
    trends: tuple[Week, ...]
    learning_type: LearningType

    def summary(self) -> list[str]:
        """Three lines: cycle time and the bottleneck, force, and the learning rate."""
        return [self.stages.bottleneck, self.force.text, self.learning.text]

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "window_seconds": self.window_seconds,
            "decisions": self.decisions,
            "stages": self.stages.as_dict(),
            "learning": self.learning.as_dict(),
            "force": self.force.as_dict(),
            "drag": [asdict(d) for d in self.drag],
            "coverage": [asdict(c) for c in self.coverage],
            "trends": [asdict(w) for w in self.trends],
            "learning_type": self.learning_type.as_dict(),
        }


def health(
    store: Store,
    spec: Spec,
    *,
    window: str | float = "28d",
    as_of: float | datetime | None = None,
    plateau: float = 0.01,
    readiness: Callable[[], Sequence[Any]] | None = None,
) -> Health:
    """The wheel's health over ``window`` (a duration like ``28d``, or seconds) up to
    ``as_of`` (default: now). ``plateau``: the band of :mod:`.rate`'s plateau, a share of the
    latest result; ``readiness`` gives the factors' readiness for a plateau's suggestions."""
    end = moment(as_of).astimezone(UTC)
    seconds = duration(window, "window") if isinstance(window, str) else float(window)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError("window", f"expected a duration such as 28d; got {window!r}")
    start = end - timedelta(seconds=seconds)
    params: dict[str, Any] = {"as_of": end, "start": start}
    cuts, learned_rows, restored = _cuts(store, end)
    last_cut = cuts[-1].at if cuts else None
    pub = last_cut if last_cut is not None and last_cut > start else end
    span = max(timedelta(0), min(timedelta(days=7), end - pub, pub - start))
    segment = _segment(spec)
    table = store.query(health_sql(spec, segment, cuts), {**params, "pub": pub, "span": span})
    rows = table.to_pylist()
    totals = next((r for r in rows if r["part"] == "totals"), {})
    version_rows = [r for r in rows if r["part"] == "versions"]
    week_rows = [r for r in rows if r["part"] == "weeks"]
    retained = {
        int(r["k"]): (int(r["units"]), int(r["returned"]))
        for r in store.query(RETENTION_SQL, params).to_pylist()
    }
    rate = learning_rate(
        version_rows, learned_rows, plateau=plateau, readiness=readiness, restored=restored
    )
    learnable = sum(int(r["n"] or 0) for r in version_rows)
    share = min(1.0, SAMPLE_ROWS / learnable) if learnable else 1.0
    below = "~" if share >= 1 else f"{int(share * 16**4):04x}"
    sample = store.query(sample_sql(spec, segment), {**params, "below": below})
    n_weeks = max(1, math.ceil(seconds / WEEK - 1e-9))
    return Health(
        end.isoformat(),
        seconds,
        int(totals.get("decisions") or 0),
        stages(totals),
        rate,
        force(totals),
        drag(
            as_of=end,
            last_cut=last_cut,
            cuts=[c.at for c in cuts],
            every=spec.learn.every_seconds,
            decisions=int(totals.get("decisions") or 0),
            week_rows=week_rows if seconds >= 2 * WEEK else [],  # two full weeks to compare
            usage=(
                float(totals.get("usage_before") or 0),
                float(totals.get("usage_after") or 0),
                span.total_seconds(),
            ),
            rate=rate,
        ),
        coverage(totals),
        weeks(week_rows, retained, end, start, n_weeks, outcome_signals(spec)),
        learning_type(sample, [k.name for k in spec.knobs]),
    )


def _cuts(store: Store, end: datetime) -> tuple[list[Cut], dict[int, int], dict[int, int]]:
    """The moments versions learned (their training cut-offs, up to ``end``) with when a
    version that learned each first served; each version's training rows; and the restored
    versions (a rollback's copy: the version it restored)."""
    first = {
        int(r["playbook"]): r["first"]
        for r in store.query(FIRST_SERVED_SQL, {"as_of": end}).to_pylist()
    }
    learned: list[tuple[datetime, int]] = []
    rows: dict[int, int] = {}
    restored: dict[int, int] = {}
    for version, _created, meta in store.playbook_list():
        info = json.loads(meta)
        training = info["training"]
        if info.get("restored_from") is not None:
            restored[version] = int(info["restored_from"])
        rows[version] = int(training.get("rows") or 0)
        at = moment(datetime.fromisoformat(training["as_of"]))
        if at <= end:
            learned.append((at, version))
    learned.sort()
    cuts: list[Cut] = []
    served: datetime | None = None
    for at, version in reversed(learned):  # served: the first serving by this or a later cut
        mine = first.get(version)
        if mine is not None and (served is None or mine < served):
            served = mine
        if cuts and cuts[-1].at == at:
            cuts[-1] = Cut(cuts[-1].after, at, served)
        else:
            cuts.append(Cut(EPOCH, at, served))
    cuts.reverse()
    bounds = [Cut(cuts[i - 1].at if i else EPOCH, c.at, c.served) for i, c in enumerate(cuts)]
    return bounds, rows, restored


def _segment(spec: Spec) -> list[str]:
    """The categorical context features results are post-stratified on: in spec order, while
    their combinations stay within :data:`MAX_SEGMENTS`."""
    chosen, size = [], 1
    for f in spec.context:
        if f.listed and f.values and size * len(f.values) <= MAX_SEGMENTS:
            chosen.append(f.name)
            size *= len(f.values)
    return chosen
