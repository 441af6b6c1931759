"""OTLP/HTTP trace intake on a real uvicorn server, fed by the real OpenTelemetry SDK exporter
(and by hand-written OTLP/JSON), checked through what the wheel stores."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flywheel
from flywheel.collect.traces import NAMESPACE, TraceMapper, decision_id
from flywheel.server import keys as api_keys
from flywheel.spec import Spec
from tests.conftest import T0, WAIT
from tests.server.test_app import Client, serving

NS = 1_000_000_000
SPEC: dict[str, Any] = {
    "knobs": {
        "model": ["gpt-4o", "claude-sonnet"],
        "temperature": [0.2, 0.7],
        "max_turns": {"min": 1, "max": 3},
    },
    "context": {"task": ["chat", "summarise"]},
    "reward": {"formula": "helpfulness"},
    "signals": {
        "helpfulness": {"min": 0, "max": 1},
        "tokens": "sum",
        "verdict": {"kind": "text"},
        "grounded": "max",
    },
    "traces": {
        "map": {
            "gen_ai.request.model": "model",
            "gen_ai.request.temperature": "temperature",
            "gen_ai.usage.output_tokens": "tokens",
        }
    },
}
GENAI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.request.temperature": 0.7,
    "gen_ai.usage.input_tokens": 812,
    "gen_ai.usage.output_tokens": 120,
    "flywheel.knob.max_turns": 2,
    "flywheel.context.task": "chat",
}


@pytest.fixture
def wheel(tmp_path: Path) -> Iterator[flywheel.Wheel]:
    opened = flywheel.open(
        Spec.from_dict(SPEC), store=f"duckdb:///{tmp_path / 'traces.duckdb'}", refresh=0
    )
    yield opened
    opened.close()


@pytest.fixture(params=[0, 1], ids=["in-process", "worker-process"])
def served(
    wheel: flywheel.Wheel, request: pytest.FixtureRequest
) -> Iterator[tuple[Client, flywheel.Wheel]]:
    """A server converting spans in its own process, or in a worker process: the same
    requests must give the same answers and rows."""
    with serving(wheel, workers=request.param) as client:
        yield client, wheel


def make_spans(
    specs: Sequence[Mapping[str, Any]], resource: Mapping[str, Any] | None = None
) -> list[ReadableSpan]:
    """Finished spans from the real SDK: each entry gives ``attributes``, optionally
    ``events`` (name, attributes, seconds after the start) and ``start`` (epoch seconds)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(dict(resource or {})))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for n, item in enumerate(specs):
        start = int((item.get("start", T0 + n)) * NS)
        span = tracer.start_span(item.get("name", "chat gpt-4o"), start_time=start)
        span.set_attributes(dict(item["attributes"]))
        for name, attributes, after in item.get("events", []):
            span.add_event(name, attributes, timestamp=start + int(after * NS))
        span.end(end_time=start + 3 * NS)
    provider.shutdown()
    return list(memory.get_finished_spans())


