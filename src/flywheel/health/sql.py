"""The statements behind ``health()``: each decision's stages, measured in one pass.

:func:`stages_cte` follows every decision of the window through its stages: decided, first
signal, complete (the moment its reward became known), learned (the cut of the first
published version fitted on it) and served (the first decision served by a version that
learned from it). :func:`health_sql` aggregates it three ways in one statement (the totals
with the transitions' quantiles, the results per serving version and context segment, and
the weekly indicators), so the signals are read once. :func:`sample_sql` returns the complete
rows of a sample of units, for the held-out-units test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlglot import exp

from flywheel.align.sql import COMBINE
from flywheel.rules import own_column, parse, quote_literal, quote_name
from flywheel.spec import BUILTIN_SIGNALS, Spec

CASE_CUTS = 64  # up to this many learned moments, a row's is found by a CASE (else a join)
KINDS = {"explicit": 1, "implicit": 2, "edits": 4, "outcomes": 8, "accepted": 16, "requeried": 32}
"""The bits of a decision's kinds of signal (accepted and requeried: implicit events)."""
COLD_START = -1  # the ``served_by`` of cold-start decisions (uniform or the default)
EARLY_ONLINE = 0  # ... of online updates made before the first version
WEEK = 7 * 86400.0

EXPLICIT = ("rating", "thumbs", "comment")
IMPLICIT = ("accepted", "rejected", "requeried", "abandoned", "dwell_ms")
EDITS = ("edit_distance",)
NOT_FEEDBACK = ("input", "output")
"""Signals that are the product's own (what it was asked, what it answered), not feedback:
they start no stage."""
LEARNED_POLICIES = ("thompson", "greedy", "online")
COLD_POLICIES = ("uniform", "default")


def outcome_signals(spec: Spec) -> tuple[str, ...]:
    """The spec's own numeric signals: the product's outcomes (conversions, completions, …)."""
    return tuple(
        name
        for name, sig in spec.signals.items()
        if name not in BUILTIN_SIGNALS and sig.kind == "number"
    )


def _q(name: str) -> str:
    return quote_name(own_column(name))


def _list(names: Sequence[str]) -> str:
    return ", ".join(map(quote_literal, names)) or "''"


def _completed_at(spec: Spec) -> str:
    """When the reward became known: the first arrival of a formula signal after which the
    formula is not null, each signal counted from its first arrival inside the window (the
    combined values stand in for the ones at that moment: only whether the formula is null
    matters, which for the usual formulas depends on which signals are there)."""
    formula = parse(spec.reward.formula)
    signals = [s for s in spec.reward.signals if s in spec.signals]
    candidates = []
    for j in signals:

        def present(node: exp.Expression, j: str = j) -> exp.Expression:
            if isinstance(node, exp.Column) and node.name in signals:
                at, col = _q(f"at:{node.name}"), quote_name(node.name)
                return exp.maybe_parse(
                    f"CASE WHEN c.{at} <= c.{_q(f'at:{j}')} THEN c.{col} END", dialect="duckdb"
                )
            return node

        then = formula.copy().transform(present).sql(dialect="duckdb", identify=True)
        candidates.append(f"CASE WHEN ({then}) IS NOT NULL THEN c.{_q(f'at:{j}')} END")
    if not candidates:
        return "NULL"
    return candidates[0] if len(candidates) == 1 else f"least({', '.join(candidates)})"


def _at(moment: datetime | None) -> str:
    value = "NULL" if moment is None else f"'{moment.isoformat()}'"
    return f"CAST({value} AS TIMESTAMPTZ)"


@dataclass(frozen=True)
class Cut:
    """A learned moment: complete rows in ``(after, at]`` were first learned at ``at`` and
    first served at ``served`` (``None``: not yet)."""

    after: datetime
    at: datetime
    served: datetime | None


