"""The learner's one aggregation: aligned rows with a reward, summed per cell."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.learn.design import Encoding
from flywheel.rules import SQL_TYPE, own_column, quote_literal, quote_name
from flywheel.skeleton import Value
from flywheel.spec import Spec

N, S, SS, ROWS, REWARD_SUM, FIRST_TS, LAST_TS = (
    own_column(c) for c in ("n", "s", "ss", "rows", "reward_sum", "first_ts", "last_ts")
)
"""The statistics columns of :func:`cells_sql`, beside the factors' columns."""
_WEIGHT = quote_name(own_column("w"))


def cells_sql(
    spec: Spec, encoding: Encoding, *, since: bool = False, late: bool = False, forget: int = 0
) -> str:
    """Weighted count, sum and sum of squares of the reward per context (numeric features in
    their bins) × knob combination, plus the data's signature (rows, sum, newest decision), in
    the columns named by :data:`N`, :data:`S`, :data:`SS`, :data:`ROWS`, :data:`REWARD_SUM`,
    :data:`FIRST_TS` and :data:`LAST_TS`. Quarantined rows are left out.

    Features are grouped as :func:`context_columns` says (numbers by ``encoding``'s bins,
    open categories by its learned levels).

    With ``learn.half_life`` each row weighs 2^(-age / half_life), age counted to ``$as_of``.
    With ``forget`` steps (the changes of the world the learner forgot, oldest first: the
    parameters :func:`forget_params` gives), rows decided up to ``$forget_at_<i>`` and after
    the step before weigh ``$forget_weight_<i>`` times as much. With ``since``, only
    decisions after ``$since`` are read; with ``late`` as well, also the decisions before it
    whose reward was not known then (:func:`flywheel.align.sql.aligned_rows_sql`).
    """
    features = context_columns(spec, encoding)
    knobs = [quote_name(k.name) for k in spec.knobs]
    weight = row_weight(spec, forget=forget)
    return f"""
WITH a AS ({aligned_rows_sql(spec, since=since, late=late)}),
w AS (SELECT *, {weight} AS {_WEIGHT} FROM a WHERE {trains(spec)} AND {NOT_QUARANTINED})
SELECT {", ".join([*features, *knobs])},
    CAST(sum({_WEIGHT}) AS DOUBLE) AS {quote_name(N)},
    CAST(sum({_WEIGHT} * reward) AS DOUBLE) AS {quote_name(S)},
    CAST(sum({_WEIGHT} * reward * reward) AS DOUBLE) AS {quote_name(SS)},
    count(*) AS {quote_name(ROWS)}, CAST(sum(reward) AS DOUBLE) AS {quote_name(REWARD_SUM)},
    min(ts) AS {quote_name(FIRST_TS)}, max(ts) AS {quote_name(LAST_TS)}
FROM w GROUP BY {", ".join(str(i + 1) for i in range(len(features) + len(knobs)))}
"""


def quantiles_sql(spec: Spec, name: str, bins: int) -> str:
    """Inner quantile boundaries of a numeric context feature over decisions up to ``$as_of``."""
    points = ", ".join(repr(i / bins) for i in range(1, bins))
    column = quote_name(name)
    return f"SELECT quantile_cont({column}, [{points}]) AS q FROM decisions WHERE ts <= $as_of"


def complete_since_sql(spec: Spec) -> str:
    """How many rows decided after ``$since`` have their reward as of ``$as_of`` (the count a
    cycle scheduled ``after`` new rows waits for)."""
    return f"""SELECT count(*) AS n FROM ({aligned_rows_sql(spec, since=True)}) a
WHERE reward IS NOT NULL AND {NOT_QUARANTINED}"""


def trains(spec: Spec) -> str:
    """The condition of an aligned row (``a``) that trains: its knob values and reward known."""
    knobs = [quote_name(k.name) for k in spec.knobs]
    return " AND ".join([f"{k} IS NOT NULL" for k in knobs] + ["reward IS NOT NULL"])


def context_columns(spec: Spec, encoding: Encoding) -> list[str]:
    """The context features as the learner groups them: numbers by their bin, an open
    category by its learned levels (every other value as NULL: its level ``other``, so rare
    values make few cells), the rest by value."""
    features = []
    for f in spec.context:
        name = quote_name(f.name)
        if f.name in encoding.edges:
            bounds = encoding.edges[f.name]
            cases = " ".join(f"WHEN {name} < {b!r} THEN {i}" for i, b in enumerate(bounds))
            binned = f"CASE {cases} ELSE {len(bounds)} END" if bounds else "0"
            features.append(f"{binned} AS {name}")
        elif f.name in encoding.open:
            levels = list(encoding.categorical[f.name])
            features.append(f"{_grouped(f.name, f.dtype, levels)} AS {name}")
        else:
            features.append(name)
    return features


def row_weight(spec: Spec, *, forget: int = 0) -> str:
    """A row's weight: 2^(-age / half_life) with ``learn.half_life`` (age counted to
    ``$as_of``), times the weight of the first of ``forget`` steps that covers it
    (``$forget_weight_<i>`` up to ``$forget_at_<i>``; 1 after the last)."""
    half_life = spec.learn.half_life_seconds
    weight = (
        f"exp({-math.log(2) / half_life!r} * (epoch($as_of) - epoch(ts)))"
        if half_life
        else "CAST(1 AS DOUBLE)"
    )
    if forget:
        steps = " ".join(
            f"WHEN ts <= $forget_at_{i} THEN CAST($forget_weight_{i} AS DOUBLE)"
            for i in range(forget)
        )
        weight = f"{weight} * CASE {steps} ELSE 1 END"
    return weight


def forget_params(steps: Sequence[tuple[datetime, float]]) -> dict[str, Any]:
    """The parameters of :func:`row_weight`'s ``forget`` steps (oldest first)."""
    params: dict[str, Any] = {}
    for i, (at, weight) in enumerate(steps):
        params[f"forget_at_{i}"] = at
        params[f"forget_weight_{i}"] = float(weight)
    return params


def _literal(value: Value) -> str:
    return quote_literal(value) if isinstance(value, str) else str(int(value))


def _grouped(name: str, dtype: str, values: Sequence[Value]) -> str:
    """An open feature's column with every value outside ``values`` as NULL."""
    column = quote_name(name)
    if not values:
        return f"CAST(NULL AS {SQL_TYPE[dtype]})"
    listed = ", ".join(_literal(v) for v in values)
    return f"CASE WHEN {column} IN ({listed}) THEN {column} END"


def levels_sql(spec: Spec, limits: Mapping[str, int]) -> str:
    """The most frequent values of open categorical features among the training rows up to
    ``$as_of`` (complete, not quarantined): per feature in ``limits`` (name -> how many),
    columns ``feature``, ``value`` (as text) and ``n``, the values tied with the last one
    included, so the caller breaks ties the same way on every store."""
    parts = []
    for name, limit in limits.items():
        column = quote_name(name)
        parts.append(
            f"""SELECT feature, value, n FROM (
    SELECT {quote_literal(name)} AS feature, CAST({column} AS VARCHAR) AS value,
        count(*) AS n, rank() OVER (ORDER BY count(*) DESC) AS r
    FROM t WHERE {column} IS NOT NULL GROUP BY {column}
) {quote_name(own_column("x_" + name))} WHERE r <= {int(limit)}"""
        )
    return f"""
WITH a AS ({aligned_rows_sql(spec)}),
t AS (SELECT * FROM a WHERE {trains(spec)} AND {NOT_QUARANTINED})
{" UNION ALL ".join(parts)}
"""
