"""The spec, ``flywheel.toml``: what a flywheel may tune, may never change, and optimises.

:func:`load` reads a file, :meth:`Spec.from_dict` a mapping. Both validate everything up front
and raise :class:`~flywheel.errors.SpecError` listing every problem with its field path (and the
TOML line where one can be found). A loaded :class:`Spec` is immutable and carries the compiled
skeleton (the allowed combinations), so nothing is parsed again on the decide path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from sqlglot import exp

from flywheel.errors import FieldError, InvalidInputError, SpecError
from flywheel.rules import (
    SQL_TYPE,
    Domain,
    ExpressionError,
    Rule,
    check_quality_rule,
    check_reward_formula,
    compile_rule,
    parse,
    quote_literal,
    quote_name,
)
from flywheel.skeleton import Dimension, Space, Value

Combine = Literal["last", "first", "sum", "max", "min", "mean"]
DType = Literal["text", "integer", "number", "boolean"]
UnitStep = Literal["trim", "lower"]  # [privacy] normalize_units: see flywheel.collect.units

NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")  # \Z: no final newline either
RESERVED_NAMES = frozenset(
    {
        "id", "decision_id", "ts", "unit", "policy", "playbook", "propensity", "reward",
        "status", "name", "value", "text", "key", "seq", "n_signals", "late_signals",
    }
)  # fmt: skip
MAX_LEVELS = 1000
DEFAULT_OPEN_LEVELS = 100
"""How many levels an open categorical feature learns when ``max_levels`` is not given."""
MAX_OPEN_TEXT = 256
"""The longest text an open categorical feature takes (its values are stored as given)."""
DEFAULT_STORAGE_URL = "duckdb:///.flywheel/flywheel.duckdb"
MAX_DURATION = 100 * 365.25 * 86400

# Signals every flywheel understands, fed by wheel.feedback / wheel.implicit / wheel.edit.
BUILTIN_SIGNALS: dict[str, tuple[Combine, Literal["number", "text"]]] = {
    "rating": ("last", "number"),
    "thumbs": ("last", "number"),
    "comment": ("last", "text"),
    "accepted": ("max", "number"),
    "rejected": ("max", "number"),
    "requeried": ("max", "number"),
    "abandoned": ("max", "number"),
    "dwell_ms": ("sum", "number"),
    "edit_distance": ("last", "number"),
    "input": ("last", "text"),  # what an AI product was asked: decide(input=...)
    "output": ("last", "text"),  # what it answered: wheel.output()
}
NEWCOMER_ROWS = 100
"""Results after which a value added at run time no longer has its start share: from then
on the posterior alone says how often it is served."""
IMPLICIT_EVENTS = ("accepted", "rejected", "requeried", "abandoned")

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Knob:
    """A parameter the flywheel may tune."""

    name: str
    kind: Literal["categorical", "ordinal", "integer", "boolean"]
    values: tuple[Value, ...]
    dtype: DType
    open: bool = False
    """Whether values may be added (and retired) at run time (``{values = [...], open =
    true}``): :mod:`flywheel.catalogue` keeps them in the store."""

    def accepts(self, value: object) -> bool:
        return _matches(self.dtype, value) and value in self.values


@dataclass(frozen=True)
class Feature:
    """A context feature: categorical (``values``) or numeric (optional ``min``/``max``).

    An ``open`` categorical feature takes any text (or, with integer seed ``values``, any
    integer): each learn cycle learns its levels from the data, the ``max_levels`` most
    frequent values, and serves every other value as the level ``other``. Its ``values`` are
    only seeds, never a list of what it may take.
    """

    name: str
    kind: Literal["categorical", "numeric"]
    dtype: DType
    values: tuple[Value, ...] = ()
    min: float | None = None
    max: float | None = None
    open: bool = False
    max_levels: int = 0

    @property
    def listed(self) -> bool:
        """Whether the feature takes only its listed ``values`` (categorical, not open)."""
        return self.kind == "categorical" and not self.open


@dataclass(frozen=True)
class SignalDef:
    """How a named signal is stored and how repeats of it combine during alignment."""

    name: str
    combine: Combine = "last"
    kind: Literal["number", "text"] = "number"
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Reward:
    """The optimised result: a SQL formula over signals, inside an attribution window."""

    formula: str
    window_seconds: float
    missing: float | None  # None: a decision without signals stays out of learning
    signals: tuple[str, ...]


@dataclass(frozen=True)
class Learn:
    """How the learner fits and how the playbook it publishes explores (``[learn]``)."""

    interactions: str | tuple[tuple[str, str], ...] = "pairwise"
    half_life_seconds: float | None = None
    """A fixed half-life for the rows' weights; ``None`` with ``forget_auto``: rows before
    the last change of the world the seatbelt found weigh little, the others fully."""
    forget_auto: bool = True
    link: Literal["auto", "logistic", "gaussian"] = "auto"
    empirical_bayes: bool = True
    explore_floor: float = 0.005
    explore_cap: float = 1.0
    explore_spread: float = 0.75
    explore_tails: float = 0.0
    """The share of Thompson sampling's draws that keep the posterior's full width; the
    others spread ``explore_spread`` as far (see :func:`flywheel.learn.model.draw_spreads`)."""
    sampling: Literal["thompson", "optimistic"] = "thompson"
    """How a draw scores a combination: ``thompson``, as drawn; ``optimistic``, at least at
    its posterior mean (optimistic Bayesian sampling: less exploration, and so less for the
    seatbelt to judge a rarely served level by)."""
    default_advantage: float = 0.0
    draws: int = 512
    context_bins: int = 4
    min_rows: int = 20
    online: bool = True
    """Between cycles, decide serves from a posterior updated with the results recorded since
    the last one (Thompson sampling from the first results on); the published versions stay
    the audited checkpoints."""
    online_rows: int = 100
    online_seconds: float = 5.0
    every_seconds: float | None = None  # a scheduled cycle this often
    after_rows: int | None = None  # ... or once this many new complete rows arrived
    engine: Literal["store", "spark"] = "store"
    """What computes a cycle's alignment and cells: the store itself (DuckDB reads the warm
    tier beside it), or Spark over the warm tier's files plus the store's hot rows."""
    spark: Mapping[str, str] = field(default_factory=dict)
    """Spark settings (``spark.master``, and any other ``spark.*``) when the engine is Spark."""

    @property
    def scheduled(self) -> bool:
        return self.every_seconds is not None or self.after_rows is not None


@dataclass(frozen=True)
class Archive:
    """The warm tier (``[storage] archive``): decisions older than ``after_seconds`` move to
    Parquet files under ``url`` (a local path, resolved beside the spec, or an object-store
    URL such as ``s3://bucket/flywheel``)."""

    url: str
    after_seconds: float | None = None  # None: only ``flywheel archive`` moves rows


@dataclass(frozen=True)
class Alerts:
    """Where the seatbelt's events go beyond the store (``[alerts]``): a JSON POST each."""

    webhook: str | None = None
    retries: int = 5
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class Datasets:
    """Training sets from the decisions' inputs and outputs (``[datasets]``): the reward a
    good output has (SFT rows, KTO's label), and how many SFT rows or preference pairs make
    a set worth tuning a model on (the "ready to tune" event)."""

    min_reward: float = 0.5
    sft_min: int = 500
    preferences_min: int = 1000
    declared: bool = False
    """Whether the spec has a ``[datasets]`` section: only then does each learn cycle check
    whether a set is ready (the check reads every aligned row once more)."""


@dataclass(frozen=True)
class Memory:
    """The example memory (``[memory]``, :mod:`flywheel.improve.memory`): each learn cycle
    keeps the ``size`` best-rated outputs of the last ``window`` (a reward of at least
    ``min_reward``, else ``[datasets] min_reward``) as a snapshot, added as a value of the open
    knob ``knob`` when it changed, so which snapshot served is learned like any knob; the
    ``keep`` newest snapshots stay served beside the knob's own values. ``k`` examples come
    back by default; ``documents`` names a text signal listing the documents a decision
    used, ranked by their feedback."""

    knob: str
    k: int = 3
    size: int = 200
    min_reward: float | None = None
    window_seconds: float = 28 * 86400.0
    keep: int = 2
    documents: str | None = None
    refresh_seconds: float = 86400.0
    """The least time between two snapshots added as values (each adds a level to the knob,
    which takes at most 1,000): cycles in between keep serving the newest."""


@dataclass(frozen=True)
class Satisfaction:
    """The satisfaction trigger (``[triggers] satisfaction``): it fires when the mean of
    ``signal`` over the decisions of the last ``window`` (each decision's value combined as
    the spec says) falls below ``below``, once at least ``min_count`` of them carry the signal;
    ``action`` is what follows beyond the audit entry and the alert (``learn``: a cycle)."""

    signal: str
    below: float
    window: str = "7d"
    window_seconds: float = 7 * 86400.0
    action: Literal["learn", "alert"] = "alert"
    min_count: int = 30


@dataclass(frozen=True)
class Triggers:
    """What the wheel watches for between cycles (``[triggers]``)."""

    satisfaction: Satisfaction | None = None


@dataclass(frozen=True)
class Quality:
    """Row checks applied before learning (``[quality]``); failing rows go to quarantine.

    ``rules`` maps each check's name to its SQL condition: the user's rules (named by their
    text), ``required`` signals (``rating IS NOT NULL``) and value ``ranges`` (``rating
    BETWEEN 1 AND 5``). A condition that evaluates to NULL passes, as in a SQL ``CHECK``.
    ``unique`` names the columns whose repeated values make a row a duplicate (the earliest
    row is kept).
    """

    rules: Mapping[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    skeleton: Mapping[str, str] = field(default_factory=dict)
    """The skeleton's rules as checks (``skeleton rule: <rule>`` -> SQL): a complete row logged
    or imported with values the skeleton forbids is quarantined, never learned from."""

    @property
    def active(self) -> bool:
        return bool(self.rules or self.unique)


@dataclass(frozen=True)
class Seatbelt:
    """How the gate, the monitors and the negative-loop guard decide (``[seatbelt]``)."""

    enabled: bool = True
    halt_on: tuple[str, ...] = ("quality", "srm", "reward_shift")
    alpha: float = 0.01
    drift_distance: float = 0.1
    min_shift: float = 0.25
    min_rows: int = 100
    max_quarantined: float = 0.05
    ope_tolerance: float = 0.02
    guard_alpha: float = 0.01
    guard_min_rows: int = 200
    period_seconds: float = 86400.0
    baseline_periods: int = 7
    volume_ratio: float = 0.8
    stale_after_seconds: float = 7 * 86400.0


@dataclass(frozen=True)
class Import:
    """How spreadsheet and file columns map onto the spec (``[import]``).

    Columns named like a knob, a context feature or a signal map by name; ``columns`` maps
    other source column names onto those names. ``key`` joins a features file with a results
    file; ``time`` and ``unit`` name the columns holding each row's time and unit; results
    whose time is more than ``window_seconds`` after their features' time do not join.
    ``propensity`` and ``policy`` name the columns with the probability the logging policy had
    of choosing each row's knob values and that policy's name (logs of an outside policy).
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None
    time: str | None = None
    unit: str | None = None
    window_seconds: float | None = None
    propensity: str | None = None  # the column with each row's logging propensity
    policy: str | None = None  # the column with the name of the policy that chose each row


@dataclass(frozen=True)
class Traces:
    """How OTLP span attributes map onto the spec (``[traces]``).

    ``flywheel.knob.<name>``, ``flywheel.context.<name>``, ``flywheel.signal.<name>`` and
    ``flywheel.unit`` map by convention; ``map`` maps other attribute keys (such as
    ``gen_ai.request.model``) onto a knob, a context feature, a signal or ``unit``.
    """

    map: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    """A validated flywheel declaration. Build it with :func:`load` or :meth:`from_dict`."""

    knobs: tuple[Knob, ...]
    context: tuple[Feature, ...]
    fixed: Mapping[str, Value]
    rules: tuple[Rule, ...]
    default: Mapping[str, Value]
    reward: Reward
    signals: Mapping[str, SignalDef]
    redact_text: bool
    unit_salt_env: str
    normalize_units: tuple[UnitStep, ...]
    storage_url: str
    explore: bool
    learn: Learn
    name: str
    base_dir: Path
    digest: str
    space: Space = field(repr=False, compare=False)
    quality: Quality = field(default_factory=Quality)
    seatbelt: Seatbelt = field(default_factory=Seatbelt)
    dedup_window_seconds: float = 7 * 86400.0  # how long a signal's idempotency key is kept
    archive: Archive | None = None
    imports: Import = field(default_factory=Import)
    traces: Traces = field(default_factory=Traces)
    alerts: Alerts = field(default_factory=Alerts)
    datasets: Datasets = field(default_factory=Datasets)
    triggers: Triggers = field(default_factory=Triggers)
    memory: Memory | None = None
    newcomers: Mapping[str, Mapping[Value, float]] = field(default_factory=dict, compare=False)
    """The start share of each value added at run time that is not yet established
    (:mod:`flywheel.catalogue`): a learn cycle serves it at least that share of the traffic
    while it has fewer than :data:`NEWCOMER_ROWS` results."""
    source: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    warnings: tuple[FieldError, ...] = field(default=(), compare=False)
    """What is valid but probably a mistake (``flywheel check`` prints it): a reward formula
    naming a signal that is neither declared under ``[signals]`` nor built in."""

    @cached_property
    def knob(self) -> dict[str, Knob]:
        return {k.name: k for k in self.knobs}

    @cached_property
    def feature(self) -> dict[str, Feature]:
        return {f.name: f for f in self.context}

    def with_values(
        self,
        added: Mapping[str, Sequence[Value]],
        retired: Mapping[str, Sequence[Value]] = {},
        newcomers: Mapping[str, Mapping[Value, float]] = {},
    ) -> Spec:
        """This spec with values ``added`` to its open knobs at run time, and a skeleton
        rule per knob that keeps its ``retired`` values from being served (they stay values:
        the rows that have them are still learned from). Its digest differs, so a playbook
        fits the values it was learned for; ``newcomers`` are the start shares of the added
        values not yet established. Raises :class:`SpecError` when the rules then allow
        nothing (or break the default)."""
        if not any(added.values()) and not any(retired.values()):
            return self
        data = json.loads(json.dumps(self.raw))
        for name, values in added.items():
            data["knobs"][name]["values"] = [*data["knobs"][name]["values"], *values]
        built = _build(data, self.base_dir, self.source, text=None)
        shares = {k: dict(v) for k, v in newcomers.items()}
        rules = list(data["skeleton"]["rules"])
        for name, values in retired.items():
            if values:
                listed = ", ".join(
                    quote_literal(v) if isinstance(v, str) else str(v) for v in values
                )
                rules.append(f"{quote_name(name)} NOT IN ({listed})")
        if len(rules) == len(data["skeleton"]["rules"]):
            return dataclasses.replace(built, newcomers=shares)
        data["skeleton"]["rules"] = rules
        serving = _build(data, self.base_dir, self.source, text=None)
        # a retired value is no longer served, but the rows that had it were served rightly:
        # its rule shapes the space (and the digest), not the quality checks
        return dataclasses.replace(
            built, space=serving.space, digest=serving.digest, newcomers=shares
        )

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        base_dir: Path | str | None = None,
        source: str | None = None,
    ) -> Spec:
        """Validate a spec given as a mapping (the parsed TOML)."""
        return _build(data, Path(base_dir) if base_dir else Path.cwd(), source, text=None)

    @classmethod
    def from_toml(
        cls, text: str, *, base_dir: Path | str | None = None, source: str | None = None
    ) -> Spec:
        """Validate a spec given as TOML text."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            line = re.search(r"line (\d+)", str(err))
            number = int(line.group(1)) if line else max(1, len(text.splitlines()))
            raise SpecError(
                [FieldError("<toml>", f"not valid TOML: {err}", number)],
                source,
            ) from None
        return _build(data, Path(base_dir) if base_dir else Path.cwd(), source, text=text)


def load(path: str | Path) -> Spec:
    """Read and validate a ``flywheel.toml``; relative storage paths resolve beside it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            [FieldError("<file>", f"no spec at {path} (create one with `flywheel init`)")]
        ) from None
    except OSError as err:
        raise SpecError([FieldError("<file>", f"cannot read {path}: {err.strerror}")]) from None
    return Spec.from_toml(text, base_dir=path.resolve().parent, source=str(path))


# --- structure (pydantic) ------------------------------------------------------------------------

Scalar = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Skeleton(_Model):
    fixed: dict[str, Scalar] = Field(default_factory=dict)
    rules: list[str] = Field(default_factory=list)
    default: dict[str, Scalar] | None = None


class _Reward(_Model):
    formula: str
    window: str = "7d"
    missing: Literal["pending"] | float | int = "pending"


class _Signal(_Model):
    combine: Combine = "last"
    kind: Literal["number", "text"] = "number"
    min: float | int | None = None
    max: float | int | None = None


class _Privacy(_Model):
    redact_text: bool = True
    unit_salt_env: str = "FLYWHEEL_UNIT_SALT"
    normalize_units: list[UnitStep] = Field(default_factory=list)


class _Archive(_Model):
    url: str
    after: str | None = None


class _Storage(_Model):
    url: str = DEFAULT_STORAGE_URL
    dedup_window: str = "7d"
    archive: _Archive | None = None


class _Policy(_Model):
    explore: bool = True


class _Learn(_Model):
    interactions: Literal["pairwise", "none"] | list[str] = "pairwise"
    half_life: str = "auto"
    link: Literal["auto", "logistic", "gaussian"] = "auto"
    empirical_bayes: bool = True
    explore_floor: float = Field(default=0.005, ge=0.0, le=1.0)
    explore_cap: float = Field(default=1.0, ge=0.0, le=1.0)
    explore_spread: float = Field(default=0.75, gt=0.0, le=2.0)
    explore_tails: float = Field(default=0.0, ge=0.0, le=1.0)
    sampling: Literal["thompson", "optimistic"] = "thompson"
    default_advantage: float = 0.0
    draws: int = Field(default=512, ge=16, le=10_000)
    context_bins: int = Field(default=4, ge=1, le=50)
    min_rows: int = Field(default=20, ge=1)
    online: bool = True
    online_rows: int = Field(default=100, ge=1)
    online_interval: str = "5s"
    every: str | None = None
    after: int | None = Field(default=None, ge=1)
    engine: Literal["store", "spark"] = "store"
    spark: dict[str, str | int | float | bool] = Field(default_factory=dict)


class _Quality(_Model):
    rules: list[str] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)
    ranges: dict[str, list[float | int]] = Field(default_factory=dict)
    unique: list[str] = Field(default_factory=list)
    max_failure_rate: float | None = Field(default=None, ge=0.0, le=1.0)  # seatbelt's, once


HaltingCheck = Literal["quality", "drift", "srm", "reward_shift"]
DEFAULT_HALT_ON: tuple[HaltingCheck, ...] = ("quality", "srm", "reward_shift")


class _Seatbelt(_Model):
    enabled: bool = True
    # context drift is a change of the world (the model conditions on the context), not
    # toxic data: it is reported, and halts only where a spec asks for it
    halt_on: list[HaltingCheck] = Field(default_factory=lambda: list(DEFAULT_HALT_ON))
    alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    drift_distance: float = Field(default=0.1, gt=0.0, le=1.0)
    min_shift: float = Field(default=0.25, ge=0.0)
    min_rows: int = Field(default=100, ge=1)
    max_quarantined: float | None = Field(default=None, ge=0.0, le=1.0)
    ope_tolerance: float = Field(default=0.02, ge=0.0)
    guard_alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    guard_min_rows: int = Field(default=200, ge=1)
    period: str = "1d"
    baseline_periods: int = Field(default=7, ge=1, le=1000)
    volume_ratio: float = Field(default=0.8, ge=0.0, le=1.0)
    stale_after: str = "7d"


class _Import(_Model):
    columns: dict[str, str] = Field(default_factory=dict)
    key: str | None = None
    time: str | None = None
    unit: str | None = None
    window: str | None = None
    propensity: str | None = None
    policy: str | None = None


class _Traces(_Model):
    map: dict[str, str] = Field(default_factory=dict)


class _Alerts(_Model):
    webhook: str | None = None
    retries: int = Field(default=5, ge=0, le=20)
    timeout: str = "5s"


class _Datasets(_Model):
    min_reward: float | int = 0.5
    sft_min: int = Field(default=500, ge=1)
    preferences_min: int = Field(default=1000, ge=1)


class _Satisfaction(_Model):
    signal: str
    below: float
    window: str = "7d"
    action: Literal["learn", "alert"] = "alert"
    min_count: int = Field(default=30, ge=1)


class _Triggers(_Model):
    satisfaction: _Satisfaction | None = None


class _Memory(_Model):
    knob: str | None = None
    k: int = Field(default=3, ge=1, le=100)
    size: int = Field(default=200, ge=1, le=10_000)
    min_reward: float | int | None = None
    window: str = "28d"
    keep: int = Field(default=2, ge=1, le=20)
    documents: str | None = None
    refresh: str = "1d"


class _Spec(_Model):
    name: str = "flywheel"
    knobs: dict[str, Any]
    skeleton: _Skeleton = Field(default_factory=_Skeleton)
    context: dict[str, Any] = Field(default_factory=dict)
    reward: _Reward
    signals: dict[str, Combine | _Signal] = Field(default_factory=dict)
    privacy: _Privacy = Field(default_factory=_Privacy)
    storage: _Storage = Field(default_factory=_Storage)
    policy: _Policy = Field(default_factory=_Policy)
    learn: _Learn = Field(default_factory=_Learn)
    quality: _Quality = Field(default_factory=_Quality)
    seatbelt: _Seatbelt = Field(default_factory=_Seatbelt)
    import_: _Import = Field(default_factory=_Import, alias="import")
    traces: _Traces = Field(default_factory=_Traces)
    alerts: _Alerts = Field(default_factory=_Alerts)
    datasets: _Datasets = Field(default_factory=_Datasets)
    triggers: _Triggers = Field(default_factory=_Triggers)
    memory: _Memory = Field(default_factory=_Memory)


# --- semantics -----------------------------------------------------------------------------------


class _Errors:
    def __init__(self, text: str | None) -> None:
        self.items: list[FieldError] = []
        self._text = text

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldError(path, message, _line_of(self._text, path)))


_SECTIONS: dict[str, type[_Model]] = {
    "skeleton": _Skeleton,
    "reward": _Reward,
    "privacy": _Privacy,
    "storage": _Storage,
    "policy": _Policy,
    "learn": _Learn,
    "quality": _Quality,
    "seatbelt": _Seatbelt,
    "import": _Import,
    "traces": _Traces,
    "alerts": _Alerts,
    "datasets": _Datasets,
    "triggers": _Triggers,
    "memory": _Memory,
}


def _structure(data: Mapping[str, Any], errors: _Errors) -> _Spec:
    """Validate each section on its own, so one bad section does not hide the others."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key == "name":
            if isinstance(value, str):
                clean[key] = value
            else:
                errors.add("name", "expected text")
        elif key in ("knobs", "context", "signals"):
            if isinstance(value, Mapping):
                for name in value:
                    if not isinstance(name, str):
                        errors.add(f"{key}.{name}", "names must be text")
                clean[key] = {k: v for k, v in value.items() if isinstance(k, str)}
            else:
                errors.add(key, "expected a table")
        elif key in _SECTIONS:
            try:
                clean[key] = _SECTIONS[key].model_validate(value)
            except PydanticValidationError as err:
                for e in err.errors():
                    loc = ".".join(str(p) for p in e["loc"] if not _is_union_tag(p))
                    errors.add(f"{key}.{loc}" if loc else key, _pydantic_message(e))
                # carry on with defaults, so the other sections are still checked
                clean[key] = _Reward(formula="0") if key == "reward" else _SECTIONS[key]()
        else:
            errors.add(key, "is not a known section")
    for required in ("knobs", "reward"):
        if required not in data:
            errors.add(required, "is required")
            clean[required] = _Reward(formula="0") if required == "reward" else {}
    clean["signals"] = _signal_decls(clean.get("signals", {}), errors)
    return _Spec.model_validate(clean)


def _digest(raw: _Spec) -> str:
    """A hash of what shapes decisions and learning (not where data lives, its privacy, or
    the seatbelt's checks, how files are imported or traces mapped, when a training set is
    ready, or what the triggers watch for): a playbook fits a spec with the same digest."""
    shape = raw.model_dump(
        mode="json",
        exclude={
            "name": True,
            "storage": True,
            "privacy": True,
            "quality": True,
            "seatbelt": True,
            "import_": True,
            "traces": True,
            "alerts": True,
            "datasets": True,
            "triggers": True,
            "memory": True,
            # when cycles run and how often serving follows results between them
            "learn": {
                "online",
                "online_rows",
                "online_interval",
                "every",
                "after",
                "engine",
                "spark",
            },
        },
        exclude_defaults=True,
    )
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def _signal_decls(decls: Mapping[str, Any], errors: _Errors) -> dict[str, Combine | _Signal]:
    """``name = "max"`` or ``name = { combine = "max", min = 0, max = 1, kind = "number" }``."""
    clean: dict[str, Combine | _Signal] = {}
    combines = get_args(Combine)
    for name, decl in decls.items():
        if isinstance(decl, str):
            if decl not in combines:
                errors.add(f"signals.{name}", f"{decl!r} is not one of {', '.join(combines)}")
            elif BUILTIN_SIGNALS.get(name, ("last", "number"))[1] == "text" and decl not in (
                "last",
                "first",
            ):
                errors.add(f"signals.{name}", "text signals combine by last or first")
            else:
                clean[name] = decl  # type: ignore[assignment]
            continue
        try:
            clean[name] = _Signal.model_validate(decl)
        except PydanticValidationError as err:
            for e in err.errors():
                loc = ".".join(str(p) for p in e["loc"])
                errors.add(
                    f"signals.{name}.{loc}" if loc else f"signals.{name}", _pydantic_message(e)
                )
    return clean


def _build(data: Mapping[str, Any], base_dir: Path, source: str | None, text: str | None) -> Spec:
    errors = _Errors(text)
    raw = _structure(data, errors)

    knobs = _parse_knobs(raw.knobs, errors)
    context = _parse_context(raw.context, errors)
    _check_names(raw, errors)
    declared = set(raw.knobs) | set(raw.context)
    fixed = dict(raw.skeleton.fixed)
    for name in fixed:
        if name in raw.knobs:
            errors.add(f"skeleton.fixed.{name}", "is a knob; a fixed value cannot also be tuned")

    rules, skeleton_checks = _parse_rules(raw.skeleton.rules, knobs, context, declared, errors)

    signals = _parse_signals(raw, declared, errors)
    reward = _parse_reward(raw.reward, signals, errors)
    default = _parse_default(raw.skeleton.default, knobs, set(raw.knobs), errors)
    learn = _parse_learn(raw.learn, raw.knobs, raw.context, errors)
    quality = _parse_quality(raw.quality, knobs, context, signals, errors, skeleton_checks)
    seatbelt = _parse_seatbelt(raw.seatbelt, raw.quality.max_failure_rate, errors)
    alerts = _parse_alerts(raw.alerts, errors)
    triggers = _parse_triggers(raw.triggers, signals, errors)
    memory = _parse_memory(raw.memory, knobs, signals, errors)
    imports = _parse_import(raw.import_, knobs, context, signals, errors)
    traces = _parse_traces(raw.traces, knobs, context, signals, errors)
    dedup_window = _duration("storage.dedup_window", raw.storage.dedup_window, errors)
    archive = _parse_archive(raw.storage.archive, base_dir, errors)
    if errors.items:
        raise SpecError(errors.items, source)
    space = _build_space(knobs, rules, context, default, errors)
    if errors.items or space is None:
        raise SpecError(errors.items, source)

    return Spec(
        knobs=tuple(knobs),
        context=tuple(context),
        fixed=fixed,
        rules=tuple(rules),
        default=default,
        reward=reward,
        signals=signals,
        redact_text=raw.privacy.redact_text,
        unit_salt_env=raw.privacy.unit_salt_env,
        normalize_units=tuple(raw.privacy.normalize_units),
        storage_url=raw.storage.url,
        dedup_window_seconds=dedup_window,
        archive=archive,
        explore=raw.policy.explore,
        learn=learn,
        name=raw.name,
        base_dir=base_dir,
        digest=_digest(raw),
        space=space,
        quality=quality,
        seatbelt=seatbelt,
        imports=imports,
        traces=traces,
        alerts=alerts,
        datasets=Datasets(
            float(raw.datasets.min_reward),
            raw.datasets.sft_min,
            raw.datasets.preferences_min,
            declared="datasets" in data,
        ),
        triggers=triggers,
        memory=memory,
        source=source,
        raw=raw.model_dump(mode="json", by_alias=True),
        warnings=_undeclared_signals(raw, reward, text),
    )


def _parse_memory(
    raw: _Memory, knobs: Sequence[Knob], signals: Mapping[str, SignalDef], errors: _Errors
) -> Memory | None:
    """``[memory]``: its knob must be an open text knob, its documents a text signal."""
    if raw.knob is None:
        if raw != _Memory():
            errors.add("memory.knob", "is required: the open knob whose values name the snapshots")
        return None
    knob = next((k for k in knobs if k.name == raw.knob), None)
    if knob is None or not knob.open or knob.dtype != "text":
        errors.add(
            "memory.knob",
            f"{raw.knob!r} is not an open text knob (declare {raw.knob} ="
            ' { values = ["none"], open = true } under [knobs])',
        )
    if raw.documents is not None:
        found = signals.get(raw.documents)
        if found is None or found.kind != "text":
            errors.add("memory.documents", f"{raw.documents!r} is not a text signal")
    window = _duration("memory.window", raw.window, errors)
    refresh = _duration("memory.refresh", raw.refresh, errors)
    return Memory(
        raw.knob,
        raw.k,
        raw.size,
        None if raw.min_reward is None else float(raw.min_reward),
        window,
        raw.keep,
        raw.documents,
        refresh,
    )


def _parse_rules(
    texts: Sequence[str],
    knobs: Sequence[Knob],
    context: Sequence[Feature],
    declared: set[str],
    errors: _Errors,
) -> tuple[list[Rule], dict[str, str]]:
    """Compile the skeleton's rules (each value a rule compares a knob or a listed context
    feature with must be one it can take) and render each as a quality check, named
    ``skeleton rule: <rule>``, which quarantines complete rows that break it."""
    domains = {k.name: Domain(_knob_kind(k), k.dtype, k.values) for k in knobs}
    for f in context:
        listed = f.values if f.listed else None
        what = "an open categorical" if f.open else f"a {f.kind}"
        domains[f.name] = Domain(f"{what} context feature", f.dtype, listed)
    types = {f.name: SQL_TYPE[f.dtype] for f in context} | {
        k.name: SQL_TYPE[k.dtype] for k in knobs
    }
    rules: list[Rule] = []
    checks: dict[str, str] = {}
    for i, sql in enumerate(texts):
        try:
            rule = compile_rule(sql, declared, domains)
            if set(rule.names) <= set(types):  # else a knob or feature has an error of its own
                checks[f"skeleton rule: {' '.join(sql.split())}"] = check_quality_rule(sql, types)
            rules.append(rule)
        except ExpressionError as err:
            errors.add(f"skeleton.rules[{i}]", f"{sql!r} {err}")
    return rules, checks


def _knob_kind(knob: Knob) -> str:
    if knob.kind == "integer" or knob.dtype == "integer":
        return "an integer knob"
    return {"text": "a text knob", "number": "a numeric knob", "boolean": "a boolean knob"}.get(
        knob.dtype, "a knob"
    )


def _undeclared_signals(raw: _Spec, reward: Reward, text: str | None) -> tuple[FieldError, ...]:
    """A warning for each signal the reward formula names that is neither declared under
    ``[signals]`` nor built in: a misspelt name there leaves every reward pending forever."""
    return tuple(
        FieldError(
            "reward.formula",
            f"names the signal {name!r}, which is not declared under [signals]: until a"
            f" {name!r} signal is received, rewards that need it stay pending (declare it,"
            " or correct the name)",
            _line_of(text, "reward.formula"),
        )
        for name in reward.signals
        if name not in raw.signals and name not in BUILTIN_SIGNALS
    )


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and (
        part.startswith(("literal[", "function-")) or part in {"_Signal", "str", "float", "int"}
    )


def _pydantic_message(e: Any) -> str:
    if e["type"] == "missing":
        return "is required"
    if e["type"] == "extra_forbidden":
        return "is not a known setting"
    if e["type"] == "model_type":
        return "expected a table"
    return str(e["msg"]).replace("Input should be", "expected").replace("Input", "value")


def _line_of(text: str | None, path: str) -> int | None:
    """Best-effort TOML line of a dotted field path: the key's line, else its table's."""
    if text is None:
        return None
    parts = [p for p in re.split(r"\.|\[\d+\]", path) if p]
    if not parts:
        return None
    section, key = parts[0], parts[1] if len(parts) > 1 else None
    header = None
    section_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        table = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if table:
            header = table.group(1)
            if header == section and section_line is None:
                section_line = number
            if key and header == f"{section}.{key}":
                return number
            continue
        if key and header == section and re.match(rf"^\"?{re.escape(key)}\"?\s*=", stripped):
            return number
        if header is None and re.match(rf"^{re.escape(section)}\s*=", stripped):
            return number
    return section_line


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None: every store takes UTF-8 text without
    NUL characters (PostgreSQL refuses U+0000 even where DuckDB would keep it, so a value
    one store took could not move to the other)."""
    if "\x00" in value:
        return "contains a NUL character (U+0000), which cannot be stored"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def _dtype(values: Sequence[object]) -> DType | None:
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "integer"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "number"
    if all(isinstance(v, str) for v in values):
        return "text"
    return None


def _matches(dtype: DType, value: object) -> bool:
    if dtype == "text":
        return isinstance(value, str)
    if dtype == "boolean":
        return isinstance(value, bool)
    if dtype == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value_list(
    path: str, values: object, errors: _Errors
) -> tuple[tuple[Value, ...], DType] | None:
    if not isinstance(values, list) or not values:
        errors.add(path, "expected a non-empty list of values")
        return None
    dtype = _dtype(values)
    if dtype is None:
        errors.add(path, "values must all be text, all numbers or all booleans")
        return None
    if len(set(values)) != len(values):
        dupes = sorted({repr(v) for v in values if values.count(v) > 1})
        errors.add(path, f"values must be unique (repeated: {', '.join(dupes)})")
        return None
    if len(values) > MAX_LEVELS:
        errors.add(path, f"has {len(values)} values; at most {MAX_LEVELS} are supported")
        return None
    if dtype == "text":
        for value in values:
            problem = text_problem(value)
            if problem:
                errors.add(path, f"the value {value!r} {problem}")
                return None
    if dtype == "number":
        values = [float(v) for v in values]
    return tuple(values), dtype


def _parse_knobs(decls: Mapping[str, Any], errors: _Errors) -> list[Knob]:
    if not decls:
        errors.add("knobs", "declare at least one knob")
    knobs = []
    for name, decl in decls.items():
        path = f"knobs.{name}"
        if decl == "boolean" or (isinstance(decl, dict) and decl == {"type": "boolean"}):
            knobs.append(Knob(name, "boolean", (False, True), "boolean"))
        elif isinstance(decl, list):
            parsed = _value_list(path, decl, errors)
            if parsed:
                knobs.append(Knob(name, "categorical", *parsed))
        elif isinstance(decl, dict) and "values" in decl:
            unknown = set(decl) - {"values", "ordinal", "open"}
            if unknown:
                errors.add(
                    path,
                    f"unknown keys {sorted(unknown)}; a list knob takes values, ordinal and open",
                )
                continue
            is_open = decl.get("open", False)
            if not isinstance(is_open, bool):
                errors.add(f"{path}.open", "expected true or false")
                continue
            if is_open and decl.get("ordinal"):
                errors.add(
                    f"{path}.open", "an ordinal knob's values are ordered: it cannot be open"
                )
                continue
            parsed = _value_list(f"{path}.values", decl["values"], errors)
            if parsed and is_open and parsed[1] not in ("text", "integer"):
                errors.add(f"{path}.open", "an open knob's values are text or integers")
            elif parsed:
                kind: Literal["ordinal", "categorical"] = (
                    "ordinal" if decl.get("ordinal") else "categorical"
                )
                knobs.append(Knob(name, kind, *parsed, open=is_open))
        elif isinstance(decl, dict) and ("min" in decl or "max" in decl):
            knob = _integer_range(path, decl, errors)
            if knob:
                knobs.append(Knob(name, "integer", knob, "integer"))
        else:
            errors.add(
                path,
                "expected a non-empty list of values, {values = [...], ordinal = true},"
                ' {min = .., max = .., step = ..} or "boolean"',
            )
    return knobs


def _integer_range(path: str, decl: Mapping[str, Any], errors: _Errors) -> tuple[int, ...] | None:
    unknown = set(decl) - {"min", "max", "step", "type"}
    if decl.get("type", "integer") != "integer":
        errors.add(f"{path}.type", 'a range knob is "integer"')
        return None
    if unknown:
        errors.add(path, f"unknown keys {sorted(unknown)}; a range knob takes min, max and step")
        return None
    lo, hi, step = decl.get("min"), decl.get("max"), decl.get("step", 1)
    for key, v in (("min", lo), ("max", hi), ("step", step)):
        if not isinstance(v, int) or isinstance(v, bool):
            errors.add(f"{path}.{key}", "expected an integer")
            return None
    assert isinstance(lo, int) and isinstance(hi, int) and isinstance(step, int)
    if step <= 0 or hi < lo:
        errors.add(path, "expected min <= max and step > 0")
        return None
    values = tuple(range(lo, hi + 1, step))
    if len(values) > MAX_LEVELS:
        errors.add(path, f"has {len(values)} values; at most {MAX_LEVELS} are supported")
        return None
    return values


def _parse_context(decls: Mapping[str, Any], errors: _Errors) -> list[Feature]:
    features = []
    for name, decl in decls.items():
        path = f"context.{name}"
        if decl == "number" or (isinstance(decl, dict) and decl.get("type") == "number"):
            bounds = decl if isinstance(decl, dict) else {}
            unknown = set(bounds) - {"type", "min", "max"}
            if unknown:
                errors.add(
                    path, f"unknown keys {sorted(unknown)}; a numeric feature takes min and max"
                )
                continue
            lo, hi = bounds.get("min"), bounds.get("max")
            if any(
                v is not None and (not isinstance(v, int | float) or isinstance(v, bool))
                for v in (lo, hi)
            ):
                errors.add(path, "min and max must be numbers")
                continue
            if lo is not None and hi is not None and lo > hi:
                errors.add(path, "min must not exceed max")
                continue
            features.append(Feature(name, "numeric", "number", (), lo, hi))
        elif isinstance(decl, dict) and decl.get("type") == "category":
            feature = _category(name, path, decl, errors)
            if feature is not None:
                features.append(feature)
        elif isinstance(decl, list) or (isinstance(decl, dict) and "values" in decl):
            values = decl if isinstance(decl, list) else decl["values"]
            parsed = _value_list(path, values, errors)
            if parsed:
                features.append(Feature(name, "categorical", parsed[1], parsed[0]))
        else:
            errors.add(
                path,
                'expected a non-empty list of values, "number" or'
                ' { type = "category", open = true, max_levels = .. }',
            )
    return features


def _category(name: str, path: str, decl: Mapping[str, Any], errors: _Errors) -> Feature | None:
    """``{ type = "category", open = true, max_levels = 50, values = [...] }``: an open
    categorical feature (``values`` are optional seeds, always among its levels); without
    ``open``, a categorical feature with its listed ``values``."""
    unknown = set(decl) - {"type", "open", "max_levels", "values"}
    if unknown:
        errors.add(
            path,
            f"unknown keys {sorted(unknown)}; a category takes open, max_levels and values",
        )
        return None
    is_open = decl.get("open", False)
    if not isinstance(is_open, bool):
        errors.add(f"{path}.open", "expected true or false")
        return None
    if not is_open:
        if "max_levels" in decl:
            errors.add(f"{path}.max_levels", "is for an open category (open = true)")
            return None
        parsed = _value_list(f"{path}.values", decl.get("values"), errors)
        return Feature(name, "categorical", parsed[1], parsed[0]) if parsed else None
    levels = decl.get("max_levels", DEFAULT_OPEN_LEVELS)
    if not isinstance(levels, int) or isinstance(levels, bool) or not 1 <= levels <= MAX_LEVELS:
        errors.add(f"{path}.max_levels", f"expected an integer from 1 to {MAX_LEVELS}")
        return None
    seeds: tuple[Value, ...] = ()
    dtype: DType = "text"
    if "values" in decl:
        parsed = _value_list(f"{path}.values", decl["values"], errors)
        if parsed is None:
            return None
        seeds, dtype = parsed
        if dtype not in ("text", "integer"):
            errors.add(f"{path}.values", "an open category's values are text or integers")
            return None
        if len(seeds) > levels:
            errors.add(
                f"{path}.values",
                f"lists {len(seeds)} values, more than max_levels ({levels})",
            )
            return None
        too_long = [v for v in seeds if isinstance(v, str) and len(v) > MAX_OPEN_TEXT]
        if too_long:
            errors.add(f"{path}.values", f"values are at most {MAX_OPEN_TEXT} characters")
            return None
    return Feature(name, "categorical", dtype, seeds, open=True, max_levels=levels)


def _check_names(raw: _Spec, errors: _Errors) -> None:
    seen: dict[str, str] = {}
    groups = (
        ("knobs", raw.knobs),
        ("context", raw.context),
        ("skeleton.fixed", raw.skeleton.fixed),
        ("signals", raw.signals),
    )
    for section, names in groups:
        for name in names:
            path = f"{section}.{name}"
            if not NAME_PATTERN.match(name):
                errors.add(path, "names must be lower_snake_case identifiers (a-z, 0-9, _)")
            elif name in RESERVED_NAMES:
                errors.add(path, f"{name!r} is reserved; choose another name")
            elif name in seen:
                errors.add(path, f"{name!r} is already declared in {seen[name]}")
            seen.setdefault(name, section)


def _parse_signals(raw: _Spec, taken: set[str], errors: _Errors) -> dict[str, SignalDef]:
    signals: dict[str, SignalDef] = {}
    for name, (combine, kind) in BUILTIN_SIGNALS.items():
        if name not in taken:
            signals[name] = SignalDef(name, combine, kind)
    for name, decl in raw.signals.items():
        if isinstance(decl, str):
            signals[name] = SignalDef(name, decl, BUILTIN_SIGNALS.get(name, ("last", "number"))[1])
        else:
            if decl.kind == "text" and decl.combine not in ("last", "first"):
                errors.add(f"signals.{name}.combine", "text signals combine by last or first")
            if decl.min is not None and decl.max is not None and decl.min > decl.max:
                errors.add(f"signals.{name}", "min must not exceed max")
            lo = None if decl.min is None else float(decl.min)
            hi = None if decl.max is None else float(decl.max)
            signals[name] = SignalDef(name, decl.combine, decl.kind, lo, hi)
    try:
        node = parse(raw.reward.formula)
        for col in node.find_all(exp.Column):
            if col.name not in signals and col.name not in taken and NAME_PATTERN.match(col.name):
                signals[col.name] = SignalDef(col.name)
    except ExpressionError:
        pass  # reported by _parse_reward
    return signals


def _parse_reward(raw: _Reward, signals: Mapping[str, SignalDef], errors: _Errors) -> Reward:
    numeric = [n for n, s in signals.items() if s.kind == "number"]
    names: tuple[str, ...] = ()
    try:
        node = check_reward_formula(raw.formula, numeric)
        names = tuple(dict.fromkeys(c.name for c in node.find_all(exp.Column)))
    except ExpressionError as err:
        errors.add("reward.formula", f"{raw.formula!r} {err}")
    seconds = _duration("reward.window", raw.window, errors)
    missing = None if raw.missing == "pending" else float(raw.missing)
    return Reward(raw.formula, seconds, missing, names)


def duration(text: str, field: str = "window") -> float:
    """Seconds in a duration such as ``30m``, ``12h``, ``7d`` or ``2w``; raises
    :class:`~flywheel.errors.InvalidInputError` naming ``field`` otherwise."""
    errors = _Errors(None)
    seconds = _duration(field, text, errors)
    if errors.items:
        raise InvalidInputError(field, errors.items[0].message)
    return seconds


def _duration(path: str, text: str, errors: _Errors) -> float:
    match = _WINDOW.match(text)
    if not match:
        errors.add(path, f"{text!r} is not a duration like 30m, 12h, 7d or 2w")
        return 0.0
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        errors.add(path, "must be longer than zero")
    elif seconds > MAX_DURATION:
        errors.add(path, "must be at most 100 years")
    return seconds


def _parse_learn(
    raw: _Learn, knobs: Mapping[str, Any], context: Mapping[str, Any], errors: _Errors
) -> Learn:
    interactions: str | tuple[tuple[str, str], ...]
    if isinstance(raw.interactions, str):
        interactions = raw.interactions
    else:
        pairs = []
        for i, text in enumerate(raw.interactions):
            names = [n.strip() for n in re.split(r"[*×]", text) if n.strip()]
            path = f"learn.interactions[{i}]"
            if len(names) != 2:
                errors.add(path, f"{text!r} is not a pair like 'opening_type * twist_count'")
            elif not any(n in knobs for n in names):
                errors.add(path, f"{text!r} must involve at least one knob")
            elif unknown := [n for n in names if n not in knobs and n not in context]:
                errors.add(path, f"{unknown[0]!r} is not a knob or context feature")
            elif names[0] == names[1]:
                errors.add(path, f"{text!r} pairs a factor with itself")
            else:
                pairs.append((names[0], names[1]))
        interactions = tuple(pairs)
    half_life = None
    if raw.half_life not in ("auto", "off"):
        half_life = _duration("learn.half_life", raw.half_life, errors)
    every = None if raw.every is None else _duration("learn.every", raw.every, errors)
    return Learn(
        interactions=interactions,
        half_life_seconds=half_life,
        forget_auto=raw.half_life == "auto",
        online=raw.online,
        online_rows=raw.online_rows,
        online_seconds=_duration("learn.online_interval", raw.online_interval, errors),
        every_seconds=every,
        after_rows=raw.after,
        link=raw.link,
        empirical_bayes=raw.empirical_bayes,
        explore_floor=raw.explore_floor,
        explore_cap=raw.explore_cap,
        explore_spread=raw.explore_spread,
        explore_tails=raw.explore_tails,
        sampling=raw.sampling,
        default_advantage=raw.default_advantage,
        draws=raw.draws,
        context_bins=raw.context_bins,
        min_rows=raw.min_rows,
        engine=raw.engine,
        spark=_spark_settings(raw.spark, errors),
    )


def _spark_settings(raw: Mapping[str, str | int | float | bool], errors: _Errors) -> dict[str, str]:
    """``[learn.spark]``: Spark's own settings by their names (``master`` for
    ``spark.master``), as the text Spark takes (``local[2]`` unless told)."""
    settings = {"spark.master": "local[2]"}
    for key, value in raw.items():
        name = "spark.master" if key == "master" else key
        if not name.startswith("spark."):
            errors.add(f"learn.spark.{key}", "is not a Spark setting (master, or spark.*)")
            continue
        settings[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return settings


def _parse_quality(
    raw: _Quality,
    knobs: Sequence[Knob],
    context: Sequence[Feature],
    signals: Mapping[str, SignalDef],
    errors: _Errors,
    skeleton: Mapping[str, str] | None = None,
) -> Quality:
    types: dict[str, str] = {f.name: SQL_TYPE[f.dtype] for f in context}
    types.update({k.name: SQL_TYPE[k.dtype] for k in knobs})
    types.update({n: "VARCHAR" if s.kind == "text" else "DOUBLE" for n, s in signals.items()})
    types["reward"] = "DOUBLE"
    rules: dict[str, str] = {}
    for i, text in enumerate(raw.rules):
        name = " ".join(text.split())
        try:
            rules[name] = check_quality_rule(text, types)
        except ExpressionError as err:
            errors.add(f"quality.rules[{i}]", f"{text!r} {err}")
    for name in raw.required:
        if name not in signals:
            errors.add(f"quality.required.{name}", "is not a signal")
        else:
            rules[f"{name} is required"] = f"{quote_name(name)} IS NOT NULL"
    numeric = {n for n, t in types.items() if t in ("DOUBLE", "BIGINT")}
    for name, bounds in raw.ranges.items():
        if name not in types:
            errors.add(f"quality.ranges.{name}", "is not a signal, knob or context feature")
        elif name not in numeric:
            errors.add(f"quality.ranges.{name}", "is not numeric")
        elif len(bounds) != 2 or bounds[0] > bounds[1]:
            errors.add(f"quality.ranges.{name}", "expected [low, high] with low <= high")
        else:
            lo, hi = (float(b) for b in bounds)
            rules[f"{name} in [{lo:g}, {hi:g}]"] = f"{quote_name(name)} BETWEEN {lo!r} AND {hi!r}"
    for name in raw.unique:
        if name not in types and name != "unit":
            errors.add(f"quality.unique.{name}", "is not a knob, context feature or unit")
    return Quality(rules, tuple(raw.required), tuple(raw.unique), dict(skeleton or {}))


def _parse_import(
    raw: _Import,
    knobs: Sequence[Knob],
    context: Sequence[Feature],
    signals: Mapping[str, SignalDef],
    errors: _Errors,
) -> Import:
    targets = {k.name for k in knobs} | {f.name for f in context} | set(signals)
    for column, target in raw.columns.items():
        if target not in targets:
            errors.add(
                f"import.columns.{column}", f"{target!r} is not a knob, context feature or signal"
            )
    window = None if raw.window is None else _duration("import.window", raw.window, errors)
    return Import(
        dict(raw.columns), raw.key, raw.time, raw.unit, window, raw.propensity, raw.policy
    )


def _parse_traces(
    raw: _Traces,
    knobs: Sequence[Knob],
    context: Sequence[Feature],
    signals: Mapping[str, SignalDef],
    errors: _Errors,
) -> Traces:
    targets = {k.name for k in knobs} | {f.name for f in context} | set(signals) | {"unit"}
    for key, target in raw.map.items():
        path = f'traces.map."{key}"'
        if not key.strip():
            errors.add(path, "an attribute key must not be empty")
        elif key.startswith("flywheel."):
            errors.add(path, "flywheel.* attributes map by convention; map other keys")
        elif target not in targets:
            errors.add(path, f"{target!r} is not a knob, context feature, signal or unit")
    return Traces(dict(raw.map))


def _parse_seatbelt(raw: _Seatbelt, legacy_limit: float | None, errors: _Errors) -> Seatbelt:
    """``[quality] max_failure_rate``, the limit's earlier name, still counts where
    ``[seatbelt] max_quarantined`` is not given."""
    same = raw.model_dump(exclude={"halt_on", "period", "stale_after", "max_quarantined"})
    limit = raw.max_quarantined if raw.max_quarantined is not None else legacy_limit
    return Seatbelt(
        **same,
        max_quarantined=0.05 if limit is None else limit,
        halt_on=tuple(raw.halt_on),
        period_seconds=_duration("seatbelt.period", raw.period, errors),
        stale_after_seconds=_duration("seatbelt.stale_after", raw.stale_after, errors),
    )


def _parse_archive(raw: _Archive | None, base_dir: Path, errors: _Errors) -> Archive | None:
    if raw is None:
        return None
    url = raw.url.strip()
    scheme = urlsplit(url).scheme
    if not url:
        errors.add("storage.archive.url", "is empty; give a folder or an object-store URL")
    elif scheme == "file":
        url = urlsplit(url).path
    elif len(scheme) <= 1:  # a path (a Windows drive letter is not a scheme)
        path = Path(url).expanduser()
        url = str(path if path.is_absolute() else base_dir / path)
    after = None if raw.after is None else _duration("storage.archive.after", raw.after, errors)
    return Archive(url, after)


def _parse_alerts(raw: _Alerts, errors: _Errors) -> Alerts:
    url = raw.webhook
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            errors.add("alerts.webhook", f"{url!r} is not an http:// or https:// URL")
    return Alerts(url, raw.retries, _duration("alerts.timeout", raw.timeout, errors))


def _parse_triggers(raw: _Triggers, signals: Mapping[str, SignalDef], errors: _Errors) -> Triggers:
    found = raw.satisfaction
    if found is None:
        return Triggers()
    path = "triggers.satisfaction"
    signal = signals.get(found.signal)
    if signal is None:
        errors.add(
            f"{path}.signal",
            f"{found.signal!r} is not a signal of this spec (built in, declared under"
            " [signals] or named by the reward formula)",
        )
    elif signal.kind != "number":
        errors.add(f"{path}.signal", f"{found.signal!r} is a text signal; the mean needs numbers")
    seconds = _duration(f"{path}.window", found.window, errors)
    satisfaction = Satisfaction(
        found.signal, float(found.below), found.window, seconds, found.action, found.min_count
    )
    return Triggers(satisfaction)


def _parse_default(
    decl: Mapping[str, Scalar] | None, knobs: Sequence[Knob], declared: set[str], errors: _Errors
) -> dict[str, Value]:
    if decl is None:
        return {}
    default: dict[str, Value] = {}
    for knob in knobs:
        if knob.name not in decl:
            errors.add(f"skeleton.default.{knob.name}", "is missing; the default names every knob")
            continue
        value = decl[knob.name]
        if knob.dtype == "number" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not knob.accepts(value):
            errors.add(
                f"skeleton.default.{knob.name}",
                f"{value!r} is not one of {list(knob.values)}",
            )
        default[knob.name] = value
    for name in decl:
        if name not in declared:
            errors.add(f"skeleton.default.{name}", "is not a knob")
    return default


def _build_space(
    knobs: Sequence[Knob],
    rules: Sequence[Rule],
    context: Sequence[Feature],
    default: dict[str, Value],
    errors: _Errors,
) -> Space | None:
    """Enumerate the allowed combinations; the rules must leave something to serve and the
    default (filled with the first allowed combination when not given) must obey them."""
    try:
        space = Space([Dimension(k.name, k.values) for k in knobs], rules)
    except ValueError as err:
        errors.add("knobs", str(err))
        return None
    if len(space) == 0:
        errors.add("skeleton.rules", "exclude every combination of knob values")
        return None
    # an open feature has no list of values to enumerate: the rules reading it are checked
    # per context as decisions come
    categorical = {f.name: f.values for f in context if f.listed}
    assignments = space.context_assignments(categorical) if space.context_rules else [{}]
    for ctx in itertools.islice(assignments, 10_000):
        if len(space.allowed(ctx)) == 0:
            where = ", ".join(f"{k} = {v!r}" for k, v in ctx.items())
            errors.add("skeleton.rules", f"exclude every combination when {where}")
            return None
    if not default:
        rows = space.allowed(assignments[0]) if assignments else range(len(space))
        default.update(space.params(int(rows[0])))
        return space
    row = space.row_of(default)
    if row is None:
        errors.add("skeleton.default", "breaks a skeleton rule")
        return None
    for ctx in itertools.islice(assignments, 10_000):
        if row not in space.allowed(ctx):
            where = ", ".join(f"{k} = {v!r}" for k, v in ctx.items())
            errors.add("skeleton.default", f"breaks a skeleton rule when {where}")
            return None
    return space
