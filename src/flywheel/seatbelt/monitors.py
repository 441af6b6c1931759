"""Statistical monitors: distribution drift and sample-ratio mismatch.

Drift compares a recent window with a reference window, choosing the test by sample size the
way Evidently's defaults do: small samples get a significance test (chi-square for
categories, Kolmogorov–Smirnov for numbers, alarm at p < 0.05), large samples a distance,
because with enough rows every tiny shift is "significant" (Jensen–Shannon distance for
categories, Wasserstein distance in units of the reference's standard deviation for numbers,
alarm at 0.1). The population stability index is available for either.

Sample-ratio mismatch compares what was served with what the policy should have served
(chi-square goodness of fit, alarm at p < 0.001): the signature of mislabelled or mis-logged
knob tags.

The scheduled monitors watch the store itself: volume (decisions and signals in the last
``seatbelt.period`` against the mean of the ``baseline_periods`` before it, alert below
``volume_ratio``) and staleness (no ``quality.required`` signal, or none of the reward's
signals, for longer than ``stale_after``). They warn; they do not halt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from flywheel.errors import InvalidInputError
from flywheel.spec import Spec
from flywheel.store import Store

SMALL_SAMPLE = 1_000
P_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class Check:
    """One check's verdict. A failed ``critical`` check stops a learn cycle."""

    name: str
    ok: bool
    critical: bool
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "critical": self.critical,
            "summary": self.summary,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Drift:
    """One drift check: the method used, its statistic, and whether it alarms."""

    method: Literal["chi-square", "ks", "jensen-shannon", "wasserstein"]
    statistic: float
    threshold: float
    alarm: bool
    p_value: float | None = None


