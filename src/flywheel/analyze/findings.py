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
  observed mean; where the data say less about a cell than the prior does (no or almost no
  rows), it shows the posterior's, near-zero effect, not the likelihood's extreme one.
- **Best combinations** per segment with training rows (the most rows first): exact values,
  expected result and interval, the probability that the combination is the best one (share
  of posterior draws), and the lift over the skeleton default. The segments without rows are
  folded: how many, and what the playbook serves them.
- **Readiness**: the minimum detectable effect at 80% power (5% two-sided for main effects;
  for pairs, the q = 0.1 level Bonferroni-split across pairs) given the rows per level or per
  cell, against the smallest effect worth finding (``effect``), with the rows still needed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from flywheel.learn.cells import Cells
from flywheel.learn.design import Term
from flywheel.learn.model import Posterior
from flywheel.playbook.book import MAX_TABULATED_SEGMENTS, Playbook
from flywheel.threads import one_blas_thread

DRAWS = 400
POWER_Z = NormalDist().inv_cdf(0.8)
CELL_CHUNK = 4_000
UNSEEN_EXAMINED = 500  # segments without rows whose served combination is looked up


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
class Unseen:
    """The segments without a training row, folded into one line: how many there are, and
    the best combinations the playbook serves them (counted over the ``examined`` ones)."""

    segments: int
    served: tuple[tuple[dict[str, Any], int], ...]  # knob values and segments, most first
    examined: int


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
    segments: int = 1  # every segment of the playbook (context levels and bins, combined)
    unseen: Unseen | None = None  # the segments without a training row (None: there are none)


def compute(
    playbook: Playbook,
    cells: Cells,
    *,
    effect: float | None = None,
    seed: int = 0,
    observed: Cells | None = None,
) -> Findings:
    """Every finding of ``playbook``'s posterior over the data ``cells`` it was fitted on.

    ``observed`` are the same rows weighted as the observed (raw) means should weigh them
    (by inverse propensity where the logging policy was not uniform); by default ``cells``.
    """
    with one_blas_thread():
        return _Compute(playbook, cells, effect, seed, observed).run()


