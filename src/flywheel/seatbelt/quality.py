"""Quality rules and quarantine: rows that fail a ``[quality]`` check never reach the learner.

A row is *received* once it has a result (a reward). Each scan evaluates every received row
against the spec's checks (rules, required signals, ranges, duplicate keys) and quarantines
those that fail and were not quarantined or accepted before, with every failed check named.
``received = accepted + quarantined`` holds by construction and is what ``flywheel status``
shows; the learner reads only accepted rows.

The ``quarantine`` table is append-only: each decision's latest entry is its state
(``quarantined``, ``released`` after a re-check passed, ``accepted`` when a person overrides).
A released row is checked again by the next scan like any other; an accepted one never is.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from flywheel.align.sql import aligned_rows_sql
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.rules import beside, own_column, quote_literal, quote_name
from flywheel.spec import Spec
from flywheel.store import Store

SEPARATOR = "\n"  # between failed check names; rules are stored on one line
_DUPLICATE = quote_name(own_column("duplicate"))


@dataclass(frozen=True)
class RuleCount:
    """How many received rows one check kept."""

    rule: str
    failed: int
    checked: int

    @property
    def kept(self) -> int:
        return self.checked - self.failed

    def line(self) -> str:
        share = self.kept / self.checked if self.checked else 1.0
        return f"{self.rule}: kept {self.kept:,}/{self.checked:,} ({share:.1%})"


@dataclass(frozen=True)
class QualityReport:
    """One scan: counts, the keep ratio per check, and how many rows it newly quarantined."""

    received: int
    accepted: int
    quarantined: int
    newly_quarantined: int
    rules: tuple[RuleCount, ...]
    recent_received: int = 0
    recent_quarantined: int = 0

    @property
    def recent_failure_rate(self) -> float:
        return self.recent_quarantined / self.recent_received if self.recent_received else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "newly_quarantined": self.newly_quarantined,
            "rules": {r.rule: {"kept": r.kept, "checked": r.checked} for r in self.rules},
        }


def checks(spec: Spec) -> dict[str, str]:
    """Every check's name and its failure condition (SQL, true when the row fails): the
    ``[quality]`` checks, then the skeleton's rules."""
    out = _failing({**spec.quality.rules, **spec.quality.skeleton})
    if spec.quality.unique:
        out[f"duplicate {', '.join(spec.quality.unique)}"] = _DUPLICATE
    return out


def checked_sql(spec: Spec) -> str:
    """Every received row with its decision id, time, quarantine state and failed checks.

    The checks are evaluated over the aligned rows alone (``f``), so the names they use read
    only the spec's columns, never the quarantine table's."""
    failed = [
        f"CASE WHEN {cond} THEN {quote_literal(name)} END" for name, cond in checks(spec).items()
    ]
    failed_expr = f"concat_ws(chr(10), {', '.join(failed)})" if failed else "''"
    keys = spec.quality.unique
    duplicate = (
        f"{' AND '.join(f'{quote_name(k)} IS NOT NULL' for k in keys)} AND row_number() OVER"
        f" (PARTITION BY {', '.join(quote_name(k) for k in keys)} ORDER BY ts, decision_id) > 1"
        if keys
        else "false"
    )
    return f"""
WITH a AS ({aligned_rows_sql(spec)}),
r AS (SELECT *, {duplicate} AS {_DUPLICATE} FROM a WHERE reward IS NOT NULL),
f AS (SELECT decision_id, ts, {failed_expr} AS failed, count(*) OVER () AS received FROM r)
SELECT f.decision_id, f.ts, q.action AS state, f.failed, f.received
FROM f LEFT JOIN quarantine_state q ON q.decision_id = CAST(f.decision_id AS UUID)
"""


def scan(
    store: Store, spec: Spec, as_of: datetime, now: datetime, since: datetime | None = None
) -> QualityReport:
    """Check every received row up to ``as_of``; quarantine new failures (stamped ``now``).

    ``since`` marks the recent window whose failure rate the gate judges.
    """
    rows = store.query(
        f"SELECT * FROM ({checked_sql(spec)}) c"
        " WHERE failed <> '' OR state IS NOT NULL OR ts > $since",
        {"as_of": as_of, "since": since or as_of},
    ).to_pylist()
    total = rows[0]["received"] if rows else _received(store, spec, as_of)
    fresh: list[dict[str, Any]] = []
    per_rule: Counter[str] = Counter()
    quarantined = recent = recent_quarantined = 0
    for row in rows:
        names = row["failed"].split(SEPARATOR) if row["failed"] else []
        per_rule.update(names)
        state = row["state"]
        if names and state in (None, "released"):
            fresh.append({"decision_id": row["decision_id"], "rules": row["failed"]})
            state = "quarantined"
        is_recent = since is not None and row["ts"] > since
        recent += is_recent
        if state == "quarantined":
            quarantined += 1
            recent_quarantined += is_recent
    _append(store, fresh, "quarantined", now, actor="seatbelt")
    counts = tuple(RuleCount(name, per_rule[name], int(total)) for name in checks(spec))
    return QualityReport(
        received=int(total),
        accepted=int(total) - quarantined,
        quarantined=quarantined,
        newly_quarantined=len(fresh),
        rules=counts,
        recent_received=recent,
        recent_quarantined=recent_quarantined,
    )


def _failing(rules: dict[str, str]) -> dict[str, str]:
    return {name: f"NOT coalesce(CAST(({sql}) AS BOOLEAN), true)" for name, sql in rules.items()}


