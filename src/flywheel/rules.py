"""SQL expressions in the spec: skeleton rules and the reward formula.

Expressions are parsed once with sqlglot and checked against the names they may use. Skeleton
rules are then compiled into vectorised NumPy evaluators, so the set of allowed combinations is
computed without a database and the decide path never runs SQL. The reward formula stays SQL: it
is rendered for whichever store evaluates it during alignment.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

Columns = Mapping[str, Any]
"""Column name -> NumPy array (one entry per combination) or a scalar (a context value)."""

Evaluator = Callable[[Columns], Any]


class ExpressionError(ValueError):
    """An expression is not valid SQL, or uses names or constructs it may not."""


_COMPARE: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
}
_ARITH: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.Add: operator.add,
    exp.Sub: operator.sub,
    exp.Mul: operator.mul,
    exp.Div: operator.truediv,
    exp.Mod: operator.mod,
}
_PREDICATES: tuple[type[exp.Expression], ...] = (
    exp.And,
    exp.Or,
    exp.Not,
    exp.In,
    exp.Between,
    exp.Boolean,
    exp.Is,
    *_COMPARE,
)

# Functions a reward formula may call; all exist under these names in DuckDB and PostgreSQL.
REWARD_FUNCTIONS = frozenset(
    {"coalesce", "least", "greatest", "abs", "ln", "exp", "sqrt", "power", "round", "floor", "ceil"}
)


def parse(sql: str) -> exp.Expression:
    """Parse one SQL expression, raising :class:`ExpressionError` with sqlglot's reason."""
    if not sql.strip():
        raise ExpressionError("is empty")
    try:
        # Parsed as a projection, so words that start statements (comment, show) stay columns.
        select = sqlglot.parse_one(f"SELECT {sql}", read="duckdb")
    except ParseError as err:
        raise ExpressionError(
            f"is not a valid SQL expression ({err.errors[0]['description']})"
        ) from None
    clauses = {k for k, v in select.args.items() if v and k != "expressions"}
    if not isinstance(select, exp.Select) or len(select.expressions) != 1 or clauses:
        raise ExpressionError("must be a single expression, not a statement or a list")
    node: exp.Expression = select.expressions[0]
    if isinstance(node, exp.Alias):
        raise ExpressionError("must be a single expression (no AS alias)")
    return node


def column_names(node: exp.Expression) -> list[str]:
    """Every column the expression references, in order of appearance, without duplicates."""
    seen: dict[str, None] = {}
    for col in node.find_all(exp.Column):
        if col.table:
            raise ExpressionError(f"references {col.sql()!r}: qualified names are not allowed")
        seen.setdefault(col.name, None)
    return list(seen)


def check_names(node: exp.Expression, allowed: Iterable[str], what: str) -> list[str]:
    """Return the referenced names, raising if any is not in ``allowed``."""
    allowed = set(allowed)
    names = column_names(node)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ExpressionError(
            f"references {', '.join(map(repr, unknown))}, which is not {what}"
            f" (known: {', '.join(sorted(allowed)) or 'none'})"
        )
    return names


@dataclass(frozen=True)
class Rule:
    """A compiled skeleton rule: a boolean SQL expression over knobs and context."""

    sql: str
    names: tuple[str, ...]
    evaluate: Evaluator

    def holds(self, columns: Columns, size: int) -> np.ndarray:
        """Boolean mask of the combinations (``size`` of them) for which the rule holds."""
        result = np.asarray(self.evaluate(columns), dtype=bool)
        return np.broadcast_to(result, (size,)) if result.ndim == 0 else result


@dataclass(frozen=True)
class Domain:
    """What a name in a rule holds: ``what`` it is (``an integer knob``), its ``dtype`` (text,
    integer, number or boolean) and, when it takes only listed values, those ``values``."""

    what: str
    dtype: str
    values: tuple[Any, ...] | None = None


def compile_rule(
    sql: str, allowed: Iterable[str], domains: Mapping[str, Domain] | None = None
) -> Rule:
    """Parse, check and compile one skeleton rule. With ``domains``, a name compared with a
    value (``=``, ``<>``, ``IN``, ``<``, ``BETWEEN``...) must be compared with one of its type,
    and ``=``, ``<>`` and ``IN`` with one it can take: a rule that names a value a knob does
    not have would silently exclude nothing (or everything)."""
    node = parse(sql)
    while isinstance(node, exp.Paren):
        node = node.this
    if not isinstance(node, _PREDICATES):
        raise ExpressionError(f"is not a boolean expression ({node.sql()!r})")
    names = check_names(node, allowed, "a knob or context feature")
    if domains:
        check_values(node, domains)
    return Rule(sql=sql, names=tuple(names), evaluate=_compile(node))


