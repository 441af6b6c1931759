"""The HTTP service under load: `flywheel serve` as its own process, spoken to over loopback.

Measured, each repeated and reported as the median with its spread:

- decide at a fixed open-loop rate (500 requests/s by default): every request is sent at its
  scheduled moment whether or not earlier ones were answered, and its latency counts from
  that moment (no coordinated omission);
- decide at a fixed concurrency (8 connections, each sending its next request on the answer);
- signals/s through batched ``POST /v1/signals`` (5,000 a request), counted in the store
  afterwards: every answered signal must be there;
- decide at the open-loop rate again while signals arrive at a steady ``--mixed-signals``
  a second (50,000 by default, in batches of 5,000 on a connection of their own): a server
  takes both at once, and validating a batch must not hold up the decides;
- OTLP spans/s through ``POST /v1/traces`` (protobuf, 500 GenAI spans a request, each with
  Flywheel's knob and context attributes and an evaluation event), and the first 10,000 of
  those spans sent to Arize Phoenix (``--phoenix``; its own virtualenv, its SQLite default,
  loopback) at the same concurrency: its accepted (2xx) rate, and its stored spans counted
  through its GraphQL API until all are there.

PostgreSQL (``--store postgresql://…``): the run uses a schema of its own, dropped at the end.

The load generator is one asyncio loop on keep-alive HTTP/1.1 connections with prebuilt
request bodies, so it takes little of the CPU the server needs. Everything listens on
127.0.0.1 and every loop is bounded in time. Run: ``make bench-serve`` (installs Phoenix into
``.venv-phoenix``), or ``.venv/bin/python bench/serve.py [--store postgresql://…]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
from _common import report  # type: ignore[import-not-found]

import flywheel
from flywheel.demo import StoryWorld, example_text

ROOT = Path(__file__).resolve().parents[1]
PHOENIX_PYTHON = ROOT / ".venv-phoenix" / "bin" / "python"
GENRES = ["thriller", "romance", "scifi", "drama"]


# --- a small HTTP/1.1 client ------------------------------------------------------------------


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                body += await self.reader.readexactly(size + 2)
                if size == 0:
                    return status, body
                body = body[:-2]
        if length < 0:
            raise HttpError("an answer without Content-Length")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def request(method: str, path: str, body: bytes = b"", content_type: str = "") -> bytes:
    """The bytes of one HTTP/1.1 request (built once, sent many times)."""
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n"
    if content_type:
        head += f"content-type: {content_type}\r\n"
    return head.encode() + b"\r\n" + body


def post_json(path: str, payload: Any) -> bytes:
    return request("POST", path, json.dumps(payload).encode(), "application/json")


class Pool:
    """Idle connections; a request takes one, or opens a new one when none is idle. A
    connection idle for a few seconds is dropped first (servers close idle keep-alives)."""

    def __init__(self, port: int, max_idle: float = 2.0) -> None:
        self.port = port
        self.max_idle = max_idle
        self.idle: list[tuple[float, Connection]] = []
        self.opened = 0

    async def fill(self, n: int) -> None:
        for _ in range(n - len(self.idle)):
            self.idle.append((time.monotonic(), await Connection.open(self.port)))
            self.opened += 1

    async def send(self, data: bytes) -> tuple[int, bytes]:
        conn = None
        while self.idle:
            since, conn = self.idle.pop()
            if time.monotonic() - since < self.max_idle:
                break
            conn.close()
            conn = None
        if conn is None:
            conn = await Connection.open(self.port)
            self.opened += 1
        try:
            answer = await conn.send(data)
        except BaseException:
            conn.close()
            raise
        self.idle.append((time.monotonic(), conn))
        return answer

    def close(self) -> None:
        for _, conn in self.idle:
            conn.close()
        self.idle.clear()


def call(port: int, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    """One blocking JSON request (setup and checks, not measured)."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


# --- load shapes ------------------------------------------------------------------------------


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 2),
    }


