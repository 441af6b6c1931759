"""Names that SQL reads as something else: knobs, context features and signals named like SQL
keywords or like the aliases the generated statements use internally run the whole loop on
DuckDB and on PostgreSQL."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlglot import exp

import flywheel
from flywheel.analyze import export
from flywheel.rules import ExpressionError, parse
from flywheel.spec import NAME_PATTERN, RESERVED_NAMES
from tests.conftest import HOUR, T0, Clock

KEYWORDS = (
    "select", "from", "where", "group", "order", "by", "as", "table", "default", "user",
    "limit", "offset", "all", "and", "or", "not", "null", "true", "false", "case", "when",
    "then", "else", "end", "join", "on", "using", "union", "having", "window", "filter", "over",
    "partition", "cast", "in", "is", "between", "like", "distinct", "with", "check", "primary",
    "column", "constraint", "current_date", "current_user", "session_user", "array", "any",
    "interval", "qualify", "returning", "values", "desc", "asc", "to", "into", "exists",
    "natural", "left", "right", "full", "inner", "outer", "cross", "lateral", "only", "some",
    "analyse", "analyze", "collate", "references", "unique", "foreign", "grant", "both",
    "leading", "trailing", "symmetric", "localtime", "fetch", "variadic", "for", "create",
    "except", "intersect", "do", "epoch", "count", "sum", "min", "max", "avg", "coalesce",
    "floor", "exp", "row_number", "array_agg", "arg_max", "quantile_cont", "concat_ws", "chr",
)  # fmt: skip
"""SQL keywords and the functions the generated statements call."""

INTERNAL = (
    "k", "n", "t", "q", "s", "ss", "w", "a", "b", "c", "d", "r", "f", "rows", "reward_sum",
    "first_ts", "last_ts", "first", "last", "_w", "_observed", "_open", "_duplicate",
    "in_window", "state", "failed", "received", "recent", "long_recent", "quarantined_at",
    "decisions", "complete", "pending", "expired", "signals", "orphans", "edits", "action",
    "rules", "actor", "detail", "reason", "since", "as_of", "cut", "long_cut", "start", "new",
    "old", "draft", "final", "diff", "distance", "quarantine", "quarantine_state", "audit",
    "meta", "playbooks", "signal_keys", "decision_keys", "schema_version", "__fw_param_0__",
    "__fw_param_1__", "_batch", "_claims", "claimed", "version", "digest", "payload",
)  # fmt: skip
"""Every alias, table and column name the generated statements use, and the placeholders'
stand-ins."""

NAMES = sorted({*KEYWORDS, *INTERNAL} - RESERVED_NAMES)


@pytest.fixture(params=["duckdb", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"duckdb:///{tmp_path / 'names.duckdb'}"


def _spec(knobs: list[str], context: list[str], signal: str) -> dict[str, Any]:
    return {
        "name": "names",
        "knobs": {k: ["a", "b"] for k in knobs},
        "context": {c: ["x", "y"] for c in context},
        "reward": {"formula": f'"{signal}"', "window": "1h"},
        "signals": {signal: "max"},
        "seatbelt": {"period": "1h", "baseline_periods": 2},
    }


def test_status_with_a_knob_named_like_the_volume_monitors_alias(url: str) -> None:
    clock = Clock()
    with flywheel.open(_spec(["k"], ["n"], "first"), store=url, clock=clock) as wheel:
        for count in (4, 6, 3):  # three periods; the last one is the newest
            for _ in range(count):
                wheel.decide({"n": "x"})
            clock.now += HOUR
        clock.now -= HOUR / 2
        status = wheel.status()
    volume = {m.name: m.detail for m in status.monitors}["volume.decisions"]
    assert volume == {"current": 3, "baseline": 5.0, "periods": 2}
    assert status.counts.decisions == 13


def test_the_names_drawn_are_valid_spec_names() -> None:
    assert all(NAME_PATTERN.match(n) for n in NAMES)
    flywheel.Spec.from_dict(
        {
            "name": "all",
            "knobs": {"knob": [0, 1]},
            "context": {n: [0, 1] for n in NAMES[:-1]},
            "reward": {"formula": f'"{NAMES[-1]}"'},
        }
    )


def _store(backend: str, tmp: Path, server: str | None) -> tuple[str, str | None]:
    """A fresh store for one example: its URL, and the PostgreSQL schema to drop after."""
    if backend == "duckdb":
        return f"duckdb:///{tmp / uuid.uuid4().hex}.duckdb", None
    schema = f"flywheel_test_{uuid.uuid4().hex[:12]}"
    return f"{server}?schema={schema}", schema


@pytest.fixture(params=["duckdb", "postgresql"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    server = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    return request.param, server


@settings(
    max_examples=4,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(names=st.lists(st.sampled_from(NAMES), min_size=5, max_size=5, unique=True))
@example(names=["k", "n", "t", "first", "_observed"])
@example(names=["_w", "q", "recent", "long_recent", "_duplicate"])
@example(names=["select", "group", "order", "__fw_param_0__", "user"])
@example(names=["rows", "s", "ss", "state", "failed"])
@example(names=["a", "d", "c", "r", "q"])
@example(names=["values", "over", "filter", "interval", "exists"])
@example(names=["exists", "over", "filter", "values", "interval"])
@example(names=["a", "d", "c", "q", "rows"])  # a signal's name is no column of playbook rows
def test_the_whole_loop_with_names_sql_reads_otherwise(
    names: list[str], backend: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory
) -> None:
    kind, server = backend
    url, schema = _store(kind, tmp_path_factory.mktemp("names"), server)
    try:
        _run_loop(names, url, tmp_path_factory.mktemp("export"))
    finally:
        if schema is not None and server is not None:
            with psycopg.connect(server, autocommit=True) as con:
                con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _written(name: str) -> str:
    """The name as a person would write it in an expression: bare where SQL reads it as a
    column (``select`` needs quotes; ``values`` and ``k`` do not)."""
    try:
        node = parse(name)
    except ExpressionError:
        return f'"{name}"'
    return name if isinstance(node, exp.Column) and node.name == name else f'"{name}"'


def _run_loop(names: list[str], url: str, out: Path) -> None:
    first, second, segment, size, signal = names
    spec = {
        "name": "names",
        "knobs": {first: ["a", "b"], second: [1, 2]},
        "context": {segment: ["x", "y"], size: "number"},
        "reward": {"formula": _written(signal), "window": "1h"},
        "signals": {signal: "max"},
        "quality": {
            "rules": [f"{_written(first)} IN ('a', 'b') AND {_written(size)} >= 0"],
            "required": [signal],
            "ranges": {signal: [0, 1]},
            "unique": [size],
        },
        "seatbelt": {"period": "1h", "baseline_periods": 2, "min_rows": 10},
        "learn": {"draws": 64},
    }
    clock = Clock()
    decided: dict[str, dict[str, Any]] = {}
    with flywheel.open(spec, store=url, clock=clock) as wheel:

        def hour(start: float, bad: bool = False) -> None:
            for i in range(15):
                clock.now = start + 60 * i
                context = {segment: "xy"[i % 2], size: float(len(decided))}
                d = wheel.decide(context)
                value = 5.0 if bad and i == 0 else float(d.params[first] == "a")
                wheel.signal(d, signal, value)
                decided[d.id] = {**context, **d.params, signal: value}

        for h in range(3):
            hour(T0 + h * HOUR, bad=h == 0)
        clock.now = T0 + 4 * HOUR
        table = wheel.aligned()
        assert len(set(table.column_names)) == table.num_columns
        aligned = table.to_pylist()
        assert len(aligned) == 45
        for row in aligned:
            assert row["status"] == "complete"
            assert {n: row[n] for n in decided[row["decision_id"]]} == decided[row["decision_id"]]
            assert row["reward"] == decided[row["decision_id"]][signal]
        assert wheel.learn(seed=1).published

        table = wheel.quarantined()
        assert len(set(table.column_names)) == table.num_columns
        held = table.to_pylist()
        assert len(held) == 1 and held[0][signal] == 5.0
        failed = "#failed" if "failed" in names else "failed"
        assert held[0][failed] == f"{signal} in [0, 1]"
        assert {n: held[0][n] for n in (first, second, segment)} == {
            n: decided[held[0]["decision_id"]][n] for n in (first, second, segment)
        }

        for h in (4, 5):
            hour(T0 + h * HOUR + HOUR / 2)
        status = wheel.status(T0 + 5 * HOUR + 50 * 60)
        volume = {m.name: m.detail for m in status.monitors}
        assert volume["volume.decisions"] == {"current": 15, "baseline": 7.5, "periods": 2}
        assert volume["volume.signals"] == {"current": 15, "baseline": 7.5, "periods": 2}
        assert status.counts.decisions == 75 and status.counts.complete == 75
        assert status.quality is not None
        assert (status.quality.received, status.quality.quarantined) == (75, 1)

        clock.now = T0 + 7 * HOUR
        again = wheel.learn(seed=2)
        assert again.published or again.halted, again.reason

        analysis = wheel.analyze()
        assert analysis.best and all(b.params[first] == "a" for b in analysis.best)
        assert all(set(b.context) == {segment, size} for b in analysis.best)

        rows = wheel.playbook_rows()
        assert rows and all(r[first] == "a" and r[second] in (1, 2) for r in rows)
        assert {r[segment] for r in rows} == {"x", "y"}
        support = "#rows" if "rows" in (first, second, segment, size) else "rows"
        assert sum(r[support] for r in rows) == (74 if again.published else 44)  # accepted
        export.write([("playbook", rows)], "csv", out / "playbook.csv")
        with (out / "playbook.csv").open(encoding="utf-8") as handle:
            read = list(csv.DictReader(handle))
        assert [r[first] for r in read] == ["a"] * len(rows)
        export.write(export.findings_sheets(analysis), "json", out / "findings.json")
        best = json.loads((out / "findings.json").read_text("utf-8"))["best"]
        assert [b[first] for b in best] == ["a"] * len(analysis.best)


def test_skeleton_rules_over_names_the_quarantine_table_has(url: str) -> None:
    spec = {
        "name": "names",
        "knobs": {"action": ["a", "b"], "rules": [1, 2]},
        "skeleton": {"rules": ['NOT ("action" = \'b\' AND "rules" = 2)']},
        "reward": {"formula": "completed", "window": "1h"},
        "signals": {"completed": "max"},
    }
    clock = Clock()
    with flywheel.open(spec, store=url, clock=clock) as wheel:
        broken = wheel.log(context={}, params={"action": "b", "rules": 2}, results={"completed": 1})
        kept = wheel.log(context={}, params={"action": "b", "rules": 1}, results={"completed": 0})
        clock.now += 2 * HOUR
        wheel.learn()
        held = wheel.quarantined().to_pylist()
    assert [r["decision_id"] for r in held] == [broken] and kept != broken
    assert held[0]["rules"] == 2 and held[0]["action"] == "b"
    assert held[0]["failed"] == 'skeleton rule: NOT ("action" = \'b\' AND "rules" = 2)'