def _counts(reference: np.ndarray, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    levels = sorted({*map(str, reference), *map(str, recent)})
    index = {v: i for i, v in enumerate(levels)}
    ref = np.bincount([index[str(v)] for v in reference], minlength=len(levels)).astype(float)
    new = np.bincount([index[str(v)] for v in recent], minlength=len(levels)).astype(float)
    return ref, new


def categorical_drift(
    reference: ArrayLike,
    recent: ArrayLike,
    *,
    p_threshold: float = P_THRESHOLD,
    distance_threshold: float = DISTANCE_THRESHOLD,
) -> Drift:
    """Drift of a categorical column between a reference and a recent window."""
    from scipy import stats  # imported when used: a serving process never needs them
    from scipy.spatial.distance import jensenshannon

    reference = np.asarray(reference, dtype=object)
    recent = np.asarray(recent, dtype=object)
    if not len(reference) or not len(recent):
        raise InvalidInputError("window", "both windows need rows")
    ref, new = _counts(reference, recent)
    if min(len(reference), len(recent)) <= SMALL_SAMPLE:
        if len(ref) < 2:
            return Drift("chi-square", 0.0, p_threshold, False, 1.0)
        table = np.vstack([ref, new])
        table = table[:, table.sum(axis=0) > 0]
        chi2, p, _, _ = stats.chi2_contingency(table)
        return Drift("chi-square", float(chi2), p_threshold, bool(p < p_threshold), float(p))
    distance = float(jensenshannon(ref / ref.sum(), new / new.sum(), base=2))
    return Drift("jensen-shannon", distance, distance_threshold, distance >= distance_threshold)


def numeric_drift(
    reference: ArrayLike,
    recent: ArrayLike,
    *,
    p_threshold: float = P_THRESHOLD,
    distance_threshold: float = DISTANCE_THRESHOLD,
) -> Drift:
    """Drift of a numeric column (a context feature, the reward) between two windows."""
    from scipy import stats  # imported when used: a serving process never needs it

    ref, new = np.asarray(reference, dtype=float), np.asarray(recent, dtype=float)
    if not len(ref) or not len(new):
        raise InvalidInputError("window", "both windows need rows")
    if min(len(ref), len(new)) <= SMALL_SAMPLE:
        result = stats.ks_2samp(ref, new)
        p = float(result.pvalue)
        return Drift("ks", float(result.statistic), p_threshold, p < p_threshold, p)
    scale = float(np.std(ref)) or 1.0
    distance = float(stats.wasserstein_distance(ref, new)) / scale
    return Drift("wasserstein", distance, distance_threshold, distance >= distance_threshold)


def psi(reference: ArrayLike, recent: ArrayLike, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins (0.1: a notable shift)."""
    ref, new = np.asarray(reference, dtype=float), np.asarray(recent, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    a = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    b = np.bincount(np.searchsorted(edges, new, side="right"), minlength=len(edges) + 1) / len(new)
    a, b = np.clip(a, 1e-6, None), np.clip(b, 1e-6, None)
    return float(np.sum((b - a) * np.log(b / a)))


@dataclass(frozen=True)
class SampleRatio:
    """Served counts against the counts the policy's probabilities imply."""

    chi2: float
    p_value: float
    alarm: bool


def sample_ratio_mismatch(
    observed: ArrayLike, expected_share: ArrayLike, threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Chi-square goodness of fit of served counts to the policy's serving probabilities."""
    from scipy import stats  # imported when used: a serving process never needs it

    counts = np.asarray(observed, dtype=float)
    share = np.asarray(expected_share, dtype=float)
    if counts.shape != share.shape or counts.ndim != 1 or len(counts) < 2:
        raise InvalidInputError("observed", "needs one count per expected share, at least two")
    if np.any(share < 0) or share.sum() <= 0:
        raise InvalidInputError("expected_share", "shares must be non-negative and not all zero")
    expected = share / share.sum() * counts.sum()
    keep = expected > 0
    if np.any(counts[~keep] > 0):  # served what the policy never serves: certainly wrong
        return SampleRatio(float("inf"), 0.0, True)
    chi2, p = stats.chisquare(counts[keep], expected[keep])
    return SampleRatio(float(chi2), float(p), bool(p < threshold))


def scheduled(store: Store, spec: Spec, as_of: datetime) -> list[Check]:
    """The volume and staleness monitors as of ``as_of``."""
    return [*_volume(store, spec, as_of), *_staleness(store, spec, as_of)]


def _volume(store: Store, spec: Spec, as_of: datetime) -> list[Check]:
    belt = spec.seatbelt
    period = belt.period_seconds
    start = as_of - timedelta(seconds=period * (belt.baseline_periods + 1))
    out = []
    for table in ("decisions", "signals"):
        rows = store.query(
            # grouped by position: ``GROUP BY k`` would bind a knob or feature named k
            f"""SELECT CAST(floor((epoch($as_of) - epoch(ts)) / {period!r}) AS BIGINT) AS k,
                count(*) AS n
            FROM {table} WHERE ts <= $as_of AND ts > $start GROUP BY 1""",
            {"as_of": as_of, "start": start},
        ).to_pylist()
        oldest = store.query(f"SELECT min(ts) AS t FROM {table}").to_pylist()[0]["t"]
        counts = {int(r["k"]): int(r["n"]) for r in rows}
        if oldest is None:
            continue
        history = int((as_of - oldest).total_seconds() // period)  # full periods before this
        baseline_periods = min(belt.baseline_periods, history)
        if baseline_periods < 1:
            out.append(Check(f"volume.{table}", True, False, "not judged: under one period old"))
            continue
        total = sum(counts.get(k, 0) for k in range(1, baseline_periods + 1))
        baseline = total / baseline_periods
        current = counts.get(0, 0)
        ok = current >= belt.volume_ratio * baseline
        summary = (
            f"{current:,} {table} in the last period vs {baseline:,.1f} per period before"
            f" ({current / baseline:.0%})"
            if baseline
            else f"{current:,} {table} in the last period; none before"
        )
        detail = {"current": current, "baseline": baseline, "periods": baseline_periods}
        out.append(Check(f"volume.{table}", ok, False, summary, detail))
    return out


def _staleness(store: Store, spec: Spec, as_of: datetime) -> list[Check]:
    names = spec.quality.required or spec.reward.signals
    if not names:
        return []
    rows = store.query(
        "SELECT name, max(ts) AS last FROM signals WHERE ts <= $as_of GROUP BY name",
        {"as_of": as_of},
    ).to_pylist()
    last = {r["name"]: r["last"] for r in rows}
    first_decision = store.query("SELECT min(ts) AS t FROM decisions").to_pylist()[0]["t"]
    limit = timedelta(seconds=spec.seatbelt.stale_after_seconds)
    out = []
    for name in names:
        seen = last.get(name)
        if seen is None:
            ok = first_decision is None or as_of - first_decision <= limit
            summary = f"no {name} signal received yet"
        else:
            ok = as_of - seen <= limit
            summary = f"last {name} signal {_ago(as_of - seen)} ago"
        out.append(Check(f"staleness.{name}", ok, False, summary))
    return out


def _ago(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
