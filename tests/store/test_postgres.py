"""The whole loop on PostgreSQL: the same data gives the same answers as on DuckDB, and several
server processes can share one database without losing or duplicating rows."""

from __future__ import annotations

import contextlib
import json
import math
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import flywheel
from flywheel.demo import StoryWorld, example_spec, example_text
from flywheel.spec import Spec
from flywheel.store.postgres import _uuid_bytes
from tests.conftest import DAY, T0, WAIT, Clock, reserved_port
from tests.server.test_app import Client

SERVE = [sys.executable, "-m", "flywheel.cli", "serve"]
QUALITY = """
[quality]
rules = ["rating IS NULL OR rating >= 2"]
"""


def story_rows(spec: Spec, n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Complete rows of the story world: uniformly random allowed parameters."""
    world, rng = StoryWorld(seed), random.Random(seed)
    rows = []
    for i in range(n):
        context = world.context()
        params = spec.space.params(int(rng.choice(spec.space.allowed(context))))
        results: dict[str, Any] = {"completed": rng.random() < world.completion(context, params)}
        if i % 7 == 0:
            results["rating"] = 1 + i % 5
        rows.append({"context": context, "params": params, "results": results, "ts": T0 + i * 60.0})
    return rows


def loop(
    url: str,
    spec_text: str,
    tmp: Path,
    rows: list[dict[str, Any]],
    before: Callable[[flywheel.Wheel], object] | None = None,
) -> dict[str, Any]:
    """Log the rows, learn, decide and report what a user would look at; ``before`` is done
    to the wheel once the rows are stored, before anything is read."""
    path = tmp / f"{url.split(':', maxsplit=1)[0]}.toml"
    path.write_text(spec_text)
    clock = Clock(T0 + len(rows) * 60.0 + 10 * DAY)
    with flywheel.open(path, store=url, clock=clock, refresh=0) as wheel:
        wheel.log_many(rows)
        wheel.flush()
        if before is not None:
            before(wheel)
        aligned = wheel.aligned().to_pylist()
        learned = wheel.learn(seed=1)
        status = wheel.status().as_dict()
        decision = wheel.decide({"genre": "thriller"}, explore=False)
        analysis = wheel.analyze()
        return {
            "aligned": sorted(
                (r["ts"], r["genre"], r["opening_type"], r["reward"], r["status"]) for r in aligned
            ),
            "published": (learned.published, learned.version),
            "playbook": wheel.playbook_rows(),
            "decision": decision.params,
            "quarantined": status["quality"],
            "pairs": [(i.factors, i.p_value) for i in analysis.findings.interactions],
            "best": [(b.segment, b.params, b.expected) for b in analysis.findings.best],
        }


def close(a: Any, b: Any) -> bool:
    """Equal, with floats equal to 1e-9 (the two engines sum in different orders)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_the_same_data_gives_the_same_answers_on_both_backends(pg_url: str, tmp_path: Path) -> None:
    spec_text = example_text() + QUALITY
    spec = example_spec()
    rows = story_rows(spec, 3000)
    on_duckdb = loop(f"duckdb:///{tmp_path / 'same.duckdb'}", spec_text, tmp_path, rows)
    on_postgres = loop(pg_url, spec_text, tmp_path, rows)
    assert on_duckdb["published"] == (True, 1)
    assert on_duckdb["quarantined"]["quarantined"] > 0  # the rule above catches ratings of 1
    for key, value in on_duckdb.items():
        assert close(value, on_postgres[key]), key


def test_forget_on_postgres_removes_the_unit_everywhere(pg_url: str) -> None:
    clock = Clock()
    with flywheel.open(example_spec(), store=pg_url, clock=clock, refresh=0) as wheel:
        kept = wheel.decide({"genre": "drama"}, unit="kept")
        gone = wheel.decide({"genre": "drama"}, unit="gone")
        wheel.signal(gone.id, "completed", True, key="g1")
        wheel.signal(kept.id, "completed", True, key="k1")
        wheel.flush()
        assert wheel.forget("gone") == {"signals": 1, "edits": 0, "decisions": 1}
        counts = wheel.store.query(
            "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM signals) AS s"
        ).to_pylist()[0]
        assert counts == {"d": 1, "s": 1}
        wheel.signal(gone.id, "completed", True, key="g1")  # its key was forgotten too
        wheel.flush()
        assert wheel.store.query("SELECT count(*) AS n FROM signals").to_pylist()[0]["n"] == 2


@pytest.fixture(params=["commit", "journal"])
def two_servers(
    pg_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[list[Client]]:
    """Two `flywheel serve` processes on the same PostgreSQL schema, answering after the
    database's commit or after their own journal's sync (one journal each)."""
    spec = tmp_path / "flywheel.toml"
    spec.write_text(example_text().replace("duckdb:///.flywheel/flywheel.duckdb", pg_url))
    processes, clients = [], []
    ports = contextlib.ExitStack()  # each held until its server is gone (see reserved_port)
    for n in range(2):
        port = ports.enter_context(reserved_port())
        journal = ["--journal", str(tmp_path / f"journal-{n}")]
        processes.append(
            subprocess.Popen(
                [*SERVE, "--spec", str(spec), "--port", str(port)]
                + (journal if request.param == "journal" else []),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        clients.append(Client(f"http://127.0.0.1:{port}"))
    try:
        for process, client in zip(processes, clients, strict=True):
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    client.call("GET", "/v1/status")
                    break
                except OSError:
                    if process.poll() is not None:
                        stderr = process.stderr.read().decode() if process.stderr else ""
                        pytest.fail(f"server exited: {stderr}")
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.1)
        yield clients
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=WAIT)
            if process.stderr is not None:
                process.stderr.close()
        ports.close()


def test_two_processes_write_concurrently_without_losing_or_duplicating(
    two_servers: list[Client], pg_url: str
) -> None:
    """Both servers take decisions and signal batches at once; the signal keys overlap, as when
    a client retries on the other server. Every decision is stored once, every key once."""
    decided: list[list[str]] = [[], []]
    errors: list[str] = []

    def work(which: int) -> None:
        client = two_servers[which]
        for round_ in range(20):
            for _ in range(5):
                status, body = client.call("POST", "/v1/decide", {"context": {"genre": "scifi"}})
                if status != 200:
                    errors.append(json.dumps(body))
                    return
                decided[which].append(body["id"])
            batch = [
                {
                    "decision": decided[which][-1],
                    "name": "rating",
                    "value": 3,
                    "key": f"{round_}-{i}",
                }
                for i in range(200)
            ]
            status, body = client.call("POST", "/v1/signals", {"signals": batch})
            if status != 200:
                errors.append(json.dumps(body))
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for client in two_servers:  # a read settles what a server journaled into the database
        assert client.call("GET", "/v1/status")[0] == 200
    with flywheel.open(example_spec(), store=pg_url, refresh=0) as wheel:
        ids = wheel.store.query("SELECT CAST(id AS VARCHAR) AS id FROM decisions")
        stored = [str(i) for i in ids.column("id").to_pylist()]
        keys = wheel.store.query(
            "SELECT count(*) AS n, count(DISTINCT key) AS k FROM signals"
        ).to_pylist()[0]
    assert sorted(stored) == sorted(decided[0] + decided[1])
    assert len(stored) == 200
    assert keys == {"n": 20 * 200, "k": 20 * 200}


def test_processes_opening_a_fresh_schema_at_once_all_succeed(pg_url: str) -> None:
    """Creating the schema and migrating happen under one advisory lock: concurrent
    ``CREATE … IF NOT EXISTS`` would otherwise collide."""
    code = (
        "from flywheel.demo import example_spec\n"
        "from flywheel.store import open_store\n"
        f"open_store(example_spec(), {pg_url!r}).close()\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(6)
    ]
    failures = [p.communicate(timeout=120)[1].decode()[-300:] for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, failures


def test_keys_created_by_two_processes_at_once_are_all_kept(pg_url: str) -> None:
    """`flywheel keys create` on a shared store is an atomic update: none is lost."""
    code = (
        "import sys\n"
        "from flywheel.demo import example_spec\n"
        "from flywheel.store import open_store\n"
        "from flywheel.server import keys\n"
        f"store = open_store(example_spec(), {pg_url!r})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()  # both are up: they go at once\n"
        "for _ in range(40):\n"
        "    keys.create(store, 'ingest')\n"
        "store.close()\n"
    )
    from flywheel.server import keys
    from flywheel.store import open_store

    open_store(example_spec(), pg_url).close()  # the schema exists before they race
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdout is not None
        process.stdout.readline()  # "ready", or "" if it failed: it says why below
    failures = [p.communicate("go\n", timeout=WAIT)[1][-300:] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], failures
    store = open_store(example_spec(), pg_url)
    try:
        created = keys.load(store)
        assert len(created) == 80 and len({k.id for k in created}) == 80
        revoked = keys.revoke(store, created[0].id)
        assert revoked.revoked_at is not None and keys.load(store)[0].revoked_at is not None
    finally:
        store.close()


def test_uuid_columns_go_to_binary_copy_as_their_16_bytes() -> None:
    """Ids in either case, across chunks and with nulls, become the bytes ``uuid.UUID`` gives;
    anything not written 8-4-4-4-12 in hex is refused, naming the column."""
    rng = random.Random(5)
    ids: list[str | None] = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(300)]
    ids[7], ids[100] = None, str(ids[100]).upper()
    column = pa.chunked_array([pa.array(ids[:150]), pa.array(ids[150:])]).slice(3)
    decoded = _uuid_bytes(column, "signals.decision_id").to_pylist()
    assert decoded == [None if i is None else uuid.UUID(i).bytes for i in ids[3:]]
    for bad in ["", "not-a-uuid", "11111111-2222-4333-8444-00000000000g", "1" * 8 + "x" + "1" * 27]:
        with pytest.raises(ValueError, match=r"signals\.decision_id: expected UUIDs"):
            _uuid_bytes(pa.array([str(uuid.uuid4()), bad]), "signals.decision_id")