class _Compute:
    def __init__(
        self,
        playbook: Playbook,
        cells: Cells,
        effect: float | None,
        seed: int,
        observed: Cells | None = None,
    ) -> None:
        self.playbook = playbook
        self.spec = playbook.spec
        self.posterior: Posterior = playbook.posterior
        self.design = self.posterior.design
        self.cells = cells
        self.seen = cells if observed is None else observed
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
        if feature.open:  # the levels learned for this playbook, and other
            return self.playbook.encoding.labels(factor)
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

    def _observed(self, levels: Mapping[str, int]) -> float | None:
        """The observed mean of the rows at these factor levels (weighted as ``observed``)."""
        seen = self.seen
        mask = np.ones(len(seen), dtype=bool)
        for name, level in levels.items():
            mask &= seen.codes[name] == level
        n = seen.n[mask].sum()
        return float(seen.s[mask].sum() / n) if n > 0 else None

    def _context(self, key: tuple[int, ...]) -> dict[str, Any]:
        """A context of the segment with these level codes (a bin's midpoint for numbers)."""
        out: dict[str, Any] = {}
        encoding = self.playbook.encoding
        for f, code in zip(self.spec.context, key, strict=True):
            if f.name in encoding.edges:
                edges = encoding.edges[f.name]
                if not edges:
                    out[f.name] = 0.0
                elif code == 0:
                    out[f.name] = edges[0] - 1.0
                elif code == len(edges):
                    out[f.name] = edges[-1] + 1.0
                else:
                    out[f.name] = (edges[code - 1] + edges[code]) / 2
            elif code == encoding.other(f.name):
                out[f.name] = encoding.stand_in(f.name)
            else:
                values = encoding.categorical[f.name]
                out[f.name] = next(v for v, c in values.items() if c == code)
        return out

    def _segments(self) -> tuple[np.ndarray, np.ndarray]:
        """The context level codes of every segment with training rows, ``(segments,
        features)``, and their rows, most rows first."""
        names = [f.name for f in self.spec.context]
        if not names:
            return np.zeros((1, 0), dtype=np.int64), np.array([self.cells.n.sum()])
        keys = np.stack([self.cells.codes[n] for n in names], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        rows = np.bincount(inverse.ravel(), self.cells.n, len(unique))
        order = np.argsort(-rows, kind="stable")
        return unique[order], rows[order]

    # --- the findings ----------------------------------------------------------------------------

    def run(self) -> Findings:
        single = self._single()
        interactions = self._interactions()
        keys, rows = self._segments()
        best = self._best(keys, rows)
        readiness = self._readiness()
        segments = math.prod(self.design.levels[f.name] for f in self.spec.context)
        unseen = self._unseen({tuple(k) for k in keys.tolist()}, segments)
        return Findings(
            single,
            interactions,
            best,
            readiness,
            self.sigma,
            self.effect,
            segments=segments,
            unseen=unseen,
        )

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
                        observed=self._observed({name: i}),
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
        from scipy.stats import chi2  # imported when used: a serving process never needs it

        tested: list[tuple[Term, float, int, float, tuple[PairCell, ...]]] = []
        for term in self.design.terms:
            if len(term.factors) != 2:
                continue
            a, b = term.factors
            na, nb = self.design.levels[a], self.design.levels[b]
            if na < 2 or nb < 2:
                continue
            delta, sd, statistic, dof = self._pair_evidence(term, na, nb)
            p_value = float(chi2.sf(statistic, dof)) if dof else 1.0
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
                        observed=self._observed({a: i, b: j}),
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
        """What the data say about a pair's interaction, and what each cell shows of it.

        The pure interaction lives in the double-centred contrasts ``z`` of the pair's block
        (a basis ``B`` of them, (na - 1)(nb - 1) of them); the data identify them alone. The
        Laplace posterior's precision of ``z`` is the data's information plus the block's
        prior precision (1 / scale², independent of everything else), so subtracting the
        prior gives the likelihood's estimate and covariance, and the Wald statistic of a
        plain (unpenalised) fit, over the directions the data inform at all. Shrunk estimates
        would make the test conservative and the cell intervals too narrow around too small
        an effect (measured: bench/analysis.py).

        The cells show each direction of ``z`` (an eigenvector of the data's information)
        as the likelihood reads it where the data carry at least as much information about it
        as the prior does, and as the posterior reads it (the prior's pull kept) where they
        carry less: the likelihood alone would put a cell with no or almost no data (no click
        in a handful of rows) at an extreme, barely bounded effect; the posterior puts it
        where the prior does, near zero, with the prior's width.

        Returns the cells' double-centred effects (link scale), their standard deviations,
        the Wald statistic and its degrees of freedom.
        """
        basis = np.kron(_contrasts(na), _contrasts(nb))  # (na * nb, dof), orthonormal
        block = slice(term.offset, term.offset + term.size)
        mean = basis.T @ self.posterior.mean[block]
        precision = _inverse_psd(basis.T @ self._block_cov(block) @ basis)
        scales = self.posterior.term_scales
        index = self.design.terms.index(term)
        prior = 1.0 / scales[index] ** 2 if scales else 0.0
        values, vectors = np.linalg.eigh(precision - prior * np.eye(len(precision)))
        along = vectors.T @ mean  # the posterior mean along each direction
        # directions the data inform (numerical noise aside) enter the test
        informed = values > 1e-6 * max(float(values.max(initial=0.0)), prior, 1e-12)
        data = np.where(informed, values, 1.0)
        likelihood = along * (data + prior) / data
        statistic = float(np.sum(np.where(informed, likelihood**2 * data, 0.0)))
        # what the cells show: the likelihood where it outweighs the prior, else the posterior
        plain = informed & (values >= prior)
        shown = np.where(plain, likelihood, along)
        # (a direction neither the data nor a prior inform gets a huge, finite variance)
        variance = 1.0 / np.maximum(np.where(plain, data, np.maximum(values, 0.0) + prior), 1e-12)
        loadings = basis @ vectors
        return loadings @ shown, np.sqrt(loadings**2 @ variance), statistic, int(informed.sum())

    def _block_cov(self, block: slice) -> np.ndarray:
        """The posterior covariance of one term's parameters (the only place it is read)."""
        return self.posterior.block(np.arange(block.start, block.stop))

    def _beyond(self, model: float, delta: float, sd: float) -> tuple[float, float, float]:
        """A cell's interaction (link scale ``delta`` ± 1.96 ``sd``) on the reward scale: the
        cell's mean minus what it would be without it, at the cell's linear predictor (the
        interval maps through the link exactly, and the estimate, the middle of the same
        normal, maps to the middle of the interval: it always lies inside)."""
        if self.posterior.link == "logistic":
            p = min(max(model, 1e-9), 1 - 1e-9)
            eta = float(np.log(p / (1 - p)))
        else:
            eta = (model - self.posterior.center) / self.posterior.scale
        base = eta - delta
        shifts = np.array([0.0, delta, delta - 1.96 * sd, delta + 1.96 * sd])
        r = self.posterior.response(base + shifts)  # no overflow at any value
        return float(r[1] - r[0]), float(r[2] - r[0]), float(r[3] - r[0])

    def _best(self, keys: np.ndarray, rows: np.ndarray) -> tuple[Best, ...]:
        """The best combination of each segment with training rows (the most rows first, at
        most :data:`MAX_TABULATED_SEGMENTS` of them)."""
        out = []
        space = self.spec.space
        default_row = space.row_of(self.spec.default)
        shown = keys[:MAX_TABULATED_SEGMENTS].tolist()
        contexts = [self._context(tuple(key)) for key in shown]
        self.playbook.tabulate(contexts)  # the tables not yet computed, scored together
        for key, n, context in zip(shown, rows[:MAX_TABULATED_SEGMENTS], contexts, strict=True):
            table = self.playbook.segment(context)
            if len(table.rows) == 0:
                continue
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
                    rows=round(float(n)),
                )
            )
        return tuple(out)

    def _unseen(self, seen: set[tuple[int, ...]], segments: int) -> Unseen | None:
        """The segments without training rows, folded: how many, and what the playbook serves
        them (its best combination), counted over the first :data:`UNSEEN_EXAMINED`."""
        if segments <= len(seen):
            return None
        served: dict[int, int] = {}  # a row of the space: segments served it
        contexts = [
            context
            for context in self.playbook.segment_contexts(len(seen) + UNSEEN_EXAMINED)
            if self.playbook.key(context) not in seen
        ][:UNSEEN_EXAMINED]
        self.playbook.tabulate(contexts)  # the tables not yet computed, scored together
        for context in contexts:
            table = self.playbook.segment(context)
            if len(table.rows):
                row = int(table.rows[table.best])
                served[row] = served.get(row, 0) + 1
        examined = len(contexts)
        folded = tuple(
            (self.spec.space.params(row), count)
            for row, count in sorted(served.items(), key=lambda item: -item[1])
        )
        return Unseen(segments - len(seen), folded, examined)

    def _readiness(self) -> tuple[Readiness, ...]:
        out = []
        total = round(float(self.cells.n.sum()))
        z_main = NormalDist().inv_cdf(0.975) + POWER_Z
        for k in self.spec.knobs:
            counts = np.bincount(self.cells.codes[k.name], self.cells.n, minlength=len(k.values))
            typical = _harmonic(counts)  # two values of typical support compared
            mde = _mde(z_main, self.sigma, np.array([typical, typical]))
            out.append(self._verdict("main", (k.name,), round(typical), mde, total))
        pairs = [t for t in self.design.terms if len(t.factors) == 2]
        alpha = 0.1 / max(len(pairs), 1)
        z_pair = NormalDist().inv_cdf(1 - alpha / 2) + POWER_Z
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


def _inverse_psd(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix, by its eigenvalues (a direction
    numerically singular gets a huge, finite precision rather than an error)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    floor = 1e-15 * max(float(values.max(initial=0.0)), 1e-300)
    inverse: np.ndarray = (vectors / np.maximum(values, floor)) @ vectors.T
    return inverse


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
    from scipy import stats  # imported when used: a serving process never needs it

    p = np.asarray(p_values, dtype=float)
    if not len(p):
        return p
    return np.asarray(stats.false_discovery_control(p, method="bh"))
