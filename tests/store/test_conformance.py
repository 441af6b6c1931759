"""What every store backend must do. New backends join the ``store`` fixture's params and pass
these tests unchanged."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
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


@pytest.fixture(params=["duckdb-file", "duckdb-memory", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = {
            "duckdb-file": f"duckdb:///{tmp_path}/s.duckdb",
            "duckdb-memory": "duckdb:///:memory:",
        }[request.param]
    opened = open_store(example_spec(), url)
    yield opened
    opened.close()


def decisions(spec: Spec, n: int, unit: str | None = "u") -> pa.Table:
    rows = [
        (ID.format(i), T0 + i, unit, "uniform", None, 0.5, "drama", "question", 1, "mid", "medium")
        for i in range(n)
    ]
    return to_arrow(rows, tables_for(spec).decisions)


def signals(spec: Spec, rows: Sequence[tuple[int, str, float, str | None]]) -> pa.Table:
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


def test_decisions_with_name_based_ids_are_stored_once(store: Store) -> None:
    """Version-5 UUIDs (derived from, say, an OTLP span sent again) are stored once, within a
    batch and across batches; other decisions are appended as given."""
    spec = example_spec()
    named = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"span-{i}")) for i in (0, 1, 1)]
    once = decisions(spec, 3).set_column(0, "id", pa.array(named))
    store.write({"decisions": once})
    store.write({"decisions": once.slice(0, 2)})
    assert count(store, "decisions") == 2
    store.write({"decisions": decisions(spec, 2)})
    store.write({"decisions": decisions(spec, 2)})  # random (version 4) ids: as given
    assert count(store, "decisions") == 6
    store.forget("u")  # forgetting a unit forgets that its decisions were seen
    store.write({"decisions": once})
    assert count(store, "decisions") == 2


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


def test_playbooks_are_numbered_in_order_and_immutable(store: Store) -> None:
    assert store.latest_version() is None
    assert store.playbook() is None
    assert store.publish("d1", '{"n": 1}', b"\x00one") == 1
    assert store.publish("d1", '{"n": 2}', b"\x00two") == 2
    assert store.latest_version() == 2
    assert store.playbook() == (2, '{"n": 2}', b"\x00two")
    assert store.playbook(1) == (1, '{"n": 1}', b"\x00one")
    assert store.playbook(3) is None
    listed = store.playbook_list()
    assert [(v, m) for v, _, m in listed] == [(2, '{"n": 2}'), (1, '{"n": 1}')]
    assert all(isinstance(created, datetime) for _, created, _ in listed)


def test_queries_take_named_and_positional_parameters_and_keep_types(store: Store) -> None:
    spec = example_spec()
    store.write({"decisions": decisions(spec, 3), "signals": signals(spec, [(1, "x", 2.5, None)])})
    as_of = datetime.fromtimestamp(T0 + 1, tz=UTC)
    named = store.query(
        "SELECT count(*) AS n, max(ts) AS last, 100% 7 AS m, '50%' AS pct FROM decisions"
        " WHERE ts <= $as_of AND genre = $genre",
        {"as_of": as_of, "genre": "drama"},
    )
    assert named.to_pylist() == [{"n": 2, "last": as_of, "m": 2, "pct": "50%"}]
    last = named.schema.field("last").type
    assert pa.types.is_timestamp(last)
    assert (last.unit, last.tz) in {("us", "UTC"), ("us", "Etc/UTC")}
    positional = store.query(
        "SELECT CAST(d.id AS VARCHAR) AS id, s.value, d.propensity > ? AS likely"
        " FROM decisions d JOIN signals s ON s.decision_id = d.id WHERE s.name = ?",
        [0.25, "x"],
    )
    assert positional.to_pylist() == [{"id": ID.format(1), "value": 2.5, "likely": True}]


def test_latest_value_per_group_skips_nulls(store: Store) -> None:
    """``arg_max`` / ``arg_min`` (the alignment's ``last`` and ``first``) mean the same
    everywhere: the value at the newest (oldest) time, rows with a NULL value skipped."""
    spec = example_spec()
    rows = [
        (ID.format(0), "x", 1.0, None, T0 + 1, None, None),
        (ID.format(0), "x", None, None, T0 + 3, None, None),
        (ID.format(0), "x", 3.0, None, T0 + 2, None, None),
        (ID.format(0), "y", 9.0, None, T0 + 9, None, None),
    ]
    store.write({"signals": to_arrow(rows, tables_for(spec).signals)})
    got = store.query(
        "SELECT arg_max(value, ts) FILTER (WHERE name = 'x') AS last,"
        " arg_min(value, ts) FILTER (WHERE name = 'x') AS first,"
        " arg_max(value, ts) AS any_last FROM signals"
    ).to_pylist()
    assert got == [{"last": 3.0, "first": 1.0, "any_last": 9.0}]


def test_seatbelt_tables_append_with_a_shared_sequence(store: Store) -> None:
    at = datetime.fromtimestamp(T0, tz=UTC)
    quarantine = pa.table(
        {
            "decision_id": [ID.format(0), ID.format(0), ID.format(1)],
            "ts": pa.array([at] * 3, type=pa.timestamp("us", tz="UTC")),
            "action": ["quarantined", "released", "quarantined"],
            "rules": ["a > 0", None, "b"],
            "actor": ["t", "t", "t"],
        }
    )
    store.write({"quarantine": quarantine.slice(0, 2)})
    store.write({"quarantine": quarantine.slice(2)})
    state = store.query(
        "SELECT CAST(decision_id AS VARCHAR) AS id, action FROM quarantine_state ORDER BY 1"
    ).to_pylist()
    assert state == [
        {"id": ID.format(0), "action": "released"},
        {"id": ID.format(1), "action": "quarantined"},
    ]
    audit = pa.table(
        {
            "ts": pa.array([at], type=pa.timestamp("us", tz="UTC")),
            "action": ["halt"],
            "reason": ["why"],
            "detail": [None],
            "actor": ["t"],
        },
        schema=pa.schema(
            [pa.field("ts", pa.timestamp("us", tz="UTC"))]
            + [pa.field(name, pa.string()) for name in ("action", "reason", "detail", "actor")]
        ),
    )
    store.write({"audit": audit})
    seqs = store.query(
        "SELECT seq FROM quarantine UNION ALL SELECT seq FROM audit ORDER BY 1"
    ).column("seq")
    assert len(set(seqs.to_pylist())) == 4


def test_text_survives_quotes_commas_newlines_and_empty_strings(store: Store) -> None:
    spec = example_spec()
    tricky = ['say "hi", then\nleave', "", None, "naïve ✓"]
    rows = [(ID.format(i), T0, None, "draft", text, None, 0.5) for i, text in enumerate(tricky)]
    store.write({"edits": to_arrow(rows, tables_for(spec).edits)})
    got = store.query("SELECT draft, final FROM edits ORDER BY decision_id").to_pylist()
    assert [r["final"] for r in got] == tricky


def test_update_meta_applies_each_change_to_the_value_before_it(store: Store) -> None:
    assert store.update_meta("n", lambda old: str(int(old or "0") + 1)) == "1"
    threads = [
        threading.Thread(
            target=lambda: [
                store.update_meta("n", lambda old: str(int(old or "0") + 1)) for _ in range(25)
            ]
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get_meta("n") == "101"
