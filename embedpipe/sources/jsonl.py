"""JSON Lines source (plain or gzip): one Document per object line, streamed."""

from __future__ import annotations

import codecs
import functools
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from embedpipe.config import SourceConfig
from embedpipe.errors import SourceError
from embedpipe.sources.base import Files, Source
from embedpipe.sources.records import RecordFields, kind_of, to_document
from embedpipe.types import Document, RecordError

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")


def open_jsonl(path: str, cfg: SourceConfig) -> Source:
    """A Source over a JSON Lines file; its length is unknown until read."""
    if not os.path.isfile(path):
        raise SourceError(f"No JSON Lines file at {path}: pass an existing .jsonl/.jsonl.gz file")

    fields = RecordFields.of(cfg)
    read = functools.partial(_read_jsonl, path, fields)
    files = Files(path, (os.path.abspath(path),), (path,), fields, sizes=(os.path.getsize(path),))
    return Source(uri=path, kind="jsonl", read=read, files=files)


def read_jsonl(path: str | Path, **fields: Any) -> Iterator[Document | RecordError]:
    """Each non-blank line of `path` as a Document or a RecordError naming the line.

    `fields` are RecordFields' (text_field, id_field, metadata_fields, text_template).
    """
    yield from _read_jsonl(path, RecordFields(**fields))


def _read_jsonl(path: str | Path, fields: RecordFields) -> Iterator[Document | RecordError]:
    source = str(path)
    try:
        stream = _open_binary(source)
    except OSError as exc:
        yield RecordError(source, "line 1", f"cannot read further: {exc}")
        return
    with stream:
        yield from parse_jsonl(stream, fields, source)


def parse_jsonl(
    stream: Iterable[bytes], fields: RecordFields, source: str
) -> Iterator[Document | RecordError]:
    """The records of an open binary JSONL stream (its lines), each error naming its line."""
    n = 0
    try:
        for n, raw in enumerate(stream, start=1):
            line = raw.removeprefix(codecs.BOM_UTF8) if n == 1 else raw
            if not line.strip():
                continue
            obj = parse_line(line)
            if isinstance(obj, str):
                yield RecordError(source, f"line {n}", obj)
                continue
            yield to_document(obj, fields, source=source, record=f"line {n}")
    except (OSError, EOFError, zlib.error) as exc:  # vanished, truncated or corrupt gzip
        yield RecordError(source, f"line {n + 1}", f"cannot read further: {exc}")


def parse_line(line: bytes) -> dict[str, object] | str:
    """The JSON object on a line, or the reason it is not one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (invalid byte at offset {exc.start} of the line)"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(obj, dict):
        return f"line is {kind_of(obj)}, not a JSON object (expected one object per line)"
    return obj


def _open_binary(path: str) -> io.BufferedIOBase:
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def open_bytes(path: str, data: bytes) -> io.BufferedIOBase:
    """A file's raw bytes as a binary stream, gunzipped on the fly for a .gz name."""
    if path.lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
    return io.BytesIO(data)
