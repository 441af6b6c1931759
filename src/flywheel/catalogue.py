"""Knob values added and retired while the wheel turns.

An open knob (``prompt = { values = ["v1"], open = true }``) takes new values at run time: a
revised prompt, a fine-tuned model, a refreshed example memory. The catalogue lists every
value added to the spec's open knobs and every value retired, with its text, when, by whom
and why. It is one JSON document in the store's ``meta`` table (key :data:`KEY`) with a
version that grows with each change, and each change is an audit entry too
(``add_value``, ``retire_value``, and the guard's ``rollback`` and ``promote``).

The spec a wheel serves is its spec with the catalogue applied
(:meth:`flywheel.spec.Spec.with_values`): added values join their knob, and a skeleton rule
keeps retired values from being served (their rows are still learned from). A newcomer gets
a fair chance twice over: the model gives its effects their prior, and until it has
:data:`~flywheel.spec.NEWCOMER_ROWS` results every segment serves it at least its start
share. Then it competes on its results. Each learn cycle reviews the newcomers first
(:func:`review`): one that is the best in under 1% of the posterior's draws in every
segment is retired by the guard (a rollback); one that is the best choice for most segments
is promoted (it stays served; the event is recorded).

A value's text may come from users' data (a prompt revised from their comments): the units
it was derived from are kept with it, and forgetting one of them withdraws its text and
retires it (:func:`forget`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal

from flywheel.errors import InvalidInputError, NotFoundError, SpecError, WrongTypeError
from flywheel.playbook.book import MAX_TABULATED_SEGMENTS, Playbook
from flywheel.seatbelt import breaker
from flywheel.skeleton import Value
from flywheel.spec import NEWCOMER_ROWS, Spec, text_problem
from flywheel.store import Store

KEY = "knobs.values"
"""The ``meta`` key holding the catalogue."""
MAX_TEXT = 100_000
"""The longest text a value may carry (characters)."""
RETIRE_BELOW = 0.01
"""The guard retires a reviewed newcomer that is the best in fewer posterior draws than this,
in every segment."""

State = Literal["active", "retired", "promoted"]


@dataclass(frozen=True)
class KnobValue:
    """A value of an open knob that the catalogue knows: one added at run time (``origin``
    ``"added"``), or one of the spec's own once retired (``"spec"``)."""

    knob: str
    value: Value
    text: str | None = None
    origin: Literal["spec", "added"] = "added"
    state: State = "active"
    added_at: str | None = None
    retired_at: str | None = None
    retired_by: str | None = None
    reason: str = ""
    start_share: float = 0.05
    actor: str | None = None
    units: tuple[str, ...] = ()
    """The units (pseudonyms) whose data the text was derived from."""

    def shown(self) -> dict[str, Any]:
        """What :meth:`flywheel.Wheel.values` shows (the units are not)."""
        out = asdict(self)
        del out["units"]
        return out


