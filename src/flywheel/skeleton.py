"""The combination space: every knob assignment the skeleton's rules allow.

Rules over knobs alone are applied once, when the space is built. Rules that also read context
features are applied per context and cached, so a decide call costs a dictionary lookup.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flywheel.rules import Rule

Value = str | int | float | bool

MAX_COMBINATIONS = 5_000_000
_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class Dimension:
    """A knob as the space sees it: a name and its ordered values."""

    name: str
    values: tuple[Value, ...]


class Space:
    """The allowed combinations of knob values.

    >>> from flywheel.rules import compile_rule
    >>> dims = [Dimension("length", ("short", "long")), Dimension("twists", (0, 3))]
    >>> rule = compile_rule("NOT (length = 'short' AND twists = 3)", ["length", "twists"])
    >>> space = Space(dims, [rule])
    >>> len(space), space.params(space.allowed({})[-1])
    (3, {'length': 'long', 'twists': 3})
    """

    def __init__(self, dimensions: Sequence[Dimension], rules: Sequence[Rule] = ()) -> None:
        self.dimensions = tuple(dimensions)
        self.names = tuple(d.name for d in self.dimensions)
        sizes = [len(d.values) for d in self.dimensions]
        self.total = math.prod(sizes)
        if self.total > MAX_COMBINATIONS:
            raise ValueError(
                f"{self.total:,} combinations of knob values; at most {MAX_COMBINATIONS:,}"
                " are supported"
            )
        self._strides = np.array(
            [math.prod(sizes[i + 1 :]) for i in range(len(sizes))], dtype=np.int64
        )
        codes = np.indices(sizes, dtype=np.int32).reshape(len(sizes), -1).T
        knob_rules = [r for r in rules if set(r.names) <= set(self.names)]
        self.context_rules = tuple(r for r in rules if r not in knob_rules)
        self.context_names = tuple(
            sorted({n for r in self.context_rules for n in r.names} - set(self.names))
        )
        columns = self._columns(codes)
        mask = np.ones(len(codes), dtype=bool)
        for rule in knob_rules:
            mask &= rule.holds(columns, len(codes))
        self.codes = codes[mask]
        self._flat = self.codes.astype(np.int64) @ self._strides  # sorted: codes are lexicographic
        self._columns_allowed = self._columns(self.codes)
        self._everything = np.arange(len(self.codes))
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}
        self._lock = threading.Lock()
        self._value_lists = [list(d.values) for d in self.dimensions]

    def _columns(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        return {d.name: np.asarray(d.values)[codes[:, i]] for i, d in enumerate(self.dimensions)}

    def __len__(self) -> int:
        return len(self.codes)

    def allowed(self, context: Mapping[str, Any]) -> np.ndarray:
        """Row numbers of the combinations allowed in ``context`` (read-only, cached)."""
        if not self.context_rules:
            return self._everything
        key = tuple(context[n] for n in self.context_names)
        rows = self._cache.get(key)
        if rows is None:
            columns: dict[str, Any] = dict(self._columns_allowed)
            columns.update(zip(self.context_names, key, strict=True))
            mask = np.ones(len(self.codes), dtype=bool)
            for rule in self.context_rules:
                mask &= rule.holds(columns, len(self.codes))
            rows = np.flatnonzero(mask)
            rows.setflags(write=False)
            with self._lock:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[key] = rows
        return rows

    def params(self, row: int) -> dict[str, Value]:
        """The knob assignment of one row."""
        code = self.codes[row]
        return {
            d.name: vals[code[i]]
            for i, (d, vals) in enumerate(zip(self.dimensions, self._value_lists, strict=True))
        }

    def row_of(self, params: Mapping[str, Value]) -> int | None:
        """Row number of an assignment, or ``None`` when the knob-only rules exclude it."""
        flat = 0
        for d, stride in zip(self.dimensions, self._strides, strict=True):
            flat += d.values.index(params[d.name]) * int(stride)
        row = int(np.searchsorted(self._flat, flat))
        return row if row < len(self._flat) and self._flat[row] == flat else None

    def rows_of_codes(self, codes: np.ndarray) -> np.ndarray:
        """Row numbers of many assignments given as value codes ``(n, knobs)``; -1 where the
        knob-only rules exclude one (vectorised :meth:`row_of`)."""
        flat = np.asarray(codes, dtype=np.int64) @ self._strides
        rows = np.minimum(np.searchsorted(self._flat, flat), max(len(self._flat) - 1, 0))
        found = len(self._flat) > 0 and self._flat[rows] == flat
        return np.where(found, rows, -1)

    def context_assignments(
        self, categorical: Mapping[str, Sequence[Value]]
    ) -> list[dict[str, Value]]:
        """Every assignment of the context features the rules read, when all are categorical."""
        if any(n not in categorical for n in self.context_names):
            return []
        choices = [categorical[n] for n in self.context_names]
        return [dict(zip(self.context_names, c, strict=True)) for c in itertools.product(*choices)]
