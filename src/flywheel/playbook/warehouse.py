"""Cells computed elsewhere: the queries a warehouse runs for a spec, and a playbook learned
from the cells it returns.

``flywheel sql --dialect D`` renders the alignment and cells queries (the one written form,
translated) with the encoding they bin and group by; ``flywheel learn --cells FILE`` fits and
publishes from the cells, as a cycle would (:func:`flywheel.playbook.publish._fit`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from flywheel.align.sql import aligned_rows_sql
from flywheel.errors import InvalidInputError
from flywheel.learn import sql as learn_sql
from flywheel.learn.design import Encoding
from flywheel.learn.sql import cells_sql
from flywheel.playbook.book import Playbook, _restore
from flywheel.playbook.publish import LearnResult, _encoding, _fit, _iso, cells_of
from flywheel.seatbelt import breaker
from flywheel.spec import Spec
from flywheel.store import Store
from flywheel.store.base import ARROW_TYPES, TIMESTAMP
from flywheel.store.dialects import DIALECTS, translate

STATISTICS = (
    learn_sql.N,
    learn_sql.S,
    learn_sql.SS,
    learn_sql.ROWS,
    learn_sql.REWARD_SUM,
    learn_sql.FIRST_TS,
    learn_sql.LAST_TS,
)
"""The cells query's statistic columns, after the context and knob columns."""
_TIMES = (learn_sql.FIRST_TS, learn_sql.LAST_TS)


def encoding_for(store: Store, spec: Spec, as_of: datetime) -> Encoding:
    """The encoding a cycle as of ``as_of`` learns with: each numeric feature's bins and each
    open category's levels, from the rows the store holds up to then."""
    return _encoding(store, spec, {"as_of": as_of})


def encoding_json(
    encoding: Encoding, spec: Spec | None = None, as_of: datetime | None = None
) -> dict[str, Any]:
    """``encoding`` as JSON, in the form a playbook's metadata keeps it (``categorical``,
    ``edges``, ``open``), with the ``spec_digest`` of the spec it is for and the moment
    (``as_of``) its bins and levels were computed as of, when given."""
    out: dict[str, Any] = {
        "categorical": {n: list(v) for n, v in encoding.categorical.items()},
        "edges": {n: list(e) for n, e in encoding.edges.items()},
        "open": sorted(encoding.open),
    }
    if spec is not None:
        out["spec_digest"] = spec.digest
    if as_of is not None:
        out["as_of"] = as_of.isoformat()
    return out


def encoding_from_json(spec: Spec, data: Any, where: str = "the encoding") -> Encoding:
    """The encoding :func:`encoding_json` wrote, checked against ``spec``: bins for each
    numeric feature, the spec's values for each listed one, levels for each open one (an
    error names the field; ``where`` says whose it is in messages)."""

    def bad(reason: str) -> InvalidInputError:
        return InvalidInputError("encoding", f"{where}: {reason}")

    if not isinstance(data, Mapping):
        raise bad("expected a JSON object with categorical, edges and open")
    digest = data.get("spec_digest")
    if digest is not None and digest != spec.digest:
        raise bad(
            f"it was computed for another spec (digest {digest}, this spec's is {spec.digest});"
            " compute it again with `flywheel sql`"
        )
    parts = {key: data.get(key, {}) for key in ("categorical", "edges")}
    for key, part in parts.items():
        if not isinstance(part, Mapping):
            raise bad(f"{key}: expected an object of lists by feature name")
    opened = data.get("open", [])
    if not isinstance(opened, list) or not all(isinstance(n, str) for n in opened):
        raise bad("open: expected a list of feature names")
    names = {f.name for f in spec.context}
    unknown = sorted({*parts["categorical"], *parts["edges"], *opened} - names)
    if unknown:
        raise bad(f"{unknown[0]!r} is not a context feature of the spec")
    wanted = sorted(f.name for f in spec.context if f.open)
    if sorted(opened) != wanted:
        raise bad(f"open: the spec's open features are {wanted}, not {sorted(opened)}")
    categorical: dict[str, dict[Any, int]] = {}
    edges: dict[str, tuple[float, ...]] = {}
    for f in spec.context:
        if f.kind == "numeric":
            bounds = parts["edges"].get(f.name)
            numbers = isinstance(bounds, list) and all(
                isinstance(b, int | float) and not isinstance(b, bool) for b in bounds
            )
            if not numbers or list(bounds) != sorted(bounds):
                raise bad(f"edges.{f.name}: expected the bins' inner bounds, numbers in order")
            edges[f.name] = tuple(float(b) for b in bounds)
            continue
        levels = parts["categorical"].get(f.name)
        if not isinstance(levels, list):
            raise bad(f"categorical.{f.name}: expected the feature's levels, a list")
        try:
            restored = [_restore(spec, f.name, v) for v in levels]
        except (TypeError, ValueError):
            raise bad(f"categorical.{f.name}: levels of another type than the feature's") from None
        if f.listed and restored != list(f.values):
            raise bad(
                f"categorical.{f.name}: {restored} are not the spec's values {list(f.values)}"
            )
        categorical[f.name] = {v: i for i, v in enumerate(restored)}
    return Encoding(categorical, edges, frozenset(opened))


