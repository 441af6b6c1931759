"""Helpers shared by the benchmarks: machine facts and result printing."""

from __future__ import annotations

import json
import os
import platform
import sys
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
