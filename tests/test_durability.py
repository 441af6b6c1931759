"""Accepted data survives: close/reopen, and a SIGKILL right after flush() returned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import flywheel
from flywheel.demo import example_spec
from tests.conftest import THRILLER, WAIT


def test_100k_signals_survive_close_and_reopen(db: Path) -> None:
    spec = example_spec()
    with flywheel.open(spec, store=f"duckdb:///{db}") as wheel:
        ids = [wheel.decide(THRILLER).id for _ in range(1000)]
        for i in range(100_000):
            wheel.signal(ids[i % 1000], "rating", 1 + i % 5)
    with flywheel.open(spec, store=f"duckdb:///{db}") as wheel:
        summary = wheel.summary()
        assert (summary.decisions, summary.signals, summary.orphans) == (1000, 100_000, 0)
        total = wheel.store.query("SELECT sum(value) AS s FROM signals").to_pylist()[0]["s"]
        assert total == sum(1 + i % 5 for i in range(100_000))


def test_exit_flushes_buffered_rows(db: Path) -> None:
    code = f"""
        import flywheel
        from flywheel.demo import example_spec
        wheel = flywheel.open(example_spec(), store="duckdb:///{db}", max_delay=3600)
        for _ in range(500):
            wheel.signal(wheel.decide({{"genre": "drama"}}), "completed", 1)
        # no flush, no close: interpreter exit must write the rows
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=120)
    with flywheel.open(example_spec(), store=f"duckdb:///{db}") as wheel:
        assert (wheel.summary().decisions, wheel.summary().signals) == (500, 500)


def test_sigkill_after_flush_loses_nothing(db: Path) -> None:
    code = f"""
        import sys, time
        import flywheel
        from flywheel.demo import example_spec
        wheel = flywheel.open(example_spec(), store="duckdb:///{db}", max_delay=3600)
        for _ in range(20_000):
            d = wheel.decide({{"genre": "romance"}})
            wheel.signal(d, "completed", 0)
        wheel.flush()
        print("flushed", flush=True)
        for _ in range(1000):  # unflushed work in progress when the kill lands
            wheel.decide({{"genre": "romance"}})
        time.sleep(60)
    """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "flushed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with flywheel.open(example_spec(), store=f"duckdb:///{db}") as wheel:
        summary = wheel.summary()
        assert summary.signals == 20_000
        assert summary.decisions >= 20_000


def test_flush_async_answers_once_durable_and_concurrent_callers_share_commits(db: Path) -> None:
    """What the server's decide awaits: each caller resumes only when its row is stored."""
    import asyncio

    with flywheel.open(example_spec(), store=f"duckdb:///{db}", refresh=0) as wheel:
        commits = 0
        write = wheel._store_rows
        decided = 0
        everyone = threading.Event()  # all 200 callers have decided

        def counted(items: Any) -> None:
            nonlocal commits
            commits += 1
            assert everyone.wait(WAIT)  # the first write waits for the others to pile up
            write(items)

        wheel._writer._sink = counted

        async def one() -> int:
            nonlocal decided
            wheel.decide(THRILLER)
            decided += 1
            if decided == 200:
                everyone.set()
            await wheel.flush_async()
            return int(wheel.store.query("SELECT count(*) AS n FROM decisions")["n"][0].as_py())

        async def many() -> list[int]:
            return await asyncio.gather(*(one() for _ in range(200)))

        stored_when_answered = asyncio.run(many())
        # the i-th caller decided i-th: when it resumed, at least i + 1 rows were stored
        assert all(n >= i + 1 for i, n in enumerate(stored_when_answered))
        assert commits <= 2  # callers waiting together were served by one write
