"""Batches as JSON: the shapes of ``signal_batch`` and ``log_many`` items as a body carries
them, validated by pydantic, and its errors named as the SDK names fields.

The HTTP API documents its batch bodies with these shapes, and a worker process parses a
batch's body with them itself (:mod:`flywheel.collect.workers`), so a server's own process
never holds the batch as Python objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, NotRequired, TypeVar

from pydantic import (
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from flywheel.errors import InvalidInputError

MAX_BATCH = 100_000
T = TypeVar("T")


# Batches are typed dicts, not models: validated into plain dicts in one pass, with no
# per-item object to build and dump (a 5,000-signal batch: 5 ms instead of 38).
@with_config(ConfigDict(extra="forbid"))
class SignalBody(TypedDict):
    """One item: a named signal (``name``, ``value``), feedback (``rating``, ``thumbs``,
    ``comment``), an implicit event (``event``, ``dwell_ms``) or an edit of an AI draft
    (``draft``, ``final``)."""

    decision: str
    name: NotRequired[str]
    value: NotRequired[float | bool | str]
    rating: NotRequired[float | None]
    thumbs: NotRequired[bool | None]
    comment: NotRequired[str | None]
    event: NotRequired[str | None]
    dwell_ms: NotRequired[float | None]
    draft: NotRequired[str | None]
    final: NotRequired[str | None]
    ts: NotRequired[float | None]
    key: NotRequired[str | None]
    unit: NotRequired[str | None]


@with_config(ConfigDict(extra="forbid"))
class SignalsBody(TypedDict):
    signals: Annotated[list[SignalBody], Field(min_length=1, max_length=MAX_BATCH)]


@with_config(ConfigDict(extra="forbid"))
class RowBody(TypedDict):
    context: dict[str, Any]
    params: dict[str, Any]
    results: dict[str, Any]
    unit: NotRequired[str | None]
    ts: NotRequired[float | None]
    playbook: NotRequired[StrictInt | None]  # strict: true is no version, as in the SDK
    propensity: NotRequired[StrictInt | StrictFloat | None]
    policy: NotRequired[str | None]


@with_config(ConfigDict(extra="forbid"))
class RowsBody(TypedDict):
    rows: Annotated[list[RowBody], Field(min_length=1, max_length=MAX_BATCH)]


# What pydantic adds to a location for each member of a union (``value: float | bool | str``
# fails as ``value.float``, ``value.bool`` and ``value.str``): not a field of the request
_UNION_MEMBERS = frozenset({"float", "int", "bool", "str", "none", "bytes", "list", "dict"})


def fields(problems: list[Any]) -> list[dict[str, Any]]:
    """Each problem of a body as ``{field, reason}``, the field written as the SDK writes it
    (``signals[3].value``; ``body`` for a body that is not JSON), one entry a field (a union's
    members' reasons joined)."""
    reasons: dict[str, list[str]] = {}
    for problem in problems:
        reasons.setdefault(_field(problem), []).append(str(problem["msg"]))
    return [{"field": f, "reason": _either(list(dict.fromkeys(r)))} for f, r in reasons.items()]


def _either(reasons: list[str]) -> str:
    """``Input should be a valid number or a valid string``, from a union's reasons."""
    lead = "Input should be "
    if len(reasons) > 1 and all(r.startswith(lead) for r in reasons):
        return lead + " or ".join(r.removeprefix(lead) for r in reasons)
    return "; ".join(reasons)


def _field(problem: Mapping[str, Any]) -> str:
    if problem.get("type") == "json_invalid":
        return "body"
    loc = tuple(problem["loc"])
    path = ""
    for part in loc[1:] if loc[:1] == ("body",) else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in _UNION_MEMBERS and "[" not in part:
            path += f".{part}" if path else str(part)
    return path or "body"


class InvalidBodyError(InvalidInputError):
    """A body that is not a valid batch: ``problems`` names every field (``{field, reason}``)."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = problems
        first = problems[0] if problems else {"field": "body", "reason": "is not valid"}
        super().__init__(first["field"], first["reason"])

    def __reduce__(self) -> tuple[type[InvalidBodyError], tuple[list[dict[str, str]]]]:  # type: ignore[override]
        return type(self), (self.problems,)


_SIGNALS = TypeAdapter(SignalsBody)
_ROWS = TypeAdapter(RowsBody)


def parsed(shape: TypeAdapter[T], body: bytes) -> T:
    """``body`` as ``shape``: its JSON parsed and checked in one pass by pydantic-core. Every
    JSON body the HTTP API reads comes through here, so every fault of one is an
    :class:`InvalidBodyError` that names its field: ``body`` for bytes that are not UTF-8,
    not JSON, or nested deeper than pydantic-core's limit (200 levels), which it refuses as
    it parses, so no body can exhaust the stack."""
    try:
        return shape.validate_json(body)
    except ValidationError as err:
        raise InvalidBodyError(fields(err.errors(include_url=False))) from None


def signal_items(body: bytes) -> Sequence[Mapping[str, Any]]:
    """The items of a ``{"signals": [...]}`` body (JSON, parsed and checked in one pass)."""
    return parsed(_SIGNALS, body)["signals"]


def row_items(body: bytes) -> Sequence[Mapping[str, Any]]:
    """The rows of a ``{"rows": [...]}`` body, as :func:`signal_items` reads signals."""
    return parsed(_ROWS, body)["rows"]