@dataclass(frozen=True)
class Catalogue:
    """Every value added to or retired from the open knobs, at ``version``."""

    version: int = 0
    values: tuple[KnobValue, ...] = ()

    def find(self, knob: str, value: Value) -> KnobValue | None:
        return next(
            (v for v in self.values if v.knob == knob and _same(v.value, value)),
            None,
        )

    def added(self) -> dict[str, list[Value]]:
        out: dict[str, list[Value]] = {}
        for v in self.values:
            if v.origin == "added":
                out.setdefault(v.knob, []).append(v.value)
        return out

    def retired(self) -> dict[str, list[Value]]:
        out: dict[str, list[Value]] = {}
        for v in self.values:
            if v.state == "retired":
                out.setdefault(v.knob, []).append(v.value)
        return out

    def newcomers(self) -> dict[str, dict[Value, float]]:
        """The start shares of the added values still on trial (active, not promoted)."""
        out: dict[str, dict[Value, float]] = {}
        for v in self.values:
            if v.origin == "added" and v.state == "active" and v.start_share > 0:
                out.setdefault(v.knob, {})[v.value] = v.start_share
        return out

    def apply(self, spec: Spec) -> Spec:
        """``spec`` serving this catalogue's values (itself when nothing was added or
        retired). Entries for knobs the spec no longer declares open are left out, so a spec
        edited since still opens."""
        own = {k.name: k.values for k in spec.knobs if k.open}
        added = {
            k: [v for v in vs if not any(_same(v, o) for o in own[k])]
            for k, vs in self.added().items()
            if k in own
        }
        known = {k: [*own[k], *added.get(k, [])] for k in own}
        retired = {
            k: [v for v in vs if any(_same(v, o) for o in known[k])]
            for k, vs in self.retired().items()
            if k in own
        }
        newcomers = {k: v for k, v in self.newcomers().items() if k in own}
        return spec.with_values(added, retired, newcomers)

    def changed(self, value: KnobValue) -> Catalogue:
        """The next version, with ``value`` added (last) or in its earlier entry's place."""
        values = list(self.values)
        for i, v in enumerate(values):
            if v.knob == value.knob and _same(v.value, value.value):
                values[i] = value
                return Catalogue(self.version + 1, tuple(values))
        return Catalogue(self.version + 1, (*values, value))

    def to_json(self) -> str:
        return json.dumps(
            {"version": self.version, "values": [asdict(v) for v in self.values]},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> Catalogue:
        if not text:
            return cls()
        data = json.loads(text)
        values = tuple(KnobValue(**{**v, "units": tuple(v["units"])}) for v in data["values"])
        return cls(int(data["version"]), values)


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def read(store: Store) -> Catalogue:
    """The store's catalogue (empty before any change)."""
    return Catalogue.from_json(store.get_meta(KEY))


def version(store: Store) -> int:
    """The catalogue's version, read cheaply (0: never changed)."""
    text = store.get_meta(KEY)
    return 0 if not text else int(json.loads(text)["version"])


def _knob(base: Spec, knob: object) -> str:
    if not isinstance(knob, str):
        raise WrongTypeError("knob", f"expected a knob's name, got {knob!r}")
    found = base.knob.get(knob)
    if found is None:
        known = ", ".join(k.name for k in base.knobs)
        raise NotFoundError("knob", f"{knob!r} is not a knob (known: {known})")
    if not found.open:
        raise InvalidInputError(
            "knob",
            f"{knob!r} is not open: declare it {knob} = {{ values = [...], open = true }}"
            " to add values at run time",
        )
    return knob


def _applied(base: Spec, catalogue: Catalogue, field: str) -> Spec:
    try:
        return catalogue.apply(base)
    except SpecError as err:
        reasons = "; ".join(e.message for e in err.errors)
        raise InvalidInputError(field, f"would leave the skeleton broken: {reasons}") from None


def add(
    base: Spec,
    catalogue: Catalogue,
    knob: object,
    value: object,
    *,
    text: object = None,
    start_share: object = 0.05,
    units: Sequence[str] = (),
    actor: str,
    now: datetime,
) -> tuple[Catalogue, Spec]:
    """The catalogue and the spec served with ``value`` added to the open ``knob`` of
    ``base``; every argument is checked first (nothing is changed on an error)."""
    name = _knob(base, knob)
    dtype = base.knob[name].dtype
    if dtype == "text":
        if not isinstance(value, str):
            raise WrongTypeError("value", f"{name} takes text, got {value!r}")
        problem = text_problem(value)
        if problem:
            raise InvalidInputError("value", f"{value!r} {problem}")
    elif not isinstance(value, int) or isinstance(value, bool):
        raise WrongTypeError("value", f"{name} takes integers, got {value!r}")
    current = catalogue.apply(base).knob[name].values
    if any(_same(v, value) for v in current):
        raise InvalidInputError("value", f"{value!r} is already a value of {name}")
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT):
        raise WrongTypeError("text", f"expected text of at most {MAX_TEXT:,} characters")
    if (
        isinstance(start_share, bool)
        or not isinstance(start_share, int | float)
        or not 0 <= start_share < 1
    ):
        raise InvalidInputError("start_share", f"expected a share in [0, 1), got {start_share!r}")
    entry = KnobValue(
        name,
        value,
        text,
        "added",
        "active",
        added_at=now.isoformat(),
        start_share=float(start_share),
        actor=actor,
        units=tuple(sorted(set(units))),
    )
    changed = catalogue.changed(entry)
    return changed, _applied(base, changed, "value")


