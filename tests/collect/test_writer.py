from __future__ import annotations

import contextlib
import pickle
import sys
import threading
from collections.abc import Callable

import pyarrow as pa
import pytest

from flywheel.collect.writer import BufferedWriter, Entry, Rows, count_rows, to_arrow, to_tables
from flywheel.errors import FlywheelError, StoreError
from tests.conftest import WAIT, wait_for

SCHEMA = pa.schema([pa.field("n", pa.int64()), pa.field("ts", pa.timestamp("us", tz="UTC"))])


class FlakySink:
    """Stands in for nothing but a function: records batches, refuses while ``down``."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.down = False
        self.calls = 0

    def __call__(self, items: list[Entry]) -> None:
        self.calls += 1
        if self.down:
            raise OSError("disk full")
        self.rows.extend(int(row[0]) for table, row in items if table == "t" and type(row) is tuple)


def test_flush_returns_after_everything_is_written() -> None:
    sink = FlakySink()
    writer = BufferedWriter(sink, batch_rows=100, max_delay=60)
    for i in range(1050):
        writer.append("t", (i, 0.0))
    writer.flush()
    assert sink.rows == list(range(1050))
    writer.close()


class DownOnce(FlakySink):
    """Refuses its first batch, then takes each one once ``up`` is set: the writer's own
    retries meanwhile wait rather than fail again after the test has seen the refusal."""

    def __init__(self) -> None:
        super().__init__()
        self.up = threading.Event()

    def __call__(self, items: list[Entry]) -> None:
        self.down = self.calls == 0
        if not self.down:
            assert self.up.wait(WAIT)
        super().__call__(items)


def test_a_failed_write_keeps_its_rows_and_reports_at_flush() -> None:
    sink = DownOnce()
    writer = BufferedWriter(sink, batch_rows=10, max_delay=0.01)
    for i in range(25):
        writer.append("t", (i, 0.0))
    with pytest.raises(StoreError, match="disk full"):
        writer.flush()
    sink.up.set()
    writer.flush()
    assert sink.rows == list(range(25))  # kept in order
    writer.close()


class EveryOtherSink(FlakySink):
    """Refuses every second batch."""

    def __call__(self, items: list[Entry]) -> None:
        self.down = self.calls % 2 == 1
        super().__call__(items)


class GatedSink(EveryOtherSink):
    """Holds each batch until ``behind`` more rows are queued after it (or every sender is
    done), so the writes spread over several batches however the threads are scheduled."""

    def __init__(self, behind: int, senders: int) -> None:
        super().__init__()
        self.writer: BufferedWriter | None = None
        self.behind = behind
        self.senders = senders
        self.finished = 0
        self.entered = threading.Event()  # the first batch was taken
        self.changed = threading.Condition()

    def queued(self, *, finished: bool = False) -> None:
        """A sender queued a write (or finished): a held batch may go."""
        with self.changed:
            self.finished += finished
            self.changed.notify_all()

    def __call__(self, items: list[Entry]) -> None:
        self.entered.set()
        assert self.writer is not None
        with self.changed:
            while self.writer.pending < self.behind and self.finished < self.senders:
                self.changed.wait(1.0)
        super().__call__(items)


def test_a_dropped_batch_tells_exactly_the_writes_it_held() -> None:
    # a server's writer: a write told it failed is never written, one told it is durable is.
    # Rounds with frequent thread switches, so the writer thread often takes a batch while a
    # sender is queueing its write (a waiter queued apart from its rows would show)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for _ in range(20):
            send_writes_through_a_sink_that_refuses_every_other_batch()
    finally:
        sys.setswitchinterval(interval)


def send_writes_through_a_sink_that_refuses_every_other_batch() -> None:
    sink = GatedSink(behind=3, senders=4)  # a batch goes once a write waits behind it
    writer = BufferedWriter(sink, batch_rows=7, max_delay=0.001, keep_failed=False)
    sink.writer = writer
    told: dict[int, Exception | None] = {}
    lock = threading.Lock()

    def send(first: int) -> None:
        try:
            for n in range(first, first + 300, 3):  # three rows a write, appended one by one

                def write(n: int = n) -> int:
                    for k in range(3):
                        writer.append("t", (n + k, 0.0))
                    return n

                def done(error: Exception | None, n: int = n) -> None:
                    with lock:
                        told[n] = error

                assert writer.write_then(write, done) == n
                sink.queued()
                # the first batch (stored) holds a write a sender at most; the rest follow it
                assert sink.entered.wait(WAIT)
        finally:
            sink.queued(finished=True)

    threads = [threading.Thread(target=send, args=(i * 300,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with contextlib.suppress(StoreError):  # the last batch may be refused too: it says so
        writer.close()
    assert len(told) == 400
    stored = [n for n, error in told.items() if error is None]
    refused = [n for n, error in told.items() if error is not None]
    assert stored and refused  # both happened, whatever the schedule (see GatedSink)
    assert sorted(sink.rows) == sorted(n + k for n in stored for k in range(3))
    assert all("none of them will be stored" in str(told[n]) for n in refused)


def test_a_write_that_raises_queues_none_of_its_rows() -> None:
    sink = FlakySink()
    writer = BufferedWriter(sink, batch_rows=1_000, max_delay=60, keep_failed=False)
    told: list[Exception | None] = []

    def write() -> None:
        writer.append("t", (1, 0.0))  # held aside until write returns...
        raise ValueError("the second row is not valid")  # ...so it is never queued

    with pytest.raises(ValueError, match="second row"):
        writer.write_then(write, told.append)
    writer.append("t", (2, 0.0))  # others' rows go on as usual
    writer.flush()
    writer.close()
    assert sink.rows == [2] and told == []


def test_a_flush_whose_rows_were_dropped_raises() -> None:
    sink = FlakySink()
    sink.down = True
    # no write before the flush asks for one: a batch dropped earlier is not the flush's
    writer = BufferedWriter(sink, batch_rows=1_000, max_delay=3600, keep_failed=False)
    writer.append("t", (1, 0.0))
    with pytest.raises(StoreError, match="none of them will be stored"):
        writer.flush()
    sink.down = False
    writer.append("t", (2, 0.0))
    writer.flush()
    writer.close()
    assert sink.rows == [2]


def test_time_based_flush() -> None:
    sink = FlakySink()
    writer = BufferedWriter(sink, batch_rows=1_000_000, max_delay=0.05)
    writer.append("t", (1, 0.0))
    assert wait_for(lambda: sink.rows == [1])  # written with no flush asked
    writer.close()


def test_to_arrow_converts_epoch_seconds() -> None:
    table = to_arrow([(1, 1.5)], SCHEMA)
    assert table.column("ts").cast(pa.int64()).to_pylist() == [1_500_000]
    assert to_arrow([], SCHEMA).num_rows == 0


def test_to_tables_groups_rows_by_table_in_order() -> None:
    items = [("t", (1, 0.0)), ("u", (9, 0.0)), ("t", (2, 0.0))]
    tables = to_tables(items, {"t": SCHEMA, "u": SCHEMA, "v": SCHEMA})
    assert set(tables) == {"t", "u"}  # no empty table
    assert tables["t"].column("n").to_pylist() == [1, 2]


class HeldSink(FlakySink):
    """Each write waits until ``go`` is set, so flushes asked for meanwhile pile up behind it;
    ``entered`` tells that a write has begun."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.go = threading.Event()

    def __call__(self, items: list[Entry]) -> None:
        self.entered.set()
        assert self.go.wait(WAIT)
        super().__call__(items)


