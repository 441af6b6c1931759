"""The PostgreSQL store's write cost per OTLP span, split into the client and the database.

OTLP requests as ``bench/serve.py`` builds them (each span a decision with a name-based id and
an evaluation signal with a key) are converted once, then written with ``Store.write`` in
batches of ``--batch`` spans into a fresh schema that grows batch after batch. Reported per
span: wall time, the client's CPU (this process) and the database's CPU (the server process
behind the connection, read from ``/proc``: the database must run on this machine), each
split into the claims of ids and keys and the ``COPY`` of rows.

Run: ``.venv/bin/python bench/pg_write.py [--url postgresql://postgres@127.0.0.1:5432/test]``.
To compare with another commit, put that commit's ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from _common import report  # type: ignore[import-not-found]
from serve import otlp_payloads, write_spec  # type: ignore[import-not-found]

from flywheel.collect.record import Recorder
from flywheel.collect.traces import TraceMapper
from flywheel.collect.units import Pseudonymizer
from flywheel.collect.workers import _NoWriter
from flywheel.collect.writer import to_tables
from flywheel.spec import load
from flywheel.store.base import tables_for
from flywheel.store.postgres import PostgresStore

SCHEMA = "flywheel_bench_pg_write"
TICK = os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--batch", type=int, default=10_000, help="spans a write")
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()

    url = f"{args.url}?schema={SCHEMA}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    spec = load(write_spec(Path(tempfile.mkdtemp()), url))
    units = Pseudonymizer(bytes(32))
    tables = tables_for(spec)
    schemas = {name: tables.schema(name) for name in tables.names}
    mapper = TraceMapper(spec, Recorder(spec, _NoWriter(), units, time.time), units)
    batches = []
    for seed in range(args.batches):
        request = otlp_payloads(args.batch, args.batch, seed=seed)[0]
        body = request.split(b"\r\n\r\n", 1)[1]
        batches.append(to_tables(mapper.convert(body, "protobuf").rows, schemas))

    store = PostgresStore(url, tables)
    backend = store._con.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]

    def database_cpu() -> float:
        fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime

    parts: dict[str, list[float]] = {}

    def timed(name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            began, cpu, db = time.perf_counter(), time.process_time(), database_cpu()
            try:
                return step(*args, **kwargs)
            finally:
                totals = parts.setdefault(name, [0.0, 0.0, 0.0])
                totals[0] += time.perf_counter() - began
                totals[1] += time.process_time() - cpu
                totals[2] += database_cpu() - db

        return run

    # the steps of a write, as they are named on both sides of the change this measured
    store._drop_seen_decisions = timed("claim ids", store._drop_seen_decisions)  # type: ignore[method-assign]
    store._drop_seen_keys = timed("claim keys", store._drop_seen_keys)  # type: ignore[method-assign]
    runs = []
    try:
        for batch in batches:
            began, cpu, db = time.perf_counter(), time.process_time(), database_cpu()
            store.write(batch)
            runs.append(
                {
                    "wall_us": 1e6 * (time.perf_counter() - began) / args.batch,
                    "client_cpu_us": 1e6 * (time.process_time() - cpu) / args.batch,
                    "database_cpu_us": 1e6 * (database_cpu() - db) / args.batch,
                }
            )
    finally:
        store.close()
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    spans = args.batch * args.batches
    total = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
    steps = {
        name: {
            "wall_us": round(1e6 * wall / spans, 2),
            "client_cpu_us": round(1e6 * cpu / spans, 2),
            "database_cpu_us": round(1e6 * db / spans, 2),
        }
        for name, (wall, cpu, db) in parts.items()
    }
    report(
        "pg_write",
        {"spans_a_write": args.batch, "writes": args.batches, "per_span": total, "steps": steps},
    )
    print(f"per span (median of {args.batches} writes of {args.batch:,} spans):")
    print(f"  all of a write: {total}")
    for name, figures in steps.items():
        print(f"  {name} (mean): {figures}")


if __name__ == "__main__":
    main()
