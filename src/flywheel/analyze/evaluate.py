"""Offline evaluation: what a target policy would have earned on the logged decisions.

``evaluate(store, spec, target)`` reads the complete rows that carry a logging propensity
(decisions Flywheel served, rows an outside policy logged with its propensity), asks the
target for the probability it gives each logged combination in its context, and estimates
the target's value four ways (the first three from :mod:`flywheel.seatbelt.offpolicy`):

- IPS and SNIPS, from the importance weights ``w = q / p``;
- doubly robust with cross-fitting: a reward model (per context and combination, shrunk to
  the combination and to the overall mean) is fitted on one half of the rows and used on the
  other, so no row's own reward enters its prediction;
- MIPS, importance sampling marginalised over knobs, for large sets of combinations (Saito &
  Joachims 2022, "Off-Policy Evaluation for Large Action Spaces via Embeddings", ICML). A
  combination's *embedding* is its values of the knobs that matter; when the reward depends
  on the combination only through them (no direct effect of the other knobs), the value is
  ``E[w(x, e) r]`` with the marginal weight ``w(x, e) = q(e | x) / p(e | x)``, the ratio of
  the two policies' probabilities of the embedding, far smaller than ``q / p`` when the
  target and the logs disagree on the knobs that do not matter. The logs hold the logging
  policy's probability of the logged combination only, so the marginal weight is estimated
  as what it equals, the mean of ``w`` over the logged rows of the same context and
  embedding (``E_p[w | x, e] = q(e | x) / p(e | x)``; Taufiq et al. 2023, "Marginal density
  ratio for off-policy evaluation in contextual bandits", NeurIPS). Its interval is the
  normal one from the estimate's influence terms (the cell means' own variation included).
  Which knobs matter is chosen from the data with SLOPE (Su, Srinath and Krishnamurthy 2020,
  "Adaptive estimator selection for off-policy evaluation", ICML, as Saito & Joachims do
  for embeddings): the knobs are ranked by how much the mean reward varies across their
  values, the least telling is dropped one at a time, and the estimate with the fewest knobs
  is kept whose 95% interval still meets every interval of the estimates with more knobs.
  With all knobs kept (a single knob, or every knob matters) it is IPS; where contexts
  rarely repeat there are no rows to pool and it is IPS too. A knob too weak to be kept by
  SLOPE may still matter a little, and MIPS would carry its whole effect as bias: so the
  dropped knobs' main effects are estimated within the cells (each value's mean reward
  against its cell's), and the estimate is corrected by what the target's values of them
  would add over the logged ones the marginal weights carry, its interval widened by those
  effects' own uncertainty (a doubly robust step over the dropped knobs only).

The target is a published playbook (as served, or greedy: its best combination per context)
or a callable giving, per context, the probability of each combination. Where the target
puts weight the logs barely cover (large weights, a small effective sample), it says so, for
the combinations' weights and for the marginal ones.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow as pa

from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.errors import InvalidInputError
from flywheel.playbook.book import Playbook
from flywheel.rules import quote_name
from flywheel.seatbelt.offpolicy import Estimate, doubly_robust, effective, ips, normal, snips
from flywheel.spec import Spec
from flywheel.store import Store

__all__ = ["Evaluation", "Target", "evaluate", "policy_table"]

Target = Callable[[Mapping[str, Any]], Mapping[tuple[Any, ...], float]]
"""A policy to evaluate: for a context, the probability of each combination (a tuple of knob
values in the spec's order); combinations it leaves out have probability 0."""

EFFECT_RIDGE = 1.0  # rows' worth of ridge on the dropped knobs' effects (they are identified
# only up to a constant per knob: the ridge centres them)
SHRINK = 5.0  # rows of prior weight of the reward model's cells toward the combination's mean
HEAVY = 20.0  # an importance weight above this marks a row the logs barely support
THIN = 0.1  # an effective sample under this share of the rows is thin support


@dataclass(frozen=True)
class Evaluation:
    """A target's estimated value on the logged rows, four ways, with the evidence: IPS,
    SNIPS and DR in ``estimates``, and the estimate marginalised over knobs (``mips``) in
    ``marginal``, with the knobs its weights keep (the others are marginalised out)."""

    target: str
    rows: int
    policies: dict[str, int]  # the logging policies behind the rows, and their rows
    logged: float  # the mean reward of the logged rows (what the logging policies earned)
    estimates: tuple[Estimate, ...]
    effective_n: float
    heavy: int  # rows whose importance weight is above HEAVY
    warnings: tuple[str, ...]
    marginal: Estimate
    marginal_knobs: tuple[str, ...]

    def estimate(self, method: str) -> Estimate | None:
        """The estimate of ``method`` (``ips``, ``snips``, ``dr``, ``mips``); ``None`` where
        undefined (SNIPS when no logged row is one the target would serve)."""
        if method == self.marginal.method:
            return self.marginal
        return next((e for e in self.estimates if e.method == method), None)

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
    if rows.num_rows < 2:
        raise InvalidInputError("rows", "one logged row: an interval needs two at least")
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
    found = [ips(reward, logged, q)]
    if q.sum() > 0:  # SNIPS is undefined when no logged row is one the target would serve
        found.append(snips(reward, logged, q))
    found.append(doubly_robust(reward, logged, q, model_logged, model_target))
    estimates = tuple(found)
    weights = q / logged
    ess = estimates[0].effective_n
    heavy = int((weights > HEAVY).sum())
    marginal, kept = _marginalised(keys, actions, reward, weights, knobs)
    if 0 < len(kept) < len(knobs):
        marginal = _adjusted(keys, actions, reward, weights, kept, distribution)
    warnings = []
    unseen = _unseen(keys, actions, distribution, len(spec.space))
    if unseen > 0:
        warnings.append(
            f"no support: {unseen:.1%} of the target's probability falls on combinations the"
            " logs never hold in those contexts (or anywhere, for contexts with fewer rows than"
            " combinations); no estimator sees their results (IPS and SNIPS"
            " leave them out, DR fills them with its model's guess, outside its interval)"
        )
    if ess < THIN * len(q):
        warnings.append(
            f"thin support: the importance weights are worth {ess:,.0f} of {len(q):,} rows"
            " (the target favours combinations the logs rarely tried)"
        )
    if heavy:
        warnings.append(
            f"{heavy:,} rows weigh more than {HEAVY:g} times (logged with propensity below"
            f" {1 / HEAVY:g} of the target's): the estimate leans on them"
        )
    if len(kept) < len(knobs):
        warnings.extend(_marginal_support(keys, actions, distribution, marginal, kept, knobs))
    counts = dict(sorted(Counter(str(n) for n in rows.column("policy").to_pylist()).items()))
    name = "the given policy" if not isinstance(target, Playbook) else f"v{target.version}"
    return Evaluation(
        name + (" (greedy)" if greedy and isinstance(target, Playbook) else ""),
        len(q),
        counts,
        float(reward.mean()),
        estimates,
        ess,
        heavy,
        tuple(warnings),
        marginal,
        tuple(knobs[j] for j in kept),
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
            out[key] = _checked(spec, context, target(context))
    return out


def _checked(
    spec: Spec, context: Mapping[str, Any], given: Mapping[Any, float]
) -> dict[tuple[Any, ...], float]:
    """A callable's or a table's distribution for one context: keys one allowed value per
    knob, probabilities finite, non-negative and summing to 1."""
    out: dict[tuple[Any, ...], float] = {}
    for combo, p in given.items():
        ok = isinstance(combo, tuple) and len(combo) == len(spec.knobs)
        if not ok or not all(k.accepts(v) for k, v in zip(spec.knobs, combo, strict=True)):
            names = ", ".join(k.name for k in spec.knobs)
            raise InvalidInputError(
                "target", f"{combo!r} is not a combination: expected a tuple of ({names})"
            )
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise InvalidInputError("target", f"for {dict(context)}: {p!r} is not a probability")
        out[combo] = float(p)
    total = math.fsum(out.values())
    if abs(total - 1) > 1e-6:
        raise InvalidInputError(
            "target",
            f"for {dict(context)} the probabilities sum to {total:g}, not 1 (a policy serves"
            " something in every context the logs hold)",
        )
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
        expected: dict[tuple[Any, ...], float] = {}  # the target's, once per context
        for i in np.flatnonzero(half == fold).tolist():
            key = keys[i]
            logged_pred[i] = model.predict(key, actions[i])
            if key not in expected:
                expected[key] = sum(p * model.predict(key, a) for a, p in distribution[key].items())
            target_pred[i] = expected[key]
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


def _marginalised(
    keys: list[tuple[Any, ...]],
    actions: list[tuple[Any, ...]],
    reward: np.ndarray,
    weights: np.ndarray,
    knobs: list[str],
) -> tuple[Estimate, tuple[int, ...]]:
    """The estimate marginalised over the knobs that do not matter, and the positions of the
    knobs it keeps: candidates keep all knobs, then drop the least telling one at a time;
    SLOPE keeps the one with the fewest knobs whose interval meets all the intervals before
    it (their intersection is not empty)."""
    order = sorted(range(len(knobs)), key=lambda j: -_telling(keys, actions, reward, j))
    low, high = -math.inf, math.inf
    chosen: tuple[Estimate, tuple[int, ...]] | None = None
    for size in range(len(knobs), 0, -1):
        kept = tuple(sorted(order[:size]))
        found = _mips(keys, [tuple(a[j] for j in kept) for a in actions], reward, weights)
        low, high = max(low, found.low), min(high, found.high)
        if chosen is not None and low > high:
            break
        chosen = (found, kept)
    if chosen is None:  # no knobs: every row has the one combination
        return _mips(keys, [()] * len(reward), reward, weights), ()
    return chosen


def _adjusted(
    keys: list[tuple[Any, ...]],
    actions: list[tuple[Any, ...]],
    reward: np.ndarray,
    weights: np.ndarray,
    kept: tuple[int, ...],
    distribution: Mapping[tuple[Any, ...], Mapping[tuple[Any, ...], float]],
) -> Estimate:
    """MIPS on the ``kept`` knobs, corrected for the dropped knobs' main effects.

    The effects ``d`` (one per value of each dropped knob) are the least-squares fit, weighed
    by the rows' marginal weights, of the rewards' deviations from their cell's mean (context
    and embedding) on the values' indicators, deviated alike, with a little ridge (each
    knob's indicators sum to one, so only differences are identified). Row ``i`` adds
    ``(t_i - w_i x_i) · d``: ``t_i`` the target's probability of each value in the row's
    context, ``x_i`` the row's own values, ``w_i`` its marginal weight. The interval adds
    ``g' C g`` to the terms' variance, ``g`` the mean of ``t_i - w_i x_i`` and ``C`` the
    effects' (sandwich) covariance.
    """
    width = len(actions[0])
    dropped = [j for j in range(width) if j not in kept]
    columns: dict[tuple[int, Any], int] = {}
    for combo in [*actions, *(a for given in distribution.values() for a in given)]:
        for j in dropped:
            columns.setdefault((j, combo[j]), len(columns))

    def indicators(combo: tuple[Any, ...]) -> np.ndarray:
        out = np.zeros(len(columns))
        out[[columns[j, combo[j]] for j in dropped]] = 1.0
        return out

    embedded = [tuple(a[j] for j in kept) for a in actions]
    cell, size, terms, marginal = _mips_terms(keys, embedded, reward, weights)
    x = np.array([indicators(a) for a in actions])
    x_dev = x - (np.stack([np.bincount(cell, c) for c in x.T], axis=1) / size[:, None])[cell]
    r_dev = reward - (np.bincount(cell, reward) / size)[cell]
    # weighed by the marginal weights: where an effect varies between cells (a lift on the
    # log-odds adds most to the likeliest), the one fitted is the one the target meets
    weighed = x_dev * marginal[:, None]
    gram = weighed.T @ x_dev + EFFECT_RIDGE * np.eye(len(columns))
    inverse = np.linalg.inv(gram)
    effects = inverse @ (weighed.T @ r_dev)
    scores = weighed * (r_dev - x_dev @ effects)[:, None]
    covariance = inverse @ (scores.T @ scores) @ inverse  # sandwich: any noise, any weights
    target = {
        key: sum((p * indicators(a) for a, p in given.items()), np.zeros(len(columns)))
        for key, given in distribution.items()
    }
    shift = np.array([target[k] for k in keys]) - marginal[:, None] * x
    terms = terms + shift @ effects
    g = shift.mean(axis=0)
    n = len(terms)
    value = float(terms.mean())
    se = math.sqrt(float(terms.var(ddof=1)) / n + max(float(g @ covariance @ g), 0.0))
    z = NormalDist().inv_cdf(0.975)
    return Estimate("mips", value, value - z * se, value + z * se, n, effective(marginal))


def _telling(
    keys: list[tuple[Any, ...]], actions: list[tuple[Any, ...]], reward: np.ndarray, j: int
) -> float:
    """How much the mean reward varies across knob ``j``'s values, overall and within each
    context (an effect that reverses between contexts cancels overall): the rows' squared
    gaps between their value's mean, shrunk with SHRINK rows of weight, and the mean it is
    shrunk to."""
    total = 0.0
    for group in (lambda k: (), lambda k: k):
        means: dict[Any, list[float]] = {}
        cells: dict[Any, list[float]] = {}
        for key, action, r in zip(keys, actions, reward.tolist(), strict=True):
            for table, cell in ((means, group(key)), (cells, (group(key), action[j]))):
                sums = table.setdefault(cell, [0.0, 0.0])
                sums[0] += 1
                sums[1] += r
        for (outer, _), (n, s) in cells.items():
            m = means[outer][1] / means[outer][0]
            total += n * ((s + SHRINK * m) / (n + SHRINK) - m) ** 2
    return total


def _mips(
    keys: list[tuple[Any, ...]],
    embedded: list[tuple[Any, ...]],
    reward: np.ndarray,
    weights: np.ndarray,
) -> Estimate:
    """Marginalised IPS: each row weighs the mean importance weight of its cell (context and
    embedding). The value is ``sum over cells of n_c w_c r_c / n`` (cell means of weight and
    reward); its influence terms ``w_i r_c + w_c r_i - w_c r_c`` give the interval."""
    _, _, terms, marginal = _mips_terms(keys, embedded, reward, weights)
    return normal("mips", terms, marginal, 0.05)


def _mips_terms(
    keys: list[tuple[Any, ...]],
    embedded: list[tuple[Any, ...]],
    reward: np.ndarray,
    weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's cell (context and embedding), the cells' sizes, the rows' influence terms
    and their marginal weights (their cell's mean importance weight)."""
    cells: dict[tuple[Any, ...], int] = {}
    cell = np.array(
        [cells.setdefault((k, e), len(cells)) for k, e in zip(keys, embedded, strict=True)]
    )
    size = np.bincount(cell)
    w_c = np.bincount(cell, weights) / size
    r_c = np.bincount(cell, reward) / size
    marginal = w_c[cell]
    return cell, size, weights * r_c[cell] + marginal * reward - marginal * r_c[cell], marginal


def _marginal_support(
    keys: list[tuple[Any, ...]],
    actions: list[tuple[Any, ...]],
    distribution: Mapping[tuple[Any, ...], Mapping[tuple[Any, ...], float]],
    marginal: Estimate,
    kept: tuple[int, ...],
    knobs: list[str],
) -> list[str]:
    """The support warnings of the marginalised estimate, on the knobs it keeps."""
    names = ", ".join(knobs[j] for j in kept)
    out = []
    embedded = [tuple(a[j] for j in kept) for a in actions]
    on_kept = {
        key: {tuple(a[j] for j in kept): 0.0 for a in given} for key, given in distribution.items()
    }
    for key, given in distribution.items():
        for a, p in given.items():
            on_kept[key][tuple(a[j] for j in kept)] += p
    unseen = _unseen(keys, embedded, on_kept, len({a for given in on_kept.values() for a in given}))
    if unseen > 0:
        out.append(
            f"no support (MIPS, on {names}): {unseen:.1%} of the target's probability falls on"
            " values of these knobs the logs never hold in those contexts; MIPS leaves them out"
        )
    if marginal.effective_n < THIN * marginal.n:
        out.append(
            f"thin support (MIPS, on {names}): its marginal weights are worth"
            f" {marginal.effective_n:,.0f} of {marginal.n:,} rows"
        )
    return out


def _unseen(
    keys: list[tuple[Any, ...]],
    actions: list[tuple[Any, ...]],
    distribution: Mapping[tuple[Any, ...], Mapping[tuple[Any, ...], float]],
    combinations: int,
) -> float:
    """The target's probability, averaged over the logged rows, on combinations never logged
    in the row's context. A context with fewer rows than ``combinations`` could not show them
    all even under uniform logging (with unique contexts, each holds one): it is judged by
    what the logs hold in any context."""
    logged: dict[tuple[Any, ...], set[tuple[Any, ...]]] = {}
    for key, action in zip(keys, actions, strict=True):
        logged.setdefault(key, set()).add(action)
    rows = Counter(keys)
    anywhere = set(actions)
    per_context = {
        key: sum(
            p
            for a, p in given.items()
            if a not in (logged.get(key, set()) if rows[key] >= combinations else anywhere)
        )
        for key, given in distribution.items()
    }
    return sum(per_context[k] for k in keys) / len(keys)


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
