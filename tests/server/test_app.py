"""The HTTP API on a real uvicorn server on loopback, spoken to with the standard library."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import flywheel
from flywheel.demo import example_spec
from flywheel.server import create_app
from flywheel.server import keys as api_keys
from flywheel.server.keys import KeyRing
from tests.conftest import PARAMS, THRILLER, WAIT, wait_for


class Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


@contextmanager
def serving(
    wheel: flywheel.Wheel, keys: KeyRing | None = None, workers: int = 0, read_only: bool = False
) -> Iterator[Client]:
    listening = socket.socket()  # bound here and handed over: no other process can take it
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    app = create_app(wheel, keys, workers=workers, read_only=read_only)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        # worker processes take a moment to start; a failed start-up ends the thread
        wait_for(lambda: server.started or not thread.is_alive())
        assert server.started, "the server did not start"
        yield Client(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT)
        listening.close()


@pytest.fixture
def wheel_on_file(tmp_path: Path) -> Iterator[flywheel.Wheel]:
    wheel = flywheel.open(example_spec(), store=f"duckdb:///{tmp_path / 'api.duckdb'}", refresh=0)
    yield wheel
    wheel.close()


@pytest.fixture
def served(wheel_on_file: flywheel.Wheel) -> Iterator[tuple[Client, flywheel.Wheel]]:
    with serving(wheel_on_file) as client:
        yield client, wheel_on_file


def test_decide_and_signals_are_durable_when_answered(
    served: tuple[Client, flywheel.Wheel],
) -> None:
    client, wheel = served
    status, decision = client.call("POST", "/v1/decide", {"context": THRILLER, "unit": "ada"})
    assert status == 200 and decision["ok"] and decision["policy"] == "uniform"
    assert set(PARAMS) <= set(decision["params"])
    status, answer = client.call(
        "POST",
        "/v1/signals",
        {"signals": [{"decision": decision["id"], "name": "completed", "value": 1, "key": "k1"}]},
    )
    assert (status, answer) == (200, {"ok": True, "recorded": 1, "duplicates": 0})
    # answered means stored: read the store directly, no flush
    stored = wheel.store.query("SELECT count(*) AS n FROM signals").to_pylist()[0]["n"]
    assert stored == 1
    status, counts = client.call("GET", "/v1/status")
    assert status == 200 and counts["decisions"] == 1 and counts["complete"] == 1
    status, book = client.call("GET", "/v1/playbook")
    assert (status, book["version"], book["segments"]) == (200, None, [])
    status, health = client.call("GET", "/v1/health")
    assert status == 200 and health["decisions"] == 1
    assert health["stages"]["transitions"][0]["passed"] == 1
    status, refused = client.call("GET", "/v1/health?window=soon")
    assert status == 422 and refused["errors"][0]["field"] == "query.window"
    status, learned = client.call("POST", "/v1/learn")  # one decision: too little to learn
    assert status == 200 and learned["published"] is False and learned["reason"]
    status, forgot = client.call("DELETE", "/v1/units/ada")
    assert status == 200 and forgot["deleted"]["decisions"] == 1


def test_signals_take_feedback_implicit_events_and_edits(
    served: tuple[Client, flywheel.Wheel],
) -> None:
    client, wheel = served
    _, decision = client.call("POST", "/v1/decide", {"context": THRILLER})
    ident = decision["id"]
    batch = [
        {"decision": ident, "rating": 5, "thumbs": True, "comment": "mail me at a@b.example"},
        {"decision": ident, "event": "accepted", "dwell_ms": 900},
        {"decision": ident, "draft": "Once upon a time.", "final": "Once upon a time, again."},
    ]
    bad = {"decision": ident, "event": "accepted", "draft": "mixed kinds"}
    status, answer = client.call("POST", "/v1/signals", {"signals": [*batch, bad]})
    assert status == 422 and answer["errors"][0]["field"] == "signals[3].name"
    assert wheel.summary().signals == 0
    assert client.call("POST", "/v1/signals", {"signals": batch}) == (
        200,
        {"ok": True, "recorded": 3, "duplicates": 0},
    )
    row = wheel.aligned().to_pylist()[0]
    assert (row["rating"], row["thumbs"], row["accepted"], row["dwell_ms"]) == (5, 1, 1, 900)
    assert row["comment"] == "mail me at [email]"  # redacted, as through the SDK
    assert 0 < row["edit_distance"] < 1


def test_every_error_has_one_shape_and_a_rejected_batch_stores_nothing(
    served: tuple[Client, flywheel.Wheel],
) -> None:
    client, wheel = served
    _, decision = client.call("POST", "/v1/decide", {"context": THRILLER})
    good = {"decision": decision["id"], "name": "completed", "value": 1}
    too_high = {**good, "value": 1e9, "name": "rating"}
    no_id = {"name": "completed", "value": 1}
    cases = [
        ("POST", "/v1/decide", {"context": {"genre": "western"}}, "context.genre"),
        ("POST", "/v1/decide", {"context": THRILLER, "surprise": 1}, "surprise"),
        ("POST", "/v1/signals", {"signals": [good, {**good, "name": "nope"}]}, "signals[1]."),
        ("POST", "/v1/signals", {"signals": [good, too_high]}, "signals[1]."),
        ("POST", "/v1/signals", {"signals": []}, "signals"),
        ("POST", "/v1/signals", {"signals": [no_id]}, "signals[0].decision"),
        ("POST", "/v1/signals", {"signals": [{**good, "decision": "d-1"}]}, "signals[0].decision"),
        (
            "POST",
            "/v1/signals",
            {"signals": [{**good, "decision": f"{good['decision']}\n"}]},
            "signals[0].decision",
        ),
        (
            "POST",
            "/v1/signals",
            {"signals": [{"decision": good["decision"], "comment": "a\u0000b"}]},
            "signals[0].comment",
        ),
        ("POST", "/v1/signals", b'{"signals": [', "body"),
        ("POST", "/v1/rows", {"rows": [{"context": THRILLER}]}, "rows[0].params"),
        ("GET", "/v1/nothing-here", None, None),
    ]
    for method, path, body, field in cases:
        status, answer = client.call(method, path, body)
        assert 400 <= status < 500, (path, body, status)
        assert set(answer) == {"ok", "status", "error", "errors"} and answer["ok"] is False
        assert answer["status"] == status
        if field is not None:
            assert any(e["field"].startswith(field) for e in answer["errors"]), answer
    # a value of the wrong type is one error of its field, not one per type it could have had
    status, answer = client.call("POST", "/v1/signals", {"signals": [{**good, "value": [1]}]})
    assert status == 422 and [e["field"] for e in answer["errors"]] == ["signals[0].value"]
    assert "a valid number or a valid boolean or a valid string" in answer["errors"][0]["reason"]
    counts = wheel.store.query(
        "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM signals) AS s"
    ).to_pylist()[0]
    assert counts == {"d": 1, "s": 0}  # the one good decision, nothing else


def test_an_internal_error_has_the_same_shape(
    served: tuple[Client, flywheel.Wheel], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, wheel = served

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(wheel, "status", broken)
    logged: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record)

    handler = Keep()
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        status, answer = client.call("GET", "/v1/status")
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert status == 500 and answer["ok"] is False and answer["status"] == 500
    assert set(answer) == {"ok", "status", "error", "errors"} and "a bug" not in answer["error"]
    # the details go to the server's log, with the traceback
    assert any(r.exc_info and str(r.exc_info[1]) == "a bug" for r in logged), logged


def test_serve_refuses_a_non_loopback_address_without_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from flywheel.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "not a loopback address" in result.output
    created = runner.invoke(app, ["keys", "create", "--scope", "ingest"])
    assert created.exit_code == 0 and created.output.strip().splitlines()[-1].startswith("fw_")
    listed = runner.invoke(app, ["keys", "list"])
    assert "ingest" in listed.output and "active" in listed.output
    ident = listed.output.split()[0]
    assert runner.invoke(app, ["keys", "revoke", ident]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list"]).output


def test_keys_and_scopes(wheel_on_file: flywheel.Wheel) -> None:
    store = wheel_on_file.store
    ingest = api_keys.create(store, "ingest")[1]
    decide = api_keys.create(store, "decide")[1]
    admin_key, admin = api_keys.create(store, "admin")
    raw = store.get_meta(api_keys.META_KEY) or ""
    assert admin.split("_", 2)[2] not in raw  # only the hash is kept
    with serving(wheel_on_file, api_keys.KeyRing(store)) as client:
        body = {"context": THRILLER}
        assert client.call("POST", "/v1/decide", body)[0] == 401
        assert client.call("POST", "/v1/decide", body, key="fw_nope_x")[0] == 401
        status, answer = client.call("POST", "/v1/decide", body, key=ingest)
        assert status == 403 and set(answer) == {"ok", "status", "error", "errors"}
        status, decision = client.call("POST", "/v1/decide", body, key=decide)
        assert status == 200
        signal = {"signals": [{"decision": decision["id"], "name": "completed", "value": 1}]}
        assert client.call("POST", "/v1/signals", signal, key=ingest)[0] == 200
        assert client.call("GET", "/v1/playbook", key=ingest)[0] == 403  # ingest reads nothing
        assert client.call("DELETE", "/v1/units/ada", key=decide)[0] == 403
        assert client.call("DELETE", "/v1/units/ada", key=ingest)[0] == 403
        assert client.call("DELETE", "/v1/units/ada", key=admin)[0] == 200
    with serving(wheel_on_file, api_keys.KeyRing(store, every=0)) as client:
        assert client.call("GET", "/v1/status", key=admin)[0] == 200
        api_keys.revoke(store, admin_key.id)  # as `flywheel keys revoke` on a shared store
        assert client.call("GET", "/v1/status", key=admin)[0] == 401  # no restart needed
        assert client.call("GET", "/v1/status", key=decide)[0] == 200
        for key in api_keys.load(store):
            api_keys.revoke(store, key.id)
        assert client.call("GET", "/v1/status", key=decide)[0] == 401
        assert client.call("GET", "/v1/status")[0] == 401  # no key left: closed, not open


def test_complete_rows_go_in_whole(served: tuple[Client, flywheel.Wheel]) -> None:
    client, wheel = served
    row = {"context": THRILLER, "params": PARAMS, "results": {"completed": 1}}
    bad = {**row, "params": {**PARAMS, "twist_count": 9}}
    status, answer = client.call("POST", "/v1/rows", {"rows": [row, bad]})
    assert status == 422 and answer["errors"][0]["field"].startswith("rows[1].")
    assert wheel.store.query("SELECT count(*) AS n FROM decisions").to_pylist()[0]["n"] == 0
    status, answer = client.call("POST", "/v1/rows", {"rows": [row, row]})
    assert status == 200 and len(answer["ids"]) == 2
    assert wheel.store.query("SELECT count(*) AS n FROM decisions").to_pylist()[0]["n"] == 2
    # a row an outside policy chose: its name and propensity, checked and stored
    outside = {**row, "policy": "ranker-v3", "propensity": 0.25}
    for wrong in (2, True, "0.5"):  # not in (0, 1], and no value by another name
        status, answer = client.call(
            "POST", "/v1/rows", {"rows": [{**outside, "propensity": wrong}]}
        )
        assert status == 422 and answer["errors"][0]["field"] == "rows[0].propensity", wrong
    status, answer = client.call("POST", "/v1/rows", {"rows": [outside]})
    assert status == 200
    found = wheel.store.query(
        "SELECT policy, propensity FROM decisions WHERE CAST(id AS VARCHAR) = ?", answer["ids"]
    ).to_pylist()
    assert found == [{"policy": "ranker-v3", "propensity": 0.25}]


def test_the_committed_openapi_document_is_current() -> None:
    """The committed document is what the server serves: every route, request and answer
    schema, error status and error body (titles and descriptions aside, which FastAPI's
    versions word differently)."""
    from flywheel.server.app import openapi_document

    committed = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    current = json.loads(openapi_document())

    def ours(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: ours(v) for k, v in node.items() if k not in ("title", "description")}
        return [ours(v) for v in node] if isinstance(node, list) else node

    assert ours(committed["paths"]) == ours(current["paths"]), (
        "regenerate: python -m flywheel.server"
    )
    assert ours(committed["components"]) == ours(current["components"])
    errors = current["components"]["schemas"]["ErrorBody"]["properties"]
    assert set(errors) == {"ok", "status", "error", "errors"}
    assert "HTTPValidationError" not in current["components"]["schemas"]  # FastAPI's own 422
    for methods in current["paths"].values():
        for operation in methods.values():
            failures = {s: r for s, r in operation["responses"].items() if int(s) >= 400}
            assert {"401", "403", "500", "503"} <= set(failures)
            for answer in failures.values():
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}


@pytest.mark.parametrize("backend", ["duckdb", "postgresql"])
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_answered_writes_survive_the_server_process(
    tmp_path: Path, signal_name: str, backend: str, request: pytest.FixtureRequest
) -> None:
    """`flywheel serve` as its own process, answering writes once they are synced to its
    journal: what it answered 2xx is in the store after a SIGKILL (replayed from the journal
    by whoever opens the store next); a SIGTERM lets it finish, store everything and exit."""
    import os
    import signal
    import subprocess
    import sys

    spec = tmp_path / "flywheel.toml"
    from flywheel.demo import example_text

    url = "duckdb:///api.duckdb" if backend == "duckdb" else request.getfixturevalue("pg_url")
    spec.write_text(example_text().replace("duckdb:///.flywheel/flywheel.duckdb", url))
    assert flywheel.load(spec).storage_url.startswith(backend)
    journal = tmp_path / ("api.duckdb.journal" if backend == "duckdb" else "journal")
    port = request.getfixturevalue("loopback_port")
    command = [sys.executable, "-m", "flywheel.cli", "serve", "--spec", str(spec)]
    if backend == "postgresql":
        command += ["--journal", str(journal)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--journal-delay", "3600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client, decision = _first_decision(process, port)
        # without keys: answered once journaled (a keyed batch waits for the store's claim)
        batch = [
            {"decision": decision["id"], "name": "rating", "value": 1 + i % 5} for i in range(500)
        ]
        assert client.call("POST", "/v1/signals", {"signals": batch})[0] == 200
        workers = _children(process.pid)  # its OTLP worker processes
        assert workers, "the server should run worker processes"
        os.kill(process.pid, getattr(signal, signal_name))
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()
    assert (code in (0, -signal.SIGTERM)) if signal_name == "SIGTERM" else (code != 0), code
    # stopped or killed, the server leaves no worker behind
    gone = wait_for(lambda: not any(_alive(pid) for pid in workers))
    assert gone, f"worker processes {[pid for pid in workers if _alive(pid)]} outlived the server"
    journaled = sum(p.stat().st_size for p in journal.glob("*.wal"))
    # killed, the rows were only in the journal (the store takes them once an hour here);
    # stopped gracefully, the server stored them all and emptied its journal
    assert (journaled > 0) == (signal_name == "SIGKILL")
    folder = journal if backend == "postgresql" else True
    with flywheel.open(spec, refresh=0, journal=folder) as wheel:
        counts = wheel.store.query(
            "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM signals) AS s"
        ).to_pylist()[0]
    assert counts == {"d": 1, "s": 500}


def _first_decision(process: Any, port: int) -> tuple[Client, dict[str, Any]]:
    """A client of a ``flywheel serve`` process once it answers, and its first decision."""
    client = Client(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + WAIT
    while True:
        try:
            status, decision = client.call("POST", "/v1/decide", {"context": THRILLER})
            break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "server did not start"
            time.sleep(0.1)
    assert status == 200
    return client, decision


def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path, loopback_port: int) -> None:
    """SIGTERM while a request is in flight (a 100,000-signal batch, its body not yet sent):
    it is answered 200, stored whole, and the server exits cleanly."""
    import os
    import signal
    import subprocess
    import sys

    from flywheel.collect.batches import MAX_BATCH
    from flywheel.demo import example_text

    spec = tmp_path / "flywheel.toml"
    spec.write_text(example_text().replace(".flywheel/flywheel.duckdb", "api.duckdb"))
    port = loopback_port
    command = [sys.executable, "-m", "flywheel.cli", "serve", "--spec", str(spec)]
    process = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        _, decision = _first_decision(process, port)
        batch = [
            {"decision": decision["id"], "name": "rating", "value": 1 + i % 5}
            for i in range(MAX_BATCH)
        ]
        body = json.dumps({"signals": batch}).encode()
        head = (
            "POST /v1/signals HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head.encode())
            # "100 Continue" comes once the application asks for the body: the request is in
            # flight, and the signal arrives before a byte of the body is sent
            assert sock.recv(1 << 10).startswith(b"HTTP/1.1 100")
            os.kill(process.pid, signal.SIGTERM)
            sock.sendall(body)
            answer = b""
            while chunk := sock.recv(1 << 16):
                answer += chunk
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert code in (0, -signal.SIGTERM), code
    with flywheel.open(spec, refresh=0) as wheel:
        stored = wheel.store.query("SELECT count(*) AS n FROM signals").to_pylist()[0]["n"]
    assert stored == MAX_BATCH


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_write_answered_503_is_never_stored_later(pg_url: str) -> None:
    """The store refuses (a constraint no new row meets), the request is answered 503; once
    the store takes rows again, the refused ones do not appear behind the caller's back, and
    sending them again stores them once."""
    import psycopg

    server, schema = pg_url.split("?schema=")
    with flywheel.open(example_spec(), store=pg_url, refresh=0, max_delay=0.05) as wheel:
        with serving(wheel) as client, psycopg.connect(server, autocommit=True) as admin:
            status, decision = client.call("POST", "/v1/decide", {"context": THRILLER})
            assert status == 200
            row = {"context": THRILLER, "params": PARAMS, "results": {"completed": 1}}
            signal = {"decision": decision["id"], "name": "completed", "value": 1}
            refuse = f'ALTER TABLE "{schema}".{{}} ADD CONSTRAINT refuse CHECK (false) NOT VALID'
            for table in ("decisions", "signals"):
                admin.execute(refuse.format(table))
            for path, body in [
                ("/v1/decide", {"context": THRILLER}),
                ("/v1/rows", {"rows": [row]}),
                ("/v1/signals", {"signals": [signal]}),
            ]:
                status, answer = client.call("POST", path, body)
                assert status == 503 and "none of them will be stored" in answer["error"], answer
            for table in ("decisions", "signals"):
                admin.execute(f'ALTER TABLE "{schema}".{table} DROP CONSTRAINT refuse')
            # rows the writer had kept would be stored ahead of these (it keeps them in order)
            assert client.call("POST", "/v1/signals", {"signals": [signal]})[0] == 200
            assert client.call("POST", "/v1/rows", {"rows": [row]})[0] == 200
        counts = wheel.store.query(
            "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM signals) AS s"
        ).to_pylist()[0]
        assert counts == {"d": 2, "s": 2}  # the first decision and the row, its signal and ours


def test_the_server_manages_keys_on_the_store_it_holds(tmp_path: Path) -> None:
    """On the embedded store, which the server's process holds, keys are created, listed and
    revoked through the server, and each change counts from its answer on."""
    import subprocess
    import sys

    spec = tmp_path / "flywheel.toml"
    spec.write_text((Path(flywheel.__file__).parent / "templates" / "flywheel.toml").read_text())
    with flywheel.open(spec, refresh=0) as wheel:
        admin = api_keys.create(wheel.store, "admin")[1]
        with serving(wheel, api_keys.KeyRing(wheel.store)) as client:
            cli = subprocess.run(
                [sys.executable, "-m", "flywheel.cli", "keys", "list", "--spec", str(spec)],
                capture_output=True,
                text=True,
                check=False,
            )
            said = " ".join(cli.stderr.split())  # as wrapped to the terminal's width
            assert cli.returncode != 0 and "through the server" in said, said
            assert "DELETE /v1/keys/ID" in said
            status, made = client.call("POST", "/v1/keys", {"scope": "ingest"}, key=admin)
            assert status == 200 and made["scope"] == "ingest" and made["revoked_at"] is None
            assert made["key"].startswith(f"fw_{made['id']}_")
            decision = client.call("POST", "/v1/decide", {"context": THRILLER}, key=admin)[1]
            signal = {"signals": [{"decision": decision["id"], "name": "completed", "value": 1}]}
            assert client.call("POST", "/v1/signals", signal, key=made["key"])[0] == 200
            assert client.call("GET", "/v1/keys", key=made["key"])[0] == 403
            status, listed = client.call("GET", "/v1/keys", key=admin)
            assert status == 200 and [k["scope"] for k in listed["keys"]] == ["admin", "ingest"]
            assert all(
                set(k) == {"id", "scope", "created_at", "revoked_at"} for k in listed["keys"]
            )
            status, revoked = client.call("DELETE", f"/v1/keys/{made['id']}", key=admin)
            assert status == 200 and revoked["revoked_at"] is not None
            assert client.call("POST", "/v1/signals", signal, key=made["key"])[0] == 401
            status, missing = client.call("DELETE", "/v1/keys/nope", key=admin)
            assert status == 404 and missing["ok"] is False
            status, wrong = client.call("POST", "/v1/keys", {"scope": "root"}, key=admin)
            assert status == 422 and wrong["errors"][0]["field"] == "scope"


def test_a_key_created_on_a_keyless_server_closes_it(wheel_on_file: flywheel.Wheel) -> None:
    with serving(wheel_on_file, api_keys.KeyRing(wheel_on_file.store)) as client:
        assert client.call("GET", "/v1/status")[0] == 200  # loopback, no keys: open
        status, made = client.call("POST", "/v1/keys", {"scope": "admin"})
        assert status == 200
        assert client.call("GET", "/v1/status")[0] == 401
        assert client.call("GET", "/v1/status", key=made["key"])[0] == 200


def test_signal_batches_converted_by_worker_processes(wheel_on_file: flywheel.Wheel) -> None:
    """A worker process parses, validates, redacts and converts the batch; the server only
    records its Arrow rows: the same rows and the same errors as in the server's process."""
    with serving(wheel_on_file, workers=1) as client:
        _, decision = client.call("POST", "/v1/decide", {"context": THRILLER})
        good = {"decision": decision["id"], "name": "completed", "value": 1, "key": "once"}
        feedback = {"decision": decision["id"], "rating": 4, "comment": "mail ada@example.com"}
        for body, field in [
            ({"signals": [good, {**good, "decision": "d-1"}]}, "signals[1].decision"),
            ({"signals": [{**good, "value": [1]}]}, "signals[0].value"),
            ({"signals": [{**good, "surprise": 1}]}, "signals[0].surprise"),
            (b'{"signals": [', "body"),
        ]:
            status, answer = client.call("POST", "/v1/signals", body)
            assert status == 422 and answer["errors"][0]["field"] == field, answer
        for again in range(2):  # sent twice: the key stores it once
            status, answer = client.call("POST", "/v1/signals", {"signals": [good, feedback]})
            expected = {"ok": True, "recorded": 2 - again, "duplicates": again}
            assert (status, answer) == (200, expected)
    found = wheel_on_file.store.query(
        "SELECT name, value, text, key IS NOT NULL AS keyed FROM signals ORDER BY name"
    ).to_pylist()
    assert found == [
        {"name": "comment", "value": None, "text": "mail [email]", "keyed": False},
        {"name": "comment", "value": None, "text": "mail [email]", "keyed": False},
        {"name": "completed", "value": 1.0, "text": None, "keyed": True},
        {"name": "rating", "value": 4.0, "text": None, "keyed": False},
        {"name": "rating", "value": 4.0, "text": None, "keyed": False},
    ]


def test_complete_rows_converted_by_worker_processes(wheel_on_file: flywheel.Wheel) -> None:
    row = {"context": THRILLER, "params": PARAMS, "results": {"completed": 1}, "unit": "ada"}
    with serving(wheel_on_file, workers=1) as client:
        status, answer = client.call("POST", "/v1/rows", {"rows": [row, row]})
        assert status == 200 and len(set(answer["ids"])) == 2
        bad = {**row, "params": {**PARAMS, "length": "epic"}}
        status, refused = client.call("POST", "/v1/rows", {"rows": [row, bad]})
        assert status == 422 and refused["errors"][0]["field"] == "rows[1].params.length"
        status, refused = client.call("POST", "/v1/rows", {"rows": [{"context": THRILLER}]})
        assert status == 422 and refused["errors"][0]["field"] == "rows[0].params"
    stored = wheel_on_file.aligned().to_pylist()
    assert sorted(r["decision_id"] for r in stored) == sorted(answer["ids"])
    assert {r["unit"] for r in stored} == {wheel_on_file._units("ada")}  # the same pseudonym
    assert [r["reward"] for r in stored] == [1.0, 1.0]
