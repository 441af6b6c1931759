"""Hostile requests on a real uvicorn server: the key and the body's size are checked before
the body is read, every body is parsed into the one error shape with a field named, every
answer (404, 405, 413 included) is in that shape, and a schema-driven fuzz run finds nothing."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import flywheel
from flywheel.demo import example_spec
from flywheel.server import keys as api_keys
from flywheel.server.app import MAX_BODY, MAX_SMALL_BODY, openapi_document
from flywheel.server.keys import KeyRing
from tests.conftest import THRILLER, WAIT
from tests.server.test_app import Client, serving

MiB = 1024 * 1024
SHAPE = {"ok", "status", "error", "errors"}


class Served:
    def __init__(self, client: Client, wheel: flywheel.Wheel, admin: str | None) -> None:
        self.client, self.wheel, self.admin = client, wheel, admin
        address = urlsplit(client.base)
        self.host, self.port = address.hostname or "", address.port or 0

    def auth(self) -> str:
        return f"Authorization: Bearer {self.admin}\r\n" if self.admin else ""

    def partial(self, head: str, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Send a request's head and only the first bytes of its body, then read the answer:
        one that waits for the rest of the body never comes (the socket times out)."""
        with socket.create_connection((self.host, self.port), timeout=WAIT) as conn:
            conn.sendall(head.encode() + body)
            answer = http.client.HTTPResponse(conn)
            answer.begin()
            return answer.status, dict(answer.getheaders()), json.loads(answer.read())

    def chunked(self, path: str, chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
        """A body sent in chunks, with no Content-Length."""
        with socket.create_connection((self.host, self.port), timeout=WAIT) as conn:
            head = f"POST {path} HTTP/1.1\r\nHost: test\r\n{self.auth()}"
            conn.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            for chunk in chunks:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")
            answer = http.client.HTTPResponse(conn)
            answer.begin()
            return answer.status, json.loads(answer.read())

    def send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        headers = {"content-type": content_type}
        if self.admin:
            headers["authorization"] = f"Bearer {self.admin}"
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), json.loads(answer.read())


def _serve(tmp_path: Path, with_key: bool) -> Iterator[Served]:
    store = f"duckdb:///{tmp_path / 'hostile.duckdb'}"
    with flywheel.open(example_spec(), store=store, refresh=0) as wheel:
        admin = api_keys.create(wheel.store, "admin")[1] if with_key else None
        with serving(wheel, KeyRing(wheel.store)) as client:
            yield Served(client, wheel, admin)


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, with_key=True)


def _is_shape(answer: dict[str, Any], status: int, field: str) -> bool:
    return (
        set(answer) == SHAPE
        and answer["ok"] is False
        and answer["status"] == status
        and any(e["field"] == field for e in answer["errors"])
    )