def retire(
    base: Spec,
    catalogue: Catalogue,
    knob: object,
    value: object,
    *,
    reason: str,
    actor: str,
    now: datetime,
) -> tuple[Catalogue, Spec]:
    """The catalogue and the spec served with ``value`` of the open ``knob`` retired by
    ``actor``: never served again."""
    name = _knob(base, knob)
    served = catalogue.apply(base)
    found = next((v for v in served.knob[name].values if _same(v, value)), None)
    if found is None:
        raise NotFoundError("value", f"{value!r} is not a value of {name}")
    entry = catalogue.find(name, found)
    if entry is not None and entry.state == "retired":
        raise InvalidInputError("value", f"{value!r} of {name} is already retired")
    declared = (base.raw.get("skeleton") or {}).get("default") or {}
    if name in declared and _same(declared[name], found):
        raise InvalidInputError(
            "value",
            f"{value!r} is the skeleton's default for {name}: declare another default first",
        )
    if entry is None:  # one of the spec's own values
        entry = KnobValue(name, found, origin="spec", start_share=0.0)
    entry = replace(
        entry, state="retired", retired_at=now.isoformat(), retired_by=actor, reason=reason
    )
    changed = catalogue.changed(entry)
    return changed, _applied(base, changed, "value")


def text_of(catalogue: Catalogue, knob: str, value: Value) -> str:
    """The text a value was added with, else the value itself as text."""
    found = catalogue.find(knob, value)
    return found.text if found is not None and found.text is not None else str(value)


@dataclass(frozen=True)
class Verdict:
    """What a review decided about one newcomer."""

    knob: str
    value: Value
    action: Literal["rollback", "promote"]
    reason: str
    detail: dict[str, Any]


def review(catalogue: Catalogue, playbook: Playbook) -> list[Verdict]:
    """The guard's verdicts on the newcomers with at least
    :data:`~flywheel.spec.NEWCOMER_ROWS` results in ``playbook`` (the version served, learned
    from them): roll back one that is the best in fewer than :data:`RETIRE_BELOW` of the
    posterior's draws in every segment it may be served in; promote one that is the best
    choice (posterior mean) in most of them and wins most of their draws."""
    spec = playbook.spec
    trained = {k: {_key(v): float(c) for v, c in rows} for k, rows in _values(playbook).items()}
    verdicts: list[Verdict] = []
    contexts = playbook.segment_contexts(MAX_TABULATED_SEGMENTS)
    for entry in catalogue.values:
        if entry.origin != "added" or entry.state != "active":
            continue
        rows = trained.get(entry.knob, {}).get(_key(entry.value), 0.0)
        if rows < NEWCOMER_ROWS or entry.knob not in spec.space.names:
            continue
        i = spec.space.names.index(entry.knob)
        values = spec.space.dimensions[i].values
        if entry.value not in values:
            continue
        code = values.index(entry.value)
        wins, best, segments = [], 0, 0
        for context in contexts:
            table, shares = playbook.wins(context)
            holds = spec.space.codes[table.rows, i] == code
            if not holds.any():
                continue
            segments += 1
            wins.append(float(shares[holds].sum()))
            best += int(holds[table.best])
        if not segments:
            continue
        mean_win = sum(wins) / segments
        detail = {
            "knob": entry.knob,
            "value": entry.value,
            "results": round(rows, 1),
            "segments": segments,
            "best_in": best,
            "win_share_mean": round(mean_win, 4),
            "win_share_max": round(max(wins), 4),
            "version": playbook.version,
        }
        shown = f"{entry.knob} = {entry.value!r}"
        if max(wins) < RETIRE_BELOW:
            reason = (
                f"{shown} did worse live: after {rows:,.0f} results it is the best in under"
                f" {RETIRE_BELOW:.0%} of the posterior's draws in each of {segments} segments"
                f" (at most {max(wins):.1%})"
            )
            verdicts.append(Verdict(entry.knob, entry.value, "rollback", reason, detail))
        elif best * 2 > segments and mean_win > 0.5:
            reason = (
                f"{shown} won: after {rows:,.0f} results it is the best choice in {best} of"
                f" {segments} segments and wins {mean_win:.0%} of the posterior's draws"
            )
            verdicts.append(Verdict(entry.knob, entry.value, "promote", reason, detail))
    return verdicts


