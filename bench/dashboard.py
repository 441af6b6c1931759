"""The dashboard's overview over HTTP on a store of 10M decisions and 30M signals.

The store is ``bench/health.py``'s (built the same way, straight into the store; see there),
served by the same app as ``flywheel serve`` on a thread of this process, the wheel's clock
at the store's last moment. Timed, from an HTTP client in this process:

* **first**: from the first request for the overview to the first answer that holds it (the
  page is computed in the background; until it is, the answer says ``ready: false``);
* **warm**: ``--requests`` requests one after the other once it is computed (the answer
  time a person sees; p50, p99, max);
* **while recomputing**: requests every 0.1 s until the page, stale after four times its
  computation, has been recomputed in the background, through that recomputation (the
  answer time while the server is busy computing it again).

Run: ``.venv/bin/python bench/dashboard.py`` (``--decisions 200000`` for a quick check).
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from _common import report  # type: ignore[import-not-found]
from health import END, build  # type: ignore[import-not-found]

import flywheel
from flywheel.demo import example_spec
from flywheel.server import create_app

PATH = "/v1/dashboard/overview"


@contextmanager
def serving(wheel: flywheel.Wheel) -> Iterator[str]:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(wheel), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()
        listening.close()


def get(base: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(base + PATH, timeout=600) as answer:
        body = json.loads(answer.read())
    return time.perf_counter() - t0, body


def quantiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 1),
        "max_ms": round(ms[-1], 1),
    }


def measure(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    spec = example_spec()
    url = f"duckdb:///{folder / 'dashboard.duckdb'}"
    with flywheel.open(spec, store=url, background=False, refresh=0, clock=lambda: END) as wheel:
        t0 = time.perf_counter()
        signals = build(wheel, args.decisions, args.signals_per_decision)  # and the versions
        built = round(time.perf_counter() - t0, 1)
        with serving(wheel) as base:
            t0 = time.perf_counter()
            answers = 0
            while True:
                _, page = get(base)
                answers += 1
                if page["ready"]:
                    break
            first = time.perf_counter() - t0
            warm = [get(base)[0] for _ in range(args.requests)]
            done, took = page["computations"], page["took"]
            during: list[float] = []
            deadline = time.monotonic() + 6 * took + 60
            while time.monotonic() < deadline:
                seconds, again = get(base)
                during.append(seconds)
                if again["computations"] > done:
                    break
                time.sleep(0.1)
            recomputed = again["computations"] > done
    titles = [b["title"] for b in page["blocks"]]
    return {
        "decisions": args.decisions,
        "signals": signals,
        "build_s": built,
        "first_s": round(first, 2),
        "first_answers": answers,
        "computed_in_s": took,
        "warm": quantiles(warm),
        "while_recomputing": {**quantiles(during), "recomputed": recomputed},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "blocks": titles,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=10_000_000)
    parser.add_argument("--signals-per-decision", type=float, default=3.0)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = measure(Path(folder), args)
    report("dashboard", results)


if __name__ == "__main__":
    main()