@pytest.mark.parametrize("path", ["/v1/decide", "/v1/keys", "/v1/signals", "/v1/traces"])
def test_a_request_without_a_key_is_refused_before_its_body_is_read(
    keyed: Served, path: str
) -> None:
    """200 MB announced, 1 byte sent: the answer comes without the rest of the body."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {200 * 1000 * 1000}\r\n\r\n"
    )
    status, _, answer = keyed.partial(head, b"{")
    assert status == 401 and _is_shape(answer, 401, "authorization"), answer
    assert keyed.wheel.summary().decisions == 0


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/v1/decide", MAX_SMALL_BODY), ("/v1/keys", MAX_SMALL_BODY), ("/v1/signals", MAX_BODY)],
)
def test_a_body_past_the_limit_is_refused_from_its_length_before_it_is_read(
    keyed: Served, path: str, limit: int
) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\n{keyed.auth()}Content-Length: {limit + 1}\r\n\r\n"
    )
    status, _, answer = keyed.partial(head, b"{")
    assert status == 413 and _is_shape(answer, 413, "body"), answer
    assert f"{limit:,} bytes" in answer["errors"][0]["reason"]


def test_a_chunked_body_past_the_limit_is_refused_as_it_comes(keyed: Served) -> None:
    """No Content-Length to refuse it by: counted as it is read, and refused at the limit
    with the same 413 the other routes give (a batch route's 64 MiB is refused the same way
    as a decide's 1 MiB)."""
    filler = b" " * (64 * 1024)
    chunks = [b'{"context": {"genre": "thriller"}', *[filler] * (2 * MiB // len(filler)), b"}"]
    status, answer = keyed.chunked("/v1/decide", chunks)
    assert status == 413 and _is_shape(answer, 413, "body"), answer
    assert keyed.wheel.summary().decisions == 0
    # the server is fine and the same route takes a body under the limit, chunked too
    status, answer = keyed.chunked("/v1/decide", [json.dumps({"context": THRILLER}).encode()])
    assert status == 200 and answer["ok"] is True


NOT_JSON = {
    "invalid UTF-8": b'{"context": {"genre": "\xff\xfe"}}',
    "bytes that are not text": b"\xff\xfe\xfd",
    "not JSON": b'{"context": ',
    "1,000 arrays deep": b"[" * 1000 + b"]" * 1000,
    "1,000 objects deep": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "empty": b"",
}


@pytest.mark.parametrize("path", ["/v1/decide", "/v1/keys", "/v1/signals", "/v1/rows"])
def test_a_body_that_is_not_json_is_a_422_naming_the_body(keyed: Served, path: str) -> None:
    conn = http.client.HTTPConnection(keyed.host, keyed.port, timeout=WAIT)
    try:
        for case, body in NOT_JSON.items():
            status, _, answer = keyed.send(conn, "POST", path, body)
            assert status == 422 and _is_shape(answer, 422, "body"), (case, answer)
    finally:
        conn.close()
    assert keyed.wheel.summary().decisions == 0


def test_deeply_nested_otlp_json_is_a_400_and_the_connection_lives_on(keyed: Served) -> None:
    deep = "1"
    for _ in range(333):
        deep = f'{{"arrayValue": {{"values": [{deep}]}}}}'
    attribute = f'{{"key": "gen_ai.request.model", "value": {deep}}}'
    nested = f'{{"resourceSpans": [{{"resource": {{"attributes": [{attribute}]}}}}]}}'
    conn = http.client.HTTPConnection(keyed.host, keyed.port, timeout=WAIT)
    try:
        for body in (nested.encode(), b"[" * 100_000 + b"]" * 100_000):
            status, _, answer = keyed.send(conn, "POST", "/v1/traces", body)
            assert status == 400 and _is_shape(answer, 400, "body"), answer
        # the same connection still works: nothing was dropped
        status, _, answer = keyed.send(conn, "GET", "/v1/status")
        assert status == 200 and answer["ok"] is True
    finally:
        conn.close()


def test_every_refusal_is_in_the_one_shape_and_405_says_what_is_allowed(
    keyed: Served,
) -> None:
    conn = http.client.HTTPConnection(keyed.host, keyed.port, timeout=WAIT)
    try:
        status, headers, answer = keyed.send(conn, "GET", "/v1/decide")
        assert status == 405 and headers["allow"] == "POST" and _is_shape(answer, 405, "method")
        status, headers, answer = keyed.send(conn, "PUT", "/v1/keys")
        assert status == 405 and _is_shape(answer, 405, "method")
        assert sorted(headers["allow"].split(", ")) == ["GET", "POST"]  # both of its routes
        status, headers, answer = keyed.send(conn, "PATCH", "/v1/keys/abc")
        assert status == 405 and headers["allow"] == "DELETE"
        status, _, answer = keyed.send(conn, "GET", "/v1/nothing-here")
        assert status == 404 and _is_shape(answer, 404, "path")
        status, _, answer = keyed.send(conn, "DELETE", "/v1/keys/nokey")
        assert status == 404 and _is_shape(answer, 404, "id")
    finally:
        conn.close()
    _, created = keyed.client.call("POST", "/v1/keys", {"scope": "ingest"}, key=keyed.admin)
    ingest = created["key"]
    status, answer = keyed.client.call("POST", "/v1/decide", {"context": THRILLER}, key=ingest)
    assert status == 403 and _is_shape(answer, 403, "authorization")
    status, answer = keyed.client.call("GET", "/v1/status", key="fw_nope_x")
    assert status == 401 and _is_shape(answer, 401, "authorization")


def test_the_document_lists_every_status_and_each_body_limit() -> None:
    document = json.loads(openapi_document())
    assert document["components"]["schemas"]["ErrorBody"]["properties"]["errors"]["minItems"] == 1
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            answers = operation["responses"]
            assert {"401", "403", "413", "500", "503"} <= set(answers), (method, path)
            limit = (
                MAX_BODY if path in ("/v1/signals", "/v1/rows", "/v1/traces") else MAX_SMALL_BODY
            )
            assert f"{limit:,} bytes" in answers["413"]["description"], (method, path)
            if "requestBody" in operation:  # a body that cannot be read is answered too
                assert {"400", "422"} & set(answers), (method, path)


def test_a_schema_driven_fuzz_run_finds_no_failure(tmp_path: Path) -> None:
    """Schemathesis, every check, on a server with an admin key and on one without keys (a
    smaller run than bench/fuzz.py's, which BENCHMARKS.md reports)."""
    from bench.fuzz import fuzz

    results = fuzz(examples=10, seed=1, folder=tmp_path)
    outputs = [r["output"] for r in results["runs"]]
    assert results["failures"] == 0, outputs
    assert all(
        r["exit_code"] == 0 and r["operations"] == 20 - (not r["keys"]) for r in results["runs"]
    )
    assert results["requests"] >= 300
