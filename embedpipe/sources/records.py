"""Rules every record-shaped source shares: which text, which id, which metadata, and how a
record (or a batch of columns) becomes a Document."""

from __future__ import annotations

import base64
import datetime
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import xxhash

from embedpipe.config import SourceConfig
from embedpipe.errors import SourceError
from embedpipe.types import Document, RecordError, reserved_keys

_MISSING = object()
_UNSUPPORTED = object()


@dataclass(frozen=True, slots=True)
class RecordFields:
    """Which fields of a record give a document's text, id and metadata (the source.* settings).

    With `text_template` (e.g. "{title}\n\n{body}") the text is built from those fields instead
    of read from `text_field`.
    """

    text_field: str = "text"
    id_field: str = "id"
    metadata_fields: Sequence[str] | None = None
    text_template: str | None = None

    @classmethod
    def of(cls, cfg: SourceConfig) -> RecordFields:
        """The fields a source configuration names."""
        return cls(cfg.text_field, cfg.id_field, cfg.metadata_fields, cfg.text_template)


def to_document(
    row: Mapping[str, Any], fields: RecordFields, *, source: str, record: str
) -> Document | RecordError:
    """A Document from one record, or a RecordError saying precisely what is wrong with it."""
    if fields.text_template is not None:
        text, problem = render_template(fields.text_template, row)
    else:
        text = row.get(fields.text_field, _MISSING)
        problem = text_problem(text, fields.text_field, row)
    if problem is not None:
        return RecordError(source, record, problem)
    try:
        doc_id = document_id(row.get(fields.id_field), text, fields.id_field)
    except ValueError as exc:
        return RecordError(source, record, str(exc))
    metadata = extract_metadata(row, fields.text_field, fields.metadata_fields)
    problem = reserved_keys(metadata)
    if problem is not None:
        return RecordError(source, record, problem)
    return Document(id=doc_id, text=text, metadata={**metadata, "source": source}, source=source)


def column_rows(columns: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """The records of a batch held as columns ({name: values}), each as {name: value}."""
    names = list(columns)
    for cells in zip(*columns.values(), strict=True):
        yield dict(zip(names, cells, strict=True))


def template_columns(template: str, names: Sequence[str], where: object) -> list[str]:
    """The columns a text_template reads; SourceError naming any the data does not have."""
    fields = template_fields(template)
    missing = [f for f in fields if f not in names]
    if missing:
        raise SourceError(
            f"text_template field(s) {', '.join(map(repr, missing))} not in {where}: its columns"
            f" are {', '.join(names)}; fix source.text_template"
        )
    return fields


def check_text_column(text_field: str, names: Sequence[str], where: object) -> None:
    """SourceError when the data has no column named `text_field`."""
    if text_field not in names:
        raise SourceError(
            f"No text column {text_field!r} in {where}: its columns are {', '.join(names)};"
            " set source.text_field to one of them"
        )


def text_problem(value: Any, field: str, row: Mapping[str, Any]) -> str | None:
    """Why `value` cannot be a document's text, or None when it can."""
    if value is _MISSING:
        present = ", ".join(map(str, row)) or "none"
        return f"no text field {field!r} (fields present: {present})"
    if value is None:
        return f"text field {field!r} is null"
    if not isinstance(value, str):
        return f"text field {field!r} is {kind_of(value)}, not a string"
    if not value.strip():
        return f"text field {field!r} is empty" + (" (whitespace only)" if value else "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a JSON "\ud800" escape
        return (
            f"text field {field!r} is not valid Unicode (lone surrogate at character {exc.start})"
        )
    return None


def template_fields(template: str) -> list[str]:
    """The record fields a text_template reads: "{a}-{b.x}-{c[0]}" -> ["a", "b", "c"]."""
    names = (f for _, f, _, _ in string.Formatter().parse(template) if f)
    return list(dict.fromkeys(re.split(r"[.\[]", name, maxsplit=1)[0] for name in names))


def render_template(template: str, row: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(text, None) for a record rendered through `template`, or (None, why it cannot be)."""
    for name in template_fields(template):
        if name not in row:
            present = ", ".join(map(str, row)) or "none"
            return None, f"text_template field {name!r} is missing (fields present: {present})"
        if row[name] is None:
            return None, f"text_template field {name!r} is null"
    try:
        text = template.format_map(row)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
        return None, f"text_template cannot be filled from this record: {type(exc).__name__}: {exc}"
    if not text.strip():
        return None, "text_template renders empty text"
    return text, None


def document_id(value: Any, text: str, field: str) -> str:
    """The id field as a string (integers allowed), else a hash of the text when it is absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return text_hash(text)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"id field {field!r} is {kind_of(value)}, expected a string or an integer")


def text_hash(text: str) -> str:
    """The id of a document that has none: xxh3-128 of its UTF-8 text."""
    return xxhash.xxh3_128_hexdigest(text.encode())


def extract_metadata(
    row: Mapping[str, Any], text_field: str, fields: Sequence[str] | None
) -> dict[str, Any]:
    """The named fields (those present), or every JSON-representable field but the text."""
    if fields is not None:
        return {name: _forced_json(row[name]) for name in fields if name in row}
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name != text_field:
            converted = json_value(value)
            if converted is not _UNSUPPORTED:
                out[name] = converted
    return out


def json_value(value: Any) -> Any:
    """`value` as JSON-serialisable data (dates as ISO strings), or _UNSUPPORTED."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        items = [json_value(v) for v in value]
        return _UNSUPPORTED if any(v is _UNSUPPORTED for v in items) else items
    if isinstance(value, dict):
        pairs = {str(k): json_value(v) for k, v in value.items()}
        return _UNSUPPORTED if any(v is _UNSUPPORTED for v in pairs.values()) else pairs
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)  # exact, unlike float
    return _UNSUPPORTED


def _forced_json(value: Any) -> Any:
    """Like json_value, for a field the user asked for by name: never dropped."""
    converted = json_value(value)
    if converted is not _UNSUPPORTED:
        return converted
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def kind_of(value: Any) -> str:
    """A value's type in JSON words, for error messages ("a number", "an array")."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
