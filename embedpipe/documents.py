"""Documents as a library caller hands them over: `Document`s, dicts (`{"id", "text",
"metadata"}`), `(id, text)` or `(id, text, metadata)` tuples, or plain strings.

Each item becomes a `Document`, or a `RecordError` that the run counts and skips (a bad record
never stops a run). An item without an id gets the hash of its text, as a source record does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any

from embedpipe.sources.base import Source
from embedpipe.sources.records import document_id
from embedpipe.types import Document, RecordError, reserved_keys

GIVEN = "documents"  # the source named in the errors of items a caller handed over
Item = Document | RecordError | Mapping[str, Any] | tuple[Any, ...] | str


class GivenDocuments:
    """A caller's iterable of items read as documents, lazily, in order (a Source passes as is)."""

    uri = GIVEN

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items
        self.total = len(items) if isinstance(items, Sized) else None

    def __iter__(self) -> Iterator[Document | RecordError]:
        for number, item in enumerate(self.items, start=1):
            yield as_document(item, number)


def given(items: Iterable[Any]) -> Iterable[Document | RecordError]:
    """`items` as documents: a Source (or an already wrapped iterable) unchanged, else wrapped."""
    if isinstance(items, Source | GivenDocuments):
        return items
    return GivenDocuments(items)


def as_document(item: Any, number: int) -> Document | RecordError:
    """One item as a Document, or the RecordError saying why it cannot be one."""
    if isinstance(item, RecordError):
        return item
    if isinstance(item, Document):
        return _checked(item, number)
    try:
        if isinstance(item, str):
            return Document(document_id(None, item, "id"), item)
        if isinstance(item, Mapping):
            return _checked(_from_mapping(item), number)
        if isinstance(item, tuple | list) and len(item) in (2, 3):
            doc_id, text, *rest = item
            return _checked(_document(doc_id, text, rest[0] if rest else None), number)
    except ValueError as exc:
        return RecordError(GIVEN, f"#{number}", str(exc))
    return RecordError(
        GIVEN,
        f"#{number}",
        f"{type(item).__name__} is not a document: give a Document, a dict with 'text' (and "
        "'id', 'metadata'), an (id, text[, metadata]) tuple or a string",
    )


def _from_mapping(item: Mapping[str, Any]) -> Document:
    if "text" not in item:
        raise ValueError(f"no 'text' key (keys: {', '.join(map(str, item)) or 'none'})")
    unknown = set(item) - {"id", "text", "metadata"}
    if unknown:
        raise ValueError(
            f"unknown keys {', '.join(sorted(map(str, unknown)))}: put them under 'metadata'"
        )
    return _document(item.get("id"), item["text"], item.get("metadata"))


def _document(doc_id: Any, text: Any, metadata: Any) -> Document:
    if not isinstance(text, str):
        raise ValueError(f"text is {type(text).__name__}, expected a string")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata is {type(metadata).__name__}, expected a dict")
    return Document(document_id(doc_id, text, "id"), text, dict(metadata or {}))


def _checked(doc: Document, number: int) -> Document | RecordError:
    """The document, or a RecordError when its metadata uses a key embedpipe sets. `source` is
    the caller's to give (where the document came from, as LangChain's loaders set it)."""
    problem = reserved_keys(doc.metadata, allow=("source",))
    return doc if problem is None else RecordError(GIVEN, f"#{number} (id {doc.id!r})", problem)
