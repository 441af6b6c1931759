"""Imports of files and spreadsheets: rows that already happened, recorded as decisions.

:func:`read_table` reads CSV, XLSX, Parquet and JSONL files into Arrow; :func:`import_rows`
validates their rows against the spec and stores the good ones, each as an observational
decision (policy ``imported``: no playbook served it, so it has no propensity) with its
results as signals, exactly what :meth:`~flywheel.Wheel.log` records for one row: the same
types and value checks, the same unit pseudonyms, the same redaction of text signals.

Validation is vectorised over whole columns (Arrow and NumPy); Python only looks at the cells
that fail, to say why. A row that cannot be used is never dropped silently: it is rejected with
its row number and every reason, so ``read == imported + rejected`` always holds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import secrets
import time as clock
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from flywheel.collect.record import EARLIEST, LATEST, MAX_POLICY_NAME, OUTSIDE, OWN_POLICIES
from flywheel.collect.redact import redact
from flywheel.errors import InvalidInputError, StoreError
from flywheel.spec import MAX_OPEN_TEXT, RESERVED_NAMES, DType, Import, Spec
from flywheel.store.base import TIMESTAMP

if TYPE_CHECKING:
    from typing import TypeAlias

    from flywheel.wheel import Wheel

    Column: TypeAlias = pa.Array[Any]

__all__ = [
    "CHUNK_ROWS",
    "FIRST_ROW",
    "ImportInterruptedError",
    "ImportReport",
    "import_rows",
    "read_table",
]

CHUNK_ROWS = 200_000
"""Decisions (with their signals) written per transaction."""
MAX_LISTED = 1_000
"""Rejections and unmatched rows listed in a report; the counts are always complete."""
FIRST_ROW = 2
"""The number of the first data row: rows are numbered as a spreadsheet shows them."""
POLICY = "imported"

Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_ISO_NAIVE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?)?$"
)
_ISO_ZONED = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})$"
)
_FALSE_WORDS, _TRUE_WORDS = ("false", "no", "0"), ("true", "yes", "1")
_NUMBER_WORDS = pa.array(["false", "no", "true", "yes"])


# --- reading -------------------------------------------------------------------------------------


def read_table(path: Path, sheet: str | None = None) -> pa.Table:
    """A file's rows as an Arrow table, chosen by extension.

    CSV (``.csv``, ``.tsv``; comma, semicolon or tab separated, UTF-8) is read as text, so
    nothing is guessed (``007`` stays ``007``): the spec decides each column's type. XLSX reads
    the first sheet (or ``sheet``), its first row being the header. Parquet and JSONL
    (``.jsonl``, ``.ndjson``) keep their own types. Column names are trimmed.
    """
    path = Path(path)
    readers: dict[str, Callable[[Path], pa.Table]] = {
        ".csv": _read_csv,
        ".tsv": _read_csv,
        ".xlsx": lambda p: _read_xlsx(p, sheet),
        ".parquet": _read_parquet,
        ".pq": _read_parquet,
        ".jsonl": _read_jsonl,
        ".ndjson": _read_jsonl,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise InvalidInputError(
            "file",
            f"{path.name}: cannot import {path.suffix or 'a file without an extension'}"
            " (expected .csv, .xlsx, .parquet or .jsonl)",
        )
    if not path.is_file():
        raise InvalidInputError("file", f"{path}: no such file")
    table = reader(path)
    return table.rename_columns([name.strip().lstrip("\ufeff") for name in table.column_names])


def _read_csv(path: Path) -> pa.Table:
    try:
        with path.open("rb") as file:
            header_line = file.readline().decode("utf-8-sig", errors="replace")
    except OSError as err:
        raise InvalidInputError("file", f"{path.name}: cannot read: {err}") from None
    delimiter = max("\t,;", key=header_line.count) if header_line.strip() else ","
    header = next(csv.reader([header_line], delimiter=delimiter), [])
    try:
        return pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
            # every column as text: coercion follows the spec, not the reader's guesses
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())),
        )
    except (pa.ArrowInvalid, OSError) as err:
        if "UTF8" in str(err):
            reason = "is not UTF-8 text (save it as CSV UTF-8)"
            raise InvalidInputError("file", f"{path.name}: {reason}") from None
        raise InvalidInputError("file", f"{path.name}: not a readable CSV file: {err}") from None


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise InvalidInputError(
            "file", f"{path.name}: not a readable Parquet file: {err}"
        ) from None


def _read_jsonl(path: Path) -> pa.Table:
    try:
        return pa_json.read_json(path)
    except pa.ArrowInvalid:
        pass  # mixed types in a column, say: read it line by line, as text where needed
    except OSError as err:
        raise InvalidInputError("file", f"{path.name}: cannot read: {err}") from None
    records: list[Mapping[str, Any]] = []
    try:
        with path.open(encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise InvalidInputError(
                        "file", f"{path.name}: line {number} is not a JSON object"
                    )
                records.append(record)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInputError("file", f"{path.name}: not a readable JSONL file: {err}") from None
    names = list(dict.fromkeys(name for record in records for name in record))
    return pa.table({n: _python_column([r.get(n) for r in records]) for n in names})


def _read_xlsx(path: Path, sheet: str | None) -> pa.Table:
    from openpyxl import load_workbook
    from openpyxl.utils import get_column_letter

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises many kinds for a damaged or foreign file
        raise InvalidInputError("file", f"{path.name}: not a readable XLSX file: {err}") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise InvalidInputError(
                "sheet",
                f"{path.name} has no sheet {sheet!r} (sheets: {', '.join(book.sheetnames)})",
            )
        rows = [list(row) for row in book[sheet or book.sheetnames[0]].iter_rows(values_only=True)]
    finally:
        book.close()
    while rows and all(cell is None for cell in rows[-1]):
        rows.pop()  # formatted but empty rows below the data
    if not rows:
        return pa.table({})
    header, data = rows[0], rows[1:]
    width = max(len(row) for row in rows)
    columns: dict[str, Column] = {}
    for i in range(width):
        values = [row[i] if i < len(row) else None for row in data]
        title = header[i] if i < len(header) else None
        if title is None and all(v is None for v in values):
            continue
        name = get_column_letter(i + 1) if title is None else str(title)
        columns[name if name not in columns else f"{name} ({get_column_letter(i + 1)})"] = (
            _python_column(values)
        )
    return pa.table(columns)


def _python_column(values: list[Any]) -> Column:
    """Cells of one column (spreadsheet or JSON values): typed when they share a type, text
    when they do not (a number column with one ``'three'`` in it)."""
    try:
        array: Column = pa.array(values)
        if not pa.types.is_nested(array.type):
            return array
    except (pa.ArrowException, OverflowError):
        pass
    return pa.array([_cell_text(v) for v in values], pa.string())


def _cell_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, default=str, ensure_ascii=False)


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportReport:
    """What an import did. ``read == imported + rejected`` always holds.

    Rows are numbered as a spreadsheet shows them: the header is row 1, so the first data row
    is row 2 (in a JSONL file, row n is line n - 1; in an Arrow table, index n - 2).
    ``rejections`` lists (source, row, reason) for the first ``MAX_LISTED`` rejected rows;
    ``rejected`` counts them all. ``ignored_columns`` lists (source, column, reason) for each
    column nothing was read from. With two sources, features rows without results are imported
    all the same (as decisions whose reward stays pending, then expired or the spec's
    ``missing`` value), and results rows without a features row are rejected.
    """

    read: int
    imported: int
    rejected: int
    decisions: int
    signals: int
    rejections: tuple[tuple[str, int, str], ...] = ()
    sources: tuple[str, ...] = ()
    ignored_columns: tuple[tuple[str, str, str], ...] = ()
    unmatched_features: int = 0
    unmatched_results: int = 0
    unmatched_feature_rows: tuple[int, ...] = ()
    unmatched_result_rows: tuple[int, ...] = ()
    seconds: float = 0.0

    @property
    def joined(self) -> bool:
        """Whether a features source was joined with a results source."""
        return len(self.sources) == 2

    def summary(self) -> str:
        """``read N, imported A, rejected R``, and the unmatched rows of a join."""
        text = f"read {self.read:,}, imported {self.imported:,}, rejected {self.rejected:,}"
        if self.joined:
            text += (
                f"; {self.unmatched_features:,} features rows without results (imported, reward"
                f" pending), {self.unmatched_results:,} results rows without features (rejected)"
            )
        return text

    def details(self, limit: int = 20) -> list[str]:
        """The first ``limit`` rejections as ``source row N: reason`` lines."""
        return [f"{source} row {row}: {reason}" for source, row, reason in self.rejections[:limit]]

    def ignored(self) -> list[str]:
        """Each ignored column as ``source column NAME: reason``."""
        return [f"{source} column {name!r}: {why}" for source, name, why in self.ignored_columns]


class ImportInterruptedError(StoreError):
    """The store refused a chunk: the chunks written before it stay stored.

    ``report`` counts what was stored (``imported`` and ``decisions``), so the rest can be
    imported again without the stored rows (they would be recorded twice).
    """

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


# --- columns -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    name: str
    table: pa.Table

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def column(self, index: int) -> Column:
        return _array(self.table.column(index))

    def label(self, index: int, target: str) -> str:
        name = self.table.column_names[index]
        return name if name == target else f"{name} ({target})"


@dataclass(frozen=True)
class _Layout:
    """Which column of a source holds what: targets (knobs, context, fixed values, signals)
    by name, and the key, time and unit columns."""

    targets: dict[str, int]
    key: int | None
    time: int | None
    unit: int | None
    ignored: tuple[tuple[str, str], ...]  # (column, why it was ignored)
    propensity: int | None = None
    policy: int | None = None


def _array(column: pa.ChunkedArray[Any] | Column) -> Column:
    if not isinstance(column, pa.ChunkedArray):
        return column
    if column.num_chunks == 1:
        return column.chunks[0]
    return pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)


def _layout(source: _Source, spec: Spec, settings: Import, role: str) -> _Layout:
    """Map a source's columns (``role``: rows, features or results) onto the spec."""
    names = {k.name for k in spec.knobs} | {f.name for f in spec.context} | set(spec.fixed)
    allowed = set(spec.signals) if role == "results" else names | set(spec.signals)
    known = names | set(spec.signals)
    targets: dict[str, int] = {}
    found: dict[str, int | None] = {
        "key": None, "time": None, "unit": None, "propensity": None, "policy": None
    }  # fmt: skip
    ignored: list[tuple[str, str]] = []
    for index, name in enumerate(source.table.column_names):
        if name == settings.time and found["time"] is None:
            found["time"] = index
            continue
        if role != "results" and found["propensity"] is None and name == settings.propensity:
            found["propensity"] = index
            continue
        if role != "results" and found["policy"] is None and name == settings.policy:
            found["policy"] = index
            continue
        if name == settings.unit and role != "results" and found["unit"] is None:
            found["unit"] = index
            continue
        if name == settings.key and role != "rows" and found["key"] is None:
            found["key"] = index
            continue
        target = settings.columns.get(name, name if name in known else None)
        if target is None or target not in allowed:
            ignored.append((name, _ignored_reason(name, target, settings, role)))
        elif target in targets:
            other = source.table.column_names[targets[target]]
            raise InvalidInputError(
                "columns", f"{source.name}: columns {other!r} and {name!r} both map to {target}"
            )
        else:
            targets[target] = index
    layout = _Layout(
        targets,
        found["key"],
        found["time"],
        found["unit"],
        tuple(ignored),
        found["propensity"],
        found["policy"],
    )
    _check_layout(source, spec, settings, role, layout)
    return layout


