"""Idempotency keys: claimed as fixed-width digests, and a store written before that keeps
every key it had claimed."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql as pgsql

from flywheel.demo import example_spec
from flywheel.errors import SpecError
from flywheel.spec import Spec
from flywheel.store import duckdb as duckdb_store
from flywheel.store import open_store
from flywheel.store import postgres as postgres_store
from flywheel.store.base import KEYS_SINCE, keep_first_claimed
from tests.store.test_conformance import count, signals


def _old_duckdb(path: Path) -> None:
    """A DuckDB file as the schema before digests left it: ``k1`` claimed as text."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
        " applied_at TIMESTAMPTZ DEFAULT now())"
    )
    for version, statements in duckdb_store.MIGRATIONS:
        if version < 5:
            con.execute(statements)
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    con.execute("INSERT INTO signal_keys VALUES ('k1'), ('k0')")
    con.close()


def _old_postgres(url: str) -> None:
    conninfo, schema = postgres_store._split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as con:
        con.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(schema)))
        con.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        con.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY,"
            " applied_at timestamptz DEFAULT now())"
        )
        for version, statements in postgres_store.MIGRATIONS:
            if version < 2:
                con.execute(statements)
                con.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])
        con.execute("INSERT INTO signal_keys VALUES ('k1'), ('k0')")


@pytest.fixture(params=["duckdb", "postgresql"])
def old_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
        _old_postgres(url)
    else:
        _old_duckdb(tmp_path / "old.duckdb")
        url = f"duckdb:///{tmp_path}/old.duckdb"
    yield url


def test_keys_claimed_before_the_digests_stay_claimed(old_store_url: str) -> None:
    spec = example_spec()
    store = open_store(spec, old_store_url)
    try:
        assert count(store, "signal_keys") == 2
        store.write(
            {
                "signals": signals(
                    spec, [(0, "x", 1.0, "k1"), (0, "x", 2.0, "k2"), (0, "x", 3.0, "k2")]
                )
            }
        )
        assert store.query("SELECT value FROM signals").to_pylist() == [{"value": 2.0}]
        store.write({"signals": signals(spec, [(0, "x", 4.0, "k2"), (0, "x", 5.0, "k0")])})
        assert count(store, "signals") == 1
        assert count(store, "signal_keys") == 3
    finally:
        store.close()
    reopened = open_store(spec, old_store_url)  # migrated once: the keys are still there
    try:
        reopened.write({"signals": signals(spec, [(0, "x", 6.0, "k1"), (0, "x", 7.0, "k3")])})
        assert count(reopened, "signals") == 2
    finally:
        reopened.close()


def _reference(keys: list[str | None], claimed: set[str]) -> list[int]:
    """The rows to keep, one at a time: no key, or the first row of a claimed key."""
    kept, seen = [], set()
    for row, key in enumerate(keys):
        if key is None:
            kept.append(row)
        elif key in claimed and key not in seen:
            kept.append(row)
            seen.add(key)
    return kept


def test_keep_first_claimed_keeps_keyless_rows_and_each_claimed_keys_first() -> None:
    rng = random.Random(7)
    for _ in range(500):
        pool = [f"k{i}" for i in range(rng.randrange(1, 12))]
        keys = [None if rng.random() < 0.2 else rng.choice(pool) for _ in range(rng.randrange(30))]
        distinct = sorted({k for k in keys if k is not None})
        claimed = {k for k in distinct if rng.random() < 0.7}
        if rng.random() < 0.3:
            claimed = set(distinct)  # the common case: everything new
        rows = pa.table({"row": list(range(len(keys))), "key": pa.array(keys, pa.string())})
        kept = keep_first_claimed(
            rows, rows.column("key").combine_chunks(), pa.array(sorted(claimed), pa.string())
        )
        assert kept.column("row").to_pylist() == _reference(keys, claimed)


@pytest.fixture(params=["duckdb", "postgresql"])
def store_url_of(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"duckdb:///{tmp_path}/keys.duckdb"


_SENT: dict[str, list[list[str]]] = {}


def _window_began(url: str, hours_ago: float) -> None:
    """Move the start of the current generation of keys back, as time passing would."""
    spec = _hourly()
    store = open_store(spec, url)
    try:
        store.set_meta(KEYS_SINCE, repr(time.time() - hours_ago * 3600))
    finally:
        store.close()


def _hourly() -> Spec:
    raw = dict(example_spec().raw)
    raw["storage"] = {**raw.get("storage", {}), "dedup_window": "1h"}
    return Spec.from_dict(raw)


def _send(url: str, keys: list[str]) -> list[str]:
    """Write one signal a key (its value: the write's number, then its place); the values of
    the signals stored so far."""
    spec = _hourly()
    store = open_store(spec, url)
    try:
        sends = len(_SENT.setdefault(url, []))
        _SENT[url].append(keys)
        rows = [(0, "x", 10.0 * sends + i, k) for i, k in enumerate(keys)]
        written = store.write({"signals": signals(spec, rows)})
        kept = written["signals"]
        assert kept is None or len(kept) == len(keys)
        found = store.query("SELECT value FROM signals ORDER BY value").to_pylist()
        return [f"{int(r['value']) // 10}.{int(r['value']) % 10}" for r in found]
    finally:
        store.close()


def test_keys_are_kept_for_the_window_and_then_forgotten(store_url_of: str) -> None:
    """A key is a duplicate for at least the window (after the generations rotate once, it is
    found in the previous one) and is stored again once two windows have passed: the check
    never reaches keys older than that, however many the store holds."""
    url = store_url_of  # below, "2.1": the second key of the third write was stored
    assert _send(url, ["k1"]) == ["0.0"]
    _window_began(url, 1.5)  # a window has passed: k1's generation becomes the previous one
    assert _send(url, ["k1", "k2"]) == ["0.0", "1.1"]  # k1 still a duplicate; k2 new
    assert _send(url, ["k2", "k1"]) == ["0.0", "1.1"]
    _window_began(url, 1.2)  # k2's generation becomes the previous one, k1's is dropped
    assert _send(url, ["k1", "k2"]) == ["0.0", "1.1", "3.0"]  # k1 new again; k2 still seen
    _window_began(url, 2.5)  # two windows without a write: every key is forgotten
    assert _send(url, ["k2", "k1", "k1"]) == ["0.0", "1.1", "3.0", "4.0", "4.1"]


def test_a_spec_names_the_window_and_refuses_a_bad_one() -> None:
    assert _hourly().dedup_window_seconds == 3600
    assert example_spec().dedup_window_seconds == 7 * 86400
    raw = dict(example_spec().raw)
    raw["storage"] = {"dedup_window": "soon"}
    with pytest.raises(SpecError) as caught:
        Spec.from_dict(raw)
    assert "storage.dedup_window" in str(caught.value)
