"""The learn cycle: align, aggregate, fit, tabulate the policy, publish a playbook."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.errors import InvalidInputError, NotFoundError, StoreError
from flywheel.learn import sql as learn_sql
from flywheel.learn.cells import Cells
from flywheel.learn.design import Design, Encoding
from flywheel.learn.forget import Steps, chained, forget_weight, weighed
from flywheel.learn.model import DEFAULT_SCALES, Posterior, Settings, fit, update
from flywheel.learn.sql import cells_sql, forget_params, quantiles_sql
from flywheel.playbook.book import (
    MAX_TABULATED_SEGMENTS,
    Playbook,
    Redraw,
    design_for,
    scoring_dtype,
)
from flywheel.seatbelt import breaker, gate, guard, quality
from flywheel.seatbelt.monitors import Check
from flywheel.seatbelt.quality import QualityReport
from flywheel.spec import NEWCOMER_ROWS, Spec
from flywheel.store import Store, tables_for
from flywheel.store.base import Reader
from flywheel.store.warm import Tiered
from flywheel.threads import one_blas_thread


@dataclass(frozen=True)
class LearnResult:
    """What a learn cycle did: ``published`` a new ``version``, or not, and why.

    ``checks`` are the seatbelt's verdicts; ``halted`` is true when the seatbelt stopped
    publishing (this cycle or before), ``rolled_back`` when the guard restored an earlier
    version (``version`` is then the restored copy, now served).
    """

    published: bool
    version: int | None
    reason: str
    diagnostics: dict[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    halted: bool = False
    rolled_back: bool = False
    quality: QualityReport | None = None


def learn(
    store: Store,
    spec: Spec,
    *,
    as_of: float | None = None,
    seed: int | None = None,
    force: bool = False,
) -> tuple[LearnResult, Playbook | None]:
    """Run one learn cycle on everything the store holds up to ``as_of`` (default: now).

    With the seatbelt on (the default) the cycle first lets the negative-loop guard judge the
    live playbook, refuses to run while halted, quarantines rows that fail the quality checks,
    and publishes only if the gate passes (see :mod:`flywheel.seatbelt.gate`). Without new
    data since the newest playbook nothing is published, unless ``force``.

    Returns the result and the playbook decide should serve from now on (``None``: no change).
    """
    started = time.perf_counter()
    now = time.time() if as_of is None else as_of
    moment = datetime.fromtimestamp(now, tz=UTC)
    when = {"as_of": moment}
    previous_version, previous_meta, incumbent = _previous(store, spec)
    belt = spec.seatbelt.enabled
    report = None
    if belt:
        rolled = _guard(store, spec, moment, incumbent)
        if rolled is not None:
            return rolled
        stop = breaker.halted(store)
        if stop is not None:
            reason = f"halted since {stop.since} by {stop.check}: {stop.reason}"
            return LearnResult(False, previous_version, reason, halted=True), None
        if spec.quality.active:
            report = quality.scan(store, spec, moment, moment, since=_cut(store, incumbent))
        else:  # the skeleton's rules alone: a cheap check of the decisions table
            quality.skeleton_scan(store, spec, moment, moment)
    encoding = _encoding(store, spec, when)
    last = _stored_change(store)
    forget = _forgotten(spec, last)
    reader = engine(store, spec)
    table = _cells_table(reader, spec, encoding, when, forget)
    rows = int(pc.sum(table.column(learn_sql.ROWS)).as_py() or 0) if table.num_rows else 0
    if belt and report is None:  # no checks: nothing new can be quarantined; count the rest
        report = quality.counted(store, rows)
    if rows == 0:
        reason = "no decisions with a reward yet"
        return LearnResult(False, previous_version, reason, quality=report), None
    if incumbent is None and report is not None and report.received:  # the first cycle
        share = report.quarantined / report.received
        if share > spec.seatbelt.max_quarantined:
            reason = (
                f"not published: {report.quarantined:,} of {report.received:,} rows quarantined"
                f" ({share:.1%}; seatbelt.max_quarantined is {spec.seatbelt.max_quarantined:.1%})"
            )
            breaker.audit(store, moment, "rejected", reason, {"quality": report.as_dict()})
            return LearnResult(False, previous_version, reason, quality=report), None
    if rows < spec.learn.min_rows:
        return LearnResult(
            False,
            previous_version,
            f"only {rows} rows with a reward; learn.min_rows is {spec.learn.min_rows}",
            quality=report,
        ), None
    signature = [
        rows,
        round(float(pc.sum(table.column(learn_sql.REWARD_SUM)).as_py()), 9),
        _iso(pc.max(table.column(learn_sql.LAST_TS))),
    ]
    if (
        not force
        and previous_meta.get("signature") == signature
        and previous_meta.get("spec_digest") == spec.digest
    ):
        return LearnResult(
            False,
            previous_version,
            f"no new data since version {previous_version}",
            quality=report,
        ), None

    checks: list[Check] = []
    data = None
    if belt and incumbent is not None and report is not None:
        cut = _cut(store, incumbent) or moment
        floor = _floor(store, last)
        long_cut, before = _long_cut(store, incumbent, cut)
        moving = _moving(last, long_cut if floor is None else max(long_cut, floor))
        data = gate.windows(store, spec, moment, cut, floor, long_cut, moving, forget)
        checks = gate.data_checks(spec, report, data, incumbent, _loader(store, spec, incumbent))
        stopped = _halt_on(store, spec, moment, checks, incumbent, before, report)
        if stopped is not None:
            return stopped
        found = next((c for c in checks if c.name == "change" and not c.ok), None)
        if found is None and spec.learn.forget_auto:
            since = None if last is None else datetime.fromisoformat(last["at"])
            found = _drifted(spec, data, incumbent, since)
            if found is not None:
                if not any(c.name == "change" for c in checks):  # too few rows to judge
                    checks.append(found)
                checks = [found if c.name == "change" else c for c in checks]
        if found is not None:
            adapted = _adapt(store, spec, moment, found, data, incumbent, last)
            if adapted != forget:
                forget = adapted
                table = _cells_table(reader, spec, encoding, when, forget)

    playbook = _fit(_drawing(spec, forget), table, encoding, rows, signature, now, seed)
    if data is not None and incumbent is not None:
        ope = gate.ope_check(spec, playbook, incumbent, data)
        checks.append(ope)
        if not ope.ok:
            breaker.audit(store, moment, "rejected", ope.summary, ope.detail)
            reason = f"not published: the candidate looks worse than version {incumbent.version}"
            return LearnResult(
                False,
                previous_version,
                f"{reason} ({ope.summary})",
                checks=tuple(checks),
                quality=report,
            ), None
    meta = playbook.meta
    meta["replaces"] = previous_version
    if checks or report is not None:
        meta["seatbelt"] = {
            "checks": [c.as_dict() for c in checks],
            "quality": None if report is None else report.as_dict(),
        }
    version = store.publish(spec.digest, playbook.meta_json(), playbook.payload())
    playbook.version = version
    meta["diagnostics"]["learn_seconds"] = round(time.perf_counter() - started, 4)
    reason = f"fitted {rows} rows in {meta['training']['cells']} cells" + (
        f"; replaces version {previous_version}" if previous_version else "; first playbook"
    )
    return LearnResult(
        True, version, reason, meta["diagnostics"], tuple(checks), quality=report
    ), playbook


CHANGE_KEY = "learn.change"
FORGET_SHARE = 0.25
"""After a change of the world, the rows before it weigh together at least a quarter of the
rows seen since it when it was found (and less as more arrive), more if the rows after it
do not bear the change out (:func:`flywheel.learn.forget.forget_weight`)."""
MOST_KEPT = 0.125  # ... and each may be brought down to this weight, whatever their number


def forgetting(store: Store, spec: Spec) -> Steps:
    """How the learner weighs the rows before the changes of the world the seatbelt found
    (``learn.half_life = "auto"``); empty when nothing is forgotten."""
    return _forgotten(spec, _stored_change(store))


def _drawing(spec: Spec, forget: Steps) -> Spec:
    """The settings a cycle or an online update draws with, once the learner ``forget``s
    rows before a change of the world: Thompson sampling's draws widen from
    ``explore_spread`` towards the posterior's full width as far as the world moved at the
    newest change (the rows before it weigh ``w``: the spread moves ``1 - w`` of the way to
    1). Narrower draws bet that the history holds: they spend less on combinations that look
    poor, which is what a stationary world asks. Once the world has changed, what the
    policy stopped serving may have changed too, and only draws as wide as the posterior
    serve it again. A spread of 1 or more stays as set."""
    spread = spec.learn.explore_spread
    if not forget or spread >= 1.0:
        return spec
    kept = forget[-1][1]
    return replace(spec, learn=replace(spec.learn, explore_spread=1.0 - (1.0 - spread) * kept))


def _stored_change(store: Store) -> dict[str, Any] | None:
    """The last change of the world the seatbelt found, as stored (``None``: none yet)."""
    raw = store.get_meta(CHANGE_KEY)
    return json.loads(raw) if raw else None


def _forgotten(spec: Spec, change: dict[str, Any] | None) -> Steps:
    """The forgetting the stored ``change`` holds: every change forgotten so far, oldest
    first (a change stored before the steps were kept: itself and the one before it)."""
    if change is None or not spec.learn.forget_auto:
        return ()
    if "steps" in change:
        return tuple((datetime.fromisoformat(at), float(w)) for at, w in change["steps"])
    older = [change["earlier"]] if change.get("earlier") else []
    return tuple(
        (datetime.fromisoformat(c["at"]), float(c["weight"]))
        for c in [*older, change]
        if float(c["weight"]) < 1
    )


def engine(store: Store, spec: Spec) -> Reader:
    """What computes a cycle's cells: the store, or Spark beside it (``[learn] engine``)."""
    if spec.learn.engine != "spark":
        return store
    from flywheel.store.spark import SparkReader

    if not isinstance(store, Tiered):
        raise StoreError('learn.engine: "spark" reads a store opened with its tiers (open_store)')
    return SparkReader(store, tables_for(spec), spec.learn.spark)


