"""The server backend: PostgreSQL through psycopg 3, bulk writes by ``COPY``.

Several processes may share one database: every write is one transaction, idempotency keys are
claimed with ``INSERT … ON CONFLICT DO NOTHING`` (so two writers never both store a key),
playbook versions are numbered under a lock, and migrations run under an advisory lock.

The rest of Flywheel writes its queries once, in DuckDB's SQL; :func:`translate` turns them
into PostgreSQL's with sqlglot (plus what :func:`flywheel.store.dialects.rewrite` adds) and
caches the result.

URL: ``postgresql://user@host:port/database?schema=name`` (every other query parameter is
passed to libpq; the schema, ``flywheel`` by default, is created when missing).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from pgpq import ArrowToPostgresBinaryEncoder
from psycopg import sql as pgsql
from psycopg.types.numeric import FloatLoader
from psycopg.types.string import TextLoader
from sqlglot import exp

from flywheel.errors import StoreError
from flywheel.store.base import (
    KEY_GENERATIONS,
    KEYS_SINCE,
    TIMESTAMP,
    Kept,
    Moved,
    Sink,
    Tables,
    Written,
    check_moved,
    conform,
    first_claimed,
    key_rotation,
    name_based_ids,
    rotation_statements,
    schema_of,
)
from flywheel.store.dialects import rewrite

SQL_TYPES = {
    pa.string(): "text",
    pa.int64(): "bigint",
    pa.float64(): "double precision",
    pa.bool_(): "boolean",
}

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE IF NOT EXISTS decisions (
            id uuid NOT NULL, ts timestamptz NOT NULL, unit text, policy text NOT NULL,
            playbook bigint, propensity double precision
        );
        CREATE INDEX IF NOT EXISTS decisions_id ON decisions (id);
        CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
        CREATE INDEX IF NOT EXISTS decisions_unit ON decisions (unit);
        CREATE TABLE IF NOT EXISTS signals (
            decision_id uuid NOT NULL, name text NOT NULL, value double precision, text text,
            ts timestamptz NOT NULL, key text, unit text
        );
        CREATE INDEX IF NOT EXISTS signals_decision ON signals (decision_id);
        CREATE INDEX IF NOT EXISTS signals_unit ON signals (unit);
        CREATE TABLE IF NOT EXISTS signal_keys (key text PRIMARY KEY);
        CREATE TABLE IF NOT EXISTS decision_keys (id uuid PRIMARY KEY);
        CREATE TABLE IF NOT EXISTS edits (
            decision_id uuid NOT NULL, ts timestamptz NOT NULL, unit text, draft text,
            final text, diff text, distance double precision
        );
        CREATE INDEX IF NOT EXISTS edits_decision ON edits (decision_id);
        CREATE OR REPLACE VIEW orphans AS
            SELECT s.* FROM signals s
            WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.id = s.decision_id);
        CREATE TABLE IF NOT EXISTS playbooks (
            version integer PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(),
            spec_digest text NOT NULL, meta text NOT NULL, payload bytea NOT NULL
        );
        CREATE SEQUENCE IF NOT EXISTS seatbelt_seq;
        CREATE TABLE IF NOT EXISTS quarantine (
            seq bigint NOT NULL DEFAULT nextval('seatbelt_seq'), decision_id uuid NOT NULL,
            ts timestamptz NOT NULL, action text NOT NULL, rules text, actor text
        );
        CREATE INDEX IF NOT EXISTS quarantine_decision ON quarantine (decision_id, seq);
        CREATE TABLE IF NOT EXISTS audit (
            seq bigint NOT NULL DEFAULT nextval('seatbelt_seq'), ts timestamptz NOT NULL,
            action text NOT NULL, reason text NOT NULL, detail text, actor text
        );
        CREATE OR REPLACE VIEW quarantine_state AS
            SELECT DISTINCT ON (decision_id) decision_id, action, rules, ts
            FROM quarantine ORDER BY decision_id, seq DESC;
        """,
    ),
)
MIGRATIONS += (
    (
        2,
        # signal keys are claimed as their 128-bit MD5 digest (see KEY_DIGEST): a fixed-width
        # index costs a fraction of a text one
        """
        CREATE TABLE signal_key_digests (key uuid PRIMARY KEY);
        INSERT INTO signal_key_digests SELECT DISTINCT md5(key)::uuid FROM signal_keys;
        DROP TABLE signal_keys;
        ALTER TABLE signal_key_digests RENAME TO signal_keys;
        """,
    ),
)
MIGRATIONS += (
    (
        3,
        # keys are kept for a deduplication window, in two generations (see key_rotation)
        """
        CREATE TABLE IF NOT EXISTS signal_keys_previous (key uuid PRIMARY KEY);
        """,
    ),
)
MIGRATIONS += (
    (
        4,
        # online updates read the signals recorded since the served version was learned
        """
        CREATE INDEX IF NOT EXISTS signals_ts ON signals (ts);
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
_LOCK_ID = 0x466C7977  # the advisory lock that serialises migrations ("Flyw")
_PARAM = re.compile(r"__FW_PARAM_(\d+)__")  # upper case: no knob, feature or signal matches
_PG_ARROW: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int2": pa.int64(),
    "int4": pa.int64(),
    "int8": pa.int64(),
    "float4": pa.float64(),
    "float8": pa.float64(),
    "numeric": pa.float64(),
    "text": pa.string(),
    "varchar": pa.string(),
    "uuid": pa.string(),
    "timestamptz": TIMESTAMP,
    "bytea": pa.binary(),
    "_float8": pa.list_(pa.float64()),
    "_numeric": pa.list_(pa.float64()),
}


_STAGED = "value"  # the one column of the tables claims are staged in
# Per connection: the keys a write claims are copied here first, then claimed in one INSERT
_STAGING = f"""
    CREATE TEMP TABLE claim_signal_keys ({_STAGED} text) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE claim_decision_ids ({_STAGED} uuid) ON COMMIT DELETE ROWS;
"""

# The Arrow type binary COPY writes for each PostgreSQL type a table has
_COPY_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "double precision": pa.float64(),
    "text": pa.string(),
    "timestamp with time zone": TIMESTAMP,
    "bytea": pa.binary(),
}

# What ``signal_keys`` holds of a signal's idempotency key: its MD5 digest as a uuid, as in the
# DuckDB store.
KEY_DIGEST = "md5({})::uuid"
SET_META = "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


class PostgresStore:
    """A schema in a PostgreSQL database, shared safely by several processes."""

    def __init__(self, url: str, tables: Tables, dedup_window: float = 7 * 86400.0) -> None:
        self._tables = tables
        self._window = dedup_window  # how long a signal's idempotency key is kept, at least
        self._lock = threading.RLock()
        self._exclusive: dict[str, threading.Lock] = {}  # see exclusive
        conninfo, self.schema = _split_url(url)
        self.url = url
        try:
            self._con = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as err:
            raise StoreError(f"cannot connect to {_redact(url)}: {err}".strip()) from None
        self._con.adapters.register_loader("numeric", FloatLoader)
        self._con.adapters.register_loader("uuid", TextLoader)
        self._migrate()
        try:
            self._con.execute(_STAGING)
        except psycopg.Error as err:
            self._con.close()
            raise StoreError(
                f"cannot create the temporary tables writes stage keys in (the role needs the"
                f" TEMPORARY privilege on the database): {err}".strip()
            ) from None
        self._types: dict[str, dict[str, str]] = {}  # see _column_types
        self._since = self._keys_since()

    @property
    def _schema_id(self) -> pgsql.Identifier:
        return pgsql.Identifier(self.schema)

    # --- schema ----------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create the schema and apply migrations, one process at a time (concurrent
        ``CREATE … IF NOT EXISTS`` statements can still collide in PostgreSQL)."""
        with self._lock, self._con.transaction():
            con = self._con
            con.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_ID])
            con.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._schema_id))
            con.execute(pgsql.SQL("SET search_path TO {}").format(self._schema_id))
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
                " applied_at timestamptz DEFAULT now())"
            )
            row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"schema {self.schema} has version {current}, newer than this Flywheel"
                    f" ({SCHEMA_VERSION}); upgrade Flywheel"
                )
            for version, statements in MIGRATIONS:
                if version > current:
                    con.execute(statements)
                    con.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])
            self._add_spec_columns()

    def _add_spec_columns(self) -> None:
        existing: dict[str, str] = dict(
            self._con.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = 'decisions'",
                [self.schema],
            ).fetchall()
        )
        for name in (*self._tables.context, *self._tables.knobs):
            wanted = SQL_TYPES[self._tables.decisions.field(name).type]
            have = existing.get(name)
            if have is None:
                self._con.execute(
                    pgsql.SQL("ALTER TABLE decisions ADD COLUMN {} {}").format(
                        pgsql.Identifier(name), pgsql.SQL(wanted)
                    )
                )
            elif have != wanted:
                raise StoreError(
                    f"decisions.{name}: stored as {have} but the spec now declares {wanted};"
                    " rename the knob or feature, or use a new store"
                )

    # --- writing ---------------------------------------------------------------------------------

    def write(self, batch: Mapping[str, pa.Table], mark: tuple[str, str] | None = None) -> Written:
        written: dict[str, Kept | None] = {}
        with self._lock:
            try:
                if "signals" in batch and key_rotation(self._since, time.time(), self._window):
                    self._rotate_keys()
                with self._con.transaction():
                    for table, given in batch.items():
                        written[table] = None
                        if given.num_rows == 0:
                            continue
                        if table == "signals":
                            written[table] = self._drop_seen_keys(given)
                        elif table == "decisions":
                            written[table] = self._drop_seen_decisions(given)
                        kept = written[table]
                        self._copy(table, given if kept is None else given.filter(pa.array(kept)))
                    if mark is not None:
                        self._con.execute(SET_META, list(mark))
            except (psycopg.Error, ValueError) as err:
                raise StoreError(f"write failed, nothing was stored: {err}") from err
        return written

    def _copy(self, table: str, rows: pa.Table, label: str | None = None) -> None:
        """Append Arrow rows with ``COPY … FROM STDIN``, in PostgreSQL's binary format (encoded
        from Arrow in Rust by pgpq): the server parses no text, the client builds no CSV.
        Errors name a column as ``table.column``, or as ``label`` when given (a staged claim)."""
        if rows.num_rows == 0:
            return
        statement = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, rows.column_names))
        )
        types = self._column_types(table)
        names = {n: label or f"{table}.{n}" for n in rows.column_names}
        with self._con.cursor().copy(statement) as copy:
            for part in _binary_copy(rows, types, names):
                copy.write(part)

    def _column_types(self, table: str) -> dict[str, str]:
        """The type of each column of ``table``, read from the catalog once."""
        if table not in self._types:
            self._types[table] = dict(
                self._con.execute(
                    "SELECT attname, atttypid::regtype::text FROM pg_attribute"
                    " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                    [table],
                ).fetchall()
            )
        return self._types[table]

    def _claim(
        self, stage: str, claim: str, values: pa.Array[Any], label: str
    ) -> pa.Array[Any] | None:
        """Stage the non-null ``values`` with ``COPY``, then run ``claim`` (an ``INSERT … ON
        CONFLICT DO NOTHING RETURNING`` of them, as ``claimed``). None when it took one value a
        row (all distinct, all new: the common case, answered without sending them back), else
        the values it took, as text."""
        given = values.drop_null()
        self._copy(stage, pa.table({_STAGED: given}), label)
        row = self._con.execute(
            f"WITH claimed AS ({claim}) SELECT count(*),"
            " CASE WHEN count(*) <> %s THEN array_agg(claimed.value::text) END FROM claimed",
            [len(given)],
        ).fetchone()
        assert row is not None
        return None if row[0] == len(given) else pa.array(row[1] or [], pa.string())

    def _drop_seen_keys(self, rows: pa.Table) -> Kept | None:
        keys = rows.column("key").combine_chunks()
        if keys.null_count == rows.num_rows:
            return None
        digest = KEY_DIGEST.format(f"s.{_STAGED}")
        claimed = self._claim(
            "claim_signal_keys",
            f"INSERT INTO signal_keys SELECT DISTINCT {digest} FROM claim_signal_keys s"
            f" WHERE NOT EXISTS (SELECT 1 FROM signal_keys_previous p WHERE p.key = {digest})"
            " ON CONFLICT DO NOTHING RETURNING key AS value",
            keys,
            "signals.key",
        )
        if claimed is None:
            return None
        digests = self._con.execute(
            f"SELECT {KEY_DIGEST.format('k')} FROM unnest(%s::text[]) WITH ORDINALITY AS u(k, n)"
            " ORDER BY n",
            [keys.to_pylist()],
        ).fetchall()
        return first_claimed(pa.array([d for (d,) in digests], pa.string()), claimed)

    def _keys_since(self) -> float:
        """When the current generation of signal keys began (recorded now if never)."""
        with self._con.transaction():
            self._con.execute(
                "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                [KEYS_SINCE, repr(time.time())],
            )
            row = self._con.execute("SELECT value FROM meta WHERE key = %s", [KEYS_SINCE])
            found = row.fetchone()
        assert found is not None
        return float(found[0])

    def _rotate_keys(self) -> None:
        """Start a new generation of signal keys (see key_rotation), once among all the
        processes sharing the store: under a lock that waits for the claims in progress, and
        holds back new ones until the generations have moved."""
        with self._con.transaction():
            self._con.execute(
                "LOCK TABLE signal_keys, signal_keys_previous IN ACCESS EXCLUSIVE MODE"
            )
            row = self._con.execute("SELECT value FROM meta WHERE key = %s", [KEYS_SINCE])
            found = row.fetchone()
            since = float(found[0]) if found else 0.0
            now = time.time()
            step = key_rotation(since, now, self._window)
            if step is not None:
                # a constraint name of its own: the renamed table keeps its index's name
                stamp = int(now * 1e6)
                for statement in rotation_statements(
                    step,
                    lambda table: (
                        f"CREATE TABLE {table} (key uuid,"
                        f" CONSTRAINT {table}_{stamp} PRIMARY KEY (key))"
                    ),
                ):
                    self._con.execute(statement)
                self._con.execute(SET_META, [KEYS_SINCE, repr(now)])
                since = now
        self._since = since

    def _drop_seen_decisions(self, rows: pa.Table) -> Kept | None:
        """Decisions with a name-based id are stored once (see the Store contract)."""
        ids = name_based_ids(rows)
        if ids.null_count == len(ids):
            return None
        claimed = self._claim(
            "claim_decision_ids",
            f"INSERT INTO decision_keys SELECT DISTINCT {_STAGED} FROM claim_decision_ids"
            " ON CONFLICT DO NOTHING RETURNING id AS value",
            ids,
            "decisions.id",
        )
        return None if claimed is None else first_claimed(ids, claimed)

    # --- reading ---------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pa.Table:
        try:
            statement, names = translate(sql)
        except sqlglot.errors.SqlglotError as err:
            raise StoreError(f"query failed: cannot translate it for PostgreSQL: {err}") from err
        named = isinstance(params, Mapping)
        args = [params[name] for name in names] if named else list(params)  # type: ignore[call-overload]
        with self._lock:
            try:
                cursor = self._con.execute(statement, args)
                rows = cursor.fetchall() if cursor.description else []
                description = cursor.description or []
            except psycopg.Error as err:
                raise StoreError(f"query failed: {err}".strip()) from err
        return _to_arrow(self._con, description, rows)

    def forget(self, unit: str, decisions: Sequence[str] = ()) -> dict[str, int]:
        deleted: dict[str, int] = {}
        ids = (
            "SELECT id FROM decisions WHERE unit = %(unit)s"
            " UNION ALL SELECT unnest(%(ids)s::uuid[])"
        )
        args = {"unit": unit, "ids": list(decisions)}
        with self._lock:
            with self._con.transaction():
                con = self._con
                con.execute(f"DELETE FROM decision_keys WHERE id IN ({ids})", args)
                for keys in KEY_GENERATIONS:
                    con.execute(
                        f"DELETE FROM {keys} WHERE key IN (SELECT {KEY_DIGEST.format('key')}"
                        " FROM signals WHERE key IS NOT NULL"
                        f" AND (unit = %(unit)s OR decision_id IN ({ids})))",
                        args,
                    )
                for table in ("signals", "edits"):
                    cursor = con.execute(
                        f"DELETE FROM {table} WHERE unit = %(unit)s OR decision_id IN ({ids})",
                        args,
                    )
                    deleted[table] = cursor.rowcount
                con.execute(f"DELETE FROM quarantine WHERE decision_id IN ({ids})", args)
                cursor = con.execute("DELETE FROM decisions WHERE unit = %(unit)s", args)
                deleted["decisions"] = cursor.rowcount
            if any(deleted.values()):
                # Dead rows stay in their pages until vacuumed; vacuum now so the space (and
                # the bytes, as pages are reused) goes. VACUUM FULL rewrites the tables.
                self._con.execute(
                    "VACUUM signals, edits, quarantine, decisions, signal_keys,"
                    " signal_keys_previous, decision_keys"
                )
        return deleted

    def move(self, rows: Mapping[str, str], params: Mapping[str, Any], sink: Sink) -> Moved:
        with self._lock:
            try:
                with self._con.transaction():
                    # one snapshot: what is read is what is deleted
                    self._con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    taken = {
                        table: conform(
                            self.query(f"SELECT * FROM {table} WHERE {where}", params),
                            schema_of(self._tables, table),
                        )
                        for table, where in rows.items()
                    }
                    key, value = sink(taken)
                    moved: Moved = {}
                    for table, where in reversed(list(rows.items())):
                        statement, names = translate(f"DELETE FROM {table} WHERE {where}")
                        cursor = self._con.execute(statement, [params[n] for n in names])
                        moved[table] = cursor.rowcount
                    check_moved(taken, moved)
                    self._con.execute(SET_META, [key, value])
            except psycopg.Error as err:
                raise StoreError(f"moving rows failed, nothing was moved: {err}") from err
        return moved

    def publish(self, spec_digest: str, meta: str, payload: bytes) -> int:
        with self._lock:
            try:
                with self._con.transaction():
                    self._con.execute("LOCK TABLE playbooks IN SHARE ROW EXCLUSIVE MODE")
                    row = self._con.execute(
                        "INSERT INTO playbooks (version, spec_digest, meta, payload)"
                        " SELECT coalesce(max(version), 0) + 1, %s, %s, %s FROM playbooks"
                        " RETURNING version",
                        [spec_digest, meta, payload],
                    ).fetchone()
            except psycopg.Error as err:
                raise StoreError(f"publishing failed, nothing was stored: {err}") from err
        assert row is not None
        return int(row[0])

    def latest_version(self) -> int | None:
        with self._lock:
            row = self._con.execute("SELECT max(version) FROM playbooks").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def playbook(self, version: int | None = None) -> tuple[int, str, bytes] | None:
        statement = "SELECT version, meta, payload FROM playbooks"
        if version is None:
            statement += " ORDER BY version DESC LIMIT 1"
            args: list[Any] = []
        else:
            statement += " WHERE version = %s"
            args = [version]
        with self._lock:
            row = self._con.execute(statement, args).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), bytes(row[2]))

    def playbook_list(self) -> list[tuple[int, Any, str]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT version, created_at, meta FROM playbooks ORDER BY version DESC"
            ).fetchall()
        return [(int(v), c, str(m)) for v, c, m in rows]

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._con.execute("SELECT value FROM meta WHERE key = %s", [key]).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._con.execute(SET_META, [key, value])

    def update_meta(self, key: str, change: Callable[[str | None], str]) -> str:
        with self._lock, self._con.transaction():
            self._con.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{self.schema}:meta:{key}"]
            )
            value = change(self.get_meta(key))
            self.set_meta(key, value)
        return value

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        # a session advisory lock is re-entrant within a session, so threads of this process
        # take a lock of their own first; the lock is the schema's (stores in other schemas of
        # the database do not wait on it)
        with self._lock:
            local = self._exclusive.setdefault(name, threading.Lock())
        if not local.acquire(blocking=False):
            yield False
            return
        try:
            with self._lock:
                row = self._con.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s))", [f"{self.schema}:exclusive:{name}"]
                ).fetchone()
            taken = bool(row and row[0])
            try:
                yield taken
            finally:
                if taken:
                    with self._lock:
                        self._con.execute(
                            "SELECT pg_advisory_unlock(hashtext(%s))",
                            [f"{self.schema}:exclusive:{name}"],
                        )
        finally:
            local.release()

    def close(self) -> None:
        with self._lock:
            self._con.close()


