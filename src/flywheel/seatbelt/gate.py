"""The gate a learn cycle passes before it publishes.

The cycle's *recent window* holds the rows decided since the incumbent playbook's training
cut-off (or since the last resume, if later) up to the cycle's moment (its ``as_of``: history
is judged on its own clock); the *reference window* the rows before it. ``windows`` (never
fails) counts both; the data checks compare them (each needs ``seatbelt.min_rows`` rows on
both sides):

- ``quality``: the share of the recent window's rows quarantined is over
  ``seatbelt.max_quarantined``;
- ``drift``: a context feature's distribution moved (chi-square / Kolmogorov–Smirnov on small
  samples, Jensen–Shannon / Wasserstein on large: see :mod:`~flywheel.seatbelt.monitors`);
- ``srm``: the knob values logged by a playbook's decisions do not match what its policy
  serves (chi-square per knob, p < 0.0001: every cycle tests again);
- ``reward_shift``: toxic results: one knob level's result moved against the incumbent
  model's prediction while the other levels' did not (a difference of mean residuals between
  the windows, both significant and at least ``seatbelt.min_shift`` standard deviations of
  the reward), or a level's results are all the same for longer than the reference makes
  probable (a forced success or failure);
- ``change`` (never halts): the results moved across the combinations served — after the
  strongest level's cells are set aside, other levels still moved — with plausible results:
  the world changed. The cycle adapts (its change point is found, and the rows before it
  weigh little from then on) instead of halting;
- ``reward_drift`` (never halts: a policy that learns *should* move the reward).

Statistical checks share the false-alarm budget ``seatbelt.alpha`` per cycle (Bonferroni).
After the fit, ``ope`` compares the candidate with the incumbent on the recent decisions the
incumbent served, by a doubly robust estimate of the difference of their values; a candidate
confidently worse by more than ``seatbelt.ope_tolerance`` is not published.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import betaln

from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.learn.forget import Steps, weighed
from flywheel.learn.policy import SegmentPolicy
from flywheel.playbook.book import Playbook
from flywheel.rules import own_column, quote_name
from flywheel.seatbelt.monitors import Check, categorical_drift, numeric_drift
from flywheel.seatbelt.quality import QualityReport
from flywheel.spec import Spec
from flywheel.store import Store

SHIFT_CYCLES = 3  # the reward-shift check's recent side spans this many publishes
WINDOW_ROWS = 100_000  # newest rows read per window: plenty of power, bounded cost
MIN_EXPECTED = 5.0  # chi-square cells expecting fewer are pooled
SRM_LEVEL = 1e-4
"""The sample-ratio test's level per cycle, across the knobs: a tenth of the usual 0.001 of
one experiment's analysis, because a wheel that turns by itself tests again every cycle (at
0.001 a cycle every 15 minutes, a mismatch by chance about every ten days, and a person to
lift each). Real mismatches grow with every row (swapped tags show row by row at once)."""
SPREAD_PRIOR = 5.0  # rows' worth of the overall within-cell variance in each cell's own
MISLOGGED_MIN, MISLOGGED_SHARE = 3, 0.01  # rows whose logged propensity contradicts the tags
_RECENT, _LONG_RECENT, _NEWEST = (own_column(c) for c in ("recent", "long_recent", "newest"))
# (no QUALIFY: sqlglot writes it for PostgreSQL with aliases of its own, _w and _t)


@dataclass(frozen=True)
class Windows:
    """Rows with a result (quarantined ones left out) as of ``as_of`` (the cycle's moment:
    the data's own clock when it learns history), split at ``cut`` (the incumbent's training
    cut-off) and at ``long_cut`` (that of the version SHIFT_CYCLES publishes back)."""

    recent: pa.Table
    reference: pa.Table
    cut: datetime
    long_recent: pa.Table
    long_reference: pa.Table
    as_of: datetime | None = None
    moving: frozenset[str] = frozenset()  # knobs the world was lately found changing on
    forgotten: Steps = ()
    """How the learner weighs the rows before the changes of the world it forgot
    (``half_life = "auto"``; none: every row weighs 1)."""


def windows(
    store: Store,
    spec: Spec,
    as_of: datetime,
    cut: datetime,
    floor: datetime | None = None,
    long_cut: datetime | None = None,
    moving: frozenset[str] = frozenset(),
    forgotten: Steps = (),
) -> Windows:
    """The newest WINDOW_ROWS rows on each side of ``long_cut`` (default ``cut``; only those
    decisions are aligned), none decided before ``floor`` (the last resume: what a person
    accepted is the new normal, so it is not the reference a later window is judged against
    either)."""
    long_cut = min(long_cut or cut, cut)
    columns = ", ".join(
        quote_name(n) for n in (*(f.name for f in spec.context), *(k.name for k in spec.knobs))
    )
    bound = store.query(
        f"SELECT ts FROM decisions WHERE ts <= $cut ORDER BY ts DESC LIMIT 1 OFFSET {WINDOW_ROWS}",
        {"cut": long_cut},
    ).to_pylist()
    since = bound[0]["ts"] if bound else datetime.fromtimestamp(0, tz=UTC)
    if floor is not None and floor > since:
        since = floor
    table = store.query(
        f"""WITH a AS ({aligned_rows_sql(spec, since=True)}),
        r AS (
            SELECT decision_id, ts, playbook, policy, propensity, {columns}, reward,
                ts > $cut AS {quote_name(_RECENT)}, ts > $long_cut AS {quote_name(_LONG_RECENT)}
            FROM a WHERE reward IS NOT NULL AND {NOT_QUARANTINED}
        ),
        n AS (
            SELECT *, row_number() OVER (
                PARTITION BY {quote_name(_LONG_RECENT)} ORDER BY ts DESC, decision_id DESC
            ) AS {quote_name(_NEWEST)}
            FROM r
        )
        SELECT * FROM n WHERE {quote_name(_NEWEST)} <= {WINDOW_ROWS}
        ORDER BY ts, decision_id""",
        {"as_of": as_of, "cut": cut, "since": since, "long_cut": long_cut},
    )
    recent = np.asarray(table.column(_RECENT).to_numpy(zero_copy_only=False), dtype=bool)
    longer = np.asarray(table.column(_LONG_RECENT).to_numpy(zero_copy_only=False), dtype=bool)
    # rows in decision order, ties by id: the same store gives the same windows every time
    table = table.drop_columns(["decision_id", _RECENT, _LONG_RECENT, _NEWEST])
    return Windows(
        table.filter(pa.array(recent)),
        table.filter(pa.array(~recent)),
        cut,
        table.filter(pa.array(longer)),
        table.filter(pa.array(~longer)),
        as_of,
        moving,
        forgotten,
    )


# --- data checks ---------------------------------------------------------------------------------


class Alarm(NamedTuple):
    """One piece of evidence, with its ``strength`` (as a two-sided z: how far past chance),
    the knob level it is about (if any: ``level`` -1 otherwise), whether that level's
    results ``rose`` (its own, significantly; or all successes) and whether they are
    ``stuck`` (all the same for longer than the reference makes probable)."""

    strength: float
    text: str
    knob: str = ""
    level: int = -1
    rose: bool = False
    stuck: bool = False


def z_of(p_value: float) -> float:
    """A p-value as the two-sided z it corresponds to (a common scale for strengths)."""
    return -NormalDist().inv_cdf(max(p_value, 1e-300) / 2)


LEAD = 3  # a reason lists its strongest alarms first, this many, then how many more


def lead(alarms: list[Alarm]) -> str:
    """The alarms, strongest first: the first LEAD of them, then "and N more"."""
    ordered = sorted(alarms, key=lambda a: -a.strength)
    text = "; ".join(a.text for a in ordered[:LEAD])
    return f"{text}; and {len(ordered) - LEAD} more" if len(ordered) > LEAD else text


def data_checks(
    spec: Spec,
    quality: QualityReport,
    data: Windows,
    incumbent: Playbook,
    load: Callable[[int], Playbook | None],
) -> list[Check]:
    """Every data check of the recent window (the incumbent's model predicts the rewards)."""
    belt = spec.seatbelt
    checks = [_quality(spec, quality), _windows(data)]
    n_new, n_old = data.recent.num_rows, data.reference.num_rows
    if min(n_new, n_old) < belt.min_rows:
        note = f"{n_new} recent and {n_old} reference rows; checks need {belt.min_rows} each"
        return [*checks, Check("drift", True, False, f"not judged: {note}")]
    tests = len(spec.context) + len(spec.knobs) + sum(len(k.values) for k in spec.knobs)
    alpha = belt.alpha / max(tests, 1)
    checks.append(_drift(spec, data, alpha))
    checks.append(_srm(spec, data, load, alpha))
    checks += _reward_shift(spec, data, incumbent, alpha)
    checks.append(_reward_drift(spec, data, alpha))
    return checks


def _windows(data: Windows) -> Check:
    """What the checks judge (never fails): the recent window's rows, decided after the cut
    and up to the cycle's moment, against the reference's, both counted (with a result, not
    quarantined, at most WINDOW_ROWS each)."""
    n_new, n_old = data.recent.num_rows, data.reference.num_rows
    span = f"after {_when(data.cut)}" + ("" if data.as_of is None else f", by {_when(data.as_of)}")
    summary = f"{n_new:,} recent rows (decided {span}) against {n_old:,} reference rows"
    detail: dict[str, Any] = {"recent_rows": n_new, "reference_rows": n_old}
    detail["cut"] = data.cut.isoformat()
    detail["as_of"] = None if data.as_of is None else data.as_of.isoformat()
    return Check("windows", True, False, summary, detail)


def _when(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _critical(spec: Spec, name: str) -> bool:
    return name in spec.seatbelt.halt_on


def _quality(spec: Spec, report: QualityReport) -> Check:
    if not spec.quality.active:
        return Check("quality", True, False, "no [quality] checks declared")
    limit = spec.seatbelt.max_quarantined
    rate = report.recent_failure_rate
    judged = report.recent_received >= spec.seatbelt.min_rows
    ok = not judged or rate <= limit
    summary = (
        f"{report.recent_quarantined:,} of {report.recent_received:,} recent rows quarantined"
        f" ({rate:.1%}; limit {limit:.1%})"
    )
    if not judged:
        summary += f"; not judged below {spec.seatbelt.min_rows} rows"
    worst = sorted(report.rules, key=lambda r: -r.failed)[:5]
    detail: dict[str, Any] = {"rules": [r.line() for r in worst]}
    if not ok:
        detail["strength"] = np.inf  # rows that broke a rule: a fact, not a chance
    return Check("quality", ok, _critical(spec, "quality"), summary, detail)


def _drift(spec: Spec, data: Windows, alpha: float) -> Check:
    alarms, found = [], {}
    for f in spec.context:
        ref = data.reference.column(f.name).to_numpy(zero_copy_only=False)
        new = data.recent.column(f.name).to_numpy(zero_copy_only=False)
        test = numeric_drift if f.kind == "numeric" else categorical_drift
        result = test(ref, new, p_threshold=alpha, distance_threshold=spec.seatbelt.drift_distance)
        found[f.name] = {
            "method": result.method,
            "statistic": round(result.statistic, 4),
            "p_value": result.p_value,
            "alarm": result.alarm,
        }
        if result.alarm:
            alarms.append(f"{f.name} ({result.method} {result.statistic:.3g})")
    summary = "context drifted: " + ", ".join(alarms) if alarms else "no context drift"
    return Check("drift", not alarms, _critical(spec, "drift"), summary, found)


def _reward_drift(spec: Spec, data: Windows, alpha: float) -> Check:
    ref = data.reference.column("reward").to_numpy()
    new = data.recent.column("reward").to_numpy()
    result = numeric_drift(
        ref, new, p_threshold=alpha, distance_threshold=spec.seatbelt.drift_distance
    )
    summary = (
        f"reward moved from {ref.mean():.4g} to {new.mean():.4g}"
        f" ({result.method} {result.statistic:.3g})"
    )
    detail = {"reference_mean": float(ref.mean()), "recent_mean": float(new.mean())}
    return Check("reward_drift", not result.alarm, False, summary, detail)


def _srm(spec: Spec, data: Windows, load: Callable[[int], Playbook | None], alpha: float) -> Check:
    """Logged knob values against what the serving playbooks' policies serve, per knob: one
    chi-square over the (version, segment, value) cells, so a swap that leaves the overall
    shares alone (A logged as B in one segment, B as A in another) still shows. Cells the
    policy rarely serves are pooled into one (chi-square needs about five expected rows).

    Row by row too: a decision records the probability its playbook gave the combination it
    served, so a logged combination whose probability under that playbook (in that context)
    is not the logged propensity was not what was served: mislogged tags show at once, in
    however few rows (an alarm once MISLOGGED_MIN rows and MISLOGGED_SHARE of them do)."""
    from scipy import stats  # imported when used: a serving process never needs it

    recent = data.recent
    served = pc.is_in(recent.column("policy"), pa.array(["thompson", "greedy", "local"]))
    rows = recent.filter(served)
    if rows.num_rows < spec.seatbelt.min_rows:
        return Check("srm", True, False, f"not judged: {rows.num_rows} playbook-served rows")
    observed: dict[str, list[np.ndarray]] = {k.name: [] for k in spec.knobs}
    expected: dict[str, list[np.ndarray]] = {k.name: [] for k in spec.knobs}
    versions = rows.column("playbook").to_numpy(zero_copy_only=False)
    greedy = np.asarray(rows.column("policy").to_pylist()) == "greedy"
    mislogged = 0
    for version in np.unique(versions):
        playbook = load(int(version))
        if playbook is None:
            continue
        mine = versions == version
        part = rows.filter(pa.array(mine))
        codes = knob_codes(spec, part)
        logged = part.column("propensity").to_numpy(zero_copy_only=False)
        for _, context, members in segments(playbook, part):
            table = playbook.segment(context)
            n_greedy = int(greedy[mine][members].sum())
            mislogged += _mislogged(
                spec, table, codes[members], logged[members], greedy[mine][members]
            )
            combos = spec.space.codes[table.rows]
            for j, k in enumerate(spec.knobs):
                share = np.bincount(combos[:, j], weights=table.probs, minlength=len(k.values))
                cells = (len(members) - n_greedy) * share
                cells[combos[table.best, j]] += n_greedy
                expected[k.name].append(cells)
                observed[k.name].append(np.bincount(codes[members, j], minlength=len(k.values)))
    threshold = min(alpha * 10, SRM_LEVEL) / len(spec.knobs)  # shared across the knobs
    alarms: list[Alarm] = []
    found: dict[str, Any] = {}
    for k in spec.knobs:
        if not observed[k.name]:
            continue
        all_obs = np.concatenate(observed[k.name]).astype(float)
        all_exp = np.concatenate(expected[k.name])
        rare = all_exp < MIN_EXPECTED
        obs, exp = _pool(all_obs, all_exp)
        if len(obs) < 2:
            continue
        if np.any((exp == 0) & (obs > 0)):  # logged what the policy never serves
            chi2, p = np.inf, 0.0
        else:
            chi2, p = (float(v) for v in stats.chisquare(obs[exp > 0], exp[exp > 0]))
        excess = 1.0
        if rare.any() and all_exp[rare].sum() < MIN_EXPECTED:
            # values the policy almost never serves, logged often: chi-square's pooling would
            # hide them in a big cell, so they get their own exact (Poisson) tail, two tests
            # sharing the threshold
            excess = float(stats.poisson.sf(all_obs[rare].sum() - 1, all_exp[rare].sum()))
            p = min(1.0, 2 * min(p, excess))
        found[k.name] = {
            "chi2": round(chi2, 3),
            "cells": len(obs),
            "p_value": p,
            "rare_logged": float(all_obs[rare].sum()),
            "rare_expected": round(float(all_exp[rare].sum()), 3),
            "rare_p_value": excess,
        }
        if p < threshold:
            text = f"{k.name} (chi-square {chi2:.1f} over {len(obs)} cells, p = {p:.2g})"
            alarms.append(Alarm(z_of(p), text))
    found["mislogged_rows"] = mislogged
    if mislogged >= max(MISLOGGED_MIN, MISLOGGED_SHARE * rows.num_rows):
        text = (
            f"{mislogged} of {rows.num_rows} rows logged a combination their playbook gives"
            " another probability than the logged propensity"
        )
        alarms.append(Alarm(np.inf, text))  # not chance: what was served is known exactly
    summary = (
        "logged knob values do not match the policy: " + lead(alarms)
        if alarms
        else "logged knob values match the policy"
    )
    if alarms:
        found["strength"] = max(a.strength for a in alarms)
    return Check("srm", not alarms, _critical(spec, "srm"), summary, found)


def _mislogged(
    spec: Spec, table: SegmentPolicy, codes: np.ndarray, logged: np.ndarray, greedy: np.ndarray
) -> int:
    """Rows whose logged combination does not have the logged propensity in the segment's
    table (greedy rows: whose combination is not the table's best)."""
    combos = spec.space.rows_of_codes(codes)
    prob = _align(table.rows, table.probs, combos)
    logged = logged.astype(float)
    sampled_wrong = ~np.isnan(logged) & ~np.isclose(prob, logged, rtol=1e-6, atol=1e-12)
    best = table.rows[table.best] if len(table.rows) else -1
    return int(np.where(greedy, combos != best, sampled_wrong).sum())


def _pool(observed: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge cells expecting fewer than MIN_EXPECTED rows (chi-square's rule of thumb): the
    small ones into one, and that one into the smallest adequate cell if still small."""
    observed, expected = observed.astype(float), expected.astype(float)
    small = expected < MIN_EXPECTED
    if not small.any():
        return observed, expected
    obs, exp = list(observed[~small]), list(expected[~small])
    rest_obs, rest_exp = float(observed[small].sum()), float(expected[small].sum())
    if rest_exp >= MIN_EXPECTED or not exp:
        return np.array([*obs, rest_obs]), np.array([*exp, rest_exp])
    smallest = int(np.argmin(exp))
    obs[smallest] += rest_obs
    exp[smallest] += rest_exp
    return np.array(obs), np.array(exp)


def _reward_shift(spec: Spec, data: Windows, incumbent: Playbook, alpha: float) -> list[Check]:
    """The shift check on the last cycle and on the last SHIFT_CYCLES (sharing ``alpha``): a
    sudden break shows at once in the short window, a slow one or one on a rarely served
    level accumulates in the long one.

    Two verdicts. ``reward_shift`` for toxic results: a level whose own results rose (or are
    all successes) while nothing else moved once its rows are set aside — a level that jumped
    alone, what a broken metric or a mislabelled tag looks like, and what a learning loop
    would amplify; unless its knob is one a change of the world was lately found on
    (``data.moving``: the same change going on) and its results are not all successes
    (an impossible rate is a fault whatever moves). ``change`` for every other move: results
    that fell where the policy served (the world changed under it: the policy moves away
    and keeps exploring, and the guard watches the live results), or moves that show beyond
    any one level; with the change point where they began."""
    spans = spans_of(data)
    alarms: list[Alarm] = []
    found: dict[str, Any] = {}
    tests = len(spans) + 1  # the shift on each span, and the stuck-outcome test
    for (reference, recent), label in spans:
        if min(reference.num_rows, recent.num_rows) < spec.seatbelt.min_rows:
            continue
        shifts, detail = _shift(spec, reference, recent, incumbent, alpha / tests)
        found.update({f"{k} ({label})": v for k, v in detail.items()})
        alarms += [
            Alarm(abs(s.z), f"{s.text} over the {label}", s.knob, s.level, s.rose) for s in shifts
        ]
    if min(data.long_reference.num_rows, data.recent.num_rows) >= spec.seatbelt.min_rows:
        alarms += _stuck(
            spec, data.long_reference, data.long_recent, incumbent, alpha / tests, data.forgotten
        )
    critical = _critical(spec, "reward_shift")
    if not alarms:
        return [
            Check("reward_shift", True, critical, "no knob level's reward shifted", found),
            Check("change", True, False, "no change of the world"),
        ]
    found["strength"] = max(a.strength for a in alarms)
    long_rows = (data.long_reference, data.long_recent)
    jumped = [
        a
        for a in sorted(alarms, key=lambda a: -a.strength)
        if a.rose
        and (a.stuck or a.knob not in data.moving)
        and not any(_spread(spec, *rows, incumbent, a, alpha, data.forgotten) for rows, _ in spans)
    ]
    if jumped:
        summary = "reward jumped alone for " + lead(jumped)
        return [
            Check("reward_shift", False, critical, summary, found),
            Check("change", True, False, "no change of the world: one level moved alone"),
        ]
    at = change_point(spec, pa.concat_tables(long_rows), incumbent)
    summary = f"the world changed near {at:%Y-%m-%d %H:%M}: results moved for " + lead(alarms)
    knobs = sorted({a.knob for a in alarms if a.level >= 0})
    detail = {"at": at.isoformat(), "shifts": [a.text for a in alarms], "knobs": knobs, **found}
    return [
        Check("reward_shift", True, critical, "results moved across the combinations", found),
        Check("change", False, False, summary, detail),
    ]


def spans_of(data: Windows) -> list[tuple[tuple[pa.Table, pa.Table], str]]:
    """The (reference, recent) pairs the shift is judged on: the last cycle, and the last
    SHIFT_CYCLES when they hold more."""
    spans = [((data.reference, data.recent), "last cycle")]
    if data.long_recent.num_rows > data.recent.num_rows:
        spans.append(((data.long_reference, data.long_recent), f"last {SHIFT_CYCLES} cycles"))
    return spans


def _spread(
    spec: Spec,
    reference: pa.Table,
    recent: pa.Table,
    incumbent: Playbook,
    strongest: Alarm,
    alpha: float,
    forgotten: Steps = (),
) -> bool:
    """Did results move beyond the strongest alarm's level? Set aside every row with that
    level and judge the rest again: a shift in means (``alpha`` shared across the levels, no
    minimum size) or a stuck outcome anywhere else means the results moved across the
    combinations served (a changed world); nothing else, that one level moved alone (a
    fault: a broken metric, a mislabelled tag)."""
    if strongest.level < 0:
        return False
    j = [k.name for k in spec.knobs].index(strongest.knob)
    keep_old = knob_codes(spec, reference)[:, j] != strongest.level
    keep_new = knob_codes(spec, recent)[:, j] != strongest.level
    rest_old, rest_new = reference.filter(pa.array(keep_old)), recent.filter(pa.array(keep_new))
    if min(rest_old.num_rows, rest_new.num_rows) < spec.seatbelt.min_rows:
        return False
    levels = sum(len(k.values) for k in spec.knobs)
    others, _ = _shift(
        spec, rest_old, rest_new, incumbent, spec.seatbelt.alpha / levels, min_shift=0.0
    )
    return bool(others) or bool(_stuck(spec, rest_old, rest_new, incumbent, alpha, forgotten))


CHANGE_CHUNKS = 400  # the change point is looked for between chunks of rows this many


def change_point(spec: Spec, rows: pa.Table, incumbent: Playbook) -> datetime:
    """Where results began to move against the incumbent's model: the split of the rows (in
    decision order) that maximises the summed squared difference, over every knob level, of
    the mean residual before and after it (each weighed by its precision). Rows are split
    between CHANGE_CHUNKS chunks, so the search is cheap however many rows there are."""
    rows = rows.sort_by("ts")
    residual = rows.column("reward").to_numpy() - predict(incumbent, rows)
    knobs = knob_codes(spec, rows)
    offsets = np.cumsum([0, *(len(k.values) for k in spec.knobs)])
    levels = np.zeros((rows.num_rows, int(offsets[-1])))
    for j in range(len(spec.knobs)):
        levels[np.arange(rows.num_rows), offsets[j] + knobs[:, j]] = 1.0
    starts = np.unique(np.linspace(0, rows.num_rows, CHANGE_CHUNKS, endpoint=False).astype(int))
    sums = np.cumsum(np.add.reduceat(levels * residual[:, None], starts, axis=0), axis=0)
    counts = np.cumsum(np.add.reduceat(levels, starts, axis=0), axis=0)
    n_before, s_before = counts[:-1], sums[:-1]  # split after each chunk but the last
    n_after, s_after = counts[-1] - n_before, sums[-1] - s_before
    enough = (n_before >= 5) & (n_after >= 5)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = s_after / n_after - s_before / n_before
        score = np.where(enough, gap**2 / (1 / n_after + 1 / n_before), 0.0).sum(axis=1)
    split = starts[int(np.argmax(score)) + 1] - 1 if len(score) else 0  # the last row before
    ts: datetime = rows.column("ts")[int(split)].as_py()
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def cells_of_rows(spec: Spec, playbook: Playbook, rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cell (its context segment and full combination, numbered from 0) and its
    knob value codes."""
    codes = context_codes(playbook, rows)
    knobs = knob_codes(spec, rows)
    key = np.column_stack([*(codes[f.name] for f in spec.context), knobs])
    _, cell = np.unique(key, axis=0, return_inverse=True)
    return cell.ravel(), knobs


# A level's run of identical results is judged once it is this long. Each cycle judges the
# run again, so a policy that settles on a level's best cells (served at 60-70%) draws a run
# of 20-30 successes that the reference finds improbable every few hundred cycles; a forced
# result is caught at this length all the same, within the 60 rows the seatbelt promises.
STUCK_ROWS = 40


def weights(rows: pa.Table, forgotten: Steps) -> np.ndarray:
    """Each row's weight as the learner weighs it after the changes it forgot."""
    return weighed(seconds(rows), forgotten)


def seconds(rows: pa.Table) -> np.ndarray:
    """Each row's decision time, in seconds since the epoch."""
    ts = pc.cast(rows.column("ts"), pa.timestamp("us"))
    out: np.ndarray = ts.to_numpy().astype("int64") / 1e6
    return out


def _stuck(
    spec: Spec,
    reference: pa.Table,
    recent: pa.Table,
    incumbent: Playbook,
    alpha: float,
    forgotten: Steps = (),
) -> list[Alarm]:
    """Binary results only: a knob level whose latest results are all the same (all 1 or all
    0) for longer than the reference makes probable.

    Per level, the run is its results since the last one that differed, in decision order: a
    fault that began inside the window, or a cycle or two before the last, is measured from
    where it began. Its chance is the predictive probability of the run in each of its cells:
    the cell's rate is uncertain, a Beta posterior of the reference cell's results with two
    pseudo-rows at the incumbent model's prediction (a thin cell leans on what the model
    learned of its level elsewhere, and its uncertainty makes a long run less surprising). Only
    cells the reference saw count: in one it never saw, that prediction is all there is, and a
    policy that has just begun to serve a cell did so because its draws for it came out high,
    so a run of failures there would look like a fault where it is only the model's optimism
    (a demo's second cycle, against a cold start's 200 rows, halted on 17 such failures). With
    no fault, the run's chance falls under ``alpha / 2`` with at most that probability: the
    run reaches the length that takes it there only that often.
    The reference's rows weigh as the learner weighs them (``forgotten``): after a change of
    the world, the rates a run is judged by are those of the world since, as far as the rows
    since bear it out, not those of the world it left (a drift's rising results, judged by the
    rows of the drift, read as a run too long to be chance). The recent rows before the run
    count too: a run is judged by every row before it, so a cell whose rate rose as the world
    moved, and that runs of successes now as it may, is judged by its rate of late, while a
    fault that began inside the window is judged by the rows it broke off.
    A forced success or failure, the classic broken instrumentation, shows here as soon as a
    few dozen rows carry it, before a shift in means is significant."""
    old = reference.column("reward").to_numpy()
    recent = recent.sort_by("ts")
    new = recent.column("reward").to_numpy()
    if not (np.isin(old, (0.0, 1.0)).all() and np.isin(new, (0.0, 1.0)).all()):
        return []
    both = pa.concat_tables([reference, recent])
    cell, knobs = cells_of_rows(spec, incumbent, both)
    size = int(cell.max()) + 1
    cell_old, cell_new = cell[: len(old)], cell[len(old) :]
    prior = np.zeros(size)
    prior[cell] = np.clip(predict(incumbent, both), 1e-6, 1 - 1e-6)
    weight = weights(reference, forgotten)
    seen = np.bincount(cell_old, minlength=size)
    counted = np.bincount(cell_old, weight, size)
    ones = np.bincount(cell_old, old * weight, size) + 2 * prior  # each cell's Beta posterior
    zeros = counted + 2 - ones
    knobs_new = knobs[len(old) :]
    alarms = []
    for j, k in enumerate(spec.knobs):
        for level, value in enumerate(k.values):
            mine = np.flatnonzero(knobs_new[:, j] == level)
            if len(mine) < STUCK_ROWS:
                continue
            results = new[mine]
            differ = np.flatnonzero(results != results[-1])
            run = mine[differ[-1] + 1 :] if len(differ) else mine
            if len(run) < STUCK_ROWS:
                continue
            outcome = int(results[-1])
            # only cells the reference has seen are evidence: in a cell it never saw, the
            # model's rate is a guess, and an optimistic one where a new policy has just begun
            # to serve (it serves where its draws came out high)
            length = np.bincount(cell_new[run], minlength=size) * (seen > 0)
            start = run[0]  # the recent rows before the run: as much its reference
            a = ones + np.bincount(cell_new[:start], new[:start], size)
            b = zeros + np.bincount(cell_new[:start], 1.0 - new[:start], size)
            if outcome == 1:
                log_p = float((betaln(a + length, b) - betaln(a, b)).sum())
            else:
                log_p = float((betaln(a, b + length) - betaln(a, b)).sum())
            if log_p < np.log(alpha / 2):  # ``alpha`` is already a level's share; two outcomes
                text = (
                    f"{k.name} = {value!r}: the last {len(run)} results are all {outcome}"
                    f" (P = {np.exp(log_p):.2g} by the reference)"
                )
                strength = z_of(float(np.exp(log_p)))
                alarms.append(Alarm(strength, text, k.name, level, outcome == 1, stuck=True))
    return alarms


class Shift(NamedTuple):
    """One knob level whose results moved against the other levels'; ``rose``: its own
    results rose significantly (not only against the others')."""

    knob: str
    level: int
    shift: float
    z: float
    text: str
    rose: bool = False


def _shift(
    spec: Spec,
    reference: pa.Table,
    recent_rows: pa.Table,
    incumbent: Playbook,
    alpha: float,
    min_shift: float | None = None,
) -> tuple[list[Shift], dict[str, Any]]:
    """Per knob level: did its results move between the windows more than everyone else's?

    Compared within cells (one context segment and one full combination each), so a policy
    that now serves other combinations, or other contexts, moves nothing by itself; a change
    shared by every cell (a genuine trend) cancels in the difference between levels. Each
    cell's difference is weighed by its precision, and its variance is the cell's own (for
    results in [0, 1] from its rate, pooled over both windows and smoothed towards the overall
    one; otherwise its spread around each window's mean, smoothed towards the spread within
    all cells): a policy serves the cells whose results are far from the mean, and some cells
    are noisier than others, so one spread for all would overstate their evidence.
    """
    both = pa.concat_tables([reference, recent_rows])
    recent = np.arange(both.num_rows) >= reference.num_rows
    cell, knobs = cells_of_rows(spec, incumbent, both)
    reward = both.column("reward").to_numpy()
    cells = int(cell.max()) + 1
    n_new = np.bincount(cell[recent], minlength=cells)
    n_old = np.bincount(cell[~recent], minlength=cells)
    shared = (n_new > 0) & (n_old > 0)
    mean_new = np.bincount(cell[recent], reward[recent], cells) / np.maximum(n_new, 1)
    mean_old = np.bincount(cell[~recent], reward[~recent], cells) / np.maximum(n_old, 1)
    diff = mean_new - mean_old
    weight = np.where(shared, 1.0 / (1.0 / np.maximum(n_new, 1) + 1.0 / np.maximum(n_old, 1)), 0)
    level_of_cell = np.zeros((cells, len(spec.knobs)), dtype=np.int64)
    level_of_cell[cell] = knobs
    scale = float(np.std(reference.column("reward").to_numpy())) or 1.0
    if np.all((reward >= 0) & (reward <= 1)):
        rate = (np.bincount(cell, reward, cells) + 2 * reward.mean()) / (n_new + n_old + 2)
        spread = np.maximum(rate * (1 - rate), 1e-6)  # each cell's variance of one result
    else:
        spread = _cell_spread(cell, reward, recent, (n_new, mean_new), (n_old, mean_old), scale)
    z_limit = NormalDist().inv_cdf(1 - alpha / 2)
    smallest = spec.seatbelt.min_shift if min_shift is None else min_shift
    alarms: list[Shift] = []
    found: dict[str, Any] = {}
    for j, k in enumerate(spec.knobs):
        for level, value in enumerate(k.values):
            mine = level_of_cell[:, j] == level
            w_in, w_out = weight[mine].sum(), weight[~mine].sum()
            if min(w_in, w_out) < 10:  # too few rows in cells seen in both windows
                continue
            shift = (weight[mine] @ diff[mine]) / w_in - (weight[~mine] @ diff[~mine]) / w_out
            var_in = (weight[mine] @ spread[mine]) / w_in**2  # of the level's mean difference
            var_out = (weight[~mine] @ spread[~mine]) / w_out**2
            z = shift / np.sqrt(var_in + var_out)
            traffic = (
                float(n_new[mine].sum() / max(n_new.sum(), 1)),
                float(n_old[mine].sum() / max(n_old.sum(), 1)),
            )
            alarm = abs(z) > z_limit and abs(shift) >= smallest * scale
            if abs(z) > z_limit:
                found[f"{k.name}={value}"] = {
                    "shift": round(float(shift), 4),
                    "z": round(float(z), 2),
                    "traffic_recent": round(traffic[0], 4),
                    "traffic_reference": round(traffic[1], 4),
                    "alarm": bool(alarm),
                }
            if alarm:
                text = (
                    f"{k.name} = {value!r} moved {shift:+.3g} against the other levels"
                    f" (z = {z:.1f}; traffic {traffic[1]:.0%} -> {traffic[0]:.0%})"
                )
                own = (weight[mine] @ diff[mine]) / w_in / np.sqrt(var_in)
                rose = bool(shift > 0 and own > z_limit)
                alarms.append(Shift(k.name, level, float(shift), float(z), text, rose))
    return alarms, found


def _cell_spread(
    cell: np.ndarray,
    reward: np.ndarray,
    recent: np.ndarray,
    new: tuple[np.ndarray, np.ndarray],
    old: tuple[np.ndarray, np.ndarray],
    scale: float,
) -> np.ndarray:
    """Each cell's variance of one result: its rows' squared residuals around their window's
    mean, with SPREAD_PRIOR rows' worth of the variance within all cells (``scale**2`` when no
    cell has two rows in a window), so a cell of three rows does not claim certainty. ``new``
    and ``old`` are each window's rows and mean per cell."""
    (n_new, mean_new), (n_old, mean_old) = new, old
    residual = reward - np.where(recent, mean_new[cell], mean_old[cell])
    squares = np.bincount(cell, residual**2, len(n_new))
    freedom = n_new + n_old - (n_new > 0) - (n_old > 0)  # one mean per window spent
    within = squares.sum() / freedom.sum() if freedom.sum() > 0 else scale**2
    spread: np.ndarray = np.maximum(
        (squares + SPREAD_PRIOR * within) / (freedom + SPREAD_PRIOR), 1e-12
    )
    return spread


# --- the candidate against the incumbent ---------------------------------------------------------


def ope_check(spec: Spec, candidate: Playbook, incumbent: Playbook, data: Windows) -> Check:
    """Doubly robust difference of values (candidate - incumbent) on the decisions the
    incumbent's policy sampled recently.

    The outcome model is the incumbent's: it was fitted before these decisions, so its
    errors on them are honest, and a candidate must show evidence in the logged results (the
    importance-weighted residuals) to beat it. A candidate fitted on bad data believes in
    itself; the incumbent's model does not.
    """
    rows = data.recent
    version = rows.column("playbook").to_numpy(zero_copy_only=False)
    policy = np.asarray(rows.column("policy").to_pylist())
    sampled = (policy == "thompson") | (policy == "local") | (policy == "online")
    rows = rows.filter(pa.array((version == incumbent.version) & sampled))
    if rows.num_rows < spec.seatbelt.min_rows:
        note = f"not judged: {rows.num_rows} rows served by the incumbent"
        return Check("ope", True, False, note)
    combos = spec.space.rows_of_codes(knob_codes(spec, rows))
    reward = rows.column("reward").to_numpy()
    logged = rows.column("propensity").to_numpy()
    terms = np.zeros(rows.num_rows)
    for _, context, members in segments(incumbent, rows):
        new, old = candidate.segment(context), incumbent.segment(context)
        if len(old.rows) == 0:
            continue
        q_all = _align(new.rows, new.probs, old.rows)
        at = np.clip(np.searchsorted(old.rows, combos[members]), 0, len(old.rows) - 1)
        hit = old.rows[at] == combos[members]
        q_new = np.where(hit, q_all[at], 0.0)
        q_old = np.where(hit, old.probs[at], 0.0)
        mu = np.where(hit, old.mean[at], reward[members])
        direct = float((q_all - old.probs) @ old.mean)
        weights = (q_new - q_old) / logged[members]
        terms[members] = direct + weights * (reward[members] - mu)
    n = len(terms)
    diff = float(terms.mean())
    se = float(terms.std(ddof=1) / np.sqrt(n))
    low, high = diff - 1.96 * se, diff + 1.96 * se
    tolerance = spec.seatbelt.ope_tolerance
    ok = not (diff < -tolerance and high < 0)
    summary = f"candidate - incumbent = {diff:+.4f} ({low:+.4f} to {high:+.4f}) on {n:,} decisions"
    detail = {"difference": diff, "low": low, "high": high, "rows": n, "tolerance": tolerance}
    return Check("ope", ok, True, summary, detail)


def _align(rows: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    at = np.clip(np.searchsorted(rows, wanted), 0, max(len(rows) - 1, 0))
    hit = rows[at] == wanted if len(rows) else np.zeros(len(wanted), dtype=bool)
    return np.where(hit, values[at] if len(rows) else 0.0, 0.0)


# --- row helpers ---------------------------------------------------------------------------------


def knob_codes(spec: Spec, rows: pa.Table) -> np.ndarray:
    """The knob value codes of each row, shape ``(rows, knobs)``."""
    out = np.zeros((rows.num_rows, len(spec.knobs)), dtype=np.int64)
    for j, k in enumerate(spec.knobs):
        column = rows.column(k.name)
        index = pc.index_in(column, value_set=pa.array(k.values, type=column.type))
        out[:, j] = index.fill_null(0).to_numpy()
    return out


def context_codes(playbook: Playbook, rows: pa.Table) -> dict[str, np.ndarray]:
    """The model's code of each row's context features (numbers by the playbook's bins)."""
    out: dict[str, np.ndarray] = {}
    for f in playbook.spec.context:
        column = rows.column(f.name)
        if f.name in playbook.encoding.edges:
            edges = np.asarray(playbook.encoding.edges[f.name], dtype=float)
            out[f.name] = np.searchsorted(edges, column.to_numpy(), side="right")
        else:  # the playbook's levels (an open feature's every other value: other)
            codes = playbook.encoding.column_codes(f.name, column)
            out[f.name] = np.nan_to_num(codes, nan=0).astype(np.int64)
    return out


def predict(playbook: Playbook, rows: pa.Table) -> np.ndarray:
    """The playbook's model's expected reward of each row (its context and knob values)."""
    codes: dict[str, np.ndarray | int] = dict(context_codes(playbook, rows))
    knobs = knob_codes(playbook.spec, rows)
    for j, k in enumerate(playbook.spec.knobs):
        codes[k.name] = knobs[:, j]
    x = playbook.posterior.design.matrix(codes, rows.num_rows)
    return playbook.posterior.response(x @ playbook.posterior.mean)


def segments(playbook: Playbook, rows: pa.Table) -> list[tuple[int, dict[str, Any], np.ndarray]]:
    """Rows grouped by serving segment: (group, a representative context, row indices)."""
    spec = playbook.spec
    if not spec.context:
        return [(0, {}, np.arange(rows.num_rows))]
    codes = context_codes(playbook, rows)
    key = np.column_stack([codes[f.name] for f in spec.context]).astype(float)
    exact = playbook.exact_names
    if exact:  # rules read these: their exact values (not their level) pick the allowed set
        values = [rows.column(n).to_numpy(zero_copy_only=False) for n in exact]
        key = np.column_stack([key, *(np.unique(v, return_inverse=True)[1] for v in values)])
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    names = [f.name for f in spec.context]
    columns = {n: rows.column(n) for n in names}
    out = []
    for g, i in enumerate(first):
        context = {n: columns[n][int(i)].as_py() for n in names}
        out.append((g, context, np.flatnonzero(inverse == g)))
    return out
