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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import ArrayLike

from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.spec import Spec
from flywheel.store import Store

TAU = 0.1  # mixing scale, in standard deviations of the reward: tuned to drops of that size


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


def msprt(new: ArrayLike, old: ArrayLike, alpha: float = 0.05, tau: float = TAU) -> Sequential:
    """Compare the mean of ``new`` with the mean of ``old`` (each needs two values or more)."""
    a, b = np.asarray(new, dtype=float), np.asarray(old, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return Sequential(0.0, -math.inf, math.inf, 1.0, len(a), len(b))
    theta = float(a.mean() - b.mean())
    pooled = float(np.concatenate([a - a.mean(), b - b.mean()]).std()) or 1e-9
    variance = max(float(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)), 1e-18)
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
    store: Store, spec: Spec, as_of: datetime, new: int, old: int, since: datetime
) -> Sequential:
    """The live rewards of playbook version ``new`` against those of ``old`` (which was
    published after ``since``: older decisions are not read)."""
    table = store.query(
        f"""SELECT playbook, reward FROM ({aligned_rows_sql(spec, since=True)}) a
        WHERE reward IS NOT NULL AND playbook IN ($new, $old) AND {NOT_QUARANTINED}""",
        {"as_of": as_of, "new": new, "old": old, "since": since},
    )
    version = table.column("playbook").to_numpy()
    reward = table.column("reward").to_numpy()
    return msprt(reward[version == new], reward[version == old], spec.seatbelt.guard_alpha)
