"""Learning rate: each version's result on the decisions it served, the lift per cycle and
per 1,000 complete rows, and whether the lift has reached a plateau.

A version's result is the mean reward of the complete rows it served, with a 95% interval.
Versions serve different traffic (a weekend, a campaign): with two context segments or more,
every result is post-stratified to the window's mix, so versions are compared on the same
traffic (``mix_covered``: how much of that mix the segments a version served cover; the lift
per cycle and per 1,000 rows and the plateau leave out restored versions, which learned
nothing). The slopes' intervals widen when the line does not fit the results.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any

from flywheel.health.sql import COLD_START, EARLY_ONLINE

PLATEAU_CYCLES = 3  # the plateau is judged on the last K cycles (K + 1 versions)
Z95 = NormalDist().inv_cdf(0.975)
Z90 = NormalDist().inv_cdf(0.95)


@dataclass(frozen=True)
class VersionResult:
    """What one version (or the cold start) earned on the decisions it served."""

    served_by: str
    version: int | None
    decisions: int
    rows: int  # complete rows it served (not quarantined)
    result: float | None
    low: float | None
    high: float | None
    corrected: bool  # post-stratified to the window's context mix
    learned_rows: int  # the complete rows it was fitted on (0: the cold start)
    lift: float | None = None  # against the entry before it
    lift_low: float | None = None
    lift_high: float | None = None
    restored_from: int | None = None  # a rollback's copy of this version
    mix_covered: float = 1.0  # the share of the window's mix its segments cover


@dataclass(frozen=True)
class Slope:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class LearningRate:
    versions: tuple[VersionResult, ...]
    per_cycle: Slope | None
    per_1000_rows: Slope | None
    plateau: bool
    delta: float  # the plateau's band: ± this much per cycle
    text: str
    suggestions: tuple[str, ...]

    @property
    def cycles(self) -> tuple[VersionResult, ...]:
        """The versions with a result that a learning cycle made (restored copies left out)."""
        return _cycles(self.versions)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Moments:
    """A cell's count, sum and sum of squares of its rewards."""

    n: float = 0.0
    s: float = 0.0
    ss: float = 0.0
    decisions: float = 0.0

    @property
    def mean(self) -> float:
        return self.s / self.n

    @property
    def var(self) -> float:
        if self.n < 2:
            return float("nan")
        return max(0.0, (self.ss - self.s * self.s / self.n) / (self.n - 1))


def learning_rate(
    rows: Sequence[Mapping[str, Any]],
    learned_rows: Mapping[int, int],
    *,
    plateau: float = 0.01,
    readiness: Callable[[], Sequence[Any]] | None = None,
    restored: Mapping[int, int] | None = None,
) -> LearningRate:
    """From the ``versions`` rows of :func:`flywheel.health.sql.health_sql` and each
    version's training rows. ``plateau``: the band, as a share of the latest result (of the
    rewards' spread when that is 0); ``readiness``: called for suggestions on a plateau;
    ``restored``: versions that are a rollback's copy of another (no learning cycle: left out
    of the slopes and the plateau)."""
    restored = restored or {}
    cells: dict[int, dict[str, Moments]] = defaultdict(dict)
    reference: dict[str, float] = defaultdict(float)
    ordered = sorted(rows, key=lambda r: (r["k"] is None, r["k"] or 0, str(r["segment"])))
    for row in ordered:  # in one order: the same sums, to the last bit, for the same data
        if row["k"] is None:
            continue  # logged by an outside policy
        k, segment = int(row["k"]), str(row["segment"])
        cell = cells[k].setdefault(segment, Moments())
        cell.n += float(row["n"] or 0)
        cell.s += float(row["sum"] or 0.0)
        cell.ss += float(row["sum2"] or 0.0)
        cell.decisions += float(row["decisions"] or 0)
        reference[segment] += float(row["n"] or 0)
    total = sum(reference.values())
    weights = {s: n / total for s, n in reference.items()} if total else {}
    entries: list[VersionResult] = []
    for k in sorted(cells):
        label = {COLD_START: "cold start", EARLY_ONLINE: "online before v1"}.get(k, f"v{k}")
        if k in restored:
            label = f"v{k} (v{restored[k]} restored)"
        entry = _result(label, None if k < 1 else k, cells[k], weights, learned_rows.get(k, 0))
        entries.append(replace(entry, restored_from=restored.get(k)))
    entries = _with_lifts(entries)
    spread = _spread(cells)
    versions = list(_cycles(entries))
    scale = abs(versions[-1].result or 0.0) if versions else 0.0
    delta = plateau * (scale if scale > 0 else spread)
    points = [
        e
        for e in entries
        if e.served_by != "online before v1" and e.result is not None and e.restored_from is None
    ]
    per_cycle = _slope([float(i) for i in range(len(points))], points)
    per_rows = _slope([e.learned_rows / 1000 for e in points], points)
    flat, text = _plateau(versions, delta)
    suggestions: tuple[str, ...] = ()
    if flat:
        suggestions = suggest(readiness() if readiness is not None else ())
    return LearningRate(tuple(entries), per_cycle, per_rows, flat, delta, text, suggestions)


