"""Imports of files: every format, mapping, row errors, joins, privacy, chunked writes."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openpyxl import Workbook
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app
from flywheel.collect import importers
from flywheel.collect.importers import ImportInterruptedError, ImportReport, import_rows, read_table
from flywheel.demo import example_spec, example_text
from flywheel.errors import InvalidInputError, StoreError
from tests.conftest import DAY, HOUR, T0, Clock

Make = Callable[..., flywheel.Wheel]

HEADER = ["genre", "opening_type", "twist_count", "emotional_density", "length", "completed"]
GOOD = ["thriller", "suspense", "2", "mid", "long", "1"]

TYPED: dict[str, Any] = {
    "knobs": {
        "style": ["plain", "bold"],
        "count": [0, 1, 2, 3],
        "scale": [0.5, 1.0, 1.5],
        "flag": "boolean",
    },
    "context": {"segment": ["a", "b"], "age": {"type": "number", "min": 0, "max": 120}},
    "skeleton": {"fixed": {"tone": "neutral"}, "rules": ["NOT (style = 'bold' AND count = 3)"]},
    "reward": {"formula": "converted", "window": "7d"},
    "signals": {"converted": "max", "note": {"kind": "text"}},
}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def balanced(report: ImportReport) -> None:
    assert report.read == report.imported + report.rejected
    assert len(report.rejections) == min(report.rejected, importers.MAX_LISTED)


def aligned(wheel: flywheel.Wheel, as_of: float | None = None) -> list[dict[str, Any]]:
    rows = wheel.aligned(as_of).to_pylist()
    return sorted(rows, key=lambda r: (r["ts"], r["decision_id"]))


# --- one file of complete rows -------------------------------------------------------------------


def test_a_csv_of_complete_rows_is_imported_and_its_bad_rows_rejected(
    make_wheel: Make, tmp_path: Path, clock: Clock
) -> None:
    wheel = make_wheel()
    source = write_csv(
        tmp_path / "stories.csv",
        [*HEADER, "rating", "when", "notes"],
        [
            [*GOOD, "5", "2025-12-30T10:00:00Z", "first"],
            ["drama", "question", "three", "mid", "long", "0", "", "2025-12-30", "x"],
            ["romance", "dialogue", "1", "high", "medium", "yes", "9", "1767052800", "y"],
            ["", "dialogue", "1", "hot", "medium", "no", "", "not a time", "z"],
            ["scifi", "description", "0", "low", "short", "0", "", "2025-12-31 12:00", ""],
        ],
    )
    rejected = tmp_path / "out" / "rejected.csv"
    report = import_rows(wheel, [source], time="when", rejected_path=rejected)

    balanced(report)
    assert (report.read, report.imported, report.rejected) == (5, 2, 3)
    assert report.summary() == "read 5, imported 2, rejected 3"
    assert report.ignored_columns == (
        (
            "stories.csv",
            "notes",
            "not a knob, context feature or signal of the spec;"
            " map it with --map SOURCE=NAME or [import] columns",
        ),
    )
    assert report.rejections == (
        ("stories.csv", 3, "twist_count: 'three' is not one of [0, 1, 2, 3]"),
        ("stories.csv", 4, "rating: '9' is outside [1.0, 5.0]"),
        (
            "stories.csv",
            5,
            "genre: is empty; emotional_density: 'hot' is not one of ['low', 'mid', 'high'];"
            " when: 'not a time' is not a date and time (ISO 8601) or epoch seconds",
        ),
    )
    assert report.details(1) == [
        "stories.csv row 3: twist_count: 'three' is not one of [0, 1, 2, 3]"
    ]
    assert (report.decisions, report.signals) == (2, 3)

    lines = read_csv(rejected)
    assert [line["row"] for line in lines] == ["3", "4", "5"]
    assert lines[0]["reason"] == "twist_count: 'three' is not one of [0, 1, 2, 3]"
    assert lines[1]["twist_count"] == "1" and lines[1]["rating"] == "9"
    assert lines[2]["when"] == "not a time" and lines[2]["notes"] == "z"
    assert list(lines[0])[:2] == ["row", "reason"]

    rows = aligned(wheel)
    assert [(r["genre"], r["twist_count"], r["completed"], r["rating"]) for r in rows] == [
        ("thriller", 2, 1.0, 5.0),
        ("scifi", 0, 0.0, None),
    ]
    assert [r["reward"] for r in rows] == [1.0, 0.0]
    assert {r["status"] for r in rows} == {"complete"}
    assert {r["policy"] for r in rows} == {"imported"}
    assert {r["playbook"] for r in rows} == {None} and {r["propensity"] for r in rows} == {None}
    assert rows[0]["ts"].timestamp() == T0 - 2 * DAY + 10 * HOUR
    assert rows[1]["ts"].timestamp() == T0 - DAY / 2


def test_rows_are_typed_by_the_spec(make_wheel: Make, tmp_path: Path) -> None:
    wheel = make_wheel(TYPED)
    header = ["segment", "age", "style", "count", "scale", "flag", "converted", "tone"]
    source = write_csv(
        tmp_path / "typed.csv",
        header,
        [
            ["a", "31", "plain", "2", "1.5", "yes", "true", "neutral"],
            ["b", " 40.5 ", "bold", "1.0", "1", "FALSE", "0", ""],
            ["a", "1,5", "plain", "2", "2", "maybe", "2", "neutral"],
            ["b", "inf", "plain", "2.5", "0.5", "1", "yes", "warm"],
            ["a", "121", "bold", "3", ".5", "0", "no", "neutral"],
        ],
    )
    report = import_rows(wheel, [source])
    balanced(report)
    reasons = {row: reason for _, row, reason in report.rejections}
    assert reasons == {
        4: "age: '1,5' is not a number; scale: '2' is not one of [0.5, 1.0, 1.5];"
        " flag: 'maybe' is not one of [False, True]",
        5: "age: 'inf' is not a finite number; count: '2.5' is not one of [0, 1, 2, 3];"
        " tone: 'warm' is fixed to 'neutral' by the skeleton",
        6: "age: '121' is outside [0, 120]",
    }
    rows = aligned(wheel)
    assert [
        (r["segment"], r["age"], r["style"], r["count"], r["scale"], r["flag"], r["converted"])
        for r in rows
    ] == [("a", 31.0, "plain", 2, 1.5, True, 1.0), ("b", 40.5, "bold", 1, 1.0, False, 0.0)]
    assert wheel.aligned().schema.field("count").type == pa.int64()


def test_a_row_breaking_a_skeleton_rule_is_recorded_as_log_records_it(
    make_wheel: Make, tmp_path: Path
) -> None:
    wheel = make_wheel()
    params = {"opening_type": "suspense", "twist_count": 3, "emotional_density": "mid"}
    logged = wheel.log(
        context={"genre": "drama"}, params={**params, "length": "short"}, results={"completed": 1}
    )
    assert logged
    source = write_csv(
        tmp_path / "rule.csv", HEADER, [["drama", "suspense", "3", "mid", "short", "1"]]
    )
    report = import_rows(wheel, [source])
    assert (report.imported, report.rejected) == (1, 0)
    assert [(r["length"], r["twist_count"]) for r in aligned(wheel)] == [("short", 3)] * 2
    # recorded, and quarantined with the rule they break: never learned from
    quality = wheel.status().quality
    assert quality is not None and (quality.received, quality.quarantined) == (2, 2)
    failed = {r["failed"] for r in wheel.quarantined().to_pylist()}
    assert failed == {"skeleton rule: NOT (length = 'short' AND twist_count = 3)"}


def test_columns_map_by_name_from_the_spec_and_from_arguments(
    make_wheel: Make, tmp_path: Path
) -> None:
    spec = flywheel.Spec.from_dict(
        {
            **TYPED,
            "import": {"columns": {"Segment": "segment", "Age": "age"}, "time": "When"},
        }
    )
    wheel = make_wheel(spec)
    source = write_csv(
        tmp_path / "mapped.csv",
        ["Segment", "Age", "style", "Count", "scale", "flag", "Outcome", "When", "Other"],
        [
            ["a", "30", "plain", "1", "1", "true", "1", "2025-12-31", "note"],
            ["b", "30", "plain", "x", "1", "true", "0", "2025-12-31", ""],
        ],
    )
    report = import_rows(wheel, [source], columns={"Count": "count", "Outcome": "converted"})
    assert (report.imported, report.rejected) == (1, 1)
    assert report.rejections[0][2] == "Count (count): 'x' is not one of [0, 1, 2, 3]"
    assert [c[:2] for c in report.ignored_columns] == [("mapped.csv", "Other")]
    (row,) = aligned(wheel)
    assert (row["segment"], row["count"], row["converted"]) == ("a", 1, 1.0)
    assert row["ts"].timestamp() == T0 - DAY


def test_every_format_gives_the_same_rows(tmp_path: Path, clock: Clock) -> None:
    rows: list[dict[str, Any]] = [
        {"genre": "thriller", "opening_type": "suspense", "twist_count": 2,
         "emotional_density": "mid", "length": "long", "completed": 1,
         "when": datetime(2025, 12, 30, 10)},
        {"genre": "drama", "opening_type": "question", "twist_count": "three",
         "emotional_density": "mid", "length": "long", "completed": 0,
         "when": datetime(2025, 12, 30, 11)},
        {"genre": "romance", "opening_type": "dialogue", "twist_count": 1,
         "emotional_density": "low", "length": "short", "completed": None,
         "when": datetime(2025, 12, 30, 12)},
    ]  # fmt: skip
    names = list(rows[0])
    book = Workbook()
    sheet = book.active
    sheet.title = "ignored"
    data = book.create_sheet("data")
    data.append(names)
    for row in rows:
        data.append([row[n] for n in names])
    book.save(tmp_path / "rows.xlsx")
    with (tmp_path / "rows.jsonl").open("w") as file:
        for row in rows:
            file.write(json.dumps({**row, "when": row["when"].isoformat()}) + "\n")
    typed = [r for r in rows if r["twist_count"] != "three"]  # Parquet columns have one type
    pq.write_table(pa.Table.from_pylist(typed), tmp_path / "rows.parquet")
    write_csv(
        tmp_path / "rows.csv",
        names,
        [["" if r[n] is None else str(r[n]) for n in names] for r in rows],
    )
    expected = [("thriller", 2, 1.0, "complete"), ("romance", 1, None, "pending")]
    for name, sheet_name in (
        ("rows.csv", None),
        ("rows.xlsx", "data"),
        ("rows.jsonl", None),
        ("rows.parquet", None),
    ):
        wheel = flywheel.open(
            example_spec(), store=f"duckdb:///{tmp_path / name}.duckdb", clock=clock, refresh=0
        )
        report = import_rows(wheel, [tmp_path / name], time="when", sheet=sheet_name)
        balanced(report)
        assert report.imported == 2, name
        assert report.rejected == (0 if name.endswith("parquet") else 1), name
        if report.rejected:
            assert report.rejections[0][1:] == (
                3,
                "twist_count: 'three' is not one of [0, 1, 2, 3]",
            )
        got = [
            (r["genre"], r["twist_count"], r["completed"], r["status"])
            for r in aligned(wheel, clock.now)
        ]
        assert got == expected, name
        assert aligned(wheel)[0]["ts"].timestamp() == T0 - 2 * DAY + 10 * HOUR, name
        wheel.close()


def test_read_table_reads_text_and_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    semicolons = tmp_path / "excel.csv"
    semicolons.write_text("\ufeffunit ;genre\n007;drama\n", encoding="utf-8")
    table = read_table(semicolons)
    assert table.column_names == ["unit", "genre"]
    assert table.column("unit").to_pylist() == ["007"]  # text, not the number 7
    with pytest.raises(InvalidInputError, match=r"notes\.txt: cannot import \.txt"):
        read_table(tmp_path / "notes.txt")
    with pytest.raises(InvalidInputError, match="no such file"):
        read_table(tmp_path / "missing.csv")
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match=r"broken\.xlsx: not a readable XLSX file"):
        read_table(broken)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(InvalidInputError, match="line 2 is not a JSON object"):
        read_table(bad_json)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("genre\ndrāma\n".encode() + "dräma\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match=r"latin\.csv: is not UTF-8 text"):
        read_table(latin)
    book = Workbook()
    book.save(tmp_path / "empty.xlsx")
    with pytest.raises(InvalidInputError, match="has no sheet 'data'"):
        read_table(tmp_path / "empty.xlsx", sheet="data")


def test_times_in_every_shape_and_the_clock_without_a_time_column(
    make_wheel: Make, tmp_path: Path, clock: Clock
) -> None:
    wheel = make_wheel()
    shapes = [
        "2025-12-31T10:00:00Z",
        "2025-12-31T11:00:00+01:00",
        "2025-12-31 10:00",
        "2025-12-31T10:00:00.250",
        "20251231T100000",
        str(T0 - 14 * HOUR),
        "1767175200.5",
        "2025-13-01",
        "1e12",
    ]
    source = write_csv(tmp_path / "t.csv", [*HEADER, "t"], [[*GOOD, s] for s in shapes])
    report = import_rows(wheel, [source], time="t")
    assert [reason for _, _, reason in report.rejections] == [
        "t: '2025-13-01' is not a date and time (ISO 8601) or epoch seconds",
        "t: '1e12' is not a time between 1970 and 2200",
    ]
    stamps = [r["ts"].timestamp() for r in aligned(wheel)]
    assert stamps == sorted([T0 - 14 * HOUR] * 5 + [T0 - 14 * HOUR + 0.25, T0 - 14 * HOUR + 0.5])
    untimed = write_csv(tmp_path / "now.csv", HEADER, [GOOD])
    import_rows(wheel, [untimed])
    assert aligned(wheel)[-1]["ts"].timestamp() == clock.now


def test_a_missing_column_or_setting_is_an_error_naming_the_file(
    make_wheel: Make, tmp_path: Path
) -> None:
    wheel = make_wheel()
    partial = write_csv(tmp_path / "partial.csv", HEADER[:3], [GOOD[:3]])
    with pytest.raises(InvalidInputError, match=r"partial\.csv: no column for emotional_density"):
        import_rows(wheel, [partial])
    full = write_csv(tmp_path / "full.csv", HEADER, [GOOD])
    with pytest.raises(InvalidInputError, match="'nothing' is not a knob"):
        import_rows(wheel, [full], columns={"x": "nothing"})
    with pytest.raises(InvalidInputError, match=r"no time column 'when' in full\.csv"):
        import_rows(wheel, [full], time="when")
    with pytest.raises(InvalidInputError, match=r"full\.csv: no unit column 'user'"):
        import_rows(wheel, [full], unit="user")
    with pytest.raises(InvalidInputError, match="needs a key column"):
        import_rows(wheel, [full, full])
    with pytest.raises(InvalidInputError, match="both map to twist_count"):
        import_rows(wheel, [full], columns={"length": "twist_count"})
    assert wheel.summary().decisions == 0


# --- features and results ------------------------------------------------------------------------


def test_two_files_join_on_a_key_and_report_what_did_not_match(
    make_wheel: Make, tmp_path: Path, clock: Clock
) -> None:
    wheel = make_wheel()
    features = write_csv(
        tmp_path / "features.csv",
        ["story", *HEADER[:5], "when"],
        [
            ["s1", "thriller", "suspense", "2", "mid", "long", "2025-12-30T00:00:00Z"],
            ["s2", "drama", "question", "1", "low", "short", "2025-12-30T00:00:00Z"],
            ["s3", "romance", "dialogue", "0", "high", "medium", "2025-12-20T00:00:00Z"],
            ["s4", "scifi", "dialogue", "9", "high", "medium", "2025-12-30T00:00:00Z"],
            ["s1", "scifi", "dialogue", "1", "high", "medium", "2025-12-30T00:00:00Z"],
        ],
    )
    results = write_csv(
        tmp_path / "results.csv",
        ["story", "completed", "rating", "when"],
        [
            ["s1", "0", "", "2025-12-30T01:00:00Z"],
            ["s1", "1", "4", "2025-12-30T02:00:00Z"],
            ["s9", "1", "", "2025-12-30T02:00:00Z"],
            ["s4", "1", "", "2025-12-30T02:00:00Z"],
            ["", "1", "", "2025-12-30T02:00:00Z"],
            ["s2", "", "", "2025-12-30T02:00:00Z"],
        ],
    )
    rejected = tmp_path / "rejected.csv"
    report = import_rows(
        wheel, [features, results], key="story", time="when", rejected_path=rejected
    )
    balanced(report)
    assert report.read == 11
    assert (report.imported, report.rejected) == (5, 6)
    assert (report.decisions, report.signals) == (3, 3)
    assert report.rejections == (
        ("features.csv", 5, "twist_count: '9' is not one of [0, 1, 2, 3]"),
        ("features.csv", 6, "story: repeats row 2's key (without a time window, a key names"
         " one features row)"),
        ("results.csv", 4, "story: no features row has 's9'"),
        ("results.csv", 5, "story: its features row 5 was rejected"),
        ("results.csv", 6, "story: is empty"),
        ("results.csv", 7, "no signal value (in completed, rating)"),
    )  # fmt: skip
    assert (report.unmatched_features, report.unmatched_feature_rows) == (1, (4,))
    assert (report.unmatched_results, report.unmatched_result_rows) == (2, (4, 6))
    assert report.summary() == (
        "read 11, imported 5, rejected 6; 1 features rows without results (imported, reward"
        " pending), 2 results rows without features (rejected)"
    )
    lines = read_csv(rejected)
    assert [(line["source"], line["row"]) for line in lines] == [
        ("features.csv", "5"), ("features.csv", "6"), ("results.csv", "4"),
        ("results.csv", "5"), ("results.csv", "6"), ("results.csv", "7"),
    ]  # fmt: skip
    assert lines[0]["genre"] == "scifi" and lines[2]["completed"] == "1"

    rows = {r["genre"]: r for r in wheel.aligned(clock.now).to_pylist()}
    assert set(rows) == {"thriller", "drama", "romance"}
    assert rows["thriller"]["completed"] == 1.0  # combined by max over both results rows
    assert rows["thriller"]["rating"] == 4.0
    assert rows["thriller"]["n_signals"] == 3
    assert rows["drama"]["status"] == "pending"  # two days old, no result: inside its window
    assert rows["romance"]["status"] == "expired"  # twelve days old, no result


def test_a_time_window_joins_each_result_to_its_latest_features_row(
    make_wheel: Make, tmp_path: Path
) -> None:
    wheel = make_wheel()
    features = pa.table(
        {
            "user": ["u1", "u1", "u2"],
            "genre": ["thriller", "drama", "romance"],
            "opening_type": ["suspense"] * 3,
            "twist_count": [1, 2, 0],
            "emotional_density": ["mid"] * 3,
            "length": ["long"] * 3,
            "at": [T0 - 3 * DAY, T0 - 2 * DAY, T0 - 3 * DAY],
        }
    )
    results = pa.table(
        {
            "user": ["u1", "u1", "u2", "u2"],
            "completed": [1, 0, 1, 1],
            "at": [T0 - 3 * DAY + HOUR, T0 - 2 * DAY + HOUR, T0 - 3 * DAY - HOUR, T0 - DAY],
        }
    )
    report = import_rows(wheel, [features, results], key="user", time="at", window_seconds=6 * HOUR)
    balanced(report)
    assert report.sources == ("table 1", "table 2")
    assert (report.imported, report.rejected, report.unmatched_results) == (5, 2, 2)
    assert [r for _, r, _ in report.rejections] == [4, 5]
    assert report.rejections[0][2] == "user: 'u2' has no features row in the 21600 s before it"
    rows = {r["genre"]: r for r in wheel.aligned().to_pylist()}
    assert rows["thriller"]["completed"] == 1.0
    assert rows["drama"]["completed"] == 0.0
    assert rows["romance"]["completed"] is None
    assert report.unmatched_features == 1


# --- privacy -------------------------------------------------------------------------------------


@pytest.mark.duckdb_file
def test_units_are_pseudonymised_as_the_sdk_does_and_text_is_redacted(
    make_wheel: Make, tmp_path: Path, db: Path
) -> None:
    secret = "alice.unit.7f3e9c"
    wheel = make_wheel()
    wheel.log(
        context={"genre": "drama"},
        params=dict(zip(HEADER[1:5], ["suspense", 2, "mid", "long"], strict=True)),
        results={"completed": 1},
        unit=secret,
    )
    source = write_csv(
        tmp_path / "private.csv",
        [*HEADER, "reader", "comment"],
        [
            [*GOOD, secret, "loved it, write to jane.doe@example.com"],
            [*GOOD, "42", ""],
            [*GOOD, "", "no numbers here"],
        ],
    )
    report = import_rows(wheel, [source], unit="reader")
    assert report.imported == 3
    rows = aligned(wheel)
    (logged,) = [r for r in rows if r["policy"] == "logged"]
    imported = [r for r in rows if r["policy"] == "imported"]  # ids count up in file order
    units = [r["unit"] for r in imported]
    assert units[0] == logged["unit"] != secret  # the SDK's pseudonym for the same unit
    assert units[1] == wheel._units(42) and units[2] is None
    assert [r["comment"] for r in imported] == [
        "loved it, write to [email]",
        None,
        "no numbers here",
    ]
    wheel.close()
    stored = db.read_bytes() + (
        Path(f"{db}.wal").read_bytes() if Path(f"{db}.wal").exists() else b""
    )
    assert secret.encode() not in stored
    assert b"jane.doe@example.com" not in stored


def test_a_text_cell_no_store_can_hold_rejects_its_row(make_wheel: Make, tmp_path: Path) -> None:
    wheel = make_wheel()
    source = write_csv(
        tmp_path / "nul.csv",
        [*HEADER, "comment"],
        [[*GOOD, "fine"], [*GOOD, "cut\x00here"]],
    )
    report = import_rows(wheel, [source])
    balanced(report)
    assert (report.imported, report.rejected) == (1, 1)
    assert report.rejections == (
        ("nul.csv", 3, "comment: 'cut\\x00here' contains a NUL character (U+0000)"),
    )
    assert [r["comment"] for r in aligned(wheel)] == ["fine"]


# --- writing -------------------------------------------------------------------------------------


def test_chunks_report_progress_and_a_failed_chunk_keeps_the_earlier_ones(
    make_wheel: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importers, "CHUNK_ROWS", 4)
    wheel = make_wheel()
    source = write_csv(tmp_path / "many.csv", HEADER, [GOOD] * 10)
    seen: list[tuple[int, int]] = []
    report = import_rows(wheel, [source], progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 10), (4, 10), (8, 10), (10, 10)]
    assert report.decisions == wheel.summary().decisions == 10
    assert len(set(wheel.aligned().column("decision_id").to_pylist())) == 10

    calls: list[int] = []
    write = wheel.store.write

    def failing(batch: Mapping[str, pa.Table]) -> None:
        calls.append(batch["decisions"].num_rows)
        if len(calls) == 2:
            raise StoreError("disk full")
        write(batch)

    monkeypatch.setattr(wheel.store, "write", failing)
    with pytest.raises(ImportInterruptedError, match="after 4 of 10 decisions") as caught:
        import_rows(wheel, [source])
    partial = caught.value.report
    assert (partial.read, partial.imported, partial.decisions, partial.signals) == (10, 4, 4, 4)
    assert wheel.summary().decisions == 14


def test_rows_logged_before_the_import_are_stored_first(make_wheel: Make, tmp_path: Path) -> None:
    wheel = make_wheel(max_delay=60)
    logged = wheel.log(
        context={"genre": "drama"},
        params=dict(zip(HEADER[1:5], ["suspense", 2, "mid", "long"], strict=True)),
        results={"completed": 0},
    )
    import_rows(wheel, [write_csv(tmp_path / "one.csv", HEADER, [GOOD])])
    stored = wheel.store.query("SELECT CAST(id AS VARCHAR) AS id FROM decisions").to_pylist()
    assert {row["id"] for row in stored} >= {logged}
    assert len(stored) == 2


def test_the_cli_lists_each_ignored_column_with_its_reason(tmp_path: Path) -> None:
    spec = tmp_path / "flywheel.toml"
    spec.write_text(
        example_text().replace(
            "duckdb:///.flywheel/flywheel.duckdb", f"duckdb:///{tmp_path / 'x.duckdb'}"
        )
    )
    names = [*HEADER[:-1], "reward", "region"]
    book = Workbook()
    sheet = book.active
    sheet.append(names)
    for _ in range(3):
        sheet.append(["thriller", "suspense", 2, "mid", "long", 1, "north"])
    book.save(tmp_path / "sales.xlsx")
    result = CliRunner().invoke(app, ["import", str(tmp_path / "sales.xlsx"), "--spec", str(spec)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # the console wraps long lines
    assert (
        "ignored sales.xlsx column 'reward': 'reward' is reserved: the reward is computed from"
        " signals by the spec's formula; to import this column, map it with --map SOURCE=NAME"
        " or [import] columns onto a signal (declared under [signals]) that the formula names"
    ) in output
    assert (
        "ignored sales.xlsx column 'region': not a knob, context feature or signal of the spec"
    ) in output
    assert "no signals imported" in output
    assert "read 3, imported 3, rejected 0" in output
