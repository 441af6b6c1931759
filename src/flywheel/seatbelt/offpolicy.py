"""Off-policy estimates: the value a target policy would have had on logged decisions.

Each logged decision contributes its reward ``r``, the propensity ``p`` with which the logging
policy served it, and the probability ``q`` that the target policy gives the same combination
in the same context. The estimators:

- IPS, inverse propensity scoring: the mean of ``(q / p) r``. Unbiased when every combination
  the target may serve had ``p > 0`` (the exploration floor guarantees it), high variance
  when weights are large.
- SNIPS, self-normalised IPS: ``sum(w r) / sum(w)``. Slightly biased, much steadier.
- DR, doubly robust: a model's prediction of the target's value plus the IPS-weighted
  residuals of that model on what was logged. Unbiased if either the propensities or the
  model are right, and of lower variance than IPS when the model is decent.

Intervals are normal approximations from the per-decision terms (the delta method for
SNIPS), at level ``1 - alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from flywheel.errors import InvalidInputError


@dataclass(frozen=True)
class Estimate:
    """An estimated policy value with its interval and the evidence behind it."""

    method: str
    value: float
    low: float
    high: float
    n: int
    effective_n: float  # (sum w)^2 / sum w^2: how many decisions the weights are worth

    @property
    def interval(self) -> tuple[float, float]:
        return (self.low, self.high)


def _check(rewards: np.ndarray, logged: np.ndarray, target: np.ndarray) -> np.ndarray:
    r, p, q = (np.asarray(a, dtype=float) for a in (rewards, logged, target))
    if not (r.shape == p.shape == q.shape) or r.ndim != 1:
        raise InvalidInputError("rewards", "rewards and propensities must be 1-d and of one length")
    if len(r) == 0:
        raise InvalidInputError("rewards", "no logged decisions to estimate from")
    if np.any(~np.isfinite(p)) or np.any(p <= 0) or np.any(p > 1):
        raise InvalidInputError("logged", "logging propensities must be in (0, 1]")
    if np.any(~np.isfinite(q)) or np.any(q < 0) or np.any(q > 1):
        raise InvalidInputError("target", "target probabilities must be in [0, 1]")
    if np.any(~np.isfinite(r)):
        raise InvalidInputError("rewards", "rewards must be finite")
    weights: np.ndarray = q / p
    return weights


def effective(w: np.ndarray) -> float:
    """(sum w)² / sum w²: how many rows the weights are worth."""
    largest = float(w.max()) if len(w) else 0.0
    if largest <= 0 or not np.isfinite(largest):
        return 0.0
    scaled = w / largest  # the same ratio, without overflow for huge weights
    return float(scaled.sum()) ** 2 / float((scaled**2).sum())


def normal(method: str, terms: np.ndarray, w: np.ndarray, alpha: float) -> Estimate:
    """The mean of per-row ``terms`` with a normal interval, and ``w``'s effective size."""
    n = len(terms)
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return Estimate(method, value, value - z * se, value + z * se, n, effective(w))


def ips(
    rewards: np.ndarray, logged: np.ndarray, target: np.ndarray, alpha: float = 0.05
) -> Estimate:
    """Inverse propensity scoring.

    >>> e = ips(np.array([1.0, 0.0]), np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    >>> e.value
    1.0
    """
    w = _check(rewards, logged, target)
    return normal("ips", w * np.asarray(rewards, dtype=float), w, alpha)


def snips(
    rewards: np.ndarray, logged: np.ndarray, target: np.ndarray, alpha: float = 0.05
) -> Estimate:
    """Self-normalised IPS, with a delta-method interval."""
    w = _check(rewards, logged, target)
    r = np.asarray(rewards, dtype=float)
    n = len(r)
    if w.sum() <= 0:
        raise InvalidInputError(
            "target", "the target policy gives no weight to any logged decision"
        )
    value = float((w * r).sum() / w.sum())
    influence = w * (r - value) / w.mean()  # linearisation of the ratio estimator
    se = float(influence.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return Estimate("snips", value, value - z * se, value + z * se, n, effective(w))


def doubly_robust(
    rewards: np.ndarray,
    logged: np.ndarray,
    target: np.ndarray,
    predicted_logged: np.ndarray,
    predicted_target: np.ndarray,
    alpha: float = 0.05,
) -> Estimate:
    """Doubly robust: ``predicted_target`` is the model's expected reward of the target
    policy in each logged context (its probabilities times the model's predictions, summed
    over combinations); ``predicted_logged`` the model's prediction for what was logged."""
    w = _check(rewards, logged, target)
    r = np.asarray(rewards, dtype=float)
    model_logged = np.asarray(predicted_logged, dtype=float)
    model_target = np.asarray(predicted_target, dtype=float)
    if model_logged.shape != r.shape or model_target.shape != r.shape:
        raise InvalidInputError("predicted", "predictions must match the logged decisions")
    terms = model_target + w * (r - model_logged)
    return normal("dr", terms, w, alpha)
