"""API keys: created once, shown once, stored hashed, each with one scope.

A key reads ``fw_<id>_<secret>``; the store keeps the id, the scope and the SHA-256 of the
secret (a random 256-bit secret needs no slow hash). Scopes nest: ``ingest`` may send signals;
``decide`` may also decide and read the playbook and status; ``admin`` may do everything,
learn and forget units included.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from flywheel.errors import InvalidInputError
from flywheel.store import Store

Scope = Literal["ingest", "decide", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "decide", "admin")
META_KEY = "api_keys"


@dataclass(frozen=True)
class ApiKey:
    id: str
    scope: Scope
    digest: str
    created_at: str
    revoked_at: str | None = None

    def allows(self, needed: Scope) -> bool:
        return self.revoked_at is None and SCOPES.index(self.scope) >= SCOPES.index(needed)


def load(store: Store) -> list[ApiKey]:
    return _parse(store.get_meta(META_KEY))


def _parse(raw: str | None) -> list[ApiKey]:
    return [ApiKey(**item) for item in json.loads(raw)] if raw else []


def _update(store: Store, change: Callable[[list[ApiKey]], list[ApiKey]]) -> None:
    """Change the stored keys atomically (two ``flywheel keys`` on a shared store lose nothing)."""
    store.update_meta(META_KEY, lambda raw: json.dumps([asdict(k) for k in change(_parse(raw))]))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(store: Store, scope: str) -> tuple[ApiKey, str]:
    """A new key of ``scope``; returns it and the full key text (shown this once)."""
    if scope not in SCOPES:
        raise InvalidInputError("scope", f"{scope!r} is not one of {', '.join(SCOPES)}")
    ident, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    key = ApiKey(ident, scope, _digest(secret), datetime.now(tz=UTC).isoformat())
    _update(store, lambda keys: [*keys, key])
    return key, f"fw_{ident}_{secret}"


def revoke(store: Store, ident: str) -> ApiKey:
    found: list[ApiKey] = []

    def change(keys: list[ApiKey]) -> list[ApiKey]:
        found.clear()  # a retried change starts again
        out = []
        for key in keys:
            kept = key
            if key.id == ident:
                if key.revoked_at is None:
                    kept = replace(key, revoked_at=datetime.now(tz=UTC).isoformat())
                found.append(kept)
            out.append(kept)
        return out

    _update(store, change)
    if not found:
        raise InvalidInputError("id", f"there is no key {ident!r}")
    return found[0]


def check(keys: list[ApiKey], header: str | None, needed: Scope) -> int:
    """0 when a key in ``header`` (``Bearer fw_…``) allows ``needed``; else 401 or 403."""
    if not header or not header.startswith("Bearer "):
        return 401
    parts = header.removeprefix("Bearer ").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "fw":
        return 401
    found = next((k for k in keys if k.id == parts[1]), None)
    if found is None or found.revoked_at is not None:
        return 401
    if not hmac.compare_digest(found.digest, _digest(parts[2])):
        return 401
    return 0 if found.allows(needed) else 403


class KeyRing:
    """The keys a server checks requests against, re-read from the store at most every
    ``every`` seconds: on a PostgreSQL store shared by several servers, a key created or
    revoked with ``flywheel keys`` takes effect within that time, without a restart.

    A ring that has seen a key keeps requiring one: revoking every key shuts the door, it
    never opens it, and a key created while a keyless server runs shuts it too."""

    def __init__(self, store: Store, every: float = 5.0) -> None:
        self._store, self._every = store, every
        self._lock = threading.Lock()
        self._keys = [k for k in load(store) if k.revoked_at is None]
        self._read_at = time.monotonic()
        self.required = bool(self._keys)

    @property
    def stale(self) -> bool:
        """Whether the next :meth:`check` re-reads the keys from the store."""
        return time.monotonic() - self._read_at > self._every

    def check(self, header: str | None, needed: Scope) -> int:
        """As :func:`check`, against the keys as of at most ``every`` seconds ago."""
        if self.stale:
            with self._lock:
                if self.stale:
                    self.reload()
        return check(self._keys, header, needed)

    def reload(self) -> None:
        """Read the keys from the store now (after this server changed them itself)."""
        self._keys = [k for k in load(self._store) if k.revoked_at is None]
        self._read_at = time.monotonic()
        self.required = self.required or bool(self._keys)
