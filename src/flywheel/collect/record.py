"""Validation of what the product reports, turned into rows for the buffered writer.

Every method checks its whole input before it appends anything, so a call that raises has
written nothing. Checks are precomputed per spec: the per-call cost is a few dictionary lookups.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from flywheel.collect.edits import edit_distance, unified_diff
from flywheel.collect.redact import redact
from flywheel.collect.units import Pseudonymizer
from flywheel.collect.writer import Appender
from flywheel.errors import (
    InvalidInputError,
    UnknownNameError,
    ValueNotAllowedError,
    WrongTypeError,
)
from flywheel.spec import IMPLICIT_EVENTS, MAX_OPEN_TEXT, DType, Spec, text_problem

# \Z, not $: "$" also matches before a final newline, and an id with one would pass here only
# to be refused by the store, after the caller was told it was stored
DECISION_ID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
MAX_KEY_LENGTH = 256
RECENT_IDS = 65_536
_NUMBER_TYPES = (int, float, np.integer, np.floating)
MAX_INT64 = 2**63 - 1
EARLIEST, LATEST = 0.0, 7_258_118_400.0  # 1970-01-01 and 2200-01-01, in epoch seconds
_FAST_TYPES = frozenset({int, float, bool})
BATCH_KINDS: dict[str, tuple[str, ...]] = {
    "signal": ("name",),
    "feedback": ("rating", "thumbs", "comment"),
    "implicit": ("event", "dwell_ms"),
    "edit": ("draft", "final"),
}
"""The kinds of item a signal batch takes, told apart by their fields."""
_NOT_NAMED = frozenset(
    f for kind, fields in BATCH_KINDS.items() if kind != "signal" for f in fields
)
Row = tuple[Any, ...]

Clock = Callable[[], float]

_NUMBER_TEXT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_INTEGER_TEXT = re.compile(r"^[+-]?\d+\Z")
_LONGEST_NUMBER = 400  # characters: more spell no number a store keeps (and int() refuses)


def number_text(text: str, integer: bool = False) -> int | float | None:
    """The number a string spells (``"12"``, ``" 2.5 "``, ``"-1e3"``; surrounding blanks are
    ignored), or ``None``: what JSON, CSV and the SDK give as text where the spec says number.
    With ``integer``, a whole number as an ``int`` (``"3"`` and ``"3.0"``), else ``None``."""
    clean = text.strip()
    if len(clean) > _LONGEST_NUMBER or not _NUMBER_TEXT.match(clean):
        return None
    if _INTEGER_TEXT.match(clean):
        return int(clean) if integer else float(clean)
    number = float(clean)
    if integer:
        return int(number) if math.isfinite(number) and number.is_integer() else None
    return number


def number_hint(value: str, integer: bool = False) -> str:
    """Why a string was refused where a number is expected, with how to give one."""
    kind, example = ("an integer", "12") if integer else ("a number", "12.5")
    return (
        f"expected {kind}, got {value!r} (a string); numbers may be given as strings"
        f' like "{example}"'
    )


def timestamp(value: object, field: str = "ts") -> float:
    """Epoch seconds from a number or a datetime (naive datetimes are taken as UTC)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        seconds = aware.timestamp()
    elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise WrongTypeError(field, "expected epoch seconds or a datetime")
    if not EARLIEST <= seconds <= LATEST:  # also NaN, and milliseconds passed as seconds
        raise ValueNotAllowedError(field, f"{value!r} is not epoch seconds between 1970 and 2200")
    return seconds


def text(field: str, value: object) -> str:
    """Text that can be stored (see :func:`~flywheel.spec.text_problem`)."""
    if not isinstance(value, str):
        raise WrongTypeError(field, f"expected text, got {type(value).__name__}")
    problem = text_problem(value)
    if problem:
        raise ValueNotAllowedError(field, problem)
    return value


def _type_name(dtype: DType) -> str:
    return {
        "text": "text",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
    }[dtype]


