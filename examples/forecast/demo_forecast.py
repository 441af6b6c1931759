"""A forecast that learns from its errors: the wheel picks the forecasting method per segment.

The product is a retailer's weekly sales forecast. Every Monday, for every series (one
store's sales of one product category), it asks the wheel which method and settings to
forecast with (``decide``: naive, seasonal naive, a moving average or exponential smoothing,
with their window or season: see ``forecast.toml``), forecasts the week with statsforecast,
and a week later, when the actual sales are in, reports the absolute percentage error
(``signal``). The wheel turns by itself: its spec schedules a learn cycle every four weeks,
and between cycles its serving tables follow the errors as they arrive. Nobody tells it
which method is right: it finds out, per store type × category, from the errors alone.

The retailer is simulated (``retail.py``): trend, seasonality, promotions and, halfway
through, a structural break (apparel and electronics move to everyday low prices) that
changes which method wins there. The simulation knows the hidden best (every allowed
combination is evaluated on every series every week) and compares the wheel with it. It runs
on a simulated clock, far faster than real weeks, so it lets the wheel's turn catch up every
simulated Monday (``wheel.settle()``), as real time would.

    python examples/forecast/demo_forecast.py [--seed 7] [--out .flywheel/forecast] [--weeks 96]

writes ``summary.json``, ``segments.json`` and ``forecast.png`` into ``--out``, with a copy
of the spec and the wheel's store beside it (``flywheel status --spec OUT/forecast.toml``);
``make demo-forecast`` installs statsforecast (``requirements.txt``) first.

On a real sales history, replace the simulated series (``retail.Retailer(...).series`` in
:func:`run`) with your own: read a CSV of weekly sales with one row per series and week
(a series id, its store type, its category, the week, the units sold), group it by series,
sort each by week and make each a ``retail.Series(name, store_type, category, sales)``, with
at least ``retail.HISTORY`` weeks (over a year: seasonal naive looks a year back) before the
first forecast, and every series the same length. The replay then works as here: the
"hidden best" is the best in hindsight, and "before/after the break" are the first and the
second half (``break_week``). In production there is neither a replay nor a simulated
clock: open the wheel on ``forecast.toml`` and its store, and each week, for each series,
``d = wheel.decide(context, unit=series_id)``, forecast with
``retail.forecast(history, d.params)`` and keep ``d.id`` beside the forecast; when the
week's actual arrives, ``wheel.signal(d.id, "ape", retail.ape(actual, forecast))``. The
wheel's background turn runs the learn cycles, with no ``settle`` to call.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import retail

import flywheel
from flywheel.spec import Spec
from flywheel.turn import Cycle as LastCycle

HERE = Path(__file__).resolve().parent
SPEC = HERE / "forecast.toml"
SPEC_STORE = 'url = "duckdb:///.flywheel/forecast.duckdb"'  # the spec's own store ...
STORE = 'url = "duckdb:///forecast.duckdb"'  # ... and the demo's, beside its copy of the spec
HOUR, WEEK = 3600.0, 7 * 86_400.0
START = datetime(2023, 1, 2, tzinfo=UTC).timestamp()  # a Monday: the first week of history
CYCLE_WEEKS = 4  # the spec's `[learn] every = "28d"`: the demo reports per learn cycle
SEATBELT = ("change", "halt", "rollback", "resume")  # the audit entries the demo prints


@dataclass(frozen=True)
class Period:
    """One learn cycle's four weeks: how the forecasts served in them did."""

    number: int
    first_week: int  # forecast weeks, counted from 1
    last_week: int
    playbook: int | None  # the published version the period began with
    reason: str  # what the wheel's cycle at the start of the period did
    error: float  # mean APE of the forecasts served, %
    best: float  # ... of the hidden best
    frozen: float  # ... of the hidden best before the break, kept after it (no learning)
    on_best: float  # share of the forecasts made with their segment's hidden best


@dataclass
class Served:
    """What the product did: the combination per series and week, and what the wheel said."""

    combos: np.ndarray  # [series, week]: an index into World.combos
    starts: list[tuple[int | None, str]] = field(default_factory=list)  # per period
    before: dict[str, int] = field(default_factory=dict)  # per segment: the best at the break
    after: dict[str, int] = field(default_factory=dict)  # ... and at the end
    seatbelt: list[str] = field(default_factory=list)  # its changes, halts, rollbacks, resumes


@dataclass(frozen=True)
class Run:
    periods: list[Period]
    segments: list[dict[str, Any]]
    summary: dict[str, Any]
    seatbelt: list[str]


