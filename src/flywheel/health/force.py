"""Flywheel force, drag, feedback coverage and the weekly indicators.

Shares are taken over the *settled* decisions (their attribution window has closed, so their
signals had their chance), or over every decision of the window when none has settled yet.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from flywheel.health.rate import Z95, LearningRate, Moments, standard_error
from flywheel.health.stages import duration_text

KINDS = ("explicit", "implicit", "edits", "outcomes")
LATE = 1.5  # retraining lag warns past this many cycle targets (a cycle was missed)


@dataclass(frozen=True)
class Force:
    """alignment × closed loop × feedback, each a share of decisions."""

    alignment: float
    closed_loop: float
    feedback: float
    weakest: str
    text: str

    @property
    def value(self) -> float:
        return self.alignment * self.closed_loop * self.feedback

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "value": round(self.value, 4)}


@dataclass(frozen=True)
class Drag:
    name: str
    status: Literal["ok", "warn"]
    figure: float | None
    text: str


@dataclass(frozen=True)
class Coverage:
    kind: str
    decisions: int
    share: float


@dataclass(frozen=True)
class Week:
    """One week of the window (``start`` excluded, ``end`` included). Leading indicators:
    acceptance, requery, edit distance; lagging: completion (share with a result), result,
    retention (units seen again the next week) and the spec's own outcome signals."""

    start: str
    end: str
    decisions: int
    units: int
    completion: float | None
    result: float | None
    acceptance: float | None
    requery: float | None
    edit_distance: float | None
    retention: float | None
    outcomes: dict[str, float | None] = field(default_factory=dict)


def _base(totals: Mapping[str, Any]) -> tuple[float, bool]:
    settled = float(totals.get("settled") or 0)
    return (settled, True) if settled else (float(totals.get("decisions") or 0), False)


def force(totals: Mapping[str, Any]) -> Force:
    decisions = float(totals.get("decisions") or 0)
    base, settled = _base(totals)
    prefix = "settled_" if settled else ""
    aligned = float(totals.get(f"{prefix}observed") or 0)
    heard = float(totals.get(f"{prefix}signalled") or 0)
    factors = {
        "alignment": aligned / base if base else 0.0,
        "closed loop": float(totals.get("closed") or 0) / decisions if decisions else 0.0,
        "feedback": heard / base if base else 0.0,
    }
    weakest = min(factors, key=lambda k: factors[k])
    why = {
        "alignment": "of decisions end with a complete aligned row",
        "closed loop": "of decisions are served by a learned playbook (not the cold start)",
        "feedback": "of decisions get any signal, explicit or implicit",
    }[weakest]
    value = factors["alignment"] * factors["closed loop"] * factors["feedback"]
    text = (
        f"Force {value:.2f} = alignment {factors['alignment']:.2f} × closed loop"
        f" {factors['closed loop']:.2f} × feedback {factors['feedback']:.2f}. The weakest is"
        f" {weakest}: {factors[weakest]:.0%} {why}."
    )
    if not settled and decisions:
        text += " (No decision's attribution window has closed yet: shares include open ones.)"
    return Force(factors["alignment"], factors["closed loop"], factors["feedback"], weakest, text)


def coverage(totals: Mapping[str, Any]) -> tuple[Coverage, ...]:
    base, settled = _base(totals)
    out = []
    for kind in KINDS:
        n = int(totals.get(f"{'settled' if settled else 'all'}_{kind}") or 0)
        out.append(Coverage(kind, n, n / base if base else 0.0))
    return tuple(out)


def weeks(
    rows: Sequence[Mapping[str, Any]],
    retention: Mapping[int, tuple[int, int]],
    as_of: datetime,
    start: datetime,
    count: int,
    outcomes: Sequence[str],
) -> tuple[Week, ...]:
    """Oldest first (the oldest cut at the window's ``start``); ``retention``: per week back,
    (units, of them seen the week after)."""
    by_k = {int(r["k"]): r for r in rows if r["k"] is not None}
    out = []
    for k in range(count - 1, -1, -1):
        r = by_k.get(k, {})
        decisions = int(r.get("decisions") or 0)
        implicit = float(r.get("implicit") or 0)
        units, back = retention.get(k, (0, 0))
        end = as_of - timedelta(days=7 * k)
        out.append(
            Week(
                max(start, end - timedelta(days=7)).isoformat(),
                end.isoformat(),
                decisions,
                units,
                _ratio(r.get("observed"), decisions),
                _ratio(r.get("sum"), r.get("n")),
                _ratio(r.get("accepted"), implicit) if "accepted" in r else None,
                _ratio(r.get("requeried"), implicit) if "requeried" in r else None,
                _number(r.get("edit_distance")),
                _ratio(back, units) if k > 0 else None,
                {name: _number(r.get(f"o:{name}")) for name in outcomes},
            )
        )
    return tuple(out)


