"""Live lead scoring and next best follow-up, on a simulated CRM (``make demo-leads``).

Every day new leads arrive in the CRM (``crm.py``). For each one the CRM asks Flywheel how
to follow up (``wheel.decide``: channel, timing, offer) and shows the lead's score, which is
the decision's expected result with its 95% interval. The deal closes 20 to 90 days later,
won or lost, and the CRM reports what it knows then (``wheel.signal``: won, amount, stage,
the rep's probability, the dates). The CRM's data is dirty; the spec's ``[quality]`` rules
quarantine what the learner must not see, and the run ends by saying what was kept and what
went where. Nobody calls ``learn``: the spec asks for a cycle a month (``[learn] every``) and
between cycles decide follows the results as they arrive.

Run it from the repository root::

    python examples/leads_live/demo_leads.py [--seed 11] [--days 360] [--out .flywheel/leads_live]

It writes the store, ``summary.json`` (the close rate in the first and last month and the
hidden best's), ``segments.json`` and ``leads.png`` into ``--out``.

**Your own CRM.** Replace ``CRM.lead`` with your new-lead hook (the context your CRM knows
when a lead arrives) and ``CRM.outcome`` with your close hook (the won flag, amount, stage
and dates from the closed opportunity), keep the lead id as the ``unit``, and adjust
``leads.toml``: the knobs your team may vary, the context your CRM has, the window of your
sales cycle. A history of leads already worked can be loaded first with ``flywheel import``
(a CSV or spreadsheet export: see ``examples/README.md``).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import crm

import flywheel

HERE = Path(__file__).resolve().parent
DAY = 86_400.0
START = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # a fixed clock: the same story every run
MONTH = 30  # days per reporting period: the spec's cycle


@dataclass
class Month:
    """How the leads created in one month were followed up."""

    number: int
    leads: int = 0
    close_rate: float = 0.0  # mean true close probability of the follow-ups served
    value: float = 0.0  # mean true expected reward
    best_share: float = 0.0  # share served the hidden best follow-up
    online: float = 0.0  # share served by online updates between cycles
    playbook: int | None = None  # the version serving at the month's end

    def add(self, close: float, value: float, best: bool, online: bool) -> None:
        self.leads += 1
        self.close_rate += close
        self.value += value
        self.best_share += best
        self.online += online

    def close(self, playbook: int | None) -> None:
        for name in ("close_rate", "value", "best_share", "online"):
            setattr(self, name, round(getattr(self, name) / max(self.leads, 1), 4))
        self.playbook = playbook


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--days", type=int, default=360, help="days of leads (default 360)")
    parser.add_argument("--leads", type=int, default=150, help="new leads per day (default 150)")
    parser.add_argument("--out", type=Path, default=Path(".flywheel/leads_live"))
    args = parser.parse_args(argv)
    return run(args.seed, args.days, args.leads, args.out)


def run(seed: int, days: int, per_day: int, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    store = (out / "leads.duckdb").resolve()  # a relative store URL would resolve beside the spec
    for stale in (store, Path(f"{store}.wal")):
        stale.unlink(missing_ok=True)
    spec = flywheel.load(HERE / "leads.toml")
    world = crm.CRM(seed)
    clock = [START]
    due: list[tuple[float, int, str, dict[str, Any]]] = []  # (day, tiebreak, decision, signals)
    dirt: Counter[str] = Counter()
    months: list[Month] = []
    scores: list[str] = []
    end = START + days * DAY
    with flywheel.open(
        spec, store=f"duckdb:///{store}", clock=lambda: clock[0], refresh=0, seed=seed + 1
    ) as wheel:
        for day in range(days):
            if day % MONTH == 0:
                months.append(Month(len(months) + 1))
            for k in range(per_day):
                clock[0] = START + (day + k / per_day) * DAY
                _deliver(wheel, due, clock[0])
                ident, truth, duplicate = world.lead()
                written = dict(truth)
                if world.capitalised():  # what the CRM writes is not always what it means
                    written["source"] = truth["source"].capitalize()
                    dirt["source in capitals"] += 1
                dirt["duplicate lead id"] += duplicate
                d = wheel.decide(written, unit=ident)
                followup = {knob: d.params[knob] for knob in crm.KNOBS}
                best = crm.best_followup(truth)
                months[-1].add(
                    crm.close_probability(truth, followup),
                    crm.expected_value(truth, followup),
                    followup == best,
                    d.policy == "online",
                )
                outcome = world.outcome(day + k / per_day, truth, followup)
                if outcome.dirt:
                    dirt[outcome.dirt] += 1
                heapq.heappush(due, (START + outcome.day * DAY, len(due), d.id, outcome.signals))
                if day == days - 1 and k < 5:
                    scores.append(_score(ident, written, d))
            wheel.settle()  # the day is over: the wheel's turn catches up with the clock
            if day % MONTH == MONTH - 1 or day == days - 1:
                months[-1].close(wheel.playbook.version if wheel.playbook else None)
        clock[0] = end
        _deliver(wheel, due, end)
        wheel.settle()
        status = wheel.status()
        counts = wheel.summary()
        quarantined = wheel.quarantined(limit=None)
        segments = _segments(wheel)
    summary = _summary(months)
    checks = Counter(
        check
        for failed in quarantined.column("failed").to_pylist()
        for check in str(failed).split("\n")  # every check the row failed, one per line
    )
    quality = {
        **(status.quality.as_dict() if status.quality else {}),
        "quarantined_by_check": dict(checks.most_common()),
        "dirt": dict(dirt.most_common()),
        "rows": counts.as_dict(),
    }
    for name, data in (("summary", summary), ("segments", segments), ("quality", quality)):
        (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    chart = _chart(months, summary["best"], out / "leads.png")
    _print(months, summary, segments, scores, quality, chart)
    return summary


def _deliver(wheel: flywheel.Wheel, due: list[Any], now: float) -> None:
    """Report every close whose day has come (a silent lead reports nothing)."""
    while due and due[0][0] <= now:
        when, _, decision, signals = heapq.heappop(due)
        for name, value in signals.items():
            wheel.signal(decision, name, value, ts=when)


def _score(ident: str, context: dict[str, Any], d: flywheel.Decision) -> str:
    lead = " / ".join(str(context[k]) for k in ("industry", "size", "region", "source"))
    followup = " / ".join(str(d.params[k]) for k in crm.KNOBS)
    score = "no playbook yet" if d.expected is None else f"{d.expected:.3f}"
    if d.low is not None and d.high is not None:
        score += f" ({d.low:.3f}-{d.high:.3f})"
    return f"  {ident}  {lead:<40} -> {followup:<28} score {score}"


def _segments(wheel: flywheel.Wheel) -> list[dict[str, Any]]:
    """Per industry and size: the follow-up the last playbook serves most often as best
    (over regions and sources, weighted by how often they occur) against the hidden best,
    and the close rate each gets."""
    playbook = wheel.playbook
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for segment in crm.segments():
        groups[segment["industry"], segment["size"]].append(segment)
    out = []
    for (industry, size), members in groups.items():
        learned: Counter[str] = Counter()
        hidden: Counter[str] = Counter()
        close = best_close = matched = 0.0
        for lead in members:
            true = crm.best_followup(lead)
            chosen = true
            if playbook is not None:
                table = playbook.segment(lead)
                row = wheel.spec.space.params(int(table.rows[table.best]))
                chosen = {knob: row[knob] for knob in crm.KNOBS}
            learned[_name(chosen)] += 1
            hidden[_name(true)] += 1
            close += crm.close_probability(lead, chosen) / len(members)
            best_close += crm.close_probability(lead, true) / len(members)
            matched += (chosen == true) / len(members)
        out.append(
            {
                "industry": industry,
                "size": size,
                "learned": learned.most_common(1)[0][0],
                "learned_close_rate": round(close, 4),
                "hidden_best": hidden.most_common(1)[0][0],
                "hidden_best_close_rate": round(best_close, 4),
                "segments_matched": round(matched, 3),
            }
        )
    return out


def _name(followup: dict[str, Any]) -> str:
    return " / ".join(str(followup[k]) for k in crm.KNOBS)


def _summary(months: list[Month]) -> dict[str, Any]:
    """The close rate of the first and last month, and of always serving the hidden best to
    the same leads (the best this CRM's leads allow)."""
    return {
        "metric": "close rate (true close probability of the follow-ups served)",
        "better": "higher",
        "first": months[0].close_rate,
        "last": months[-1].close_rate,
        "best": round(_hidden_best_close_rate(), 4),
    }


def _hidden_best_close_rate() -> float:
    """The lead mix's close rate if every lead got its hidden best follow-up."""
    total = 0.0
    for lead in crm.segments():
        share = 1.0
        for feature, value in lead.items():
            share *= crm.MIX[feature][value]
        total += share * crm.close_probability(lead, crm.best_followup(lead))
    return total


def _chart(months: list[Month], best: float, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    number = [m.number for m in months]
    ax.plot(number, [m.close_rate for m in months], marker="o", label="close rate of follow-ups")
    ax.plot(number, [m.best_share for m in months], ":", color="gray", label="share: hidden best")
    ax.axhline(best, color="green", linestyle="--", label=f"hidden best ({best:.3f})")
    ax.set_xlabel("month (a learn cycle at the end of each)")
    ax.set_ylabel("close probability / share")
    ax.set_ylim(0, 1)
    ax.set_title("Lead follow-ups learning: close rate per month")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def _print(
    months: list[Month],
    summary: dict[str, Any],
    segments: list[dict[str, Any]],
    scores: list[str],
    quality: dict[str, Any],
    chart: str,
) -> None:
    print("month  leads  playbook  close rate  value  served best  online")
    for m in months:
        version = "-" if m.playbook is None else f"v{m.playbook}"
        print(
            f"{m.number:>5}  {m.leads:>5}  {version:>8}  {m.close_rate:>10.3f}  {m.value:>5.3f}"
            f"  {m.best_share:>11.0%}  {m.online:>6.0%}"
        )
    print("\nlearned best follow-up per industry and size (channel / timing / offer):")
    for s in segments:
        print(
            f"  {s['industry']:<13} {s['size']:<5}  learned {s['learned']:<28}"
            f" {s['learned_close_rate']:.3f}   hidden best {s['hidden_best']:<28}"
            f" {s['hidden_best_close_rate']:.3f}"
        )
    print("\nlead scores on the last day: the expected reward, won × (1 + amount / 100,000),")
    print("with its 95% interval (before the first playbook there is none):")
    print("\n".join(scores))
    rows = quality["rows"]
    print(
        f"\nleads {rows['decisions']:,}: complete {rows['complete']:,}, pending"
        f" {rows['pending']:,} (still open), expired {rows['expired']:,} (silent 120 days: lost)"
    )
    print(
        f"quality: received {quality['received']:,} = accepted {quality['accepted']:,}"
        f" + quarantined {quality['quarantined']:,}; kept per check:"
    )
    for rule, n in quality["rules"].items():
        print(f"  {rule}: kept {n['kept']:,}/{n['checked']:,} ({n['kept'] / n['checked']:.1%})")
    print("quarantined rows by the check they failed (a row may fail several):")
    for check, n in quality["quarantined_by_check"].items():
        print(f"  {n:>5,}  {check}")
    print("dirt the CRM put in (the rows still pending are checked once their result is in):")
    for kind, n in quality["dirt"].items():
        print(f"  {n:>5,}  {kind}")
    print(
        f"\nclose rate: first month {summary['first']:.3f}, last {summary['last']:.3f},"
        f" hidden best {summary['best']:.3f}"
    )
    print(f"chart: {chart}")


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
