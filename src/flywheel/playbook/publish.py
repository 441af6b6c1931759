"""The learn cycle: align, aggregate, fit, tabulate the policy, publish a playbook."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from flywheel.errors import InvalidInputError
from flywheel.learn.cells import Cells
from flywheel.learn.design import Design, Encoding
from flywheel.learn.model import DEFAULT_SCALES, Settings, fit
from flywheel.learn.sql import cells_sql, quantiles_sql
from flywheel.playbook.book import MAX_TABULATED_SEGMENTS, Playbook, design_for
from flywheel.spec import Spec
from flywheel.store import Store


@dataclass(frozen=True)
class LearnResult:
    """What a learn cycle did: ``published`` a new ``version``, or not, and why."""

    published: bool
    version: int | None
    reason: str
    diagnostics: dict[str, Any] = field(default_factory=dict)


def learn(
    store: Store,
    spec: Spec,
    *,
    as_of: float | None = None,
    seed: int | None = None,
    force: bool = False,
) -> tuple[LearnResult, Playbook | None]:
    """Run one learn cycle on everything the store holds up to ``as_of`` (default: now).

    Without new data since the newest playbook nothing is published, unless ``force``.
    """
    started = time.perf_counter()
    now = time.time() if as_of is None else as_of
    when = {"as_of": datetime.fromtimestamp(now, tz=UTC)}
    encoding = _encoding(store, spec, when)
    table = store.query(cells_sql(spec, encoding.edges, store.dialect), when)
    rows = int(pc.sum(table.column("rows")).as_py() or 0) if table.num_rows else 0
    previous = store.playbook()
    previous_version = previous[0] if previous else None
    if rows == 0:
        return LearnResult(False, previous_version, "no decisions with a reward yet"), None
    if rows < spec.learn.min_rows:
        return LearnResult(
            False,
            previous_version,
            f"only {rows} rows with a reward; learn.min_rows is {spec.learn.min_rows}",
        ), None
    signature = [
        rows,
        round(float(pc.sum(table.column("reward_sum")).as_py()), 9),
        _iso(pc.max(table.column("last_ts"))),
    ]
    if previous is not None and not force:
        old = json.loads(previous[1])
        if old.get("signature") == signature and old.get("spec_digest") == spec.digest:
            return LearnResult(
                False, previous_version, f"no new data since version {previous_version}"
            ), None

    cells = _cells(table, spec, encoding)
    design = design_for(spec, encoding)
    settings = Settings(
        link=spec.learn.link,
        empirical_bayes=spec.learn.empirical_bayes,
        scales=dict(DEFAULT_SCALES),
        prior_mean=_prior_mean(spec, design),
    )
    fitted = time.perf_counter()
    # The matrices are small: BLAS threads only fight the store's own threads (measured: a
    # 148-parameter fit took 6.8 s with them beside DuckDB, 0.03 s without).
    with threadpool_limits(limits=1, user_api="blas"):
        posterior = fit(cells, design, settings)
        fit_seconds = time.perf_counter() - fitted
        rng = np.random.default_rng(seed)
        draws = posterior.draws(spec.learn.draws, rng, spec.learn.explore_spread)
    meta: dict[str, Any] = {
        "created_at": datetime.now(tz=UTC).isoformat(),
        "spec_digest": spec.digest,
        "signature": signature,
        "training": {
            "as_of": datetime.fromtimestamp(now, tz=UTC).isoformat(),
            "first_decision": _iso(pc.min(table.column("first_ts"))),
            "last_decision": signature[2],
            "rows": rows,
            "cells": len(cells),
            "weighted_rows": cells.total,
            "mean_reward": cells.mean,
        },
        "settings": {
            "interactions": spec.learn.interactions,
            "half_life_seconds": spec.learn.half_life_seconds,
            "explore_floor": spec.learn.explore_floor,
            "explore_cap": spec.learn.explore_cap,
            "explore_spread": spec.learn.explore_spread,
            "draws": spec.learn.draws,
        },
    }
    playbook = Playbook(0, meta, encoding, posterior, draws, {}, spec)
    with threadpool_limits(limits=1, user_api="blas"):
        for context in playbook.segment_contexts(MAX_TABULATED_SEGMENTS):
            playbook.segment(context)
    meta["diagnostics"] = {
        "link": posterior.link,
        "iterations": posterior.iterations,
        "converged": posterior.converged,
        "prior_scales": {k: round(v, 4) for k, v in posterior.scales.items()},
        "parameters": design.size,
        "fit_seconds": round(fit_seconds, 4),
        "segments": len(playbook.segments),
    }
    version = store.publish(spec.digest, playbook.meta_json(), playbook.payload())
    playbook.version = version
    meta["diagnostics"]["learn_seconds"] = round(time.perf_counter() - started, 4)
    reason = f"fitted {rows} rows in {len(cells)} cells" + (
        f"; replaces version {previous_version}" if previous_version else "; first playbook"
    )
    return LearnResult(True, version, reason, meta["diagnostics"]), playbook


def restore(store: Store, spec: Spec, version: int) -> Playbook:
    """Publish a copy of an earlier version as the newest one (history stays immutable)."""
    found = store.playbook(version)
    if found is None:
        raise InvalidInputError("version", f"there is no playbook version {version}")
    _, meta_json, payload = found
    meta = json.loads(meta_json)
    if meta.get("spec_digest") != spec.digest:
        raise InvalidInputError(
            "version", f"version {version} was learned for another spec; it cannot serve this one"
        )
    meta["restored_from"] = version
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
    categorical = {
        f.name: {v: i for i, v in enumerate(f.values)}
        for f in spec.context
        if f.kind == "categorical"
    }
    return Encoding(categorical, edges)


def _cells(table: pa.Table, spec: Spec, encoding: Encoding) -> Cells:
    codes: dict[str, np.ndarray] = {}
    for f in spec.context:
        column = table.column(f.name)
        if f.name in encoding.edges:
            codes[f.name] = column.to_numpy().astype(np.int64)
        else:
            codes[f.name] = (
                pc.index_in(column, value_set=pa.array(f.values, type=column.type))
                .to_numpy()
                .astype(np.int64)
            )
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
        table.column("n").to_numpy()[known],
        table.column("s").to_numpy()[known],
        table.column("ss").to_numpy()[known],
        int(np.asarray(table.column("rows").to_numpy())[known].sum()),
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