_NOT_A_VALUE = object()
_LISTED = 20  # values named in an error, at most


def check_values(node: exp.Expression, domains: Mapping[str, Domain]) -> None:
    """Raise :class:`ExpressionError` where a name is compared with a value it cannot hold."""
    for compare in node.find_all(exp.In, exp.Between, *_COMPARE):
        if isinstance(compare, exp.In):
            pairs = [(compare.this, v, True) for v in compare.expressions]
        elif isinstance(compare, exp.Between):
            low, high = compare.args["low"], compare.args["high"]
            pairs = [(compare.this, low, False), (compare.this, high, False)]
        else:
            member = isinstance(compare, exp.EQ | exp.NEQ)
            left, right = compare.this, compare.expression
            pairs = [(left, right, member), (right, left, member)]
        for subject, other, member in pairs:
            if isinstance(subject, exp.Column) and subject.name in domains:
                _check_value(subject.name, domains[subject.name], _value(other), member)


def _value(node: exp.Expression) -> Any:
    """The Python value of a literal (``'a'``, ``3``, ``-1.5``, ``true``), else a sentinel."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else _number(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        inner = _value(node.this)
        return -inner if isinstance(inner, int | float) else _NOT_A_VALUE
    return _NOT_A_VALUE


def _check_value(name: str, domain: Domain, value: Any, member: bool) -> None:
    if value is _NOT_A_VALUE:
        return
    kind = (
        "text"
        if isinstance(value, str)
        else "boolean"
        if isinstance(value, bool)
        else "integer"
        if isinstance(value, int)
        else "number"
    )
    numbers = ("integer", "number")
    fits = kind == domain.dtype or (kind in numbers and domain.dtype in numbers)
    allowed = "" if domain.values is None else f" ({_listing(domain.values)})"
    if not fits:
        raise ExpressionError(
            f"compares {name}, {domain.what}, with the {kind} {_shown(value)}{allowed}"
        )
    if member and domain.values is not None and value not in domain.values:
        raise ExpressionError(
            f"compares {name} with {_shown(value)}, which is not one of its values{allowed}"
        )


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower()


def _listing(values: tuple[Any, ...]) -> str:
    shown = ", ".join(_shown(v) for v in values[:_LISTED])
    more = f", … {len(values):,} values in all" if len(values) > _LISTED else ""
    return f"allowed: {shown}{more}"


def _compile(node: exp.Expression) -> Evaluator:
    """Turn a sqlglot node into a function over columns (arrays or scalars)."""
    if isinstance(node, exp.Paren):
        return _compile(node.this)
    if isinstance(node, exp.Column):
        name = node.name
        return lambda cols: cols[name]
    if isinstance(node, exp.Literal):
        value: Any = node.this if node.is_string else _number(node.this)
        return lambda _cols: value
    if isinstance(node, exp.Boolean):
        flag = bool(node.this)
        return lambda _cols: flag
    if isinstance(node, exp.Neg):
        inner = _compile(node.this)
        return lambda cols: -inner(cols)
    if isinstance(node, exp.Not):
        inner = _compile(node.this)
        return lambda cols: np.logical_not(inner(cols))
    if isinstance(node, exp.And | exp.Or):
        combine = np.logical_and if isinstance(node, exp.And) else np.logical_or
        left, right = _compile(node.this), _compile(node.expression)
        return lambda cols: combine(left(cols), right(cols))
    if type(node) in _COMPARE:
        op = _COMPARE[type(node)]
        left, right = _compile(node.this), _compile(node.expression)
        return lambda cols: _compare(op, left(cols), right(cols))
    if type(node) in _ARITH:
        op = _ARITH[type(node)]
        left, right = _compile(node.this), _compile(node.expression)
        return lambda cols: op(left(cols), right(cols))
    if isinstance(node, exp.In):
        if node.args.get("query") is not None:
            raise ExpressionError("IN (SELECT ...) is not allowed in a rule")
        subject = _compile(node.this)
        options = [_compile(e) for e in node.expressions]
        return lambda cols: _isin(subject(cols), [o(cols) for o in options])
    if isinstance(node, exp.Between):
        subject, low, high = (
            _compile(node.this),
            _compile(node.args["low"]),
            _compile(node.args["high"]),
        )
        return lambda cols: np.logical_and(
            _compare(operator.ge, subject(cols), low(cols)),
            _compare(operator.le, subject(cols), high(cols)),
        )
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        # Knobs and context features are never NULL, so IS NULL is always false.
        return lambda _cols: False
    raise ExpressionError(f"uses {node.sql()!r}, which rules do not support")


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _compare(op: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    if _is_text(left) != _is_text(right):
        # SQL would fail to compare text with a number; a rule doing so can never hold.
        return False
    return op(left, right)


def _is_text(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "USO"
    return isinstance(value, str)


def _isin(subject: Any, options: list[Any]) -> Any:
    result: Any = False
    for option in options:
        result = np.logical_or(result, _compare(operator.eq, subject, option))
    return result


def check_reward_formula(sql: str, signals: Iterable[str]) -> exp.Expression:
    """Validate a reward formula: arithmetic over signal names and a few SQL functions."""
    node = parse(sql)
    _check_calls(node, REWARD_FUNCTIONS)
    for forbidden in (exp.Subquery, exp.Select, exp.Star):
        if node.find(forbidden) is not None:
            raise ExpressionError("may not contain subqueries or *")
    check_names(node, signals, "a signal")
    return node


_NOT_CALLS = (exp.Connector, exp.Binary, exp.Unary, exp.Cast, exp.Case, exp.If, exp.Coalesce)
"""Nodes sqlglot may class as functions that are operators or allowed constructs (``AND``,
``OR``, ``NOT`` and arithmetic are functions in some sqlglot versions)."""


def _check_calls(node: exp.Expression, allowed: frozenset[str] | set[str]) -> None:
    for func in node.find_all(exp.Func):
        if isinstance(func, _NOT_CALLS):
            continue
        name = (func.sql_name() if not isinstance(func, exp.Anonymous) else func.name).lower()
        if name not in allowed:
            raise ExpressionError(
                f"calls {name}(), which is not allowed"
                f" (allowed: {', '.join(sorted(allowed))}, CASE and CAST)"
            )


def referenced_signals(sql: str) -> list[str]:
    """Signal names a reward formula uses (parsing only; no validation)."""
    return column_names(parse(sql))


SQL_TYPE = {"text": "VARCHAR", "integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN"}
"""The SQL type of each spec dtype."""

# Functions a quality rule may call, beyond the reward formula's: text checks.
QUALITY_FUNCTIONS = REWARD_FUNCTIONS | {"lower", "upper", "length", "trim"}


def quote_name(name: str) -> str:
    """``name`` as a quoted SQL identifier (any ``"`` doubled): a column in every statement
    and dialect, whatever keyword or function it spells. Every generated statement quotes the
    spec's names with this."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a SQL string literal (any ``'`` doubled), in every dialect."""
    return "'" + text.replace("'", "''") + "'"


def own_column(name: str) -> str:
    """The name of a column a generated statement adds beside the spec's columns (``#n``). A
    ``#`` cannot appear in a knob, feature or signal name, so the two never collide; quote it
    with :func:`quote_name` in SQL and read the result's column by this name."""
    return f"#{name}"


