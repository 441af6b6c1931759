"""The ``flywheel`` command: a thin shell over the SDK."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import flywheel
from flywheel import align
from flywheel.align.sql import aligned_rows_sql
from flywheel.demo import DemoResult, example_text
from flywheel.errors import FlywheelError, SpecError, StoreLockedError
from flywheel.health import Health
from flywheel.improve import triggers
from flywheel.learn import sql as learn_sql
from flywheel.playbook import warehouse
from flywheel.seatbelt.status import History, Status
from flywheel.spec import duration
from flywheel.store.dialects import DIALECTS

app = typer.Typer(
    help="Flywheel: decide, signal, align, learn, publish. Every command takes --spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
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
    console.print(
        f"wrote {spec}; check it with [bold]{_again('check', '--spec', spec)}[/]", soft_wrap=True
    )


@app.command()
def check(spec: SpecOption = Path("flywheel.toml"), as_json: JsonOption = False) -> None:
    """Validate a spec; exit 2 listing every field error. Warnings (a reward formula naming
    a signal not declared under [signals]) are printed but do not fail the check."""
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
        "warnings": [w.__dict__ for w in parsed.warnings],
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console.print(
        f"[green]✓[/] {spec} is valid: {len(parsed.knobs)} knobs, "
        f"{len(parsed.space)} of {parsed.space.total} combinations allowed, "
        f"reward = {escape(parsed.reward.formula)}",
        highlight=False,
    )
    for warning in parsed.warnings:
        errors.print(f"[yellow]warning[/] {escape(str(warning))}", highlight=False)


@app.command()
def status(
    spec: SpecOption = Path("flywheel.toml"),
    as_json: JsonOption = False,
    check_alerts: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit 1 while an alert is active (halted, or a monitor alerting), listing each"
            " on stderr; exit 0 otherwise.",
        ),
    ] = False,
    as_of: AsOfOption = None,
) -> None:
    """Counts, quality (received = accepted + quarantined), the playbook served, whether the
    seatbelt halted publishing and why, the monitors' alerts and the latest seatbelt events.
    With --check (for a cron job or a health probe): exit 1 while the wheel is halted or a
    monitor alerts, one line per alert on stderr."""
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            state = wheel.status(_moment(as_of))
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(state.as_dict(), indent=2, default=str))
        if check_alerts:
            _exit_on_alerts(state)
        return
    if as_of is not None:
        console.print(f"flywheel status as of {_stamp(state.as_of)}", highlight=False)
    console.print(_counts_table(state.counts.as_dict()))
    if state.quality is not None:
        q = state.quality
        console.print(
            f"quality: received {q.received:,} = accepted {q.accepted:,}"
            f" + quarantined {q.quarantined:,}"
        )
        for rule in q.rules:
            console.print(f"  {escape(rule.line())}", highlight=False)
    for name in state.never_received:
        console.print(
            f"[yellow]reward:[/] the formula names {name!r}, and no such signal was ever"
            " received: rewards that need it stay pending (check the name)",
            highlight=False,
        )
    if state.tiers is not None:
        t = state.tiers
        console.print(
            f"storage: {t['hot_decisions']:,} decisions hot; warm before"
            f" {_stamp(t['warm_before'])}, {t['files']:,} files at {t['url']}",
            highlight=False,
            soft_wrap=True,
        )
    serving = f"playbook {state.playbook}" if state.playbook else "the cold start (no playbook yet)"
    console.print(f"serving: {serving}")
    for line in _cycle_lines(state.cycles or {}):
        console.print(line, highlight=False)
    if state.triggers is not None:
        console.print(escape(triggers.describe(state.triggers)), highlight=False)
    if state.halt is not None:
        console.print(
            f"[bold red]halted[/] since {state.halt.since} by {state.halt.check}:"
            f" {escape(state.halt.reason)}\n  publish again with [bold]flywheel resume[/]",
            highlight=False,
        )
    else:
        console.print("seatbelt: [green]publishing allowed[/]")
    for check in state.monitors:
        mark = "[green]ok[/]" if check.ok else "[yellow]alert[/]"
        console.print(f"  {mark} {check.name}: {escape(check.summary)}", highlight=False)
    if state.history is not None:
        console.print(_history_line(state.history, spec), highlight=False, soft_wrap=True)
    for event in state.events[:5]:
        console.print(
            f"  {str(event['ts'])[:19]} {event['action']} ({event['actor']}):"
            f" {escape(event['reason'])}",
            highlight=False,
        )
    if check_alerts:
        _exit_on_alerts(state)


def _cycle_lines(cycles: dict[str, Any]) -> list[str]:
    """The last learn cycle (what started it, how it ended) and when the next is due."""
    lines = []
    last = cycles.get("last")
    if last:
        outcome = (
            f"published version {last['version']}" if last["published"] else "published nothing"
        )
        lines.append(
            f"last cycle: {last['at'][:19]} ({last['trigger']}): {outcome}:"
            f" {escape(last['reason'])}"
        )
    due = []
    if cycles.get("next"):
        due.append(f"at {cycles['next'][:19]}")
    if cycles.get("rows_to_go") is not None:
        due.append(f"after {cycles['rows_to_go']:,} more rows with a result")
    if due:
        lines.append("next cycle: " + " or ".join(due))
    elif not last or last["trigger"] == "manual":
        lines.append("next cycle: when `flywheel learn` runs (nothing scheduled in \\[learn])")
    return lines


def _exit_on_alerts(state: Status) -> None:
    """``status --check``: one line per active alert on stderr and exit 1, if any is active."""
    active = [f"monitor {m.name}: {m.summary}" for m in state.monitors if not m.ok]
    if state.halt is not None:
        halt = state.halt
        active.insert(0, f"halted since {halt.since} by {halt.check}: {halt.reason}")
    for line in active:
        errors.print(f"[bold red]alert[/] {escape(line)}", highlight=False, soft_wrap=True)
    if active:
        raise typer.Exit(1)


def _history_line(span: History, spec: Path) -> str:
    """What a store of history only is measured on: the monitors above on now, its own clock
    with --as-of (and learn's default)."""
    last = _stamp(span.last)
    again = _again("status", "--as-of", last, *_spec_args(spec))
    return (
        f"[yellow]history:[/] rows from {_stamp(span.first)} to {last}, none decided live: the"
        f" monitors above measure them against now; on their own clock: [bold]{escape(again)}[/]"
        f" (`flywheel learn` learns as of {last} unless given --as-of)"
    )


def _stamp(moment: datetime | str | None) -> str:
    """A moment as ``--as-of`` takes it back: ``2020-02-29T23:24:00Z``."""
    if moment is None:
        return ""
    return align.stamp(datetime.fromisoformat(moment) if isinstance(moment, str) else moment)


def _spec_args(spec: Path) -> tuple[str, ...]:
    """``--spec FILE`` where the spec is not the default one."""
    return () if spec == Path("flywheel.toml") else ("--spec", str(spec))


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
        with flywheel.open(spec, background=False) as wheel:
            deleted = wheel.forget(unit)
    except FlywheelError as err:
        raise _fail(err) from None
    console.print("deleted " + ", ".join(f"{n} {t}" for t, n in deleted.items()))


@app.command()
def archive(
    spec: SpecOption = Path("flywheel.toml"),
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Move decisions older than this (30d, 12h); default: [storage] archive.after.",
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="The warm tier: a folder or an object-store URL; default: the spec's."
        ),
    ] = None,
) -> None:
    """Move older decisions, with their signals, edits and verdicts, from the store to the
    warm tier's Parquet files (one folder per day), a day at a time. A stop at any moment
    loses nothing and counts nothing twice; every command reads both tiers as one."""

    def moved(day: Any, rows: dict[str, int]) -> None:
        errors.print(f"  {day}: {rows.get('decisions', 0):,} decisions", highlight=False)

    try:
        seconds = None if older_than is None else duration(older_than, "--older-than")
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            done = wheel.archive(seconds, to=to, progress=moved)
    except FlywheelError as err:
        raise _fail(err) from None
    rows = ", ".join(f"{n:,} {t}" for t, n in done.rows.items())
    console.print(
        f"archived {done.days} days to {done.url}: {rows}" if done.days else "nothing to archive",
        highlight=False,
        soft_wrap=True,  # a path is not cut across lines
    )