class World:
    """The series with every combination's error on each of them every week: what the
    product would have got with each choice (the hidden truth the wheel never sees)."""

    def __init__(self, spec: Spec, series: Sequence[retail.Series], break_week: int) -> None:
        self.spec = spec
        self.rows = [int(r) for r in spec.space.allowed({})]  # the rules read knobs only
        self.combos = [spec.space.params(r) for r in self.rows]
        self.series = list(series)
        self.break_week = break_week
        self.apes = retail.errors(self.series, self.combos)  # [combination, series, week]
        self.weeks = self.apes.shape[2]
        self.segments = list(dict.fromkeys(s.segment for s in self.series))
        self.members = {
            g: [i for i, s in enumerate(series) if s.segment == g] for g in self.segments
        }
        self.best = {g: (self._best(g, False), self._best(g, True)) for g in self.segments}

    def period(self, after: bool) -> slice:
        return slice(self.break_week, None) if after else slice(0, self.break_week)

    def error(self, segment: str, combo: int, after: bool) -> float:
        """The mean APE (%) of one combination in a segment, before or after the break."""
        return 100 * float(self.apes[combo, self.members[segment], self.period(after)].mean())

    def _best(self, segment: str, after: bool) -> int:
        """The hidden best: the combination with the lowest mean error over the period."""
        return min(range(len(self.combos)), key=lambda c: self.error(segment, c, after))

    def hidden(self, frozen: bool = False) -> np.ndarray:
        """The hidden best combination per series and week: its segment's in its period, or
        (``frozen``) the one before the break in every week, as a forecast that never learns
        again would keep it."""
        out = np.empty((len(self.series), self.weeks), dtype=np.int64)
        for s, series in enumerate(self.series):
            before, after = self.best[series.segment]
            out[s, : self.break_week] = before
            out[s, self.break_week :] = before if frozen else after
        return out

    def combo_of(self, params: Mapping[str, Any]) -> int:
        row = self.spec.space.row_of({k: params[k] for k in self.spec.knob})
        if row is None:
            raise ValueError(f"{dict(params)} is not an allowed combination")
        return self.rows.index(row)


def describe(params: Mapping[str, Any]) -> str:
    """A combination as a planner would say it: the method and the one setting it reads."""
    method = str(params["method"])
    if method == "seasonal_naive":
        return f"seasonal naive, {params['season']} weeks"
    if method in ("moving_average", "exp_smoothing"):
        return f"{method.replace('_', ' ')}, {params['window']} weeks"
    return method


# --- the product, driving the wheel --------------------------------------------------------------


def simulate(world: World, seed: int) -> Served:
    """Drive the product through the wheel, week after week, on a simulated clock. Every
    Monday: last week's actuals are reported, the wheel's turn catches up, and this week's
    forecasts are made, each a second after the one before, as in a real batch job."""
    served = Served(np.empty((len(world.series), world.weeks), dtype=np.int64))
    clock = [START]
    pending: list[tuple[str, float]] = []  # last week's forecasts, waiting for their actuals
    # the wheel's draws get a stream of their own: seeded like the world, they would follow
    # the world's own random numbers
    with flywheel.open(world.spec, clock=lambda: clock[0], refresh=0, seed=seed + 1) as wheel:
        for week in range(world.weeks + 1):
            monday = START + (retail.HISTORY + week) * WEEK
            for i, (ident, value) in enumerate(pending):  # last week's actual sales are in
                clock[0] = monday + i
                wheel.signal(ident, "ape", value, ts=clock[0])
            clock[0] = monday + HOUR
            wheel.settle()  # what real time would give the wheel's turn: it catches up
            if week == world.break_week:
                served.before = learned(wheel, world)
            if week == world.weeks:
                break
            if week % CYCLE_WEEKS == 0:
                served.starts.append(_cycle(wheel))
            pending = [
                _forecast(wheel, world, served, s, week, clock, monday + 2 * HOUR + s)
                for s in range(len(world.series))
            ]
        served.after = learned(wheel, world)
        served.seatbelt = seatbelt(wheel)
    return served


def _forecast(
    wheel: flywheel.Wheel,
    world: World,
    served: Served,
    s: int,
    week: int,
    clock: list[float],
    now: float,
) -> tuple[str, float]:
    """One series' forecast for the week: the wheel's choice, and the error it will make."""
    clock[0] = now
    d = wheel.decide(world.series[s].context, unit=world.series[s].name)
    combo = world.combo_of(d.params)
    served.combos[s, week] = combo
    return d.id, float(world.apes[combo, s, week])