def test_when_durable_calls_back_once_written_and_waiting_flushes_share_a_write() -> None:
    sink = HeldSink()
    writer = BufferedWriter(sink, batch_rows=1_000_000, max_delay=60)
    seen: list[tuple[int, Exception | None]] = []
    done = threading.Semaphore(0)

    def callback(i: int) -> Callable[[Exception | None], None]:
        def record(error: Exception | None) -> None:
            seen.append((i, error))
            done.release()

        return record

    writer.append("t", (0, 0.0))
    writer.when_durable(callback(0))  # starts a write, held until the others have asked
    assert sink.entered.wait(WAIT)
    for i in range(1, 20):  # all asked for during that write: one more write serves them
        writer.append("t", (i, 0.0))
        writer.when_durable(callback(i))
    sink.go.set()
    for _ in range(20):
        assert done.acquire(timeout=WAIT)
    assert sorted(seen, key=lambda s: s[0]) == [(i, None) for i in range(20)]
    assert sink.rows == list(range(20)) and sink.calls == 2
    writer.close()


def test_when_durable_reports_a_refused_write_and_keeps_the_rows() -> None:
    sink = DownOnce()  # the writer retries on its own: only the first write is refused
    writer = BufferedWriter(sink, batch_rows=1_000_000, max_delay=0.01)
    errors: list[Exception | None] = []
    done = threading.Semaphore(0)

    def record(error: Exception | None) -> None:
        errors.append(error)
        done.release()

    writer.append("t", (7, 0.0))
    writer.when_durable(record)
    assert done.acquire(timeout=WAIT)
    assert isinstance(errors[0], StoreError) and "disk full" in str(errors[0])
    sink.up.set()
    writer.when_durable(record)
    assert done.acquire(timeout=WAIT)
    assert errors[1] is None and sink.rows == [7]
    writer.close()
    writer.when_durable(record)  # closed: told at once, on this thread
    assert done.acquire(blocking=False) and isinstance(errors[2], FlywheelError)


