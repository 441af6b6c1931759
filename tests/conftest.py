"""Shared fixtures: the example spec, wheels on real DuckDB files (or, with
``FLYWHEEL_TEST_STORE=postgresql``, every wheel on the local PostgreSQL server), fresh
PostgreSQL schemas, a controllable clock, and for what other threads and processes do: waits
on a condition with a deadline a busy machine meets, and loopback ports held for servers."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings

import flywheel
from flywheel.demo import example_spec
from flywheel.spec import Spec

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0
DAY = 86400.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# Property tests on a busy machine: no per-example deadline, and slow generation is no failure
# (a test's own settings that name health checks must name too_slow again)
settings.register_profile(
    "flywheel", deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
settings.load_profile("flywheel")

WAIT = 120.0
"""How long a test waits for something another thread or process does: long enough for a
machine under heavy load, so a test fails only when the thing never happens."""


def wait_for(condition: Callable[[], object], seconds: float = WAIT) -> bool:
    """Whether ``condition()`` came true within ``seconds`` (polled): for what a background
    thread or process does in its own time, instead of sleeping a fixed while."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@contextmanager
def reserved_port() -> Iterator[int]:
    """A loopback port for a server process to listen on, held until the block ends: bound
    (not listening) with ``SO_REUSEADDR``, as a server's socket is, so the server can bind it
    beside this one, while no other process is handed it meanwhile (a port probed and then
    let go could be taken, by a connection's local end, before the server binds it)."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


@pytest.fixture
def loopback_port() -> Iterator[int]:
    """A port held for the test (see :func:`reserved_port`): for a server process of its own."""
    with reserved_port() as port:
        yield port


@pytest.fixture
def spec() -> Spec:
    return example_spec()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store" / "flywheel.duckdb"


POSTGRES = os.environ.get("FLYWHEEL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL server the tests use (each test gets its own schema, dropped afterwards)."""


@pytest.fixture(scope="session")
def postgres() -> str:
    """The server's URL; skips when it is unreachable, except under CI, where it must run."""
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.Error as err:
        reason = f"PostgreSQL is not reachable at {POSTGRES}: {err}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
        pytest.skip(reason)
    return POSTGRES


@pytest.fixture
def pg_url(postgres: str) -> Iterator[str]:
    """A store URL on a schema of its own, dropped after the test."""
    schema = f"flywheel_test_{uuid.uuid4().hex[:12]}"
    yield f"{postgres}?schema={schema}"
    with psycopg.connect(postgres, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("FLYWHEEL_TEST_STORE") == "postgresql":
        skip = pytest.mark.skip(reason="inspects the DuckDB file; the store is PostgreSQL")
        for item in items:
            if item.get_closest_marker("duckdb_file"):
                item.add_marker(skip)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, db: Path) -> str:
    """Where the test's wheels live: a DuckDB file, or PostgreSQL when
    ``FLYWHEEL_TEST_STORE=postgresql`` (to run the whole suite on that backend)."""
    if os.environ.get("FLYWHEEL_TEST_STORE") == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"duckdb:///{db}"


@pytest.fixture(params=["duckdb", "postgresql"])
def each_store(request: pytest.FixtureRequest, db: Path) -> str:
    """A store URL on each backend in turn: a DuckDB file, then a PostgreSQL schema of its
    own (for tests that must hold on both, whatever ``FLYWHEEL_TEST_STORE`` says)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"duckdb:///{db}"


@pytest.fixture
def make_wheel(store_url: str, clock: Clock) -> Iterator[Callable[..., flywheel.Wheel]]:
    opened: list[flywheel.Wheel] = []

    def make(spec: Spec | dict[str, Any] | None = None, **kwargs: Any) -> flywheel.Wheel:
        kwargs.setdefault("clock", clock)
        # tests drive online updates and cycles themselves (wheel.update(), wheel.learn()):
        # what they see must not depend on when a background thread ran
        kwargs.setdefault("background", False)
        wheel = flywheel.open(
            spec if spec is not None else example_spec(), store=store_url, **kwargs
        )
        opened.append(wheel)
        return wheel

    yield make
    for wheel in opened:
        wheel.close()


@pytest.fixture
def wheel(make_wheel: Callable[..., flywheel.Wheel]) -> flywheel.Wheel:
    return make_wheel()


THRILLER = {"genre": "thriller"}
PARAMS = {
    "opening_type": "suspense",
    "twist_count": 2,
    "emotional_density": "mid",
    "length": "long",
}


Open = Callable[..., flywheel.Wheel]


@pytest.fixture
def wheels(each_store: str, clock: Clock) -> Iterator[Open]:
    """Opens wheels on the test's store (DuckDB, then PostgreSQL) and clock, with no
    background turn (a test runs what it wants itself); closes them after the test."""
    opened: list[flywheel.Wheel] = []

    def open_wheel(spec: dict[str, Any], **options: Any) -> flywheel.Wheel:
        options.setdefault("background", False)
        wheel = flywheel.open(spec, store=each_store, clock=clock, **options)
        opened.append(wheel)
        return wheel

    yield open_wheel
    for wheel in opened:
        wheel.close()
