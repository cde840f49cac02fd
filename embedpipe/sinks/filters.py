"""Metadata filters: what a search may be narrowed by, checked once here and pushed down by each sink.

A filter maps payload paths to a value or a list of values: `{"doc_id": "a.md",
"metadata.pkg": ["numpy", "scipy"]}` keeps the chunks whose doc_id is "a.md" AND whose source
metadata `pkg` is numpy or scipy. Keys are the payload paths every sink keeps (`doc_id`,
`chunk_id`, `chunk_index`, `content_hash`, `start`, `end`) or `metadata.X` (nested:
`metadata.X.Y`). Values are strings, integers or booleans, matched exactly, as Qdrant's `match`
does: a string never equals a number, and a list in the payload matches when any element does.

Qdrant and Qdrant Edge get it as their own filter (`qdrant_base.native_filter`); FAISS and Parquet
match it on their payload table (`Rows.mask`), vectorised, with each key's values read once per
loaded index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedpipe.errors import ConfigError

Filter = Mapping[str, Any]
Scalar = str | int | bool
TOP_LEVEL = ("doc_id", "chunk_id", "chunk_index", "content_hash", "start", "end")
METADATA = "metadata."
INTEGER = re.compile(r"[+-]?[0-9]+")
KEYS_HELP = f"{', '.join(TOP_LEVEL)} or metadata.NAME"


@dataclass(frozen=True, slots=True)
class Condition:
    """The payload at `key` (a dotted path) equals one of `values`."""

    key: str
    values: tuple[Scalar, ...]

    def by_type(self) -> dict[type, list[Scalar]]:
        """The values grouped by type (bool, int, str): what a typed match takes at once."""
        groups: dict[type, list[Scalar]] = {}
        for value in self.values:
            groups.setdefault(type(value), []).append(value)
        return groups


def conditions(filter: Filter | None) -> tuple[Condition, ...]:
    """A filter checked and normalised: one Condition per key (AND), values as a tuple (any of).

    Raises ConfigError naming the key or value that cannot be matched, and the keys that can.
    """
    if not filter:
        return ()
    if not isinstance(filter, Mapping):
        raise ConfigError(
            f"a filter is a mapping of payload paths to values, e.g. {{'doc_id': 'a.md'}}; got "
            f"{type(filter).__name__}"
        )
    return tuple(_condition(str(key), value) for key, value in filter.items())


def _condition(key: str, value: Any) -> Condition:
    if key not in TOP_LEVEL and not (key.startswith(METADATA) and len(key) > len(METADATA)):
        hint = f" (did you mean metadata.{key}?)" if "." not in key else ""
        raise ConfigError(f"cannot filter on '{key}'{hint}: use {KEYS_HELP}")
    values = tuple(value) if isinstance(value, list | tuple | set | frozenset) else (value,)
    if not values:
        raise ConfigError(f"the filter on '{key}' lists no value: give one or more")
    for v in values:
        if not isinstance(v, str | int):
            raise ConfigError(
                f"cannot filter '{key}' on {v!r}: values are strings, integers or booleans, "
                "matched exactly"
            )
    return Condition(key, values)


def parse_where(items: Sequence[str]) -> dict[str, list[Scalar]]:
    """`--where KEY=VALUE` flags as a filter: repeated keys AND, `KEY=V1,V2` any of.

    A value that reads as an integer or a boolean (`3`, `true`) matches that or the string, since
    the command line cannot tell which the payload holds.
    """
    out: dict[str, list[Scalar]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw:
            raise ConfigError(f"--where {item!r}: write KEY=VALUE or KEY=V1,V2 ({KEYS_HELP})")
        values = [v for part in raw.split(",") for v in _typed(part.strip())]
        if key in out:  # the same key twice: both must hold, so only common values can
            common = {_canonical(v) for v in values}
            values = [v for v in out[key] if _canonical(v) in common]
            if not values:
                raise ConfigError(f"--where gives '{key}' twice with no value in common")
        out[key] = values
    conditions(out)  # check the keys now, before any model loads
    return out


def _typed(text: str) -> list[Scalar]:
    """A command-line value and the typed values it may stand for."""
    out: list[Scalar] = [text]
    if text.lower() in ("true", "false"):
        out.append(text.lower() == "true")
    elif INTEGER.fullmatch(text):
        out.append(int(text))
    return out


def payload_matches(payload: Mapping[str, Any], conds: Sequence[Condition]) -> bool:
    """Whether one payload (metadata as a dict) passes every condition."""
    for cond in conds:
        allowed = {_canonical(v) for v in cond.values}
        found = _elements(_at(payload, cond.key))
        if not any(_canonical(v) in allowed for v in found):
            return False
    return True


class Rows:
    """A payload table (FAISS sidecar, Parquet data) made filterable: `mask(conds)` says which
    rows pass. Each metadata key's values are read from the JSON column once, then cached."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._columns: dict[str, tuple[pa.Array, np.ndarray]] = {}

    def mask(self, conds: Sequence[Condition]) -> np.ndarray:
        """A boolean row mask: True where every condition holds."""
        keep = np.ones(self.table.num_rows, dtype=bool)
        for cond in conds:
            keep &= self._matches(cond)
        return keep

    def _matches(self, cond: Condition) -> np.ndarray:
        n = self.table.num_rows
        if cond.key in TOP_LEVEL:
            column = self.table.column(cond.key)
            wanted = _same_type(column.type, cond.values)
            if not wanted or n == 0:
                return np.zeros(n, dtype=bool)
            hit = pc.is_in(column, value_set=pa.array(wanted, column.type))
            return np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        flat, parents = self._metadata(cond.key)
        wanted_set = pa.array([_canonical(v) for v in cond.values], pa.string())
        hit = np.asarray(
            pc.is_in(flat, value_set=wanted_set).to_numpy(zero_copy_only=False), dtype=bool
        )
        return np.bincount(parents[hit], minlength=n) > 0

    def _metadata(self, key: str) -> tuple[pa.Array, np.ndarray]:
        """Every row's value(s) at a metadata path as canonical strings, with their row numbers."""
        if key not in self._columns:
            flat: list[str] = []
            parents: list[int] = []
            for row, raw in enumerate(self.table.column("metadata").to_pylist()):
                meta = json.loads(raw) if isinstance(raw, str) else raw or {}
                found = _elements(_at({"metadata": meta}, key))
                flat.extend(_canonical(v) for v in found)
                parents.extend([row] * len(found))
            self._columns[key] = (pa.array(flat, pa.string()), np.asarray(parents, np.int64))
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
