"""The forecast example (examples/forecast/) tells its story: run as a script, as a user
would, it learns which forecasting method wins per segment and follows a structural break."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DEMO = Path(__file__).parents[2] / "examples" / "forecast" / "demo_forecast.py"
KEYS = {"metric", "better", "first", "last", "best"}

pytestmark = pytest.mark.skipif(  # `make test` installs it; CI must run these
    importlib.util.find_spec("statsforecast") is None and os.environ.get("CI") != "true",
    reason="the example's own dependency: pip install -r examples/forecast/requirements.txt",
)


def run_demo(out: Path, *args: str) -> str:
    # warnings are errors in the demo too, as in the test suite
    done = subprocess.run(
        [sys.executable, "-W", "error", str(DEMO), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("forecast")
    run_demo(out, "--seed", "7")
    return out


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def test_the_summary_says_the_forecast_learned(story: Path) -> None:
    summary = read(story / "summary.json")
    assert set(summary) == KEYS
    assert summary["better"] == "lower"
    assert summary["last"] <= 0.8 * summary["first"]
    assert summary["last"] <= 1.2 * summary["best"]  # it ends close to the hidden best


def test_after_the_break_the_wheel_serves_the_method_the_break_favours(story: Path) -> None:
    broken = [g for g in read(story / "segments.json") if g["broken"]]
    assert len(broken) == 6  # apparel and electronics, in every store type
    for g in broken:
        before, after = g["before"], g["after"]
        # the break changed the winner there: otherwise there was nothing to adapt to
        assert after["hidden_best"]["method"] != before["hidden_best"]["method"], g["segment"]
        assert after["learned"]["method"] == after["hidden_best"]["method"], g["segment"]


def test_before_the_break_the_wheel_had_found_the_seasonal_winners(story: Path) -> None:
    for g in read(story / "segments.json"):
        before = g["before"]
        if before["hidden_best"]["method"] == "seasonal_naive":
            assert before["learned"]["method"] == "seasonal_naive", g["segment"]


def test_the_chart_is_a_png(story: Path) -> None:
    assert (story / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_seed_tells_the_same_story(story: Path, tmp_path: Path) -> None:
    run_demo(tmp_path, "--seed", "7")
    for name in ("summary.json", "segments.json"):
        assert (tmp_path / name).read_text() == (story / name).read_text(), name
