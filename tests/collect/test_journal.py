"""The write-ahead journal: what was synced there survives a crash, reaches the store once,
and a record cut short by the crash is the only damage tolerated."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.collect.journal import Journal
from flywheel.demo import example_spec, example_text
from flywheel.errors import StoreError, StoreLockedError
from flywheel.spec import Spec
from flywheel.store import Store, open_store, tables_for
from flywheel.store.base import Written
from tests.conftest import T0, THRILLER, WAIT

CRASH = """
import os, sys
import flywheel
from flywheel.demo import example_spec, example_text

store, folder, decisions, signals = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
journal = True if folder == "default" else folder
wheel = flywheel.open(example_spec(), store=store, journal=journal, max_delay=3600, refresh=0)
ids = [wheel.decide({"genre": "thriller"}, unit=f"reader-{i % 7}").id for i in range(decisions)]
wheel.flush(journal_only=True)  # one record for the decisions, one for the signals
for i in range(signals):
    wheel.signal(ids[i % len(ids)], "rating", 1 + i % 5, key=f"k{i}" if i % 2 else None)
wheel.flush(journal_only=True)
print(wheel.store.query("SELECT count(*) AS n FROM decisions").to_pylist()[0]["n"], flush=True)
os._exit(0)  # a crash: no close, no exit hooks
"""


def crash_after_journaling(store: str, folder: str, decisions: int, signals: int) -> int:
    """Run a process that journals rows and dies; return the decisions its store held then."""
    done = subprocess.run(
        [sys.executable, "-c", CRASH, store, folder, str(decisions), str(signals)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout.split()[-1])


def counts(wheel: flywheel.Wheel) -> tuple[int, int]:
    row = wheel.store.query(
        "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM signals) AS s"
    ).to_pylist()[0]
    return row["d"], row["s"]


@pytest.fixture(params=["duckdb", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"duckdb:///{tmp_path / 'store.duckdb'}"


def test_journaled_rows_survive_a_crash_and_are_stored_once(backend: str, tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    assert crash_after_journaling(backend, str(folder), 30, 40) == 0  # only in the journal
    with flywheel.open(example_spec(), store=backend, journal=folder) as wheel:
        assert wheel._journal is not None and wheel._journal.replayed == 70
        assert counts(wheel) == (30, 40)
        assert wheel.summary().orphans == 0  # every signal found its decision
    with flywheel.open(example_spec(), store=backend, journal=folder) as wheel:
        assert wheel._journal is not None and wheel._journal.replayed == 0
        assert counts(wheel) == (30, 40)


@pytest.mark.duckdb_file
def test_a_crashed_servers_default_journal_is_stored_by_whoever_opens_the_file(
    tmp_path: Path,
) -> None:
    store = f"duckdb:///{tmp_path / 'store.duckdb'}"
    assert crash_after_journaling(store, "default", 5, 9) == 0
    assert list((tmp_path / "store.duckdb.journal").glob("*.wal"))
    with flywheel.open(example_spec(), store=store) as wheel:  # no journal asked
        assert counts(wheel) == (5, 9)
    assert not list((tmp_path / "store.duckdb.journal").glob("*.wal"))


def test_a_record_the_store_already_holds_is_not_stored_again(tmp_path: Path) -> None:
    """A crash after the store's commit but before the journal deleted its segment."""
    store, folder = f"duckdb:///{tmp_path / 'store.duckdb'}", tmp_path / "journal"
    with flywheel.open(example_spec(), store=store, journal=folder) as wheel:
        for _ in range(10):
            wheel.decide(THRILLER)
        wheel.flush(journal_only=True)
        kept = {p.name: p.read_bytes() for p in folder.glob("*.wal") if p.stat().st_size}
        wheel.flush()  # now in the store, and the segment deleted
        assert not any(folder / name for name in kept if (folder / name).exists())
    for name, data in kept.items():
        (folder / name).write_bytes(data)
    with flywheel.open(example_spec(), store=store, journal=folder) as wheel:
        assert wheel._journal is not None and wheel._journal.replayed == 0
        assert counts(wheel) == (10, 0)


