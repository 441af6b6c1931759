"""Docs that cannot go stale: every spec setting and command is documented, the README runs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from typer.main import get_command

from flywheel import spec as spec_module
from flywheel.cli import app

ROOT = Path(__file__).parents[1]
SPEC_DOC = (ROOT / "docs/spec.md").read_text()
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block is not None
    assert [line.split()[:2] for line in block.group(1).strip().splitlines()] == [
        ["make", "demo"],
        ["make", "test"],
    ]


@pytest.mark.parametrize("section", [*spec_module._SECTIONS, "knobs", "context", "signals"])
def test_every_spec_section_is_documented(section: str) -> None:
    assert f"[{section}]" in SPEC_DOC


@pytest.mark.parametrize(
    ("section", "field"),
    [(s, f) for s, model in spec_module._SECTIONS.items() for f in model.model_fields]
    + [("signals", f) for f in spec_module._Signal.model_fields],
)
def test_every_spec_setting_is_documented(section: str, field: str) -> None:
    part = SPEC_DOC.split(f"[{section}]", 1)[1].split("\n## ", 1)[0]
    assert f"`{field}`" in part, f"{section}.{field} is not documented in docs/spec.md"


def test_every_builtin_signal_is_documented() -> None:
    for name in spec_module.BUILTIN_SIGNALS:
        assert f"`{name}`" in SPEC_DOC


def test_every_command_is_in_the_readme() -> None:
    commands = get_command(app).commands  # type: ignore[attr-defined]
    for name in commands:
        assert f"`flywheel {name}" in README, f"flywheel {name} is missing from the README"


def test_readme_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    block = re.search(r"## Five lines\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    namespace: dict[str, object] = {}
    exec(compile(textwrap.dedent(block.group(1)), "README.md", "exec"), namespace)
    rows = namespace["rows"]
    assert rows.num_rows == 1  # type: ignore[attr-defined]
    assert rows.column("reward").to_pylist() == [1.0]  # type: ignore[attr-defined]