def evaluation(name: str, score: float | None = None, label: str | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gen_ai.evaluation.name": name}
    if score is not None:
        attributes["gen_ai.evaluation.score.value"] = score
    if label is not None:
        attributes["gen_ai.evaluation.score.label"] = label
    return attributes


def ids_of(span: ReadableSpan) -> tuple[str, str]:
    context = span.context
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def post(
    client: Client,
    body: bytes,
    content_type: str,
    encoding: str | None = None,
    key: str | None = None,
) -> tuple[int, str, bytes]:
    headers = {"content-type": content_type}
    if encoding is not None:
        headers["content-encoding"] = encoding
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        client.base + "/v1/traces", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as answer:
            return answer.status, answer.headers["content-type"], answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["content-type"], err.read()


def counts(wheel: flywheel.Wheel) -> tuple[int, int]:
    row = wheel.store.query(
        "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM signals) AS s"
    ).to_pylist()[0]
    return int(row["d"]), int(row["s"])


def stored_signals(wheel: flywheel.Wheel) -> dict[tuple[str, str], dict[str, Any]]:
    rows = wheel.store.query(
        "SELECT CAST(decision_id AS VARCHAR) AS id, name, value, text, epoch(ts) AS ts, key"
        " FROM signals"
    ).to_pylist()
    return {(r["id"], r["name"]): r for r in rows}


def test_the_real_exporter_sends_decisions_and_signals(
    served: tuple[Client, flywheel.Wheel],
) -> None:
    client, wheel = served
    spans = make_spans(
        [
            {
                "attributes": {**GENAI, "gen_ai.conversation.id": "conv-1"},
                "events": [("gen_ai.evaluation.result", evaluation("helpfulness", 0.9), 2.0)],
            },
            {
                "attributes": {
                    **GENAI,
                    "gen_ai.conversation.id": "conv-1",
                    "gen_ai.request.model": "claude-sonnet",
                    "gen_ai.request.temperature": 0.2,
                    "flywheel.context.task": "summarise",
                },
                "events": [("gen_ai.evaluation.result", evaluation("helpfulness", 0.4), 5.0)],
            },
            {"attributes": {**GENAI, "gen_ai.conversation.id": "conv-2"}},
        ]
    )
    exporter = OTLPSpanExporter(endpoint=client.base + "/v1/traces")
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    # a 2xx means durable: read the store directly, before any flush
    assert counts(wheel) == (3, 5)  # 3 decisions; 3 token counts and 2 evaluations

    rows = {r["decision_id"]: r for r in wheel.aligned(as_of=T0 + 3600).to_pylist()}
    first, second, third = (decision_id(*ids_of(s)) for s in spans)
    assert set(rows) == {first, second, third}
    assert uuid.UUID(first) == uuid.uuid5(NAMESPACE, "".join(ids_of(spans[0])))
    assert {k: rows[second][k] for k in ("model", "temperature", "max_turns", "task")} == {
        "model": "claude-sonnet",
        "temperature": 0.2,
        "max_turns": 2,
        "task": "summarise",
    }
    assert rows[first]["ts"].timestamp() == T0  # the span's start
    assert (rows[first]["helpfulness"], rows[first]["tokens"]) == (0.9, 120.0)
    assert rows[first]["policy"] == "logged" and rows[first]["reward"] == 0.9
    assert rows[third]["helpfulness"] is None and rows[third]["status"] == "pending"
    signals = stored_signals(wheel)
    assert signals[(second, "helpfulness")]["ts"] == T0 + 1 + 5  # the event's time
    assert signals[(second, "tokens")]["ts"] == T0 + 1 + 3  # the span's end
    # the conversation is the unit, pseudonymised, and forget() reaches it
    assert rows[first]["unit"] == rows[second]["unit"] != rows[third]["unit"]
    assert "conv-1" not in {rows[first]["unit"], rows[third]["unit"]}
    assert wheel.forget("conv-1")["decisions"] == 2
    assert counts(wheel) == (1, 1)


def test_gzip_and_a_retry_store_each_span_once(served: tuple[Client, flywheel.Wheel]) -> None:
    client, wheel = served
    spans = make_spans(
        [
            {
                "attributes": {**GENAI, "gen_ai.conversation.id": f"conv-{n % 7}"},
                "events": [("gen_ai.evaluation.result", evaluation("helpfulness", 0.5), 1.0)],
            }
            for n in range(200)
        ]
    )
    exporter = OTLPSpanExporter(endpoint=client.base + "/v1/traces", compression=Compression.Gzip)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert counts(wheel) == (200, 400)
    assert exporter.export(spans) == SpanExportResult.SUCCESS  # the exporter retries
    assert exporter.export(spans[50:120]) == SpanExportResult.SUCCESS  # part of it, again
    exporter.shutdown()
    assert counts(wheel) == (200, 400)
    assert wheel.aligned().num_rows == 200
    # the same spans, uncompressed and in one request with their repeats, change nothing
    status, _, _ = post(client, encode_spans(spans + spans[:10]).SerializeToString(), PROTOBUF)
    assert status == 200 and counts(wheel) == (200, 400)


PROTOBUF = "application/x-protobuf"
TRACE = "5B8EFFF798038103D269B633813FC60C"  # hex, as OTLP/JSON writes ids (any case)
SPAN = "EEE19B7EC3C1B174"


def json_request(*spans: dict[str, Any], resource: list[Any] | None = None) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": resource or []},
                "scopeSpans": [{"scope": {"name": "app"}, "spans": list(spans)}],
            }
        ]
    }


