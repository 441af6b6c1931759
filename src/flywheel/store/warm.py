"""Storage tiers: recent rows hot in the store, older ones warm in Parquet files, read as one.

``archive`` moves the decisions of a day (with their signals, edits and seatbelt verdicts) to
``{url}/{store}/{table}/day=YYYY-MM-DD/{batch}.parquet`` (``{store}``: this store's own
folder, so several stores may share a location), one day per transaction of the hot store:

1. the day's rows are read in one snapshot and written to new files, made durable;
2. in the same transaction, exactly those rows are deleted from the hot store and the
   *manifest* (the ``meta`` key :data:`MANIFEST`: the files that hold rows) gains the files.

A file the manifest does not list holds nothing the store counts: a ``kill -9`` before the
commit leaves the rows hot and an unlisted file (removed by the next archive), after it the
rows warm and listed. Nothing is lost and nothing is counted twice.

:class:`Tiered` is the store the rest of Flywheel sees: every query that reads an event table
reads it hot and warm as one, in DuckDB (the hot DuckDB store itself; beside a PostgreSQL store, an
in-process DuckDB over the hot rows it reads), and ``forget`` reaches both tiers.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from flywheel.errors import StoreError
from flywheel.rules import quote_literal
from flywheel.store.base import Moved, Sink, Store, Tables, Written

ARCHIVED = ("decisions", "signals", "edits", "quarantine")
"""The tables whose rows move to the warm tier, a decision with everything about it."""
MANIFEST = "warm.manifest"
"""The ``meta`` key listing the warm tier's files (see :class:`Manifest`)."""
LOCK = "archive"  # the exclusive lock archiving and forgetting in the warm tier take
WAIT = 600.0  # how long forget waits for an archive running elsewhere

VIEWS = {  # the hot store's views, over the tiers' union (``{quarantine}``: its relation)
    "quarantine_state": "SELECT decision_id, arg_max(action, seq) AS action,"
    " arg_max(rules, seq) AS rules, max(ts) AS ts FROM {quarantine} GROUP BY decision_id",
    "orphans": "SELECT s.* FROM {signals} s"
    " WHERE NOT EXISTS (SELECT 1 FROM {decisions} d WHERE d.id = s.decision_id)",
}
_IDS = {"decisions": "id"}  # each table's UUID column (the others': decision_id)


@dataclass(frozen=True)
class Manifest:
    """What the warm tier holds: its location, its files per table (paths under ``url``),
    the moment before which every decision has been archived, and the folder under ``url``
    that is this store's own (``store``: several stores may share a location; each writes,
    and removes unlisted files, only in its own)."""

    url: str
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    through: str | None = None
    store: str | None = None

    @classmethod
    def load(cls, raw: str | None) -> Manifest | None:
        if not raw:
            return None
        data = json.loads(raw)
        files = {t: tuple(paths) for t, paths in data.get("files", {}).items()}
        return cls(data["url"], files, data.get("through"), data.get("store"))

    def dump(self) -> str:
        files = {t: list(paths) for t, paths in self.files.items() if paths}
        return json.dumps(
            {"url": self.url, "files": files, "through": self.through, "store": self.store}
        )

    def paths(self, table: str) -> tuple[str, ...]:
        return self.files.get(table, ())

    def changed(self, added: Mapping[str, Sequence[str]], removed: Sequence[str] = ()) -> Manifest:
        gone = set(removed)
        files = {
            t: tuple(p for p in (*self.paths(t), *added.get(t, ())) if p not in gone)
            for t in {*self.files, *added}
        }
        return replace(self, files=files)

    @property
    def empty(self) -> bool:
        return not any(self.files.values())


@dataclass(frozen=True)
class Archived:
    """What one ``archive`` moved: rows per table, the days, and the files written."""

    rows: dict[str, int]
    days: int
    files: int
    url: str


