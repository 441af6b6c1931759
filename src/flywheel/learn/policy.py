"""From posterior to policy: per-segment serving tables.

Thompson sampling over a fixed set of posterior draws: each draw picks the best allowed
combination for the segment, and the share of draws that pick a combination is its Thompson
probability. The draws are narrower than the posterior, so near-ties and thin data take
less traffic; a share of them may keep its full width
(:func:`flywheel.learn.model.draw_spreads`), so that under a narrower core a combination
that looks poor but may be far better keeps its chance. That probability is mixed with a
uniform floor (so every allowed combination keeps some chance: off-policy estimates need
it) and, optionally, capped (so at most ``cap`` of the traffic goes to combinations other
than the current best). Serving then draws from this exact distribution, so every
decision's propensity is known when it is served.

With ``optimistic`` the sampling is optimistic (May, Korda, Lee and Leslie, "Optimistic
Bayesian Sampling in Contextual-Bandit Problems", JMLR 2012): a draw scores each combination
at least at its posterior mean, so a combination wins a draw only where it could beat the
current best, and the best no longer loses draws to its own bad luck. Many combinations that
are each a little plausible (thin data, rare rewards) then take less of the traffic, while
one that may truly be better keeps its chance. The price is the seatbelt's: a level served
rarely leaves it little to judge that level's results by when they go wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    spread: float = 1.0,
    optimistic: bool = False,
) -> SegmentPolicy:
    """The serving table of one segment.

    ``knob_codes`` are the space's code rows (one column per knob, in design order), ``rows``
    the allowed ones for this segment, ``draws`` posterior samples as columns, ``(size, m)``,
    whose deviation from the mean was scaled by ``spread`` (its root mean square, where the
    draws' spreads differ: :func:`flywheel.learn.model.draw_width`). The intervals are exact
    for a dense posterior; a sparse one (thousands of parameters) reads them off the draws, to
    within a few percent of their width (512 draws: ±3%). ``optimistic``: each draw scores a
    row at least at its posterior mean (optimistic Bayesian sampling).
    """
    tables = segment_policies(
        posterior, knob_codes, [rows], [context_codes], draws, floor, cap, spread, optimistic
    )
    return tables[0]


def segment_policies(
    posterior: Posterior,
    knob_codes: np.ndarray,
    allowed: Sequence[np.ndarray],
    contexts: Sequence[Mapping[str, int]],
    draws: np.ndarray,
    floor: float,
    cap: float,
    spread: float = 1.0,
    optimistic: bool = False,
    budget: int = 4_000_000,
) -> list[SegmentPolicy]:
    """The serving tables of many segments at once (see :func:`segment_policy`): their rows
    are scored together, in batches of at most ``budget`` scores, which is what makes
    tabulating thousands of segments of a big design take a second rather than many."""
    design = posterior.design
    m = draws.shape[1]
    sizes = np.array([len(r) for r in allowed], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    everything = np.concatenate(allowed) if len(allowed) else np.zeros(0, dtype=np.int64)
    codes: dict[str, np.ndarray | int] = {
        f: np.repeat([c[f] for c in contexts], sizes).astype(np.int64) for f in design.context
    }
    for i, knob in enumerate(design.knobs):
        codes[knob] = knob_codes[everything, i]
    x = design.matrix(codes, len(everything))
    eta = x @ posterior.mean
    # exact intervals from a dense covariance; a sparse posterior's are read off the draws
    exact = None if posterior.sparse else posterior.variances(x)
    if draws.dtype != x.dtype:  # score in the draws' own precision, without a copy of them
        x = x.astype(draws.dtype)
    tables: list[SegmentPolicy] = []
    first = 0
    while first < len(allowed):
        last = first + 1  # the segments scored together: at least one, within the budget
        while last < len(allowed) and (bounds[last + 1] - bounds[first]) * m <= budget:
            last += 1
        lo, hi = int(bounds[first]), int(bounds[last])
        batch = x[lo:hi] @ draws if (hi - lo) * m <= budget else None  # else: one, in chunks
        for k in range(first, last):
            a, b = int(bounds[k]), int(bounds[k + 1])
            if a == b:  # the rules allow nothing here: decide refuses such contexts
                empty = np.zeros(0)
                tables.append(SegmentPolicy(allowed[k], empty, -1, empty, empty, empty))
                continue
            scores = None if batch is None else batch[a - lo : b - lo]
            floors = eta[a:b] if optimistic else None
            winners, spreads = _winners(x[a:b], draws, budget, exact is None, scores, floors)
            sd = np.sqrt(np.maximum(exact[a:b], 0.0)) if exact is not None else spreads / spread
            mean = posterior.response(eta[a:b])
            low = posterior.response(eta[a:b] - 1.96 * sd)
            high = posterior.response(eta[a:b] + 1.96 * sd)
            best = int(np.argmax(eta[a:b]))
            thompson = np.bincount(winners, minlength=b - a) / m
            probs = _floor_and_cap(thompson, best, floor, cap)
            tables.append(SegmentPolicy(allowed[k], probs, best, mean, low, high))
        first = last
    return tables


def _winners(
    x: sp.csr_matrix,
    draws: np.ndarray,
    budget: int,
    spreads: bool,
    scores: np.ndarray | None = None,
    floors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each draw, the row with the highest score, and (if ``spreads``) each row's
    standard deviation of its score over the draws. Rows are scored in chunks so memory
    stays bounded (``budget`` scores at a time) however large the space, unless their
    ``scores`` are given. ``floors``: each row's lowest score (its posterior mean, for
    optimistic sampling); the spreads are those of the draws themselves."""
    m = draws.shape[1]
    step = max(1, budget // m)
    best_score = np.full(m, -np.inf)
    best_row = np.zeros(m, dtype=np.int64)
    deviations = np.zeros(x.shape[0])
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step] @ draws if scores is None else scores  # (chunk, m)
        if spreads and m > 1:
            deviations[start : start + len(chunk)] = np.std(chunk, axis=1, ddof=1)
        if floors is not None:
            low = floors[start : start + len(chunk), None].astype(chunk.dtype, copy=False)
            chunk = np.maximum(chunk, low)
        top = np.argmax(chunk, axis=0)
        value = chunk[top, np.arange(m)]
        better = value > best_score
        best_score[better] = value[better]
        best_row[better] = top[better] + start
        if scores is not None:
            break
    return best_row, deviations


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
