"""The alignment query: decisions joined with their signals inside the attribution window.

One statement, so the store does the join and the aggregation (DuckDB in parallel, vectorised)
and Python only receives the aligned rows as Arrow.
"""

from __future__ import annotations

from flywheel.rules import own_column, parse, quote_name
from flywheel.spec import Spec

COMBINE = {  # how a signal's repeats combine in a row (the spec's ``combine``), over ``s``
    "last": "arg_max({col}, s.ts)",
    "first": "arg_min({col}, s.ts)",
    "sum": "sum({col})",
    "max": "max({col})",
    "min": "min({col})",
    "mean": "avg({col})",
}


NOT_QUARANTINED = """NOT EXISTS (
    SELECT 1 FROM quarantine_state q
    WHERE q.action = 'quarantined' AND q.decision_id = CAST(a.decision_id AS UUID))"""
"""True for an aligned row (aliased ``a``) that the seatbelt has not quarantined."""

_OBSERVED = quote_name(own_column("observed"))
_OPEN = quote_name(own_column("open"))


def aligned_rows_sql(spec: Spec, since: bool = False, late: bool = False) -> str:
    """SQL for the aligned rows as of the timestamp parameter ``$as_of`` (and, with
    ``since``, of the decisions made after the parameter ``$since`` only: cheaper). With
    ``late`` as well, also of the decisions made before ``$since`` whose reward was not
    known then (no result yet, their window still open): every row that a learner which saw
    the complete rows as of ``$since`` has not seen.

    Columns: decision_id, ts, unit, policy, playbook, propensity, the context features, the
    knobs, one column per signal (repeats combined as the spec says), n_signals, late_signals,
    reward and status (complete | pending | expired). The spec's names are quoted wherever
    they appear, and no column of its own has a name the spec allows (see
    :data:`flywheel.spec.RESERVED_NAMES` and :func:`flywheel.rules.own_column`).
    """
    window = f"INTERVAL '{round(spec.reward.window_seconds * 1e6)} microseconds'"
    late = since and late
    aggregates = []
    for name, sig in spec.signals.items():
        column = "s.text" if sig.kind == "text" else "s.value"
        expr = COMBINE[sig.combine].format(col=column)
        mine = f"s.name = '{name}' AND s.in_window"
        aggregates.append(f"{expr} FILTER (WHERE {mine}) AS {quote_name(name)}")
        if late:  # the signal as it stood at $since
            aggregates.append(f"{expr} FILTER (WHERE {mine} AND s.ts <= $since) AS {_then(name)}")
    features = [*(f.name for f in spec.context), *(k.name for k in spec.knobs)]
    columns = ", ".join(quote_name(n) for n in [*features, *spec.signals])
    signal_cols = ", ".join(f"c.{quote_name(n)}" for n in spec.signals)
    feature_cols = ", ".join(f"d.{quote_name(n)}" for n in features)
    formula = parse(spec.reward.formula).sql(dialect="duckdb", identify=True)
    missing = "NULL" if spec.reward.missing is None else repr(float(spec.reward.missing))
    after = " AND d.ts > $since" if since else ""
    first, known = "", ""
    if late:  # decided before $since, inside the window: a new signal or an expiry since
        expired = (
            f"\n    UNION SELECT id FROM decisions WHERE ts > $since - {window}"
            f" AND ts + {window} <= $as_of"
            if spec.reward.missing is not None
            else ""
        )
        first = f"""l AS (
    SELECT decision_id FROM signals WHERE ts > $since AND ts <= $as_of{expired}
),
"""
        after = (
            f" AND (d.ts > $since OR (d.ts > $since - {window}"
            " AND d.id IN (SELECT decision_id FROM l)))"
        )
        renamed = ", ".join(f"{_then(n)} AS {quote_name(n)}" for n in spec.signals)
        known = f""",
p AS (
    SELECT decision_id FROM (SELECT decision_id, {renamed} FROM c) t
    WHERE ({formula}) IS NOT NULL
)"""
    return f"""
WITH {first}s AS (
    SELECT s.decision_id, s.name, s.value, s.text, s.ts, s.ts <= d.ts + {window} AS in_window
    FROM signals s JOIN decisions d ON d.id = s.decision_id
    WHERE s.ts <= $as_of AND d.ts <= $as_of{after}
),
c AS (
    SELECT s.decision_id,
        {", ".join(aggregates)},
        count(*) FILTER (WHERE s.in_window) AS n_signals,
        count(*) FILTER (WHERE NOT s.in_window) AS late_signals
    FROM s GROUP BY s.decision_id
){known},
r AS (
    SELECT CAST(d.id AS VARCHAR) AS decision_id, d.ts, d.unit, d.policy, d.playbook, d.propensity,
        {feature_cols}, {signal_cols},
        coalesce(c.n_signals, 0) AS n_signals, coalesce(c.late_signals, 0) AS late_signals,
        CAST(({formula}) AS DOUBLE) AS {_OBSERVED},
        d.ts + {window} > $as_of AS {_OPEN}
    FROM decisions d LEFT JOIN c ON c.decision_id = d.id
    WHERE d.ts <= $as_of{after}{_LATE if late else ""}
)
SELECT decision_id, ts, unit, policy, playbook, propensity, {columns}, n_signals, late_signals,
    CASE WHEN {_OBSERVED} IS NOT NULL THEN {_OBSERVED} WHEN {_OPEN} THEN NULL ELSE {missing}
        END AS reward,
    CASE WHEN {_OBSERVED} IS NOT NULL THEN 'complete' WHEN {_OPEN} THEN 'pending'
        ELSE 'expired' END AS status
FROM r
"""


_LATE = " AND (d.ts > $since OR NOT EXISTS (SELECT 1 FROM p WHERE p.decision_id = d.id))"
"""Leaves out a decision made before ``$since`` whose reward was known then (``p``): of
those, only the ones a signal since (or their window's end) may have completed are read
(``l``), so the cost grows with the signals since, not with the window."""


def _then(signal: str) -> str:
    """The column of a signal as it stood at ``$since``."""
    return quote_name(own_column("then_" + signal))


def summary_sql(spec: Spec) -> str:
    """Counts over the aligned rows, plus the signals, orphans and edits tables."""
    return f"""
WITH a AS ({aligned_rows_sql(spec)})
SELECT
    (SELECT count(*) FROM a) AS decisions,
    (SELECT count(*) FROM a WHERE status = 'complete') AS complete,
    (SELECT count(*) FROM a WHERE status = 'pending') AS pending,
    (SELECT count(*) FROM a WHERE status = 'expired') AS expired,
    (SELECT coalesce(sum(late_signals), 0) FROM a) AS late_signals,
    (SELECT count(*) FROM signals WHERE ts <= $as_of) AS signals,
    (SELECT count(*) FROM orphans WHERE ts <= $as_of) AS orphans,
    (SELECT count(*) FROM edits WHERE ts <= $as_of) AS edits
"""
