"""Playbooks: immutable, versioned snapshots of the policy — what the product receives.

A playbook holds the fitted posterior (the analysis), the serving table of every context
segment (the policy), the posterior draws behind them (to serve segments not tabulated at
publish time the same way; a sparse posterior's as the seed they are drawn again from), and
metadata: spec digest, training window, row counts and fit diagnostics. It is stored as JSON
metadata plus a NumPy archive.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from flywheel.learn.design import OTHER, Design, Encoding
from flywheel.learn.model import Posterior, draw_width
from flywheel.learn.policy import SegmentPolicy, segment_policies
from flywheel.spec import Spec
from flywheel.threads import one_blas_thread

Key = tuple[int, ...]
log = logging.getLogger("flywheel.playbook")

MAX_TABULATED_SEGMENTS = 2_000
MAX_EXACT_TABLES = 4_096


def design_for(spec: Spec, encoding: Encoding) -> Design:
    levels = encoding.levels()
    return Design.build(
        {f.name: levels[f.name] for f in spec.context},
        {k.name: len(k.values) for k in spec.knobs},
        spec.learn.interactions,
    )


def scoring_dtype(posterior: Posterior) -> type[np.floating[Any]]:
    """The precision a playbook holds its posterior draws in: single for a sparse
    posterior's (thousands of parameters, scored in bulk), double for a dense one's."""
    return np.float32 if posterior.sparse else np.float64


@dataclass(frozen=True)
class Redraw:
    """How a playbook's posterior draws were made: the entropy of their seed, how many, and
    their ``spread`` and ``tails`` (see :meth:`flywheel.learn.model.Posterior.draws`).

    A sparse posterior's draws are exact solves with its factors (no threaded BLAS), so drawn
    again from the same stored posterior with the same seed (and the same NumPy and QDLDL)
    they are the same numbers, to the last bit: a playbook stores this instead of them
    (megabytes of random numbers that the store would write and read whole), and a process
    that loads it draws them again on first use.
    """

    entropy: int
    count: int
    spread: float
    digest: str  # of the draws as the publisher drew them (see :func:`digest`)
    tails: float = 0.0  # playbooks stored before draws had tails: none

    @classmethod
    def drawn(
        cls, posterior: Posterior, seed: int | None, count: int, spread: float, tails: float
    ) -> tuple[Redraw, np.ndarray]:
        """``count`` draws from ``posterior`` with the seed ``seed`` (``None``: fresh entropy,
        recorded), and the recipe that draws them again."""
        entropy = secrets.randbits(128) if seed is None else int(seed)
        draws = _draws(posterior, entropy, count, spread, tails)
        return cls(entropy, count, spread, digest(draws.T), tails), draws

    def draws(self, posterior: Posterior) -> np.ndarray:
        """The draws, shape ``(count, size)``, in the playbook's precision."""
        return _draws(posterior, self.entropy, self.count, self.spread, self.tails)

    @property
    def width(self) -> float:
        """The draws' standard deviation over the posterior's (see :func:`draw_width`)."""
        return draw_width(self.count, self.spread, self.tails)


def _draws(
    posterior: Posterior, entropy: int, count: int, spread: float, tails: float
) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    return posterior.draws(count, rng, spread, scoring_dtype(posterior), tails)


def digest(scoring: np.ndarray) -> str:
    """A fingerprint of a playbook's draws (``scoring``: one column per draw, in either
    layout): a process that draws them again checks that it got the publisher's numbers.
    Hashed a few draws at a time, so no copy of them all is made."""
    found = hashlib.blake2b(digest_size=16)
    for start in range(0, scoring.shape[1], 64):
        found.update(np.ascontiguousarray(scoring[:, start : start + 64].T).tobytes())
    return found.hexdigest()


