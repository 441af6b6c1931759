"""The decide path: pick knob values for a context from the allowed combinations.

Until a playbook is published the policy is the cold start: uniform over the combinations the
skeleton allows for the context (exploration), or the skeleton ``default`` when the spec or the
call asks for no exploration. Every decision records its policy and the probability that the
policy had of choosing what it chose (its propensity), which off-policy checks rely on.

Nothing here does I/O: the allowed combinations are precomputed by the spec, ids come from a
counter, and the row is handed to the buffered writer.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flywheel.errors import SkeletonViolationError
from flywheel.spec import Spec


@dataclass(frozen=True, slots=True)
class Decision:
    """One served set of knob values for a context.

    ``params`` holds the knob values and the skeleton's fixed values; ``playbook`` is the
    version that served it (``None`` before the first playbook); ``propensity`` is the
    probability the policy had of serving exactly these knob values.
    """

    id: str
    params: dict[str, Any]
    context: dict[str, Any]
    policy: str
    propensity: float
    playbook: int | None = None


class IdFactory:
    """Decision ids: UUID-shaped strings from a random per-process prefix and a counter.

    Cheaper than ``uuid.uuid4()`` per call and as unique: the 76 random bits of the prefix are
    drawn again in a forked child.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        r = secrets.token_hex(10)
        variant = "89ab"[secrets.randbelow(4)]
        self._prefix = f"{r[:8]}-{r[8:12]}-4{r[12:15]}-{variant}{r[15:18]}-"
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


class Decider:
    """Chooses knob values under the cold-start policy."""

    def __init__(self, spec: Spec, rng: random.Random | None = None) -> None:
        self.spec = spec
        self._space = spec.space
        self._rng = rng or random.Random(secrets.randbits(64))
        self._default_row = self._space.row_of(spec.default)
        self._fixed = dict(spec.fixed)

    def choose(
        self, context: Mapping[str, Any], explore: bool = True
    ) -> tuple[dict[str, Any], str, float]:
        """Knob values (fixed values included), the policy's name and its propensity."""
        rows = self._space.allowed(context)
        if len(rows) == 0:
            raise SkeletonViolationError(
                "context", f"the skeleton's rules allow no combination for {dict(context)}"
            )
        if explore and self.spec.explore:
            row = int(rows[self._rng.randrange(len(rows))])
            policy, propensity = "uniform", 1.0 / len(rows)
        else:
            row = self._default_row if self._default_row is not None else int(rows[0])
            if self._space.context_rules and row not in rows:  # default broken here by a rule
                row = int(rows[0])
            policy, propensity = "default", 1.0
        params = self._space.params(row)
        params.update(self._fixed)
        return params, policy, propensity
