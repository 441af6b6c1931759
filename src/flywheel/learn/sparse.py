"""Sparse curvature for big designs: the Hessian of a one-hot model without a dense matrix.

With knobs and context features of hundreds of values, the model has thousands of parameters
(an 80-value knob × four 30-value features: 10,044), and a dense Hessian, its Cholesky factor
and the covariance cost O(p²) memory and O(p³) time per Newton step (800 MB and seconds at
10,000 parameters). Yet a row touches one parameter per term, so XᵀWX only couples parameters
that occur together in some cell: it is sparse, and the posterior is kept as its precision.

:class:`Gram` builds the upper triangle of XᵀWX (+ the prior) from the cells with one
weighted ``bincount`` per pair of terms, on a sparsity pattern fixed once; :class:`Factor`
is its sparse LDLᵀ factorisation (QDLDL, with an approximate-minimum-degree ordering): it
solves, and it draws exact samples from N(0, H⁻¹) from the factors alone (so a stored
posterior can be sampled again, and updated online, without the rows it was fitted on).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import qdldl
import scipy.sparse as sp

DENSE_KEYS = 1 << 23  # a pair of terms with more level combinations is keyed by np.unique


class Gram:
    """XᵀWX of a one-hot design over fixed cells, upper triangle, plus a fixed ``base``.

    ``columns`` holds each cell's parameter index per term (``Design.columns``); ``offsets``
    and ``sizes`` are the terms' slices of the parameter vector. ``base`` (upper triangular)
    is added to every matrix: the precision of a posterior used as the prior.
    """

    def __init__(
        self,
        columns: np.ndarray,
        offsets: Sequence[int],
        sizes: Sequence[int],
        base: sp.csc_matrix | None = None,
    ) -> None:
        self.size = int(offsets[-1] + sizes[-1]) if len(sizes) else 0
        n = columns.shape[0]
        self._local = [
            (columns[:, j] - offsets[j]).astype(np.int64) for j in range(columns.shape[1])
        ]
        self._sizes = [int(s) for s in sizes]
        self._offsets = [int(o) for o in offsets]
        # Per pair of terms (i < j): the level combinations that occur, and how to sum the
        # weights onto them each time: a bincount over the dense key space when it is small
        # next to the cells, else over the combinations themselves (their index kept once).
        pairs: list[tuple[int, int, np.ndarray, np.ndarray | None, int]] = []
        rows: list[np.ndarray] = [np.arange(self.size)]  # the whole diagonal: the prior's
        cols: list[np.ndarray] = [np.arange(self.size)]
        for i in range(len(self._local)):
            for j in range(i + 1, len(self._local)):
                key = self._local[i] * self._sizes[j] + self._local[j]
                span = self._sizes[i] * self._sizes[j]
                if span <= DENSE_KEYS and span <= 8 * n:
                    nz = np.flatnonzero(np.bincount(key, minlength=span))
                    pairs.append((i, j, nz, None, span))
                else:
                    nz, inverse = np.unique(key, return_inverse=True)
                    pairs.append((i, j, nz, inverse.ravel().astype(np.int32), len(nz)))
                rows.append(self._offsets[i] + nz // self._sizes[j])
                cols.append(self._offsets[j] + nz % self._sizes[j])
        upper = sp.triu(base, format="coo") if base is not None else None
        if upper is not None:
            rows.append(upper.row.astype(np.int64))
            cols.append(upper.col.astype(np.int64))
        r, c = np.concatenate(rows), np.concatenate(cols)
        unique, position = np.unique(c * self.size + r, return_inverse=True)  # CSC order
        position = position.ravel()
        self._indices = (unique % self.size).astype(np.int32)
        self._indptr = np.concatenate(
            [[0], np.cumsum(np.bincount(unique // self.size, minlength=self.size))]
        ).astype(np.int32)
        # where each pair's entries, the diagonal and the base land in the data array
        bounds = np.cumsum([0, *(len(x) for x in rows)])
        self._diagonal = position[: self.size]
        self._pairs = [
            (i, j, nz, inverse, span, position[bounds[k + 1] : bounds[k + 2]])
            for k, (i, j, nz, inverse, span) in enumerate(pairs)
        ]
        self._base = np.zeros(len(unique))
        if upper is not None:
            np.add.at(self._base, position[bounds[-2] :], upper.data)
        self._factor: Factor | None = None
        self._factored: sp.csc_matrix | None = None

    @property
    def nnz(self) -> int:
        return len(self._indices)

    def factor(self, matrix: sp.csc_matrix) -> Factor:
        """The factorisation of ``matrix`` (one of this gram's): the ordering and symbolic
        analysis are done once, each later matrix only refactorises numerically."""
        if self._factor is None:
            self._factor = Factor(matrix)
        elif matrix is not self._factored:
            self._factor.refactor(matrix)
        self._factored = matrix
        return self._factor

    def matrix(self, weights: np.ndarray, diagonal: np.ndarray) -> sp.csc_matrix:
        """The upper triangle of XᵀWX + diag(``diagonal``) + base, CSC (a fixed pattern)."""
        diag = np.asarray(diagonal, dtype=float).copy()
        for j, local in enumerate(self._local):
            start = self._offsets[j]
            diag[start : start + self._sizes[j]] += np.bincount(
                local, weights, minlength=self._sizes[j]
            )
        data = self._base.copy()
        data[self._diagonal] += diag
        for i, j, nz, inverse, span, position in self._pairs:
            if inverse is None:
                key = self._local[i] * self._sizes[j] + self._local[j]
                data[position] += np.bincount(key, weights, minlength=span)[nz]
            else:
                data[position] += np.bincount(inverse, weights, minlength=span)
        return sp.csc_matrix((data, self._indices, self._indptr), shape=(self.size, self.size))


def symmetric_product(upper: sp.csc_matrix, v: np.ndarray) -> np.ndarray:
    """``H @ v`` for a symmetric ``H`` stored as its upper triangle."""
    result: np.ndarray = upper @ v + upper.T @ v - upper.diagonal() * v
    return result


class Factor:
    """The sparse LDLᵀ factorisation of a symmetric positive definite matrix, given as its
    upper triangle: ``H = P (I + L) D (I + L)ᵀ Pᵀ``."""

    def __init__(self, upper: sp.csc_matrix) -> None:
        self._solver = qdldl.Solver(upper, upper=True)
        self.size = upper.shape[0]

    def refactor(self, upper: sp.csc_matrix) -> None:
        """A new matrix with the same sparsity pattern (a :class:`Gram`'s): only the numeric
        factorisation is redone."""
        self._solver.update(upper, upper=True)

    def solve(self, b: np.ndarray) -> np.ndarray:
        result: np.ndarray = self._solver.solve(np.ascontiguousarray(b, dtype=float))
        return result

    def samples(self, m: int, rng: np.random.Generator) -> np.ndarray:
        """``m`` exact draws from N(0, H⁻¹), shape ``(m, size)``.

        With ``b = P (I + L) D^½ z``, ``H⁻¹ b = P (I + L)⁻ᵀ D^-½ z``, whose covariance is
        ``H⁻¹``: one solve per draw, from the factors alone.
        """
        out = np.empty((m, self.size))
        for start, block in self.sample_blocks(m, rng):
            out[start : start + len(block)] = block
        return out

    def sample_blocks(
        self, m: int, rng: np.random.Generator, block: int = 16
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The draws of :meth:`samples`, the same numbers, ``block`` at a time: ``(first,
        draws)`` with ``draws`` of shape ``(block, size)`` (fewer at the end), so that all
        ``m`` never need to be held in double precision. Each block's array is reused for
        the next: use it before asking for the next one."""
        lower, d, perm = self._solver.factors()
        size = len(d)
        scale = np.sqrt(np.maximum(d, 0.0))
        order = np.asarray(perm)
        b = np.empty((min(block, m), size))  # one draw a row: each solve reads it contiguously
        for start in range(0, m, block):
            part = b[: min(block, m - start)]
            # a draw's normals are consecutive in the stream: the same draws whatever ``block``,
            # and never all of them held at once
            z = rng.standard_normal((len(part), size)) * scale
            part[:, order] = (lower @ z.T).T + z  # (I + L) z, one draw a row
            for row in part:
                row[:] = self.solve(row)
            yield start, part

    def variances(self, m: int, rng: np.random.Generator) -> np.ndarray:
        """An unbiased estimate of ``diag(H⁻¹)`` from ``m`` draws (for the prior scales)."""
        draws = self.samples(m, rng)
        result: np.ndarray = np.mean(draws**2, axis=0)
        return result

    def columns(self, index: np.ndarray) -> np.ndarray:
        """``H⁻¹[:, index]``, shape ``(size, len(index))``."""
        out = np.empty((self.size, len(index)))
        e = np.zeros(self.size)
        for k, i in enumerate(index):
            e[i] = 1.0
            out[:, k] = self.solve(e)
            e[i] = 0.0
        return out
