"""The wheel turning by itself: online updates and scheduled learn cycles, off decide's path.

A :class:`Turn` is a daemon thread beside a wheel. Between cycles it follows the results as
they are recorded (every ``[learn] online_rows`` results, or every ``online_interval`` when
fewer arrived): an online update of the served posterior (:func:`flywheel.playbook.publish.
online`). When ``[learn] every`` and/or ``after`` are set it runs learn cycles on that
schedule: at most one at a time among all the processes sharing the store (the store's
``exclusive`` lock: an advisory lock on PostgreSQL), and only when no other process ran one
meanwhile (the last cycle is kept in the store). Between cycles it runs the negative-loop
guard and the volume and staleness monitors, and sends their alerts.

Nothing here is on the decide path: :meth:`Turn.note` (called as results are recorded) is
a counter and, at most, the setting of an event.

A simulation whose clock runs faster than the wall clock paces the turn instead: once it
calls :meth:`Turn.settle`, the thread acts only when asked (the simulation is its clock), and
each call returns once what is due then (an online update of the results so far, a cycle the
schedule asks for) is done, so the same seed tells the same story.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from flywheel.learn.sql import complete_since_sql
from flywheel.spec import Learn, Spec
from flywheel.store import Store

log = logging.getLogger("flywheel.turn")

LAST_CYCLE_KEY = "learn.last_cycle"
"""The ``meta`` key holding the last learn cycle: when (the wheel's clock), how it ended."""

POLL = 1.0  # seconds between looks at the schedule
CHECK_EVERY = 60.0  # seconds between two runs of the guard and the monitors
COUNT_EVERY = 30.0  # seconds between counts of new complete rows (other processes' too)
EPOCH = datetime.fromtimestamp(0, tz=UTC)


@dataclass(frozen=True)
class Cycle:
    """A learn cycle as remembered in the store: when it ran (the wheel's clock, and the
    cut-off of its rows), what started it, and how it ended."""

    at: datetime
    trigger: str
    published: bool
    version: int | None
    reason: str
    halted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "trigger": self.trigger,
            "published": self.published,
            "version": self.version,
            "reason": self.reason,
            "halted": self.halted,
        }

    @classmethod
    def read(cls, store: Store) -> Cycle | None:
        raw = store.get_meta(LAST_CYCLE_KEY)
        if not raw:
            return None
        found = json.loads(raw)
        return cls(**{**found, "at": datetime.fromisoformat(found["at"])})

    def write(self, store: Store) -> None:
        store.set_meta(LAST_CYCLE_KEY, json.dumps(self.as_dict()))


