"""Findings from the posterior: what they find, what they refuse to find, and their formats."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner

import flywheel
from flywheel.analyze import Analysis
from flywheel.analyze.findings import benjamini_hochberg
from flywheel.analyze.render import render
from flywheel.cli import app

SPEC: dict[str, Any] = {
    "knobs": {"a": ["x", "y"], "b": ["p", "q"], "c": ["u", "v", "w"]},
    "context": {"g": ["m", "n"]},
    "skeleton": {"default": {"a": "x", "b": "q", "c": "u"}},
    "reward": {"formula": "ok", "window": "1000d"},
}


def xor(context: dict[str, Any], params: dict[str, Any]) -> float:
    """Flat marginals: a and b each do nothing alone; together they matter a lot."""
    same = (params["a"] == "x") == (params["b"] == "p")
    return 0.5 + (0.15 if same else -0.15)


def filled(
    make_wheel: Callable[..., flywheel.Wheel],
    truth: Callable[[dict[str, Any], dict[str, Any]], float],
    rows: int = 3000,
    seed: int = 0,
    choose: Callable[[random.Random, dict[str, Any]], dict[str, Any]] | None = None,
) -> flywheel.Wheel:
    wheel = make_wheel(SPEC, seed=seed)
    rng = random.Random(seed)
    for _ in range(rows):
        context = {"g": rng.choice(["m", "n"])}
        params = (
            choose(rng, context)
            if choose
            else {"a": rng.choice("xy"), "b": rng.choice("pq"), "c": rng.choice("uvw")}
        )
        wheel.log(
            context=context,
            params=params,
            results={"ok": float(rng.random() < truth(context, params))},
        )
    assert wheel.learn(seed=seed).published
    return wheel


def test_flat_marginals_hide_nothing_from_the_cross_dimensional_view(
    make_wheel: Callable[..., flywheel.Wheel],
) -> None:
    a = filled(make_wheel, xor).analyze()
    found = a.found()
    assert [i.name for i in found] == ["a × b"]
    assert found[0].q_value < 0.001
    cell = next(c for c in found[0].cells if c.levels == ("x", "p"))
    assert 0.1 < cell.effect < 0.2 and cell.low < 0.15 < cell.high  # truth: +0.15
    lifts = {(s.factor, s.level): s for s in a.single}
    assert abs(lifts[("a", "y")].lift) < 0.06 and abs(lifts[("b", "p")].lift) < 0.06
    for best in a.best:  # the true best: a and b agree
        assert (best.params["a"] == "x") == (best.params["b"] == "p")
        assert best.low <= 0.65 <= best.high + 0.03
    assert any("a × b interact" in s for s in a.sentences)
    # the rows carry no propensity, but their knob values were drawn uniformly: no confounding
    assert a.observational == 3000 and a.logging is not None and a.logging.tested
    assert not any("propensity" in w or "confounded" in w for w in a.warnings)


def test_a_null_world_reports_no_interaction(make_wheel: Callable[..., flywheel.Wheel]) -> None:
    a = filled(make_wheel, lambda context, params: 0.4).analyze()
    assert a.found() == []
    assert all(i.q_value > 0.1 for i in a.interactions)


def test_readiness_says_how_far_each_analysis_is(make_wheel: Callable[..., flywheel.Wheel]) -> None:
    a = filled(make_wheel, xor, rows=1500).analyze(effect=0.3)
    ready = {r.factors: r for r in a.readiness}
    assert ready[("a",)].ready and ready[("a", "b")].ready
    strict = filled(make_wheel, xor, rows=1500, seed=1).analyze(effect=0.02)
    pair = next(r for r in strict.readiness if r.factors == ("a", "b"))
    assert not pair.ready and pair.more_rows > 10_000 and pair.mde > 0.02
    wanted = r"Cross-dimensional analysis at effects of 0.02: not yet for .*a × b \(detects"
    assert any(re.search(wanted, s) for s in strict.sentences)


def test_a_confounded_single_dimension_view_is_flagged(
    make_wheel: Callable[..., flywheel.Wheel],
) -> None:
    # c = v is better everywhere, but was mostly tried where everything does badly (g = n)
    def truth(context: dict[str, Any], params: dict[str, Any]) -> float:
        return (0.7 if context["g"] == "m" else 0.2) + (0.1 if params["c"] == "v" else 0.0)

    def choose(rng: random.Random, context: dict[str, Any]) -> dict[str, Any]:
        tried = 0.9 if context["g"] == "n" else 0.1
        c = "v" if rng.random() < tried else rng.choice(["u", "w"])
        return {"a": rng.choice("xy"), "b": rng.choice("pq"), "c": c}

    a = filled(make_wheel, truth, rows=4000, choose=choose).analyze()
    v = next(s for s in a.single if (s.factor, s.level) == ("c", "v"))
    assert v.observed is not None and v.lift > 0.05
    assert any("c = v" in w and "confounded" in w for w in a.warnings)
    # and the rows without propensities say how their choice was not uniform
    (logged,) = [w for w in a.warnings if "carry no propensity" in w]
    assert logged.startswith("4,000 of the 4,000 analysed rows")
    assert "c was chosen differently across g" in logged


def test_benjamini_hochberg_matches_the_definition() -> None:
    q = benjamini_hochberg([0.001, 0.2, 0.03, 0.04])
    assert q.round(4).tolist() == [0.004, 0.2, 0.0533, 0.0533]


def _analysis(make_wheel: Callable[..., flywheel.Wheel]) -> Analysis:
    return filled(make_wheel, xor, rows=1500).analyze()


def test_json_markdown_and_offline_html(make_wheel: Callable[..., flywheel.Wheel]) -> None:
    a = _analysis(make_wheel)
    data = json.loads(render(a, "json"))
    assert data["version"] == 1 and data["findings"]["interactions"][0]["name"]
    assert {"single", "interactions", "best", "readiness"} <= set(data["findings"])
    markdown = render(a, "markdown")
    assert "## Best combination per segment" in markdown and "| a × b |" in markdown
    page = render(a, "html")
    assert page.startswith("<!doctype html>") and page.count("<svg") >= 2
    assert not re.search(r"(src|href)\s*=\s*['\"]?https?:", page)  # nothing to fetch
    assert "<script" not in page


@pytest.mark.duckdb_file
def test_exports_and_cli(
    make_wheel: Callable[..., flywheel.Wheel],
    tmp_path: Path,
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wheel = filled(make_wheel, xor, rows=1500)
    wheel.close()
    spec = tmp_path / "flywheel.toml"
    spec.write_text(
        """