def json_span(span_id: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}  # int64 as proto3 JSON writes it
        if isinstance(v, float):
            return {"doubleValue": v}
        return {"stringValue": v}

    return {
        "traceId": TRACE,
        "spanId": span_id,
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": str(int(T0 * NS)),
        "endTimeUnixNano": str(int((T0 + 2) * NS)),
        "attributes": [{"key": k, "value": value(v)} for k, v in attributes.items()],
        "events": [
            {
                "timeUnixNano": str(int((T0 + 60) * NS)),
                "name": "gen_ai.evaluation.result",
                "attributes": [
                    {"key": "gen_ai.evaluation.name", "value": {"stringValue": "helpfulness"}},
                    {"key": "gen_ai.evaluation.score.value", "value": {"doubleValue": 0.75}},
                ],
            }
        ],
    }


NO_TASK = {k: v for k, v in GENAI.items() if k != "flywheel.context.task"}


def test_json_bodies_with_hex_ids_plain_and_gzip(served: tuple[Client, flywheel.Wheel]) -> None:
    client, wheel = served
    task = [{"key": "flywheel.context.task", "value": {"stringValue": "chat"}}]
    body = json.dumps(json_request(json_span(SPAN, NO_TASK), resource=task)).encode()
    status, content_type, answer = post(client, body, "application/json")
    assert (status, content_type, json.loads(answer)) == (200, "application/json", {})
    ident = str(uuid.uuid5(NAMESPACE, TRACE.lower() + SPAN.lower()))
    row = wheel.aligned(as_of=T0 + 3600).to_pylist()
    assert [(r["decision_id"], r["task"], r["max_turns"], r["helpfulness"]) for r in row] == [
        (ident, "chat", 2, 0.75)
    ]
    assert stored_signals(wheel)[(ident, "helpfulness")]["ts"] == T0 + 60
    # gzip'd JSON; a span attribute beats its resource's, flywheel.* beats a mapped key
    overrides = {"flywheel.context.task": "summarise", "flywheel.knob.model": "claude-sonnet"}
    other = json_span("00000000000000a1", {**NO_TASK, **overrides})
    status, _, answer = post(
        client, gzip.compress(json.dumps(json_request(other, resource=task)).encode()),
        "application/json; charset=utf-8", encoding="gzip",
    )  # fmt: skip
    assert (status, json.loads(answer)) == (200, {})
    second = wheel.store.query(
        "SELECT task, model FROM decisions WHERE id = ?",
        [str(uuid.uuid5(NAMESPACE, TRACE.lower() + "00000000000000a1"))],
    ).to_pylist()
    assert second == [{"task": "summarise", "model": "claude-sonnet"}]
    assert counts(wheel) == (2, 4)


