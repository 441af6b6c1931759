"""The sparse posterior of big designs agrees with the dense one it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from flywheel.learn import model
from flywheel.learn.cells import Cells
from flywheel.learn.design import Design
from flywheel.learn.model import Settings, fit, update
from flywheel.learn.sparse import Factor, Gram, symmetric_product

CONTEXT = {"user": 7, "slot": 3}
KNOBS = {"item": 9, "style": 2}


def _cells(seed: int, n: int = 3_000) -> tuple[Design, Cells]:
    rng = np.random.default_rng(seed)
    design = Design.build(CONTEXT, KNOBS)
    codes = {f: rng.integers(0, size, n) for f, size in design.levels.items()}
    logit = -1.0 + 0.8 * (codes["item"] == 3) + 0.6 * (codes["item"] == codes["user"])
    clicks = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return design, Cells(codes, np.ones(n), clicks, clicks).compact()


def test_the_gram_matrix_is_the_upper_triangle_of_xtwx_plus_prior_and_base() -> None:
    design, cells = _cells(0, 400)
    rng = np.random.default_rng(1)
    weights = rng.random(len(cells))
    prior = rng.random(design.size) + 0.5
    x = design.matrix(cells.codes, len(cells))
    dense = (x.T @ sp.diags(weights) @ x).toarray() + np.diag(prior)
    noise = sp.random(design.size, design.size, density=0.05, random_state=2)
    base = sp.csc_matrix(sp.triu(noise + noise.T))
    columns = design.columns(cells.codes, len(cells))
    offsets, sizes = [t.offset for t in design.terms], [t.size for t in design.terms]
    plain = Gram(columns, offsets, sizes).matrix(weights, prior)
    np.testing.assert_allclose(plain.toarray(), np.triu(dense), atol=1e-12)
    based = Gram(columns, offsets, sizes, base).matrix(weights, prior)
    np.testing.assert_allclose(based.toarray(), np.triu(dense) + base.toarray(), atol=1e-12)
    v = rng.standard_normal(design.size)
    np.testing.assert_allclose(symmetric_product(plain, v), dense @ v, atol=1e-9)


def test_the_factor_solves_and_draws_with_the_inverse_as_covariance() -> None:
    rng = np.random.default_rng(3)
    a = sp.random(40, 40, density=0.1, random_state=4)
    h = (a @ a.T + sp.eye(40)).toarray()
    factor = Factor(sp.triu(h, format="csc"))
    b = rng.standard_normal(40)
    np.testing.assert_allclose(h @ factor.solve(b), b, atol=1e-9)
    inverse = np.linalg.inv(h)
    np.testing.assert_allclose(factor.columns(np.array([2, 5])), inverse[:, [2, 5]], atol=1e-9)
    draws = factor.samples(40_000, rng)
    empirical = np.cov(draws.T)
    assert np.max(np.abs(empirical - inverse)) < 0.05 * np.max(np.abs(inverse))
    variances = factor.variances(40_000, rng)
    np.testing.assert_allclose(variances, np.diag(inverse), rtol=0.05)


def test_the_draws_come_the_same_in_blocks_of_any_size() -> None:
    a = sp.random(60, 60, density=0.1, random_state=5)
    factor = Factor(sp.triu(a @ a.T + sp.eye(60), format="csc"))
    whole = factor.samples(37, np.random.default_rng(6))
    for block in (1, 5, 37, 64):
        parts = np.empty_like(whole)
        for start, draws in factor.sample_blocks(37, np.random.default_rng(6), block):
            parts[start : start + len(draws)] = draws
        np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("empirical_bayes", [False, True])
def test_a_sparse_fit_finds_the_dense_fits_posterior(
    monkeypatch: pytest.MonkeyPatch, empirical_bayes: bool
) -> None:
    design, cells = _cells(5)
    settings = Settings(empirical_bayes=empirical_bayes)
    dense = fit(cells, design, settings)
    monkeypatch.setattr(model, "SPARSE_ABOVE", 10)
    sparse = fit(cells, design, settings)
    assert sparse.sparse and not dense.sparse and sparse.cov is None
    assert dense.cov is not None
    # Without empirical Bayes the two are the same computation. With it the sparse fit
    # estimates the variances behind the prior scales from draws: the scales, and so the
    # variances of effects the data barely reaches, agree to within a few tens of percent.
    tolerance = 1e-7 if not empirical_bayes else 0.05
    np.testing.assert_allclose(sparse.mean, dense.mean, atol=tolerance)
    index = np.arange(design.size)
    np.testing.assert_allclose(
        np.diag(sparse.block(index)),
        np.diag(dense.cov),
        rtol=1e-6 if not empirical_bayes else 0.6,
        atol=1e-9,
    )
    # what is served agrees: the predicted click rate of every cell
    everything = design.matrix(cells.codes, len(cells))
    np.testing.assert_allclose(
        sparse.response(everything @ sparse.mean),
        dense.response(everything @ dense.mean),
        atol=1e-9 if not empirical_bayes else 0.01,
    )
    x = design.matrix({f: codes[:5] for f, codes in cells.codes.items()}, 5)
    np.testing.assert_allclose(
        sparse.variances(x), dense.variances(x), rtol=max(tolerance * 10, 1e-6)
    )
    # the online update from the sparse posterior equals the dense update
    _, more = _cells(6, 500)
    after_dense, after_sparse = update(dense, more), update(sparse, more)
    assert after_sparse.sparse
    np.testing.assert_allclose(after_sparse.mean, after_dense.mean, atol=tolerance)


def test_sparse_draws_spread_like_the_posterior(monkeypatch: pytest.MonkeyPatch) -> None:
    design, cells = _cells(7)
    monkeypatch.setattr(model, "SPARSE_ABOVE", 10)
    posterior = fit(cells, design, Settings(empirical_bayes=False))
    rng = np.random.default_rng(8)
    draws = posterior.draws(4_000, rng, spread=0.5)
    exact = np.diag(posterior.block(np.arange(design.size)))
    np.testing.assert_allclose(np.var(draws, axis=0), 0.25 * exact, rtol=0.1)
    np.testing.assert_allclose(draws.mean(axis=0), posterior.mean, atol=0.1)
