"""`flywheel export sft|preferences|kto`: JSON Lines with their lineage, byte-identical for
the same --as-of, read back by Hugging Face `datasets` in the columns TRL's trainers take."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app
from tests.conftest import Clock
from tests.improve.assistant import KTO, PREFERENCES, SFT, play

runner = CliRunner()
AS_OF = "2026-01-01T01:00:00Z"
SPEC_TOML = """
name = "assistant"

[knobs]
style = ["plain", "steps"]

[context]
topic = ["billing", "tech"]

[reward]
formula = "(rating - 1) / 4"

[signals]
rating = { combine = "last", min = 1, max = 5 }

[storage]
url = "duckdb:///store/flywheel.duckdb"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Path:
    """A spec and a store holding the simulated assistant's log, the working folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flywheel.toml").write_text(SPEC_TOML)
    with flywheel.open("flywheel.toml", clock=clock, background=False) as wheel:
        play(wheel, clock)
    return tmp_path


def export(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["export", *args])
    return result.exit_code, " ".join(result.output.split())


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_export_writes_each_set_with_its_lineage(project: Path) -> None:
    sizes = {"sft": len(SFT), "preferences": len(PREFERENCES), "kto": len(KTO)}
    for kind, size in sizes.items():
        code, said = export(kind, "-f", "jsonl", "-o", f"sets/{kind}.jsonl", "--as-of", AS_OF)
        assert code == 0, said
        assert (
            said
            == f"wrote {size} rows to sets/{kind}.jsonl (lineage: sets/{kind}.jsonl.lineage.json)"
        )
        data = (project / "sets" / f"{kind}.jsonl").read_bytes()
        assert data.endswith(b"\n") and len(data.splitlines()) == size
        lineage = json.loads((project / "sets" / f"{kind}.jsonl.lineage.json").read_text())
        assert lineage["kind"] == kind and lineage["format"] == "jsonl"
        assert (lineage["rows_read"], lineage["rows_eligible"]) == (12, size)
        assert lineage["as_of"] == AS_OF and lineage["file"] == f"{kind}.jsonl"
        assert lineage["sha256"] == hashlib.sha256(data).hexdigest()
        assert len(lineage["spec_digest"]) == 16 and lineage["spec_name"] == "assistant"
        assert lineage["filters"]["quarantined"] == "left out" and lineage["created_at"]
    assert lines(project / "sets/sft.jsonl")[1] == {
        "messages": [
            {"role": "user", "content": "Cancel my plan"},
            {"role": "assistant", "content": "Go to Billing > Plan > Cancel."},
        ]
    }
    pairs = lines(project / "sets/preferences.jsonl")
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == PREFERENCES
    lineage = json.loads((project / "sets/preferences.jsonl.lineage.json").read_text())
    assert lineage["sources"] == {"edits": 3, "ratings": 2}
    labels = [row["label"] for row in lines(project / "sets/kto.jsonl")]
    assert labels == [label for _, _, label in KTO]


def test_the_same_as_of_gives_byte_identical_files(project: Path, clock: Clock) -> None:
    for kind in ("sft", "preferences", "kto"):
        for name in ("a", "b"):
            code, said = export(kind, "-o", f"{name}/{kind}.jsonl", "--as-of", AS_OF)
            assert code == 0, said
        first, second = (project / "a" / f"{kind}.jsonl", project / "b" / f"{kind}.jsonl")
        assert first.read_bytes() == second.read_bytes() and first.stat().st_size > 0
    # what happened after the moment changes nothing; what happened before it does
    clock.now += 3600
    with flywheel.open("flywheel.toml", clock=clock, background=False) as wheel:
        d = wheel.decide({"topic": "tech"}, input="Later question")
        wheel.output(d, "Later answer")
        wheel.feedback(d, rating=5)
    assert export("sft", "-o", "c/sft.jsonl", "--as-of", AS_OF)[0] == 0
    assert (project / "c/sft.jsonl").read_bytes() == (project / "a/sft.jsonl").read_bytes()
    assert export("sft", "-o", "d/sft.jsonl")[1].startswith(f"wrote {len(SFT) + 1} rows")


def test_export_refuses_what_it_cannot_do(project: Path) -> None:
    code, said = export("sft", "-f", "csv", "-o", "x.csv")
    assert code == 2 and "--format" in said and not (project / "x.csv").exists()
    code, said = export("preferences", "-o", "p.jsonl", "--min-reward", "0.9")
    assert code == 2 and "--min-reward" in said
    code, said = export("kto", "-o", "k.jsonl", "--as-of", "yesterday")
    assert code == 2 and "--as-of" in said
    code, said = export("sft", "-o", "strict.jsonl", "--as-of", AS_OF, "--min-reward", "0.75")
    assert code == 0 and said.startswith(f"wrote {len(SFT) - 1} rows")
    # a knob named output takes the built-in signal's place: no set can be made
    knob = 'style = ["plain", "steps"]'
    other = SPEC_TOML.replace(knob, f'{knob}\noutput = ["a", "b"]').replace("store/", "other/")
    (project / "other.toml").write_text(other)
    code, said = export("sft", "-o", "none.jsonl", "--spec", "other.toml")
    assert code == 2 and "output: is not a text signal" in said, said
    assert not (project / "none.jsonl").exists()


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("sft", ["messages"]),
        ("preferences", ["prompt", "chosen", "rejected"]),
        ("kto", ["prompt", "completion", "label"]),
    ],
)
def test_each_file_loads_with_hugging_face_datasets_in_trls_columns(
    project: Path, monkeypatch: pytest.MonkeyPatch, kind: str, columns: list[str]
) -> None:
    cache = project / "hf"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    import datasets  # type: ignore[import-untyped]

    path = project / f"{kind}.jsonl"
    assert export(kind, "-o", str(path), "--as-of", AS_OF)[0] == 0
    loaded = datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(cache / "datasets")
    )
    assert loaded.column_names == columns
    assert (
        loaded.num_rows == {"sft": len(SFT), "preferences": len(PREFERENCES), "kto": len(KTO)}[kind]
    )
    features = loaded.features
    if kind == "sft":
        message = features["messages"].feature  # a list of {role, content}
        assert {k: v.dtype for k, v in message.items()} == {"role": "string", "content": "string"}
        assert [m["role"] for m in loaded[0]["messages"]] == ["user", "assistant"]
    else:
        assert all(features[c].dtype == "string" for c in columns if c != "label")
    if kind == "kto":
        assert features["label"].dtype == "bool"
        assert loaded["label"][:2] == [True, False]
    if kind == "preferences":
        assert all(r["chosen"] != r["rejected"] for r in loaded)
