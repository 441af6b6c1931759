"""The Bayesian interaction model: fitted to the posterior mode by Newton's method (IRLS),
with a Laplace approximation of the covariance and empirical-Bayes prior scales.

The result is modelled as intercept + context effects + knob effects + knob × knob and
knob × context interactions. Binary and [0, 1] rewards use a logistic link (a [0, 1] reward
that is not 0 or 1 counts as a fractional success: the Bernoulli likelihood is still the right
quasi-likelihood for a proportion); other rewards use a Gaussian one with the noise estimated
from the cells.

Each group of terms has a Gaussian prior of its own scale. Interactions start, and stay,
tighter than main effects, so single-dimension effects are learned first and combinations as
the data supports them. The scales are re-estimated from the data, within bounds, by at most
twelve rounds of the EM update from their defaults (each scale becomes the root mean square
of its group's posterior effects, uncertainty included). That stops partway to the marginal
likelihood's optimum on purpose: at the optimum, the few rows left after a change of the
world put every interaction at its floor, and the contexts' own bests are never explored
again (measured in BENCHMARKS.md, "empirical Bayes run to convergence").

Designs of more than ``SPARSE_ABOVE`` parameters (knobs and features with hundreds of values)
keep the posterior as a sparse precision matrix instead of a dense covariance: the Hessian is
assembled per pair of terms and factorised by a sparse LDLᵀ (:mod:`flywheel.learn.sparse`);
the posterior variances the prior scales need are estimated from exact posterior draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
from scipy.special import expit

from flywheel.learn.cells import Cells
from flywheel.learn.design import GROUPS, Design
from flywheel.learn.sparse import Factor, Gram, symmetric_product

Link = Literal["logistic", "gaussian"]

# Prior scales (standard deviations, on the link scale) and the bounds empirical Bayes keeps
# them in. Interactions may never be looser than main effects.
DEFAULT_SCALES: dict[str, float] = {
    "intercept": 3.0,
    "context": 1.0,
    "main": 1.0,
    "knob×knob": 0.5,
    "knob×context": 0.5,
}
TERM_POOLING = 4.0
NOISE_FLOOR = 0.01  # standardised units: a constant reward still leaves the model some doubt
SCALE_BOUNDS: dict[str, tuple[float, float]] = {
    "intercept": (3.0, 3.0),
    "context": (0.05, 2.0),
    "main": (0.05, 2.0),
    "knob×knob": (0.02, 1.0),
    "knob×context": (0.02, 1.0),
}
SPARSE_ABOVE = 1_000
"""Parameters past which the posterior is a sparse precision (a dense 1,000² covariance is
8 MB and factorises in milliseconds; at 10,000 it is 800 MB and takes seconds a step)."""
VARIANCE_DRAWS = 24  # sparse: posterior draws behind each estimate of the variances
SPARSE_SETTLED = 0.01  # sparse: the prior scales have settled when none moves by 1% a round


@dataclass(frozen=True)
class Posterior:
    """A Gaussian approximation of the posterior over the model's parameters: its ``mean``
    and either its covariance ``cov`` (dense) or, for big designs, the upper triangle of its
    ``precision`` (sparse; ``cov`` is then ``None``)."""

    design: Design
    link: Link
    mean: np.ndarray
    cov: np.ndarray | None
    scales: Mapping[str, float]
    noise: float = 1.0  # Gaussian link: the residual standard deviation (standardised units)
    center: float = 0.0  # Gaussian link: rewards are modelled as center + scale * (linear part)
    scale: float = 1.0
    iterations: int = 0
    converged: bool = True
    cells: int = 0
    weight: float = 0.0  # total (decayed) rows the fit saw
    term_scales: tuple[float, ...] = ()  # each term's prior scale in the final fit
    precision: sp.csc_matrix | None = None  # sparse posteriors: upper triangle
    _chol: np.ndarray | None = field(default=None, repr=False, compare=False)
    _factor: Factor | None = field(default=None, repr=False, compare=False)

    @property
    def sparse(self) -> bool:
        return self.precision is not None

    @property
    def chol(self) -> np.ndarray:
        """Lower Cholesky factor of the covariance (for drawing samples; dense only)."""
        if self._chol is None:
            assert self.cov is not None, "a sparse posterior has no dense covariance"
            object.__setattr__(self, "_chol", _cholesky(self.cov))
        assert self._chol is not None
        return self._chol

    @property
    def factor(self) -> Factor:
        """The sparse factorisation of the precision (sparse only; computed once)."""
        if self._factor is None:
            assert self.precision is not None, "a dense posterior has no sparse precision"
            object.__setattr__(self, "_factor", Factor(self.precision))
        assert self._factor is not None
        return self._factor

    def draws(
        self,
        m: int,
        rng: np.random.Generator,
        spread: float = 1.0,
        dtype: type[np.floating[Any]] = np.float64,
        tails: float = 0.0,
    ) -> np.ndarray:
        """``m`` parameter vectors from the posterior, shape ``(m, size)``; ``spread`` scales
        their deviation from the mean (1: the posterior itself), except in a ``tails`` share
        of them, which keep the posterior's full width (see :func:`draw_spreads`). They come
        as ``dtype`` and as the transpose of a contiguous ``(size, m)`` array, one column per
        draw (how scoring reads them): a sparse posterior's are written there a block at a
        time."""
        scale = draw_spreads(m, spread, tails)
        if not self.sparse:
            z = rng.standard_normal((self.design.size, m))
            dense: np.ndarray = (self.mean[:, None] + (self.chol @ z) * scale).astype(
                dtype, copy=False
            )
            return dense.T
        columns = np.empty((self.design.size, m), dtype=dtype)
        for start, block in self.factor.sample_blocks(m, rng):
            part = scale[start : start + len(block), None]
            columns[:, start : start + len(block)] = (self.mean[None, :] + block * part).T
        return columns.T

    def block(self, index: np.ndarray) -> np.ndarray:
        """The covariance of the parameters ``index`` (a term's block, say)."""
        if self.cov is not None:
            result: np.ndarray = self.cov[np.ix_(index, index)]
            return result
        block: np.ndarray = self.factor.columns(index)[index]
        return block

    def variances(self, x: sp.csr_matrix, budget: int = 4_000_000) -> np.ndarray:
        """The posterior variance of each row's linear predictor, diag(x Σ xᵀ), exactly (a
        sparse posterior solves once per row: meant for a few rows, not whole tables)."""
        if self.cov is None:
            out = np.empty(x.shape[0])
            for i in range(x.shape[0]):
                row = x[i].toarray().ravel()
                out[i] = float(row @ self.factor.solve(row))
            return out
        step = max(1, budget // self.cov.shape[0])
        parts = []
        for start in range(0, x.shape[0], step):
            chunk = x[start : start + step]
            parts.append(np.einsum("ij,ij->i", chunk @ self.cov, chunk.toarray()))
        return np.concatenate(parts) if parts else np.zeros(0)

    def response(self, eta: np.ndarray) -> np.ndarray:
        """Link scale to reward scale."""
        if self.link == "logistic":
            result: np.ndarray = expit(eta)
            return result
        return self.center + self.scale * eta


@dataclass(frozen=True)
class Settings:
    """How to fit: link, interactions, prior scales and empirical Bayes."""

    link: Literal["auto", "logistic", "gaussian"] = "auto"
    empirical_bayes: bool = True
    scales: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SCALES))
    prior_mean: np.ndarray | None = None  # e.g. an advantage for the skeleton default
    max_iterations: int = 100
    tolerance: float = 1e-7


