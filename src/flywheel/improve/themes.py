"""Themes of negative feedback, and a revised prompt that addresses them.

**Negative feedback.** A decision made in the window (``start`` < its time <= ``as_of``) is
negative when any of these holds for its aligned row (:mod:`flywheel.align`: signals inside the
attribution window, as of ``as_of``):

- ``rating`` in the lowest 40% of its scale: at most ``min + 0.4 × (max - min)``, the scale
  being ``[signals] rating``'s ``min`` and ``max`` (default 1 to 5: a rating of 1 or 2);
- ``thumbs`` down (``thumbs = False``, stored as 0; anything at or below 0);
- ``rejected``, ``requeried`` or ``abandoned`` recorded;
- ``edit_distance`` at least 0.3 (:data:`LARGE_EDIT`): a person rewrote a third of the draft.

The reward is not a rule of its own: it may weigh outcomes (a purchase, a completion) that say
nothing about the text. A negative decision's text is what says best what was disliked: its
``comment``, else the diff of its latest edit (its changed lines, without the diff's markers),
else its ``output``. Rows the seatbelt has quarantined are left out; texts are as stored, so
redacted per ``[privacy]``. One SQL statement over the aligned rows and the ``edits`` table
reads the negative decisions and the decisions served per knob combination, on every store.

**Themes.** The texts become TF-IDF vectors (scikit-learn's ``TfidfVectorizer``: English stop
words, words and pairs of words, sublinear term frequency, terms in at least two texts once
there are 20). Agglomerative clustering (average linkage, cosine distance) merges groups of
texts while they are on average less than 0.95 apart (:data:`MERGE_DISTANCE`: while they share
some weighted term); its groups of at least 2% of the texts (at most :data:`MAX_THEMES`) seed
k-means (``KMeans``; beyond 5,000 texts ``MiniBatchKMeans``, the agglomerative step on 2,000 of
them), which refines them. Why not k-means with k by silhouette: people say one thing in
several phrasings, and identical phrasings form tighter groups than the theme, so the
silhouette splits a theme into its phrasings (adjusted Rand index 0.55 to 0.70 on the tests'
planted log, against 0.92 to 1 here). The same rows give the same themes.

**Sentence embeddings** (optional: ``embeddings``, ``"wordllama"`` for the static embedding
model the installed wordllama package ships, or the local folder of a model2vec model,
:mod:`flywheel.improve.embeddings`, installed by the extra ``flywheel[embeddings]``; never
downloaded) take the TF-IDF vectors' place in both steps, so that texts which say one thing
in different words meet: each text's embedding less the texts' mean, at unit length, so that
texts of unrelated meaning are about as far apart (a cosine distance near 1) as texts that
share no term are as TF-IDF vectors, and the same :data:`MERGE_DISTANCE` holds. With the
wordllama model the tests' planted themes are recovered whole (adjusted Rand index 1); a
theme said only in bare synonyms (``wordy``, ``lengthy``) may split into its words, which
seldom join another theme. The TF-IDF centroids of the
clusters still give the labels; the examples are the texts nearest the centroid in the
embedding space. :attr:`Themes.method` says which vectors were clustered.

Each :class:`Theme` has a label (its three heaviest centroid terms, a term inside another
left out), its size and share of the texts, its share by knob value (of that value's negative
texts, and per decision served with that value in the window: which prompt version produces
it), its trend (texts in the second half of the window against the first) and up to three
examples, the distinct texts nearest its centroid. Fewer than ten texts give no themes, with
the reason, not an error.

**Proposals.** :func:`propose` revises a knob value's text (the value itself is the
text: a knob ``prompt = ["Answer briefly.", …]``) from the themes: by the caller's own
``reviser(base_text, themes)``, or by the rule-based reviser (:func:`rule_based`), which appends
one instruction per theme under ``Avoid what users disliked:``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.align import moment, stamp
from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.errors import InvalidInputError, WrongTypeError
from flywheel.improve import embeddings as embedding
from flywheel.rules import quote_name
from flywheel.spec import Spec, duration
from flywheel.store import Store

RATING_SHARE = 0.4
"""A rating in this lowest share of its scale is negative (1 or 2 on a 1-5 scale)."""
RATING_SCALE = (1.0, 5.0)
"""The rating scale when ``[signals] rating`` declares no ``min`` and ``max``."""
LARGE_EDIT = 0.3
"""An edit distance at least this large (a third of the draft rewritten) is negative."""
MIN_TEXTS = 10
"""Fewer negative texts than this give no themes."""
MAX_THEMES = 8
EXAMPLES = 3
LABEL_TERMS = 3
TREND_RATIO = 1.5
"""A theme is ``rising`` when (second half + 1) / (first half + 1) is at least this,
``falling`` when at most its inverse, else ``steady``."""
MERGE_DISTANCE = 0.95
"""Groups of texts merge while their average cosine distance is below this: while they share
some weighted term."""
_MINIBATCH = 5000  # texts beyond which k-means runs in mini-batches
_SAMPLE = 2000  # texts the agglomerative step sees, at most (its cost grows with their square)
HEADING = "Avoid what users disliked:"
"""The heading of the rule-based reviser's instructions."""

