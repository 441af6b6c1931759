"""The learn cycle: align + aggregate + fit + publish, on 1M and on 10M decisions.

Decisions and signals are written straight into a DuckDB file as Arrow (the same generator as
bench/align.py: three signals per decision over 30 days), then ``wheel.learn()`` is timed end
to end, with the query and fit shares from its diagnostics. Each size also times the
seatbelt's gate with a real recent window: an incumbent learned as of three days ago, then a
cycle as of now (about a tenth of the rows are recent), with the seatbelt on and off in turn.
Run: ``.venv/bin/python bench/learn.py`` (``--decisions 1000000`` for the small case only).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import report  # type: ignore[import-not-found]
from align import build  # type: ignore[import-not-found]

import flywheel
from flywheel.demo import example_spec
from flywheel.spec import Spec


def _gate(wheel: flywheel.Wheel, folder: str, repeat: int) -> dict[str, float]:
    """Median seconds of a cycle judged by the gate (seatbelt on) and of the same without."""
    now = time.time()
    specs = {
        "on": wheel.spec,
        "off": Spec.from_dict({**wheel.spec.raw, "seatbelt": {"enabled": False}}),
    }
    wheel.close()
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(repeat):
        for name, spec in specs.items():
            with flywheel.open(
                spec, store=f"duckdb:///{Path(folder) / 'b.duckdb'}", refresh=0
            ) as w:
                w.learn(as_of=now - 3 * 86400, seed=i, force=True)  # the incumbent
                started = time.perf_counter()
                w.learn(as_of=now, seed=i, force=True)
                seconds[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(v), 2) for name, v in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for n in args.decisions:
        with (
            tempfile.TemporaryDirectory() as folder,
            flywheel.open(
                example_spec(), store=f"duckdb:///{Path(folder) / 'b.duckdb'}", refresh=0
            ) as wheel,
        ):
            t0 = time.perf_counter()
            build(wheel, n, 3)
            built = time.perf_counter() - t0
            seconds, fits = [], []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                result = wheel.learn(seed=i, force=True)
                seconds.append(time.perf_counter() - t0)
                assert result.published, result.reason
                fits.append(result.diagnostics["fit_seconds"])
            gate = _gate(wheel, folder, args.repeat)
            results[f"{n:_}"] = {
                "decisions": n,
                "signals": 3 * n,
                "build_s": round(built, 1),
                "learn_s": {
                    "median": round(statistics.median(seconds), 2),
                    "min": round(min(seconds), 2),
                    "max": round(max(seconds), 2),
                },
                "fit_s_median": round(statistics.median(fits), 3),
                "cells": result.diagnostics["segments"]
                and wheel.playbook.meta["training"]["cells"],  # type: ignore[union-attr]
                "rows_with_reward": wheel.playbook.meta["training"]["rows"],  # type: ignore[union-attr]
                "gate_cycle_s": gate,
            }
            print(results[f"{n:_}"], flush=True)
    report("learn", results)


if __name__ == "__main__":
    main()