def test_a_cut_short_last_record_is_ignored_and_damage_elsewhere_refused(tmp_path: Path) -> None:
    store, folder = f"duckdb:///{tmp_path / 'store.duckdb'}", tmp_path / "journal"
    crash_after_journaling(store, str(folder), 4, 6)
    (segment,) = [p for p in folder.glob("*.wal") if p.stat().st_size]
    good = segment.read_bytes()
    shutil.copy(segment, tmp_path / "segment")
    segment.write_bytes(good + good[:37])  # the process died in the middle of a write
    with flywheel.open(example_spec(), store=store, journal=folder) as wheel:
        assert counts(wheel) == (4, 6)

    store = f"duckdb:///{tmp_path / 'other.duckdb'}"
    damaged = bytearray(good)
    damaged[40] ^= 0xFF  # inside the first record, which other records follow
    segment.write_bytes(bytes(damaged))
    with pytest.raises(StoreError, match="damaged journal record at byte 0"):
        flywheel.open(example_spec(), store=store, journal=folder)
    assert segment.read_bytes() == bytes(damaged)  # left for a person to look at


def test_one_process_at_a_time_uses_a_journal(tmp_path: Path) -> None:
    spec = example_spec()
    store = open_store(spec, f"duckdb:///{tmp_path / 'store.duckdb'}")
    schemas = {t: tables_for(spec).schema(t) for t in tables_for(spec).names}
    try:
        first = Journal(tmp_path / "journal", store, schemas)
        with pytest.raises(StoreLockedError, match="in use by another process"):
            Journal(tmp_path / "journal", store, schemas)
        first.close()
        Journal(tmp_path / "journal", store, schemas).close()
    finally:
        store.close()


def test_forget_reaches_rows_still_in_the_journal(tmp_path: Path) -> None:
    store, folder = f"duckdb:///{tmp_path / 'store.duckdb'}", tmp_path / "journal"
    spec = example_spec()
    with flywheel.open(spec, store=store, journal=folder, max_delay=3600) as wheel:
        decision = wheel.decide(THRILLER, unit="ada@example.com")
        wheel.signal(decision.id, "rating", 5, unit="ada@example.com")
        wheel.decide(THRILLER, unit="bob")
        wheel.flush(journal_only=True)
        deleted = wheel.forget("ada@example.com")
        assert deleted["decisions"] == 1 and deleted["signals"] == 1
        assert all(p.stat().st_size == 0 for p in folder.glob("*.wal"))  # no copy left behind
    with flywheel.open(spec, store=store, journal=folder) as wheel:
        assert counts(wheel) == (1, 0)


def test_a_wheel_on_a_journal_reads_what_it_wrote(tmp_path: Path) -> None:
    """Reads settle the journal first: status, aligned rows and learning see every row."""
    store, folder = f"duckdb:///{tmp_path / 'store.duckdb'}", tmp_path / "journal"
    with flywheel.open(example_spec(), store=store, journal=folder, max_delay=3600) as wheel:
        ids = [wheel.decide(THRILLER).id for _ in range(25)]
        for i, ident in enumerate(ids):
            wheel.signal(ident, "rating", 1 + i % 5)
        assert wheel.status().as_dict()["decisions"] == 25
        assert wheel.aligned().num_rows == 25


class Outage:
    """A real DuckDB store whose writes fail while ``down``, as in a disk or network outage."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False

    def write(self, batch: Any, mark: tuple[str, str] | None = None) -> Written:
        if self.down:
            raise StoreError("the store is unreachable")
        return self.store.write(batch, mark)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_the_journal_keeps_rows_while_the_store_is_down_and_then_stores_them_once(
    tmp_path: Path,
) -> None:
    spec = example_spec()
    store = open_store(spec, f"duckdb:///{tmp_path / 'store.duckdb'}")
    outage = Outage(store)
    schemas = {t: tables_for(spec).schema(t) for t in tables_for(spec).names}
    journal = Journal(
        tmp_path / "journal", outage, schemas, max_delay=0.01, apply_rows=10, max_pending=40
    )
    ident = "6f1c2a5e-8d4b-4c3a-9e2f-1a2b3c4d5e6f"

    def rows(start: int) -> list[Any]:
        row = (ident, "rating", 3.0, None, T0)
        return [("signals", (*row, f"k{i}", None)) for i in range(start, start + 10)]

    try:
        outage.down = True
        for batch in range(4):
            journal.append(rows(10 * batch))  # durable, though the store refuses
        with pytest.raises(StoreError, match="unreachable"):
            journal.settle()
        assert journal.pending == 40
        blocked = threading.Thread(target=journal.append, args=(rows(40),))
        blocked.start()
        blocked.join(0.5)
        assert blocked.is_alive()  # 40 rows wait for the store: the next batch waits too
        outage.down = False
        blocked.join(WAIT)
        assert not blocked.is_alive()
        journal.settle()
        stored = store.query("SELECT count(*) AS n, count(DISTINCT key) AS k FROM signals")
        assert stored.to_pylist() == [{"n": 50, "k": 50}]
    finally:
        journal.close()
        store.close()


CRASH_WITH_WORKERS = """
import asyncio, os, sys
import flywheel
from flywheel.demo import example_spec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

