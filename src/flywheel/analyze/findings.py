"""Findings from the learner's posterior: what works alone, what works together, and what to do.

One model, one truth: the findings are read off the posterior the playbook was published
from (the same fit that serves decisions), on the rows it was fitted on (quarantined rows
left out). Intervals come from fresh posterior draws (not the playbook's exploration draws,
which are deliberately narrowed).

- **Single-dimension findings**: per knob value and per context level, the rows, the observed
  mean, and the model's estimate with every other factor kept as it was in the data (partial
  dependence), with its lift over a reference (the skeleton default for knobs, the first level
  for context) and 95% intervals.
- **Cross-dimensional findings**: per modelled pair, the interaction beyond the additive
  prediction: the pair's parameters double-centred (what neither main effect can express),
  with the prior's pull removed (the likelihood's estimate, so the test has a plain fit's
  power and error rate), tested as a block with a Wald chi-square, then Benjamini–Hochberg
  q-values across every pair tested. Each cell's effect is shown on the reward scale (the
  cell's mean minus the same without the interaction, through the link) beside the cell's
  observed mean.
- **Best combinations** per segment: exact values, expected result and interval, the
  probability that the combination is the best one (share of posterior draws), and the lift
  over the skeleton default.
- **Readiness**: the minimum detectable effect at 80% power (5% two-sided for main effects;
  for pairs, the q = 0.1 level Bonferroni-split across pairs) given the rows per level or per
  cell, against the smallest effect worth finding (``effect``), with the rows still needed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

from flywheel.learn.cells import Cells
from flywheel.learn.design import Term
from flywheel.learn.model import Posterior
from flywheel.playbook.book import MAX_TABULATED_SEGMENTS, Playbook

DRAWS = 400
POWER_Z = float(stats.norm.ppf(0.8))
CELL_CHUNK = 4_000


@dataclass(frozen=True)
class LevelFinding:
    """One factor level alone: observed and modelled, and its lift over the reference."""

    factor: str
    kind: str  # "knob" | "context"
    level: Any
    rows: int
    observed: float | None
    estimate: float
    low: float
    high: float
    reference: Any
    lift: float
    lift_low: float
    lift_high: float

    @property
    def clear(self) -> bool:
        """The lift's interval excludes zero."""
        return self.lift_low > 0 or self.lift_high < 0


@dataclass(frozen=True)
class PairCell:
    """One cell of a pair: its rows, observed mean, model mean and interaction effect."""

    levels: tuple[Any, Any]
    rows: int
    observed: float | None
    model: float
    effect: float  # beyond the additive prediction, on the reward scale
    low: float
    high: float


@dataclass(frozen=True)
class Interaction:
    """A modelled pair, tested as a block; ``q_value`` is Benjamini–Hochberg adjusted."""

    factors: tuple[str, str]
    group: str
    statistic: float
    dof: int
    p_value: float
    q_value: float
    cells: tuple[PairCell, ...]

    @property
    def name(self) -> str:
        return " × ".join(self.factors)

    @property
    def strongest(self) -> PairCell:
        return max(self.cells, key=lambda c: abs(c.effect))


@dataclass(frozen=True)
class Best:
    """The best combination of one segment, as exact values."""

    segment: str  # "genre = thriller, 10 <= size < 50"
    context: dict[str, Any]
    params: dict[str, Any]
    expected: float
    low: float
    high: float
    p_best: float
    default: float
    lift: float
    lift_low: float
    lift_high: float
    rows: int


@dataclass(frozen=True)
class Readiness:
    """Can the data detect an effect of the wanted size, for one factor or pair?"""

    order: str  # "main" | "pair"
    factors: tuple[str, ...]
    rows: int  # rows behind the comparison (per level or per cell: the thinnest pair)
    mde: float
    effect: float
    ready: bool
    more_rows: int  # rows still needed overall (0 when ready)


@dataclass(frozen=True)
class Findings:
    single: tuple[LevelFinding, ...]
    interactions: tuple[Interaction, ...]
    best: tuple[Best, ...]
    readiness: tuple[Readiness, ...]
    sigma: float
    effect: float
    extra: dict[str, Any] = field(default_factory=dict)