def drag(
    *,
    as_of: datetime,
    last_cut: datetime | None,
    cuts: Sequence[datetime],
    every: float | None,
    decisions: int,
    week_rows: Sequence[Mapping[str, Any]],
    usage: tuple[float, float, float],
    rate: LearningRate,
) -> tuple[Drag, ...]:
    """The four drag indicators, each ``ok`` or ``warn`` with its figure."""
    return (
        _lag(as_of, last_cut, cuts, every, decisions),
        _quality(week_rows),
        _usage(*usage, published=last_cut is not None and bool(usage[2])),
        _no_gain(rate),
    )


def _lag(
    as_of: datetime,
    last_cut: datetime | None,
    cuts: Sequence[datetime],
    every: float | None,
    decisions: int,
) -> Drag:
    gaps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(cuts))
    target = every if every else (gaps[len(gaps) // 2] if gaps else None)
    if last_cut is None:
        status: Literal["ok", "warn"] = "warn" if decisions else "ok"
        return Drag("retraining lag", status, None, "No playbook has been published yet.")
    lag = (as_of - last_cut).total_seconds()
    source = "[learn] every" if every else "the median time between cycles"
    if target is None:
        return Drag(
            "retraining lag",
            "ok",
            lag,
            f"{duration_text(lag)} since the last version learned; no cycle target"
            " (set [learn] every).",
        )
    status = "warn" if lag > LATE * target else "ok"
    return Drag(
        "retraining lag",
        status,
        lag,
        f"{duration_text(lag)} since the last version learned, against a target of"
        f" {duration_text(target)} ({source}).",
    )


def _quality(rows: Sequence[Mapping[str, Any]]) -> Drag:
    by_k = {int(r["k"]): r for r in rows if r["k"] is not None}
    now, before = by_k.get(0), by_k.get(1)
    if not now or not before or not now.get("n") or not before.get("n"):
        return Drag(
            "quality falling while volume grows", "ok", None, "Needs two weeks with results."
        )
    growth = float(now["decisions"]) / max(1.0, float(before["decisions"]))
    m1, v1 = _moments(now)
    m0, v0 = _moments(before)
    change = m1 - m0
    se = math.sqrt(v1 / float(now["n"]) + v0 / float(before["n"]))
    z = change / se if se > 0 else 0.0
    warn = growth > 1.1 and z < -2
    return Drag(
        "quality falling while volume grows",
        "warn" if warn else "ok",
        change,
        f"the last week's result {m1:.4g} against {m0:.4g} the week before ({change:+.4g},"
        f" z = {z:.1f}), on {growth:.2f}× the decisions.",
    )


def _usage(before: float, after: float, span: float, published: bool) -> Drag:
    if not published:
        return Drag("usage falling after a publish", "ok", None, "No publish inside the window.")
    if span < 3600 or before + after == 0:
        return Drag(
            "usage falling after a publish",
            "ok",
            None,
            "Too little time on one side of the last publish to compare (an hour at least).",
        )
    ratio = after / before if before else float("inf")
    z = (after - before) / math.sqrt(after + before)
    warn = ratio < 0.8 and z < -3
    return Drag(
        "usage falling after a publish",
        "warn" if warn else "ok",
        ratio if math.isfinite(ratio) else None,
        f"{after:,.0f} decisions in the {duration_text(span)} after the last publish against"
        f" {before:,.0f} in the {duration_text(span)} before ({ratio:.2f}×).",
    )


def _no_gain(rate: LearningRate) -> Drag:
    versions = rate.cycles
    if len(versions) < 2:
        return Drag("more data without improvement", "ok", None, "Needs two versions with results.")
    latest = versions[-1]
    earlier = versions[max(0, len(versions) - 4)]
    added = latest.learned_rows - earlier.learned_rows
    lift = (latest.result or 0.0) - (earlier.result or 0.0)
    a, b = standard_error(latest), standard_error(earlier)
    se = float("inf") if a is None or b is None else math.hypot(a, b)
    warn = added >= 1000 and lift - Z95 * se <= 0
    return Drag(
        "more data without improvement",
        "warn" if warn else "ok",
        lift,
        f"{latest.served_by} learned from {added:,} more complete rows than"
        f" {earlier.served_by}: result {lift:+.4g} (95%: {lift - Z95 * se:+.4g} to"
        f" {lift + Z95 * se:+.4g}).",
    )


def _moments(row: Mapping[str, Any]) -> tuple[float, float]:
    cell = Moments(float(row["n"]), float(row["sum"] or 0), float(row.get("sum2") or 0))
    return cell.mean, cell.var if cell.n > 1 else 0.0


def _ratio(a: object, b: object) -> float | None:
    if a is None or not b:
        return None
    return float(a) / float(b)  # type: ignore[arg-type]


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
