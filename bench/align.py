"""Alignment of 1M decisions with 3M signals, on a DuckDB file.

The data is written straight into the store as Arrow batches (the benchmark measures
alignment, not ingest): decisions spread over 30 days, three signals each of which a tenth
arrive after the 7-day window. Timed: ``wheel.aligned()`` returning every aligned row as an
Arrow table, and ``wheel.summary()``. Run: ``.venv/bin/python bench/align.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from _common import report  # type: ignore[import-not-found]

import flywheel
from flywheel.demo import example_spec
from flywheel.store import tables_for

DAY = 86_400.0


def build(wheel: flywheel.Wheel, decisions: int, per_decision: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    spec = wheel.spec
    tables = tables_for(spec)
    end = time.time()
    chunk = 250_000
    for start in range(0, decisions, chunk):
        n = min(chunk, decisions - start)
        idx = np.arange(start, start + n)
        ids = pa.array([f"00000000-0000-4000-8000-{i:012x}" for i in idx])
        ts = end - rng.uniform(0, 30 * DAY, n)
        columns: dict[str, pa.Array[Any]] = {
            "id": ids,
            "ts": pa.array((ts * 1e6).astype(np.int64), type=tables.decisions.field("ts").type),
            "unit": pa.array([f"u{i % 50_000}" for i in idx]),
            "policy": pa.array(["uniform"] * n),
            "playbook": pa.nulls(n, pa.int64()),
            "propensity": pa.array(np.full(n, 1 / 132)),
        }
        for f in spec.context:
            columns[f.name] = pa.array(rng.choice(np.array(f.values), n))
        for k in spec.knobs:
            columns[k.name] = pa.array(
                rng.choice(np.array(k.values), n), type=tables.decisions.field(k.name).type
            )
        decisions_table = pa.table(columns, schema=tables.decisions)
        m = n * per_decision
        owner = np.repeat(np.arange(n), per_decision)
        late = rng.random(m) < 0.1
        delay = np.where(late, rng.uniform(7.5, 9, m), rng.uniform(0, 7, m)) * DAY
        names = rng.choice(np.array(["completed", "rating", "accepted"]), m)
        values = np.where(names == "rating", rng.integers(1, 6, m), rng.integers(0, 2, m)).astype(
            float
        )
        signals_table = pa.table(
            {
                "decision_id": ids.take(owner),
                "name": pa.array(names),
                "value": pa.array(values),
                "text": pa.nulls(m, pa.string()),
                "ts": pa.array(
                    ((ts[owner] + delay) * 1e6).astype(np.int64),
                    type=tables.signals.field("ts").type,
                ),
                "key": pa.nulls(m, pa.string()),
                "unit": pa.nulls(m, pa.string()),
            },
            schema=tables.signals,
        )
        wheel.store.write({"decisions": decisions_table, "signals": signals_table})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--signals-per-decision", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        flywheel.open(example_spec(), store=f"duckdb:///{Path(folder) / 'b.duckdb'}") as wheel,
    ):
        t0 = time.perf_counter()
        build(wheel, args.decisions, args.signals_per_decision)
        built = time.perf_counter() - t0
        aligned, summarised = [], []
        rows = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            rows = wheel.aligned()
            aligned.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            summary = wheel.summary()
            summarised.append(time.perf_counter() - t0)
        assert rows is not None and rows.num_rows == args.decisions
        report(
            "align",
            {
                "decisions": args.decisions,
                "signals": args.decisions * args.signals_per_decision,
                "build_s": round(built, 2),
                "aligned_s": {
                    "median": round(statistics.median(aligned), 2),
                    "min": round(min(aligned), 2),
                    "max": round(max(aligned), 2),
                },
                "summary_s": {
                    "median": round(statistics.median(summarised), 2),
                    "min": round(min(summarised), 2),
                },
                "summary": summary.as_dict(),
            },
        )


if __name__ == "__main__":
    main()
