"""Spreadsheets out: the playbook (one row per segment, exact values) and the findings.

A team can run its flywheel from a spreadsheet: import results, analyse, and export the next
round's parameters. CSV and JSON are written with the standard library; XLSX with openpyxl.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.analyze import Analysis
from flywheel.errors import InvalidInputError
from flywheel.learn.cells import Cells
from flywheel.playbook.book import Playbook
from flywheel.rules import beside

FORMATS = ("xlsx", "csv", "json")
MAX_EXPORTED_SEGMENTS = 100_000  # segments a playbook export lists, in the spec's order
Sheet = tuple[str, list[dict[str, Any]]]


def playbook_rows(playbook: Playbook, cells: Cells | None = None) -> list[dict[str, Any]]:
    """One row per context segment: each context feature, each knob's exact value (and the
    fixed values), then the expected result, its 95% interval, the share of traffic the
    playbook gives it, and the rows behind the segment (from ``cells``, the training data).
    A statistic whose name a knob or context feature has is written as ``#name``. At most
    :data:`MAX_EXPORTED_SEGMENTS` segments, in the order of the spec's levels."""
    spec = playbook.spec
    out = []
    rows_of: dict[tuple[int, ...], float] = {}
    if cells is not None and len(cells):  # rows per segment, by its context level codes
        keys = np.stack([cells.codes[f.name] for f in spec.context] or [np.zeros(len(cells))], 1)
        unique, inverse = np.unique(keys.astype(np.int64), axis=0, return_inverse=True)
        sums = np.bincount(inverse.ravel(), cells.n, len(unique))
        width = len(spec.context)
        rows_of = {tuple(k[:width]): float(n) for k, n in zip(unique.tolist(), sums, strict=True)}
    for context in playbook.segment_contexts(MAX_EXPORTED_SEGMENTS):
        table = playbook.segment(context)
        if len(table.rows) == 0:
            continue
        best = table.best
        row: dict[str, Any] = dict(playbook.describe_context(context))
        row.update(spec.space.params(int(table.rows[best])))
        row.update(spec.fixed)
        stats: dict[str, Any] = {
            "expected": float(table.mean[best]),
            "low": float(table.low[best]),
            "high": float(table.high[best]),
            "served_share": float(table.probs[best]),
        }
        if cells is not None:
            stats["rows"] = round(rows_of.get(tuple(playbook.key(context)), 0.0))
        stats["playbook"] = playbook.version
        out.append(_beside(row, stats))
    return out


def findings_sheets(analysis: Analysis) -> list[Sheet]:
    """The findings as tables: best combinations, pairs (every cell), single dimensions,
    readiness, and the sentences."""
    best = [
        _beside(
            {**b.context, **b.params},
            {"expected": b.expected, "low": b.low, "high": b.high, "p_best": b.p_best,
             "default": b.default, "lift": b.lift, "lift_low": b.lift_low,
             "lift_high": b.lift_high, "rows": b.rows},
        )
        for b in analysis.best
    ]  # fmt: skip
    pairs = [
        {"pair": i.name, "first": i.factors[0], "first_value": c.levels[0],
         "second": i.factors[1], "second_value": c.levels[1], "rows": c.rows,
         "observed": c.observed, "model": c.model, "beyond_additive": c.effect, "low": c.low,
         "high": c.high, "p_value": i.p_value, "q_value": i.q_value}
        for i in analysis.interactions
        for c in i.cells
    ]  # fmt: skip
    single = [
        {"factor": s.factor, "kind": s.kind, "level": s.level, "rows": s.rows,
         "observed": s.observed, "model": s.estimate, "low": s.low, "high": s.high,
         "reference": s.reference, "lift": s.lift, "lift_low": s.lift_low,
         "lift_high": s.lift_high}
        for s in analysis.single
    ]  # fmt: skip
    readiness = [
        {"factors": " × ".join(r.factors), "kind": r.order, "rows": r.rows,
         "detectable_effect": r.mde, "wanted_effect": r.effect, "ready": r.ready,
         "more_rows": r.more_rows}
        for r in analysis.readiness
    ]  # fmt: skip
    sentences = [{"finding": s} for s in (*analysis.sentences, *analysis.warnings)]
    return [
        ("best", best),
        ("pairs", pairs),
        ("single", single),
        ("readiness", readiness),
        ("sentences", sentences),
    ]


def _beside(names: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """The spec's names and values, then the statistics (renamed where a name is taken)."""
    return {**names, **{beside(k, names): v for k, v in stats.items()}}


def write(sheets: Sequence[Sheet], fmt: str, path: Path) -> None:
    """Write tables: XLSX (one worksheet each), JSON (an object of lists), or CSV (the first
    table in ``path``, the others beside it as ``<stem>-<name>.csv``)."""
    if fmt not in FORMATS:
        raise InvalidInputError("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        data = dict(sheets)
        payload = data[sheets[0][0]] if len(sheets) == 1 else data
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n", "utf-8")
    elif fmt == "csv":
        for i, (name, rows) in enumerate(sheets):
            target = path if i == 0 else path.with_name(f"{path.stem}-{name}{path.suffix}")
            _csv(rows, target)
    else:
        _xlsx(sheets, path)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def _csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_columns(rows))
        writer.writeheader()
        writer.writerows(rows)


def _xlsx(sheets: Sequence[Sheet], path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets:
        sheet = book.create_sheet(name[:31])
        columns = _columns(rows)
        sheet.append(columns)
        for row in rows:
            sheet.append([_cell(row.get(c)) for c in columns])
    book.save(path)


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
