"""Spark as the learn cycle's engine, on a real local Spark: the same rows give the same
aligned rows, cells, playbook and findings as DuckDB, over both tiers, after an archive killed
midway and after ``forget``."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.align.sql import aligned_rows_sql
from flywheel.demo import example_spec, example_text
from flywheel.learn.sql import cells_sql
from flywheel.playbook.publish import engine
from flywheel.playbook.warehouse import encoding_for
from flywheel.store import tables_for
from flywheel.store.spark import SparkReader
from flywheel.store.warm import Tiered
from tests.align.test_align import spec as alignment_spec
from tests.conftest import DAY, HOUR, T0, Clock
from tests.store.test_postgres import QUALITY, close, loop, story_rows
from tests.store.test_tiers import days_of_decisions, kill_an_archive, tiered_text


@pytest.fixture(scope="module")
def spark() -> None:
    """Spark can start here: pyspark installed and a Java runtime; under CI it must."""
    missing = []
    try:
        import pyspark  # noqa: F401
    except ImportError:
        missing.append("pyspark is not installed (pip install 'flywheel[spark]')")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        missing.append("no Java runtime (java on PATH or JAVA_HOME)")
    if missing:
        reason = "Spark cannot start: " + "; ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI must run the Spark tests)")
        pytest.skip(reason)


def reader(wheel: flywheel.Wheel) -> SparkReader:
    assert isinstance(wheel.store, Tiered)
    return SparkReader(wheel.store, tables_for(wheel.spec), wheel.spec.learn.spark)


def by_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: str(r["decision_id"]))


def cells(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: [str(v) for v in r.values()])


SPARK = '\n[learn]\nengine = "spark"\n'


@pytest.mark.usefixtures("spark")
def test_spark_gives_duckdbs_answers_over_both_tiers(tmp_path: Path) -> None:
    """The conformance loop: learned by Spark over a store with half its rows archived, the
    aligned rows, playbook and findings are those DuckDB gives on the store as it was."""
    rows = story_rows(example_spec(), 3000)
    plain = loop(f"duckdb:///{tmp_path / 'plain.duckdb'}", example_text() + QUALITY, tmp_path, rows)
    seen: dict[str, Any] = {}

    def archive_then_compare(wheel: flywheel.Wheel) -> None:
        wheel.archive(older_than=(len(rows) // 2) * 60.0 + 10 * DAY)
        as_of = {"as_of": wheel.now()}
        encoding = encoding_for(wheel.store, wheel.spec, wheel.now())
        for name, sql in [
            ("aligned", aligned_rows_sql(wheel.spec)),
            ("cells", cells_sql(wheel.spec, encoding)),
        ]:
            seen[name] = (
                wheel.store.query(sql, as_of).to_pylist(),
                engine(wheel.store, wheel.spec).query(sql, as_of).to_pylist(),
            )

    (tmp_path / "spark").mkdir()
    text = tiered_text(tmp_path / "warm", QUALITY + SPARK)
    learned = loop(
        f"duckdb:///{tmp_path / 'spark.duckdb'}",
        text,
        tmp_path / "spark",
        rows,
        before=archive_then_compare,
    )
    duck, spark = seen["aligned"]
    assert len(duck) == 3000 and close(by_id(duck), by_id(spark))
    duck, spark = seen["cells"]
    assert len(duck) > 10 and close(cells(duck), cells(spark))
    for key, value in plain.items():
        assert close(value, learned[key]), key


def align_spec(warm: Path) -> dict[str, Any]:
    """The alignment tests' spec (every way signals combine), with a formula over several
    signals, a missing reward and a warm tier."""
    spec = alignment_spec(formula="converted + coalesce(spend, 0) / 100", missing=0)
    return {**spec, "storage": {"archive": {"url": str(warm)}}}


@pytest.mark.usefixtures("spark")
def test_every_alignment_case_on_spark(each_store: str, tmp_path: Path, clock: Clock) -> None:
    """Complete, pending, expired and late rows, repeats combined each way, text signals,
    rows in both tiers and signals of warm decisions arriving hot, hot rows in DuckDB or in
    PostgreSQL: Spark's rows are DuckDB's."""
    spec = flywheel.Spec.from_dict(align_spec(tmp_path / "warm"), base_dir=tmp_path)
    with flywheel.open(spec, store=each_store, clock=clock, background=False) as wheel:
        for i in range(60):
            clock.now = T0 + i * 6 * HOUR
            d = wheel.decide({"genre": "ab"[i % 2]}, unit=f"u{i % 7}")
            for k in range(i % 4):  # 0 to 3 repeats of each signal, some late
                at = clock.now + (k + 1) * (20 * HOUR if i % 5 else 2 * DAY)
                wheel.signal(d, "converted", (i + k) % 3 == 0, ts=at)
                wheel.signal(d, "rating", 1 + (i * k) % 5, ts=at)
                wheel.signal(d, "first_rating", 1 + (i + k) % 5, ts=at)
                wheel.signal(d, "spend", 10.0 * k, ts=at)
                wheel.signal(d, "low", float(i - k), ts=at)
                wheel.signal(d, "score", 0.1 * k, ts=at)
                wheel.signal(d, "comment", f"take {k}", ts=at)
        clock.now = T0 + 16 * DAY
        wheel.archive(older_than=8 * DAY)
        for i in range(3):  # results of warm decisions, arriving now (late)
            first = wheel.aligned().to_pylist()[i]["decision_id"]
            wheel.signal(first, "converted", True, ts=clock.now)
        wheel.flush()
        spark = reader(wheel)
        for as_of in (T0 + 9 * DAY, T0 + 16 * DAY):
            moment = {"as_of": datetime.fromtimestamp(as_of, tz=UTC)}
            duck = wheel.store.query(aligned_rows_sql(wheel.spec), moment).to_pylist()
            assert {r["status"] for r in duck} == {"complete", "pending", "expired"} or as_of > T0
            assert close(
                by_id(duck), by_id(spark.query(aligned_rows_sql(wheel.spec), moment).to_pylist())
            )


@pytest.mark.usefixtures("spark")
def test_spark_counts_each_row_once_after_a_killed_archive_and_a_forget(tmp_path: Path) -> None:
    spec, clock = days_of_decisions(tmp_path, 20, SPARK)
    kill_an_archive(spec, files=3)
    count = (
        "SELECT count(*) AS decisions, count(DISTINCT decision_id) AS ids,"
        " sum(n_signals) AS signals, count(DISTINCT unit) AS units"
        f" FROM ({aligned_rows_sql(flywheel.load(spec))}) a"
    )
    with flywheel.open(spec, clock=clock, refresh=0, background=False) as wheel:
        moment = {"as_of": wheel.now()}
        assert reader(wheel).query(count, moment).to_pylist() == [
            {"decisions": 200, "ids": 200, "signals": 200, "units": 10}
        ]
        wheel.forget("u3")
        assert reader(wheel).query(count, moment).to_pylist() == [
            {"decisions": 180, "ids": 180, "signals": 180, "units": 9}
        ]


@pytest.mark.usefixtures("spark")
def test_a_column_the_spec_gained_between_archives(tmp_path: Path, clock: Clock) -> None:
    """Files written before a context feature was added lack its column, later ones hold
    it: Spark reads its values where they are, as DuckDB does."""
    first = align_spec(tmp_path / "warm")
    url = f"duckdb:///{tmp_path / 's.duckdb'}"
    for day, spec in enumerate(
        [first, {**first, "context": {**first["context"], "mood": ["up", "down"]}}]
    ):
        parsed = flywheel.Spec.from_dict(spec, base_dir=tmp_path)
        with flywheel.open(parsed, store=url, clock=clock, background=False) as wheel:
            for i in range(4):
                clock.now = T0 + day * DAY + i * HOUR
                context = {"genre": "a", **({"mood": "up"} if day else {})}
                wheel.signal(wheel.decide(context), "converted", i % 2 == 0)
            clock.now = T0 + (day + 1) * DAY + HOUR
            wheel.archive(older_than=HOUR)
    with flywheel.open(parsed, store=url, clock=clock, background=False) as wheel:
        moment = {"as_of": wheel.now()}
        duck = by_id(wheel.store.query(aligned_rows_sql(wheel.spec), moment).to_pylist())
        spark = by_id(reader(wheel).query(aligned_rows_sql(wheel.spec), moment).to_pylist())
    assert [r["mood"] for r in duck].count("up") == 4
    assert close(duck, spark)
