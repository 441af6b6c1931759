"""Cells computed elsewhere: the alignment and cells queries in each engine's SQL
(``flywheel sql``), the same cells on PostgreSQL as on DuckDB, and a playbook learned from a
warehouse's cells (``flywheel learn --cells``) as a normal cycle learns it."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlglot
from psycopg import sql as pgsql
from typer.testing import CliRunner

import flywheel
from flywheel import align
from flywheel.cli import app
from flywheel.learn import sql as learn_sql
from flywheel.playbook import warehouse
from flywheel.spec import Spec
from flywheel.store.dialects import DIALECTS, rewrite
from tests.conftest import HOUR, Clock

runner = CliRunner()

SPEC_TOML = """
[knobs]
tone = ["calm", "loud"]
twist_count = [0, 1, 2, 3]

[context]
genre = ["a", "b"]
product = {{ type = "category", open = true, max_levels = 3 }}
age = {{ type = "number", min = 0, max = 120 }}

[reward]
formula = "clicked"
window = "1d"

[signals]
clicked = "max"

[learn]
min_rows = 20
half_life = "30d"
context_bins = 3

[storage]
url = "{url}"
"""
PRODUCTS = ["p0", "p1", "p2", "p3", "p4", "p5"]


def write_spec(path: Path, url: str) -> Path:
    path.write_text(SPEC_TOML.format(url=url), "utf-8")
    return path


def fill(wheel: flywheel.Wheel, clock: Clock, rows: int = 400, seed: int = 7) -> None:
    """Complete rows (loud wins in genre a, calm in b); a tenth logged without a result,
    some of them answered later inside the window, some after it closed (late: no reward)."""
    rng = random.Random(seed)
    later = []
    for i in range(rows):
        clock.now += 5 * 60
        genre = rng.choice("ab")
        params = {"tone": rng.choice(["calm", "loud"]), "twist_count": rng.randrange(4)}
        context = {"genre": genre, "product": rng.choice(PRODUCTS), "age": rng.randint(18, 80)}
        wins = (params["tone"] == "loud") == (genre == "a")
        results = {"clicked": int(rng.random() < (0.8 if wins else 0.2))}
        ident = wheel.log(context=context, params=params, results={} if i % 10 == 0 else results)
        if i % 10 == 0 and i < rows // 2:
            later.append((ident, clock.now + (25 * HOUR if i % 20 == 0 else 2 * HOUR)))
    for ident, ts in later:
        wheel.signal(ident, "clicked", 1, ts=ts)
    clock.now += HOUR
    wheel.flush()


TRAINED = 400 - 40 + 10  # rows with a reward: the answered ones, and those answered in time


def moment(clock: Clock) -> datetime:
    return align.moment(clock.now)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Path:
    """A spec file whose DuckDB store holds the simulated rows (the working directory)."""
    monkeypatch.chdir(tmp_path)
    path = write_spec(tmp_path / "flywheel.toml", f"duckdb:///{tmp_path / 'original.duckdb'}")
    with flywheel.open(path, clock=clock, background=False) as wheel:
        fill(wheel, clock)
    return path


def test_every_dialect_gets_both_queries_that_parse_back(project: Path, clock: Clock) -> None:
    at = align.stamp(clock.now)
    for dialect in DIALECTS:
        result = runner.invoke(app, ["sql", "--dialect", dialect, "--as-of", at])
        assert result.exit_code == 0, result.output
        text = result.stdout
        first = text.splitlines()[0]
        assert first.startswith("-- encoding: ")
        coded = json.loads(first.removeprefix("-- encoding: "))
        assert set(coded) >= {"categorical", "edges", "open"}
        assert coded["open"] == ["product"] and len(coded["categorical"]["product"]) == 3
        assert len(coded["edges"]["age"]) == 2  # three bins
        heads = [line for line in text.splitlines()[1:] if line.startswith("-- ")]
        assert len(heads) == 2
        assert "aligned rows" in heads[0] and "reads decisions, signals;" in heads[0]
        assert "cells" in heads[1] and "reads decisions, quarantine_state, signals;" in heads[1]
        assert all(f"$as_of replaced by {at}" in h for h in heads)
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
        assert len(statements) == 2

        written = runner.invoke(
            app, ["sql", "-d", dialect, "--as-of", at, "--out", f"queries/{dialect}"]
        )
        assert written.exit_code == 0, written.output
        folder = Path("queries") / dialect
        assert sorted(p.name for p in folder.iterdir()) == [
            "aligned.sql",
            "cells.sql",
            "encoding.json",
        ]
        assert json.loads((folder / "encoding.json").read_text()) == coded
        cells = (folder / "cells.sql").read_text()
        tree = sqlglot.parse_one(cells, read=dialect)
        assert isinstance(tree, sqlglot.exp.Query)
        columns = [*(f.name for f in load_spec(project).context), "tone", "twist_count"]
        assert tree.named_selects == [*columns, *warehouse.STATISTICS]
        for name in ("aligned.sql", "cells.sql"):  # a comment line, then the query
            head, body = (folder / name).read_text().split("\n", 1)
            assert head.startswith("-- ") and "$" not in body
        sqlglot.parse_one((folder / "aligned.sql").read_text(), read=dialect)
        if dialect in ("bigquery", "snowflake"):
            assert "FILTER (" not in cells.upper().replace("FILTER(", "FILTER (")


def load_spec(path: Path) -> Spec:
    return flywheel.load(path)


def normalized(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Cells as comparable tuples, in one order: group columns first, then the statistics
    (numbers rounded: sums add up in another order on another engine)."""
    out = []
    for row in rows:
        values = []
        for value in row.values():
            if isinstance(value, float):
                values.append(round(value, 6))
            elif isinstance(value, datetime):
                values.append(value.timestamp())
            else:
                values.append(value)
        out.append(tuple(values))
    return sorted(out, key=lambda r: tuple((v is None, str(v)) for v in r))


