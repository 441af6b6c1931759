"""A learn cycle on a warm tier of 50M decisions and 150M signals: DuckDB against Spark.

The warm tier is generated straight into Parquet with DuckDB SQL (``range()`` and hashes of
the row number: fast and the same on every run), in the layout an archive writes,
``{data}/{table}/day=YYYY-MM-DD/{batch}.parquet``, one file per table and day, and is kept
in ``--data`` for the next run. Decisions (UUID ids) are spread evenly over ``--days`` days;
each has three signals (``converted``, ``rating``, ``dwell_ms``) a little after it, of which
about 1% of the ratings arrive after the 7-day window. The reward is
``0.7 * converted + 0.3 * (rating - 1) / 4``; the conversion probability follows a hidden
logit (main effects plus five pairwise interactions, :data:`MAIN` and :data:`PAIRS`) whose
best combination differs by segment, at least 0.25 on the logit scale ahead of the next one,
so the learned playbook can be checked against it.

Each engine runs in a process of its own, on a hot store of its own (a DuckDB file holding
no rows, whose ``warm.manifest`` lists every generated file): ``engine = "store"`` (DuckDB
reads the warm tier beside the hot store) and ``engine = "spark"`` (Spark SQL over the same
files, ``local[2]``). Each process runs one learn cycle as of ten days after the last
decision (seatbelt on: it is the first cycle, so no gate), then the cells query alone; every
query the cycle made is timed by engine. Peak memory is the process tree's resident set
(Python, DuckDB's threads, and Spark's JVM), read from ``/proc`` every 0.2 s. Spark writes
its event log under ``--data``, from which each stage's tasks, task time, CPU time and
shuffle bytes are reported. The playbooks (best combination per segment) and the cells of
the two engines must agree, or the run fails.

Run: ``.venv/bin/python bench/scale.py`` (``--decisions 1000000`` for a quick check;
``--duckdb-memory 4GB`` sets DuckDB's ``memory_limit``, by default 80% of the RAM).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from _common import report  # type: ignore[import-not-found]

CONTEXT: dict[str, list[Any]] = {
    "device": ["mobile", "desktop", "tablet"],
    "region": ["na", "eu", "apac", "latam"],
}
KNOBS: dict[str, list[Any]] = {
    "offer": ["none", "discount", "bundle", "trial"],
    "layout": ["grid", "list", "carousel"],
    "cta": ["buy", "learn", "try"],
    "price": [9, 19, 29],
}
BASE = -1.4
MAIN: dict[tuple[str, Any], float] = {
    ("offer", "discount"): 0.4,
    ("offer", "bundle"): 0.1,
    ("offer", "trial"): 0.15,
    ("layout", "list"): 0.3,
    ("layout", "carousel"): 0.05,
    ("cta", "buy"): 0.3,
    ("price", 9): 0.4,
    ("price", 19): 0.1,
    ("price", 29): -0.2,
    ("device", "desktop"): 0.3,
    ("region", "eu"): -0.2,
}
PAIRS: list[tuple[dict[str, Any], float]] = [
    ({"offer": "bundle", "layout": "carousel"}, 0.8),
    ({"device": "mobile", "layout": "list"}, 0.9),
    ({"region": "eu", "price": 29}, 0.9),
    ({"device": "tablet", "cta": "try"}, 0.6),
    ({"region": "apac", "offer": "trial"}, 1.1),
]
SALT = {"device": 1, "region": 2, "offer": 3, "layout": 4, "cta": 5, "price": 6}
FORMULA = "0.7 * converted + 0.3 * (rating - 1) / 4"
SIGNALS = ("converted", "rating", "dwell_ms")
START = datetime(2026, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
LATE = 0.01  # share of ratings that arrive after the 7-day window
MARKER = "scale.json"
MANIFEST = "warm.manifest"
EVENTS = "spark-events"  # Spark's event log, under --data
ENGINES = {"duckdb": "store", "spark": "spark"}


# --- the hidden truth ------------------------------------------------------------------------


def logit(row: Mapping[str, Any]) -> float:
    value = BASE + sum(MAIN.get((k, v), 0.0) for k, v in row.items())
    return value + sum(w for cond, w in PAIRS if all(row[k] == v for k, v in cond.items()))


def true_best() -> dict[str, dict[str, Any]]:
    """Per segment (``device/region``): the combination with the highest conversion."""
    out = {}
    for values in itertools.product(*CONTEXT.values()):
        context = dict(zip(CONTEXT, values, strict=True))
        combos = [dict(zip(KNOBS, c, strict=True)) for c in itertools.product(*KNOBS.values())]
        out["/".join(map(str, values))] = max(combos, key=lambda c: logit({**context, **c}))
    return out


def _literal(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def _logit_sql() -> str:
    terms = [repr(BASE)]
    for (name, value), weight in MAIN.items():
        terms.append(f"CASE WHEN {name} = {_literal(value)} THEN {weight!r} ELSE 0 END")
    for cond, weight in PAIRS:
        both = " AND ".join(f"{k} = {_literal(v)}" for k, v in cond.items())
        terms.append(f"CASE WHEN {both} THEN {weight!r} ELSE 0 END")
    return " + ".join(terms)


# --- the warm tier ---------------------------------------------------------------------------


def _attributes(lo: int, hi: int, day: int, per: int) -> str:
    """Rows ``lo`` to ``hi`` of ``per`` per decision: the decision's number ``i`` and columns,
    and the row's place ``k`` among its decision's."""
    picks = ",\n        ".join(
        f"CAST([{', '.join(_literal(v) for v in values)}][1 + CAST(hash(i * 64 + {SALT[name]})"
        f" % {len(values)} AS INTEGER)] AS {'VARCHAR' if isinstance(values[0], str) else 'BIGINT'})"
        f" AS {name}"
        for name, values in {**CONTEXT, **KNOBS}.items()
    )
    start_us = int(START.timestamp() * 1e6) + day * DAY_US
    return f"""
    SELECT i, k, md5(CAST(i AS VARCHAR)) AS h,
        CAST(make_timestamp(CAST({start_us} + hash(i * 64 + 7) % {DAY_US} AS BIGINT))
            AS TIMESTAMPTZ) AS ts,
        'u' || CAST(hash(i * 64 + 8) % 5000000 AS VARCHAR) AS unit,
        {picks}
    FROM (SELECT j // {per} AS i, j % {per} AS k FROM range({lo}, {hi}) t(j))"""


UUID = (
    "substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 13, 3) || '-8'"
    " || substr(h, 16, 3) || '-' || substr(h, 19, 12)"
)
U = "(CAST(hash(i * 64 + {k}) >> 11 AS DOUBLE) / 9007199254740992.0)"  # uniform in [0, 1)


def decisions_sql(lo: int, hi: int, day: int) -> str:
    columns = ", ".join([*CONTEXT, *KNOBS])
    return f"""
SELECT {UUID} AS id, ts, unit, 'uniform' AS policy, CAST(NULL AS BIGINT) AS playbook,
    CAST({1 / len(list(itertools.product(*KNOBS.values())))!r} AS DOUBLE) AS propensity,
    {columns}
FROM ({_attributes(lo, hi, day, 1)}) d
"""


def signals_sql(lo: int, hi: int, day: int) -> str:
    """Three signals per decision: converted (within 3 days), rating (after it, within 3 more;
    a share :data:`LATE` 8 days later still) and dwell_ms (within a minute)."""
    n = len(SIGNALS)
    conv = f"CAST({U.format(k=20)} < 1 / (1 + exp(-({_logit_sql()}))) AS DOUBLE)"
    names = ", ".join(f"'{s}'" for s in SIGNALS)
    return f"""
WITH d AS ({_attributes(n * lo, n * hi, day, n)}),
o AS (SELECT *, {conv} AS converted FROM d)
SELECT {UUID} AS decision_id, [{names}][k + 1] AS name,
    CASE k WHEN 0 THEN converted
        WHEN 1 THEN CASE WHEN converted = 1 THEN 4 + CAST({U.format(k=21)} < 0.6 AS INTEGER)
            ELSE 1 + floor({U.format(k=21)} * 3) END
        ELSE round(2000 + {U.format(k=22)} * 60000 + converted * 30000) END AS value,
    CAST(NULL AS VARCHAR) AS text,
    ts + to_microseconds(CAST(CASE k
        WHEN 0 THEN {U.format(k=31)} * 3 * {DAY_US}
        WHEN 1 THEN ({U.format(k=31)} * 3 + {U.format(k=32)} * 3
            + CASE WHEN {U.format(k=33)} < {LATE} THEN 8 ELSE 0 END) * {DAY_US}
        ELSE {U.format(k=30)} * 60e6 END AS BIGINT)) AS ts,
    CAST(NULL AS VARCHAR) AS key, unit
FROM o
"""


def generate(data: Path, decisions: int, days: int) -> dict[str, Any]:
    """Write the warm tier (or reuse it when ``data`` holds one of this size)."""
    marker = data / MARKER
    if marker.exists():
        done: dict[str, Any] = json.loads(marker.read_text())
        if done["decisions"] == decisions and done["days"] == days:
            print(f"reusing the warm tier in {data}", flush=True)
            return done
        marker.unlink()
    for table in ("decisions", "signals"):
        shutil.rmtree(data / table, ignore_errors=True)
    data.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files: dict[str, list[str]] = {"decisions": [], "signals": []}
    started = time.perf_counter()
    for day in range(days):
        lo, hi = day * decisions // days, (day + 1) * decisions // days
        stamp = (START + timedelta(days=day)).date().isoformat()
        for table, sql in (
            ("decisions", decisions_sql(lo, hi, day)),
            ("signals", signals_sql(lo, hi, day)),
        ):
            path = f"{table}/day={stamp}/00000000-scale.parquet"
            (data / path).parent.mkdir(parents=True, exist_ok=True)
            partial = f"{data / path}.partial"
            con.execute(f"COPY ({sql}) TO '{partial}' (FORMAT parquet, COMPRESSION zstd)")
            os.replace(partial, data / path)
            files[table].append(path)
        if day % 10 == 9 or day == days - 1:
            print(
                f"  day {day + 1}/{days} written, {time.perf_counter() - started:.0f} s", flush=True
            )
    con.close()
    done = {
        "decisions": decisions,
        "days": days,
        "signals": decisions * len(SIGNALS),
        "files": files,
        "bytes": {t: sum((data / p).stat().st_size for p in ps) for t, ps in files.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "through": (START + timedelta(days=days)).isoformat(),
    }
    marker.write_text(json.dumps(done, indent=1))
    return done


# --- one engine, in a process of its own -----------------------------------------------------


def spec_for(engine: str, hot: Path, data: Path, driver_memory: str) -> dict[str, Any]:
    learn: dict[str, Any] = {"engine": ENGINES[engine], "online": False}
    if engine == "spark":
        learn["spark"] = {
            "master": "local[2]",
            "spark.driver.memory": driver_memory,
            # each stage's metrics (input, shuffle, task time) for the report: see _stages
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": (data / EVENTS).as_uri(),
            "spark.eventLog.compress": "false",
        }
    return {
        "name": "scale",
        "knobs": KNOBS,
        "context": CONTEXT,
        "skeleton": {"default": {k: v[0] for k, v in KNOBS.items()}},
        "reward": {"formula": FORMULA, "window": "7d", "missing": "pending"},
        "signals": {
            "converted": "max",
            "rating": {"combine": "last", "min": 1, "max": 5},
            "dwell_ms": "sum",
        },
        "storage": {"url": f"duckdb:///{hot}", "archive": {"url": str(data)}},
        "learn": learn,
    }


def _timed(log: list[dict[str, Any]], where: str, query: Callable[..., pa.Table]) -> Any:
    def wrapped(self: Any, sql: str, params: Any = ()) -> pa.Table:
        started = time.perf_counter()
        try:
            return query(self, sql, params)
        finally:
            words = " ".join(sql.split())
            label = "cells" if "FROM w GROUP BY" in words else words[:60]
            log.append({"engine": where, "query": label, "s": time.perf_counter() - started})

    return wrapped


def child(engine: str, data: Path, driver_memory: str, duckdb_memory: str | None) -> None:
    import flywheel
    import flywheel.store.spark as spark_engine
    from flywheel.learn.sql import cells_sql
    from flywheel.playbook import publish
    from flywheel.spec import Spec
    from flywheel.store.warm import Tiered

    done = json.loads((data / MARKER).read_text())
    hot = data / f"hot-{engine}.duckdb"
    for path in (hot, Path(f"{hot}.wal")):
        path.unlink(missing_ok=True)
    if engine == "spark":
        shutil.rmtree(data / EVENTS, ignore_errors=True)
        (data / EVENTS).mkdir()
    spec = Spec.from_dict(spec_for(engine, hot, data, driver_memory))
    log: list[dict[str, Any]] = []
    Tiered.query = _timed(log, "duckdb", Tiered.query)  # type: ignore[method-assign]
    spark_engine.SparkReader.query = _timed(  # type: ignore[method-assign]
        log, "spark", spark_engine.SparkReader.query
    )
    startup: list[float] = []
    start_session = spark_engine.session

    def session(settings: Mapping[str, str]) -> Any:
        started = time.perf_counter()
        spark = start_session(settings)
        if not startup:
            startup.append(time.perf_counter() - started)
        return spark

    spark_engine.session = session
    as_of = START + timedelta(days=done["days"] + 10)
    out: dict[str, Any] = {"engine": engine}
    with flywheel.open(spec, background=False, refresh=0) as wheel:
        manifest = {"url": str(data), "files": done["files"], "through": done["through"]}
        wheel.store.set_meta(MANIFEST, json.dumps(manifest))
        if duckdb_memory:  # the hot store's DuckDB, which reads the warm tier beside it
            connection = cast("Tiered", wheel.store).hot._con  # type: ignore[attr-defined]
            connection.execute(f"SET memory_limit = '{duckdb_memory}'")
        started, out["windows"] = time.perf_counter(), {"learn": [time.time()]}
        result = wheel.learn(as_of=as_of, seed=1, force=True)
        out["learn_s"] = time.perf_counter() - started
        out["windows"]["learn"].append(time.time())
        assert result.published, result.reason
        playbook = wheel.playbook
        assert playbook is not None
        out["fit_s"] = result.diagnostics["fit_seconds"]
        out["rows"] = playbook.meta["training"]["rows"]
        out["cells"] = playbook.meta["training"]["cells"]
        out["best"] = {
            "/".join(str(b["context"][f]) for f in CONTEXT): {k: b["params"][k] for k in KNOBS}
            for b in playbook.best()
        }
        out["learn_queries"] = list(log)
        log.clear()
        out["spark_start_s"] = startup[0] if startup else None
        store = wheel.store
        reader = publish.engine(store, spec)
        encoding = publish._encoding(store, spec, {"as_of": as_of})
        started, out["windows"]["cells"] = time.perf_counter(), [time.time()]
        cells = reader.query(cells_sql(spec, encoding), {"as_of": as_of})
        out["cells_s"] = time.perf_counter() - started
        out["windows"]["cells"].append(time.time())
        out["cells_rows"] = cells.num_rows
        pq.write_table(cells, data / f"cells-{engine}.parquet")
        if engine == "spark":
            jvm = spark_engine.session(dict(spec.learn.spark)).sparkContext._jvm
            out["jvm_max_heap"] = int(jvm.java.lang.Runtime.getRuntime().maxMemory())
    (data / f"result-{engine}.json").write_text(json.dumps(out, default=str))


# --- the process tree's memory ---------------------------------------------------------------


def _tree_rss(root: int) -> tuple[int, int]:
    """Resident bytes of ``root`` alone and of ``root`` with every descendant."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as f:
                rss[int(entry)] = int(f.read().split()[1]) * page
        except (OSError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(p for p, parent in parents.items() if parent == pid and p not in tree)
    return rss.get(root, 0), sum(rss.get(p, 0) for p in tree)


def run_engine(
    engine: str, data: Path, driver_memory: str, duckdb_memory: str | None
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", engine, "--data", str(data)]
    command += ["--driver-memory", driver_memory]
    if duckdb_memory:
        command += ["--duckdb-memory", duckdb_memory]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    peak = {"python": 0, "tree": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            alone, tree = _tree_rss(process.pid)
            peak["python"] = max(peak["python"], alone)
            peak["tree"] = max(peak["tree"], tree)
            stop.wait(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    code = process.wait()
    stop.set()
    poller.join()
    if code != 0:
        raise SystemExit(f"the {engine} run failed (exit {code})")
    out: dict[str, Any] = json.loads((data / f"result-{engine}.json").read_text())
    out["process_s"] = time.perf_counter() - started
    out["peak_tree"] = peak["tree"]
    out["peak_python"] = peak["python"]
    if engine == "spark":
        out["stages"] = _stages(data / EVENTS, out["windows"])
    return out


METRICS = {  # a stage's task metrics in Spark's event log, summed over its tasks
    "run_ms": "internal.metrics.executorRunTime",
    "cpu_ns": "internal.metrics.executorCpuTime",
    "input_bytes": "internal.metrics.input.bytesRead",
    "input_rows": "internal.metrics.input.recordsRead",
    "shuffle_write_bytes": "internal.metrics.shuffle.write.bytesWritten",
    "shuffle_write_rows": "internal.metrics.shuffle.write.recordsWritten",
    "shuffle_read_local": "internal.metrics.shuffle.read.localBytesRead",
    "shuffle_read_remote": "internal.metrics.shuffle.read.remoteBytesRead",
    "spill_disk_bytes": "internal.metrics.diskBytesSpilled",
    "peak_execution_memory": "internal.metrics.peakExecutionMemory",
}


def _stages(folder: Path, windows: Mapping[str, list[float]]) -> dict[str, list[dict[str, Any]]]:
    """The completed stages of each query window (``learn``, ``cells``) from Spark's event
    log: tasks, input, shuffle written and task time."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in windows}
    for log in sorted(folder.rglob("events_*")):  # a rolling log: a folder of parts
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event.get("Event") != "SparkListenerStageCompleted":
                continue
            info = event["Stage Info"]
            values = {a["Name"]: a.get("Value") for a in info.get("Accumulables", [])}
            stage = {
                "stage": info["Stage ID"],
                "tasks": info["Number of Tasks"],
                "name": info["Stage Name"].split(" at ")[0],
                "wall_s": (info["Completion Time"] - info["Submission Time"]) / 1000,
                **{k: int(values.get(name) or 0) for k, name in METRICS.items()},
            }
            submitted = info["Submission Time"] / 1000
            for name, (lo, hi) in windows.items():
                if lo <= submitted <= hi:
                    out[name].append(stage)
    return out


# --- the report ------------------------------------------------------------------------------


def _compare_cells(data: Path, engines: list[str]) -> dict[str, Any]:
    from flywheel.learn import sql as learn_sql

    tables = [pq.read_table(data / f"cells-{e}.parquet") for e in engines]
    keys = [*CONTEXT, *KNOBS]
    ordered = [t.sort_by([(k, "ascending") for k in keys]) for t in tables]
    first = ordered[0]
    out: dict[str, Any] = {"rows_equal": len({t.num_rows for t in ordered}) == 1}
    if out["rows_equal"]:
        out["keys_equal"] = all(t.select(keys).equals(first.select(keys)) for t in ordered[1:])
        columns = {"rows": learn_sql.ROWS, "n": learn_sql.N, "s": learn_sql.S}
        for short, column in columns.items():
            base = first.column(column).cast(pa.float64())
            out[f"max_abs_diff_{short}"] = max(
                pc.max(pc.abs(pc.subtract(t.column(column).cast(pa.float64()), base))).as_py()
                for t in ordered[1:]
            )
    return out


def _stage_table(stages: list[dict[str, Any]]) -> None:
    columns = "stage | tasks | wall | task time | CPU | input | input rows | shuffle written"
    print(f"| {columns} | rows written | spilled |")
    print("| --- " * 10 + "|")
    for st in sorted(stages, key=lambda x: x["stage"]):
        cells = [
            f"{st['stage']} {st['name']}",
            f"{st['tasks']:,}",
            f"{st['wall_s']:.1f} s",
            f"{st['run_ms'] / 1e3:.1f} s",
            f"{st['cpu_ns'] / 1e9:.1f} s",
            _mb(st["input_bytes"]),
            f"{st['input_rows']:,}",
            _mb(st["shuffle_write_bytes"]),
            f"{st['shuffle_write_rows']:,}",
            _mb(st["spill_disk_bytes"]),
        ]
        print(f"| {' | '.join(cells)} |")


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=50_000_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--data", default="/tmp/flywheel-scale")
    parser.add_argument("--driver-memory", default="8g", help="Spark's spark.driver.memory")
    parser.add_argument(
        "--duckdb-memory", help="DuckDB's memory_limit (default: DuckDB's own, 80%% of RAM)"
    )
    parser.add_argument("--child", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = Path(args.data).resolve()
    if args.child:
        child(args.child, data, args.driver_memory, args.duckdb_memory)
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"--engines: unknown {sorted(unknown)} (known: duckdb, spark)")
    done = generate(data, args.decisions, args.days)
    size = done["bytes"]
    print(
        f"warm tier: {done['decisions']:,} decisions ({size['decisions'] / 1e9:.2f} GB,"
        f" {size['decisions'] / done['decisions']:.1f} B each), {done['signals']:,} signals"
        f" ({size['signals'] / 1e9:.2f} GB, {size['signals'] / done['signals']:.1f} B each),"
        f" {len(done['files']['decisions'])} days; generated in {done['seconds']} s",
        flush=True,
    )
    results = {}
    for engine in engines:
        print(f"running {engine} ...", flush=True)
        results[engine] = run_engine(engine, data, args.driver_memory, args.duckdb_memory)
        r = results[engine]
        print(
            f"  {engine}: learn {r['learn_s']:.1f} s, cells {r['cells_s']:.1f} s,"
            f" peak {_mb(r['peak_tree'])}",
            flush=True,
        )
    truth = true_best()
    print()
    print(
        "| engine | cells query | learn cycle | of which cells | fit | other | peak memory"
        " (tree) | rows with reward | cells | best = truth |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for engine, r in results.items():
        in_cycle = [q for q in r["learn_queries"] if q["query"] == "cells"]
        cells_in = sum(q["s"] for q in in_cycle)
        start = f" (with {r['spark_start_s']:.1f} s Spark start)" if r.get("spark_start_s") else ""
        right = sum(r["best"].get(s) == b for s, b in truth.items())
        print(
            f"| {engine} | {r['cells_s']:.1f} s | {r['learn_s']:.1f} s | {cells_in:.1f} s{start}"
            f" | {r['fit_s']:.2f} s | {r['learn_s'] - cells_in - r['fit_s']:.1f} s"
            f" | {_mb(r['peak_tree'])} (Python {_mb(r['peak_python'])}) | {r['rows']:,}"
            f" | {r['cells']:,} | {right}/{len(truth)} |"
        )
    print()
    for engine, r in results.items():
        print(f"{engine}: the learn cycle's queries (seconds):")
        for q in r["learn_queries"]:
            print(f"  {q['engine']:6} {q['s']:8.2f}  {q['query']}")
        if r.get("jvm_max_heap"):
            print(f"  JVM max heap: {_mb(r['jvm_max_heap'])}")
        for window, stages in r.get("stages", {}).items():
            print(f"\nSpark's stages in the {window} query:\n")
            _stage_table(stages)
    print()
    checks: dict[str, Any] = {}
    if len(results) > 1:
        names = list(results)
        checks["same_playbook"] = all(
            results[n]["best"] == results[names[0]]["best"] for n in names[1:]
        )
        checks["same_rows"] = len({r["rows"] for r in results.values()}) == 1
        checks["cells"] = _compare_cells(data, names)
    warm = {k: v for k, v in done.items() if k != "files"}
    report("scale", {"warm": warm, "engines": results, "checks": checks})
    if checks and not (checks["same_playbook"] and checks["cells"]["rows_equal"]):
        raise SystemExit("the engines disagree")


if __name__ == "__main__":
    main()