class Tiered:
    """A hot store and its warm tier, seen as one store (see the module's text)."""

    def __init__(self, hot: Store, tables: Tables, url: str | None = None) -> None:
        self.hot = hot
        self.url = hot.url
        self._tables = tables
        self._configured = url  # where the spec says the warm tier is

    # --- the warm tier ---------------------------------------------------------------------------

    def manifest(self) -> Manifest | None:
        return Manifest.load(self.hot.get_meta(MANIFEST))

    def tiers(self) -> dict[str, Any] | None:
        """Where the rows are, once some were archived: the warm tier's location, files and
        the moment before which every decision is warm, and the decisions still hot."""
        manifest = self.manifest()
        if manifest is None or manifest.empty:
            return None
        hot = self.hot.query("SELECT count(*) AS n FROM decisions").column("n")[0].as_py()
        return {
            "url": manifest.url,
            "files": sum(len(p) for p in manifest.files.values()),
            "warm_before": manifest.through,
            "hot_decisions": int(hot or 0),
        }

    def warm_files(self, table: str, manifest: Manifest | None = None) -> list[str]:
        """The full paths (or URLs) of ``table``'s warm files."""
        manifest = manifest if manifest is not None else self.manifest()
        if manifest is None:
            return []
        return [_join(manifest.url, p) for p in manifest.paths(table)]

    def archive(
        self,
        before: datetime,
        url: str | None = None,
        progress: Callable[[date, Moved], None] | None = None,
    ) -> Archived:
        """Move every decision made before ``before`` (and its signals, edits and verdicts)
        to the warm tier at ``url`` (default: the spec's, or where it already is), a day at a
        time; see the module's text for why a stop at any moment loses nothing."""
        with self._locked() as taken:
            if not taken:
                raise StoreError("another process is archiving or forgetting; try again later")
            manifest = self._target(url)
            fs, root = _filesystem(manifest.url)
            self._sweep(manifest, fs, root)
            if manifest != self.manifest():  # where files go is known before one is written
                self.hot.set_meta(MANIFEST, manifest.dump())
            days = self.hot.query(
                "SELECT DISTINCT CAST(timezone('UTC', ts) AS DATE) AS day FROM decisions"
                " WHERE ts < $before ORDER BY day",
                {"before": before},
            ).column("day")
            total: dict[str, int] = dict.fromkeys(ARCHIVED, 0)
            files = 0
            for day in [d for d in days.to_pylist() if d is not None]:
                manifest, moved, written = self._archive_day(manifest, fs, root, day, before)
                files += written
                for table, n in moved.items():
                    total[table] += n
                if progress is not None:
                    progress(day, moved)
            if not manifest.empty:  # what arrived about warm decisions since they moved
                today = before.date()
                manifest, late, written = self._move(
                    manifest, fs, root, _late_rows(), {"before": before}, today, None
                )
                files += written
                for table, n in late.items():
                    total[table] += n
            if not manifest.empty and _later(before, manifest.through):
                manifest = replace(manifest, through=before.isoformat())
                self.hot.set_meta(MANIFEST, manifest.dump())  # every decision before it is warm
            return Archived(total, len(days), files, manifest.url)

    def _archive_day(
        self, manifest: Manifest, fs: pafs.FileSystem, root: str, day: date, before: datetime
    ) -> tuple[Manifest, Moved, int]:
        """Move one day's decisions (up to ``before``) and everything about them; return
        the manifest as committed, the rows moved and the files written."""
        lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
        hi = min(lo + timedelta(days=1), before)
        return self._move(manifest, fs, root, _day_rows(), {"lo": lo, "hi": hi}, day, hi)

    def _move(
        self,
        manifest: Manifest,
        fs: pafs.FileSystem,
        root: str,
        conditions: Mapping[str, str],
        params: Mapping[str, Any],
        day: date,
        through: datetime | None,
    ) -> tuple[Manifest, Moved, int]:
        """Move the rows ``conditions`` select (in one transaction of the hot store) to new
        files in the folder of ``day``; ``through``: every decision before it is now warm."""
        batch = f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}"
        written: dict[str, list[str]] = {}
        committed = manifest

        def sink(rows: Mapping[str, pa.Table]) -> tuple[str, str]:
            nonlocal committed
            for table, part in rows.items():
                if part.num_rows:
                    path = f"{manifest.store}/{table}/day={day.isoformat()}/{batch}.parquet"
                    _write_durably(fs, root, path, part)
                    written[table] = [path]
            later = through is not None and _later(through, manifest.through)
            mark = through.isoformat() if later and through else manifest.through
            committed = replace(manifest.changed(written), through=mark)
            return MANIFEST, committed.dump()

        moved = self.hot.move(conditions, params, sink)
        return committed, moved, len(written)

    def _target(self, url: str | None) -> Manifest:
        manifest = self.manifest()
        wanted = url or self._configured or (manifest.url if manifest else None)
        if wanted is None:
            raise StoreError(
                "storage.archive.url: no warm tier is set; add [storage] archive = {url = ...}"
                " to the spec, or give --to"
            )
        if manifest is None or manifest.empty:
            if manifest is not None and manifest.url != wanted:  # a first archive stopped there
                self._sweep(manifest, *_filesystem(manifest.url))
            store = manifest.store if manifest is not None and manifest.store else uuid.uuid4().hex
            return Manifest(wanted, {}, manifest.through if manifest else None, store[:12])
        if wanted != manifest.url:
            raise StoreError(
                f"storage.archive.url: the warm tier already holds rows at {manifest.url};"
                f" archive there, not to {wanted}"
            )
        if not manifest.store:  # files listed by hand: this store's own go in a folder of its own
            return replace(manifest, store=uuid.uuid4().hex[:12])
        return manifest

    def _sweep(self, manifest: Manifest, fs: pafs.FileSystem, root: str) -> int:
        """Remove the files the manifest does not list: what an archive or a forget that
        stopped half-way wrote (under the lock, so none is being written now)."""
        if not manifest.store:  # files laid out by hand: nothing here is known to be ours
            return 0
        listed = {p for t in ARCHIVED for p in manifest.paths(t)}
        removed = 0
        for table in ARCHIVED:
            folder = f"{root}/{manifest.store}/{table}"
            selector = pafs.FileSelector(folder, allow_not_found=True, recursive=True)
            for info in fs.get_file_info(selector):
                relative = info.path[len(root) + 1 :]
                if info.type == pafs.FileType.File and relative not in listed:
                    fs.delete_file(info.path)
                    removed += 1
        return removed

    @contextmanager
    def _locked(self, wait: float = 0.0) -> Iterator[bool]:
        deadline = time.monotonic() + wait
        while True:
            with self.hot.exclusive(LOCK) as taken:
                if taken or time.monotonic() >= deadline:
                    yield taken
                    return
            time.sleep(0.05)

    # --- reading ---------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pa.Table:
        if not events_read(sql):
            return self.hot.query(sql, params)
        while True:  # an archive that commits meanwhile moves rows: read again
            manifest = self.manifest()
            if manifest is None or manifest.empty:
                return self.hot.query(sql, params)
            try:
                result = self._query_tiers(sql, params, manifest)
            except StoreError:
                if self.manifest() != manifest:
                    continue  # a forget replaced files meanwhile
                raise
            if self.manifest() == manifest:
                return result

    def _query_tiers(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any],
        manifest: Manifest,
    ) -> pa.Table:
        from flywheel.store.duckdb import DuckDBStore

        if isinstance(self.hot, DuckDBStore):
            return self.hot.query(self._unioned(sql, manifest, ""), params)
        # another hot store: DuckDB over the hot rows it reads
        con = duckdb.connect()
        try:
            for table in tables_read(sql):
                con.register(f"hot_{table}", self.hot.query(f"SELECT * FROM {table}"))
            args = dict(params) if isinstance(params, Mapping) else list(params)
            try:
                rows: pa.Table = con.sql(
                    self._unioned(sql, manifest, "hot_"), params=args
                ).to_arrow_table()
                return rows
            except duckdb.Error as err:
                raise StoreError(f"query failed: {err}") from err
        finally:
            con.close()

    def _unioned(self, sql: str, manifest: Manifest, prefix: str) -> str:
        """``sql`` with each event table (and view over one) read from both tiers; other
        tables from ``{prefix}{name}``."""
        relations = {t: self._relation(t, manifest, prefix) for t in ARCHIVED}
        for view, body in VIEWS.items():
            relations[view] = body.format(**{t: f"({r})" for t, r in relations.items()})

        def swap(node: exp.Expression) -> exp.Expression:
            if not isinstance(node, exp.Table) or not _stored(node, ctes):
                return node
            name = node.name
            if name in relations:
                body = sqlglot.parse_one(relations[name], read="duckdb")
                return exp.Subquery(
                    this=body, alias=exp.TableAlias(this=exp.to_identifier(node.alias_or_name))
                )
            if prefix:
                return exp.Table(
                    this=exp.to_identifier(prefix + name), alias=node.args.get("alias")
                )
            return node

        tree = sqlglot.parse_one(sql, read="duckdb")
        ctes = {c.alias for c in tree.find_all(exp.CTE)}
        return tree.transform(swap).sql(dialect="duckdb")

    def _relation(self, table: str, manifest: Manifest, prefix: str) -> str:
        uid = _IDS.get(table, "decision_id")
        hot = f"SELECT * REPLACE (CAST({uid} AS UUID) AS {uid}) FROM {prefix}{table}"
        files = self.warm_files(table, manifest)
        if not files:
            return hot
        listed = ", ".join(quote_literal(f) for f in files)
        return (
            f"{hot} UNION ALL BY NAME SELECT * REPLACE (CAST({uid} AS UUID) AS {uid})"
            f" FROM read_parquet([{listed}], union_by_name = true, hive_partitioning = false)"
        )

    # --- deleting --------------------------------------------------------------------------------

    def forget(self, unit: str, decisions: Sequence[str] = ()) -> dict[str, int]:
        """Delete a unit's rows from both tiers: warm files holding any are rewritten without
        them (and the old ones removed), then the hot store forgets the unit and every row
        about its decisions, hot or warm (a late signal of a warm decision is hot). Under the
        archive lock, so no archive moves the unit's rows meanwhile. Counts of the warm
        tier's rows are under ``warm.{table}``."""
        with self._locked(wait=WAIT) as taken:
            if not taken:
                raise StoreError("forget: an archive is still running after 10 minutes; retry")
            manifest = self.manifest()
            if manifest is None or manifest.empty:
                return self.hot.forget(unit, decisions)
            ids = self.query(
                "SELECT DISTINCT CAST(id AS VARCHAR) AS id FROM decisions WHERE unit = $unit",
                {"unit": unit},
            ).column("id")
            warm = self._forget_warm(manifest, unit, ids)
            deleted = self.hot.forget(unit, [*decisions, *map(str, ids.to_pylist())])
        return {**deleted, **{f"warm.{t}": n for t, n in warm.items()}}

    def _forget_warm(
        self, manifest: Manifest, unit: str, ids: pa.ChunkedArray[Any]
    ) -> dict[str, int]:
        fs, root = _filesystem(manifest.url)
        self._sweep(manifest, fs, root)
        counts = dict.fromkeys(ARCHIVED, 0)
        added: dict[str, list[str]] = {}
        removed: list[str] = []
        for table in ARCHIVED:
            for path in manifest.paths(table):
                rows = pq.read_table(f"{root}/{path}", filesystem=fs)
                gone = _belongs(rows, table, unit, ids)
                n = int(pc.sum(gone).as_py() or 0)
                if not n:
                    continue
                counts[table] += n
                removed.append(path)
                kept = rows.filter(pc.invert(gone))
                if kept.num_rows:
                    fresh = f"{path.removesuffix('.parquet')}-{uuid.uuid4().hex[:8]}.parquet"
                    _write_durably(fs, root, fresh, kept)
                    added.setdefault(table, []).append(fresh)
        if removed:
            self.hot.set_meta(MANIFEST, manifest.changed(added, removed).dump())
            for path in removed:  # no longer listed: remove the bytes too
                fs.delete_file(f"{root}/{path}")
        return counts

    # --- the rest is the hot store's ---------------------------------------------------------

    def write(self, batch: Mapping[str, pa.Table], mark: tuple[str, str] | None = None) -> Written:
        return self.hot.write(batch, mark)

    def move(self, rows: Mapping[str, str], params: Mapping[str, Any], sink: Sink) -> Moved:
        return self.hot.move(rows, params, sink)

    def publish(self, spec_digest: str, meta: str, payload: bytes) -> int:
        return self.hot.publish(spec_digest, meta, payload)

    def latest_version(self) -> int | None:
        return self.hot.latest_version()

    def playbook(self, version: int | None = None) -> tuple[int, str, bytes] | None:
        return self.hot.playbook(version)

    def playbook_list(self) -> list[tuple[int, Any, str]]:
        return self.hot.playbook_list()

    def get_meta(self, key: str) -> str | None:
        return self.hot.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.hot.set_meta(key, value)

    def update_meta(self, key: str, change: Callable[[str | None], str]) -> str:
        return self.hot.update_meta(key, change)

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        return self.hot.exclusive(name)

    def close(self) -> None:
        self.hot.close()


