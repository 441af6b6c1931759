"""The interaction model on hand-built cells with known truths."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.learn import Cells, Design, fit, segment_policy
from flywheel.learn.model import Settings, draw_width

LEVELS = {"a": 3, "b": 3}


def simulate(rng: np.random.Generator, n: int, logit: np.ndarray) -> Cells:
    """Uniform play over a 3 x 3 grid with P(reward) = sigmoid(logit[a, b])."""
    a, b = rng.integers(0, 3, n), rng.integers(0, 3, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit[a, b]))).astype(float)
    return Cells({"a": a, "b": b}, np.ones(n), y, y).compact()


def xor_world() -> np.ndarray:
    """Flat marginals, strong pairwise effects: +1 on the diagonal, -0.5 off it."""
    return np.where(np.eye(3, dtype=bool), 1.0, -0.5)


def test_merge_then_fit_equals_fit_on_all() -> None:
    rng = np.random.default_rng(1)
    first, second = simulate(rng, 3000, xor_world()), simulate(rng, 2000, xor_world())
    design = Design.build({}, LEVELS)
    merged = fit(first + second, design)
    everything = Cells(
        {f: np.concatenate([first.codes[f], second.codes[f]]) for f in LEVELS},
        np.concatenate([first.n, second.n]),
        np.concatenate([first.s, second.s]),
        np.concatenate([first.ss, second.ss]),
    )
    together = fit(everything, design)
    np.testing.assert_allclose(merged.mean, together.mean, rtol=1e-8, atol=1e-10)
    assert merged.cov is not None and together.cov is not None
    np.testing.assert_allclose(merged.cov, together.cov, rtol=1e-8, atol=1e-12)
    assert len(first + second) == 9 and (first + second).rows == 5000


def test_recovers_an_interaction_that_marginals_hide() -> None:
    rng = np.random.default_rng(2)
    cells = simulate(rng, 20_000, xor_world())
    posterior = fit(cells, Design.build({}, LEVELS))
    assert posterior.link == "logistic" and posterior.converged
    pair = next(t for t in posterior.design.terms if t.group == "knob×knob")
    effects = posterior.mean[pair.offset : pair.offset + pair.size].reshape(3, 3)
    off_diagonal = np.where(np.eye(3, dtype=bool), -np.inf, effects)
    assert np.all(np.diag(effects) > off_diagonal.max(axis=1))  # the diagonal wins every row
    mains = next(t for t in posterior.design.terms if t.factors == ("a",))
    spread = np.ptp(posterior.mean[mains.offset : mains.offset + 3])
    assert spread < 0.15  # the marginals are flat and the model says so
    # the best cell by posterior mean is on the diagonal
    x = posterior.design.matrix({"a": np.repeat(np.arange(3), 3), "b": np.tile(np.arange(3), 3)}, 9)
    best = int(np.argmax(x @ posterior.mean))
    assert best // 3 == best % 3


def test_gaussian_link_recovers_means_and_noise() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    a = rng.integers(0, 3, n)
    y = np.array([10.0, 12.0, 15.0])[a] + rng.normal(0, 2.0, n)
    cells = Cells({"a": a}, np.ones(n), y, y * y).compact()
    posterior = fit(cells, Design.build({}, {"a": 3}))
    assert posterior.link == "gaussian"
    x = posterior.design.matrix({"a": np.arange(3)}, 3)
    np.testing.assert_allclose(posterior.response(x @ posterior.mean), [10.0, 12.0, 15.0], atol=0.2)
    assert posterior.noise * posterior.scale == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("unit", [1.0, 1000.0])
def test_gaussian_fit_does_not_depend_on_the_rewards_units(unit: float) -> None:
    rng = np.random.default_rng(7)
    n = 400
    a = rng.integers(0, 2, n)
    y = (np.array([5.0, 7.0])[a] + rng.normal(0, 1.0, n)) * unit
    posterior = fit(Cells({"a": a}, np.ones(n), y, y * y).compact(), Design.build({}, {"a": 2}))
    x = posterior.design.matrix({"a": np.arange(2)}, 2)
    np.testing.assert_allclose(posterior.response(x @ posterior.mean) / unit, [5.0, 7.0], atol=0.25)


def test_a_constant_reward_keeps_some_doubt() -> None:
    y = np.full(50, 3.0)
    a = np.arange(50) % 2
    posterior = fit(Cells({"a": a}, np.ones(50), y, y * y).compact(), Design.build({}, {"a": 2}))
    assert posterior.cov is not None
    assert np.all(np.isfinite(posterior.mean)) and np.all(np.diag(posterior.cov) > 0)


def test_no_data_gives_the_prior_not_an_error() -> None:
    posterior = fit(Cells.empty(("a", "b")), Design.build({}, LEVELS))
    assert np.allclose(posterior.mean, 0.0)
    assert posterior.converged


def test_interactions_shrink_harder_than_main_effects() -> None:
    rng = np.random.default_rng(4)
    main_only = np.add.outer(np.array([-1.0, 0.0, 1.0]), np.zeros(3))
    posterior = fit(simulate(rng, 5000, main_only), Design.build({}, LEVELS))
    assert posterior.scales["knob×knob"] <= posterior.scales["main"]
    assert posterior.scales["knob×knob"] < 0.2


def test_fixed_scales_without_empirical_bayes() -> None:
    rng = np.random.default_rng(5)
    posterior = fit(
        simulate(rng, 1000, xor_world()), Design.build({}, LEVELS), Settings(empirical_bayes=False)
    )
    assert posterior.scales["main"] == 1.0 and posterior.scales["knob×knob"] == 0.5


def test_fractional_rewards_use_the_logistic_link() -> None:
    y = np.array([0.2, 0.9, 0.5])
    cells = Cells({"a": np.arange(3)}, np.ones(3), y, y * y)
    assert fit(cells, Design.build({}, {"a": 3})).link == "logistic"


def test_segment_policy_floor_cap_and_intervals() -> None:
    rng = np.random.default_rng(6)
    posterior = fit(simulate(rng, 4000, xor_world()), Design.build({}, LEVELS))
    codes = np.array([[a, b] for a in range(3) for b in range(3)])
    rows = np.arange(9)
    draws = posterior.draws(400, np.random.default_rng(0))
    table = segment_policy(posterior, codes, rows, {}, draws.T.copy(), floor=0.09, cap=0.2)
    assert table.probs.sum() == pytest.approx(1.0)
    assert table.probs.min() >= 0.09 / 9 - 1e-12  # the floor
    assert table.probs[table.best] >= (1 - 0.2) * (1 - 0.09)  # the cap keeps the best served
    assert np.all(table.low <= table.mean) and np.all(table.mean <= table.high)
    assert table.cumulative[-1] == 1.0
    assert codes[table.best][0] == codes[table.best][1]


def test_a_share_of_the_draws_keeps_the_posteriors_full_width() -> None:
    """The first ``tails`` share of the draws spreads as the posterior does, the others
    ``spread`` as far; with no tails the draws are those of one spread, to the last bit."""
    rng = np.random.default_rng(9)
    posterior = fit(simulate(rng, 2000, xor_world()), Design.build({}, LEVELS))
    z = np.random.default_rng(1).standard_normal((posterior.design.size, 4000))
    plain = posterior.mean[:, None] + 0.5 * (posterior.chol @ z)
    np.testing.assert_array_equal(posterior.draws(4000, np.random.default_rng(1), 0.5).T, plain)
    draws = posterior.draws(4000, np.random.default_rng(1), 0.5, tails=0.25)
    np.testing.assert_array_equal(draws[1000:].T, plain[:, 1000:])
    sd = np.sqrt(np.diag(posterior.chol @ posterior.chol.T))
    wide = np.std(draws[:1000], axis=0) / sd
    narrow = np.std(draws[1000:], axis=0) / sd
    assert np.all(np.abs(wide - 1.0) < 0.1) and np.all(np.abs(narrow - 0.5) < 0.05)
    assert draw_width(4000, 0.5, 0.25) == pytest.approx(np.sqrt(0.25 + 0.75 * 0.25))


def test_optimistic_sampling_explores_only_what_may_beat_the_best() -> None:
    """A draw scores each row at least at its posterior mean: a row wins only the draws in
    which it beats the best's mean, the best never loses a draw to its own bad luck, and
    the intervals are those of the posterior, whichever the sampling."""
    rng = np.random.default_rng(7)
    posterior = fit(simulate(rng, 300, xor_world()), Design.build({}, LEVELS))
    codes = np.array([[a, b] for a in range(3) for b in range(3)])
    rows = np.arange(9)
    draws = posterior.draws(2000, np.random.default_rng(0)).T.copy()
    plain = segment_policy(posterior, codes, rows, {}, draws, floor=0.0, cap=1.0)
    hopeful = segment_policy(posterior, codes, rows, {}, draws, floor=0.0, cap=1.0, optimistic=True)
    assert hopeful.best == plain.best
    assert hopeful.probs[hopeful.best] > plain.probs[plain.best] + 0.05
    x = posterior.design.matrix({"a": codes[:, 0], "b": codes[:, 1]}, 9)
    scores = x @ draws  # (rows, draws)
    leader = float((x @ posterior.mean)[hopeful.best])
    beats = (scores > leader).mean(axis=1)
    others = np.arange(9) != hopeful.best
    assert np.all(hopeful.probs[others] <= beats[others] + 1e-12)
    assert np.any(plain.probs[others] > beats[others])  # plain sampling explores beyond it
    for field in ("mean", "low", "high"):
        assert np.array_equal(getattr(hopeful, field), getattr(plain, field))
