"""Offline evaluation: what a target policy would have earned on the logged decisions.

``evaluate(store, spec, target)`` reads the complete rows that carry a logging propensity
(decisions Flywheel served, rows an outside policy logged with its propensity), asks the
target for the probability it gives each logged combination in its context, and estimates
the target's value three ways (:mod:`flywheel.seatbelt.offpolicy`):

- IPS and SNIPS, from the importance weights ``q / p``;
- doubly robust with cross-fitting: a reward model (per context and combination, shrunk to
  the combination and to the overall mean) is fitted on one half of the rows and used on the
  other, so no row's own reward enters its prediction.

The target is a published playbook (as served, or greedy: its best combination per context)
or a callable giving, per context, the probability of each combination. Where the target
puts weight the logs barely cover (large weights, a small effective sample), it says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.errors import InvalidInputError
from flywheel.playbook.book import Playbook
from flywheel.rules import quote_name
from flywheel.seatbelt.offpolicy import Estimate, doubly_robust, ips, snips
from flywheel.spec import Spec
from flywheel.store import Store

__all__ = ["Evaluation", "Target", "evaluate", "policy_table"]

Target = Callable[[Mapping[str, Any]], Mapping[tuple[Any, ...], float]]
"""A policy to evaluate: for a context, the probability of each combination (a tuple of knob
values in the spec's order); combinations it leaves out have probability 0."""

SHRINK = 5.0  # rows of prior weight of the reward model's cells toward the combination's mean
HEAVY = 20.0  # an importance weight above this marks a row the logs barely support
THIN = 0.1  # an effective sample under this share of the rows is thin support


@dataclass(frozen=True)
class Evaluation:
    """A target's estimated value on the logged rows, three ways, with the evidence."""

    target: str
    rows: int
    policies: dict[str, int]  # the logging policies behind the rows, and their rows
    logged: float  # the mean reward of the logged rows (what the logging policies earned)
    estimates: tuple[Estimate, ...]
    effective_n: float
    heavy: int  # rows whose importance weight is above HEAVY
    warnings: tuple[str, ...]

    def estimate(self, method: str) -> Estimate:
        return next(e for e in self.estimates if e.method == method)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    store: Store,
    spec: Spec,
    target: Playbook | Target,
    *,
    as_of: datetime,
    greedy: bool = False,
    policy: str | None = None,
    label: str | None = None,
) -> Evaluation:
    """The value ``target`` would have had on the complete rows logged with a propensity up
    to ``as_of`` (only those of the logging ``policy`` when given)."""
    rows = _logged(store, spec, as_of, policy)
    if rows.num_rows == 0:
        where = f" by policy {policy!r}" if policy else ""
        raise InvalidInputError(
            "rows",
            f"no complete row logged with a propensity{where}: nothing to evaluate on (log"
            " rows with their propensity, or import them with --propensity)",
        )
    knobs = [k.name for k in spec.knobs]
    context_names = [f.name for f in spec.context]
    contexts = _columns(rows, context_names)
    actions = list(zip(*_columns(rows, knobs), strict=True)) if knobs else []
    reward = np.asarray(rows.column("reward").to_numpy(zero_copy_only=False), dtype=float)
    logged = np.asarray(rows.column("propensity").to_numpy(zero_copy_only=False), dtype=float)
    keys = list(zip(*contexts, strict=True)) if contexts else [()] * rows.num_rows
    distribution = _distributions(spec, target, greedy, keys, context_names)
    q = np.array([distribution[k].get(a, 0.0) for k, a in zip(keys, actions, strict=True)])
    model_logged, model_target = _cross_fitted(keys, actions, reward, distribution)
    estimates = (
        ips(reward, logged, q),
        snips(reward, logged, q) if q.sum() > 0 else _nothing("snips", len(q)),
        doubly_robust(reward, logged, q, model_logged, model_target),
    )
    weights = q / logged
    ess = estimates[0].effective_n
    heavy = int((weights > HEAVY).sum())
    warnings = []
    if ess < THIN * len(q):
        warnings.append(
            f"thin support: the importance weights are worth {ess:,.0f} of {len(q):,} rows"
            " (the target favours combinations the logs rarely tried); trust DR over IPS"
        )
    if heavy:
        warnings.append(
            f"{heavy:,} rows weigh more than {HEAVY:g} times (logged with propensity below"
            f" {1 / HEAVY:g} of the target's): the estimate leans on them"
        )
    if q.sum() == 0:
        warnings.append("the target never serves a combination the logs hold: IPS is 0")
    names = [str(n) for n in rows.column("policy").to_pylist()]
    counts = {name: names.count(name) for name in sorted(set(names))}
    name = label or (
        "the given policy" if not isinstance(target, Playbook) else f"v{target.version}"
    )
    return Evaluation(
        name + (" (greedy)" if greedy and isinstance(target, Playbook) else ""),
        len(q),
        counts,
        float(reward.mean()),
        estimates,
        ess,
        heavy,
        tuple(warnings),
    )


def _logged(store: Store, spec: Spec, as_of: datetime, policy: str | None) -> pa.Table:
    names = [*(f.name for f in spec.context), *(k.name for k in spec.knobs)]
    columns = ", ".join(quote_name(n) for n in names)
    only = " AND a.policy = $policy" if policy is not None else ""
    params: dict[str, Any] = {"as_of": as_of}
    if policy is not None:
        params["policy"] = policy
    return store.query(
        f"""WITH a AS ({aligned_rows_sql(spec)})
SELECT {columns}, reward, propensity, policy FROM a
WHERE reward IS NOT NULL AND propensity IS NOT NULL AND {NOT_QUARANTINED}{only}
ORDER BY ts, decision_id""",
        params,
    )