def test_a_flush_asked_while_a_refusal_is_told_is_tried_at_once() -> None:
    # the ask lands while the writer thread tells of the refusal, before it waits to retry:
    # the writer must not sleep through it (max_delay, an hour here)
    sink = DownOnce()
    sink.up.set()
    writer = BufferedWriter(sink, batch_rows=1_000_000, max_delay=3600)
    told: list[Exception | None] = []
    stored = threading.Event()

    def again(error: Exception | None) -> None:
        told.append(error)
        stored.set()

    def refused(error: Exception | None) -> None:
        told.append(error)
        writer.when_durable(again)  # on the writer thread, as it tells

    writer.append("t", (7, 0.0))
    writer.when_durable(refused)
    assert stored.wait(WAIT)
    assert isinstance(told[0], StoreError) and told[1] is None and sink.rows == [7]
    writer.close()


def test_rows_in_arrow_keep_their_place_among_the_rows_of_their_table() -> None:
    block = Rows.of(to_arrow([(3, 0.0), (4, 0.0)], SCHEMA))
    entries: list[Entry] = [("t", (1, 0.0)), ("t", (2, 0.0)), ("t", block), ("u", (9, 0.0))]
    entries += [("t", (5, 0.0)), ("t", Rows.of(to_arrow([(6, 0.0)], SCHEMA)))]
    tables = to_tables(entries, {"t": SCHEMA, "u": SCHEMA})
    assert tables["t"].column("n").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert tables["u"].column("n").to_pylist() == [9]
    assert count_rows(entries) == 7
    assert pickle.loads(pickle.dumps(block)).table(SCHEMA).equals(block.table(SCHEMA))


def test_rows_in_arrow_count_by_their_rows_for_batches_and_back_pressure() -> None:
    sink = FlakySink()
    writer = BufferedWriter(sink, batch_rows=1000, max_delay=60)
    block = [("t", Rows.of(to_arrow([(i, 0.0) for i in range(400)], SCHEMA)))]
    writer.append_rows(block)
    writer.append_rows(block)
    assert writer.pending == 800  # two entries, 800 rows: not a batch yet
    assert sink.calls == 0
    writer.append_rows(block)  # 1,200 rows: a batch, though no flush was asked for
    assert wait_for(lambda: sink.calls == 1)
    writer.flush()
    assert writer.pending == 0
    writer.close()
    with pytest.raises(FlywheelError):
        writer.append_rows(block)
    assert writer.pending == 0
