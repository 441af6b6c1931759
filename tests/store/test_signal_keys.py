"""Idempotency keys: claimed as fixed-width digests, and a store written before that keeps
every key it had claimed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql as pgsql

from flywheel.demo import example_spec
from flywheel.store import duckdb as duckdb_store
from flywheel.store import open_store
from flywheel.store import postgres as postgres_store
from flywheel.store.base import keep_first_claimed
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
