"""BLAS threads: fitting and serving work on small matrices, where BLAS threads only fight
the store's own (measured: a 148-parameter fit took 6.8 s with them beside DuckDB, 0.03 s
without). One controller finds the BLAS libraries once; a limit per call would look them up
again each time (6 ms, more than serving a segment)."""

from __future__ import annotations

from functools import cache
from typing import Any

from threadpoolctl import ThreadpoolController


@cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread() -> Any:
    """A context manager that runs its block with BLAS on one thread."""
    return _controller().limit(limits=1, user_api="blas")
