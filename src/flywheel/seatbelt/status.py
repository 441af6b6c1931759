"""What ``wheel.status()`` and ``flywheel status`` report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flywheel.align import Summary
from flywheel.collect.record import LIVE_POLICIES
from flywheel.rules import quote_literal
from flywheel.seatbelt.breaker import Halt
from flywheel.seatbelt.monitors import Check
from flywheel.seatbelt.quality import QualityReport
from flywheel.spec import Spec
from flywheel.store import Store

_SPAN_SQL = """SELECT
    (SELECT min(ts) FROM decisions) AS first,
    (SELECT max(ts) FROM decisions) AS decided,
    (SELECT max(ts) FROM signals) AS signalled,
    (SELECT max(ts) FROM edits) AS edited"""
_LIVE_SQL = (
    "SELECT 1 AS one FROM decisions WHERE policy IN"
    f" ({', '.join(map(quote_literal, LIVE_POLICIES))}) LIMIT 1"
)


@dataclass(frozen=True)
class History:
    """A store holding history only: rows logged or imported with their own times, none
    decided by the wheel, the newest older than ``seatbelt.stale_after``. ``first`` is its
    oldest decision, ``last`` the newest time it records (a decision, a result or an edit):
    the moment a learn cycle is measured against when no other is given."""

    first: datetime
    last: datetime

    def as_dict(self) -> dict[str, str]:
        return {"first": self.first.isoformat(), "last": self.last.isoformat()}


def history_of(store: Store, spec: Spec, now: datetime) -> History | None:
    """The history the store holds, measured at ``now`` (``None``: the store is live, or
    empty, or its newest row is within ``seatbelt.stale_after`` of ``now``). A store whose
    rows were logged as they happened and then stopped is told from history by nothing but
    the age of its rows: the monitors stay on ``now`` either way (see ``status``)."""
    row = store.query(_SPAN_SQL).to_pylist()[0]
    if row["first"] is None:
        return None
    last = max(t for t in (row["decided"], row["signalled"], row["edited"]) if t is not None)
    if now - last <= timedelta(seconds=spec.seatbelt.stale_after_seconds):
        return None
    if store.query(_LIVE_SQL).num_rows:
        return None
    return History(row["first"], last)


@dataclass(frozen=True)
class Status:
    """Counts, quality, the playbook served, the halted state, monitors and recent events;
    ``never_received`` names the signals the reward formula uses that no decision has
    received yet (a misspelt name there leaves every reward pending). ``as_of`` is the moment
    all of it is measured at; ``history`` the span of the history the store holds, when it
    holds nothing else and no moment was given (what ``--as-of`` would see it on its clock).
    """

    counts: Summary
    quality: QualityReport | None
    playbook: int | None
    halt: Halt | None
    monitors: tuple[Check, ...]
    events: tuple[dict[str, Any], ...]
    never_received: tuple[str, ...] = ()
    cycles: dict[str, Any] | None = None  # the last learn cycle and the next (flywheel.turn)
    as_of: str | None = None
    history: History | None = None
    tiers: dict[str, Any] | None = None  # the warm tier, when rows were archived
    triggers: dict[str, Any] | None = None  # the [triggers]' readings and states, when set

    @property
    def halted(self) -> bool:
        return self.halt is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.counts.as_dict(),
            "playbook": self.playbook,
            "quality": None if self.quality is None else self.quality.as_dict(),
            "halted": self.halted,
            "halt": None if self.halt is None else self.halt.as_dict(),
            "monitors": [m.as_dict() for m in self.monitors],
            "events": [{**e, "ts": str(e["ts"])} for e in self.events],
            "signals_never_received": list(self.never_received),
            "cycles": self.cycles,
            "as_of": self.as_of,
            "history": None if self.history is None else self.history.as_dict(),
            "tiers": self.tiers,
            "triggers": self.triggers,
        }


def never_received(store: Store, names: Iterable[str]) -> tuple[str, ...]:
    """The ``names`` no signal in the store carries (each looked up until its first row)."""
    return tuple(
        name
        for name in names
        if store.query(
            "SELECT 1 AS one FROM signals WHERE name = $name LIMIT 1", {"name": name}
        ).num_rows
        == 0
    )
