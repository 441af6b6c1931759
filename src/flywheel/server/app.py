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
Each route declares its scope and the largest body it takes (:data:`MAX_BODY` for batches
and traces, :data:`MAX_SMALL_BODY` for the rest) as it is declared; :class:`Guard`, a pure
ASGI middleware around the whole app, checks both before anything reads the body (401, 403,
413), and every JSON body is parsed by one function
(:func:`~flywheel.collect.batches.parsed`), so a body that is not UTF-8, not JSON or nested
too deeply is a 422 naming ``body``, never a 400 without a field or a 500.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as Connection

from flywheel.catalogue import MAX_TEXT
from flywheel.collect import traces as otlp
from flywheel.collect.batches import (
    InvalidBodyError,
    RowsBody,
    SignalsBody,
    fields,
    parsed,
    row_items,
    signal_items,
)
from flywheel.collect.outcomes import Recorded
from flywheel.collect.workers import IngestWorkers
from flywheel.errors import FlywheelError, InvalidInputError, NotFoundError, StoreError
from flywheel.server import keys as api_keys
from flywheel.server.dashboard import Views
from flywheel.server.dashboard import routes as dashboard
from flywheel.server.keys import KeyRing, Scope
from flywheel.wheel import Wheel

T = TypeVar("T")

MAX_BODY = otlp.MAX_BODY
"""The largest body of a batch (``/v1/signals``, ``/v1/rows``) or of ``/v1/traces``: 64 MiB."""
MAX_SMALL_BODY = 1024 * 1024
"""The largest body of every other route: 1 MiB (a decide's context, a key's scope)."""

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
    input: str | None = Field(
        default=None,
        description="What an AI product was asked: recorded as the decision's input signal"
        " (redacted); its answer follows in /v1/signals as the output signal",
    )


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


_DECIDE = TypeAdapter(DecideBody)
_KEY = TypeAdapter(KeyBody)


class ValueBody(_Body):
    knob: str = Field(max_length=200)
    value: StrictStr | StrictInt
    text: str | None = Field(default=None, max_length=MAX_TEXT)
    start_share: float = Field(default=0.05, ge=0.0, lt=1.0)


class RetireBody(_Body):
    knob: str = Field(max_length=200)
    value: StrictStr | StrictInt
    reason: str = Field(default="", max_length=2000)


_VALUE, _RETIRE = TypeAdapter(ValueBody), TypeAdapter(RetireBody)


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
    """The one error body of every endpoint: ``errors`` names at least one field (``body``,
    ``authorization``, ``path``, ``method``, … or ``signals[3].value``)."""

    ok: bool = False
    status: int
    error: str
    errors: list[FieldError] = Field(min_length=1)


