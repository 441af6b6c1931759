"""What the AI loops' tests share: wheels opened on the test's store and clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import flywheel
from tests.conftest import Clock

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
