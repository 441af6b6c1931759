"""The HTTP API: the SDK's calls over JSON, and OTLP/HTTP trace intake, with one error shape.

Every endpoint is a thin shell over one :class:`~flywheel.Wheel`. A 2xx answer to a write
(``/v1/decide``, ``/v1/signals``, ``/v1/rows``, ``/v1/traces``) comes after its rows are
durable: synced to the wheel's write-ahead journal when it has one (the store gets them
within a second, and after a crash when the journal is opened again), else committed to the
store. A rejected request stores nothing, and neither does one answered 503: the server's
wheel drops a batch the store (or the journal) refused, and every request in it is told
(:attr:`~flywheel.Wheel.keep_failed_writes`), so sending it again stores it once. Every error
has the same body (a test fixes it)::

    {"ok": false, "status": 422, "error": "…", "errors": [{"field": "…", "reason": "…"}]}

``POST /v1/traces`` speaks OTLP/HTTP (protobuf or JSON, optionally gzip): spans become
decisions and signals (:mod:`flywheel.collect.traces`), and the answer is an OTLP
ExportTraceServiceResponse whose ``partial_success`` counts the spans that could not be used.

With API keys (:mod:`flywheel.server.keys`) every request needs one whose scope allows it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from flywheel.collect import traces as otlp
from flywheel.collect.batches import (
    InvalidBodyError,
    RowsBody,
    SignalsBody,
    fields,
    row_items,
    signal_items,
)
from flywheel.collect.outcomes import Recorded
from flywheel.collect.workers import IngestWorkers
from flywheel.errors import FlywheelError, InvalidInputError
from flywheel.server import keys as api_keys
from flywheel.server.keys import KeyRing, Scope
from flywheel.wheel import Wheel

T = TypeVar("T")

OTLP_BODY = {
    "required": True,
    "description": "An OTLP ExportTraceServiceRequest; Content-Encoding gzip or deflate allowed.",
    "content": {
        otlp.PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
        otlp.JSON: {"schema": {"type": "object", "description": "OTLP/JSON (hex ids)"}},
    },
}
OTLP_ANSWER: dict[str, Any] = {
    "200": {
        "description": "An ExportTraceServiceResponse, in the request's format;"
        " partial_success counts the spans that could not be used",
        "content": {
            otlp.PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            otlp.JSON: {"schema": {"type": "object"}},
        },
    }
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecideBody(_Body):
    context: dict[str, Any] = Field(default_factory=dict)
    unit: str | None = None
    explore: bool = True


class DecideAnswer(BaseModel):
    """A decision: its id (send it with its signals), the parameters to act on, how they were
    chosen, and the playbook's expected result for them with its interval."""

    ok: bool = True
    id: str
    params: dict[str, Any]
    policy: str
    propensity: float | None
    playbook: int | None
    expected: float | None
    low: float | None
    high: float | None


class KeyBody(_Body):
    scope: Scope


class KeyShown(BaseModel):
    """An API key as the server shows it: never the key, nor its hash."""

    id: str
    scope: Scope
    created_at: str
    revoked_at: str | None


class KeyAnswer(KeyShown):
    ok: bool = True


class NewKeyAnswer(KeyAnswer):
    key: str  # ``fw_<id>_<secret>``: shown this once


class KeysAnswer(BaseModel):
    ok: bool = True
    keys: list[KeyShown]


class SignalsAnswer(BaseModel):
    """What a signal batch stored: ``recorded`` + ``duplicates`` = the items sent."""

    ok: bool = True
    recorded: int = Field(description="Items stored")
    duplicates: int = Field(
        description="Items skipped: their idempotency key was stored before, or came earlier"
        " in the batch (nothing of them is stored again)"
    )


class RowsAnswer(BaseModel):
    ok: bool = True
    ids: list[str]


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    """The one error body of every endpoint."""

    ok: bool = False
    status: int
    error: str
    errors: list[FieldError]


