"""Ingest: signals per second into the embedded store through ``signal()`` and ``log()``.

Rates count from the first call until ``flush()`` returned, so every counted row is durable.
Default batching (50,000 rows or 1 s). Run: ``.venv/bin/python bench/ingest.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import report  # type: ignore[import-not-found]

import flywheel
from flywheel.demo import example_spec


def signal_rate(n: int, same_process: bool = True) -> float:
    """``same_process``: the decisions were made by this wheel (the usual embedded case);
    otherwise by an earlier one, so every id goes through the full pattern check."""
    with tempfile.TemporaryDirectory() as folder:
        store = f"duckdb:///{Path(folder) / 'b.duckdb'}"
        with flywheel.open(example_spec(), store=store) as earlier:
            ids = [earlier.decide({"genre": "drama"}).id for _ in range(1000)]
        with flywheel.open(example_spec(), store=store) as wheel:
            if same_process:
                ids = [wheel.decide({"genre": "drama"}).id for _ in range(1000)]
            wheel.flush()
            start = time.perf_counter()
            for i in range(n):
                wheel.signal(ids[i % 1000], "completed", i & 1)
            wheel.flush()
            elapsed = time.perf_counter() - start
            assert wheel.summary().signals == n
            assert wheel.summary().orphans == 0
        return n / elapsed


def log_rate(n: int) -> float:
    params = {
        "opening_type": "suspense",
        "twist_count": 2,
        "emotional_density": "mid",
        "length": "long",
    }
    with tempfile.TemporaryDirectory() as folder:
        with flywheel.open(example_spec(), store=f"duckdb:///{Path(folder) / 'b.duckdb'}") as wheel:
            start = time.perf_counter()
            for i in range(n):
                wheel.log(context={"genre": "drama"}, params=params, results={"completed": i & 1})
            wheel.flush()
            elapsed = time.perf_counter() - start
            assert wheel.summary().decisions == n
        return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    signals = [signal_rate(args.signals) for _ in range(args.repeat)]
    foreign = [signal_rate(args.signals, same_process=False) for _ in range(args.repeat)]
    logs = [log_rate(args.rows) for _ in range(args.repeat)]
    report(
        "ingest",
        {
            "signal_per_s": {
                "median": round(statistics.median(signals)),
                "min": round(min(signals)),
                "max": round(max(signals)),
            },
            "signal_per_s_ids_from_another_process": {
                "median": round(statistics.median(foreign)),
                "min": round(min(foreign)),
                "max": round(max(foreign)),
            },
            "log_rows_per_s": {
                "median": round(statistics.median(logs)),
                "min": round(min(logs)),
                "max": round(max(logs)),
            },
            "signals_per_run": args.signals,
            "rows_per_run": args.rows,
            "repeat": args.repeat,
        },
    )


if __name__ == "__main__":
    main()