def draw_spreads(m: int, spread: float, tails: float = 0.0) -> np.ndarray:
    """How far each of ``m`` posterior draws spreads around the mean: the first ``tails``
    share of them at the posterior's full width, the others at ``spread``.

    Narrow draws exploit: many combinations that are each a little plausible (near-ties,
    thin data) seldom win one. Narrowed alone, though, they starve a combination that looks
    poor but may be far better, since a Gaussian's tail thins faster than its width: a
    combination 2.6 standard deviations behind the best wins one full-width draw in 200, and
    one in ten million at half the width. The full-width share keeps that tail: such a
    combination keeps ``tails`` of its full-width Thompson chance (a scale mixture: narrow at
    the core, heavy in the tails)."""
    out = np.full(m, float(spread))
    out[: round(tails * m)] = 1.0
    return out


def draw_width(m: int, spread: float, tails: float = 0.0) -> float:
    """The root-mean-square spread of :func:`draw_spreads`: the draws' standard deviation
    over the posterior's."""
    return float(np.sqrt(np.mean(draw_spreads(m, spread, tails) ** 2)))


def choose_link(cells: Cells, wanted: str) -> Link:
    if wanted in ("logistic", "gaussian"):
        return wanted  # type: ignore[return-value]
    if len(cells) == 0:
        return "logistic"
    lo = cells.s.min() if len(cells) else 0.0
    within = np.all(cells.s >= -1e-9) and np.all(cells.s <= cells.n + 1e-9) and lo >= -1e-9
    # every reward in [0, 1] <=> sum of squares never above the sum (and the sum within [0, n])
    bounded = within and np.all(cells.ss <= cells.s + 1e-9)
    return "logistic" if bounded else "gaussian"


