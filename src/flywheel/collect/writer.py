"""The buffered writer: callers append row tuples; a background thread writes Arrow batches.

Appending costs a lock and a list append. A batch is written when it reaches ``batch_rows``,
when ``max_delay`` seconds have passed, or when someone calls :meth:`flush`, which returns only
once everything appended before it is durable in the store. A failed write keeps its rows and
the error reaches the next :meth:`flush`; nothing accepted is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from flywheel.errors import FlywheelError, StoreError

Sink = Callable[[Mapping[str, pa.Table]], None]


def to_arrow(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Row tuples (in schema order; timestamps as epoch seconds) to an Arrow table."""
    if not rows:
        return schema.empty_table()
    columns = list(zip(*rows, strict=True))
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        if pa.types.is_timestamp(field.type):
            micros = (np.asarray(values, dtype=np.float64) * 1e6).astype(np.int64)
            arrays.append(pa.array(micros, type=field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class BufferedWriter:
    """Buffers rows per table and writes them in batches from one background thread."""

    def __init__(
        self,
        schemas: Mapping[str, pa.Schema],
        sink: Sink,
        *,
        batch_rows: int = 50_000,
        max_delay: float = 1.0,
        max_pending: int = 1_000_000,
    ) -> None:
        self._schemas = dict(schemas)
        self._sink = sink
        self._batch_rows = batch_rows
        self._max_delay = max_delay
        self._max_pending = max(max_pending, batch_rows)
        self._buffers: dict[str, list[tuple[Any, ...]]] = {t: [] for t in schemas}
        self._pending = 0
        self._requested = 0  # flush generations asked for
        self._completed = 0  # flush generations durable
        self._error: Exception | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="flywheel-writer", daemon=True)
        self._thread.start()

    def append(self, table: str, row: tuple[Any, ...]) -> None:
        with self._cond:
            if self._closed:
                raise FlywheelError("this wheel is closed")
            self._buffers[table].append(row)
            self._pending += 1
            if self._pending == self._batch_rows:
                self._cond.notify_all()
            while self._pending >= self._max_pending and self._error is None:
                self._cond.wait()  # back-pressure: the writer is behind

    def append_many(self, rows: Mapping[str, list[tuple[Any, ...]]]) -> None:
        """Append rows to several tables at once: a reader never sees some without the rest."""
        with self._cond:
            if self._closed:
                raise FlywheelError("this wheel is closed")
            for table, items in rows.items():
                self._buffers[table].extend(items)
                self._pending += len(items)
            if self._pending >= self._batch_rows:
                self._cond.notify_all()

    def flush(self) -> None:
        """Return once every row appended so far is durable; raise if the store refused it."""
        with self._cond:
            self._requested += 1
            generation = self._requested
            self._cond.notify_all()
            while self._completed < generation and self._error is None:
                self._cond.wait()
            if self._error is not None:
                error, self._error = self._error, None
                raise StoreError(
                    f"buffered rows could not be written (kept for retry): {error}"
                ) from error

    def close(self) -> None:
        """Flush, then stop the background thread."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join()

    @property
    def pending(self) -> int:
        return self._pending

    def _due(self) -> bool:
        return (
            self._pending >= self._batch_rows or self._requested > self._completed or self._closed
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._due():
                    self._cond.wait(self._max_delay)
                if self._closed and self._pending == 0 and self._requested == self._completed:
                    return
                taken, self._buffers = self._buffers, {t: [] for t in self._schemas}
                taken_count, self._pending = self._pending, 0
                generation = self._requested
                self._cond.notify_all()
            try:
                if taken_count:
                    self._sink(
                        {t: to_arrow(rows, self._schemas[t]) for t, rows in taken.items() if rows}
                    )
            except Exception as err:  # keep the rows; report to the next flush()
                with self._cond:
                    for table, rows in taken.items():
                        self._buffers[table][:0] = rows
                    self._pending += taken_count
                    self._error = err
                    self._cond.notify_all()
                    if self._closed:
                        return
                    self._cond.wait(self._max_delay)
                continue
            with self._cond:
                self._completed = max(self._completed, generation)
                self._cond.notify_all()