def _values(playbook: Playbook) -> dict[str, list[list[Any]]]:
    found: dict[str, list[list[Any]]] = playbook.meta.get("values") or {}
    return found


def _key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


def judged(
    catalogue: Catalogue, base: Spec, verdicts: Sequence[Verdict], now: datetime
) -> Catalogue:
    """``catalogue`` with ``verdicts`` applied: rolled-back values retired by the guard,
    promoted ones marked (one version for them all)."""
    values = list(catalogue.values)
    for verdict in verdicts:
        for j, v in enumerate(values):
            if v.knob == verdict.knob and _same(v.value, verdict.value):
                if verdict.action == "rollback":
                    values[j] = replace(
                        v,
                        state="retired",
                        retired_at=now.isoformat(),
                        retired_by="guard",
                        reason=verdict.reason,
                    )
                else:
                    values[j] = replace(v, state="promoted", reason=verdict.reason)
    changed = Catalogue(catalogue.version + 1, tuple(values))
    try:
        changed.apply(base)
    except SpecError:  # retiring would leave nothing to serve: promote-only changes stand
        keep = [v for v in verdicts if v.action == "promote"]
        return judged(catalogue, base, keep, now) if len(keep) < len(verdicts) else catalogue
    return changed


def forget(catalogue: Catalogue, base: Spec, unit: str, now: datetime) -> Catalogue | None:
    """The catalogue without any text derived from ``unit``'s data: each such value's text
    is withdrawn and the value retired (``None``: no value names the unit)."""
    if not any(unit in v.units for v in catalogue.values):
        return None
    why = "its text was derived from a forgotten unit's data"
    withdrawn = [
        replace(v, text=None, units=(), reason=why) if unit in v.units else v
        for v in catalogue.values
    ]
    retired = [
        replace(v, state="retired", retired_at=now.isoformat(), retired_by="forget")
        if unit in old.units and v.state != "retired"
        else v
        for v, old in zip(withdrawn, catalogue.values, strict=True)
    ]
    changed = Catalogue(catalogue.version + 1, tuple(retired))
    try:
        changed.apply(base)
    except SpecError:  # retiring would leave nothing to serve: only the text is withdrawn
        return Catalogue(catalogue.version + 1, tuple(withdrawn))
    return changed


@dataclass(frozen=True)
class ValueChange:
    """What :meth:`flywheel.Wheel.add_value` or ``retire_value`` did: the catalogue's new
    ``version``, the playbook version that serves it (``None``: not published, see
    ``reason``)."""

    knob: str
    value: Value
    version: int
    published: int | None
    reason: str


def save(store: Store, catalogue: Catalogue) -> None:
    store.set_meta(KEY, catalogue.to_json())


def record(
    store: Store,
    now: datetime,
    action: str,
    reason: str,
    entry: KnobValue | None,
    actor: str,
    evidence: Mapping[str, Any] | None = None,
) -> None:
    """The audit entry of a change, with the guard's ``evidence`` (the value's text is not
    repeated there)."""
    detail = {} if entry is None else {k: v for k, v in entry.shown().items() if k != "text"}
    detail.update(evidence or {})
    breaker.audit(store, now, action, reason, detail or None, actor=actor)