def compute(
    playbook: Playbook, cells: Cells, *, effect: float | None = None, seed: int = 0
) -> Findings:
    """Every finding of ``playbook``'s posterior over the data ``cells`` it was fitted on."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _Compute(playbook, cells, effect, seed).run()


class _Compute:
    def __init__(self, playbook: Playbook, cells: Cells, effect: float | None, seed: int) -> None:
        self.playbook = playbook
        self.spec = playbook.spec
        self.posterior: Posterior = playbook.posterior
        self.design = self.posterior.design
        self.cells = cells
        rng = np.random.default_rng(seed)
        self.draws = self.posterior.draws(DRAWS, rng, 1.0)
        n = cells.n
        mean = cells.s.sum() / max(n.sum(), 1e-12)
        within = max(float(cells.ss.sum() - (cells.s**2 / np.maximum(n, 1e-12)).sum()), 0.0)
        total = max(float(cells.ss.sum() / max(n.sum(), 1e-12) - mean**2), 0.0)
        # the reward's spread: within cells when cells hold several rows, else overall
        self.sigma = (
            float(np.sqrt(within / max(n.sum() - len(n), 1.0)))
            if n.sum() > 2 * len(n)
            else float(np.sqrt(total))
        )
        self.sigma = self.sigma or float(np.sqrt(total)) or 1.0
        self.effect = effect if effect is not None else 0.1 * self.sigma

    # --- helpers ---------------------------------------------------------------------------------

    def _levels(self, factor: str) -> list[Any]:
        if factor in self.spec.knob:
            return list(self.spec.knob[factor].values)
        feature = self.spec.feature[factor]
        if factor in self.playbook.encoding.edges:
            edges = self.playbook.encoding.edges[factor]
            labels = []
            for b in range(len(edges) + 1):
                lo = "" if b == 0 else f"{edges[b - 1]:g} <= "
                hi = "" if b == len(edges) else f" < {edges[b]:g}"
                labels.append(f"{lo}{factor}{hi}" if edges else "any")
            return labels
        return list(feature.values)

    def _pd(self, fixed: Mapping[str, int], beta: np.ndarray | None = None) -> np.ndarray:
        """Partial dependence: the data-weighted mean reward with ``fixed`` factors set, per
        draw (``beta`` None) or at one parameter vector."""
        cells = self.cells
        weights = cells.n / max(cells.n.sum(), 1e-12)
        params = self.draws.T if beta is None else beta[:, None]
        out = np.zeros(params.shape[1])
        for start in range(0, len(cells), CELL_CHUNK):
            part = slice(start, start + CELL_CHUNK)
            codes: dict[str, np.ndarray | int] = {f: c[part] for f, c in cells.codes.items()}
            codes.update(fixed)
            size = len(cells.n[part])
            x = self.design.matrix(codes, size)
            out += weights[part] @ self.posterior.response(x @ params)
        return out

    def _observed(self, mask: np.ndarray) -> float | None:
        n = self.cells.n[mask].sum()
        return float(self.cells.s[mask].sum() / n) if n > 0 else None

    # --- the findings ----------------------------------------------------------------------------

    def run(self) -> Findings:
        single = self._single()
        interactions = self._interactions()
        best = self._best()
        readiness = self._readiness()
        return Findings(single, interactions, best, readiness, self.sigma, self.effect)

    def _single(self) -> tuple[LevelFinding, ...]:
        out = []
        factors = [(k.name, "knob") for k in self.spec.knobs]
        factors += [(f.name, "context") for f in self.spec.context]
        for name, kind in factors:
            levels = self._levels(name)
            reference = (
                self.spec.knob[name].values.index(self.spec.default[name]) if kind == "knob" else 0
            )
            curves = [self._pd({name: i}) for i in range(len(levels))]
            # the posterior median of each level's partial dependence: the middle of the same
            # draws its interval comes from, so it always lies inside it (the plug-in value at
            # the posterior mean need not: averaging a non-linear link over rare outcomes
            # pulls the draws away from it)
            points = [float(np.median(curve)) for curve in curves]
            for i, level in enumerate(levels):
                mask = self.cells.codes[name] == i
                lift = curves[i] - curves[reference]
                out.append(
                    LevelFinding(
                        factor=name,
                        kind=kind,
                        level=level,
                        rows=round(float(self.cells.n[mask].sum())),
                        observed=self._observed(mask),
                        estimate=points[i],
                        low=float(np.quantile(curves[i], 0.025)),
                        high=float(np.quantile(curves[i], 0.975)),
                        reference=levels[reference],
                        lift=float(np.median(lift)),
                        lift_low=float(np.quantile(lift, 0.025)),
                        lift_high=float(np.quantile(lift, 0.975)),
                    )
                )
        return tuple(out)

    def _interactions(self) -> tuple[Interaction, ...]:
        tested: list[tuple[Term, float, int, float, tuple[PairCell, ...]]] = []
        for term in self.design.terms:
            if len(term.factors) != 2:
                continue
            a, b = term.factors
            na, nb = self.design.levels[a], self.design.levels[b]
            if na < 2 or nb < 2:
                continue
            delta, cov, statistic, dof = self._pair_evidence(term, na, nb)
            p_value = float(stats.chi2.sf(statistic, dof))
            sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
            levels_a, levels_b = self._levels(a), self._levels(b)
            cells = []
            for i, j in itertools.product(range(na), range(nb)):
                mask = (self.cells.codes[a] == i) & (self.cells.codes[b] == j)
                model = float(self._pd({a: i, b: j}, self.posterior.mean)[0])
                k = i * nb + j
                effect, low, high = self._beyond(model, delta[k], sd[k])
                cells.append(
                    PairCell(
                        levels=(levels_a[i], levels_b[j]),
                        rows=round(float(self.cells.n[mask].sum())),
                        observed=self._observed(mask),
                        model=model,
                        effect=effect,
                        low=low,
                        high=high,
                    )
                )
            tested.append((term, statistic, dof, p_value, tuple(cells)))
        q = benjamini_hochberg([t[3] for t in tested])
        return tuple(
            Interaction(
                (term.factors[0], term.factors[1]),
                term.group,
                statistic,
                dof,
                p,
                float(q[i]),
                cells,
            )
            for i, (term, statistic, dof, p, cells) in enumerate(tested)
        )

    def _pair_evidence(
        self, term: Term, na: int, nb: int
    ) -> tuple[np.ndarray, np.ndarray, float, int]:
        """What the data say about a pair's interaction, without the prior's pull.

        The pure interaction lives in the double-centred contrasts ``z`` of the pair's block
        (a basis ``B`` of them, (na - 1)(nb - 1) of them); the data identify them alone. The
        Laplace posterior's precision of ``z`` is the data's information plus the block's
        prior precision (1 / scale², independent of everything else), so subtracting the
        prior gives the likelihood's estimate and covariance, and the Wald statistic of a
        plain (unpenalised) fit. Shrunk estimates would make the test conservative and the
        cell intervals too narrow around too small an effect (measured: bench/analysis.py).
        Returns the cells' double-centred effects (link scale), their covariance, the Wald
        statistic and its degrees of freedom.
        """
        basis = np.kron(_contrasts(na), _contrasts(nb))  # (na * nb, dof), orthonormal
        block = slice(term.offset, term.offset + term.size)
        mean = self.posterior.mean[block]
        cov = basis.T @ self.posterior.cov[block, block] @ basis
        precision = np.linalg.inv(cov)
        scales = self.posterior.term_scales
        index = self.design.terms.index(term)
        prior = 1.0 / scales[index] ** 2 if scales else 0.0
        values, vectors = np.linalg.eigh(precision - prior * np.eye(len(cov)))
        values = np.maximum(values, 1e-9 * max(float(values.max()), 1e-12))
        information = (vectors * values) @ vectors.T
        z = np.linalg.solve(information, precision @ (basis.T @ mean))
        statistic = float(z @ information @ z)
        z_cov = (vectors / values) @ vectors.T
        return basis @ z, basis @ z_cov @ basis.T, statistic, basis.shape[1]

    def _beyond(self, model: float, delta: float, sd: float) -> tuple[float, float, float]:
        """A cell's interaction (link scale ``delta`` ± 1.96 ``sd``) on the reward scale: the
        cell's mean minus what it would be without it, at the cell's linear predictor (the
        interval maps through the link exactly, so it stays honest for large effects)."""
        if self.posterior.link == "logistic":
            p = min(max(model, 1e-9), 1 - 1e-9)
            eta = float(np.log(p / (1 - p)))
        else:
            eta = (model - self.posterior.center) / self.posterior.scale
        base = eta - delta

        def gain(d: float) -> float:
            return float(self.posterior.response(np.array([base + d]))[0]) - float(
                self.posterior.response(np.array([base]))[0]
            )

        return gain(delta), gain(delta - 1.96 * sd), gain(delta + 1.96 * sd)

    def _best(self) -> tuple[Best, ...]:
        out = []
        space = self.spec.space
        default_row = space.row_of(self.spec.default)
        for context in self.playbook.segment_contexts(MAX_TABULATED_SEGMENTS):
            table = self.playbook.segment(context)
            if len(table.rows) == 0:
                continue
            key = self.playbook.key(context)
            codes: dict[str, np.ndarray | int] = {
                f.name: code for f, code in zip(self.spec.context, key, strict=True)
            }
            for j, knob in enumerate(self.design.knobs):
                codes[knob] = space.codes[table.rows, j]
            x = self.design.matrix(codes, len(table.rows))
            sampled = self.posterior.response(x @ self.draws.T)  # (rows, draws)
            wins = np.bincount(np.argmax(sampled, axis=0), minlength=len(table.rows))
            best = table.best
            where = np.flatnonzero(table.rows == (-1 if default_row is None else default_row))
            d = int(where[0]) if len(where) else best
            lift = sampled[best] - sampled[d]
            mask = np.ones(len(self.cells), dtype=bool)
            for f, code in zip(self.spec.context, key, strict=True):
                mask &= self.cells.codes[f.name] == code
            described = self.playbook.describe_context(context)
            out.append(
                Best(
                    segment=segment_name(described, self.playbook.encoding.edges),
                    context=described,
                    params={**space.params(int(table.rows[best])), **self.spec.fixed},
                    expected=float(table.mean[best]),
                    low=float(table.low[best]),
                    high=float(table.high[best]),
                    p_best=float(wins[best] / self.draws.shape[0]),
                    default=float(table.mean[d]),
                    lift=float(table.mean[best] - table.mean[d]),
                    lift_low=float(np.quantile(lift, 0.025)),
                    lift_high=float(np.quantile(lift, 0.975)),
                    rows=round(float(self.cells.n[mask].sum())),
                )
            )
        return tuple(out)

    def _readiness(self) -> tuple[Readiness, ...]:
        out = []
        total = round(float(self.cells.n.sum()))
        z_main = float(stats.norm.ppf(0.975)) + POWER_Z
        for k in self.spec.knobs:
            counts = np.bincount(self.cells.codes[k.name], self.cells.n, minlength=len(k.values))
            typical = _harmonic(counts)  # two values of typical support compared
            mde = _mde(z_main, self.sigma, np.array([typical, typical]))
            out.append(self._verdict("main", (k.name,), round(typical), mde, total))
        pairs = [t for t in self.design.terms if len(t.factors) == 2]
        alpha = 0.1 / max(len(pairs), 1)
        z_pair = float(stats.norm.ppf(1 - alpha / 2)) + POWER_Z
        for term in pairs:
            a, b = term.factors
            grid = np.zeros((self.design.levels[a], self.design.levels[b]))
            np.add.at(grid, (self.cells.codes[a], self.cells.codes[b]), self.cells.n)
            # a 2 x 2 contrast of cells of typical support (cells the rules exclude are empty)
            typical = _harmonic(grid.ravel())
            mde = _mde(z_pair, self.sigma, np.full(4, typical))
            out.append(self._verdict("pair", (a, b), round(typical), mde, total))
        return tuple(out)

    def _verdict(
        self, order: str, factors: tuple[str, ...], rows: int, mde: float, total: int
    ) -> Readiness:
        ready = mde <= self.effect
        more = 0
        if not ready:
            needed = total * (mde / self.effect) ** 2 if np.isfinite(mde) else float("inf")
            more = int(np.ceil(needed - total)) if np.isfinite(needed) else -1
        return Readiness(order, factors, rows, mde, self.effect, ready, more)


def _contrasts(n: int) -> np.ndarray:
    """An orthonormal basis of the vectors of length ``n`` that sum to zero, ``(n, n - 1)``."""
    centred = np.eye(n) - 1.0 / n
    u, _, _ = np.linalg.svd(centred)
    return u[:, : n - 1]


def level_name(factor: str, level: Any) -> str:
    """``factor = level``, or a numeric bin's own label (``10 <= size < 50``)."""
    text = str(level)
    return text if "<" in text and factor in text else f"{factor} = {text}"


def segment_name(context: Mapping[str, Any], numeric: Mapping[str, Any]) -> str:
    """A segment in words: categorical features as ``name = value``, numeric ones as their
    bin (``10 <= size < 50``); ``everyone`` without context."""
    parts = [str(v) if k in numeric else f"{k} = {v}" for k, v in context.items()]
    return ", ".join(p for p in parts if p != "any") or "everyone"


def _harmonic(counts: np.ndarray) -> float:
    """Harmonic mean of the non-empty counts (0 when all are empty)."""
    filled = counts[counts > 0]
    return float(len(filled) / np.sum(1.0 / filled)) if len(filled) else 0.0


def _mde(z: float, sigma: float, counts: np.ndarray) -> float:
    """The smallest contrast of these groups' means detectable: z * sigma * sqrt(sum 1/n)."""
    if np.any(counts <= 0):
        return float("inf")
    return float(z * sigma * np.sqrt(np.sum(1.0 / counts)))


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input's order (SciPy's).

    >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p_values, dtype=float)
    if not len(p):
        return p
    return np.asarray(stats.false_discovery_control(p, method="bh"))
