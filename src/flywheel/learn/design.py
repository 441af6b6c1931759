"""Model terms: which effects the model has, and where each one's parameters live.

A *factor* is a knob or a context feature, with integer level codes (a knob's value index, a
categorical feature's value index, or a numeric feature's quantile bin). A *term* is one
factor (a main effect) or a pair of factors (an interaction); it owns one parameter per
combination of its factors' levels, so every level is treated alike (no reference level) and
the prior keeps the model identified.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

Group = Literal["intercept", "context", "main", "knob×knob", "knob×context"]
GROUPS: tuple[str, ...] = ("intercept", "context", "main", "knob×knob", "knob×context")


@dataclass(frozen=True)
class Term:
    """One effect: its factors, its group, and its slice of the parameter vector."""

    factors: tuple[str, ...]
    group: Group
    offset: int
    size: int

    @property
    def name(self) -> str:
        return " × ".join(self.factors) if self.factors else "intercept"


@dataclass(frozen=True)
class Design:
    """The terms of a model over given factors.

    >>> d = Design.build({"genre": 2}, {"tone": 3, "length": 2}, "pairwise")
    >>> [t.name for t in d.terms]
    ['intercept', 'genre', 'tone', 'length', 'tone × length', 'tone × genre', 'length × genre']
    >>> d.size
    24
    """

    levels: Mapping[str, int]
    knobs: tuple[str, ...]
    context: tuple[str, ...]
    terms: tuple[Term, ...]

    @property
    def size(self) -> int:
        return self.terms[-1].offset + self.terms[-1].size

    @classmethod
    def build(
        cls,
        context: Mapping[str, int],
        knobs: Mapping[str, int],
        interactions: str | Sequence[tuple[str, str]] = "pairwise",
    ) -> Design:
        """``interactions``: ``"pairwise"`` (every knob × knob and knob × context pair),
        ``"none"``, or explicit pairs."""
        if interactions == "pairwise":
            pairs = [*itertools.combinations(knobs, 2), *itertools.product(knobs, context)]
        elif interactions == "none":
            pairs = []
        else:
            pairs = [tuple(p) for p in interactions]  # type: ignore[misc]
        levels = {**context, **knobs}
        specs: list[tuple[tuple[str, ...], Group]] = [((), "intercept")]
        specs += [((f,), "context") for f in context]
        specs += [((k,), "main") for k in knobs]
        for pair in pairs:
            first, second = pair if pair[0] in knobs else (pair[1], pair[0])
            specs.append(((first, second), "knob×context" if second in context else "knob×knob"))
        terms, offset = [], 0
        for factors, group in specs:
            size = int(np.prod([levels[f] for f in factors])) if factors else 1
            terms.append(Term(factors, group, offset, size))
            offset += size
        return cls(dict(levels), tuple(knobs), tuple(context), tuple(terms))

    def groups(self) -> np.ndarray:
        """The group index (into :data:`GROUPS`) of every parameter."""
        out = np.empty(self.size, dtype=np.int8)
        for t in self.terms:
            out[t.offset : t.offset + t.size] = GROUPS.index(t.group)
        return out

    def term_index(self) -> np.ndarray:
        """The term index (into :attr:`terms`) of every parameter."""
        return np.repeat(np.arange(len(self.terms)), [t.size for t in self.terms])

    def columns(self, codes: Mapping[str, np.ndarray | int], n: int) -> np.ndarray:
        """Parameter index per row and term, shape ``(n, terms)``; codes may be scalars."""
        out = np.empty((n, len(self.terms)), dtype=np.int64)
        for j, t in enumerate(self.terms):
            index: np.ndarray | int = 0
            for f in t.factors:
                index = index * self.levels[f] + np.asarray(codes[f], dtype=np.int64)
            out[:, j] = t.offset + np.broadcast_to(index, (n,))
        return out

    def matrix(self, codes: Mapping[str, np.ndarray | int], n: int) -> sp.csr_matrix:
        """The one-hot design matrix, ``n`` rows by :attr:`size` columns."""
        cols = self.columns(codes, n)
        t = cols.shape[1]
        indptr = np.arange(0, n * t + 1, t, dtype=np.int64)
        return sp.csr_matrix((np.ones(n * t), cols.ravel(), indptr), shape=(n, self.size))


OTHER = "other"
"""How the level of an open categorical feature's every other value is shown."""


@dataclass(frozen=True)
class Encoding:
    """Raw context values to factor levels: categorical values by position, numeric values by
    quantile bin (``edges`` are the inner bin boundaries).

    The features in ``open`` are open categories: their ``categorical`` values are the levels
    learned from the data, and one more level, the last, stands for every other value, seen
    or not (shown as :data:`OTHER`).

    >>> enc = Encoding({"city": {"paris": 0, "oslo": 1}}, {}, frozenset({"city"}))
    >>> enc.levels(), enc.code("city", "oslo"), enc.code("city", "lima")
    ({'city': 3}, 1, 2)
    """

    categorical: Mapping[str, Mapping[Any, int]]
    edges: Mapping[str, tuple[float, ...]]
    open: frozenset[str] = frozenset()

    def levels(self) -> dict[str, int]:
        out = {name: len(values) + (name in self.open) for name, values in self.categorical.items()}
        out.update({name: len(edges) + 1 for name, edges in self.edges.items()})
        return out

    def code(self, name: str, value: object) -> int:
        if name in self.edges:
            return bisect.bisect_right(self.edges[name], float(value))  # type: ignore[arg-type]
        values = self.categorical[name]
        if name in self.open:
            return values.get(value, len(values))
        return values[value]

    def other(self, name: str) -> int | None:
        """The code of an open feature's level ``other`` (``None`` for any other feature)."""
        return len(self.categorical[name]) if name in self.open else None

    def labels(self, name: str) -> list[Any]:
        """A categorical feature's levels in code order (an open one's last is :data:`OTHER`)."""
        return [*self.categorical[name], *([OTHER] if name in self.open else [])]

    def stand_in(self, name: str) -> Any:
        """A value an open feature's level ``other`` serves: one that is none of its learned
        levels (to stand for the level where a context must be given)."""
        values = self.categorical[name]
        if all(isinstance(v, str) for v in values):
            candidate, n = OTHER, 0
            while candidate in values:
                n += 1
                candidate = f"{OTHER}_{n}"
            return candidate
        return min((v for v in values if isinstance(v, int)), default=0) - 1

    def column_codes(self, name: str, column: Any) -> np.ndarray:
        """The level code of each value of an Arrow column of a categorical feature, as
        floats: NaN where a value is none of the levels (an open feature's go to ``other``,
        a missing value too)."""
        values = list(self.categorical[name])
        kind = column.type
        found = pc.index_in(column, value_set=pa.array(values, type=kind)) if values else None
        codes = (
            np.full(len(column), np.nan)
            if found is None
            else np.asarray(found.to_numpy(zero_copy_only=False), dtype=float)
        )
        if name in self.open:
            codes[np.isnan(codes)] = len(values)
        return codes