# Every route documents the one error body for every error it can answer with (the statuses
# :func:`error` is called with below); FastAPI's own 422 body is replaced, not added. OTLP's
# own refusals are documented on its route.
def _documented(errors: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": text} for status, text in errors.items()}


ERRORS = _documented(
    {
        401: "No valid key (when the server has keys)",
        403: "The key's scope does not allow this",
        500: "An internal error",
        503: "The store cannot take it now: nothing was stored, send it again",
    }
)
INVALID = _documented({422: "A field is not valid: ``errors`` names each one"})


def error(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    """The one error body of every endpoint (:class:`ErrorBody`)."""
    body = {"ok": False, "status": status, "error": message, "errors": errors or []}
    return JSONResponse(body, status_code=status)


def create_app(
    wheel: Wheel,
    keys: KeyRing | None = None,
    *,
    close_on_shutdown: bool = False,
    workers: int = 0,
) -> FastAPI:
    """The API over one open wheel (the caller opens it, and closes it unless
    ``close_on_shutdown``: then the server's graceful shutdown, on SIGTERM, flushes and
    closes it after the last request). When ``keys`` holds keys, every request needs
    ``Authorization: Bearer <key>`` of a scope that allows it. ``workers`` processes
    convert OTLP requests and signal batches (0: a thread of this process does). The wheel
    no longer keeps the rows of a failed write (:attr:`~flywheel.Wheel.keep_failed_writes`):
    the server has told their senders."""
    wheel.keep_failed_writes = False
    pool: IngestWorkers | None = None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        if workers:
            pool = await run_in_threadpool(wheel.ingest_workers, workers)
        try:
            yield
        finally:
            if pool is not None:
                pool.close()
            if close_on_shutdown:
                wheel.close()

    app = FastAPI(title="Flywheel", version="1", lifespan=lifespan, responses=ERRORS)

    def need(scope: Scope) -> Callable[[Request], Awaitable[None]]:
        async def guard(request: Request) -> None:  # async: no thread hop per request
            if keys is None or not keys.required:
                return
            header = request.headers.get("authorization")
            if keys.stale:  # re-reading the keys is a store query: off the event loop
                verdict = await run_in_threadpool(keys.check, header, scope)
            else:
                verdict = keys.check(header, scope)
            if verdict == 401:
                raise HTTPException(401, "send a valid key: Authorization: Bearer fw_…")
            if verdict == 403:
                raise HTTPException(403, f"this key's scope does not allow this ({scope} needed)")

        return guard

    async def batch(
        request: Request,
        in_worker: Callable[[IngestWorkers, bytes], Awaitable[T]],
        in_thread: Callable[[Wheel, bytes], T],
    ) -> T:
        """A batch's body, parsed, validated and recorded in a worker process (or a thread of
        this one), not on the event loop: a batch of 5,000 holds the interpreter for
        milliseconds, and every decide waiting meanwhile would wait with it."""
        body = await _read(request)
        if pool is not None:
            return await in_worker(pool, body)
        return await run_in_threadpool(in_thread, wheel, body)

    @app.exception_handler(InvalidInputError)
    async def invalid_input(_request: Request, err: InvalidInputError) -> JSONResponse:
        return error(422, str(err), [{"field": err.field, "reason": err.reason}])

    @app.exception_handler(InvalidBodyError)
    async def invalid_batch(_request: Request, err: InvalidBodyError) -> JSONResponse:
        return error(422, "the request is not valid", err.problems)

    @app.exception_handler(FlywheelError)
    async def flywheel_error(_request: Request, err: FlywheelError) -> JSONResponse:
        return error(503, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, err: RequestValidationError) -> JSONResponse:
        return error(422, "the request is not valid", fields(list(err.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, err: HTTPException) -> JSONResponse:
        return error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, _err: Exception) -> JSONResponse:
        # the server logs the exception with its traceback; the client gets the same shape
        return error(500, "internal error: the server's log has the details")

    @app.post(
        "/v1/decide",
        dependencies=[Depends(need("decide"))],
        response_model=DecideAnswer,
        responses=INVALID,
    )
    async def decide(body: DecideBody) -> dict[str, Any]:
        """Parameters for a context, recorded as a decision (durable when answered)."""
        d = await wheel.durably_async(
            lambda: wheel.decide(body.context, unit=body.unit, explore=body.explore)
        )
        return {
            "ok": True,
            "id": d.id,
            "params": d.params,
            "policy": d.policy,
            "propensity": d.propensity,
            "playbook": d.playbook,
            "expected": d.expected,
            "low": d.low,
            "high": d.high,
        }

    @app.post(
        "/v1/signals",
        dependencies=[Depends(need("ingest"))],
        response_model=SignalsAnswer,
        responses=INVALID,
        openapi_extra={"requestBody": _json_body("SignalsBody")},
    )
    async def signals(request: Request) -> dict[str, Any]:
        """A batch of signals, feedback, implicit events and edits, all or none (durable when
        answered); idempotency by ``key``."""
        counts = await batch(request, IngestWorkers.signals, _record_signals)
        return {"ok": True, "recorded": counts.recorded, "duplicates": counts.duplicates}

    @app.post(
        "/v1/rows",
        dependencies=[Depends(need("ingest"))],
        response_model=RowsAnswer,
        responses=INVALID,
        openapi_extra={"requestBody": _json_body("RowsBody")},
    )
    async def rows(request: Request) -> dict[str, Any]:
        """Complete rows (context, knob values, results), all or none (durable when answered)."""
        ids = await batch(request, IngestWorkers.rows, _record_rows)
        return {"ok": True, "ids": ids}

    @app.post(
        "/v1/traces",
        dependencies=[Depends(need("ingest"))],
        openapi_extra={"requestBody": OTLP_BODY, "responses": OTLP_ANSWER},
        responses=_documented(
            {
                400: "The body is not an OTLP request (nothing was stored)",
                413: f"The body is larger than {otlp.MAX_BODY:,} bytes",
                415: "An unsupported content type or encoding",
            }
        ),
        response_class=Response,
    )
    async def traces(request: Request) -> Response:
        """OTLP/HTTP trace export: spans become decisions and signals (durable when
        answered); spans sent again are not stored twice."""
        try:
            fmt = otlp.media_format(request.headers.get("content-type"))
            body = await _read(request)
            encoding = request.headers.get("content-encoding")
            if pool is not None:  # durable, awaited without holding a thread
                intake = await pool.ingest(body, encoding, fmt)
            else:
                intake = await run_in_threadpool(_ingest_traces, wheel, body, encoding, fmt)
        except InvalidInputError as err:
            status = err.status if isinstance(err, otlp.BodyError) else 400
            return error(status, str(err), [{"field": err.field, "reason": err.reason}])
        media = otlp.PROTOBUF if fmt == "protobuf" else otlp.JSON
        return Response(otlp.answer(intake, fmt), media_type=media)

    @app.get("/v1/playbook", dependencies=[Depends(need("decide"))])
    def playbook() -> dict[str, Any]:
        """The playbook served now, one row per segment (so SDKs can serve it locally)."""
        book = wheel.playbook
        if book is None:
            return {"ok": True, "version": None, "segments": []}
        return {"ok": True, "version": book.version, "segments": wheel.playbook_rows()}

    @app.get("/v1/status", dependencies=[Depends(need("decide"))])
    def status() -> dict[str, Any]:
        """What ``flywheel status --json`` prints."""
        return {"ok": True, **wheel.status().as_dict()}

    @app.post("/v1/learn", dependencies=[Depends(need("admin"))])
    def learn() -> dict[str, Any]:
        result = wheel.learn()
        return {
            "ok": True,
            "published": result.published,
            "version": result.version,
            "reason": result.reason,
            "halted": result.halted,
            "checks": [c.as_dict() for c in result.checks],
        }

    @app.delete("/v1/units/{unit}", dependencies=[Depends(need("admin"))], responses=INVALID)
    def forget(unit: str) -> dict[str, Any]:
        """Delete every row of a unit, everywhere."""
        return {"ok": True, "deleted": wheel.forget(unit)}

    # Keys through the server that holds the store: an embedded (DuckDB) store is one
    # process's, so `flywheel keys` cannot reach it while the server runs
    @app.get("/v1/keys", dependencies=[Depends(need("admin"))], response_model=KeysAnswer)
    def list_keys() -> dict[str, Any]:
        """Every key's id, scope, creation and revocation (never the key itself)."""
        return {"ok": True, "keys": [_shown(k) for k in api_keys.load(wheel.store)]}

    @app.post(
        "/v1/keys",
        dependencies=[Depends(need("admin"))],
        response_model=NewKeyAnswer,
        responses=INVALID,
    )
    def create_key(body: KeyBody) -> dict[str, Any]:
        """A new key, answered this once (the store keeps its hash); it works at once."""
        key, text = api_keys.create(wheel.store, body.scope)
        if keys is not None:
            keys.reload()
        return {"ok": True, **_shown(key), "key": text}

    @app.delete(
        "/v1/keys/{ident}",
        dependencies=[Depends(need("admin"))],
        response_model=KeyAnswer,
        responses={**INVALID, **_documented({404: "No key has this id"})},
    )
    def revoke_key(ident: str) -> dict[str, Any]:
        """Revoke a key: refused from this answer on (by other servers on a shared store,
        within seconds)."""
        try:
            key = api_keys.revoke(wheel.store, ident)
        except InvalidInputError:
            raise HTTPException(404, f"there is no key {ident!r}") from None
        if keys is not None:
            keys.reload()
        return {"ok": True, **_shown(key)}

    _with_bodies(app, SignalsBody, RowsBody)
    return app


def _shown(key: api_keys.ApiKey) -> dict[str, Any]:
    """What an answer shows of a key: everything but its hash."""
    return {
        "id": key.id,
        "scope": key.scope,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


async def _read(request: Request) -> bytes:
    """The raw body, refused past ``otlp.MAX_BODY`` bytes before it is all read."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > otlp.MAX_BODY:
            raise otlp.TooLargeError("body", f"is larger than {otlp.MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _record_signals(wheel: Wheel, body: bytes) -> Recorded:
    """Parse, validate and record a signal batch, durably, and count what the store took of
    it: off the event loop."""
    items = signal_items(body)
    return wheel.durably(lambda: wheel.submit_signal_batch(items)).result()


def _record_rows(wheel: Wheel, body: bytes) -> list[str]:
    """Parse, validate and record a batch of complete rows, durably: off the event loop."""
    items = row_items(body)
    return wheel.durably(lambda: wheel.log_many(items))


def _json_body(name: str) -> dict[str, Any]:
    """The request body of a route that reads its JSON itself: ``name``'s schema (added to the
    document's components by :func:`_with_bodies`)."""
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def _with_bodies(app: FastAPI, *shapes: Any) -> None:
    """Add the schemas of bodies read by hand (:func:`_json_body`) to the OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for shape in shapes:
            schema = TypeAdapter(shape).json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[shape.__name__] = schema
        app.openapi_schema = dict(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _ingest_traces(
    wheel: Wheel, body: bytes, encoding: str | None, fmt: otlp.Format
) -> otlp.Intake:
    """Decompress, convert and record one OTLP request, durably: off the event loop."""
    return wheel.traces(otlp.decompress(body, encoding), fmt, durably=True)


def openapi_document() -> str:
    """The API's OpenAPI document as committed in ``docs/openapi.json`` (regenerate with
    ``python -m flywheel.server > docs/openapi.json``; a test keeps the two equal)."""
    import json

    import flywheel
    from flywheel.demo import example_spec

    with flywheel.open(example_spec(), store="duckdb:///:memory:", refresh=0) as wheel:
        document = create_app(wheel).openapi()
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
