"""The store interface and the tables every backend keeps.

Tables (one row per event, never updated in place):

- ``decisions``: id, ts, unit, policy, playbook, propensity, one column per context feature and
  per knob (typed from the spec);
- ``signals``: decision_id, name, value (numbers and booleans), text, ts, key (idempotency), unit;
- ``edits``: decision_id, ts, unit, draft, final, diff, distance;
- ``decision_keys``: the ids of decisions written with a name-based id (UUID version 5),
  so each is stored once;
- ``orphans``: a view of the signals whose decision id is unknown (they stay stored: a decision
  may still arrive from another process);
- ``playbooks``: published playbooks, immutable, one row per version;
- ``quarantine``: the seatbelt's verdicts on decisions (quarantined with the failed rules,
  released, accepted), appended in order; the ``quarantine_state`` view holds each
  decision's latest;
- ``audit``: every halt, rollback, resume and override, with time, reason and who;
- ``meta`` and ``schema_version``: settings and applied migrations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.errors import StoreError
from flywheel.spec import DType, Spec

TIMESTAMP = pa.timestamp("us", tz="UTC")
ARROW_TYPES: dict[DType, pa.DataType] = {
    "text": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}


@dataclass(frozen=True)
class Tables:
    """The Arrow schemas of the event tables for one spec."""

    decisions: pa.Schema
    signals: pa.Schema
    edits: pa.Schema
    context: tuple[str, ...]
    knobs: tuple[str, ...]

    def schema(self, table: str) -> pa.Schema:
        schema: pa.Schema = getattr(self, table)
        return schema

    @property
    def names(self) -> tuple[str, ...]:
        return ("decisions", "signals", "edits")


def tables_for(spec: Spec) -> Tables:
    context = [pa.field(f.name, ARROW_TYPES[f.dtype]) for f in spec.context]
    knobs = [pa.field(k.name, ARROW_TYPES[k.dtype]) for k in spec.knobs]
    decision_fields: list[pa.Field[Any]] = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("ts", TIMESTAMP, nullable=False),
        pa.field("unit", pa.string()),
        pa.field("policy", pa.string(), nullable=False),
        pa.field("playbook", pa.int64()),
        pa.field("propensity", pa.float64()),
        *context,
        *knobs,
    ]
    decisions = pa.schema(decision_fields)
    signal_fields: list[pa.Field[Any]] = [
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("ts", TIMESTAMP, nullable=False),
        pa.field("key", pa.string()),
        pa.field("unit", pa.string()),
    ]
    signals = pa.schema(signal_fields)
    edit_fields: list[pa.Field[Any]] = [
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("ts", TIMESTAMP, nullable=False),
        pa.field("unit", pa.string()),
        pa.field("draft", pa.string()),
        pa.field("final", pa.string()),
        pa.field("diff", pa.string()),
        pa.field("distance", pa.float64()),
    ]
    edits = pa.schema(edit_fields)
    return Tables(
        decisions,
        signals,
        edits,
        tuple(f.name for f in spec.context),
        tuple(k.name for k in spec.knobs),
    )


_QUARANTINE_FIELDS: list[pa.Field[Any]] = [
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("decision_id", pa.string(), nullable=False),
    pa.field("ts", TIMESTAMP, nullable=False),
    pa.field("action", pa.string(), nullable=False),
    pa.field("rules", pa.string()),
    pa.field("actor", pa.string()),
]
QUARANTINE = pa.schema(_QUARANTINE_FIELDS)
"""The seatbelt's verdicts on decisions (the ``quarantine`` table)."""


def schema_of(tables: Tables, table: str) -> pa.Schema:
    """The Arrow schema of an event table (``quarantine`` included)."""
    return QUARANTINE if table == "quarantine" else tables.schema(table)


def conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` with each column the schema names cast to its type (ids as text, times in
    UTC); columns it does not name (from an earlier spec) are kept as they are."""
    for i, name in enumerate(rows.column_names):
        if name in schema.names and rows.schema.field(i).type != schema.field(name).type:
            rows = rows.set_column(i, name, rows.column(i).cast(schema.field(name).type))
    return rows


def check_moved(read: Mapping[str, pa.Table], deleted: Mapping[str, int]) -> None:
    """Raise unless each table lost exactly the rows that were read from it."""
    for table, rows in read.items():
        if deleted.get(table) != rows.num_rows:
            raise StoreError(
                f"{table}: read {rows.num_rows:,} rows to move but {deleted.get(table, 0):,}"
                " matched when deleting; nothing was moved"
            )


def name_based_ids(decisions: pa.Table) -> pa.Array[Any]:
    """Each decision's id, in lower case, when it is name-based (UUID version 5: derived from
    something a sender may send again, so stored once), else null."""
    ids = decisions.column("id").combine_chunks()
    named = pc.equal(pc.utf8_slice_codeunits(ids, 14, 15), pa.scalar("5"))
    lowered: pa.Array[Any] = pc.if_else(named, pc.utf8_lower(ids), pa.scalar(None, pa.string()))
    return lowered


Kept = np.ndarray[Any, np.dtype[np.bool_]]
Written = Mapping[str, Kept | None]
"""What :meth:`Store.write` tells of a batch: for each table given, which of its rows were
stored (``True``) and which were skipped as seen before (``False``); ``None``: all stored."""


def first_claimed(keys: pa.Array[Any], claimed: pa.Array[Any]) -> Kept | None:
    """Which rows to store once the store has claimed ``claimed`` (distinct, each one of the
    rows' keys) among the rows' idempotency ``keys`` (null: a row without one): rows without
    a key, and the first row of each claimed key (a repeat within the batch is not fresh);
    ``None`` when that is every row."""
    if every_key_claimed(keys, claimed):
        return None
    keep = np.array(pc.is_null(keys).to_numpy(zero_copy_only=False), dtype=bool)
    found = pc.index_in(keys, value_set=claimed).fill_null(-1).to_numpy()
    values, first = np.unique(found, return_index=True)  # each value's first row
    keep[first[values >= 0]] = True
    return keep


def keep_first_claimed(rows: pa.Table, keys: pa.Array[Any], claimed: pa.Array[Any]) -> pa.Table:
    """The rows :func:`first_claimed` keeps."""
    keep = first_claimed(keys, claimed)
    return rows if keep is None else rows.filter(pa.array(keep))


KEYS_SINCE = "signal_keys:since"
"""The ``meta`` key holding when the current generation of signal keys began (epoch seconds)."""
KEY_GENERATIONS = ("signal_keys", "signal_keys_previous")


def key_rotation(since: float, now: float, window: float) -> str | None:
    """What the signal keys' generations need at ``now``: ``None`` (nothing), ``"rotate"``
    (the current one, begun at ``since``, is ``window`` old: it becomes the previous one, and
    the previous one is dropped) or ``"clear"`` (both are older than the window).

    A key is claimed in the current generation and checked against both, so it is kept at
    least ``window`` after it was claimed and at most twice that: the duplicate check costs
    what the keys of the last one or two windows cost, however large the store grows."""
    if now - since < window:
        return None
    return "rotate" if now - since < 2 * window else "clear"


def rotation_statements(step: str, create: Callable[[str], str]) -> list[str]:
    """The statements that move the signal keys' generations on as :func:`key_rotation`'s
    ``step`` says; ``create(table)`` creates an empty generation in the store's dialect."""
    current, previous = KEY_GENERATIONS
    moved = (
        [f"ALTER TABLE {current} RENAME TO {previous}"]
        if step == "rotate"
        else [f"DROP TABLE {current}", create(previous)]
    )
    return [f"DROP TABLE {previous}", *moved, create(current)]


def every_key_claimed(keys: pa.Array[Any], claimed: pa.Array[Any]) -> bool:
    """Whether a claim of the distinct ``keys`` took one key per row that has one: then those
    keys were all distinct and all new, and every row is kept (the common case, checked
    without looking at a key)."""
    return len(claimed) == len(keys) - keys.null_count


class Reader(Protocol):
    """What answers Flywheel's read queries: a store, or an engine beside it (Spark)."""

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pa.Table:
        """Run a read-only query (DuckDB's SQL, ``$name`` or ``?`` parameters)."""


Sink = Callable[[Mapping[str, pa.Table]], tuple[str, str]]
"""Where :meth:`Store.move` hands the rows it moves out (see there)."""
Moved = dict[str, int]


class Store(Protocol):
    """What a backend provides. Every backend passes the same conformance tests."""

    url: str

    def write(self, batch: Mapping[str, pa.Table], mark: tuple[str, str] | None = None) -> Written:
        """Append event rows to their tables in one transaction: all of it or none of it;
        ``mark`` (key, value) is set in ``meta`` in the same transaction (a journal records
        there what the store holds).

        Signals whose idempotency ``key`` was stored before (or repeats within the batch) are
        skipped. Decisions whose id is a name-based UUID (version 5: derived from something a
        sender may send again, such as an OTLP span) are idempotent the same way: one whose id
        was stored before (or repeats within the batch) is skipped; other decisions are
        appended as given. Returns once the rows are durable, telling which were stored
        (:data:`Written`), so a sender can be told exactly what was new.
        """

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pa.Table:
        """Run a read-only query and return the rows. Queries are written once, in DuckDB's
        SQL with ``?`` or ``$name`` parameters; other backends translate them."""

    def forget(self, unit: str, decisions: Sequence[str] = ()) -> dict[str, int]:
        """Delete every row of a (pseudonymised) unit, in every table (idempotency keys of its
        signals and decisions included), and every row about the ``decisions`` given (the
        unit's decisions kept elsewhere: the warm tier); return rows deleted."""

    def move(self, rows: Mapping[str, str], params: Mapping[str, Any], sink: Sink) -> Moved:
        """Move rows out of the store, all of them or none: in one transaction (one snapshot),
        read each table's rows where its condition holds (``rows``: table -> condition in
        DuckDB's SQL over the table's columns and ``$``-``params``), hand them to ``sink``,
        which makes them durable elsewhere and returns a (key, value) for ``meta``; then delete
        exactly those rows (tables in reverse order) and set the key. If ``sink`` raises, or a
        deletion does not match what was read, nothing changes. Returns the rows moved."""

    def publish(self, spec_digest: str, meta: str, payload: bytes) -> int:
        """Store a playbook as the next version, atomically; return its version."""

    def latest_version(self) -> int | None:
        """The newest playbook version (a cheap query), or ``None``."""

    def playbook(self, version: int | None = None) -> tuple[int, str, bytes] | None:
        """A playbook's version, metadata (JSON) and payload; the newest by default."""

    def playbook_list(self) -> list[tuple[int, Any, str]]:
        """Every playbook's version, creation time and metadata, newest first."""

    def get_meta(self, key: str) -> str | None:
        """A stored setting, or ``None``."""

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting, replacing any previous value."""

    def update_meta(self, key: str, change: Callable[[str | None], str]) -> str:
        """Replace a setting with ``change(old value)`` atomically, also against other
        processes sharing the store (no update is lost); return the new value."""

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """Try to take the lock ``name``, held by one process (and thread) at a time among
        all those sharing the store, without waiting: the context's value says whether it
        was taken (a learn cycle runs only where it was)."""

    def close(self) -> None:
        """Release the store. Writes already acknowledged stay durable."""