# Every route documents the one error body for every error it can answer with (the statuses
# :func:`error` is called with below); FastAPI's own 422 body is replaced, not added.
def _documented(errors: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": text} for status, text in errors.items()}


ERRORS = {
    401: "No valid key (when the server has keys): ``authorization``",
    403: "The key's scope does not allow this: ``authorization``; or, on a server that needs"
    " no key, the request is not addressed to a loopback name: ``host``",
    500: "An internal error (the server's log has the details)",
    503: "The store cannot take it now: nothing was stored, send it again",
}
WINDOW = r"^0*([1-9][0-9]{0,3}[smhd]|[1-9][0-9]{0,2}w)$"
"""A window the health route takes: up to 9999 seconds, minutes, hours or days, or 999 weeks."""
INVALID = {422: "A field is not valid: ``errors`` names each one"}
INVALID_JSON = {
    422: "A field is not valid: ``errors`` names each one (``body`` for a body that is not"
    " UTF-8, not JSON, or nested more than 200 levels deep)"
}


def error(
    status: int,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one error body of every endpoint (:class:`ErrorBody`); without ``errors``, the
    field is ``request``."""
    named = errors or [{"field": "request", "reason": message}]
    body = {"ok": False, "status": status, "error": message, "errors": named}
    return JSONResponse(body, status_code=status, headers=headers)


def _refusal(status: int, field: str, reason: str) -> JSONResponse:
    return error(status, f"{field}: {reason}", [{"field": field, "reason": reason}])


@dataclass(frozen=True)
class Access:
    """What a route needs: a key of ``scope`` (when the server has keys), and a body of at
    most ``limit`` bytes."""

    scope: Scope
    limit: int


class Guard:
    """Every request's key and body size, checked before anything reads its body: a pure
    ASGI middleware around the whole app, so no route can read a byte of a body it would
    refuse, nor forget to check the key. ``routes`` maps each path (``templates``: each
    path pattern) to its methods' :class:`Access`. A method the path does not take is
    answered 405 here, with an ``Allow`` that lists every method it does take (FastAPI's
    router would name only those of the first route it tried); a request that matches no
    route goes on to the router, which answers 404 without reading its body.

    A body is refused (413) from its ``Content-Length`` before a byte of it is read, and a
    body sent without one (chunked) as soon as its chunks pass the limit: either way the
    server never holds more than the limit."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing | None,
        routes: Mapping[str, Mapping[str, Access]],
        templates: Sequence[tuple[re.Pattern[str], Mapping[str, Access]]],
    ) -> None:
        self.app, self.keys, self.routes, self.templates = app, keys, routes, templates

    async def __call__(self, scope: Connection, receive: Receive, send: Send) -> None:
        methods = self._methods(scope) if scope["type"] == "http" else None
        if methods is None:
            await self.app(scope, receive, send)
            return
        access = methods.get(scope["method"])
        if access is None:
            allowed = ", ".join(methods)
            wrong = _refusal(405, "method", f"{scope['method']} is not one of {allowed}")
            wrong.headers["Allow"] = allowed
            await wrong(scope, receive, send)
            return
        length: int | None = None
        authorization: str | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        refused = await self._refused(authorization, access.scope)
        if refused is None and not (self.keys is not None and self.keys.required):
            refused = _rebound(scope)
        if refused is None and length is not None and length > access.limit:
            refused = _refusal(413, "body", f"is larger than {access.limit:,} bytes")
        if refused is not None:
            await refused(scope, receive, send)
            return
        if length is None:  # chunked: counted as it comes
            receive = _counted(receive, access.limit)
        await self.app(scope, receive, send)

    def _methods(self, scope: Connection) -> Mapping[str, Access] | None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        methods = self.routes.get(path)
        if methods is None:
            methods = next((m for p, m in self.templates if p.match(path)), None)
        return methods

    async def _refused(self, header: str | None, needed: Scope) -> JSONResponse | None:
        keys = self.keys
        if keys is None:
            return None
        try:
            if keys.stale:  # re-reading the keys is a store query: off the event loop
                verdict = await run_in_threadpool(keys.check, header, needed)
            else:  # 0 at once while the store requires no key
                verdict = keys.check(header, needed)
        except FlywheelError as err:
            return _refusal(503, "store", str(err))
        if verdict == 0:
            return None
        if verdict == 403:
            return _refusal(
                403, "authorization", f"this key's scope does not allow this ({needed} needed)"
            )
        return _refusal(401, "authorization", "send a valid key: Authorization: Bearer fw_…")


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def _rebound(scope: Connection) -> JSONResponse | None:
    """A request answered without a key must be addressed to a loopback name: else a web
    page elsewhere could read the server by pointing a name of its own at 127.0.0.1 (DNS
    rebinding). ``None`` when it is."""
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if name.lower() in LOOPBACK_NAMES:
        return None
    return _refusal(403, "host", f"{host!r} is not a loopback name; without keys, only those")


def _counted(receive: Receive, limit: int) -> Receive:
    """``receive``, refusing a body once more than ``limit`` bytes of it have come."""
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise otlp.TooLargeError("body", f"is larger than {limit:,} bytes")
        return message

    return counted


def create_app(
    wheel: Wheel,
    keys: KeyRing | None = None,
    *,
    close_on_shutdown: bool = False,
    workers: int = 0,
    read_only: bool = False,
    warm: bool = False,
) -> FastAPI:
    """The API over one open wheel (the caller opens it, and closes it unless
    ``close_on_shutdown``: then the server's graceful shutdown, on SIGTERM, flushes and
    closes it after the last request). When ``keys`` holds keys, every request needs
    ``Authorization: Bearer <key>`` of a scope that allows it. ``workers`` processes
    convert OTLP requests and signal batches (0: a thread of this process does). The wheel
    no longer keeps the rows of a failed write (:attr:`~flywheel.Wheel.keep_failed_writes`):
    the server has told their senders. The dashboard is served at ``/``
    (:mod:`flywheel.server.dashboard`). ``read_only`` leaves out every route but those that read
    (``flywheel ui``: the dashboard without its actions). ``warm`` computes the dashboard's
    overview as the server starts, so the first look at it does not wait."""
    wheel.keep_failed_writes = False
    pool: IngestWorkers | None = None
    views: Views | None = None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        if workers:
            pool = await run_in_threadpool(wheel.ingest_workers, workers)
        if views is not None and warm:
            views.warm("overview")
        try:
            yield
        finally:
            if pool is not None:
                pool.close()
            if views is not None:
                views.close()
            if close_on_shutdown:
                wheel.close()

    app = FastAPI(title="Flywheel", version="1", lifespan=lifespan)
    access: dict[tuple[str, str], Access] = {}

    def route(
        method: str,
        path: str,
        scope: Scope,
        limit: int = MAX_SMALL_BODY,
        errors: Mapping[int, str] | None = None,
        **options: Any,
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        """Declare a route with the scope its key needs and the largest body it takes (both
        checked by :class:`Guard`), and document every error it can answer."""
        if read_only and method != "GET":
            return lambda handler: handler
        access[method, path] = Access(scope, limit)
        limited = {413: f"The body is larger than {limit:,} bytes: ``body``"}
        responses = _documented({**ERRORS, **limited, **(errors or {})})
        return app.api_route(path, methods=[method], responses=responses, **options)

    async def batch(
        request: Request,
        in_worker: Callable[[IngestWorkers, bytes], Awaitable[T]],
        in_thread: Callable[[Wheel, bytes], T],
    ) -> T:
        """A batch's body, parsed, validated and recorded in a worker process (or a thread of
        this one), not on the event loop: a batch of 5,000 holds the interpreter for
        milliseconds, and every decide waiting meanwhile would wait with it."""
        body = await request.body()
        if pool is not None:
            return await in_worker(pool, body)
        return await run_in_threadpool(in_thread, wheel, body)

    @app.exception_handler(InvalidInputError)
    async def invalid_input(_request: Request, err: InvalidInputError) -> JSONResponse:
        status = 404 if isinstance(err, NotFoundError) else 422
        return error(status, str(err), [{"field": err.field, "reason": err.reason}])

    @app.exception_handler(InvalidBodyError)
    async def invalid_batch(_request: Request, err: InvalidBodyError) -> JSONResponse:
        return error(422, "the request is not valid", err.problems)

    @app.exception_handler(otlp.BodyError)
    async def unreadable(_request: Request, err: otlp.BodyError) -> JSONResponse:
        return error(err.status, str(err), [{"field": err.field, "reason": err.reason}])

    @app.exception_handler(FlywheelError)
    async def flywheel_error(_request: Request, err: FlywheelError) -> JSONResponse:
        field = "store" if isinstance(err, StoreError) else "server"
        return error(503, str(err), [{"field": field, "reason": str(err)}])

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, err: RequestValidationError) -> JSONResponse:
        return error(422, "the request is not valid", fields(list(err.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        if err.status_code == 404:
            return _refusal(404, "path", f"there is no route {request.url.path}")
        if err.status_code == 405:
            allowed = (err.headers or {}).get("Allow", "")
            answer = _refusal(405, "method", f"{request.method} is not one of {allowed}")
            answer.headers["Allow"] = allowed
            return answer
        return error(err.status_code, str(err.detail), headers=err.headers)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, _err: Exception) -> JSONResponse:
        # the server logs the exception with its traceback; the client gets the same shape
        return _refusal(500, "server", "internal error: the server's log has the details")

    @route(
        "POST",
        "/v1/decide",
        "decide",
        response_model=DecideAnswer,
        errors=INVALID_JSON,
        openapi_extra={"requestBody": _json_body("DecideBody")},
    )
    async def decide(request: Request) -> dict[str, Any]:
        """Parameters for a context, recorded as a decision (durable when answered), with
        its ``input`` when given."""
        body = parsed(_DECIDE, await request.body())
        d = await wheel.durably_async(
            lambda: wheel.decide(
                body.context, unit=body.unit, explore=body.explore, input=body.input
            )
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

    @route(
        "POST",
        "/v1/signals",
        "ingest",
        MAX_BODY,
        response_model=SignalsAnswer,
        errors=INVALID_JSON,
        openapi_extra={"requestBody": _json_body("SignalsBody")},
    )
    async def signals(request: Request) -> dict[str, Any]:
        """A batch of signals, feedback, implicit events and edits, all or none (durable when
        answered); idempotency by ``key``."""
        counts = await batch(request, IngestWorkers.signals, _record_signals)
        return {"ok": True, "recorded": counts.recorded, "duplicates": counts.duplicates}

    @route(
        "POST",
        "/v1/rows",
        "ingest",
        MAX_BODY,
        response_model=RowsAnswer,
        errors=INVALID_JSON,
        openapi_extra={"requestBody": _json_body("RowsBody")},
    )
    async def rows(request: Request) -> dict[str, Any]:
        """Complete rows (context, knob values, results), all or none (durable when answered)."""
        ids = await batch(request, IngestWorkers.rows, _record_rows)
        return {"ok": True, "ids": ids}

    @route(
        "POST",
        "/v1/traces",
        "ingest",
        MAX_BODY,
        openapi_extra={"requestBody": OTLP_BODY, "responses": OTLP_ANSWER},
        errors={
            400: "The body is not an OTLP request (nothing was stored)",
            413: f"The body is larger than {MAX_BODY:,} bytes, sent or decompressed: ``body``",
            415: "An unsupported content type or encoding",
        },
        response_class=Response,
    )
    async def traces(request: Request) -> Response:
        """OTLP/HTTP trace export: spans become decisions and signals (durable when
        answered); spans sent again are not stored twice."""
        try:
            fmt = otlp.media_format(request.headers.get("content-type"))
            body = await request.body()
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

    @route("GET", "/v1/playbook", "decide")
    def playbook() -> dict[str, Any]:
        """The playbook served now, one row per segment (so SDKs can serve it locally)."""
        book = wheel.playbook
        if book is None:
            return {"ok": True, "version": None, "segments": []}
        return {"ok": True, "version": book.version, "segments": wheel.playbook_rows()}

    @route("GET", "/v1/status", "decide")
    def status() -> dict[str, Any]:
        """What ``flywheel status --json`` prints."""
        return {"ok": True, **wheel.status().as_dict()}

    @route("GET", "/v1/health", "decide", errors=INVALID)
    def health(window: Annotated[str, Query(pattern=WINDOW)] = "28d") -> dict[str, Any]:
        """What ``flywheel health --json`` prints: stages, cycle time and the bottleneck,
        learning rate, force, drag, coverage and trends, learning type (``window``: a
        duration such as ``28d``)."""
        return {"ok": True, **wheel.health(window).as_dict()}

    @route("POST", "/v1/learn", "admin")
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

    @route("GET", "/v1/values", "decide")
    def values() -> dict[str, Any]:
        """The values of the open knobs (the spec's own, then those added at run time), each
        with its text and state."""
        return {"ok": True, "values": [v.shown() for v in wheel.values()]}

    @route(
        "POST",
        "/v1/values",
        "admin",
        errors={**INVALID_JSON, 404: "No such knob: ``knob``"},
        openapi_extra={"requestBody": _json_body("ValueBody")},
    )
    async def add_value(request: Request) -> dict[str, Any]:
        """Add a value to an open knob, with the text it stands for: served at once (a learn
        cycle runs for it), at least ``start_share`` of each segment's traffic on trial."""
        body = parsed(_VALUE, await request.body())
        actor = dashboard.actor_of(request, keys)
        change = await run_in_threadpool(
            lambda: wheel.add_value(
                body.knob, body.value, text=body.text, start_share=body.start_share, actor=actor
            )
        )
        return {"ok": True, **asdict(change)}

    @route(
        "POST",
        "/v1/values/retire",
        "admin",
        errors={**INVALID_JSON, 404: "No such knob or value: ``knob``, ``value``"},
        openapi_extra={"requestBody": _json_body("RetireBody")},
    )
    async def retire_value(request: Request) -> dict[str, Any]:
        """Retire a value of an open knob: never served again (its rows are still learned
        from)."""
        body = parsed(_RETIRE, await request.body())
        actor = dashboard.actor_of(request, keys)
        change = await run_in_threadpool(
            lambda: wheel.retire_value(body.knob, body.value, reason=body.reason, actor=actor)
        )
        return {"ok": True, **asdict(change)}

    @route("DELETE", "/v1/units/{unit}", "admin", errors=INVALID)
    def forget(unit: str) -> dict[str, Any]:
        """Delete every row of a unit, everywhere."""
        return {"ok": True, "deleted": wheel.forget(unit)}

    # Keys through the server that holds the store: an embedded (DuckDB) store is one
    # process's, so `flywheel keys` cannot reach it while the server runs
    @route("GET", "/v1/keys", "admin", response_model=KeysAnswer)
    def list_keys() -> dict[str, Any]:
        """Every key's id, scope, creation and revocation (never the key itself)."""
        return {"ok": True, "keys": [_shown(k) for k in api_keys.load(wheel.store)]}

    @route(
        "POST",
        "/v1/keys",
        "admin",
        response_model=NewKeyAnswer,
        errors=INVALID_JSON,
        openapi_extra={"requestBody": _json_body("KeyBody")},
    )
    async def create_key(request: Request) -> dict[str, Any]:
        """A new key, answered this once (the store keeps its hash); it works at once."""
        body = parsed(_KEY, await request.body())
        return await run_in_threadpool(_create_key, body.scope)

    def _create_key(scope: Scope) -> dict[str, Any]:
        key, text = api_keys.create(wheel.store, scope)
        if keys is not None:
            keys.reload()
        return {"ok": True, **_shown(key), "key": text}

    @route(
        "DELETE",
        "/v1/keys/{ident}",
        "admin",
        response_model=KeyAnswer,
        errors={**INVALID, 404: "No key has this id: ``id``"},
    )
    def revoke_key(ident: str) -> Any:
        """Revoke a key: refused from this answer on (by other servers on a shared store,
        within seconds)."""
        key = api_keys.revoke(wheel.store, ident)
        if keys is not None:
            keys.reload()
        return {"ok": True, **_shown(key)}

    views = dashboard.add(
        app,
        route,
        wheel,
        keys,
        actions=not read_only,
        json_body=_json_body,
        invalid=INVALID_JSON,
    )
    _with_bodies(
        app, SignalsBody, RowsBody, DecideBody, KeyBody, ValueBody, RetireBody, *dashboard.BODIES
    )
    _guard(app, keys, access)
    return app


def _guard(app: FastAPI, keys: KeyRing | None, access: Mapping[tuple[str, str], Access]) -> None:
    """Put :class:`Guard` around ``app``, with each route's :class:`Access`. A route declared
    without one, or one that lets FastAPI read its body (which it does before any check, and
    answers a body it cannot parse with a 400 that names no field), is a mistake made here:
    refused at once."""
    routes: dict[str, dict[str, Access]] = {}
    templates: dict[str, tuple[re.Pattern[str], dict[str, Access]]] = {}
    for declared in app.routes:
        if not isinstance(declared, APIRoute):
            continue  # FastAPI's own pages (the OpenAPI document): no body, no key
        if declared.body_field is not None:
            raise TypeError(f"{declared.path}: read the body with parsed(), not a parameter")
        for method in declared.methods or ():
            found = access.get((method, declared.path))
            if found is None:
                raise TypeError(f"{method} {declared.path}: declare it with route()")
            if declared.param_convertors:
                pattern = templates.setdefault(declared.path, (declared.path_regex, {}))
                pattern[1][method] = found
            else:
                routes.setdefault(declared.path, {})[method] = found
    app.add_middleware(Guard, keys=keys, routes=routes, templates=list(templates.values()))


def _shown(key: api_keys.ApiKey) -> dict[str, Any]:
    """What an answer shows of a key: everything but its hash."""
    return {
        "id": key.id,
        "scope": key.scope,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


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

    with flywheel.open(
        example_spec(), store="duckdb:///:memory:", refresh=0, background=False
    ) as wheel:
        document = create_app(wheel).openapi()
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