def skeleton_scan(store: Store, spec: Spec, as_of: datetime, now: datetime) -> int:
    """Quarantine the decisions up to ``as_of`` that have signals and break a skeleton rule
    (complete rows logged or imported with a combination the skeleton forbids), with each
    rule they break; returns how many. It reads the decisions table only, so a learn cycle
    without ``[quality]`` checks (which skips :func:`scan`) still never learns from them."""
    failing = _failing(dict(spec.quality.skeleton))
    if not failing:
        return 0
    named = ", ".join(
        f"CASE WHEN {cond} THEN {quote_literal(name)} END" for name, cond in failing.items()
    )
    # the rules read the decisions table alone: the quarantine's columns (action, rules) are
    # joined after, so a knob with one of those names is not mistaken for them
    rows = store.query(
        f"""WITH d AS (
            SELECT id, concat_ws(chr(10), {named}) AS rules FROM decisions
            WHERE ts <= $as_of AND ({" OR ".join(failing.values())})
        )
        SELECT CAST(d.id AS VARCHAR) AS decision_id, d.rules
        FROM d LEFT JOIN quarantine_state q ON q.decision_id = d.id
        WHERE (q.action IS NULL OR q.action = 'released')
            AND EXISTS (SELECT 1 FROM signals s WHERE s.decision_id = d.id AND s.ts <= $as_of)""",
        {"as_of": as_of},
    ).to_pylist()
    _append(store, rows, "quarantined", now, actor="seatbelt")
    return len(rows)


def counted(store: Store, accepted: int) -> QualityReport:
    """The report when the spec declares no checks: nothing new is quarantined, and rows
    quarantined under earlier rules stay where they are until released."""
    held = store.query(
        "SELECT count(*) AS n FROM quarantine_state WHERE action = 'quarantined'"
    ).to_pylist()[0]["n"]
    return QualityReport(accepted + int(held), accepted, int(held), 0, ())


def _received(store: Store, spec: Spec, as_of: datetime) -> int:
    sql = f"SELECT count(*) AS n FROM ({aligned_rows_sql(spec)}) a"
    return int(store.query(f"{sql} WHERE reward IS NOT NULL", {"as_of": as_of})["n"][0].as_py())


def quarantined(
    store: Store,
    spec: Spec,
    as_of: datetime,
    limit: int | None = None,
    decision_id: str | None = None,
) -> pa.Table:
    """The quarantined rows (aligned, with the checks they failed: ``failed``, and when:
    ``quarantined_at``; ``#failed``, ``#quarantined_at`` where the spec has those names),
    oldest first; or the one row of ``decision_id`` (empty when it is not quarantined)."""
    cap = "" if limit is None else f" LIMIT {int(limit)}"
    only = "" if decision_id is None else " AND q.decision_id = CAST($id AS UUID)"
    params: dict[str, Any] = {"as_of": as_of}
    if decision_id is not None:
        params["id"] = _uuid(decision_id)
    names = (*(f.name for f in spec.context), *(k.name for k in spec.knobs), *spec.signals)
    failed, at = (quote_name(beside(n, names)) for n in ("failed", "quarantined_at"))
    return store.query(
        f"""SELECT q.rules AS {failed}, q.ts AS {at}, a.*
        FROM ({aligned_rows_sql(spec)}) a
        JOIN quarantine_state q ON q.decision_id = CAST(a.decision_id AS UUID)
        WHERE q.action = 'quarantined'{only} ORDER BY q.ts, a.ts{cap}""",
        params,
    )


def history(store: Store, decision_id: str) -> list[dict[str, Any]]:
    """Every quarantine entry of one decision, in order."""
    return store.query(
        "SELECT ts, action, rules, actor FROM quarantine"
        " WHERE decision_id = CAST($id AS UUID) ORDER BY seq",
        {"id": _uuid(decision_id)},
    ).to_pylist()


def release(
    store: Store,
    spec: Spec,
    as_of: datetime,
    now: datetime,
    ids: Iterable[str] | None = None,
    *,
    accept: bool = False,
    actor: str = "user",
) -> tuple[int, int]:
    """Re-check quarantined rows (all, or ``ids``) against the current rules and data.

    Rows that now pass are released (and learned from); the rest stay. ``accept`` releases
    them regardless, as a recorded override. Returns (released, still quarantined).
    """
    wanted = None if ids is None else {_uuid(i) for i in ids}
    current = store.query(
        f"SELECT c.decision_id, c.failed FROM ({checked_sql(spec)}) c"
        " WHERE c.state = 'quarantined'",
        {"as_of": as_of},
    ).to_pylist()
    if wanted is not None:
        known = {r["decision_id"] for r in current}
        missing = sorted(wanted - known)
        if missing:
            raise NotFoundError("ids", f"not in quarantine: {', '.join(missing[:5])}")
        current = [r for r in current if r["decision_id"] in wanted]
    passing = [r for r in current if accept or not r["failed"]]
    for_action = [{"decision_id": r["decision_id"], "rules": r["failed"] or None} for r in passing]
    _append(store, for_action, "accepted" if accept else "released", now, actor=actor)
    return len(passing), len(current) - len(passing)


def _append(
    store: Store, rows: list[dict[str, Any]], action: str, now: datetime, actor: str
) -> None:
    if not rows:
        return
    table = pa.table(
        {
            "decision_id": pa.array([r["decision_id"] for r in rows], pa.string()),
            "ts": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
            "action": pa.array([action] * len(rows), pa.string()),
            "rules": pa.array([r["rules"] for r in rows], pa.string()),
            "actor": pa.array([actor] * len(rows), pa.string()),
        }
    )
    store.write({"quarantine": table})


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(str(text)))
    except ValueError:
        raise InvalidInputError("id", f"{text!r} is not a decision id") from None
