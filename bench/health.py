"""``wheel.health()`` over 28 days of a DuckDB file holding 10M decisions and 30M signals.

Built (written straight into the store as Arrow batches of 500k decisions; the benchmark
measures health, not ingest), with the example spec (``flywheel.demo.example_spec``):

* decisions spread evenly over the 30 days up to a fixed moment ``END``, appended in time
  order, each with a random version-4 UUID id, one of 200,000 units (32-char hex pseudonyms,
  some far more active than others) and a genre drawn with the story product's weights;
* a learn cycle every three days: versions 1..9 learned at days 3, 6, ..., 27 and serve from
  an hour later. Before version 1 decisions are ``uniform`` (playbook null, propensity
  1/arms); after it ``thompson``, with playbook the version serving then (propensity 0.3,
  a third of them on one favoured arm);
* ``--signals-per-decision`` signals per decision on average (3: 30M in all):
  ``completed`` for 95% of decisions (0/1, its rate rising with the version; delay
  exponential with a 2 h mean), ``rating`` for 20% (1..5; 1 day mean) and ``accepted`` (0/1;
  5 min mean) for the rest. A tenth of all signals arrive after the 7-day window;
* the nine playbooks: only their ``meta`` (the training cut-off and rows) is read by
  health(), so the payload is a placeholder. They are published after the wheel is opened,
  so the wheel never loads them and serves its cold start.

Timed: ``wheel.health(window="28d", as_of=END)`` on that wheel, ``--repeat`` times (median,
min, max). With ``--keep PATH`` the store is built once at PATH and reused by later runs
(sizes taken from the store): the wheel cannot be opened on a store holding placeholder
playbooks, so a reused store is timed with ``flywheel.health.health(store, spec, ...)`` on
``flywheel.store.open_store`` (the same statements; ``wheel.health`` adds a flush).

Run: ``.venv/bin/python bench/health.py`` (``--decisions 200000`` for a quick check).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from _common import report  # type: ignore[import-not-found]

import flywheel
from flywheel.demo import example_spec
from flywheel.health import Health, health
from flywheel.spec import Spec
from flywheel.store import Store, open_store, tables_for

DAY = 86_400.0
HOUR = 3_600.0
END = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # fixed: a kept store stays valid
SPAN_DAYS = 30
EVERY_DAYS = 3  # a learn cycle every three days
VERSIONS = 9  # learned at days 3, 6, ..., 27
SERVE_LAG = HOUR  # a version serves this long after its training cut-off
UNITS = 200_000
CHUNK = 500_000
LATE = 0.1  # share of signals arriving after the reward window


def cut_day(version: int) -> float:
    """Days after the first decision at which ``version`` learned."""
    return float(EVERY_DAYS * version)


def unit_pool() -> pa.Array[Any]:
    """The units' pseudonyms: 32 lowercase hex characters, like the store's."""
    return pa.array(
        [hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).hexdigest() for i in range(UNITS)]
    )


def uuids(rng: np.random.Generator, first: int, n: int) -> pa.Array[Any]:
    """``n`` version-4 UUIDs, random but for the index that keeps them unique."""
    a = rng.integers(0, 1 << 32, n, dtype=np.uint64).tolist()
    b = rng.integers(0, 1 << 16, n, dtype=np.uint64).tolist()
    c = rng.integers(0, 1 << 12, n, dtype=np.uint64).tolist()
    d = rng.integers(0x8000, 0xC000, n, dtype=np.uint64).tolist()
    return pa.array(
        [f"{a[j]:08x}-{b[j]:04x}-4{c[j]:03x}-{d[j]:04x}-{first + j:012x}" for j in range(n)]
    )


def arms(spec: Spec) -> dict[str, np.ndarray]:
    """Each knob's value in every allowed combination (the rules read no context here)."""
    context = {f.name: f.values[0] for f in spec.context}
    rows = [spec.space.params(int(r)) for r in spec.space.allowed(context)]
    return {k.name: np.array([r[k.name] for r in rows]) for k in spec.knobs}


