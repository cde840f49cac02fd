"""The Source every input kind returns: a re-readable stream of documents and a cheap count."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from embedpipe.types import Document, RecordError

if TYPE_CHECKING:
    from embedpipe.sources.records import RecordFields
    from embedpipe.sources.storage import StoredObject


@dataclass(frozen=True)
class Files:
    """The files behind a file-based source, for engines that read them themselves (Ray Data).

    `paths` are absolute, in the order the local reader reads them (`names` as it names them
    in errors); `columns` and `rows` (Parquet)
    are the columns to read and each file's row count, so record names ("row N") stay the same.
    """

    root: str
    paths: tuple[str, ...]
    names: tuple[str, ...]  # each file as the local reader names it (a Document's source)
    fields: RecordFields | None = (
        None  # the fields of a record source; None for a directory of documents
    )
    columns: tuple[str, ...] = ()
    rows: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()
    filesystem: Any = None  # the pyarrow filesystem `paths` are on (a bucket); None = local
    skipped: tuple[RecordError, ...] = ()  # listed files left out of `paths`, and why


@dataclass
class Source:
    """A stream of documents with an optional cheap count."""

    uri: str
    kind: str  # "dir" | "jsonl" | "parquet" | "hf"
    read: Callable[[], Iterator[Document | RecordError]]
    total: int | None = None  # documents, when cheap to know; None otherwise
    files: Files | None = None  # set by file-based sources (dir, jsonl, parquet)
    # A bucket's listing (s3://, gs://): each object with its version, in read order, and the
    # same source over some of them (the planner leaves out those unchanged since last run).
    objects: tuple[StoredObject, ...] = ()
    subset: Callable[[Sequence[StoredObject]], Source] | None = None
    # Each object's version as read (filled while it is read; "" when reads saw two): the
    # ledger remembers this, not the listed version, so a rewrite mid-run is read again.
    read_versions: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Document | RecordError]:
        return self.read()