class IdFactory:
    """Decision ids: UUID-shaped strings from a random per-process prefix and a counter.

    Cheaper than ``uuid.uuid4()`` per call and as unique: the 76 random bits of the prefix are
    drawn again in a forked child.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        r = secrets.token_hex(10)
        variant = "89ab"[secrets.randbelow(4)]
        self._prefix = f"{r[:8]}-{r[8:12]}-4{r[12:15]}-{variant}{r[15:18]}-"
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


class Recorder:
    """Turns decide/signal/feedback/edit/log calls into validated rows."""

    def __init__(self, spec: Spec, writer: Appender, units: Pseudonymizer, clock: Clock) -> None:
        self.spec = spec
        self._writer = writer
        self._units = units
        self._clock = clock
        self._redact: Callable[[str], str] = redact if spec.redact_text else (lambda text: text)
        self._context_names = tuple(f.name for f in spec.context)
        self._knob_names = tuple(k.name for k in spec.knobs)
        self._signals = spec.signals
        # signal()'s fast path: numeric signals with their bounds (finite, so NaN and inf fail)
        self._numeric = {
            name: (
                -sys.float_info.max if sig.min is None else sig.min,
                sys.float_info.max if sig.max is None else sig.max,
            )
            for name, sig in spec.signals.items()
            if sig.kind == "number"
        }
        self._append = writer.append
        self._is_id = DECISION_ID.match
        self._recent: set[str] = set()
        self._older: set[str] = set()

    # --- validation ------------------------------------------------------------------------------

    def context(self, context: object) -> dict[str, Any]:
        """A validated copy of a context: every declared feature, each value checked."""
        if not isinstance(context, Mapping):
            raise WrongTypeError(
                "context",
                f"expected a mapping of feature names to values, got {type(context).__name__}",
            )
        features = self.spec.feature
        clean: dict[str, Any] = {}
        for name, value in context.items():
            feature = features.get(name)
            if feature is None:
                raise UnknownNameError(
                    f"context.{name}",
                    f"is not a context feature (known: {', '.join(self._context_names) or 'none'})",
                )
            if feature.open:
                clean[name] = self._open(f"context.{name}", feature.dtype, value)
            elif feature.kind == "categorical":
                clean[name] = self._choice(f"context.{name}", feature.dtype, feature.values, value)
            else:
                clean[name] = self._number(f"context.{name}", value, feature.min, feature.max)
        if len(clean) != len(features):
            missing = [n for n in self._context_names if n not in clean]
            raise ValueNotAllowedError(f"context.{missing[0]}", "is required")
        return clean

    def params(self, params: object) -> dict[str, Any]:
        """Validated knob values of a complete row (fixed values may be repeated, not changed)."""
        if not isinstance(params, Mapping):
            raise WrongTypeError(
                "params", f"expected a mapping of knob names to values, got {type(params).__name__}"
            )
        knobs = self.spec.knob
        clean: dict[str, Any] = {}
        for name, value in params.items():
            knob = knobs.get(name)
            if knob is None:
                if name in self.spec.fixed:
                    if value != self.spec.fixed[name]:
                        raise ValueNotAllowedError(
                            f"params.{name}",
                            f"is fixed to {self.spec.fixed[name]!r} by the skeleton",
                        )
                    continue
                raise UnknownNameError(
                    f"params.{name}", f"is not a knob (known: {', '.join(self._knob_names)})"
                )
            clean[name] = self._choice(f"params.{name}", knob.dtype, knob.values, value)
        missing = [n for n in self._knob_names if n not in clean]
        if missing:
            raise ValueNotAllowedError(f"params.{missing[0]}", "is required")
        return clean

    @staticmethod
    def _choice(field: str, dtype: DType, values: tuple[Any, ...], value: object) -> Any:
        if isinstance(value, str) and dtype in ("number", "integer"):
            number = number_text(value)
            if number is None:
                raise WrongTypeError(field, number_hint(value, dtype == "integer"))
            value = int(number) if dtype == "integer" and float(number).is_integer() else number
        if dtype == "number" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok_type = (
            isinstance(value, str)
            if dtype == "text"
            else isinstance(value, bool)
            if dtype == "boolean"
            else isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)
        )
        if not ok_type:
            raise WrongTypeError(field, f"expected {_type_name(dtype)}, got {value!r}")
        if value not in values:
            raise ValueNotAllowedError(field, f"{value!r} is not one of {list(values)}")
        return value

    @staticmethod
    def _open(field: str, dtype: DType, value: object) -> str | int:
        """A value of an open categorical feature, stored as given: text (an integer is taken
        as its digits), or an integer where the feature's seed values are integers."""
        if dtype == "integer":
            number: object = value
            if isinstance(value, str):
                number = number_text(value, integer=True)
                if number is None:
                    raise WrongTypeError(field, number_hint(value, integer=True))
            elif isinstance(value, float | np.floating) and float(value).is_integer():
                number = int(value)
            if not isinstance(number, int | np.integer) or isinstance(number, bool):
                raise WrongTypeError(field, f"expected an integer, got {value!r}")
            if abs(int(number)) > MAX_INT64:
                raise ValueNotAllowedError(field, f"{value!r} is too large")
            return int(number)
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            value = str(int(value))
        if not isinstance(value, str):
            raise WrongTypeError(field, f"expected text or an integer, got {value!r}")
        if len(value) > MAX_OPEN_TEXT:
            raise ValueNotAllowedError(
                field, f"is {len(value)} characters long; at most {MAX_OPEN_TEXT} are taken"
            )
        problem = text_problem(value)
        if problem:
            raise ValueNotAllowedError(field, problem)
        return value

    @staticmethod
    def _number(
        field: str, value: object, lo: float | None = None, hi: float | None = None
    ) -> float:
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, str):
            number = number_text(value)
            if number is None:
                raise WrongTypeError(field, number_hint(value))
            value = number
        if not isinstance(value, _NUMBER_TYPES) or isinstance(value, np.bool_):
            raise WrongTypeError(field, f"expected a number or a boolean, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            raise ValueNotAllowedError(field, f"{value!r} is too large") from None
        if not math.isfinite(number):
            raise ValueNotAllowedError(field, f"{value!r} is not a finite number")
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise ValueNotAllowedError(field, f"{value!r} is outside [{lo}, {hi}]")
        return number

    def decision_id(self, decision: object, field: str = "decision") -> str:
        ident = getattr(decision, "id", decision)
        if not isinstance(ident, str) or not DECISION_ID.match(ident):
            raise WrongTypeError(field, f"expected a decision id (a UUID string), got {ident!r}")
        return ident

    def _when(self, ts: object) -> float:
        return self._clock() if ts is None else timestamp(ts)

    def _unit(self, unit: object) -> str | None:
        return None if unit is None else self._units(unit)

    @staticmethod
    def _key(key: object, suffix: str = "") -> str | None:
        if key is None:
            return None
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise WrongTypeError(
                "key", f"expected non-empty text of at most {MAX_KEY_LENGTH} characters"
            )
        return text("key", key) + suffix

    def _signal_row(
        self,
        decision_id: str,
        name: str,
        value: object,
        ts: float,
        key: str | None,
        unit: str | None,
    ) -> tuple[Any, ...]:
        if not isinstance(name, str):
            raise WrongTypeError("name", f"expected a signal name, got {name!r}")
        bounds = self._numeric.get(name)
        if bounds is not None and type(value) is float and bounds[0] <= value <= bounds[1]:
            return (decision_id, name, value, None, ts, key, unit)  # the common case, inline
        sig = self._signals.get(name)
        if sig is None:
            raise UnknownNameError(
                name, "is not a declared signal (declare it under [signals] in the spec)"
            )
        if sig.kind == "text":
            return (decision_id, name, None, self._redact(text(name, value)), ts, key, unit)
        return (decision_id, name, self._number(name, value, sig.min, sig.max), None, ts, key, unit)

    # --- recording -------------------------------------------------------------------------------

    def decision(
        self,
        ident: str,
        ts: float,
        unit: str | None,
        policy: str,
        playbook: int | None,
        propensity: float | None,
        context: Mapping[str, Any],
        params: Mapping[str, Any],
        prompt: Row | None = None,
    ) -> None:
        """A decision's row, and with ``prompt`` (an :meth:`input_row`) its input, queued
        together."""
        row = (
            ident, ts, unit, policy, playbook, propensity,
            *[context[n] for n in self._context_names],
            *[params[n] for n in self._knob_names],
        )  # fmt: skip
        if prompt is None:
            self._writer.append("decisions", row)
        else:
            self._writer.append_many([("decisions", row), ("signals", prompt)])
        self._remember(ident)

    def input_row(self, ident: str, value: object, ts: float, unit: str | None) -> Row:
        """The ``input`` signal of a decision about to be made (what an AI product was asked),
        at the decision's time: validated and redacted like every text signal, before the
        decision is made, so a refused input records nothing."""
        return self._signal_row(ident, "input", value, ts, None, unit)

    @staticmethod
    def _served(
        playbook: object, propensity: object, policy: object = None
    ) -> tuple[str, int | None, float | None]:
        """Who chose a logged row's knob values: a playbook version served by the product
        itself (``local``, with its propensity), an outside policy (its name, with or without
        the propensity it chose them with), or nobody known (``logged``)."""
        named = None if policy is None else _outside_policy(policy)
        if named is not None and playbook is not None:
            raise InvalidInputError(
                "policy",
                "a row served from a playbook version is Flywheel's own: give the playbook"
                " or the outside policy's name, not both",
            )
        if playbook is None:
            if propensity is not None:
                return named or OUTSIDE, None, _probability(propensity)
            return named or "logged", None, None
        if not isinstance(playbook, int) or isinstance(playbook, bool) or playbook < 1:
            raise WrongTypeError("playbook", "expected the version (a positive integer) served")
        if playbook > MAX_INT64:  # the store could never take it: refused here, not there
            raise ValueNotAllowedError("playbook", f"{playbook} is not a version (too large)")
        return "local", playbook, _probability(propensity)

    def _remember(self, ident: str) -> None:
        """Keep recently issued ids, so their signals skip the id pattern check.

        Two generations of at most ``RECENT_IDS`` each (a few MB); most signals answer a recent
        decision of the same process. A miss only costs the regular check.
        """
        recent = self._recent
        recent.add(ident)
        if len(recent) >= RECENT_IDS:
            self._older, self._recent = recent, set()

    def signal(
        self,
        decision: object,
        name: str,
        value: object,
        ts: object = None,
        key: object = None,
        unit: object = None,
    ) -> None:
        self._append("signals", self._named(decision, name, value, ts, key, unit))

    def _named(
        self, decision: object, name: object, value: object, ts: object, key: object, unit: object
    ) -> Row:
        """The row of a named signal: a plain number for a recent decision is checked inline
        (the ingest path is hot), anything else in full."""
        bounds = self._numeric.get(name) if type(name) is str else None
        if (
            bounds is not None
            and type(decision) is str
            and type(value) in _FAST_TYPES
            and ts is None
            and key is None
            and unit is None
            and (decision in self._recent or decision in self._older or self._is_id(decision))
        ):
            number = float(value)  # type: ignore[arg-type]
            if bounds[0] <= number <= bounds[1]:
                return (decision, name, number, None, self._clock(), None, None)
        return self._signal_row(
            self.decision_id(decision),
            name,  # type: ignore[arg-type]
            value,
            self._when(ts),
            self._key(key),
            self._unit(unit),
        )

    def signal_batch(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        spans: list[int] | None = None,
        into: list[tuple[str, Row]] | None = None,
    ) -> int:
        """Signals of any decisions, all or none: every one is validated before any is queued,
        and an error names its position (``signals[3].value``). An item is a named signal
        (``name``, ``value``), feedback (``rating``, ``thumbs``, ``comment``), an implicit event
        (``event``, ``dwell_ms``) or an edit (``draft``, ``final``), each with ``decision`` and
        optionally ``ts``, ``key`` and ``unit``. Returns the number of items.

        ``spans`` receives the number of signal rows of each item (what counting the batch's
        duplicates needs: :mod:`flywheel.collect.outcomes`); with ``into``, the rows are put
        there instead of queued."""
        rows: list[tuple[str, Row]] = []
        named = self._named_row
        for i, item in enumerate(items):
            try:
                name = item.get("name")
                if name is not None and _NOT_NAMED.isdisjoint(item):  # the common item
                    rows.append(("signals", named(item, name)))
                    if spans is not None:
                        spans.append(1)
                else:
                    made = self._item_rows(item)
                    rows += made
                    if spans is not None:
                        spans.append(sum(1 for table, _ in made if table == "signals"))
            except InvalidInputError as err:
                raise type(err)(f"signals[{i}].{err.field}", err.reason) from None
        if into is not None:
            into += rows
        else:
            self._writer.append_many(rows)
        return len(items)

    def _named_row(self, item: Mapping[str, Any], name: object) -> Row:
        """The row of a batch item that is a named signal (``name``, ``value``)."""
        value = item.get("value")
        if value is None:
            raise InvalidInputError("value", "is required with name")
        get = item.get
        return self._named(get("decision"), name, value, get("ts"), get("key"), get("unit"))

    def _item_rows(self, item: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """The rows of one item of a signal batch, by the fields it carries."""
        kinds = [
            kind
            for kind, fields in BATCH_KINDS.items()
            if any(item.get(f) is not None for f in fields)
        ]
        if len(kinds) != 1:
            expected = "; ".join(", ".join(f) for f in BATCH_KINDS.values())
            found = " and ".join(kinds) if kinds else "none"
            raise InvalidInputError("name", f"give the fields of one of: {expected} (got {found})")
        decision, ts, key, unit = (item.get(f) for f in ("decision", "ts", "key", "unit"))
        kind = kinds[0]
        if kind == "signal":
            if item.get("value") is None:
                raise InvalidInputError("value", "is required with name")
            ident, when, hashed = self.decision_id(decision), self._when(ts), self._unit(unit)
            name = item["name"]
            return [
                (
                    "signals",
                    self._signal_row(ident, name, item["value"], when, self._key(key), hashed),
                )
            ]
        if kind == "edit":
            return self._edit_rows(decision, item.get("draft"), item.get("final"), ts, key, unit)[1]
        if kind == "implicit":
            values = self._implicit_values(item.get("event"), item.get("dwell_ms"))
        else:
            values = {name: item.get(name) for name in BATCH_KINDS["feedback"]}
        return self._signals_rows(decision, values, ts, key, unit)

    def signals(
        self,
        decision: object,
        values: Mapping[str, object],
        *,
        ts: object = None,
        key: object = None,
        unit: object = None,
    ) -> None:
        """Several signals of one decision, all or none."""
        self._writer.append_many(self._signals_rows(decision, values, ts, key, unit))

    def _signals_rows(
        self, decision: object, values: Mapping[str, object], ts: object, key: object, unit: object
    ) -> list[tuple[str, Row]]:
        ident, when, hashed = self.decision_id(decision), self._when(ts), self._unit(unit)
        rows = [
            self._signal_row(ident, name, value, when, self._key(key, f":{name}"), hashed)
            for name, value in values.items()
            if value is not None
        ]
        if not rows:
            raise InvalidInputError("signals", "nothing to record: give at least one value")
        return [("signals", row) for row in rows]

    def feedback(
        self,
        decision: object,
        *,
        rating: object = None,
        thumbs: object = None,
        comment: object = None,
        ts: object = None,
        key: object = None,
        unit: object = None,
    ) -> None:
        self.signals(
            decision,
            {"rating": rating, "thumbs": thumbs, "comment": comment},
            ts=ts,
            key=key,
            unit=unit,
        )

    def implicit(
        self,
        decision: object,
        event: str | None = None,
        *,
        dwell_ms: object = None,
        ts: object = None,
        key: object = None,
        unit: object = None,
    ) -> None:
        values = self._implicit_values(event, dwell_ms)
        self.signals(decision, values, ts=ts, key=key, unit=unit)

    @staticmethod
    def _implicit_values(event: object, dwell_ms: object) -> dict[str, object]:
        values: dict[str, object] = {}
        if event is not None:
            if event not in IMPLICIT_EVENTS:
                raise ValueNotAllowedError(
                    "event", f"{event!r} is not one of {list(IMPLICIT_EVENTS)}"
                )
            values[str(event)] = 1.0
        if dwell_ms is not None:
            values["dwell_ms"] = dwell_ms
        return values

    def edit(
        self,
        decision: object,
        draft: object,
        final: object,
        *,
        ts: object = None,
        key: object = None,
        unit: object = None,
    ) -> float:
        distance, rows = self._edit_rows(decision, draft, final, ts, key, unit)
        self._writer.append_many(rows)
        return distance

    def _edit_rows(
        self, decision: object, draft: object, final: object, ts: object, key: object, unit: object
    ) -> tuple[float, list[tuple[str, Row]]]:
        draft, final = text("draft", draft), text("final", final)
        ident, when, hashed = self.decision_id(decision), self._when(ts), self._unit(unit)
        distance = edit_distance(draft, final)
        clean_draft, clean_final = self._redact(draft), self._redact(final)
        diff = unified_diff(clean_draft, clean_final)
        signal = self._signal_row(
            ident, "edit_distance", distance, when, self._key(key, ":edit"), hashed
        )
        edit = (ident, when, hashed, clean_draft, clean_final, diff, distance)
        return distance, [("edits", edit), ("signals", signal)]

    def complete_row(
        self,
        ident: str,
        context: object,
        params: object,
        results: object,
        *,
        ts: object = None,
        unit: object = None,
        playbook: object = None,
        propensity: object = None,
        policy: object = None,
    ) -> None:
        """A decision that already has its results (imports, decisions made by people, or
        served by the product itself from a playbook: then ``playbook`` and ``propensity``;
        or chosen by an outside policy: its name in ``policy``, and ``propensity`` if known)."""
        self._writer.append_many(
            self._complete(ident, context, params, results, ts, unit, playbook, propensity, policy)
        )

    def complete_rows(self, idents: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        """Many complete rows (mappings of ``context``, ``params``, ``results`` and optionally
        ``ts``, ``unit``, ``playbook``, ``propensity``), all or none: every one is validated
        before any is queued, and an error names its position (``rows[2].context.genre``)."""
        queued: list[tuple[str, tuple[Any, ...]]] = []
        for i, (ident, row) in enumerate(zip(idents, rows, strict=True)):
            try:
                queued += self._complete(
                    ident,
                    row.get("context"),
                    row.get("params"),
                    row.get("results"),
                    row.get("ts"),
                    row.get("unit"),
                    row.get("playbook"),
                    row.get("propensity"),
                    row.get("policy"),
                )
            except InvalidInputError as err:
                raise type(err)(f"rows[{i}].{err.field}", err.reason) from None
        self._writer.append_many(queued)

    def _complete(
        self,
        ident: str,
        context: object,
        params: object,
        results: object,
        ts: object,
        unit: object,
        playbook: object,
        propensity: object,
        policy: object = None,
    ) -> list[tuple[str, tuple[Any, ...]]]:
        clean_context, clean_params = self.context(context), self.params(params)
        served_by, version, chance = self._served(playbook, propensity, policy)
        if not isinstance(results, Mapping):
            raise WrongTypeError("results", "expected a mapping of signal names to values")
        when, hashed = self._when(ts), self._unit(unit)
        signals = [
            self._signal_row(ident, name, value, when, None, hashed)
            for name, value in results.items()
            if value is not None
        ]
        decision = (
            ident, when, hashed, served_by, version, chance,
            *[clean_context[n] for n in self._context_names],
            *[clean_params[n] for n in self._knob_names],
        )  # fmt: skip
        return [("decisions", decision), *(("signals", s) for s in signals)]


OUTSIDE = "outside"
"""The policy of a logged row with a propensity and no policy name."""
LIVE_POLICIES = ("uniform", "default", "thompson", "greedy", "online", "local")
"""The policies of decisions the wheel made itself (decide, or a product serving a copy of a
playbook): a store holding one is live, whatever the times of its rows."""
OWN_POLICIES = frozenset({*LIVE_POLICIES, "logged", "imported", OUTSIDE})
"""Policy names Flywheel records itself; an outside policy cannot take one."""
MAX_POLICY_NAME = 100


def _outside_policy(name: object) -> str:
    """An outside policy's name, trimmed (as import stores a cell), or the reason it is not."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_POLICY_NAME:
        raise WrongTypeError(
            "policy",
            f"expected the name of the policy that chose the values (1 to {MAX_POLICY_NAME}"
            " characters)",
        )
    if name.strip() in OWN_POLICIES:
        raise ValueNotAllowedError(
            "policy",
            f"{name!r} is a name Flywheel gives its own decisions; name the outside policy"
            " (for example 'ranker-v3')",
        )
    return name.strip()


def _probability(propensity: object) -> float:
    if (
        not isinstance(propensity, int | float)
        or isinstance(propensity, bool)
        or not 0 < propensity <= 1
    ):
        raise InvalidInputError(
            "propensity",
            f"expected the probability it was served with, in (0, 1]; got {propensity!r}",
        )
    return float(propensity)
