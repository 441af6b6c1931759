"""A schema-driven fuzz run of the HTTP API: Schemathesis, every check, against real servers.

Two real uvicorn servers in this process, each on a DuckDB store of its own made for the run
(so the run's forgotten units and created keys touch nothing else):

- with keys: an admin key on every request, so every route is reached; the store has one
  more key (``ingest``), the one ``DELETE /v1/keys/{ident}`` is sent for;
- without keys (as ``flywheel serve`` on loopback), every route but ``POST /v1/keys``,
  which would close the server to every later request.

Schemathesis (``st run``) reads each server's OpenAPI document and runs every check
(``--checks all``: no 5xx, statuses, content types, headers and bodies as documented,
schema-invalid requests refused, schema-valid ones taken, unsupported methods answered 405
with ``Allow``, …) on ``--examples`` cases an operation in each phase. One allowance, in
the configuration this writes: on ``/v1/decide``, ``/v1/signals``, ``/v1/rows`` and
``/v1/units/{unit}`` a schema-valid request may be answered 422, because what it must hold
there is the spec's (its context features, knob values, signal names and skeleton rules; a
unit that the spec's ``normalize_units`` trims to nothing), which the document's JSON
schema, the same for every spec, does not say; the 422 still has to be the documented error
body naming the field.

Then what a hostile body costs: 200 MB sent whole to ``POST /v1/decide`` without a key, the
seconds until the answer and the growth of the process's peak memory (:func:`refusal`).

Run: ``.venv/bin/python bench/fuzz.py [--examples 100] [--seed 1]`` (``make bench-fuzz``).
Prints the requests the servers were sent (counted by them), the test cases Schemathesis
generated and the failures (0 expected), and saves them in ``bench/results/fuzz.json``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

import flywheel
from flywheel.demo import example_spec
from flywheel.server import create_app
from flywheel.server import keys as api_keys
from flywheel.server.keys import KeyRing

ROOT = Path(__file__).resolve().parents[1]
SCHEMATHESIS = Path(sys.executable).parent / "st"
# what a schema-valid body may still break on these routes is the spec's: see above
SPEC_BOUND = "^/v1/(decide|signals|rows|units/[{]unit[}])$"


class Counted:
    """An ASGI app that counts the HTTP requests it is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.requests = app, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += scope["type"] == "http"
        await self.app(scope, receive, send)


@contextmanager
def serving(wheel: flywheel.Wheel, keys: KeyRing) -> Iterator[tuple[str, Counted]]:
    """A real uvicorn server for ``wheel`` on a free loopback port; yields its base URL and
    its count of requests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    counted = Counted(create_app(wheel, keys))
    # the run's 4xx are expected, and a 5xx fails a check: no log of each request
    config = uvicorn.Config(counted, host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", counted
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _config(folder: Path, revocable: str | None) -> Path:
    """The Schemathesis configuration of a run (TOML)."""
    lines = [
        "[[operations]]",
        f"include-path-regex = '{SPEC_BOUND}'",
        "checks.positive_data_acceptance.expected-statuses ="
        ' ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]',
    ]
    if revocable is not None:
        lines += [
            "[[operations]]",
            'include-path = "/v1/keys/{ident}"',
            f'parameters = {{ "ident" = "{revocable}" }}',
        ]
    path = folder / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_one(with_keys: bool, examples: int, seed: int, folder: Path) -> dict[str, Any]:
    """One Schemathesis run against a fresh server; its JSON report's figures."""
    folder.mkdir(parents=True, exist_ok=True)
    store = f"duckdb:///{folder / 'fuzz.duckdb'}"
    with flywheel.open(example_spec(), store=store, refresh=0) as wheel:
        extra: list[str] = []
        revocable = None
        if with_keys:
            admin = api_keys.create(wheel.store, "admin")[1]
            revocable = api_keys.create(wheel.store, "ingest")[0].id
            extra = ["--header", f"Authorization: Bearer {admin}"]
        else:
            extra = ["--exclude-operation-id", "create_key_v1_keys_post"]
        report = folder / "report.json"
        with serving(wheel, KeyRing(wheel.store)) as (base, counted):
            command = [
                str(SCHEMATHESIS),
                "--config-file",
                str(_config(folder, revocable)),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(examples),
                "--seed",
                str(seed),
                "--workers",
                "1",
                "--no-color",
                "--report",
                "json",
                "--report-json-path",
                str(report),
                *extra,
            ]
            # in the run's folder: Schemathesis keeps its replay files under the working one
            done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=folder)
    result = json.loads(report.read_text())
    return {
        "keys": with_keys,
        "exit_code": done.returncode,
        "requests": counted.requests,
        "test_cases": result["test_cases"]["generated"],
        "failures": result["failures"],
        "errors": result["errors"],
        "operations": result["operations"]["tested"],
        "seconds": round(result["running_time"], 1),
        "output": done.stdout[-6000:] if done.returncode else "",
    }


def _peak_rss() -> int:
    """This process's peak resident memory so far, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def refusal(folder: Path, size: int = 200 * 1000 * 1000) -> dict[str, Any]:
    """A ``size``-byte ``POST /v1/decide`` without a key, sent whole on one connection (from
    a reused 1 MiB buffer): the seconds until its answer, and how much the peak memory of
    this process (server and client) grew meanwhile."""
    folder.mkdir(parents=True, exist_ok=True)
    with flywheel.open(example_spec(), store=f"duckdb:///{folder / 'big.duckdb'}", refresh=0) as w:
        api_keys.create(w.store, "admin")
        with serving(w, KeyRing(w.store)) as (base, _):
            port = int(base.rsplit(":", 1)[1])
            chunk = b" " * (1024 * 1024)
            before = _peak_rss()
            start = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
                conn.sendall(
                    b"POST /v1/decide HTTP/1.1\r\nHost: bench\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size
                )
                answer = b""
                sent = 0
                conn.setblocking(False)
                while b"\r\n\r\n" not in answer:
                    if sent < size:
                        try:
                            sent += conn.send(chunk[: size - sent])
                        except BlockingIOError:
                            time.sleep(0.0005)
                    try:
                        answer += conn.recv(65536)
                    except BlockingIOError:
                        time.sleep(0.0005 if sent >= size else 0)
            seconds = time.perf_counter() - start
    return {
        "body_bytes": size,
        "status": int(answer.split(b" ", 2)[1]),
        "seconds_to_answer": round(seconds, 3),
        "body_bytes_sent_before_the_answer": sent,
        "peak_memory_growth_mb": round((_peak_rss() - before) / 1e6, 1),
    }


def fuzz(examples: int, seed: int, folder: Path) -> dict[str, Any]:
    """Both runs (with keys, then without); the total of requests and of failures."""
    runs = [
        run_one(with_keys, examples, seed, folder / ("keys" if with_keys else "keyless"))
        for with_keys in (True, False)
    ]
    return {
        "examples": examples,
        "seed": seed,
        "requests": sum(r["requests"] for r in runs),
        "test_cases": sum(r["test_cases"] for r in runs),
        "failures": sum(sum(f["count"] for f in r["failures"]) + len(r["errors"]) for r in runs),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100, help="cases an operation a phase")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import report  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        results = fuzz(args.examples, args.seed, Path(tmp))
        results["refusal"] = refusal(Path(tmp) / "refusal")
    report("fuzz", results)
    sys.exit(1 if results["failures"] else 0)


if __name__ == "__main__":
    main()