Reviser = Callable[[str, Sequence["Theme"]], str]
"""A user's own model call: ``(base_text, themes) -> revised text``."""


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueShare:
    """A theme among the decisions served with one knob value in the window: ``texts``, its
    negative texts there; ``share``, of that value's negative texts; ``served``, decisions
    served with the value; ``rate``, its texts per decision served (``None``: none served)."""

    value: Any
    texts: int
    share: float
    served: int
    rate: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "texts": self.texts,
            "share": self.share,
            "served": self.served,
            "rate": self.rate,
        }


@dataclass(frozen=True)
class Trend:
    """A theme's texts in the first and the second half of the window; ``ratio`` is
    (second + 1) / (first + 1) and ``direction`` rising, falling or steady (:data:`TREND_RATIO`)."""

    first: int
    second: int
    ratio: float
    direction: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "second": self.second,
            "ratio": self.ratio,
            "direction": self.direction,
        }


@dataclass(frozen=True)
class Theme:
    """One theme of negative feedback (see the module's docstring); ``decisions`` are the ids
    of its texts' decisions (not in :meth:`as_dict`, which stays small)."""

    label: str
    terms: tuple[str, ...]
    size: int
    share: float
    trend: Trend
    by_knob: Mapping[str, tuple[ValueShare, ...]]
    examples: tuple[str, ...]
    decisions: tuple[str, ...] = field(repr=False)

    def top(self, knob: str) -> ValueShare | None:
        """The value of ``knob`` with the highest rate of this theme per decision served (ties:
        the value listed first in the spec); ``None`` when no value has a rate."""
        rated = [v for v in self.by_knob.get(knob, ()) if v.rate is not None]
        return max(rated, key=lambda v: v.rate or 0.0, default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "terms": list(self.terms),
            "size": self.size,
            "share": self.share,
            "trend": self.trend.as_dict(),
            "by_knob": {k: [v.as_dict() for v in vs] for k, vs in self.by_knob.items()},
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class Themes:
    """The themes of the negative feedback in a window: how many decisions were served and
    were negative, how many of those had a text, the themes (largest first), how they were
    found (``method``), what counted as negative (``rule``) and, with no themes, why."""

    start: str
    as_of: str
    window_seconds: float
    served: int
    negative: int
    texts: int
    themes: tuple[Theme, ...]
    method: str
    rule: Mapping[str, Any]
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "as_of": self.as_of,
            "window_seconds": self.window_seconds,
            "served": self.served,
            "negative": self.negative,
            "texts": self.texts,
            "themes": [t.as_dict() for t in self.themes],
            "method": self.method,
            "rule": dict(self.rule),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Proposal:
    """A revised text for a knob: from ``base`` (a value of ``knob``, or a text given as is)
    and its ``base_text``, the ``text`` the ``reviser`` (``"rules"`` or the callable's name)
    made from the ``themes`` it addresses; ``reason`` says why the text is unchanged, if it is."""

    knob: str
    base: Any
    base_text: str
    text: str
    themes: tuple[Theme, ...]
    reviser: str
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "knob": self.knob,
            "base": self.base,
            "base_text": self.base_text,
            "text": self.text,
            "themes": [t.label for t in self.themes],
            "reviser": self.reviser,
            "reason": self.reason,
        }


# --- negative feedback ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Negative:
    """A negative decision: its id, time, knob values, text (``None``: none stored) and the
    rules it met."""

    decision_id: str
    ts: datetime
    knobs: Mapping[str, Any]
    text: str | None
    source: str | None
    reasons: tuple[str, ...]


