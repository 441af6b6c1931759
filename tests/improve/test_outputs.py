"""Inputs and outputs of an AI product's decisions: through the SDK, over HTTP and from
OTLP spans; redacted, validated, forgotten; and the "ready to tune" event at the webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

import flywheel
from flywheel.collect.traces import decision_id
from flywheel.errors import ValueNotAllowedError, WrongTypeError
from flywheel.spec import BUILTIN_SIGNALS, Spec
from tests.conftest import HOUR, T0, WAIT, Clock, wait_for
from tests.improve.assistant import AS_OF, SFT, SPEC, play
from tests.server.test_app import serving
from tests.server.test_traces import GENAI, NS, ids_of, make_spans
from tests.server.test_traces import SPEC as TRACES_SPEC

CONTEXT = {"topic": "tech"}


def texts(wheel: flywheel.Wheel) -> list[tuple[str | None, str | None]]:
    rows = sorted(wheel.aligned(as_of=T0 + HOUR).to_pylist(), key=lambda r: r["ts"])
    return [(r["input"], r["output"]) for r in rows]


def test_input_and_output_are_built_in_text_signals() -> None:
    assert BUILTIN_SIGNALS["input"] == BUILTIN_SIGNALS["output"] == ("last", "text")
    spec = Spec.from_dict(SPEC)
    assert spec.signals["input"].kind == spec.signals["output"].kind == "text"
    # a knob named output takes the built-in one's place; the digest ignores [datasets]
    other = Spec.from_dict({**SPEC, "knobs": {**SPEC["knobs"], "output": ["a", "b"]}})
    assert "output" not in other.signals
    tuned = Spec.from_dict({**SPEC, "datasets": {"sft_min": 10, "min_reward": 1}})
    assert tuned.digest == spec.digest and tuned.datasets.min_reward == 1.0
    assert tuned.datasets.declared and not spec.datasets.declared


def test_decide_records_its_input_at_the_decisions_time_and_output_follows(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    wheel = make_wheel(SPEC)
    d = wheel.decide(CONTEXT, unit="ada", input="Reset my password, I am ada@example.com")
    clock.now += 5
    wheel.output(d, "Done: a link went to ada@example.com.")
    plain = wheel.decide(CONTEXT)  # no input: a decision as before, and nothing else
    wheel.flush()
    signals = wheel.store.query(
        "SELECT CAST(decision_id AS VARCHAR) AS id, name, text, epoch(ts) AS ts FROM signals"
        " ORDER BY ts"
    ).to_pylist()
    assert signals == [
        {"id": d.id, "name": "input", "text": "Reset my password, I am [email]", "ts": T0},
        {"id": d.id, "name": "output", "text": "Done: a link went to [email].", "ts": T0 + 5},
    ]
    assert texts(wheel) == [
        ("Reset my password, I am [email]", "Done: a link went to [email]."),
        (None, None),
    ]
    assert plain.id != d.id
    assert wheel.forget("ada")["signals"] == 2
    assert texts(wheel) == [(None, None)]


def test_a_refused_input_or_output_records_nothing(
    make_wheel: Callable[..., flywheel.Wheel],
) -> None:
    wheel = make_wheel(SPEC)
    with pytest.raises(WrongTypeError, match="input"):
        wheel.decide(CONTEXT, input=42)  # type: ignore[arg-type]
    with pytest.raises(ValueNotAllowedError, match="input"):
        wheel.decide(CONTEXT, input="a\x00b")
    d = wheel.decide(CONTEXT)
    with pytest.raises(WrongTypeError, match="output"):
        wheel.output(d, None)  # type: ignore[arg-type]
    with pytest.raises(WrongTypeError, match="decision"):
        wheel.output("not-an-id", "text")
    assert wheel.summary().decisions == 1 and wheel.summary().signals == 0


def test_inputs_and_outputs_over_http(tmp_path: Path) -> None:
    wheel = flywheel.open(SPEC, store=f"duckdb:///{tmp_path / 'api.duckdb'}", refresh=0)
    try:
        with serving(wheel) as client:
            body = {"context": CONTEXT, "input": "Mail me at ada@example.com"}
            status, decision = client.call("POST", "/v1/decide", body)
            assert status == 200 and decision["ok"]
            item = {
                "decision": decision["id"],
                "name": "output",
                "value": "Sent to ada@example.com",
            }
            rated = {"decision": decision["id"], "rating": 5}
            status, answer = client.call("POST", "/v1/signals", {"signals": [item, rated]})
            assert (status, answer["recorded"]) == (200, 2)
            status, refused = client.call(
                "POST", "/v1/decide", {"context": CONTEXT, "input": "a\u0000b"}
            )
            assert status == 422 and refused["errors"][0]["field"] == "input"
            status, refused = client.call("POST", "/v1/decide", {"context": CONTEXT, "input": 7})
            assert status == 422 and refused["errors"][0]["field"] == "input"
        rows = wheel.aligned().to_pylist()
        assert [(r["input"], r["output"], r["reward"]) for r in rows] == [
            ("Mail me at [email]", "Sent to [email]", 1.0)
        ]
        found = wheel.training_set("sft").rows
        assert found[0]["messages"][1] == {"role": "assistant", "content": "Sent to [email]"}
    finally:
        wheel.close()


def _event(name: str, after: float, **attributes: Any) -> tuple[str, dict[str, Any], float]:
    return (name, attributes, after)


def test_otlp_events_and_attributes_become_the_input_and_output(tmp_path: Path) -> None:
    wheel = flywheel.open(
        Spec.from_dict(TRACES_SPEC), store=f"duckdb:///{tmp_path / 't.duckdb'}", refresh=0
    )
    try:
        choices = [
            _event("gen_ai.user.message", 0.5, content="Summarise: call ada@example.com"),
            _event("gen_ai.choice", 2.0, index=0, message="Ada wants a call."),
            _event("gen_ai.choice", 2.0, index=1, message="A second choice."),
            _event("gen_ai.evaluation.result", 2.5, **{"gen_ai.evaluation.name": "helpfulness",
                                                     "gen_ai.evaluation.score.value": 0.8}),
        ]  # fmt: skip
        older = [
            _event("gen_ai.content.prompt", 0.1, **{"gen_ai.prompt": "Old style prompt"}),
            _event("gen_ai.content.completion", 1.0, **{"gen_ai.completion": "Old style answer"}),
        ]
        plain = {k: v for k, v in GENAI.items() if not k.startswith("gen_ai.usage")}
        spans = make_spans(
            [
                {"attributes": plain, "events": choices},
                {"attributes": plain, "events": choices},
                # the same attributes, and events without a note: the remembered columns
                {"attributes": plain, "events": [choices[0], choices[1], choices[3]]},
                {"attributes": plain, "events": older},
                {
                    "attributes": {
                        **plain,
                        "gen_ai.prompt": "Attribute prompt",
                        "gen_ai.completion": "Attribute answer",
                    }
                },
                {"attributes": plain, "events": [_event("gen_ai.choice", 1.0, finish_reason="x")]},
            ]
        )
        intake = wheel.traces(encode_spans(spans).SerializeToString(), "protobuf")
        assert (intake.decisions, intake.rejected) == (6, 0)
        assert intake.notes == {
            "ignored gen_ai.choice events of choices after the first": 2,
            "ignored gen_ai.choice events without text (an attribute gen_ai.completion,"
            " content, message)": 1,
        }
        wheel.flush()
        rows = {r["decision_id"]: r for r in wheel.aligned(as_of=T0 + HOUR).to_pylist()}
        got = [rows[decision_id(*ids_of(s))] for s in spans]
        assert [(r["input"], r["output"]) for r in got] == [
            ("Summarise: call [email]", "Ada wants a call."),
            ("Summarise: call [email]", "Ada wants a call."),
            ("Summarise: call [email]", "Ada wants a call."),
            ("Old style prompt", "Old style answer"),
            ("Attribute prompt", "Attribute answer"),
            (None, None),
        ]
        assert got[0]["helpfulness"] == 0.8
        times = wheel.store.query(
            "SELECT s.name, epoch(s.ts) - epoch(d.ts) AS after FROM signals s"
            " JOIN decisions d ON d.id = s.decision_id WHERE d.id = CAST(? AS UUID)"
            " ORDER BY s.name",
            [decision_id(*ids_of(spans[0]))],
        ).to_pylist()
        assert times == [
            {"name": "helpfulness", "after": 2.5},
            {"name": "input", "after": 0.5},
            {"name": "output", "after": 2.0},
        ]
        assert wheel.summary().signals == 13  # 3, 3, 3, 2, 2 and 0
        again = wheel.traces(encode_spans(spans).SerializeToString(), "protobuf")
        assert again.decisions == 6
        wheel.flush()
        assert wheel.summary().signals == 13  # sent again: nothing new
    finally:
        wheel.close()


def test_otlp_json_events_become_the_input_and_output(tmp_path: Path) -> None:
    wheel = flywheel.open(
        Spec.from_dict(TRACES_SPEC), store=f"duckdb:///{tmp_path / 't.duckdb'}", refresh=0
    )

    def text(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "chat",
        "startTimeUnixNano": str(int(T0 * NS)),
        "endTimeUnixNano": str(int((T0 + 2) * NS)),
        "attributes": [
            text("gen_ai.request.model", "gpt-4o"),
            {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.7}},
            {"key": "flywheel.knob.max_turns", "value": {"intValue": "2"}},
            text("flywheel.context.task", "chat"),
        ],
        "events": [
            {
                "timeUnixNano": str(int((T0 + 1) * NS)),
                "name": "gen_ai.user.message",
                "attributes": [text("content", "Hello from bob@example.com")],
            },
            {
                "timeUnixNano": str(int((T0 + 2) * NS)),
                "name": "gen_ai.choice",
                "attributes": [
                    {"key": "index", "value": {"intValue": "0"}},
                    text("message", "Hello, bob."),
                ],
            },
            {"name": ["not", "a", "name"]},
        ],
    }
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    try:
        intake = wheel.traces(json.dumps(body).encode(), "json")
        assert (intake.decisions, intake.rejected, intake.notes) == (1, 0, {})
        wheel.flush()
        row = wheel.aligned(as_of=T0 + HOUR).to_pylist()[0]
        assert (row["input"], row["output"]) == ("Hello from [email]", "Hello, bob.")
    finally:
        wheel.close()


class _Hook:
    """A webhook on loopback that records the JSON bodies it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def hook() -> Iterator[_Hook]:
    server = _Hook()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()
    thread.join(WAIT)


def test_ready_to_tune_reaches_the_webhook_once(
    hook: _Hook, make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    spec = {**SPEC, "datasets": {"sft_min": len(SFT)}, "alerts": {"webhook": hook.url}}
    wheel = make_wheel(spec)
    play(wheel, clock)
    wheel.learn(AS_OF)
    wheel.learn(AS_OF, force=True)
    assert wait_for(lambda: len(hook.bodies) >= 1)
    wheel.close()  # flushes the alerts
    assert [(b["event"], b["reason"], b["actor"]) for b in hook.bodies] == [
        ("ready", f"ready to tune: {len(SFT)} SFT rows (sft_min is {len(SFT)})", "datasets")
    ]
    assert hook.bodies[0]["flywheel"] == "assistant"
    assert hook.bodies[0]["detail"]["rows"] == len(SFT)