@app.command()
def learn(
    spec: SpecOption = Path("flywheel.toml"),
    as_json: JsonOption = False,
    force: Annotated[bool, typer.Option("--force", help="Publish even without new data.")] = False,
    as_of: AsOfOption = None,
    cells: Annotated[
        Path | None,
        typer.Option(
            "--cells",
            help="Fit and publish from cells computed elsewhere: a Parquet file (or folder) of"
            " what the cells query of `flywheel sql` gives.",
        ),
    ] = None,
    encoding: Annotated[
        Path | None,
        typer.Option(
            "--encoding",
            help="With --cells: the encoding.json `flywheel sql --out` wrote with that query"
            " (default: the bins and levels the store's rows give now).",
        ),
    ] = None,
) -> None:
    """Align, aggregate, fit and publish a new playbook version (or say why not). With
    --as-of, on the rows decided and the results received by then (history imported with its
    own times is learned, and gated, on its own clock). With --cells, from the cells a
    warehouse computed with the query `flywheel sql` renders (the seatbelt's data checks do
    not run: the rows are not in the store)."""
    if cells is None and encoding is not None:
        errors.print("[bold red]error:[/] --encoding: goes with --cells")
        raise typer.Exit(2)
    if cells is not None and (as_of is not None or force):
        given = " and ".join(n for n, v in (("--as-of", as_of), ("--force", force)) if v)
        errors.print(
            f"[bold red]error:[/] --cells: does not combine with {given} (the cells were"
            " computed as of the moment their query was rendered for, and always publish)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            if cells is not None:
                result = wheel.learn_cells(cells, encoding)
            else:
                result = wheel.learn(as_of=_moment(as_of), force=force)
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(asdict(result), indent=2, default=str))
        return
    mark = (
        "[green]published[/] version " + str(result.version)
        if result.published
        else "[yellow]not published[/]"
    )
    console.print(f"{mark}: {escape(result.reason)}", highlight=False)
    for c in result.checks:
        if not c.ok:
            console.print(f"  [red]✗[/] {c.name}: {escape(c.summary)}", highlight=False)
    if result.halted:
        console.print(
            "  publishing is halted; see [bold]flywheel status[/], then [bold]flywheel resume[/]"
        )
    if result.published:
        d = result.diagnostics
        console.print(
            f"  link {d['link']}, {d['parameters']} parameters, {d['iterations']} Newton steps,"
            f" {d['segments']} segments, {d['learn_seconds']:.2f} s"
        )


@app.command()
def sql(
    dialect: Annotated[
        str,
        typer.Option(
            "--dialect",
            "-d",
            help=f"The engine's SQL: {', '.join(DIALECTS)}.",
            show_default=False,
        ),
    ],
    spec: SpecOption = Path("flywheel.toml"),
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The moment the queries read the rows as of (ISO 8601; default: now).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write aligned.sql, cells.sql and encoding.json in this folder instead.",
        ),
    ] = None,
) -> None:
    """Print the alignment query and the learn cycle's cells query in another engine's SQL
    (Spark, Snowflake, BigQuery, Trino, PostgreSQL, DuckDB), for a warehouse holding copies
    of the tables they read; the numeric bins and open categories' levels (the encoding) come
    from the store's rows. Give the cells query's result to `flywheel learn --cells FILE
    --encoding encoding.json`."""
    if dialect not in DIALECTS:
        errors.print(
            f"[bold red]error:[/] --dialect: {dialect!r} is not one of {', '.join(DIALECTS)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            moment = _moment(as_of) or wheel.now()
            encoding = warehouse.encoding_for(wheel.store, wheel.spec, moment)
            queries = warehouse.warehouse_queries(wheel.spec, encoding, dialect, moment)
            coded = warehouse.encoding_json(encoding, wheel.spec, moment)
            what = {
                "aligned": (
                    "the aligned rows (one per decision: context, knobs, signals, reward, status)",
                    aligned_rows_sql(wheel.spec),
                ),
                "cells": (
                    "the cells the learn cycle fits (reward statistics per context and knob"
                    " combination; give its result to `flywheel learn --cells`)",
                    learn_sql.cells_sql(wheel.spec, encoding),
                ),
            }
    except FlywheelError as err:
        raise _fail(err) from None
    files = {}
    for name, (title, duckdb_sql) in what.items():
        head = (
            f"-- {title}, in {dialect}'s SQL; reads"
            f" {', '.join(warehouse.tables_read(duckdb_sql))}; $as_of replaced by"
            f" {align.stamp(moment)}"
        )
        files[f"{name}.sql"] = f"{head}\n{queries[name]}\n"
    encoding_line = json.dumps(coded, default=str)
    if out is None:
        print(f"-- encoding: {encoding_line}\n")
        print("\n".join(f"{text.rstrip()};\n" for text in files.values()), end="")
        return
    files["encoding.json"] = json.dumps(coded, indent=2, default=str) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, "utf-8")
    console.print(
        f"wrote {', '.join(str(out / name) for name in files)} (as of {align.stamp(moment)})",
        highlight=False,
        soft_wrap=True,
    )