def test_unusable_spans_are_rejected_whole_and_counted(
    served: tuple[Client, flywheel.Wheel],
) -> None:
    client, wheel = served
    no_model = {k: v for k, v in GENAI.items() if k != "gen_ai.request.model"}
    spans = make_spans(
        [
            {"attributes": GENAI},
            {"attributes": no_model},
            {"attributes": {**GENAI, "gen_ai.request.model": "llama-3"}},
            {"name": "GET /health", "attributes": {"http.request.method": "GET"}},
            {"attributes": {**GENAI, "flywheel.knob.colour": "red"}},
            {  # a valid decision, but its evaluation breaks the signal's range: all or nothing
                "attributes": GENAI,
                "events": [("gen_ai.evaluation.result", evaluation("helpfulness", 7.0), 1.0)],
            },
        ]
    )
    status, content_type, body = post(client, encode_spans(spans).SerializeToString(), PROTOBUF)
    assert (status, content_type) == (200, PROTOBUF)
    partial = ExportTraceServiceResponse.FromString(body).partial_success
    assert partial.rejected_spans == 5
    message = partial.error_message
    assert message.startswith("rejected 5 of 6 spans: span ")
    assert "params.model: is required" in message
    assert "'llama-3' is not one of" in message
    assert "map to no knob, context feature or signal" in message
    assert message.endswith("; and 2 more")
    assert counts(wheel) == (1, 1)  # the first span: its decision and its token count
    assert wheel.aligned().column("decision_id").to_pylist() == [decision_id(*ids_of(spans[0]))]

    # the same in OTLP/JSON: int64 counts as strings
    body_json = json.dumps(json_request(json_span(SPAN, NO_TASK))).encode()
    status, content_type, answer = post(client, body_json, "application/json")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(answer)["partialSuccess"]["rejectedSpans"] == "1"
    assert "context.task: is required" in json.loads(answer)["partialSuccess"]["errorMessage"]
    assert counts(wheel) == (1, 1)


def test_evaluation_events_become_signals_on_their_decision(
    served: tuple[Client, flywheel.Wheel],
) -> None:
    client, wheel = served
    spans = make_spans(
        [
            {
                "attributes": GENAI,
                "events": [
                    ("gen_ai.evaluation.result", evaluation("Helpfulness", 0.25), 1.0),
                    ("gen_ai.evaluation.result", evaluation("verdict", 0.9, "mostly right"), 2.0),
                    ("gen_ai.evaluation.result", evaluation("grounded", label="Pass"), 3.0),
                    ("gen_ai.evaluation.result", evaluation("toxicity", 0.01), 4.0),
                    ("gen_ai.content.prompt", {"gen_ai.prompt": "hello"}, 0.0),  # the input
                    ("gen_ai.tool.message", {"content": "42"}, 0.5),  # nothing of the spec's
                ],
            }
        ]
    )
    status, _, body = post(client, encode_spans(spans).SerializeToString(), PROTOBUF)
    partial = ExportTraceServiceResponse.FromString(body).partial_success
    assert status == 200 and partial.rejected_spans == 0
    assert "ignored evaluation 'toxicity'" in partial.error_message  # a note, not a rejection
    ident = decision_id(*ids_of(spans[0]))
    signals = stored_signals(wheel)
    assert {name for _, name in signals} == {
        "helpfulness",
        "verdict",
        "grounded",
        "tokens",
        "input",
    }
    assert signals[(ident, "input")]["text"] == "hello"
    assert signals[(ident, "helpfulness")]["value"] == 0.25  # "Helpfulness" -> helpfulness
    assert signals[(ident, "helpfulness")]["ts"] == T0 + 1
    assert signals[(ident, "verdict")]["text"] == "mostly right"  # a text signal: the label
    assert signals[(ident, "grounded")]["value"] == 1.0  # a numeric one without a score
    # a numeric signal with neither a score nor a yes/no label rejects its span
    bad = make_spans(
        [
            {
                "start": T0 + 100,
                "attributes": GENAI,
                "events": [("gen_ai.evaluation.result", evaluation("grounded", label="meh"), 1)],
            }
        ]
    )
    status, _, body = post(client, encode_spans(bad).SerializeToString(), PROTOBUF)
    partial = ExportTraceServiceResponse.FromString(body).partial_success
    assert (status, partial.rejected_spans) == (200, 1)
    assert "grounded is numeric" in partial.error_message
    assert counts(wheel) == (1, 5)


