"""The embedded backend: one DuckDB file, written in Arrow batches."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from flywheel.errors import StoreError, StoreLockedError
from flywheel.rules import quote_name
from flywheel.store.base import (
    KEY_GENERATIONS,
    KEYS_SINCE,
    Kept,
    Moved,
    Sink,
    Tables,
    Written,
    check_moved,
    conform,
    every_key_claimed,
    first_claimed,
    key_rotation,
    name_based_ids,
    rotation_statements,
    schema_of,
)

SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
}

# Forward migrations, applied in order; each runs once and is recorded in schema_version.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
        CREATE TABLE IF NOT EXISTS decisions (
            id UUID NOT NULL, ts TIMESTAMPTZ NOT NULL, unit VARCHAR, policy VARCHAR NOT NULL,
            playbook BIGINT, propensity DOUBLE
        );
        CREATE TABLE IF NOT EXISTS signals (
            decision_id UUID NOT NULL, name VARCHAR NOT NULL, value DOUBLE, text VARCHAR,
            ts TIMESTAMPTZ NOT NULL, key VARCHAR, unit VARCHAR
        );
        CREATE TABLE IF NOT EXISTS signal_keys (key VARCHAR PRIMARY KEY);
        CREATE TABLE IF NOT EXISTS edits (
            decision_id UUID NOT NULL, ts TIMESTAMPTZ NOT NULL, unit VARCHAR, draft VARCHAR,
            final VARCHAR, diff VARCHAR, distance DOUBLE
        );
        CREATE OR REPLACE VIEW orphans AS
            SELECT s.* FROM signals s
            WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.id = s.decision_id);
        """,
    ),
)
MIGRATIONS += (
    (
        2,
        """
        CREATE TABLE IF NOT EXISTS playbooks (
            version INTEGER PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            spec_digest VARCHAR NOT NULL, meta VARCHAR NOT NULL, payload BLOB NOT NULL
        );
        """,
    ),
)
MIGRATIONS += (
    (
        3,
        """
        CREATE SEQUENCE IF NOT EXISTS seatbelt_seq;
        CREATE TABLE IF NOT EXISTS quarantine (
            seq BIGINT NOT NULL DEFAULT nextval('seatbelt_seq'), decision_id UUID NOT NULL,
            ts TIMESTAMPTZ NOT NULL, action VARCHAR NOT NULL, rules VARCHAR, actor VARCHAR
        );
        CREATE TABLE IF NOT EXISTS audit (
            seq BIGINT NOT NULL DEFAULT nextval('seatbelt_seq'), ts TIMESTAMPTZ NOT NULL,
            action VARCHAR NOT NULL, reason VARCHAR NOT NULL, detail VARCHAR, actor VARCHAR
        );
        CREATE OR REPLACE VIEW quarantine_state AS
            SELECT decision_id, arg_max(action, seq) AS action, arg_max(rules, seq) AS rules,
                max(ts) AS ts
            FROM quarantine GROUP BY decision_id;
        """,
    ),
)
MIGRATIONS += (
    (
        4,
        """
        CREATE TABLE IF NOT EXISTS decision_keys (id UUID PRIMARY KEY);
        """,
    ),
)
MIGRATIONS += (
    (
        5,
        # signal keys are claimed as their 128-bit MD5 digest (see KEY_DIGEST): a fixed-width
        # index costs a fraction of a text one to insert into and to checkpoint
        """
        CREATE TABLE signal_key_digests (key UUID PRIMARY KEY);
        INSERT INTO signal_key_digests SELECT DISTINCT CAST(md5(key) AS UUID) FROM signal_keys;
        DROP TABLE signal_keys;
        ALTER TABLE signal_key_digests RENAME TO signal_keys;
        """,
    ),
)
MIGRATIONS += (
    (
        6,
        # keys are kept for a deduplication window, in two generations (see key_rotation)
        """
        CREATE TABLE IF NOT EXISTS signal_keys_previous (key UUID PRIMARY KEY);
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
# What ``signal_keys`` holds of a signal's idempotency key: its MD5 digest as a UUID (the same
# in the PostgreSQL store). Two keys are one when their digests are equal: by accident, about
# never (2^-128 a pair); on purpose, only a sender who picks both keys can make it so.
KEY_DIGEST = "CAST(md5({}) AS UUID)"


SET_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


_LOCKS: dict[tuple[str, str], threading.Lock] = {}  # see DuckDBStore.exclusive
_LOCKS_GUARD = threading.Lock()


class DuckDBStore:
    """A DuckDB file (or ``:memory:``). One process may hold a file open for writing."""

    def __init__(self, path: str, tables: Tables, dedup_window: float = 7 * 86400.0) -> None:
        self.url = f"duckdb:///{path}"
        self.path = path
        self._tables = tables
        self._window = dedup_window  # how long a signal's idempotency key is kept, at least
        self._lock = threading.RLock()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(path)
        except duckdb.IOException as err:
            if "lock" in str(err).lower():
                raise StoreLockedError(
                    f"{path} is open in another process (DuckDB allows one writer);"
                    " stop it, or use a PostgreSQL store for several processes"
                ) from None
            raise StoreError(f"cannot open {path}: {err}") from None
        self._migrate()
        since = self.get_meta(KEYS_SINCE)
        if since is None:
            self.set_meta(KEYS_SINCE, repr(time.time()))
        self._since = time.time() if since is None else float(since)

    # --- schema ----------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            con = self._con
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                " applied_at TIMESTAMPTZ DEFAULT now())"
            )
            rows = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()
            current = int(rows[0][0]) if rows else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this Flywheel"
                    f" ({SCHEMA_VERSION}); upgrade Flywheel"
                )
            for version, sql in MIGRATIONS:
                if version > current:
                    con.execute("BEGIN")
                    con.execute(sql)
                    con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
                    con.execute("COMMIT")
            self._add_spec_columns()

    def _add_spec_columns(self) -> None:
        """Add a column for every context feature and knob the table does not have yet."""
        existing = dict(
            self._con.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'decisions'"
            ).fetchall()
        )
        for name in (*self._tables.context, *self._tables.knobs):
            wanted = SQL_TYPES[self._tables.decisions.field(name).type]
            have = existing.get(name)
            if have is None:
                column = quote_name(name)
                self._con.execute(f"ALTER TABLE decisions ADD COLUMN {column} {wanted}")
            elif have != wanted:
                raise StoreError(
                    f"decisions.{name}: stored as {have} but the spec now declares {wanted};"
                    " rename the knob or feature, or use a new store"
                )

    # --- writing ---------------------------------------------------------------------------------

    def write(self, batch: Mapping[str, pa.Table], mark: tuple[str, str] | None = None) -> Written:
        written: dict[str, Kept | None] = {}
        with self._lock:
            con = self._con
            try:
                con.execute("BEGIN")
                for table, given in batch.items():
                    written[table] = None
                    if given.num_rows == 0:
                        continue
                    if table == "signals":
                        written[table] = self._drop_seen_keys(given)
                    elif table == "decisions":
                        written[table] = self._drop_seen_decisions(given)
                    kept = written[table]
                    rows = given if kept is None else given.filter(pa.array(kept))
                    con.register("_batch", rows)
                    try:
                        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _batch")
                    finally:
                        con.unregister("_batch")
                if mark is not None:
                    con.execute(SET_META, list(mark))
                con.execute("COMMIT")
            except duckdb.Error as err:
                con.execute("ROLLBACK")
                raise StoreError(f"write failed, nothing was stored: {err}") from err
        return written

    def _drop_seen_keys(self, rows: pa.Table) -> Kept | None:
        """Claim the signals' keys in the current generation, those of the previous one aside
        (found by a scan of it: a semi-join whose hash table holds the batch's keys)."""
        keys = rows.column("key").combine_chunks()
        if keys.null_count == len(keys):
            return None
        self._rotate_keys()
        digest = KEY_DIGEST.format("value")
        self._con.register("_claims", pa.table({"value": keys}))
        try:
            seen = self._con.sql(
                "SELECT key FROM signal_keys_previous WHERE key IN"
                f" (SELECT {digest} FROM _claims WHERE value IS NOT NULL)"
            ).to_arrow_table()
        finally:
            self._con.unregister("_claims")
        fresh = ""
        if seen.num_rows:
            self._con.register("_seen", seen)
            fresh = f" AND {digest} NOT IN (SELECT CAST(key AS UUID) FROM _seen)"
        try:
            return self._keep_claimed(
                rows,
                keys,
                f"INSERT INTO signal_keys SELECT DISTINCT {digest} FROM _claims"
                f" WHERE value IS NOT NULL{fresh}"
                " ON CONFLICT DO NOTHING RETURNING CAST(key AS VARCHAR)",
                digest=f"CAST({digest} AS VARCHAR)",
            )
        finally:
            if seen.num_rows:
                self._con.unregister("_seen")

    def _rotate_keys(self) -> None:
        """Start a new generation of signal keys when the window has passed (in the write's
        transaction: undone with it)."""
        now = time.time()
        step = key_rotation(self._since, now, self._window)
        if step is None:
            return
        for statement in rotation_statements(step, "CREATE TABLE {} (key UUID PRIMARY KEY)".format):
            self._con.execute(statement)
        self._con.execute(SET_META, [KEYS_SINCE, repr(now)])
        self._since = now

    def _drop_seen_decisions(self, rows: pa.Table) -> Kept | None:
        """Decisions with a name-based id are stored once: their ids go into
        ``decision_keys``, and a row whose id was there before, or repeats in the batch, is
        dropped. Other decisions (random ids) pass untouched."""
        return self._keep_claimed(
            rows,
            name_based_ids(rows),
            "INSERT INTO decision_keys SELECT DISTINCT CAST(value AS UUID) FROM _claims"
            " WHERE value IS NOT NULL ON CONFLICT DO NOTHING RETURNING CAST(id AS VARCHAR)",
        )

    def _keep_claimed(
        self, rows: pa.Table, keys: pa.Array[Any], insert: str, digest: str | None = None
    ) -> Kept | None:
        """Run ``insert … RETURNING`` over the rows' idempotency ``keys`` (as
        ``_claims.value``; null: no key): which rows to keep (those it claimed, and those
        without a key; ``None``: all). ``digest`` is what the claim returns of a key, when
        not the key itself."""
        if keys.null_count == len(keys):
            return None
        self._con.register("_claims", pa.table({"value": keys}))
        try:
            claimed = self._con.sql(insert).to_arrow_table().column(0).combine_chunks()
            if digest is not None and not every_key_claimed(keys, claimed):
                digests = self._con.sql(f"SELECT {digest} FROM _claims").to_arrow_table()
                keys = digests.column(0).combine_chunks()
        finally:
            self._con.unregister("_claims")
        return first_claimed(keys, claimed)

    # --- reading ---------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pa.Table:
        with self._lock:
            try:
                args = dict(params) if isinstance(params, Mapping) else list(params)
                table: pa.Table = self._con.sql(sql, params=args).to_arrow_table()
                return table
            except duckdb.Error as err:
                raise StoreError(f"query failed: {err}") from err

    def forget(self, unit: str, decisions: Sequence[str] = ()) -> dict[str, int]:
        deleted: dict[str, int] = {}
        with self._lock:
            con = self._con
            con.register("_forgotten", pa.table({"id": pa.array(list(decisions), pa.string())}))
            con.execute("BEGIN")
            ids = (
                "SELECT id FROM decisions WHERE unit = $unit"
                " UNION ALL SELECT CAST(id AS UUID) FROM _forgotten"
            )
            con.execute(f"DELETE FROM decision_keys WHERE id IN ({ids})", {"unit": unit})
            for keys in KEY_GENERATIONS:
                con.execute(
                    f"DELETE FROM {keys} WHERE key IN (SELECT {KEY_DIGEST.format('key')}"
                    " FROM signals"
                    f" WHERE key IS NOT NULL AND (unit = $unit OR decision_id IN ({ids})))",
                    {"unit": unit},
                )
            for table in ("signals", "edits"):
                row = con.execute(
                    f"DELETE FROM {table} WHERE unit = $unit OR decision_id IN ({ids}) RETURNING 1",
                    {"unit": unit},
                ).fetchall()
                deleted[table] = len(row)
            con.execute(f"DELETE FROM quarantine WHERE decision_id IN ({ids})", {"unit": unit})
            row = con.execute(
                "DELETE FROM decisions WHERE unit = $unit RETURNING 1", {"unit": unit}
            ).fetchall()
            deleted["decisions"] = len(row)
            con.execute("COMMIT")
            con.unregister("_forgotten")
            if self.path != ":memory:" and any(deleted.values()):
                self._compact()
        return deleted

    def move(self, rows: Mapping[str, str], params: Mapping[str, Any], sink: Sink) -> Moved:
        with self._lock:
            con = self._con
            con.execute("BEGIN")  # one snapshot: what is read is what is deleted
            try:
                taken = {
                    table: conform(
                        con.sql(
                            f"SELECT * FROM {table} WHERE {where}", params=dict(params)
                        ).to_arrow_table(),
                        schema_of(self._tables, table),
                    )
                    for table, where in rows.items()
                }
                key, value = sink(taken)
                moved: Moved = {}
                for table, where in reversed(list(rows.items())):
                    deleted = con.execute(
                        f"DELETE FROM {table} WHERE {where} RETURNING 1", dict(params)
                    ).fetchall()
                    moved[table] = len(deleted)
                check_moved(taken, moved)
                con.execute(SET_META, [key, value])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return moved

    def _compact(self) -> None:
        """Copy the live rows into a fresh file and swap it in.

        DuckDB leaves deleted rows' bytes in freed blocks of the file; a deletion on request must
        remove them from the disk, so the database is rewritten (a fraction of a second per
        million rows) and the old file replaced atomically.
        """
        fresh = f"{self.path}.compact"
        Path(fresh).unlink(missing_ok=True)
        name = self._con.execute("SELECT current_database()").fetchall()[0]
        self._con.execute("ATTACH '" + fresh.replace("'", "''") + "' AS flywheel_compact")
        try:
            self._con.execute(
                f'COPY FROM DATABASE "{name[0] if name else "main"}" TO flywheel_compact'
            )
        finally:
            self._con.execute("DETACH flywheel_compact")
        self._con.close()
        Path(f"{self.path}.wal").unlink(missing_ok=True)
        os.replace(fresh, self.path)
        self._con = duckdb.connect(self.path)

    def publish(self, spec_digest: str, meta: str, payload: bytes) -> int:
        with self._lock:
            con = self._con
            con.execute("BEGIN")
            try:
                row = con.execute(
                    "INSERT INTO playbooks (version, spec_digest, meta, payload)"
                    " SELECT coalesce(max(version), 0) + 1, ?, ?, ? FROM playbooks"
                    " RETURNING version",
                    [spec_digest, meta, payload],
                ).fetchall()[0]
                con.execute("COMMIT")
            except duckdb.Error as err:
                con.execute("ROLLBACK")
                raise StoreError(f"publishing failed, nothing was stored: {err}") from err
        assert row is not None
        return int(row[0])

    def latest_version(self) -> int | None:
        with self._lock:
            row = self._con.execute("SELECT max(version) FROM playbooks").fetchall()[0]
        return None if row is None or row[0] is None else int(row[0])

    def playbook(self, version: int | None = None) -> tuple[int, str, bytes] | None:
        sql = "SELECT version, meta, payload FROM playbooks"
        sql += " WHERE version = ?" if version is not None else " ORDER BY version DESC LIMIT 1"
        with self._lock:
            found = self._con.execute(sql, [version] if version is not None else []).fetchall()
        row = found[0] if found else None
        return None if row is None else (int(row[0]), str(row[1]), bytes(row[2]))

    def playbook_list(self) -> list[tuple[int, Any, str]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT version, created_at, meta FROM playbooks ORDER BY version DESC"
            ).fetchall()
        return [(int(v), c, str(m)) for v, c, m in rows]

    def get_meta(self, key: str) -> str | None:
        row = self.query("SELECT value FROM meta WHERE key = ?", [key]).to_pylist()
        return str(row[0]["value"]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._con.execute(SET_META, [key, value])

    def update_meta(self, key: str, change: Callable[[str | None], str]) -> str:
        with self._lock:  # one process holds the file: the lock serialises every update
            value = change(self.get_meta(key))
            self.set_meta(key, value)
        return value

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        # one process holds the file: a lock per file and name in this process is enough
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault((self.path, name), threading.Lock())
        taken = lock.acquire(blocking=False)
        try:
            yield taken
        finally:
            if taken:
                lock.release()

    def close(self) -> None:
        with self._lock:
            self._con.close()
