"""Decide latency in-process on the example spec (132 allowed combinations).

Each call is timed on its own with ``perf_counter_ns``, the background writer running as in
production. Run: ``.venv/bin/python bench/decide.py``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import report  # type: ignore[import-not-found]

import flywheel
from flywheel.demo import example_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    genres = ["thriller", "romance", "scifi", "drama"]
    rng = random.Random(1)
    contexts = [{"genre": rng.choice(genres)} for _ in range(1000)]
    results = {}
    with (
        tempfile.TemporaryDirectory() as folder,
        flywheel.open(example_spec(), store=f"duckdb:///{Path(folder) / 'b.duckdb'}") as wheel,
    ):
        for _ in range(10_000):  # warm up
            wheel.decide(contexts[0], unit="u")
        for label, unit in (("with_unit", "user-42"), ("without_unit", None)):
            timings = np.empty(args.calls, dtype=np.int64)
            clock = time.perf_counter_ns
            decide = wheel.decide
            for i in range(args.calls):
                ctx = contexts[i % 1000]
                t0 = clock()
                decide(ctx, unit=unit)
                timings[i] = clock() - t0
            micros = timings / 1000
            results[label] = {
                "p50_us": round(float(np.percentile(micros, 50)), 2),
                "p99_us": round(float(np.percentile(micros, 99)), 2),
                "p999_us": round(float(np.percentile(micros, 99.9)), 2),
                "max_us": round(float(micros.max()), 1),
                "calls": args.calls,
            }
    report("decide", results)


if __name__ == "__main__":
    main()