def fit(cells: Cells, design: Design, settings: Settings | None = None) -> Posterior:
    """The posterior of ``design``'s parameters given ``cells``."""
    settings = settings or Settings()
    link = choose_link(cells, settings.link)
    groups = design.groups()
    terms = design.term_index()
    group_of_term = np.array([GROUPS.index(t.group) for t in design.terms])
    scales: dict[str, float] = {g: float(settings.scales.get(g, DEFAULT_SCALES[g])) for g in GROUPS}
    term_scales = np.array([scales[t.group] for t in design.terms])
    prior_mean = settings.prior_mean if settings.prior_mean is not None else np.zeros(design.size)
    center, scale = 0.0, 1.0
    if link == "gaussian" and len(cells):
        # Standardise, so the priors' scales mean the same whatever the reward's units.
        center = float(cells.s.sum() / max(cells.n.sum(), 1e-12))
        spread = float(cells.ss.sum() / max(cells.n.sum(), 1e-12) - center**2)
        scale = float(np.sqrt(spread)) if spread > 1e-18 else 1.0
        cells = _standardised(cells, center, scale)
    x = design.matrix(cells.codes, len(cells))
    xt = x.T.tocsr()
    sparse = design.size > SPARSE_ABOVE
    gram = _gram(design, cells) if sparse else None
    beta = prior_mean.copy()
    if len(cells) and link == "logistic":
        rate = np.clip(cells.s.sum() / max(cells.n.sum(), 1e-12), 1e-4, 1 - 1e-4)
        beta[0] = np.log(rate / (1 - rate))
    elif len(cells):
        beta[0] = cells.s.sum() / max(cells.n.sum(), 1e-12)
    noise = 1.0
    if link == "gaussian" and len(cells):
        mean = cells.s.sum() / max(cells.n.sum(), 1e-12)
        variance = cells.ss.sum() / max(cells.n.sum(), 1e-12) - mean**2
        noise = float(np.sqrt(max(variance, NOISE_FLOOR**2)))
    total, converged = 0, False
    rounds = 12 if settings.empirical_bayes else 1
    # Sparse: a round takes one Newton step, not the whole way to the mode (each step
    # refactorises thousands of parameters); the scales and the mode settle together, and
    # the last fit below goes all the way.
    steps_per_round = replace(settings, max_iterations=1) if sparse else settings
    for _ in range(rounds):
        curvature = _Curvature(x, 1.0 / term_scales[terms] ** 2, gram, xt)
        beta, hessian, steps, converged = _mode(
            x, cells, link, beta, prior_mean, curvature, noise, steps_per_round
        )
        total += steps
        if link == "gaussian" and len(cells):
            noise = _noise(x, cells, beta, noise)
        if not settings.empirical_bayes:
            break
        if isinstance(hessian, np.ndarray):
            variance = np.diag(_inverse(hessian))
        else:  # the same random numbers every round, so the rounds can settle
            assert gram is not None
            rng = np.random.default_rng(0)
            variance = gram.factor(hessian).variances(VARIANCE_DRAWS, rng)
        scales = _update_scales(beta - prior_mean, variance, groups, scales)
        updated = _term_scales(beta - prior_mean, variance, terms, group_of_term, scales)
        change = float(np.max(np.abs(np.log(updated / term_scales))))
        term_scales = updated
        if change < (SPARSE_SETTLED if sparse else 1e-3):
            break
    curvature = _Curvature(x, 1.0 / term_scales[terms] ** 2, gram, xt)
    beta, hessian, steps, converged = _mode(
        x, cells, link, beta, prior_mean, curvature, noise, settings
    )
    total += steps
    cov, precision = _covariance(hessian)
    return Posterior(
        design=design,
        link=link,
        mean=beta,
        cov=cov,
        precision=precision,
        scales=scales,
        term_scales=tuple(float(v) for v in term_scales),
        noise=noise,
        center=center,
        scale=scale,
        iterations=total,
        converged=converged,
        cells=len(cells),
        weight=cells.total,
    )


