"""Learning type: does data pooled from other units help a unit the wheel has never seen?

Held-out units: the units are split in :data:`FOLDS` folds by their pseudonym. For each fold,
a policy is learned from the first *n* complete rows of the other folds' units (per segment,
the combination with the best shrunk mean less its standard error) and valued on the held-out
units' rows: per segment, the held-out mean of the combination it picks, against the mean
over combinations (a uniform choice), weighed by the segment's share of held-out rows
(segments where the pick has fewer than :data:`MIN_CELL` held-out rows are left out). The
learning curve is that gain against *n*. Its interval is clustered by unit (a unit's rows are not
independent). ``network``: the gain with every row is above zero at 99% (at 95% the
interval, narrow with few units a fold, said so on 10% of worlds with nothing to pool);
``individual``: it
is below a tenth of the rewards' spread at 95% (what one unit teaches does not carry to
others); ``unknown`` otherwise. The figure is the gain at n = 1,000 rows from other units
(none with fewer).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from flywheel.health.rate import Z95

FOLDS = 4
SHRINK = 10.0  # rows of prior weight toward the overall mean, per combination
MIN_UNITS = 20
MIN_ROWS = 200
MIN_CELL = 20  # held-out rows a picked combination needs in a segment for it to be valued
MARGIN = 0.1  # "individual" needs the gain below this share of the rewards' spread, at 95%
Z_NETWORK = 2.576  # "network" needs the gain above zero at 99% (see the module's note)
GRID = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000)


@dataclass(frozen=True)
class CurvePoint:
    rows: int  # rows from other units the policy learned from
    gain: float
    low: float
    high: float


@dataclass(frozen=True)
class LearningType:
    kind: Literal["network", "individual", "unknown"]
    gain_per_1000: float | None  # the gain at 1,000 rows (None: fewer rows than that)
    gain: float | None  # with every row from other units
    low: float | None
    high: float | None
    units: int
    rows: int
    curve: tuple[CurvePoint, ...]
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fold(unit: str) -> int:
    try:
        return int(unit[-1], 16) % FOLDS
    except ValueError:
        return zlib.crc32(unit.encode()) % FOLDS


def learning_type(rows: pa.Table, knobs: list[str]) -> LearningType:
    """From :func:`flywheel.health.sql.sample_sql`'s rows (in decision order)."""
    unit_codes, names = _encoded(rows.column("unit"))
    distinct = len(names)
    if distinct < MIN_UNITS or rows.num_rows < MIN_ROWS:
        return LearningType(
            "unknown",
            None,
            None,
            None,
            None,
            distinct,
            rows.num_rows,
            (),
            f"Needs at least {MIN_UNITS} units and {MIN_ROWS} complete rows with a unit"
            f" ({distinct} and {rows.num_rows:,} here).",
        )
    fold = np.array([_fold(str(u)) for u in names])[unit_codes]
    combos = np.zeros(rows.num_rows, dtype=np.int64)
    for k in knobs:  # the combination as a mixed-radix number of the knobs' value codes
        codes, levels = _encoded(rows.column(k))
        combos = combos * len(levels) + codes
    combos = np.unique(combos, return_inverse=True)[1].ravel()
    segments = _encoded(rows.column("segment"))[0]
    reward = rows.column("reward").to_numpy(zero_copy_only=False).astype(float)
    shape = (int(segments.max()) + 1, int(combos.max()) + 1)
    total = len(reward)
    largest = max(int((fold != f).sum()) for f in range(FOLDS))
    grid = sorted({n for n in GRID if n < largest} | {largest})
    tests = [_Cells(fold == f, segments, combos, reward, unit_codes, shape) for f in range(FOLDS)]
    curve = []
    for n in grid:
        gain = var = share_sum = 0.0
        for f, test in enumerate(tests):
            train = np.flatnonzero(fold != f)[:n]
            found = test.gain(_policy(train, combos, segments, reward, shape))
            if found is None:
                continue  # no segment of this fold can value the pick
            share = test.rows / total
            gain, var, share_sum = (
                gain + share * found[0],
                var + share**2 * found[1],
                share_sum + share,
            )
        if share_sum == 0:
            continue
        gain, se = gain / share_sum, math.sqrt(var) / share_sum
        curve.append(CurvePoint(n, gain, gain - Z95 * se, gain + Z95 * se))
    if not curve:
        return LearningType(
            "unknown", None, None, None, None, distinct, total, (),
            f"The held-out units' rows cannot value a policy: no segment has {MIN_CELL} of"
            " them on the combination the other units' data picks.",
        )  # fmt: skip
    last = curve[-1]
    at = next((p for p in curve if p.rows == 1000), None)
    per_1000 = at.gain if at is not None else None
    margin = MARGIN * float(reward.std())
    kind: Literal["network", "individual", "unknown"]
    if last.gain - Z_NETWORK * (last.gain - last.low) / Z95 > 0:
        kind, verdict = "network", "pooled data helps a unit never seen"
    elif last.high < margin:
        kind = "individual"
        verdict = (
            f"pooled data does not carry to new units (the gain is below {margin:.3g}, a tenth"
            " of the rewards' spread, at 95%): each unit's best is its own"
        )
    else:
        kind, verdict = "unknown", "not enough evidence either way yet"
    figure = (
        f"{per_1000:+.4g} in result per 1,000 rows from other units"
        if per_1000 is not None
        else f"fewer than 1,000 rows from other units ({last.rows:,})"
    )
    text = (
        f"Learning type {kind}: {verdict}. A unit never seen gains {figure}; {last.gain:+.4g}"
        f" with all {last.rows:,} (95% {last.low:+.4g} to {last.high:+.4g}), on {distinct:,}"
        f" units held out in {FOLDS} folds."
    )
    return LearningType(
        kind, per_1000, last.gain, last.low, last.high, distinct, total, tuple(curve), text
    )


