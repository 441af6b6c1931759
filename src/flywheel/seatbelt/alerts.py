"""Alerts beyond the store: the seatbelt's events POSTed as JSON to the ``[alerts]`` webhook.

:class:`Alerts` never blocks its caller: :meth:`Alerts.send` puts the event on a bounded
queue and a daemon thread delivers it, retrying a failed POST (a connection error, a timeout,
HTTP 5xx or 429) with exponential backoff. What still fails is logged (logger
``flywheel.alerts``) and counted, never raised.

:func:`relay` forwards the audit trail's halts, rollbacks, changes, resumes, ready training
sets and fired triggers. The highest entry relayed is kept in the store's ``meta`` and claimed
before anything is sent, so the processes sharing a store send each entry once between them.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flywheel import spec as spec_module
from flywheel.seatbelt.monitors import Check
from flywheel.store import Store

log = logging.getLogger("flywheel.alerts")

RELAYED_KEY = "alerts.relayed"
"""The ``meta`` key holding the highest audit ``seq`` relayed (claimed before it is sent)."""

RELAYED_ACTIONS = ("halt", "rollback", "change", "resume", "ready", "trigger")
"""The audit actions :func:`relay` sends; overrides and refused candidates stay in the store."""

CAPACITY = 1_000
"""Events waiting at most; when full, the oldest is dropped (and counted)."""

MAX_BACKOFF = 30.0
"""The longest wait, in seconds, between two tries of one event."""

FIELDS = ("event", "ts", "reason", "detail", "actor")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Answer a redirect as the error it is for a webhook: following a 301/302/303 would turn
    the POST into a GET without the event."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Alerts:
    """Sends events to ``config.webhook`` off the caller's thread; a no-op without a webhook.

    ``backoff`` is the wait before the first retry, doubled before each next one (up to
    :data:`MAX_BACKOFF` seconds, with a little jitter); ``capacity`` bounds the queue.
    """

    def __init__(
        self,
        config: spec_module.Alerts,
        name: str,
        *,
        backoff: float = 0.5,
        capacity: int = CAPACITY,
    ) -> None:
        self._url = config.webhook
        self._retries = max(0, int(config.retries))
        self._timeout = config.timeout_seconds
        self._name = name
        self._backoff = backoff
        self._capacity = max(1, capacity)
        self._where = _where(config.webhook) if config.webhook else ""
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._queue: deque[tuple[str, bytes]] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._in_flight = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._sent = self._failed = self._dropped = 0

    @property
    def enabled(self) -> bool:
        """Whether a webhook is configured (without one, :meth:`send` does nothing)."""
        return self._url is not None

    @property
    def sent(self) -> int:
        """Events the webhook accepted (a 2xx answer)."""
        with self._cond:
            return self._sent

    @property
    def failed(self) -> int:
        """Events given up on: refused (4xx other than 429), or still failing after the retries."""
        with self._cond:
            return self._failed

    @property
    def dropped(self) -> int:
        """Events never tried: pushed out of a full queue, or sent after :meth:`close`."""
        with self._cond:
            return self._dropped

    def send(self, event: Mapping[str, Any]) -> None:
        """Queue ``event`` (keys ``event``, ``ts``, ``reason``, ``detail``, ``actor``; a missing
        one is sent as null) for delivery; returns at once and never raises."""
        if self._url is None:
            return
        try:
            kind = str(event.get("event"))
            body = json.dumps(
                {"flywheel": self._name, **{k: _value(k, event.get(k)) for k in FIELDS}},
                default=str,
            ).encode()
        except Exception:  # an event that cannot be encoded is lost, not the caller's problem
            log.exception("alert %r could not be encoded as JSON", event.get("event"))
            with self._cond:
                self._failed += 1
            return
        with self._cond:
            if self._closed:
                self._dropped += 1
                return
            if len(self._queue) >= self._capacity:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append((kind, body))
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="flywheel-alerts", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread to be had: the event stays queued for now
                    log.exception("the alerts thread could not start")
                else:
                    self._thread = thread
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was delivered or given up on (``True``), or until
        ``timeout`` seconds pass (``False``)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._queue and not self._in_flight, max(0.0, timeout)
            )

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop the thread: an event still queued is
        dropped, one still being retried is given up on. Calling it again does nothing."""
        if self._url is None:
            self._closed = True
            return
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        with self._cond:
            if not self._closed:
                self._closed = True
                if self._queue:
                    log.warning(
                        "%d alert(s) to %s not delivered before close",
                        len(self._queue),
                        self._where,
                    )
                    self._dropped += len(self._queue)
                    self._queue.clear()
            self._stop.set()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- the delivery thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._closed)
                if not self._queue:
                    return
                kind, body = self._queue.popleft()
                self._in_flight += 1
            delivered = False
            try:
                delivered = self._deliver(kind, body)
            except Exception:  # the thread outlives any one event
                log.exception("alert %r to %s failed", kind, self._where)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    if delivered:
                        self._sent += 1
                    else:
                        self._failed += 1
                    self._cond.notify_all()

    def _deliver(self, kind: str, body: bytes) -> bool:
        tries = 0
        while True:
            tries += 1
            retry, problem = self._post(body)
            if problem is None:
                return True
            if not retry or tries > self._retries:
                break
            if self._stop.wait(self._delay(tries)):
                problem = f"{problem} (closed while waiting to retry)"
                break
        log.warning(
            "alert %r to %s failed after %d tr%s: %s",
            kind,
            self._where,
            tries,
            "y" if tries == 1 else "ies",
            problem,
        )
        return False

    def _delay(self, tries: int) -> float:
        """The wait before try ``tries + 1``: the backoff doubled per try, capped, +-10%."""
        base = min(self._backoff * 2.0 ** (tries - 1), MAX_BACKOFF)
        return base * random.uniform(0.9, 1.1)

    def _post(self, body: bytes) -> tuple[bool, str | None]:
        """One POST: ``(retry?, problem)``, the problem ``None`` when the webhook took it."""
        assert self._url is not None
        request = urllib.request.Request(
            self._url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": "flywheel-alerts"},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                response.read()
        except urllib.error.HTTPError as err:
            err.close()
            return err.code >= 500 or err.code == 429, f"HTTP {err.code} {err.reason}"
        except urllib.error.URLError as err:
            return True, str(err.reason)
        except (OSError, http.client.HTTPException) as err:  # timeouts, resets, bad answers
            return True, f"{type(err).__name__}: {err}"
        return False, None


def relay(store: Store, alerts: Alerts, *, limit: int = 200) -> int:
    """Send the audit entries (:data:`RELAYED_ACTIONS`) not relayed yet, at most
    ``limit``; returns how many were sent.

    The range is claimed in the store before it is sent: a process that finds the mark moved
    by another since it read it sends nothing (the other sends those entries). On a store that
    never relayed, the mark starts at the newest entry: old history is not sent, what comes
    after it is.
    """
    if not alerts.enabled:
        return 0
    mark = store.get_meta(RELAYED_KEY)
    if mark is None:
        top = store.query("SELECT coalesce(max(seq), 0) AS top FROM audit").to_pylist()[0]["top"]
        store.update_meta(RELAYED_KEY, lambda old: str(int(top)) if old is None else old)
        return 0
    actions = ", ".join(f"'{a}'" for a in RELAYED_ACTIONS)
    rows = store.query(
        "SELECT seq, ts, action, reason, detail, actor FROM audit"
        f" WHERE seq > $after AND action IN ({actions}) ORDER BY seq LIMIT {max(1, int(limit))}",
        {"after": int(mark)},
    ).to_pylist()
    if not rows:
        return 0
    claimed = str(int(rows[-1]["seq"]))
    won = False

    def claim(old: str | None) -> str:
        nonlocal won
        won = old == mark
        return claimed if won else old if old is not None else mark

    store.update_meta(RELAYED_KEY, claim)
    if not won:
        return 0
    for row in rows:
        alerts.send(
            {
                "event": row["action"],
                "ts": row["ts"],
                "reason": row["reason"],
                "detail": json.loads(row["detail"]) if row["detail"] else None,
                "actor": row["actor"],
            }
        )
    return len(rows)


def monitor_event(check: Check, *, now: datetime | None = None) -> dict[str, Any]:
    """A failing monitor check as an event for :meth:`Alerts.send` (``event = "monitor"``)."""
    return {
        "event": "monitor",
        "ts": now or datetime.now(UTC),
        "reason": f"{check.name}: {check.summary}",
        "detail": check.as_dict(),
        "actor": "seatbelt",
    }


def _value(key: str, value: Any) -> Any:
    if key == "ts":
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC).isoformat()
    if key == "detail" and value is not None:
        return dict(value) if isinstance(value, Mapping) else {"value": value}
    if key != "detail" and value is not None and not isinstance(value, str):
        return str(value)
    return value


def _where(url: str) -> str:
    """The webhook without its path, query or credentials (they may hold a secret), for logs."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname}{port}"
