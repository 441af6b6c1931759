"""The negative-loop guard: is a newly published version doing worse live than the one before?

The comparison is a mixture sequential probability ratio test (mSPRT; Johari, Pekelis and
Walsh, "Always valid inference", 2017) on the difference of mean rewards, with a normal
approximation. Its p-value and confidence interval stay valid however often they are looked
at, so the guard can check after every batch of results without inflating false alarms the way
a repeated fixed-sample test would.

With ``theta`` the observed difference (new minus old), ``V`` its variance and ``tau²`` the
mixing variance (the size of effect the test is tuned to), the mixture likelihood ratio is

    Λ = sqrt(V / (V + tau²)) · exp(theta² tau² / (2 V (V + tau²)))

and ``p = min(1, 1/Λ)``; the confidence sequence is theta ± sqrt(V (V + tau²) / tau² ·
(log((V + tau²) / V) - 2 log alpha)).

Whatever ``tau``, the test stays valid; what it sets is which drops it finds soonest: Λ is
largest for a drop ``theta`` when ``tau² = theta² - V``. A version is live for one learn
cycle, often a few hundred results, and the drops those can show are a few tenths of the
reward's standard deviation; a drop of a tenth needs thousands. So ``TAU`` is tuned to a
quarter: against a tenth, a drop of 0.4 standard deviations needs about 30% fewer results
per version (170 against 240, at 1%), and a drop of 0.1 about 8% more (2,770 against 2,560).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike

from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.playbook.book import Playbook
from flywheel.rules import quote_name
from flywheel.seatbelt.gate import context_codes, predict
from flywheel.spec import Spec
from flywheel.store import Store

TAU = 0.25  # mixing scale, in standard deviations of the reward: tuned to drops of that size


@dataclass(frozen=True)
class Sequential:
    """An always-valid comparison of two streams of rewards."""

    difference: float  # mean(new) - mean(old)
    low: float
    high: float
    p_value: float
    n_new: int
    n_old: int

    @property
    def drop(self) -> bool:
        """The new stream is worse, significantly: the whole interval is below zero."""
        return self.high < 0

    def as_dict(self) -> dict[str, float]:
        return {
            "difference": round(self.difference, 6),
            "low": round(self.low, 6),
            "high": round(self.high, 6),
            "p_value": round(self.p_value, 6),
            "n_new": self.n_new,
            "n_old": self.n_old,
        }


def msprt(
    new: ArrayLike,
    old: ArrayLike,
    alpha: float = 0.05,
    tau: float = TAU,
    *,
    adjust: tuple[float, float] = (0.0, 0.0),
) -> Sequential:
    """Compare the mean of ``new`` with the mean of ``old`` (each needs two values or more).

    ``adjust`` (an estimate and its variance) is subtracted from the difference: the change
    of the results over time that both streams would have seen (see :func:`live`)."""
    a, b = np.asarray(new, dtype=float), np.asarray(old, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return Sequential(0.0, -math.inf, math.inf, 1.0, len(a), len(b))
    theta = float(a.mean() - b.mean()) - adjust[0]
    pooled = float(np.concatenate([a - a.mean(), b - b.mean()]).std()) or 1e-9
    variance = float(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) + adjust[1]
    variance = max(variance, 1e-18)
    mix = (tau * pooled) ** 2
    log_ratio = 0.5 * math.log(variance / (variance + mix)) + theta**2 * mix / (
        2 * variance * (variance + mix)
    )
    p = 1.0 if log_ratio <= 0 else min(1.0, math.exp(-log_ratio))
    half = math.sqrt(
        variance
        * (variance + mix)
        / mix
        * (math.log((variance + mix) / variance) - 2 * math.log(alpha))
    )
    return Sequential(theta, theta - half, theta + half, p, len(a), len(b))


def live(
    store: Store,
    spec: Spec,
    as_of: datetime,
    new: int,
    old: int,
    since: datetime,
    arbiter: Callable[[], Playbook | None] | None = None,
) -> Sequential:
    """The live rewards of playbook version ``new`` against those of ``old`` (which was
    published after ``since``: older decisions are not read), as if on the same period.

    The two versions served one after the other, so a change of the world between their
    periods (everyone's results fell) would pass for a worse version. That change is measured
    where it shows without the versions' choices: in the cells (context and combination)
    both served, the mean change of the results between the periods (each cell weighed by
    its precision), and taken out of the difference, its uncertainty added to the test's.

    Unless the versions' choices explain the drop. When ``new`` is an older version restored
    in place of one learned from more rows, ``arbiter`` loads that better-informed model: it
    predicts what each version's served rows earn, context segment by context segment (a
    change in the mix of contexts is not a choice); when it foresees at least half the drop
    seen, the versions are compared as they are. Where they share few cells (a near-uniform
    version after a focused one) the change's estimate is loose, and taking it out would
    leave such a version live until the next cycle replaced it."""
    factors = ", ".join(
        quote_name(n) for n in (*(f.name for f in spec.context), *(k.name for k in spec.knobs))
    )
    table = store.query(
        f"""SELECT playbook, reward, {factors} FROM ({aligned_rows_sql(spec, since=True)}) a
        WHERE reward IS NOT NULL AND playbook IN ($new, $old) AND {NOT_QUARANTINED}""",
        {"as_of": as_of, "new": new, "old": old, "since": since},
    )
    version = table.column("playbook").to_numpy()
    reward = table.column("reward").to_numpy()
    is_new = version == new
    shift = _common_shift(table, reward, is_new)
    seen = float(reward[is_new].mean() - reward[~is_new].mean()) if shift[1] else 0.0
    judge = arbiter() if arbiter is not None and seen < 0 else None  # a drop to take out
    if judge is not None and _foreseen(judge, table, is_new) <= seen / 2:
        shift = (0.0, 0.0)  # the choices explain half of it or more
    return msprt(reward[is_new], reward[~is_new], spec.seatbelt.guard_alpha, adjust=shift)


def _foreseen(judge: Playbook, table: pa.Table, is_new: np.ndarray) -> float:
    """The difference ``judge``'s model expects between the two versions' served rows, within
    each context segment both served (weighed by the new version's rows)."""
    expected = predict(judge, table)
    codes = list(context_codes(judge, table).values())
    segment = np.zeros(table.num_rows, dtype=np.int64)
    if codes:
        segment = np.unique(np.column_stack(codes), axis=0, return_inverse=True)[1].ravel()
    size = int(segment.max()) + 1
    n_new = np.bincount(segment[is_new], minlength=size)
    n_old = np.bincount(segment[~is_new], minlength=size)
    both = (n_new > 0) & (n_old > 0)
    if not both.any():
        return 0.0
    mean_new = np.bincount(segment[is_new], expected[is_new], size)[both] / n_new[both]
    mean_old = np.bincount(segment[~is_new], expected[~is_new], size)[both] / n_old[both]
    return float(n_new[both] @ (mean_new - mean_old) / n_new[both].sum())


def _common_shift(table: pa.Table, reward: np.ndarray, is_new: np.ndarray) -> tuple[float, float]:
    """The mean change of the results between the two periods within the cells both served,
    and its variance; (0, 0) when they share no cell."""
    if table.num_rows < 4 or not is_new.any() or is_new.all():
        return 0.0, 0.0
    key = table.drop_columns(["playbook", "reward"])
    codes = [
        np.unique(np.asarray(c.to_pylist(), dtype=str), return_inverse=True)[1].ravel()
        for c in key.columns
    ]
    _, cell = np.unique(np.column_stack(codes), axis=0, return_inverse=True)
    cell = cell.ravel()
    size = int(cell.max()) + 1
    n_new = np.bincount(cell[is_new], minlength=size)
    n_old = np.bincount(cell[~is_new], minlength=size)
    shared = (n_new > 0) & (n_old > 0)
    if not shared.any():
        return 0.0, 0.0
    mean_new = np.bincount(cell[is_new], reward[is_new], size)[shared] / n_new[shared]
    mean_old = np.bincount(cell[~is_new], reward[~is_new], size)[shared] / n_old[shared]
    weight = 1.0 / (1.0 / n_new[shared] + 1.0 / n_old[shared])
    spread = float(np.var(reward)) or 1e-9
    return float(weight @ (mean_new - mean_old) / weight.sum()), spread / float(weight.sum())
