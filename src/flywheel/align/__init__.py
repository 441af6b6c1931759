"""align: decisions joined with their signals into aligned rows (features + result)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pyarrow as pa

from flywheel.align.sql import aligned_rows_sql, summary_sql
from flywheel.errors import WrongTypeError
from flywheel.spec import Spec
from flywheel.store import Store

__all__ = ["Summary", "aligned", "moment", "stamp", "summary"]


def moment(when: float | datetime | None) -> datetime:
    """A moment as an aware datetime: epoch seconds, a datetime (naive means UTC) or now."""
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    if when is None:
        return datetime.now(tz=UTC)
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise WrongTypeError("as_of", f"expected epoch seconds or a datetime, got {when!r}")
    return datetime.fromtimestamp(when, tz=UTC)


def stamp(when: float | datetime | None) -> str:
    """A moment as ``2020-02-29T23:24:00Z`` (what ``--as-of`` takes back)."""
    return moment(when).astimezone(UTC).isoformat().replace("+00:00", "Z")


def aligned(store: Store, spec: Spec, as_of: float | datetime | None = None) -> pa.Table:
    """The aligned rows as of ``as_of`` (default: now), one per decision made by then."""
    return store.query(aligned_rows_sql(spec), {"as_of": moment(as_of)})


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
    row = store.query(summary_sql(spec), {"as_of": moment(as_of)}).to_pylist()[0]
    return Summary(**{k: int(v) for k, v in row.items()})