def _ignored_reason(name: str, target: str | None, settings: Import, role: str) -> str:
    """Why a column is not read, and what to do instead."""
    where = "map it with --map SOURCE=NAME or [import] columns"
    if target is not None or (role == "results" and name == settings.unit):
        what = "the unit" if target is None else f"{target!r}, not a signal,"
        return f"{what} belongs in the features file; a results file holds signals"
    if name == settings.key:
        return "the key joins a features file with a results file; one file has no join"
    if name == "reward":
        return (
            "'reward' is reserved: the reward is computed from signals by the spec's formula;"
            f" to import this column, {where} onto a signal (declared under [signals])"
            " that the formula names"
        )
    if name in RESERVED_NAMES:
        return f"{name!r} is a reserved name, not a knob, context feature or signal; {where}"
    return f"not a knob, context feature or signal of the spec; {where}"


def _check_layout(
    source: _Source, spec: Spec, settings: Import, role: str, layout: _Layout
) -> None:
    if role == "results":
        if not any(name in spec.signals for name in layout.targets):
            raise InvalidInputError(
                "columns",
                f"{source.name}: no signal column (the results file needs at least one of"
                f" {', '.join(spec.signals)})",
            )
    else:
        needed = [k.name for k in spec.knobs] + [f.name for f in spec.context]
        missing = [name for name in needed if name not in layout.targets]
        if missing:
            raise InvalidInputError(
                "columns",
                f"{source.name}: no column for {', '.join(missing)} (every knob and context"
                " feature needs one: name it so, or map it with [import] columns)",
            )
        if settings.unit is not None and layout.unit is None:
            raise InvalidInputError("unit", f"{source.name}: no unit column {settings.unit!r}")
        for field_name in ("propensity", "policy"):
            named = getattr(settings, field_name)
            if named is not None and getattr(layout, field_name) is None:
                raise InvalidInputError(
                    field_name, f"{source.name}: no {field_name} column {named!r}"
                )
    if role != "rows" and layout.key is None:
        raise InvalidInputError("key", f"{source.name}: no key column {settings.key!r}")