# --- translation ---------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def translate(duckdb_sql: str) -> tuple[str, tuple[str, ...]]:
    """DuckDB SQL as PostgreSQL SQL with ``%s`` placeholders, and the parameter names in the
    order the placeholders appear (an empty name for a positional ``?``)."""
    tree = rewrite(sqlglot.parse_one(duckdb_sql, read="duckdb"), "postgres")
    names: list[str] = []

    def mark(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder):
            names.append(str(node.name or ""))
            return exp.var(f"__FW_PARAM_{len(names) - 1}__")
        return node

    text = tree.transform(mark).sql(dialect="postgres").replace("%", "%%")
    order: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        order.append(names[int(match.group(1))])
        return "%s"

    return _PARAM.sub(placeholder, text), tuple(order)


# --- results -------------------------------------------------------------------------------------


def _to_arrow(
    con: psycopg.Connection[Any], description: Sequence[Any], rows: list[Any]
) -> pa.Table:
    arrays = []
    names = []
    for i, column in enumerate(description):
        info = con.adapters.types.get(column.type_code)
        name = "" if info is None else info.name
        if info is not None and column.type_code == info.array_oid:
            name = f"_{name}"
        arrow_type = _PG_ARROW.get(name)
        values = [row[i] for row in rows]
        arrays.append(pa.array(values, type=arrow_type))
        names.append(column.name)
    return pa.Table.from_arrays(arrays, names=names)