def load_encoding(
    spec: Spec, source: str | Path | Mapping[str, Any]
) -> tuple[Encoding, datetime | None]:
    """An encoding from a JSON file (or its parsed content) that :func:`encoding_json` wrote,
    and the moment it was computed as of (``None`` when it does not say)."""
    where = "the encoding"
    data: Any = source
    if isinstance(source, str | Path):
        where = str(source)
        try:
            data = json.loads(Path(source).read_text("utf-8"))
        except (OSError, ValueError) as err:
            raise InvalidInputError("encoding", f"cannot read {where} as JSON: {err}") from None
    encoding = encoding_from_json(spec, data, where)
    raw = data.get("as_of")
    try:
        as_of = None if raw is None else datetime.fromisoformat(str(raw))
    except ValueError:
        raise InvalidInputError("encoding", f"{where}: as_of {raw!r} is not a time") from None
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    return encoding, as_of


def warehouse_queries(
    spec: Spec, encoding: Encoding, dialect: str, as_of: datetime
) -> dict[str, str]:
    """The alignment query (``aligned``) and the cells query (``cells``) in ``dialect``,
    pretty-printed, with ``$as_of`` replaced by the moment: what another engine runs on its
    copy of the tables (:func:`tables_read` says which) to compute the cells a cycle fits."""
    if dialect not in DIALECTS:
        raise InvalidInputError("dialect", f"{dialect!r} is not one of {', '.join(DIALECTS)}")
    params = {"as_of": as_of}
    return {
        "aligned": translate(aligned_rows_sql(spec), dialect, params, pretty=True),
        "cells": translate(cells_sql(spec, encoding), dialect, params, pretty=True),
    }


def tables_read(duckdb_sql: str) -> list[str]:
    """The tables and views a query reads (the names of its own ``WITH`` parts left out)."""
    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
    own = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return sorted({t.name for t in tree.find_all(exp.Table)} - own)


def read_cells(path: str | Path) -> tuple[pa.Table, dict[str, Any]]:
    """Cells from a Parquet file (or a folder of them, as Spark writes), and their source:
    the path and the SHA-256 of the files' bytes, recorded with the playbook learned on them."""
    where = Path(path)
    digest = hashlib.sha256()
    try:
        files = (
            sorted(p for p in where.rglob("*") if p.is_file() and not p.name.startswith(("_", ".")))
            if where.is_dir()
            else [where]
        )
        for file in files:
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        table = pq.read_table(where)
    except (OSError, pa.ArrowException) as err:
        raise InvalidInputError("cells", f"cannot read {where} as Parquet: {err}") from None
    return table, {"cells": str(where), "sha256": digest.hexdigest()}


def conformed_cells(spec: Spec, encoding: Encoding, table: pa.Table, where: str) -> pa.Table:
    """``table`` checked to hold the cells query's columns (the context features, the knobs,
    then :data:`STATISTICS`), each cast to the type the store's query gives (an engine may
    give decimals for counts, or other integer and time types). An error names the column."""
    expected = [*(f.name for f in spec.context), *(k.name for k in spec.knobs), *STATISTICS]
    missing = [name for name in expected if name not in table.column_names]
    if missing:
        more = f" (nor {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""
        raise InvalidInputError(
            "cells",
            f"{where} has no column {missing[0]!r}{more}; the cells query's columns are"
            f" {', '.join(map(repr, expected))}",
        )
    kinds = {f.name: f.dtype for f in spec.context} | {k.name: k.dtype for k in spec.knobs}
    columns = []
    for name in expected:
        column = table.column(name)
        kind = column.type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        numeric = numeric or pa.types.is_decimal(kind)
        target: pa.DataType
        if name in _TIMES:
            target = TIMESTAMP
            if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
                raise InvalidInputError(
                    "cells", f"{where}: column {name!r} holds {kind}, not times"
                )
        elif name in STATISTICS or name in encoding.edges:
            target = pa.int64() if name == learn_sql.ROWS else pa.float64()
            if not numeric:
                what = "bin numbers" if name in encoding.edges else "numbers"
                raise InvalidInputError(
                    "cells", f"{where}: column {name!r} holds {kind}, not {what}"
                )
        else:
            target = ARROW_TYPES[kinds[name]]
        if name in STATISTICS and column.null_count:
            raise InvalidInputError(
                "cells", f"{where}: column {name!r} has {column.null_count} missing values"
            )
        try:
            columns.append(pc.cast(column, target, safe=name not in _TIMES))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InvalidInputError(
                "cells", f"{where}: column {name!r} cannot be read as {target}: {err}"
            ) from None
        if name in encoding.edges:
            _check_bins(name, columns[-1], len(encoding.edges[name]) + 1, where)
    return pa.Table.from_arrays(columns, names=expected)


