"""The learner's one aggregation: aligned rows with a reward, summed per cell."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql, quote
from flywheel.spec import Spec


def cells_sql(spec: Spec, edges: Mapping[str, Sequence[float]]) -> str:
    """Weighted count, sum and sum of squares of the reward per context (numeric features in
    their bins) × knob combination, plus the data's signature (rows, sum, newest decision).
    Quarantined rows are left out.

    With ``learn.half_life`` each row weighs 2^(-age / half_life), age counted to ``$as_of``.
    """
    features = []
    for f in spec.context:
        if f.name in edges:
            bounds = edges[f.name]
            cases = " ".join(f"WHEN {quote(f.name)} < {b!r} THEN {i}" for i, b in enumerate(bounds))
            binned = f"CASE {cases} ELSE {len(bounds)} END" if bounds else "0"
            features.append(f"{binned} AS {quote(f.name)}")
        else:
            features.append(quote(f.name))
    knobs = [quote(k.name) for k in spec.knobs]
    half_life = spec.learn.half_life_seconds
    weight = (
        f"exp({-math.log(2) / half_life!r} * (epoch($as_of) - epoch(ts)))"
        if half_life
        else "CAST(1 AS DOUBLE)"
    )
    complete = " AND ".join([f"{k} IS NOT NULL" for k in knobs] + ["reward IS NOT NULL"])
    return f"""
WITH a AS ({aligned_rows_sql(spec)}),
w AS (SELECT *, {weight} AS _w FROM a WHERE {complete} AND {NOT_QUARANTINED})
SELECT {", ".join([*features, *knobs])},
    CAST(sum(_w) AS DOUBLE) AS n, CAST(sum(_w * reward) AS DOUBLE) AS s,
    CAST(sum(_w * reward * reward) AS DOUBLE) AS ss, count(*) AS rows,
    CAST(sum(reward) AS DOUBLE) AS reward_sum, min(ts) AS first_ts, max(ts) AS last_ts
FROM w GROUP BY {", ".join(str(i + 1) for i in range(len(features) + len(knobs)))}
"""


def quantiles_sql(spec: Spec, name: str, bins: int) -> str:
    """Inner quantile boundaries of a numeric context feature over decisions up to ``$as_of``."""
    points = ", ".join(repr(i / bins) for i in range(1, bins))
    return f"SELECT quantile_cont({quote(name)}, [{points}]) AS q FROM decisions WHERE ts <= $as_of"
