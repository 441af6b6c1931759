"""The dashboard: the wheel at a glance, in a browser (served by ``flywheel serve`` at ``/``
and by ``flywheel ui``).

A page is computed off the request path and kept (:class:`Views`): a request answers from
what was computed last, at once, and starts a new computation in the background when that
is older than four times what it took to compute (and at least ``fresh_for`` seconds). So a
page costs nothing while nobody looks, follows a small store within seconds, and on a store
of ten million decisions, whose health takes seconds to measure, answers in milliseconds
and is never more stale than a few computations. ``fresh`` computes before answering (after
an action, to show its effect). The pages themselves are in :mod:`flywheel.server.dashboard.pages`.
"""

from __future__ import annotations

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
    serial: int = 0  # computations so far
    running: Future[None] | None = field(default=None, repr=False)


class Views:
    """The dashboard's pages over one wheel, kept and refreshed in the background."""

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
        runs, ``age`` and ``took`` in seconds, and the blocks (or the error that stopped it)."""
        kept = self._kept[name]
        if fresh:
            self._compute(name)
        else:
            with self._lock:
                stale = time.monotonic() - kept.at > max(self.fresh_for, STALE_AFTER * kept.took)
                if (kept.blocks is None and kept.error is None) or stale:
                    self._start(name, kept)
                running = kept.running
            if kept.blocks is None and kept.error is None and running is not None:
                wait([running], timeout=FIRST_WAIT)
        if kept.blocks is None and kept.error is None:
            return {"ready": False, "page": name}
        return {
            "ready": True,
            "page": name,
            "computed_at": kept.stamp,
            "age": round(time.monotonic() - kept.at, 3),
            "took": round(kept.took, 3),
            "serial": kept.serial,
            "error": kept.error,
            "blocks": kept.blocks or [],
        }

    def warm(self, name: str) -> None:
        """Start computing ``name`` in the background, if it is not kept yet (a server warms
        its overview as it starts, so the first look at it does not wait)."""
        with self._lock:
            kept = self._kept[name]
            if kept.blocks is None and kept.error is None:
                self._start(name, kept)

    def forget(self) -> None:
        """Mark every page stale (after an action): the next request recomputes it."""
        with self._lock:
            for kept in self._kept.values():
                kept.at = -math.inf

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _start(self, name: str, kept: _Kept) -> None:
        if kept.running is None or kept.running.done():
            kept.running = self._pool.submit(self._compute, name)

    def _compute(self, name: str) -> None:
        kept = self._kept[name]
        started = time.monotonic()
        try:
            blocks, error = self.pages[name](self.wheel), None
        except Exception as err:  # shown on the page, with the traceback in the log
            log.exception("the dashboard's %s page", name)
            blocks, error = None, f"{type(err).__name__}: {err}"
        took = time.monotonic() - started
        with self._lock:
            kept.blocks, kept.error, kept.took = blocks, error, took
            kept.serial += 1
            kept.at = time.monotonic()
            kept.stamp = datetime.now(UTC).strftime("%H:%M:%S UTC")