def stages_cte(
    spec: Spec,
    segment: Sequence[str],
    cuts: Sequence[Cut] = (),
    where: str = "",
    detail: bool = False,
) -> str:
    """The CTEs ``st`` (one row per decision of ``($start, $as_of]``) and ``sv`` (the same,
    materialised, with its learned and served moments). ``segment``: the context features a
    row's segment is made of; ``where``: more conditions on the decisions (``d``);
    ``detail``: ``st`` also has the unit, the propensity and the knobs."""
    window = f"INTERVAL '{round(spec.reward.window_seconds * 1e6)} microseconds'"
    wanted = dict.fromkeys([*spec.reward.signals, *outcome_signals(spec)])
    aggregates = []
    for name in wanted:
        sig = spec.signals.get(name)
        if sig is None:
            continue
        col = "s.text" if sig.kind == "text" else "s.value"
        quoted = quote_literal(name)
        aggregates.append(
            COMBINE[sig.combine].format(col=col)
            + f" FILTER (WHERE s.name = {quoted} AND s.in_window) AS {quote_name(name)}"
        )
        if name in spec.reward.signals:
            aggregates.append(
                f"min(s.ts) FILTER (WHERE s.name = {quoted} AND s.in_window) AS {_q(f'at:{name}')}"
            )
    # which kinds of signal a decision has, as the bits of one aggregate (cheaper than one each)
    bits = " ".join(
        f"WHEN s.name IN ({_list(names)}) THEN {bit}"
        for names, bit in (
            (("accepted",), KINDS["implicit"] | KINDS["accepted"]),
            (("requeried",), KINDS["implicit"] | KINDS["requeried"]),
            (EXPLICIT, KINDS["explicit"]),
            (IMPLICIT, KINDS["implicit"]),
            (EDITS, KINDS["edits"]),
            (outcome_signals(spec), KINDS["outcomes"]),
        )
    )
    aggregates.append(f"bit_or(CASE {bits} ELSE 0 END) AS {_q('kinds')}")
    aggregates.append(
        f"avg(s.value) FILTER (WHERE s.name = 'edit_distance') AS {_q('edit_distance')}"
    )
    formula = parse(spec.reward.formula).sql(dialect="duckdb", identify=True)
    missing = "NULL" if spec.reward.missing is None else repr(float(spec.reward.missing))
    columns = [f"c.{quote_name(n)}" for n in wanted if n in spec.signals]
    features = "".join(f"d.{quote_name(f)} AS {_q(f'seg:{f}')}, " for f in segment)
    kinds = ", ".join(
        f"(coalesce(c.{_q('kinds')}, 0) & {bit}) > 0 AS {_q(kind)}" for kind, bit in KINDS.items()
    )
    learned_in = _list(LEARNED_POLICIES)
    cold_in = _list(COLD_POLICIES)
    served_by = (
        f"CASE WHEN d.playbook IS NOT NULL THEN d.playbook"
        f" WHEN d.policy IN ({cold_in}) THEN {COLD_START}"
        f" WHEN d.policy = 'online' THEN {EARLY_ONLINE} END"
    )
    complete, quarantined = f"st.{_q('complete')}", f"st.{_q('quarantined')}"
    if not cuts:
        versions = ""
        learned = f"""sv AS MATERIALIZED (
    SELECT st.*, CAST(NULL AS TIMESTAMPTZ) AS {_q("learned")},
        CAST(NULL AS TIMESTAMPTZ) AS {_q("served")}
    FROM st
)"""
    elif len(cuts) <= CASE_CUTS:  # a few cuts: a CASE beats sorting every row against them
        versions = ""
        first = f"{complete} IS NULL OR {quarantined} OR {complete} <= {_at(cuts[0].after)}"

        def pick(value: Callable[[Cut], datetime | None]) -> str:
            steps = " ".join(f"WHEN {complete} <= {_at(c.at)} THEN {_at(value(c))}" for c in cuts)
            return f"CASE WHEN {first} THEN NULL {steps} END"

        learned = f"""sv AS MATERIALIZED (
    SELECT st.*, {pick(lambda c: c.at)} AS {_q("learned")},
        {pick(lambda c: c.served)} AS {_q("served")}
    FROM st
)"""
    else:
        rows = ", ".join(f"({_at(c.after)}, {_at(c.at)}, {_at(c.served)})" for c in cuts)
        versions = f"v AS (SELECT * FROM (VALUES {rows}) AS t(lo, hi, served_at)),"
        learned = f"""sv AS MATERIALIZED (
    SELECT st.*, v.hi AS {_q("learned")}, v.served_at AS {_q("served")}
    FROM st LEFT JOIN v ON {complete} > v.lo AND {complete} <= v.hi AND NOT {quarantined}
)"""
    extra = f" AND {where}" if where else ""
    knobs = [f"d.{quote_name(k.name)}" for k in spec.knobs]
    own = ["CAST(d.id AS VARCHAR) AS id", "d.unit", "d.propensity"]
    more = ", ".join([*own, *knobs]) + "," if detail else ""
    return f"""
s AS (
    SELECT s.decision_id, s.name, s.value, s.text, s.ts, s.ts <= d.ts + {window} AS in_window
    FROM signals s JOIN decisions d ON d.id = s.decision_id
    WHERE s.ts <= $as_of AND d.ts > $start AND d.ts <= $as_of{extra}
),
c AS (
    SELECT s.decision_id,
        min(s.ts) FILTER (WHERE s.name NOT IN ({_list(NOT_FEEDBACK)})) AS {_q("first")},
        {", ".join(aggregates)}
    FROM s GROUP BY s.decision_id
),
st AS (
    SELECT d.ts, {more} {served_by} AS {_q("served_by")},
        {features}
        {", ".join([*columns, f"c.{_q('first')}"])},
        {kinds},
        c.{_q("edit_distance")} AS {_q("edit_distance")},
        CAST(({formula}) AS DOUBLE) AS {_q("observed")},
        CASE WHEN ({formula}) IS NOT NULL THEN CAST(({formula}) AS DOUBLE)
            WHEN d.ts + {window} <= $as_of THEN {missing} END AS {_q("reward")},
        CASE WHEN ({formula}) IS NOT NULL THEN coalesce({_completed_at(spec)}, d.ts)
            WHEN d.ts + {window} <= $as_of AND {missing} IS NOT NULL THEN d.ts + {window}
            END AS {_q("complete")},
        q.decision_id IS NOT NULL AS {_q("quarantined")},
        d.ts + {window} <= $as_of AS {_q("settled")},
        d.policy IN ({learned_in}) AS {_q("closed")}
    FROM decisions d LEFT JOIN c ON c.decision_id = d.id
    LEFT JOIN (SELECT decision_id FROM quarantine_state WHERE action = 'quarantined') q
        ON q.decision_id = d.id
    WHERE d.ts > $start AND d.ts <= $as_of{extra}
),
{versions}
{learned}"""