# --- cells ---------------------------------------------------------------------------------------


@dataclass
class _Problems:
    """Why rows cannot be imported: every reason of every row, in column order."""

    rows: int
    bad: Mask = field(init=False)
    reasons: dict[int, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bad = np.zeros(self.rows, dtype=np.bool_)

    def add(self, mask: Mask, reason: Callable[[int], str]) -> None:
        for row in np.flatnonzero(mask).tolist():
            self.reasons.setdefault(row, []).append(reason(row))
        self.bad |= mask

    def add_cells(self, mask: Mask, label: str, column: Column, why: str) -> None:
        """Reasons that show the cell: ``label: 'three' is not one of [0, 1, 2, 3]``."""
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return
        cells = column.take(rows).to_pylist()
        shown = dict(zip(rows.tolist(), cells, strict=True))
        self.add(mask, lambda row: f"{label}: {_show(shown[row])} {why}")

    def add_empty(self, mask: Mask, label: str) -> None:
        self.add(mask, lambda _row: f"{label}: is empty")

    def text(self, row: int) -> str:
        return "; ".join(self.reasons.get(row, ()))


def _show(cell: object) -> str:
    if isinstance(cell, str):
        return repr(cell.strip())
    if isinstance(cell, datetime):
        return repr(cell.isoformat())
    return repr(cell)


def _numpy(array: Any, dtype: type[Any]) -> npt.NDArray[Any]:
    """An Arrow array's values in NumPy (pyarrow.compute's results are not typed)."""
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=dtype)


def _numpy_bool(array: Column) -> Mask:
    return _numpy(array.fill_null(False), np.bool_)


def _cells(column: Column) -> Column:
    """The column as trimmed text, with empty cells as nulls."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        try:
            column = pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            column = pa.array([_cell_text(v) for v in column.to_pylist()], pa.string())
    elif pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    text: Any = pc.utf8_trim_whitespace(column)
    empty = pc.equal(pc.utf8_length(text), pa.scalar(0, pa.int32()))
    cells: Column = pc.if_else(empty, pa.scalar(None, pa.string()), text)
    return cells


def _missing(cells: Column) -> Mask:
    return _numpy(cells.is_null(), np.bool_)


def _floats(text: Column) -> Floats:
    """Floats of cells known to look like decimal numbers (those Arrow cannot cast, such as
    an exponent too large, go through ``float``)."""
    try:
        return _numpy(pc.cast(text, pa.float64()), np.float64)
    except pa.ArrowInvalid:
        return np.array([_float(v) for v in text.to_pylist()], dtype=np.float64)


def _float(text: object) -> float:
    try:
        return float(str(text))
    except (ValueError, OverflowError):
        return math.nan


def _numbers(column: Column, words: bool) -> tuple[Floats, Mask, Mask]:
    """Float values, empty cells and cells that are not numbers.

    Accepts what ``float`` accepts (not ``1,5``: a decimal comma is ambiguous), and with
    ``words`` also true/false and yes/no as 1 and 0, like the SDK takes booleans.
    """
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = pc.cast(column, pa.float64())
        missing = _missing(values)
        numbers = _numpy(values, np.float64)
        bad = np.zeros(len(column), dtype=np.bool_)
        if pa.types.is_boolean(kind) and not words:
            bad = ~missing
        return numbers, missing, bad
    cells = _cells(column)
    missing = _missing(cells)
    numbers = np.full(len(cells), np.nan)
    numeric = _numpy_bool(pc.match_substring_regex(cells, _NUMBER))
    if numeric.any():
        numbers[numeric] = _floats(cells.filter(pa.array(numeric)))
    rest = ~missing & ~numeric
    if words and rest.any():
        spelled = pc.index_in(pc.utf8_lower(cells), value_set=_NUMBER_WORDS).fill_null(-1)
        position = _numpy(spelled, np.int64)
        word = rest & (position >= 0)
        numbers[word] = (position[word] >= 2).astype(np.float64)
        rest &= ~word
    if rest.any():  # what float() takes beyond plain decimals ("inf", "1_000"): a few cells
        rows = np.flatnonzero(rest)
        numbers[rows] = [_float(v) for v in cells.take(rows).to_pylist()]
    bad = rest & np.isnan(numbers)
    return numbers, missing, bad


@dataclass(frozen=True)
class _Parsed:
    values: Column
    missing: Mask


def _choice(
    problems: _Problems,
    label: str,
    column: Column,
    dtype: DType,
    values: tuple[Any, ...],
    refusal: str | None = None,
) -> _Parsed:
    """A knob's, categorical feature's or fixed value's cells, each one of ``values``."""
    refusal = refusal or f"is not one of {list(values)}"
    if dtype == "text":
        cells = _cells(column)
        missing = _missing(cells)
        found = pc.index_in(cells, value_set=pa.array(values, pa.string()))
        bad = ~missing & _missing(found)
        problems.add_cells(bad, label, column, refusal)
        return _Parsed(cells, missing)
    if dtype == "boolean":
        flags, missing, bad = _booleans(column)
        bad |= ~missing & ~bad & ~np.isin(flags, np.array(values, dtype=np.bool_))
        problems.add_cells(bad, label, column, refusal)
        return _Parsed(pa.array(flags, pa.bool_()), missing)
    numbers, missing, _ = _numbers(column, words=False)
    bad = ~missing & ~np.isin(numbers, np.array(values, dtype=np.float64))
    problems.add_cells(bad, label, column, refusal)
    if dtype == "integer":
        whole = np.where(bad | missing, 0.0, numbers).astype(np.int64)
        return _Parsed(pa.array(whole, pa.int64()), missing)
    return _Parsed(pa.array(numbers, pa.float64()), missing)


