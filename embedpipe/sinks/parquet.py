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
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedpipe.errors import SinkError
from embedpipe.sinks.base import Hit
from embedpipe.sinks.generations import GenerationSink, write_manifest
from embedpipe.sinks.store import (
    ShardStore,
    ShardWriter,
    fsync_dir,
    hit_from_payload,
    shard_schema,
    vectors_of,
    write_parquet,
)
from embedpipe.types import Embedded

DATA_COLUMNS = ["chunk_id", "doc_id", "chunk_index", "text", "content_hash", "start", "end",
                "metadata", "vector"]  # fmt: skip
PAYLOAD_COLUMNS = DATA_COLUMNS[:-1]
DATA_PREFIX = "data-"


def data_schema(dim: int) -> pa.Schema:
    """Columns of the published files; `metadata` is a JSON object as a string."""
    schema = shard_schema(dim)
    return pa.schema([schema.field(name) for name in DATA_COLUMNS])


class ParquetSink(GenerationSink):
    """Chunks with vectors as Parquet files in `directory/collection`, compacted on close()."""

    scheme = "parquet"
    kind = "Parquet dataset"

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
        self._dim = 0
        self._store: ShardStore | None = None
        self._cache: tuple[Path, np.ndarray, pa.Table] | None = None  # (data dir, vectors, rows)

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, dim: int, fingerprint: str) -> None:
        """Attach to the live generation when its fingerprint matches, else start a new one."""
        gen, manifest = self._claim(dim, fingerprint)
        if not manifest:
            write_manifest(gen, fingerprint=fingerprint, dim=dim, format="parquet")
        self._store = ShardStore(gen / "store")
        self._store.remove_temp()
        self._gen, self._dim = gen, dim

    def write(self, embedded: Embedded) -> None:
        """Append the chunks as one store shard; returns once it is renamed into place."""
        self._writing().append_embedded(embedded, self._dim)

    def remote_writer(self) -> ShardWriter:
        """A writer other processes append this run's store with; close() here still compacts
        (and, for a re-embed, swaps) as for the sink's own writes."""
        return ShardWriter(self._writing().root.absolute(), self._dim)

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Record a tombstone for these chunks; ids that are not present are fine."""
        store = self._writing()
        if chunk_ids:
            store.tombstone(chunk_ids)

    def close(self, promote: bool = True) -> None:
        """Write the compacted chunks as a new data folder and publish it (a new generation only
        when `promote`, else it stays staged); drop what a promotion replaces.

        On failure the run stays open (and locked), so the pipeline can retry close() or abort().
        """
        if self._gen is None:
            return
        gen, store = self._gen, self._writing()
        table = self._merged(gen, store)
        data = self._write_data(gen, table)
        old = self._swap(data) if promote or not self._new else None
        store.clear()  # what it held is in `data` now
        for folder in _data_dirs(gen)[:-1]:
            shutil.rmtree(folder, ignore_errors=True)
        self._drop_replaced(old)
        self._release()

    def abort(self) -> None:
        """Unlock without publishing. The store keeps the acknowledged writes for the next run."""
        self._release()

    # -- reading ---------------------------------------------------------------------------

    def chunk_ids(self, fingerprint: str | None = None) -> Iterator[str]:
        """Every chunk id of `fingerprint`'s generation, else of the one being written, else of
        the live one (with the writes of an interrupted run that are not published yet)."""
        gen = self._read_gen(fingerprint)
        if gen is None:
            return
        table = ShardStore(gen / "store").live(
            columns=["chunk_id"], base=_read_data(gen, ["chunk_id"])
        )
        if table is not None:
            yield from table.column("chunk_id").to_pylist()

    def search(self, vector: np.ndarray, k: int = 5) -> list[Hit]:
        """Top-k hits of the published chunks by inner product, by brute force."""
        vectors, rows = self._loaded()
        if len(vectors) == 0:
            return []
        scores = vectors @ np.asarray(vector, dtype=np.float32).reshape(-1)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        payloads = rows.take(pa.array(top)).to_pylist()
        return [hit_from_payload(scores[i], p) for i, p in zip(top, payloads, strict=True)]

    # -- internals -------------------------------------------------------------------------

    def _live_gen(self) -> Path | None:
        """The generation the live data folder is in (the public name points into it)."""
        data = self._gens.live()
        return None if data is None else data.parent

    def _writing(self) -> ShardStore:
        if self._store is None:
            raise SinkError("the Parquet sink is not open: call open(dim, fingerprint) first")
        return self._store

    def _merged(self, gen: Path, store: ShardStore) -> pa.Table:
        """The generation's latest data with the store's writes and deletes replayed on top."""
        table = store.live(columns=DATA_COLUMNS, base=_read_data(gen, DATA_COLUMNS))
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

    def _loaded(self) -> tuple[np.ndarray, pa.Table]:
        """The live vectors and payload rows, cached until the symlink moves."""
        data = self._gens.live()
        if data is None:
            raise self._gens.missing()
        if self._cache is None or self._cache[0] != data:
            table = pq.read_table(data)
            vectors = vectors_of(table) if table.num_rows else np.zeros((0, 1), np.float32)
            self._cache = (data, vectors, table.select(PAYLOAD_COLUMNS))
        return self._cache[1], self._cache[2]

    def _release(self) -> None:
        self._unlock()
        self._store = None


def _data_dirs(gen: Path) -> list[Path]:
    """The complete data folders of a generation, oldest first."""
    if not gen.is_dir():
        return []
    return sorted(p for p in gen.iterdir() if p.name.startswith(DATA_PREFIX) and p.is_dir())


def _read_data(gen: Path, columns: list[str]) -> pa.Table | None:
    """The latest data folder of a generation (None when it has none yet)."""
    dirs = _data_dirs(gen)
    return pq.read_table(dirs[-1], columns=columns) if dirs else None