def _later(moment: datetime, than: str | None) -> bool:
    return than is None or moment > datetime.fromisoformat(than)


def _day_rows() -> dict[str, str]:
    """The rows of the decisions made in ``[$lo, $hi)``, and of everything about them."""
    decided = "SELECT id FROM decisions WHERE ts >= $lo AND ts < $hi"
    return {
        "decisions": "ts >= $lo AND ts < $hi",
        **dict.fromkeys(ARCHIVED[1:], f"decision_id IN ({decided})"),
    }


def _late_rows() -> dict[str, str]:
    """Rows older than ``$before`` about decisions the hot store no longer holds (their
    results, edits and verdicts that came after the decisions moved)."""
    return dict.fromkeys(
        ARCHIVED[1:], "ts < $before AND decision_id NOT IN (SELECT id FROM decisions)"
    )


def _belongs(
    rows: pa.Table, table: str, unit: str, ids: pa.ChunkedArray[Any]
) -> pa.ChunkedArray[Any]:
    """Which of a warm file's rows are the unit's: its own, or about its decisions."""
    key = rows.column(_IDS.get(table, "decision_id"))
    known = ids.combine_chunks() if ids.num_chunks else pa.array([], pa.string())
    about = pc.is_in(key, value_set=known)
    if "unit" in rows.column_names:
        about = pc.or_kleene(about, pc.equal(rows.column("unit"), pa.scalar(unit)))
    return cast("pa.ChunkedArray[Any]", pc.fill_null(about, pa.scalar(False)))


