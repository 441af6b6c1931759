"""The examples' walkthrough runs end to end, command by command, as written."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner

from flywheel.cli import app

EXAMPLES = Path(__file__).parents[1] / "examples"


def commands() -> list[list[str]]:
    text = (EXAMPLES / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    lines = (line for b in blocks for line in b.splitlines())
    return [shlex.split(line)[1:] for line in lines if line.startswith("flywheel ")]


def test_the_walkthrough_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("stories.xlsx", "stories.toml", "leads.csv", "outcomes.xlsx", "leads.toml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    outputs = {}
    steps = commands()
    assert len(steps) == 11
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"flywheel {' '.join(args)}:\n{result.output}"
        outputs[" ".join(args)] = " ".join(result.output.split())
    assert (
        "read 2,403, imported 2,400, rejected 3"
        in outputs["import stories.xlsx --spec stories.toml"]
    )
    rejected = (tmp_path / "stories.rejected.csv").read_text()
    assert "'cliffhanger' is not one of" in rejected and "'western'" in rejected
    stories = outputs["analyze --spec stories.toml"]
    assert "opening_type × genre interact" in stories
    assert "For genre = thriller, opening_type = suspense with twist_count = 2" in stories
    sheet = load_workbook(tmp_path / "stories-next.xlsx").active
    assert sheet is not None and sheet.max_row == 5  # a header and one row per genre

    joined = outputs["import leads.csv outcomes.xlsx --spec leads.toml"]
    assert "rejected 1" in joined and "1 results rows without features" in joined
    assert "no features row has 'L99999'" in joined
    next_round = (tmp_path / "leads-next.csv").read_text().splitlines()
    assert next_round[0].startswith("industry,employees,channel,offer,expected,low,high")
    assert len(next_round) == 1 + 12
    findings = load_workbook(tmp_path / "leads-findings.xlsx")
    assert findings.sheetnames == ["best", "pairs", "single", "readiness", "sentences"]
    assert (tmp_path / "stories.html").read_text().count("<svg") >= 1
