"""Parquet source: a file or a directory of files, streamed in record batches."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from embedpipe.config import SourceConfig
from embedpipe.errors import SourceError
from embedpipe.sources.base import Files, Source
from embedpipe.sources.records import (
    RecordFields,
    check_text_column,
    column_rows,
    template_columns,
    to_document,
)
from embedpipe.types import Document, RecordError

BATCH_ROWS = 1024


def open_parquet(path: str, cfg: SourceConfig) -> Source:
    """A Source over Parquet data; reads every footer up front to check columns and count rows."""
    files = parquet_files(path)
    fields = RecordFields.of(cfg)
    rows: list[int] = []
    columns: set[tuple[str, ...]] = set()
    for file in files:
        with _open(file) as pf:
            columns.add(tuple(select_columns(pf.schema_arrow, file, fields)))
            rows.append(pf.metadata.num_rows)
    read = functools.partial(_read_files, files, fields)
    native = None  # files that disagree on their columns are read one by one, never as one set
    if len(columns) == 1:
        native = Files(
            path,
            tuple(str(f.absolute()) for f in files),
            tuple(map(str, files)),
            fields,
            columns.pop(),
            tuple(rows),
            tuple(f.stat().st_size for f in files),
        )
    return Source(uri=path, kind="parquet", read=read, total=sum(rows), files=native)


def parquet_files(path: str | Path) -> list[Path]:
    """`path` itself, or the *.parquet files under it in sorted order (hidden and _ paths skipped)."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise SourceError(f"No Parquet data at {path}: pass a .parquet file or a directory of them")
    files = sorted(
        f
        for f in root.rglob("*.parquet")
        if f.is_file() and not any(p.startswith((".", "_")) for p in f.relative_to(root).parts)
    )
    if not files:
        raise SourceError(
            f"No .parquet files under {path}: pass a .parquet file or a directory of them"
        )
    return files


def read_parquet(path: str | Path, **fields: Any) -> Iterator[Document | RecordError]:
    """Each row of the Parquet data at `path` as a Document or a RecordError naming the row.

    `fields` are RecordFields' (text_field, id_field, metadata_fields, text_template).
    """
    yield from _read_files(parquet_files(path), RecordFields(**fields))


def _read_files(files: Sequence[Path], fields: RecordFields) -> Iterator[Document | RecordError]:
    for file in files:
        yield from _read_file(file, fields)


def _read_file(file: Path, fields: RecordFields) -> Iterator[Document | RecordError]:
    yield from read_rows(functools.partial(pq.ParquetFile, file), str(file), fields)


def read_rows(
    opened: Callable[[], pq.ParquetFile],
    source: str,
    fields: RecordFields,
    explain: Callable[[BaseException], str] = str,
) -> Iterator[Document | RecordError]:
    """The rows of one Parquet file (`opened()`), `source` naming it; a file that cannot be read
    (further) is one RecordError saying why (`explain`) and from which row."""
    row = 0
    try:
        with opened() as pf:
            columns = select_columns(pf.schema_arrow, source, fields)
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                # to_pydict: to_pylist per column, plain Python values
                for record in column_rows(batch.to_pydict()):
                    yield to_document(record, fields, source=source, record=f"row {row}")
                    row += 1
    except SourceError as exc:  # a bucket's file is checked only when read
        yield RecordError(source, f"row {row}", str(exc))
    except (OSError, pa.ArrowException) as exc:  # a corrupt page or a file that vanished
        yield RecordError(
            source, f"row {row}", f"cannot read the rest of this file: {explain(exc)}"
        )


def select_columns(schema: pa.Schema, file: Path | str, fields: RecordFields) -> list[str]:
    """The columns to read: text (or the template's fields), id when present, and metadata
    (named, or all but binary ones)."""
    names = schema.names
    if fields.text_template is not None:
        wanted = template_columns(fields.text_template, names, file)
    else:
        wanted = [_text_column(schema, file, fields.text_field)]
    if fields.id_field in names and fields.id_field not in wanted:
        wanted.append(fields.id_field)
    if fields.metadata_fields is None:
        extra = [n for n in names if not _is_binary_type(schema.field(n).type)]
    else:
        extra = [n for n in fields.metadata_fields if n in names]
    return wanted + [n for n in extra if n not in wanted]


def _text_column(schema: pa.Schema, file: Path | str, text_field: str) -> str:
    check_text_column(text_field, schema.names, file)
    text_type = schema.field(text_field).type
    if not _is_text_type(text_type):
        raise SourceError(
            f"Column {text_field!r} in {file} holds {text_type}, not strings:"
            " set source.text_field to a string column"
        )
    return text_field


def _is_text_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    kinds = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_string_view,
        pa.types.is_null,
    )
    return any(is_kind(t) for is_kind in kinds)


def _is_binary_type(t: pa.DataType) -> bool:
    kinds = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary)
    return any(is_kind(t) for is_kind in kinds)


def _open(file: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(file)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"Cannot read Parquet file {file} ({exc}): replace or remove it") from exc
