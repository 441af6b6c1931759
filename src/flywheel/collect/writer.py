"""The buffered writer: callers append rows; a background thread hands them on in batches.

Appending is a ``deque.append`` (thread-safe without a lock) and a length check. Rows that
arrive already in Arrow (a trace worker's, as :class:`Rows`) are one queue entry a table and
request, counted by their rows (under a lock: one per request). A batch goes
to the sink (the store, as Arrow tables, or the write-ahead journal) when ``batch_rows`` rows
are waiting, when ``max_delay`` seconds have passed, or when someone calls :meth:`flush`,
which returns only once the sink has made everything appended before it durable
(:meth:`when_durable` is the same without blocking: a callback, for servers that await it).
Flushes coalesce: every flush asked for while a write is in progress is served by the next
one, so concurrent callers share one commit. A failed write keeps its rows, in order, and the
error reaches the next flush; nothing accepted is dropped.

A server answers each write, so it needs the opposite: :meth:`BufferedWriter.write_then`
holds a request's rows aside while it records them (validation included) and queues them
with its waiter at once, under the lock the writer thread takes a batch with, so the waiter
is told the fate of exactly the batch that holds its rows; with ``keep_failed=False`` a batch
the sink refused is dropped whole: a write answered as failed is never stored later, behind
the caller's back (or twice, once the caller sends it again).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import pyarrow as pa

from flywheel.errors import FlywheelError, StoreError

Row = tuple[Any, ...]
Item = tuple[str, Row]  # a table's name and one row for it
CONVERT_ROWS = 4096  # rows converted to Arrow in one call (see to_arrow)
Done = Callable[[Exception | None], None]
T = TypeVar("T")


class Rows:
    """Many rows of one table at once, as an Arrow IPC stream: what a trace worker process
    sends, one entry in the writer's queue and in a journal record however many rows it
    holds. The store gets its table as read from the stream, without a Python object a row."""

    __slots__ = ("count", "ipc")

    def __init__(self, ipc: bytes, count: int) -> None:
        self.ipc = ipc
        self.count = count

    @classmethod
    def of(cls, table: pa.Table) -> Rows:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as stream:
            stream.write_table(table)
        return cls(sink.getvalue().to_pybytes(), table.num_rows)

    @classmethod
    def read(cls, ipc: bytes) -> Rows:
        """Rows from a stream :meth:`of` wrote (a journal's, read back)."""
        with pa.ipc.open_stream(ipc) as stream:
            count = sum(batch.num_rows for batch in stream)
        return cls(ipc, count)

    def table(self, schema: pa.Schema) -> pa.Table:
        with pa.ipc.open_stream(self.ipc) as stream:
            table = stream.read_all()
        return table if table.schema == schema else table.cast(schema)

    def __reduce__(self) -> tuple[type[Rows], tuple[bytes, int]]:
        return Rows, (self.ipc, self.count)


Entry = tuple[str, Row | Rows]  # what the writer queues and its sink gets: an Item, or Rows
Sink = Callable[[list[Entry]], None]


def count_rows(entries: Iterable[Entry]) -> int:
    """The rows in ``entries``: one an item, ``count`` a :class:`Rows`."""
    n = 0
    for _, row in entries:
        n += row.count if type(row) is Rows else 1
    return n


class Appender(Protocol):
    """Where recorded rows go (a :class:`BufferedWriter`)."""

    def append(self, table: str, row: Row) -> None: ...

    def append_many(self, items: Iterable[Item]) -> None: ...


def to_tables(entries: Iterable[Entry], schemas: Mapping[str, pa.Schema]) -> dict[str, pa.Table]:
    """Rows for several tables as one Arrow table per table (those with rows), each table's
    rows in the order given (its :class:`Rows` in place)."""
    parts: dict[str, list[pa.Table]] = {table: [] for table in schemas}
    grouped: dict[str, list[Row]] = {table: [] for table in schemas}
    for table, row in entries:
        if type(row) is Rows:
            if grouped[table]:
                parts[table].append(to_arrow(grouped[table], schemas[table]))
                grouped[table] = []
            parts[table].append(row.table(schemas[table]))
        else:
            grouped[table].append(cast(Row, row))
    for table, rows in grouped.items():
        if rows:
            parts[table].append(to_arrow(rows, schemas[table]))
    return {
        t: tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        for t, tables in parts.items()
        if tables
    }


def to_arrow(rows: list[Row], schema: pa.Schema) -> pa.Table:
    """Row tuples (in schema order; timestamps as epoch seconds) to an Arrow table."""
    if not rows:
        return schema.empty_table()
    # Arrow reads the tuples as structs and splits them into columns in C++ (half the time of
    # a list per column built in Python); timestamps arrive as seconds, a double
    seconds = pa.float64()
    as_read = pa.struct(
        [pa.field(f.name, seconds if pa.types.is_timestamp(f.type) else f.type) for f in schema]
    )
    # in slices: converting Python objects holds the interpreter lock for the whole call, so
    # one call over 50,000 rows (~40 ms) would stall a server's event loop for as long
    structs = [
        pa.array(rows[i : i + CONVERT_ROWS], type=as_read)
        for i in range(0, len(rows), CONVERT_ROWS)
    ]
    whole = structs[0] if len(structs) == 1 else pa.concat_arrays(structs)
    arrays = cast(pa.StructArray, whole).flatten()
    for i, field in enumerate(schema):
        if pa.types.is_timestamp(field.type):
            if arrays[i].null_count:
                raise TypeError(f"{field.name}: a timestamp is missing")
            values = arrays[i].to_numpy(zero_copy_only=False)
            arrays[i] = pa.array((values * 1e6).astype(np.int64), type=field.type)
    return pa.Table.from_arrays(arrays, schema=schema)


class BufferedWriter:
    """Queues rows for several tables and hands them to ``sink`` in batches (in order, as
    ``(table, row)`` items) from one background thread."""

    def __init__(
        self,
        sink: Sink,
        *,
        batch_rows: int = 50_000,
        max_delay: float = 1.0,
        max_pending: int = 1_000_000,
        keep_failed: bool = True,
    ) -> None:
        self._sink = sink
        self.keep_failed = keep_failed  # False: a refused batch is dropped (see write_then)
        self._batch_rows = batch_rows
        self._max_delay = max_delay
        self._max_pending = max(max_pending, batch_rows)
        # One queue for every table, so rows appended together are written together. Appends go
        # through ``_inbox``, the same deque until close() swaps in one that refuses them.
        self._queue: deque[Entry] = deque()
        self._inbox: deque[Entry] = self._queue
        self._bulk = 0  # rows queued as Rows, beyond one an entry
        self._counting = threading.Lock()  # guards _bulk
        self._woken = False
        self._requested = 0  # flush generations asked for
        self._completed = 0  # flush generations durable
        self._error: Exception | None = None
        self._drops = 0  # batches dropped (keep_failed=False), the last one's error
        self._dropped: Exception | None = None
        self._callbacks: list[tuple[int, Done]] = []  # when_durable's, by generation
        # write_then's waiters: each queued with its rows, under _taking, which the writer
        # thread holds while it takes a batch, so they are exactly the batch's. While a
        # thread is in write_then, its appends are held aside (_held, per thread; _holding
        # counts such threads, so other appends pay one attribute read for it)
        self._taking = threading.Lock()
        self._waiting: list[Done] = []
        self._held = _Held()
        self._holding = 0
        self._closed = False
        self._stopped = False  # the background thread has returned (set under _cond)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="flywheel-writer", daemon=True)
        self._thread.start()

    def append(self, table: str, row: Row) -> None:
        """Queue one row: the hot path."""
        if self._holding and (held := self._held.rows) is not None:
            held.append((table, row))
            return
        queue = self._inbox
        queue.append((table, row))  # raises once closed: see _Closed
        if len(queue) >= self._batch_rows and (not self._woken or len(queue) >= self._max_pending):
            self._batch_ready()

    def append_many(self, items: Iterable[Item]) -> None:
        """Queue rows for several tables at once: they land in the same batch."""
        if self._holding and (held := self._held.rows) is not None:
            held.extend(items)
            return
        queue = self._inbox
        queue.extend(items)
        if len(queue) >= self._batch_rows and (not self._woken or len(queue) >= self._max_pending):
            self._batch_ready()

    def append_rows(self, entries: list[tuple[str, Rows]]) -> None:
        """Queue rows already in Arrow, each entry one table's (they land in the same batch)."""
        if self._holding and (held := self._held.rows) is not None:
            held.extend(entries)
            return
        self._enqueue(entries)
        self._pressure()

    def _enqueue(self, entries: Sequence[Entry]) -> None:
        extra = count_rows(entries) - len(entries)
        with self._counting:
            # counted before they are queued: the writer thread, taking them, subtracts them
            self._bulk += extra
            try:
                self._inbox.extend(entries)
            except BaseException:
                self._bulk -= extra
                raise

    def _pressure(self) -> None:
        pending = self.pending
        if pending >= self._batch_rows and (not self._woken or pending >= self._max_pending):
            self._batch_ready()

    def _batch_ready(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()
            while (
                self.pending >= self._max_pending
                and self._error is None
                and self._thread.is_alive()
            ):
                self._cond.wait(0.1)  # back-pressure: the writer is behind

    def flush(self) -> None:
        """Return once every row appended so far is durable; raise if the store refused it."""
        if not self._thread.is_alive():
            raise FlywheelError(
                "this wheel is closed"
                if self._closed
                else "this wheel was opened in another"
                " process (a forked child): open a new one here"
            )
        with self._cond:
            self._requested += 1
            generation = self._requested
            drops = self._drops  # a batch dropped meanwhile may have held rows of this flush
            self._cond.notify_all()
            while self._completed < generation and self._error is None and self._drops == drops:
                self._cond.wait(1.0)
                if not self._thread.is_alive():
                    raise FlywheelError("the writer stopped before the rows were written")
            if self._drops != drops:
                assert self._dropped is not None
                raise _refused(self._dropped, kept=False) from self._dropped
            if self._error is not None:
                error, self._error = self._error, None
                raise _refused(error) from error

    def when_durable(self, done: Done) -> None:
        """Call ``done(None)`` once every row appended so far is durable, or ``done(error)`` if
        the store refused them (a :class:`StoreError`; the rows are kept for retry). It is
        called from the writer thread, or at once from this one when the writer has stopped
        or an unreported error is waiting: keep it short and thread-safe. With
        ``keep_failed=False`` every such waiter is told of any batch dropped after it asked,
        whether or not its rows were in it: use :meth:`write_then` to be told exactly."""
        with self._cond:
            failure = self._failure()
            if failure is None:
                self._requested += 1
                self._callbacks.append((self._requested, done))
                self._cond.notify_all()
                return
        done(failure)

    def write_then(self, write: Callable[[], T], done: Done) -> T:
        """Run ``write`` (which appends rows from this thread, or raises), then queue those
        rows and call ``done`` like :meth:`when_durable` for exactly the batch that holds
        them: ``done(None)`` once it is durable, ``done(error)`` if the sink refused it (and
        then, with ``keep_failed=False``, none of it is written, ever). Returns what ``write``
        returned; if it raises, none of its rows is queued."""
        if self._held.rows is not None:
            raise FlywheelError("write_then does not nest")
        held: list[Entry] = []
        self._held.rows = held
        with self._counting:
            self._holding += 1
        try:
            result = write()
        finally:
            self._held.rows = None
            with self._counting:
                self._holding -= 1
        with self._taking:  # a deque extend and a list append: the writer waits microseconds
            self._enqueue(held)
            with self._cond:
                failure = self._failure()
                if failure is None:
                    self._requested += 1
                    self._waiting.append(done)
                    self._cond.notify_all()
        if failure is not None:
            done(failure)
        self._pressure()
        return result

    def _failure(self) -> Exception | None:
        """Why a flush asked for now cannot succeed (the writer has stopped, or a write failed
        and nobody was told yet: this tells them), or ``None``. Hold ``_cond``."""
        if self._stopped or not self._thread.is_alive():
            return FlywheelError("this wheel is closed" if self._closed else "the writer stopped")
        if self._error is None:
            return None
        error, self._error = self._error, None
        return _refused(error)

    def close(self) -> None:
        """Refuse new rows, write everything appended before, stop the background thread."""
        if self._closed:
            return
        self._inbox = _Closed()
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join()

    @property
    def running(self) -> bool:
        """Whether the background thread is still there to write."""
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Rows queued."""
        return len(self._queue) + self._bulk

    def _due(self) -> bool:
        return self.pending >= self._batch_rows or self._requested > self._completed or self._closed

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._due():
                    self._cond.wait(self._max_delay)
                if self._closed and not self._queue and self._requested == self._completed:
                    self._stopped = True
                    return
                generation = self._requested
                self._woken = False
            queue = self._queue
            with self._taking:
                items = [queue.popleft() for _ in range(len(queue))]
                waiting, self._waiting = self._waiting, []
            bulk = self._bulk and count_rows(items) - len(items)  # Rows' rows beyond one each
            if bulk:
                with self._counting:
                    self._bulk -= bulk
            with self._cond:
                self._cond.notify_all()  # release appenders held back by back-pressure
            try:
                if items:
                    self._sink(items)
            except Exception as err:  # keep the rows, in order, or drop them; tell the waiters
                if self.keep_failed:
                    with self._counting:
                        queue.extendleft(reversed(items))
                        self._bulk += bulk
                with self._cond:
                    stop = self._closed
                    asked = self._requested
                    told = [done for _, done in self._take_callbacks(
                        self._requested if stop or not self.keep_failed else generation
                    )] + waiting  # fmt: skip
                    if self.keep_failed:
                        self._error = None if told else err  # told, else for the next flush()
                    else:  # flush() callers learn of it by the count (see flush)
                        self._drops += 1
                        self._dropped = err
                    self._stopped = stop
                    self._cond.notify_all()
                refusal = _refused(err, self.keep_failed)
                for done in told:
                    done(refusal)
                if stop:
                    return
                with self._cond:  # wait before trying again, unless asked since (or closed)
                    if self._requested == asked and not self._closed:
                        self._cond.wait(self._max_delay)
                continue
            with self._cond:
                self._completed = max(self._completed, generation)
                durable = [done for _, done in self._take_callbacks(self._completed)] + waiting
                self._cond.notify_all()
            for done in durable:
                done(None)

    def _take_callbacks(self, generation: int) -> list[tuple[int, Done]]:
        """Remove and return the callbacks of flushes up to ``generation``. Hold ``_cond``."""
        if not self._callbacks:
            return []
        taken = [c for c in self._callbacks if c[0] <= generation]
        self._callbacks = [c for c in self._callbacks if c[0] > generation]
        return taken


def _refused(error: Exception, kept: bool = True) -> StoreError:
    what = "kept for retry" if kept else "none of them will be stored"
    return StoreError(f"buffered rows could not be written ({what}): {error}")


class _Held(threading.local):
    """The rows a thread in :meth:`BufferedWriter.write_then` has appended so far."""

    rows: list[Entry] | None = None


class _Closed(deque[Entry]):
    """Stands in for the queue after close, so appends fail without a check per call."""

    def append(self, item: Entry) -> None:
        raise FlywheelError("this wheel is closed")

    def extend(self, items: Iterable[Entry]) -> None:
        raise FlywheelError("this wheel is closed")
