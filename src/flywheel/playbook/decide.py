"""The decide path: pick knob values for a context.

With a published playbook, the context's segment table says how likely each allowed
combination is to be served (Thompson sampling over posterior draws, with the spec's
exploration floor and cap); one uniform draw picks from it, so the propensity of what is
served is exact and recorded with the decision. ``explore=False`` serves the combination with
the best posterior mean (propensity 1).

Between learn cycles the tables may come from an online update of the served version's
posterior (:func:`flywheel.playbook.publish.online`): such decisions are recorded with the
policy ``online`` (and the version updated), with the same exact propensities.

Before any playbook exists the policy is the cold start: uniform over the combinations the
skeleton allows for the context, or the skeleton ``default`` when the spec or the call asks
for no exploration.

Nothing here does I/O: the allowed combinations are precomputed by the spec, segment tables
by the playbook, ids come from a counter, and the row is handed to the buffered writer.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flywheel.errors import SkeletonViolationError
from flywheel.playbook.book import Playbook
from flywheel.spec import Spec


@dataclass(frozen=True, slots=True)
class Decision:
    """One served set of knob values for a context.

    ``params`` holds the knob values and the skeleton's fixed values; ``playbook`` is the
    version that served it (``None`` before the first playbook); ``propensity`` is the
    probability the policy had of serving exactly these knob values; ``expected`` is the
    model's expected reward for them, with its 95% interval ``low``–``high`` (``None`` before
    the first playbook).
    """

    id: str
    params: dict[str, Any]
    context: dict[str, Any]
    policy: str
    propensity: float
    playbook: int | None = None
    expected: float | None = None
    low: float | None = None
    high: float | None = None


class Decider:
    """Chooses knob values: from the active playbook, or by the cold-start policy."""

    def __init__(self, spec: Spec, rng: random.Random | None = None) -> None:
        self.spec = spec
        self._space = spec.space
        self._rng = rng or random.Random(secrets.randbits(64))
        self._default_row = self._space.row_of(spec.default)
        self._fixed = dict(spec.fixed)
        self.playbook: Playbook | None = None

    def respec(self, spec: Spec) -> Decider:
        """A decider for ``spec`` (the same knobs with other values: the catalogue changed),
        drawing from the same random stream, serving the cold start until given a playbook."""
        return Decider(spec, self._rng)

    def use(self, playbook: Playbook | None) -> None:
        """Serve from ``playbook`` from the next call on (one reference swap: atomic)."""
        self.playbook = playbook

    def _params(self, row: int) -> dict[str, Any]:
        params = self._space.params(row)
        params.update(self._fixed)
        return params

    def decide(self, ident: str, context: dict[str, Any], explore: bool = True) -> Decision:
        """The decision ``ident`` for a validated context."""
        playbook = self.playbook
        if playbook is not None:
            return self._from_playbook(ident, playbook, context, explore and self.spec.explore)
        rows = self._space.allowed(context)
        if len(rows) == 0:
            raise _nothing_allowed(context)
        if explore and self.spec.explore:
            row = int(rows[self._rng.randrange(len(rows))])
            return Decision(ident, self._params(row), context, "uniform", 1.0 / len(rows))
        row = self._default_row if self._default_row is not None else int(rows[0])
        if self._space.context_rules and row not in rows:  # default broken here by a rule
            row = int(rows[0])
        return Decision(ident, self._params(row), context, "default", 1.0)

    def _from_playbook(
        self, ident: str, playbook: Playbook, context: dict[str, Any], explore: bool
    ) -> Decision:
        table = playbook.segment(context)
        if len(table.rows) == 0:
            raise _nothing_allowed(context)
        if explore:
            i = int(table.cumulative.searchsorted(self._rng.random(), side="right"))
            i = min(i, len(table.rows) - 1)
            policy, propensity = "thompson", float(table.probs[i])
        else:
            i, policy, propensity = table.best, "greedy", 1.0
        return Decision(
            ident,
            self._params(int(table.rows[i])),
            context,
            "online" if playbook.online else policy,
            propensity,
            playbook.version or None,  # an online update before the first version: none
            float(table.mean[i]),
            float(table.low[i]),
            float(table.high[i]),
        )


def _nothing_allowed(context: Mapping[str, Any]) -> SkeletonViolationError:
    return SkeletonViolationError(
        "context", f"the skeleton's rules allow no combination for {dict(context)}"
    )
