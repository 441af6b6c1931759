"""From posterior to policy: per-segment serving tables.

Thompson sampling over a fixed set of posterior draws: each draw picks the best allowed
combination for the segment, and the share of draws that pick a combination is its Thompson
probability. That probability is mixed with a uniform floor (so every allowed combination
keeps some chance: off-policy estimates need it) and, optionally, capped (so at most
``cap`` of the traffic goes to combinations other than the current best). Serving then draws
from this exact distribution, so every decision's propensity is known when it is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from flywheel.learn.model import Posterior


@dataclass(frozen=True)
class SegmentPolicy:
    """How one context segment is served: ``probs`` over ``rows`` (allowed combinations)."""

    rows: np.ndarray  # row numbers into the spec's combination space
    probs: np.ndarray  # serving probability of each row; sums to 1
    best: int  # position in ``rows`` of the combination with the best posterior mean
    mean: np.ndarray  # expected reward of each row
    low: np.ndarray  # 95% interval of the expected reward
    high: np.ndarray
    cumulative: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cum = np.cumsum(self.probs)
        if len(cum):
            cum[-1] = 1.0
        object.__setattr__(self, "cumulative", cum)


def segment_policy(
    posterior: Posterior,
    knob_codes: np.ndarray,
    rows: np.ndarray,
    context_codes: Mapping[str, int],
    draws: np.ndarray,
    floor: float,
    cap: float,
) -> SegmentPolicy:
    """The serving table of one segment.

    ``knob_codes`` are the space's code rows (one column per knob, in design order), ``rows``
    the allowed ones for this segment, ``draws`` posterior samples ``(m, size)``.
    """
    if len(rows) == 0:  # the rules allow nothing here: decide refuses such contexts
        empty = np.zeros(0)
        return SegmentPolicy(rows, empty, -1, empty, empty, empty)
    design = posterior.design
    codes: dict[str, np.ndarray | int] = dict(context_codes)
    for i, knob in enumerate(design.knobs):
        codes[knob] = knob_codes[rows, i]
    x = design.matrix(codes, len(rows))
    eta = x @ posterior.mean
    sd = np.sqrt(np.maximum(_variances(x, posterior.cov), 0.0))
    mean = posterior.response(eta)
    low, high = posterior.response(eta - 1.96 * sd), posterior.response(eta + 1.96 * sd)
    best = int(np.argmax(eta))
    winners = _winners(x, draws)
    thompson = np.bincount(winners, minlength=len(rows)) / draws.shape[0]
    probs = _floor_and_cap(thompson, best, floor, cap)
    return SegmentPolicy(rows, probs, best, mean, low, high)


def _variances(x: sp.csr_matrix, cov: np.ndarray, budget: int = 4_000_000) -> np.ndarray:
    """The posterior variance of each row's linear predictor, x Σ xᵀ, in bounded chunks."""
    step = max(1, budget // cov.shape[0])
    parts = []
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step]
        parts.append(np.einsum("ij,ij->i", chunk @ cov, chunk.toarray()))
    return np.concatenate(parts) if parts else np.zeros(0)


def _winners(x: sp.csr_matrix, draws: np.ndarray, budget: int = 4_000_000) -> np.ndarray:
    """For each draw, the row with the highest score; scored in chunks of rows so memory
    stays bounded (``budget`` scores at a time) however large the space."""
    m = draws.shape[0]
    step = max(1, budget // m)
    best_score = np.full(m, -np.inf)
    best_row = np.zeros(m, dtype=np.int64)
    for start in range(0, x.shape[0], step):
        scores = x[start : start + step] @ draws.T  # (chunk, m)
        top = np.argmax(scores, axis=0)
        value = scores[top, np.arange(m)]
        better = value > best_score
        best_score[better] = value[better]
        best_row[better] = top[better] + start
    return best_row


def _floor_and_cap(thompson: np.ndarray, best: int, floor: float, cap: float) -> np.ndarray:
    probs = thompson.astype(float)
    others = 1.0 - probs[best]
    if others > cap:  # cap the traffic that goes to anything but the current best
        scale = cap / others
        probs *= scale
        probs[best] = 1.0 - cap
    probs = (1.0 - floor) * probs + floor / len(probs)
    result: np.ndarray = probs / probs.sum()
    return result
