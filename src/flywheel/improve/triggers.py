"""Triggers: what the wheel watches for between cycles, and what it does when it sees it.

The **satisfaction** trigger (``[triggers] satisfaction = {signal = "rating", below = 3.5}``)
compares the mean of a numeric signal over the decisions of the last ``window`` with a
threshold. Each decision counts once, with its value as the aligned rows hold it (its
repeats combined as the spec says, inside the attribution window, as of now); decisions
without the signal, and rows the seatbelt quarantined, are left out. For a 0/1 signal
(``thumbs``, ``accepted``) the mean is the share of ones. While fewer than ``min_count``
decisions of the window carry the signal, nothing is judged and nothing changes.

It fires once per crossing: the state (``above`` or ``below``) is kept in the store's
``meta`` and claimed with :meth:`~flywheel.store.Store.update_meta`, so of all the processes
sharing the store, the one that moves it to ``below`` records the audit entry ``trigger``
("satisfaction: mean rating 2.9 over the last 7d (412 decisions) fell below 3.5"), which the
``[alerts]`` webhook receives; with ``action = "learn"`` that process also runs a learn
cycle. Rising back to the threshold or above re-arms it silently (the state says since when).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from flywheel.align import stamp
from flywheel.align.sql import NOT_QUARANTINED, aligned_rows_sql
from flywheel.rules import quote_name
from flywheel.seatbelt import breaker
from flywheel.spec import Spec
from flywheel.store import Store

SATISFACTION_KEY = "triggers.satisfaction"
"""The ``meta`` key holding the satisfaction trigger's state: ``above`` or ``below``, since
when, and the figures that put it there."""

State = Literal["above", "below"]


@dataclass(frozen=True)
class Reading:
    """The mean of the trigger's signal over the decisions of its window, as of ``as_of``:
    ``count`` decisions carry the signal (``mean`` is ``None`` without any), out of
    ``decisions`` made in the window."""

    signal: str
    mean: float | None
    count: int
    decisions: int
    below: float
    min_count: int
    window: str
    as_of: datetime

    @property
    def judged(self) -> bool:
        """Whether enough decisions carry the signal to judge it (``min_count``)."""
        return self.mean is not None and self.count >= self.min_count

    @property
    def state(self) -> State | None:
        """``below`` or ``above`` the threshold, or ``None`` while too few values are in."""
        if not self.judged or self.mean is None:
            return None
        return "below" if self.mean < self.below else "above"

    def as_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "mean": self.mean,
            "count": self.count,
            "decisions": self.decisions,
            "below": self.below,
            "min_count": self.min_count,
            "window": self.window,
            "as_of": stamp(self.as_of),
        }


def _sql(spec: Spec, signal: str) -> str:
    """One statement: the mean and count of ``signal`` over the aligned rows of the decisions
    made after ``$since`` up to ``$as_of`` that the seatbelt has not quarantined."""
    column = f"a.{quote_name(signal)}"
    return f"""WITH a AS ({aligned_rows_sql(spec, since=True)})
SELECT avg({column}) AS mean, count({column}) AS n, count(*) AS decisions
FROM a WHERE {NOT_QUARANTINED}"""


def measure(store: Store, spec: Spec, now: datetime) -> Reading | None:
    """The satisfaction trigger's reading at ``now`` (``None`` without the trigger)."""
    found = spec.triggers.satisfaction
    if found is None:
        return None
    since = now - timedelta(seconds=found.window_seconds)
    row = store.query(_sql(spec, found.signal), {"since": since, "as_of": now}).to_pylist()[0]
    mean = None if row["mean"] is None else float(row["mean"])
    return Reading(
        found.signal,
        mean,
        int(row["n"] or 0),
        int(row["decisions"] or 0),
        found.below,
        found.min_count,
        found.window,
        now,
    )


def satisfaction(store: Store, spec: Spec, now: datetime) -> dict[str, Any] | None:
    """Check the satisfaction trigger at ``now``: when its mean has fallen below the threshold
    since the last check (of any process sharing the store), record the audit entry
    ``trigger`` and return it as an event (for the webhook, and for the caller to run a cycle
    with ``action = "learn"``); otherwise ``None``. Rising back re-arms it, recording
    nothing; too few values change nothing."""
    found = spec.triggers.satisfaction
    reading = measure(store, spec, now)
    if found is None or reading is None or reading.state is None:
        return None
    target = reading.state
    if _state(store.get_meta(SATISFACTION_KEY)).get("state", "above") == target:
        return None  # the common case: no crossing, no write
    crossed = False

    def claim(old: str | None) -> str:
        nonlocal crossed
        before = _state(old)
        crossed = before.get("state", "above") != target and target == "below"
        if before and before["state"] == target:
            return old or ""  # another process moved it meanwhile: its record stands
        return json.dumps({"state": target, "since": stamp(now), **reading.as_dict()})

    store.update_meta(SATISFACTION_KEY, claim)
    if not crossed:
        return None
    reason = _reason(reading)
    detail = {"trigger": "satisfaction", **reading.as_dict(), "action": found.action}
    breaker.audit(store, now, "trigger", reason, detail, actor="triggers")
    return {"event": "trigger", "ts": now, "reason": reason, "detail": detail, "actor": "triggers"}


def state(store: Store, spec: Spec, now: datetime) -> dict[str, Any] | None:
    """For ``status``: the trigger's settings, its reading at ``now`` and its kept state
    (``above`` until it first fires), with since when (``None`` without the trigger)."""
    found = spec.triggers.satisfaction
    reading = measure(store, spec, now)
    if found is None or reading is None:
        return None
    kept = _state(store.get_meta(SATISFACTION_KEY))
    return {
        "satisfaction": {
            **reading.as_dict(),
            "action": found.action,
            "state": kept.get("state", "above"),
            "since": kept.get("since"),
            "judged": reading.judged,
        }
    }


def describe(triggers: dict[str, Any]) -> str:
    """One line for ``flywheel status``: the satisfaction trigger's state and figures."""
    s = triggers["satisfaction"]
    where = f"{s['state']} {_figure(s['below'], s['below'])}"
    if s.get("since"):
        where += f" since {str(s['since'])[:19]}"
    if s["mean"] is None:
        now = f"no {s['signal']} in the last {s['window']}"
    else:
        now = (
            f"mean {s['signal']} {_figure(s['mean'], s['below'])} over the last {s['window']}"
            f" ({s['count']:,} decisions)"
        )
    if not s["judged"]:
        now += f", fewer than min_count {s['min_count']:,}: not judged"
    return f"trigger satisfaction ({s['action']}): {where}; now {now}"


def _reason(reading: Reading) -> str:
    mean = reading.mean if reading.mean is not None else float("nan")
    return (
        f"satisfaction: mean {reading.signal} {_figure(mean, reading.below)} over the last"
        f" {reading.window} ({reading.count:,} decisions) fell below {reading.below:g}"
    )


def _figure(value: float, threshold: float) -> str:
    """``value`` in three significant digits, or more where fewer would read as the
    threshold itself (a mean of 3.4996 below 3.5 is not shown as 3.5)."""
    for digits in range(3, 10):
        text = f"{value:.{digits}g}"
        if value == threshold or float(text) != threshold:
            return text
    return repr(value)


def _state(raw: str | None) -> dict[str, Any]:
    """The kept state, from the ``meta`` value (none, if unreadable)."""
    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        found = {}
    return found if isinstance(found, dict) and found.get("state") in ("above", "below") else {}
