"""align: decisions joined with their signals into aligned rows (features + result)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pyarrow as pa

from flywheel.align.sql import aligned_rows_sql, summary_sql
from flywheel.spec import Spec
from flywheel.store import Store

__all__ = ["Summary", "aligned", "summary"]


def _as_of(as_of: float | datetime | None) -> datetime:
    if isinstance(as_of, datetime):
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    return datetime.fromtimestamp(time.time() if as_of is None else as_of, tz=UTC)


def aligned(store: Store, spec: Spec, as_of: float | datetime | None = None) -> pa.Table:
    """The aligned rows as of ``as_of`` (default: now), one per decision made by then."""
    return store.query(aligned_rows_sql(spec, store.dialect), {"as_of": _as_of(as_of)})


@dataclass(frozen=True)
class Summary:
    """Counts of the flywheel's data. ``coverage`` is the share of decisions with a result
    computed from their own signals (expired rows that take the ``missing`` reward do not count)."""

    decisions: int
    complete: int
    pending: int
    expired: int
    signals: int
    late_signals: int
    orphans: int
    edits: int

    @property
    def coverage(self) -> float:
        return self.complete / self.decisions if self.decisions else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "coverage": round(self.coverage, 4)}


def summary(store: Store, spec: Spec, as_of: float | datetime | None = None) -> Summary:
    row = store.query(summary_sql(spec, store.dialect), {"as_of": _as_of(as_of)}).to_pylist()[0]
    return Summary(**{k: int(v) for k, v in row.items()})
