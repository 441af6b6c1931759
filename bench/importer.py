"""Import: a 1,000,000-row CSV (context, four knobs, two signals, a time, ~1% bad rows) into a
fresh embedded store through ``import_rows``.

Each run times the whole import, end to end: reading the file, validating every cell, writing
the rejected rows' file and storing the good rows (durable when it returns). It checks that
read = imported + rejected, that exactly the planted bad rows were rejected, and that the
store holds the imported decisions and their signals.
Run: ``.venv/bin/python bench/importer.py`` (``--format xlsx|parquet|jsonl`` imports the same
rows from another format; ``--rows`` sets their number).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from _common import report  # type: ignore[import-not-found]

import flywheel
from flywheel.collect.importers import import_rows
from flywheel.demo import example_spec

START = 1_767_225_600  # 2026-01-01T00:00:00Z
BAD_SHARE = 0.01


def make_csv(path: Path, rows: int, seed: int = 7) -> int:
    """Write the file; return how many rows carry at least one bad cell."""
    rng = np.random.default_rng(seed)
    genre = rng.choice(["thriller", "romance", "scifi", "drama"], rows).astype(object)
    opening = rng.choice(["question", "suspense", "dialogue", "description"], rows)
    twists = rng.integers(0, 4, rows).astype(str).astype(object)
    density = rng.choice(["low", "mid", "high"], rows)
    length = rng.choice(["short", "medium", "long"], rows)
    completed = rng.integers(0, 2, rows).astype(str)
    rating = rng.integers(1, 6, rows).astype(str).astype(object)
    rating[rng.random(rows) < 0.5] = ""  # half the readers leave no rating
    seconds = START + rng.integers(0, 90 * 86_400, rows)
    when = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s", timezone="UTC")
    when = when.astype(object)
    # ~1% of rows get one bad cell, spread over four columns and four kinds of mistake
    bad = rng.random(rows) < BAD_SHARE
    kind = rng.integers(0, 4, rows)
    twists[bad & (kind == 0)] = "three"
    rating[bad & (kind == 1)] = "9"
    genre[bad & (kind == 2)] = "western"
    when[bad & (kind == 3)] = "yesterday"
    table = pa.table(
        {
            "genre": pa.array(genre, pa.string()),
            "opening_type": opening,
            "twist_count": pa.array(twists, pa.string()),
            "emotional_density": density,
            "length": length,
            "completed": completed,
            "rating": pa.array(rating, pa.string()),
            "when": pa.array(when, pa.string()),
        }
    )
    pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style="needed"))
    return int(bad.sum())


def convert(csv: Path, fmt: str) -> Path:
    """The same rows in another format (every cell as the CSV's text)."""
    if fmt == "csv":
        return csv
    names = pa_csv.read_csv(csv).column_names
    strings = pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
    table = pa_csv.read_csv(csv, convert_options=strings)
    target = csv.with_suffix({"xlsx": ".xlsx", "parquet": ".parquet", "jsonl": ".jsonl"}[fmt])
    if fmt == "parquet":
        pq.write_table(table, target)
    elif fmt == "jsonl":
        with target.open("w") as handle:
            for row in table.to_pylist():
                handle.write(json.dumps(row) + "\n")
    else:
        from openpyxl import Workbook

        book = Workbook(write_only=True)
        sheet = book.create_sheet("rows")
        sheet.append(table.column_names)
        for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
            sheet.append(list(row))
        book.save(target)
    return target


def run(csv: Path, bad: int, folder: Path, index: int) -> dict[str, Any]:
    store = f"duckdb:///{folder / f'import-{index}.duckdb'}"
    with flywheel.open(example_spec(), store=store, refresh=0) as wheel:
        start = time.perf_counter()
        result = import_rows(wheel, [csv], time="when", rejected_path=folder / "rejected.csv")
        elapsed = time.perf_counter() - start
        assert result.read == result.imported + result.rejected
        assert result.rejected == bad, (result.rejected, bad)
        counts = wheel.store.query(
            "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM signals) AS s"
        ).to_pylist()[0]
        assert counts["d"] == result.imported == result.decisions
        assert counts["s"] == result.signals
    return {"seconds": elapsed, "read": result.read, "rejected": result.rejected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--format", choices=["csv", "xlsx", "parquet", "jsonl"], default="csv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        csv = folder / "rows.csv"
        bad = make_csv(csv, args.rows)
        source = convert(csv, args.format)
        runs = [run(source, bad, folder, i) for i in range(args.repeat)]
        size = source.stat().st_size
    seconds = [r["seconds"] for r in runs]
    report(
        "import" if args.format == "csv" else f"import-{args.format}",
        {
            "seconds": {
                "median": round(statistics.median(seconds), 2),
                "min": round(min(seconds), 2),
                "max": round(max(seconds), 2),
            },
            "rows_per_s": round(args.rows / statistics.median(seconds)),
            "rows": args.rows,
            "rejected": runs[0]["rejected"],
            "format": args.format,
            "file_mb": round(size / 1e6, 1),
            "repeat": args.repeat,
        },
    )


if __name__ == "__main__":
    main()
