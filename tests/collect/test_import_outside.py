"""Logs of an outside policy through import: each row's propensity and policy name, checked."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app
from flywheel.demo import example_spec

ROW = {
    "genre": "thriller",
    "opening_type": "question",
    "twist_count": 1,
    "emotional_density": "mid",
    "length": "medium",
    "completed": 1,
}


def test_propensity_and_policy_columns_are_checked_and_stored(
    each_store: str, tmp_path: Path
) -> None:
    table = pa.table(
        {
            **{k: [v] * 6 for k, v in ROW.items()},
            "p": [0.25, None, 0.5, 0.0, 1.5, 0.1],
            "who": ["ranker-v3", "ranker-v3", None, "ranker-v3", "ranker-v3", "thompson"],
        }
    )
    with flywheel.open(example_spec(), store=each_store, background=False) as wheel:
        report = wheel.import_rows(
            [table], propensity="p", policy="who", rejected_path=tmp_path / "bad.csv"
        )
        assert (report.read, report.imported, report.rejected) == (6, 3, 3)
        reasons = " ".join(reason for _source, _row, reason in report.rejections)
        assert "p: 0.0 is not a propensity" in reasons and "p: 1.5 is not a propensity" in reasons
        assert "who: 'thompson' is a name Flywheel gives its own decisions" in reasons
        wheel.flush()
        rows = wheel.store.query(
            "SELECT policy, propensity FROM decisions ORDER BY ts, policy, propensity"
        ).to_pylist()
    got = sorted((r["policy"], r["propensity"] or 0.0) for r in rows)
    assert got == [("outside", 0.5), ("ranker-v3", 0.0), ("ranker-v3", 0.25)]
    assert sum(r["propensity"] is None for r in rows) == 1  # an empty cell: not known


def test_the_spec_and_the_cli_name_the_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    spec = tmp_path / "flywheel.toml"
    spec.write_text(spec.read_text() + '\n[import]\npropensity = "p"\n')
    rows = tmp_path / "logs.csv"
    header = ",".join([*ROW, "p", "who"])
    line = ",".join(str(v) for v in ROW.values())
    rows.write_text(f"{header}\n{line},0.2,editors\n{line},0.4,\n")
    result = CliRunner().invoke(app, ["import", str(rows), "--policy", "who"])
    assert result.exit_code == 0, result.output
    assert "imported 2, rejected 0" in result.output
    with flywheel.open(spec, background=False) as wheel:
        found = wheel.store.query("SELECT policy, propensity FROM decisions").to_pylist()
    assert sorted((r["policy"], r["propensity"]) for r in found) == [
        ("editors", 0.2),
        ("outside", 0.4),
    ]


def test_a_named_column_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    table = pa.table({k: [v] for k, v in ROW.items()})
    url = f"duckdb:///{tmp_path / 'missing.duckdb'}"
    with flywheel.open(example_spec(), store=url, background=False) as wheel:
        with pytest.raises(flywheel.InvalidInputError) as err:
            wheel.import_rows([table], propensity="p")
        assert err.value.field == "propensity" and "no propensity column 'p'" in err.value.reason
        with pytest.raises(flywheel.InvalidInputError, match="propensity column too"):
            wheel.import_rows([table], propensity="p", policy="p")
        wheel.flush()
        assert wheel.store.query("SELECT count(*) AS n FROM decisions").to_pylist()[0]["n"] == 0
