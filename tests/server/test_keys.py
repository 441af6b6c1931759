"""API keys on a store that several processes share: whether keys are required is read from
the store by every server, every few seconds, and never forgotten by a restart."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app
from flywheel.demo import example_spec, example_text
from flywheel.server import keys as api_keys
from flywheel.store import Store
from tests.conftest import reserved_port
from tests.server.test_app import Client, serving

CLI = [sys.executable, "-m", "flywheel.cli"]
DEADLINE = 60.0  # seconds: generous, the servers here re-read their keys every 0.2 s


def _spec(tmp_path: Path, store: str) -> Path:
    spec = tmp_path / "flywheel.toml"
    spec.write_text(example_text().replace("duckdb:///.flywheel/flywheel.duckdb", store))
    return spec


@contextmanager
def _serve(spec: Path) -> Iterator[Client]:
    """``flywheel serve`` as a process of its own, once it answers."""
    with reserved_port() as port:
        command = [*CLI, "serve", "--spec", str(spec)]
        options = ["--port", str(port), "--workers", "0", "--no-journal", "--keys-reload", "0.2"]
        process = subprocess.Popen([*command, *options], stdout=subprocess.DEVNULL)
        client = Client(f"http://127.0.0.1:{port}")
        deadline = time.time() + DEADLINE
        try:
            while True:
                try:
                    client.call("GET", "/v1/status")
                    break
                except OSError:
                    assert time.time() < deadline and process.poll() is None, "did not start"
                    time.sleep(0.1)
            yield client
        finally:
            process.terminate()
            process.wait(timeout=60)


def _eventually(client: Client, status: int, key: str | None = None) -> None:
    """Wait until ``GET /v1/status`` answers ``status`` (a server re-reads keys every 0.2 s)."""
    deadline = time.time() + DEADLINE
    while (got := client.call("GET", "/v1/status", key=key)[0]) != status:
        assert time.time() < deadline, f"still {got}, not {status}, after {DEADLINE:.0f} s"
        time.sleep(0.1)


def test_a_shared_store_that_had_a_key_never_serves_without_one(
    tmp_path: Path, pg_url: str
) -> None:
    """A keyless server is closed by a key that another process creates; revoking every key
    and restarting leaves it closed; only `flywheel keys open` opens it, until the next key."""
    spec = _spec(tmp_path, pg_url)
    runner = CliRunner()
    with _serve(spec) as client:
        assert client.call("GET", "/v1/status")[0] == 200  # loopback, never a key: open
        made = subprocess.run(
            [*CLI, "keys", "create", "--scope", "admin", "--spec", str(spec)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        admin = made.stdout.strip().splitlines()[-1]
        _eventually(client, 401)  # the running server picked the new key up
        assert client.call("GET", "/v1/status", key=admin)[0] == 200
        with flywheel.open(spec, refresh=0) as other:  # a second handle on the store
            for key in api_keys.load(other.store):
                api_keys.revoke(other.store, key.id)
        _eventually(client, 401, key=admin)
        assert client.call("GET", "/v1/status")[0] == 401  # no key left: closed, not open
    listed = runner.invoke(app, ["keys", "list", "--spec", str(spec)])
    assert "every key is revoked" in listed.output
    with _serve(spec) as client:  # restarted: what the store says, not what it remembers
        assert client.call("GET", "/v1/status")[0] == 401
        opened = runner.invoke(app, ["keys", "open", "--yes", "--spec", str(spec)])
        assert opened.exit_code == 0 and "WITHOUT a key" in opened.output, opened.output
        _eventually(client, 200)  # the running server opened within its reload interval
    listed = runner.invoke(app, ["keys", "list", "--spec", str(spec)])
    assert "open: servers answer without a key" in listed.output
    with _serve(spec) as client:
        assert client.call("GET", "/v1/status")[0] == 200  # the decision is in the store
        with flywheel.open(spec, refresh=0) as other:
            api_keys.create(other.store, "ingest")  # the next key closes it again
        _eventually(client, 401)


def test_open_needs_every_key_revoked_and_a_confirmation(tmp_path: Path, pg_url: str) -> None:
    spec = _spec(tmp_path, pg_url)
    runner = CliRunner()
    with flywheel.open(spec, refresh=0) as wheel:
        key = api_keys.create(wheel.store, "decide")[0]
    refused = runner.invoke(app, ["keys", "open", "--yes", "--spec", str(spec)])
    assert refused.exit_code == 2, refused.output
    assert "keys:" in refused.output and key.id in refused.output
    assert "revoke every key first" in refused.output
    assert runner.invoke(app, ["keys", "revoke", key.id, "--spec", str(spec)]).exit_code == 0
    declined = runner.invoke(app, ["keys", "open", "--spec", str(spec)], input="n\n")
    assert declined.exit_code == 1 and "without a key?" in declined.output
    with flywheel.open(spec, refresh=0) as wheel:  # neither wrote anything
        assert api_keys.required(wheel.store) and api_keys.opened_at(wheel.store) is None
    assert runner.invoke(app, ["keys", "open", "--spec", str(spec)], input="y\n").exit_code == 0
    with flywheel.open(spec, refresh=0) as wheel:
        assert not api_keys.required(wheel.store) and api_keys.opened_at(wheel.store)


def test_a_key_created_while_opening_still_closes(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flywheel keys open` counts the keys it has seen: a key that another handle creates
    between its read and its write is not among them, so keys stay required."""
    with flywheel.open(example_spec(), store=pg_url, refresh=0) as wheel:
        api_keys.revoke(wheel.store, api_keys.create(wheel.store, "admin")[0].id)
        read = api_keys.load

        def read_then_create(store: Store) -> list[api_keys.ApiKey]:
            found = read(store)
            with flywheel.open(example_spec(), store=pg_url, refresh=0) as other:
                api_keys.create(other.store, "ingest")
            return found

        monkeypatch.setattr(api_keys, "load", read_then_create)
        api_keys.allow_keyless(wheel.store)
        monkeypatch.undo()
        assert api_keys.required(wheel.store) and api_keys.opened_at(wheel.store) is None


