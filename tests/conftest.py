"""Shared fixtures: the example spec, wheels on real DuckDB files, a controllable clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def make_wheel(db: Path, clock: Clock) -> Iterator[Callable[..., flywheel.Wheel]]:
    opened: list[flywheel.Wheel] = []

    def make(spec: Spec | dict[str, Any] | None = None, **kwargs: Any) -> flywheel.Wheel:
        kwargs.setdefault("clock", clock)
        wheel = flywheel.open(
            spec if spec is not None else example_spec(), store=f"duckdb:///{db}", **kwargs
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
