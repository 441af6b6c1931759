"""The ``flywheel`` command: a thin shell over the SDK."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import flywheel
from flywheel.demo import example_text
from flywheel.errors import FlywheelError, SpecError

app = typer.Typer(
    help="Flywheel: decide, signal, align, learn, publish. Every command takes --spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

SpecOption = Annotated[
    Path, typer.Option("--spec", "-s", help="Path to the spec.", show_default=True)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(err: FlywheelError) -> typer.Exit:
    if isinstance(err, SpecError):
        errors.print(f"[bold red]invalid spec[/]{f' {err.source}' if err.source else ''}:")
        for e in err.errors:
            errors.print(
                f"  [red]{e.path}[/]: {e.message}{f' (line {e.line})' if e.line else ''}",
                markup=True,
                highlight=False,
            )
    else:
        errors.print(f"[bold red]error:[/] {err}", highlight=False)
    return typer.Exit(err.exit_code)


@app.command()
def init(
    spec: SpecOption = Path("flywheel.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example spec to start from."""
    if spec.exists() and not force:
        errors.print(f"[bold red]error:[/] {spec} exists; use --force to overwrite it")
        raise typer.Exit(1)
    spec.write_text(example_text(), "utf-8")
    console.print(f"wrote {spec}; check it with [bold]flywheel check --spec {spec}[/]")


@app.command()
def check(spec: SpecOption = Path("flywheel.toml"), as_json: JsonOption = False) -> None:
    """Validate a spec; exit 2 listing every field error."""
    try:
        parsed = flywheel.load(spec)
    except FlywheelError as err:
        if as_json and isinstance(err, SpecError):
            print(json.dumps({"ok": False, "errors": [e.__dict__ for e in err.errors]}, indent=2))
            raise typer.Exit(2) from None
        raise _fail(err) from None
    info: dict[str, Any] = {
        "ok": True,
        "name": parsed.name,
        "knobs": {k.name: list(k.values) for k in parsed.knobs},
        "context": {
            f.name: list(f.values) if f.kind == "categorical" else "number" for f in parsed.context
        },
        "combinations": {"total": parsed.space.total, "allowed": len(parsed.space)},
        "reward": parsed.reward.formula,
        "window_seconds": parsed.reward.window_seconds,
        "storage": parsed.storage_url,
        "digest": parsed.digest,
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console.print(
        f"[green]✓[/] {spec} is valid: {len(parsed.knobs)} knobs, "
        f"{len(parsed.space)} of {parsed.space.total} combinations allowed, "
        f"reward = {parsed.reward.formula}"
    )


@app.command()
def status(spec: SpecOption = Path("flywheel.toml"), as_json: JsonOption = False) -> None:
    """Counts: decisions, signals, orphans, pending, expired and alignment coverage."""
    try:
        with flywheel.open(spec) as wheel:
            counts = wheel.summary().as_dict()
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(counts, indent=2))
        return
    console.print(_counts_table(counts))


def _counts_table(counts: dict[str, float]) -> Table:
    table = Table(title="flywheel status", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, value in counts.items():
        table.add_row(name, f"{value:.1%}" if name == "coverage" else f"{int(value):,}")
    return table


@app.command()
def forget(
    unit: Annotated[str, typer.Argument(help="The raw unit id (hashed before it is looked up).")],
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """Delete every row of a unit, everywhere, and rewrite the store file without them."""
    try:
        with flywheel.open(spec) as wheel:
            deleted = wheel.forget(unit)
    except FlywheelError as err:
        raise _fail(err) from None
    console.print("deleted " + ", ".join(f"{n} {t}" for t, n in deleted.items()))


@app.command()
def demo(
    decisions: Annotated[int, typer.Option(min=100, help="Simulated decisions.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 7,
    spec: Annotated[
        Path,
        typer.Option(
            "--spec", "-s", help="Where to write the demo's spec; its store is recreated beside it."
        ),
    ] = Path(".flywheel/demo/flywheel.toml"),
) -> None:
    """Simulate a story product through the SDK and show the aligned rows it produced."""
    from flywheel import demo as story

    console.print(
        f"[bold]Flywheel demo[/]: {decisions:,} readers over 30 simulated days,"
        " outcomes arriving late"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("decide + signal", total=decisions)
        result = story.run(spec, decisions, seed, progress=lambda n: bar.advance(task, n))
        bar.update(task, completed=decisions)
    console.print(_counts_table(result.summary.as_dict()))
    sample = Table(title="aligned rows (sample; params = " + " / ".join(result.knobs) + ")")
    for col in result.sample[0]:
        sample.add_column(col)
    for row in result.sample:
        sample.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(sample)
    genres = Table(title="completion by genre so far vs the hidden best combination")
    for col in (
        "genre",
        "rows",
        "completion",
        "true best (" + " / ".join(result.knobs) + ")",
        "its completion",
    ):
        genres.add_column(col)
    for row in result.by_genre:
        best = " / ".join(str(v) for v in row["best"].values())
        genres.add_row(
            row["genre"],
            f"{row['reward_count']:,}",
            f"{row['reward_mean']:.3f}",
            best,
            f"{row['best_completion']:.3f}",
        )
    console.print(genres)
    console.print(f"look around: [bold]flywheel status --spec {result.spec}[/]")


def main() -> None:
    try:
        app()
    except FlywheelError as err:  # pragma: no cover - commands handle their own
        errors.print(f"error: {err}")
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