def _encoded(column: pa.ChunkedArray[Any]) -> tuple[np.ndarray, list[Any]]:
    """A column's values as codes 0..k-1 (nulls one more value), and the k values."""
    encoded = column.combine_chunks().dictionary_encode(null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


class _Cells:
    """The held-out rows of one fold, as per-(segment, combination) counts and sums, and the
    units they belong to (what is sampled is units: a unit's rows are not independent)."""

    def __init__(
        self,
        rows: np.ndarray,
        segments: np.ndarray,
        combos: np.ndarray,
        reward: np.ndarray,
        units: np.ndarray,
        shape: tuple[int, int],
    ) -> None:
        self.cell = segments[rows] * shape[1] + combos[rows]
        self.reward = reward[rows]
        self.units = np.unique(units[rows], return_inverse=True)[1].ravel()
        self.shape = shape
        size = shape[0] * shape[1]
        self.rows = int(rows.sum())
        self.n = np.bincount(self.cell, minlength=size).reshape(shape).astype(float)
        self.sum = np.bincount(self.cell, weights=self.reward, minlength=size).reshape(shape)
        seen = self.n > 0
        self.mean = np.where(seen, self.sum / np.where(seen, self.n, 1), 0.0)

    def gain(self, pick: np.ndarray) -> tuple[float, float] | None:
        """The policy ``pick`` (a combination per segment) against a uniform choice, on the
        segments where the held-out rows include the picked combination at least
        :data:`MIN_CELL` times: the difference of the two post-stratified means, and its
        variance clustered by unit (each unit's summed contribution, squared). ``None`` when
        no segment qualifies."""
        seen = self.n > 0
        index = np.arange(len(pick))
        keep = self.n[index, pick] >= MIN_CELL
        weight = np.where(keep, self.n.sum(axis=1), 0.0)
        if weight.sum() == 0:
            return None
        weight = weight / weight.sum()
        uniform = np.where(seen, 1.0, 0.0) / np.maximum(seen.sum(axis=1, keepdims=True), 1)
        chosen = np.zeros_like(self.n)
        chosen[index[keep], pick[keep]] = 1.0
        coef = weight[:, None] * (chosen - uniform)
        gain = float((coef * self.mean).sum())
        # gain = sum over rows of coef[cell] / n[cell] * reward: each row's share of it
        per_row = (coef / np.where(seen, self.n, 1.0)).ravel()[self.cell]
        residual = self.reward - self.mean.ravel()[self.cell]
        by_unit = np.bincount(self.units, weights=per_row * residual)
        return gain, float((by_unit**2).sum())


def _policy(
    train: np.ndarray,
    combos: np.ndarray,
    segments: np.ndarray,
    reward: np.ndarray,
    shape: tuple[int, int],
) -> np.ndarray:
    """Per segment, the combination with the best shrunk mean over the ``train`` rows, less
    one standard error (so a combination seen twice does not beat one seen a hundred times;
    where a segment has no rows, the overall best)."""
    n_segments, n_combos = shape
    c, s, r = combos[train], segments[train], reward[train]
    mean = float(r.mean()) if len(r) else 0.0
    overall_n = np.bincount(c, minlength=n_combos).astype(float)
    overall_s = np.bincount(c, weights=r, minlength=n_combos)
    overall = (overall_s + SHRINK * mean) / (overall_n + SHRINK)
    cell = s * n_combos + c
    n = np.bincount(cell, minlength=n_segments * n_combos).reshape(n_segments, n_combos)
    total = np.bincount(cell, weights=r, minlength=n_segments * n_combos).reshape(
        n_segments, n_combos
    )
    shrunk = (total + SHRINK * overall[None, :]) / (n + SHRINK)
    spread = float(r.std()) if len(r) > 1 else 0.0
    pick: np.ndarray = (shrunk - spread / np.sqrt(n + SHRINK)).argmax(axis=1)  # well-supported
    return pick
