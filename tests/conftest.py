"""Shared fixtures: the example spec, wheels on real DuckDB files (or, with
``FLYWHEEL_TEST_STORE=postgresql``, every wheel on the local PostgreSQL server), fresh
PostgreSQL schemas, a controllable clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

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


@pytest.fixture
def make_wheel(store_url: str, clock: Clock) -> Iterator[Callable[..., flywheel.Wheel]]:
    opened: list[flywheel.Wheel] = []

    def make(spec: Spec | dict[str, Any] | None = None, **kwargs: Any) -> flywheel.Wheel:
        kwargs.setdefault("clock", clock)
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