def _cycle(wheel: flywheel.Wheel) -> tuple[int | None, str]:
    """The version served now, and what the last learn cycle did."""
    last = LastCycle.read(wheel.store)
    version = None if wheel.playbook is None else wheel.playbook.version
    return version, "no cycle yet" if last is None else last.reason


def learned(wheel: flywheel.Wheel, world: World) -> dict[str, int]:
    """The published playbook's best combination per segment (none before the first)."""
    playbook = wheel.playbook
    if playbook is None:
        return {}
    out = {}
    for series in world.series:
        table = playbook.segment(series.context)
        out[series.segment] = world.combo_of(world.spec.space.params(int(table.rows[table.best])))
    return out


def seatbelt(wheel: flywheel.Wheel) -> list[str]:
    """What the seatbelt did, oldest first: each change of the world it found, and every
    halt, rollback or resume, with the forecast week it happened in."""
    out = []
    for event in reversed(wheel.events(limit=1000)):
        if event["action"] in SEATBELT:
            week = round((event["ts"].timestamp() - START) / WEEK) - retail.HISTORY + 1
            out.append(f"week {week}: {event['action']}: {event['reason']}")
    return out


# --- what it found -------------------------------------------------------------------------------


def periods(world: World, served: Served) -> list[Period]:
    """Per learn cycle: the error served, the hidden best's and the frozen best's."""
    series, week = np.arange(len(world.series))[:, None], np.arange(world.weeks)[None, :]
    hidden = world.hidden()
    got = world.apes[served.combos, series, week]
    ideal = world.apes[hidden, series, week]
    frozen = world.apes[world.hidden(frozen=True), series, week]
    out = []
    for number, (version, reason) in enumerate(served.starts, start=1):
        span = slice((number - 1) * CYCLE_WEEKS, min(number * CYCLE_WEEKS, world.weeks))
        out.append(
            Period(
                number,
                span.start + 1,
                span.stop,
                version,
                reason,
                100 * float(got[:, span].mean()),
                100 * float(ideal[:, span].mean()),
                100 * float(frozen[:, span].mean()),
                float((served.combos[:, span] == hidden[:, span]).mean()),
            )
        )
    return out


def segments(world: World, served: Served) -> list[dict[str, Any]]:
    """Per segment: the wheel's winner against the hidden best, before and after the break."""
    out = []
    for segment in world.segments:
        store_type, category = segment.split("/")
        entry: dict[str, Any] = {
            "segment": segment,
            "store_type": store_type,
            "category": category,
            "broken": category in retail.BROKEN,
        }
        for name, after, wheel_best in (
            ("before", False, served.before.get(segment)),
            ("after", True, served.after.get(segment)),
        ):
            best = world.best[segment][after]
            entry[name] = {
                "hidden_best": _combo(world, best),
                "hidden_best_error": round(world.error(segment, best, after), 3),
                "learned": None if wheel_best is None else _combo(world, wheel_best),
                "learned_error": (
                    None
                    if wheel_best is None
                    else round(world.error(segment, wheel_best, after), 3)
                ),
            }
        out.append(entry)
    return out


def _combo(world: World, combo: int) -> dict[str, Any]:
    params = world.combos[combo]
    return {**params, "label": describe(params)}


def summarize(history: Sequence[Period]) -> dict[str, Any]:
    return {
        "metric": "forecast error: mean absolute percentage error of the forecasts served, %",
        "better": "lower",
        "first": round(history[0].error, 3),
        "last": round(history[-1].error, 3),
        "best": round(history[-1].best, 3),
    }