def _cycles(entries: Sequence[VersionResult]) -> tuple[VersionResult, ...]:
    return tuple(
        e
        for e in entries
        if e.version is not None and e.result is not None and e.restored_from is None
    )


def _result(
    label: str,
    version: int | None,
    cells: Mapping[str, Moments],
    weights: Mapping[str, float],
    learned_rows: int,
) -> VersionResult:
    n = sum(c.n for c in cells.values())
    decisions = round(sum(c.decisions for c in cells.values()))
    if n == 0:
        return VersionResult(label, version, decisions, 0, None, None, None, False, learned_rows)
    s, ss = sum(c.s for c in cells.values()), sum(c.ss for c in cells.values())
    pooled = Moments(n, s, ss)
    mix = {seg: c.n / n for seg, c in cells.items() if c.n}
    covered = 1.0
    if len(weights) < 2:
        mean = pooled.mean
        se = math.sqrt(pooled.var / n) if n >= 2 else float("nan")
        corrected = False
    else:
        served = {seg: w for seg, w in weights.items() if seg in mix}
        covered = sum(served.values())
        mean = sum(w * cells[seg].mean for seg, w in served.items()) / covered
        variance = 0.0
        for seg, w in served.items():
            cell = cells[seg]
            var = cell.var if cell.n >= 2 else pooled.var
            variance += (w / covered) ** 2 * var / cell.n
        se = math.sqrt(variance) if math.isfinite(variance) else float("nan")
        corrected = True
    low, high = (mean - Z95 * se, mean + Z95 * se) if math.isfinite(se) else (None, None)
    return VersionResult(
        label,
        version,
        decisions,
        round(n),
        mean,
        low,
        high,
        corrected,
        learned_rows,
        mix_covered=round(covered, 4),
    )


def standard_error(e: VersionResult) -> float | None:
    """A result's standard error, from its 95% interval (``None`` without one)."""
    if e.result is None or e.low is None or e.high is None:
        return None
    return (e.high - e.low) / (2 * Z95)


def _with_lifts(entries: list[VersionResult]) -> list[VersionResult]:
    out: list[VersionResult] = []
    previous: VersionResult | None = None
    for entry in entries:
        e = entry
        se, before = standard_error(e), None if previous is None else standard_error(previous)
        if previous is not None and e.result is not None and previous.result is not None:
            lift = e.result - previous.result
            both = None if se is None or before is None else math.hypot(se, before)
            e = replace(
                e,
                lift=lift,
                lift_low=None if both is None else lift - Z95 * both,
                lift_high=None if both is None else lift + Z95 * both,
            )
        out.append(e)
        if e.result is not None and e.served_by != "online before v1":
            previous = e
    return out


