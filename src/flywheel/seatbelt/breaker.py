"""The circuit breaker's state: halted or not, and the audit trail of what the seatbelt did.

A halt is one setting in the store's ``meta`` (so every process sharing the store sees it);
every halt, rollback, resume and override is also appended to the ``audit`` table with its
time, reason and actor.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from flywheel.store import Store

HALT_KEY = "seatbelt.halt"
RESUMED_KEY = "seatbelt.resumed_at"


@dataclass(frozen=True)
class Halt:
    """Why publishing stopped, since when, and which check stopped it."""

    since: str
    check: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def halted(store: Store) -> Halt | None:
    """The current halt, or ``None`` while the wheel may publish."""
    raw = store.get_meta(HALT_KEY)
    return None if not raw else Halt(**json.loads(raw))


def halt(
    store: Store, now: datetime, check: str, reason: str, detail: dict[str, Any] | None = None
) -> Halt:
    """Stop publishing until a person resumes; recorded in the audit trail."""
    state = Halt(now.isoformat(), check, reason)
    store.set_meta(HALT_KEY, json.dumps(state.as_dict()))
    audit(store, now, "halt", f"{check}: {reason}", detail)
    return state


def resume(store: Store, now: datetime, actor: str, reason: str) -> Halt | None:
    """Lift the halt (if any) and record who did it and why; returns the lifted halt.

    The gate's next windows start at this moment: what was judged before it is accepted.
    """
    current = halted(store)
    store.set_meta(HALT_KEY, "")
    store.set_meta(RESUMED_KEY, now.isoformat())
    lifted = current.as_dict() if current else None
    audit(store, now, "resume", reason or "resumed", {"lifted": lifted}, actor=actor)
    return current


def resumed_at(store: Store) -> datetime | None:
    raw = store.get_meta(RESUMED_KEY)
    return datetime.fromisoformat(raw) if raw else None


def audit(
    store: Store,
    now: datetime,
    action: str,
    reason: str,
    detail: dict[str, Any] | None = None,
    actor: str = "seatbelt",
) -> None:
    """Append one entry to the audit trail."""
    table = pa.table(
        {
            "ts": pa.array([now], pa.timestamp("us", tz="UTC")),
            "action": pa.array([action], pa.string()),
            "reason": pa.array([reason], pa.string()),
            "detail": pa.array([None if detail is None else json.dumps(detail, default=str)]),
            "actor": pa.array([actor], pa.string()),
        }
    )
    store.write({"audit": table})


def events(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """The newest audit entries, newest first."""
    rows = store.query(
        f"SELECT ts, action, reason, detail, actor FROM audit ORDER BY seq DESC LIMIT {int(limit)}"
    ).to_pylist()
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
    return rows
