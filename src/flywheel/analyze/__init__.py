"""analyze: findings and readiness from the learner's posterior, in plain sentences too.

``analyze(store, spec, playbook)`` returns an :class:`Analysis`; :mod:`.render` turns it into
JSON, Markdown or a standalone HTML page, :mod:`.export` into spreadsheets.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np

from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.analyze.evaluate import Evaluation, evaluate
from flywheel.analyze.findings import (
    Best,
    Findings,
    Interaction,
    LevelFinding,
    Readiness,
    compute,
    level_name,
)
from flywheel.errors import FlywheelError, InvalidInputError
from flywheel.learn.cells import Cells
from flywheel.learn.design import Encoding
from flywheel.learn.sql import context_columns, row_weight, trains
from flywheel.playbook.book import Playbook
from flywheel.playbook.publish import training_cells
from flywheel.rules import quote_name
from flywheel.spec import Spec
from flywheel.store import Store

__all__ = ["Analysis", "Logging", "analyze"]

Q_LEVEL = 0.1  # interactions reported as found at q <= 0.1
UNIFORM_LEVEL = 0.01  # the logging is not uniform when a chi-square test rejects at 1% overall
MIN_EXPECTED = 5.0  # rows expected per cell, on average, before a chi-square test is trusted
MAX_EVALUATED = 200_000  # rows with propensities past which the offline evaluation is skipped


@dataclass(frozen=True)
class Logging:
    """How the analysed rows were chosen, as far as the log tells.

    ``weighted`` rows carry a propensity that varies (a non-uniform logger): the observed
    figures weigh each by its inverse (self-normalised). ``observational`` rows carry none;
    ``not_uniform`` says why their knob values do not look uniformly chosen (empty: the
    chi-square tests found nothing; ``tested`` False: too few rows to tell).
    """

    rows: int
    propensities: int  # rows that carry a propensity
    weighted: int  # of them, rows whose propensity is not the same for all (0: uniform)
    observational: int  # rows that carry none
    tested: bool
    not_uniform: tuple[str, ...]


@dataclass(frozen=True)
class Analysis:
    """Everything ``flywheel analyze`` reports, as typed values."""

    version: int
    as_of: str
    rows: int
    mean: float
    observational: int
    findings: Findings
    sentences: tuple[str, ...]
    warnings: tuple[str, ...]
    logging: Logging | None = None
    evaluation: Evaluation | None = None  # the playbook on the rows logged with propensities
    evaluation_note: str = ""  # why there is none, when there is none

    @property
    def single(self) -> tuple[LevelFinding, ...]:
        return self.findings.single

    @property
    def interactions(self) -> tuple[Interaction, ...]:
        return self.findings.interactions

    @property
    def best(self) -> tuple[Best, ...]:
        return self.findings.best

    @property
    def readiness(self) -> tuple[Readiness, ...]:
        return self.findings.readiness

    def found(self, q: float = Q_LEVEL) -> list[Interaction]:
        """The interactions found at false discovery rate ``q``, strongest evidence first."""
        return sorted((i for i in self.interactions if i.q_value <= q), key=lambda i: i.p_value)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["findings"]["interactions"] = [
            {**asdict(i), "name": i.name, "found": i.q_value <= Q_LEVEL} for i in self.interactions
        ]
        return out


def analyze(
    store: Store,
    spec: Spec,
    playbook: Playbook,
    *,
    effect: float | None = None,
    seed: int = 0,
) -> Analysis:
    """Analyse ``playbook`` on the rows it was fitted on (its training cut-off).

    ``effect`` is the smallest effect worth finding, in reward units (default: a tenth of
    the reward's standard deviation); readiness is judged against it. The observed figures
    weigh rows logged with varying propensities by their inverse; rows logged without one
    are tested for uniform logging, and warned about where it is not. The playbook is also
    evaluated on the rows logged with propensities (what it would have earned on them).
    """
    as_of = datetime.fromisoformat(playbook.meta["training"]["as_of"])
    cells = training_cells(store, spec, playbook.encoding, as_of)
    if not len(cells):
        raise InvalidInputError("playbook", "its training rows are no longer in the store")
    logging, observed = _logging(store, spec, playbook.encoding, as_of)
    findings = compute(playbook, cells, effect=effect, seed=seed, observed=observed)
    evaluation, note = _evaluation(store, spec, playbook, as_of, logging)
    return Analysis(
        version=playbook.version,
        as_of=as_of.isoformat(),
        rows=cells.rows,
        mean=cells.mean,
        observational=logging.observational,
        findings=findings,
        sentences=tuple(_sentences(findings, dict(spec.fixed))),
        warnings=tuple(_warnings(findings, logging)),
        logging=logging,
        evaluation=evaluation,
        evaluation_note=note,
    )


# --- how the rows were logged --------------------------------------------------------------------


def _logging_sql(spec: Spec, encoding: Encoding) -> str:
    """Per context (numeric features in their bins) × knob combination, the analysed rows'
    weighted sums split by whether they carry a propensity: without one plainly, with one
    also divided by it (the rows and weights the learner reads: complete, not quarantined)."""
    features = context_columns(spec, encoding)
    knobs = [quote_name(k.name) for k in spec.knobs]
    weight = row_weight(spec)
    complete = trains(spec)
    bare = "propensity IS NULL OR propensity <= 0"
    known = "propensity > 0"
    return f"""
WITH a AS ({aligned_rows_sql(spec)}),
w AS (SELECT *, {weight} AS h FROM a WHERE {complete} AND {NOT_QUARANTINED})
SELECT {", ".join([*features, *knobs])},
    CAST(coalesce(sum(h) FILTER (WHERE {bare}), 0) AS DOUBLE) AS n0,
    CAST(coalesce(sum(h * reward) FILTER (WHERE {bare}), 0) AS DOUBLE) AS s0,
    CAST(coalesce(sum(h * reward * reward) FILTER (WHERE {bare}), 0) AS DOUBLE) AS ss0,
    count(*) FILTER (WHERE {bare}) AS rows0,
    CAST(coalesce(sum(h / propensity) FILTER (WHERE {known}), 0) AS DOUBLE) AS n1,
    CAST(coalesce(sum(h * reward / propensity) FILTER (WHERE {known}), 0) AS DOUBLE) AS s1,
    CAST(coalesce(sum(h * reward * reward / propensity) FILTER (WHERE {known}), 0) AS DOUBLE)
        AS ss1,
    CAST(coalesce(sum(h) FILTER (WHERE {known}), 0) AS DOUBLE) AS h1,
    count(*) FILTER (WHERE {known}) AS rows1,
    min(propensity) FILTER (WHERE {known}) AS low, max(propensity) FILTER (WHERE {known}) AS high
FROM w GROUP BY {", ".join(str(i + 1) for i in range(len(features) + len(knobs)))}
"""


def _logging(
    store: Store, spec: Spec, encoding: Encoding, as_of: datetime
) -> tuple[Logging, Cells | None]:
    """How the analysed rows were logged, and the rows weighted for the observed figures
    (``None``: as the learner weighs them, where no propensity varies).

    A row with a propensity ``p`` weighs ``c / p`` (``c`` keeps the total weight of those
    rows their count), so among them every combination counts as if it had been chosen
    uniformly; rows without one weigh 1. Self-normalised per level, a uniform logger's rows
    get the plain mean.
    """
    table = store.query(_logging_sql(spec, encoding),
                        {"as_of": as_of})  # fmt: skip
    data = {name: table.column(name).to_pylist() for name in table.column_names}
    size = table.num_rows
    codes: dict[str, np.ndarray] = {}
    known = np.ones(size, dtype=bool)
    for f in spec.context:
        values = data[f.name]
        if f.name in encoding.edges:
            found = np.array(values, dtype=np.int64)
        else:
            lookup: dict[Any, int] = dict(encoding.categorical[f.name])
            other = encoding.other(f.name)
            found = np.array(
                [lookup.get(v, -1 if other is None else other) for v in values], dtype=np.int64
            )
        known &= found >= 0
        codes[f.name] = found
    for k in spec.knobs:
        index: dict[Any, int] = {v: i for i, v in enumerate(k.values)}
        found = np.array([index.get(v, -1) for v in data[k.name]], dtype=np.int64)
        known &= found >= 0
        codes[k.name] = found
    codes = {name: c[known] for name, c in codes.items()}
    stat = {name: np.asarray(data[name], dtype=float)[known] for name in
            ("n0", "s0", "ss0", "rows0", "n1", "s1", "ss1", "h1", "rows1")}  # fmt: skip
    low = min((v for v, ok in zip(data["low"], known, strict=True) if ok and v), default=None)
    high = max((v for v, ok in zip(data["high"], known, strict=True) if ok and v), default=None)
    with_p = round(float(stat["rows1"].sum()))
    without = round(float(stat["rows0"].sum()))
    varied = low is not None and high is not None and high > low * (1 + 1e-9)
    observed = None
    if varied:
        scale = stat["h1"].sum() / stat["n1"].sum()
        observed = Cells(
            codes,
            stat["n0"] + scale * stat["n1"],
            stat["s0"] + scale * stat["s1"],
            stat["ss0"] + scale * stat["ss1"],
            with_p + without,
        ).compact()
    reasons: list[str] = []
    tested = False
    if without:
        bare = stat["rows0"] > 0
        counts = Cells({n: c[bare] for n, c in codes.items()}, stat["rows0"][bare],
                       np.zeros(int(bare.sum())), np.zeros(int(bare.sum()))).compact()  # fmt: skip
        tested, reasons = _uniformity(spec, counts)
    logging = Logging(
        rows=with_p + without,
        propensities=with_p,
        weighted=with_p if varied else 0,
        observational=without,
        tested=tested,
        not_uniform=tuple(reasons),
    )
    return logging, observed


def _uniformity(spec: Spec, counts: Cells) -> tuple[bool, list[str]]:
    """Were these rows' knob values chosen uniformly among the allowed combinations,
    whatever the context? Chi-square tests of each knob's shares, and of each pair of knobs'
    joint shares, against the allowed combinations' (goodness of fit), and of each knob's
    independence of each context feature the skeleton's rules leave alone, Bonferroni-split
    at :data:`UNIFORM_LEVEL`; a test runs only with :data:`MIN_EXPECTED` rows a cell on
    average. Returns whether any test ran and, for each that rejects, why (in words)."""
    space = spec.space
    allowed = space.codes
    position = {name: j for j, name in enumerate(space.names)}
    knobs = [k for k in spec.knobs if k.name in position and len(k.values) > 1]
    tests: list[tuple[str, np.ndarray, np.ndarray]] = []  # (why, observed, expected shares)
    for k in knobs:
        observed = np.bincount(counts.codes[k.name], counts.n, len(k.values))
        share = np.bincount(allowed[:, position[k.name]], minlength=len(k.values)).astype(float)
        tests.append((f"{k.name}'s values were not chosen equally often", observed, share))
    for a, b in itertools.combinations(knobs, 2):
        nb = len(b.values)
        size = len(a.values) * nb
        observed = np.bincount(counts.codes[a.name] * nb + counts.codes[b.name], counts.n, size)
        joint = allowed[:, position[a.name]] * nb + allowed[:, position[b.name]]
        share = np.bincount(joint, minlength=size).astype(float)
        tests.append((f"{a.name} and {b.name} were not chosen independently", observed, share))
    ran: list[tuple[str, float, int, float]] = []
    for why, observed, share in tests:
        inside = share > 0
        total = float(observed.sum())
        if np.any(observed[~inside] > 0) or total / max(int(inside.sum()), 1) < MIN_EXPECTED:
            continue  # a combination outside the allowed ones, or too few rows to tell
        expected = share[inside] / share.sum() * total
        ran.append((why, *_chi2(observed[inside], expected, int(inside.sum()) - 1)))
    ruled = set(space.context_names)
    for f in spec.context:
        if f.name in ruled:  # the allowed combinations depend on it: uniform differs by level
            continue
        for k in knobs:
            grid = np.zeros((int(counts.codes[f.name].max(initial=-1)) + 1, len(k.values)))
            np.add.at(grid, (counts.codes[f.name], counts.codes[k.name]), counts.n)
            grid = grid[grid.sum(axis=1) > 0][:, grid.sum(axis=0) > 0]
            if min(grid.shape) < 2 or grid.sum() / grid.size < MIN_EXPECTED:
                continue
            expected = np.outer(grid.sum(axis=1), grid.sum(axis=0)) / grid.sum()
            dof = (grid.shape[0] - 1) * (grid.shape[1] - 1)
            why = f"{k.name} was chosen differently across {f.name}"
            ran.append((why, *_chi2(grid.ravel(), expected.ravel(), dof)))
    level = UNIFORM_LEVEL / max(len(ran), 1)
    reasons = [
        f"{why} (χ² = {statistic:,.1f}, {dof} df, {_p(p)})"
        for why, statistic, dof, p in sorted(ran, key=lambda r: r[3])
        if p < level
    ]
    return bool(ran), reasons


def _chi2(observed: np.ndarray, expected: np.ndarray, dof: int) -> tuple[float, int, float]:
    """Pearson's statistic, its degrees of freedom and its p-value."""
    from scipy import stats  # imported when used: a serving process never needs it

    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, dof, float(stats.chi2.sf(statistic, dof)) if dof > 0 else 1.0


def _p(p: float) -> str:
    return f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"


def _evaluation(
    store: Store, spec: Spec, playbook: Playbook, as_of: datetime, logging: Logging
) -> tuple[Evaluation | None, str]:
    """The playbook evaluated offline on the analysed rows logged with propensities, or why
    not (no such row, too many for an analysis to read, or too few to estimate from)."""
    if not logging.propensities:
        return None, "no analysed row carries a propensity: nothing to evaluate the playbook on"
    if logging.propensities > MAX_EVALUATED:
        return None, (
            f"{logging.propensities:,} rows carry propensities: evaluate them with"
            f" `flywheel evaluate` (the analysis reads at most {MAX_EVALUATED:,})"
        )
    try:
        found = evaluate(store, spec, playbook, as_of=as_of, greedy=not spec.explore)
    except FlywheelError as err:
        return None, f"no offline evaluation: {err}"
    return found, ""


# --- words ---------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _assignment(params: dict[str, Any], fixed: dict[str, Any]) -> str:
    """The knob values of a combination (the skeleton's fixed values go without saying)."""
    return " with ".join(f"{k} = {v}" for k, v in params.items() if k not in fixed)


def _q(q: float) -> str:
    return f"q = {q:.2g}" if q >= 0.001 else "q < 0.001"


def _sentences(f: Findings, fixed: dict[str, Any]) -> list[str]:
    out = []
    found = sorted((i for i in f.interactions if i.q_value <= Q_LEVEL), key=lambda i: i.p_value)
    q_by_factor: dict[str, float] = {}
    for i in found:
        for name in i.factors:
            q_by_factor[name] = min(q_by_factor.get(name, 1.0), i.q_value)
    for b in sorted(f.best, key=lambda b: -b.lift)[:5]:
        if b.lift_low <= 0:
            continue
        involved = [q_by_factor[k] for k in b.params if k in q_by_factor]
        evidence = f"; {_q(min(involved))}" if involved else ""
        out.append(
            f"For {b.segment}, {_assignment(b.params, fixed)} gives {_fmt(b.expected)}"
            f" ({_fmt(b.low)}–{_fmt(b.high)}) vs {_fmt(b.default)} for the default"
            f" (P(best) = {b.p_best:.2f}{evidence})."
        )
    for i in found[:5]:
        c = i.strongest
        direction = "better" if c.effect > 0 else "worse"
        first, second = (level_name(f, v) for f, v in zip(i.factors, c.levels, strict=True))
        out.append(
            f"{i.name} interact ({_q(i.q_value)}): {first} with {second} does"
            f" {_fmt(abs(c.effect))} {direction} than the two effects alone predict"
            f" ({_fmt(c.low)} to {_fmt(c.high)})."
        )
    for s in sorted(
        (s for s in f.single if s.clear and s.kind == "knob"), key=lambda s: -abs(s.lift)
    )[:3]:
        out.append(
            f"On its own, {s.factor} = {s.level} changes the result by {s.lift:+.3g}"
            f" ({s.lift_low:+.3g} to {s.lift_high:+.3g}) against {s.factor} = {s.reference}."
        )
    for order, kind in (("main", "Single-dimension"), ("pair", "Cross-dimensional")):
        group = [r for r in f.readiness if r.order == order]
        if group:
            out.append(_readiness_sentence(kind, group, f.effect))
    return out


def _readiness_sentence(kind: str, group: list[Readiness], effect: float) -> str:
    """``Cross-dimensional analysis supported for a × b; not yet for c × d (~N more rows).``"""
    ready = [" × ".join(r.factors) for r in group if r.ready]
    waiting = sorted((r for r in group if not r.ready), key=lambda r: r.more_rows)
    parts = [f"{kind} analysis at effects of {_fmt(effect)}:"]
    if ready:
        parts.append(f"supported for {', '.join(ready)}" + (";" if waiting else "."))
    if waiting:
        needs = ", ".join(
            f"{' × '.join(r.factors)} (detects {_fmt(r.mde)}; "
            + (f"~{r.more_rows:,} more rows)" if r.more_rows >= 0 else "needs rows in every cell)")
            for r in waiting
        )
        parts.append(f"not yet for {needs}.")
    return " ".join(parts)


def _warnings(f: Findings, logging: Logging) -> list[str]:
    out = []
    if logging.observational and logging.not_uniform:
        out.append(
            f"{logging.observational:,} of the {logging.rows:,} analysed rows carry no"
            " propensity (logged or imported), and their knob values were not chosen uniformly: "
            + "; ".join(logging.not_uniform)
            + ". Effects among them may be confounded by whatever the choice followed: the"
            " model adjusts for the factors it models, not for anything else."
        )
    elif logging.observational and not logging.tested:
        out.append(
            f"{logging.observational:,} of the {logging.rows:,} analysed rows carry no"
            " propensity (logged or imported), too few to tell whether their knob values were"
            " chosen uniformly: where people or rules chose them, effects among them may be"
            " confounded by how they were chosen."
        )
    single = {(s.factor, str(s.level)): s for s in f.single}
    # Simpson: the raw single-dimension comparison and the model's adjusted one disagree
    for s in f.single:
        ref = single.get((s.factor, str(s.reference)))
        if ref is None or s.observed is None or ref.observed is None or s is ref:
            continue
        raw = s.observed - ref.observed
        if s.clear and raw * s.lift < 0 and abs(raw) >= 0.5 * abs(s.lift):
            out.append(
                f"{s.factor} = {s.level} looks {raw:+.3g} against {s.reference} in the raw data,"
                f" but {s.lift:+.3g} ({s.lift_low:+.3g} to {s.lift_high:+.3g}) once the other"
                " factors are taken into account: the single-dimension view is confounded."
            )
    # the single-dimension view contradicts the cross-dimensional one
    for b in f.best:
        if b.lift_low <= 0:
            continue
        for name, value in b.params.items():
            alone = single.get((name, str(value)))
            if alone is not None and alone.kind == "knob" and alone.lift_high < 0:
                out.append(
                    f"{name} = {value} looks worse on its own ({alone.lift:+.3g}), yet for"
                    f" {b.segment} it is part of the best combination: judge it in"
                    " combination, not alone."
                )
    return out
