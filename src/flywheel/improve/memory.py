"""Example memory: the best-rated outputs, served as few-shot examples and retrieval scores.

**Snapshots.** :func:`build` reads, in one SQL statement over the aligned rows
(:mod:`flywheel.align`: signals inside the attribution window, as of ``as_of``) and the
``edits`` table, the decisions made in the window (``as_of - window`` < their time <=
``as_of``) that have an ``input``, an output (the final text of their latest edit when they
were edited, else their ``output`` signal, as for SFT in :mod:`.datasets`) and a reward of at
least ``min_reward`` (default ``[datasets] min_reward``), that drew no negative feedback and
that the seatbelt has not quarantined. The best ``size`` of them by reward (ties: the newest,
then the smaller id) are the :class:`Snapshot`'s entries, each with its decision's id, unit
(its pseudonym, as stored), input, output, reward, context values and time. Texts are as
stored, so redacted per ``[privacy]``.

**Negative feedback** follows :mod:`.themes`: a rating in the lowest 40% of its scale, thumbs
down, ``rejected``, ``requeried`` or ``abandoned`` recorded, or an ``edit_distance`` of at
least 0.3. A negative decision is no entry, whatever its reward.

**Eviction.** Given the ``previous`` snapshot, each of its entries that is no longer eligible
because of what happened since is recorded in :attr:`Snapshot.evicted` with its reasons: the
negative-feedback rules it met (``rating``, ``thumbs``, ``rejected``, ``requeried``,
``abandoned``, ``edit``), ``reward`` (its reward is now below ``min_reward``), ``quarantined``
and ``used`` (see below). An entry that only left the window, or that better ones outranked,
is not evicted: it may come back.

**Documents.** With ``documents`` set, the name of a text signal listing the ids of the
documents (or answers, or served examples: an example's id is its decision's id) that a
decision used, separated by spaces or commas, the same statement aggregates per document id
the decisions in the window that used it: ``uses``, ``rated`` (those with a reward),
``negative`` (those with negative feedback) and the ``mean`` reward, and shrinks that mean
toward the mean reward of every decision that used a document (``prior``) as
:data:`PRIOR_USES` decisions at the prior would: ``score = (rated × mean + PRIOR_USES × prior)
/ (rated + PRIOR_USES)``, so one rating does not dominate. A document's ``lift`` is ``(score -
prior) / sd``, ``sd`` the standard deviation of those decisions' rewards, clipped to [-1, 1];
the ``max_documents`` most used documents are kept. An entry whose decision is a document
whose score fell below ``min_reward`` is evicted as ``used``: decisions that were shown it did
badly. The signal is a text, so redacted per ``[privacy]`` like any other: an id holding a run
of ten or more digits reads as a phone number there.

**Serving.** :meth:`Snapshot.examples` returns the ``k`` entries nearest a context: the
similarity is the number of the snapshot's categorical context features whose value matches
the one given, plus, with an ``input``, the TF-IDF cosine similarity of the inputs
(scikit-learn's ``TfidfVectorizer`` over the entries' inputs: English stop words, words and
pairs of words, sublinear term frequency), divided by the number of terms counted (so in
[0, 1]); ties go to the higher reward, then the newer entry. An entry with the same input and
output as one already chosen is skipped. :meth:`Snapshot.rank` reorders retrieved documents:
each keeps its retrieval score plus ``weight × (max - min of the scores) × lift`` (equal
scores count as a range of 1), so a document with positive feedback rises and one with
negative feedback falls (with the default weight of 1, by at most the whole range of the
scores); a document without feedback keeps its score.

**Versions.** A snapshot's id is ``m`` and the first 8 hex digits of the SHA-256 of its
entries and documents: the same rows give the same id, and any change of them a new one. The
id is meant to be recorded with each decision that uses the snapshot (as a knob value), so
what a refresh does is learned like any other choice. :func:`save` stores a snapshot in the
store's ``meta`` table under ``memory.snapshot.<id>`` (its JSON, :meth:`Snapshot.to_json`) and
appends its id to the list under ``memory.snapshots`` (JSON, oldest first; the last is the
current one: :func:`current`; :func:`versions`, :func:`load`); the :data:`KEEP` newest versions
are kept, an older one's value is emptied. :func:`refresh` builds a snapshot against the current
one and saves it. :func:`forget` removes a unit's entries from every stored version (which
keeps its id: the id names the version as it was built).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from flywheel.align import moment, stamp
from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.errors import InvalidInputError, StoreError, WrongTypeError
from flywheel.improve.themes import LARGE_EDIT, rating_cut, signal_column
from flywheel.rules import own_column, quote_name
from flywheel.spec import Spec
from flywheel.store import Store

WINDOW = 28 * 86400.0
"""How far back a snapshot reads by default, in seconds (28 days)."""
PRIOR_USES = 2.0
"""How many decisions at the prior a document's mean reward is shrunk with."""
KEEP = 20
"""How many versions :func:`save` keeps (the current one among them)."""
INDEX_KEY = "memory.snapshots"
"""The ``meta`` key holding the stored versions' ids (JSON list, oldest first)."""
SNAPSHOT_KEY = "memory.snapshot."
"""The prefix of the ``meta`` key holding a version's JSON (``memory.snapshot.<id>``)."""
NEGATIVE_RULES = ("rating", "thumbs", "rejected", "requeried", "abandoned", "edit")
"""The negative-feedback rules, as eviction reasons (see :mod:`.themes`)."""

