"""Metadata filters: what a search may be narrowed by, checked once here and pushed down by each sink.

A filter is a mapping, in the `$`-operator form LangChain, Chroma and MongoDB use:

    {"doc_id": "a.md"}                              equal
    {"metadata.pkg": ["numpy", "scipy"]}            any of (`$in`)
    {"metadata.year": {"$gte": 2020, "$lt": 2024}}  a range: $gt $gte $lt $lte
    {"metadata.team": {"$ne": "ops"}}               not equal; `$nin` none of; `$eq`, `$in`
    {"$or": [F, ...]}, {"$and": [F, ...]}, {"$not": F}

Keys side by side must all hold (AND). A key is a payload path every sink keeps (`doc_id`,
`chunk_id`, `chunk_index`, `content_hash`, `start`, `end`) or `metadata.X` (nested:
`metadata.X.Y`); the adapters read a bare key as a metadata field. Equality values are strings,
integers or booleans, matched exactly, as Qdrant's `match` does: a string never equals a number,
and a list in the payload matches when any element does. `$ne`/`$nin` are the negation of that
(a chunk without the field passes them). Range bounds are numbers (compared with numeric payload
values) or ISO 8601 dates/datetimes (compared with payload strings that parse as dates; a time
without a zone is UTC); a payload list is in range when any element is. A filter naming a
metadata field that no chunk of a non-empty index has is an error (`require_fields`), since a
typo would otherwise read as "nothing matches".

Qdrant and Qdrant Edge get it as their own filter (`qdrant_base.native_filter`), Postgres as SQL
over jsonb (`postgres.where_clause`); FAISS and Parquet compute it on their payload table
(`Rows.mask`) with pyarrow compute, each key's values read once per loaded index.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedpipe.errors import ConfigError

Filter = Mapping[str, Any]
Scalar = str | int | bool
Bound = int | float | dt.datetime
TOP_LEVEL = ("doc_id", "chunk_id", "chunk_index", "content_hash", "start", "end")
INTEGER_KEYS = ("chunk_index", "start", "end")
METADATA = "metadata."
INTEGER = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
KEYS_HELP = f"{', '.join(TOP_LEVEL)} or metadata.NAME"
RANGES = ("gt", "gte", "lt", "lte")
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte")
LOGICAL = ("$and", "$or", "$not")
SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "in", "nin": "not in"}


@dataclass(frozen=True, slots=True)
class Condition:
    """The payload at `key` (a dotted path) compared with `values`: `in` (equals one of them),
    `nin` (equals none), or a range operator (gt, gte, lt, lte) against its one bound."""

    key: str
    values: tuple[Any, ...]
    op: str = "in"

    def by_type(self) -> dict[type, list[Scalar]]:
        """The values grouped by type (bool, int, str): what a typed match takes at once."""
        groups: dict[type, list[Scalar]] = {}
        for value in self.values:
            groups.setdefault(type(value), []).append(value)
        return groups

    @property
    def bound(self) -> Bound:
        """A range condition's bound: a number or an aware UTC datetime."""
        value: Bound = self.values[0]
        return value

    @property
    def is_date(self) -> bool:
        return self.op in RANGES and isinstance(self.values[0], dt.datetime)