@app.command("import")
def import_(
    files: Annotated[
        list[Path],
        typer.Argument(help="One file of complete rows, or a features file then a results file."),
    ],
    spec: SpecOption = Path("flywheel.toml"),
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map", "-m", help="SOURCE=NAME: map a column onto a knob, feature or signal."
        ),
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Join column of two files.")] = None,
    time: Annotated[str | None, typer.Option("--time", help="Column with each row's time.")] = None,
    unit: Annotated[str | None, typer.Option("--unit", help="Column with each row's unit.")] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Results later than this do not join (7d).")
    ] = None,
    rejected: Annotated[
        Path | None, typer.Option("--rejected", help="Write rejected rows (CSV) here.")
    ] = None,
    sheet: Annotated[str | None, typer.Option("--sheet", help="XLSX sheet to read.")] = None,
    propensity: Annotated[
        str | None,
        typer.Option(
            "--propensity", help="Column with the logging policy's propensity of each row."
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="Column with the name of the policy that chose each row."),
    ] = None,
) -> None:
    """Import rows from CSV, XLSX, Parquet or JSONL; lists each column it ignores and why, and
    ends with `read N, imported A, rejected R`. Logs of an outside policy keep what off-policy
    estimates need with --propensity and --policy."""
    columns = {}
    for item in mapping or []:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            errors.print(f"[bold red]error:[/] --map: {item!r} is not SOURCE=NAME")
            raise typer.Exit(2)
        columns[source] = target
    try:
        seconds = None if window is None else duration(window, "--window")
        if rejected is None:
            rejected = files[0].with_name(f"{files[0].stem}.rejected.csv")
        with (
            flywheel.open(spec, refresh=0, background=False) as wheel,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as bar,
        ):
            task = bar.add_task("import", total=None)
            report = wheel.import_rows(
                files,
                columns=columns or None,
                key=key,
                time=time,
                unit=unit,
                window_seconds=seconds,
                rejected_path=rejected,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                sheet=sheet,
                propensity=propensity,
                policy=policy,
            )
            span = wheel.history() if report.imported else None
    except FlywheelError as err:
        raise _fail(err) from None
    for line in report.ignored():
        console.print(f"  [yellow]ignored[/] {escape(line)}", highlight=False)
    if report.imported and not report.signals:
        console.print(
            "  [yellow]no signals imported[/]: no column holds one, so every reward stays pending",
            highlight=False,
        )
    for line in report.details(10):
        console.print(f"  [yellow]rejected[/] {escape(line)}", highlight=False)
    if report.rejected:
        console.print(f"  rejected rows, with their reasons: {rejected}", highlight=False)
    if report.unmatched_features:
        rows = ", ".join(map(str, report.unmatched_feature_rows[:20]))
        more = " …" if report.unmatched_features > 20 else ""
        console.print(
            f"  {files[0].name} rows without results (imported, reward pending): {rows}{more}",
            highlight=False,
        )
    console.print(report.summary(), highlight=False)
    if span is not None:
        last = _stamp(span.last)
        console.print(
            f"history from {_stamp(span.first)} to {last} (none of it decided live):"
            f" `flywheel learn` learns it on its own clock, as of {last}; choose another moment"
            f" with [bold]{escape(_again('learn', '--as-of', 'TIME', *_spec_args(spec)))}[/]",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def analyze(
    spec: SpecOption = Path("flywheel.toml"),
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="json, markdown or html (standalone, offline).")
    ] = "markdown",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of printing.")
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", help="Playbook version (default: the newest).")
    ] = None,
    effect: Annotated[
        float | None,
        typer.Option("--effect", help="Smallest effect worth finding, in reward units."),
    ] = None,
    as_of: AsOfOption = None,
) -> None:
    """What works alone and in combination, the best combination per segment, readiness.
    With --as-of, the findings as they stood then: those of the newest version learned from
    rows up to that moment (history is analysed on its own clock)."""
    from flywheel.analyze.render import FORMATS, render

    if fmt not in FORMATS:
        errors.print(f"[bold red]error:[/] --format: {fmt!r} is not one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            result = wheel.analyze(version, effect=effect, as_of=_moment(as_of))
    except FlywheelError as err:
        raise _fail(err) from None
    if _written(render(result, fmt), output):
        console.print(
            f"wrote {output}: {len(result.found())} interactions found, {result.rows:,} rows"
        )


def _written(text: str, output: Path | None) -> bool:
    """Write ``text`` to ``output`` (its folder made as needed) and say ``True``; without one,
    print it."""
    if output is None:
        print(text, end="")
        return False
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, "utf-8")
    return True


WindowOption = Annotated[
    str, typer.Option("--window", "-w", help="How far back to look: 7d, 28d, 12w, …")
]
AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Measure as of this moment (ISO 8601, e.g. 2026-11-30T12:00Z; default: now).",
    ),
]


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        errors.print(f"[bold red]error:[/] --as-of: {text!r} is not an ISO 8601 time")
        raise typer.Exit(2) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def health(
    spec: SpecOption = Path("flywheel.toml"),
    window: WindowOption = "28d",
    as_of: AsOfOption = None,
    as_json: JsonOption = False,
) -> None:
    """How fast the wheel turns and where it drags: each decision's way from decided to
    served by a playbook that learned from it (cycle time, the bottleneck), each version's
    result and the lift per cycle, force = alignment × closed loop × feedback, drag, feedback
    coverage, weekly trends, and whether pooled data helps new units (network or individual)."""
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            report = wheel.health(window, _moment(as_of))
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
        return
    _print_health(report)