_ID = re.compile(r"^m[0-9a-f]{8}$")
_SQL_TYPES = {"text": "VARCHAR", "integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN"}


def _own(name: str) -> str:
    """A column of this module's statement, quoted: never a name of the spec's."""
    return quote_name(own_column(name))


# --- settings and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class MemorySettings:
    """How the memory is built and served: ``k`` examples a call by default, at most ``size``
    entries in a snapshot, the reward an entry needs (``min_reward``; ``None``: ``[datasets]
    min_reward``), the text signal listing the documents a decision used (``documents``;
    ``None``: no document scores), how far back a snapshot reads (``window``, seconds) and
    how many documents it scores at most (``max_documents``, the most used)."""

    k: int = 3
    size: int = 200
    min_reward: float | None = None
    documents: str | None = None
    window: float = WINDOW
    max_documents: int = 5000

    def __post_init__(self) -> None:
        for name in ("k", "size", "max_documents"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise WrongTypeError(name, f"expected a whole number, got {value!r}")
            if value < 1:
                raise InvalidInputError(name, f"must be at least 1, got {value!r}")
        if self.min_reward is not None:
            _finite("min_reward", self.min_reward)
        if _finite("window", self.window) <= 0:
            raise InvalidInputError("window", f"must be a positive duration, got {self.window!r}")
        if self.documents is not None and not isinstance(self.documents, str):
            raise WrongTypeError("documents", f"expected a signal's name, got {self.documents!r}")


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongTypeError(name, f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise InvalidInputError(name, f"{value!r} is not a finite number")
    return float(value)


@dataclass(frozen=True)
class Entry:
    """An example kept in a snapshot: a decision's id, unit (pseudonym), input, output,
    reward, context values and time."""

    decision_id: str
    unit: str | None
    input: str
    output: str
    reward: float
    context: Mapping[str, Any]
    ts: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "unit": self.unit,
            "input": self.input,
            "output": self.output,
            "reward": self.reward,
            "context": dict(self.context),
            "ts": stamp(self.ts),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Entry:
        return cls(
            decision_id=str(raw["decision_id"]),
            unit=None if raw["unit"] is None else str(raw["unit"]),
            input=str(raw["input"]),
            output=str(raw["output"]),
            reward=float(raw["reward"]),
            context=dict(raw["context"]),
            ts=datetime.fromisoformat(raw["ts"]),
        )


@dataclass(frozen=True)
class Document:
    """What the decisions that used a document say of it: ``uses``, ``rated`` (with a
    reward), ``negative`` (with negative feedback), their ``mean`` reward (``None``: none
    rated), the shrunk ``score`` and its ``lift`` over the prior (see the module's docstring)."""

    id: str
    uses: int
    rated: int
    negative: int
    mean: float | None
    score: float | None
    lift: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uses": self.uses,
            "rated": self.rated,
            "negative": self.negative,
            "mean": self.mean,
            "score": self.score,
            "lift": self.lift,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Document:
        return cls(
            id=str(raw["id"]),
            uses=int(raw["uses"]),
            rated=int(raw["rated"]),
            negative=int(raw["negative"]),
            mean=None if raw["mean"] is None else float(raw["mean"]),
            score=None if raw["score"] is None else float(raw["score"]),
            lift=float(raw["lift"]),
        )


@dataclass(frozen=True)
class Eviction:
    """An entry of the previous snapshot left out of this one, and why (``reasons``: the
    negative-feedback rules it met, ``reward``, ``quarantined``, ``used``)."""

    decision_id: str
    unit: str | None
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "unit": self.unit, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Eviction:
        unit = raw["unit"]
        return cls(
            str(raw["decision_id"]),
            None if unit is None else str(unit),
            tuple(str(r) for r in raw["reasons"]),
        )


@dataclass(frozen=True)
class Example:
    """An entry served for a context: its decision's id, input, output, reward and context,
    and its ``similarity`` to what was asked (0 to 1)."""

    decision_id: str
    input: str
    output: str
    reward: float
    context: Mapping[str, Any]
    similarity: float


@dataclass(frozen=True)
class Snapshot:
    """A version of the memory (see the module's docstring): its ``id``, when it was made
    (``created_at``) and as of when it read (``as_of``), the ``min_reward`` its entries met,
    the categorical context ``features`` similarity counts, its ``entries`` (best reward
    first), its ``documents`` by id and what it ``evicted`` from the previous version."""

    id: str
    created_at: datetime
    as_of: datetime
    min_reward: float
    features: tuple[str, ...]
    entries: tuple[Entry, ...]
    documents: Mapping[str, Document] = field(default_factory=dict)
    evicted: tuple[Eviction, ...] = ()

    def examples(
        self, context: Mapping[str, Any], k: int = 3, input: str | None = None
    ) -> list[Example]:
        """The ``k`` entries most similar to ``context`` (and to ``input``, when given), most
        similar first; ties: the higher reward, then the newer."""
        if isinstance(k, bool) or not isinstance(k, int):
            raise WrongTypeError("k", f"expected a whole number, got {k!r}")
        if k < 1:
            raise InvalidInputError("k", f"must be at least 1, got {k!r}")
        if not isinstance(context, Mapping):
            raise WrongTypeError("context", f"expected a mapping, got {context!r}")
        if input is not None and not isinstance(input, str):
            raise WrongTypeError("input", f"expected a text, got {input!r}")
        if not self.entries:
            return []
        asked = [f for f in self.features if context.get(f) is not None]
        texts = self._texts(input) if input is not None else None
        terms = len(asked) + (1 if texts is not None else 0)
        scored = []
        for i, entry in enumerate(self.entries):
            matched = sum(1 for f in asked if entry.context.get(f) == context[f])
            total = matched + (texts[i] if texts is not None else 0.0)
            similarity = round(total / terms, 9) if terms else 0.0
            scored.append((similarity, entry))
        scored.sort(key=lambda p: (-p[0], -p[1].reward, -p[1].ts.timestamp(), p[1].decision_id))
        chosen: list[Example] = []
        seen: set[tuple[str, str]] = set()
        for similarity, entry in scored:
            if (entry.input, entry.output) in seen:
                continue
            seen.add((entry.input, entry.output))
            chosen.append(
                Example(
                    entry.decision_id,
                    entry.input,
                    entry.output,
                    entry.reward,
                    entry.context,
                    similarity,
                )
            )
            if len(chosen) == k:
                break
        return chosen

    @cached_property
    def _index(self) -> tuple[Any, Any] | None:
        """The TF-IDF vectorizer fitted on the entries' inputs and their vectors; ``None``
        when the inputs hold no words but stop words."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), sublinear_tf=True)
        try:
            vectors = vectorizer.fit_transform([e.input for e in self.entries])
        except ValueError:  # nothing left but stop words
            return None
        return vectorizer, vectors

    def _texts(self, input: str) -> list[float] | None:
        """Each entry's input's cosine similarity to ``input`` (TF-IDF vectors, normalised)."""
        index = self._index
        if index is None:
            return None
        vectorizer, vectors = index
        cosine = (vectors @ vectorizer.transform([input]).T).toarray().ravel()
        return [min(1.0, max(0.0, float(c))) for c in cosine]

    def rank(
        self, candidates: Sequence[str], scores: Sequence[float] | None = None, weight: float = 1.0
    ) -> list[tuple[str, float]]:
        """``candidates`` (document ids, as retrieved) with their retrieval ``scores``
        (default: equal), best first, each score moved by its document's feedback: plus
        ``weight × (max - min of the scores, or 1 when they are equal) × lift``. A document
        without feedback keeps its score; ties keep the order given."""
        if isinstance(candidates, str) or not isinstance(candidates, Sequence):
            raise WrongTypeError("candidates", "expected a sequence of document ids")
        given = [1.0] * len(candidates) if scores is None else list(scores)
        if len(given) != len(candidates):
            raise InvalidInputError(
                "scores", f"{len(given)} scores for {len(candidates)} candidates"
            )
        values = [_finite("scores", s) for s in given]
        weight = _finite("weight", weight)
        spread = (max(values) - min(values)) if values else 0.0
        scale = spread if spread > 0 else 1.0
        moved = []
        for position, (doc, score) in enumerate(zip(candidates, values, strict=True)):
            found = self.documents.get(str(doc))
            lift = found.lift if found is not None else 0.0
            moved.append((position, str(doc), score + weight * scale * lift))
        moved.sort(key=lambda p: (-p[2], p[0]))
        return [(doc, score) for _, doc, score in moved]

    # --- storing ---------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": stamp(self.created_at),
            "as_of": stamp(self.as_of),
            "min_reward": self.min_reward,
            "features": list(self.features),
            "entries": [e.as_dict() for e in self.entries],
            "documents": [d.as_dict() for d in self.documents.values()],
            "evicted": [e.as_dict() for e in self.evicted],
        }

    def to_json(self) -> str:
        """The snapshot as JSON (what :func:`save` stores): UTF-8 text, keys in a fixed
        order, times as ``2026-01-01T00:00:00Z``."""
        return json.dumps(self.as_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        """A snapshot from :meth:`to_json`'s text."""
        try:
            raw = json.loads(text)
            documents = [Document.from_dict(d) for d in raw["documents"]]
            return cls(
                id=str(raw["id"]),
                created_at=datetime.fromisoformat(raw["created_at"]),
                as_of=datetime.fromisoformat(raw["as_of"]),
                min_reward=float(raw["min_reward"]),
                features=tuple(str(f) for f in raw["features"]),
                entries=tuple(Entry.from_dict(e) for e in raw["entries"]),
                documents={d.id: d for d in documents},
                evicted=tuple(Eviction.from_dict(e) for e in raw["evicted"]),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise StoreError(f"memory: not a stored snapshot: {err}") from err


def snapshot_id(entries: Sequence[Entry], documents: Mapping[str, Document]) -> str:
    """``m`` and the first 8 hex digits of the SHA-256 of the entries and documents (their
    numbers to 9 decimals, so that the order a store sums in does not show)."""

    def number(x: float | None) -> float | None:
        return None if x is None else round(x, 9)

    content = {
        "entries": [{**e.as_dict(), "reward": number(e.reward)} for e in entries],
        "documents": [
            {
                **d.as_dict(),
                "mean": number(d.mean),
                "score": number(d.score),
                "lift": number(d.lift),
            }
            for d in sorted(documents.values(), key=lambda d: d.id)
        ],
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode())
    return "m" + digest.hexdigest()[:8]


# --- the statement -------------------------------------------------------------------------------


def _text_signal(spec: Spec, name: str, why: str) -> None:
    found = spec.signals.get(name)
    if found is None or found.kind != "text":
        raise InvalidInputError(name, f"is not a text signal in this spec: {why}")


def memory_sql(spec: Spec, documents: str | None = None, previous: Sequence[str] = ()) -> str:
    """The statement: ``#part = 'entry'`` rows (the snapshot's entries, best first), with
    ``previous`` (decision ids) ``'evicted'`` rows (those of them no longer eligible, with
    the rules they met) and with ``documents`` (a text signal's name) ``'document'`` rows
    (each document's aggregates), over the decisions made in (``$since``, ``$as_of``].
    Parameters: ``$as_of``, ``$since``, ``$min_reward``, ``$rating_cut``, ``$large_edit``,
    ``$size``; with documents, ``$prior_uses`` and ``$max_documents``."""
    _text_signal(spec, "input", "example memory needs it")
    _text_signal(spec, "output", "example memory needs it")
    if documents is not None:
        _text_signal(spec, documents, "documents name a text signal listing document ids")
    rating, thumbs = (
        signal_column(spec, "rating", "number"),
        signal_column(spec, "thumbs", "number"),
    )
    edit = signal_column(spec, "edit_distance", "number")
    checks = {
        "rating": f"{rating} <= $rating_cut",
        "thumbs": f"{thumbs} <= 0",
        **{
            n: f"{signal_column(spec, n, 'number')} > 0"
            for n in ("rejected", "requeried", "abandoned")
        },
        "edit": f"{edit} >= $large_edit",
    }
    flags = ", ".join(f"coalesce({rule}, FALSE) AS {_own(n)}" for n, rule in checks.items())
    negative = " OR ".join(_own(n) for n in checks)
    features = [(quote_name(f.name), _SQL_TYPES[f.dtype]) for f in spec.context]
    context = "".join(f"a.{name}, " for name, _ in features)
    picked = "".join(f"{name}, " for name, _ in features)
    nulls = "".join(f"CAST(NULL AS {kind}) AS {name}, " for name, kind in features)
    flag_cols = ", ".join(_own(n) for n in checks)
    no_flags = ", ".join(f"CAST(NULL AS BOOLEAN) AS {_own(n)}" for n in checks)
    prompt, best, kept, used = _own("prompt"), _own("best"), _own("kept"), _own("used")
    part, order, neg = _own("part"), _own("order"), _own("negative")
    doc, uses, rated, negs = _own("doc"), _own("uses"), _own("rated"), _own("negatives")
    mean, score, lift, docs = _own("mean"), _own("score"), _own("lift"), _own("docs")
    eligible = f"{kept} AND coalesce(reward >= $min_reward, FALSE) AND NOT {neg} AND NOT {used}"
    doc_cols = f"{doc}, {uses}, {rated}, {negs}, {mean}, {score}, {lift}"
    no_docs = (
        f"CAST(NULL AS VARCHAR) AS {doc}, CAST(NULL AS BIGINT) AS {uses},"
        f" CAST(NULL AS BIGINT) AS {rated}, CAST(NULL AS BIGINT) AS {negs},"
        f" CAST(NULL AS DOUBLE) AS {mean}, CAST(NULL AS DOUBLE) AS {score},"
        f" CAST(NULL AS DOUBLE) AS {lift}"
    )
    listed = f"CAST(a.{quote_name(documents)} AS VARCHAR)" if documents else "NULL"
    ctes = f"""
WITH a AS ({aligned_rows_sql(spec, since=True)}),
e AS (
    SELECT decision_id, final,
        row_number() OVER (
            PARTITION BY decision_id ORDER BY ts DESC, final DESC, draft DESC) AS newest
    FROM edits WHERE ts <= $as_of
),
f AS (
    SELECT a.decision_id, a.ts, a.unit, a.reward, {context}
        a.{quote_name("input")} AS {prompt},
        coalesce(e.final, a.{quote_name("output")}) AS {best},
        {NOT_QUARANTINED} AS {kept}, {listed} AS {docs}, {flags}
    FROM a LEFT JOIN e ON e.decision_id = CAST(a.decision_id AS UUID) AND e.newest = 1
),
v AS (SELECT f.*, ({negative}) AS {neg} FROM f)"""
    if documents is not None:
        ctes += f""",
l AS (
    SELECT decision_id, reward, {neg},
        unnest(regexp_split_to_array(trim({docs}), '[\\s,]+')) AS {doc}
    FROM v WHERE {kept} AND {docs} IS NOT NULL
),
du AS (SELECT DISTINCT decision_id, reward, {neg}, {doc} FROM l WHERE {doc} <> ''),
o AS (
    SELECT avg(reward) AS prior, stddev_pop(reward) AS sd
    FROM (SELECT DISTINCT decision_id, reward FROM du WHERE reward IS NOT NULL) x
),
ds AS (
    SELECT {doc}, count(*) AS {uses}, count(reward) AS {rated},
        sum(CASE WHEN {neg} THEN 1 ELSE 0 END) AS {negs}, avg(reward) AS {mean}
    FROM du GROUP BY {doc}
),
dk AS (
    SELECT ds.*, (coalesce({rated} * {mean}, 0) + $prior_uses * o.prior)
        / ({rated} + $prior_uses) AS {score}, o.prior, o.sd
    FROM ds CROSS JOIN o
),
dl AS (
    SELECT {doc}, CAST({uses} AS BIGINT) AS {uses}, CAST({rated} AS BIGINT) AS {rated},
        CAST({negs} AS BIGINT) AS {negs}, {mean}, {score},
        CASE WHEN sd > 0 THEN greatest(CAST(-1 AS DOUBLE), least(CAST(1 AS DOUBLE),
            ({score} - prior) / sd)) ELSE CAST(0 AS DOUBLE) END AS {lift},
        row_number() OVER (ORDER BY {uses} DESC, {doc}) AS {order}
    FROM dk
),
c AS (
    SELECT v.*, coalesce(dl.{score} < $min_reward, FALSE) AS {used}
    FROM v LEFT JOIN dl ON dl.{doc} = v.decision_id
    WHERE v.{prompt} IS NOT NULL AND v.{best} IS NOT NULL
)"""
    else:
        ctes += f""",
c AS (
    SELECT v.*, FALSE AS {used} FROM v
    WHERE v.{prompt} IS NOT NULL AND v.{best} IS NOT NULL
)"""
    ctes += f""",
r AS (
    SELECT c.*, row_number() OVER (ORDER BY reward DESC, ts DESC, decision_id) AS {order}
    FROM c WHERE {eligible}
)"""
    parts = [
        f"""SELECT 'entry' AS {part}, {order}, decision_id, ts, unit, reward, {picked}{prompt},
    {best}, {kept}, {used}, {flag_cols}, {no_docs}
FROM r WHERE {order} <= $size"""
    ]
    if previous:
        ids = ", ".join(f"'{uuid.UUID(str(i))}'" for i in previous)
        parts.append(
            f"""SELECT 'evicted' AS {part},
    row_number() OVER (ORDER BY ts DESC, decision_id) AS {order}, decision_id, ts, unit, reward,
    {picked}CAST(NULL AS VARCHAR) AS {prompt}, CAST(NULL AS VARCHAR) AS {best}, {kept},
    {used}, {flag_cols}, {no_docs}
FROM c WHERE decision_id IN ({ids}) AND NOT ({eligible})"""
        )
    if documents is not None:
        parts.append(
            f"""SELECT 'document' AS {part}, {order}, CAST(NULL AS VARCHAR) AS decision_id,
    CAST(NULL AS TIMESTAMPTZ) AS ts, CAST(NULL AS VARCHAR) AS unit,
    CAST(NULL AS DOUBLE) AS reward, {nulls}CAST(NULL AS VARCHAR) AS {prompt},
    CAST(NULL AS VARCHAR) AS {best}, CAST(NULL AS BOOLEAN) AS {kept},
    CAST(NULL AS BOOLEAN) AS {used}, {no_flags}, {doc_cols}
FROM dl WHERE {order} <= $max_documents"""
        )
    union = "\nUNION ALL\n".join(parts)
    return f"{ctes}\n{union}\nORDER BY {part}, {order}"


# --- building ------------------------------------------------------------------------------------


def threshold(spec: Spec, settings: MemorySettings) -> float:
    """The reward an entry needs: ``settings.min_reward``, else ``[datasets] min_reward``."""
    return spec.datasets.min_reward if settings.min_reward is None else settings.min_reward


def build(
    store: Store,
    spec: Spec,
    settings: MemorySettings,
    as_of: datetime | float | None = None,
    previous: Snapshot | None = None,
    *,
    now: datetime | float | None = None,
) -> Snapshot:
    """The snapshot as of ``as_of`` (default: now), made at ``now`` (default: the wall
    clock); the entries of ``previous`` that are no longer eligible are its evictions."""
    if not isinstance(settings, MemorySettings):
        raise WrongTypeError("settings", f"expected MemorySettings, got {settings!r}")
    end = moment(as_of).astimezone(UTC)
    cut = threshold(spec, settings)
    params: dict[str, Any] = {
        "as_of": end,
        "since": end - timedelta(seconds=settings.window),
        "min_reward": cut,
        "rating_cut": rating_cut(spec),
        "large_edit": LARGE_EDIT,
        "size": settings.size,
    }
    if settings.documents is not None:
        params["prior_uses"] = PRIOR_USES
        params["max_documents"] = settings.max_documents
    before = sorted({e.decision_id for e in previous.entries}) if previous is not None else []
    sql = memory_sql(spec, settings.documents, before)
    rows = store.query(sql, params).to_pylist()
    names = [f.name for f in spec.context]
    part, prompt, best = own_column("part"), own_column("prompt"), own_column("best")
    entries: list[Entry] = []
    evicted: list[Eviction] = []
    documents: dict[str, Document] = {}
    for row in rows:
        if row[part] == "entry":
            entries.append(
                Entry(
                    decision_id=str(row["decision_id"]),
                    unit=row["unit"],
                    input=row[prompt],
                    output=row[best],
                    reward=float(row["reward"]),
                    context={n: row[n] for n in names},
                    ts=moment(row["ts"]).astimezone(UTC),
                )
            )
        elif row[part] == "evicted":
            evicted.append(Eviction(str(row["decision_id"]), row["unit"], _why(row, cut)))
        else:
            found = Document(
                id=str(row[own_column("doc")]),
                uses=int(row[own_column("uses")]),
                rated=int(row[own_column("rated")]),
                negative=int(row[own_column("negatives")]),
                mean=_number(row[own_column("mean")]),
                score=_number(row[own_column("score")]),
                lift=float(row[own_column("lift")]),
            )
            documents[found.id] = found
    return Snapshot(
        id=snapshot_id(entries, documents),
        created_at=moment(now).astimezone(UTC),
        as_of=end,
        min_reward=cut,
        features=tuple(f.name for f in spec.context if f.kind == "categorical"),
        entries=tuple(entries),
        documents=documents,
        evicted=tuple(evicted),
    )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _why(row: Mapping[str, Any], cut: float) -> tuple[str, ...]:
    """Why a previous entry is no longer eligible: the negative-feedback rules it met, then
    ``reward``, ``quarantined`` and ``used``."""
    reasons = [n for n in NEGATIVE_RULES if row[own_column(n)]]
    if row["reward"] is None or row["reward"] < cut:
        reasons.append("reward")
    if not row[own_column("kept")]:
        reasons.append("quarantined")
    if row[own_column("used")]:
        reasons.append("used")
    return tuple(reasons)


# --- versions ------------------------------------------------------------------------------------


def _key(snapshot: str) -> str:
    if not isinstance(snapshot, str) or not _ID.match(snapshot):
        raise InvalidInputError("snapshot", f"{snapshot!r} is not a memory snapshot's id")
    return SNAPSHOT_KEY + snapshot


def versions(store: Store) -> list[str]:
    """The stored versions' ids, oldest first (the last is the current one)."""
    return _ids(store.get_meta(INDEX_KEY))


def _ids(raw: str | None) -> list[str]:
    try:
        found = json.loads(raw) if raw else []
    except ValueError:
        found = []
    if not isinstance(found, list):
        return []
    return [i for i in found if isinstance(i, str) and _ID.match(i)]


def save(store: Store, snapshot: Snapshot, keep: int = KEEP) -> None:
    """Store ``snapshot`` as the current version: its JSON under ``memory.snapshot.<id>``,
    then its id last in ``memory.snapshots`` (atomically, among every process sharing the
    store; an id stored before moves to the end). Versions beyond the ``keep`` newest are
    dropped: their ids leave the list and their values are emptied."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidInputError("keep", f"expected a whole number of at least 1, got {keep!r}")
    key = _key(snapshot.id)
    dropped: list[str] = []

    def claim(old: str | None) -> str:
        nonlocal dropped
        ids = [i for i in _ids(old) if i != snapshot.id] + [snapshot.id]
        dropped = ids[:-keep]
        return json.dumps(ids[-keep:])

    store.set_meta(key, snapshot.to_json())
    store.update_meta(INDEX_KEY, claim)
    for old in dropped:
        store.set_meta(_key(old), "")


def evict(store: Store, snapshot: Snapshot, evicted: Sequence[Eviction]) -> Snapshot:
    """``snapshot`` without the entries ``evicted`` (what a later build found no longer
    eligible), stored again under its id where it stands among the versions (the id names
    the version as it was built, as after :func:`forget`): served snapshots lose an example
    that drew negative feedback at the next cycle, not only at the next snapshot."""
    gone = {e.decision_id for e in evicted}
    kept = tuple(e for e in snapshot.entries if e.decision_id not in gone)
    if len(kept) == len(snapshot.entries):
        return snapshot
    found = replace(snapshot, entries=kept, evicted=(*snapshot.evicted, *evicted))
    store.set_meta(_key(snapshot.id), found.to_json())
    return found


def load(store: Store, snapshot: str) -> Snapshot | None:
    """The stored version ``snapshot`` (an id), or ``None`` when it is not stored (or was
    dropped)."""
    raw = store.get_meta(_key(snapshot))
    return Snapshot.from_json(raw) if raw else None


def current(store: Store) -> Snapshot | None:
    """The current version, or ``None`` before the first :func:`save`."""
    ids = versions(store)
    return load(store, ids[-1]) if ids else None


def refresh(
    store: Store,
    spec: Spec,
    settings: MemorySettings,
    as_of: datetime | float | None = None,
    *,
    now: datetime | float | None = None,
) -> Snapshot:
    """Build the snapshot as of ``as_of`` from the current one (its evictions against it)
    and save it as the current version; returns it."""
    snapshot = build(store, spec, settings, as_of, current(store), now=now)
    save(store, snapshot)
    return snapshot


def forget(store: Store, unit: str) -> int:
    """Remove every entry of ``unit`` (a pseudonym, as stored), its evictions and the
    documents named by those decisions' ids from every stored version; returns how many
    entries were removed. Each version keeps its id."""
    removed = 0
    for found in versions(store):
        key = _key(found)
        raw = store.get_meta(key)
        if not raw:
            continue
        snapshot = Snapshot.from_json(raw)
        gone = {e.decision_id for e in snapshot.entries if e.unit == unit}
        gone |= {e.decision_id for e in snapshot.evicted if e.unit == unit}
        if not gone:
            continue
        entries = tuple(e for e in snapshot.entries if e.unit != unit)
        removed += len(snapshot.entries) - len(entries)
        kept = replace(
            snapshot,
            entries=entries,
            evicted=tuple(e for e in snapshot.evicted if e.unit != unit),
            documents={i: d for i, d in snapshot.documents.items() if i not in gone},
        )
        store.set_meta(key, kept.to_json())
    return removed