def _booleans(column: Column) -> tuple[Mask, Mask, Mask]:
    """true/false, yes/no, 1/0 (any case): values, empty cells, other cells."""
    if pa.types.is_boolean(column.type):
        missing = _missing(column)
        flags = _numpy_bool(column)
        return flags, missing, np.zeros(len(column), dtype=np.bool_)
    cells = _cells(column)
    missing = _missing(cells)
    words = pa.array([*_FALSE_WORDS, *_TRUE_WORDS, "0.0", "1.0"])
    found = pc.index_in(pc.utf8_lower(cells), value_set=words).fill_null(-1)
    position = _numpy(found, np.int64)
    flags = np.isin(position, [3, 4, 5, 7])
    return flags, missing, ~missing & (position < 0)


def _number(
    problems: _Problems,
    label: str,
    column: Column,
    lo: float | None,
    hi: float | None,
) -> _Parsed:
    """A numeric feature's or signal's cells: finite numbers (or true/false) within bounds."""
    numbers, missing, bad = _numbers(column, words=True)
    problems.add_cells(bad, label, column, "is not a number")
    present = ~missing & ~bad
    infinite = present & ~np.isfinite(numbers)
    problems.add_cells(infinite, label, column, "is not a finite number")
    finite = present & ~infinite
    low = -math.inf if lo is None else lo
    high = math.inf if hi is None else hi
    with np.errstate(invalid="ignore"):
        outside = finite & ((numbers < low) | (numbers > high))
    problems.add_cells(outside, label, column, f"is outside [{lo}, {hi}]")
    return _Parsed(pa.array(numbers, pa.float64()), missing)


def _times(problems: _Problems, label: str, column: Column) -> Floats:
    """Epoch seconds from datetimes, dates, ISO 8601 text or epoch seconds (naive times are
    UTC); an empty or unreadable cell is a row error."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        micros = column.cast(pa.timestamp("us"), safe=False).cast(pa.int64())
        seconds = _numpy(micros, np.float64) / 1e6
        missing = _missing(column)
        unreadable = np.zeros(len(column), dtype=np.bool_)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        seconds, missing, unreadable = _numbers(column, words=False)
    else:
        seconds, missing, unreadable = _text_times(_cells(column))
    problems.add_empty(missing, label)
    problems.add_cells(
        unreadable, label, column, "is not a date and time (ISO 8601) or epoch seconds"
    )
    readable = ~missing & ~unreadable
    with np.errstate(invalid="ignore"):
        outside = readable & ~((seconds >= EARLIEST) & (seconds <= LATEST))
    problems.add_cells(outside, label, column, "is not a time between 1970 and 2200")
    return seconds


def _text_times(cells: Column) -> tuple[Floats, Mask, Mask]:
    missing = _missing(cells)
    seconds = np.full(len(cells), np.nan)
    done = missing.copy()
    formats: tuple[tuple[str, pa.DataType], ...] = (
        (_NUMBER, pa.float64()),
        (_ISO_ZONED, pa.timestamp("us", tz="UTC")),
        (_ISO_NAIVE, pa.timestamp("us")),
    )
    for pattern, target in formats:
        mask = ~done & _numpy_bool(pc.match_substring_regex(cells, pattern))
        if not mask.any():
            continue
        subset = cells.filter(pa.array(mask))
        try:
            cast = pc.cast(subset, target)
            if target != pa.float64():
                cast = pc.divide(pc.cast(pc.cast(cast, pa.timestamp("us")), pa.int64()), 1e6)
            seconds[mask] = _numpy(cast, np.float64)
        except pa.ArrowInvalid:  # a shape Arrow reads but a value it refuses (month 13)
            seconds[mask] = [_python_time(v) for v in subset.to_pylist()]
        done |= mask
    rest = np.flatnonzero(~done)
    if rest.size:
        seconds[rest] = [_python_time(v) for v in cells.take(rest).to_pylist()]
    return seconds, missing, ~missing & np.isnan(seconds)


def _python_time(text: object) -> float:
    """The times Arrow does not read itself (``20260101``, ``2026-01-01T10:00:00.5+0100``)."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return _float(text)
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.timestamp()


def _mapped_text(cells: Column, function: Callable[[str], str]) -> Column:
    """``function`` applied once per distinct value (units repeat, and so do comments)."""
    encoded = cells.dictionary_encode()
    distinct = [function(str(v)) for v in encoded.dictionary.to_pylist()]
    return pa.array(distinct, pa.string()).take(encoded.indices)


# --- the rows of one source ----------------------------------------------------------------------


@dataclass
class _Signals:
    """One signal's values for rows of a source: ``rows`` index the source's rows."""

    name: str
    rows: Ints
    value: Column | None
    text: Column | None
    ts: Floats | None  # None: the decision's time


@dataclass
class _Rows:
    """A source's validated columns, every row (``problems.bad`` marks the unusable ones)."""

    source: _Source
    layout: _Layout
    problems: _Problems
    columns: dict[str, Column]
    ts: Floats | None
    units: Column | None
    signals: list[_Signals]
    keys: Column | None
    propensities: Column | None = None
    policies: Column | None = None


