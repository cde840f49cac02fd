"""Parquet sink: chunks and their vectors as plain Parquet files, for data teams and other systems.

Layout under the sink directory (generations as for FAISS, see generations.py):

    <collection>                    symlink to .generations/<collection>__<fp16>/data-NNNNNN
    .generations/<collection>__<fp16>/
        data-NNNNNN/part-00000.parquet ...   the compacted chunks, each file one row group
        store/                               writes and deletes of the run (a ShardStore)
        manifest.json, .lock

The public directory holds only the data files, each chunk once, so it reads as it is:
`pq.read_table(DIR/collection)`, DuckDB's `read_parquet('DIR/collection/*.parquet')`,
`datasets.Dataset.from_parquet(...)`. Writes go to the store as they come (durable when write()
returns), from this process or from others through remote_writer(); close() replays them over
the current data into a new data-NNNNNN folder and moves the symlink to it in one rename, so
readers never see a half-written table.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedpipe.config import SinkConfig
from embedpipe.durable import fsync_dir
from embedpipe.errors import SinkError
from embedpipe.sinks.base import Hit, ReadView
from embedpipe.sinks.filters import Rows, parse, require_fields
from embedpipe.sinks.generations import read_manifest
from embedpipe.sinks.shard_backed import StoredSink
from embedpipe.sinks.shards import (
    ShardStore,
    arrow_indices,
    hit_from_payload,
    read_parquet,
    shard_schema,
    vectors_of,
    write_parquet,
)

DATA_COLUMNS = [
    "chunk_id",
    "doc_id",
    "chunk_index",
    "text",
    "content_hash",
    "start",
    "end",
    "metadata",
    "vector",
]
PAYLOAD_COLUMNS = DATA_COLUMNS[:-1]
DATA_PREFIX = "data-"
LOAD_TRIES = 50  # a reader whose data folder a run removed meanwhile looks again (0.05 s apart)


def data_schema(dim: int) -> pa.Schema:
    """Columns of the published files; `metadata` is a JSON object as a string."""
    schema = shard_schema(dim)
    return pa.schema([schema.field(name) for name in DATA_COLUMNS])


class ParquetSink(StoredSink):
    """Chunks with vectors as Parquet files in `directory/collection`, compacted on close()."""

    scheme, name, kind = "parquet", "Parquet", "Parquet dataset"
    first_manifest: ClassVar[dict[str, Any]] = {"format": "parquet"}

    def __init__(
        self,
        directory: str | Path,
        collection: str,
        *,
        rows_per_file: int = 100_000,
        keep_previous: bool = False,
    ) -> None:
        if rows_per_file < 1:
            raise SinkError("rows_per_file must be at least 1")
        super().__init__(directory, collection, keep_previous=keep_previous)
        self.rows_per_file = rows_per_file
        # The published data as last read: its folder, vectors, payload rows, the manifest.
        self._cache: tuple[Path, np.ndarray, pa.Table, Rows, dict[str, Any]] | None = None

    @classmethod
    def from_config(cls, scheme: str, location: str, cfg: SinkConfig) -> ParquetSink:
        """The sink a parquet:DIR URI names."""
        return cls(location, cfg.collection, keep_previous=cfg.keep_previous)

    # -- reading ---------------------------------------------------------------------------

    def search(
        self,
        vector: np.ndarray,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k hits of the published chunks by inner product, by brute force over the chunks
        `filter` passes."""
        with self.serving() as view:
            return view.search(vector, k, filter, with_vectors=with_vectors)

    @contextmanager
    def serving(self) -> Iterator[ReadView]:
        """The published data folder as last read, held for one query; a newer one is read
        when the public name moved."""
        _, vectors, rows, filterable, manifest = self._loaded()
        search = partial(_search, vectors, rows, filterable, f"'{self.collection}'")
        yield ReadView(manifest.get("fingerprint"), manifest, search)

    def close_served(self) -> None:
        """Forget the data read."""
        self._cache = None

    # -- internals -------------------------------------------------------------------------

    def _public_target(self, gen: Path) -> Path:
        """What the public name points to when `gen` is live: its latest data folder."""
        dirs = _data_dirs(gen)
        return dirs[-1] if dirs else gen

    def _build(self, gen: Path) -> Path:
        """Write the store's writes and deletes, replayed over the latest data, as a new data
        folder: what the public name points to once published."""
        return self._write_data(gen, self._merged(gen, self._writing()))

    def _published(self, gen: Path) -> None:
        """The new data folder holds what the store and the older folders held: drop them."""
        self._writing().clear()
        for folder in _data_dirs(gen)[:-1]:
            shutil.rmtree(folder, ignore_errors=True)

    def _published_rows(self, gen: Path, columns: list[str]) -> pa.Table | None:
        return _read_data(gen, columns)

    def _published_count(self, gen: Path) -> int:
        """Rows of the latest data folder, from its files' footers."""
        dirs = _data_dirs(gen)
        parts = dirs[-1].glob("*.parquet") if dirs else ()
        return sum(pq.read_metadata(p).num_rows for p in parts)

    def _merged(self, gen: Path, store: ShardStore) -> pa.Table:
        """The generation's latest data with the store's writes and deletes replayed on top."""
        table = store.live(columns=DATA_COLUMNS, base=self._published_rows(gen, DATA_COLUMNS))
        return data_schema(self._dim).empty_table() if table is None else table

    def _write_data(self, gen: Path, table: pa.Table) -> Path:
        """Write `table` as part files of `rows_per_file` rows in a new data folder."""
        existing = _data_dirs(gen)
        number = int(existing[-1].name[len(DATA_PREFIX) :]) + 1 if existing else 1
        final = gen / f"{DATA_PREFIX}{number:06d}"
        tmp = gen / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        table = table.cast(data_schema(self._dim))
        for i, lo in enumerate(range(0, max(table.num_rows, 1), self.rows_per_file)):
            write_parquet(table.slice(lo, self.rows_per_file), tmp / f"part-{i:05d}.parquet")
        os.replace(tmp, final)
        fsync_dir(gen)
        return final

    def _loaded(self) -> tuple[Path, np.ndarray, pa.Table, Rows, dict[str, Any]]:
        """The live vectors and payload rows, cached until the symlink moves. A data folder is
        never written once published, but a run removes the one it replaced: read again."""
        for _ in range(LOAD_TRIES):
            data = self._live_public()
            if data is None:
                raise self._gens.missing()
            if self._cache is not None and self._cache[0] == data:
                return self._cache
            try:
                table = read_parquet(data)
                manifest = read_manifest(data.parent)
            except FileNotFoundError:
                time.sleep(0.05)
                continue
            vectors = vectors_of(table) if table.num_rows else np.zeros((0, 1), np.float32)
            rows = table.select(PAYLOAD_COLUMNS)
            self._cache = (data, vectors, rows, Rows(rows), manifest)
            return self._cache
        raise SinkError(
            f"the Parquet dataset '{self.collection}' in {self.directory} kept changing while it "
            "was read: try again"
        )


