"""The one written form of Flywheel's queries (DuckDB's SQL), translated for other engines.

Every query is written once, in DuckDB's dialect. sqlglot translates it; :func:`rewrite` adds
what sqlglot leaves to us so that every engine gives DuckDB's answer:

- ``arg_max(x, y)`` skips rows where ``x`` or ``y`` is NULL in DuckDB; the engines' ``max_by``
  does not, so the condition is added to its ``FILTER`` (PostgreSQL has no ``max_by``: an
  ordered ``array_agg`` instead);
- ``epoch(ts)`` keeps its microseconds (Spark's ``unix_timestamp`` drops them);
- ids are UUIDs in DuckDB and PostgreSQL, text elsewhere: ``CAST(x AS UUID)`` is dropped;
- booleans reach numbers through integers (PostgreSQL, BigQuery and Snowflake cast them to
  integers only);
- Trino's intervals stop at milliseconds: the attribution window is given in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, cast, get_args

import sqlglot
from sqlglot import exp

Dialect = Literal["duckdb", "postgres", "spark", "snowflake", "bigquery", "trino"]
DIALECTS: tuple[str, ...] = get_args(Dialect)

_NO_FILTER = ("snowflake", "bigquery")  # no ``FILTER`` clause on aggregates
_UNIX_MICROS = {  # microseconds since the epoch, as each engine says it
    "spark": "unix_micros({})",
    "bigquery": "UNIX_MICROS({})",
    "snowflake": "DATE_PART(EPOCH_MICROSECOND, {})",
}


def rewrite(tree: exp.Expr, dialect: str) -> exp.Expr:
    """``tree`` (parsed as DuckDB's SQL) with DuckDB's meaning kept in ``dialect``."""
    if dialect == "duckdb":
        return tree
    if dialect == "postgres":
        return tree.transform(ordered_array_agg).transform(boolean_to_number)
    tree = tree.transform(_max_by_skips_nulls).transform(_no_uuid).transform(boolean_to_number)
    if dialect == "trino":
        tree = tree.transform(_seconds_interval)
    if dialect in _NO_FILTER:
        tree = tree.transform(_conditional_max_by)
    if dialect in _UNIX_MICROS:
        tree = tree.transform(lambda node: _epoch(node, _UNIX_MICROS[dialect]))
    return tree


def translate(
    duckdb_sql: str, dialect: str, params: Mapping[str, Any] | None = None, pretty: bool = False
) -> str:
    """DuckDB SQL in ``dialect``; with ``params``, each ``$name`` replaced by its value as a
    literal (a runnable query), else left as the dialect's named parameter."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r} (one of {', '.join(DIALECTS)})")
    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
    if params is not None:
        tree = tree.transform(lambda node: _literal(node, params))
    return rewrite(tree, dialect).sql(dialect=dialect, pretty=pretty)


def _literal(node: exp.Expression, params: Mapping[str, Any]) -> exp.Expression:
    if not isinstance(node, exp.Placeholder) or not node.name:
        return node
    if node.name not in params:
        raise KeyError(f"no value for the parameter ${node.name}")
    value = params[node.name]
    if isinstance(value, datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), exp.DataType.Type.TIMESTAMPTZ)
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(repr(value))
    if value is None:
        return exp.null()
    return exp.Literal.string(str(value))


def _max_by_skips_nulls(node: exp.Expression) -> exp.Expression:
    """``arg_max(x, y) [FILTER (WHERE c)]`` → ``… FILTER (WHERE x IS NOT NULL AND y IS NOT
    NULL [AND c])``: DuckDB's meaning in engines whose ``max_by`` keeps NULLs."""
    inner = node.this if isinstance(node, exp.Filter) else node
    if not isinstance(inner, exp.ArgMax | exp.ArgMin):
        return node
    condition = _both_known(inner)
    if isinstance(node, exp.Filter):
        condition = exp.and_(condition, node.expression.this.copy())
    return exp.Filter(this=inner.copy(), expression=exp.Where(this=condition))


def _conditional_max_by(node: exp.Expression) -> exp.Expression:
    """``max_by(x, y) FILTER (WHERE c)`` → ``max_by(CASE WHEN c THEN x END, CASE WHEN c THEN
    y END)`` where there is no ``FILTER``: the condition must hold on the key too, or the row
    with the greatest key overall (another signal's) would be taken."""
    if not isinstance(node, exp.Filter) or not isinstance(node.this, exp.ArgMax | exp.ArgMin):
        return node
    condition = node.expression.this
    inner = node.this

    def when(value: exp.Expression) -> exp.Expression:
        return exp.Case(ifs=[exp.If(this=condition.copy(), true=value.copy())])

    return inner.__class__(this=when(inner.this), expression=when(inner.expression))


def _both_known(aggregate: exp.ArgMax | exp.ArgMin) -> exp.Condition:
    return exp.and_(
        exp.Not(this=exp.Is(this=aggregate.this.copy(), expression=exp.null())),
        exp.Not(this=exp.Is(this=aggregate.expression.copy(), expression=exp.null())),
    )


def _seconds_interval(node: exp.Expression) -> exp.Expression:
    """``INTERVAL 'n' MICROSECONDS`` as seconds (Trino's intervals stop at milliseconds)."""
    unit = node.args.get("unit") if isinstance(node, exp.Interval) else None
    if unit is None or not unit.name.upper().startswith("MICROSECOND"):
        return node
    seconds = int(node.this.name) / 1e6
    return exp.Interval(this=exp.Literal.string(f"{seconds:.6f}"), unit=exp.var("SECOND"))


def _no_uuid(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.UUID):
        return cast(exp.Expression, node.this)
    return node


def _epoch(node: exp.Expression, micros: str) -> exp.Expression:
    if not isinstance(node, exp.TimeToUnix):
        return node
    column = node.this.sql()
    return cast(exp.Expression, sqlglot.parse_one(f"({micros.format(column)} / 1000000.0)"))


def ordered_array_agg(node: exp.Expression) -> exp.Expression:
    """``arg_max(x, y) [FILTER (WHERE c)]`` → ``(array_agg(x ORDER BY y DESC) FILTER (WHERE
    x IS NOT NULL AND y IS NOT NULL [AND c]))[1]``: DuckDB's meaning, NULLs skipped."""
    inner = node.this if isinstance(node, exp.Filter) else node
    if not isinstance(inner, exp.ArgMax | exp.ArgMin):
        return node
    value, key = inner.this, inner.expression
    ordered = exp.Order(
        this=value.copy(),
        expressions=[exp.Ordered(this=key.copy(), desc=isinstance(inner, exp.ArgMax))],
    )
    condition = _both_known(inner)
    if isinstance(node, exp.Filter):
        condition = exp.and_(condition, node.expression.this.copy())
    aggregate = exp.Filter(this=exp.ArrayAgg(this=ordered), expression=exp.Where(this=condition))
    return exp.Bracket(
        this=exp.Paren(this=aggregate), expressions=[exp.Literal.number(1)], offset=1
    )


def boolean_to_number(node: exp.Expression) -> exp.Expression:
    """``CAST(a > b AS DOUBLE)``: DuckDB casts booleans to numbers, PostgreSQL only to integer."""
    if not isinstance(node, exp.Cast) or not node.to.is_type(*exp.DataType.NUMERIC_TYPES):
        return node
    inner = node.this.unnest()
    if not isinstance(inner, exp.Predicate | exp.Connector | exp.Not | exp.Boolean):
        return node
    return exp.cast(exp.cast(node.this, exp.DataType.Type.INT), node.to)
