"""OTLP trace intake: an ExportTraceServiceRequest (protobuf or JSON) to decision and signal rows.

Each span becomes at most one decision, converted in one pass over the request:

- its id is ``uuid5(NAMESPACE, trace_id + span_id)`` (both in lowercase hex), so a span sent
  again maps to the same decision, which the store keeps once (name-based ids are idempotent:
  see :meth:`flywheel.store.Store.write`); its time is the span's start;
- knob values and context features come from ``flywheel.knob.<name>`` and
  ``flywheel.context.<name>`` attributes, and from other keys the spec's ``[traces] map``
  names (such as ``gen_ai.request.model``); the span's attributes win over its resource's,
  and ``flywheel.*`` attributes over mapped ones;
- the unit is ``flywheel.unit``, else ``gen_ai.conversation.id`` (pseudonymised like every
  unit); ``flywheel.playbook`` and ``flywheel.propensity`` record a decision served from a
  playbook, as in ``wheel.log``;
- attributes mapped to a signal (``flywheel.signal.<name>``, or a map entry such as
  ``gen_ai.usage.output_tokens = "tokens"``) become signals at the span's end time;
- each ``gen_ai.evaluation.result`` event becomes a signal at the event's time: its name is
  ``gen_ai.evaluation.name`` (as is, or in lower_snake_case) and its value the
  ``gen_ai.evaluation.score.value``; a text signal takes ``gen_ai.evaluation.score.label``,
  and a numeric one without a score takes a label of true/false, pass/fail or yes/no as 1/0.
  An evaluation the spec has no signal for is ignored, with a note in the answer;
- what an AI product was asked and answered become the decision's ``input`` and ``output``
  (built-in text signals): a ``gen_ai.user.message`` or ``gen_ai.content.prompt`` event (its
  ``gen_ai.prompt`` or ``content`` attribute) is the input, a ``gen_ai.choice`` (the first
  choice: ``index`` 0 or none) or ``gen_ai.content.completion`` event (its
  ``gen_ai.completion``, ``content`` or ``message`` attribute, as text) the output, each at
  the event's time; so are ``gen_ai.prompt`` and ``gen_ai.completion`` span attributes (at
  the span's end), and ``flywheel.signal.input`` / ``flywheel.signal.output``, as for every
  signal. An event without such text is ignored, with a note in the answer.

A span is taken whole or not at all: one that lacks a knob or context feature, or carries a
value the spec does not allow, is rejected and counted, with its reason, in the answer's
``partial_success``. A request that cannot be read (not protobuf or JSON of the right shape,
ids that are not hex) raises :class:`BodyError`, naming the field, and nothing of it is
stored. Signals carry idempotency keys derived from the decision id, so re-sent spans
duplicate nothing.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import itertools
import json
import math
import re
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic_core

from flywheel.collect.record import EARLIEST, LATEST, Recorder, timestamp
from flywheel.collect.units import Pseudonymizer
from flywheel.errors import InvalidInputError
from flywheel.spec import Spec

Format = Literal["protobuf", "json"]
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_BODY = 64 * 1024 * 1024  # bytes of a request, after decompression
NAMESPACE = uuid.UUID("6f1d2a34-5c3e-4b7a-9d0e-8f2b1c4a7e95")
EVALUATION = "gen_ai.evaluation.result"
CONVERSATION = "gen_ai.conversation.id"
MAX_REASONS = 3  # rejection reasons quoted in an answer
_BOOLEAN_LABELS = {"true": 1.0, "pass": 1.0, "yes": 1.0, "false": 0.0, "fail": 0.0, "no": 0.0}
_EVAL_NAME, _EVAL_SCORE, _EVAL_LABEL = (
    "gen_ai.evaluation.name",
    "gen_ai.evaluation.score.value",
    "gen_ai.evaluation.score.label",
)
_EVAL_KEYS = frozenset({_EVAL_NAME, _EVAL_SCORE, _EVAL_LABEL})
# GenAI events that carry what was asked or answered: the signal each feeds, and the
# attributes that may hold its text (the first one that is text wins)
CONTENT_EVENTS = {
    "gen_ai.user.message": "input",
    "gen_ai.content.prompt": "input",
    "gen_ai.choice": "output",
    "gen_ai.content.completion": "output",
}
_TEXT_KEYS = {
    "input": ("gen_ai.prompt", "content"),
    "output": ("gen_ai.completion", "content", "message"),
}
_CHOICE_INDEX = "index"
_CONTENT_KEYS = frozenset({_CHOICE_INDEX, *(k for keys in _TEXT_KEYS.values() for k in keys)})
_EVENT = "@event"  # the event's name, beside a content event's attributes (no attribute's key)
CONTENT_ATTRIBUTES = {"gen_ai.prompt": "input", "gen_ai.completion": "output"}
"""Span attributes that are the input and output by convention (``[traces] map`` wins)."""
_NS = NAMESPACE.bytes
_NO_TRACE, _NO_SPAN = bytes(16), bytes(8)
_NO_IDENT = "00000000-0000-5000-8000-000000000000"  # a decision id for rows made to be taken apart
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_MAX_FIXED64 = 2**64 - 1  # OTLP's times are fixed64 nanoseconds
_CACHED = 4096  # distinct entries each of the conversion caches below keeps (then starts over)


class BodyError(InvalidInputError):
    """A request that cannot be read; nothing of it is stored. ``status`` is its HTTP status."""

    status = 400


class UnsupportedError(BodyError):
    status = 415


class TooLargeError(BodyError):
    status = 413


class _Missing:
    pass


class _Complex:
    """An array, map or bytes attribute: not a value a knob, feature or signal can take."""


MISSING: Any = _Missing()
COMPLEX: Any = _Complex()
_IGNORED: Any = _Missing()  # an attribute that maps to nothing


def media_format(content_type: str | None) -> Format:
    """The format of a request body from its ``Content-Type``."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base == PROTOBUF:
        return "protobuf"
    if base == JSON:
        return "json"
    raise UnsupportedError("content-type", f"expected {PROTOBUF} or {JSON}, got {content_type!r}")


