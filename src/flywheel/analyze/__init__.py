"""analyze: findings and readiness from the learner's posterior, in plain sentences too.

``analyze(store, spec, playbook)`` returns an :class:`Analysis`; :mod:`.render` turns it into
JSON, Markdown or a standalone HTML page, :mod:`.export` into spreadsheets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from flywheel.analyze.findings import (
    Best,
    Findings,
    Interaction,
    LevelFinding,
    Readiness,
    compute,
    level_name,
)
from flywheel.errors import InvalidInputError
from flywheel.playbook.book import Playbook
from flywheel.playbook.publish import training_cells
from flywheel.spec import Spec
from flywheel.store import Store

__all__ = ["Analysis", "analyze"]

Q_LEVEL = 0.1  # interactions reported as found at q <= 0.1


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
    the reward's standard deviation); readiness is judged against it.
    """
    as_of = datetime.fromisoformat(playbook.meta["training"]["as_of"])
    cells = training_cells(store, spec, playbook.encoding, as_of)
    if not len(cells):
        raise InvalidInputError("playbook", "its training rows are no longer in the store")
    findings = compute(playbook, cells, effect=effect, seed=seed)
    observational = store.query(
        "SELECT count(*) AS n FROM decisions WHERE ts <= $as_of AND propensity IS NULL",
        {"as_of": as_of},
    ).to_pylist()[0]["n"]
    return Analysis(
        version=playbook.version,
        as_of=as_of.isoformat(),
        rows=cells.rows,
        mean=cells.mean,
        observational=int(observational),
        findings=findings,
        sentences=tuple(_sentences(findings, dict(spec.fixed))),
        warnings=tuple(_warnings(findings, int(observational), cells.rows)),
    )


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


def _warnings(f: Findings, observational: int, rows: int) -> list[str]:
    out = []
    if observational:
        out.append(
            f"{observational:,} of the decisions were recorded without propensities (imported"
            " or logged): where they were chosen by people or rules, effects among them may be"
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
    del rows
    return out
