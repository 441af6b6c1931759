"""The dashboard over HTTP: the page holds no data and needs no key; its data needs a decide
key, its actions an admin key; the actions do what they say, recorded with the key's id."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

import flywheel
from flywheel.seatbelt import breaker
from flywheel.server import keys as api_keys
from tests.conftest import WAIT, Clock, reserved_port, wait_for
from tests.server.dashboard.conftest import turn
from tests.server.test_app import Client, serving
from tests.server.test_keys import _spec


@pytest.fixture
def turned(make_wheel: Callable[..., flywheel.Wheel], clock: Clock) -> flywheel.Wheel:
    wheel = make_wheel(seed=3)
    turn(wheel, clock, days=5, per_day=100)
    return wheel


def _get(client: Client, path: str) -> tuple[int, dict[str, str], str]:
    with urllib.request.urlopen(client.base + path, timeout=WAIT) as answer:
        return answer.status, dict(answer.headers), answer.read().decode()


def test_the_page_needs_no_key_and_holds_no_data(turned: flywheel.Wheel) -> None:
    api_keys.create(turned.store, "admin")
    with serving(turned, api_keys.KeyRing(turned.store, keyless=False)) as client:
        status, headers, html = _get(client, "/")
        assert status == 200 and 'content="required"' in html and 'content="on"' in html
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "thriller" not in html and "v2" not in html
        status, headers, script = _get(client, "/ui/app.js")
        assert (
            status == 200 and "sessionStorage" in script and "javascript" in headers["content-type"]
        )
        assert client.call("GET", "/v1/dashboard/overview")[0] == 401


def test_reading_needs_a_decide_key_and_acting_an_admin_key(turned: flywheel.Wheel) -> None:
    keys = {scope: api_keys.create(turned.store, scope)[1] for scope in api_keys.SCOPES}
    breaker.halt(turned.store, turned.now(), "test", "halted for the test")
    with serving(turned, api_keys.KeyRing(turned.store, keyless=False)) as client:
        assert client.call("GET", "/v1/dashboard/overview", key=keys["ingest"])[0] == 403
        for page in ("overview", "playbook", "findings", "seatbelt", "health"):
            status, answer = client.call(
                "GET", f"/v1/dashboard/{page}?fresh=true", key=keys["decide"]
            )
            assert status == 200 and answer["ready"] and answer["blocks"], (page, answer)
        # rows, not summaries: the data page is an admin key's
        assert client.call("GET", "/v1/dashboard/data", key=keys["decide"])[0] == 403
        status, answer = client.call("GET", "/v1/dashboard/data", key=keys["admin"])
        assert status == 200 and answer["blocks"][1]["rows"]
        status, answer = client.call("GET", "/v1/dashboard/nothing", key=keys["decide"])
        assert status == 422 and answer["errors"][0]["field"] == "path.page"
        for key in (keys["ingest"], keys["decide"]):
            assert client.call("POST", "/v1/resume", {"reason": "x"}, key=key)[0] == 403
            assert client.call("POST", "/v1/rollback", {"version": 1}, key=key)[0] == 403
            assert client.call("POST", "/v1/release", {}, key=key)[0] == 403
        assert turned.status().halted and turned.playbook.version == 2  # type: ignore[union-attr]

        status, answer = client.call("POST", "/v1/resume", {"reason": "looked"}, key=keys["admin"])
        assert status == 200 and answer["lifted"]["reason"] == "halted for the test"
        assert not turned.status().halted
        admin = keys["admin"].split("_")[1]
        assert turned.events(1)[0]["actor"] == f"key {admin}"
        seatbelt = client.call("GET", "/v1/dashboard/seatbelt?fresh=true", key=keys["decide"])[1]
        assert not [a for b in seatbelt["blocks"] if b["kind"] == "alerts" for a in b["items"]]

        status, answer = client.call("POST", "/v1/rollback", {"version": 1}, key=keys["admin"])
        assert status == 200 and answer == {"ok": True, "restored": 1, "version": 3}
        assert turned.playbook.version == 3  # type: ignore[union-attr]
        status, answer = client.call("POST", "/v1/rollback", {"version": 9}, key=keys["admin"])
        assert status == 404 and answer["errors"][0]["field"] == "version"
        assert client.call("POST", "/v1/rollback", {"version": "1"}, key=keys["admin"])[0] == 422

        status, answer = client.call("POST", "/v1/release", {}, key=keys["admin"])
        assert status == 200 and answer == {"ok": True, "released": 0, "quarantined": 0}
        unknown = {"ids": ["00000000-0000-0000-0000-000000000000"]}
        assert client.call("POST", "/v1/release", unknown, key=keys["admin"])[0] == 404
        assert client.call("POST", "/v1/release", {"ids": ["x"]}, key=keys["admin"])[0] == 422


def test_the_read_only_dashboard_offers_no_action(turned: flywheel.Wheel) -> None:
    with serving(turned, read_only=True) as client:
        _, _, html = _get(client, "/")
        assert 'content="off"' in html and 'content="none"' in html
        status, answer = client.call("GET", "/v1/dashboard/seatbelt?fresh=true")
        assert status == 200 and answer["actions"] is False
        for path in ("/v1/resume", "/v1/rollback", "/v1/release", "/v1/decide", "/v1/learn"):
            assert client.call("POST", path, {})[0] == 404, path
        assert client.call("GET", "/v1/status")[0] == 200


def test_flywheel_ui_serves_the_embedded_store_read_only(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "duckdb:///ui.duckdb")
    clock = Clock(time.time())
    with flywheel.open(spec, clock=clock, background=False, seed=3) as wheel:
        turn(wheel, clock, days=3, per_day=50)
    with reserved_port() as port:
        command = [sys.executable, "-m", "flywheel.cli", "ui", "--spec", str(spec)]
        process = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL)
        client = Client(f"http://127.0.0.1:{port}")
        try:
            assert wait_for(lambda: _answers(client) or process.poll() is not None)
            assert process.poll() is None, "flywheel ui stopped"
            _, _, html = _get(client, "/")
            assert 'content="off"' in html
            status, answer = client.call("GET", "/v1/dashboard/overview?fresh=true")
            figures = next(b for b in answer["blocks"] if b["kind"] == "stats")["items"]
            assert status == 200
            assert {f["label"]: f["value"] for f in figures}["decisions"] == "150"
            assert client.call("POST", "/v1/resume", {"reason": "x"})[0] == 404
        finally:
            process.terminate()
            try:
                process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def _answers(client: Client) -> bool:
    try:
        return client.call("GET", "/v1/status")[0] == 200
    except OSError:
        return False


def test_without_keys_only_a_loopback_name_is_answered(turned: flywheel.Wheel) -> None:
    """A page elsewhere that points a name of its own at 127.0.0.1 (DNS rebinding) reads
    nothing from a server that needs no key; the page itself, which holds no data, loads."""
    with serving(turned) as client:
        for host, wanted in (("evil.example:80", 403), ("localhost:1", 200), ("[::1]:8", 200)):
            request = urllib.request.Request(
                client.base + "/v1/dashboard/overview", headers={"Host": host}
            )
            try:
                with urllib.request.urlopen(request, timeout=WAIT) as answer:
                    status, body = answer.status, json.loads(answer.read())
            except urllib.error.HTTPError as err:
                status, body = err.code, json.loads(err.read())
            assert status == wanted, (host, body)
            if status == 403:
                assert body["errors"][0]["field"] == "host"
        assert _get(client, "/")[0] == 200
