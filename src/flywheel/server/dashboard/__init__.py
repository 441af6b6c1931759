"""The dashboard: the wheel at a glance, in a browser (served by ``flywheel serve`` at ``/``
and by ``flywheel ui``).

A page is computed off the request path and kept (:class:`Views`): a request answers from
what was computed last, at once, and starts a new computation in the background when that
is older than four times what it took to compute (and at least ``fresh_for`` seconds). So a
page costs nothing while nobody looks, follows a small store within seconds, and on a store
of ten million decisions, whose health takes seconds to measure, answers in milliseconds
and is never more stale than a few computations. After an action every page is forgotten
and ``fresh`` waits for a computation that saw it. The pages themselves are in
:mod:`flywheel.server.dashboard.pages`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flywheel.server.dashboard.pages import PAGES, Block
from flywheel.wheel import Wheel

log = logging.getLogger(__name__)
STALE_AFTER = 4.0  # a page is recomputed once older than this many times its computation
FIRST_WAIT = 0.25  # seconds a request waits for a page never computed before answering


@dataclass
class _Kept:
    blocks: list[Block] | None = None
    error: str | None = None
    at: float = -math.inf  # time.monotonic() when computed (-inf: stale)
    stamp: str = ""  # the same moment, as a time of day
    took: float = 0.0
    digest: str = ""  # of the blocks: the page redraws only when it changes
    computations: int = 0  # kept so far
    generation: int = 0  # bumped by forget(): a computation of an older one is dropped
    running: Future[None] | None = field(default=None, repr=False)
    running_generation: int = -1

    @property
    def ready(self) -> bool:
        return self.blocks is not None or self.error is not None


class Views:
    """The dashboard's pages over one wheel, kept and refreshed in the background, one
    computation at a time on a thread of their own (never on a request's)."""

    def __init__(
        self,
        wheel: Wheel,
        *,
        fresh_for: float = 2.0,
        pages: Mapping[str, Callable[[Wheel], list[Block]]] = PAGES,
    ) -> None:
        self.wheel, self.fresh_for, self.pages = wheel, fresh_for, pages
        self._kept = {name: _Kept() for name in pages}
        self._lock = threading.Lock()
        # one page at a time: the dashboard never takes more than one core from the server
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="flywheel-dashboard")

    def page(self, name: str, *, fresh: bool = False) -> dict[str, Any]:
        """The page ``name`` as last computed: ``ready`` false while the first computation
        runs, ``age`` and ``took`` in seconds, a ``digest`` of the blocks, and the blocks (or
        the error that stopped it). ``fresh`` waits for a computation that started after the
        last :meth:`forget` (one already running is shared, so asking again adds nothing)."""
        with self._lock:
            kept = self._kept[name]
            stale = time.monotonic() - kept.at > max(self.fresh_for, STALE_AFTER * kept.took)
            if fresh or not kept.ready or stale:
                self._start(name, kept)
            running = kept.running
        if running is not None and (fresh or not kept.ready):
            wait([running], timeout=None if fresh else FIRST_WAIT)
        with self._lock:
            if not kept.ready:
                return {"ready": False, "page": name}
            return {
                "ready": True,
                "page": name,
                "computed_at": kept.stamp,
                "age": round(time.monotonic() - kept.at, 3),
                "took": round(kept.took, 3),
                "digest": kept.digest,
                "computations": kept.computations,
                "error": kept.error,
                "blocks": kept.blocks or [],
            }

    def warm(self, name: str) -> None:
        """Start computing ``name`` in the background, if it is not kept yet (a server warms
        its overview as it starts, so the first look at it does not wait)."""
        with self._lock:
            kept = self._kept[name]
            if not kept.ready:
                self._start(name, kept)

    def forget(self) -> None:
        """Mark every page stale (after an action): the next request recomputes it, and a
        computation that started before is not kept."""
        with self._lock:
            for kept in self._kept.values():
                kept.at = -math.inf
                kept.generation += 1

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _start(self, name: str, kept: _Kept) -> None:
        """Under the lock: a computation of the current generation, unless one runs."""
        running = kept.running
        if running is None or running.done() or kept.running_generation != kept.generation:
            kept.running = self._pool.submit(self._compute, name, kept.generation)
            kept.running_generation = kept.generation

    def _compute(self, name: str, generation: int) -> None:
        kept = self._kept[name]
        started = time.monotonic()
        try:
            blocks, error = self.pages[name](self.wheel), None
        except Exception as err:  # shown on the page, with the traceback in the log
            log.exception("the dashboard's %s page", name)
            blocks, error = None, f"{type(err).__name__}: {err}"
        took = time.monotonic() - started
        digest = hashlib.blake2b(
            json.dumps([blocks, error], sort_keys=True, default=str).encode(), digest_size=8
        ).hexdigest()
        with self._lock:
            if generation != kept.generation:
                return  # an action came meanwhile: what this saw may be gone
            kept.blocks, kept.error, kept.took, kept.digest = blocks, error, took, digest
            kept.computations += 1
            kept.at = time.monotonic()
            kept.stamp = datetime.now(UTC).strftime("%H:%M:%S UTC")
