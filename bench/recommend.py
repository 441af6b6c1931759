"""Learning a big knob: an 80-item recommender log (bench/recommender.py) on a DuckDB file.

The model has an 80-value knob, four hashed user features of 30 values and a 3-value
position, every knob × feature pair: 10,044 parameters, kept as a sparse posterior. Timed in
a fresh process each, with its peak memory (the whole process, imports included):

- ``learn``: one learn cycle on 10,000 logged rows and on 1,000,000 (targets: ≤ 3 s and
  ≤ 500 MB; ≤ 20 s);
- ``open``: opening a wheel whose newest playbook is that of the 10,000-row cycle (2,000
  segments tabulated; target ≤ 0.5 s and ≤ 300 MB: the peak once open), then a first
  ``decide`` for a segment it did not tabulate (which draws the posterior draws the playbook
  stores as their seed: the peak after it is reported beside).

Memory depends on what else the environment holds: pyarrow imports pandas, when installed,
the first time it builds an array. Flywheel does not need pandas; measure in an environment
with Flywheel alone (``python -m venv .venv-plain && .venv-plain/bin/pip install -e .``) for
the figures of a plain install.

Run: ``.venv/bin/python bench/recommend.py`` (``--rows 10000`` for the small case only).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from _common import report  # type: ignore[import-not-found]
from recommender import FEATURES, POSITIONS, World, hashed, item_name  # type: ignore[import-not-found]

import flywheel
from flywheel.store import tables_for

HERE = Path(__file__).parent


def build(path: Path, rows: int, seed: int = 0) -> dict[str, Any]:
    """Write ``rows`` impressions of a skewed logging policy straight into the store."""
    world = World(seed)
    spec: dict[str, Any] = world.spec()
    spec["storage"] = {"url": f"duckdb:///{path}"}
    log = world.log(rows, "thompson", seed)
    with flywheel.open(spec, refresh=0) as wheel:
        tables = tables_for(wheel.spec)
        end = time.time() - 2 * 86_400  # every window has closed
        ts = end - np.arange(rows)[::-1] * (30 * 86_400 / rows)
        chunk = 250_000
        for start in range(0, rows, chunk):
            part = slice(start, min(rows, start + chunk))
            n = part.stop - part.start
            ids = pa.array([f"00000000-0000-4000-8000-{i:012x}" for i in range(start, part.stop)])
            stamp = pa.array(
                (ts[part] * 1e6).astype(np.int64), type=tables.decisions.field("ts").type
            )
            columns: dict[str, Any] = {
                "id": ids,
                "ts": stamp,
                "unit": pa.array([f"u{i % 50_000}" for i in range(start, part.stop)]),
                "policy": pa.array(["ranker"] * n),
                "playbook": pa.nulls(n, pa.int64()),
                "propensity": pa.array(log.propensity[part]),
            }
            names = {f: np.array([hashed(f, v) for v in range(world.levels)]) for f in FEATURES}
            for f in FEATURES:
                columns[f] = pa.array(names[f][log.codes[f][part]])
            columns["position"] = pa.array(
                np.array(POSITIONS)[log.codes["position"][part]],
                type=tables.decisions.field("position").type,
            )
            items = np.array([item_name(i) for i in range(world.items)])
            columns["item"] = pa.array(items[log.items[part]])
            decisions = pa.table(columns, schema=tables.decisions)
            signals = pa.table(
                {
                    "decision_id": ids,
                    "name": pa.array(["click"] * n),
                    "value": pa.array(log.clicks[part].astype(float)),
                    "text": pa.nulls(n, pa.string()),
                    "ts": stamp,
                    "key": pa.nulls(n, pa.string()),
                    "unit": pa.nulls(n, pa.string()),
                },
                schema=tables.signals,
            )
            wheel.store.write({"decisions": decisions, "signals": signals})
    return spec


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(task: str, spec_json: str) -> None:
    """One measurement in this (fresh) process; prints JSON."""
    spec = json.loads(spec_json)
    started = time.perf_counter()
    if task == "learn":
        # as `flywheel learn` opens it: a wheel that serves would draw the served version's
        # posterior draws again beside the cycle (see the open measurement)
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            begun = time.perf_counter()
            result = wheel.learn(force=True, seed=0)
            seconds = time.perf_counter() - begun
            out = {
                "seconds": seconds,
                "published": result.published,
                "reason": result.reason,
                "diagnostics": {
                    k: result.diagnostics.get(k)
                    for k in ("parameters", "fit_seconds", "iterations", "segments")
                },
            }
    else:
        wheel = flywheel.open(spec, refresh=0)
        seconds = time.perf_counter() - started
        opened_mb = _peak_mb()
        context = {f: hashed(f, 3) for f in FEATURES} | {"position": 1}
        begun = time.perf_counter()
        wheel.decide(context, unit="someone")
        out = {
            "seconds": seconds,
            "opened_mb": opened_mb,
            "first_decide_seconds": time.perf_counter() - begun,
        }
        wheel.close()
    out["peak_mb"] = _peak_mb()
    print(json.dumps(out))


def measure(task: str, spec: dict[str, Any]) -> dict[str, Any]:
    found = subprocess.run(
        [sys.executable, __file__, "--child", task, json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        cwd=HERE,
    )
    result: dict[str, Any] = dict(json.loads(found.stdout.strip().splitlines()[-1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    results: dict[str, Any] = {}
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as folder:
            spec = build(Path(folder) / "r.duckdb", rows)
            runs = [measure("learn", spec) for _ in range(args.repeat)]
            entry: dict[str, Any] = {
                "learn_seconds": round(statistics.median(r["seconds"] for r in runs), 2),
                "learn_seconds_all": [round(r["seconds"], 2) for r in runs],
                "learn_peak_mb": round(max(r["peak_mb"] for r in runs)),
                "diagnostics": runs[-1]["diagnostics"],
            }
            opened = [measure("open", spec) for _ in range(args.repeat)]
            entry["open_seconds"] = round(statistics.median(r["seconds"] for r in opened), 3)
            entry["open_peak_mb"] = round(max(r["opened_mb"] for r in opened))
            entry["first_decide_peak_mb"] = round(max(r["peak_mb"] for r in opened))
            entry["first_decide_seconds"] = round(
                statistics.median(r["first_decide_seconds"] for r in opened), 4
            )
            results[f"{rows:,} rows"] = entry
            print(rows, json.dumps(entry), flush=True)
    report("recommend", results)


if __name__ == "__main__":
    main()