def test_the_embedded_store_stays_closed_after_its_keys_are_revoked(tmp_path: Path) -> None:
    """On DuckDB, keys made and revoked through the running server: after a restart the
    store still requires a key, until `flywheel keys open`."""
    spec = _spec(tmp_path, "duckdb:///api.duckdb")

    def ring(wheel: flywheel.Wheel) -> api_keys.KeyRing:
        return api_keys.KeyRing(wheel.store, every=0.2)

    with flywheel.open(spec, refresh=0) as wheel, serving(wheel, ring(wheel)) as client:
        assert client.call("GET", "/v1/status")[0] == 200
        status, made = client.call("POST", "/v1/keys", {"scope": "admin"})
        assert status == 200 and client.call("GET", "/v1/status")[0] == 401
        status, _ = client.call("DELETE", f"/v1/keys/{made['id']}", key=made["key"])
        assert status == 200 and client.call("GET", "/v1/status")[0] == 401
    with flywheel.open(spec, refresh=0) as wheel, serving(wheel, ring(wheel)) as client:
        assert client.call("GET", "/v1/status")[0] == 401  # restarted: still closed
    opened = CliRunner().invoke(app, ["keys", "open", "--yes", "--spec", str(spec)])
    assert opened.exit_code == 0, opened.output
    with flywheel.open(spec, refresh=0) as wheel, serving(wheel, ring(wheel)) as client:
        assert client.call("GET", "/v1/status")[0] == 200


def test_a_server_off_loopback_never_opens(tmp_path: Path) -> None:
    """A ring for a non-loopback address requires a key even after `flywheel keys open`."""
    with flywheel.open(_spec(tmp_path, "duckdb:///api.duckdb"), refresh=0) as wheel:
        key = api_keys.create(wheel.store, "decide")[0]
        api_keys.revoke(wheel.store, key.id)
        api_keys.allow_keyless(wheel.store)
        assert api_keys.KeyRing(wheel.store).check(None, "decide") == 0
        assert api_keys.KeyRing(wheel.store, keyless=False).check(None, "decide") == 401


@pytest.mark.parametrize("every", [0.0, 3600.0])
def test_required_is_true_while_stale(tmp_path: Path, every: float) -> None:
    """A caller that skips keys while :attr:`KeyRing.required` is false never misses a key
    created elsewhere: a stale ring says required until :meth:`KeyRing.check` re-reads."""
    with flywheel.open(_spec(tmp_path, "duckdb:///api.duckdb"), refresh=0) as wheel:
        ring = api_keys.KeyRing(wheel.store, every=every)
        assert ring.required is (every == 0.0) and ring.check(None, "decide") == 0
        api_keys.create(wheel.store, "admin")
        assert ring.check(None, "decide") == (401 if every == 0.0 else 0)
        assert ring.required is (every == 0.0)
