"""OTLP requests and batches converted in worker processes, so a server's intake is not bound
to one core, nor its decides to the interpreter lock an intake would hold.

Converting spans is mostly Python (looking up each attribute's and event's encoding, making
the rows): several µs a span, and a process runs Python on one core at a time.
:class:`IngestWorkers` hands each request's body to a worker process, which decompresses it
and converts it with its own :class:`~flywheel.collect.traces.TraceMapper` (built from the
same spec and unit key, so its rows are exactly the ones the server would make), and gets
back the rows, already as Arrow (one :class:`~flywheel.collect.writer.Rows` a table), and
the counts for the OTLP answer. The server's process keeps HTTP, the journal and the store,
and never holds the rows as Python objects: the journal writes the Arrow bytes as they came,
and the store takes them as they are.

Batches of signals (``POST /v1/signals``) and of complete rows (``POST /v1/rows``) go the
same way: the worker parses and checks the body's JSON (:mod:`flywheel.collect.batches`),
validates its items with its own :class:`~flywheel.collect.record.Recorder` (the server's
spec and unit key: the same pseudonyms, the same redaction; decision ids from a prefix of its
own) and returns them as Arrow.

Workers are started with ``spawn`` (the server has threads and open files, which a forked
child would inherit in an unknown state). A request a worker cannot read raises the same
:class:`~flywheel.collect.traces.BodyError` as in-process conversion, and stores nothing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from flywheel.collect.batches import row_items, signal_items
from flywheel.collect.outcomes import Recorded
from flywheel.collect.record import IdFactory, Recorder
from flywheel.collect.traces import Format, Intake, TraceMapper, decompress
from flywheel.collect.units import Pseudonymizer
from flywheel.collect.writer import Entry, Item, Rows, to_tables
from flywheel.errors import FlywheelError
from flywheel.spec import Spec
from flywheel.store import tables_for

T = TypeVar("T")


class IngestWorkers:
    """``processes`` worker processes converting OTLP requests and batches (signals, complete
    rows) for one spec; their rows go to ``record`` (a wheel's writer, awaited until they
    are durable)."""

    def __init__(
        self,
        spec: Spec,
        unit_key: bytes,
        processes: int,
        record: Callable[[list[tuple[str, Rows]]], Awaitable[None]],
        record_signals: Callable[[list[tuple[str, Rows]], list[int], bool], Awaitable[Recorded]],
    ) -> None:
        self._record = record
        self._record_signals = record_signals
        self._pool = ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(dict(spec.raw), str(spec.base_dir), spec.digest, unit_key, os.getpid()),
        )
        # start them all now (and learn at once if they cannot start), not on the first spans
        try:
            for started in [self._pool.submit(_ready) for _ in range(processes)]:
                started.result()
        except BaseException:
            self._pool.shutdown(cancel_futures=True)
            raise

    async def ingest(self, body: bytes, encoding: str | None, fmt: Format) -> Intake:
        """Convert one request (as received: ``encoding`` is its Content-Encoding) in a
        worker and record its rows, returning once they are durable; raises
        :class:`~flywheel.collect.traces.BodyError` when it cannot be read (then nothing is
        recorded)."""
        rows, intake = await self._in_worker(_convert, body, encoding, fmt)
        if rows:
            await self._record(rows)
        return intake

    async def signals(self, body: bytes) -> Recorded:
        """Parse, validate and convert a signal batch's body (``{"signals": [...]}``, as
        :meth:`~flywheel.Wheel.signal_batch` takes its items) in a worker and record its
        rows, returning the items recorded and the duplicates skipped (as
        :meth:`~flywheel.Wheel.signal_batch` does) once they are durable. Raises
        :class:`~flywheel.collect.batches.InvalidBodyError` or the SDK's
        :class:`~flywheel.errors.InvalidInputError` naming the field (nothing recorded)."""
        rows, (spans, keyed) = await self._in_worker(_convert_signals, body)
        return await self._record_signals(rows, spans, keyed)

    async def rows(self, body: bytes) -> list[str]:
        """:meth:`signals` for a batch of complete rows (``{"rows": [...]}``, as
        :meth:`~flywheel.Wheel.log_many` takes them); their decision ids, once durable."""
        rows, ids = await self._in_worker(_convert_rows, body)
        await self._record(rows)
        return ids

    async def _in_worker(self, convert: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, convert, *args)
        except BrokenProcessPool:
            raise FlywheelError(
                "a worker process died (out of memory?); restart the server"
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- in the worker process ------------------------------------------------------------------------

_worker: dict[str, Any] = {}  # this worker process's mapper and table schemas, once started


class _Collected(list[Entry]):
    """Where the worker's signal recorder puts its rows: they go back to the server."""

    def append_many(self, items: Iterable[Item]) -> None:
        self.extend(items)

    def append(self, table: str, row: tuple[Any, ...]) -> None:  # type: ignore[override]
        super().append((table, row))