def postgres_rows(url: str, query: str) -> list[dict[str, Any]]:
    """The query run as is on the store's schema, through a connection of the test's own."""
    parts = urlsplit(url)
    schema = parse_qs(parts.query)["schema"][0]
    with psycopg.connect(parts._replace(query="").geturl()) as con:
        con.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        cursor = con.execute(query.encode())
        names = [c.name for c in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_postgres_and_duckdb_give_the_cells_the_store_gives(
    pg_url: str, db: Path, tmp_path: Path, clock: Clock
) -> None:
    spec = load_spec(write_spec(tmp_path / "flywheel.toml", f"duckdb:///{db}"))
    start = clock.now
    with (
        flywheel.open(spec, clock=clock, background=False) as duck,
        flywheel.open(spec, store=pg_url, clock=clock, background=False) as pg,
    ):
        fill(duck, clock)
        clock.now = start
        fill(pg, clock)  # the same rows, at the same times
        at = moment(clock)
        encoding = warehouse.encoding_for(duck.store, spec, at)
        on_pg = warehouse.encoding_for(pg.store, spec, at)
        assert warehouse.encoding_json(on_pg) == warehouse.encoding_json(encoding)
        expected = duck.store.query(learn_sql.cells_sql(spec, encoding), {"as_of": at})
        assert expected.num_rows > 20
        assert pc.sum(expected.column(learn_sql.ROWS)).as_py() == TRAINED
        want = normalized(expected.to_pylist())
        queries = {d: warehouse.warehouse_queries(spec, encoding, d, at)["cells"] for d in DIALECTS}
        assert normalized(postgres_rows(pg_url, queries["postgres"])) == want
        assert normalized(duck.store.query(queries["duckdb"]).to_pylist()) == want
        # the store's own translation, with its parameters, agrees too
        through_store = pg.store.query(learn_sql.cells_sql(spec, encoding), {"as_of": at})
        assert normalized(through_store.to_pylist()) == want


def segments(spec: Path) -> list[tuple[Any, Any]]:
    shown = runner.invoke(app, ["playbook", "show", "--json", "--spec", str(spec)])
    assert shown.exit_code == 0, shown.output
    return [(s["context"], s["params"]) for s in json.loads(shown.stdout)["segments"]]


def warehouse_cells(project: Path, clock: Clock, folder: str = "queries") -> Path:
    """What a warehouse does with ``flywheel sql --out``: run cells.sql on its copy of the
    tables (here DuckDB on the store's own file) and keep the result as Parquet."""
    at = align.stamp(clock.now)
    result = runner.invoke(app, ["sql", "--dialect", "duckdb", "--as-of", at, "--out", folder])
    assert result.exit_code == 0, result.output
    assert "cells.sql" in result.output and "encoding.json" in result.output
    with duckdb.connect(str(project.parent / "original.duckdb"), read_only=True) as con:
        table = con.sql((Path(folder) / "cells.sql").read_text()).to_arrow_table()
    pq.write_table(table, "cells.parquet")
    return Path("cells.parquet")


def test_a_warehouse_s_cells_learn_what_the_store_learns(project: Path, clock: Clock) -> None:
    at = align.stamp(clock.now)
    learned = runner.invoke(app, ["learn", "--as-of", at])
    assert learned.exit_code == 0 and "published version 1" in learned.output, learned.output
    cells = warehouse_cells(project, clock)

    fresh = write_spec(Path("fresh.toml"), f"duckdb:///{project.parent / 'fresh.duckdb'}")
    args = ["learn", "--cells", str(cells), "--encoding", "queries/encoding.json"]
    result = runner.invoke(app, [*args, "--spec", str(fresh), "--json"])
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert (done["published"], done["version"]) == (True, 1)
    assert "cells.parquet" in done["reason"]
    assert "the seatbelt's data checks did not run" in done["reason"]
    assert segments(fresh) == segments(project)

    with flywheel.open(fresh, clock=clock, background=False) as wheel:
        served = wheel.playbook
        assert served is not None and served.version == 1
        training = served.meta["training"]
        digest = hashlib.sha256(cells.read_bytes()).hexdigest()
        assert training["source"] == {"cells": str(cells), "sha256": digest}
        assert training["as_of"] == moment(clock).isoformat()
        with flywheel.open(project, clock=clock, background=False) as original:
            assert original.playbook is not None
            assert training["rows"] == original.playbook.meta["training"]["rows"]
        status = wheel.status().cycles
        assert status is not None and status["last"]["trigger"] == "cells"


def test_the_sdk_learns_from_a_table_and_serves_it(project: Path, clock: Clock) -> None:
    cells = pq.read_table(warehouse_cells(project, clock))
    coded = json.loads(Path("queries/encoding.json").read_text())
    fresh = write_spec(Path("fresh.toml"), f"duckdb:///{project.parent / 'fresh.duckdb'}")
    with flywheel.open(fresh, clock=clock, background=False) as wheel:
        first = wheel.learn_cells(cells, coded)
        assert first.published and first.version == 1 and "first playbook" in first.reason
        decision = wheel.decide({"genre": "a", "product": "unseen", "age": 40})
        assert decision.playbook == 1
        # the same cells as a Parquet folder (as Spark writes them), and another version
        folder = Path("spark-out")
        folder.mkdir()
        pq.write_table(cells.slice(0, 10), folder / "part-00000.parquet")
        pq.write_table(cells.slice(10), folder / "part-00001.parquet")
        (folder / "_SUCCESS").write_text("")
        second = wheel.learn_cells(folder, Path("queries/encoding.json"))
        assert second.version == 2 and "replaces version 1" in second.reason
        assert wheel.playbook is not None and wheel.playbook.version == 2
        rows = pc.sum(cells.column(learn_sql.ROWS)).as_py()
        assert wheel.playbook.meta["training"]["rows"] == rows


@pytest.fixture
def cells(project: Path, clock: Clock) -> Iterator[pa.Table]:
    yield pq.read_table(warehouse_cells(project, clock))


def learn_cells(table: pa.Table | None, *extra: str) -> tuple[int, str]:
    """``flywheel learn --cells`` on a fresh store; the exit code and the whole output with
    its lines joined."""
    if table is not None:
        pq.write_table(table, "given.parquet")
    fresh = write_spec(Path("fresh.toml"), "duckdb:///fresh.duckdb")
    args = ["learn", "--cells", "given.parquet", "--spec", str(fresh), *extra]
    result = runner.invoke(app, args)
    return result.exit_code, " ".join(result.output.split())


def test_cells_without_a_column_are_refused_naming_it(cells: pa.Table) -> None:
    code, output = learn_cells(cells.drop_columns([learn_sql.N]))
    assert code == 2
    assert "given.parquet has no column '#n'" in output
    assert "the cells query's columns are" in output
    code, output = learn_cells(cells.drop_columns(["age", learn_sql.LAST_TS]))
    assert code == 2 and "no column 'age' (nor '#last_ts')" in output


def test_empty_or_unreadable_cells_are_refused(cells: pa.Table) -> None:
    code, output = learn_cells(cells.slice(0, 0), "--encoding", "queries/encoding.json")
    assert code == 2 and "cells: given.parquet holds no rows" in output
    code, output = learn_cells(cells.slice(0, 3), "--encoding", "queries/encoding.json")
    assert code == 2 and "learn.min_rows is 20" in output
    Path("given.parquet").write_bytes(b"")
    code, output = learn_cells(None)
    assert code == 2 and "cannot read given.parquet as Parquet" in output


def test_cells_of_the_wrong_kind_are_refused(cells: pa.Table) -> None:
    text = pa.array([str(v) for v in cells.column(learn_sql.S).to_pylist()])
    wrong = cells.set_column(cells.column_names.index(learn_sql.S), learn_sql.S, text)
    code, output = learn_cells(wrong, "--encoding", "queries/encoding.json")
    assert code == 2 and "column '#s' holds string, not numbers" in output
    bins = pa.array([7] * cells.num_rows, type=pa.int32())
    wrong = cells.set_column(cells.column_names.index("age"), "age", bins)
    code, output = learn_cells(wrong, "--encoding", "queries/encoding.json")
    assert code == 2 and "column 'age' holds 7, not a bin number of the encoding" in output


def test_an_encoding_that_does_not_fit_the_spec_is_refused(cells: pa.Table) -> None:
    coded = json.loads(Path("queries/encoding.json").read_text())
    changes: list[tuple[dict[str, Any], str]] = [
        ({"spec_digest": "0123456789abcdef"}, "it was computed for another spec"),
        ({"edges": {}}, "edges.age: expected the bins' inner bounds"),
        ({"open": []}, "open: the spec's open features are ['product']"),
        ({"categorical": {**coded["categorical"], "genre": ["b", "a"]}}, "categorical.genre"),
        ({"categorical": {**coded["categorical"], "mood": ["x"]}}, "'mood' is not a context"),
    ]
    for change, message in changes:
        Path("bad.json").write_text(json.dumps({**coded, **change}))
        code, output = learn_cells(cells, "--encoding", "bad.json")
        assert code == 2, output
        assert f"encoding: bad.json: {message}" in output


def test_learn_cells_does_not_combine_with_as_of_or_force(cells: pa.Table) -> None:
    code, output = learn_cells(cells, "--force")
    assert code == 2 and "--cells: does not combine with --force" in output
    code, output = learn_cells(cells, "--as-of", "2026-01-01T00:00Z", "--force")
    assert code == 2 and "does not combine with --as-of and --force" in output
    result = runner.invoke(app, ["learn", "--encoding", "queries/encoding.json"])
    assert result.exit_code == 2 and "--encoding: goes with --cells" in result.output


def test_an_unknown_dialect_is_refused_naming_the_choices(project: Path) -> None:
    result = runner.invoke(app, ["sql", "--dialect", "oracle"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert f"--dialect: 'oracle' is not one of {', '.join(DIALECTS)}" in output
    missing = runner.invoke(app, ["sql"])
    assert missing.exit_code == 2 and "--dialect" in missing.output


def test_a_halted_seatbelt_publishes_nothing_from_cells(cells: pa.Table, clock: Clock) -> None:
    from flywheel.seatbelt import breaker

    fresh = write_spec(Path("fresh.toml"), "duckdb:///fresh.duckdb")
    with flywheel.open(fresh, clock=clock, background=False) as wheel:
        breaker.halt(wheel.store, moment(clock), "test", "data in doubt")
        result = wheel.learn_cells(cells, Path("queries/encoding.json"))
        assert (result.published, result.halted) == (False, True)
        assert "halted" in result.reason and wheel.playbook is None


@pytest.mark.parametrize("dialect", ["snowflake", "bigquery"])
def test_last_and_first_keep_duckdbs_meaning_without_filter(
    dialect: str, make_wheel: Any, clock: Clock
) -> None:
    """Engines without ``FILTER`` get ``max_by`` over values and keys of the one signal
    only: a ``last`` rating followed by another signal is still the last rating. Run here
    as DuckDB SQL, with the rewrite those engines get."""
    wheel = make_wheel(
        {
            "knobs": {"tone": ["warm", "formal"]},
            "reward": {"formula": "rating", "window": "1d"},
            "signals": {"rating": "last", "opening": "first", "clicked": "max"},
        }
    )
    for i in range(6):
        d = wheel.decide({})
        wheel.signal(d, "rating", i, ts=clock.now + 1)
        wheel.signal(d, "rating", i + 1, ts=clock.now + 2)
        wheel.signal(d, "opening", 10 + i, ts=clock.now + 3)
        wheel.signal(d, "opening", 20 + i, ts=clock.now + 4)
        wheel.signal(d, "clicked", 1, ts=clock.now + 5)  # the newest signal of the decision
    wheel.flush()
    sql = align.sql.aligned_rows_sql(wheel.spec)
    tree = rewrite(sqlglot.parse_one(sql, read="duckdb"), dialect)
    filtered = [
        f for f in tree.find_all(sqlglot.exp.Filter) if isinstance(f.this, sqlglot.exp.ArgMax)
    ]
    assert not filtered and list(tree.find_all(sqlglot.exp.ArgMax))
    rewritten = tree.sql(dialect="duckdb")
    params = {"as_of": datetime.fromtimestamp(clock.now + HOUR, tz=UTC)}
    rows = wheel.store.query(rewritten, params).sort_by("decision_id").to_pylist()
    assert [(r["rating"], r["opening"]) for r in rows] == [(i + 1, 10 + i) for i in range(6)]
    assert rows == wheel.store.query(sql, params).sort_by("decision_id").to_pylist()
