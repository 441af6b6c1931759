"""How much the rows before a change of the world should still weigh
(``[learn] half_life = "auto"``).

When the seatbelt finds that the world changed, the rows before the change point are
forgotten as far as the rows after it ask: the rows after it (in decision order, in CHUNKS
chunks) are predicted chunk by chunk from the rows before each chunk, the rows before the
change point weighed by each candidate weight; each cell's (context segment and combination)
rate is predicted from its weighed rows with PRIOR_ROWS rows' worth of the served model's
prediction for it (a Beta-binomial; a normal predictive for rewards outside [0, 1]). Only
cells with CELL_ROWS rows before a chunk are judged: in thinner ones, fewer rows mostly mean
more weight on the model, which predicts better whether the world moved or not. A smaller
weight is used only when it predicts better than the full one by MARGIN nats: a real change
makes the old rows mislead, and they fade; a change found by chance (results that moved
as they sometimes do) is not borne out by the rows after it, and nothing is forgotten.

The same prediction finds a drift no level shows alone (:func:`flywheel.playbook.publish`
looks, each cycle, for the split of the rows since the last change where forgetting the rows
before it gains a larger margin): the world is forgotten as it moves.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from scipy.special import betaln

CHUNKS = 4  # the rows after the change point are predicted in this many chunks
PRIOR_ROWS = 2.0
MARGIN = 3.0  # nats (log-likelihood) a smaller weight must gain over the full one
CELL_ROWS = 30  # a cell is judged once it has this many rows before the chunk predicted
MOST_STEPS = 8  # changes the learner keeps apart; beyond, the two oldest merge

Steps = tuple[tuple[datetime, float], ...]
"""How the learner weighs the rows before the changes of the world it forgot, oldest first:
a row decided up to a step's moment (and after the step before) weighs the step's weight."""


def weighed(moments: np.ndarray, steps: Steps) -> np.ndarray:
    """Each row's weight by ``steps``, from its decision time (``moments``: seconds since the
    epoch)."""
    weight = np.ones(len(moments))
    for moment, share in reversed(steps):  # the earliest step covering a row wins
        weight[moments <= moment.timestamp()] = share
    return weight


def chained(steps: Steps, at: datetime, weight: float) -> Steps:
    """The steps once the rows decided up to ``at`` (a change of the world) weigh ``weight``
    times what they weighed: a later change never gives back what an earlier one took.
    Beyond MOST_STEPS steps the two oldest merge at the lower weight (the rows between them
    forgotten as much as the rows before)."""
    if weight >= 1:
        return steps
    before = [(moment, share * weight) for moment, share in steps if moment <= at]
    after = [(moment, share) for moment, share in steps if moment > at]
    if not before or before[-1][0] < at:
        before.append((at, (after[0][1] if after else 1.0) * weight))
    out = [*before, *after]
    while len(out) > MOST_STEPS:
        out = [(out[1][0], min(out[0][1], out[1][1])), *out[2:]]
    return tuple(out)


def forget_weight(
    cell: np.ndarray,
    reward: np.ndarray,
    prior: np.ndarray,
    before: int,
    least: float,
    margin: float = MARGIN,
    base: np.ndarray | None = None,
) -> tuple[float, dict[float, float]]:
    """How much the rows before a change point (the first ``before`` of these rows, in
    decision order) should still weigh, between ``least`` and 1: the weight with which they,
    beside the rows already seen after the point, best predict the rows after it (in
    CHUNKS chunks). 1 unless a smaller weight gains ``margin`` nats: a change the rows
    after it do not bear out (results that moved by chance) forgets nothing. Returns the
    weight and each candidate's gain over 1. ``cell`` numbers each row's cell,
    ``reward`` is its result and ``prior`` the served model's expected result; ``base``
    is what each row weighs already (earlier changes forgotten; default 1), and the weight
    found multiplies it."""
    after = len(reward) - before
    if before < 1 or after < CHUNKS or least >= 1:
        return 1.0, {}
    candidates = [1.0, *(0.5**k for k in range(1, 12) if 0.5**k > least), least]
    bounds = np.linspace(before, len(reward), CHUNKS + 1).astype(int)
    size = int(cell.max()) + 1
    expected = _per_cell(cell, prior, size)
    unit = bool(np.all((reward >= 0) & (reward <= 1)))
    base = np.ones(len(reward)) if base is None else base
    scores: dict[float, float] = {}
    for weight in candidates:
        total = 0.0
        for k in range(CHUNKS):
            start, end = bounds[k], bounds[k + 1]
            weights = np.where(np.arange(start) < before, weight, 1.0) * base[:start]
            past = (cell[:start], reward[:start], weights)
            total += (_binary if unit else _normal)(
                past, (cell[start:end], reward[start:end]), expected
            )
        scores[weight] = total
    gains = {w: s - scores[1.0] for w, s in scores.items() if w != 1.0}
    best = max(gains, key=lambda w: gains[w])
    return (best if gains[best] > margin else 1.0), gains


def _per_cell(cell: np.ndarray, prior: np.ndarray, size: int) -> np.ndarray:
    """Each cell's mean expected result."""
    count = np.maximum(np.bincount(cell, minlength=size), 1)
    out: np.ndarray = np.bincount(cell, prior, size) / count
    return out


def _binary(
    past: tuple[np.ndarray, np.ndarray, np.ndarray],
    now: tuple[np.ndarray, np.ndarray],
    expected: np.ndarray,
) -> float:
    """Log-likelihood of the new results in the cells judged, each cell a Beta-binomial of
    its weighed past and PRIOR_ROWS rows at its ``expected`` rate."""
    cell, reward, weight = past
    size = len(expected)
    n = np.bincount(cell, weight, size)
    s = np.bincount(cell, weight * reward, size)
    rate = np.clip(expected, 1e-6, 1 - 1e-6)
    a, b = s + PRIOR_ROWS * rate, n - s + PRIOR_ROWS * (1 - rate)
    new_n = np.bincount(now[0], minlength=size).astype(float)
    new_s = np.bincount(now[0], now[1], size)
    judged = (new_n > 0) & (np.bincount(cell, minlength=size) >= CELL_ROWS)
    a, b, new_n, new_s = a[judged], b[judged], new_n[judged], new_s[judged]
    return float((betaln(a + new_s, b + new_n - new_s) - betaln(a, b)).sum())


def _normal(
    past: tuple[np.ndarray, np.ndarray, np.ndarray],
    now: tuple[np.ndarray, np.ndarray],
    expected: np.ndarray,
) -> float:
    """Log-likelihood of the new results in the cells judged, each normal around its cell's
    weighed past mean (with PRIOR_ROWS rows at its ``expected`` result), with the past's
    spread and the mean's uncertainty."""
    cell, reward, weight = past
    size = len(expected)
    n = np.bincount(cell, weight, size)
    s = np.bincount(cell, weight * reward, size)
    mean = (s + PRIOR_ROWS * expected) / (n + PRIOR_ROWS)
    residual = reward - mean[cell]
    spread = max(float(weight @ residual**2 / max(weight.sum(), 1e-12)), 1e-12)
    judged = np.bincount(cell, minlength=size)[now[0]] >= CELL_ROWS
    now = (now[0][judged], now[1][judged])
    variance = spread * (1 + 1 / (n[now[0]] + PRIOR_ROWS))
    squares = (now[1] - mean[now[0]]) ** 2 / variance
    return float(-0.5 * (np.log(2 * np.pi * variance) + squares).sum())