def build(wheel: flywheel.Wheel, decisions: int, per_decision: float, seed: int = 1) -> int:
    """Write the decisions and signals, then publish the playbooks; return signals written."""
    rng = np.random.default_rng(seed)
    spec = wheel.spec
    tables = tables_for(spec)
    ts_type = tables.decisions.field("ts").type
    units = unit_pool()
    activity = rng.lognormal(0.0, 1.2, UNITS)
    activity /= activity.sum()
    combos = arms(spec)
    n_arms = len(next(iter(combos.values())))
    favoured = int(rng.integers(n_arms))
    begin = END - SPAN_DAYS * DAY
    signals = 0
    for first in range(0, decisions, CHUNK):
        n = min(CHUNK, decisions - first)
        # decisions, in time order across chunks
        lo, hi = first / decisions, (first + n) / decisions
        ts = begin + np.sort(rng.uniform(lo, hi, n)) * SPAN_DAYS * DAY
        day = (ts - begin) / DAY
        version = np.floor((day - SERVE_LAG / DAY) / EVERY_DAYS).astype(np.int64)
        version = np.clip(version, 0, VERSIONS)
        learned = version > 0
        arm = rng.integers(0, n_arms, n)
        arm[learned & (rng.random(n) < 1 / 3)] = favoured
        ids = uuids(rng, first, n)
        columns: dict[str, pa.Array[Any]] = {
            "id": ids,
            "ts": pa.array((ts * 1e6).astype(np.int64), type=ts_type),
            "unit": units.take(rng.choice(UNITS, n, p=activity)),
            "policy": pa.array(np.where(learned, "thompson", "uniform")),
            "playbook": pa.array(version, mask=~learned),
            "propensity": pa.array(np.where(learned, 0.3, 1 / n_arms)),
        }
        for f in spec.context:
            weights = (0.35, 0.3, 0.2, 0.15) if len(f.values) == 4 else None
            columns[f.name] = pa.array(rng.choice(np.array(f.values), n, p=weights))
        for k in spec.knobs:
            columns[k.name] = pa.array(
                combos[k.name][arm], type=tables.decisions.field(k.name).type
            )
        decisions_table = pa.table(columns, schema=tables.decisions)
        # signals: completed for 95%, rating for 20%, accepted making up the rest
        m = round(n * per_decision)
        n_completed = min(m, round(0.95 * n))
        n_rating = min(m - n_completed, round(0.2 * n))
        n_accepted = m - n_completed - n_rating
        owner = np.concatenate(
            [
                rng.choice(n, n_completed, replace=False),
                rng.choice(n, n_rating, replace=False),
                rng.integers(0, n, n_accepted),
            ]
        )
        name = np.repeat(
            np.array(["completed", "rating", "accepted"]), [n_completed, n_rating, n_accepted]
        )
        rate = 0.35 + 0.02 * version[owner[:n_completed]]
        value = np.concatenate(
            [
                (rng.random(n_completed) < rate).astype(float),
                rng.integers(1, 6, n_rating).astype(float),
                (rng.random(n_accepted) < 0.6).astype(float),
            ]
        )
        delay = np.concatenate(
            [
                rng.exponential(2 * HOUR, n_completed),
                rng.exponential(DAY, n_rating),
                rng.exponential(5 * 60, n_accepted),
            ]
        )
        late = rng.random(m) < LATE
        window = spec.reward.window_seconds
        delay[late] = window + rng.uniform(HOUR, 3 * DAY, int(late.sum()))
        delay[~late] = np.minimum(delay[~late], window - 1)
        signals_table = pa.table(
            {
                "decision_id": ids.take(owner),
                "name": pa.array(name),
                "value": pa.array(value),
                "text": pa.nulls(m, pa.string()),
                "ts": pa.array(((ts[owner] + delay) * 1e6).astype(np.int64), type=ts_type),
                "key": pa.nulls(m, pa.string()),
                "unit": pa.nulls(m, pa.string()),
            },
            schema=tables.signals,
        )
        wheel.store.write({"decisions": decisions_table, "signals": signals_table})
        signals += m
    publish(wheel.store, spec, decisions)
    return signals


def publish(store: Store, spec: Spec, decisions: int) -> None:
    """The nine versions: their training cut-off and rows (the payload is never read)."""
    begin = END - SPAN_DAYS * DAY
    for version in range(1, VERSIONS + 1):
        at = datetime.fromtimestamp(begin + cut_day(version) * DAY, UTC)
        created = datetime.fromtimestamp(at.timestamp() + SERVE_LAG, UTC)
        rows = round(decisions * cut_day(version) / SPAN_DAYS * 0.9)
        meta = {
            "spec_digest": spec.digest,
            "created_at": created.isoformat(),
            "training": {"as_of": at.isoformat(), "rows": rows, "mean_reward": 0.5},
        }
        store.publish(spec.digest, json.dumps(meta), b"x")


def timed(run: Callable[[], Health], repeat: int) -> tuple[list[float], Health]:
    seconds, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - t0)
    assert result is not None
    return seconds, result


def count(store: Store, table: str) -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py())


def measure(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    spec = example_spec()
    path = folder / "health.duckdb"
    url = f"duckdb:///{path}"
    if path.exists():  # a kept store: its playbooks are placeholders, so no wheel opens on it
        store = open_store(spec, url)
        try:
            built = None
            seconds, h = timed(lambda: health(store, spec, window="28d", as_of=END), args.repeat)
            n_decisions, n_signals = count(store, "decisions"), count(store, "signals")
        finally:
            store.close()
        call = "flywheel.health.health(open_store(...), ...)"
    else:
        with flywheel.open(spec, store=url, background=False, refresh=0) as wheel:
            t0 = time.perf_counter()
            build(wheel, args.decisions, args.signals_per_decision)
            built = round(time.perf_counter() - t0, 1)
            seconds, h = timed(lambda: wheel.health(window="28d", as_of=END), args.repeat)
            n_decisions, n_signals = count(wheel.store, "decisions"), count(wheel.store, "signals")
        call = "wheel.health"
    return {
        "decisions": n_decisions,
        "signals": n_signals,
        "store_mb": round(path.stat().st_size / 2**20),
        "build_s": built,
        "timed": call,
        "health_s": {
            "median": round(statistics.median(seconds), 2),
            "min": round(min(seconds), 2),
            "max": round(max(seconds), 2),
            "runs": [round(s, 2) for s in seconds],
        },
        "window_decisions": h.decisions,
        "cycle_p50_s": h.stages.cycle.p50_seconds,
        "force": round(h.force.value, 4),
        "learning_type": h.learning_type.kind,
        "summary": h.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=10_000_000)
    parser.add_argument("--signals-per-decision", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="a folder to build the store in once and reuse")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        results = measure(args.keep, args)
    else:
        with tempfile.TemporaryDirectory() as folder:
            results = measure(Path(folder), args)
    report("health", results)


if __name__ == "__main__":
    main()
