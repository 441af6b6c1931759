"""The dashboard's pages, each built from one wheel as a list of blocks the page draws.

A block is a dict with a ``kind``: ``stats`` (labelled figures), ``alerts``, ``chart`` (an SVG
from :mod:`flywheel.server.dashboard.charts`, with its numbers as a table), ``table``, ``text`` or
``action`` (a form for an admin action: resume, roll back, release). The browser draws them
all with one small script, so what a page shows is decided, and tested, here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flywheel.analyze import Q_LEVEL
from flywheel.errors import InvalidInputError
from flywheel.seatbelt import breaker, monitors
from flywheel.seatbelt.monitors import Check
from flywheel.seatbelt.status import never_received
from flywheel.server.dashboard import charts
from flywheel.wheel import Wheel

Block = dict[str, Any]
HOURS = 48  # decisions and signals per hour, over the last this many hours
LATEST = 50  # rows on the data page
EVENTS = 200  # audit entries on the seatbelt and playbook pages
QUARANTINED = 100  # quarantined rows shown
STRONGEST = 8  # interactions charted
PLAYBOOK_EVENTS = {"rollback", "change", "halt", "resume"}


def overview(wheel: Wheel) -> list[Block]:
    """Force and its factors, cycle time and the bottleneck, the result per playbook
    version, active alerts, and decisions and signals per hour. Measured by health (one pass
    over the window) and cheap reads: not by :meth:`~flywheel.Wheel.status`, whose counts
    and quality scan align every row in the store (the seatbelt page has them)."""
    health = wheel.health()
    store, spec = wheel.store, wheel.spec
    halt = breaker.halted(store)
    checks = monitors.scheduled(store, spec, wheel.now())
    never = never_received(store, spec.reward.signals)
    force = health.force
    cycle = health.stages.cycle
    complete = next(t.passed for t in health.stages.transitions if t.name == "complete")
    signals = int(store.query("SELECT count(*) AS n FROM signals").column("n")[0].as_py())
    served = wheel.playbook
    figures = [
        _figure("force", f"{force.value:.0%}", f"weakest: {force.weakest}"),
        _figure("alignment", f"{force.alignment:.0%}", "decisions with their results joined"),
        _figure("closed loop", f"{force.closed_loop:.0%}", "decisions a playbook served"),
        _figure("feedback", f"{force.feedback:.0%}", "decisions with feedback"),
        _figure(
            "cycle time (p50)", _duration(cycle.p50_seconds), f"p90 {_duration(cycle.p90_seconds)}"
        ),
        _figure("decisions", f"{health.decisions:,}", f"last 28 d; {complete:,} complete"),
        _figure("signals", f"{signals:,}", "in the store"),
        _figure(
            "playbook",
            "cold start" if served is None else f"v{served.version}",
            "halted" if halt is not None else "publishing",
        ),
    ]
    return [
        {"kind": "alerts", "title": "Alerts", "items": alerts(halt, checks, never)},
        {"kind": "stats", "title": "The turn", "items": figures},
        {"kind": "text", "title": "In short", "lines": health.summary()},
        _versions_chart(health.learning.versions, wheel.playbooks()),
        _hourly_chart(wheel),
    ]


def alerts(
    halt: breaker.Halt | None, checks: Iterable[Check], never: Sequence[str]
) -> list[dict[str, str]]:
    """What needs a person now: the halt, failed monitors, signals never received."""
    items = []
    if halt is not None:
        since = halt.since[:16].replace("T", " ")
        items.append({"level": "halt", "text": f"halted since {since} UTC: {halt.reason}"})
    for check in checks:
        if not check.ok:
            level = "halt" if check.critical else "warn"
            items.append({"level": level, "text": f"{check.name}: {check.summary}"})
    if never:
        names = ", ".join(never)
        items.append({"level": "warn", "text": f"signals never received: {names}"})
    return items


def playbook(wheel: Wheel) -> list[Block]:
    """Per segment the exact parameters, expected result, interval and share served; the
    versions with publish, rollback and change events; roll back."""
    served = wheel.playbook
    versions = wheel.playbooks()
    blocks: list[Block] = []
    if served is None:
        blocks.append({"kind": "text", "title": "Playbook", "lines": ["cold start: no playbook"]})
    else:
        rows = wheel.playbook_rows()
        columns = list(rows[0]) if rows else []
        blocks.append(
            {
                "kind": "table",
                "title": f"Playbook v{served.version}: parameters per segment",
                "columns": columns,
                "rows": [[_cell(r.get(c)) for c in columns] for r in rows],
                "empty": "no segment has a learned combination yet",
            }
        )
    blocks.append(
        {
            "kind": "table",
            "title": "Versions, newest first",
            "columns": ["version", "published", "learned from rows up to", "rows", "what"],
            "rows": [
                [
                    f"v{v['version']}",
                    _when(v["created_at"]),
                    _when(v["trained_to"]),
                    v["rows"],
                    _published(v),
                ]
                for v in versions
            ],
            "empty": "nothing published yet",
        }
    )
    events = [e for e in wheel.events(EVENTS) if e["action"] in PLAYBOOK_EVENTS]
    blocks.append(_events("Rollbacks, changes, halts and resumes, newest first", events))
    choices = [str(v["version"]) for v in versions if v["matches_spec"]]
    if served is not None:
        choices = [c for c in choices if int(c) != served.version]
    blocks.append(
        {
            "kind": "action",
            "action": "rollback",
            "title": "Roll back",
            "text": "Publish an earlier version again as the newest, and serve it.",
            "fields": [
                {"name": "version", "label": "version", "type": "select", "options": choices}
            ],
            "submit": "Roll back",
            "disabled": "no earlier version to restore" if not choices else None,
        }
    )
    return blocks


def findings(wheel: Wheel) -> list[Block]:
    """What works alone and in combination, with q-values, the strongest interactions
    charted, and readiness."""
    if wheel.playbook is None:
        return [{"kind": "text", "title": "Findings", "lines": ["no playbook yet: nothing found"]}]
    analysis = wheel.analyze()
    f = analysis.findings
    strongest = sorted(f.interactions, key=lambda i: i.p_value)[:STRONGEST]
    points = [
        (
            f"{i.name}: {_levels(i.strongest.levels)}",
            i.strongest.effect,
            i.strongest.low,
            i.strongest.high,
        )
        for i in strongest
    ]
    chart_title = "Strongest interactions: effect beyond the additive model (95% interval)"
    return [
        {"kind": "text", "title": "In plain words", "lines": list(analysis.sentences)},
        {
            "kind": "chart",
            "title": chart_title,
            "svg": charts.forest(chart_title, points),
            "table": _points_table(["interaction", "effect", "low", "high"], points),
        },
        {
            "kind": "table",
            "title": f"In combination (found at q ≤ {Q_LEVEL})",
            "columns": ["pair", "found", "q-value", "strongest cell", "effect", "interval"],
            "rows": [
                [
                    i.name,
                    "yes" if i.q_value <= Q_LEVEL else "no",
                    _num(i.q_value),
                    _levels(i.strongest.levels),
                    _num(i.strongest.effect),
                    _interval(i.strongest.low, i.strongest.high),
                ]
                for i in sorted(f.interactions, key=lambda i: i.q_value)
            ],
            "empty": "no pairs modelled",
        },
        {
            "kind": "table",
            "title": "Alone: each level against its reference",
            "columns": ["factor", "level", "rows", "estimate", "lift", "interval"],
            "rows": [
                [
                    s.factor,
                    _cell(s.level),
                    s.rows,
                    _num(s.estimate),
                    _num(s.lift),
                    _interval(s.lift_low, s.lift_high),
                ]
                for s in f.single
            ],
            "empty": "no levels",
        },
        {
            "kind": "table",
            "title": "Best combination per segment",
            "columns": ["segment", "parameters", "expected", "interval", "P(best)", "rows"],
            "rows": [
                [
                    b.segment,
                    _assignment(b.params),
                    _num(b.expected),
                    _interval(b.low, b.high),
                    _num(b.p_best),
                    b.rows,
                ]
                for b in f.best
            ],
            "empty": "no segments",
        },
        {
            "kind": "table",
            "title": "Readiness: can the data detect the effect wanted?",
            "columns": ["factors", "rows", "smallest detectable", "ready", "rows still needed"],
            "rows": [
                [
                    " × ".join(r.factors),
                    r.rows,
                    _num(r.mde),
                    "yes" if r.ready else "no",
                    r.more_rows,
                ]
                for r in f.readiness
            ],
            "empty": "nothing to judge",
        },
    ]


def seatbelt(wheel: Wheel) -> list[Block]:
    """Events, the halt with its evidence, monitors, quarantine; resume and release."""
    status = wheel.status()
    events = wheel.events(EVENTS)
    alerted = alerts(status.halt, status.monitors, status.never_received)
    blocks: list[Block] = [{"kind": "alerts", "title": "Alerts", "items": alerted}]
    if status.halt is not None:
        halt = status.halt
        evidence = next((e for e in events if e["action"] == "halt"), None)
        lines = [f"since {halt.since}, by the {halt.check} check", halt.reason]
        if evidence is not None and evidence.get("detail"):
            lines.append(json.dumps(evidence["detail"], default=str, indent=1)[:4000])
        blocks.append({"kind": "text", "title": "Halted", "lines": lines, "level": "halt"})
    blocks.append(
        {
            "kind": "action",
            "action": "resume",
            "title": "Resume",
            "text": "Lift the halt; the reason is recorded with who gave it.",
            "fields": [{"name": "reason", "label": "reason", "type": "text"}],
            "submit": "Resume",
            "disabled": None if status.halt is not None else "the wheel is not halted",
        }
    )
    blocks.append(
        {
            "kind": "table",
            "title": "Monitors",
            "columns": ["check", "ok", "critical", "summary"],
            "rows": [
                [m.name, "yes" if m.ok else "no", "yes" if m.critical else "no", m.summary]
                for m in status.monitors
            ],
            "empty": "no monitors ran",
        }
    )
    quality = status.quality
    if quality is not None:
        q = quality.as_dict()
        blocks.append(
            {
                "kind": "stats",
                "title": "Quality",
                "items": [
                    _figure(k.replace("_", " "), _cell(v), "")
                    for k, v in q.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                ],
            }
        )
    held = wheel.quarantined(QUARANTINED).to_pylist()
    names = ["decision_id", "failed", "quarantined_at"]
    blocks.append(
        {
            "kind": "table",
            "title": f"Quarantine (first {QUARANTINED})",
            "columns": ["decision", "rules failed", "quarantined at"],
            "rows": [[_cell(r.get(n)) for n in names] for r in held],
            "empty": "nothing quarantined",
        }
    )
    blocks.append(
        {
            "kind": "action",
            "action": "release",
            "title": "Release",
            "text": "Re-check quarantined rows (all, or the ids given) and release those that"
            " pass; with accept, release them regardless, as a recorded override.",
            "fields": [
                {"name": "ids", "label": "decision ids (blank: all)", "type": "text"},
                {"name": "accept", "label": "accept without a re-check", "type": "checkbox"},
            ],
            "submit": "Release",
            "disabled": None if held else "nothing quarantined",
        }
    )
    blocks.append(_events("Events", events))
    return blocks


def health(wheel: Wheel) -> list[Block]:
    """Transition timings, coverage and indicator trends, drag, learning type."""
    h = wheel.health()
    steps = h.stages.transitions
    timing = [(t.name, None if t.p50_seconds is None else t.p50_seconds / 3600) for t in steps]
    weeks = h.trends
    labels = [w.end[:10] for w in weeks]
    trend_title = "Weekly result and completion"
    trend = {"result": [w.result for w in weeks], "completion": [w.completion for w in weeks]}
    outcomes = sorted({name for w in weeks for name in w.outcomes})
    return [
        {"kind": "text", "title": "In short", "lines": h.summary()},
        {
            "kind": "chart",
            "title": "Median time of each transition (hours)",
            "svg": charts.bars("Median time of each transition", timing, unit="hours"),
            "table": {
                "columns": ["transition", "reached", "passed", "share", "p50", "p90"],
                "rows": [
                    [
                        f"{t.name} ({t.start} → {t.end})",
                        t.reached,
                        t.passed,
                        "-" if t.share is None else f"{t.share:.0%}",
                        _duration(t.p50_seconds),
                        _duration(t.p90_seconds),
                    ]
                    for t in (*steps, h.stages.cycle)
                ],
            },
        },
        {
            "kind": "chart",
            "title": trend_title,
            "svg": charts.lines(trend_title, labels, trend),
            "table": {
                "columns": [
                    "week ending",
                    "decisions",
                    "result",
                    "completion",
                    "acceptance",
                    "requery",
                    "edit distance",
                    "retention",
                    *outcomes,
                ],
                "rows": [
                    [
                        w.end[:10],
                        w.decisions,
                        _num(w.result),
                        _num(w.completion),
                        _num(w.acceptance),
                        _num(w.requery),
                        _num(w.edit_distance),
                        _num(w.retention),
                        *(_num(w.outcomes.get(name)) for name in outcomes),
                    ]
                    for w in weeks
                ],
            },
        },
        {
            "kind": "table",
            "title": "Coverage",
            "columns": ["kind", "decisions", "share"],
            "rows": [[c.kind, c.decisions, f"{c.share:.0%}"] for c in h.coverage],
            "empty": "no decisions in the window",
        },
        {
            "kind": "table",
            "title": "Drag",
            "columns": ["what", "status", "figure", "why"],
            "rows": [[d.name, d.status, _num(d.figure), d.text] for d in h.drag],
            "empty": "no drag measured",
        },
        {"kind": "text", "title": "Learning type", "lines": [h.learning_type.text]},
    ]


def data(wheel: Wheel, search: str = "") -> list[Block]:
    """The latest decisions and signals as stored (units pseudonymised, text redacted),
    or those of one unit pseudonym or decision id."""
    search = search.strip()
    if len(search) > 200:
        raise InvalidInputError("q", "is longer than 200 characters")
    wheel.flush()
    where, params = "", {}
    if search:  # a unit pseudonym, or a decision id however written (32 hex digits are both)
        where, params = " WHERE unit = $q", {"q": search}
        try:
            params["id"] = str(uuid.UUID(search))
            where += " OR {id} = CAST($id AS UUID)"
        except ValueError:
            pass
    # NULLS FIRST, though ts is never null: what PostgreSQL's index on ts reads backwards
    order = f" ORDER BY ts DESC NULLS FIRST LIMIT {LATEST}"
    decisions = wheel.store.query("SELECT * FROM decisions" + where.format(id="id") + order, params)
    signals = wheel.store.query(
        "SELECT decision_id, ts, name, value, text, unit FROM signals"
        + where.format(id="decision_id")
        + order,
        params,
    )
    what = f"for {search!r}" if search else "latest"
    return [
        {"kind": "search", "title": "Search", "value": search},
        _arrow_table(
            f"Decisions ({what}, at most {LATEST})", decisions.to_pylist(), decisions.column_names
        ),
        _arrow_table(
            f"Signals ({what}, at most {LATEST})", signals.to_pylist(), signals.column_names
        ),
    ]


PAGES: Mapping[str, Callable[[Wheel], list[Block]]] = {
    "overview": overview,
    "playbook": playbook,
    "findings": findings,
    "seatbelt": seatbelt,
    "health": health,
}
"""The pages that are computed off the request path and kept (the data page is searched
live)."""


# --- charts ----------------------------------------------------------------------------------


def _versions_chart(versions: Sequence[Any], published: Sequence[Mapping[str, Any]]) -> Block:
    when = {v["version"]: str(v["trained_to"])[5:10] for v in published}
    points = []
    for v in versions:
        label = "cold start" if v.version is None else f"v{v.version}"
        if v.version in when:
            label += f" {when[v.version]}"
        points.append((label, v.result, v.low, v.high))
    title = "Result per playbook version, on the decisions it served (95% interval)"
    return {
        "kind": "chart",
        "title": title,
        "svg": charts.intervals(title, points, joined=True),
        "table": _points_table(["served by", "result", "low", "high"], points),
    }


def _hourly_chart(wheel: Wheel) -> Block:
    end = wheel.now()
    start = end - timedelta(hours=HOURS)
    slots = [start + timedelta(hours=i + 1) for i in range(HOURS)]
    series = {
        "decisions": _per_hour(wheel, "decisions", start, end),
        "signals": _per_hour(wheel, "signals", start, end),
    }
    labels = [s.strftime("%d %Hh") for s in slots]
    title = f"Decisions and signals per hour, last {HOURS} hours"
    values = {
        name: [float(counts.get(i, 0)) for i in range(HOURS)] for name, counts in series.items()
    }
    return {
        "kind": "chart",
        "title": title,
        "svg": charts.lines(title, labels, values, zero=True),
        "table": {
            "columns": ["hour ending", "decisions", "signals"],
            "rows": [
                [labels[i], int(values["decisions"][i]), int(values["signals"][i])]
                for i in range(HOURS)
                if values["decisions"][i] or values["signals"][i]
            ],
        },
    }


def _per_hour(wheel: Wheel, table: str, start: datetime, end: datetime) -> dict[int, int]:
    """Rows of ``table`` per hour after ``start`` up to ``end`` (0: the first hour, which
    ends an hour after ``start``, ``start`` itself left out)."""
    rows = wheel.store.query(
        f"""SELECT CAST(ceil((extract(epoch FROM ts) - $start) / 3600) AS BIGINT) - 1 AS slot,
        count(*) AS n FROM {table} WHERE ts > $since AND ts <= $until GROUP BY 1""",
        {"start": start.timestamp(), "since": start, "until": end},
    ).to_pylist()
    return {int(r["slot"]): int(r["n"]) for r in rows if 0 <= r["slot"] < HOURS}


# --- formatting ------------------------------------------------------------------------------


def _figure(label: str, value: str, note: str) -> dict[str, str]:
    return {"label": label, "value": value, "note": note}


def _events(title: str, events: Sequence[Mapping[str, Any]]) -> Block:
    """Audit entries in the order they were recorded (the audit's own; their times are the
    wheel's clock, not the store's)."""
    return {
        "kind": "table",
        "title": title,
        "columns": ["when", "event", "what", "by"],
        "rows": [[_when(e["ts"]), e["action"], e["reason"], e["actor"] or ""] for e in events],
        "empty": "none yet",
    }


def _arrow_table(title: str, rows: list[dict[str, Any]], columns: Sequence[str]) -> Block:
    return {
        "kind": "table",
        "title": title,
        "columns": list(columns),
        "rows": [[_cell(r[c]) for c in columns] for r in rows],
        "empty": "no rows",
    }


def _points_table(
    columns: list[str], points: Sequence[tuple[str, float | None, float | None, float | None]]
) -> dict[str, Any]:
    return {"columns": columns, "rows": [[p[0], *(_num(v) for v in p[1:])] for p in points]}


def _published(version: Mapping[str, Any]) -> str:
    if version.get("restored_from") is not None:
        text = f"a copy of v{version['restored_from']} (rolled back)"
    else:
        text = "learned"
    if not version["matches_spec"]:
        text += ", for another spec"
    return text


def _when(moment: Any) -> str:
    """A moment to the second, in UTC, whether a datetime or ISO text."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(moment)


def _levels(levels: Sequence[Any]) -> str:
    return " + ".join(str(v) for v in levels)


def _assignment(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in params.items())


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"{_num(low)} to {_num(high)}"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _num(value)
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