def _search(
    vectors: np.ndarray,
    rows: pa.Table,
    filterable: Rows,
    where: str,
    vector: np.ndarray,
    k: int,
    filter: Mapping[str, Any] | None,
    *,
    with_vectors: bool = False,
) -> list[Hit]:
    """Top-k of the published chunks by inner product, among those `filter` passes (with
    `with_vectors`, each with its vector)."""
    expr = parse(filter)
    require_fields(expr, filterable.has, filterable.fields, where, empty=lambda: rows.num_rows == 0)
    place = np.flatnonzero(filterable.mask(expr)) if expr is not None else None
    if place is not None:
        vectors = vectors[place]
    if len(vectors) == 0:
        return []
    scores = vectors @ np.asarray(vector, dtype=np.float32).reshape(-1)
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    payloads = rows.take(arrow_indices(top if place is None else place[top])).to_pylist()
    if not with_vectors:
        return [hit_from_payload(scores[i], p) for i, p in zip(top, payloads, strict=True)]
    kept = vectors[top]  # a copy: the hits do not share the cached array
    return [hit_from_payload(scores[i], p, v) for i, p, v in zip(top, payloads, kept, strict=True)]


def _data_dirs(gen: Path) -> list[Path]:
    """The complete data folders of a generation, oldest first."""
    if not gen.is_dir():
        return []
    return sorted(p for p in gen.iterdir() if p.name.startswith(DATA_PREFIX) and p.is_dir())


def _read_data(gen: Path, columns: list[str]) -> pa.Table | None:
    """The latest data folder of a generation (None when it has none yet)."""
    dirs = _data_dirs(gen)
    return read_parquet(dirs[-1], columns) if dirs else None