def decompress(body: bytes, encoding: str | None) -> bytes:
    """The body without its ``Content-Encoding`` (identity, gzip or deflate), at most
    ``MAX_BODY`` bytes."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        if len(body) > MAX_BODY:
            raise TooLargeError("body", f"is larger than {MAX_BODY} bytes")
        return body
    if name not in ("gzip", "deflate"):
        raise UnsupportedError(
            "content-encoding", f"expected gzip, deflate or none, got {encoding!r}"
        )
    out = bytearray()
    rest = body
    try:
        while rest:
            # gzip; deflate is zlib-wrapped (47 detects either), or raw as some clients send it
            wbits = 31 if name == "gzip" else (47 if rest[:1] in (b"\x78", b"\x1f") else -15)
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(rest, MAX_BODY + 1 - len(out))
            if len(out) > MAX_BODY or inflater.unconsumed_tail:
                raise TooLargeError("body", f"is larger than {MAX_BODY} bytes uncompressed")
            if not inflater.eof:
                raise BodyError("body", f"the {name} data is cut short")
            rest = inflater.unused_data  # gzip allows several members, one after another
    except zlib.error as err:
        raise BodyError("body", f"is not valid {name} data ({err})") from None
    return bytes(out)


def decision_id_of(ids: bytes) -> str:
    """:func:`decision_id` of a trace id and span id given as their bytes, one after the
    other."""
    h = hashlib.sha1(_NS + binascii.hexlify(ids)).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def decision_id(trace_id: str, span_id: str) -> str:
    """``str(uuid.uuid5(NAMESPACE, trace_id + span_id))`` (lowercase hex ids), computed
    without the UUID object."""
    h = hashlib.sha1(_NS + (trace_id + span_id).encode()).hexdigest()
    # the version (5) is the 13th digit; the variant (binary 10xx) the 17th
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


@dataclass
class Intake:
    """What a request became: rows for the writer, and counts for the OTLP answer."""

    rows: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    spans: int = 0
    decisions: int = 0
    signals: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    @property
    def message(self) -> str:
        """The answer's ``error_message``: why spans were rejected, and what was ignored."""
        parts = []
        if self.rejected:
            more = self.rejected - len(self.reasons)
            tail = f"; and {more} more" if more else ""
            parts.append(
                f"rejected {self.rejected} of {self.spans} spans: " + "; ".join(self.reasons) + tail
            )
        for note, count in self.notes.items():
            parts.append(f"{note} ({count} {'event' if count == 1 else 'events'})")
        return ". ".join(parts)


@dataclass(frozen=True)
class _Slot:
    kind: Literal["knob", "context", "signal", "unit", "playbook", "propensity"]
    name: str
    integer: bool = False  # an integer knob or feature: integral doubles are taken as ints


