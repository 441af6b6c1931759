"""The write-ahead journal: a local append-only file that makes rows durable before the store
has them, so a server can answer after a sub-millisecond ``fdatasync`` instead of a commit.

A :class:`Journal` is the :class:`~flywheel.collect.writer.BufferedWriter`'s sink: each batch
of rows the writer hands it is appended as one record and synced before
:meth:`Journal.append` returns (the writer already coalesces concurrent flushes, so one sync
serves every request waiting on it: a group commit). A background thread copies journaled
rows into the store in large transactions, at most ``max_delay`` seconds after they arrive,
and every such transaction also records, in the store's ``meta`` table, the last journal
record it holds. Opening a journal replays every record past that mark, so a crash between
the journal and the store loses nothing and stores nothing twice.

On disk: a folder holding ``journal.id`` (this journal's identity, the key of its mark in the
store), ``lock`` (held with ``flock`` while a process uses the folder) and numbered segments
``<n>.wal``. A record is ``length, crc32, sequence`` (little-endian ``u32, u32,
u64``) and then the batch's ``(table, row)`` items in MessagePack (a few microseconds for a
decision, where an Arrow table of one row costs a hundred; the store gets Arrow tables of
thousands of rows). An item may also hold many rows of its table at once, as
:class:`~flywheel.collect.writer.Rows`: ``(table, ext)`` where the MessagePack extension
(type ``ROWS_EXT``) is their Arrow IPC stream, as a trace worker made it; the server writes
those bytes as they came, and the store reads them as Arrow, in their place among the rows.
``columns.json`` names each table's columns, so rows journaled under an earlier spec are read
back in their own columns: a spec that added some gets them empty, one that dropped a column
the rows hold is refused. Segments are rotated whenever the store takes what is journaled; a
segment is deleted once the store holds all of it. A record cut short by a crash (never
acknowledged: the sync had not returned) ends the last segment written to and is ignored;
damage anywhere else is refused.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import msgpack
import pyarrow as pa

from flywheel.collect.writer import Entry, Rows, count_rows, to_tables
from flywheel.errors import FlywheelError, StoreError, StoreLockedError
from flywheel.store import Store
from flywheel.store.base import Written

HEADER = struct.Struct("<IIQ")  # payload length, crc32 of the payload, sequence number
SUFFIX = ".wal"
ROWS_EXT = 1  # the MessagePack extension type of Rows: an Arrow IPC stream of one table's rows


def _pack_rows(value: object) -> msgpack.ExtType:
    if type(value) is Rows:
        return msgpack.ExtType(ROWS_EXT, value.ipc)
    raise TypeError(f"a journal record cannot hold {type(value).__name__}")


def _unpack_ext(code: int, data: bytes) -> Rows:
    if code != ROWS_EXT:
        raise ValueError(f"unknown MessagePack extension {code}")
    return Rows.read(data)


class Journal:
    """A write-ahead journal in ``folder`` in front of ``store`` (see the module's docs)."""

    def __init__(
        self,
        folder: str | Path,
        store: Store,
        schemas: Mapping[str, pa.Schema],
        *,
        max_delay: float = 1.0,
        apply_rows: int = 50_000,
        max_pending: int = 1_000_000,
        stored: Callable[[list[Entry], Written], None] | None = None,
        urgent: Callable[[list[Entry]], bool] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self._store = store
        self._stored = stored  # told what the store wrote of each batch it took
        self._urgent = urgent  # whether someone waits for a batch: stored at once, not later
        self._schemas = dict(schemas)
        self._max_delay = max_delay
        self._apply_rows = apply_rows
        self._max_pending = max(max_pending, apply_rows)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock(self.folder)
        self.mark_key = f"journal:{_identity(self.folder)}"
        self._cond = threading.Condition()
        self._staged: list[Entry] = []  # journaled, not yet in the store
        self._staged_rows = 0  # the rows in _staged
        self._storing = 0  # rows taken from _staged by a store write in progress
        self._staged_since = 0.0
        self._appended = 0  # the newest record's sequence number
        self._applied = 0  # the newest record the store holds
        self._wanted = 0  # settle() waits for the store to hold this record
        self._error: Exception | None = None
        self._broken: OSError | None = None  # the journal file could not be repaired
        self._closing = False
        self._stopped = False
        self._segments = 0  # the newest segment's number
        self._retired: list[Path] = []  # segments written before the store's last take
        try:
            self.replayed = self._replay()
            self._file = self._new_segment()
        except BaseException:  # a damaged journal: nothing holds the folder any longer
            self._lock_file.close()
            raise
        self._thread = threading.Thread(target=self._run, name="flywheel-journal", daemon=True)
        self._thread.start()

    # --- the writer's side -----------------------------------------------------------------------

    def append(self, items: list[Entry]) -> None:
        """Append one batch of rows as one record and return once it is on disk. While
        ``max_pending`` rows wait for the store (it is down, or slower than the intake), wait
        for it: memory stays bounded, and the writer's own back-pressure reaches callers."""
        if not items:
            return
        payload = msgpack.packb(items, default=_pack_rows)
        rows = count_rows(items)
        with self._cond:
            while self.pending >= self._max_pending and not self._stopped:
                self._cond.notify_all()
                self._cond.wait(0.1)
            if self._stopped:
                raise FlywheelError("this journal is closed")
            if self._broken is not None:
                raise StoreError(f"the journal in {self.folder} cannot be written: {self._broken}")
            sequence = self._appended + 1
            record = HEADER.pack(len(payload), zlib.crc32(payload), sequence) + payload
            good = self._file.tell()
            try:
                _write_all(self._file, record)
                os.fdatasync(self._file.fileno())
            except OSError as err:
                try:  # nothing was acknowledged: cut the half-written record off
                    self._file.truncate(good)
                    self._file.seek(good)
                except OSError as repair:
                    self._broken = repair
                raise StoreError(
                    f"the journal in {self.folder} could not be written: {err}"
                ) from err
            self._appended = sequence
            if not self._staged:
                self._staged_since = time.monotonic()
            self._staged += items
            self._staged_rows += rows
            if self._urgent is not None and self._urgent(items):
                self._wanted = max(self._wanted, sequence)
                self._cond.notify_all()
            elif self._staged_rows >= self._apply_rows:
                self._cond.notify_all()

    def settle(self) -> None:
        """Return once the store holds every record appended so far (raise if it refused)."""
        with self._cond:
            self._wanted = max(self._wanted, self._appended)
            self._cond.notify_all()
            while self._applied < self._wanted:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise StoreError(f"journaled rows could not be stored (kept): {error}")
                if self._stopped:
                    raise FlywheelError("this journal is closed")
                self._cond.wait(1.0)

    @property
    def pending(self) -> int:
        """Journaled rows the store does not hold yet."""
        return self._staged_rows + self._storing

    def close(self) -> None:
        """Copy everything journaled into the store, stop, and remove the emptied segments.
        Raises if the store refuses: the journal then stays on disk for the next open."""
        if self._stopped:
            return
        try:
            self.settle()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()
            self._file.close()
            if self._applied == self._appended:
                _delete_segments(self.folder)
            self._lock_file.close()

    # --- the store's side ------------------------------------------------------------------------

    def _due(self) -> bool:
        if not self._staged:
            return False
        return (
            self._closing
            or self._wanted > self._applied
            or self._staged_rows >= self._apply_rows
            or time.monotonic() - self._staged_since >= self._max_delay
        )

    def _run(self) -> None:
        while True:
            # what comes after this take goes to a new segment, so the older ones can go
            # once stored; it is created out here, where its sync holds up no append
            spare = self._new_segment()
            with self._cond:
                while not self._due() and not (self._closing and not self._staged):
                    self._cond.wait(self._wait())
                if not self._staged:  # closing, and nothing left
                    self._stopped = True
                    self._cond.notify_all()
                    spare.close()
                    Path(spare.name).unlink()
                    return
                taken, self._staged = self._staged, []
                self._storing, self._staged_rows = self._staged_rows, 0
                last = self._appended
                retired, self._file = self._file, spare
            retired.close()
            self._retired.append(Path(str(retired.name)))
            try:
                tables = to_tables(taken, self._schemas)
                written = self._store.write(tables, mark=(self.mark_key, str(last)))
            except Exception as err:  # kept, in order; told to settle(), tried again
                with self._cond:
                    self._staged[:0] = taken
                    self._staged_rows += self._storing
                    self._storing = 0
                    self._error = err
                    self._cond.notify_all()
                    if self._closing:  # close() gives up: the journal keeps them for next time
                        self._stopped = True
                        return
                    self._cond.wait(self._max_delay)
                continue
            for path in self._retired:
                path.unlink(missing_ok=True)
            self._retired.clear()
            with self._cond:
                self._applied = last
                self._storing = 0
                self._error = None
                self._cond.notify_all()
            if self._stored is not None:
                self._stored(taken, written)

    def _wait(self) -> float:
        if not self._staged:
            return self._max_delay
        return max(0.001, self._max_delay - (time.monotonic() - self._staged_since))

    # --- on disk ---------------------------------------------------------------------------------

    def _new_segment(self) -> io.FileIO:
        self._segments += 1
        handle = io.FileIO(self.folder / f"{self._segments:020d}{SUFFIX}", "a")
        _sync_folder(self.folder)  # the new name must survive a crash too
        return handle

    def _replay(self) -> int:
        """Store every record past the store's mark; return how many rows that was."""
        mark = self._store.get_meta(self.mark_key)
        applied = int(mark) if mark else 0
        segments = sorted(self.folder.glob(f"*{SUFFIX}"))
        self._segments = max((int(p.stem) for p in segments), default=0)
        written = [p for p in segments if p.stat().st_size]
        pending: list[Entry] = []
        last = applied
        for path in written:
            for sequence, items in _records(path, tail=path == written[-1]):
                if sequence <= last and sequence > applied:
                    raise StoreError(f"{path}: journal records out of order at {sequence}")
                last = max(last, sequence)
                if sequence > applied:
                    pending += items
        self._appended = self._applied = self._wanted = last
        columns = {name: schema.names for name, schema in self._schemas.items()}
        rows = count_rows(pending)
        if pending:
            pending = self._migrate(pending, columns)
            held = (self.mark_key, str(last))
            try:
                self._store.write(to_tables(pending, self._schemas), mark=held)
            except Exception as err:
                raise StoreError(
                    f"{self.folder}: {rows} journaled rows could not be stored ({err});"
                    " they stay in the journal (move the folder aside to open the store without"
                    " them)"
                ) from err
        _delete_segments(self.folder)
        _write_synced(self.folder / "columns.json", json.dumps(columns))
        return rows

    def _migrate(self, pending: list[Entry], columns: dict[str, list[str]]) -> list[Entry]:
        """Journaled rows in this spec's columns. A spec that added columns (a context feature,
        a knob, a signal) gets them empty, as the store's older rows have them; one that
        dropped or renamed a column the rows hold is refused, naming it: those values would
        be lost."""
        path = self.folder / "columns.json"
        written: dict[str, list[str]] | None = (
            json.loads(path.read_text()) if path.exists() else None
        )
        if written == columns:
            return pending
        lost = (
            None
            if written is None
            else [
                f"{table}.{name}"
                for table, names in written.items()
                for name in names
                if name not in columns.get(table, ())
            ]
        )
        if lost is None or lost:
            what = "columns it does not know" if lost is None else ", ".join(lost)
            raise StoreError(
                f"{self.folder}: the journal holds rows with {what}, which this spec lacks;"
                " open it with the spec that wrote it (or move the folder aside)"
            )
        assert written is not None
        places = {
            table: [written[table].index(n) if n in written[table] else -1 for n in names]
            for table, names in columns.items()
            if table in written
        }
        migrated: list[Entry] = []
        for table, row in pending:
            if isinstance(row, Rows):
                migrated.append((table, Rows.of(_widened(row, self._schemas[table]))))
            else:
                migrated.append((table, tuple(row[i] if i >= 0 else None for i in places[table])))
        return migrated


def _widened(rows: Rows, schema: pa.Schema) -> pa.Table:
    """Rows journaled as Arrow, in ``schema``: the columns they lack, empty."""
    with pa.ipc.open_stream(rows.ipc) as stream:
        table = stream.read_all()
    arrays = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(
            table.num_rows, f.type
        )
        for f in schema
    ]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_all(file: io.FileIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = file.write(view)
        view = view[written or 0 :]


def _records(path: Path, *, tail: bool) -> list[tuple[int, list[Entry]]]:
    """A segment's records; a cut-short or damaged record may end only the last segment."""
    data = path.read_bytes()
    found: list[tuple[int, list[Entry]]] = []
    at, previous = 0, 0
    while at < len(data):
        length = crc = sequence = 0
        if len(data) - at >= HEADER.size:
            length, crc, sequence = HEADER.unpack_from(data, at)
        end = at + HEADER.size + length
        payload = data[at + HEADER.size : end]
        if length == 0 or sequence <= previous or zlib.crc32(payload) != crc:
            if tail and end >= len(data):
                break  # the record being written when the process died: never acknowledged
            raise StoreError(
                f"{path}: damaged journal record at byte {at}; the rows after it cannot be"
                " read back (move the file aside to open the store without them)"
            )
        found.append((sequence, msgpack.unpackb(payload, use_list=False, ext_hook=_unpack_ext)))
        at, previous = end, sequence
    return found


def _delete_segments(folder: Path) -> None:
    for path in folder.glob(f"*{SUFFIX}"):
        path.unlink(missing_ok=True)


def _identity(folder: Path) -> str:
    path = folder / "journal.id"
    if path.exists():
        return path.read_text().strip()
    ident = str(uuid.uuid4())
    _write_synced(path, ident)
    return ident


def _write_synced(path: Path, text: str) -> None:
    """Replace a small file atomically and durably."""
    temporary = path.with_name(f"{path.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    _sync_folder(path.parent)


def _lock(folder: Path) -> io.FileIO:
    handle = io.FileIO(folder / "lock", "a")  # held while the journal is open
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreLockedError(
            f"the journal {folder} is in use by another process; give each server its own"
        ) from None
    return handle


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def default_folder(store: Store) -> Path | None:
    """Where a server keeps its journal unless told otherwise: beside a DuckDB file, as
    ``<file>.journal`` (other stores have no default: each server process needs its own)."""
    prefix = "duckdb:///"
    if not store.url.startswith(prefix) or store.url == f"{prefix}:memory:":
        return None
    return Path(f"{store.url[len(prefix) :]}.journal")


def leftover_journal(store: Store) -> Path | None:
    """The default journal folder of ``store`` when it holds records (a process stopped
    before storing them all), else ``None``."""
    folder = default_folder(store)
    if folder is None or not any(folder.glob(f"*{SUFFIX}")):
        return None
    return folder