def _print_health(report: Health) -> None:
    from flywheel.health.stages import duration_text

    console.print(
        f"[bold]health[/] over {report.window_seconds / 86400:g} days to {report.as_of[:19]}Z:"
        f" {report.decisions:,} decisions"
    )
    steps = Table(title="the turn: decided → served by a playbook that learned from it")
    for col in ("step", "reached", "passed", "waiting", "stopped", "p50", "p90"):
        steps.add_column(col, justify="left" if col == "step" else "right")
    for t in (*report.stages.transitions, report.stages.cycle):
        steps.add_row(
            f"{t.start} → {t.end}",
            f"{t.reached:,}",
            f"{t.passed:,}",
            f"{t.waiting:,}",
            f"{t.stopped:,}",
            duration_text(t.p50_seconds),
            duration_text(t.p90_seconds),
        )
    console.print(steps)
    console.print(escape(report.stages.bottleneck), highlight=False)
    console.print(escape(report.force.text), highlight=False)
    rate = Table(title="learning rate: each version's result on the decisions it served")
    for col in ("served by", "decisions", "result", "95% interval", "lift", "learned from"):
        rate.add_column(col, justify="left" if col == "served by" else "right")
    for v in report.learning.versions:
        rate.add_row(
            v.served_by + (" ¹" if v.corrected else ""),
            f"{v.decisions:,}",
            "-" if v.result is None else f"{v.result:.4f}",
            "-" if v.low is None or v.high is None else f"{v.low:.4f} – {v.high:.4f}",
            "-" if v.lift is None else f"{v.lift:+.4f}",
            f"{v.learned_rows:,} rows",
        )
    if any(v.corrected for v in report.learning.versions):
        rate.caption = "¹ post-stratified to the window's context mix"
    console.print(rate)
    console.print(escape(report.learning.text), highlight=False)
    for line in report.learning.suggestions:
        console.print(f"  try: {escape(line)}", highlight=False)
    for d in report.drag:
        mark = "[green]ok[/]" if d.status == "ok" else "[yellow]warn[/]"
        console.print(f"{mark} {d.name}: {escape(d.text)}", highlight=False)
    console.print(
        "coverage: " + ", ".join(f"{c.kind} {c.share:.0%}" for c in report.coverage),
        highlight=False,
    )
    console.print(escape(report.learning_type.text), highlight=False)


@app.command()
def themes(
    spec: SpecOption = Path("flywheel.toml"),
    window: WindowOption = "28d",
    as_of: AsOfOption = None,
    as_json: JsonOption = False,
    embeddings: Annotated[
        Path | None,
        typer.Option(
            help="wordllama (the static sentence-embedding model the wordllama package"
            " ships) or a local folder holding one in model2vec's layout (pip install"
            " 'flywheel[embeddings]'; never downloaded): cluster by meaning, not terms."
        ),
    ] = None,
) -> None:
    """Themes of the negative feedback (low ratings, thumbs down, rejections, re-queries,
    abandons, large edits; their comments, else their edits' changes, else their outputs),
    clustered from TF-IDF terms: each theme's label, size, share, trend, the knob value that
    produces it most (per decision served) and examples."""
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            found = wheel.themes(window, _moment(as_of), embeddings=embeddings)
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(found.as_dict(), indent=2, default=str))
        return
    console.print(
        f"[bold]themes[/] of {found.texts:,} negative texts ({found.negative:,} negative of"
        f" {found.served:,} decisions) from {found.start[:19]}Z to {found.as_of[:19]}Z",
        highlight=False,
    )
    if not found.themes:
        console.print(f"no themes: {escape(found.reason or '')}", highlight=False)
        return
    table = Table(caption=escape(found.method))
    for col in ("theme", "size", "share", "trend", "most with"):
        table.add_column(col, justify="left" if col in ("theme", "most with") else "right")
    for t in found.themes:
        tops = []
        for knob in t.by_knob:
            top = t.top(knob)
            if top is not None and top.rate:
                tops.append(f"{knob} = {top.value} ({top.rate:.0%} of served)")
        trend = t.trend
        table.add_row(
            escape(t.label),
            f"{t.size:,}",
            f"{t.share:.0%}",
            f"{trend.direction} ({trend.first} → {trend.second})",
            escape("; ".join(tops) or "-"),
        )
    console.print(table)
    for t in found.themes:
        console.print(f"[bold]{escape(t.label)}[/]")
        for text in t.examples:
            console.print(f"  “{escape(text)}”", highlight=False)


@app.command()
def design(
    spec: SpecOption = Path("flywheel.toml"),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of printing.")
    ] = None,
    window: WindowOption = "28d",
    as_of: AsOfOption = None,
) -> None:
    """The flywheel design document (Markdown) from the spec and the measured data: a data
    audit, the loops in place and missing, the metrics, the moat and a 90-day plan. The same
    data and --as-of give the same document."""
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            text = wheel.design(window, _moment(as_of))
    except FlywheelError as err:
        raise _fail(err) from None
    if _written(text, output):
        console.print(f"wrote {output}")