def _columns(rows: pa.Table, names: list[str]) -> list[list[Any]]:
    return [rows.column(n).to_pylist() for n in names]


def _distributions(
    spec: Spec,
    target: Playbook | Target,
    greedy: bool,
    keys: list[tuple[Any, ...]],
    names: list[str],
) -> dict[tuple[Any, ...], dict[tuple[Any, ...], float]]:
    """The target's distribution over combinations for each distinct logged context."""
    out: dict[tuple[Any, ...], dict[tuple[Any, ...], float]] = {}
    knobs = [k.name for k in spec.knobs]
    for key in dict.fromkeys(keys):
        context = dict(zip(names, key, strict=True))
        if isinstance(target, Playbook):
            table = target.segment(context)
            rows, probs = table.rows, table.probs
            if greedy:
                rows, probs = rows[[table.best]], np.ones(1)
            out[key] = {
                tuple(spec.space.params(int(r))[k] for k in knobs): float(p)
                for r, p in zip(rows, probs, strict=True)
            }
        else:
            given = target(context)
            total = sum(given.values())
            if any(p < 0 or not math.isfinite(p) for p in given.values()) or total > 1 + 1e-6:
                raise InvalidInputError(
                    "target",
                    f"for {context} the probabilities must be finite, non-negative and sum to"
                    f" at most 1 (they sum to {total:g})",
                )
            out[key] = {tuple(a): float(p) for a, p in given.items()}
    return out


def _cross_fitted(
    keys: list[tuple[Any, ...]],
    actions: list[tuple[Any, ...]],
    reward: np.ndarray,
    distribution: Mapping[tuple[Any, ...], Mapping[tuple[Any, ...], float]],
) -> tuple[np.ndarray, np.ndarray]:
    """The reward model's prediction for each row's logged combination and for the target's,
    each from the model fitted on the other half of the rows (alternate rows in log order)."""
    n = len(reward)
    half = np.arange(n) % 2
    logged_pred = np.zeros(n)
    target_pred = np.zeros(n)
    for fold in (0, 1):
        train = np.flatnonzero(half != fold)
        model = _Model([keys[i] for i in train], [actions[i] for i in train], reward[train])
        for i in np.flatnonzero(half == fold).tolist():
            logged_pred[i] = model.predict(keys[i], actions[i])
            target_pred[i] = sum(
                p * model.predict(keys[i], a) for a, p in distribution[keys[i]].items()
            )
    return logged_pred, target_pred


class _Model:
    """Mean reward per (context, combination), shrunk to the combination's mean, itself shrunk
    to the overall mean."""

    def __init__(
        self, keys: list[tuple[Any, ...]], actions: list[tuple[Any, ...]], reward: np.ndarray
    ) -> None:
        self.mean = float(reward.mean()) if len(reward) else 0.0
        self.cells: dict[tuple[Any, ...], list[float]] = {}
        self.combos: dict[tuple[Any, ...], list[float]] = {}
        for key, action, r in zip(keys, actions, reward.tolist(), strict=True):
            for table, k in ((self.cells, (key, action)), (self.combos, action)):
                total = table.setdefault(k, [0.0, 0.0])
                total[0] += 1
                total[1] += r

    def predict(self, key: tuple[Any, ...], action: tuple[Any, ...]) -> float:
        n, s = self.combos.get(action, (0.0, 0.0))
        combo = (s + SHRINK * self.mean) / (n + SHRINK)
        n, s = self.cells.get((key, action), (0.0, 0.0))
        return (s + SHRINK * combo) / (n + SHRINK)


def _nothing(method: str, n: int) -> Estimate:
    return Estimate(method, 0.0, 0.0, 0.0, n, 0.0)


def policy_table(spec: Spec, table: pa.Table) -> Target:
    """A target from a table: one row per context and combination, the context features' and
    knobs' columns and ``probability`` (contexts not in the table get nothing)."""
    names = [f.name for f in spec.context]
    knobs = [k.name for k in spec.knobs]
    missing = [n for n in [*names, *knobs, "probability"] if n not in table.column_names]
    if missing:
        raise InvalidInputError("policy", f"the table has no column {', '.join(missing)}")
    lookup: dict[tuple[Any, ...], dict[tuple[Any, ...], float]] = {}
    types = {f.name: f.dtype for f in spec.context} | {k.name: k.dtype for k in spec.knobs}

    for i, row in enumerate(table.to_pylist()):
        p = _typed(row["probability"], "number", f"policy[{i}].probability")
        if p is None or not 0 <= p <= 1:
            raise InvalidInputError(f"policy[{i}].probability", f"expected [0, 1], got {p!r}")
        context = tuple(_typed(row[n], types[n], f"policy[{i}].{n}") for n in names)
        action = tuple(_typed(row[k], types[k], f"policy[{i}].{k}") for k in knobs)
        lookup.setdefault(context, {})[action] = float(p)

    def target(context: Mapping[str, Any]) -> Mapping[tuple[Any, ...], float]:
        return lookup.get(tuple(context[n] for n in names), {})

    return target


def _typed(value: Any, dtype: str, field: str) -> Any:
    """A table cell (text, as CSV reads it, or typed) as the spec's type."""
    if value is None or not isinstance(value, str):
        return float(value) if dtype == "number" and value is not None else value
    text = value.strip()
    try:
        if dtype == "integer":
            return int(text)
        if dtype == "number":
            return float(text)
        if dtype == "boolean":
            return {"true": True, "false": False, "1": True, "0": False}[text.lower()]
    except (ValueError, KeyError):
        raise InvalidInputError(field, f"{value!r} is not a {dtype}") from None
    return text
