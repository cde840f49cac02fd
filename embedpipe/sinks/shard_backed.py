"""Store-backed sinks: a run's writes and deletes go to its generation's ShardStore as they come.

The FAISS and Parquet sinks share this. A write or delete is one store file, durable when the call
returns, from this process or from others through `remote_writer()` (a ShardWriter on the same
folder); close() turns the store into what readers see (an index, or compacted data files).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from embedpipe.sinks.base import not_open
from embedpipe.sinks.generations import GenerationSink, write_manifest
from embedpipe.sinks.shards import POINT_COLUMNS, ShardStore, ShardWriter, table_points
from embedpipe.types import Embedded


class StoredSink(GenerationSink):
    """A GenerationSink whose source of truth is a ShardStore in `<generation>/store`.

    A subclass adds `first_manifest` (the fields a new generation's manifest starts with), `_build`, and
    `_published_rows` when readers' files hold chunks the store no longer does.
    """

    first_manifest: ClassVar[dict[str, Any]] = {}

    def __init__(self, directory: str | Path, collection: str, *, keep_previous: bool) -> None:
        super().__init__(directory, collection, keep_previous=keep_previous)
        self._dim = 0
        self._store: ShardStore | None = None  # the written generation's store, during a run

    def open(self, dim: int, fingerprint: str) -> None:
        """Attach to the live generation when its fingerprint matches, else start a new one."""
        gen, manifest = self._claim(dim, fingerprint)
        if not manifest:
            write_manifest(gen, fingerprint=fingerprint, dim=dim, **self.first_manifest)
        self._store = ShardStore(gen / "store")
        self._store.remove_temp()
        self._gen, self._dim = gen, dim

    def write(self, embedded: Embedded) -> None:
        """Append the chunks as one store shard; returns once it is durable in place."""
        self._writing().append_embedded(embedded, self._dim)

    def remote_writer(self) -> ShardWriter:
        """A writer other processes append this run's store with; close() here still builds (and,
        for a re-embed, swaps) as for the sink's own writes."""
        return ShardWriter(self._writing().root.absolute(), self._dim)

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Record a tombstone for these chunks; ids that are not present are fine."""
        store = self._writing()
        if chunk_ids:
            store.tombstone(chunk_ids)

    def chunk_ids(self, fingerprint: str | None = None) -> Iterator[str]:
        """Every chunk id of `fingerprint`'s generation, else of the one being written, else of
        the live one (with the writes of an interrupted run that are not published yet)."""
        gen = self._read_gen(fingerprint)
        if gen is None:
            return
        base = self._published_rows(gen, ["chunk_id"])
        table = ShardStore(gen / "store").live(columns=["chunk_id"], base=base)
        if table is not None:
            yield from table.column("chunk_id").to_pylist()

    def count(self, fingerprint: str) -> int:
        """Rows of `fingerprint`'s generation from file footers (0 when the sink lacks it): what
        is published plus every store shard, so until the next compaction a deleted chunk still
        counts and a rewritten one counts twice."""
        gen = self._read_gen(fingerprint)
        return 0 if gen is None else self._published_count(gen) + ShardStore(gen / "store").rows()

    def points(self, fingerprint: str | None = None) -> Iterator[Embedded]:
        """Every chunk of `fingerprint`'s generation (else the one being written, else the live
        one) with its vector, from the store replayed over what is published."""
        gen = self._read_gen(fingerprint)
        if gen is None:
            return
        base = self._published_rows(gen, POINT_COLUMNS)
        table = ShardStore(gen / "store").live(columns=POINT_COLUMNS, base=base)
        if table is not None:
            yield from table_points(table)

    def _published_rows(self, gen: Path, columns: list[str]) -> pa.Table | None:
        """Chunks of `gen` kept outside its store, that the store's files replay over."""
        return None

    def _published_count(self, gen: Path) -> int:
        """How many rows `_published_rows` holds, from footers."""
        return 0

    def _writing(self) -> ShardStore:
        if self._store is None:
            raise not_open(self.name)
        return self._store

    def _release(self) -> None:
        self._unlock()
        self._store = None