@dataclass(frozen=True, slots=True)
class All:
    """Every part holds."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one part holds."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """The part does not hold."""

    part: Expr


Expr = Condition | All | AnyOf | Not


def parse(filter: Filter | None) -> Expr | None:
    """A filter checked and normalised as an expression (None for no filter).

    Raises ConfigError naming the key, operator or value that cannot be matched, and what can.
    """
    if not filter:
        return None
    return _mapping(filter)


def conditions(filter: Filter | None) -> tuple[Condition, ...]:
    """A filter of plain conditions (no $or/$not) as its conditions, all of which must hold."""
    expr = parse(filter)
    parts = expr.parts if isinstance(expr, All) else () if expr is None else (expr,)
    if not all(isinstance(p, Condition) for p in parts):
        raise ConfigError("this filter combines conditions with $or/$not: use parse()")
    return tuple(p for p in parts if isinstance(p, Condition))


def _mapping(filter: Any) -> Expr:
    if not isinstance(filter, Mapping):
        raise ConfigError(
            f"a filter is a mapping of payload paths to values, e.g. {{'doc_id': 'a.md'}}; got "
            f"{type(filter).__name__}"
        )
    if not filter:
        raise ConfigError("an empty filter inside $and/$or/$not: give at least one condition")
    parts = [_entry(str(key), value) for key, value in filter.items()]
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _entry(key: str, value: Any) -> Expr:
    if key in LOGICAL:
        if key == "$not":
            inner = All(tuple(map(_mapping, value))) if isinstance(value, list) else None
            return Not(inner or _mapping(value))
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError(f"{key} takes a non-empty list of filters, got {value!r}")
        parts = tuple(_mapping(v) for v in value)
        return parts[0] if len(parts) == 1 else (All(parts) if key == "$and" else AnyOf(parts))
    if key.startswith("$"):
        raise ConfigError(f"unknown filter operator '{key}': use {', '.join(LOGICAL)} to combine")
    _check_key(key)
    if isinstance(value, Mapping):
        if not value:
            raise ConfigError(f"the filter on '{key}' has no operator: use {', '.join(OPERATORS)}")
        parts = tuple(_operator(key, str(op), v) for op, v in value.items())
        return parts[0] if len(parts) == 1 else All(parts)
    return _operator(key, "$in", value)


def _check_key(key: str) -> None:
    if key not in TOP_LEVEL and not (key.startswith(METADATA) and len(key) > len(METADATA)):
        hint = f" (did you mean metadata.{key}?)" if "." not in key else ""
        raise ConfigError(f"cannot filter on '{key}'{hint}: use {KEYS_HELP}")


def _operator(key: str, op: str, value: Any) -> Condition:
    if op not in OPERATORS:
        raise ConfigError(f"unknown operator '{op}' on '{key}': use {', '.join(OPERATORS)}")
    name = op[1:]
    if name in RANGES:
        return Condition(key, (range_bound(key, value),), name)
    values = tuple(value) if isinstance(value, list | tuple | set | frozenset) else (value,)
    if name in ("eq", "ne") and len(values) != 1:
        raise ConfigError(f"{op} on '{key}' takes one value: use $in/$nin for several")
    if not values:
        raise ConfigError(f"the filter on '{key}' lists no value: give one or more")
    for v in values:
        if not isinstance(v, str | int):
            raise ConfigError(
                f"cannot filter '{key}' on {v!r}: values are strings, integers or booleans, "
                "matched exactly (ranges take numbers and dates)"
            )
    return Condition(key, values, "nin" if name in ("ne", "nin") else "in")


def range_bound(key: str, value: Any) -> Bound:
    """A range's bound: a number, or an ISO 8601 date/datetime as an aware UTC datetime."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    when = as_datetime(value)
    if when is None:
        raise ConfigError(
            f"cannot compare '{key}' with {value!r}: a range takes a number or an ISO 8601 "
            "date (2024-05-01 or 2024-05-01T12:00:00Z)"
        )
    return when


def as_datetime(value: Any) -> dt.datetime | None:
    """An ISO 8601 date or datetime (string, date or datetime) as an aware UTC datetime."""
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and len(value) >= 10 and value[:4].isdigit():
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def keys(expr: Expr | None) -> list[str]:
    """Every payload path an expression reads, in order, once each."""
    out: dict[str, None] = {}
    stack = [] if expr is None else [expr]
    while stack:
        node = stack.pop(0)
        if isinstance(node, Condition):
            out[node.key] = None
        elif isinstance(node, Not):
            stack.append(node.part)
        else:
            stack.extend(node.parts)
    return list(out)


def require_fields(
    expr: Expr | None,
    has: Callable[[str], bool],
    present: Callable[[], Iterable[str]],
    where: str,
    *,
    empty: Callable[[], bool],
) -> None:
    """Raise when the expression names a metadata field no chunk has (`has(key)` is False for
    `metadata.X`), naming it and the fields that are there (`present()`, metadata.X paths). An
    empty index (`empty()`) has no field and answers every filter with nothing, as before."""
    names = [k for k in keys(expr) if k.startswith(METADATA)]
    missing = [k for k in names if not has(k)]
    if missing and not empty():
        fields = sorted(set(present()))
        listed = ", ".join(f.removeprefix(METADATA) for f in fields) or "none"
        raise ConfigError(
            f"no chunk in {where} has the metadata field "
            f"{', '.join(repr(m.removeprefix(METADATA)) for m in missing)} this filter names: "
            f"the metadata fields there are {listed} (besides {', '.join(TOP_LEVEL)})"
        )


