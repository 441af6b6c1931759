"""What every store backend must do. New backends join the ``store`` fixture's params and pass
these tests unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from flywheel.collect.writer import to_arrow
from flywheel.demo import example_spec
from flywheel.errors import StoreError
from flywheel.spec import Spec
from flywheel.store import Store, open_store, tables_for
from tests.conftest import T0

ID = "11111111-2222-4333-8444-{:012x}"


@pytest.fixture(params=["duckdb-file", "duckdb-memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = {"duckdb-file": f"duckdb:///{tmp_path}/s.duckdb", "duckdb-memory": "duckdb:///:memory:"}[
        request.param
    ]
    opened = open_store(example_spec(), url)
    yield opened
    opened.close()


def decisions(spec: Spec, n: int, unit: str | None = "u") -> pa.Table:
    rows = [
        (ID.format(i), T0 + i, unit, "uniform", None, 0.5, "drama", "question", 1, "mid", "medium")
        for i in range(n)
    ]
    return to_arrow(rows, tables_for(spec).decisions)


def signals(spec: Spec, rows: list[tuple[int, str, float, str | None]]) -> pa.Table:
    return to_arrow(
        [(ID.format(i), name, value, None, T0 + 10, key, None) for i, name, value, key in rows],
        tables_for(spec).signals,
    )


def count(store: Store, table: str) -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}").to_pylist()[0]["n"])


def test_write_then_query_round_trips(store: Store) -> None:
    spec = example_spec()
    store.write(
        {"decisions": decisions(spec, 3), "signals": signals(spec, [(0, "completed", 1.0, None)])}
    )
    assert count(store, "decisions") == 3
    row = store.query(
        "SELECT CAST(id AS VARCHAR) AS id, genre, twist_count FROM decisions ORDER BY ts"
    ).to_pylist()[0]
    assert row == {"id": ID.format(0), "genre": "drama", "twist_count": 1}


def test_a_failed_write_stores_nothing(store: Store) -> None:
    spec = example_spec()
    good = decisions(spec, 2)
    bad = signals(spec, [(0, "completed", 1.0, None)]).set_column(
        0, "decision_id", pa.array(["not-a-uuid"])
    )
    with pytest.raises(StoreError, match="nothing was stored"):
        store.write({"decisions": good, "signals": bad})
    assert count(store, "decisions") == 0


def test_idempotency_keys_within_and_across_batches(store: Store) -> None:
    spec = example_spec()
    store.write(
        {
            "signals": signals(
                spec,
                [
                    (0, "x", 1.0, "k1"),
                    (0, "x", 1.0, "k1"),
                    (0, "x", 1.0, None),
                    (0, "x", 1.0, None),
                ],
            )
        }
    )
    store.write({"signals": signals(spec, [(0, "x", 1.0, "k1"), (0, "x", 1.0, "k2")])})
    assert count(store, "signals") == 4


def test_orphans_view(store: Store) -> None:
    spec = example_spec()
    store.write(
        {
            "decisions": decisions(spec, 1),
            "signals": signals(spec, [(0, "c", 1.0, None), (7, "c", 1.0, None)]),
        }
    )
    assert count(store, "orphans") == 1


def test_forget_deletes_by_unit_and_by_decision(store: Store) -> None:
    spec = example_spec()
    store.write(
        {
            "decisions": decisions(spec, 2, unit="gone"),
            "signals": signals(spec, [(0, "c", 1.0, None), (1, "c", 1.0, None)]),
        }
    )
    store.write(
        {
            "decisions": decisions(spec, 1, unit="kept").set_column(
                0, "id", pa.array([ID.format(99)])
            )
        }
    )
    assert store.forget("gone") == {"signals": 2, "edits": 0, "decisions": 2}
    assert (count(store, "decisions"), count(store, "signals")) == (1, 0)
    assert store.forget("nobody") == {"signals": 0, "edits": 0, "decisions": 0}


def test_meta_round_trips_and_overwrites(store: Store) -> None:
    assert store.get_meta("k") is None
    store.set_meta("k", "v1")
    store.set_meta("k", "v2")
    assert store.get_meta("k") == "v2"


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="not available"):
        open_store(example_spec(), "mysql://localhost/x")
    with pytest.raises(StoreError, match="is not a URL"):
        open_store(example_spec(), "flywheel.duckdb")
