"""The dashboard over HTTP: the page at ``/``, its script and style under ``/ui/``, the pages'
data under ``/v1/dashboard/PAGE`` and the three actions it offers (resume, roll back,
release), which are API routes like any other.

The page itself holds no data and needs no key: everything it shows is fetched with the key
the person typed, sent in the ``Authorization`` header and kept in the tab's session storage
(never in a URL, so never in a log). Reading needs a ``decide`` key, as ``/v1/status`` does;
the data page (rows, not summaries) and the actions need ``admin``. Every asset ships in the
package: nothing is fetched from elsewhere, and the page's Content-Security-Policy allows
nothing else. While a server needs no key, it answers only requests addressed to a loopback
name (:class:`~flywheel.server.app.Guard`): a web page elsewhere cannot read it by pointing
a name of its own at 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from flywheel.collect.batches import parsed
from flywheel.server import keys as api_keys
from flywheel.server.dashboard import Views
from flywheel.server.dashboard import pages as dashboard_pages
from flywheel.server.keys import KeyRing
from flywheel.wheel import Wheel

Route = Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]]
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
DECISION_ID = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Page(StrEnum):
    """The dashboard's pages computed in the background (the data page is searched live)."""

    overview = "overview"
    playbook = "playbook"
    findings = "findings"
    seatbelt = "seatbelt"
    health = "health"


class ResumeBody(_Body):
    reason: str = Field(min_length=1, max_length=2000)


def _whole(value: Any) -> Any:
    """A JSON integer, also written as ``2.0``; never a string or a boolean."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RollbackBody(_Body):
    version: Annotated[int, Field(ge=1), BeforeValidator(_whole)]


class ReleaseBody(_Body):
    ids: list[Annotated[str, Field(pattern=DECISION_ID)]] | None = Field(
        default=None, max_length=10_000
    )
    accept: bool = False


BODIES = (ResumeBody, RollbackBody, ReleaseBody)
_RESUME, _ROLLBACK, _RELEASE = (
    TypeAdapter(ResumeBody),
    TypeAdapter(RollbackBody),
    TypeAdapter(ReleaseBody),
)


def add(
    app: FastAPI,
    route: Route,
    wheel: Wheel,
    keys: KeyRing | None,
    *,
    actions: bool = True,
    json_body: Callable[[str], dict[str, Any]],
    invalid: dict[int, str],
) -> Views:
    """Add the dashboard to ``app`` (``actions``: also its three admin actions); returns
    its :class:`~flywheel.server.dashboard.Views`, which the app closes on shutdown."""
    views = Views(wheel)
    shell = resources.files("flywheel.server.dashboard").joinpath("index.html")
    template = shell.read_text(encoding="utf-8")

    def index(_request: Request) -> Response:
        needs_key = keys is not None and keys.check(None, "decide") != 0
        html = template.replace("{{keys}}", "required" if needs_key else "none").replace(
            "{{actions}}", "on" if actions else "off"
        )
        return HTMLResponse(html, headers=HEADERS)

    app.add_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/ui", StaticFiles(packages=[("flywheel.server.dashboard", "static")]), name="ui")

    @route("GET", "/v1/dashboard/data", "admin", errors=invalid)
    def data(
        q: Annotated[
            str, Query(max_length=200, description="A unit pseudonym or decision id")
        ] = "",
    ) -> Any:
        """The dashboard's data page: the latest decisions and signals as stored, or those
        of one unit or decision (rows, not summaries: an admin key's)."""
        return {"ready": True, "page": "data", "blocks": dashboard_pages.data(wheel, q)}

    @route("GET", "/v1/dashboard/{page}", "decide", errors=invalid)
    def dashboard(
        page: Page,
        fresh: Annotated[
            bool, Query(description="Wait for a computation that saw the last action")
        ] = False,
    ) -> Any:
        """One page of the dashboard (overview, playbook, findings, seatbelt, health) as
        blocks to draw, from the page kept last (``ready`` false while the first computation
        runs)."""
        return {**views.page(page.value, fresh=fresh), "actions": actions}

    if not actions:
        return views

    @route(
        "POST",
        "/v1/resume",
        "admin",
        errors=invalid,
        openapi_extra={"requestBody": json_body("ResumeBody")},
    )
    async def resume(request: Request) -> dict[str, Any]:
        """Lift the seatbelt's halt, with a reason (recorded with the key's id)."""
        body = parsed(_RESUME, await request.body())
        lifted = await run_in_threadpool(wheel.resume, body.reason, actor=actor_of(request, keys))
        views.forget()
        return {"ok": True, "lifted": None if lifted is None else lifted.as_dict()}

    @route(
        "POST",
        "/v1/rollback",
        "admin",
        errors={**invalid, 404: "No such version: ``version``"},
        openapi_extra={"requestBody": json_body("RollbackBody")},
    )
    async def rollback(request: Request) -> dict[str, Any]:
        """Publish an earlier playbook version again as the newest, and serve it."""
        body = parsed(_ROLLBACK, await request.body())
        book = await run_in_threadpool(wheel.rollback, body.version, actor=actor_of(request, keys))
        views.forget()
        return {"ok": True, "restored": body.version, "version": book.version}

    @route(
        "POST",
        "/v1/release",
        "admin",
        errors={**invalid, 404: "An id is not in quarantine: ``ids``"},
        openapi_extra={"requestBody": json_body("ReleaseBody")},
    )
    async def release(request: Request) -> dict[str, Any]:
        """Re-check quarantined rows (all, or ``ids``) and release those that pass;
        ``accept`` releases them regardless, as a recorded override."""
        body = parsed(_RELEASE, await request.body())
        released, kept = await run_in_threadpool(
            lambda: wheel.release(body.ids, accept=body.accept, actor=actor_of(request, keys))
        )
        views.forget()
        return {"ok": True, "released": released, "quarantined": kept}

    return views


def actor_of(request: Request, keys: KeyRing | None) -> str:
    """Who an action is recorded as: the id of the key that allowed it (``key 1a2b3c4d``),
    never the key; on a server that needs no key, a header proves nothing: ``no key``."""
    if keys is None or not keys.required:
        return "no key (loopback)"
    return f"key {api_keys.key_id(request.headers.get('authorization'))}"