def test_explicit_mappings_to_unit_and_conventions_for_signals_and_playbooks(
    tmp_path: Path,
) -> None:
    spec = {**SPEC, "traces": {"map": {**SPEC["traces"]["map"], "enduser.id": "unit"}}}
    with (
        flywheel.open(
            Spec.from_dict(spec), store=f"duckdb:///{tmp_path / 't.duckdb'}", refresh=0
        ) as wheel,
        serving(wheel) as client,
    ):
        attributes = {
            **GENAI,
            "enduser.id": "user-9",
            "gen_ai.conversation.id": "conv-9",  # the mapped unit wins
            "flywheel.signal.helpfulness": 1,
            "flywheel.playbook": 3,
            "flywheel.propensity": 0.5,
        }
        spans = make_spans([{"attributes": attributes}])
        exporter = OTLPSpanExporter(endpoint=client.base + "/v1/traces")
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        row = wheel.aligned().to_pylist()[0]
        assert (row["policy"], row["playbook"], row["propensity"]) == ("local", 3, 0.5)
        assert (row["helpfulness"], row["tokens"]) == (1.0, 120.0)
        assert wheel.forget("conv-9")["decisions"] == 0
        assert wheel.forget("user-9")["decisions"] == 1


def test_malformed_requests_get_one_error_shape_and_store_nothing(
    served: tuple[Client, flywheel.Wheel],
) -> None:
    client, wheel = served
    good = json_span(SPAN, GENAI)
    base64_ids = {**good, "traceId": "W47/95gDgQPSabYzgT/GDA==", "spanId": "7uGbfsPBsXQ="}
    bad_time = {**good, "startTimeUnixNano": "yesterday"}
    huge_time = {**good, "endTimeUnixNano": "9" * 300}
    bad_value = {
        **good,
        "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": 5}}],
    }
    valid_pb = encode_spans(make_spans([{"attributes": GENAI}])).SerializeToString()
    cases: list[tuple[bytes, str, str | None, int, str]] = [
        (b"\xff\xff\xff\xff", PROTOBUF, None, 400, "body"),
        (b"{not json", "application/json", None, 400, "body"),
        (b"[]", "application/json", None, 400, "body"),
        (json.dumps({"resourceSpans": {}}).encode(), "application/json", None, 400,
         "resourceSpans"),
        (json.dumps(json_request(good, base64_ids)).encode(), "application/json", None, 400,
         "resourceSpans[0].scopeSpans[0].spans[1].traceId"),
        (json.dumps(json_request(good, bad_time)).encode(), "application/json", None, 400,
         "resourceSpans[0].scopeSpans[0].spans[1].startTimeUnixNano"),
        (json.dumps(json_request(good, huge_time)).encode(), "application/json", None, 400,
         "resourceSpans[0].scopeSpans[0].spans[1].endTimeUnixNano"),
        (json.dumps(json_request(good, bad_value)).encode(), "application/json", None, 400,
         "resourceSpans[0].scopeSpans[0].spans[1].attributes[0].value"),
        (b"not gzip at all", "application/json", "gzip", 400, "body"),
        (gzip.compress(valid_pb)[:-12], PROTOBUF, "gzip", 400, "body"),
        (valid_pb, "text/plain", None, 415, "content-type"),
        (valid_pb, PROTOBUF, "br", 415, "content-encoding"),
    ]  # fmt: skip
    for body, content_type, encoding, expected, field in cases:
        status, answer_type, answer = post(client, body, content_type, encoding)
        assert status == expected, (field, status, answer)
        assert answer_type == "application/json"
        shape = json.loads(answer)
        assert set(shape) == {"ok", "status", "error", "errors"} and shape["ok"] is False
        assert shape["status"] == status
        assert shape["errors"][0]["field"] == field, shape
    assert counts(wheel) == (0, 0)  # the good span before each bad one was not stored either
    assert post(client, valid_pb, PROTOBUF)[0] == 200  # and the server still takes spans
    assert counts(wheel) == (1, 1)


def test_a_dead_worker_process_gets_the_error_shape_not_a_crash(wheel: flywheel.Wheel) -> None:
    import multiprocessing
    import os
    import signal

    valid_pb = encode_spans(make_spans([{"attributes": GENAI}])).SerializeToString()
    before = set(multiprocessing.active_children())
    with serving(wheel, workers=1) as client:
        (worker,) = set(multiprocessing.active_children()) - before
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        status, answer_type, answer = post(client, valid_pb, PROTOBUF)
        assert (status, answer_type) == (503, "application/json")
        shape = json.loads(answer)
        assert shape["ok"] is False and "worker process died" in shape["error"]
        assert client.call("GET", "/v1/status")[0] == 200  # the rest of the server works
    assert counts(wheel) == (0, 0)


