from __future__ import annotations

import numpy as np
import pytest

from flywheel.errors import InvalidInputError
from flywheel.seatbelt.monitors import categorical_drift, numeric_drift, psi, sample_ratio_mismatch


def test_categorical_drift_small_and_large_samples() -> None:
    rng = np.random.default_rng(1)
    same = categorical_drift(rng.choice(["a", "b", "c"], 500), rng.choice(["a", "b", "c"], 500))
    assert (same.method, same.alarm) == ("chi-square", False)
    shifted = categorical_drift(
        rng.choice(["a", "b", "c"], 500), rng.choice(["a", "b", "c"], 500, p=[0.6, 0.2, 0.2])
    )
    assert shifted.alarm and shifted.p_value is not None and shifted.p_value < 0.05
    big_same = categorical_drift(rng.choice(["a", "b"], 50_000), rng.choice(["a", "b"], 50_000))
    assert (big_same.method, big_same.alarm) == ("jensen-shannon", False)  # tiny noise ignored
    big_shift = categorical_drift(
        rng.choice(["a", "b"], 50_000), rng.choice(["a", "b"], 50_000, p=[0.9, 0.1])
    )
    assert big_shift.alarm


def test_numeric_drift_small_and_large_samples() -> None:
    rng = np.random.default_rng(2)
    assert not numeric_drift(rng.normal(0, 1, 400), rng.normal(0, 1, 400)).alarm
    assert numeric_drift(rng.normal(0, 1, 400), rng.normal(0.5, 1, 400)).alarm
    large = numeric_drift(rng.normal(0, 1, 20_000), rng.normal(0.02, 1, 20_000))
    assert (large.method, large.alarm) == ("wasserstein", False)
    assert numeric_drift(rng.normal(0, 1, 20_000), rng.normal(0.5, 1, 20_000)).alarm


def test_psi_grows_with_the_shift() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 10_000)
    assert psi(ref, rng.normal(0, 1, 10_000)) < 0.02
    assert psi(ref, rng.normal(1, 1, 10_000)) > 0.25


def test_sample_ratio_mismatch() -> None:
    rng = np.random.default_rng(4)
    share = np.array([0.5, 0.3, 0.2])
    fair = np.bincount(rng.choice(3, 10_000, p=share), minlength=3)
    assert not sample_ratio_mismatch(fair, share).alarm
    swapped = fair.copy()
    swapped[0], swapped[1] = int(fair[0] * 0.8), int(fair[1] + fair[0] * 0.2)  # 20% mislabelled
    assert sample_ratio_mismatch(swapped, share).alarm
    assert sample_ratio_mismatch([5, 1], [1.0, 0.0]).alarm  # served what is never served
    with pytest.raises(InvalidInputError):
        sample_ratio_mismatch([1, 2, 3], [0.5, 0.5])
