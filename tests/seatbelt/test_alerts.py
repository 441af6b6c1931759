"""Alerts leave the process: events POSTed to a real local webhook, retried, counted, never
blocking the caller; the audit trail relayed once per entry; ``flywheel status --check``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app
from flywheel.seatbelt import breaker
from flywheel.seatbelt.alerts import RELAYED_KEY, Alerts, monitor_event, relay
from flywheel.seatbelt.monitors import Check
from flywheel.spec import Alerts as AlertsConfig
from flywheel.store import Store
from tests.conftest import WAIT, Clock, reserved_port, wait_for

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "name": "stories",
    "knobs": {"opening": ["question", "suspense"], "twists": [0, 1, 2]},
    "context": {"genre": ["thriller", "romance"]},
    "reward": {"formula": "converted"},
}


class Hook:
    """A webhook on loopback: answers each POST with the next code of ``answers`` (200 once
    they run out) and records what it was sent; while ``gate`` is set to an unset event, each
    request waits for it (``entered`` says one is waiting)."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.tries: list[tuple[str, dict[str, Any], int]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.gate is not None:
                    hook.entered.set()
                    hook.gate.wait(WAIT)
                with hook.lock:
                    code = hook.answers.pop(0) if hook.answers else 200
                    hook.tries.append((self.headers["Content-Type"], json.loads(body), code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token"

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, body, code in self.tries if code < 300]

    def codes(self) -> list[int]:
        with self.lock:
            return [code for _, _, code in self.tries]


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    if server.gate is not None:
        server.gate.set()
    server.server.shutdown()
    server.server.server_close()
    thread.join(WAIT)


@pytest.fixture
def make_alerts() -> Iterator[Callable[..., Alerts]]:
    made: list[Alerts] = []

    def make(url: str | None, retries: int = 5, **kwargs: Any) -> Alerts:
        kwargs.setdefault("backoff", 0.01)
        alerts = Alerts(AlertsConfig(url, retries, 5.0), "stories", **kwargs)
        made.append(alerts)
        return alerts

    yield make
    for alerts in made:
        alerts.close(WAIT)


def test_an_event_arrives_as_the_documented_json(
    hook: Hook, make_alerts: Callable[..., Alerts]
) -> None:
    alerts = make_alerts(hook.url)
    assert alerts.enabled
    alerts.send(
        {
            "event": "halt",
            "ts": NOW,
            "reason": "drift: genre shifted",
            "detail": {"p": 0.001},
            "actor": "seatbelt",
        }
    )
    alerts.send({"event": "change", "reason": "knob added"})  # missing keys are null
    check = Check("volume.decisions", False, False, "fell to 40% of the baseline", {"n": 4})
    alerts.send(monitor_event(check, now=NOW))
    assert alerts.flush(WAIT)
    assert {content_type for content_type, _, _ in hook.tries} == {"application/json"}
    assert hook.bodies() == [
        {
            "flywheel": "stories",
            "event": "halt",
            "ts": "2026-01-02T03:04:05+00:00",
            "reason": "drift: genre shifted",
            "detail": {"p": 0.001},
            "actor": "seatbelt",
        },
        {
            "flywheel": "stories",
            "event": "change",
            "ts": None,
            "reason": "knob added",
            "detail": None,
            "actor": None,
        },
        {
            "flywheel": "stories",
            "event": "monitor",
            "ts": "2026-01-02T03:04:05+00:00",
            "reason": "volume.decisions: fell to 40% of the baseline",
            "detail": check.as_dict(),
            "actor": "seatbelt",
        },
    ]
    assert (alerts.sent, alerts.failed, alerts.dropped) == (3, 0, 0)


@pytest.mark.parametrize(
    ("answers", "retries", "codes", "sent"),
    [
        ([503, 503], 5, [503, 503, 200], 1),  # retried until it is taken
        ([429], 5, [429, 200], 1),  # too many requests: retried too
        ([400], 5, [400], 0),  # refused: never retried
        ([500, 502, 504], 2, [500, 502, 504], 0),  # still failing after the retries
    ],
)
def test_a_failed_post_is_retried_unless_refused(
    hook: Hook,
    make_alerts: Callable[..., Alerts],
    caplog: pytest.LogCaptureFixture,
    answers: list[int],
    retries: int,
    codes: list[int],
    sent: int,
) -> None:
    hook.answers = list(answers)
    alerts = make_alerts(hook.url, retries)
    with caplog.at_level(logging.WARNING, logger="flywheel.alerts"):
        alerts.send({"event": "halt", "ts": NOW, "reason": "drift"})
        assert alerts.flush(WAIT)
    assert hook.codes() == codes
    assert len({json.dumps(body) for _, body, _ in hook.tries}) == 1  # the same event each try
    assert (alerts.sent, alerts.failed, alerts.dropped) == (sent, 1 - sent, 0)
    failures = [r for r in caplog.records if r.name == "flywheel.alerts"]
    assert len(failures) == 1 - sent
    if failures:
        assert f"HTTP {codes[-1]}" in failures[0].getMessage()
    assert "secret-token" not in caplog.text  # the webhook's path may hold a secret


def test_an_unreachable_webhook_fails_after_the_retries_without_raising(
    make_alerts: Callable[..., Alerts], caplog: pytest.LogCaptureFixture
) -> None:
    with reserved_port() as port:  # bound, never listening: every connection is refused
        alerts = make_alerts(f"http://127.0.0.1:{port}/hook", 2)
        with caplog.at_level(logging.WARNING, logger="flywheel.alerts"):
            alerts.send({"event": "halt", "reason": "drift"})
            assert alerts.flush(WAIT)
    assert (alerts.sent, alerts.failed, alerts.dropped) == (0, 1, 0)
    [record] = [r for r in caplog.records if r.name == "flywheel.alerts"]
    assert "after 3 tries" in record.getMessage()


def test_send_returns_while_the_webhook_is_slow_and_the_queue_drops_the_oldest(
    hook: Hook, make_alerts: Callable[..., Alerts]
) -> None:
    hook.gate = threading.Event()
    alerts = make_alerts(hook.url, capacity=2)
    alerts.send({"event": "halt", "reason": "first"})
    assert wait_for(hook.entered.is_set)  # the first POST is held by the webhook
    for n in range(5):
        alerts.send({"event": "halt", "reason": f"queued {n}"})
    # every send returned while the webhook still holds the first request
    assert not hook.gate.is_set() and hook.tries == []
    assert not alerts.flush(0)
    assert (alerts.sent, alerts.dropped) == (0, 3)  # room for two: the three oldest dropped
    hook.gate.set()
    assert alerts.flush(WAIT)
    assert [body["reason"] for body in hook.bodies()] == ["first", "queued 3", "queued 4"]
    assert (alerts.sent, alerts.failed, alerts.dropped) == (3, 0, 3)
    alerts.close()
    alerts.close()  # twice is harmless
    alerts.send({"event": "halt", "reason": "after close"})  # dropped, not raised
    assert alerts.dropped == 4


def test_without_a_webhook_alerts_do_nothing(make_alerts: Callable[..., Alerts]) -> None:
    alerts = make_alerts(None)
    assert not alerts.enabled
    alerts.send({"event": "halt"})
    assert alerts.flush(0)
    assert (alerts.sent, alerts.failed, alerts.dropped) == (0, 0, 0)


def test_relay_sends_each_audit_entry_once_and_no_history(
    hook: Hook, make_alerts: Callable[..., Alerts], tmp_path: Path
) -> None:
    # (a wheel with a webhook relays once when it opens: this one has none)
    with flywheel.open(SPEC, store=f"duckdb:///{tmp_path}/x.duckdb") as wheel:
        store = wheel.store
        breaker.halt(store, NOW, "drift", "before any relay")
        breaker.resume(store, NOW, "ann", "old history")
        alerts = Alerts(AlertsConfig(hook.url, 5, 5.0), wheel.spec.name, backoff=0.01)
        other = make_alerts(hook.url)  # a second process on the same store
        try:
            assert relay(store, alerts) == 0  # the first call starts after the history
            breaker.halt(store, NOW, "drift", "genre shifted", {"p": 0.001})
            breaker.audit(store, NOW, "rollback", "back to version 1", {"version": 1})
            breaker.audit(store, NOW, "override", "released 2 rows", {"ids": []})  # not sent
            breaker.resume(store, NOW, "ann", "fixed the tracking")
            assert relay(store, alerts) == 3
            assert relay(store, alerts) == 0
            assert relay(store, other) == 0
            assert alerts.flush(WAIT)
        finally:
            alerts.close(WAIT)
        top = store.query("SELECT max(seq) AS top FROM audit").to_pylist()[0]["top"]
        assert store.get_meta(RELAYED_KEY) == str(top)
    bodies = hook.bodies()
    assert [(b["event"], b["reason"], b["actor"]) for b in bodies] == [
        ("halt", "drift: genre shifted", "seatbelt"),
        ("rollback", "back to version 1", "seatbelt"),
        ("resume", "fixed the tracking", "ann"),
    ]
    assert bodies[0]["detail"] == {"p": 0.001} and bodies[0]["flywheel"] == "stories"
    assert bodies[2]["detail"]["lifted"]["reason"] == "genre shifted"
    assert datetime.fromisoformat(bodies[0]["ts"]) == NOW
    assert (alerts.sent, other.sent) == (3, 0)


class _Stale:
    """A store whose first ``get_meta`` answers what it held before another process moved it."""

    def __init__(self, store: Store, stale: str) -> None:
        self._store = store
        self._stale: str | None = stale

    def get_meta(self, key: str) -> str | None:
        stale, self._stale = self._stale, None
        return stale if stale is not None else self._store.get_meta(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_relay_sends_nothing_when_another_process_claimed_the_entries_first(
    hook: Hook, make_alerts: Callable[..., Alerts], tmp_path: Path
) -> None:
    alerts = make_alerts(hook.url)
    with flywheel.open(SPEC, store=f"duckdb:///{tmp_path}/x.duckdb") as wheel:
        store = wheel.store
        assert relay(store, alerts) == 0
        mark = store.get_meta(RELAYED_KEY)
        assert mark is not None
        breaker.halt(store, NOW, "drift", "genre shifted")
        assert relay(store, alerts) == 1  # this process claimed and sent it
        late: Any = _Stale(store, mark)  # one that read the mark before that claim
        assert relay(late, alerts) == 0
        assert alerts.flush(WAIT)
    assert [b["reason"] for b in hook.bodies()] == ["drift: genre shifted"]


def test_status_check_exits_1_while_halted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["init"]).exit_code == 0
    result = runner.invoke(app, ["status", "--check"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    with flywheel.open("flywheel.toml") as wheel:
        breaker.halt(wheel.store, NOW, "drift", "genre shifted")
    result = runner.invoke(app, ["status", "--check"])
    assert result.exit_code == 1, result.output
    assert "halted" in result.stdout  # printed as usual first
    assert result.stderr.splitlines() == [
        f"alert halted since {NOW.isoformat()} by drift: genre shifted"
    ]
    result = runner.invoke(app, ["status", "--check", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["halted"] is True  # stdout stays JSON
    assert "genre shifted" in result.stderr
    assert runner.invoke(app, ["status", "--json"]).exit_code == 0  # without --check: 0
    with flywheel.open("flywheel.toml") as wheel:
        wheel.resume("fixed the tracking", actor="ann")
    assert runner.invoke(app, ["status", "--check"]).exit_code == 0


def test_a_wheel_sends_its_halts_rollbacks_and_resumes(
    hook: Hook, make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    from tests.seatbelt.test_gate import Sim
    from tests.seatbelt.test_gate import spec as gate_spec

    wheel = make_wheel({**gate_spec(), "alerts": {"webhook": hook.url}}, seed=1)
    sim = Sim(wheel, clock, 1)
    for _ in range(3):
        sim.play(600)
        assert sim.learn().published
    sim.play(600, bug=lambda params, r: 1.0 if params["twists"] == 0 else r)
    assert sim.learn().halted
    wheel.resume("metric fixed", actor="ops")
    assert wait_for(lambda: [b["event"] for b in hook.bodies()] == ["halt", "rollback", "resume"])
    halt, _, resume = hook.bodies()
    assert halt["flywheel"] == "flywheel" and "reward_shift" in halt["reason"]
    assert resume["actor"] == "ops" and resume["reason"] == "metric fixed"
