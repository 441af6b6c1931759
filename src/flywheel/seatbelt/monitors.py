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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from scipy.spatial.distance import jensenshannon

from flywheel.errors import InvalidInputError

SMALL_SAMPLE = 1_000
P_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
SRM_THRESHOLD = 0.001


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


def categorical_drift(reference: ArrayLike, recent: ArrayLike) -> Drift:
    """Drift of a categorical column between a reference and a recent window."""
    reference = np.asarray(reference, dtype=object)
    recent = np.asarray(recent, dtype=object)
    if not len(reference) or not len(recent):
        raise InvalidInputError("window", "both windows need rows")
    ref, new = _counts(reference, recent)
    if min(len(reference), len(recent)) <= SMALL_SAMPLE:
        if len(ref) < 2:
            return Drift("chi-square", 0.0, P_THRESHOLD, False, 1.0)
        table = np.vstack([ref, new])
        table = table[:, table.sum(axis=0) > 0]
        chi2, p, _, _ = stats.chi2_contingency(table)
        return Drift("chi-square", float(chi2), P_THRESHOLD, bool(p < P_THRESHOLD), float(p))
    distance = float(jensenshannon(ref / ref.sum(), new / new.sum(), base=2))
    return Drift("jensen-shannon", distance, DISTANCE_THRESHOLD, distance >= DISTANCE_THRESHOLD)


def numeric_drift(reference: ArrayLike, recent: ArrayLike) -> Drift:
    """Drift of a numeric column (a context feature, the reward) between two windows."""
    ref, new = np.asarray(reference, dtype=float), np.asarray(recent, dtype=float)
    if not len(ref) or not len(new):
        raise InvalidInputError("window", "both windows need rows")
    if min(len(ref), len(new)) <= SMALL_SAMPLE:
        result = stats.ks_2samp(ref, new)
        p = float(result.pvalue)
        return Drift("ks", float(result.statistic), P_THRESHOLD, p < P_THRESHOLD, p)
    scale = float(np.std(ref)) or 1.0
    distance = float(stats.wasserstein_distance(ref, new)) / scale
    return Drift("wasserstein", distance, DISTANCE_THRESHOLD, distance >= DISTANCE_THRESHOLD)


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


def sample_ratio_mismatch(observed: ArrayLike, expected_share: ArrayLike) -> SampleRatio:
    """Chi-square goodness of fit of served counts to the policy's serving probabilities."""
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
    return SampleRatio(float(chi2), float(p), bool(p < SRM_THRESHOLD))