def _cells_table(
    store: Reader,
    spec: Spec,
    encoding: Encoding,
    when: dict[str, datetime],
    forget: Steps,
    unseen: bool = False,
) -> pa.Table:
    """The cells of the rows as of ``when["as_of"]``, weighed by ``forget``; with ``unseen``,
    only the rows a learner of the complete rows as of ``when["since"]`` has not seen."""
    sql = cells_sql(spec, encoding, since=unseen, late=unseen, forget=len(forget))
    return store.query(sql, {**when, **forget_params(forget)})


class _Rows(NamedTuple):
    """The gate's rows since the last change (or resume), in decision order: each one's cell
    (context segment and combination), result, decision time (in seconds) and the served
    model's expected result."""

    cell: np.ndarray
    reward: np.ndarray
    seconds: np.ndarray
    prior: np.ndarray


def _since_floor(spec: Spec, data: gate.Windows, incumbent: Playbook) -> _Rows:
    return _evidence(spec, pa.concat_tables([data.long_reference, data.long_recent]), incumbent)


def _evidence(spec: Spec, rows: pa.Table, incumbent: Playbook) -> _Rows:
    if not rows.num_rows:
        return _Rows(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
    cell, _ = gate.cells_of_rows(spec, incumbent, rows)
    reward = rows.column("reward").to_numpy().astype(float)
    return _Rows(cell, reward, gate.seconds(rows), gate.predict(incumbent, rows))


DRIFT_MARGIN = 6.0
"""Nats a point found by the rows' predictions alone must gain to count as a change."""


def _drifted(
    spec: Spec, data: gate.Windows, incumbent: Playbook, last: datetime | None
) -> Check | None:
    """A change no knob level shows alone: the world moved slowly, or everywhere a little
    (a drift over many cycles, the end of one). The point where the rows since the last
    change split best (:func:`flywheel.seatbelt.gate.change_point`) is a change when the
    rows after it are predicted better with the rows before it weighing less, by
    DRIFT_MARGIN nats (a point searched for among every split needs more than the
    seatbelt's own). ``None``: nothing moved."""
    table = pa.concat_tables([data.long_reference, data.long_recent])
    if last is not None:  # after the last change the learner forgot: the search moves on
        table = table.filter(
            pc.greater(table.column("ts"), pa.scalar(last, table.column("ts").type))
        )
    if table.num_rows < 2 * spec.seatbelt.min_rows:
        return None
    at = gate.change_point(spec, table, incumbent)
    rows = _evidence(spec, table, incumbent)
    split = int(np.searchsorted(rows.seconds, at.timestamp(), side="right"))
    least = _least(len(rows.reward) - split, split)
    base = weighed(rows.seconds, data.forgotten)
    weight, gains = forget_weight(
        rows.cell, rows.reward, rows.prior, split, least, margin=DRIFT_MARGIN, base=base
    )
    if weight >= 1:
        return None
    summary = (
        f"the world moved near {at:%Y-%m-%d %H:%M}: the {len(rows.reward) - split:,} results"
        f" since are predicted {gains[weight]:.1f} nats better with the rows before it"
        f" weighing {weight:.3g}"
    )
    detail = {"at": at.isoformat(), "by": "prediction"}
    return Check("change", False, False, summary, detail)


def _least(after: int, before: int) -> float:
    """The least weight the rows before a change point may get: together a FORGET_SHARE of
    the rows after it, and at most MOST_KEPT each (so a change found late, with many rows
    after it, may still fade the rows before it)."""
    return min(MOST_KEPT, FORGET_SHARE * max(after, 1) / max(before, 1))


def _floor(store: Store, change: dict[str, Any] | None) -> datetime | None:
    """Where the gate's windows start: the last resume or the last ``change`` stored, the
    later one (what came before either is not the normal a new window is judged against),
    whether the learner forgets the rows before a change by itself or by a fixed half-life."""
    found = change or {}
    mark = found.get("floor", found.get("at"))
    changed = datetime.fromisoformat(mark) if mark else None
    marks = [m for m in (breaker.resumed_at(store), changed) if m]
    return max(marks) if marks else None


def _moving(change: dict[str, Any] | None, since: datetime) -> frozenset[str]:
    """The knobs the world is changing on, by the stored ``change``: those a change was
    first found on after ``since`` (within the windows the gate judges, after the last
    resume). A level of one of them that rises now is that change going on, not a level that
    jumped alone."""
    started = _knob_starts(change)
    return frozenset(k for k, at in started.items() if datetime.fromisoformat(at) > since)


def _knob_starts(change: dict[str, Any] | None) -> dict[str, str]:
    """When a stored change's knobs were first found changing (none: no change yet)."""
    return dict((change or {}).get("knobs") or {})


def _in_motion(
    last: dict[str, Any] | None,
    found: Check,
    moving: frozenset[str],
    moment: datetime,
    every: Sequence[str],
) -> dict[str, str]:
    """When the world was first found changing on each knob it is changing on, after the
    ``last`` change stored: the knobs still ``moving`` keep their start (a change found
    while one goes on does not prolong it); the others ``found`` names start at ``moment``,
    and a change found by prediction (no knob level shows it alone: the world moved
    everywhere a little) puts ``every`` knob in motion."""
    started = _knob_starts(last)
    knobs = {k: started[k] for k in sorted(moving) if k in started}
    named = found.detail.get("knobs") or (every if found.detail.get("by") == "prediction" else [])
    knobs.update({k: moment.isoformat() for k in named if k not in knobs})
    return knobs


def _adapt(
    store: Store,
    spec: Spec,
    moment: datetime,
    found: Check,
    data: gate.Windows,
    incumbent: Playbook,
    last: dict[str, Any] | None,
) -> Steps:
    """A change of the world (``last``: the change stored before it): remember where it
    began (the gate's later windows start there, whatever the learner forgets: the old
    world is not the normal the new one is judged against) and record it; the cycle goes on
    and publishes. With ``half_life = "auto"`` the rows before it weigh little from now on,
    as little as the rows after it ask for (at least a FORGET_SHARE of those when it was
    found; rows that still predict the rows after it keep their weight:
    :func:`flywheel.learn.forget.forget_weight`), times what they weighed already. Returns
    how the learner weighs the rows now (a fixed half-life, or none, forgets as it was told
    to: nothing more)."""
    at = datetime.fromisoformat(found.detail["at"])
    change: dict[str, Any] = {"at": at.isoformat(), "weight": 1.0, "found": moment.isoformat()}
    knobs = _in_motion(last, found, data.moving, moment, [k.name for k in spec.knobs])
    if knobs:
        change["knobs"] = knobs
    if found.detail.get("by") == "prediction":  # the gate's windows keep their start
        floor = _floor(store, last)
        change["floor"] = None if floor is None else floor.isoformat()
    if not spec.learn.forget_auto:
        store.set_meta(CHANGE_KEY, json.dumps(change))
        breaker.audit(store, moment, "change", found.summary, found.detail)
        return ()
    counts = store.query(
        "SELECT count(*) FILTER (WHERE ts <= $at) AS before, count(*) FILTER (WHERE ts > $at)"
        " AS after FROM decisions WHERE ts <= $as_of",
        {"at": at, "as_of": moment},
    ).to_pylist()[0]
    before, after = int(counts["before"] or 0), int(counts["after"] or 0)
    least = _least(after, before)
    rows = _since_floor(spec, data, incumbent)
    split = int(np.searchsorted(rows.seconds, at.timestamp(), side="right"))
    base = weighed(rows.seconds, data.forgotten)
    weight, gains = forget_weight(rows.cell, rows.reward, rows.prior, split, least, base=base)
    steps = chained(data.forgotten, at, weight)
    change["weight"] = weight
    change["gains"] = {f"{w:.3g}": round(g, 2) for w, g in gains.items()}
    change["steps"] = [[moment.isoformat(), share] for moment, share in steps]
    store.set_meta(CHANGE_KEY, json.dumps(change))
    times = " times what they weighed" if data.forgotten else ""
    reason = f"{found.summary}; rows before {at:%Y-%m-%d %H:%M} now weigh {weight:.3g}{times}"
    if weight == 1:
        reason = f"{found.summary}; the rows before it still predict the rows after it"
    breaker.audit(store, moment, "change", reason, {**found.detail, **change})
    return steps


def _posterior(spec: Spec, cells: Cells, design: Design) -> Posterior:
    settings = Settings(
        link=spec.learn.link,
        empirical_bayes=spec.learn.empirical_bayes,
        scales=dict(DEFAULT_SCALES),
        prior_mean=_prior_mean(spec, design),
    )
    with one_blas_thread():
        return fit(cells, design, settings)


ONLINE_TABULATED = 256  # segments an online update tabulates ahead; the others on first use


def online(
    store: Store,
    spec: Spec,
    checkpoint: Playbook | None,
    as_of: float,
    rng: np.random.Generator,
) -> Playbook | None:
    """Serving tables that follow the results recorded since ``checkpoint`` (the published
    version served) was fitted: its posterior updated with the cells of the rows it did not
    learn from (:func:`flywheel.learn.model.update`): those decided after its training
    cut-off, and those decided before it whose result came later (a product whose results
    take longer than a cycle learns from them between cycles too); or, before the first
    version, a fit of every row so far. ``None``: nothing new to learn from.

    The result serves like a playbook (exact propensities, recorded with the policy
    ``online`` and the checkpoint's version) but is never stored: published versions stay
    the audited, gated checkpoints. A restored version is not updated.
    """
    if checkpoint is not None and checkpoint.meta.get("restored_from") is not None:
        return None  # a restored version serves exactly as published, until the next cycle
    moment = datetime.fromtimestamp(as_of, tz=UTC)
    when: dict[str, Any] = {"as_of": moment}
    forget = forgetting(store, spec)  # a late row before a change weighs as it would have
    if checkpoint is None:
        encoding = _encoding(store, spec, when)
    else:
        encoding = checkpoint.encoding
        when["since"] = datetime.fromisoformat(checkpoint.meta["training"]["as_of"])
    table = _cells_table(store, spec, encoding, when, forget, unseen=checkpoint is not None)
    if not table.num_rows:
        return None
    rows = int(pc.sum(table.column(learn_sql.ROWS)).as_py() or 0)
    if checkpoint is None and rows < spec.learn.min_rows:
        return None
    cells = cells_of(table, spec, encoding)
    if checkpoint is None:
        posterior = _posterior(spec, cells, design_for(spec, encoding))
        meta: dict[str, Any] = {"spec_digest": spec.digest, "training": {"rows": 0}}
    else:
        with one_blas_thread():
            posterior = update(checkpoint.posterior, cells)
        meta = dict(checkpoint.meta)
    meta["online"] = {"rows": rows, "as_of": moment.isoformat()}
    drawing = _drawing(spec, forget)  # as a cycle draws: wider after a change it forgot
    with one_blas_thread():
        draws = posterior.draws(
            drawing.learn.draws,
            rng,
            drawing.learn.explore_spread,
            scoring_dtype(posterior),
            drawing.learn.explore_tails,
        )
    version = 0 if checkpoint is None else checkpoint.version  # 0: no version yet
    playbook = Playbook(version, meta, encoding, posterior, draws, {}, drawing, online=True)
    playbook.tabulate(playbook.segment_contexts(ONLINE_TABULATED))
    return playbook


def _fit(
    spec: Spec,
    table: pa.Table,
    encoding: Encoding,
    rows: int,
    signature: list[Any],
    now: float,
    seed: int | None,
) -> Playbook:
    """Fit the model on the cells and tabulate the candidate playbook (not yet published)."""
    cells = cells_of(table, spec, encoding)
    design = design_for(spec, encoding)
    fitted = time.perf_counter()
    posterior = _posterior(spec, cells, design)
    fit_seconds = time.perf_counter() - fitted
    with one_blas_thread():
        redraw, draws = Redraw.drawn(
            posterior, seed, spec.learn.draws, spec.learn.explore_spread, spec.learn.explore_tails
        )
    meta: dict[str, Any] = {
        "created_at": datetime.now(tz=UTC).isoformat(),
        "spec_digest": spec.digest,
        "signature": signature,
        "training": {
            "as_of": datetime.fromtimestamp(now, tz=UTC).isoformat(),
            "first_decision": _iso(pc.min(table.column(learn_sql.FIRST_TS))),
            "last_decision": signature[2],
            "rows": rows,
            "cells": len(cells),
            "weighted_rows": cells.total,
            "mean_reward": cells.mean,
        },
        "settings": {
            "interactions": spec.learn.interactions,
            "half_life_seconds": spec.learn.half_life_seconds,
            "forget_auto": spec.learn.forget_auto,
            "explore_floor": spec.learn.explore_floor,
            "explore_cap": spec.learn.explore_cap,
            "explore_spread": spec.learn.explore_spread,
            "explore_tails": spec.learn.explore_tails,
            "sampling": spec.learn.sampling,
            "draws": spec.learn.draws,
        },
    }
    meta["values"] = _value_rows(spec, cells)
    meta["newcomers"] = [
        [knob, value, share]
        for knob, shares in spec.newcomers.items()
        for value, share in shares.items()
        if share > 0 and _rows_of(meta["values"], knob, value) < NEWCOMER_ROWS
    ]
    playbook = Playbook(0, meta, encoding, posterior, draws, {}, spec, redraw=redraw)
    playbook.tabulate(playbook.segment_contexts(MAX_TABULATED_SEGMENTS))
    meta["diagnostics"] = {
        "link": posterior.link,
        "iterations": posterior.iterations,
        "converged": posterior.converged,
        "prior_scales": {k: round(v, 4) for k, v in posterior.scales.items()},
        "parameters": design.size,
        "fit_seconds": round(fit_seconds, 4),
        "segments": len(playbook.segments),
    }
    return playbook


def _value_rows(spec: Spec, cells: Cells) -> dict[str, list[list[Any]]]:
    """Per open knob, the training rows (weighted) of each of its values."""
    out: dict[str, list[list[Any]]] = {}
    for knob in spec.knobs:
        if knob.open and knob.name in cells.codes:
            counts = np.bincount(
                cells.codes[knob.name], weights=cells.n, minlength=len(knob.values)
            )
            out[knob.name] = [
                [v, round(float(c), 3)] for v, c in zip(knob.values, counts, strict=True)
            ]
    return out


def _rows_of(values: Mapping[str, list[list[Any]]], knob: str, value: Any) -> float:
    return next((float(c) for v, c in values.get(knob, []) if v == value), 0.0)


def _halt_on(
    store: Store,
    spec: Spec,
    moment: datetime,
    checks: list[Check],
    incumbent: Playbook,
    before: int | None,
    report: QualityReport,
) -> tuple[LearnResult, Playbook | None] | None:
    """Halt when a critical data check failed (``None`` when none did). The versions learned
    inside the window in doubt go too: ``before``, the version from before it, is restored."""
    failed = [c for c in checks if c.critical and not c.ok]
    if not failed:
        return None
    failed.sort(key=lambda c: -float(c.detail.get("strength", 0.0)))  # strongest evidence first
    detail = {"checks": [c.as_dict() for c in checks]}
    stop = breaker.halt(store, moment, failed[0].name, "; ".join(c.summary for c in failed), detail)
    reason = f"halted by {stop.check}: {stop.reason}"
    if before is None or before == incumbent.version:
        return LearnResult(
            False, incumbent.version, reason, checks=tuple(checks), halted=True, quality=report
        ), None
    restored = restore(store, spec, before, guarded=False)
    note = f"restored version {before} as version {restored.version}"
    breaker.audit(store, moment, "rollback", f"{note}: {stop.check} alarm", None)
    return LearnResult(
        False,
        restored.version,
        f"{reason}; {note} (learned before the data in doubt)",
        checks=tuple(checks),
        halted=True,
        rolled_back=True,
        quality=report,
    ), restored


def _previous(store: Store, spec: Spec) -> tuple[int | None, dict[str, Any], Playbook | None]:
    """The newest version, its metadata (empty: none yet), and the playbook itself when it
    was learned for this spec (the incumbent); its payload is not kept."""
    found = store.playbook()
    if found is None:
        return None, {}, None
    return found[0], dict(json.loads(found[1])), learned_for(spec, found)


def _metas(store: Store) -> dict[int, str]:
    """Every playbook's metadata (JSON) by version, read without their payloads."""
    return {version: meta for version, _, meta in store.playbook_list()}


def learned_for(spec: Spec, found: tuple[int, str, bytes] | None) -> Playbook | None:
    """A stored playbook (version, metadata, payload) loaded, if it was learned for ``spec``."""
    if found is None or json.loads(found[1]).get("spec_digest") != spec.digest:
        return None
    return Playbook.load(spec, *found)


def _loader(store: Store, spec: Spec, incumbent: Playbook) -> Callable[[int], Playbook | None]:
    cache: dict[int, Playbook | None] = {incumbent.version: incumbent}

    def load(version: int) -> Playbook | None:
        if version not in cache:
            cache[version] = learned_for(spec, store.playbook(version))
        return cache[version]

    return load


def _cut(store: Store, incumbent: Playbook | None) -> datetime | None:
    """Where the gate's recent window starts: the incumbent's training cut-off, or the last
    resume when that is later (what was judged before a resume counts as accepted)."""
    cut = None if incumbent is None else datetime.fromisoformat(incumbent.meta["training"]["as_of"])
    resumed = breaker.resumed_at(store)
    if resumed is not None and (cut is None or resumed > cut):
        cut = resumed
    return cut


def check(
    store: Store, spec: Spec, *, as_of: float | None = None
) -> tuple[LearnResult | None, Playbook | None]:
    """Run the negative-loop guard now (learn runs it first thing); a rollback is returned."""
    now = time.time() if as_of is None else as_of
    moment = datetime.fromtimestamp(now, tz=UTC)
    rolled = _guard(store, spec, moment, learned_for(spec, store.playbook()))
    return rolled if rolled is not None else (None, None)


def _long_cut(store: Store, incumbent: Playbook, cut: datetime) -> tuple[datetime, int | None]:
    """The training cut-off of the version ``gate.SHIFT_CYCLES - 1`` publishes before the
    incumbent (following what each version replaced), and that version; ``cut`` and the
    incumbent's version when there is no such history."""
    meta, found, version = incumbent.meta, cut, incumbent.meta.get("restored_from")
    version = version or incumbent.version
    metas = _metas(store)
    for _ in range(gate.SHIFT_CYCLES - 1):
        replaced = meta.get("replaces")
        if replaced is None or int(replaced) not in metas:
            break
        meta = json.loads(metas[int(replaced)])
        if meta.get("restored_from") is None:
            found, version = datetime.fromisoformat(meta["training"]["as_of"]), int(replaced)
    return min(found, cut), version


def _baseline(store: Store, version: int, min_rows: int) -> int | None:
    """The version whose live results a new one is compared with: the one it replaced, or,
    if that served too little (replaced at once), the nearest before it that served enough."""
    served = store.query(
        "SELECT playbook, count(*) AS n FROM decisions WHERE playbook IS NOT NULL GROUP BY playbook"
    ).to_pylist()
    counts = {int(r["playbook"]): int(r["n"]) for r in served}
    metas = _metas(store)
    current: int | None = version
    for _ in range(20):
        if current is None:
            return None
        if counts.get(current, 0) >= min_rows:
            return current
        found = metas.get(current)
        replaced = None if found is None else json.loads(found).get("replaces")
        current = None if replaced is None else int(replaced)
    return None


def _guard(
    store: Store, spec: Spec, moment: datetime, incumbent: Playbook | None
) -> tuple[LearnResult, Playbook | None] | None:
    """The negative-loop guard: roll back a live version doing significantly worse than the
    one it replaced, and halt. ``None`` when there is nothing to do, or when the version it
    replaced was learned for other knob values (it cannot serve these: the catalogue's own
    review judges a value added at run time, :mod:`flywheel.catalogue`)."""
    if incumbent is None or not incumbent.meta.get("replaces"):
        return None
    old = int(incumbent.meta["replaces"])
    metas = _metas(store)
    old_meta = json.loads(metas.get(old, "{}"))
    if old_meta.get("spec_digest") != spec.digest:
        return None
    baseline = _baseline(store, old, spec.seatbelt.guard_min_rows)
    if baseline is None:
        return None
    since = _trained(json.loads(metas.get(baseline, "{}")))
    resumed = breaker.resumed_at(store)
    since = max(since, resumed) if resumed else since  # judged again only after a resume
    # an older version restored in place of one learned from later rows (a restored copy
    # keeps its original's training): that one is the better judge of their choices
    restored_older = _trained(old_meta) > _trained(incumbent.meta)

    def arbiter() -> Playbook | None:
        return learned_for(spec, store.playbook(old))

    test = guard.live(
        store, spec, moment, incumbent.version, baseline, since, arbiter if restored_older else None
    )
    if test.n_new < spec.seatbelt.guard_min_rows or not test.drop:
        return None
    restored = restore(store, spec, old)
    reason = (
        f"version {incumbent.version} earned {test.difference:+.4f} less than version {baseline}"
        f" live (interval {test.low:+.4f} to {test.high:+.4f}, always-valid p ="
        f" {test.p_value:.2g}, {test.n_new:,} vs {test.n_old:,} results);"
        f" rolled back to version {old} (now served as version {restored.version})"
    )
    detail = {"from": incumbent.version, "to": old, "served_as": restored.version, **test.as_dict()}
    breaker.audit(store, moment, "rollback", reason, detail)
    breaker.halt(store, moment, "negative_loop", reason, detail)
    return LearnResult(False, restored.version, reason, halted=True, rolled_back=True), restored


def _trained(meta: Mapping[str, Any]) -> datetime:
    """A version's training cut-off (the epoch for one without)."""
    found = meta.get("training", {}).get("as_of")
    return datetime.fromisoformat(found) if found else datetime.fromtimestamp(0, tz=UTC)


def restore(store: Store, spec: Spec, version: int, *, guarded: bool = True) -> Playbook:
    """Publish a copy of an earlier version as the newest one (history stays immutable).

    The negative-loop guard judges the copy against the version it replaces, unless not
    ``guarded`` (the seatbelt's own rollback away from data in doubt: the replaced version's
    live results are in doubt too)."""
    found = store.playbook(version)
    if found is None:
        raise NotFoundError("version", f"there is no playbook version {version}")
    _, meta_json, payload = found
    meta = json.loads(meta_json)
    if meta.get("spec_digest") != spec.digest:
        raise InvalidInputError(
            "version", f"version {version} was learned for another spec; it cannot serve this one"
        )
    meta["restored_from"] = version
    meta["replaces"] = store.latest_version() if guarded else None  # the guard judges it
    meta["created_at"] = datetime.now(tz=UTC).isoformat()
    new_version = store.publish(
        meta.get("spec_digest", spec.digest), json.dumps(meta, sort_keys=True), payload
    )
    return Playbook.load(spec, new_version, json.dumps(meta), payload)


def _iso(scalar: pa.Scalar[Any]) -> str | None:
    value = scalar.as_py()
    return None if value is None else value.isoformat()


def _encoding(store: Store, spec: Spec, when: dict[str, datetime]) -> Encoding:
    edges: dict[str, tuple[float, ...]] = {}
    for f in spec.context:
        if f.kind == "numeric":
            q = (
                store.query(quantiles_sql(spec, f.name, spec.learn.context_bins), when)
                .column("q")[0]
                .as_py()
            )
            edges[f.name] = tuple(sorted({float(v) for v in (q or []) if v is not None}))
    categorical = {f.name: {v: i for i, v in enumerate(f.values)} for f in spec.context if f.listed}
    categorical.update(_open_levels(store, spec, when))
    return Encoding(categorical, edges, frozenset(f.name for f in spec.context if f.open))


def _open_levels(store: Store, spec: Spec, when: dict[str, datetime]) -> dict[str, dict[Any, int]]:
    """The levels of each open categorical feature, learned from the training rows: its
    seed values, then its most frequent other values (ties in value order), ``max_levels``
    in all (the level ``other`` comes after them)."""
    features = [f for f in spec.context if f.open]
    if not features:
        return {}
    limits = {f.name: f.max_levels for f in features}
    found: dict[str, list[tuple[int, Any]]] = {f.name: [] for f in features}
    for row in store.query(learn_sql.levels_sql(spec, limits), when).to_pylist():
        feature = spec.feature[row["feature"]]
        text = str(row["value"])
        value: Any = int(text) if feature.dtype == "integer" else text
        found[feature.name].append((int(row["n"]), value))
    out: dict[str, dict[Any, int]] = {}
    for f in features:
        ranked = [v for _, v in sorted(found[f.name], key=lambda c: (-c[0], c[1]))]
        seeds = set(f.values)
        levels = [*f.values, *(v for v in ranked if v not in seeds)]
        out[f.name] = {v: i for i, v in enumerate(levels[: f.max_levels])}
    return out


def training_cells(store: Store, spec: Spec, encoding: Encoding, as_of: datetime) -> Cells:
    """The cells a playbook with ``encoding`` is fitted on, from the rows up to ``as_of``."""
    table = _cells_table(store, spec, encoding, {"as_of": as_of}, ())
    if not table.num_rows:
        return Cells.empty((*(f.name for f in spec.context), *(k.name for k in spec.knobs)))
    return cells_of(table, spec, encoding)


def cells_of(table: pa.Table, spec: Spec, encoding: Encoding) -> Cells:
    """Cells from the learner's aggregation query (rows whose values left the spec dropped;
    an open feature's values outside its learned levels, grouped or not, go to ``other``)."""
    codes: dict[str, np.ndarray] = {}
    for f in spec.context:
        column = table.column(f.name)
        if f.name in encoding.edges:
            codes[f.name] = np.asarray(column.to_numpy(), dtype=float)
        else:
            codes[f.name] = encoding.column_codes(f.name, column)
    for k in spec.knobs:
        column = table.column(k.name)
        codes[k.name] = pc.index_in(
            column, value_set=pa.array(k.values, type=column.type)
        ).to_numpy(zero_copy_only=False)
    # a value no longer in the spec (the spec changed): those rows cannot be modelled
    known = np.ones(table.num_rows, dtype=bool)
    for values in codes.values():
        known &= ~np.isnan(np.asarray(values, dtype=float))
    clean = {
        name: np.asarray(values, dtype=float)[known].astype(np.int64)
        for name, values in codes.items()
    }
    return Cells(
        clean,
        table.column(learn_sql.N).to_numpy()[known],
        table.column(learn_sql.S).to_numpy()[known],
        table.column(learn_sql.SS).to_numpy()[known],
        int(np.asarray(table.column(learn_sql.ROWS).to_numpy())[known].sum()),
    ).compact()


def _prior_mean(spec: Spec, design: Design) -> np.ndarray | None:
    """Expert seeding: the skeleton default starts ``default_advantage`` ahead (link scale)."""
    advantage = spec.learn.default_advantage
    if not advantage:
        return None
    mean = np.zeros(design.size)
    mains = {t.factors[0]: t for t in design.terms if t.group == "main"}
    for k in spec.knobs:
        term = mains[k.name]
        mean[term.offset + k.values.index(spec.default[k.name])] = advantage / len(spec.knobs)
    return mean
