"""What a newcomer types after ``make demo`` works as printed: the commands the CLI prints run
in a shell whose PATH does not hold the virtualenv (it is not activated)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import WAIT, reserved_port, wait_for

FLYWHEEL = Path(sys.executable).parent / "flywheel"


def _fresh_shell(cwd: Path) -> dict[str, str]:
    """The environment of a shell that has not activated the virtualenv."""
    bin_dir = str(FLYWHEEL.parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(path)
    return env


def _run(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        line,
        check=False,
        shell=True,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _printed(output: str, label: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(label)]
    assert len(lines) == 1, output
    return lines[0].removeprefix(label).strip()


def test_the_command_the_demo_prints_runs_as_printed(tmp_path: Path) -> None:
    venv = tmp_path / ".venv" / "bin"
    venv.parent.mkdir()
    venv.symlink_to(FLYWHEEL.parent, target_is_directory=True)  # a checkout's .venv/bin
    env = _fresh_shell(tmp_path)
    demo = _run(".venv/bin/flywheel demo --decisions 300", tmp_path, env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    command = _printed(demo.stdout, "look around:")
    assert command.startswith(".venv/bin/flywheel playbook show --spec ")
    shown = _run(command, tmp_path, env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.startswith("playbook ")
    board = _printed(demo.stdout, "the dashboard:")
    assert board.startswith(".venv/bin/flywheel ui --spec ")
    with reserved_port() as port:  # it serves until stopped: started, asked, stopped
        server = subprocess.Popen(
            f"exec {board} --port {port}",
            shell=True,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/v1/dashboard/overview?fresh=true"
            assert wait_for(lambda: _answer(url) is not None or server.poll() is not None)
            page = _answer(url)
            assert page is not None and page["ready"], page
        finally:
            server.terminate()
            server.wait(timeout=WAIT)


def _answer(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as answer:
            return dict(json.loads(answer.read()))
    except OSError:
        return None


def test_the_command_init_prints_runs_as_printed(tmp_path: Path) -> None:
    env = _fresh_shell(tmp_path)
    init = _run(f"{FLYWHEEL} init", tmp_path, env)
    assert init.returncode == 0, init.stdout + init.stderr
    command = _printed(init.stdout, "wrote flywheel.toml; check it with")
    checked = _run(command, tmp_path, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