def _binary_copy(
    rows: pa.Table, types: Mapping[str, str], names: Mapping[str, str]
) -> Iterator[bytes]:
    """``rows`` in ``COPY``'s binary format: each column as the Arrow type whose encoding its
    PostgreSQL type (``types``) reads, a ``uuid`` as its 16 bytes. An error names a column by
    ``names``."""
    columns: list[pa.Array[Any] | pa.ChunkedArray[Any]] = []
    for name, column in zip(rows.column_names, rows.columns, strict=True):
        where = names[name]
        wanted = types.get(name)
        if wanted is None:
            raise ValueError(f"{where}: no such column in the database")
        if wanted == "uuid":
            columns.append(_uuid_bytes(column, where))
        elif wanted not in _COPY_TYPES:
            raise ValueError(f"{where}: cannot write a column of type {wanted}")
        elif column.type != _COPY_TYPES[wanted]:
            columns.append(column.cast(_COPY_TYPES[wanted]))
        else:
            columns.append(column)
    rows = pa.Table.from_arrays(columns, names=rows.column_names)
    encoder = ArrowToPostgresBinaryEncoder(rows.schema)
    yield encoder.write_header()
    for batch in rows.to_batches():
        yield encoder.write_batch(batch)
    yield encoder.finish()


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
_DIGITS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])
_BLANK_UUID = "00000000-0000-0000-0000-000000000000"


