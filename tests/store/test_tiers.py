"""Storage tiers: older rows moved to the warm tier's Parquet files are read as before, on both
stores; ``forget`` reaches every tier; an archive killed at any moment loses nothing and
counts nothing twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import flywheel
from flywheel.demo import StoryWorld, example_spec, example_text
from flywheel.store.warm import MANIFEST, Manifest, Tiered
from tests.conftest import DAY, HOUR, T0, Clock, wait_for
from tests.store.test_postgres import QUALITY, close, loop, story_rows

STORE_LINE = 'url = "duckdb:///.flywheel/flywheel.duckdb"'


def tiered_text(warm: Path, extra: str = "") -> str:
    """The example spec with its warm tier in ``warm``."""
    text = example_text().replace(STORE_LINE, f'{STORE_LINE}\narchive = {{url = "{warm}"}}')
    return text + extra


def tiered(wheel: flywheel.Wheel) -> Tiered:
    assert isinstance(wheel.store, Tiered)
    return wheel.store


def hot_count(wheel: flywheel.Wheel, table: str) -> int:
    return int(tiered(wheel).hot.query(f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py())


def test_archived_rows_give_the_same_answers_on_both_stores(
    each_store: str, tmp_path: Path
) -> None:
    """Half the rows archived before anything is read: the aligned rows, the playbook, the
    findings and the quality counts are those of the store that archived nothing."""
    rows = story_rows(example_spec(), 3000)
    plain = loop(f"duckdb:///{tmp_path / 'plain.duckdb'}", example_text() + QUALITY, tmp_path, rows)
    moved: dict[str, int] = {}

    def archive(wheel: flywheel.Wheel) -> None:
        before = hot_count(wheel, "decisions")
        done = wheel.archive(older_than=(len(rows) // 2) * 60.0 + 10 * DAY)
        moved.update(done.rows)
        assert hot_count(wheel, "decisions") == before - done.rows["decisions"]

    text = tiered_text(tmp_path / "warm", QUALITY)
    (tmp_path / "tiers").mkdir()
    tiers = loop(each_store, text, tmp_path / "tiers", rows, before=archive)
    assert 0 < moved["decisions"] < len(rows)
    assert moved["signals"] > 0
    for key, value in plain.items():
        assert close(value, tiers[key]), key
    days = {p.name for p in (tmp_path / "warm").glob("*/decisions/*")}
    assert days and all(d.startswith("day=2026-") for d in days)


@pytest.fixture
def wheel_with_tiers(each_store: str, tmp_path: Path, clock: Clock) -> flywheel.Wheel:
    (tmp_path / "spec").mkdir()
    spec = tmp_path / "spec" / "flywheel.toml"
    spec.write_text(tiered_text(tmp_path / "warm"))
    return flywheel.open(spec, store=each_store, clock=clock, refresh=0, background=False)


def test_late_signals_of_archived_decisions_join_them(
    wheel_with_tiers: flywheel.Wheel, clock: Clock
) -> None:
    wheel = wheel_with_tiers
    with wheel:
        old = wheel.decide({"genre": "drama"}, unit="reader")
        clock.now = T0 + 2 * DAY
        wheel.archive(older_than=DAY)
        assert hot_count(wheel, "decisions") == 0
        wheel.signal(old, "completed", True, ts=T0 + HOUR)  # stored hot, about a warm decision
        wheel.flush()
        row = wheel.aligned().to_pylist()[0]
        assert (row["decision_id"], row["status"], row["reward"]) == (old.id, "complete", 1.0)
        assert wheel.summary().orphans == 0
        columns = tiered(wheel).hot.query("SELECT * FROM decisions").column_names
        assert wheel.store.query("SELECT * FROM decisions").column_names == columns  # no 'day'
        again = wheel.archive(older_than=DAY)  # no decision that old is left, but its result
        assert (again.rows["decisions"], again.rows["signals"]) == (0, 1)  # ... follows it
        assert hot_count(wheel, "signals") == 0
        row = wheel.aligned().to_pylist()[0]
        assert (row["status"], row["reward"], wheel.summary().orphans) == ("complete", 1.0, 0)


def test_forget_reaches_every_tier(
    wheel_with_tiers: flywheel.Wheel, clock: Clock, tmp_path: Path
) -> None:
    wheel = wheel_with_tiers
    with wheel:
        for day in range(4):
            clock.now = T0 + day * DAY
            for unit in ("alice", "bob"):
                d = wheel.decide({"genre": "drama"}, unit=unit)
                wheel.signal(d, "completed", day % 2 == 0, ts=clock.now + HOUR)
                wheel.signal(d, "comment", f"day {day}", unit=unit)
        clock.now = T0 + 4 * DAY
        wheel.flush()
        alice = wheel.store.query(
            "SELECT DISTINCT unit FROM decisions WHERE unit IS NOT NULL ORDER BY unit"
        ).column("unit")
        wheel.archive(older_than=2 * DAY)  # days 0 and 1 warm, 2 and 3 hot
        hashed = {r["unit"]: r["decision_id"] for r in wheel.aligned().to_pylist()}
        assert len(alice) == 2 and len(hashed) == 2
        deleted = wheel.forget("alice")
        assert (deleted["decisions"], deleted["warm.decisions"]) == (2, 2)
        assert (deleted["signals"], deleted["warm.signals"]) == (4, 4)
        units = {r["unit"] for r in wheel.aligned().to_pylist()}
        assert len(units) == 1 and wheel.summary().decisions == 4
    # not a byte of hers is left in any file of the warm tier, listed or not
    files = list((tmp_path / "warm").rglob("*.parquet"))
    assert files
    gone = set(hashed) - units
    for file in files:
        table = pq.read_table(file)
        if "unit" in table.column_names:
            assert not gone & set(table.column("unit").to_pylist())


ARCHIVER = """
import sys
import flywheel
with flywheel.open(sys.argv[1], refresh=0, background=False) as wheel:
    wheel.archive(older_than=0)