class TraceMapper:
    """Converts OTLP requests to rows for one spec; the lookups are prepared once.

    Spans repeat themselves: the same few knob and context values, evaluation names and
    units, span after span. What depends only on such a value is worked out once and kept
    (in bounded caches): a knob or context value's validation, a unit's pseudonym, the
    signal an evaluation feeds. A value not seen before takes the full checks, which also
    give every error its message.
    """

    def __init__(self, spec: Spec, recorder: Recorder, units: Pseudonymizer) -> None:
        self._recorder = recorder
        # typed: True and 1 are equal keys, but only one of them is a unit
        self._units = functools.lru_cache(maxsize=_CACHED, typed=True)(units)
        self._signals = spec.signals
        slots: list[_Slot] = []
        keys: dict[str, tuple[int, int]] = {}  # attribute key -> (slot, priority)
        by_name: dict[str, int] = {}

        def slot(s: _Slot, convention: str | None) -> int:
            slots.append(s)
            index = len(slots) - 1
            by_name[s.name] = index
            if convention is not None:
                keys[convention] = (index, 2)
            return index

        for k in spec.knobs:
            slot(_Slot("knob", k.name, k.dtype == "integer"), f"flywheel.knob.{k.name}")
        for f in spec.context:
            slot(_Slot("context", f.name, f.dtype == "integer"), f"flywheel.context.{f.name}")
        for name in spec.signals:
            slot(_Slot("signal", name), f"flywheel.signal.{name}")
        unit = slot(_Slot("unit", "unit"), "flywheel.unit")
        keys[CONVERSATION] = (unit, 0)
        self._playbook = slot(_Slot("playbook", "playbook"), "flywheel.playbook")
        self._propensity = slot(_Slot("propensity", "propensity"), "flywheel.propensity")
        for key, name in CONTENT_ATTRIBUTES.items():
            found = spec.signals.get(name)
            if found is not None and found.kind == "text":
                keys[key] = (by_name[name], 0)
        for key, target in spec.traces.map.items():
            keys[key] = (by_name[target], 1)
        # The slots whose attributes take a few values, span after span (knobs and categorical
        # features, not numbers, signals or units), and the values of their encoded KeyValues.
        self._repeats = [
            s.kind == "knob" or (s.kind == "context" and spec.feature[s.name].kind == "categorical")
            for s in slots
        ]
        self._attributes: dict[bytes, Any] = {}  # see _attribute
        self._ignored: set[bytes] = set()  # keys (encoded) of attributes that map to nothing
        self._events: dict[bytes, tuple[int | None, dict[str, Any] | None, Any]] = {}
        # knob and feature values by their bytes, apart: attributes that map to nothing and
        # take many values (token counts) empty _attributes often, and must not renumber them
        self._kept: dict[bytes, tuple[int, int, Any, int]] = {}
        self._serials = itertools.count(1)  # see _attribute
        self._combos: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # see _protobuf
        self._slots = tuple(slots)
        self._keys = keys
        self._unit = unit
        self._knobs = [(by_name[k.name], k.name) for k in spec.knobs]
        self._context = [(by_name[f.name], f.name) for f in spec.context]
        self._signal_slots = [(by_name[n], n) for n in spec.signals]
        self._empty = [MISSING] * len(slots)
        # The decision's columns (context, then knobs) each with its valid values seen so far,
        # keyed by (type, value): 1, 1.0 and True are equal keys, not equally valid values.
        self._columns: list[tuple[int, dict[tuple[type, Any], Any]]] = [
            (i, {}) for i, _ in self._context + self._knobs
        ]
        # The slots after the knobs and context (signals, unit, playbook, propensity): most
        # spans set none of them.
        self._rest = len(spec.knobs) + len(spec.context)
        self._no_rest = self._empty[self._rest :]
        self._evaluations: dict[str, str | None] = {}

    # --- the two encodings -----------------------------------------------------------------------

    def convert(self, body: bytes, fmt: Format) -> Intake:
        """Rows of every usable span of a request (decompressed); raises :class:`BodyError`
        when the request cannot be read."""
        intake = Intake()
        if fmt == "protobuf":
            self._protobuf(body, intake)
        else:
            self._json(body, intake)
        return intake

    def _protobuf(self, body: bytes, intake: Intake) -> None:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        try:
            # read once as the real message for its checks (and its errors) only ...
            ExportTraceServiceRequest.FromString(body)
        except DecodeError as err:
            raise BodyError("body", f"is not an OTLP ExportTraceServiceRequest ({err})") from None
        # ... and read again with attributes and events left as their bytes: the same few
        # encodings come back span after span, each looked up whole rather than read through
        # protobuf's objects
        request = _raw_request().FromString(body)
        attributes, attribute = self._attributes, self._attribute
        look_up = attributes.__getitem__
        rows = intake.rows
        taken_fast = signals_fast = 0  # spans taken by the fast path below, and their signals
        for i, resource_spans in enumerate(request.resource_spans):
            base, base_unknown = self._values(
                ((kv.key, kv.value) for kv in resource_spans.resource.attributes), _pb_value
            )
            # spans whose resource sets nothing of the spec's may take the remembered columns
            # of spans with the same attributes (see _general)
            combos = self._combos if base == self._empty and not base_unknown else None
            for j, scope_spans in enumerate(resource_spans.scope_spans):
                for k, span in enumerate(scope_spans.spans):
                    trace_id, span_id = span.trace_id, span.span_id
                    if len(trace_id) != 16 or trace_id == _NO_TRACE:
                        where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}].traceId"
                        raise BodyError(where, "expected 16 bytes, not all zero")
                    if len(span_id) != 8 or span_id == _NO_SPAN:
                        where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}].spanId"
                        raise BodyError(where, "expected 8 bytes, not all zero")
                    try:
                        # what each attribute is (one lookup each, without a Python loop)
                        key = tuple(map(look_up, span.attributes))
                    except KeyError:
                        key = tuple(
                            attributes.get(raw) or attribute(raw) for raw in span.attributes
                        )
                    start, end = span.start_time_unix_nano, span.end_time_unix_nano
                    events = self._pb_events(span.events)
                    # attributes that map to nothing are all _IGNORED: the key keeps where they are
                    tail = None if combos is None else combos.get(key)
                    if tail is not None:
                        # the checks of _rows, on what can still differ from the remembered span
                        began = start / 1e9
                        ended = end / 1e9 if end else began
                        if start and EARLIEST <= began <= LATEST and EARLIEST <= ended <= LATEST:
                            ident = decision_id_of(trace_id + span_id)
                            made = [("decisions", (ident, began, *tail))]
                            for n, time, _, ready in events:
                                when = time / 1e9 if time else ended
                                if ready is None or not EARLIEST <= when <= LATEST:
                                    break  # a note or an error: _general says which
                                key_n = f"otlp:{ident}:e{n}"
                                made.append(("signals", (ident, *ready, when, key_n, None)))
                            else:
                                rows += made
                                taken_fast += 1
                                signals_fast += len(made) - 1
                                continue
                    before = len(rows)
                    hits = [found for found in key if found is not _IGNORED]
                    taken = self._general(
                        intake, trace_id, span_id, start, end, base, base_unknown, hits, events
                    )
                    if taken and combos is not None and self._columns and all(h[3] for h in hits):
                        # the decision's values after its time (unit, policy, columns) are what
                        # any span with the same attributes has, its resource setting nothing
                        _remember(combos, key, rows[before][1][2:])
        intake.spans += taken_fast
        intake.decisions += taken_fast
        intake.signals += signals_fast

    def _pb_events(self, raws: Iterable[bytes]) -> list[tuple[int, int, dict[str, Any], Any]]:
        """A span's events (encoded) that are evaluation results: their position, time and
        what :meth:`_event` makes of them."""
        events = []
        for n, raw in enumerate(raws):
            if raw[:1] == b"\t":  # the time first, as encoders write it
                rest, leading = raw[9:], raw[1:9]
            else:
                rest, leading = raw, b""
            time, result, ready = self._events.get(rest) or self._event(rest)
            if result is not None:
                if time is None:
                    time = int.from_bytes(leading, "little")
                events.append((n, time, result, ready))
        return events

    def _general(
        self,
        intake: Intake,
        trace_id: bytes,
        span_id: bytes,
        start: int,
        end: int,
        base: list[Any],
        base_unknown: list[str],
        hits: list[tuple[int, int, Any, int]],
        events: list[tuple[int, int, dict[str, Any], Any]],
    ) -> bool:
        """A span by the full checks of :meth:`_span`; whether it was taken."""
        values, priority = list(base), [-1] * len(base)
        unknown = list(base_unknown)
        for slot, rank, value, _ in hits:
            if slot < 0:
                unknown.append(value)
            elif rank >= priority[slot]:
                values[slot], priority[slot] = value, rank
        decisions = intake.decisions
        self._span(
            intake,
            trace_id.hex(),
            span_id.hex(),
            start,
            end,
            values,
            unknown,
            [event[:3] for event in events],
        )
        return intake.decisions > decisions

    def _attribute(self, raw: bytes) -> Any:
        """A span's attribute (an encoded KeyValue, already checked) as ``(slot, rank, value,
        serial)``, ``(-1, 0, key, 0)`` for an unknown ``flywheel.*`` key, or ``_IGNORED``.
        What can repeat (a knob or categorical feature's value, an unknown key, an attribute
        that maps to nothing) is remembered by its bytes; a remembered knob or feature value
        has a serial number of its own (above 0), which no other bytes ever get, so entries of
        different bytes never compare equal (as ``1``, ``1.0`` and ``True`` would)."""
        found = self._kept.get(raw)
        if found is not None:  # a knob or feature value, seen before the lookup was emptied
            return _remember(self._attributes, raw, found)
        key_bytes = _plain_key(raw)
        if key_bytes is not None and key_bytes in self._ignored:
            return _remember(self._attributes, raw, _IGNORED)
        from opentelemetry.proto.common.v1.common_pb2 import KeyValue

        kv = KeyValue.FromString(raw)
        key = kv.key
        hit = self._keys.get(key)
        if hit is None:
            if key.startswith("flywheel."):
                return _remember(self._attributes, raw, (-1, 0, key, 0))
            if key_bytes is not None and len(self._ignored) < _CACHED:
                self._ignored.add(key_bytes)
            return _remember(self._attributes, raw, _IGNORED)
        slot, rank = hit
        if not self._repeats[slot]:
            return (slot, rank, _pb_value(kv.value), 0)
        found = (slot, rank, _pb_value(kv.value), next(self._serials))
        _remember(self._kept, raw, found)
        return _remember(self._attributes, raw, found)

    def _event(self, rest: bytes) -> tuple[int | None, dict[str, Any] | None, Any]:
        """A span's event, encoded (already checked) but for a leading time (its first 9
        bytes, when it starts with one, as encoders write it): the time these bytes set
        (``None`` if they set none: then the leading time, else 0, is the event's; a field
        given twice takes its last value) and, for a ``gen_ai.evaluation.result``, the
        attributes that say its result (shared: not to be changed) and the signal it gives,
        when it gives one without error: its name and its value and text columns, as
        :meth:`_evaluation` makes them (else ``None``); the same for an input or output event
        (:data:`CONTENT_EVENTS`), with its name under ``@event``. Remembered by those bytes,
        but for input and output events (their texts seldom come twice)."""
        from opentelemetry.proto.trace.v1.trace_pb2 import Span

        parse = Span.Event.FromString
        event = parse(rest)
        time: int | None = event.time_unix_nano
        # a time set in these bytes is found whatever time comes before them
        if all(
            parse(b"\t" + bytes([n]) * 8 + rest).time_unix_nano == 0x0101010101010101 * n
            for n in (1, 2)
        ):
            time = None
        result = ready = None
        if event.name == EVALUATION:
            result = {
                kv.key: _pb_value(kv.value) for kv in event.attributes if kv.key in _EVAL_KEYS
            }
            ready = self._ready_signal(result)
        elif event.name in CONTENT_EVENTS:
            result = {
                kv.key: _pb_value(kv.value) for kv in event.attributes if kv.key in _CONTENT_KEYS
            }
            result[_EVENT] = event.name
            return time, result, self._ready_signal(result)
        found = (time, result, ready)
        _remember(self._events, rest, found)
        return found

    def _ready_signal(self, attributes: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
        """The name, value and text of the signal row :meth:`_event_row` makes of these
        attributes, or ``None`` when it makes none (or raises)."""
        intake = Intake()
        try:
            row = self._event_row(_NO_IDENT, 0, 0, EARLIEST, attributes, None, intake)
        except InvalidInputError:
            return None
        return None if row is None else (row[1], row[2], row[3])

    def _json(self, body: bytes, intake: Intake) -> None:
        # pydantic-core refuses nesting past 200 levels as it parses: a body nested too
        # deeply is a fault of the body, never a RecursionError (json.loads raises one)
        try:
            document = pydantic_core.from_json(body)
        except ValueError as err:
            raise BodyError("body", f"is not JSON ({err})") from None
        if not isinstance(document, dict):
            raise BodyError("body", "expected an ExportTraceServiceRequest object")
        keys = self._keys
        for i, resource_spans in enumerate(_list(document, "resourceSpans", "resourceSpans")):
            where = f"resourceSpans[{i}]"
            resource = _object(resource_spans.get("resource") or {}, f"{where}.resource")
            base, base_unknown = self._values(
                _json_attributes(resource, f"{where}.resource"), _json_value
            )
            for j, scope_spans in enumerate(_list(resource_spans, "scopeSpans", where)):
                for k, span in enumerate(_list(scope_spans, "spans", f"{where}.scopeSpans[{j}]")):
                    at = f"{where}.scopeSpans[{j}].spans[{k}]"
                    trace_id = _hex_id(span.get("traceId"), 16, f"{at}.traceId")
                    span_id = _hex_id(span.get("spanId"), 8, f"{at}.spanId")
                    values, priority = list(base), [-1] * len(base)
                    unknown = list(base_unknown)
                    for n, (key, value) in enumerate(_json_attributes(span, at)):
                        hit = keys.get(key)
                        if hit is None:
                            if key.startswith("flywheel."):
                                unknown.append(key)
                        elif hit[1] >= priority[hit[0]]:
                            values[hit[0]] = _json_value(value, f"{at}.attributes[{n}].value")
                            priority[hit[0]] = hit[1]
                    events = []
                    for n, event in enumerate(_list(span, "events", at)):
                        name = event.get("name")
                        if name == EVALUATION or (isinstance(name, str) and name in CONTENT_EVENTS):
                            here = f"{at}.events[{n}]"
                            wanted = _EVAL_KEYS if name == EVALUATION else _CONTENT_KEYS
                            attributes = {
                                key: _json_value(value, f"{here}.attributes")
                                for key, value in _json_attributes(event, here)
                                if key in wanted
                            }
                            if name != EVALUATION:
                                attributes[_EVENT] = name
                            time = _nanos(event.get("timeUnixNano"), f"{here}.timeUnixNano")
                            events.append((n, time, attributes))
                    self._span(
                        intake,
                        trace_id,
                        span_id,
                        _nanos(span.get("startTimeUnixNano"), f"{at}.startTimeUnixNano"),
                        _nanos(span.get("endTimeUnixNano"), f"{at}.endTimeUnixNano"),
                        values,
                        unknown,
                        events,
                    )

    def _values(
        self, attributes: Iterable[tuple[str, Any]], convert: Any
    ) -> tuple[list[Any], list[str]]:
        """A resource's mapped attribute values (spans start from these) and unknown
        ``flywheel.*`` keys."""
        values = list(self._empty)
        unknown = []
        priority = [-1] * len(values)
        for key, value in attributes:
            hit = self._keys.get(key)
            if hit is None:
                if key.startswith("flywheel."):
                    unknown.append(key)
            elif hit[1] >= priority[hit[0]]:
                values[hit[0]] = convert(value, "resource.attributes")
                priority[hit[0]] = hit[1]
        return values, unknown

    # --- one span --------------------------------------------------------------------------------

    def _span(
        self,
        intake: Intake,
        trace_id: str,
        span_id: str,
        start: int,
        end: int,
        values: list[Any],
        unknown: list[str],
        events: list[tuple[int, int, dict[str, Any]]],
    ) -> None:
        intake.spans += 1
        rows = intake.rows
        before = len(rows)
        try:
            self._rows(rows, trace_id, span_id, start, end, values, unknown, events, intake)
        except InvalidInputError as err:
            del rows[before:]  # a span is taken whole or not at all
            intake.reject(f"span {trace_id}/{span_id}: {err}")
            return
        intake.decisions += 1
        intake.signals += len(rows) - before - 1

    def _rows(
        self,
        rows: list[tuple[str, tuple[Any, ...]]],
        trace_id: str,
        span_id: str,
        start: int,
        end: int,
        values: list[Any],
        unknown: list[str],
        events: list[tuple[int, int, dict[str, Any]]],
        intake: Intake,
    ) -> None:
        """Appends a span's decision and signals to ``rows``; raises if the span is unusable
        (having perhaps appended some: the caller takes them back)."""
        if unknown:
            raise InvalidInputError(
                unknown[0], "names no knob, context feature, signal or setting of the spec"
            )
        columns = self._seen_columns(values)
        if columns is None:
            columns = self._checked_columns(values, events)
        elif values[self._rest :] != self._no_rest:
            self._check_rest(values)
        recorder = self._recorder
        playbook, propensity = values[self._playbook], values[self._propensity]
        if playbook is MISSING and propensity is MISSING:
            policy, version, chance = "logged", None, None
        else:
            policy, version, chance = recorder._served(
                None if playbook is MISSING else playbook,
                None if propensity is MISSING else propensity,
            )
        if not start:
            raise InvalidInputError("startTimeUnixNano", "is missing: a span needs its start")
        began = _seconds(start, "startTimeUnixNano")
        ended = _seconds(end, "endTimeUnixNano") if end else began
        raw_unit = values[self._unit]
        unit = None if raw_unit is MISSING else self._units(raw_unit)
        ident = decision_id(trace_id, span_id)
        rows.append(("decisions", (ident, began, unit, policy, version, chance, *columns)))
        signal_row = recorder._signal_row
        for i, name in self._signal_slots:
            value = values[i]
            if value is not MISSING:
                key = f"otlp:{ident}:{name}"
                rows.append(("signals", signal_row(ident, name, value, ended, key, unit)))
        for n, time, attributes in events:
            row = self._event_row(ident, n, time, ended, attributes, unit, intake)
            if row is not None:
                rows.append(("signals", row))

    def _seen_columns(self, values: list[Any]) -> list[Any] | None:
        """The decision's context and knob values, if every one was seen (valid) before."""
        clean = []
        for i, seen in self._columns:
            value = values[i]
            known = seen.get((type(value), value), MISSING)
            if known is MISSING:
                return None
            clean.append(known)
        return clean if clean else None

    def _check_rest(self, values: list[Any]) -> None:
        """The checks of :meth:`_checked_columns` on the slots after the knobs and context."""
        for index in range(self._rest, len(values)):
            value = values[index]
            if value is None:  # an attribute without a value
                values[index] = MISSING
            elif value is COMPLEX:
                raise InvalidInputError(
                    self._slots[index].name, "an array, map or bytes attribute cannot be its value"
                )

    def _checked_columns(
        self, values: list[Any], events: list[tuple[int, int, dict[str, Any]]]
    ) -> list[Any]:
        """The decision's context and knob values, by the full checks (in the order their
        errors take precedence); each value that passes is remembered as seen."""
        raw = list(values)
        slots = self._slots
        found = False
        for index, value in enumerate(values):
            if value is MISSING:
                continue
            if value is None:  # an attribute without a value
                values[index] = MISSING
                continue
            if value is COMPLEX:
                raise InvalidInputError(
                    slots[index].name, "an array, map or bytes attribute cannot be its value"
                )
            if slots[index].kind in ("knob", "context", "signal"):
                found = True
            if slots[index].integer and type(value) is float and value.is_integer():
                values[index] = int(value)
        if not found and not events:
            raise InvalidInputError(
                "attributes",
                "map to no knob, context feature or signal (set flywheel.knob.<name> and"
                " flywheel.context.<name> attributes, or map keys under [traces])",
            )
        recorder = self._recorder
        context = recorder.context(
            {name: values[i] for i, name in self._context if values[i] is not MISSING}
        )
        params = recorder.params(
            {name: values[i] for i, name in self._knobs if values[i] is not MISSING}
        )
        clean = [context[name] for _, name in self._context]
        clean += [params[name] for _, name in self._knobs]
        for (i, seen), value in zip(self._columns, clean, strict=True):
            key = raw[i]
            if type(key) is not float or key != 0:  # 0.0 and -0.0: one key, two values
                _remember(seen, (type(key), key), value)
        return clean

    def _event_row(
        self,
        ident: str,
        n: int,
        time: int,
        ended: float,
        attributes: Mapping[str, Any],
        unit: str | None,
        intake: Intake,
    ) -> tuple[Any, ...] | None:
        """A span event's signal row: an input or output event's (:meth:`_content`), else an
        evaluation's (:meth:`_evaluation`); ``None`` (noted) when it gives none."""
        if _EVENT in attributes:
            return self._content(ident, n, time, ended, attributes, unit, intake)
        return self._evaluation(ident, n, time, ended, attributes, unit, intake)

    def _content(
        self,
        ident: str,
        n: int,
        time: int,
        ended: float,
        attributes: Mapping[str, Any],
        unit: str | None,
        intake: Intake,
    ) -> tuple[Any, ...] | None:
        """An input or output event as the ``input`` or ``output`` signal's row, or ``None``
        (noted) when the spec has no such text signal, the event is a choice other than the
        first, or it carries no text."""
        event = attributes[_EVENT]
        name = CONTENT_EVENTS[event]
        found = self._signals.get(name)
        note = None
        text = next(
            (attributes[k] for k in _TEXT_KEYS[name] if isinstance(attributes.get(k), str)), None
        )
        index = attributes.get(_CHOICE_INDEX)
        if found is None or found.kind != "text":
            note = f"ignored {event} events: no text signal {name!r} in the spec"
        elif index is not None and index is not MISSING and index != 0:
            note = f"ignored {event} events of choices after the first"
        elif text is None:
            keys = ", ".join(_TEXT_KEYS[name])
            note = f"ignored {event} events without text (an attribute {keys})"
        if note is not None:
            intake.notes[note] = intake.notes.get(note, 0) + 1
            return None
        when = time / 1e9 if time else ended
        if not EARLIEST <= when <= LATEST:
            timestamp(when, f"events[{n}].timeUnixNano")  # raises, naming the field
        return self._recorder._signal_row(ident, name, text, when, f"otlp:{ident}:e{n}", unit)

    def _evaluation(
        self,
        ident: str,
        n: int,
        time: int,
        ended: float,
        attributes: Mapping[str, Any],
        unit: str | None,
        intake: Intake,
    ) -> tuple[Any, ...] | None:
        """A ``gen_ai.evaluation.result`` event as a signal row, or ``None`` (noted) when the
        spec has no signal for it."""
        raw_name = attributes.get(_EVAL_NAME)
        name = self._evaluation_signal(raw_name) if isinstance(raw_name, str) else None
        if name is None:
            shown = raw_name if isinstance(raw_name, str) else "(unnamed)"
            note = f"ignored evaluation {shown!r}: no signal of that name in the spec"
            intake.notes[note] = intake.notes.get(note, 0) + 1
            return None
        score, label = attributes.get(_EVAL_SCORE), attributes.get(_EVAL_LABEL)
        value: object
        if self._signals[name].kind == "text":
            if not isinstance(label, str):
                raise InvalidInputError(
                    f"events[{n}]", f"{name} is a text signal: give {_EVAL_LABEL}"
                )
            value = label
        elif score is not None and score is not MISSING:
            value = score
        elif isinstance(label, str) and label.strip().lower() in _BOOLEAN_LABELS:
            value = _BOOLEAN_LABELS[label.strip().lower()]
        else:
            raise InvalidInputError(
                f"events[{n}]",
                f"{name} is numeric: give {_EVAL_SCORE} (or a label of true/false, pass/fail,"
                " yes/no)",
            )
        when = time / 1e9 if time else ended
        if not EARLIEST <= when <= LATEST:
            timestamp(when, f"events[{n}].timeUnixNano")  # raises, naming the field
        return self._recorder._signal_row(ident, name, value, when, f"otlp:{ident}:e{n}", unit)

    def _evaluation_signal(self, raw: str) -> str | None:
        """The signal an evaluation name feeds: the name itself, else in lower_snake_case."""
        if raw in self._evaluations:
            return self._evaluations[raw]
        snake = re.sub(r"[^a-z0-9]+", "_", raw.strip().lower()).strip("_")
        found = raw if raw in self._signals else snake if snake in self._signals else None
        if len(self._evaluations) < 10_000:
            self._evaluations[raw] = found
        return found


def answer(intake: Intake, fmt: Format) -> bytes:
    """The ExportTraceServiceResponse: empty when every span was taken, else a
    ``partial_success`` with the rejected count and the reasons (or only notes)."""
    message = intake.message
    if fmt == "json":
        if not intake.rejected and not message:
            return b"{}"
        partial = {"rejectedSpans": str(intake.rejected), "errorMessage": message}
        return json.dumps({"partialSuccess": partial}).encode()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    if not intake.rejected and not message:
        return ExportTraceServiceResponse().SerializeToString()
    partial_success = ExportTracePartialSuccess(
        rejected_spans=intake.rejected, error_message=message
    )
    return ExportTraceServiceResponse(partial_success=partial_success).SerializeToString()


# --- reading values ------------------------------------------------------------------------------


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    """Keep ``value`` in a bounded cache (emptied when full: what repeats comes back soon)."""
    if len(cache) >= _CACHED:
        cache.clear()
    cache[key] = value
    return value


def _plain_key(raw: bytes) -> bytes | None:
    """The key of an encoded KeyValue written plainly (its key, then at most its value, each
    once and shorter than 128 bytes), else ``None``."""
    if raw[:1] != b"\n":
        return None
    end = 2 + raw[1]  # a length of 128 or more takes two bytes: its first is above 127
    if raw[1] > 127 or len(raw) < end:
        return None
    if len(raw) != end and (raw[end : end + 1] != b"\x12" or len(raw) != end + 2 + raw[end + 1]):
        return None
    return raw[2:end]


@functools.cache
def _raw_request() -> Any:
    """A message type read from the bytes of an ExportTraceServiceRequest with the spans'
    ``attributes`` and ``events`` left as the bytes of each: their own encodings, which
    repeat. It reads all else as the real type does (the same fields and types), and checks
    nothing inside those bytes: the real type reads each body first."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    pool = descriptor_pool.Default()
    name = "flywheel/collect/otlp_raw_trace.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        file = descriptor_pb2.FileDescriptorProto(
            name=name, package="flywheel.otlp_raw", syntax="proto3"
        )
        file.dependency.append(trace_pb2.DESCRIPTOR.name)
        types: list[tuple[Any, str, str | None, str | None]] = [
            (
                trace_service_pb2.ExportTraceServiceRequest,
                "Request",
                "resource_spans",
                "ResourceSpans",
            ),
            (trace_pb2.ResourceSpans, "ResourceSpans", "scope_spans", "ScopeSpans"),
            (trace_pb2.ScopeSpans, "ScopeSpans", "spans", "Span"),
            (trace_pb2.Span, "Span", None, None),
        ]
        for real, renamed, field_name, field_type in types:
            message = file.message_type.add()
            real.DESCRIPTOR.CopyToProto(message)
            message.name = renamed
            del message.nested_type[:], message.enum_type[:]  # referred to, not copied
            for f in message.field:
                if f.name == field_name:
                    f.type_name = f".flywheel.otlp_raw.{field_type}"
                elif renamed == "Span" and f.name in ("attributes", "events"):
                    f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                    f.ClearField("type_name")
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("flywheel.otlp_raw.Request"))


def _seconds(nanos: int, field: str) -> float:
    """Epoch seconds from nanoseconds, checked as :func:`timestamp` checks them."""
    seconds = nanos / 1e9
    if EARLIEST <= seconds <= LATEST:
        return seconds
    return timestamp(seconds, field)  # raises, naming the field


def _pb_value(value: Any, _where: str = "") -> Any:
    """A protobuf AnyValue as a Python scalar (``COMPLEX`` for arrays, maps and bytes)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value", "kvlist_value", "bytes_value"):
        return COMPLEX
    return getattr(value, kind)


def _json_value(value: object, where: str) -> Any:
    """An OTLP/JSON AnyValue (``{"stringValue": …}``; int64 as a string or a number)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BodyError(where, 'expected an AnyValue object such as {"stringValue": "…"}')
    if "stringValue" in value:
        text = value["stringValue"]
        if not isinstance(text, str):
            raise BodyError(where, "stringValue: expected a string")
        return text
    if "intValue" in value:
        number = value["intValue"]
        if isinstance(number, str) and re.fullmatch(r"-?\d+", number.strip()):
            return int(number)
        if isinstance(number, int) and not isinstance(number, bool):
            return number
        raise BodyError(where, "intValue: expected an integer (or its decimal string)")
    if "doubleValue" in value:
        number = value["doubleValue"]
        if isinstance(number, int | float) and not isinstance(number, bool):
            return float(number)
        if isinstance(number, str):
            try:
                parsed = float(number)
            except ValueError:
                pass
            else:
                if math.isfinite(parsed) or number in ("NaN", "Infinity", "-Infinity"):
                    return parsed
        raise BodyError(where, "doubleValue: expected a number")
    if "boolValue" in value:
        flag = value["boolValue"]
        if not isinstance(flag, bool):
            raise BodyError(where, "boolValue: expected true or false")
        return flag
    if {"arrayValue", "kvlistValue", "bytesValue"} & value.keys():
        return COMPLEX
    return None


def _list(parent: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    items = parent.get(key)
    if items is None:
        return []
    path = f"{where}.{key}" if where != key else key
    if not isinstance(items, list):
        raise BodyError(path, "expected a list")
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise BodyError(f"{path}[{n}]", "expected an object")
    return items


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BodyError(where, "expected an object")
    return value


def _json_attributes(parent: Mapping[str, Any], where: str) -> list[tuple[str, Any]]:
    """``[{"key": …, "value": {…}}, …]`` as (key, raw AnyValue) pairs."""
    pairs = []
    for n, item in enumerate(_list(parent, "attributes", where)):
        key = item.get("key")
        if not isinstance(key, str):
            raise BodyError(f"{where}.attributes[{n}].key", "expected a string")
        pairs.append((key, item.get("value")))
    return pairs


def _hex_id(value: object, size: int, where: str) -> str:
    """A trace or span id: OTLP/JSON writes them as hex (not base64, as proto3 JSON would)."""
    if isinstance(value, str) and len(value) == 2 * size:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) == size and any(raw):
            return raw.hex()
    raise BodyError(where, f"expected {2 * size} hex digits, not all zero (OTLP/JSON ids are hex)")


def _nanos(value: object, where: str) -> int:
    """Nanoseconds since the epoch: a decimal string (proto3 JSON's fixed64) or a number."""
    if value is None:
        return 0
    nanos = -1
    if isinstance(value, int) and not isinstance(value, bool):
        nanos = value
    elif isinstance(value, float) and value.is_integer():
        nanos = int(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        nanos = int(value)  # no more digits than a fixed64 has: int() of a huge string is slow
    if 0 <= nanos <= _MAX_FIXED64:
        return nanos
    raise BodyError(
        where, "expected nanoseconds since the epoch (a decimal string or number, fixed64)"
    )