TRANSITIONS = {
    # name: (from, to, the rows it is measured on)
    "signal": ("ts", "first", ""),
    "complete": ("first", "complete", "complete >= first"),
    "learned": ("complete", "learned", ""),
    "served": ("learned", "served", ""),
    "cycle": ("ts", "served", ""),
    "result": ("ts", "complete", ""),
}


def _seconds(later: str, earlier: str) -> str:
    def col(name: str) -> str:
        return "ts" if name == "ts" else _q(name)

    return f"(epoch({col(later)}) - epoch({col(earlier)}))"


def _totals() -> dict[str, str]:
    f = {
        "settled": _q("settled"),
        "first": f"({_q('first')} IS NOT NULL)",
        "complete": f"({_q('complete')} IS NOT NULL)",
        "observed": f"({_q('observed')} IS NOT NULL)",
        "quarantined": _q("quarantined"),
    }
    out = {
        "decisions": "count(*)",
        "settled": f"count(*) FILTER (WHERE {f['settled']})",
        "signalled": f"count(*) FILTER (WHERE {f['first']})",
        "complete": f"count(*) FILTER (WHERE {f['complete']})",
        "observed": f"count(*) FILTER (WHERE {f['observed']})",
        "learned": f"count({_q('learned')})",
        "served": f"count({_q('served')})",
        "closed": f"count(*) FILTER (WHERE {_q('closed')})",
        "quarantined": f"count(*) FILTER (WHERE {f['complete']} AND {f['quarantined']})",
        "signal_stopped": f"count(*) FILTER (WHERE NOT {f['first']} AND {f['settled']})",
        "signal_complete": f"count(*) FILTER (WHERE {f['first']} AND {f['complete']})",
        "complete_stopped": (
            f"count(*) FILTER (WHERE {f['first']} AND NOT {f['complete']} AND {f['settled']})"
        ),
        "settled_signalled": f"count(*) FILTER (WHERE {f['first']} AND {f['settled']})",
        "settled_observed": f"count(*) FILTER (WHERE {f['observed']} AND {f['settled']})",
        "usage_before": "count(*) FILTER (WHERE ts >= $pub - $span AND ts < $pub)",
        "usage_after": "count(*) FILTER (WHERE ts >= $pub AND ts < $pub + $span)",
    }
    for kind in ("explicit", "implicit", "edits", "outcomes"):
        out[f"settled_{kind}"] = f"count(*) FILTER (WHERE {_q(kind)} AND {f['settled']})"
        out[f"all_{kind}"] = f"count(*) FILTER (WHERE {_q(kind)})"
    for name, (a, b, only) in TRANSITIONS.items():
        seconds = _seconds(b, a)
        cond = f" FILTER (WHERE {_seconds(b, a)} >= 0)" if only else ""
        out[f"n_{name}"] = f"count({seconds}){cond}"
        both = f"(quantile_cont({seconds}, [0.5, 0.9]){cond})"  # one aggregate, both read
        out[f"p50_{name}"], out[f"p90_{name}"] = f"{both}[1]", f"{both}[2]"
    return out


def _segment(features: Sequence[str]) -> str:
    """A row's segment as one string, from the features ``st`` carries (grouped by them
    first, it is built once per group)."""
    parts = [f"coalesce(CAST({_q(f'seg:{f}')} AS VARCHAR), '')" for f in features]
    return f"concat_ws('|', {', '.join(parts)})" if parts else "''"