def update(posterior: Posterior, cells: Cells, settings: Settings | None = None) -> Posterior:
    """The posterior after more data: ``posterior`` is the prior, ``cells`` the rows it has
    not seen (Bayes' rule with a Laplace approximation, as in the fit itself).

    This is the online step between learn cycles: its cost grows with the parameters and the
    new cells, not with the rows seen before, and the prior scales stay those the last fit
    chose. Gaussian rewards keep the fit's standardisation and noise.
    """
    settings = settings or Settings()
    if not len(cells):
        return posterior
    design = posterior.design
    if posterior.link == "gaussian":
        cells = _standardised(cells, posterior.center, posterior.scale)
    x = design.matrix(cells.codes, len(cells))
    if posterior.cov is not None:
        curvature = _Curvature(x, _inverse(posterior.cov))
    else:
        assert posterior.precision is not None
        curvature = _Curvature(
            x, posterior.precision, _gram(design, cells, base=posterior.precision)
        )
    beta, hessian, steps, converged = _mode(
        x,
        cells,
        posterior.link,
        posterior.mean,
        posterior.mean,
        curvature,
        posterior.noise,
        settings,
    )
    cov, precision = _covariance(hessian)
    return Posterior(
        design=design,
        link=posterior.link,
        mean=beta,
        cov=cov,
        precision=precision,
        scales=posterior.scales,
        term_scales=posterior.term_scales,
        noise=posterior.noise,
        center=posterior.center,
        scale=posterior.scale,
        iterations=steps,
        converged=converged,
        cells=posterior.cells + len(cells),
        weight=posterior.weight + cells.total,
    )


def _standardised(cells: Cells, center: float, scale: float) -> Cells:
    """Cells of ``(reward - center) / scale``: a Gaussian fit's units."""
    return Cells(
        cells.codes,
        cells.n,
        (cells.s - cells.n * center) / scale,
        (cells.ss - 2 * center * cells.s + cells.n * center**2) / scale**2,
        cells.rows,
    )


Hessian = np.ndarray | sp.csc_matrix  # dense, or the upper triangle of a sparse one


def _gram(design: Design, cells: Cells, base: sp.csc_matrix | None = None) -> Gram:
    columns = design.columns(cells.codes, len(cells))
    return Gram(columns, [t.offset for t in design.terms], [t.size for t in design.terms], base)


class _Curvature:
    """The prior's penalty and the negative Hessian of the log posterior, dense or sparse.

    ``precision`` is the prior's: a vector (independent effects), or a matrix (a posterior
    used as the next prior: dense, or, with a ``gram`` built on it as its base, the upper
    triangle of a sparse one). With a ``gram`` the Hessian is sparse and factorised by
    :class:`~flywheel.learn.sparse.Factor`, whose symbolic analysis is kept between steps.
    """

    def __init__(
        self,
        x: sp.csr_matrix,
        precision: np.ndarray | sp.csc_matrix,
        gram: Gram | None = None,
        xt: sp.csr_matrix | None = None,
    ) -> None:
        self.x, self.xt, self.gram = x, x.T.tocsr() if xt is None else xt, gram
        self.precision = precision
        self.vector = isinstance(precision, np.ndarray) and precision.ndim == 1

    def penalty(self, shift: np.ndarray) -> np.ndarray:
        if self.vector:
            result: np.ndarray = self.precision * shift
        elif sp.issparse(self.precision):
            result = symmetric_product(self.precision, shift)
        else:
            result = self.precision @ shift
        return result

    def hessian(self, weights: np.ndarray) -> Hessian:
        if self.gram is not None:  # a sparse matrix prior is the gram's base already
            diagonal = np.asarray(self.precision) if self.vector else np.zeros(self.gram.size)
            return self.gram.matrix(weights, diagonal)
        hessian = (self.xt @ sp.diags(weights) @ self.x).toarray()
        if self.vector:
            hessian[np.diag_indices_from(hessian)] += self.precision
        else:
            hessian += self.precision
        result: np.ndarray = hessian
        return result

    def solve(self, hessian: Hessian, gradient: np.ndarray) -> np.ndarray:
        if isinstance(hessian, np.ndarray):
            result: np.ndarray = la.cho_solve(la.cho_factor(hessian), gradient)
            return result
        assert self.gram is not None
        return self.gram.factor(hessian).solve(gradient)