class _NoWriter:
    """The worker's recorder only validates and builds rows: they go back to the server."""

    def append(self, table: str, row: tuple[Any, ...]) -> None:
        raise FlywheelError("a worker does not write rows itself")

    def append_many(self, items: Iterable[Item]) -> None:
        raise FlywheelError("a worker does not write rows itself")


def _start(
    raw: Mapping[str, Any], base_dir: str, digest: str, unit_key: bytes, server: int
) -> None:
    # Ctrl-C or a SIGTERM to the server's process group is the server's to handle: it drains
    # its requests, then stops the workers itself; a server killed outright cannot, so each
    # worker watches for it to be gone (its pipes stay open: the workers hold them too)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(server,), daemon=True).start()
    spec = Spec.from_dict(raw, base_dir=Path(base_dir))
    if spec.digest != digest:
        raise FlywheelError("a worker read the spec differently from the server")
    units = Pseudonymizer(unit_key, spec.normalize_units)
    tables = tables_for(spec)
    _worker["schemas"] = {name: tables.schema(name) for name in tables.names}
    _worker["mapper"] = TraceMapper(spec, Recorder(spec, _NoWriter(), units, time.time), units)
    _worker["collected"] = collected = _Collected()
    _worker["recorder"] = Recorder(spec, collected, units, time.time)
    _worker["ids"] = IdFactory()  # a prefix of its own: unique beside the server's


def _exit_without(server: int) -> None:
    """Exit once the server's process is no longer this one's parent."""
    while os.getppid() == server:
        time.sleep(0.5)
    os._exit(0)


def _ready() -> bool:
    return "mapper" in _worker


def _convert(
    body: bytes, encoding: str | None, fmt: Format
) -> tuple[list[tuple[str, Rows]], Intake]:
    mapper: TraceMapper = _worker["mapper"]
    intake = mapper.convert(decompress(body, encoding), fmt)
    rows, intake.rows = intake.rows, []
    tables: dict[str, pa.Table] = to_tables(rows, _worker["schemas"])
    return [(name, Rows.of(table)) for name, table in tables.items()], intake


def _convert_signals(body: bytes) -> tuple[list[tuple[str, Rows]], tuple[list[int], bool]]:
    """A signal batch's rows, each item's number of signal rows, and whether any has a key."""
    spans: list[int] = []
    rows, _ = _collect(lambda recorder: recorder.signal_batch(signal_items(body), spans=spans))
    signals = next((r for table, r in rows if table == "signals"), None)
    keyed = signals is not None and _has_keys(signals)
    return rows, (spans, keyed)


def _has_keys(rows: Rows) -> bool:
    keys = rows.table(_worker["schemas"]["signals"]).column("key")
    return keys.null_count < len(keys)


def _convert_rows(body: bytes) -> tuple[list[tuple[str, Rows]], list[str]]:
    def record(recorder: Recorder) -> list[str]:
        items = row_items(body)
        ids = [_worker["ids"]() for _ in items]
        recorder.complete_rows(ids, items)
        return ids

    return _collect(record)


def _collect(record: Callable[[Recorder], T]) -> tuple[list[tuple[str, Rows]], T]:
    """What ``record`` makes the worker's recorder record, as Arrow, and what it returned."""
    collected: _Collected = _worker["collected"]
    collected.clear()
    try:
        result = record(_worker["recorder"])
        tables: dict[str, pa.Table] = to_tables(collected, _worker["schemas"])
    finally:
        collected.clear()
    return [(name, Rows.of(table)) for name, table in tables.items()], result