async def open_loop(
    port: int, bodies: Callable[[int], bytes], rate: float, seconds: float, warmup: float
) -> dict[str, Any]:
    """``rate`` requests/s on schedule for ``warmup`` + ``seconds``; latency from each
    request's scheduled moment to its answer, counted after the warm-up."""
    pool = Pool(port)
    await pool.fill(16)
    clock = time.perf_counter
    latencies: list[float] = []
    failures = 0
    total = int(rate * (warmup + seconds))
    counted_from = int(rate * warmup)
    start = clock() + 0.05
    tasks: set[asyncio.Task[None]] = set()

    answered = 0

    async def one(i: int, due: float) -> None:
        nonlocal failures, answered
        try:
            status, _ = await pool.send(bodies(i))
        except (OSError, asyncio.IncompleteReadError, HttpError):
            status = 0
        done = clock()
        if status != 200:
            failures += 1
            return
        answered += 1
        if i >= counted_from:
            latencies.append(done - due)

    for i in range(total):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    ended = clock()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    pool.close()
    measured = ended - (start + counted_from / rate)
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(len(latencies) / measured, 1),
        **percentiles(latencies),
        "requests": len(latencies),
        "answered": answered,
        "failures": failures,
        "connections": pool.opened,
    }


async def closed_loop(
    port: int, bodies: Callable[[int], bytes], concurrency: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """``concurrency`` connections, each sending its next request when answered."""
    clock = time.perf_counter
    conns = [await Connection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    failures = 0
    counter = 0
    answered = 0
    begin = clock()
    counted_from = begin + warmup
    stop = counted_from + seconds

    async def worker(conn: Connection) -> None:
        nonlocal failures, counter, answered
        while True:
            t0 = clock()
            if t0 >= stop:
                return
            counter += 1
            status, _ = await conn.send(bodies(counter))
            done = clock()
            if status != 200:
                failures += 1
                continue
            answered += 1
            if t0 >= counted_from:
                latencies.append(done - t0)

    await asyncio.wait_for(asyncio.gather(*(worker(c) for c in conns)), warmup + seconds + 60)
    for conn in conns:
        conn.close()
    return {
        "concurrency": concurrency,
        "per_s": round(len(latencies) / seconds, 1),
        **percentiles(latencies),
        "requests": len(latencies),
        "answered": answered,
        "failures": failures,
    }


async def batches(
    port: int,
    payloads: list[bytes],
    concurrency: int,
    *,
    rejected: Callable[[bytes], int] | None = None,
    patience: float = 120.0,
) -> dict[str, Any]:
    """Send every payload, ``concurrency`` at a time; wall time until the last is accepted.

    A request refused for capacity (503 or 429) is sent again after a pause, as OTLP
    exporters do, for at most ``patience`` seconds; ``rejected`` counts the items an
    accepted answer says were not taken (OTLP's ``partial_success``)."""
    conns = [await Connection.open(port) for _ in range(concurrency)]
    queue = list(reversed(payloads))
    latencies: list[float] = []
    failed: list[tuple[int, bytes]] = []
    refusals = 0
    not_taken = 0
    clock = time.perf_counter
    begin = clock()

    async def worker(conn: Connection) -> None:
        nonlocal refusals, not_taken
        while queue:
            data = queue.pop()
            while True:
                t0 = clock()
                status, body = await conn.send(data)
                if status not in (429, 503) or t0 - begin > patience:
                    break
                refusals += 1
                await asyncio.sleep(0.5)
            if 200 <= status < 300:
                latencies.append(clock() - t0)
                not_taken += rejected(body) if rejected else 0
            else:
                failed.append((status, body[:300]))

    await asyncio.wait_for(asyncio.gather(*(worker(c) for c in conns)), patience + 600)
    wall = clock() - begin
    for conn in conns:
        conn.close()
    return {
        "wall_s": wall,
        "answered": len(latencies),
        "failed": failed,
        "refusals": refusals,
        "rejected": not_taken,
        **percentiles(latencies),
    }


def otlp_rejected(body: bytes) -> int:
    """Spans an OTLP answer (protobuf ExportTraceServiceResponse) says it did not take."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    answer = ExportTraceServiceResponse()
    answer.ParseFromString(body)
    return int(answer.partial_success.rejected_spans)


def spread(values: list[float]) -> dict[str, float]:
    digits = 2 if max(values) < 100 else 0
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


# --- the server ---------------------------------------------------------------------------------


class Cpu:
    """CPU seconds a process and its children (a server's worker processes) have used so far
    (Linux /proc; 0 elsewhere)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __call__(self) -> float:
        return sum(self._seconds(pid) for pid in self._tree(self.pid))

    def main(self) -> float:
        """The process's own CPU seconds, without its children's."""
        return self._seconds(self.pid)

    def _seconds(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    def _tree(self, pid: int) -> list[int]:
        found = [pid]
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                found += [p for c in children.read_text().split() for p in self._tree(int(c))]
            except OSError:
                continue
        return found


def metered(cpu: Cpu, work: Any) -> dict[str, Any]:
    """Run a coroutine; its result with the server's CPU use meanwhile (cores).

    The load generator's own garbage collector is off while it runs: a full collection of
    this process (some 100k objects: 50 ms idle, more beside a busy server) would stall every
    request in flight and count against the server."""
    gc.collect()
    gc.disable()
    try:
        c0, m0, t0 = cpu(), cpu.main(), time.perf_counter()
        out: dict[str, Any] = asyncio.run(work)
    finally:
        gc.enable()
    wall = time.perf_counter() - t0
    out["server_cpu_s"] = cpu() - c0
    out["server_main_cpu_s"] = cpu.main() - m0
    out["server_cores"] = round(out["server_cpu_s"] / wall, 2)
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: str) -> None:
    """Poll ``ready`` until it holds; exit with the server's log if it stops or takes 2 min."""
    deadline = time.time() + 120
    while True:
        try:
            if ready():
                return
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            tail = Path(log).read_text(errors="replace")[-3000:]
            raise SystemExit(f"{process.args!r} did not start ({process.returncode}):\n{tail}")
        time.sleep(0.1)


@contextmanager
def flywheel_server(
    spec: Path, journal: bool, workers: int | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`flywheel serve` in its own process; SIGTERM at the end (it drains and closes).
    With ``journal``, writes are answered once synced to its write-ahead journal (beside a
    DuckDB file, or in the run's folder); without, after the store's commit."""
    port = free_port()
    command = [sys.executable, "-m", "flywheel.cli", "serve", "--spec", str(spec)]
    command += ["--port", str(port)]
    command += ["--journal", str(spec.with_name("journal"))] if journal else ["--no-journal"]
    if workers is not None:
        command += ["--workers", str(workers)]
    log = spec.with_name("serve.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: call(port, "GET", "/v1/playbook")[0] == 200, process, log.name)
        yield port, process
    finally:
        log.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def phoenix_server(folder: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Arize Phoenix from its own virtualenv: loopback, SQLite in a temporary folder."""
    port, grpc = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc),
        "PHOENIX_WORKING_DIR": str(folder),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    folder.mkdir(exist_ok=True)
    log = (folder / "phoenix.log").open("wb")
    process = subprocess.Popen(
        [str(PHOENIX_PYTHON), "-m", "phoenix.server.main", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: call(port, "GET", "/healthz")[0] == 200, process, log.name)
        yield port, process
    finally:
        log.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def phoenix_spans(port: int) -> int:
    """Spans Phoenix has stored, through its GraphQL API (every project)."""
    query = {"query": "{ projects { edges { node { name recordCount } } } }"}
    status, answer = call(port, "POST", "/graphql", query)
    if status != 200:
        raise SystemExit(f"phoenix graphql: {status} {answer!r}")
    return sum(int(e["node"]["recordCount"]) for e in answer["data"]["projects"]["edges"])


# --- the data -----------------------------------------------------------------------------------


@contextmanager
def storage(folder: Path, given: str | None) -> Iterator[str]:
    """This run's storage URL: a DuckDB file in ``folder`` by default; on PostgreSQL, a
    schema of its own (dropped afterwards) unless the URL names one."""
    if not given:
        yield f"duckdb:///{folder / 'serve.duckdb'}"
        return
    parts = urlsplit(given)
    query = dict(parse_qsl(parts.query))
    if parts.scheme not in ("postgresql", "postgres") or "schema" in query:
        yield given
        return
    import psycopg

    schema = f"bench_serve_{os.getpid()}"
    try:
        yield urlunsplit(parts._replace(query=urlencode({**query, "schema": schema})))
    finally:
        with psycopg.connect(given, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def write_spec(folder: Path, url: str) -> Path:
    spec = folder / "flywheel.toml"
    spec.write_text(example_text().replace("duckdb:///.flywheel/flywheel.duckdb", url))
    return spec


def teach(spec: Path, n: int) -> None:
    """Simulated traffic and a learn cycle, so the server decides from a playbook."""
    rng = random.Random(2)
    world = StoryWorld(3)
    with flywheel.open(spec, refresh=0) as wheel:
        for i in range(n):
            ctx = {"genre": GENRES[i % 4]}
            d = wheel.decide(ctx)
            wheel.signal(d, "completed", rng.random() < world.completion(ctx, d.params))
        result = wheel.learn(seed=1)
        assert result.published, result.reason


def counts(spec: Path) -> dict[str, int]:
    with flywheel.open(spec, refresh=0) as wheel:
        row = wheel.store.query(
            "SELECT (SELECT count(*) FROM decisions) AS decisions,"
            " (SELECT count(*) FROM signals) AS signals"
        ).to_pylist()[0]
    return {k: int(v) for k, v in row.items()}


def decide_bodies(n: int) -> list[bytes]:
    rng = random.Random(5)
    return [
        post_json(
            "/v1/decide",
            {"context": {"genre": rng.choice(GENRES)}, "unit": f"user-{rng.randrange(10**6)}"},
        )
        for _ in range(n)
    ]


def signal_payloads(
    ids: list[str], batch: int, total: int, seed: int, keyed: bool = False
) -> list[bytes]:
    """Batches of signals; with ``keyed``, each with an idempotency key of its own (32 hex
    digits, as a client's UUID), none sent before."""
    rng = random.Random(seed)
    out = []
    for _ in range(total // batch):
        items: list[dict[str, Any]] = [
            {"decision": rng.choice(ids), "name": "rating", "value": rng.randint(1, 5)}
            if rng.random() < 0.5
            else {"decision": rng.choice(ids), "name": "completed", "value": rng.random() < 0.4}
            for _ in range(batch)
        ]
        if keyed:
            for item in items:
                item["key"] = f"{rng.getrandbits(128):032x}"
        out.append(post_json("/v1/signals", {"signals": items}))
    return out


def prefill(spec: Path, n: int, in_window: bool) -> dict[str, Any]:
    """``n`` keyed signals written straight into the store, in bulk (SQL inside the database:
    minutes, where HTTP would take hours), dated 30 days ago, each with a key of its own, for
    1,000 decisions. Their keys are in the duplicate check's generations only ``in_window``
    (as if sent within the last window); otherwise they were claimed more than two windows
    ago and forgotten, as a store that has run for a while holds most of its signals."""
    began = time.perf_counter()
    chunk = 5_000_000
    with flywheel.open(spec, refresh=0) as wheel:
        store: Any = wheel.store
        duck = store.url.startswith("duckdb")
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            if duck:
                store._con.execute(
                    "INSERT INTO signals (decision_id, name, value, ts, key)"
                    " SELECT ids[1 + (i % len(ids))], 'rating', 1 + i % 5,"
                    " now() - INTERVAL 30 DAY, md5(CAST(i AS VARCHAR) || '-prefill')"
                    " FROM range(?, ?) t(i),"
                    " (SELECT list(id) AS ids FROM (SELECT id FROM decisions LIMIT 1000))",
                    [start, start + size],
                )
                if in_window:
                    store._con.execute(
                        "INSERT INTO signal_keys SELECT CAST(md5(md5(CAST(i AS VARCHAR)"
                        " || '-prefill')) AS UUID) FROM range(?, ?) t(i)",
                        [start, start + size],
                    )
            else:
                store._con.execute(
                    "INSERT INTO signals (decision_id, name, value, ts, key)"
                    " SELECT ids[1 + mod(i, array_length(ids, 1))], 'rating', 1 + mod(i, 5),"
                    " now() - interval '30 days', md5(i::text || '-prefill')"
                    " FROM generate_series(%s::bigint, %s::bigint) i,"
                    " (SELECT array_agg(id) AS ids FROM (SELECT id FROM decisions LIMIT 1000) x) a",
                    [start, start + size - 1],
                )
                if in_window:
                    store._con.execute(
                        "INSERT INTO signal_keys SELECT md5(md5(i::text || '-prefill'))::uuid"
                        " FROM generate_series(%s::bigint, %s::bigint) i",
                        [start, start + size - 1],
                    )
            print(f"prefill: {start + size:,} of {n:,} keyed signals", file=sys.stderr)
        if duck:
            store._con.execute("CHECKPOINT")
        else:
            store._con.execute("VACUUM ANALYZE signals")
            store._con.execute("CHECKPOINT")
        keys = store.query(
            "SELECT (SELECT count(*) FROM signal_keys) + (SELECT count(*) FROM"
            " signal_keys_previous) AS n"
        ).to_pylist()[0]["n"]
    return {
        "signals": n,
        "keys_in_window": int(keys),
        "seconds": round(time.perf_counter() - began),
    }


def otlp_payloads(batch: int, total: int, seed: int) -> list[bytes]:
    """ExportTraceServiceRequest protobufs of GenAI spans carrying Flywheel's attributes."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    rng = random.Random(seed)
    knobs: dict[str, list[Any]] = {
        "opening_type": ["question", "suspense", "dialogue", "description"],
        "twist_count": [0, 1, 2],
        "emotional_density": ["low", "mid", "high"],
        "length": ["short", "medium", "long"],
    }

    def attr(key: str, value: object) -> KeyValue:
        if isinstance(value, bool):
            return KeyValue(key=key, value=AnyValue(bool_value=value))
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        if isinstance(value, float):
            return KeyValue(key=key, value=AnyValue(double_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=str(value)))

    out = []
    now = time.time_ns()
    for _ in range(total // batch):
        message = ExportTraceServiceRequest()
        resource_spans = message.resource_spans.add()
        resource_spans.resource.attributes.append(attr("service.name", "story-writer"))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "bench"
        for _ in range(batch):
            start = now - rng.randrange(10**9, 60 * 10**9)
            span = scope_spans.spans.add()
            span.trace_id = rng.randbytes(16)
            span.span_id = rng.randbytes(8)
            span.name = "chat gpt-4o-mini"
            span.kind = Span.SPAN_KIND_CLIENT
            span.start_time_unix_nano = start
            span.end_time_unix_nano = start + rng.randrange(200, 3000) * 10**6
            span.attributes.extend(
                [
                    attr("gen_ai.operation.name", "chat"),
                    attr("gen_ai.provider.name", "openai"),
                    attr("gen_ai.request.model", "gpt-4o-mini"),
                    attr("gen_ai.usage.input_tokens", rng.randrange(50, 2000)),
                    attr("gen_ai.usage.output_tokens", rng.randrange(50, 800)),
                    attr("flywheel.context.genre", rng.choice(GENRES)),
                    *(attr(f"flywheel.knob.{k}", rng.choice(v)) for k, v in knobs.items()),
                ]
            )
            event = span.events.add()
            event.name = "gen_ai.evaluation.result"
            event.time_unix_nano = span.end_time_unix_nano
            event.attributes.extend(
                [
                    attr("gen_ai.evaluation.name", "rating"),
                    attr("gen_ai.evaluation.score.value", float(rng.randint(1, 5))),
                ]
            )
        out.append(
            request("POST", "/v1/traces", message.SerializeToString(), "application/x-protobuf")
        )
    return out


async def paced(port: int, payloads: list[bytes], per_s: float, seconds: float) -> dict[str, Any]:
    """Send ``payloads`` in order, ``per_s`` a second on schedule (the next at once when one
    is answered late), on one connection, for ``seconds``; how many were accepted."""
    conn = await Connection.open(port)
    clock = time.perf_counter
    start = clock()
    accepted, failed = 0, []
    for i, data in enumerate(payloads):
        due = start + i / per_s
        if due - start >= seconds:
            break
        if due > clock():
            await asyncio.sleep(due - clock())
        status, body = await conn.send(data)
        if 200 <= status < 300:
            accepted += 1
        else:
            failed.append((status, body[:300]))
    conn.close()
    return {"accepted": accepted, "failed": failed, "wall_s": clock() - start}


async def decide_while_ingesting(
    port: int, bodies: Callable[[int], bytes], payloads: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    per_s = args.mixed_signals / args.signal_batch
    decided, ingested = await asyncio.gather(
        open_loop(port, bodies, args.rate, args.seconds, args.warmup),
        paced(port, payloads, per_s, args.warmup + args.seconds),
    )
    return {**decided, "ingest": ingested}


# --- the phases ---------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    return {"runs": runs, **{k: spread([r[k] for r in runs]) for k in keys}}


def decide_phase(
    port: int, cpu: Cpu, args: argparse.Namespace, skip: set[str]
) -> tuple[dict[str, Any], int]:
    """Open loop at ``--rate`` and closed loop at ``--concurrency``, alternating."""
    bodies = decide_bodies(4096)

    def pick(i: int) -> bytes:
        return bodies[i % len(bodies)]

    opened: list[dict[str, Any]] = []
    closed: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        if "open" not in skip:
            run = open_loop(port, pick, args.rate, args.seconds, args.warmup)
            opened.append(metered(cpu, run))
        if "closed" not in skip:
            run = closed_loop(port, pick, args.concurrency, args.seconds, args.warmup)
            closed.append(metered(cpu, run))
    keys = ("p50_ms", "p99_ms", "max_ms")
    out = {}
    if opened:
        out["open_loop"] = summarise(opened, ("achieved_per_s", *keys, "server_cores"))
    if closed:
        out["closed_loop"] = summarise(closed, ("per_s", *keys, "server_cores"))
    return out, sum(r["answered"] for r in opened + closed)


def ingest_run(out: dict[str, Any], sent: int, what: str) -> dict[str, Any]:
    """One batched-ingest run's record: rate, count, wall time, server CPU (also in µs per
    item: the server's own process, and its worker processes), request latency."""
    main = out["server_main_cpu_s"]
    return {
        "per_s": round(sent / out["wall_s"]),
        what: sent,
        "wall_s": round(out["wall_s"], 3),
        "server_cores": out["server_cores"],
        "main_us_each": round(1e6 * main / max(1, sent), 2),
        "workers_us_each": round(1e6 * (out["server_cpu_s"] - main) / max(1, sent), 2),
        "request_p50_ms": out["p50_ms"],
        "request_p99_ms": out["p99_ms"],
    }


def signals_phase(
    port: int, cpu: Cpu, ids: list[str], args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    runs = []
    answered = 0
    for rep in range(args.repeat):
        keyed = args.keyed != "no"
        payloads = signal_payloads(ids, args.signal_batch, args.signals, rep, keyed)
        out = metered(cpu, batches(port, payloads, args.ingest_concurrency))
        if out["failed"]:
            raise SystemExit(f"signals refused: {out['failed'][:3]}")
        sent = out["answered"] * args.signal_batch
        answered += sent
        runs.append(ingest_run(out, sent, "signals"))
    return summarise(runs, ("per_s", "server_cores")), answered


def mixed_phase(
    port: int, cpu: Cpu, ids: list[str], args: argparse.Namespace, keyed: bool
) -> tuple[dict[str, Any], int, int]:
    """Decide's open loop with a steady signal stream beside it; the decisions and signals
    answered."""
    bodies = decide_bodies(4096)
    per_run = int(args.mixed_signals * (args.warmup + args.seconds)) + args.signal_batch
    runs, decisions, signals = [], 0, 0
    for rep in range(args.repeat):
        seed = 100 + rep + (1000 if keyed else 0)
        payloads = signal_payloads(ids, args.signal_batch, per_run, seed, keyed)
        out = metered(
            cpu, decide_while_ingesting(port, lambda i: bodies[i % len(bodies)], payloads, args)
        )
        ingest = out.pop("ingest")
        if ingest["failed"]:
            raise SystemExit(f"signals refused: {ingest['failed'][:3]}")
        decisions += out["answered"]
        signals += ingest["accepted"] * args.signal_batch
        out["signals_per_s"] = round(ingest["accepted"] * args.signal_batch / ingest["wall_s"])
        runs.append(out)
    keys = ("achieved_per_s", "p50_ms", "p99_ms", "max_ms", "signals_per_s", "server_cores")
    return summarise(runs, keys), decisions, signals


def wait_for_phoenix(port: int, expected: int, began: float, limit: float) -> tuple[int, float]:
    """Poll Phoenix's span count until it reaches ``expected`` (or ``limit`` seconds from
    ``began`` pass); the count and when it was reached."""
    while True:
        stored = phoenix_spans(port)
        now = time.perf_counter()
        if stored >= expected or now - began > limit:
            return stored, now - began
        time.sleep(0.5)


def otlp_phase(
    port: int, cpu: Cpu, folder: Path, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    """Spans into Flywheel (``--repeat`` runs of ``--spans``), then the first
    ``--phoenix-spans`` of them into Phoenix at the same concurrency, counted once stored."""
    runs: list[dict[str, Any]] = []
    answered = 0
    first: list[bytes] = []
    for rep in range(args.repeat):
        payloads = otlp_payloads(args.span_batch, args.spans, seed=100 + rep)
        first = first or payloads
        out = metered(cpu, batches(port, payloads, args.ingest_concurrency, rejected=otlp_rejected))
        if out["failed"] or out["rejected"]:
            raise SystemExit(f"spans refused: {out['rejected']}, {out['failed'][:3]}")
        spans = out["answered"] * args.span_batch
        answered += spans
        runs.append(ingest_run(out, spans, "spans"))
    figures = ("per_s", "server_cores", "main_us_each", "workers_us_each")
    result: dict[str, Any] = {"flywheel": summarise(runs, figures)}
    if not args.phoenix:
        return result, answered
    same = first[: max(1, args.phoenix_spans // args.span_batch)]
    sent = len(same) * args.span_batch
    with phoenix_server(folder / "phoenix") as (phoenix_port, process):
        began = time.perf_counter()
        out = metered(Cpu(process.pid), batches(phoenix_port, same, args.ingest_concurrency))
        accepted = out["answered"] * args.span_batch
        stored, until = wait_for_phoenix(phoenix_port, accepted, began, args.phoenix_wait)
    phoenix: dict[str, Any] = {
        "spans": sent,
        "accepted": accepted,
        "accepted_per_s": round(accepted / out["wall_s"]),
        "refused_answers": out["refusals"],
        "server_cores": out["server_cores"],
        "failed_requests": len(out["failed"]),
        "stored": stored,
        "stored_per_s": round(stored / until),
        "lost": accepted - stored,
        "all_stored_after_s": round(until, 1) if stored >= accepted else None,
        "request_p50_ms": out["p50_ms"],
        "request_p99_ms": out["p99_ms"],
    }
    flywheel = result["flywheel"]["per_s"]["median"]
    result["phoenix"] = phoenix
    result["ratio_to_accepted"] = round(flywheel / phoenix["accepted_per_s"], 2)
    result["ratio_to_stored"] = round(flywheel / max(1, phoenix["stored_per_s"]), 1)
    return result, answered


def table(results: dict[str, Any]) -> str:
    lines = [f"store: {results['store']}", "| what | median | spread |", "| --- | --- | --- |"]

    def row(what: str, figures: dict[str, float], unit: str) -> None:
        lines.append(
            f"| {what} | {figures['median']:,}{unit} | {figures['min']:,}–{figures['max']:,} |"
        )

    decide = results.get("decide", {})
    if "open_loop" in decide:
        o = decide["open_loop"]
        rate = results["settings"]["rate"]
        row(f"decide open loop, offered {rate:g}/s: achieved", o["achieved_per_s"], "/s")
        row("  p50", o["p50_ms"], " ms")
        row("  p99", o["p99_ms"], " ms")
        row("  max", o["max_ms"], " ms")
        row("  server CPU", o["server_cores"], " cores")
    if "closed_loop" in decide:
        c = decide["closed_loop"]
        row(f"decide at concurrency {results['settings']['concurrency']}", c["per_s"], "/s")
        row("  p50", c["p50_ms"], " ms")
        row("  p99", c["p99_ms"], " ms")
        row("  server CPU", c["server_cores"], " cores")
    if "signals" in results:
        batch = results["settings"]["signal_batch"]
        keyed = ", each with a key" if results["settings"]["keyed"] != "no" else ""
        row(f"signals, batches of {batch:,}{keyed}", results["signals"]["per_s"], "/s")
        row("  server CPU", results["signals"]["server_cores"], " cores")
    for name, what in (("mixed", "a signal stream"), ("mixed_keyed", "a keyed signal stream")):
        if name not in results:
            continue
        m = results[name]
        rate = results["settings"]["rate"]
        row(f"decide open loop at {rate:g}/s beside {what}: p50", m["p50_ms"], " ms")
        row("  p99", m["p99_ms"], " ms")
        row("  max", m["max_ms"], " ms")
        row("  signals meanwhile", m["signals_per_s"], "/s")
        row("  server CPU", m["server_cores"], " cores")
    if "otlp" in results:
        otlp = results["otlp"]
        row(
            f"OTLP spans into Flywheel, batches of {results['settings']['span_batch']}",
            otlp["flywheel"]["per_s"],
            "/s",
        )
        row("  server CPU", otlp["flywheel"]["server_cores"], " cores")
        row("  server CPU a span: main process", otlp["flywheel"]["main_us_each"], " µs")
        row("  server CPU a span: worker processes", otlp["flywheel"]["workers_us_each"], " µs")
        if "phoenix" in otlp:
            p = otlp["phoenix"]
            lines.append(
                f"| Phoenix, the first {p['spans']:,} of them: accepted (2xx) |"
                f" {p['accepted_per_s']:,}/s | one run |"
            )
            lines.append(f"|   Phoenix, stored (queryable) | {p['stored_per_s']:,}/s | |")
            lines.append(f"| ratio to Phoenix accepted | {otlp['ratio_to_accepted']}× | |")
            lines.append(f"| ratio to Phoenix stored | {otlp['ratio_to_stored']}× | |")
            lines.append(
                f"| Phoenix spans lost | {p['lost']} | {p['stored']:,} stored of"
                f" {p['accepted']:,} accepted |"
            )
    check = results["stored"]
    lines.append(f"| Flywheel rows lost | {check['lost']} | {check['detail']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", help="storage URL (default: a DuckDB file in a temp folder)")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop decide rate")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop decide")
    parser.add_argument("--seconds", type=float, default=10.0, help="per decide run")
    parser.add_argument("--warmup", type=float, default=2.0, help="per decide run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--signal-batch", type=int, default=5000)
    parser.add_argument("--signals", type=int, default=500_000, help="per run")
    parser.add_argument("--span-batch", type=int, default=500)
    parser.add_argument("--spans", type=int, default=50_000, help="per run")
    parser.add_argument("--phoenix-spans", type=int, default=10_000, help="sent to Phoenix")
    parser.add_argument(
        "--phoenix-wait", type=float, default=300.0, help="seconds to wait for Phoenix to store"
    )
    parser.add_argument("--ingest-concurrency", type=int, default=4)
    parser.add_argument(
        "--mixed-signals", type=int, default=50_000, help="signals/s beside decide (mixed)"
    )
    parser.add_argument(
        "--phoenix",
        action=argparse.BooleanOptionalAction,
        default=PHOENIX_PYTHON.exists(),
        help="compare OTLP intake with Arize Phoenix (default: when .venv-phoenix exists)",
    )
    parser.add_argument(
        "--journal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="answer writes once synced to the server's journal (default), or after the commit",
    )
    parser.add_argument(
        "--workers",
        "--trace-workers",
        type=int,
        help="the server's worker processes for OTLP and signal batches (its default)",
    )
    parser.add_argument(
        "--keyed",
        choices=("no", "yes", "both"),
        default="no",
        help="every signal (signals and mixed phases) carries an idempotency key of its own;"
        " both: the mixed phase runs without and with keys, side by side, and signals with",
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="keyed signals written into the store in bulk before the server starts",
    )
    parser.add_argument(
        "--prefill-in-window",
        action="store_true",
        help="the prefilled signals' keys are in the duplicate check's window (default: older)",
    )
    parser.add_argument("--skip", default="", help="phases to skip: open,closed,signals,mixed,otlp")
    parser.add_argument("--name", default="serve", help="the results file's name")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {
        "store": (args.store or "duckdb").split("://")[0],
        "settings": {
            k: getattr(args, k)
            for k in (
                "rate",
                "concurrency",
                "seconds",
                "warmup",
                "repeat",
                "signal_batch",
                "signals",
                "span_batch",
                "spans",
                "ingest_concurrency",
                "mixed_signals",
                "phoenix",
                "phoenix_spans",
                "journal",
                "workers",
                "keyed",
                "prefill",
                "prefill_in_window",
            )
        },
    }
    with tempfile.TemporaryDirectory() as tmp, storage(Path(tmp), args.store) as url:
        folder = Path(tmp)
        spec = write_spec(folder, url)
        teach(spec, 5_000)
        if args.prefill:
            results["prefill"] = prefill(spec, args.prefill, args.prefill_in_window)
        before = counts(spec)
        expected = {"decisions": 0, "signals": 0}
        with flywheel_server(spec, args.journal, args.workers) as (port, process):
            cpu = Cpu(process.pid)
            if not {"open", "closed"} <= skip:
                results["decide"], answered = decide_phase(port, cpu, args, skip)
                expected["decisions"] += answered
            ids = [
                call(port, "POST", "/v1/decide", {"context": {"genre": g}})[1]["id"]
                for g in GENRES * 250
            ]
            expected["decisions"] += len(ids)
            if "signals" not in skip:
                results["signals"], answered = signals_phase(port, cpu, ids, args)
                expected["signals"] += answered
            if "mixed" not in skip:
                kinds = {"no": [False], "yes": [True], "both": [False, True]}[args.keyed]
                for keyed in kinds:
                    name = "mixed_keyed" if keyed else "mixed"
                    results[name], decided, answered = mixed_phase(port, cpu, ids, args, keyed)
                    expected["decisions"] += decided
                    expected["signals"] += answered
            if "otlp" not in skip:
                results["otlp"], answered = otlp_phase(port, cpu, folder, args)
                expected["decisions"] += answered  # one decision a span
                expected["signals"] += answered  # one evaluation event a span
        after = counts(spec)  # the server has shut down: read the store itself
        stored = {k: after[k] - before[k] for k in after}
        lost = sum(max(0, expected[k] - stored[k]) for k in expected)
        results["stored"] = {
            "expected": expected,
            "stored": stored,
            "lost": lost,
            "detail": ", ".join(
                f"{k}: {stored[k]:,} stored of {expected[k]:,} answered" for k in expected
            ),
        }
    text = table(results)
    report(args.name, results)
    print(text)


if __name__ == "__main__":
    main()