def _uuid_bytes(column: pa.ChunkedArray[Any] | pa.Array[Any], name: str) -> pa.Array[Any]:
    """UUIDs written ``8-4-4-4-12`` in hex as 16-byte values (nulls kept), decoded in numpy."""
    given: pa.Array[Any] = (
        column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    )
    filled: pa.Array[Any] = given.fill_null(_BLANK_UUID) if given.null_count else given
    strings = pa.concat_arrays([filled.cast(pa.string())])  # offsets from zero
    n = len(strings)
    buffers = [memoryview(b or b"") for b in strings.buffers()]
    offsets = np.frombuffer(buffers[1], np.int32, n + 1)
    if n and (offsets[-1] != 36 * n or np.any(np.diff(offsets) != 36)):
        raise ValueError(f"{name}: expected UUIDs written 8-4-4-4-12 in hex")
    text = np.frombuffer(buffers[2], np.uint8, 36 * n).reshape(n, 36)
    nibbles = _HEX[text[:, _DIGITS]]
    if np.any(nibbles == 255) or np.any(text[:, [8, 13, 18, 23]] != ord("-")):
        raise ValueError(f"{name}: expected UUIDs written 8-4-4-4-12 in hex")
    raw = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).tobytes()  # in row order
    values = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw)])
    if given.null_count:
        values = pc.if_else(pc.is_valid(given), values, pa.scalar(None, pa.binary(16)))
    return values


def _split_url(url: str) -> tuple[str, str]:
    """libpq's connection URL and the schema (the ``schema`` query parameter)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), "flywheel")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def _redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
