"""API keys: created once, shown once, stored hashed, each with one scope.

A key reads ``fw_<id>_<secret>``; the store keeps the id, the scope and the SHA-256 of the
secret (a random 256-bit secret needs no slow hash). Scopes nest: ``ingest`` may send signals;
``decide`` may also decide and read the playbook and status; ``admin`` may do everything,
learn and forget units included.

A store that has ever had a key requires one for good: every key ever created stays in the
stored list (revoking marks it, never removes it), so whether keys are required is read from
the store, not from a server's memory, and revoking the last key closes every server rather
than opening it. Only an explicit :func:`allow_keyless` (``flywheel keys open --yes``) lets
servers answer without a key again, and the next key created undoes it.
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

from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.store import Store

Scope = Literal["ingest", "decide", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "decide", "admin")
META_KEY = "api_keys"
OPEN_KEY = "api_keys_open"
"""Where :func:`allow_keyless` records its decision: when, and how many keys existed then."""


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
    """Every key ever created, revoked ones included, oldest first."""
    return _parse(store.get_meta(META_KEY))


def required(store: Store) -> bool:
    """Whether servers on ``store`` need a key for every request, from the store's state: yes
    once any key was created, unless :func:`allow_keyless` was called since the last one."""
    return _required(load(store), store.get_meta(OPEN_KEY))


def opened_at(store: Store) -> str | None:
    """When :func:`allow_keyless` let servers answer without a key, while that still holds."""
    raw = store.get_meta(OPEN_KEY)
    return None if raw is None or _required(load(store), raw) else str(json.loads(raw)["at"])


def _required(keys: list[ApiKey], opened: str | None) -> bool:
    # the list only grows, so a key created after the decision makes it longer than it was
    return len(keys) > (int(json.loads(opened)["keys"]) if opened else 0)


def allow_keyless(store: Store) -> str:
    """Let servers on ``store`` answer requests without a key again (within their reload
    interval), as they did before the first key: the administrator's explicit decision,
    recorded in the store with its time, which it returns. Every key must be revoked first;
    the next key created requires keys again."""
    keys = load(store)
    active = [k.id for k in keys if k.revoked_at is None]
    if active:
        raise InvalidInputError("keys", f"{', '.join(active)} still active: revoke every key first")
    at = datetime.now(tz=UTC).isoformat()
    # a key created meanwhile is not counted here, so it still requires keys
    store.set_meta(OPEN_KEY, json.dumps({"at": at, "keys": len(keys)}))
    return at


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
        raise NotFoundError("id", f"there is no key {ident!r}")
    return found[0]


def check(keys: list[ApiKey], header: str | None, needed: Scope) -> int:
    """0 when a key in ``header`` (``Bearer fw_…``) allows ``needed``; else 401 or 403."""
    parts = _parts(header)
    if parts is None:
        return 401
    ident, secret = parts
    found = next((k for k in keys if k.id == ident), None)
    if found is None or found.revoked_at is not None:
        return 401
    if not hmac.compare_digest(found.digest, _digest(secret)):
        return 401
    return 0 if found.allows(needed) else 403


def key_id(header: str | None) -> str | None:
    """The id of the key in ``header`` (``Bearer fw_<id>_<secret>``), as written: it names
    the key only once :func:`check` has accepted the header."""
    parts = _parts(header)
    return None if parts is None else parts[0]


def _parts(header: str | None) -> tuple[str, str] | None:
    """The id and secret of a ``Bearer fw_<id>_<secret>`` header; ``None`` if it is not one."""
    if not header or not header.startswith("Bearer "):
        return None
    parts = header.removeprefix("Bearer ").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "fw":
        return None
    return parts[1], parts[2]


class KeyRing:
    """The keys a server checks requests against, re-read from the store at most every
    ``every`` seconds whether or not keys are required yet: on a PostgreSQL store shared by
    several servers, a key created or revoked with ``flywheel keys`` (or the keyless state
    allowed with ``flywheel keys open``) takes effect within that time, without a restart.

    Whether keys are required comes from the store (:func:`required`), so a restarted server
    is as closed as the one it replaces.

    A request handler asks :attr:`required` (cheap; true while the ring is stale too) and,
    when true, :meth:`check` (which re-reads the store when :attr:`stale`: a store query, so
    off the event loop then). With ``keyless=False`` (a server on a non-loopback address)
    requests need a key even while the store requires none."""

    def __init__(self, store: Store, every: float = 5.0, *, keyless: bool = True) -> None:
        self._store, self._every, self._keyless = store, every, keyless
        self._lock = threading.Lock()
        self.reload()

    @property
    def stale(self) -> bool:
        """Whether the next :meth:`check` re-reads the keys from the store."""
        return time.monotonic() - self._read_at > self._every

    @property
    def required(self) -> bool:
        """Whether requests need a key, as of the last read; true while :attr:`stale` as well,
        since only a re-read (:meth:`check`) can tell that a key was created meanwhile."""
        return self._state[1] or self.stale

    def check(self, header: str | None, needed: Scope) -> int:
        """As :func:`check`, against the keys as of at most ``every`` seconds ago; 0 for any
        request while the store requires no key."""
        if self.stale:
            with self._lock:
                if self.stale:
                    self.reload()
        keys, needs_key = self._state
        return check(keys, header, needed) if needs_key else 0

    def reload(self) -> None:
        """Read the keys from the store now (after this server changed them itself)."""
        keys = load(self._store)
        needs_key = not self._keyless or _required(keys, self._store.get_meta(OPEN_KEY))
        self._state = ([k for k in keys if k.revoked_at is None], needs_key)
        self._read_at = time.monotonic()