def update_due(pending: int, seen: int, learn: Learn) -> bool:
    """Is an online update due, ``pending`` results after the last one and ``seen`` in all?

    Every ``online_rows`` results; sooner at first, where each result counts most: from
    ``min_rows`` results on, as soon as the results since the last update are half as many as
    all before (an update at 20, 40, 60, 90, ... results), so the cold start turns to
    Thompson sampling the moment there is evidence."""
    if pending <= 0 or seen < learn.min_rows:
        return False
    return pending >= min(learn.online_rows, max(learn.min_rows, (seen - pending) // 2))


def complete_since(store: Store, spec: Spec, since: datetime, as_of: datetime) -> int:
    """Rows decided after ``since`` whose reward is known as of ``as_of``."""
    table = store.query(complete_since_sql(spec), {"since": since, "as_of": as_of})
    return int(table.column("n")[0].as_py() or 0)


def schedule(store: Store, spec: Spec, now: datetime) -> dict[str, Any]:
    """The last cycle and when the next is due, for ``status``: ``next`` is a time (with
    ``every``), and ``rows_to_go`` the complete rows still awaited (with ``after``)."""
    last = Cycle.read(store)
    out: dict[str, Any] = {
        "every_seconds": spec.learn.every_seconds,
        "after_rows": spec.learn.after_rows,
        "last": None if last is None else last.as_dict(),
        "next": None,
        "rows_to_go": None,
    }
    if spec.learn.every_seconds is not None:
        due = now if last is None else last.at + timedelta(seconds=spec.learn.every_seconds)
        out["next"] = due.isoformat()
    if spec.learn.after_rows is not None:
        done = complete_since(store, spec, EPOCH if last is None else last.at, now)
        out["rows_to_go"] = max(0, spec.learn.after_rows - done)
    return out


class Turning(Protocol):
    """What a :class:`Turn` drives (a :class:`flywheel.Wheel`)."""

    spec: Spec
    store: Store

    def update(self) -> bool: ...
    def cycle(self, trigger: str) -> object: ...
    def watch(self) -> None: ...
    def now(self) -> datetime: ...


class Turn:
    """Online updates and scheduled cycles for one wheel, on a daemon thread."""

    def __init__(
        self,
        wheel: Turning,
        *,
        online: bool,
        scheduled: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        learn = wheel.spec.learn
        self._wheel = wheel
        self._online = online
        self._scheduled = scheduled
        self._interval = learn.online_seconds
        self._every = learn.every_seconds
        self._after = learn.after_rows
        self._clock = clock  # real seconds, for the intervals (the wheel's may be simulated)
        self._learn = learn
        self._pending = 0  # results recorded here since the last online update
        self._seen = 0  # ... in all
        self._recorded = 0  # ... since the last cycle
        self._last_update = self._last_check = self._last_count = clock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._paced = False  # a simulation paces the turn: act only when it settles
        self._asked: list[threading.Event] = []  # settle() calls waiting for a step
        self._asking = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="flywheel-turn", daemon=True)
        self._thread.start()

    def note(self, results: int) -> None:
        """``results`` signals were recorded (called on the recording path: cheap)."""
        self._pending += results
        self._seen += results
        self._recorded += results
        if self._paced:
            return
        if update_due(self._pending, self._seen, self._learn) or (
            self._after and self._recorded >= self._after
        ):
            self._wake.set()

    def settle(self, timeout: float | None = None) -> bool:
        """Do now, on the thread, what is due (an online update of the results recorded so
        far, a scheduled cycle), and return once it is done (``False``: not within
        ``timeout``). From the first call on, the thread acts only when asked: for
        simulations, whose clock is theirs."""
        done = threading.Event()
        with self._asking:
            if self._stop.is_set():
                return False
            self._paced = True
            self._asked.append(done)
        self._wake.set()
        return done.wait(timeout)

    def stop(self) -> None:
        """Stop the thread; a cycle or update in progress finishes first."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(None if self._paced else POLL)
            self._wake.clear()
            if self._stop.is_set():
                break
            with self._asking:
                asked, self._asked = self._asked, []
            if self._paced and not asked:
                continue
            try:
                self._step(forced=bool(asked))
            except Exception:  # the thread must outlive a bad moment of the store
                log.exception("flywheel: the wheel's background turn failed; trying again")
            finally:
                for done in asked:
                    done.set()
        with self._asking:  # nobody waits on a stopped turn
            for done in self._asked:
                done.set()

    def _step(self, forced: bool = False) -> None:
        now = self._clock()
        trigger = self._due(now, forced) if self._scheduled else None
        if trigger is not None:
            self._recorded = 0
            self._pending = 0
            self._wheel.cycle(trigger)
            self._last_update = now
        elif (
            self._online
            and self._pending
            and (
                forced
                or update_due(self._pending, self._seen, self._learn)
                or now - self._last_update >= self._interval
            )
        ):
            self._pending = 0
            self._last_update = now
            self._wheel.update()
        if not self._paced and now - self._last_check >= CHECK_EVERY:
            self._last_check = now
            self._wheel.watch()

    def _due(self, now: float, forced: bool = False) -> str | None:
        """What makes a cycle due now, if anything (new complete rows are counted only when
        this process recorded enough of them, or every COUNT_EVERY seconds, or when asked)."""
        count = self._after is not None and (
            forced or self._recorded >= self._after or now - self._last_count >= COUNT_EVERY
        )
        if count:
            self._last_count = now
        trigger = due(self._wheel.store, self._wheel.spec, self._wheel.now(), count=count)
        if count and trigger is None:
            self._recorded = 0  # counted: wait for as many again (or the next count)
        return trigger


def due(store: Store, spec: Spec, at: datetime, *, count: bool = True) -> str | None:
    """What makes a learn cycle due at ``at`` (``"every"`` or ``"after"``), from the last
    cycle the store remembers, or ``None``; ``count``: count the new complete rows that
    ``after`` waits for (a query)."""
    last = Cycle.read(store)
    every, after = spec.learn.every_seconds, spec.learn.after_rows
    if every is not None and (last is None or (at - last.at).total_seconds() >= every):
        return "every"
    if after is not None and count:
        since = EPOCH if last is None else last.at
        if complete_since(store, spec, since, at) >= after:
            return "after"
    return None