@app.command()
def evaluate(
    spec: SpecOption = Path("flywheel.toml"),
    playbook: Annotated[
        int | None, typer.Option("--playbook", help="The version to evaluate (as served).")
    ] = None,
    greedy: Annotated[
        bool, typer.Option("--greedy", help="Evaluate its best combination per context.")
    ] = False,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="A table (CSV, Parquet or JSONL) of a policy to evaluate instead: the context"
            " and knob columns and `probability`, one row per context and combination.",
        ),
    ] = None,
    logged_by: Annotated[
        str | None, typer.Option("--logged-by", help="Only the rows this policy logged.")
    ] = None,
    as_of: AsOfOption = None,
    as_json: JsonOption = False,
) -> None:
    """What a playbook version or another policy would have earned on the logged rows (those
    with a propensity): IPS, SNIPS, doubly robust and MIPS (marginalised over the knobs that
    matter), each with a 95% interval, the effective sample size, and a warning where the logs
    barely cover what it favours."""
    from flywheel.analyze.evaluate import policy_table
    from flywheel.collect.importers import read_table

    if (playbook is None) == (policy is None):
        errors.print("[bold red]error:[/] give --playbook N or --policy FILE (one of them)")
        raise typer.Exit(2)
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            target: Any = (
                playbook if policy is None else policy_table(wheel.spec, read_table(policy))
            )
            result = wheel.evaluate(target, greedy=greedy, as_of=_moment(as_of), policy=logged_by)
            knobs = len(wheel.spec.knobs)
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
        return
    table = Table(
        title=f"{result.target} on {result.rows:,} logged rows (logged: {result.logged:.4f})"
    )
    for col in ("estimator", "value", "95% interval", "effective rows"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for e in (*result.estimates, result.marginal):
        table.add_row(
            e.method.upper(),
            f"{e.value:.4f}",
            f"{e.low:.4f} – {e.high:.4f}",
            f"{e.effective_n:,.0f}",
        )
    console.print(table)
    console.print(
        "MIPS weighs by the knobs that matter: "
        + (", ".join(result.marginal_knobs) or "none")
        + ("" if len(result.marginal_knobs) < knobs else " (all: it is IPS)"),
        highlight=False,
    )
    console.print(
        "logged by: " + ", ".join(f"{k} ({v:,})" for k, v in result.policies.items()),
        highlight=False,
    )
    for line in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


export_app = typer.Typer(
    help="Write the playbook or the findings as a spreadsheet (xlsx, csv) or JSON, or a"
    " training set (sft, preferences, kto) as JSON Lines.",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")

FormatOption = Annotated[str, typer.Option("--format", "-f", help="xlsx, csv or json.")]
OutputOption = Annotated[Path, typer.Option("--output", "-o", help="The file to write.")]


@export_app.command("playbook")
def export_playbook(
    output: OutputOption,
    fmt: FormatOption = "xlsx",
    spec: SpecOption = Path("flywheel.toml"),
    version: Annotated[
        int | None, typer.Option("--version", help="Playbook version (default: the newest).")
    ] = None,
) -> None:
    """One row per context segment: context, each knob's exact value, expected result,
    interval and support — the next round's parameters."""
    from flywheel.analyze import export

    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            rows = wheel.playbook_rows(version)
        export.write([("playbook", rows)], fmt, output)
    except FlywheelError as err:
        raise _fail(err) from None
    console.print(f"wrote {output}: {len(rows)} segments")


@export_app.command("findings")
def export_findings(
    output: OutputOption,
    fmt: FormatOption = "xlsx",
    spec: SpecOption = Path("flywheel.toml"),
    version: Annotated[
        int | None, typer.Option("--version", help="Playbook version (default: the newest).")
    ] = None,
) -> None:
    """Best combinations, pairs, single dimensions, readiness and sentences (xlsx: one sheet
    each; csv: one file each)."""
    from flywheel.analyze import export

    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            result = wheel.analyze(version)
        export.write(export.findings_sheets(result), fmt, output)
    except FlywheelError as err:
        raise _fail(err) from None
    console.print(f"wrote {output}")


SetFormatOption = Annotated[
    str, typer.Option("--format", "-f", help="jsonl (one JSON object a line, UTF-8).")
]
MinRewardOption = Annotated[
    float | None,
    typer.Option(
        "--min-reward",
        help="The reward a good output has at least (default: [datasets] min_reward).",
    ),
]


@export_app.command("sft")
def export_sft(
    output: OutputOption,
    fmt: SetFormatOption = "jsonl",
    spec: SpecOption = Path("flywheel.toml"),
    as_of: AsOfOption = None,
    min_reward: MinRewardOption = None,
) -> None:
    """Supervised fine-tuning rows as chat messages (TRL's `messages`): each input answered by
    its edited final text, else its output, where the reward is at least --min-reward. Writes
    FILE.lineage.json beside it; the same --as-of gives the same file."""
    _export_set("sft", output, fmt, spec, as_of, min_reward)


@export_app.command("preferences")
def export_preferences(
    output: OutputOption,
    fmt: SetFormatOption = "jsonl",
    spec: SpecOption = Path("flywheel.toml"),
    as_of: AsOfOption = None,
) -> None:
    """Preference pairs for DPO (`prompt`, `chosen`, `rejected`): each edit that changed the
    draft (final over draft), and per input the highest-rewarded output over the lowest.
    Writes FILE.lineage.json beside it; the same --as-of gives the same file."""
    _export_set("preferences", output, fmt, spec, as_of, None)


@export_app.command("kto")
def export_kto(
    output: OutputOption,
    fmt: SetFormatOption = "jsonl",
    spec: SpecOption = Path("flywheel.toml"),
    as_of: AsOfOption = None,
    min_reward: MinRewardOption = None,
) -> None:
    """KTO rows (`prompt`, `completion`, `label`): each rewarded output, labelled true where
    the reward is at least --min-reward. Writes FILE.lineage.json beside it; the same --as-of
    gives the same file."""
    _export_set("kto", output, fmt, spec, as_of, min_reward)


def _export_set(
    kind: Literal["sft", "preferences", "kto"],
    output: Path,
    fmt: str,
    spec: Path,
    as_of: str | None,
    min_reward: float | None,
) -> None:
    if fmt != "jsonl":
        errors.print(f"[bold red]error:[/] --format: {fmt!r} is not jsonl", highlight=False)
        raise typer.Exit(2)
    moment = _moment(as_of)
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            found = wheel.training_set(kind, as_of=moment, min_reward=min_reward)
        lineage = found.write(output)
    except FlywheelError as err:
        raise _fail(err) from None
    except OSError as err:
        errors.print(f"[bold red]error:[/] --output: cannot write {output}: {err.strerror}")
        raise typer.Exit(1) from None
    rows = len(found.rows)
    console.print(
        f"wrote {rows:,} {'row' if rows == 1 else 'rows'} to {output} (lineage: {lineage})",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def serve(
    spec: SpecOption = Path("flywheel.toml"),
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
    journal: Annotated[
        Path | None,
        typer.Option(
            "--journal",
            help="Folder of the write-ahead journal: a write is answered once synced there and"
            " reaches the store within --journal-delay (default: beside a DuckDB file, as"
            " FILE.journal; none for PostgreSQL: give each server process its own).",
        ),
    ] = None,
    no_journal: Annotated[
        bool, typer.Option("--no-journal", help="Answer writes after the store's commit.")
    ] = False,
    journal_delay: Annotated[
        float,
        typer.Option("--journal-delay", help="Seconds journaled rows may wait for the store."),
    ] = 1.0,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "--trace-workers",
            help="Processes converting OTLP spans and signal batches (default: one per core,"
            " at most 4; 0: in the server's own process).",
        ),
    ] = None,
    keys_reload: Annotated[
        float,
        typer.Option(
            "--keys-reload",
            min=0.0,
            help="Seconds between reads of the API keys from the store: a key created or"
            " revoked by any process (or `flywheel keys open`) counts within this time.",
        ),
    ] = 5.0,
) -> None:
    """Serve the HTTP API (/v1/decide, /v1/signals, /v1/rows, /v1/traces, /v1/playbook,
    /v1/status, /v1/learn, /v1/keys, DELETE /v1/units/UNIT) and the dashboard at / (its
    data: /v1/dashboard/PAGE; its actions: /v1/resume, /v1/rollback, /v1/release) until
    interrupted (then in-flight requests finish and the store is flushed and closed).
    Writes are answered once durable: synced to the journal (replayed into the store after a
    crash), or committed with --no-journal. Once a key has been created on the store, every
    request needs one (keys created or revoked meanwhile, by any process, count within
    --keys-reload seconds; revoking the last key refuses every request until `flywheel keys
    open`); before, loopback only, and only requests addressed to a loopback name.
    The wheel turns by itself meanwhile: decide follows the results online between cycles,
    and the cycles the spec schedules ([learn] every, after) run, one at a time among every
    process on the store."""
    import gc
    import ipaddress
    import os

    import uvicorn

    from flywheel.server import create_app
    from flywheel.server import keys as api_keys

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    try:
        wheel = flywheel.open(
            spec, journal=False if no_journal else journal or True, max_delay=journal_delay
        )
    except FlywheelError as err:
        raise _fail(err) from None
    # off loopback, a key is needed even if `flywheel keys open` is run while this one serves
    keys = api_keys.KeyRing(wheel.store, every=keys_reload, keyless=loopback)
    if not loopback and not api_keys.required(wheel.store):
        wheel.close()
        errors.print(
            f"[bold red]error:[/] --host: {host} is not a loopback address and this store"
            " requires no API key: create one with `flywheel keys create --scope admin` first"
        )
        raise typer.Exit(2)
    try:
        processes = min(4, os.cpu_count() or 1) if workers is None else workers
        app = create_app(wheel, keys, close_on_shutdown=True, workers=max(0, processes), warm=True)
        # what is loaded now lives as long as the server: keep it out of the collector's full
        # passes, which otherwise stall requests for ~70 ms every so often (bench/serve.py)
        gc.collect()
        gc.freeze()
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        wheel.close()


@app.command()
def ui(
    spec: SpecOption = Path("flywheel.toml"),
    port: Annotated[int, typer.Option("--port", help="Port to listen on (loopback only).")] = 8766,
) -> None:
    """The dashboard on the embedded store, read-only, for one person on this machine: open
    http://127.0.0.1:PORT/ in a browser. It shows the overview, the playbook, the findings,
    the seatbelt, velocity and health and the latest data, and refreshes by itself; it runs
    no learn cycle and offers no action (`flywheel serve` serves the same dashboard at / with
    its actions: resume, roll back, release, for an admin key)."""
    import uvicorn

    from flywheel.server import create_app

    try:
        wheel = flywheel.open(spec, journal=False, background=False)
    except FlywheelError as err:
        raise _fail(err) from None
    try:
        app = create_app(wheel, read_only=True, close_on_shutdown=True, warm=True)
        console.print(f"the dashboard: [bold]http://127.0.0.1:{port}/[/] (read-only); Ctrl-C stops")
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    finally:
        wheel.close()


@app.command()
def run(
    spec: SpecOption = Path("flywheel.toml"),
    poll: Annotated[
        float,
        typer.Option("--poll", min=0.05, help="Seconds between looks at the schedule."),
    ] = 5.0,
    stop_after: Annotated[
        int | None,
        typer.Option("--stop-after", min=1, help="Stop after this many cycles (default: never)."),
    ] = None,
) -> None:
    """Turn the wheel without HTTP: run the learn cycles the spec schedules ([learn] every
    and/or after), the negative-loop guard and the monitors between them, and send their
    alerts, until interrupted. Several workers and servers may share a PostgreSQL store: one
    cycle runs at a time, and a cycle another process just ran is not run again."""
    import time

    from flywheel.turn import CHECK_EVERY, due

    try:
        wheel = flywheel.open(spec, refresh=0, background=False)
    except FlywheelError as err:
        raise _fail(err) from None
    if not wheel.spec.learn.scheduled:
        wheel.close()
        errors.print(
            "[bold red]error:[/] learn.every, learn.after: nothing is scheduled; set either"
            ' (every = "15m", after = 1000) in the spec\'s [learn] section'
        )
        raise typer.Exit(2)
    every, after = wheel.spec.learn.every_seconds, wheel.spec.learn.after_rows
    plan = " or ".join(
        ([] if every is None else [f"every {every:g} s"])
        + ([] if after is None else [f"after {after:,} new rows"])
    )
    console.print(f"turning the wheel: a learn cycle {plan}; Ctrl-C stops")
    cycles, checked = 0, time.monotonic()
    try:
        while stop_after is None or cycles < stop_after:
            trigger = due(wheel.store, wheel.spec, wheel.now())
            result = wheel.cycle(trigger) if trigger else None
            if result is not None:
                cycles += 1
                what = f"published version {result.version}" if result.published else "no change"
                console.print(f"{wheel.now():%Y-%m-%d %H:%M:%S} {trigger}: {what}: {result.reason}")
            if time.monotonic() - checked >= CHECK_EVERY:
                checked = time.monotonic()
                wheel.watch()
            if stop_after is None or cycles < stop_after:
                time.sleep(poll)
    except KeyboardInterrupt:
        pass
    except FlywheelError as err:
        raise _fail(err) from None
    finally:
        wheel.close()


keys_app = typer.Typer(
    help="API keys for `flywheel serve`: create, list, revoke; open (serve without keys again).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


def _keys_fail(err: FlywheelError) -> typer.Exit:
    if isinstance(err, StoreLockedError):  # a running server holds the embedded store
        err = StoreLockedError(
            f"{err}. While `flywheel serve` runs on it, manage keys through the server, with"
            " an admin key: GET or POST /v1/keys, DELETE /v1/keys/ID"
        )
    return _fail(err)


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option("--scope", help="ingest, decide or admin.")],
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from flywheel.server import keys as api_keys

    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            key, text = api_keys.create(wheel.store, scope)
    except FlywheelError as err:
        raise _keys_fail(err) from None
    console.print(f"key {key.id} ({key.scope}); shown once, keep it safe:", highlight=False)
    print(text)


@keys_app.command("list")
def keys_list(spec: SpecOption = Path("flywheel.toml")) -> None:
    """Every key's id, scope, creation and revocation (never the key itself)."""
    from flywheel.server import keys as api_keys

    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            found, opened = api_keys.load(wheel.store), api_keys.opened_at(wheel.store)
    except FlywheelError as err:
        raise _keys_fail(err) from None
    for key in found:
        state = f"revoked {key.revoked_at[:19]}" if key.revoked_at else "active"
        console.print(f"{key.id}  {key.scope:<6}  created {key.created_at[:19]}  {state}")
    if opened:
        console.print(f"open: servers answer without a key (`flywheel keys open`, {opened[:19]})")
    elif found and all(key.revoked_at for key in found):
        console.print("every key is revoked: servers refuse every request (`flywheel keys open`)")


@keys_app.command("revoke")
def keys_revoke(
    ident: Annotated[str, typer.Argument(help="The key's id (from `flywheel keys list`).")],
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """Revoke a key: running servers refuse it within seconds."""
    from flywheel.server import keys as api_keys

    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            api_keys.revoke(wheel.store, ident)
    except FlywheelError as err:
        raise _keys_fail(err) from None
    console.print(f"revoked {ident}")


@keys_app.command("open")
def keys_open(
    yes: Annotated[bool, typer.Option("--yes", help="Do it without asking.")] = False,
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """Let servers on this store answer requests without a key again (loopback only).

    Once a key has been created, a store requires keys for good, even when every key is
    revoked or a server restarts, until this command: every key must be revoked first;
    running servers open within --keys-reload seconds; the next key created requires keys
    again."""
    from flywheel.server import keys as api_keys

    if not yes:
        typer.confirm("Let servers on this store answer requests without a key?", abort=True)
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            api_keys.allow_keyless(wheel.store)
    except FlywheelError as err:
        raise _keys_fail(err) from None
    console.print(
        "[bold yellow]open:[/] servers on this store now answer requests WITHOUT a key"
        " (on loopback only); the next `flywheel keys create` requires keys again",
        highlight=False,
    )


@app.command()
def resume(
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why it is safe to go on.")],
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """Lift the seatbelt's halt, with an audit entry; the next learn may publish again."""
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            lifted = wheel.resume(reason)
    except FlywheelError as err:
        raise _fail(err) from None
    if lifted is None:
        console.print("was not halted; recorded the resume anyway")
    else:
        console.print(f"resumed (was halted by {lifted.check} since {lifted.since})")


quarantine_app = typer.Typer(
    help="Rows that failed the spec's [quality] checks: list, show, release.",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(
    spec: SpecOption = Path("flywheel.toml"),
    limit: Annotated[int, typer.Option("--limit", help="At most this many rows.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Quarantined rows, oldest first, with every check each failed."""
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            rows = wheel.quarantined(limit).to_pylist()
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=f"quarantine ({len(rows)} shown)")
    for col in ("decision", "decided", "failed checks"):
        table.add_column(col)
    for row in rows:
        failed = row.get("#failed", row["failed"])  # #failed: the spec names something failed
        table.add_row(row["decision_id"], str(row["ts"])[:19], escape(failed or ""))
    console.print(table)


@quarantine_app.command("show")
def quarantine_show(
    decision: Annotated[str, typer.Argument(help="A decision id from `quarantine list`.")],
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """One quarantined row: its values, the checks it failed and its history."""
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            rows = wheel.quarantined(None, decision=decision).to_pylist()
            history = wheel.quarantine_history(decision)
    except FlywheelError as err:
        raise _fail(err) from None
    print(json.dumps({"row": rows[0] if rows else None, "history": history}, indent=2, default=str))


@quarantine_app.command("release")
def quarantine_release(
    decisions: Annotated[
        list[str] | None, typer.Argument(help="Decision ids (default: every quarantined row).")
    ] = None,
    accept: Annotated[
        bool, typer.Option("--accept", help="Release without re-checking (an audited override).")
    ] = False,
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """Re-check quarantined rows against the current rules and data; release those that pass."""
    try:
        with flywheel.open(spec, refresh=0, background=False) as wheel:
            released, kept = wheel.release(decisions or None, accept=accept)
    except FlywheelError as err:
        raise _fail(err) from None
    console.print(f"released {released:,}; still quarantined {kept:,}")


playbook_app = typer.Typer(
    help="List, show and roll back published playbooks.", no_args_is_help=True
)
app.add_typer(playbook_app, name="playbook")


def _open_playbooks(spec: Path) -> flywheel.Wheel:
    return flywheel.open(spec, refresh=0, background=False)


@playbook_app.command("list")
def playbook_list(spec: SpecOption = Path("flywheel.toml"), as_json: JsonOption = False) -> None:
    """Every published version, newest first, with its training data and fit."""
    try:
        with _open_playbooks(spec) as wheel:
            rows = wheel.playbooks()
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="playbooks")
    for col in ("version", "created", "rows", "mean reward", "restored from", "spec"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            str(row["version"]),
            str(row["created_at"])[:19],
            f"{row['rows']:,}",
            f"{row['mean_reward']:.4f}",
            str(row.get("restored_from") or ""),
            "current spec" if row["matches_spec"] else "other spec",
        )
    console.print(table)


@playbook_app.command("show")
def playbook_show(
    version: Annotated[int | None, typer.Argument(help="Version (default: the newest).")] = None,
    spec: SpecOption = Path("flywheel.toml"),
    as_json: JsonOption = False,
) -> None:
    """Per context segment: the best combination as exact parameters, expected result, interval."""
    try:
        with _open_playbooks(spec) as wheel:
            book = wheel.load_playbook(version)
            if book is None:
                raise flywheel.InvalidInputError(
                    "version",
                    "no playbook has been published"
                    if version is None
                    else f"there is no playbook version {version}",
                )
            best = book.best()
            meta = {
                k: book.meta.get(k)
                for k in ("created_at", "training", "diagnostics", "restored_from")
            }
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(
            json.dumps({"version": book.version, **meta, "segments": best}, indent=2, default=str)
        )
        return
    training = book.meta["training"]
    console.print(
        f"[bold]playbook {book.version}[/] — {training['rows']:,} rows"
        f" up to {_stamp(training['last_decision'])}, learned as of {_stamp(training['as_of'])}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table()
    for col in ("segment", "best combination", "expected (95% interval)", "served"):
        table.add_column(col)
    for seg in best:
        table.add_row(
            ", ".join(f"{k} = {v}" for k, v in seg["context"].items()) or "everyone",
            "\n".join(f"{k} = {v}" for k, v in seg["params"].items()),
            f"{seg['expected']:.3f} ({seg['low']:.3f}–{seg['high']:.3f})",
            f"{seg['probability_served']:.0%}",
        )
    console.print(table)


@playbook_app.command("rollback")
def playbook_rollback(
    version: Annotated[int, typer.Argument(help="The version to restore.")],
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """Restore an earlier version: it is published again as the newest, and served."""
    try:
        with _open_playbooks(spec) as wheel:
            book = wheel.rollback(version)
    except FlywheelError as err:
        raise _fail(err) from None
    console.print(f"restored version {version} as version {book.version}")


values_app = typer.Typer(
    help="Values of the open knobs, added and retired at run time: list, add, retire.",
    no_args_is_help=True,
)
app.add_typer(values_app, name="values")


@values_app.command("list")
def values_list(
    knob: Annotated[str | None, typer.Argument(help="One open knob (default: all).")] = None,
    spec: SpecOption = Path("flywheel.toml"),
    as_json: JsonOption = False,
) -> None:
    """The values of the open knobs: the spec's own and those added, with their state."""
    try:
        with _open_playbooks(spec) as wheel:
            found = [v.shown() for v in wheel.values(knob)]
    except FlywheelError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return
    table = Table(title="knob values")
    for col in ("knob", "value", "origin", "state", "added", "retired", "text / reason"):
        table.add_column(col)
    for v in found:
        text = v["text"] or ""
        table.add_row(
            v["knob"],
            str(v["value"]),
            v["origin"],
            v["state"],
            _stamp(v["added_at"]) if v["added_at"] else "",
            f"{_stamp(v['retired_at'])} by {v['retired_by']}" if v["retired_at"] else "",
            (text[:60] + ("…" if len(text) > 60 else ""))
            + (f"\n{v['reason']}" if v["reason"] else ""),
        )
    console.print(table)


def _knob_value(wheel: flywheel.Wheel, knob: str, value: str) -> str | int:
    """A value given on the command line, as the knob's type (an integer knob's as one)."""
    found = wheel.spec.knob.get(knob)
    integer = found is not None and found.dtype == "integer"
    return int(value) if integer and value.lstrip("-").isdigit() else value


@values_app.command("add")
def values_add(
    knob: Annotated[str, typer.Argument(help="An open knob.")],
    value: Annotated[str, typer.Argument(help="The new value (its name).")],
    text: Annotated[
        Path | None, typer.Option("--text", help="A file holding the text the value stands for.")
    ] = None,
    start_share: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Its least share of traffic while on trial.")
    ] = 0.05,
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """Add a value to an open knob and serve it at once (a learn cycle runs for it)."""
    try:
        body = None if text is None else text.read_text(encoding="utf-8")
    except OSError as err:
        raise _fail(flywheel.InvalidInputError("text", f"cannot read {text}: {err}")) from None
    try:
        with _open_playbooks(spec) as wheel:
            typed = _knob_value(wheel, knob, value)
            change = wheel.add_value(knob, typed, text=body, start_share=start_share)
    except FlywheelError as err:
        raise _fail(err) from None
    served = f"served by version {change.published}" if change.published else change.reason
    console.print(f"added {knob} = {value} (catalogue version {change.version}); {served}")


@values_app.command("retire")
def values_retire(
    knob: Annotated[str, typer.Argument(help="An open knob.")],
    value: Annotated[str, typer.Argument(help="The value never to serve again.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why.")] = "",
    spec: SpecOption = Path("flywheel.toml"),
) -> None:
    """Retire a value of an open knob: never served again, its rows still learned from."""
    try:
        with _open_playbooks(spec) as wheel:
            change = wheel.retire_value(knob, _knob_value(wheel, knob, value), reason=reason)
    except FlywheelError as err:
        raise _fail(err) from None
    served = f"served by version {change.published}" if change.published else change.reason
    console.print(f"retired {knob} = {value} (catalogue version {change.version}); {served}")


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
    """Simulate a story product through the SDK and watch the wheel learn what works."""
    from flywheel import demo as story

    console.print(
        f"[bold]Flywheel demo[/]: {decisions:,} readers over 30 simulated days, outcomes arriving"
        " late; the product never calls learn: the wheel runs a cycle every 3 days by itself"
        " ([learn] every) and follows the results online between cycles"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("decide, signal (the wheel turns)", total=decisions)
        result = story.run(spec, decisions, seed, progress=lambda n: bar.advance(task, n))
        bar.update(task, completed=decisions)
    console.print(_counts_table(result.summary.as_dict()))
    sample = Table(title="aligned rows (sample; params = " + " / ".join(result.knobs) + ")")
    for col in result.sample[0]:
        sample.add_column(col)
    for row in result.sample:
        sample.add_row(*("" if v is None else escape(str(v)) for v in row.values()))
    console.print(sample)
    console.print(_cycles_table(result))
    console.print(_genres_table(result))
    if result.chart:
        console.print(f"chart: {result.chart}")
    console.print("[bold]health of the run[/] (the wheel measuring its own turn):")
    for line in result.health.summary():
        console.print(f"  {escape(line)}", highlight=False)
    look = _again("playbook", "show", "--spec", result.spec)
    health = _again("health", "--spec", result.spec)
    board = _again("ui", "--spec", result.spec)
    console.print(f"look around: [bold]{escape(look)}[/]", soft_wrap=True)
    console.print(f"the wheel's health: [bold]{escape(health)}[/]", soft_wrap=True)
    console.print(f"the dashboard: [bold]{escape(board)}[/]", soft_wrap=True)


def _again(*args: object) -> str:
    """A ``flywheel`` command line to print, as it runs where it is printed: ``flywheel …``
    when the ``flywheel`` on the PATH is this one, else by the path this one was started by
    (``.venv/bin/flywheel …`` after ``make demo``, before the virtualenv is activated)."""
    import shlex
    import shutil

    started = Path(sys.argv[0])
    command = "flywheel"
    if started.name == "flywheel" and started.parent != Path():
        on_path = shutil.which("flywheel")
        if on_path is None or Path(on_path).resolve() != started.resolve():
            command = shlex.quote(str(started))
    return " ".join([command, *(shlex.quote(str(a)) for a in args)])


def _bar(value: float, width: int = 24) -> str:
    filled = round(max(0.0, min(1.0, value)) * width)
    return "█" * filled + "░" * (width - filled)


def _cycles_table(result: DemoResult) -> Table:
    table = Table(
        title=f"completion per learn cycle (uniform {result.uniform:.3f},"
        f" hidden best {result.oracle:.3f})"
    )
    for col in ("cycle", "playbook", "completion", "", "exploring", "online"):
        table.add_column(col, justify="right" if col != "" else "left")
    for c in result.cycles:
        table.add_row(
            str(c.number),
            "cold start" if c.playbook is None else f"v{c.playbook}",
            f"{c.expected:.3f}",
            _bar(c.expected),
            f"{c.exploring:.0%}",
            f"{c.online:.0%}",
        )
    table.caption = (
        "playbook: the version the wheel's own cycles published; online: decisions served by"
        " its updates between cycles"
    )
    return table


def _genres_table(result: DemoResult) -> Table:
    table = Table(title="learned best vs the hidden best (" + " / ".join(result.knobs) + ")")
    for col in ("genre", "learned", "completion", "true best", "completion "):
        table.add_column(col)
    for row in result.genres:
        learned = " / ".join(str(v) for v in row["learned"].values()) if row["learned"] else "-"
        same = row["learned"] == row["true"]
        table.add_row(
            row["genre"],
            f"[green]{learned}[/]" if same else learned,
            f"{row['learned_completion']:.3f}" if row["learned_completion"] is not None else "-",
            " / ".join(str(v) for v in row["true"].values()),
            f"{row['true_completion']:.3f}",
        )
    return table


def main() -> None:
    try:
        app()
    except FlywheelError as err:  # pragma: no cover - commands handle their own
        errors.print(f"error: {err}")
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
