"""A signal batch is answered with what the store did with it: ``recorded`` items stored and
``duplicates`` skipped for their idempotency key, adding up to the items sent, on both stores,
with and without a journal, across wheels sharing a store, after a crash, and over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.collect.outcomes import Recorded
from flywheel.demo import example_spec
from tests.conftest import THRILLER
from tests.server.test_app import serving


@pytest.fixture(params=["duckdb", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"duckdb:///{tmp_path / 'store.duckdb'}"


def stored(wheel: flywheel.Wheel) -> int:
    wheel.flush()
    return int(wheel.store.query("SELECT count(*) AS n FROM signals").to_pylist()[0]["n"])


@pytest.mark.parametrize("journal", [False, True], ids=["store", "journal"])
def test_duplicates_are_counted_apart_from_what_was_recorded(
    backend: str, journal: bool, tmp_path: Path
) -> None:
    folder = tmp_path / "journal" if journal else False
    with flywheel.open(example_spec(), store=backend, journal=folder, refresh=0) as wheel:
        d = wheel.decide(THRILLER).id
        same = [{"decision": d, "name": "completed", "value": True, "key": "k"}] * 3
        assert wheel.signal_batch(same) == Recorded(recorded=1, duplicates=2)
        assert stored(wheel) == 1
        assert wheel.signal_batch(same) == Recorded(recorded=0, duplicates=3)  # a re-send
        assert stored(wheel) == 1
        mixed: list[dict[str, Any]] = [
            {"decision": d, "rating": 4, "thumbs": True, "key": "f1"},  # two signals, one item
            {"decision": d, "name": "completed", "value": False},  # no key: always recorded
            {"decision": d, "name": "completed", "value": True, "key": "k"},  # stored before
            {"decision": d, "event": "accepted", "dwell_ms": 900, "key": "i1"},
            {"decision": d, "rating": 4, "thumbs": True, "key": "f1"},  # earlier in the batch
        ]
        assert wheel.signal_batch(mixed) == Recorded(recorded=3, duplicates=2)
        assert stored(wheel) == 1 + 2 + 1 + 2
        assert wheel.signal_batch(mixed) == Recorded(recorded=1, duplicates=4)
        assert stored(wheel) == 7
        # a batch without keys is recorded whole, without waiting for the store
        assert wheel.signal_batch([mixed[1]] * 2) == Recorded(2, 0)
        assert stored(wheel) == 9


def test_a_key_stored_by_another_wheel_is_a_duplicate(pg_url: str) -> None:
    """Two servers on one PostgreSQL store: a re-send to the other one is told it was a
    duplicate, and stored once."""
    with (
        flywheel.open(example_spec(), store=pg_url, refresh=0) as first,
        flywheel.open(example_spec(), store=pg_url, refresh=0) as second,
    ):
        d = first.decide(THRILLER).id
        item = {"decision": d, "name": "completed", "value": True, "key": "once"}
        assert first.signal_batch([item]) == Recorded(1, 0)
        assert second.signal_batch([item, {**item, "key": "new"}]) == Recorded(1, 1)
        assert stored(first) == 2


CRASH = """
import os, sys
import flywheel
from flywheel.demo import example_spec

wheel = flywheel.open(example_spec(), store=sys.argv[1], journal=sys.argv[2], max_delay=3600,
                      refresh=0)
d = wheel.decide({"genre": "thriller"}).id
print(d, flush=True)
for i in range(20):
    wheel.signal(d, "rating", 1 + i % 5, key=f"k{i}")
wheel.flush(journal_only=True)
os._exit(0)  # a crash: the keyed signals are only in the journal
"""


def test_a_resend_after_a_crash_is_counted_once_the_journal_is_replayed(
    backend: str, tmp_path: Path
) -> None:
    folder = tmp_path / "journal"
    done = subprocess.run(
        [sys.executable, "-c", CRASH, backend, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ},
    )
    decision = done.stdout.split()[-1]
    with flywheel.open(example_spec(), store=backend, journal=folder, refresh=0) as wheel:
        assert stored(wheel) == 20  # replayed
        again = [
            {"decision": decision, "name": "rating", "value": 1 + i % 5, "key": f"k{i}"}
            for i in range(25)
        ]
        assert wheel.signal_batch(again) == Recorded(recorded=5, duplicates=20)
        assert stored(wheel) == 25


@pytest.mark.parametrize("workers", [0, 1])
def test_the_api_answers_recorded_and_duplicates(tmp_path: Path, workers: int) -> None:
    store = f"duckdb:///{tmp_path / 'api.duckdb'}"
    with (
        flywheel.open(example_spec(), store=store, refresh=0, journal=True) as wheel,
        serving(wheel, workers=workers) as client,
    ):
        _, decision = client.call("POST", "/v1/decide", {"context": THRILLER})
        item = {"decision": decision["id"], "name": "completed", "value": 1, "key": "k"}
        answers = [client.call("POST", "/v1/signals", {"signals": [item] * 3}) for _ in range(2)]
        assert answers == [
            (200, {"ok": True, "recorded": 1, "duplicates": 2}),
            (200, {"ok": True, "recorded": 0, "duplicates": 3}),
        ]
        plain = {"decision": decision["id"], "rating": 3}
        status, answer = client.call("POST", "/v1/signals", {"signals": [plain, item]})
        assert (status, answer) == (200, {"ok": True, "recorded": 1, "duplicates": 1})
        assert stored(wheel) == 2
