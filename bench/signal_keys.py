"""The duplicate check's cost as the store grows: one store write of 5,000 new keyed signals
(claims, rows, commit) on a DuckDB store already holding N keyed signals, their keys either
inside the deduplication window (claimed in the current generation: what every write is
checked against) or older than it (forgotten: the store holds the signals, the check does not
hold their keys). Both cases side by side in one run, for each N; medians of 20 writes.

Run: ``.venv/bin/python bench/signal_keys.py [--sizes 0,5000000,20000000]`` (a temporary
folder, removed at the end).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import report  # type: ignore[import-not-found]

from flywheel.collect.writer import to_arrow
from flywheel.demo import example_spec
from flywheel.store import open_store, tables_for

ID = "6f1c2a5e-8d4b-4c3a-9e2f-1a2b3c4d5e6f"


def fill(store: Any, n: int, in_window: bool) -> None:
    """``n`` keyed signals written in bulk, their digests claimed when ``in_window``."""
    con = store._con
    con.execute(
        "INSERT INTO signals (decision_id, name, value, ts, key) SELECT ?, 'rating', 1 + i % 5,"
        " now(), md5(CAST(i AS VARCHAR)) FROM range(?) t(i)",
        [ID, n],
    )
    if in_window:
        con.execute(
            "INSERT INTO signal_keys SELECT CAST(md5(md5(CAST(i AS VARCHAR))) AS UUID)"
            " FROM range(?) t(i)",
            [n],
        )
    con.execute("CHECKPOINT")


def writes(store: Any, repeat: int = 20, batch: int = 5000) -> float:
    """The median milliseconds of a write of ``batch`` new keyed signals."""
    schema = tables_for(example_spec()).signals
    took = []
    for _ in range(repeat):
        rows = [
            (ID, "rating", 3.0, None, time.time(), uuid.uuid4().hex, None) for _ in range(batch)
        ]
        table = to_arrow(rows, schema)
        began = time.perf_counter()
        store.write({"signals": table})
        took.append(time.perf_counter() - began)
    return round(1000 * statistics.median(took), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="0,5000000,20000000")
    args = parser.parse_args()
    spec = example_spec()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            row: dict[str, Any] = {"stored_keyed_signals": n}
            for in_window in (True, False):
                path = Path(tmp) / f"keys-{n}-{in_window}.duckdb"
                store = open_store(spec, f"duckdb:///{path}")
                try:
                    fill(store, n, in_window)
                    row["in_window_ms" if in_window else "expired_ms"] = writes(store)
                finally:
                    store.close()
                    path.unlink()
            row["ratio"] = round(row["in_window_ms"] / row["expired_ms"], 2)
            results.append(row)
            print(row, flush=True)
    report("signal_keys", {"batch": 5000, "rows": results})


if __name__ == "__main__":
    main()