def _spread(cells: Mapping[int, Mapping[str, Moments]]) -> float:
    every = Moments()
    for segments in cells.values():
        for c in segments.values():
            every.n, every.s, every.ss = every.n + c.n, every.s + c.s, every.ss + c.ss
    var = every.var
    return math.sqrt(var) if math.isfinite(var) else 0.0


def _slope(x: list[float], points: Sequence[VersionResult], z: float = Z95) -> Slope | None:
    """Weighted least squares of the results on ``x`` (weights: 1 / se²)."""
    pairs = [(xi, e.result, standard_error(e)) for xi, e in zip(x, points, strict=True)]
    usable = [(xi, y, max(se, 1e-9)) for xi, y, se in pairs if y is not None and se is not None]
    if len(usable) < 2 or len({xi for xi, _, _ in usable}) < 2:
        return None
    w = [1 / se**2 for _, _, se in usable]
    sw = sum(w)
    mx = sum(wi * xi for wi, (xi, _, _) in zip(w, usable, strict=True)) / sw
    my = sum(wi * y for wi, (_, y, _) in zip(w, usable, strict=True)) / sw
    sxx = sum(wi * (xi - mx) ** 2 for wi, (xi, _, _) in zip(w, usable, strict=True))
    sxy = sum(wi * (xi - mx) * (y - my) for wi, (xi, y, _) in zip(w, usable, strict=True))
    if sxx <= 0:
        return None
    slope, variance = sxy / sxx, 1 / sxx
    if len(usable) > 2:  # a line that does not fit (a jump, a curve): a wider interval
        fit = [my + slope * (xi - mx) for xi, _, _ in usable]
        misfit = sum(wi * (y - f) ** 2 for wi, (_, y, _), f in zip(w, usable, fit, strict=True))
        variance *= max(1.0, misfit / (len(usable) - 2))
    se = math.sqrt(variance)
    return Slope(slope, slope - z * se, slope + z * se)


def _plateau(versions: Sequence[VersionResult], delta: float) -> tuple[bool, str]:
    last = list(versions[-(PLATEAU_CYCLES + 1) :])
    if len(last) < PLATEAU_CYCLES + 1:
        return False, (
            f"{len(versions)} version(s) with results: a plateau is judged on the last"
            f" {PLATEAU_CYCLES} cycles ({PLATEAU_CYCLES + 1} versions)."
        )
    slope = _slope([float(i) for i in range(len(last))], last, Z90)
    if slope is None:
        return False, "The last versions' results are too uncertain to judge a plateau."
    names = f"{last[0].served_by} → {last[-1].served_by}"
    figure = f"{slope.value:+.4g} per cycle (90%: {slope.low:+.4g} to {slope.high:+.4g})"
    if -delta <= slope.low and slope.high <= delta:
        return True, (
            f"Plateau: over the last {PLATEAU_CYCLES} cycles ({names}) the result moved"
            f" {figure}, inside ±{delta:.4g}."
        )
    if slope.low > 0:
        return False, f"Still learning: over the last {PLATEAU_CYCLES} cycles, {figure}."
    if slope.high < 0:
        return False, f"Getting worse: over the last {PLATEAU_CYCLES} cycles, {figure}."
    return False, (
        f"No plateau shown: over the last {PLATEAU_CYCLES} cycles, {figure}; the band is"
        f" ±{delta:.4g}."
    )


def suggest(readiness: Sequence[Any]) -> tuple[str, ...]:
    """What to try on a plateau, from the readiness of each factor and pair."""
    waiting = [r for r in readiness if not r.ready]
    if waiting:
        worst = max(waiting, key=lambda r: r.more_rows)
        names = " × ".join(worst.factors)
        return (
            f"More exploration or a longer window: {len(waiting)} factor(s) or pair(s) cannot"
            f" yet detect an effect of {worst.effect:.3g} ({names} needs {worst.more_rows:,}"
            " more rows).",
            "Then, a new context feature that tells segments apart.",
        )
    return (
        "A new knob: every factor and pair can already detect an effect of the wanted size,"
        " so the current knobs have given what they can.",
        "A new context feature, so the playbook can tell more segments apart.",
    )