def _validate(source: _Source, layout: _Layout, spec: Spec, wheel: Wheel, decisions: bool) -> _Rows:
    problems = _Problems(source.rows)
    columns: dict[str, Column] = {}
    signals: list[_Signals] = []
    ts: Floats | None = None
    for target, index in sorted(layout.targets.items(), key=lambda item: item[1]):
        label, column = source.label(index, target), source.column(index)
        if target in spec.knob:
            knob = spec.knob[target]
            parsed = _choice(problems, label, column, knob.dtype, knob.values)
            problems.add_empty(parsed.missing, label)
            columns[target] = parsed.values
        elif target in spec.feature:
            columns[target] = _feature(problems, label, column, spec, target)
        elif target in spec.fixed:
            _fixed(problems, label, column, spec.fixed[target])
        else:
            signals.append(_signal(problems, label, column, spec, target))
    if layout.time is not None:
        name = source.table.column_names[layout.time]
        ts = _times(problems, name, source.column(layout.time))
    units = None
    if layout.unit is not None and decisions:
        pseudonym = wheel._units  # the wheel's keyed hash: the SDK's pseudonyms, exactly
        units = _mapped_text(_cells(source.column(layout.unit)), pseudonym)
    keys = None
    if layout.key is not None:
        keys = _cells(source.column(layout.key))
        name = source.table.column_names[layout.key]
        problems.add_empty(_missing(keys), name)
    propensities = policies = None
    if layout.propensity is not None and decisions:
        propensities = _propensities(problems, source, layout.propensity)
    if layout.policy is not None and decisions:
        policies = _policies(problems, source, layout.policy)
    return _Rows(
        source, layout, problems, columns, ts, units, signals, keys, propensities, policies
    )


def _propensities(problems: _Problems, source: _Source, index: int) -> Column:
    """A propensity column: numbers in (0, 1] (an empty cell: not known for that row)."""
    label, column = source.table.column_names[index], source.column(index)
    numbers, missing, bad = _numbers(column, words=False)
    problems.add_cells(bad, label, column, "is not a number (a propensity, in (0, 1])")
    present = ~missing & ~bad
    outside = present & ~((numbers > 0) & (numbers <= 1))
    problems.add_cells(outside, label, column, "is not a propensity: expected a number in (0, 1]")
    return pa.array(np.where(present & ~outside, numbers, np.nan), pa.float64(), mask=~present)


def _policies(problems: _Problems, source: _Source, index: int) -> Column:
    """A policy column: the outside policy's name (not one Flywheel gives its own rows)."""
    label, column = source.table.column_names[index], source.column(index)
    cells = _cells(column)
    own = _numpy_bool(pc.is_in(cells, value_set=pa.array(sorted(OWN_POLICIES))))
    text: Any = cells  # pyarrow.compute's stubs do not take a plain Array here
    long = _numpy_bool(pc.greater(pc.utf8_length(text), pa.scalar(MAX_POLICY_NAME, pa.int32())))
    problems.add_cells(own, label, column, "is a name Flywheel gives its own decisions")
    problems.add_cells(long, label, column, f"is longer than {MAX_POLICY_NAME} characters")
    return cells


def _feature(problems: _Problems, label: str, column: Column, spec: Spec, name: str) -> Column:
    feature = spec.feature[name]
    if feature.open:
        parsed = _open(problems, label, column, feature.dtype)
    elif feature.kind == "categorical":
        parsed = _choice(problems, label, column, feature.dtype, feature.values)
    else:
        parsed = _number(problems, label, column, feature.min, feature.max)
    problems.add_empty(parsed.missing, label)
    return parsed.values


def _open(problems: _Problems, label: str, column: Column, dtype: DType) -> _Parsed:
    """An open categorical feature's cells, as given: trimmed text of at most
    :data:`~flywheel.spec.MAX_OPEN_TEXT` characters, or whole numbers where its values are
    integers."""
    if dtype == "integer":
        numbers, missing, bad = _numbers(column, words=False)
        with np.errstate(invalid="ignore"):
            whole = ~missing & ~bad & np.isfinite(numbers) & (numbers == np.round(numbers))
            whole &= np.abs(numbers) < 2.0**63
        problems.add_cells(~missing & ~whole, label, column, "is not an integer")
        values = np.where(whole, numbers, 0.0).astype(np.int64)
        return _Parsed(pa.array(values, pa.int64()), missing)
    cells = _cells(column)
    missing = _missing(cells)
    text: Any = cells  # pyarrow.compute's stubs do not take a plain Array here
    long = _numpy_bool(pc.greater(pc.utf8_length(text), pa.scalar(MAX_OPEN_TEXT, pa.int32())))
    problems.add_cells(long, label, column, f"is longer than {MAX_OPEN_TEXT} characters")
    unstorable = _numpy_bool(pc.match_substring(cells, "\x00"))
    problems.add_cells(unstorable, label, column, "contains a NUL character (U+0000)")
    return _Parsed(cells, missing)


def _fixed(problems: _Problems, label: str, column: Column, value: Any) -> None:
    """A fixed value may be repeated in a column, not changed (as in ``Wheel.log``)."""
    dtype: DType = (
        "boolean"
        if isinstance(value, bool)
        else "integer"
        if isinstance(value, int)
        else "number"
        if isinstance(value, float)
        else "text"
    )
    _choice(problems, label, column, dtype, (value,), f"is fixed to {value!r} by the skeleton")


def _signal(problems: _Problems, label: str, column: Column, spec: Spec, name: str) -> _Signals:
    sig = spec.signals[name]
    if sig.kind == "text":
        cells = _cells(column)
        unstorable = _numpy_bool(pc.match_substring(cells, "\x00"))
        problems.add_cells(unstorable, label, column, "contains a NUL character (U+0000)")
        present = ~_missing(cells) & ~unstorable
        clean = redact if spec.redact_text else (lambda text: text)
        rows = np.flatnonzero(present)
        texts = _mapped_text(cells.filter(pa.array(present)), clean)
        return _Signals(name, rows, None, texts, None)
    parsed = _number(problems, label, column, sig.min, sig.max)
    rows = np.flatnonzero(~parsed.missing)
    return _Signals(name, rows, parsed.values.take(rows), None, None)


# --- joining features and results ----------------------------------------------------------------


@dataclass(frozen=True)
class _Join:
    match: Ints  # per results row: the features row it joins, or -1
    known_key: Mask  # per results row: some features row has its key


def _join(features: _Rows, results: _Rows, window: float | None) -> _Join:
    """Each results row joins the features row with its key; with times on both sides and a
    window, the latest features row with its key whose time is at most ``window`` before the
    result's (a key may then repeat in the features: a user's sessions, say)."""
    assert features.keys is not None and results.keys is not None
    n_features = features.source.rows
    encoded = pa.concat_arrays([features.keys, results.keys]).dictionary_encode()
    codes = _numpy(encoded.indices.fill_null(-1), np.int64)
    f_codes, r_codes = codes[:n_features], codes[n_features:]
    known = np.zeros(len(encoded.dictionary) + 1, dtype=np.bool_)
    known[f_codes[f_codes >= 0]] = True
    known_key = (r_codes >= 0) & known[r_codes]
    if window is not None and features.ts is not None and results.ts is not None:
        match = _join_in_window(f_codes, features.ts, r_codes, results.ts, window)
    else:
        first = np.full(len(known), -1, dtype=np.int64)
        distinct, index = np.unique(f_codes, return_index=True)
        first[distinct[distinct >= 0]] = index[distinct >= 0]
        match = np.where(r_codes >= 0, first[r_codes], -1)
        _refuse_repeated_keys(features, f_codes, first)
    return _Join(match, known_key)