def _versions(segment: Sequence[str]) -> dict[str, str]:
    learnable = f"{_q('reward')} IS NOT NULL AND NOT {_q('quarantined')}"
    reward = _q("reward")
    return {
        "k": _q("served_by"),
        "segment": _segment(segment),
        "decisions": "count(*)",
        "n": f"count(*) FILTER (WHERE {learnable})",
        "sum": f"sum({reward}) FILTER (WHERE {learnable})",
        "sum2": f"sum({reward} * {reward}) FILTER (WHERE {learnable})",
    }


def _weeks(spec: Spec) -> dict[str, str]:
    week = f"floor((epoch($as_of) - epoch(ts)) / {WEEK!r})"
    implicit = _q("implicit")
    learnable = f"NOT {_q('quarantined')}"
    out = {
        "k": week,
        "decisions": "count(*)",
        "n": f"count({_q('reward')}) FILTER (WHERE {learnable})",
        "sum": f"sum({_q('reward')}) FILTER (WHERE {learnable})",
        "sum2": f"sum({_q('reward')} * {_q('reward')}) FILTER (WHERE {learnable})",
        "observed": f"count({_q('observed')})",
        "implicit": f"count(*) FILTER (WHERE {implicit})",
        "edits": f"count({_q('edit_distance')})",
        "edit_distance": f"avg({_q('edit_distance')})",
    }
    for name in ("accepted", "requeried"):
        out[name] = f"count(*) FILTER (WHERE {_q(name)})"
    for name in outcome_signals(spec):
        out[f"o:{name}"] = f"avg({quote_name(name)})"
    return out


def health_sql(spec: Spec, segment: Sequence[str], cuts: Sequence[Cut]) -> str:
    """One statement, three parts told apart by the column ``part``: ``totals`` (one row: the
    stages' counts and the transitions' p50/p90 in seconds), ``versions`` (per serving
    version ``k`` and segment: complete rows, their rewards' sum and sum of squares) and
    ``weeks`` (per week ``k`` back from ``$as_of``: the indicators). Parameters: ``$start``,
    ``$as_of``, ``$pub`` and ``$span`` (usage is counted in the ``$span`` before and after
    ``$pub``)."""
    parts = {"totals": _totals(), "versions": _versions(segment), "weeks": _weeks(spec)}
    names = list(dict.fromkeys(n for part in parts.values() for n in part))
    types = {n: "VARCHAR" if n == "segment" else "DOUBLE" for n in names}
    selects = []
    for part, exprs in parts.items():
        cols = [f"'{part}' AS part"]
        for n in names:
            value = f"CAST({exprs[n]} AS {types[n]})" if n in exprs else f"CAST(NULL AS {types[n]})"
            cols.append(f"{value} AS {quote_name(n)}")
        keys = [str(names.index("k") + 2)] if "k" in exprs else []
        if "segment" in exprs:
            keys += [_q(f"seg:{f}") for f in segment]
        group = f" GROUP BY {', '.join(keys)}" if keys else ""
        selects.append(f"SELECT {', '.join(cols)} FROM sv{group}")
    cte = stages_cte(spec, segment, cuts)
    return f"WITH {cte}\n" + "\nUNION ALL\n".join(selects)


def sample_sql(spec: Spec, segment: Sequence[str]) -> str:
    """The complete rows (not quarantined) of the units whose pseudonym sorts before
    ``$below``: unit, decision time, segment, knobs, reward and propensity."""
    knobs = ", ".join(quote_name(k.name) for k in spec.knobs)
    cte = stages_cte(spec, segment, (), where="d.unit < $below", detail=True)
    return f"""WITH {cte}
SELECT unit, ts, {_segment(segment)} AS segment, {knobs}, {_q("reward")} AS reward, propensity
FROM st WHERE {_q("reward")} IS NOT NULL AND NOT {_q("quarantined")} AND unit IS NOT NULL
ORDER BY ts, unit, id"""


RETENTION_SQL = f"""
WITH uw AS (
    SELECT DISTINCT unit, floor((epoch($as_of) - epoch(ts)) / {WEEK!r}) AS k FROM decisions
    WHERE ts > $start AND ts <= $as_of AND unit IS NOT NULL
)
SELECT a.k, count(*) AS units, count(b.unit) AS returned
FROM uw a LEFT JOIN uw b ON b.unit = a.unit AND b.k = a.k - 1 GROUP BY a.k
"""
"""Per week ``k`` back from ``$as_of``: its units, and how many of them came back the week
after."""

FIRST_SERVED_SQL = """SELECT playbook, min(ts) AS first FROM decisions
WHERE ts <= $as_of AND playbook IS NOT NULL GROUP BY playbook"""
"""When each version served its first decision."""