[knobs]
a = ["x", "y"]
b = ["p", "q"]
c = ["u", "v", "w"]
[context]
g = ["m", "n"]
[skeleton]
default = { a = "x", b = "q", c = "u" }
[reward]
formula = "ok"
window = "1000d"
[storage]
url = "duckdb:///"""
        + str(db)
        + '"\n'
    )
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "playbook", "--format", "xlsx", "-o", "next.xlsx"])
    assert result.exit_code == 0, result.output
    sheet = load_workbook(tmp_path / "next.xlsx").active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    assert header[:4] == ["g", "a", "b", "c"] and {"expected", "low", "high", "rows"} <= set(header)
    assert len(rows) == 3 and {r[0] for r in rows[1:]} == {"m", "n"}
    assert sum(r[header.index("rows")] for r in rows[1:]) == 1500

    assert runner.invoke(app, ["export", "playbook", "-f", "csv", "-o", "next.csv"]).exit_code == 0
    assert (tmp_path / "next.csv").read_text().splitlines()[0].startswith("g,a,b,c,")
    result = runner.invoke(app, ["export", "findings", "-f", "xlsx", "-o", "findings.xlsx"])
    assert result.exit_code == 0, result.output
    book = load_workbook(tmp_path / "findings.xlsx")
    assert book.sheetnames == ["best", "pairs", "single", "readiness", "sentences"]
    result = runner.invoke(app, ["export", "findings", "-f", "json", "-o", "findings.json"])
    assert json.loads((tmp_path / "findings.json").read_text())["pairs"][0]["pair"]

    result = runner.invoke(app, ["analyze", "--format", "html", "-o", "report.html"])
    assert result.exit_code == 0 and "interactions found" in result.output
    assert "<svg" in (tmp_path / "report.html").read_text()
    result = runner.invoke(app, ["analyze", "--format", "markdown"])
    assert "a × b interact" in result.output
    assert runner.invoke(app, ["analyze", "--format", "pdf"]).exit_code == 2
    result = runner.invoke(app, ["export", "playbook", "-f", "ods", "-o", "x.ods"])
    assert result.exit_code != 0 and "format" in result.output


def test_false_discoveries_stay_rare_over_seeds(tmp_path: Path) -> None:
    """20 worlds with one real pair (a × b) among six modelled: the false discovery rate (the
    mean over seeds of the share of reported pairs, q <= 0.1, that are not real) stays under
    10%, and the real one is found."""
    shares: list[float] = []
    found = 0
    for seed in range(20):
        store = f"duckdb:///{tmp_path / f'fdr{seed}.duckdb'}"
        with flywheel.open(SPEC, store=store, refresh=0, seed=seed) as wheel:
            rng = random.Random(100 + seed)
            for _ in range(2000):
                context = {"g": rng.choice(["m", "n"])}
                params = {"a": rng.choice("xy"), "b": rng.choice("pq"), "c": rng.choice("uvw")}
                p = 0.45 + (0.1 if (params["a"] == "x") == (params["b"] == "p") else -0.1)
                wheel.log(context=context, params=params, results={"ok": float(rng.random() < p)})
            wheel.learn(seed=seed)
            names = [i.name for i in wheel.analyze().found()]
        shares.append(sum(name != "a × b" for name in names) / max(len(names), 1))
        found += "a × b" in names
    assert found >= 18
    assert sum(shares) / len(shares) <= 0.1
