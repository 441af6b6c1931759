"""Pseudonymous unit ids: a keyed hash (HMAC-SHA256) of the raw id, never the id itself.

What is hashed is the id as given, or, with ``[privacy] normalize_units``, the id after each
step in order: ``trim`` drops leading and trailing whitespace, ``lower`` folds case
(``str.casefold``: ``Alice@X.com`` and ``alice@x.com`` are one unit). ``forget`` hashes the id
it is given the same way, so it matches exactly the ids that normalise to the same text.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Sequence

from flywheel.errors import WrongTypeError

SALT_META_KEY = "unit_salt"
CHECK_META_KEY = "unit_salt_check"
NORMALIZE_META_KEY = "unit_normalize"


def fingerprint(key: bytes) -> str:
    """A value that tells whether two salts are the same, without revealing either."""
    return hmac.digest(key, b"flywheel unit salt check", "sha256")[:8].hex()


class Pseudonymizer:
    """Maps raw unit ids to stable keyed hashes.

    >>> p = Pseudonymizer(b"salt")
    >>> p("user-42") == p("user-42") != p("user-43")
    True
    >>> len(p("user-42"))
    32
    >>> q = Pseudonymizer(b"salt", ("trim", "lower"))
    >>> q(" Alice@X.com") == q("alice@x.com") == p("alice@x.com") != p("Alice@X.com")
    True
    """

    def __init__(self, key: bytes, normalize: Sequence[str] = ()) -> None:
        self.key = key
        self.normalize = tuple(normalize)

    def __call__(self, unit: object, field: str = "unit") -> str:
        if isinstance(unit, bool) or not isinstance(unit, str | int):
            raise WrongTypeError(field, f"expected text or an integer, got {type(unit).__name__}")
        raw = str(unit)
        for step in self.normalize:
            raw = raw.strip() if step == "trim" else raw.casefold()
        if not raw:
            raise WrongTypeError(field, "must not be empty")
        try:
            encoded = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise WrongTypeError(field, "is not valid Unicode text (a lone surrogate)") from None
        return hmac.digest(self.key, encoded, "sha256")[:16].hex()


def salt(env_var: str, stored: str | None) -> tuple[bytes, str | None]:
    """The salt to use and, when a new one was generated, the value to store.

    The environment variable named in the spec wins; without it the store keeps a random salt
    of its own, so hashes stay stable across runs of the same store.
    """
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env.encode(), None
    if stored:
        return bytes.fromhex(stored), None
    fresh = secrets.token_bytes(32)
    return fresh, fresh.hex()
