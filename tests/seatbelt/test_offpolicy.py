"""Off-policy estimators against a simulated world where the target policy's value is known."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.errors import InvalidInputError
from flywheel.seatbelt import doubly_robust, ips, snips

CONTEXTS, ACTIONS = 3, 5
MU = np.array(
    [
        [0.10, 0.30, 0.20, 0.50, 0.15],
        [0.40, 0.10, 0.25, 0.20, 0.35],
        [0.05, 0.60, 0.10, 0.30, 0.20],
    ]
)
P_CONTEXT = np.array([0.5, 0.3, 0.2])
LOGGING = np.array(  # a logging policy that explores everything, unevenly
    [
        [0.40, 0.10, 0.20, 0.05, 0.25],
        [0.10, 0.40, 0.20, 0.20, 0.10],
        [0.30, 0.05, 0.30, 0.15, 0.20],
    ]
)
TARGET = np.array(  # a different, mostly greedy policy
    [
        [0.02, 0.03, 0.03, 0.90, 0.02],
        [0.85, 0.05, 0.03, 0.02, 0.05],
        [0.02, 0.90, 0.02, 0.04, 0.02],
    ]
)
TRUE_VALUE = float(P_CONTEXT @ (TARGET * MU).sum(axis=1))


def logged_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    x = rng.choice(CONTEXTS, size=n, p=P_CONTEXT)
    u = rng.random(n)
    a = (u[:, None] > np.cumsum(LOGGING[x], axis=1)).sum(axis=1)
    r = (rng.random(n) < MU[x, a]).astype(float)
    return x, a, r, LOGGING[x, a], TARGET[x, a]


@pytest.mark.parametrize("method", ["ips", "snips", "dr", "dr_wrong_model"])
def test_bias_and_coverage(method: str) -> None:
    rng = np.random.default_rng(11)
    values, covered = [], 0
    replications = 300
    for _ in range(replications):
        x, a, r, p, q = logged_data(rng, 2000)
        if method == "ips":
            e = ips(r, p, q)
        elif method == "snips":
            e = snips(r, p, q)
        else:
            model = MU + (0.15 if method == "dr_wrong_model" else 0.0)  # a biased model
            e = doubly_robust(r, p, q, model[x, a], (TARGET[x] * model[x]).sum(axis=1))
        values.append(e.value)
        covered += e.low <= TRUE_VALUE <= e.high
    bias = np.mean(values) - TRUE_VALUE
    assert abs(bias) < 0.005, (method, bias)
    assert 0.90 <= covered / replications <= 0.99, (method, covered)


def test_a_good_model_lowers_the_variance() -> None:
    rng = np.random.default_rng(12)
    spread = {"ips": [], "dr": []}  # type: dict[str, list[float]]
    for _ in range(100):
        x, a, r, p, q = logged_data(rng, 2000)
        spread["ips"].append(ips(r, p, q).value)
        spread["dr"].append(doubly_robust(r, p, q, MU[x, a], (TARGET[x] * MU[x]).sum(axis=1)).value)
    assert np.std(spread["dr"]) < 0.8 * np.std(spread["ips"])  # measured: about 0.64


def test_effective_sample_size_and_bad_input() -> None:
    e = ips(np.ones(4), np.full(4, 0.5), np.full(4, 0.5))
    assert e.effective_n == pytest.approx(4.0)
    with pytest.raises(InvalidInputError, match="logged"):
        ips(np.ones(2), np.array([0.5, 0.0]), np.ones(2))
    with pytest.raises(InvalidInputError, match="rewards"):
        ips(np.ones(2), np.ones(3), np.ones(3))
    with pytest.raises(InvalidInputError, match="no weight"):
        snips(np.ones(2), np.full(2, 0.5), np.zeros(2))