@lru_cache(maxsize=1024)
def events_read(sql: str) -> frozenset[str]:
    """The event tables and views over them that ``sql`` reads (parsed once per text)."""
    names = {t.name for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table)}
    return frozenset(names & {*ARCHIVED, *VIEWS})


@lru_cache(maxsize=1024)
def tables_read(sql: str) -> tuple[str, ...]:
    """Every table ``sql`` reads, the event tables under its views included."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    ctes = {c.alias for c in tree.find_all(exp.CTE)}
    names = {t.name for t in tree.find_all(exp.Table) if _stored(t, ctes)}
    if names & set(VIEWS):
        names |= set(ARCHIVED)
    return tuple(sorted(names - set(VIEWS)))


def _stored(node: exp.Table, ctes: set[str]) -> bool:
    """Whether a table in a query names one the store holds: unqualified or in its own
    schema (``main``), and not a ``WITH`` part of the query (inside a ``WITH`` part's own body,
    its name is the table it shadows)."""
    if not node.name or node.catalog or node.db not in ("", "main"):
        return False
    if node.name not in ctes:
        return True
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.CTE) and parent.alias == node.name:
            return True
        parent = parent.parent
    return False


def _filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """The file system of a local path or an object-store URL, and the root path on it."""
    if "://" not in url:
        os.makedirs(url, exist_ok=True)
        return pafs.LocalFileSystem(), os.path.abspath(url).rstrip("/")
    fs, root = pafs.FileSystem.from_uri(url)
    return fs, root.rstrip("/")


def _join(url: str, path: str) -> str:
    return f"{url.rstrip('/')}/{path}"


def _write_durably(fs: pafs.FileSystem, root: str, path: str, rows: pa.Table) -> None:
    """Write a Parquet file that survives a crash once this returns (an object store's PUT
    is durable when it returns; a local file and its folder are synced)."""
    full = f"{root}/{path}"
    fs.create_dir(full.rsplit("/", 1)[0], recursive=True)
    pq.write_table(rows, full, filesystem=fs, compression="zstd")
    if isinstance(fs, pafs.LocalFileSystem):
        for target, flags in ((full, os.O_RDONLY), (os.path.dirname(full), os.O_RDONLY)):
            fd = os.open(target, flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
