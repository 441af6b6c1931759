"""What became of a keyed signal batch: how many of its items the store recorded, and how many
it skipped as duplicates (their idempotency key was seen before, or earlier in the batch).

Only the store can tell a re-send from a new signal (another process may have stored the
key), and it tells in the transaction that claims the keys. So a batch with keys is queued as
one :class:`~flywheel.collect.writer.Rows` entry a table, registered here (:meth:`Outcomes.
expect`), and whoever hands rows to the store (the wheel's writer, or its journal) passes
what the store wrote to :meth:`Outcomes.settle`; the batch's :class:`Pending` then counts its
items. A batch without keys is recorded whole, and is told so at once.

With a write-ahead journal, rows are durable once journaled, but the count waits for the
store: the journal writes a batch someone waits for at once rather than within its delay, and
a crash before that loses nothing (the journal's replay claims the keys then; the sender, who
had no answer, sends again and is told those items are duplicates).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from flywheel.collect.writer import Entry, Rows
from flywheel.store.base import Kept


@dataclass(frozen=True)
class Recorded:
    """What a signal batch stored: ``recorded`` items were stored, ``duplicates`` were skipped
    because their idempotency key had been stored before (or came earlier in the batch);
    together they are the items sent."""

    recorded: int
    duplicates: int = 0


class Pending:
    """A signal batch's counts, known once the store has claimed its keys."""

    def __init__(
        self,
        spans: Sequence[int],
        future: Future[Kept | None] | None = None,
    ) -> None:
        self._spans = spans  # the signal rows of each item, in order
        self.future = future  # None: no keys, so every item is recorded

    def counts(self, kept: Kept | None) -> Recorded:
        """The counts, given which of the batch's signal rows the store kept: an item is a
        duplicate when none of its signals was stored (rows without a key always are)."""
        items = len(self._spans)
        if kept is None or not len(self._spans):
            return Recorded(items, 0)
        starts = np.concatenate(([0], np.cumsum(self._spans[:-1]))).astype(np.int64)
        stored = np.add.reduceat(kept.astype(np.int64), starts)
        duplicates = int(np.count_nonzero(stored == 0))
        return Recorded(items - duplicates, duplicates)

    def result(self, timeout: float | None = None) -> Recorded:
        """Wait for the store, then the counts (raises what the store raised)."""
        return self.counts(None if self.future is None else self.future.result(timeout))


class Outcomes:
    """The keyed batches waiting for the store, by their signals entry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[Rows, Future[Kept | None]]] = {}

    def expect(self, rows: Rows, spans: Sequence[int]) -> Pending:
        """Register ``rows`` (a batch's signals) before they are queued."""
        future: Future[Kept | None] = Future()
        with self._lock:
            self._waiting[id(rows)] = (rows, future)
        return Pending(spans, future)

    def waits_for(self, items: Iterable[Entry]) -> bool:
        """Whether someone waits for any of ``items`` (so they should be stored soon)."""
        if not self._waiting:
            return False
        with self._lock:
            return any(type(row) is Rows and id(row) in self._waiting for _, row in items)

    def settle(self, items: Sequence[Entry], written: Mapping[str, Kept | None]) -> None:
        """Tell the batches among ``items`` (in the order they were written) what the store
        kept of them: ``written["signals"]`` covers every signal row of ``items``, in order."""
        if not self._waiting:
            return
        kept = written.get("signals")
        found: list[tuple[Future[Kept | None], Kept | None]] = []
        at = 0
        with self._lock:
            for table, row in items:
                if table != "signals":
                    continue
                if type(row) is not Rows:
                    at += 1
                    continue
                waiting = self._waiting.pop(id(row), None)
                if waiting is not None and waiting[0] is row:
                    found.append((waiting[1], None if kept is None else kept[at : at + row.count]))
                at += row.count
        for future, mask in found:
            future.set_result(mask)

    def fail(self, items: Iterable[Entry] | None, error: BaseException) -> None:
        """Tell the batches among ``items`` (all of them: ``None``) that they were refused."""
        with self._lock:
            if items is None:
                taken = list(self._waiting.values())
                self._waiting.clear()
            else:
                taken = [
                    w
                    for _, row in items
                    if type(row) is Rows and (w := self._waiting.pop(id(row), None)) is not None
                ]
        for _, future in taken:
            if not future.done():
                future.set_exception(error)


def signal_rows_of(entries: Iterable[tuple[str, Any]]) -> Rows | None:
    """The signals entry of a batch made of :class:`Rows` (one a table), if any."""
    return next((row for table, row in entries if table == "signals"), None)
