"""The Source every input kind returns: a re-readable stream of documents and a cheap count."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from embedpipe.types import Document, RecordError


@dataclass
class Source:
    """A stream of documents with an optional cheap count."""

    uri: str
    kind: str  # "dir" | "jsonl" | "parquet" | "hf"
    read: Callable[[], Iterator[Document | RecordError]]
    total: int | None = None  # documents, when cheap to know; None otherwise

    def __iter__(self) -> Iterator[Document | RecordError]:
        return self.read()