def signal_column(spec: Spec, name: str, kind: str) -> str:
    """``a."name"`` for a built-in signal the spec keeps as ``kind``; ``NULL`` when a knob,
    feature or signal of another kind has taken its name."""
    found = spec.signals.get(name)
    if found is None or found.kind != kind:
        return "NULL"
    return f"a.{quote_name(name)}"


def rating_cut(spec: Spec) -> float:
    """The highest negative rating: the lowest 40% of ``[signals] rating``'s scale."""
    found = spec.signals.get("rating")
    lo, hi = RATING_SCALE
    if found is not None and found.min is not None and found.max is not None:
        lo, hi = found.min, found.max
    return lo + RATING_SHARE * (hi - lo)


def negatives_sql(spec: Spec) -> str:
    """The statement: ``part = 'negative'`` rows (one per negative decision in the window, with
    its knobs, signals, comment, output and latest diff) and ``part = 'served'`` rows (decisions
    served per knob combination and half of the window, in ``served``). Parameters: ``$start``,
    ``$middle``, ``$as_of``, ``$rating_cut``, ``$large_edit``."""
    signals = {
        name: signal_column(spec, name, "number")
        for name in ("rating", "thumbs", "rejected", "requeried", "abandoned", "edit_distance")
    }
    comment, output = signal_column(spec, "comment", "text"), signal_column(spec, "output", "text")
    rules = [
        f"{signals['rating']} <= $rating_cut",
        f"{signals['thumbs']} <= 0",
        *(f"{signals[n]} > 0" for n in ("rejected", "requeried", "abandoned")),
        f"{signals['edit_distance']} >= $large_edit",
    ]
    negative = " OR ".join(f"coalesce({r}, FALSE)" for r in rules)
    knobs = [quote_name(k.name) for k in spec.knobs]
    knob_cols = "".join(f"a.{k}, " for k in knobs)
    picked = "".join(f"{k}, " for k in knobs)
    signal_cols = ", ".join(f"CAST({col} AS DOUBLE) AS {n}" for n, col in signals.items())
    nulls = ", ".join(f"CAST(NULL AS DOUBLE) AS {n}" for n in signals)
    grouped = ", ".join([*knobs, "later"])
    return f"""
WITH a AS ({aligned_rows_sql(spec)}),
e AS (
    SELECT decision_id, diff,
        row_number() OVER (
            PARTITION BY decision_id ORDER BY ts DESC, final DESC, draft DESC) AS newest
    FROM edits WHERE ts <= $as_of
),
w AS (
    SELECT a.decision_id, a.ts, {knob_cols}a.ts > $middle AS later, {signal_cols},
        CAST({comment} AS VARCHAR) AS comment, CAST({output} AS VARCHAR) AS answer, e.diff,
        ({negative}) AS negative
    FROM a LEFT JOIN e ON e.decision_id = CAST(a.decision_id AS UUID) AND e.newest = 1
    WHERE a.ts > $start AND {NOT_QUARANTINED}
)
SELECT 'negative' AS part, decision_id, ts, {picked}later, {", ".join(signals)}, comment,
    answer, diff, CAST(NULL AS BIGINT) AS served
FROM w WHERE negative
UNION ALL
SELECT 'served' AS part, NULL AS decision_id, NULL AS ts, {picked}later, {nulls},
    NULL AS comment, NULL AS answer, NULL AS diff, count(*) AS served
FROM w GROUP BY {grouped}
ORDER BY part, ts, decision_id"""


