"""Sources in a bucket (`s3://`, `gs://`): the kinds a local path can be, read object by object.

A location is listed once: one object (a `.parquet` or JSONL file), or a prefix of Parquet files,
of JSONL files, or of documents (text, Markdown, HTML, PDF; each document's id is its key relative
to the prefix). Include/exclude globs apply to those relative keys. Each object of the listing
keeps its version (ETag), so the planner can leave out those unchanged since the last run before
anything of them is fetched (`Source.subset`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from embedpipe.config import SourceConfig
from embedpipe.errors import NoSourceError, SourceError
from embedpipe.sources.base import Files, Source
from embedpipe.sources.files import DEFAULT_EXTENSIONS, file_document, suffixes
from embedpipe.sources.globs import PathFilter
from embedpipe.sources.jsonl import JSONL_SUFFIXES, parse_jsonl
from embedpipe.sources.parquet import read_rows, select_columns
from embedpipe.sources.records import RecordFields
from embedpipe.sources.storage import Location, Store, StoredObject, reason
from embedpipe.types import Document, RecordError

WHAT = {
    "dir": "documents (source.extensions)",
    "jsonl": "JSON Lines objects (.jsonl, .jsonl.gz)",
    "parquet": ".parquet objects",
}


def open_remote(kind: str | None, uri: str, cfg: SourceConfig) -> Source:
    """A Source over the object or prefix `uri` names; `kind` None = told from the listing."""
    if kind not in (None, *WHAT):
        raise SourceError(f"{kind}: sources are read from a local path only, not from {uri}")
    store = Store(Location.parse(uri), cfg.storage_options.model_dump())
    single, listed = store.objects()
    extensions = cfg.extensions or DEFAULT_EXTENSIONS
    kind = kind or _kind_of(listed, single, extensions, store.uri)
    paths = PathFilter.of(cfg.include, cfg.exclude)
    wanted = [o for o in listed if single or _wanted(kind, o.rel, extensions, paths)]
    if not wanted:
        raise NoSourceError(f"No {WHAT[kind]} under {store.uri}: pass a prefix that holds some")
    named = tuple(dataclasses.replace(o, name=o.rel if kind == "dir" else o.uri) for o in wanted)
    return _source(kind, store, named, RecordFields.of(cfg), footers=False)


def _kind_of(
    listed: Sequence[StoredObject], single: bool, extensions: Sequence[str], uri: str
) -> str:
    """jsonl or parquet for one object by its suffix; for a prefix: documents if it has any, else
    Parquet files if any, else JSONL files."""
    keys = [o.rel.lower() for o in listed if not _hidden(o.rel)]
    if single:
        if keys and keys[0].endswith(JSONL_SUFFIXES):
            return "jsonl"
        if keys and keys[0].endswith(".parquet"):
            return "parquet"
        raise SourceError(
            f"Cannot tell what kind of object {uri} is: pass a .jsonl/.jsonl.gz or .parquet "
            "object, a prefix, or prefix the uri with jsonl:/parquet:"
        )
    if any(k.endswith(suffixes(extensions)) for k in keys):
        return "dir"
    if any(k.endswith(".parquet") for k in keys):
        return "parquet"
    return "jsonl" if any(k.endswith(JSONL_SUFFIXES) for k in keys) else "dir"


def _wanted(kind: str, rel: str, extensions: Sequence[str], paths: PathFilter) -> bool:
    """A listed key the source reads: visible (no `.` segment; for records no `_` one either,
    e.g. `_SUCCESS`), with the kind's suffix, and wanted by the globs."""
    if _hidden(rel) or (kind != "dir" and any(p.startswith("_") for p in rel.split("/"))):
        return False
    wanted = {"dir": suffixes(extensions), "jsonl": JSONL_SUFFIXES, "parquet": (".parquet",)}
    return rel.lower().endswith(wanted[kind]) and paths.wants(rel)


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _source(
    kind: str,
    store: Store,
    objects: tuple[StoredObject, ...],
    fields: RecordFields,
    footers: bool,
) -> Source:
    """The Source over `objects`; with `footers` a Parquet source reads their footers now (its
    row count and the columns Ray reads), else only when each is read."""
    root, fs = store.uri, store.fs
    paths, sizes = tuple(o.path for o in objects), tuple(o.size for o in objects)
    total: int | None = None
    files: Files | None = None
    if kind == "dir":
        read = functools.partial(_documents, store, objects)
        total = len(objects)
        names = tuple(o.rel for o in objects)
        files = Files(root, paths, names, sizes=sizes, filesystem=fs)
    elif kind == "jsonl":
        read = functools.partial(_records, store, objects, fields)
        files = Files(
            root, paths, tuple(o.uri for o in objects), fields, sizes=sizes, filesystem=fs
        )
    else:
        read = functools.partial(_rows, store, objects, fields)
        if footers:
            files, total = _footers(store, objects, fields)

    def subset(keep: Sequence[StoredObject]) -> Source:
        return _source(kind, store, tuple(keep), fields, footers=True)

    return Source(
        uri=root,
        kind=kind,
        read=read,
        total=total,
        files=files,
        objects=objects,
        subset=subset,
        read_versions=store.read_versions,
    )


def _documents(store: Store, objects: Sequence[StoredObject]) -> Iterator[Document | RecordError]:
    for obj in objects:
        try:
            data = store.read_bytes(obj)
        except OSError as exc:
            yield RecordError(store.uri, obj.rel, f"cannot read object: {exc}")
            continue
        yield file_document(store.uri, obj.rel, data)


def _records(
    store: Store, objects: Sequence[StoredObject], fields: RecordFields
) -> Iterator[Document | RecordError]:
    for obj in objects:
        yield from parse_jsonl(store.lines(obj), fields, obj.uri)


def _rows(
    store: Store, objects: Sequence[StoredObject], fields: RecordFields
) -> Iterator[Document | RecordError]:
    for obj in objects:
        opened = functools.partial(_parquet_file, store, obj)
        yield from read_rows(opened, obj.uri, fields, explain=reason)


def _parquet_file(store: Store, obj: StoredObject) -> pq.ParquetFile:
    return pq.ParquetFile(store.random_access(obj))


def _footers(
    store: Store, objects: Sequence[StoredObject], fields: RecordFields
) -> tuple[Files | None, int | None]:
    """(what Ray reads, rows in all) from each object's footer; (None, None) when one cannot be
    read or the objects disagree on their columns: then each is read (and its error named) by
    the driver."""
    rows: list[int] = []
    columns: set[tuple[str, ...]] = set()
    for obj in objects:
        try:
            pf = _parquet_file(store, obj)
            columns.add(tuple(select_columns(pf.schema_arrow, obj.uri, fields)))
            rows.append(pf.metadata.num_rows)
        except (OSError, pa.ArrowException, SourceError):
            return None, None
    if len(columns) > 1:
        return None, sum(rows)
    names = tuple(o.uri for o in objects)
    files = Files(
        store.uri,
        tuple(o.path for o in objects),
        names,
        fields,
        next(iter(columns), ()),
        tuple(rows),
        tuple(o.size for o in objects),
        filesystem=store.fs,
    )
    return files, sum(rows)