"""


def days_of_decisions(folder: Path, days: int, extra: str = "") -> tuple[Path, Clock]:
    """A spec on a DuckDB file with its warm tier beside it, and ten decisions a day for
    ``days`` days (ten units), each with its result an hour later."""
    spec = folder / "flywheel.toml"
    text = tiered_text(folder / "warm", extra)
    spec.write_text(text.replace(STORE_LINE, 'url = "duckdb:///store.duckdb"'))
    clock = Clock()
    with flywheel.open(spec, clock=clock, refresh=0, background=False) as wheel:
        for day in range(days):
            clock.now = T0 + day * DAY
            for i in range(10):
                d = wheel.decide({"genre": "drama"}, unit=f"u{i}")
                wheel.signal(d, "completed", i % 3 == 0, ts=clock.now + HOUR)
    clock.now = T0 + (days + 1) * DAY
    return spec, clock


def kill_an_archive(spec: Path, files: int) -> None:
    """Archive everything in a process of its own, and ``kill -9`` it once it has written
    ``files`` Parquet files."""
    warm = spec.parent / "warm"
    archiver = subprocess.Popen([sys.executable, "-c", ARCHIVER, str(spec)])
    try:
        assert wait_for(
            lambda: len(list(warm.rglob("*.parquet"))) >= files or archiver.poll() is not None
        )
        os.kill(archiver.pid, signal.SIGKILL)
    finally:
        archiver.wait()
    assert archiver.returncode == -signal.SIGKILL  # killed, not finished


@pytest.mark.duckdb_file
@pytest.mark.parametrize("files", [1, 4, 9])
def test_an_archive_killed_midway_loses_and_doubles_nothing(tmp_path: Path, files: int) -> None:
    """``kill -9`` once the archive has written ``files`` Parquet files: every decision and
    signal is still counted once; the next archive finishes and removes what was left."""
    spec, _ = days_of_decisions(tmp_path, 40)
    expected = {"decisions": 400, "ids": 400, "signals": 400}

    def counted() -> dict[str, Any]:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            return wheel.store.query(
                "SELECT (SELECT count(*) FROM decisions) AS decisions,"
                " (SELECT count(DISTINCT id) FROM decisions) AS ids,"
                " (SELECT count(*) FROM signals) AS signals"
            ).to_pylist()[0]

    kill_an_archive(spec, files)
    assert counted() == expected
    with flywheel.open(spec, refresh=0, background=False) as wheel:
        wheel.archive(older_than=0)
        manifest = Manifest.load(wheel.store.get_meta(MANIFEST))
        assert hot_count(wheel, "decisions") == 0
    assert counted() == expected
    assert manifest is not None
    listed = {p for t in manifest.files for p in manifest.paths(t)}
    warm = tmp_path / "warm"
    on_disk = {str(p.relative_to(warm)) for p in warm.rglob("*.parquet")}
    assert on_disk == listed
    assert ds.dataset(sorted(warm.glob("*/decisions/**/*.parquet"))).count_rows() == 400


def test_archive_needs_a_warm_tier(make_wheel: Callable[..., flywheel.Wheel]) -> None:
    wheel = make_wheel()
    with pytest.raises(flywheel.FlywheelError, match=r"storage\.archive\.url"):
        wheel.archive(older_than=DAY)
    with pytest.raises(flywheel.FlywheelError, match=r"storage\.archive\.after"):
        wheel.archive()


def test_the_background_turn_archives_on_schedule(tmp_path: Path, clock: Clock) -> None:
    """``[storage] archive.after``: what the turn runs every minute moves the rows that old,
    at most once an hour among the processes on the store."""
    spec = tmp_path / "flywheel.toml"
    spec.write_text(
        tiered_text(tmp_path / "warm")
        .replace(STORE_LINE, 'url = "duckdb:///store.duckdb"')
        .replace(f'url = "{tmp_path / "warm"}"', f'url = "{tmp_path / "warm"}", after = "2d"')
    )
    with flywheel.open(spec, clock=clock, refresh=0, background=False) as wheel:
        for day in range(5):
            clock.now = T0 + day * DAY
            wheel.decide({"genre": "drama"})
        wheel.watch()  # day 4: days 0, 1 (and the start of 2) are older than two days
        assert hot_count(wheel, "decisions") == 3
        clock.now += HOUR / 2
        wheel.decide({"genre": "drama"})
        wheel.watch()  # within the hour: not again
        assert hot_count(wheel, "decisions") == 4
        clock.now = T0 + 7 * DAY
        wheel.watch()
        assert hot_count(wheel, "decisions") == 0
        assert wheel.summary().decisions == 6


def test_the_archive_command(tmp_path: Path, clock: Clock) -> None:
    from typer.testing import CliRunner

    from flywheel.cli import app

    spec = tmp_path / "flywheel.toml"
    spec.write_text(
        tiered_text(tmp_path / "warm").replace(STORE_LINE, 'url = "duckdb:///s.duckdb"')
    )
    with flywheel.open(spec, clock=clock, refresh=0, background=False) as wheel:
        for day in range(3):
            clock.now = T0 + day * DAY
            wheel.signal(wheel.decide({"genre": "drama"}), "completed", True)
    runner = CliRunner()
    bad = runner.invoke(app, ["archive", "--spec", str(spec), "--older-than", "soon"])
    assert bad.exit_code == 2 and "--older-than" in bad.output
    done = runner.invoke(app, ["archive", "--spec", str(spec), "--older-than", "1d"])
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "archived 3 days" in said and "3 decisions, 3 signals" in said
    again = runner.invoke(app, ["archive", "--spec", str(spec), "--older-than", "1d"])
    assert "nothing to archive" in again.output
    status = runner.invoke(app, ["status", "--spec", str(spec)])
    line = re.search(r"storage: 0 decisions hot; warm before (\S+), 6 files at", status.output)
    assert line is not None, status.output
    assert time.time() - 2 * DAY < datetime.fromisoformat(line.group(1)).timestamp() < time.time()
    elsewhere = runner.invoke(
        app, ["archive", "--spec", str(spec), "--older-than", "1h", "--to", str(tmp_path / "x")]
    )
    assert elsewhere.exit_code != 0 and "already holds rows" in elsewhere.output


def test_health_and_evaluation_read_both_tiers(
    wheel_with_tiers: flywheel.Wheel, clock: Clock
) -> None:
    """The velocity report and the offline evaluation of a version are the same figures
    before and after most of their rows moved to the warm tier."""
    wheel = wheel_with_tiers
    world = StoryWorld(5)
    with wheel:
        for hour in range(24 * 20):
            clock.now = T0 + hour * HOUR
            context = world.context()
            d = wheel.decide(context)
            wheel.signal(d, "completed", world.rng.random() < world.completion(context, d.params))
            if hour == 24 * 10:
                assert wheel.learn(seed=1).published
        clock.now = T0 + 21 * DAY
        wheel.flush()
        before = (wheel.health().as_dict(), wheel.evaluate(1).as_dict())
        assert wheel.archive(older_than=6 * DAY).rows["decisions"] > 24 * 10
        after = (wheel.health().as_dict(), wheel.evaluate(1).as_dict())
    assert close(before, after)


def test_forget_reaches_late_rows_of_warm_decisions(
    wheel_with_tiers: flywheel.Wheel, clock: Clock
) -> None:
    """A signal without a unit that arrived after its decision was archived is hot, about a
    warm decision: forgetting the unit deletes it too, and leaves no orphan."""
    wheel = wheel_with_tiers
    with wheel:
        d = wheel.decide({"genre": "drama"}, unit="alice")
        wheel.decide({"genre": "drama"}, unit="bob")
        clock.now = T0 + 2 * DAY
        wheel.archive(older_than=DAY)
        wheel.signal(d, "comment", "a secret of alice's", ts=clock.now)
        wheel.flush()
        assert hot_count(wheel, "signals") == 1
        deleted = wheel.forget("alice")
        assert (deleted["signals"], deleted["warm.decisions"]) == (1, 1)
        assert hot_count(wheel, "signals") == 0
        assert wheel.summary().orphans == 0 and wheel.summary().decisions == 1


def test_stores_sharing_a_location_keep_to_their_own_files(tmp_path: Path) -> None:
    """Two stores archiving to one folder (staging and production, say): each writes in a
    folder of its own and removes only its own unlisted files, even after a killed archive."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    specs = []
    for name in ("a", "b"):
        spec, _ = days_of_decisions(tmp_path / name, 5)
        text = spec.read_text().replace(str(tmp_path / name / "warm"), str(tmp_path / "shared"))
        spec.write_text(text)
        specs.append(spec)
    with flywheel.open(specs[0], refresh=0, background=False) as wheel:
        wheel.archive(older_than=0)
    with flywheel.open(specs[1], refresh=0, background=False) as wheel:
        wheel.archive(older_than=0)
    for spec in specs:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            wheel.archive(older_than=0)  # sweeps its own folder
            assert wheel.summary().decisions == 50
            assert hot_count(wheel, "decisions") == 0
    assert len(list((tmp_path / "shared").iterdir())) == 2


def test_a_query_naming_a_table_its_own_way_reads_both_tiers(
    wheel_with_tiers: flywheel.Wheel, clock: Clock
) -> None:
    """A WITH part named like the table it filters, and the table named in the store's own
    schema, read the warm rows too."""
    wheel = wheel_with_tiers
    with wheel:
        for day in range(6):
            clock.now = T0 + day * DAY
            wheel.decide({"genre": "drama"}, unit=f"u{day % 2}")
        clock.now = T0 + 7 * DAY
        wheel.archive(older_than=3 * DAY)
        assert hot_count(wheel, "decisions") == 2
        queries = [
            "SELECT count(*) AS n FROM decisions",
            "WITH decisions AS (SELECT * FROM decisions WHERE unit IS NOT NULL)"
            " SELECT count(*) AS n FROM decisions",
            "SELECT count(*) AS n FROM main.decisions",
        ]
        assert [wheel.store.query(q).column("n")[0].as_py() for q in queries] == [6, 6, 6]
