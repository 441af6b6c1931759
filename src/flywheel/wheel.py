"""The SDK: one :class:`Wheel` per spec, a thin shell over collect, store, align and playbook."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from flywheel import align, catalogue
from flywheel.analyze import Analysis, analyze, export
from flywheel.analyze.evaluate import Evaluation, Target
from flywheel.analyze.evaluate import evaluate as evaluate_offline
from flywheel.catalogue import Catalogue, KnobValue, ValueChange
from flywheel.collect import importers
from flywheel.collect.journal import Journal, default_folder, leftover_journal
from flywheel.collect.outcomes import Outcomes, Pending, Recorded, signal_rows_of
from flywheel.collect.record import IdFactory, Recorder
from flywheel.collect.traces import Format, Intake, TraceMapper
from flywheel.collect.units import (
    CHECK_META_KEY,
    NORMALIZE_META_KEY,
    SALT_META_KEY,
    Pseudonymizer,
    fingerprint,
    salt,
)
from flywheel.collect.workers import IngestWorkers
from flywheel.collect.writer import BufferedWriter, Entry, Rows, to_tables
from flywheel.errors import (
    FlywheelError,
    InvalidInputError,
    SpecError,
    StoreError,
    WrongTypeError,
)
from flywheel.health import Health, health
from flywheel.health.design import design as design_document
from flywheel.improve import datasets, memory, triggers
from flywheel.improve import themes as themes_
from flywheel.playbook import Decider, Decision, LearnResult, Playbook, publish, warehouse
from flywheel.seatbelt import breaker, monitors, quality
from flywheel.seatbelt.alerts import Alerts, monitor_event, relay
from flywheel.seatbelt.status import History, Status, history_of, never_received
from flywheel.spec import Spec, load
from flywheel.store import Store, open_store, tables_for
from flywheel.store.warm import Archived, Tiered
from flywheel.turn import Cycle, Turn, due, schedule

T = TypeVar("T")
log = logging.getLogger("flywheel")
ARCHIVED_KEY = "storage.archived"  # the 'meta' key: when the scheduled archive last ran
ARCHIVE_EVERY = 3600.0  # seconds between two scheduled archives
REWRITTEN_KEY = "memory.rewritten"  # the 'meta' key changed when stored snapshots were rewritten
SWITCH_AFTER = 30.0
"""Seconds a process keeps serving a catalogue after another process added values, waiting
for the first playbook learned for them (a retirement is served at once)."""


def open(
    spec: str | Path | Mapping[str, Any] | Spec = "flywheel.toml",
    *,
    store: str | None = None,
    clock: Callable[[], float] | None = None,
    batch_rows: int = 50_000,
    max_delay: float = 1.0,
    refresh: float = 5.0,
    seed: int | None = None,
    journal: str | Path | bool = False,
    background: bool = True,
) -> Wheel:
    """Open a flywheel: a spec (path, mapping or :class:`Spec`) and its store.

    ``store`` overrides the spec's storage URL; ``clock`` (epoch seconds) replaces the wall
    clock, for simulations and tests; ``batch_rows`` and ``max_delay`` tune write batching;
    every ``refresh`` seconds the wheel looks for a playbook published by another process
    (0: never); ``seed`` makes decide's random choices reproducible (simulations);
    ``journal`` is a folder for a write-ahead journal (:mod:`flywheel.collect.journal`;
    ``True``: beside a DuckDB file, none for other stores): rows are durable once synced
    there and reach the store within ``max_delay`` seconds. Without one, a journal a crashed
    process left beside a DuckDB file is stored first. ``background`` runs what the spec's
    ``[learn]`` asks for on a thread of its own (:mod:`flywheel.turn`): online updates between
    cycles (``online``, on by default) and scheduled cycles (``every``, ``after``); a script
    that only reads (a report, a status check) passes ``False``.
    """
    if isinstance(spec, Spec):
        parsed = spec
    elif isinstance(spec, Mapping):
        parsed = Spec.from_dict(spec)
    elif isinstance(spec, str | Path):
        parsed = load(spec)
    else:
        raise WrongTypeError("spec", "expected a path, a mapping or a Spec")
    return Wheel(
        parsed,
        open_store(parsed, store),
        clock=clock,
        batch_rows=batch_rows,
        max_delay=max_delay,
        refresh=refresh,
        seed=seed,
        journal=journal,
        background=background,
    )


class Wheel:
    """A running flywheel: decide, report signals, read aligned rows.

    Thread-safe. Writes are buffered; :meth:`flush` and :meth:`close` (and leaving a ``with``
    block, and interpreter exit) return once everything recorded so far is durable.
    """

    def __init__(
        self,
        spec: Spec,
        store: Store,
        *,
        clock: Callable[[], float] | None = None,
        batch_rows: int = 50_000,
        max_delay: float = 1.0,
        refresh: float = 5.0,
        seed: int | None = None,
        journal: str | Path | bool = False,
        background: bool = True,
    ) -> None:
        self.store = store
        self._clock = clock or time.time
        self._base = spec  # as declared; self.spec serves the values added at run time too
        try:
            self._units = _unit_hasher(spec, store)
            self._catalogue = catalogue.read(store)
        except StoreError:
            store.close()
            raise
        self.spec = self._served_spec(self._catalogue) or spec
        self._pending: tuple[int, float] | None = None  # a catalogue seen, not yet served
        self._snapshots: dict[str, memory.Snapshot] = {}  # the example memory's, by id
        self._generation = ""  # of the stored snapshots (a forget rewrites them)
        self.tables = tables_for(spec)
        self._schemas = {t: self.tables.schema(t) for t in self.tables.names}
        self._outcomes = Outcomes()  # keyed signal batches waiting for their counts
        self._journal = self._open_journal(journal, max_delay, batch_rows)
        self._writer = BufferedWriter(
            self._store_rows if self._journal is None else self._journal_rows,
            batch_rows=batch_rows,
            max_delay=max_delay,
        )
        self._recorder = Recorder(spec, self._writer, self._units, self._clock)
        self._decider = Decider(spec, None if seed is None else random.Random(seed))
        self._published: Playbook | None = None  # the version served (online tables follow it)
        self._serving = threading.Lock()  # swaps what decide serves from
        self._updating = threading.Lock()  # one online update at a time
        self._online_rng = np.random.default_rng(seed)
        self._seeded = seed is not None  # cycles draw their seeds from it too
        self._alerts = Alerts(spec.alerts, spec.name)
        self._alerting: set[str] = set()  # monitors whose alert was sent and still holds
        relay(store, self._alerts)  # a first relay marks where this store's alerts begin
        self._traces: TraceMapper | None = None
        self._ids = IdFactory()
        self._closed = False
        newest = self._newest()
        # a big design's posterior draws, drawn again as a wheel that serves opens (a command
        # that only learns or reports never needs them)
        self._drawing = newest.draw(wait=False) if newest is not None and background else None
        self._serve(newest)
        self._watcher = _Watcher(self._refresh, refresh) if refresh else None
        learn = spec.learn
        watching = spec.triggers.satisfaction is not None  # watch() checks it every minute
        turning = background and (learn.online or learn.scheduled or watching)
        self._turn = Turn(self, online=learn.online, scheduled=learn.scheduled) if turning else None
        self._note = self._turn.note if self._turn is not None else _ignore
        _track(self)

    def _open_journal(
        self, journal: str | Path | bool, max_delay: float, batch_rows: int
    ) -> Journal | None:
        folder = default_folder(self.store) if journal is True else journal or None
        try:
            if folder is None:
                if (left := leftover_journal(self.store)) is not None:
                    Journal(left, self.store, self._schemas).close()  # a crashed process's
                return None
            return Journal(
                folder,
                self.store,
                self._schemas,
                max_delay=max_delay,
                apply_rows=batch_rows,
                stored=self._outcomes.settle,
                urgent=self._outcomes.waits_for,
            )
        except BaseException:
            self.store.close()
            raise

    def _store_rows(self, items: list[Entry]) -> None:
        """The writer's sink without a journal: rows straight into the store."""
        try:
            written = self.store.write(to_tables(items, self._schemas))
        except BaseException as err:
            self._outcomes.fail(items, err)
            raise
        self._outcomes.settle(items, written)

    def _journal_rows(self, items: list[Entry]) -> None:
        """The writer's sink with a journal (keyed batches are told their counts once the
        journal has stored them)."""
        assert self._journal is not None
        try:
            self._journal.append(items)
        except BaseException as err:
            self._outcomes.fail(items, err)
            raise

    # --- the loop --------------------------------------------------------------------------------

    def decide(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        unit: object = None,
        explore: bool = True,
        input: str | None = None,
    ) -> Decision:
        """Parameters for a context, recorded as a decision (``explore=False``: no exploration).

        An AI product passes what it was asked as ``input``: recorded as the decision's
        ``input`` signal at the decision's time (redacted per ``[privacy]``); its answer
        follows with :meth:`output`. Inputs and outputs make the training sets of
        :meth:`training_set`."""
        clean = self._recorder.context({} if context is None else context)
        if input is not None:
            return self._decide_with_input(clean, unit, explore, input)
        d = self._decider.decide(self._ids(), clean, explore)
        self._recorder.decision(
            d.id,
            self._clock(),
            None if unit is None else self._units(unit),
            d.policy,
            d.playbook,
            d.propensity,
            clean,
            d.params,
        )
        return d

    def _decide_with_input(
        self, clean: dict[str, Any], unit: object, explore: bool, prompt: object
    ) -> Decision:
        """:meth:`decide` with an input, checked before anything is chosen or recorded."""
        ident, now = self._ids(), self._clock()
        hashed = None if unit is None else self._units(unit)
        row = self._recorder.input_row(ident, prompt, now, hashed)
        d = self._decider.decide(ident, clean, explore)
        self._recorder.decision(
            d.id, now, hashed, d.policy, d.playbook, d.propensity, clean, d.params, row
        )
        return d

    def signal(
        self,
        decision: Decision | str,
        name: str,
        value: object,
        *,
        ts: float | datetime | None = None,
        key: str | None = None,
        unit: object = None,
    ) -> None:
        """Record one named signal (a number or a boolean; text for text signals)."""
        self._recorder.signal(decision, name, value, ts, key, unit)
        self._note(1)

    def signal_batch(self, items: Sequence[Mapping[str, Any]]) -> Recorded:
        """Many signals, all or none: all are validated before any is recorded, and an error
        names its position. Each item has ``decision`` and either ``name`` and ``value``, or
        feedback (``rating``, ``thumbs``, ``comment``), or an implicit ``event`` and/or
        ``dwell_ms``, or an edit (``draft``, ``final``); optionally ``ts``, ``key``, ``unit``.

        Returns how many items were ``recorded`` and how many were ``duplicates`` (an item
        whose idempotency ``key`` was stored before, or came earlier in the batch: nothing of
        it is stored again); the two add up to the items given. A batch with keys returns once
        the store has claimed them (its rows are then durable); one without, at once."""
        if not any(item.get("key") is not None for item in items):
            return self.submit_signal_batch(items).result()
        return self.durably(lambda: self.submit_signal_batch(items)).result()

    def submit_signal_batch(self, items: Sequence[Mapping[str, Any]]) -> Pending:
        """:meth:`signal_batch` without waiting: validates and queues the items, and returns
        a handle whose ``result()`` are the counts, once the store has claimed the batch's
        keys (at once for a batch without keys). For servers, inside :meth:`durably`."""
        rows: list[tuple[str, Any]] = []
        spans: list[int] = []
        self._recorder.signal_batch(items, spans=spans, into=rows)
        self._note(len(spans))
        if all(table != "signals" or row[5] is None for table, row in rows):
            self._writer.append_many(rows)
            return Pending(spans)
        entries = [(t, Rows.of(table)) for t, table in to_tables(rows, self._schemas).items()]
        return self._queue_keyed(entries, spans)

    def _queue_keyed(self, entries: list[tuple[str, Rows]], spans: list[int]) -> Pending:
        """Queue a batch with keys (one :class:`Rows` a table), to be told its counts."""
        signals = signal_rows_of(entries)
        assert signals is not None
        pending = self._outcomes.expect(signals, spans)
        try:
            self._writer.append_rows(entries)
        except BaseException as err:
            self._outcomes.fail(entries, err)
            raise
        return pending

    def feedback(
        self,
        decision: Decision | str,
        *,
        rating: float | None = None,
        thumbs: bool | None = None,
        comment: str | None = None,
        ts: float | datetime | None = None,
        key: str | None = None,
        unit: object = None,
    ) -> None:
        """Explicit feedback: a rating, thumbs up/down and/or a comment (redacted)."""
        self._recorder.feedback(
            decision, rating=rating, thumbs=thumbs, comment=comment, ts=ts, key=key, unit=unit
        )
        self._note(1)

    def implicit(
        self,
        decision: Decision | str,
        event: str | None = None,
        *,
        dwell_ms: float | None = None,
        ts: float | datetime | None = None,
        key: str | None = None,
        unit: object = None,
    ) -> None:
        """Implicit behaviour: accepted, rejected, requeried or abandoned, and dwell time."""
        self._recorder.implicit(decision, event, dwell_ms=dwell_ms, ts=ts, key=key, unit=unit)
        self._note(1)

    def edit(
        self,
        decision: Decision | str,
        draft: str,
        final: str,
        *,
        ts: float | datetime | None = None,
        key: str | None = None,
        unit: object = None,
    ) -> float:
        """A person's edit of an AI draft: stores both texts (redacted), a diff, and the
        normalised edit distance, which is also recorded as the ``edit_distance`` signal."""
        distance = self._recorder.edit(decision, draft, final, ts=ts, key=key, unit=unit)
        self._note(1)
        return distance

    def output(
        self,
        decision: Decision | str,
        text: str,
        *,
        ts: float | datetime | None = None,
        key: str | None = None,
        unit: object = None,
    ) -> None:
        """What an AI product answered for a decision (its draft, before any edit): recorded
        as the ``output`` signal (redacted per ``[privacy]``). With the decision's ``input``
        (:meth:`decide`) it is training material: a rated output, a rejected draft when the
        person edits it (:meth:`edit`), an answer worth imitating (:meth:`training_set`)."""
        self._recorder.signal(decision, "output", text, ts, key, unit)
        self._note(1)

    def log(
        self,
        *,
        context: Mapping[str, Any],
        params: Mapping[str, Any],
        results: Mapping[str, object],
        unit: object = None,
        ts: float | datetime | None = None,
        playbook: int | None = None,
        propensity: float | None = None,
        policy: str | None = None,
    ) -> str:
        """Record an already-complete row (an import, a decision made by a person); its id.

        A decision the product served itself from a published playbook (a copy fetched
        earlier) names that ``playbook`` version and the ``propensity`` it was served with,
        so the seatbelt can check it against the policy and off-policy estimates can use it.
        A decision an outside policy made (a production ranker, a rule, a person's choice)
        names it in ``policy`` with the ``propensity`` it had of choosing these values, when
        known (without a name, a propensity alone is recorded as policy ``outside``).
        """
        ident = self._ids()
        self._recorder.complete_row(
            ident,
            context,
            params,
            results,
            ts=ts,
            unit=unit,
            playbook=playbook,
            propensity=propensity,
            policy=policy,
        )
        self._note(1)
        return ident

    def import_rows(
        self,
        sources: Sequence[str | Path | pa.Table],
        *,
        columns: Mapping[str, str] | None = None,
        key: str | None = None,
        time: str | None = None,
        unit: str | None = None,
        window_seconds: float | None = None,
        rejected_path: str | Path | None = None,
        progress: Callable[[int, int], None] | None = None,
        sheet: str | None = None,
        propensity: str | None = None,
        policy: str | None = None,
    ) -> importers.ImportReport:
        """Import rows from files (CSV, XLSX, Parquet, JSONL) or Arrow tables: one source of
        complete rows, or a features source and a results source joined on ``key``.

        Columns named like knobs, context features and signals map by name; ``columns`` (and
        the spec's ``[import]``) map the rest. Rows that cannot be used are rejected with
        their row number and reason (written to ``rejected_path``), never dropped: the
        report's ``read == imported + rejected``. Logs of an outside policy name the column
        with each row's ``propensity`` (in (0, 1]) and the one with the ``policy``'s name.
        """
        report = importers.import_rows(
            self,
            [s if isinstance(s, pa.Table) else Path(s) for s in sources],
            columns=columns,
            key=key,
            time=time,
            unit=unit,
            window_seconds=window_seconds,
            rejected_path=None if rejected_path is None else Path(rejected_path),
            progress=progress,
            sheet=sheet,
            propensity=propensity,
            policy=policy,
        )
        self._note(report.imported)
        return report

    def log_many(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        """Many complete rows (each a mapping of the arguments of :meth:`log`), all or none:
        all are validated before any is recorded, and an error names its position. Their ids."""
        idents = [self._ids() for _ in rows]
        self._recorder.complete_rows(idents, rows)
        self._note(len(idents))
        return idents

    def traces(self, body: bytes, fmt: Format = "protobuf", *, durably: bool = False) -> Intake:
        """OTLP spans (an ExportTraceServiceRequest, ``protobuf`` or ``json``, uncompressed)
        as decisions and signals: see :mod:`flywheel.collect.traces` for the mapping. Spans
        that cannot be used are counted, with their reasons, and store nothing; a request
        that cannot be read raises and stores nothing. Sending the same spans again records
        nothing new (their decision ids are derived from the trace and span ids). With
        ``durably``, returns once the rows are durable, as :meth:`durably` does (the spans
        are converted first, outside it)."""
        if self._traces is None:
            self._traces = TraceMapper(self.spec, self._recorder, self._units)
        intake = self._traces.convert(body, fmt)
        self._note(len(intake.rows))
        if durably:
            self.durably(lambda: self._writer.append_many(intake.rows))
        else:
            self._writer.append_many(intake.rows)
        return intake

    def ingest_workers(self, processes: int) -> IngestWorkers:
        """Worker processes converting OTLP requests into this wheel (what a server uses:
        :mod:`flywheel.collect.workers`): their rows are recorded as :meth:`durably_async`
        records them. Close them before the wheel."""

        async def record(rows: list[tuple[str, Rows]]) -> None:
            await self.durably_async(lambda: self._writer.append_rows(rows))
            self._note(sum(r.count for _, r in rows))

        async def record_signals(
            rows: list[tuple[str, Rows]], spans: list[int], keyed: bool
        ) -> Recorded:
            if not keyed:  # recorded whole
                await record(rows)
                return Recorded(len(spans))
            pending = await self.durably_async(lambda: self._queue_keyed(rows, spans))
            self._note(len(spans))
            assert pending.future is not None
            return pending.counts(await asyncio.wrap_future(pending.future))

        return IngestWorkers(self.spec, self._units.key, processes, record, record_signals)

    def aligned(self, as_of: float | datetime | None = None) -> pa.Table:
        """Aligned rows as an Arrow table (see :func:`flywheel.align.aligned`), as of
        ``as_of`` (default: now on the wheel's clock)."""
        self.flush()
        return align.aligned(self.store, self.spec, self._moment(as_of))

    def summary(self, as_of: float | datetime | None = None) -> align.Summary:
        """Counts: decisions, complete / pending / expired, signals, late, orphans, coverage,
        as of ``as_of`` (default: now on the wheel's clock)."""
        self.flush()
        return align.summary(self.store, self.spec, self._moment(as_of))

    def training_set(
        self,
        kind: datasets.Kind,
        *,
        as_of: float | datetime | None = None,
        min_reward: float | None = None,
    ) -> datasets.TrainingSet:
        """A training set for a new model from the decisions' inputs and outputs, as of
        ``as_of`` (default: now): ``"sft"`` (chat messages: each input answered by its edited
        final text, else its output, where the reward is at least ``min_reward``, default
        ``[datasets] min_reward``), ``"preferences"`` (``prompt``, ``chosen``, ``rejected``:
        edits, and the best over the worst rated output of an input) or ``"kto"``
        (``prompt``, ``completion``, ``label``: the reward at least ``min_reward``), with
        its lineage; ``.write(path)`` writes JSON Lines and the lineage beside it
        (:mod:`flywheel.improve.datasets`)."""
        self.flush()
        return datasets.build(
            self.store,
            self.spec,
            kind,
            self._moment(as_of),
            min_reward,
            now=self._moment(None),
        )

    def themes(
        self,
        window: str | float = "28d",
        as_of: float | datetime | None = None,
        *,
        embeddings: str | Path | None = None,
    ) -> themes_.Themes:
        """The themes of the negative feedback (low ratings, thumbs down, rejections,
        re-queries, abandons, large edits: their comments, else their edits' changes, else
        their outputs) on the decisions made in ``window`` up to ``as_of`` (default: now):
        each with a label from its terms, size, share, share by knob value, trend and
        examples; fewer than ten texts give none, with the reason
        (:mod:`flywheel.improve.themes`). ``embeddings``: ``"wordllama"`` (the static
        sentence-embedding model the wordllama package ships) or a local folder holding one in
        model2vec's layout (the optional ``embeddings`` extra) to cluster by meaning instead of
        TF-IDF terms; nothing is ever downloaded."""
        self.flush()
        return themes_.themes(
            self.store, self.spec, window, self._moment(as_of), embeddings=embeddings
        )

    def propose(
        self,
        knob: str,
        base: Any,
        reviser: themes_.Reviser | None = None,
        *,
        window: str | float = "28d",
        as_of: float | datetime | None = None,
        embeddings: str | Path | None = None,
    ) -> themes_.Proposal:
        """A revised text for ``knob`` from ``base`` (one of its values, whose text is the
        value itself, or a text) and the themes of :meth:`themes`: ``reviser(base_text,
        themes)`` (a model call of your own) makes it, or without one the rule-based reviser
        appends one instruction per theme under "Avoid what users disliked:" (one line each:
        ``- Avoid what users called "LABEL" (N% of the negative feedback).``). A proposal is
        a text: it is served, and tested live, once it is added as a value of the knob
        (:meth:`add_value`). A value added with a text is revised from that text
        (:func:`flywheel.improve.themes.propose`)."""
        self.flush()
        found = self.spec.knob.get(knob)
        text = self.text(knob, base) if found is not None and found.accepts(base) else None
        return themes_.propose(
            self.store,
            self.spec,
            knob,
            base,
            reviser,
            window,
            self._moment(as_of),
            embeddings=embeddings,
            base_text=text,
        )

    # --- knob values at run time -----------------------------------------------------------------

    def add_value(
        self,
        knob: str,
        value: Any,
        *,
        text: str | None = None,
        start_share: float = 0.05,
        derived_from: Sequence[str] = (),
        actor: str | None = None,
    ) -> ValueChange:
        """Add ``value`` to the open ``knob`` (declared ``{ values = [...], open = true }``),
        with the ``text`` it stands for (a prompt, a model's name): versioned in the store's
        catalogue and audited (:mod:`flywheel.catalogue`), then served at once. A learn cycle
        runs for the new values, the newcomer's effects start at their prior, and until it
        has :data:`~flywheel.spec.NEWCOMER_ROWS` results every segment serves it at least
        ``start_share`` of its traffic; the skeleton's rules still hold. Each later cycle's
        guard reviews it: rolled back (retired) if it does clearly worse, promoted if it wins.
        ``derived_from`` lists the decisions whose data the text was made from (a proposal's
        themes): forgetting one of their units withdraws the text. Other processes serving
        the store switch within seconds. Refused while the seatbelt is halted."""
        self.flush()
        who = _actor(actor)
        if self.spec.seatbelt.enabled and (stop := breaker.halted(self.store)) is not None:
            raise InvalidInputError(
                "knob", f"the seatbelt is halted ({stop.reason}): resume before adding values"
            )
        units = self._units_of(derived_from)
        with self._cycle_lock():
            now = self._moment(None)
            current = catalogue.read(self.store)
            changed, spec = catalogue.add(
                self._base,
                current,
                knob,
                value,
                text=text,
                start_share=start_share,
                units=units,
                actor=who,
                now=now,
            )
            shown = f"added {knob} = {value!r}"
            return self._changed(changed, spec, knob, value, "add_value", shown, who, now)

    def retire_value(
        self, knob: str, value: Any, *, reason: str = "", actor: str | None = None
    ) -> ValueChange:
        """Never serve ``value`` of the open ``knob`` again (one of its own values or one
        added at run time): versioned and audited, and a learn cycle runs without it (its rows
        are still learned from). The rules must leave something to serve."""
        self.flush()
        who = _actor(actor)
        if not isinstance(reason, str):
            raise WrongTypeError("reason", f"expected text, got {reason!r}")
        with self._cycle_lock():
            now = self._moment(None)
            current = catalogue.read(self.store)
            changed, spec = catalogue.retire(
                self._base, current, knob, value, reason=reason, actor=who, now=now
            )
            shown = f"retired {knob} = {value!r}" + (f": {reason}" if reason else "")
            return self._changed(changed, spec, knob, value, "retire_value", shown, who, now)

    def _changed(
        self,
        changed: Catalogue,
        spec: Spec,
        knob: str,
        value: Any,
        action: str,
        shown: str,
        who: str,
        now: datetime,
    ) -> ValueChange:
        """Inside the learn lock: store and audit a catalogue change, serve it, and run the
        learn cycle that publishes for it."""
        catalogue.save(self.store, changed)
        catalogue.record(self.store, now, action, shown, changed.find(knob, value), who)
        self._respec(changed, spec)
        result = self._learn(None, None, True, "values")
        published = result.version if result.published else None
        return ValueChange(knob, value, changed.version, published, result.reason)

    def values(self, knob: str | None = None) -> list[KnobValue]:
        """The values of the open knobs (or of ``knob``): the spec's own, then those added at
        run time, each with its text, state (``active``, ``retired``, ``promoted``), when and
        by whom it was added or retired, and why."""
        self._pick_up()
        found = catalogue.read(self.store)
        out: list[KnobValue] = []
        for k in self._base.knobs:
            if not k.open or (knob is not None and k.name != knob):
                continue
            own = [found.find(k.name, v) or KnobValue(k.name, v, origin="spec") for v in k.values]
            out += [replace(v, start_share=0.0) if v.origin == "spec" else v for v in own]
            out += [v for v in found.values if v.knob == k.name and v.origin == "added"]
        if knob is not None and knob not in self._base.knob:
            raise InvalidInputError("knob", f"{knob!r} is not a knob")
        return out

    def text(self, knob: str, value: Any) -> str:
        """The text ``value`` of ``knob`` stands for: the text it was added with, else the
        value itself (what a product serving a decision's prompt version sends its model)."""
        return catalogue.text_of(self._catalogue, knob, value)

    def _units_of(self, decisions: Sequence[str]) -> list[str]:
        """The units (pseudonyms) of ``decisions``."""
        if isinstance(decisions, str):
            raise WrongTypeError("derived_from", "expected a list of decision ids")
        ids = [self._recorder.decision_id(d, "derived_from") for d in decisions]
        if not ids:
            return []
        listed = ", ".join(f"'{i}'" for i in ids)
        table = self.store.query(
            f"SELECT DISTINCT unit FROM decisions WHERE CAST(id AS VARCHAR) IN ({listed})"
            " AND unit IS NOT NULL"
        )
        return [str(u) for u in table.column("unit").to_pylist()]

    @contextlib.contextmanager
    def _cycle_lock(self) -> Iterator[None]:
        """Hold the learn lock (shared by the processes of the store), waiting for it."""
        while True:
            with self.store.exclusive("learn") as mine:
                if mine:
                    yield
                    return
            time.sleep(0.05)

    def _served_spec(self, found: Catalogue) -> Spec | None:
        """The declared spec with ``found``'s values, or ``None`` (and a warning) when they do
        not fit it (a spec edited since: it is served as declared)."""
        try:
            return found.apply(self._base)
        except SpecError as err:
            log.warning("flywheel: the knob values added at run time do not fit the spec: %s", err)
            return None

    def _respec(self, found: Catalogue, spec: Spec, playbook: Playbook | None = None) -> None:
        """Serve ``spec`` (the catalogue ``found`` applied) from now on, from ``playbook``
        (learned for it), else the cold start until one is served. The decider is swapped
        whole before the spec, so whoever reads the new spec is served by it."""
        decider = self._decider.respec(spec)
        decider.use(playbook)
        with self._serving:
            self._recorder.spec = spec
            self._decider = decider
            self._published = playbook
            self._pending = None
            self._catalogue = found
            self.spec = spec

    def _review(self) -> None:
        """Before a cycle: the guard's review of the values on trial, and the example
        memory's refresh; a change of the catalogue is served by the cycle that follows."""
        found = catalogue.read(self.store)
        now = self._moment(None)
        verdicts = []
        if found.newcomers():
            served = self._published  # the newest version, unless another process published
            if served is None or served.version != self.store.latest_version():
                served = self._newest()
            verdicts = [] if served is None else catalogue.review(found, served)
        if verdicts:
            changed = catalogue.judged(found, self._base, verdicts, now)
            if changed is not found:
                catalogue.save(self.store, changed)
                for v in verdicts:
                    entry = changed.find(v.knob, v.value)
                    catalogue.record(self.store, now, v.action, v.reason, entry, "guard", v.detail)
                found = changed
        if self.spec.memory is not None:
            found = self._remember(found, now)
        if found.version != self._catalogue.version:
            spec = self._served_spec(found)
            if spec is not None:
                self._respec(found, spec)

    def _remember(self, found: Catalogue, now: datetime) -> Catalogue:
        """The example memory's refresh: a snapshot of the best-rated outputs, added as a
        value of the memory's knob when it changed and the newest is at least ``refresh``
        old (the older snapshots beyond ``keep`` retired), so which snapshot served is
        learned like any knob value."""
        settings = self.spec.memory
        assert settings is not None
        added = [v for v in found.values if v.knob == settings.knob and v.actor == "memory"]
        last = max((datetime.fromisoformat(v.added_at or "") for v in added), default=None)
        if last is not None and (now - last).total_seconds() < settings.refresh_seconds:
            self._evict([str(v.value) for v in added if v.state != "retired"], now)
            return found  # the newest snapshot is recent: it keeps serving
        previous = memory.current(self.store)
        snapshot = memory.build(
            self.store, self.spec, self._memory_settings(), now, previous, now=now
        )
        if not snapshot.entries or (previous is not None and snapshot.id == previous.id):
            return found
        memory.save(self.store, snapshot)
        knob = settings.knob
        if found.find(knob, snapshot.id) is not None:  # an earlier snapshot again
            return found
        changed, _ = catalogue.add(
            self._base, found, knob, snapshot.id, start_share=0.05, actor="memory", now=now
        )
        shown = f"added {knob} = {snapshot.id!r}: {len(snapshot.entries)} examples"
        catalogue.record(
            self.store, now, "add_value", shown, changed.find(knob, snapshot.id), "memory"
        )
        served = [
            v
            for v in changed.values
            if v.knob == knob and v.actor == "memory" and v.state != "retired"
        ]
        for old in served[: max(0, len(served) - settings.keep)]:
            try:
                changed, _ = catalogue.retire(
                    self._base,
                    changed,
                    knob,
                    old.value,
                    reason=f"a newer snapshot ({snapshot.id}) replaces it",
                    actor="memory",
                    now=now,
                )
            except InvalidInputError:  # it would leave nothing to serve
                break
            shown = f"retired {knob} = {old.value!r}: a newer snapshot replaces it"
            catalogue.record(
                self.store, now, "retire_value", shown, changed.find(knob, old.value), "memory"
            )
        catalogue.save(self.store, changed)
        return changed

    def _evict(self, served: Sequence[str], now: datetime) -> None:
        """Between two snapshots: the examples of the ``served`` ones that drew negative
        feedback since (or fell below the reward, or were quarantined) removed from them."""
        changed = False
        for ident in served:
            snapshot = memory.load(self.store, ident)
            if snapshot is None:
                continue
            fresh = memory.build(
                self.store, self.spec, self._memory_settings(), now, snapshot, now=now
            )
            changed |= memory.evict(self.store, snapshot, fresh.evicted) is not snapshot
        if changed:
            self.store.set_meta(REWRITTEN_KEY, uuid.uuid4().hex)  # other processes' copies

    def _memory_settings(self) -> memory.MemorySettings:
        found = self.spec.memory
        if found is None:
            raise InvalidInputError("memory", "the spec has no [memory] section")
        return memory.MemorySettings(
            k=found.k,
            size=found.size,
            min_reward=found.min_reward,
            documents=found.documents,
            window=found.window_seconds,
        )

    def examples(
        self,
        of: Decision | Mapping[str, Any],
        k: int | None = None,
        *,
        input: str | None = None,
    ) -> list[memory.Example]:
        """Few-shot examples from the example memory (``[memory]``): for a decision, those of
        the snapshot it was served (none when its memory knob holds one of the knob's own
        values, such as ``"none"``); for a context, those of the newest snapshot. The most
        similar contexts and (with ``input``) inputs first; ``k`` of them (default
        ``[memory] k``)."""
        settings = self._memory_settings()
        assert self.spec.memory is not None
        if isinstance(of, Decision):
            chosen = of.params.get(self.spec.memory.knob)
            if chosen is None or chosen in self._base.knob[self.spec.memory.knob].values:
                return []
            snapshot = self._snapshot(str(chosen))
            context: Mapping[str, Any] = of.context
        elif isinstance(of, Mapping):
            snapshot, context = self._newest_snapshot(), of
        else:
            raise WrongTypeError("of", "expected a decision or a context (a mapping)")
        if snapshot is None:
            return []
        return snapshot.examples(context, settings.k if k is None else k, input)

    def rank(
        self, candidates: Sequence[str], scores: Sequence[float] | None = None
    ) -> list[tuple[str, float]]:
        """Documents or answers (ids) reordered by the feedback on the decisions that used
        them (``[memory] documents``): positive feedback ranks higher, negative lower, unknown
        ones keep their ``scores`` (default: equal, in the order given)."""
        self._memory_settings()
        snapshot = self._newest_snapshot()
        if snapshot is None:
            given = [0.0] * len(candidates) if scores is None else [float(s) for s in scores]
            return sorted(zip(candidates, given, strict=True), key=lambda p: -p[1])
        return snapshot.rank(candidates, scores)

    def _newest_snapshot(self) -> memory.Snapshot | None:
        ids = memory.versions(self.store)
        return self._snapshot(ids[-1]) if ids else None

    def _snapshot(self, ident: str) -> memory.Snapshot | None:
        """A stored snapshot, kept once read until any process rewrites the stored ones (a
        ``forget``, an eviction)."""
        generation = self.store.get_meta(REWRITTEN_KEY) or ""
        if generation != self._generation:
            self._snapshots.clear()
            self._generation = generation
        found = self._snapshots.get(ident)
        if found is None:
            found = memory.load(self.store, ident)
            if found is not None:
                if len(self._snapshots) > 16:
                    self._snapshots.clear()
                self._snapshots[ident] = found
        return found

    def _pick_up(self) -> None:
        """Serve a catalogue another process changed: with the first playbook learned for
        it, at once when it retired a value, else after :data:`SWITCH_AFTER` seconds."""
        latest = catalogue.version(self.store)
        if latest == self._catalogue.version:
            return
        found = catalogue.read(self.store)
        spec = self._served_spec(found)
        if spec is None:
            return
        newest = publish.learned_for(spec, self.store.playbook())
        retired = found.retired() != self._catalogue.retired()
        now = time.monotonic()
        if self._pending is None or self._pending[0] != found.version:
            self._pending = (found.version, now)
        waited = now - self._pending[1]
        if newest is None and not retired and waited < SWITCH_AFTER:
            return
        if newest is not None:
            newest.draw()
        self._respec(found, spec, newest)

    def forget(self, unit: object) -> dict[str, int]:
        """Delete every row of a unit, everywhere (the warm tier included: its counts are
        under ``warm.{table}``); returns the rows deleted per table. A knob value whose text
        was derived from the unit's data loses its text and is retired
        (``catalogue`` counts them)."""
        hashed = self._units(unit)
        self.flush()
        deleted = self.store.forget(hashed)
        if self.spec.memory is not None:
            with self._cycle_lock():  # after a refresh that may have read the unit's rows
                deleted["memory"] = memory.forget(self.store, hashed)
                self.store.set_meta(REWRITTEN_KEY, uuid.uuid4().hex)  # other processes' copies
        found = catalogue.read(self.store)
        if any(hashed in v.units for v in found.values):
            with self._cycle_lock():
                now = self._moment(None)
                found = catalogue.read(self.store)
                changed = catalogue.forget(found, self._base, hashed, now)
                if changed is not None:
                    withdrawn = [v for v in found.values if hashed in v.units]
                    catalogue.save(self.store, changed)
                    for v in withdrawn:
                        catalogue.record(
                            self.store,
                            now,
                            "retire_value",
                            f"withdrew {v.knob} = {v.value!r}: derived from a forgotten unit",
                            changed.find(v.knob, v.value),
                            "forget",
                        )
                    deleted["catalogue"] = len(withdrawn)
                    self._respec(changed, changed.apply(self._base))
                    self._learn(None, None, True, "values")
        return deleted

    def archive(
        self,
        older_than: float | None = None,
        *,
        to: str | None = None,
        progress: Callable[[date, dict[str, int]], None] | None = None,
    ) -> Archived:
        """Move the decisions older than ``older_than`` seconds (default: the spec's
        ``[storage] archive.after``), with their signals, edits and verdicts, to the warm tier
        (``to``, default the spec's ``archive.url``), a day at a time; every query, learn
        cycle and report reads both tiers as one. ``progress(day, rows moved)`` after each day."""
        store = self.store
        if not isinstance(store, Tiered):
            raise StoreError("this store has no warm tier: open it with flywheel.open()")
        seconds = older_than
        if seconds is None and self.spec.archive is not None:
            seconds = self.spec.archive.after_seconds
        if seconds is None:
            raise StoreError(
                "storage.archive.after: not set; say how old the rows to move are"
                " (older_than, or --older-than 30d)"
            )
        self.flush()
        before = self._moment(None) - timedelta(seconds=seconds)
        return store.archive(before, url=to, progress=progress)

    # --- learning and playbooks ------------------------------------------------------------------

    def learn(
        self,
        as_of: float | datetime | None = None,
        *,
        seed: int | None = None,
        force: bool = False,
        trigger: str = "manual",
    ) -> LearnResult:
        """Align, aggregate, fit and publish a new playbook version; decide uses it at once.

        Returns whether a version was ``published``, its ``version`` and the ``reason``
        (nothing is published without new data since the newest version, unless ``force``).
        One cycle runs at a time among the processes sharing the store: this waits for one
        running elsewhere to end. The cycle is remembered (``status`` shows it) with what
        started it (``trigger``).

        Rows, results, attribution windows and the seatbelt's windows are all measured as of
        ``as_of`` (default: now). On a store of history (:meth:`history`: rows logged or
        imported with their own times, none decided by the wheel, the newest older than
        ``seatbelt.stale_after``) the default is the history's own clock: as of its newest
        row, so the next cycle's gate judges the rows recorded after it; the reason says so.
        """
        with self._cycle_lock():
            return self._learn(as_of, seed, force, trigger, history=as_of is None)

    def _learn(
        self,
        as_of: float | datetime | None,
        seed: int | None,
        force: bool,
        trigger: str,
        *,
        history: bool = False,
    ) -> LearnResult:
        """One learn cycle, inside the store's ``learn`` lock (``history``: as of the end of
        the history the store holds, if it holds history only and ``as_of`` is None)."""
        self.flush()
        if any(k.open for k in self._base.knobs):
            self._review()
        span = history_of(self.store, self.spec, self._moment(None)) if history else None
        if as_of is None and span is not None:
            as_of = span.last
        when = self._clock() if as_of is None else align.moment(as_of).timestamp()
        if seed is None and self._seeded:  # a seeded wheel's cycles are reproducible too
            with self._updating:
                seed = int(self._online_rng.integers(2**31))
        result, playbook = publish.learn(self.store, self.spec, as_of=when, seed=seed, force=force)
        if span is not None:
            last = align.stamp(span.last)
            note = f"as of {last}, the newest row of the history (nothing decided live)"
            result = replace(result, reason=f"{result.reason}; {note}")
        if playbook is not None:
            self._serve(playbook)
        moment = align.moment(when)
        Cycle(
            moment, trigger, result.published, result.version, result.reason, result.halted
        ).write(self.store)
        relay(self.store, self._alerts)
        if self.spec.datasets.declared:
            self._tell_ready(moment)
        return result

    def _tell_ready(self, moment: datetime) -> None:
        """After a cycle: the training sets that reached their ``[datasets]`` minimum since the
        last check, recorded in the audit trail (once among the processes sharing the store)
        and relayed to the webhook like the seatbelt's events. A failure costs the cycle
        nothing."""
        try:
            if datasets.ready(self.store, self.spec, moment):
                relay(self.store, self._alerts)
        except FlywheelError as err:
            log.warning("flywheel: could not check whether a training set is ready: %s", err)

    def learn_cells(
        self,
        cells: str | Path | pa.Table,
        encoding: str | Path | Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
    ) -> LearnResult:
        """Fit and publish a playbook from cells computed elsewhere: a Parquet file (or a
        table) holding what the cells query ``flywheel sql`` renders gives when a warehouse
        runs it; decide uses it at once. ``encoding`` is the ``encoding.json`` rendered with
        that query (or its content); without it, the bins and levels the store's rows give
        now. The playbook is trained as of the encoding's ``as_of`` (else now) and records
        the file and its SHA-256; the seatbelt's data checks do not run (their rows are not in
        the store), and nothing is published while it is halted."""
        if isinstance(cells, pa.Table):
            table, source = cells, None
        else:
            table, source = warehouse.read_cells(cells)
        as_of: datetime | None
        if encoding is None:
            self.flush()
            now = self._moment(None)
            coded, as_of = warehouse.encoding_for(self.store, self.spec, now), now
        else:
            coded, as_of = warehouse.load_encoding(self.spec, encoding)
        when = self._clock() if as_of is None else as_of.timestamp()
        with self._cycle_lock():
            result, playbook = warehouse.learn_from_cells(
                self.store, self.spec, table, coded, when, seed, source
            )
            if playbook is not None:
                self._serve(playbook)
            moment = align.moment(when)
            Cycle(
                moment, "cells", result.published, result.version, result.reason, result.halted
            ).write(self.store)
            relay(self.store, self._alerts)
            return result

    def cycle(self, trigger: str) -> LearnResult | None:
        """A scheduled learn cycle (what the background turn runs when ``[learn] every`` or
        ``after`` says one is due): ``None`` when another process holds the cycle's lock, or
        ran the cycle meanwhile."""
        with self.store.exclusive("learn") as mine:
            if not mine or due(self.store, self.spec, self.now()) is None:
                return None
            return self._learn(None, None, False, trigger)

    def update(self) -> bool:
        """Follow the results recorded since the served version was learned: an online update
        of its posterior (before the first version: a fit of the results so far), served from
        now on with exact propensities (policy ``online``). The background turn does this
        every ``[learn] online_rows`` results (sooner at first: :func:`flywheel.turn.
        update_due`); call it yourself with ``background=False``.
        Returns whether what decide serves changed (not while the seatbelt is halted, nor
        while a restored version is served: it serves as it was published until the next
        cycle). With a journal, the rows it has not yet applied to the store wait for it
        (at most ``max_delay``): an update does not force it."""
        self.flush(journal_only=True)
        with self._updating:
            base = self._published
            if self.spec.seatbelt.enabled and breaker.halted(self.store) is not None:
                with self._serving:  # data in doubt: back to the checked version
                    if self._published is base:
                        self._decider.use(base)
                return False
            playbook = publish.online(self.store, self.spec, base, self._clock(), self._online_rng)
            if playbook is None:
                return False
            with self._serving:
                if self._published is not base:  # a cycle published meanwhile: it wins
                    return False
                self._decider.use(playbook)
        return True

    def watch(self) -> None:
        """Between cycles: the negative-loop guard, the ``[triggers]``, and the monitors'
        alerts sent (what the background turn runs every minute)."""
        self.check()
        if self.spec.triggers.satisfaction is not None:
            self._satisfaction()
        archive = self.spec.archive
        if archive is not None and archive.after_seconds is not None:
            self._archive_due()
        if self._alerts.enabled:
            moment = self._moment(None)
            failing = [c for c in monitors.scheduled(self.store, self.spec, moment) if not c.ok]
            for check in failing:
                if check.name not in self._alerting:
                    self._alerts.send(monitor_event(check, now=moment))
            self._alerting = {c.name for c in failing}

    def _satisfaction(self) -> None:
        """The satisfaction trigger: when its mean fell below the threshold since the last
        check, the audit entry (once among the processes sharing the store) relayed to the
        webhook, and with ``action = "learn"`` a learn cycle started by it. Checked here, not
        after each cycle: ratings keep arriving between cycles, which may be days apart or
        manual, and a cycle the trigger starts must not check it again."""
        found = self.spec.triggers.satisfaction
        try:
            fired = triggers.satisfaction(self.store, self.spec, self._moment(None))
        except FlywheelError as err:
            log.warning("flywheel: could not check the satisfaction trigger: %s", err)
            return
        if fired is None or found is None:
            return
        relay(self.store, self._alerts)
        if found.action == "learn":
            self.learn(trigger="satisfaction")

    def _archive_due(self) -> None:
        """The scheduled archive: at most once an hour (on the wheel's clock) among all the
        processes sharing the store."""
        now = self._moment(None)
        last = self.store.get_meta(ARCHIVED_KEY)
        if last and (now - datetime.fromisoformat(last)).total_seconds() < ARCHIVE_EVERY:
            return
        try:
            done = self.archive()
        except StoreError as err:  # another process is at it, or the tier is unreachable
            log.warning("flywheel: the scheduled archive did not run: %s", err)
            return
        self.store.set_meta(ARCHIVED_KEY, now.isoformat())
        if done.days:
            log.info(
                "flywheel: archived %s decisions of %s days", done.rows["decisions"], done.days
            )

    def settle(self, timeout: float | None = None) -> bool:
        """For simulations, whose clock runs faster than the wall clock: let the background
        turn do what is due now (an online update of the results recorded so far, a cycle the
        schedule asks for) and return once it is done. From the first call on, the turn acts
        only when asked, so a seeded simulation tells the same story every time. ``False``
        when nothing turns in the background (``background=False``, or nothing to do in the
        spec) or ``timeout`` passed."""
        return self._turn is not None and self._turn.settle(timeout)

    def now(self) -> datetime:
        """The wheel's clock (a simulation's, or the wall clock) as a UTC time."""
        return self._moment(None)

    def _serve(self, playbook: Playbook | None) -> None:
        """Serve ``playbook`` (a published version) from now on, dropping online tables."""
        with self._serving:
            self._published = playbook
            self._decider.use(playbook)

    # --- the seatbelt ----------------------------------------------------------------------------

    def check(self, as_of: float | datetime | None = None) -> LearnResult | None:
        """Run the negative-loop guard now (``learn`` runs it first): if the playbook served
        does significantly worse live than the one it replaced, roll back to that one and
        halt. Returns what was done, or ``None`` when nothing needed doing."""
        self.flush()
        when = self._moment(as_of).timestamp()
        result, playbook = publish.check(self.store, self.spec, as_of=when)
        if playbook is not None:
            self._serve(playbook)
        relay(self.store, self._alerts)
        return result

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The seatbelt's audit trail, newest first: each entry's ``ts``, ``action`` (``halt``,
        ``rollback``, ``resume``, ``change``, ``override``, ...), ``reason``, ``detail`` (the
        evidence, a dict) and ``actor``. :meth:`status` carries the latest ten."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise WrongTypeError("limit", f"expected a whole number of entries, got {limit!r}")
        self.flush()
        return breaker.events(self.store, limit=limit)

    def status(self, as_of: float | datetime | None = None) -> Status:
        """Counts, quality (received = accepted + quarantined), the playbook served, the
        halted state, the monitors' alerts, the last seatbelt entries and the signals the
        reward formula names that were never received, all measured as of ``as_of`` (default:
        now). Without one, a store holding only :meth:`history` has its span in ``history``;
        its monitors stay on now all the same (a live log that stopped must alert)."""
        self.flush()
        moment = self._moment(as_of)
        report = None
        if self.spec.seatbelt.enabled:
            report = quality.scan(self.store, self.spec, moment, moment)
        current = self._published
        return Status(
            counts=align.summary(self.store, self.spec, moment),
            quality=report,
            playbook=None if current is None else current.version,
            halt=breaker.halted(self.store),
            monitors=tuple(monitors.scheduled(self.store, self.spec, moment)),
            events=tuple(breaker.events(self.store, limit=10)),
            never_received=never_received(self.store, self.spec.reward.signals),
            cycles=schedule(self.store, self.spec, moment),
            as_of=moment.isoformat(),
            history=None if as_of is not None else history_of(self.store, self.spec, moment),
            tiers=self.store.tiers() if isinstance(self.store, Tiered) else None,
            triggers=triggers.state(self.store, self.spec, moment),
        )

    def health(self, window: str | float = "28d", as_of: float | datetime | None = None) -> Health:
        """How fast the wheel turns and where it drags, over ``window`` up to ``as_of``
        (default: the wheel's clock): stages and the bottleneck, learning rate and plateau,
        force, drag, coverage and weekly trends, and the learning type (:mod:`flywheel.health`)."""
        self.flush()

        def readiness() -> tuple[Any, ...]:
            current = self._published
            if current is None:
                return ()
            return analyze(self.store, self.spec, current).readiness

        return health(
            self.store, self.spec, window=window, as_of=self._moment(as_of), readiness=readiness
        )

    def evaluate(
        self,
        target: int | Playbook | Target,
        *,
        greedy: bool = False,
        as_of: float | datetime | None = None,
        policy: str | None = None,
    ) -> Evaluation:
        """What ``target`` would have earned on the complete rows logged with a propensity up
        to ``as_of`` (only the logging ``policy``'s when given): a playbook version (as served,
        or ``greedy``: its best combination per context) or a callable giving, per context,
        the probability of each combination (tuples of knob values in the spec's order). IPS,
        SNIPS, doubly robust (cross-fitted) and MIPS (importance sampling marginalised over
        the knobs that do not matter, in ``marginal``), each with a 95% interval, the
        effective sample size and warnings where the logs barely cover what the target
        favours (:mod:`flywheel.analyze.evaluate`)."""
        self.flush()
        chosen: Playbook | Target
        if isinstance(target, Playbook):
            chosen = target
        elif callable(target):
            if greedy:
                raise InvalidInputError("greedy", "is for a playbook version, not a policy given")
            chosen = target
        elif isinstance(target, int) and not isinstance(target, bool):
            chosen = self._served_or(target)
        else:
            raise WrongTypeError("target", "expected a playbook version or a policy (a callable)")
        if isinstance(chosen, Playbook) and chosen.meta.get("spec_digest") != self.spec.digest:
            raise InvalidInputError(
                "version", f"version {chosen.version} was learned for another spec"
            )
        as_served = greedy or not self.spec.explore  # without exploration it serves its best
        return evaluate_offline(
            self.store,
            self.spec,
            chosen,
            as_of=self._moment(as_of),
            greedy=as_served if isinstance(chosen, Playbook) else False,
            policy=policy,
        )

    def design(self, window: str | float = "28d", as_of: float | datetime | None = None) -> str:
        """The flywheel design document (Markdown) from the spec and the measured data: data
        audit, loops in place and missing, metrics, moat and a 90-day plan."""
        return design_document(self.store, self.spec, self.health(window, as_of))

    def resume(self, reason: str, *, actor: str | None = None) -> breaker.Halt | None:
        """Lift a halt (recorded with ``reason`` and ``actor``); returns the halt lifted.

        The gate's next windows start now: data judged before the resume is accepted as is.
        """
        who = _actor(actor)
        lifted = breaker.resume(self.store, self._moment(None), who, reason)
        relay(self.store, self._alerts)
        return lifted

    def quarantined(self, limit: int | None = 100, *, decision: str | None = None) -> pa.Table:
        """Quarantined rows (aligned, with the checks each failed), oldest first; or only the
        row of ``decision`` (empty when it is not quarantined)."""
        self.flush()
        moment = self._moment(None)
        quality.scan(self.store, self.spec, moment, moment)
        return quality.quarantined(self.store, self.spec, moment, limit, decision)

    def release(
        self, ids: list[str] | None = None, *, accept: bool = False, actor: str | None = None
    ) -> tuple[int, int]:
        """Re-check quarantined rows (all, or ``ids``) after a rule or data fix: those that
        pass are released to learning. ``accept`` releases them regardless, as a recorded
        override. Returns (released, still quarantined)."""
        self.flush()
        moment = self._moment(None)
        who = _actor(actor)
        quality.scan(self.store, self.spec, moment, moment)  # judge what arrived since
        released, kept = quality.release(
            self.store, self.spec, moment, moment, ids, accept=accept, actor=who
        )
        if accept and released:
            reason = f"accepted {released} quarantined rows without a re-check"
            breaker.audit(self.store, moment, "override", reason, {"ids": ids}, actor=who)
        return released, kept

    def quarantine_history(self, decision_id: str) -> list[dict[str, Any]]:
        """Every quarantine entry of one decision (quarantined, released, accepted), in order."""
        self.flush()
        return quality.history(self.store, decision_id)

    def _served_or(self, version: int | None) -> Playbook:
        """The playbook served (``version`` None) or a stored version; an error if none."""
        playbook = self._published if version is None else self.load_playbook(version)
        if playbook is None:
            reason = "no playbook yet: run learn first" if version is None else "no such version"
            raise InvalidInputError("version", reason)
        return playbook

    def _moment(self, as_of: float | datetime | None) -> datetime:
        return align.moment(self._clock() if as_of is None else as_of)

    def history(self) -> History | None:
        """The span of the history the store holds, when it holds nothing else: rows logged
        or imported with their own times, none decided by the wheel (decide, or a copy of a
        playbook), the newest older than ``seatbelt.stale_after``. ``None`` for a live store.
        :meth:`learn` without ``as_of`` learns as of its ``last`` time."""
        self.flush()
        return history_of(self.store, self.spec, self._moment(None))

    def analyze(
        self,
        version: int | None = None,
        *,
        effect: float | None = None,
        seed: int = 0,
        as_of: float | datetime | None = None,
    ) -> Analysis:
        """Findings of a playbook (the one served by default) on the rows it was fitted on:
        single-dimension and cross-dimensional effects, best combinations, readiness, and
        plain sentences. ``effect`` is the smallest effect worth finding (reward units).
        With ``as_of``, the findings as they stood then: those of the newest version learned
        from rows up to that moment (or of ``version``, which must have been)."""
        self.flush()
        if as_of is None:
            playbook = self._served_or(version)
        else:
            playbook = self._learned_by(self._moment(as_of), version)
        return analyze(self.store, self.spec, playbook, effect=effect, seed=seed)

    def _learned_by(self, moment: datetime, version: int | None) -> Playbook:
        """The newest version of this spec learned from rows up to ``moment`` (its training
        cut-off at or before it), or ``version`` if it was; an error naming the field if not."""
        for number, _, meta in self.store.playbook_list():
            info = json.loads(meta)
            if version is not None and number != version:
                continue
            cut = align.moment(datetime.fromisoformat(info["training"]["as_of"]))
            if info.get("spec_digest") != self.spec.digest:
                if version is None:
                    continue
                raise InvalidInputError("version", f"version {number} was learned for another spec")
            if cut <= moment:
                found = self.load_playbook(number)
                if found is not None:
                    return found
            if version is not None:
                reason = (
                    f"version {number} learned from rows up to {align.stamp(cut)},"
                    f" after {align.stamp(moment)}"
                )
                raise InvalidInputError("as_of", reason)
        if version is not None:
            raise InvalidInputError("version", "no such version")
        raise InvalidInputError(
            "as_of", f"no playbook was learned from rows up to {align.stamp(moment)}"
        )

    def playbook_rows(self, version: int | None = None) -> list[dict[str, Any]]:
        """The playbook as rows: one per context segment, each knob's exact value, the
        expected result, its interval and the training rows behind the segment."""
        self.flush()
        playbook = self._served_or(version)
        as_of = datetime.fromisoformat(playbook.meta["training"]["as_of"])
        cells = publish.training_cells(self.store, self.spec, playbook.encoding, as_of)
        return export.playbook_rows(playbook, cells)

    @property
    def playbook(self) -> Playbook | None:
        """The published version decide serves from (``None``: cold start); between cycles,
        online updates follow its results (:meth:`update`)."""
        return self._published

    def load_playbook(self, version: int | None = None) -> Playbook | None:
        """A stored playbook (the newest by default), without serving from it."""
        found = self.store.playbook(version)
        return None if found is None else Playbook.load(self.spec, *found)

    def playbooks(self) -> list[dict[str, Any]]:
        """Every published version, newest first: when, training rows and the moment they
        run to, origin, spec match."""
        out = []
        for version, created_at, meta in self.store.playbook_list():
            info = json.loads(meta)
            out.append(
                {
                    "version": version,
                    "created_at": created_at,
                    "rows": info["training"]["rows"],
                    "trained_to": info["training"]["as_of"],
                    "mean_reward": info["training"]["mean_reward"],
                    "restored_from": info.get("restored_from"),
                    "matches_spec": info.get("spec_digest") == self.spec.digest,
                }
            )
        return out

    def rollback(self, version: int, *, actor: str | None = None) -> Playbook:
        """Restore an earlier version: it is published again as the newest and served (an
        audited action, recorded with ``actor``; the negative-loop guard judges it like any
        new version)."""
        playbook = publish.restore(self.store, self.spec, version)
        self._serve(playbook)
        who = _actor(actor)
        reason = f"restored version {version} as version {playbook.version}"
        breaker.audit(self.store, self._moment(None), "rollback", reason, actor=who)
        relay(self.store, self._alerts)
        return playbook

    def _newest(self) -> Playbook | None:
        """The newest playbook, if it was learned for this spec (else none: cold start)."""
        return publish.learned_for(self.spec, self.store.playbook())

    def _refresh(self) -> None:
        """Pick up knob values and a version published by another process (cheap queries, off
        the hot path)."""
        self._pick_up()
        latest = self.store.latest_version()
        current = self._published
        if latest is not None and (current is None or latest > current.version):
            newest = self._newest()
            if newest is not None:
                newest.draw()  # off the hot path: the next decide does not wait for them
                self._serve(newest)

    # --- lifecycle -------------------------------------------------------------------------------

    def flush(self, *, journal_only: bool = False) -> None:
        """Return once everything recorded so far is durable and in the store (with a
        journal and ``journal_only``: durable in the journal, which is faster)."""
        self._writer.flush()
        if self._journal is not None and not journal_only:
            self._journal.settle()

    @property
    def keep_failed_writes(self) -> bool:
        """What happens to rows whose write the store (or the journal) refused. ``True``, the
        default: they are kept and written later, and the error reaches the next flush.
        ``False``, what a server sets (it answers every write): the batch is dropped, and
        everyone waiting for it (:meth:`durably`) is told, so a write answered as failed is
        never stored behind its caller's back, nor twice once it is sent again."""
        return self._writer.keep_failed

    @keep_failed_writes.setter
    def keep_failed_writes(self, keep: bool) -> None:
        self._writer.keep_failed = keep

    def durably(self, write: Callable[[], T]) -> T:
        """Run ``write`` (calls of this wheel that record rows: ``lambda: wheel.decide(...)``)
        and return what it returned once those rows are durable (in the journal, with one).
        Raises :class:`StoreError` if they were refused (see :attr:`keep_failed_writes`)."""
        finished = threading.Event()
        outcome: list[Exception | None] = []

        def done(error: Exception | None) -> None:  # on the writer thread
            outcome.append(error)
            finished.set()

        result = self._writer.write_then(write, done)
        while not finished.wait(1.0):
            if not self._writer.running:
                raise FlywheelError("the writer stopped before the rows were written")
        if outcome[0] is not None:
            raise outcome[0]
        return result

    async def durably_async(self, write: Callable[[], T]) -> T:
        """:meth:`durably` for asyncio code: waits without blocking the event loop or a
        thread. Concurrent callers share the same commit."""
        durable, done = _loop_waiter()
        result = self._writer.write_then(write, done)
        await durable
        return result

    async def flush_async(self) -> None:
        """:meth:`flush` for asyncio code (durable: in the journal, with one): waits without
        blocking the event loop or a thread. Concurrent callers share the same commit."""
        durable, done = _loop_waiter()
        self._writer.when_durable(done)
        await durable

    def close(self) -> None:
        """Flush and release the store. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._turn is not None:
            self._turn.stop()
        if self._watcher is not None:
            self._watcher.stop()
        if self._drawing is not None:
            self._drawing.join()
        try:
            self._writer.close()
        finally:
            try:
                if self._journal is not None:
                    self._journal.close()
            finally:
                self._outcomes.fail(None, FlywheelError("this wheel is closed"))
                self._alerts.close()
                self.store.close()
            _OPEN.discard(self)

    def __enter__(self) -> Wheel:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _loop_waiter() -> tuple[asyncio.Future[None], Callable[[Exception | None], None]]:
    """A future of the running loop, and the callback (for the writer thread) that settles it."""
    loop = asyncio.get_running_loop()
    durable: asyncio.Future[None] = loop.create_future()

    def done(error: Exception | None) -> None:  # on the writer thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(_settle, durable, error)

    return durable, done


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # the waiter was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _unit_hasher(spec: Spec, store: Store) -> Pseudonymizer:
    """How this store's units are hashed: its salt (the spec's environment variable, or the
    store's own) and ``normalize_units``, each checked against what the store's units were
    hashed with. A new store's settings are claimed atomically (``update_meta``): two
    processes opening it at once agree on one salt instead of each storing its own."""
    key, new_salt = salt(spec.unit_salt_env, store.get_meta(SALT_META_KEY))
    if new_salt:  # the first of several openers wins, and the others take its salt
        key = bytes.fromhex(_claim(store, SALT_META_KEY, new_salt))
    # the normalisation is claimed before the salt's check: an opener that finds the check
    # finds the normalisation too, and a check without one is a store from before the
    # setting, which hashed ids as given
    normalize = ",".join(spec.normalize_units)
    check = store.get_meta(CHECK_META_KEY)
    hashed_as = _claim(store, NORMALIZE_META_KEY, normalize if check is None else "")
    if (check or _claim(store, CHECK_META_KEY, fingerprint(key))) != fingerprint(key):
        raise StoreError(
            f"privacy.unit_salt_env: the unit salt ({spec.unit_salt_env} or the store's own)"
            " is not the one this store's units were hashed with; forget() and per-unit"
            " data would silently miss them. Restore the original salt."
        )
    if hashed_as != normalize:
        raise StoreError(
            f"privacy.normalize_units: this store's units were hashed with"
            f" [{_steps(hashed_as)}], not [{_steps(normalize)}]; a change would split"
            " every unit in two and forget() would miss half of it. Restore the setting."
        )
    return Pseudonymizer(key, spec.normalize_units)


def _claim(store: Store, key: str, value: str) -> str:
    """The setting ``key``; stored as ``value`` first if it has none (atomically: of several
    processes doing this at once, one stores its value and every one gets that)."""
    found = store.get_meta(key)
    if found is not None:  # an existing store: no write at start-up
        return found
    return store.update_meta(key, lambda old: value if old is None else old)


def _steps(normalize: str) -> str:
    """``privacy.normalize_units`` as the spec writes it, from its stored form."""
    return ", ".join(f'"{step}"' for step in normalize.split(",") if step)


def _ignore(results: int) -> None:
    """Where recorded results are noted when nothing turns in the background."""


def _actor(given: str | None) -> str:
    """Who an audited action is recorded as: the given name, else the login user."""
    return given or os.environ.get("USER") or "unknown"


class _Watcher:
    """Calls ``check`` every ``every`` seconds on a daemon thread until stopped."""

    def __init__(self, check: Callable[[], None], every: float) -> None:
        self._check = check
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flywheel-playbooks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._check()
            except FlywheelError:  # the store is busy or closing: try again next time
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


_OPEN: set[Wheel] = set()  # strong references: a wheel dropped unclosed is still flushed at exit


def _track(wheel: Wheel) -> None:
    """Remember an open wheel so interpreter exit flushes it.

    The exit hook is registered when the first wheel opens, after the store's driver has
    registered its own: exit hooks run last-in first-out, so ours writes while the driver
    still accepts work.
    """
    if not _OPEN and not getattr(_track, "registered", False):
        atexit.register(_close_at_exit)
        _track.registered = True  # type: ignore[attr-defined]
    _OPEN.add(wheel)


def _close_at_exit() -> None:
    for wheel in list(_OPEN):
        try:
            wheel.close()
        except Exception as err:  # one wheel's failure must not cost the others their rows
            print(f"flywheel: could not flush a wheel at exit: {err}", file=sys.stderr)
