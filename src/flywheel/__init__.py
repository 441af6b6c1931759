"""Flywheel: decide, signal, align, learn, publish — a data flywheel that turns.

>>> import flywheel
>>> spec = {"knobs": {"tone": ["warm", "formal"]}, "reward": {"formula": "accepted"}}
>>> with flywheel.open(spec, store="duckdb:///:memory:") as wheel:
...     d = wheel.decide()
...     wheel.implicit(d, "accepted")
...     wheel.aligned().column("reward").to_pylist()
[1.0]
"""

from flywheel.errors import (
    FlywheelError,
    InvalidInputError,
    SkeletonViolationError,
    SpecError,
    StoreError,
    StoreLockedError,
    UnknownNameError,
    ValueNotAllowedError,
    WrongTypeError,
)
from flywheel.playbook import Decision
from flywheel.spec import Spec, load
from flywheel.wheel import Wheel, open

__version__ = "0.1.0"

__all__ = [
    "Decision",
    "FlywheelError",
    "InvalidInputError",
    "SkeletonViolationError",
    "Spec",
    "SpecError",
    "StoreError",
    "StoreLockedError",
    "UnknownNameError",
    "ValueNotAllowedError",
    "Wheel",
    "WrongTypeError",
    "__version__",
    "load",
    "open",
]