def _join_in_window(
    f_codes: Ints, f_ts: Floats, r_codes: Ints, r_ts: Floats, window: float
) -> Ints:
    """An as-of join, vectorised: features sorted by (key, time rank), each result searches
    for the last features row at or before its own (key, time rank)."""
    f_ok = (f_codes >= 0) & np.isfinite(f_ts)
    r_ok = (r_codes >= 0) & np.isfinite(r_ts)
    times, ranks = np.unique(np.concatenate([f_ts[f_ok], r_ts[r_ok]]), return_inverse=True)
    stride = len(times) + 1
    f_rows = np.flatnonzero(f_ok)
    f_sort = f_codes[f_rows] * stride + ranks[: f_rows.size]
    order = np.argsort(f_sort, kind="stable")
    f_rows, f_sort = f_rows[order], f_sort[order]
    r_rows = np.flatnonzero(r_ok)
    r_sort = r_codes[r_rows] * stride + ranks[f_ok.sum() :]
    position = np.searchsorted(f_sort, r_sort, side="right") - 1
    candidate = f_rows[np.maximum(position, 0)]
    hit = (
        (position >= 0)
        & (f_codes[candidate] == r_codes[r_rows])
        & (r_ts[r_rows] - f_ts[candidate] <= window)
    )
    match = np.full(len(r_codes), -1, dtype=np.int64)
    match[r_rows[hit]] = candidate[hit]
    return match


def _refuse_repeated_keys(features: _Rows, f_codes: Ints, first: Ints) -> None:
    """Without a time window a key names one features row: later repeats are rejected."""
    assert features.layout.key is not None
    rows = np.arange(len(f_codes))
    repeated = (f_codes >= 0) & (first[np.maximum(f_codes, 0)] != rows)
    name = features.source.table.column_names[features.layout.key]
    origin = first[np.maximum(f_codes, 0)]
    features.problems.add(
        repeated,
        lambda row: (
            f"{name}: repeats row {int(origin[row]) + FIRST_ROW}'s key (without a time"
            " window, a key names one features row)"
        ),
    )


def _attach_results(features: _Rows, results: _Rows, join: _Join, window: float | None) -> None:
    """Give the joined results rows' signals to their features rows' decisions; reject the
    results rows that cannot be recorded."""
    assert results.layout.key is not None
    problems, match = results.problems, join.match
    key_name = results.source.table.column_names[results.layout.key]
    keys = results.keys
    assert keys is not None
    shown: Callable[[int], str] = lambda row: repr(keys[row].as_py())  # noqa: E731
    outside = (match < 0) & join.known_key
    problems.add(
        outside,
        lambda row: f"{key_name}: {shown(row)} has no features row in the {window:g} s before it",
    )
    absent = (match < 0) & ~join.known_key & ~_missing(keys)
    problems.add(absent, lambda row: f"{key_name}: no features row has {shown(row)}")
    refused = (match >= 0) & features.problems.bad[np.maximum(match, 0)]
    problems.add(
        refused,
        lambda row: f"{key_name}: its features row {int(match[row]) + FIRST_ROW} was rejected",
    )
    has_signal = np.zeros(results.source.rows, dtype=np.bool_)
    for signals in results.signals:
        has_signal[signals.rows] = True
    names = ", ".join(s.name for s in results.signals)
    problems.add(~has_signal, lambda _row: f"no signal value (in {names})")
    usable = ~problems.bad
    for signals in results.signals:
        keep = usable[signals.rows]
        rows = signals.rows[keep]
        features.signals.append(
            _Signals(
                signals.name,
                match[rows],
                None if signals.value is None else signals.value.filter(pa.array(keep)),
                None if signals.text is None else signals.text.filter(pa.array(keep)),
                None if results.ts is None else results.ts[rows],
            )
        )


# --- writing -------------------------------------------------------------------------------------


