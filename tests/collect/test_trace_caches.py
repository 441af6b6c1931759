"""OTLP protobuf conversion remembers what repeats (attribute and event encodings, the
columns of spans with the same attributes): what it remembers must never change a row."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from flywheel.collect.record import Recorder
from flywheel.collect.traces import Intake, TraceMapper
from flywheel.collect.units import Pseudonymizer
from flywheel.collect.writer import Item, Row
from flywheel.spec import Spec

NS = 1_000_000_000
T0 = 1_750_000_000 * NS
SPEC: dict[str, Any] = {
    "knobs": {"temperature": [0.0, 0.7], "max_turns": {"min": 1, "max": 3}},
    "context": {"task": ["chat", "summarise"]},
    "reward": {"formula": "rating"},
    "signals": {"rating": {"min": 1, "max": 5}, "verdict": {"kind": "text"}},
}


class _Nowhere:
    def append(self, table: str, row: Row) -> None:
        raise AssertionError("rows are returned, not written")

    def append_many(self, items: Iterable[Item]) -> None:
        raise AssertionError("rows are returned, not written")


def mapper() -> TraceMapper:
    spec = Spec.from_dict(SPEC)
    units = Pseudonymizer(b"salt")
    return TraceMapper(spec, Recorder(spec, _Nowhere(), units, time.time), units)


def value(v: object) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def span(n: int, attributes: dict[str, object], events: list[bytes] = ()) -> bytes:  # type: ignore[assignment]
    message = Span(
        trace_id=(n + 1).to_bytes(16, "big"),
        span_id=(n + 1).to_bytes(8, "big"),
        name="chat",
        start_time_unix_nano=T0 + n * NS,
        end_time_unix_nano=T0 + n * NS + NS // 2,
        attributes=[KeyValue(key=k, value=value(v)) for k, v in attributes.items()],
    )
    # events as their bytes, so they can be written as no encoder of this package writes them
    return message.SerializeToString() + b"".join(_field(11, e) for e in events)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def request(spans: list[bytes]) -> bytes:
    scope = b"".join(_field(2, s) for s in spans)
    return _field(1, _field(2, scope))


def same(a: object, b: object) -> bool:
    """Equal, and of the same types (1, 1.0 and True are not the same; nor are 0.0 and -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def summary(intake: Intake) -> tuple[Any, ...]:
    return intake.rows, intake.spans, intake.decisions, intake.signals, intake.rejected


def fresh(spans: list[bytes]) -> tuple[list[Any], list[str]]:
    """The rows of each span converted alone, by a mapper that has seen nothing before."""
    rows: list[Any] = []
    reasons: list[str] = []
    for s in spans:
        intake = mapper().convert(request([s]), "protobuf")
        rows += intake.rows
        reasons += intake.reasons
    return rows, reasons


def test_equal_values_of_other_types_never_share_a_remembered_entry() -> None:
    base = {"flywheel.context.task": "chat", "flywheel.knob.temperature": 0.7}
    turns: list[object] = [2, 2.0, True, 2, 1.0, 1, True, 2.5, "2", 2]
    temperatures: list[object] = [0.0, -0.0, 0.0, 0, False, -0.0]
    spans = [span(i, {**base, "flywheel.knob.max_turns": t}) for i, t in enumerate(turns)]
    spans += [
        span(100 + i, {**base, "flywheel.knob.max_turns": 1, "flywheel.knob.temperature": t})
        for i, t in enumerate(temperatures)
    ]
    expected_rows, expected_reasons = fresh(spans)
    one = mapper()
    for _ in range(3):  # the first time fills what is remembered; the others take from it
        intake = one.convert(request(spans), "protobuf")
        assert same(intake.rows, expected_rows)
        assert intake.rejected == 4  # True and 2.5 as a turn count; False as a temperature
        # ("2" is a number given as a string: it is taken as 2, never as the remembered 2)
        assert intake.reasons == expected_reasons[:3]
    decisions = [row for table, row in intake.rows if table == "decisions"]
    assert [row[-1] for row in decisions[:7]] == [2, 2, 2, 1, 1, 2, 2]
    assert all(type(row[-1]) is int for row in decisions)
    assert [math.copysign(1, row[-2]) for row in decisions[7:]] == [1, -1, 1, 1, -1]


def test_events_take_the_time_their_encoding_sets() -> None:
    name = _field(2, b"gen_ai.evaluation.result")
    result = b"".join(
        _field(3, KeyValue(key=k, value=value(v)).SerializeToString())
        for k, v in {
            "gen_ai.evaluation.name": "rating",
            "gen_ai.evaluation.score.value": 4.0,
        }.items()
    )

    def at(seconds: int) -> bytes:
        return b"\x09" + struct.pack("<Q", T0 + seconds * NS)

    events = [
        at(1) + name + result,  # as encoders write it
        at(2) + name + result,
        name + result,  # no time: the span's end
        name + result + at(3),  # the time last
        at(4) + name + result + at(5),  # twice: the last one counts
        at(6) + name + result + at(5),
        at(7) + name + result + b"\x09" + bytes(8),  # set to 0 at the end: the span's end
    ]
    attributes = {"flywheel.context.task": "chat", "flywheel.knob.temperature": 0.7}
    attributes["flywheel.knob.max_turns"] = 1
    spans = [span(i, attributes, [e]) for i, e in enumerate(events)]
    spans += [span(50 + i, attributes, events) for i in range(2)]
    expected_rows, _ = fresh(spans)
    one = mapper()
    for _ in range(2):
        intake = one.convert(request(spans), "protobuf")
        assert same(intake.rows, expected_rows)
    times = [row[4] - T0 / NS for table, row in intake.rows if table == "signals"][:7]
    assert times == [1, 2, 0.5 + 2, 3, 5, 5, 0.5 + 6]


def test_the_remembered_request_type_reads_what_the_real_one_reads() -> None:
    spans = [
        span(i, {"flywheel.context.task": "chat", "gen_ai.usage.input_tokens": i}) for i in range(3)
    ]
    body = request(spans)
    real = ExportTraceServiceRequest.FromString(body)
    assert len(real.resource_spans[0].scope_spans[0].spans) == 3
    intake = mapper().convert(body, "protobuf")
    assert (intake.spans, intake.rejected) == (3, 3)
    assert "params.temperature: is required" in intake.reasons[0]