def parse_where(items: Sequence[str]) -> dict[str, Any]:
    """`--where` flags as a filter; the flags AND. Each one is

        KEY=V1,V2    equal to one of          KEY!=V1,V2   equal to none of
        KEY>V  KEY>=V  KEY<V  KEY<=V          a range: V a number or an ISO 8601 date
        A|B|...      any of the conditions    !COND        the condition does not hold
        {JSON}       a filter in the $-operator form (see this module)

    A value that reads as an integer or a boolean (`3`, `true`) matches that or the string, since
    the command line cannot tell which the payload holds.
    """
    parts = [_where_item(item) for item in items]
    out: dict[str, Any] = parts[0] if len(parts) == 1 else {"$and": parts} if parts else {}
    parse(out)  # check the keys now, before any model loads
    return out


WHERE_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")


def _where_item(item: str) -> dict[str, Any]:
    text = item.strip()
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--where {item!r}: not valid JSON ({exc})") from None
        parse(loaded)
        return dict(loaded)
    if text.startswith("!"):
        return {"$not": _where_item(text[1:])}
    alternatives = [_where_one(part, item) for part in text.split("|")]
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def _where_one(text: str, item: str) -> dict[str, Any]:
    match = WHERE_RE.match(text)
    if match is None or not match.group(3):
        raise ConfigError(
            f"--where {item!r}: write KEY=V1,V2, KEY!=V, KEY>=V (>, <, <=), A|B or !COND "
            f"({KEYS_HELP})"
        )
    key, op, raw = match.groups()
    if op in ("=", "!="):
        values = [v for part in raw.split(",") for v in _typed(part.strip())]
        return {key: {"$in" if op == "=" else "$nin": values}}
    name = {">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}[op]
    number = float(raw) if NUMBER.fullmatch(raw) else None
    bound: Any = int(raw) if INTEGER.fullmatch(raw) else number if number is not None else raw
    return {key: {name: bound}}


def _typed(text: str) -> list[Scalar]:
    """A command-line value and the typed values it may stand for."""
    out: list[Scalar] = [text]
    if text.lower() in ("true", "false"):
        out.append(text.lower() == "true")
    elif INTEGER.fullmatch(text):
        out.append(int(text))
    return out


def payload_matches(payload: Mapping[str, Any], expr: Expr | Sequence[Condition] | None) -> bool:
    """Whether one payload (metadata as a dict) passes the expression (or every condition)."""
    if expr is None:
        return True
    if isinstance(expr, Sequence):
        return all(payload_matches(payload, c) for c in expr)
    if isinstance(expr, All):
        return all(payload_matches(payload, p) for p in expr.parts)
    if isinstance(expr, AnyOf):
        return any(payload_matches(payload, p) for p in expr.parts)
    if isinstance(expr, Not):
        return not payload_matches(payload, expr.part)
    found = _elements(_at(payload, expr.key))
    if expr.op in RANGES:
        return any(_in_range(v, expr) for v in found)
    allowed = {_canonical(v) for v in expr.values}
    hit = any(_canonical(v) in allowed for v in found)
    return hit if expr.op == "in" else not hit


def _in_range(value: Any, cond: Condition) -> bool:
    if cond.is_date:
        have: Any = as_datetime(value) if isinstance(value, str) else None
    else:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        have = value if number else None
    if have is None:
        return False
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    return compare[cond.op](have, cond.bound)


ARROW_COMPARE = {"gt": pc.greater, "gte": pc.greater_equal, "lt": pc.less, "lte": pc.less_equal}
UTC_MICROS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, slots=True)
class Flat:
    """One metadata path's values over a table: every value (a list's elements one by one) as
    a canonical string, as a number (null if it is none) and as a date (null if none), with the
    row each came from."""

    canonical: pa.Array
    numbers: pa.Array
    dates: pa.Array
    rows: np.ndarray


