"""What ``wheel.status()`` and ``flywheel status`` report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flywheel.align import Summary
from flywheel.seatbelt.breaker import Halt
from flywheel.seatbelt.monitors import Check
from flywheel.seatbelt.quality import QualityReport


@dataclass(frozen=True)
class Status:
    """Counts, quality, the playbook served, the halted state, monitors and recent events."""

    counts: Summary
    quality: QualityReport | None
    playbook: int | None
    halt: Halt | None
    monitors: tuple[Check, ...]
    events: tuple[dict[str, Any], ...]

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
        }
