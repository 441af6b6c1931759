"""The flywheel design document: what the wheel collects, how fast it turns, what its data is
becoming, and a 90-day plan, written from the spec and the measured data.

``design(store, spec, health)`` returns Markdown. Every sentence is built from a figure or a
setting; the same data (and ``as_of``) gives the same document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flywheel.health import Health
from flywheel.health.rate import Z95, standard_error
from flywheel.health.sql import EDITS, EXPLICIT, IMPLICIT, outcome_signals
from flywheel.health.stages import ADVICE, duration_text
from flywheel.rules import quote_name
from flywheel.spec import Spec
from flywheel.store import Store

__all__ = ["Audit", "audit", "design"]


@dataclass(frozen=True)
class Audit:
    """What the window's data holds, for the document's data audit."""

    decisions: int
    signals: dict[str, int]  # name: decisions with it
    constant_knobs: tuple[str, ...]
    constant_features: tuple[str, ...]
    never_received: tuple[str, ...]
    quarantined: int
    complete_rows: int  # the complete rows the latest version served in the window learned from


def audit(store: Store, spec: Spec, health: Health) -> Audit:
    end = datetime.fromisoformat(health.as_of)
    params = {"as_of": end, "start": end - timedelta(seconds=health.window_seconds)}
    names = [*(k.name for k in spec.knobs), *(f.name for f in spec.context)]
    distinct = ", ".join(f"count(DISTINCT {quote_name(n)}) AS {quote_name(n)}" for n in names)
    counts = store.query(
        f"SELECT count(*) AS n, {distinct} FROM decisions WHERE ts > $start AND ts <= $as_of",
        params,
    ).to_pylist()[0]
    signals = {
        str(r["name"]): int(r["n"])
        for r in store.query(
            "SELECT s.name, count(DISTINCT s.decision_id) AS n FROM signals s"
            " JOIN decisions d ON d.id = s.decision_id"
            " WHERE d.ts > $start AND d.ts <= $as_of AND s.ts <= $as_of GROUP BY s.name",
            params,
        ).to_pylist()
    }
    ever = {
        str(r["name"])
        for r in store.query(
            "SELECT DISTINCT name FROM signals WHERE ts <= $as_of", {"as_of": end}
        ).to_pylist()
    }
    quarantined = store.query(
        "SELECT count(*) AS n FROM quarantine_state WHERE action = 'quarantined'"
    ).to_pylist()[0]["n"]
    decided = int(counts["n"])
    learned = [v.learned_rows for v in health.learning.versions if v.version is not None]
    latest = learned[-1] if learned else 0
    return Audit(
        decided,
        dict(sorted(signals.items())),
        tuple(k.name for k in spec.knobs if decided and int(counts[k.name]) <= 1),
        tuple(f.name for f in spec.context if decided and int(counts[f.name]) <= 1),
        tuple(sorted(n for n in _declared(spec) if n not in ever)),
        int(quarantined),
        latest,
    )


def _declared(spec: Spec) -> set[str]:
    """The signals the spec names itself: its own ones and the reward formula's (the
    built-in signals every spec understands are not expected of every product)."""
    return {*outcome_signals(spec), *spec.reward.signals}


def design(store: Store, spec: Spec, health: Health) -> str:
    """The design document, in Markdown."""
    found = audit(store, spec, health)
    days = health.window_seconds / 86400
    out = [
        f"# Flywheel design: {spec.name}",
        "",
        f"As of {health.as_of[:19].replace('T', ' ')} UTC, over the last {days:g} days."
        " Written by `flywheel design` from the spec and the store: the same data gives the"
        " same document.",
        "",
        *_what(spec),
        *_audit(spec, health, found),
        *_loops(spec, health, found),
        *_metrics(health),
        *_moat(health, found),
        *_plan(spec, health, found),
    ]
    return "\n".join(out).rstrip() + "\n"


def _what(spec: Spec) -> list[str]:
    knobs = "; ".join(f"`{k.name}` ({', '.join(map(str, k.values))})" for k in spec.knobs)
    context = "; ".join(
        f"`{f.name}` ({', '.join(map(str, f.values)) if f.values else 'numeric'})"
        if not f.open
        else f"`{f.name}` (open category)"
        for f in spec.context
    )
    return [
        "## 1. What the wheel optimises",
        "",
        f"- **Result:** `{spec.reward.formula}`, counted inside"
        f" {duration_text(spec.reward.window_seconds)} of each decision.",
        f"- **Knobs ({len(spec.knobs)}):** {knobs}.",
        f"- **Context ({len(spec.context)}):** {context or 'none'}.",
        f"- **Skeleton:** {len(spec.fixed)} fixed value(s), {len(spec.rules)} rule(s) never"
        " broken.",
        "",
    ]


def _audit(spec: Spec, health: Health, found: Audit) -> list[str]:
    n = found.decisions
    lines = ["## 2. Data audit", ""]
    if not n:
        return [*lines, "No decisions in the window: nothing to audit yet.", ""]
    lines.append(f"**Collected:** {n:,} decisions in the window. Signals (decisions with each):")
    lines.append("")
    lines += ["| signal | kind | decisions | share |", "| --- | --- | ---: | ---: |"]
    for name, count in found.signals.items():
        lines.append(f"| `{name}` | {_kind(spec, name)} | {count:,} | {count / n:.1%} |")
    if not found.signals:
        lines.append("| (none) | | 0 | 0% |")
    lines += ["", "**Feedback coverage** (settled decisions with each kind):", ""]
    lines += ["| kind | decisions | share |", "| --- | ---: | ---: |"]
    lines += [f"| {c.kind} | {c.decisions:,} | {c.share:.1%} |" for c in health.coverage]
    lines += [
        "",
        f"- **Knobs that never vary:** {_names(found.constant_knobs)}.",
        f"- **Context features that never change:** {_names(found.constant_features)}.",
        f"- **Signals declared but never received:** {_names(found.never_received)}.",
        f"- **Quarantined rows (all time):** {found.quarantined:,}.",
        "",
    ]
    return lines


def _loops(spec: Spec, health: Health, found: Audit) -> list[str]:
    cover = {c.kind: c.share for c in health.coverage}
    published = any(v.version is not None for v in health.learning.versions)
    every = spec.learn.every_seconds
    schedule = [f"every {duration_text(every)}"] if every else []
    if spec.learn.after_rows:
        schedule.append(f"after {spec.learn.after_rows:,} new complete rows")
    comments = found.signals.get("comment", 0)
    rows: list[tuple[str, bool, str]] = [
        (
            "decide → signal → learn → publish",
            published,
            f"{sum(v.version is not None for v in health.learning.versions)} version(s) served"
            " in the window"
            if published
            else "no playbook has served in the window",
        ),
        (
            "scheduled cycles",
            bool(schedule),
            " and ".join(schedule) if schedule else "cycles run only when someone calls learn",
        ),
        (
            "online updates between cycles",
            spec.learn.online,
            "on" if spec.learn.online else "off ([learn] online = false)",
        ),
        (
            "seatbelt",
            spec.seatbelt.enabled,
            "quality checks and the gate guard every cycle"
            if spec.seatbelt.enabled
            else "off: nothing stops a bad cycle",
        ),
        (
            "alerts",
            spec.alerts.webhook is not None,
            "a webhook is told of halts and monitors"
            if spec.alerts.webhook
            else "no webhook: a halt waits for someone to look",
        ),
        ("explicit feedback", cover["explicit"] > 0, f"{cover['explicit']:.0%} of decisions"),
        ("implicit feedback", cover["implicit"] > 0, f"{cover['implicit']:.0%} of decisions"),
        ("product outcomes", cover["outcomes"] > 0, f"{cover['outcomes']:.0%} of decisions"),
        (
            "themes → prompt revisions",
            comments > 0,
            f"{comments:,} comments to cluster" if comments else "needs comments on outputs",
        ),
        (
            "fine-tuning and preference data",
            cover["edits"] > 0,
            f"{cover['edits']:.0%} of decisions have an edited draft"
            if cover["edits"]
            else "needs edits of drafts (wheel.edit)",
        ),
    ]
    lines = ["## 3. Loops in place and missing", "", "| loop | | evidence |", "| --- | --- | --- |"]
    lines += [
        f"| {name} | {'in place' if ok else '**missing**'} | {why} |" for name, ok, why in rows
    ]
    return [*lines, ""]


def _metrics(health: Health) -> list[str]:
    lines = ["## 4. Metrics", "", f"{health.stages.bottleneck}", ""]
    lines += ["| step | reached | passed | waiting | stopped | p50 | p90 |"]
    lines += ["| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in (*health.stages.transitions, health.stages.cycle):
        lines.append(
            f"| {t.start} → {t.end} | {t.reached:,} | {t.passed:,} | {t.waiting:,} |"
            f" {t.stopped:,} | {duration_text(t.p50_seconds)} | {duration_text(t.p90_seconds)} |"
        )
    lines += ["", f"**Force.** {health.force.text}", "", "**Learning rate.**", ""]
    lines += ["| served by | decisions | result (95%) | lift | learned from |"]
    lines += ["| --- | ---: | --- | --- | ---: |"]
    for v in health.learning.versions:
        lines.append(
            f"| {v.served_by} | {v.decisions:,} | {_interval(v.result, v.low, v.high)}"
            f"{' ¹' if v.corrected else ''} | {_interval(v.lift, v.lift_low, v.lift_high, '+')} |"
            f" {v.learned_rows:,} rows |"
        )
    if any(v.corrected for v in health.learning.versions):
        lines += ["", "¹ post-stratified to the window's context mix."]
    rate = health.learning
    lines.append("")
    if rate.per_cycle is not None:
        lines.append(f"- Lift per cycle: {_slope(rate.per_cycle)}.")
    if rate.per_1000_rows is not None:
        lines.append(f"- Lift per 1,000 complete rows: {_slope(rate.per_1000_rows)}.")
    lines.append(f"- {rate.text}")
    lines += ["", "**Drag.**", "", "| indicator | | figure |", "| --- | --- | --- |"]
    lines += [f"| {d.name} | {d.status} | {d.text} |" for d in health.drag]
    lines += ["", "**Weekly trends.**", ""]
    outcome_names = sorted({k for w in health.trends for k in w.outcomes})
    head = ["week to", "decisions", "acceptance", "requery", "edit distance"]
    head += ["completion", "result", "retention", *outcome_names]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for w in health.trends:
        cells = [w.end[:10], f"{w.decisions:,}", *map(_share, (w.acceptance, w.requery))]
        cells += [_number(w.edit_distance), _share(w.completion), _number(w.result)]
        cells += [_share(w.retention), *(_number(w.outcomes.get(k)) for k in outcome_names)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _moat(health: Health, found: Audit) -> list[str]:
    weekly = [w.decisions for w in health.trends if w.decisions]
    growth = f"{weekly[-1]:,} in the last week" if weekly else "none in the window"
    if len(weekly) >= 2:
        growth += f", {weekly[-1] / weekly[0]:.2f}× the first week of the window"
    lt = health.learning_type
    lines = [
        "## 5. Moat",
        "",
        f"- **Proprietary rows:** {found.complete_rows:,} complete rows behind the latest"
        f" version; new decisions (each a row once its result is in): {growth}.",
        f"- **Learning type:** {lt.text}",
        f"- **Rows a competitor would need to match today's playbook:** {_match(health)}",
        "",
    ]
    return lines


def _match(health: Health) -> str:
    versions = health.learning.cycles
    if not versions:
        return "no playbook yet."
    latest = versions[-1]
    se = standard_error(latest) or 0.0
    for v in versions:
        both = math.hypot(se, standard_error(v) or 0.0)
        if (
            latest.result is not None
            and v.result is not None
            and latest.result - v.result <= Z95 * both
        ):
            return (
                f"about {v.learned_rows:,}: {v.served_by} learned from that many and its result"
                f" ({_interval(v.result, v.low, v.high)}) is not below today's"
                f" ({latest.served_by}, {_interval(latest.result, latest.low, latest.high)})."
            )
    return f"{latest.learned_rows:,}, the rows behind {latest.served_by}."


def _plan(spec: Spec, health: Health, found: Audit) -> list[str]:
    first: list[str] = []
    second: list[str] = []
    third: list[str] = []
    for name in found.never_received:
        first.append(f"Send the declared signal `{name}` (never received), or remove it.")
    for name in found.constant_knobs:
        first.append(f"Let the knob `{name}` vary (one value in the window): it teaches nothing.")
    for name in found.constant_features:
        first.append(f"Fill the context feature `{name}` (one value in the window).")
    cover = {c.kind: c.share for c in health.coverage}
    if cover["explicit"] + cover["implicit"] == 0:
        first.append(
            "Record explicit (ratings, thumbs) or implicit (accepted, requeried) feedback."
        )
    force = health.force
    factors = {
        "alignment": force.alignment,
        "closed loop": force.closed_loop,
        "feedback": force.feedback,
    }
    weakest = factors[force.weakest]
    if weakest < 0.995:
        first.append(
            f"Raise {force.weakest} from {weakest:.0%} to {min(1.0, weakest + 0.1):.0%} of"
            f" decisions (force {force.value:.2f} today)."
        )
    slowest = next((t for t in health.stages.transitions if t.name == health.stages.slowest), None)
    if slowest is not None:
        second.append(
            f"Shorten {slowest.start} → {slowest.end} (p50 {duration_text(slowest.p50_seconds)}):"
            f" {ADVICE[slowest.name]}."
        )
    for d in health.drag:
        if d.status == "warn":
            second.append(f'Clear the drag "{d.name}": {d.text}')
    if health.learning.plateau:
        third += [f"Past the plateau: {s}" for s in health.learning.suggestions]
    elif health.learning_type.kind == "individual":
        third.append(
            "Add a context feature that tells units apart: pooled data does not carry to new units."
        )
    else:
        third.append("Keep the cycle; re-run `flywheel design` monthly and compare the figures.")
    if spec.alerts.webhook is None:
        second.append("Set an alerts webhook, so a halt reaches someone.")
    if not spec.learn.scheduled:
        second.append("Schedule cycles ([learn] every), so the wheel turns without a person.")
    lines = ["## 6. 90-day plan", ""]
    for title, items in (
        ("Days 1–30: the data", first),
        ("Days 31–60: the speed", second),
        ("Days 61–90: the growth", third),
    ):
        lines += [f"**{title}**", ""]
        lines += [f"- [ ] {item}" for item in items] or ["- [ ] Nothing found to fix."]
        lines.append("")
    return lines


def _kind(spec: Spec, name: str) -> str:
    if name in EXPLICIT:
        return "explicit"
    if name in IMPLICIT:
        return "implicit"
    if name in EDITS:
        return "edit"
    if name in outcome_signals(spec):
        return "outcome"
    return "other"


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "none"


def _interval(value: float | None, low: float | None, high: float | None, sign: str = "") -> str:
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value:{sign}.3f}"
    return f"{value:{sign}.3f} ({low:{sign}.3f} to {high:{sign}.3f})"


def _slope(s: Any) -> str:
    return f"{s.value:+.4f} (95%: {s.low:+.4f} to {s.high:+.4f})"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