class Rows:
    """A payload table (FAISS sidecar, Parquet data) made filterable: `mask(expr)` says which
    rows pass. Each row's metadata JSON is parsed once per table and each path's values
    flattened once, then cached; the masks are pyarrow compute over those columns."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._parsed: list[Any] | None = None
        self._columns: dict[str, Flat] = {}

    def mask(self, expr: Expr | Sequence[Condition] | None) -> np.ndarray:
        """A boolean row mask: True where the expression (or every condition) holds."""
        n = self.table.num_rows
        if expr is None:
            return np.ones(n, dtype=bool)
        if isinstance(expr, Sequence):
            return self.mask(All(tuple(expr))) if expr else np.ones(n, dtype=bool)
        if isinstance(expr, All):
            keep = np.ones(n, dtype=bool)
            for part in expr.parts:
                keep &= self.mask(part)
            return keep
        if isinstance(expr, AnyOf):
            keep = np.zeros(n, dtype=bool)
            for part in expr.parts:
                keep |= self.mask(part)
            return keep
        if isinstance(expr, Not):
            return ~self.mask(expr.part)
        hit = self._matches(expr)
        return ~hit if expr.op == "nin" else hit

    def has(self, key: str) -> bool:
        """Whether any row has a (non-null) value at a metadata path."""
        return len(self._flat(key).rows) > 0

    def fields(self) -> list[str]:
        """The metadata paths (top level: metadata.X) any row has."""
        names: set[str] = set()
        for meta in self._metadata_dicts():
            if isinstance(meta, Mapping):
                names.update(METADATA + str(k) for k, v in meta.items() if v is not None)
        return sorted(names)

    def _matches(self, cond: Condition) -> np.ndarray:
        """Rows where the condition's positive form (in, or the range) holds."""
        n = self.table.num_rows
        if n == 0:
            return np.zeros(0, dtype=bool)
        if cond.key in TOP_LEVEL:
            return self._top_level(cond)
        flat = self._flat(cond.key)
        if cond.op in RANGES:
            column = flat.dates if cond.is_date else flat.numbers
            bound = pa.scalar(cond.bound, column.type)
            hit = ARROW_COMPARE[cond.op](column, bound).fill_null(False)
        else:
            wanted = pa.array([_canonical(v) for v in cond.values], pa.string())
            hit = pc.is_in(flat.canonical, value_set=wanted)
        selected = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)
        return np.bincount(flat.rows[selected], minlength=n) > 0

    def _top_level(self, cond: Condition) -> np.ndarray:
        n = self.table.num_rows
        column = self.table.column(cond.key)
        if cond.op in RANGES:
            if cond.is_date or not pa.types.is_integer(column.type):
                return np.zeros(n, dtype=bool)
            hit = ARROW_COMPARE[cond.op](column, pa.scalar(cond.bound))
        else:
            wanted = _same_type(column.type, cond.values)
            if not wanted:
                return np.zeros(n, dtype=bool)
            hit = pc.is_in(column, value_set=pa.array(wanted, column.type))
        return np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)

    def _metadata_dicts(self) -> list[Any]:
        if self._parsed is None:
            raw = self.table.column("metadata").to_pylist()
            self._parsed = [json.loads(m) if isinstance(m, str) else m or {} for m in raw]
        return self._parsed

    def _flat(self, key: str) -> Flat:
        """Every row's value(s) at a metadata path, with their row numbers (cached)."""
        if key not in self._columns:
            values: list[Any] = []
            rows: list[int] = []
            for row, meta in enumerate(self._metadata_dicts()):
                found = _elements(_at({"metadata": meta}, key))
                values.extend(found)
                rows.extend([row] * len(found))
            numbers = [
                float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
                for v in values
            ]
            dates = [as_datetime(v) if isinstance(v, str) else None for v in values]
            self._columns[key] = Flat(
                pa.array([_canonical(v) for v in values], pa.string()),
                pa.array(numbers, pa.float64()),
                pa.array(dates, UTC_MICROS),
                np.asarray(rows, np.int64),
            )
        return self._columns[key]


def _same_type(kind: pa.DataType, values: Sequence[Scalar]) -> list[Scalar]:
    """The values a column of `kind` can equal (a string never equals a number)."""
    is_type: Callable[[Any], bool]
    if pa.types.is_integer(kind):
        is_type = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    else:
        is_type = lambda v: isinstance(v, str)  # noqa: E731
    return [v for v in values if is_type(v)]


def _at(payload: Mapping[str, Any], key: str) -> Any:
    """The payload value at a dotted path (None when any step is missing)."""
    value: Any = payload
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _elements(value: Any) -> list[Any]:
    """The values a condition compares with: a list's elements, else the value (none for None)."""
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]


def _canonical(value: Any) -> str:
    """One spelling per typed value: "a" and 1 and true differ, as they do in Qdrant."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