def _check_bins(name: str, column: pa.ChunkedArray[Any], bins: int, where: str) -> None:
    """A numeric feature's column holds bin numbers from 0 to ``bins - 1`` (those of the
    encoding the cells query was rendered with)."""
    values = np.asarray(column.to_numpy(), dtype=float)
    wrong = values[np.isnan(values) | (values < 0) | (values >= bins) | (values % 1 != 0)]
    if len(wrong):
        raise InvalidInputError(
            "cells",
            f"{where}: column {name!r} holds {wrong[0]:g}, not a bin number of the encoding"
            f" (0 to {bins - 1}); give the encoding the cells query was rendered with"
            " (--encoding, the encoding.json `flywheel sql --out` wrote)",
        )


def learn_from_cells(
    store: Store,
    spec: Spec,
    table: pa.Table,
    encoding: Encoding,
    now: float,
    seed: int | None = None,
    source: Mapping[str, Any] | None = None,
) -> tuple[LearnResult, Playbook | None]:
    """Fit and publish a playbook on cells another engine computed (the result of the cells
    query :func:`warehouse_queries` renders, with the ``encoding`` it was rendered with):
    the fit of a cycle (:func:`_fit`), trained as of ``now``, its ``source`` (the file and
    its digest: :func:`read_cells`) recorded under ``training.source``.

    The seatbelt's data checks need the rows behind the cells, which the store does not
    hold: they do not run (the result's reason says so); while the seatbelt is halted
    nothing is published. Cells without rows, or with fewer than ``learn.min_rows``, are
    refused with an error."""
    started = time.perf_counter()
    where = str(source["cells"]) if source and source.get("cells") else "the cells table"
    previous_version = store.latest_version()
    if spec.seatbelt.enabled:
        stop = breaker.halted(store)
        if stop is not None:
            reason = f"halted since {stop.since} by {stop.check}: {stop.reason}"
            return LearnResult(False, previous_version, reason, halted=True), None
    table = conformed_cells(spec, encoding, table, where)
    rows = int(pc.sum(table.column(learn_sql.ROWS)).as_py() or 0) if table.num_rows else 0
    if rows <= 0:
        raise InvalidInputError("cells", f"{where} holds no rows (no cells with a reward)")
    if rows < spec.learn.min_rows:
        raise InvalidInputError(
            "cells",
            f"{where} holds only {rows} rows with a reward;"
            f" learn.min_rows is {spec.learn.min_rows}",
        )
    if not len(cells_of(table, spec, encoding)):
        raise InvalidInputError("cells", f"{where}: no cell holds values the spec allows")
    signature = [
        rows,
        round(float(pc.sum(table.column(learn_sql.REWARD_SUM)).as_py()), 9),
        _iso(pc.max(table.column(learn_sql.LAST_TS))),
    ]
    playbook = _fit(spec, table, encoding, rows, signature, now, seed)
    meta = playbook.meta
    meta["replaces"] = previous_version
    meta["training"]["source"] = dict(source) if source else {"cells": None}
    skipped = "the seatbelt's data checks did not run (the rows are not in the store)"
    meta["seatbelt"] = {"checks": [], "quality": None, "skipped": skipped}
    version = store.publish(spec.digest, playbook.meta_json(), playbook.payload())
    playbook.version = version
    meta["diagnostics"]["learn_seconds"] = round(time.perf_counter() - started, 4)
    origin = f" from {where}" if source and source.get("cells") else " given as a table"
    reason = (
        f"fitted {rows:,} rows in {meta['training']['cells']} cells{origin}"
        + (f"; replaces version {previous_version}" if previous_version else "; first playbook")
        + f"; {skipped}"
    )
    return LearnResult(True, version, reason, meta["diagnostics"]), playbook