def _mode(
    x: sp.csr_matrix,
    cells: Cells,
    link: Link,
    beta: np.ndarray,
    prior_mean: np.ndarray,
    curvature: _Curvature,
    noise: float,
    settings: Settings,
) -> tuple[np.ndarray, Hessian, int, bool]:
    """Newton's method to the posterior mode; returns (mode, negative Hessian, steps, ok).

    Gaussian: the log posterior is quadratic, so the first step lands on the mode.
    """
    xt = curvature.xt
    n, s = cells.n, cells.s

    def penalty(b: np.ndarray) -> np.ndarray:
        return curvature.penalty(b - prior_mean)

    def objective(b: np.ndarray) -> float:
        eta = x @ b
        if link == "logistic":
            loglik = float(s @ eta - n @ np.logaddexp(0.0, eta))
        else:
            loglik = float(-(cells.ss - 2 * s * eta + n * eta**2).sum() / (2 * noise**2))
        return loglik - 0.5 * float((b - prior_mean) @ penalty(b))

    current = objective(beta)
    for step in range(1, settings.max_iterations + 1):
        eta = x @ beta
        if link == "logistic":
            mu = expit(eta)
            weights = n * mu * (1.0 - mu)
            gradient = xt @ (s - n * mu)
        else:
            weights = n / noise**2
            gradient = xt @ ((s - n * eta) / noise**2)
        gradient = gradient - penalty(beta)
        hessian = curvature.hessian(weights)
        direction = curvature.solve(hessian, gradient)
        size = 1.0
        while True:  # step halving keeps every step an improvement
            candidate = beta + size * direction
            value = objective(candidate)
            if value >= current - 1e-12 or size < 1e-6:
                break
            size /= 2
        beta, current = candidate, value
        if link == "gaussian" or np.max(np.abs(size * direction)) < settings.tolerance:
            if link == "logistic":  # the curvature at the mode itself
                mu = expit(x @ beta)
                hessian = curvature.hessian(n * mu * (1.0 - mu))
            return beta, hessian, step, True
    return beta, hessian, settings.max_iterations, False


def _covariance(hessian: Hessian) -> tuple[np.ndarray | None, sp.csc_matrix | None]:
    """A posterior's (cov, precision) from the negative Hessian at its mode."""
    if isinstance(hessian, np.ndarray):
        return _inverse(hessian), None
    return None, hessian


def _inverse(hessian: np.ndarray) -> np.ndarray:
    factor = la.cho_factor(hessian)
    inverse: np.ndarray = la.cho_solve(factor, np.eye(len(hessian)))
    symmetric: np.ndarray = (inverse + inverse.T) / 2
    return symmetric


def _cholesky(cov: np.ndarray) -> np.ndarray:
    jitter = 0.0
    for _ in range(6):
        try:
            result: np.ndarray = la.cholesky(cov + jitter * np.eye(len(cov)), lower=True)
            return result
        except la.LinAlgError:
            jitter = max(jitter * 10, 1e-10)
    raise la.LinAlgError("posterior covariance is not positive definite")


def _noise(x: sp.csr_matrix, cells: Cells, beta: np.ndarray, noise: float) -> float:
    """The residual standard deviation of a Gaussian fit, from the cells' sums of squares."""
    eta = x @ beta
    rss = float((cells.ss - 2 * cells.s * eta + cells.n * eta**2).sum())
    total = cells.total
    if total <= 1:
        return noise
    return float(np.sqrt(max(rss / total, NOISE_FLOOR**2)))


def _term_scales(
    effects: np.ndarray,
    variance: np.ndarray,
    terms: np.ndarray,
    group_of_term: np.ndarray,
    scales: Mapping[str, float],
) -> np.ndarray:
    """Each term's own scale (automatic relevance), pooled towards its group's.

    A term's variance is the mean of its effects' second moments, with ``TERM_POOLING``
    pseudo-parameters at the group's variance: a term the data shows to matter gets room,
    the many that do not are shrunk hard, and a term with little data stays near its group.
    """
    moments = np.bincount(terms, effects**2 + variance, minlength=len(group_of_term))
    sizes = np.bincount(terms, minlength=len(group_of_term))
    group_variance = np.array([scales[GROUPS[g]] ** 2 for g in group_of_term])
    values = np.sqrt((moments + TERM_POOLING * group_variance) / (sizes + TERM_POOLING))
    lo = np.array([SCALE_BOUNDS[GROUPS[g]][0] for g in group_of_term])
    hi = np.array([SCALE_BOUNDS[GROUPS[g]][1] for g in group_of_term])
    result: np.ndarray = np.clip(values, lo, hi)
    return result


def _update_scales(
    effects: np.ndarray, variance: np.ndarray, groups: np.ndarray, scales: Mapping[str, float]
) -> dict[str, float]:
    """The EM update: each group's variance = mean of (effect² + its posterior variance)."""
    updated = dict(scales)
    for index, group in enumerate(GROUPS):
        members = groups == index
        if not members.any():
            continue
        lo, hi = SCALE_BOUNDS[group]
        value = float(np.sqrt(np.mean(effects[members] ** 2 + variance[members])))
        updated[group] = float(np.clip(value, lo, hi))
    cap = max(updated["main"], SCALE_BOUNDS["knob×knob"][0])
    for group in ("knob×knob", "knob×context"):
        updated[group] = min(updated[group], cap)
    return updated
