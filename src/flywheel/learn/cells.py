"""Sufficient statistics: weighted count, sum and sum of squares per unique cell.

A cell is one combination of factor levels (context levels and knob values). The store
aggregates aligned rows into cells with one SQL query, so fitting costs grow with the number
of cells, not of rows. Cells add: merging partial aggregates gives the same cells as
aggregating everything at once (and so the same fit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Cells:
    """Per-cell ``n`` (weighted rows), ``s`` (weighted sum of rewards) and ``ss`` (of squares).

    >>> ones = np.array([1.0, 1.0])
    >>> a = Cells({"tone": np.array([0, 1])}, np.array([2.0, 1.0]), ones, ones)
    >>> b = Cells({"tone": np.array([1])}, np.array([3.0]), np.array([0.0]), np.array([0.0]))
    >>> merged = a + b
    >>> merged.n.tolist(), merged.s.tolist()
    ([2.0, 4.0], [1.0, 1.0])
    """

    codes: Mapping[str, np.ndarray]
    n: np.ndarray
    s: np.ndarray
    ss: np.ndarray
    rows: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.rows < 0:
            object.__setattr__(self, "rows", round(float(self.n.sum())))

    def __len__(self) -> int:
        return len(self.n)

    @property
    def factors(self) -> tuple[str, ...]:
        return tuple(self.codes)

    @property
    def total(self) -> float:
        return float(self.n.sum())

    @property
    def mean(self) -> float:
        return float(self.s.sum() / self.n.sum()) if self.n.sum() > 0 else float("nan")

    def __add__(self, other: Cells) -> Cells:
        if set(self.codes) != set(other.codes):
            raise ValueError("cells over different factors cannot be merged")
        codes = {f: np.concatenate([self.codes[f], other.codes[f]]) for f in self.codes}
        return Cells(
            codes,
            np.concatenate([self.n, other.n]),
            np.concatenate([self.s, other.s]),
            np.concatenate([self.ss, other.ss]),
            self.rows + other.rows,
        ).compact()

    def compact(self) -> Cells:
        """Merge duplicate cells (sums add)."""
        if not len(self):
            return self
        columns = [np.asarray(self.codes[f], dtype=np.int64) for f in self.codes]
        spans = [int(c.max()) + 1 if len(c) else 1 for c in columns]
        if np.prod(np.array(spans, dtype=float)) < 2.0**62:  # one integer key per cell
            key = np.zeros(len(self), dtype=np.int64)
            for column, span in zip(columns, spans, strict=True):
                key = key * span + column
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            unique = np.stack(columns, axis=1)[first]  # in the same (lexicographic) order
        else:
            keys = np.stack(columns, axis=1)
            unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        size = len(unique)
        return Cells(
            {f: unique[:, i] for i, f in enumerate(self.codes)},
            np.bincount(inverse, self.n, size),
            np.bincount(inverse, self.s, size),
            np.bincount(inverse, self.ss, size),
            self.rows,
        )

    @classmethod
    def empty(cls, factors: tuple[str, ...]) -> Cells:
        none = np.zeros(0)
        return cls({f: np.zeros(0, dtype=np.int64) for f in factors}, none, none, none, 0)