@dataclass
class Playbook:
    """A published policy. Build with :func:`flywheel.playbook.publish.learn`.

    ``drawn`` are the posterior draws, ``(m, size)``, or ``None`` when ``redraw`` is to draw
    them on first use (a loaded sparse playbook); ``redraw``, how they were drawn, is what
    a sparse playbook stores of them.
    """

    version: int
    meta: dict[str, Any]
    encoding: Encoding
    posterior: Posterior
    drawn: InitVar[np.ndarray | None]
    segments: dict[Key, SegmentPolicy]
    spec: Spec = field(repr=False)
    online: bool = False  # serving tables updated between cycles, never stored
    redraw: Redraw | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Rules that read a numeric feature make the allowed set depend on its exact value, not
    # on its bin: such tables are cached per exact value (bounded).
    _exact: dict[tuple[Any, ...], SegmentPolicy] = field(default_factory=dict, repr=False)

    def __post_init__(self, drawn: np.ndarray | None) -> None:
        # The draws are held once, one column per draw (for scoring); ``draws`` is a view.
        self._scoring = (
            None
            if drawn is None
            else np.ascontiguousarray(drawn.T, dtype=scoring_dtype(self.posterior))
        )
        self._drawing = threading.Lock()
        # The features rules read whose level holds many values (a number's bin, an open
        # category's level): their tables depend on the exact value.
        self.exact_names = tuple(
            n
            for n in self.spec.space.context_names
            if n in self.encoding.edges or n in self.encoding.open
        )

    @property
    def scoring(self) -> np.ndarray:
        """The posterior draws, one column per draw: ``(size, m)``, contiguous."""
        if self._scoring is None:
            with self._drawing:
                if self._scoring is None:
                    self._scoring = self._drawn_again()
        return self._scoring

    def _drawn_again(self) -> np.ndarray:
        assert self.redraw is not None
        with one_blas_thread():
            scoring = self.redraw.draws(self.posterior).T
        if digest(scoring) != self.redraw.digest:
            # other NumPy or QDLDL builds than the publisher's: equally valid draws, and the
            # propensities recorded are those served, but untabulated segments may be served
            # otherwise than in the process that published
            log.warning(
                "playbook v%s: its posterior draws came out different here than where it was"
                " published; segments it did not tabulate are served from draws of this"
                " process",
                self.version,
            )
        return scoring

    def draw(self, wait: bool = True) -> threading.Thread | None:
        """Draw the posterior draws again now, when they are to be drawn on first use, so
        that no decide for a segment not tabulated waits for them: here (``wait``), or on a
        thread of its own, returned to be joined; ``None`` when nothing is left to draw."""
        if self._scoring is None and wait:
            _ = self.scoring
        if self._scoring is not None:
            return None
        thread = threading.Thread(target=lambda: self.scoring, name="flywheel-draws", daemon=True)
        thread.start()
        return thread

    @property
    def draws(self) -> np.ndarray:
        """The posterior draws, ``(m, size)`` (a view of :attr:`scoring`)."""
        return self.scoring.T

    # --- serving ---------------------------------------------------------------------------------

    def key(self, context: Mapping[str, Any]) -> Key:
        return tuple(self.encoding.code(f.name, context[f.name]) for f in self.spec.context)

    def segment(self, context: Mapping[str, Any]) -> SegmentPolicy:
        """The serving table for a context (tabulated at publish, or computed once here)."""
        key = self.key(context)
        if self.exact_names:
            exact = (*key, *(context[n] for n in self.exact_names))
            table = self._exact.get(exact)
            if table is None:
                table = self._compute(key, context)
                with self._lock:
                    if len(self._exact) >= MAX_EXACT_TABLES:
                        self._exact.clear()
                    self._exact[exact] = table
            return table
        table = self.segments.get(key)
        if table is None:
            table = self._compute(key, context)
            with self._lock:
                self.segments[key] = table
        return table

    def tabulate(self, contexts: Sequence[Mapping[str, Any]]) -> None:
        """Compute the serving tables of ``contexts``' segments now, all scored together."""
        if self.exact_names:  # tables per exact value: one at a time
            for context in contexts:
                self.segment(context)
            return
        keys = [self.key(c) for c in contexts]
        todo = {k: c for k, c in zip(keys, contexts, strict=True) if k not in self.segments}
        if not todo:
            return
        tables = self._policies(list(todo), list(todo.values()))
        with self._lock:
            for key, table in zip(todo, tables, strict=True):
                self.segments.setdefault(key, table)

    def _compute(self, key: Key, context: Mapping[str, Any]) -> SegmentPolicy:
        return self._policies([key], [context])[0]

    def _policies(
        self, keys: Sequence[Key], contexts: Sequence[Mapping[str, Any]]
    ) -> list[SegmentPolicy]:
        """The serving tables of segments ``keys``, with their rules' allowed rows from
        ``contexts``, scored together."""
        learn = self.spec.learn
        names = [f.name for f in self.spec.context]
        # the width the draws were made with: the stored recipe's, or (drawn just now, online)
        # the settings'
        width = (
            self.redraw.width
            if self.redraw is not None
            else draw_width(self.scoring.shape[1], learn.explore_spread, learn.explore_tails)
        )
        with one_blas_thread():
            tables = segment_policies(
                self.posterior,
                self.spec.space.codes,
                [self.spec.space.allowed(c) for c in contexts],
                [dict(zip(names, k, strict=True)) for k in keys],
                self.scoring,
                learn.explore_floor,
                learn.explore_cap,
                width,
                learn.sampling == "optimistic",
            )
        newcomers = self.meta.get("newcomers") or []
        for knob, value, share in newcomers:
            tables = [self._newcomer(t, knob, value, float(share)) for t in tables]
        return tables

    def _newcomer(self, table: SegmentPolicy, knob: str, value: Any, share: float) -> SegmentPolicy:
        """``table`` with at least ``share`` of its traffic on the combinations that hold a
        value added at run time (its start share, until it has results): those combinations
        share it in proportion to what they had (evenly, if they had nothing), the others
        keep theirs in proportion. The probabilities stay exact."""
        space = self.spec.space
        if knob not in space.names or len(table.rows) == 0:
            return table
        i = space.names.index(knob)
        values = space.dimensions[i].values
        if value not in values:
            return table
        mask = space.codes[table.rows, i] == values.index(value)
        held = float(table.probs[mask].sum())
        if not mask.any() or mask.all() or held >= share:
            return table
        probs = table.probs.copy()
        if held > 0:
            probs[mask] *= share / held
        else:
            probs[mask] = share / int(mask.sum())
        probs[~mask] *= (1.0 - share) / (1.0 - held)
        probs /= probs.sum()
        return SegmentPolicy(table.rows, probs, table.best, table.mean, table.low, table.high)

    def wins(self, context: Mapping[str, Any]) -> tuple[SegmentPolicy, np.ndarray]:
        """A context's serving table, and the share of the posterior draws in which each of
        its combinations is the best (Thompson sampling's probabilities, before the floor,
        the cap and any start share)."""
        table = self.segment(context)
        if len(table.rows) == 0:
            return table, np.zeros(0)
        key = self.key(context)
        design = self.posterior.design
        codes: dict[str, np.ndarray | int] = {
            f.name: key[j] for j, f in enumerate(self.spec.context) if f.name in design.context
        }
        for i, knob in enumerate(design.knobs):
            codes[knob] = self.spec.space.codes[table.rows, i]
        x = design.matrix(codes, len(table.rows))
        scoring = self.scoring
        with one_blas_thread():
            scores = x.astype(scoring.dtype) @ scoring
        winners = np.argmax(scores, axis=0)
        shares: np.ndarray = np.bincount(winners, minlength=len(table.rows)) / scores.shape[1]
        return table, shares

    # --- contents --------------------------------------------------------------------------------

    def segment_contexts(self, limit: int | None = None) -> list[dict[str, Any]]:
        """One representative context per segment (a bin's midpoint for numbers), at most
        ``limit`` of them (segments are enumerated lazily, however many there are)."""
        values: list[list[Any]] = []
        for f in self.spec.context:
            if f.name in self.encoding.edges:
                edges = self.encoding.edges[f.name]
                mids = [edges[0] - 1.0] if edges else [0.0]
                mids += [(a + b) / 2 for a, b in itertools.pairwise(edges)]
                mids += [edges[-1] + 1.0] if edges else []
                values.append(mids)
            elif f.name in self.encoding.open:  # the learned levels, then a stand-in for other
                values.append([*self.encoding.categorical[f.name], self.encoding.stand_in(f.name)])
            else:
                values.append(list(f.values))
        names = [f.name for f in self.spec.context]
        combos = itertools.islice(itertools.product(*values), limit)
        return [dict(zip(names, combo, strict=True)) for combo in combos]

    def best(self) -> list[dict[str, Any]]:
        """Per segment: the best combination as exact parameters, expected result, interval."""
        out = []
        for context in self.segment_contexts(MAX_TABULATED_SEGMENTS):
            table = self.segment(context)
            if len(table.rows) == 0:
                continue
            row = int(table.rows[table.best])
            params = self.spec.space.params(row)
            out.append(
                {
                    "context": self.describe_context(context),
                    "params": {**params, **self.spec.fixed},
                    "expected": float(table.mean[table.best]),
                    "low": float(table.low[table.best]),
                    "high": float(table.high[table.best]),
                    "probability_served": float(table.probs[table.best]),
                }
            )
        return out

    def describe_context(self, context: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.spec.context:
            if f.name in self.encoding.edges:
                edges = self.encoding.edges[f.name]
                b = self.encoding.code(f.name, context[f.name])
                lo = "" if b == 0 else f"{edges[b - 1]:g} <= "
                hi = "" if b == len(edges) else f" < {edges[b]:g}"
                out[f.name] = f"{lo}{f.name}{hi}" if edges else "any"
            elif self.encoding.code(f.name, context[f.name]) == self.encoding.other(f.name):
                out[f.name] = OTHER
            else:
                out[f.name] = context[f.name]
        return out

    # --- storage ---------------------------------------------------------------------------------

    def payload(self) -> bytes:
        keys = list(self.segments)
        tables = [self.segments[k] for k in keys]
        arrays: dict[str, np.ndarray] = {
            "mean": self.posterior.mean,
            "keys": np.array(keys, dtype=np.int64).reshape(len(keys), len(self.spec.context)),
            "offsets": np.cumsum([0, *[len(t.rows) for t in tables]]),
            "best": np.array([t.best for t in tables], dtype=np.int64),
        }
        if self.posterior.sparse and self.redraw is not None:
            arrays["draw_seed"] = np.array(str(self.redraw.entropy))  # 128 bits: as digits
            arrays["draw_count"] = np.array(self.redraw.count)
            arrays["draw_spread"] = np.array(self.redraw.spread)
            arrays["draw_tails"] = np.array(self.redraw.tails)
            arrays["draw_digest"] = np.array(self.redraw.digest)
        else:
            arrays["draws"] = self.draws
        for name in ("rows", "probs", "mean", "low", "high"):
            parts = [getattr(t, name) for t in tables]
            arrays[f"seg_{name}"] = np.concatenate(parts) if parts else np.zeros(0)
        # row numbers are read back as int64: stored in the fewest bytes that hold them
        rows = arrays["seg_rows"]
        arrays["seg_rows"] = rows.astype(np.min_scalar_type(int(rows.max()) if len(rows) else 0))
        if self.posterior.cov is not None:
            arrays["cov"] = self.posterior.cov
        else:  # a sparse posterior: the upper triangle of its precision, as CSC
            assert self.posterior.precision is not None
            precision = self.posterior.precision
            arrays["precision_data"] = precision.data
            arrays["precision_indices"] = precision.indices
            arrays["precision_indptr"] = precision.indptr
        buffer = io.BytesIO()
        np.savez_compressed(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    def meta_json(self) -> str:
        meta = dict(self.meta)
        meta["encoding"] = {
            "categorical": {n: list(v) for n, v in self.encoding.categorical.items()},
            "edges": {n: list(e) for n, e in self.encoding.edges.items()},
            "open": sorted(self.encoding.open),
        }
        meta["posterior"] = {
            "link": self.posterior.link,
            "scales": dict(self.posterior.scales),
            "term_scales": list(self.posterior.term_scales),
            "noise": self.posterior.noise,
            "center": self.posterior.center,
            "scale": self.posterior.scale,
            "iterations": self.posterior.iterations,
            "converged": self.posterior.converged,
            "cells": self.posterior.cells,
            "weight": self.posterior.weight,
        }
        return json.dumps(meta, sort_keys=True, default=float)

    @classmethod
    def load(cls, spec: Spec, version: int, meta_json: str, payload: bytes) -> Playbook:
        meta = json.loads(meta_json)
        enc = meta["encoding"]
        encoding = Encoding(
            {
                n: {_restore(spec, n, v): i for i, v in enumerate(values)}
                for n, values in enc["categorical"].items()
            },
            {n: tuple(e) for n, e in enc["edges"].items()},
            frozenset(enc.get("open", ())),
        )
        with np.load(io.BytesIO(payload)) as archive:  # each array read (decompressed) once
            arrays = {name: archive[name] for name in archive.files}
        post = meta["posterior"]
        design = design_for(spec, encoding)
        precision = None
        if "precision_data" in arrays:
            precision = sp.csc_matrix(
                (
                    arrays["precision_data"],
                    arrays["precision_indices"],
                    arrays["precision_indptr"],
                ),
                shape=(design.size, design.size),
            )
        posterior = Posterior(
            design=design,
            link=post["link"],
            mean=arrays["mean"],
            cov=arrays.get("cov"),
            precision=precision,
            scales=post["scales"],
            term_scales=tuple(post.get("term_scales", ())),
            noise=post["noise"],
            center=post.get("center", 0.0),
            scale=post.get("scale", 1.0),
            iterations=post["iterations"],
            converged=post["converged"],
            cells=post["cells"],
            weight=post["weight"],
        )
        offsets = arrays["offsets"]
        segments: dict[Key, SegmentPolicy] = {}
        for i, key in enumerate(arrays["keys"]):
            part = slice(int(offsets[i]), int(offsets[i + 1]))
            segments[tuple(int(k) for k in key)] = SegmentPolicy(
                rows=arrays["seg_rows"][part].astype(np.int64),
                probs=arrays["seg_probs"][part],
                best=int(arrays["best"][i]),
                mean=arrays["seg_mean"][part],
                low=arrays["seg_low"][part],
                high=arrays["seg_high"][part],
            )
        redraw = None
        if "draw_seed" in arrays:
            redraw = Redraw(
                int(str(arrays["draw_seed"])),
                int(arrays["draw_count"]),
                float(arrays["draw_spread"]),
                str(arrays["draw_digest"]),
                float(arrays["draw_tails"]) if "draw_tails" in arrays else 0.0,
            )
        drawn = arrays.get("draws")
        return cls(version, meta, encoding, posterior, drawn, segments, spec, redraw=redraw)


def _restore(spec: Spec, name: str, value: Any) -> Any:
    """JSON turns every categorical value into JSON types; map back to the spec's own (an
    open feature's learned levels are text or integers, as JSON keeps them)."""
    feature = spec.feature[name]
    if feature.open:
        return int(value) if feature.dtype == "integer" else str(value)
    for v in feature.values:
        if v == value and type(v) is type(value):
            return v
    return value
