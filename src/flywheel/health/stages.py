"""Stages and transitions: how long a decision takes to come back as a better decision.

A decision goes decided → first signal → complete → learned → served. Each transition is
measured on the decisions that made it (p50, p90) and counted: how many reached its start,
how many passed, how many still wait (their window is open, or the next cycle has not come)
and how many stopped for good (the window closed without a signal or a result; quarantined).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STEPS = (
    ("signal", "decided", "first signal"),
    ("complete", "first signal", "complete"),
    ("learned", "complete", "learned"),
    ("served", "learned", "served"),
)

ADVICE = {
    "signal": "ask for feedback where the product can (a rating, a thumbs), or record implicit"
    " events (accepted, rejected, requeried)",
    "complete": "use a reward that needs fewer or earlier signals, or a shorter attribution window",
    "learned": "run cycles more often ([learn] every, or after fewer rows)",
    "served": "published versions wait to be served: check that every server refreshes",
}


@dataclass(frozen=True)
class Transition:
    """One step of the turn. ``share``: passed / reached; durations in seconds (``None``
    when no decision made it)."""

    name: str
    start: str
    end: str
    reached: int
    passed: int
    waiting: int
    stopped: int
    p50_seconds: float | None
    p90_seconds: float | None

    @property
    def share(self) -> float | None:
        return self.passed / self.reached if self.reached else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "reached": self.reached,
            "passed": self.passed,
            "waiting": self.waiting,
            "stopped": self.stopped,
            "share": None if self.share is None else round(self.share, 4),
            "p50_seconds": _round(self.p50_seconds),
            "p90_seconds": _round(self.p90_seconds),
        }


@dataclass(frozen=True)
class Stages:
    """The four transitions, the whole cycle (decided → served) and the bottleneck."""

    decisions: int
    transitions: tuple[Transition, ...]
    cycle: Transition
    slowest: str | None
    leakiest: str | None
    bottleneck: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "transitions": [t.as_dict() for t in self.transitions],
            "cycle": self.cycle.as_dict(),
            "slowest": self.slowest,
            "leakiest": self.leakiest,
            "bottleneck": self.bottleneck,
        }


def stages(totals: dict[str, Any]) -> Stages:
    """The transitions from the totals row of :func:`flywheel.health.sql.health_sql`."""

    def n(key: str) -> int:
        return int(totals.get(key) or 0)

    decisions = n("decisions")
    counts = {
        # name: (reached, passed, stopped)
        "signal": (decisions, n("signalled"), n("signal_stopped")),
        "complete": (n("signalled"), n("signal_complete"), n("complete_stopped")),
        "learned": (n("complete"), n("learned"), n("quarantined")),
        "served": (n("learned"), n("served"), 0),
    }
    steps = []
    for name, start, end in STEPS:
        reached, passed, stopped = counts[name]
        steps.append(
            Transition(
                name,
                start,
                end,
                reached,
                passed,
                max(0, reached - passed - stopped),
                stopped,
                _quantile(totals, 50, name),
                _quantile(totals, 90, name),
            )
        )
    cycle = Transition(
        "cycle",
        "decided",
        "served",
        decisions,
        n("served"),
        max(
            0,
            decisions
            - n("served")
            - n("signal_stopped")
            - n("complete_stopped")
            - n("quarantined"),
        ),
        n("signal_stopped") + n("complete_stopped") + n("quarantined"),
        _quantile(totals, 50, "cycle"),
        _quantile(totals, 90, "cycle"),
    )
    timed = [t for t in steps if t.p50_seconds is not None]
    slowest = max(timed, key=lambda t: (t.p50_seconds or 0.0, t.p90_seconds or 0.0), default=None)
    lost = [t for t in steps if t.stopped > 0]
    leakiest = max(lost, key=lambda t: t.stopped, default=None)
    return Stages(
        decisions,
        tuple(steps),
        cycle,
        None if slowest is None else slowest.name,
        None if leakiest is None else leakiest.name,
        _sentence(decisions, cycle, slowest, leakiest),
    )


def _sentence(
    decisions: int, cycle: Transition, slowest: Transition | None, leakiest: Transition | None
) -> str:
    if not decisions:
        return "No decisions in the window."
    parts = []
    if cycle.p50_seconds is not None:
        parts.append(
            f"Cycle time (decided → served by a playbook that learned from it): p50"
            f" {duration_text(cycle.p50_seconds)}, p90 {duration_text(cycle.p90_seconds)}."
        )
    else:
        parts.append("No decision has come back yet as one served by a playbook that learned it.")
    if slowest is not None:
        parts.append(
            f"The slowest step is {slowest.start} → {slowest.end} (p50"
            f" {duration_text(slowest.p50_seconds)}, p90 {duration_text(slowest.p90_seconds)}):"
            f" {ADVICE[slowest.name]}."
        )
    if leakiest is not None:
        never = {"signal": "never get a signal", "complete": "never get a result"}.get(
            leakiest.name, "are quarantined and never learned"
        )
        parts.append(
            f"Most decisions stop at {leakiest.start} → {leakiest.end}: {leakiest.stopped:,}"
            f" ({leakiest.stopped / leakiest.reached:.0%} of {leakiest.reached:,}) {never}."
        )
    else:
        parts.append("No decision has stopped for good.")
    return " ".join(parts)


def duration_text(seconds: float | None) -> str:
    """A duration for people: ``42 s``, ``12 min``, ``3.2 h``, ``2.1 d``."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _quantile(totals: dict[str, Any], q: int, name: str) -> float | None:
    value = totals.get(f"p{q}_{name}")
    return None if value is None else float(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
