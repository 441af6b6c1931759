"""Spark as the engine of a learn cycle's heavy part: alignment and cells, in Spark SQL.

``[learn] engine = "spark"``: the cycle's one aggregation (:func:`flywheel.learn.sql.cells_sql`,
which holds the alignment) runs on Spark over the warm tier's Parquet files and the hot rows
the store holds, each read as one table; the fit runs on the driver, on the cells, as with
any other engine. The query is the one written form, translated by
:mod:`flywheel.store.dialects`, so Spark's answer is DuckDB's (the conformance tests say so).

Settings come from ``[learn.spark]`` (``master``, any ``spark.*``); the session is started
once per process and settings, with the session time zone in UTC.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from flywheel.errors import StoreError
from flywheel.store.base import TIMESTAMP, Tables, conform, schema_of
from flywheel.store.dialects import translate
from flywheel.store.warm import ARCHIVED, VIEWS, Manifest, Tiered, events_read, tables_read

_SESSIONS: dict[tuple[tuple[str, str], ...], Any] = {}
_STARTING = threading.Lock()
_QUERYING = threading.Lock()


def session(settings: Mapping[str, str]) -> Any:
    """The Spark session for ``settings`` (started on first use)."""
    key = tuple(sorted(settings.items()))
    with _STARTING:
        if key not in _SESSIONS:
            try:
                from pyspark.sql import SparkSession
            except ImportError:
                raise StoreError(
                    'learn.engine: "spark" needs pyspark; install flywheel[spark]'
                ) from None
            builder = SparkSession.builder.appName("flywheel")
            for name, value in {
                "spark.sql.session.timeZone": "UTC",
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                # no spark-warehouse folder where the process happens to run
                "spark.sql.warehouse.dir": tempfile.mkdtemp(prefix="flywheel-spark-"),
                "spark.sql.execution.arrow.pyspark.enabled": "true",
                **settings,
            }.items():
                builder = builder.config(name, value)
            started = builder.getOrCreate()
            started.sparkContext.setLogLevel("ERROR")
            _SESSIONS[key] = started
        return _SESSIONS[key]


class SparkReader:
    """Read queries (DuckDB's SQL) answered by Spark over both tiers of a store."""

    def __init__(self, store: Tiered, tables: Tables, settings: Mapping[str, str]) -> None:
        self.store = store
        self._tables = tables
        self._settings = dict(settings)

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pa.Table:
        if not isinstance(params, Mapping):
            raise StoreError("the Spark engine takes named parameters ($name) only")
        spark = session(self._settings)
        while True:  # an archive that commits meanwhile moves rows: read again
            manifest = self.store.manifest()
            try:
                result = self._run(spark, sql, params, manifest)
            except StoreError:
                if self.store.manifest() != manifest:
                    continue  # a forget replaced files meanwhile
                raise
            if self.store.manifest() == manifest:
                return _utc(result)

    def _run(
        self, spark: Any, sql: str, params: Mapping[str, Any], manifest: Manifest | None
    ) -> pa.Table:
        with _QUERYING:  # the views are the session's: one query at a time
            for table in tables_read(sql):
                frame = spark.createDataFrame(self._hot(table))
                files = self.store.warm_files(table, manifest) if table in ARCHIVED else []
                if files:  # read as the hot rows' columns: a file older than one is null there
                    warm = spark.read.schema(frame.schema).parquet(*files)
                    frame = frame.unionByName(warm, allowMissingColumns=True)
                frame.createOrReplaceTempView(table)
            for view in events_read(sql) & VIEWS.keys():
                body = VIEWS[view]
                spark.sql(
                    translate(body.format(**{t: t for t in ARCHIVED}), "spark")
                ).createOrReplaceTempView(view)
            try:
                result: pa.Table = spark.sql(translate(sql, "spark"), args=dict(params)).toArrow()
            except Exception as err:  # Spark's own errors (analysis, execution) come as many types
                raise StoreError(f"the Spark engine's query failed: {err}") from err
        return result

    def _hot(self, table: str) -> pa.Table:
        rows = self.store.hot.query(f"SELECT * FROM {table}")
        return conform(rows, schema_of(self._tables, table)) if table in ARCHIVED else rows


def _utc(table: pa.Table) -> pa.Table:
    """Times as the stores give them (UTC, microseconds)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(TIMESTAMP))
    return table