def chart(history: Sequence[Period], break_week: int, path: Path) -> None:
    """A PNG of the error per learn cycle against the hidden best, the break marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=110)
    cycles = [p.number for p in history]
    ax.plot(cycles, [p.error for p in history], marker="o", label="the forecasts served")
    ax.plot(cycles, [p.best for p in history], color="green", linestyle="--", label="hidden best")
    ax.plot(
        cycles,
        [p.frozen for p in history],
        color="gray",
        linestyle=":",
        label="the best before the break, kept",
    )
    ax.axvline(break_week / CYCLE_WEEKS + 0.5, color="red", linewidth=1, label="the break")
    ax.set_xlabel(f"learn cycle ({CYCLE_WEEKS} weeks each)")
    ax.set_ylabel("mean absolute percentage error, %")
    ax.set_ylim(bottom=0)
    ax.set_title("A forecast that learns from its errors")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_spec(out: Path) -> Spec:
    """Copy the spec into ``out`` with its store beside it (a stale one removed first), so
    that ``flywheel status --spec OUT/forecast.toml`` and the other commands read the run."""
    out.mkdir(parents=True, exist_ok=True)
    text = SPEC.read_text(encoding="utf-8")
    if SPEC_STORE not in text:
        raise ValueError(f"{SPEC} no longer has `{SPEC_STORE}` under [storage]")
    (out / SPEC.name).write_text(text.replace(SPEC_STORE, STORE), encoding="utf-8")
    for stale in ("forecast.duckdb", "forecast.duckdb.wal"):
        (out / stale).unlink(missing_ok=True)
    return flywheel.load(out / SPEC.name)


def run(out: Path, seed: int = 7, weeks: int = 96) -> Run:
    """The whole demo into ``out``, on a fresh store there: the same seed, the same story."""
    retailer = retail.Retailer(seed, weeks)
    world = World(write_spec(out), retailer.series, retailer.break_week)
    served = simulate(world, seed)
    history = periods(world, served)
    result = Run(history, segments(world, served), summarize(history), served.seatbelt)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    (out / "segments.json").write_text(json.dumps(result.segments, indent=2) + "\n")
    chart(history, world.break_week, out / "forecast.png")
    return result


# --- the printout --------------------------------------------------------------------------------


def report(result: Run, break_week: int) -> None:
    print("cycle  weeks  playbook   error  hidden best  kept best  on best")
    for p in result.periods:
        version = "-" if p.playbook is None else f"v{p.playbook}"
        mark = "  <- the break" if p.first_week == break_week + 1 else ""
        mark += "  (halted)" if p.reason.startswith("halted") else ""
        print(
            f"{p.number:>5}  {p.first_week:>2}-{p.last_week:<2}  {version:>8}  {p.error:>5.1f}%"
            f"  {p.best:>10.1f}%  {p.frozen:>8.1f}%  {p.on_best:>7.0%}{mark}"
        )
    print("(error: of the forecasts served; kept best: the best before the break, never revised)")
    print(f"\n{'segment':<19} {'best before the break':<25} after: learned | hidden best")
    for g in result.segments:
        before, after = g["before"], g["after"]
        wheel_best = after["learned"]["label"] if after["learned"] else "-"
        print(
            f"{g['segment']:<19} {before['hidden_best']['label']:<25}"
            f" {wheel_best:<24} {after['learned_error'] or 0:>5.1f}%"
            f" | {after['hidden_best']['label']:<24} {after['hidden_best_error']:>5.1f}%"
            + ("  (the break)" if g["broken"] else "")
        )
    print("\nthe seatbelt:" if result.seatbelt else "\nthe seatbelt: nothing to report")
    for line in result.seatbelt:
        print(f"  {line if len(line) <= 150 else line[:147] + '...'}")
    if result.periods[-1].reason.startswith("halted"):
        print(
            "  still halted: the wheel serves the version it rolled back to and learns nothing"
            " until a person who knows the change is real resumes it (flywheel resume)"
        )
    s = result.summary
    print(
        f"\nforecast error (MAPE): {s['first']:.1f}% in the first cycle, {s['last']:.1f}% in"
        f" the last; the hidden best {s['best']:.1f}% (lower is better)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A forecast that learns from its errors.")
    parser.add_argument("--seed", type=int, default=7, help="the same seed tells the same story")
    parser.add_argument("--out", type=Path, default=Path(".flywheel/forecast"), help="folder")
    parser.add_argument("--weeks", type=int, default=96, help="weeks of forecasts (break halfway)")
    args = parser.parse_args(argv)
    if args.weeks < 2 * CYCLE_WEEKS:
        parser.error(f"--weeks: at least {2 * CYCLE_WEEKS}")
    began = time.perf_counter()
    result = run(args.out, args.seed, args.weeks)
    print(
        f"A forecast that learns from its errors: {len(result.segments)} segments"
        f" (store type × category), {args.weeks} weeks, the break at week"
        f" {args.weeks // 2 + 1}, seed {args.seed}\n"
    )
    report(result, args.weeks // 2)
    seconds = time.perf_counter() - began
    print(f"wrote summary.json, segments.json and forecast.png to {args.out} in {seconds:.0f} s")
    print(f"the wheel's own view: flywheel status --spec {args.out / SPEC.name}")


if __name__ == "__main__":
    main()