def _diff_text(diff: str | None) -> str | None:
    """A unified diff's changed lines, without its headers and markers."""
    if not diff:
        return None
    lines = [
        line[1:].strip()
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    text = " ".join(line for line in lines if line)
    return text or None


def _reasons(row: Mapping[str, Any], cut: float, large: float) -> tuple[str, ...]:
    checks = {
        "rating": row["rating"] is not None and row["rating"] <= cut,
        "thumbs": row["thumbs"] is not None and row["thumbs"] <= 0,
        "rejected": bool(row["rejected"]),
        "requeried": bool(row["requeried"]),
        "abandoned": bool(row["abandoned"]),
        "edit": row["edit_distance"] is not None and row["edit_distance"] >= large,
    }
    return tuple(name for name, hit in checks.items() if hit)


def _text(row: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """A negative decision's text and where it came from: comment, else diff, else output."""
    for source, text in (
        ("comment", row["comment"]),
        ("edit", _diff_text(row["diff"])),
        ("output", row["answer"]),
    ):
        if text is not None and text.strip():
            return text.strip(), source
    return None, None


@dataclass(frozen=True)
class Window:
    """What the statement read: the negative decisions and the decisions served per knob
    value, in all and in each half of the window."""

    negatives: list[Negative]
    served: dict[str, dict[Any, int]]
    halves: tuple[int, int]


def read(
    store: Store, spec: Spec, start: datetime, as_of: datetime, large_edit: float = LARGE_EDIT
) -> Window:
    """The negative decisions made in ``(start, as_of]`` and the decisions served there."""
    cut = rating_cut(spec)
    middle = start + (as_of - start) / 2
    params = {
        "start": start,
        "middle": middle,
        "as_of": as_of,
        "rating_cut": cut,
        "large_edit": float(large_edit),
    }
    rows = store.query(negatives_sql(spec), params).to_pylist()
    knobs = [k.name for k in spec.knobs]
    served: dict[str, dict[Any, int]] = {k.name: dict.fromkeys(k.values, 0) for k in spec.knobs}
    halves = [0, 0]
    negatives = []
    for row in rows:
        if row["part"] == "served":
            count = int(row["served"])
            halves[1 if row["later"] else 0] += count
            for k in knobs:
                served[k][row[k]] = served[k].get(row[k], 0) + count
            continue
        text, source = _text(row)
        negatives.append(
            Negative(
                decision_id=str(row["decision_id"]),
                ts=row["ts"],
                knobs={k: row[k] for k in knobs},
                text=text,
                source=source,
                reasons=_reasons(row, cut, large_edit),
            )
        )
    return Window(negatives, served, (halves[0], halves[1]))


def rule(spec: Spec, large_edit: float = LARGE_EDIT) -> dict[str, Any]:
    """What counted as negative, in words and figures (:attr:`Themes.rule`)."""
    return {
        "rating": f"<= {rating_cut(spec):g}",
        "thumbs": "down",
        "implicit": "rejected, requeried or abandoned",
        "edit_distance": f">= {large_edit:g}",
        "text": "the comment, else the latest edit's changed lines, else the output",
        "quarantined": "left out",
    }


# --- clustering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clusters:
    """Texts clustered: each text's cluster, the centroids (rows, over ``terms``), each text's
    cosine similarity to its centroid, and how (``method``)."""

    labels: np.ndarray
    centroids: np.ndarray
    terms: tuple[str, ...]
    similarity: np.ndarray
    method: str


def cluster(
    texts: Sequence[str], max_themes: int = MAX_THEMES, embeddings: str | Path | None = None
) -> Clusters | str:
    """TF-IDF vectors of ``texts`` clustered (see the module's docstring); a reason instead
    when the texts hold no terms to cluster. With ``embeddings``, ``"wordllama"`` or the folder
    of a static embedding model (:mod:`flywheel.improve.embeddings`), the texts' sentence
    embeddings are clustered instead, and the centroids over the TF-IDF terms still label
    the clusters."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    n = len(texts)
    vectors = None
    for min_df in (2, 1) if n >= 20 else (1,):
        vectorizer = TfidfVectorizer(
            stop_words="english", ngram_range=(1, 2), sublinear_tf=True, min_df=min_df
        )
        try:
            vectors = vectorizer.fit_transform(texts)
        except ValueError:  # nothing left but stop words
            continue
        break
    if vectors is None:
        return "the negative texts hold no words to cluster on (only stop words)"
    terms = tuple(str(t) for t in vectorizer.get_feature_names_out())
    matrix = vectors.toarray() if n <= _MINIBATCH else vectors
    if embeddings is not None:
        return _embedded(texts, matrix, terms, max_themes, embedding.load(embeddings))
    seeds = _groups(matrix, n, max_themes)
    if seeds is None:
        labels = np.zeros(n, dtype=np.int64)
        return _clusters(matrix, labels, terms, "tfidf, one theme (the texts form no two groups)")
    kind = "minibatch-kmeans" if n > _MINIBATCH else "kmeans"
    labels = _kmeans(matrix, seeds, n)
    k = len(set(labels.tolist()))
    method = f"tfidf + average-linkage cosine (distance < {MERGE_DISTANCE:g}) + {kind}, k={k}"
    return _clusters(matrix, labels, terms, method)


def _embedded(
    texts: Sequence[str],
    matrix: Any,
    terms: tuple[str, ...],
    max_themes: int,
    model: embedding.Model,
) -> Clusters:
    """The texts' sentence embeddings, centred (:func:`_centred`), clustered as TF-IDF vectors
    are; ``matrix`` (their TF-IDF vectors) gives the labels."""
    n = len(texts)
    space = _centred(model.embed(texts))
    name = f"embeddings ({model.name}, {model.dim} dimensions)"
    seeds = _groups(space, n, max_themes)
    if seeds is None:
        labels = np.zeros(n, dtype=np.int64)
        method = f"{name}, one theme (the texts form no two groups); labels from tfidf"
        return _clusters(matrix, labels, terms, method, space)
    kind = "minibatch-kmeans" if n > _MINIBATCH else "kmeans"
    labels = _kmeans(space, seeds, n)
    k = len(set(labels.tolist()))
    method = (
        f"{name} + average-linkage cosine (distance < {MERGE_DISTANCE:g}) + {kind}, "
        f"k={k}; labels from tfidf"
    )
    return _clusters(matrix, labels, terms, method, space)


def _centred(vectors: np.ndarray) -> np.ndarray:
    """Unit vectors less their mean, scaled to unit length again: what all the texts share
    (that they are complaints, the model's own leaning) no longer draws them together, and
    texts that mean unrelated things are about as far apart as texts that share no term are
    as TF-IDF vectors (a cosine distance near 1). A row of zeros (no known token) stays one."""
    known = np.any(vectors != 0, axis=1)
    if not known.any():
        return vectors
    centred = np.where(known[:, None], vectors - vectors[known].mean(axis=0), 0.0)
    norms = np.linalg.norm(centred, axis=1)
    return np.asarray(centred / np.where(norms > 1e-12, norms, 1.0)[:, None])


def _groups(matrix: Any, n: int, max_themes: int) -> np.ndarray | None:
    """The starting centroids: agglomerative clustering (average linkage, cosine distance)
    merges groups of texts while they are on average less than :data:`MERGE_DISTANCE` apart,
    over at most :data:`_SAMPLE` texts (evenly spaced); the groups of at least
    max(2, 2% of them) texts, the largest :data:`MAX_THEMES`, seed k-means. ``None``: fewer
    than two such groups."""
    from sklearn.cluster import AgglomerativeClustering

    picked = np.linspace(0, n - 1, min(n, _SAMPLE)).round().astype(np.int64)
    sample = matrix[picked]
    dense = sample.toarray() if hasattr(sample, "toarray") else np.asarray(sample)
    dense = dense[np.any(dense != 0, axis=1)]  # a text of rare words only has no direction
    if len({row.tobytes() for row in dense}) < 2:
        return None
    model = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=MERGE_DISTANCE
    )
    labels = np.asarray(model.fit_predict(dense), dtype=np.int64)
    sizes = np.bincount(labels)
    floor = max(2, math.ceil(0.02 * len(dense)))
    big = [c for c in np.argsort(-sizes, kind="stable").tolist() if sizes[c] >= floor]
    big = big[:max_themes]
    if len(big) < 2:
        return None
    return np.vstack([dense[labels == c].mean(axis=0) for c in big])


def _kmeans(matrix: Any, seeds: np.ndarray, n: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = len(seeds)
    if n > _MINIBATCH:
        model: Any = MiniBatchKMeans(
            n_clusters=k, init=seeds, n_init=1, random_state=0, batch_size=1024, max_iter=200
        )
    else:
        model = KMeans(n_clusters=k, init=seeds, n_init=1, random_state=0, max_iter=300)
    return np.asarray(model.fit_predict(matrix), dtype=np.int64)


def _clusters(
    matrix: Any,
    labels: np.ndarray,
    terms: tuple[str, ...],
    method: str,
    space: np.ndarray | None = None,
) -> Clusters:
    """Centroids (over ``matrix``'s terms) and each text's cosine similarity to its own (in
    ``space``, the vectors clustered, when they are not ``matrix``), the clusters numbered by
    size (largest first; ties: the one with the earlier first text)."""
    sizes = np.bincount(labels)
    order = sorted(
        np.flatnonzero(sizes).tolist(), key=lambda c: (-sizes[c], np.argmax(labels == c))
    )
    renumber = np.zeros(len(sizes), dtype=np.int64)
    renumber[order] = np.arange(len(order))
    labels = renumber[labels]

    def means(vectors: Any) -> np.ndarray:
        return np.vstack(
            [np.asarray(vectors[labels == c].mean(axis=0)).ravel() for c in range(len(order))]
        )

    centroids = means(matrix)
    vectors, centres = (matrix, centroids) if space is None else (space, means(space))
    norms = np.linalg.norm(centres, axis=1)
    unit = centres / np.where(norms > 0, norms, 1.0)[:, None]
    similarity = np.asarray(vectors @ unit.T)[np.arange(len(labels)), labels]
    return Clusters(labels, centroids, terms, similarity, method)


def _label(centroid: np.ndarray, terms: Sequence[str]) -> tuple[str, ...]:
    """The heaviest terms of a centroid, leaving out a term whose words are within a chosen
    one's (or hold them): ``long, verbose, wordy`` rather than ``long, too long, …``."""
    chosen: list[str] = []
    for i in np.argsort(-centroid, kind="stable"):
        if centroid[i] <= 0 or len(chosen) == LABEL_TERMS:
            break
        words = set(terms[i].split())
        if any(words <= set(c.split()) or set(c.split()) <= words for c in chosen):
            continue
        chosen.append(terms[i])
    return tuple(chosen)


# --- themes --------------------------------------------------------------------------------------


def _window(window: str | float, as_of: datetime | float | None) -> tuple[datetime, datetime]:
    end = moment(as_of).astimezone(UTC)
    if isinstance(window, bool) or not isinstance(window, str | int | float):
        raise WrongTypeError("window", f"expected a duration such as 28d, got {window!r}")
    seconds = duration(window, "window") if isinstance(window, str) else float(window)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError("window", f"expected a duration such as 28d; got {window!r}")
    return end - timedelta(seconds=seconds), end


def themes(
    store: Store,
    spec: Spec,
    window: str | float = "28d",
    as_of: datetime | float | None = None,
    *,
    large_edit: float = LARGE_EDIT,
    min_texts: int = MIN_TEXTS,
    max_themes: int = MAX_THEMES,
    embeddings: str | Path | None = None,
) -> Themes:
    """The themes of the negative feedback on the decisions made in ``window`` (a duration
    such as ``28d``, or seconds) up to ``as_of`` (default: now). ``embeddings``: the static
    embedding model whose sentence embeddings are clustered instead of the TF-IDF vectors,
    ``"wordllama"`` (the one the wordllama package ships) or the folder of a model2vec model
    (:mod:`flywheel.improve.embeddings`; checked first, never downloaded)."""
    if embeddings is not None:
        embedding.check(embeddings)
    start, end = _window(window, as_of)
    found = read(store, spec, start, end, large_edit)
    texts = [n for n in found.negatives if n.text is not None]
    served = sum(found.halves)

    def result(items: tuple[Theme, ...], method: str, reason: str | None) -> Themes:
        return Themes(
            start=stamp(start),
            as_of=stamp(end),
            window_seconds=(end - start).total_seconds(),
            served=served,
            negative=len(found.negatives),
            texts=len(texts),
            themes=items,
            method=method,
            rule=rule(spec, large_edit),
            reason=reason,
        )

    if len(texts) < min_texts:
        return result(
            (),
            "none",
            f"{len(texts)} negative texts in the window; themes need at least {min_texts}",
        )
    clusters = cluster([n.text or "" for n in texts], max_themes, embeddings)
    if isinstance(clusters, str):
        return result((), "none", clusters)
    middle = start + (end - start) / 2
    items = tuple(
        _theme(c, clusters, texts, found, middle, spec) for c in range(len(clusters.centroids))
    )
    return result(items, clusters.method, None)


def _theme(
    c: int, clusters: Clusters, texts: list[Negative], found: Window, middle: datetime, spec: Spec
) -> Theme:
    members = [i for i, label in enumerate(clusters.labels.tolist()) if label == c]
    terms = _label(clusters.centroids[c], clusters.terms)
    later = sum(1 for i in members if texts[i].ts > middle)
    first, second = len(members) - later, later
    ratio = (second + 1) / (first + 1)
    direction = (
        "rising" if ratio >= TREND_RATIO else "falling" if ratio <= 1 / TREND_RATIO else "steady"
    )
    by_knob: dict[str, tuple[ValueShare, ...]] = {}
    for knob in spec.knobs:
        shares = []
        for value, count in found.served[knob.name].items():
            of_value = [i for i, n in enumerate(texts) if n.knobs[knob.name] == value]
            inside = sum(1 for i in members if texts[i].knobs[knob.name] == value)
            shares.append(
                ValueShare(
                    value=value,
                    texts=inside,
                    share=inside / len(of_value) if of_value else 0.0,
                    served=count,
                    rate=inside / count if count else None,
                )
            )
        by_knob[knob.name] = tuple(shares)
    nearest = sorted(members, key=lambda i: (-clusters.similarity[i], i))
    examples: list[str] = []
    for i in nearest:
        text = texts[i].text or ""
        if text not in examples:
            examples.append(text)
        if len(examples) == EXAMPLES:
            break
    return Theme(
        label=", ".join(terms),
        terms=terms,
        size=len(members),
        share=len(members) / len(texts),
        trend=Trend(first, second, ratio, direction),
        by_knob=by_knob,
        examples=tuple(examples),
        decisions=tuple(texts[i].decision_id for i in members),
    )


# --- proposals -----------------------------------------------------------------------------------


def rule_based(base_text: str, found: Sequence[Theme]) -> str:
    """The rule-based reviser: the base text, a blank line, :data:`HEADING`, and one line per
    theme, in the order given: ``- Avoid what users called "LABEL" (N of the negative
    feedback).``, N the theme's share as a whole percentage. No themes: the base text."""
    if not found:
        return base_text
    lines = [
        f'- Avoid what users called "{t.label}" ({t.share:.0%} of the negative feedback).'
        for t in found
    ]
    return "\n".join([base_text.rstrip(), "", HEADING, *lines])


def propose(
    store: Store,
    spec: Spec,
    knob: str,
    base: Any,
    reviser: Reviser | None = None,
    window: str | float = "28d",
    as_of: datetime | float | None = None,
    *,
    embeddings: str | Path | None = None,
    base_text: str | None = None,
) -> Proposal:
    """A revised text for ``knob`` from ``base`` and the themes of ``window`` up to ``as_of``.

    ``base`` is a value of ``knob`` (its text is the value itself: a knob
    ``prompt = ["Answer briefly.", …]``) or any other text, taken as is. For a value, the themes
    addressed are those with texts among the decisions served with it, by their rate there
    (highest first); for a text, every theme, largest first. ``reviser(base_text, themes)``
    makes the new text (a user's own model call); without one, :func:`rule_based` does. A
    proposal is a text: it is served, and tested live, once it is a value of the knob.
    ``embeddings``: as for :func:`themes`; ``base_text``: the text a value stands for when it
    is not the value itself (a value added at run time with its text)."""
    found = next((k for k in spec.knobs if k.name == knob), None)
    if found is None:
        names = ", ".join(k.name for k in spec.knobs) or "none"
        raise InvalidInputError("knob", f"{knob!r} is not a knob of this spec (knobs: {names})")
    is_value = found.accepts(base)
    if not is_value and not isinstance(base, str):
        raise WrongTypeError("base", f"expected a value of {knob} or a text, got {base!r}")
    if reviser is not None and not callable(reviser):
        raise WrongTypeError("reviser", "expected a callable (base_text, themes) -> text")
    base_text = str(base) if base_text is None or not is_value else base_text
    report = themes(store, spec, window, as_of, embeddings=embeddings)
    chosen: list[Theme]
    if is_value:
        tied = []
        for t in report.themes:
            share = next(v for v in t.by_knob[knob] if v.value == base)
            if share.texts:
                tied.append((share.rate or 0.0, t))
        chosen = [t for _, t in sorted(tied, key=lambda p: -p[0])]
    else:
        chosen = list(report.themes)
    name = "rules" if reviser is None else getattr(reviser, "__name__", type(reviser).__name__)
    if not chosen:
        reason = report.reason or f"no theme of the negative feedback involves {knob} = {base!r}"
        return Proposal(knob, base, base_text, base_text, (), name, reason)
    text = (reviser or rule_based)(base_text, tuple(chosen))
    if not isinstance(text, str):
        raise WrongTypeError("reviser", f"returned {type(text).__name__}, expected a text")
    return Proposal(knob, base, base_text, text, tuple(chosen), name)
