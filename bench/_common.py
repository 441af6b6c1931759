"""Helpers shared by the benchmarks: machine facts and result printing."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
    }


def report(name: str, results: dict[str, Any]) -> None:
    """Print results, and save them under bench/results/ for BENCHMARKS.md."""
    out = {"benchmark": name, "machine": machine(), "results": results}
    text = json.dumps(out, indent=2, default=str)
    print(text)
    folder = Path(__file__).parent / "results"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(text + "\n")
    sys.stdout.flush()


def run_all(work: Callable[[Any], Any], tasks: Sequence[Any], jobs: int) -> list[Any]:
    """``work`` over ``tasks`` in ``jobs`` processes (one BLAS thread each, no
    oversubscription), or in this process when ``jobs`` is 1; results in task order."""
    if jobs <= 1:
        return [work(t) for t in tasks]
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        return list(pool.map(work, tasks))