def _ids(start: int, count: int, prefix: bytes) -> Column:
    """Decision ids in the SDK's scheme (a random UUID-shaped prefix and a counter), built as
    one buffer rather than a million strings."""
    counter = np.arange(start, start + count, dtype=np.uint64)
    shifts = np.arange(44, -1, -4, dtype=np.uint64)
    nibbles = (counter[:, None] >> shifts) & np.uint64(0xF)
    data = np.empty((count, 36), dtype=np.uint8)
    data[:, :24] = np.frombuffer(prefix, dtype=np.uint8)
    data[:, 24:] = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    offsets = np.arange(0, 36 * (count + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(
        count, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes())
    )


def _id_prefix() -> bytes:
    r = secrets.token_hex(10)
    variant = "89ab"[secrets.randbelow(4)]
    return f"{r[:8]}-{r[8:12]}-4{r[12:15]}-{variant}{r[15:18]}-".encode()


def _timestamps(seconds: Floats) -> Column:
    return pa.array((seconds * 1e6).astype(np.int64), type=TIMESTAMP)


@dataclass
class _Batch:
    """The imported rows, ready to write: decisions in order, signals sorted by decision."""

    decisions: dict[str, Column]
    ts: Floats
    units: Column
    signals: list[_Signals]  # rows: decision positions, ascending
    result_positions: Ints  # per imported results row, its decision position, ascending
    policies: Column
    propensities: Column

    @property
    def rows(self) -> int:
        return len(self.ts)


def _batch(features: _Rows, spec: Spec, now: float, result_rows: Ints | None) -> _Batch:
    keep = ~features.problems.bad
    mask = pa.array(keep)
    position = np.cumsum(keep) - 1
    names = [f.name for f in spec.context] + [k.name for k in spec.knobs]
    decisions = {name: features.columns[name].filter(mask) for name in names}
    count = int(keep.sum())
    ts = np.full(count, now) if features.ts is None else features.ts[keep]
    units = pa.nulls(count, pa.string()) if features.units is None else features.units.filter(mask)
    signals = []
    for s in features.signals:
        usable = keep[s.rows]
        order = np.argsort(position[s.rows[usable]], kind="stable")
        positions = position[s.rows[usable]][order]
        pick = np.flatnonzero(usable)[order]
        signals.append(
            _Signals(
                s.name,
                positions,
                None if s.value is None else s.value.take(pick),
                None if s.text is None else s.text.take(pick),
                ts[positions] if s.ts is None else s.ts[usable][order],
            )
        )
    results = np.sort(position[result_rows]) if result_rows is not None else np.zeros(0, np.int64)
    chances = (
        pa.nulls(count, pa.float64())
        if features.propensities is None
        else features.propensities.filter(mask)
    )
    named = (
        pa.nulls(count, pa.string())
        if features.policies is None
        else features.policies.filter(mask)
    )
    # a row's policy: its name; else "outside" with a propensity; else "imported"
    fallback = pc.if_else(pc.is_valid(chances), pa.scalar(OUTSIDE), pa.scalar(POLICY))
    policies = pc.coalesce(named, fallback)
    return _Batch(decisions, ts, units, signals, results, policies, chances)


def _decision_table(batch: _Batch, wheel: Wheel, start: int, stop: int, ids: Column) -> pa.Table:
    count = stop - start
    columns: dict[str, Column] = {
        "id": ids,
        "ts": _timestamps(batch.ts[start:stop]),
        "unit": batch.units.slice(start, count),
        "policy": batch.policies.slice(start, count),
        "playbook": pa.nulls(count, pa.int64()),
        "propensity": batch.propensities.slice(start, count),
    }
    columns.update({n: a.slice(start, count) for n, a in batch.decisions.items()})
    schema = wheel.tables.decisions
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _signal_table(batch: _Batch, wheel: Wheel, start: int, stop: int, ids: Column) -> pa.Table:
    schema = wheel.tables.signals
    parts = []
    for s in batch.signals:
        lo, hi = np.searchsorted(s.rows, [start, stop])
        if hi == lo:
            continue
        count = int(hi - lo)
        local = s.rows[lo:hi] - start
        assert s.ts is not None
        columns = {
            "decision_id": ids.take(local),
            "name": pa.repeat(s.name, count),
            "value": pa.nulls(count, pa.float64()) if s.value is None else s.value[lo:hi],
            "text": pa.nulls(count, pa.string()) if s.text is None else s.text[lo:hi],
            "ts": _timestamps(s.ts[lo:hi]),
            "key": pa.nulls(count, pa.string()),
            "unit": batch.units.slice(start, stop - start).take(local),
        }
        parts.append(pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


# --- rejected rows -------------------------------------------------------------------------------


def _rejected_rows(rows: _Rows, with_source: bool) -> pa.Table:
    bad = np.flatnonzero(rows.problems.bad)
    table = rows.source.table.take(bad)
    columns: dict[str, Column] = {}
    if with_source:
        columns["source"] = pa.repeat(rows.source.name, len(bad))
    columns["row"] = pa.array(bad + FIRST_ROW, pa.int64())
    columns["reason"] = pa.array([rows.problems.text(i) for i in bad.tolist()], pa.string())
    for name, column in zip(table.column_names, table.columns, strict=True):
        text = _array(column)
        if not pa.types.is_string(text.type):
            try:
                text = pc.cast(text, pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                text = pa.array([_cell_text(v) for v in text.to_pylist()], pa.string())
        columns[name if name not in columns else f"{name} (original)"] = text
    return pa.table(columns)


def _write_rejected(path: Path, parts: list[_Rows]) -> None:
    """Rejected rows as CSV: ``row`` and ``reason`` (and ``source``, with two sources), then
    the row's original cells, to be fixed and imported again."""
    tables = [_rejected_rows(rows, len(parts) > 1) for rows in parts]
    table = pa.concat_tables(tables, promote_options="default")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer)
    path.write_bytes(buffer.getvalue())


def _listed_rejections(parts: list[_Rows]) -> tuple[tuple[str, int, str], ...]:
    listed: list[tuple[str, int, str]] = []
    for rows in parts:
        for i in np.flatnonzero(rows.problems.bad)[: MAX_LISTED - len(listed)].tolist():
            listed.append((rows.source.name, i + FIRST_ROW, rows.problems.text(i)))
    return tuple(listed)


# --- the import ----------------------------------------------------------------------------------


def import_rows(
    wheel: Wheel,
    sources: Sequence[Path | pa.Table],
    *,
    columns: Mapping[str, str] | None = None,
    key: str | None = None,
    time: str | None = None,
    unit: str | None = None,
    window_seconds: float | None = None,
    rejected_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    sheet: str | None = None,
    propensity: str | None = None,
    policy: str | None = None,
) -> ImportReport:
    """Validate rows from files (or Arrow tables) and store the good ones as decisions.

    One source holds complete rows (context, knob values, results), like
    :meth:`Wheel.log <flywheel.Wheel.log>`. Two sources are a features source (context, knobs,
    optional time and unit) and a results source (signals, optional time), joined on ``key``:
    several results rows of one key all become signals of its decision (the spec's combine
    rule then applies); with ``time`` in both and ``window_seconds``, a result joins the
    latest features row of its key at most that long before it.

    Settings default to the spec's ``[import]``; arguments override them (``columns`` adds to
    and overrides its mapping). Columns named like a knob, context feature, fixed value or
    signal map by name, ``columns`` maps other names; the rest are ignored (and reported).
    Rows that break a skeleton rule are recorded as ``Wheel.log`` records them (what happened,
    even where the skeleton would not serve it), and quarantined with the rule they break, so
    they are never learned from; a fixed value may be repeated, not changed.
    Without a time column, rows take the wheel's clock now (with one, an empty time is a row
    error); joined results without one take their decision's time.

    Rows that cannot be used are rejected with every reason (see :class:`ImportReport` for
    their numbering) and, with ``rejected_path``, written to that CSV with ``row`` and
    ``reason`` columns. Good rows go straight to the store in transactions of
    ``CHUNK_ROWS`` decisions and their signals, after :meth:`Wheel.flush`; ``progress(done,
    total)`` follows the decisions written. Should the store fail (or the process die)
    midway, the chunks written before stay stored: :class:`ImportInterruptedError` carries
    the report of what was.
    """
    started = clock.perf_counter()
    if not 1 <= len(sources) <= 2:
        raise InvalidInputError(
            "sources", "expected one source of complete rows, or two: features, then results"
        )
    spec = wheel.spec
    settings = _settings(spec, columns, key, time, unit, window_seconds, propensity, policy)
    if settings.propensity is not None and settings.propensity == settings.policy:
        raise InvalidInputError(
            "policy", f"{settings.policy!r} is named as the propensity column too"
        )
    loaded = _load(sources, sheet)
    if len(loaded) == 2 and settings.key is None:
        raise InvalidInputError(
            "key", "joining features and results needs a key column ([import] key)"
        )
    if settings.time is not None and all(settings.time not in s.table.column_names for s in loaded):
        raise InvalidInputError(
            "time", f"no time column {settings.time!r} in {' or '.join(s.name for s in loaded)}"
        )
    roles = ("rows",) if len(loaded) == 1 else ("features", "results")
    layouts = [_layout(s, spec, settings, r) for s, r in zip(loaded, roles, strict=True)]
    parts = [
        _validate(s, lay, spec, wheel, decisions=r != "results")
        for s, lay, r in zip(loaded, layouts, roles, strict=True)
    ]
    features = parts[0]
    join = None
    if len(parts) == 2:
        join = _join(features, parts[1], settings.window_seconds)
        _attach_results(features, parts[1], join, settings.window_seconds)
    if rejected_path is not None and any(p.problems.bad.any() for p in parts):
        _write_rejected(Path(rejected_path), parts)
    result_rows = None if join is None else join.match[~parts[1].problems.bad]
    batch = _batch(features, spec, wheel._clock(), result_rows)
    report = _report(
        parts, layouts, join, started, batch.rows, sum(len(s.rows) for s in batch.signals)
    )
    stored, signals = _store(wheel, batch, report, progress)
    return replace(
        report, decisions=stored, signals=signals, seconds=clock.perf_counter() - started
    )


def _settings(
    spec: Spec,
    columns: Mapping[str, str] | None,
    key: str | None,
    time: str | None,
    unit: str | None,
    window: float | None,
    propensity: str | None = None,
    policy: str | None = None,
) -> Import:
    defaults = spec.imports
    mapping = {**defaults.columns, **(columns or {})}
    targets = set(spec.knob) | set(spec.feature) | set(spec.signals) | set(spec.fixed)
    for column, target in mapping.items():
        if target not in targets:
            raise InvalidInputError(
                f"columns.{column}", f"{target!r} is not a knob, context feature or signal"
            )
    window = defaults.window_seconds if window is None else window
    if window is not None and not (math.isfinite(window) and window > 0):
        raise InvalidInputError("window_seconds", f"expected a positive duration, got {window!r}")
    return Import(
        columns=mapping,
        key=defaults.key if key is None else key,
        time=defaults.time if time is None else time,
        unit=defaults.unit if unit is None else unit,
        window_seconds=window,
        propensity=defaults.propensity if propensity is None else propensity,
        policy=defaults.policy if policy is None else policy,
    )


def _load(sources: Sequence[Path | pa.Table], sheet: str | None) -> list[_Source]:
    loaded = []
    for i, source in enumerate(sources):
        if isinstance(source, pa.Table):
            name = "table" if len(sources) == 1 else f"table {i + 1}"
            table = source.rename_columns([n.strip() for n in source.column_names])
        else:
            path = Path(source)
            name, table = path.name, read_table(path, sheet)
        loaded.append(_Source(name, table))
    if len(loaded) == 2 and loaded[0].name == loaded[1].name:
        loaded = [replace(s, name=str(p)) for s, p in zip(loaded, sources, strict=True)]
    return loaded


def _report(
    parts: list[_Rows],
    layouts: list[_Layout],
    join: _Join | None,
    started: float,
    decisions: int,
    signals: int,
) -> ImportReport:
    read = sum(p.source.rows for p in parts)
    rejected = sum(int(p.problems.bad.sum()) for p in parts)
    report = ImportReport(
        read=read,
        imported=read - rejected,
        rejected=rejected,
        decisions=decisions,
        signals=signals,
        rejections=_listed_rejections(parts),
        sources=tuple(p.source.name for p in parts),
        ignored_columns=tuple(
            (p.source.name, name, why)
            for p, lay in zip(parts, layouts, strict=True)
            for name, why in lay.ignored
        ),
        seconds=clock.perf_counter() - started,
    )
    if join is None:
        return report
    features = parts[0]
    joined = np.zeros(features.source.rows, dtype=np.bool_)
    joined[join.match[join.match >= 0]] = True
    lonely = np.flatnonzero(~joined & ~features.problems.bad)
    unmatched = np.flatnonzero(join.match < 0)
    return replace(
        report,
        unmatched_features=int(lonely.size),
        unmatched_results=int(unmatched.size),
        unmatched_feature_rows=tuple((lonely[:MAX_LISTED] + FIRST_ROW).tolist()),
        unmatched_result_rows=tuple((unmatched[:MAX_LISTED] + FIRST_ROW).tolist()),
    )


def _store(
    wheel: Wheel,
    batch: _Batch,
    report: ImportReport,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int]:
    """Write the batch in chunks, each one transaction; returns decisions and signals stored."""
    wheel.flush()  # what the SDK buffered before the import is stored before it
    prefix = _id_prefix()
    total, signals = batch.rows, 0
    if progress is not None:
        progress(0, total)
    for start in range(0, total, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, total)
        ids = _ids(start, stop - start, prefix)
        tables = {
            "decisions": _decision_table(batch, wheel, start, stop, ids),
            "signals": _signal_table(batch, wheel, start, stop, ids),
        }
        try:
            wheel.store.write(tables)
        except StoreError as err:
            raise _interrupted(err, batch, report, start, signals) from err
        signals += tables["signals"].num_rows
        if progress is not None:
            progress(stop, total)
    return total, signals


def _interrupted(
    err: StoreError, batch: _Batch, report: ImportReport, stored: int, signals: int
) -> ImportInterruptedError:
    results = int(np.searchsorted(batch.result_positions, stored))
    partial = replace(report, imported=stored + results, decisions=stored, signals=signals)
    return ImportInterruptedError(
        f"the store refused rows after {stored:,} of {batch.rows:,} decisions were stored"
        f" (those stay stored; import the rest, not them, again): {err}",
        partial,
    )
