"""Decide latency in-process: the cold start, and a learned playbook on ~150 and 6,561 combinations.

Each call is timed on its own with ``perf_counter_ns``, the background writer running as in
production. The learned cases are timed twice: with nothing else running, and while online
updates run back to back on another thread (the worst case: the SDK's own thread runs one
every 100 results or 5 s). Run: ``.venv/bin/python bench/decide.py``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import report  # type: ignore[import-not-found]

import flywheel
from flywheel.demo import StoryWorld, example_spec

LARGE: dict[str, Any] = {
    "knobs": {f"k{i}": ["a", "b", "c"] for i in range(8)},  # 3^8 = 6,561 combinations
    "context": {"segment": ["s1", "s2", "s3"]},
    "reward": {"formula": "converted", "window": "1000d"},
}


def measure(
    wheel: flywheel.Wheel, contexts: list[dict[str, Any]], calls: int, unit: str | None
) -> dict[str, float]:
    for i in range(5_000):  # warm up (and tabulate lazily computed segments)
        wheel.decide(contexts[i % len(contexts)], unit=unit)
    timings = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    decide = wheel.decide
    for i in range(calls):
        ctx = contexts[i % len(contexts)]
        t0 = clock()
        decide(ctx, unit=unit)
        timings[i] = clock() - t0
    micros = timings / 1000
    return {
        "p50_us": round(float(np.percentile(micros, 50)), 2),
        "p99_us": round(float(np.percentile(micros, 99)), 2),
        "p999_us": round(float(np.percentile(micros, 99.9)), 2),
        "max_us": round(float(micros.max()), 1),
        "calls": calls,
    }


def teach(wheel: flywheel.Wheel, contexts: list[dict[str, Any]], n: int, reward: Any) -> None:
    """Some simulated traffic, then a learn cycle, so decide serves from a playbook, then as
    much traffic again, for online updates to learn from."""
    rng = random.Random(2)
    name = "completed" if "completed" in wheel.spec.signals else "converted"

    def traffic() -> None:
        for i in range(n):
            ctx = contexts[i % len(contexts)]
            d = wheel.decide(ctx)
            wheel.signal(d, name, rng.random() < reward(ctx, d.params))

    traffic()
    result = wheel.learn(seed=1)
    assert result.published, result.reason
    traffic()


def with_updates(
    wheel: flywheel.Wheel, contexts: list[dict[str, Any]], calls: int, unit: str | None
) -> dict[str, float]:
    """``measure`` while another thread runs online updates back to back."""
    stop = threading.Event()
    seconds: list[float] = []

    def updating() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            assert wheel.update()
            seconds.append(time.perf_counter() - started)

    thread = threading.Thread(target=updating)
    thread.start()
    try:
        found = measure(wheel, contexts, calls, unit)
    finally:
        stop.set()
        thread.join()
    return {
        **found,
        "online_updates": len(seconds),
        "update_ms_median": round(float(np.median(seconds)) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(1)
    genres = ["thriller", "romance", "scifi", "drama"]
    stories = [{"genre": rng.choice(genres)} for _ in range(1000)]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        with flywheel.open(
            example_spec(),
            store=f"duckdb:///{Path(folder) / 'a.duckdb'}",
            refresh=0,
            background=False,  # the updates are run below, where they are measured
        ) as wheel:
            results["cold_start_with_unit"] = measure(wheel, stories, args.calls, "user-42")
            results["cold_start_without_unit"] = measure(wheel, stories, args.calls, None)
            world = StoryWorld(3)
            teach(wheel, stories, 5_000, world.completion)
            results["learned_132_combinations"] = measure(wheel, stories, args.calls, "user-42")
            results["learned_132_combinations_online_updates"] = with_updates(
                wheel, stories, args.calls, "user-42"
            )
        segments = [{"segment": rng.choice(["s1", "s2", "s3"])} for _ in range(1000)]
        with flywheel.open(
            LARGE, store=f"duckdb:///{Path(folder) / 'b.duckdb'}", refresh=0, background=False
        ) as wheel:
            teach(
                wheel,
                segments,
                20_000,
                lambda ctx, p: 0.2 + 0.3 * (p["k0"] == "a") * (p["k1"] == "b"),
            )
            results["learned_6561_combinations"] = measure(wheel, segments, args.calls, "user-42")
            results["learned_6561_combinations_online_updates"] = with_updates(
                wheel, segments, args.calls, "user-42"
            )
    report("decide", results)


if __name__ == "__main__":
    main()
