"""Training sets from what an AI product was asked, what it answered and how that went.

Each decision of an AI product may carry an ``input`` and an ``output`` (built-in text
signals: :meth:`flywheel.Wheel.decide` with ``input``, :meth:`flywheel.Wheel.output`), a
reward from its other signals, and edits of its draft. Three sets follow TRL's conventions:

- **SFT** (:func:`sft`): ``{"messages": [{"role": "user", "content": input},
  {"role": "assistant", "content": completion}]}`` for each decision with an input and a
  reward of at least ``min_reward``, whose completion is the final text of its latest edit
  when it was edited, else its output.
- **Preferences** (:func:`preferences`, for DPO): ``{"prompt", "chosen", "rejected"}``, from
  two sources. Edits: each decision with an input whose latest edit changed the draft gives
  the final text over the draft. Ratings: among the decisions with the same input (the exact
  text, as stored) that have an output and a reward, the output of the highest-rewarded one
  over that of the lowest-rewarded one (ties: the earliest decision), when both the rewards
  and the outputs differ; one pair per input at most.
- **KTO** (:func:`kto`): ``{"prompt", "completion", "label"}`` for each decision with an
  input, an output and a reward; ``label`` is whether the reward is at least ``min_reward``.

A decision's output is its ``output`` signal, else the draft of its latest edit. Inputs,
outputs and rewards are those of the aligned rows (:mod:`flywheel.align`: signals inside the
attribution window, as of ``as_of``); edits count up to ``as_of``. Rows the seatbelt has
quarantined are left out, and a forgotten unit's rows are no longer in the store: no set
holds them. Texts are as stored, so redacted per ``[privacy]``.

Each set is one SQL statement over the aligned rows and the ``edits`` table, run by the
store (DuckDB, PostgreSQL, and both tiers), and sorted by decision time and id: the same
``as_of`` on the same store gives the same rows in the same order. Its :class:`Lineage` says
how many rows were read and kept, by which filters, for which spec and moment.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from flywheel.align import moment, stamp
from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.errors import InvalidInputError, WrongTypeError
from flywheel.rules import quote_name
from flywheel.seatbelt import breaker
from flywheel.spec import Spec
from flywheel.store import Store

Kind = Literal["sft", "preferences", "kto"]
KINDS: tuple[Kind, ...] = get_args(Kind)
READY_KEY = "datasets.ready"
"""The ``meta`` key holding which sets had reached their minimum at the last check."""

# what each set asks of a decision's unit of material (the columns of ``u`` below)
_SFT = "kept AND prompt IS NOT NULL AND best IS NOT NULL AND reward >= $min_reward"
_KTO = "kept AND prompt IS NOT NULL AND answer IS NOT NULL AND reward IS NOT NULL"
_EDITED = "kept AND prompt IS NOT NULL AND final IS NOT NULL AND final <> draft"
_RATED = "kept AND prompt IS NOT NULL AND answer IS NOT NULL AND reward IS NOT NULL"
_PAIRED = "b.top = 1 AND b.reward > w.reward AND b.answer <> w.answer"
_QUARANTINED = "left out"


@dataclass(frozen=True)
class Lineage:
    """Where a training set came from: the rows read (the decisions made by ``as_of``), the
    rows that passed the ``filters`` (each a row of the set), for which spec (its digest and
    name) and moment, made when; for preferences, the pairs from each source."""

    kind: Kind
    rows_read: int
    rows_eligible: int
    filters: Mapping[str, Any]
    spec_digest: str
    spec_name: str
    as_of: str
    created_at: str
    sources: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "rows_read": self.rows_read,
            "rows_eligible": self.rows_eligible,
            "filters": dict(self.filters),
            "spec_digest": self.spec_digest,
            "spec_name": self.spec_name,
            "as_of": self.as_of,
            "created_at": self.created_at,
        }
        if self.sources:
            out["sources"] = dict(self.sources)
        return out


@dataclass(frozen=True)
class TrainingSet:
    """A training set: its rows (dicts in TRL's columns, in a fixed order) and lineage."""

    kind: Kind
    rows: list[dict[str, Any]]
    lineage: Lineage

    def jsonl(self) -> bytes:
        """The rows as JSON Lines: one object a line, UTF-8, keys in a fixed order, nothing
        that depends on when it was written."""
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows).encode()

    def write(self, path: str | Path) -> Path:
        """Write the rows to ``path`` (JSON Lines) and the lineage, with the file's SHA-256,
        to ``path`` + ``.lineage.json`` beside it; returns the lineage's path. Each file is
        written whole or not at all (a temporary file renamed over it)."""
        target = Path(path)
        data = self.jsonl()
        lineage = lineage_path(target)
        described = {
            **self.lineage.as_dict(),
            "format": "jsonl",
            "file": target.name,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace(target, data)
        _replace(lineage, (json.dumps(described, indent=2, ensure_ascii=False) + "\n").encode())
        return lineage


def lineage_path(path: Path) -> Path:
    """Where the lineage of a set written to ``path`` goes: beside it, ``FILE.lineage.json``."""
    return path.with_name(path.name + ".lineage.json")


def _replace(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- the statements ------------------------------------------------------------------------------


def _units_sql(spec: Spec) -> str:
    """The CTEs every set reads: ``u``, one row per decision made by ``$as_of``, with its
    input (``prompt``), output (``answer``: the ``output`` signal, else the latest edit's
    draft), the latest edit's ``draft`` and ``final``, what it should have said (``best``:
    that final, else the output), its ``reward``, and whether it is ``kept`` (not
    quarantined); ``r``, the rated outputs ranked per input (``top`` = 1: the
    highest-rewarded, ``bottom`` = 1: the lowest; ties to the earliest decision)."""
    _text_signals(spec)
    prompt, output = quote_name("input"), quote_name("output")
    return f"""
WITH a AS ({aligned_rows_sql(spec)}),
e AS (
    SELECT decision_id, draft, final,
        row_number() OVER (
            PARTITION BY decision_id ORDER BY ts DESC, final DESC, draft DESC) AS newest
    FROM edits WHERE ts <= $as_of
),
u AS (
    SELECT a.decision_id, a.ts, a.{prompt} AS prompt, coalesce(a.{output}, e.draft) AS answer,
        e.draft, e.final, coalesce(e.final, a.{output}) AS best, a.reward,
        {NOT_QUARANTINED} AS kept
    FROM a LEFT JOIN e ON e.decision_id = CAST(a.decision_id AS UUID) AND e.newest = 1
),
r AS (
    SELECT decision_id, ts, prompt, answer, reward,
        row_number() OVER (PARTITION BY prompt ORDER BY reward DESC, ts, decision_id) AS top,
        row_number() OVER (PARTITION BY prompt ORDER BY reward, ts, decision_id) AS bottom
    FROM u WHERE {_RATED}
)"""


def _set_sql(spec: Spec, kind: Kind) -> str:
    """One set's statement: ``rows_read`` on every row, then the set's columns in order (a
    single row of NULLs beside ``rows_read`` when the set is empty)."""
    if kind == "sft":
        rows = f"""SELECT decision_id, ts, 'decision' AS source, prompt, best AS completion
    FROM u WHERE {_SFT}"""
    elif kind == "kto":
        rows = f"""SELECT decision_id, ts, 'decision' AS source, prompt, answer AS completion,
        reward >= $min_reward AS label
    FROM u WHERE {_KTO}"""
    else:
        rows = f"""SELECT decision_id, ts, 'edit' AS source, prompt, final AS chosen,
        draft AS rejected
    FROM u WHERE {_EDITED}
    UNION ALL
    SELECT b.decision_id, b.ts, 'rating' AS source, b.prompt, b.answer AS chosen,
        w.answer AS rejected
    FROM r b JOIN r w ON w.prompt = b.prompt AND w.bottom = 1
    WHERE {_PAIRED}"""
    return f"""{_units_sql(spec)},
x AS ({rows}),
n AS (SELECT count(*) AS rows_read FROM u)
SELECT n.rows_read, x.* FROM n LEFT JOIN x ON TRUE
ORDER BY x.ts, x.decision_id, x.source"""


def _counts_sql(spec: Spec) -> str:
    """How many rows the SFT set and the preference set would hold, in one statement."""
    return f"""{_units_sql(spec)}
SELECT (SELECT count(*) FROM u WHERE {_SFT}) AS sft,
    (SELECT count(*) FROM u WHERE {_EDITED})
    + (SELECT count(*) FROM r b JOIN r w ON w.prompt = b.prompt AND w.bottom = 1
        WHERE {_PAIRED}) AS preferences"""


def _text_signals(spec: Spec) -> None:
    """Sets need ``input`` and ``output`` as the text signals they are built in as."""
    for name in ("input", "output"):
        found = spec.signals.get(name)
        if found is None or found.kind != "text":
            raise InvalidInputError(
                name,
                "is not a text signal in this spec (a knob, feature or numeric signal of that"
                " name takes the built-in one's place): training sets need it",
            )


# --- the sets ------------------------------------------------------------------------------------


def sft(
    store: Store,
    spec: Spec,
    as_of: datetime | float | None = None,
    min_reward: float | None = None,
    *,
    now: datetime | float | None = None,
) -> TrainingSet:
    """Supervised fine-tuning rows, as chat messages: each decision with an input and a reward
    of at least ``min_reward`` (default ``[datasets] min_reward``), answered by its edit's
    final text, else its output."""
    return build(store, spec, "sft", as_of, min_reward, now=now)


def preferences(
    store: Store,
    spec: Spec,
    as_of: datetime | float | None = None,
    *,
    now: datetime | float | None = None,
) -> TrainingSet:
    """Preference pairs (DPO's ``prompt``, ``chosen``, ``rejected``): edits (final over
    draft, where they differ) and, per input, the highest-rewarded output over the lowest."""
    return build(store, spec, "preferences", as_of, now=now)


def kto(
    store: Store,
    spec: Spec,
    as_of: datetime | float | None = None,
    min_reward: float | None = None,
    *,
    now: datetime | float | None = None,
) -> TrainingSet:
    """KTO rows (``prompt``, ``completion``, ``label``): each rewarded output, labelled by
    whether its reward is at least ``min_reward`` (default ``[datasets] min_reward``)."""
    return build(store, spec, "kto", as_of, min_reward, now=now)


def build(
    store: Store,
    spec: Spec,
    kind: Kind,
    as_of: datetime | float | None = None,
    min_reward: float | None = None,
    *,
    now: datetime | float | None = None,
) -> TrainingSet:
    """The set of ``kind`` as of ``as_of`` (default: now), made at ``now`` (default: the
    wall clock); ``min_reward`` is for SFT and KTO (default ``[datasets] min_reward``)."""
    if kind not in KINDS:
        raise InvalidInputError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    threshold = _threshold(spec, min_reward)
    if kind == "preferences" and min_reward is not None:
        raise InvalidInputError("min_reward", "is for sft and kto; pairs need no threshold")
    when = moment(as_of)
    params: dict[str, Any] = {"as_of": when}
    if kind != "preferences":
        params["min_reward"] = threshold
    found = store.query(_set_sql(spec, kind), params).to_pylist()
    read = int(found[0]["rows_read"]) if found else 0
    chosen = [row for row in found if row["decision_id"] is not None]
    rows = [_shaped(kind, row) for row in chosen]
    sources: dict[str, int] = {}
    if kind == "preferences":
        sources = {
            "edits": sum(1 for row in chosen if row["source"] == "edit"),
            "ratings": sum(1 for row in chosen if row["source"] == "rating"),
        }
    lineage = Lineage(
        kind=kind,
        rows_read=read,
        rows_eligible=len(rows),
        filters=_filters(kind, threshold),
        spec_digest=spec.digest,
        spec_name=spec.name,
        as_of=stamp(when),
        created_at=stamp(now),
        sources=sources,
    )
    return TrainingSet(kind, rows, lineage)


def _threshold(spec: Spec, given: float | None) -> float:
    if given is None:
        return spec.datasets.min_reward
    if isinstance(given, bool) or not isinstance(given, int | float):
        raise WrongTypeError("min_reward", f"expected a number, got {given!r}")
    if not math.isfinite(given):
        raise InvalidInputError("min_reward", f"{given!r} is not a finite number")
    return float(given)


def _shaped(kind: Kind, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row in TRL's columns for its kind."""
    if kind == "sft":
        return {
            "messages": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"]},
            ]
        }
    if kind == "kto":
        return {"prompt": row["prompt"], "completion": row["completion"], "label": row["label"]}
    return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}


def _filters(kind: Kind, threshold: float) -> dict[str, Any]:
    """What a row of ``kind`` had to be, in words and figures (the lineage's ``filters``)."""
    if kind == "sft":
        return {
            "input": "present",
            "completion": "the final text of the latest edit, else the output",
            "min_reward": threshold,
            "quarantined": _QUARANTINED,
        }
    if kind == "kto":
        return {
            "input": "present",
            "completion": "the output (else the draft of the latest edit)",
            "reward": "present",
            "label": f"reward >= {threshold:g}",
            "min_reward": threshold,
            "quarantined": _QUARANTINED,
        }
    return {
        "input": "present",
        "edits": "the latest edit of each decision, where final differs from draft:"
        " chosen = final, rejected = draft",
        "ratings": "per input, among decisions with an output and a reward: the output of the"
        " highest reward (chosen) over that of the lowest (rejected; ties to the earliest"
        " decision), where the rewards and the outputs differ",
        "quarantined": _QUARANTINED,
    }


# --- ready to tune -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    """How many rows the SFT set and pairs the preference set hold now, against the
    ``[datasets]`` minimums."""

    sft: int
    preferences: int
    sft_min: int
    preferences_min: int

    @property
    def reached(self) -> dict[str, bool]:
        return {
            "sft": self.sft >= self.sft_min,
            "preferences": self.preferences >= self.preferences_min,
        }


def readiness(
    store: Store, spec: Spec, as_of: datetime | float | None = None, min_reward: float | None = None
) -> Readiness:
    """The sizes of the SFT and preference sets as of ``as_of`` (one statement)."""
    params = {"as_of": moment(as_of), "min_reward": _threshold(spec, min_reward)}
    row = store.query(_counts_sql(spec), params).to_pylist()[0]
    sizes = spec.datasets
    return Readiness(int(row["sft"]), int(row["preferences"]), sizes.sft_min, sizes.preferences_min)


def ready(store: Store, spec: Spec, now: datetime) -> list[dict[str, Any]]:
    """Record a ``ready`` entry in the audit trail for each set that has reached its
    ``[datasets]`` minimum since the last check ("ready to tune: 512 SFT rows (sft_min is
    500)"), once per crossing among every process sharing the store (a set that falls below
    its minimum, after a ``forget``, is told again when it reaches it again). Returns those
    entries as events for the ``[alerts]`` webhook."""
    counts = readiness(store, spec, now)
    reached = counts.reached
    state = json.dumps(reached, sort_keys=True)
    if store.get_meta(READY_KEY) == state:
        return []
    crossed: list[str] = []

    def claim(old: str | None) -> str:
        nonlocal crossed
        before = _state(old)
        crossed = [kind for kind, now_ready in reached.items() if now_ready and not before[kind]]
        return state

    store.update_meta(READY_KEY, claim)
    events = []
    for kind in crossed:
        if kind == "sft":
            reason = f"ready to tune: {counts.sft:,} SFT rows (sft_min is {counts.sft_min:,})"
        else:
            reason = (
                f"ready to tune: {counts.preferences:,} preference pairs"
                f" (preferences_min is {counts.preferences_min:,})"
            )
        detail = {
            "set": kind,
            "rows": counts.sft if kind == "sft" else counts.preferences,
            "min": counts.sft_min if kind == "sft" else counts.preferences_min,
            "as_of": stamp(now),
            "command": f"flywheel export {kind} -f jsonl -o {kind}.jsonl --as-of {stamp(now)}",
        }
        breaker.audit(store, now, "ready", reason, detail, actor="datasets")
        events.append(
            {"event": "ready", "ts": now, "reason": reason, "detail": detail, "actor": "datasets"}
        )
    return events


def _state(raw: str | None) -> dict[str, bool]:
    """Which sets had reached their minimum, from the ``meta`` value (none, if unreadable)."""
    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        found = {}
    if not isinstance(found, dict):
        found = {}
    return {kind: bool(found.get(kind)) for kind in ("sft", "preferences")}
