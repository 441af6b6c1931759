"""What ``wheel.status()`` and ``flywheel status`` report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flywheel.align import Summary
from flywheel.seatbelt.breaker import Halt
from flywheel.seatbelt.monitors import Check
from flywheel.seatbelt.quality import QualityReport
from flywheel.store import Store


@dataclass(frozen=True)
class Status:
    """Counts, quality, the playbook served, the halted state, monitors and recent events;
    ``never_received`` names the signals the reward formula uses that no decision has
    received yet (a misspelt name there leaves every reward pending)."""

    counts: Summary
    quality: QualityReport | None
    playbook: int | None
    halt: Halt | None
    monitors: tuple[Check, ...]
    events: tuple[dict[str, Any], ...]
    never_received: tuple[str, ...] = ()
    cycles: dict[str, Any] | None = None  # the last learn cycle and the next (flywheel.turn)

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