def beside(name: str, taken: Iterable[str]) -> str:
    """The name of a result's own column (``failed``, ``expected``) shown beside the spec's:
    ``name`` itself, or ``#name`` when a knob, feature or signal is called that."""
    return own_column(name) if name in set(taken) else name


def check_quality_rule(sql: str, types: Mapping[str, str]) -> str:
    """Validate a quality rule, a boolean SQL condition over the columns in ``types`` (name ->
    SQL type), and return it as DuckDB SQL. The rule is bound against an empty table of those
    types, so type errors (``stage > 5`` on text) surface at load time, not at learn time."""
    node = parse(sql)
    inner = node
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if not isinstance(inner, _PREDICATES):
        raise ExpressionError(f"is not a boolean condition ({node.sql()!r})")
    for forbidden in (exp.Subquery, exp.Select, exp.Star):
        if node.find(forbidden) is not None:
            raise ExpressionError("may not contain subqueries or *")
    _check_calls(node, QUALITY_FUNCTIONS)
    check_names(node, types, "a knob, context feature, signal or reward")
    rendered = node.sql(dialect="duckdb", identify=True)  # names quoted: keywords stay columns
    _bind(rendered, types)
    return rendered


def _bind(sql: str, types: Mapping[str, str]) -> None:
    import duckdb  # the store's engine; imported here so rules stay importable without it

    columns = ", ".join(f"CAST(NULL AS {t}) AS {quote_name(n)}" for n, t in types.items())
    try:
        with duckdb.connect() as con:
            con.execute(f"SELECT CAST(({sql}) AS BOOLEAN) FROM (SELECT {columns}) WHERE false")
    except duckdb.Error as err:
        reason = str(err).splitlines()[0].split(": ", 1)[-1]
        raise ExpressionError(f"cannot be evaluated: {reason}") from None