def test_traces_need_the_ingest_scope(wheel: flywheel.Wheel) -> None:
    store = wheel.store
    ingest = api_keys.create(store, "ingest")[1]
    decide = api_keys.create(store, "decide")[1]
    body = encode_spans(make_spans([{"attributes": GENAI}])).SerializeToString()
    with serving(wheel, api_keys.KeyRing(store)) as client:
        status, content_type, answer = post(client, body, PROTOBUF)
        assert (status, content_type) == (401, "application/json")
        assert set(json.loads(answer)) == {"ok", "status", "error", "errors"}
        assert post(client, body, PROTOBUF, key="fw_nope_x")[0] == 401
        assert counts(wheel) == (0, 0)
        assert post(client, body, PROTOBUF, key=ingest)[0] == 200
        assert post(client, body, PROTOBUF, key=decide)[0] == 200  # scopes nest
        exporter = OTLPSpanExporter(
            endpoint=client.base + "/v1/traces", headers={"authorization": f"Bearer {ingest}"}
        )
        assert exporter.export(make_spans([{"attributes": GENAI}])) == SpanExportResult.SUCCESS
        exporter.shutdown()
    assert counts(wheel) == (2, 2)


def test_decision_ids_are_uuid5_of_the_trace_and_span_ids() -> None:
    for trace, span in [("0" * 31 + "1", "0" * 15 + "1"), ("ab" * 16, "cd" * 8)]:
        assert decision_id(trace, span) == str(uuid.uuid5(NAMESPACE, trace + span))


def test_values_seen_before_are_taken_as_the_first_time(wheel: flywheel.Wheel) -> None:
    """The mapper remembers valid values (and units, and evaluation names) to skip their
    checks: spans in any order, to a fresh mapper or a used one, give the same answer."""
    variants: list[dict[str, Any]] = [
        {},
        {"flywheel.knob.max_turns": True},  # equal to 1, but not an integer
        {"flywheel.knob.max_turns": 1},
        {"flywheel.knob.max_turns": 3.0},  # an integral double: the integer 3
        {"flywheel.knob.max_turns": 3.5},
        {"gen_ai.request.temperature": 0.2},
        {"gen_ai.request.temperature": 1},
        {"flywheel.knob.model": ["gpt-4o"]},  # an array
        {"flywheel.unit": 1},
        {"flywheel.unit": "1"},
        {"flywheel.unit": True},
        {"flywheel.unit": ["a"]},
        {"flywheel.context.task": "summarise", "flywheel.playbook": 2, "flywheel.propensity": 1},
        {"flywheel.playbook": 2},
        {"flywheel.signal.helpfulness": 2.0},  # out of its range
        {"flywheel.signal.helpfulness": 1},
    ]
    spans = make_spans(
        [
            {
                "attributes": {**GENAI, **variant},
                "events": [("gen_ai.evaluation.result", evaluation(name, score), 1.0)],
            }
            for variant in variants
            for name, score in [("helpfulness", 0.5), ("Helpfulness", 1.5)]
        ]
    )
    forward = encode_spans(spans).SerializeToString()
    backward = encode_spans(spans[::-1]).SerializeToString()
    first = TraceMapper(wheel.spec, wheel._recorder, wheel._units)
    second = TraceMapper(wheel.spec, wheel._recorder, wheel._units)
    fresh_forward, fresh_backward = (
        first.convert(forward, "protobuf"),
        second.convert(backward, "protobuf"),
    )
    assert first.convert(backward, "protobuf") == fresh_backward
    assert second.convert(forward, "protobuf") == fresh_forward
    assert (fresh_forward.spans, fresh_forward.decisions) == (32, 8)
    decisions = [row for table, row in fresh_forward.rows if table == "decisions"]
    turns = [row[-1] for row in decisions]
    assert turns == [2, 1, 3, 2, 2, 2, 2, 2] and type(turns[2]) is int  # 3.0 became 3
