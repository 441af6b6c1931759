"""The error hierarchy: every error Flywheel raises derives from :class:`FlywheelError`.

Errors carry the field they are about, so the CLI can print them and the HTTP API can turn them
into one JSON shape without parsing messages.
"""

from __future__ import annotations

from dataclasses import dataclass


class FlywheelError(Exception):
    """Root of every error raised by Flywheel."""

    exit_code = 1


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: ``path`` is dotted (``knobs.twist_count``)."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"{self.path}: {self.message}{where}"


class SpecError(FlywheelError):
    """The spec is invalid; ``errors`` lists every field that is wrong."""

    exit_code = 2

    def __init__(self, errors: list[FieldError], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        head = f"invalid spec{f' {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {e}" for e in errors))


class InvalidInputError(FlywheelError, ValueError):
    """A call was given bad input; nothing was written for it."""

    exit_code = 2

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def __reduce__(self) -> tuple[type[InvalidInputError], tuple[str, str]]:
        return type(self), (self.field, self.reason)  # pickled whole, e.g. from a worker


class NotFoundError(InvalidInputError):
    """A call named something that is not there (a playbook version, a key, a quarantined
    row): answered 404 over HTTP."""


class UnknownNameError(InvalidInputError):
    """A knob, context feature or signal name that the spec does not declare."""


class ValueNotAllowedError(InvalidInputError):
    """A value outside the declared choices or range."""


class WrongTypeError(InvalidInputError):
    """A value of the wrong type (text where a number is expected, and so on)."""


class SkeletonViolationError(InvalidInputError):
    """Parameters that break a skeleton rule or contradict a fixed value."""


class StoreError(FlywheelError):
    """The store cannot be opened, read or written."""


class StoreLockedError(StoreError):
    """Another process holds the embedded store open for writing."""