store, folder, spans = sys.argv[1], sys.argv[2], int(sys.argv[3])
request = ExportTraceServiceRequest()
scope = request.resource_spans.add().scope_spans.add()
for i in range(spans):
    span = scope.spans.add(trace_id=(i + 1).to_bytes(16, "big"), span_id=b"\\x01" * 8)
    span.start_time_unix_nano = span.end_time_unix_nano = 1_700_000_000 * 10**9 + i
    for key, value in {"flywheel.context.genre": "thriller", "flywheel.knob.opening_type":
            "question", "flywheel.knob.twist_count": 1, "flywheel.knob.emotional_density": "mid",
            "flywheel.knob.length": "short"}.items():
        any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(
            string_value=value)
        span.attributes.append(KeyValue(key=key, value=any_value))
    event = span.events.add(name="gen_ai.evaluation.result", time_unix_nano=0)
    event.attributes.append(KeyValue(key="gen_ai.evaluation.name", value=AnyValue(
        string_value="rating")))
    event.attributes.append(KeyValue(key="gen_ai.evaluation.score.value", value=AnyValue(
        double_value=4.0)))
body = request.SerializeToString()
wheel = flywheel.open(example_spec(), store=store, journal=folder, max_delay=3600, refresh=0)
workers = wheel.ingest_workers(1)
wheel.decide({"genre": "drama"})  # a row of its own, journaled with the workers' Arrow rows
asyncio.run(workers.ingest(body, None, "protobuf"))
asyncio.run(workers.ingest(body, None, "protobuf"))  # sent again: stored once
wheel.flush(journal_only=True)
workers.close()
print(wheel.store.query("SELECT count(*) AS n FROM decisions").to_pylist()[0]["n"], flush=True)
os._exit(0)  # a crash: no close, no exit hooks
"""


def test_rows_a_trace_worker_sent_as_arrow_survive_a_crash_and_are_stored_once(
    backend: str, tmp_path: Path
) -> None:
    folder = tmp_path / "journal"
    done = subprocess.run(
        [sys.executable, "-c", CRASH_WITH_WORKERS, backend, str(folder), "25"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert int(done.stdout.split()[-1]) == 0  # only in the journal
    with flywheel.open(example_spec(), store=backend, journal=folder) as wheel:
        assert wheel._journal is not None and wheel._journal.replayed == 1 + 2 * 50
        assert counts(wheel) == (26, 25)
        assert wheel.summary().orphans == 0
    with flywheel.open(example_spec(), store=backend, journal=folder) as wheel:
        assert wheel._journal is not None and wheel._journal.replayed == 0
        assert counts(wheel) == (26, 25)


def test_a_journal_is_read_back_in_the_columns_of_a_later_spec(
    backend: str, tmp_path: Path
) -> None:
    """Rows journaled under one spec (as tuples and as a worker's Arrow), read back by a spec
    that added a context feature: stored, the new column empty. A spec that dropped a column
    the rows hold is refused, naming it, and stores nothing."""
    folder = tmp_path / "journal"
    subprocess.run(
        [sys.executable, "-c", CRASH_WITH_WORKERS, backend, str(folder), "5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    text = example_text()
    dropped = text.replace('emotional_density = ["low", "mid", "high"]\n', "")
    dropped = dropped.replace(', emotional_density = "mid"', "")
    with pytest.raises(StoreError, match=r"decisions\.emotional_density"):
        flywheel.open(Spec.from_toml(dropped), store=backend, journal=folder)
    added = Spec.from_toml(text.replace("[context]", '[context]\nmood = "number"'))
    with flywheel.open(added, store=backend, journal=folder) as wheel:
        assert wheel._journal is not None and wheel._journal.replayed == 1 + 2 * 10
        assert counts(wheel) == (6, 5)
        found = wheel.store.query(
            "SELECT count(*) AS n, count(mood) AS moods, count(DISTINCT genre) AS genres"
            " FROM decisions"
        ).to_pylist()
        assert found == [{"n": 6, "moods": 0, "genres": 2}]
