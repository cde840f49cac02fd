"""Qdrant Edge sink: the Qdrant engine in-process (qdrant-edge-py), one shard per generation.

Layout under the sink directory (generations as for FAISS, see generations.py):

    <collection>                      symlink to .generations/<collection>__<fp16>
    .generations/<collection>__<fp16>/manifest.json, .lock, shard/ (an Edge shard: wal/, segments/)

Durability: every update goes through the shard's write-ahead log before `update` returns, so an
acknowledged write survives the process being killed (tests/test_sink_edge.py kills a writer and
reloads). close() runs the optimizers (segment merge, HNSW build once a segment is large enough),
flushes, and swaps the symlink for a new generation.

An Edge shard is opened by one EdgeShard at a time (it locks its WAL) and its segment files are
rewritten in place, so queries never open the live shard: a finished run (and a promotion)
publishes a copy of it as a read snapshot, which readers copy privately and follow (see
snapshots.py). Writer-side reads (count, chunk_ids, points) open the live shard itself.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from embedpipe.config import QdrantOptions, SinkConfig, SparseConfig
from embedpipe.durable import forget_holder, note_holder
from embedpipe.errors import SinkError
from embedpipe.sinks import qdrant_base
from embedpipe.sinks.base import Hit, ReadView, not_open
from embedpipe.sinks.filters import parse, require_fields
from embedpipe.sinks.generations import GenerationSink, read_manifest, try_lock, write_manifest
from embedpipe.sinks.layouts import payload
from embedpipe.sinks.shards import paired_vectors
from embedpipe.sinks.snapshots import SnapshotReader, Snapshots, copy_tree
from embedpipe.sinks.sparse import (
    RRF_K,
    SPARSE_VECTOR,
    Bm25Encoder,
    Retrieval,
    settings_of,
    settled,
)
from embedpipe.types import Embedded, point_id

SHARD = "shard"
EDGE_CONFIG = "edge_config.json"  # written by Edge when a shard is created
DEFAULT_HNSW = (16, 100)  # Qdrant's m and ef_construct
FULL_SCAN_THRESHOLD = 10_000  # KB of vectors below which a segment is searched exactly
FIRST_SNAPSHOT_WAIT = 30.0  # seconds a reader waits for a running run to publish the first one


def edge_errors(action: str, gen: Path | None = None) -> AbstractContextManager[None]:
    """Qdrant Edge raises bare Exceptions: give them the action and, where known, the fix
    (`gen`: the generation folder of a shard being opened, whose holder a lock error names)."""
    return qdrant_base.translated(action, partial(_edge_error, gen=gen))


def _edge_error(action: str, exc: Exception, gen: Path | None = None) -> SinkError:
    hint = ""
    if "WouldBlock" in str(exc):
        hint = f": {qdrant_base.busy_hint('shard', gen)}"
    return SinkError(f"Qdrant Edge {action} failed: {exc}{hint}")


# Qdrant Edge's types for the options: HNSW parameters left unset get Qdrant's defaults.
VECTOR_TYPES = qdrant_base.VectorTypes(
    hnsw=lambda m, ef_construct: qe.HnswIndexConfig(
        m=m or DEFAULT_HNSW[0],
        ef_construct=ef_construct or DEFAULT_HNSW[1],
        full_scan_threshold=FULL_SCAN_THRESHOLD,
    ),
    int8=lambda: qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True),
    binary=lambda: qe.BinaryQuantizationConfig(always_ram=True),
    vectors=lambda dim, on_disk, hnsw, quantization: qe.EdgeVectorParams(
        size=dim,
        distance=qe.Distance.Cosine,
        memory=qe.Memory.Cold if on_disk else None,
        hnsw_config=hnsw,
        quantization_config=quantization,
    ),
)


FILTER_TYPES = qdrant_base.FilterTypes(
    filter=qe.Filter,
    field=lambda key, match: qe.FieldCondition(key, match=match),
    value=qe.MatchValue,
    any=qe.MatchAny,
    numbers=lambda key, bounds: qe.FieldCondition(key, range=qe.RangeFloat(**bounds)),
    dates=lambda key, bounds: qe.FieldCondition(
        key, range=qe.RangeDateTime(**{op: v.isoformat() for op, v in bounds.items()})
    ),
    is_empty=qe.IsEmptyCondition,
)


class EdgeSink(GenerationSink):
    """Vectors in a Qdrant Edge shard under `directory`, named `collection`."""

    scheme, name, kind = "qdrant-edge", "Qdrant Edge", "Qdrant Edge shard"

    def __init__(
        self,
        directory: str | Path,
        collection: str,
        *,
        options: QdrantOptions | None = None,
        write_batch: int = 256,
        ef_search: int | None = None,
        keep_previous: bool = False,
        sparse: SparseConfig | None = None,
    ) -> None:
        super().__init__(directory, collection, keep_previous=keep_previous)
        self.options = options or QdrantOptions()
        self.sparse = sparse or SparseConfig()
        self._bm25: Bm25Encoder | None = None  # the generation being written keeps BM25 vectors
        self.write_batch = write_batch
        self.ef_search = ef_search
        self._shard: Any = None  # the EdgeShard being written
        self._reader: tuple[Path, Any] | None = None  # (generation, EdgeShard) read outside a run
        self._snapshots = Snapshots(self.directory, collection)
        self._served = self._snapshot_reader()  # queries' private copy of a snapshot

    @classmethod
    def from_config(cls, scheme: str, location: str, cfg: SinkConfig) -> EdgeSink:
        """The sink a qdrant-edge:PATH URI names."""
        return cls(
            location,
            cfg.collection,
            options=cfg.qdrant,
            write_batch=cfg.write_batch,
            ef_search=cfg.ef_search,
            keep_previous=cfg.keep_previous,
            sparse=cfg.sparse,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, dim: int, fingerprint: str) -> None:
        """Attach to the live shard when its fingerprint matches, else start a new generation.
        The live shard a read opened before (the run's count) is written, not loaded again."""
        gen, manifest = self._claim(dim, fingerprint)
        try:
            self._serve(self._gens.live_gen(), locked=gen == self._gens.live_gen())
            if self._reader is not None and self._reader[0] == gen:
                (_, self._shard), self._reader = self._reader, None
            else:
                self._close_reader()
                self._shard = self._load_or_create(gen / SHARD, dim)
            self._ensure_payload_indexes(self._shard)
            if not manifest:
                sparse = self.sparse.model_dump() if self.sparse.on else None
                write_manifest(
                    gen, fingerprint=fingerprint, dim=dim, options=self._shape(), sparse=sparse
                )
            # What the generation was built with decides, so every write keeps both in step.
            kept = settings_of(manifest or {"sparse": self.sparse.model_dump()})
            self._bm25 = None if kept is None else Bm25Encoder(kept)
        except BaseException:
            self._release()
            raise
        self._gen = gen

    def write(self, embedded: Embedded) -> None:
        """Upsert in batches of `write_batch`; returns once the shard's WAL holds them."""
        shard = self._writing()
        vectors = paired_vectors(embedded)
        for lo in range(0, len(embedded.chunks), self.write_batch):
            chunks = embedded.chunks[lo : lo + self.write_batch]
            rows: list[Any] = vectors[lo : lo + self.write_batch].tolist()
            if self._bm25 is not None:
                sparse = self._bm25.documents([c.text for c in chunks])
                rows = [{"": row, SPARSE_VECTOR: sv} for row, sv in zip(rows, sparse, strict=True)]
            points = [
                qe.Point(point_id(c.id), row, payload(c, self.options.layout))
                for c, row in zip(chunks, rows, strict=True)
            ]
            with edge_errors(f"upsert into {self._gen}"):
                shard.update(qe.UpdateOperation.upsert_points(points))

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks; ids that are not present are fine."""
        shard = self._writing()
        for lo in range(0, len(chunk_ids), self.write_batch):
            ids: list[Any] = [
                qdrant_base.point_ref(c) for c in chunk_ids[lo : lo + self.write_batch]
            ]
            with edge_errors(f"delete from {self._gen}"):
                shard.update(qe.UpdateOperation.delete_points(ids))

    # -- reading ---------------------------------------------------------------------------

    def chunk_ids(self, fingerprint: str | None = None) -> Iterator[str]:
        """Every chunk id of `fingerprint`'s shard, else of the one being written, else of the
        live one."""
        with self._reading(fingerprint) as shard:
            if shard is not None:
                yield from qdrant_base.scroll_chunk_ids(partial(_page, shard), self.write_batch)

    def count(self, fingerprint: str) -> int:
        """Points in `fingerprint`'s shard (0 when the sink lacks it), counted by the engine."""
        with self._reading(fingerprint) as shard:
            if shard is None:
                return 0
            with edge_errors(f"counting the points of '{self.collection}'"):
                return int(shard.count(qe.CountRequest(exact=True)))

    def points(self, fingerprint: str | None = None) -> Iterator[Embedded]:
        """Every chunk of that shard with its vector, in pages."""
        with self._reading(fingerprint) as shard:
            if shard is not None:
                page = partial(_page, shard, vectors=True)
                yield from qdrant_base.scroll_points(page, self.write_batch)

    @contextmanager
    def _reading(self, fingerprint: str | None) -> Iterator[Any]:
        """The shard a read of `fingerprint` means (None when the sink lacks it): the one being
        written, the live one's reader, or a staged one opened for this read only."""
        gen = self._read_gen(fingerprint)
        if gen is None or not (gen / SHARD / EDGE_CONFIG).exists():
            yield None
        elif self._shard is not None and gen == self._gen:
            yield self._shard
        elif gen == self._gens.live():
            yield self._live_reader(required=True)
        else:
            shard = _load(gen)
            try:
                yield shard
            finally:
                _close(shard, gen)

    def search(
        self,
        vector: np.ndarray,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k hits of the live shard by cosine similarity, among the chunks `filter` passes:
        of the newest read snapshot, or of the shard this sink writes in place or pins."""
        live = self._live_gen()
        if self._gen is not None and self._gen == live:
            return self._query(self._shard, vector, k, filter, with_vectors=with_vectors)
        if self._pin is not None:
            shard = self._live_reader(required=True)
            return self._query(shard, vector, k, filter, with_vectors=with_vectors)
        with self.serving() as view:
            return view.search(vector, k, filter, with_vectors=with_vectors)

    def retrieve(
        self,
        retrieval: Retrieval,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k hits of a sparse or hybrid query, read as `search` reads."""
        live = self._live_gen()
        if self._gen is not None and self._gen == live:
            shard = self._shard
        elif self._pin is not None:
            shard = self._live_reader(required=True)
        else:
            with self.serving() as view:
                assert view.retrieve is not None
                return view.retrieve(retrieval, k, filter, with_vectors=with_vectors)
        return self._retrieve(shard, retrieval, k, filter, with_vectors=with_vectors)

    @contextmanager
    def serving(self) -> Iterator[ReadView]:
        """The newest read snapshot, held for one query (a newer one is opened when the read
        pointer moved, at most every second)."""
        with self._served.use() as served:
            fingerprint = served.pointer.get("fingerprint")
            yield ReadView(
                fingerprint,
                served.manifest,
                partial(self._query, served.engine),
                partial(self._retrieve, served.engine),
            )

    def close_served(self) -> None:
        """Close the read snapshot queries use and remove its private copy."""
        self._served.close()

    def _snapshot_reader(self) -> SnapshotReader[Any]:
        """A reader of this collection's snapshots; it opens one at its first query."""
        return SnapshotReader(
            self._snapshots, _open_snapshot, _close_shard, self._catch_up, self._gens.missing
        )

    def _query(
        self,
        shard: Any,
        vector: np.ndarray,
        k: int,
        filter: Mapping[str, Any] | None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        where = self._where(shard, filter)
        params = qe.SearchParams(hnsw_ef=self.ef_search) if self.ef_search else None
        query = qe.Query.Nearest(qdrant_base.query_vector(vector))
        request = qe.QueryRequest(
            limit=k,
            query=query,
            with_payload=True,
            params=params,
            filter=where,
            with_vector=with_vectors,
        )
        with edge_errors(f"query on '{self.collection}'"):
            points = shard.query(request)
        return qdrant_base.hits(points, with_vectors=with_vectors)

    def _where(self, shard: Any, filter: Mapping[str, Any] | None) -> Any:
        """`filter` as the engine's Filter (None for none), its fields checked against what the
        shard holds (a field no chunk has is an error naming the ones present)."""
        expr = parse(filter)
        require_fields(
            expr,
            lambda key: qdrant_base.has_field(key, partial(_first, shard), FILTER_TYPES),
            lambda: qdrant_base.metadata_fields(partial(_page, shard, vectors=True)),
            f"'{self.collection}'",
            empty=lambda: not _first(shard, None),
        )
        return qdrant_base.native_filter(expr, FILTER_TYPES)

    def _retrieve(
        self,
        shard: Any,
        retrieval: Retrieval,
        k: int,
        filter: Mapping[str, Any] | None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """A sparse query on the BM25 vectors, or a hybrid one: the dense and the sparse
        candidates fused by (weighted) reciprocal rank."""
        where = self._where(shard, filter)
        assert retrieval.sparse is not None
        sparse = qe.Query.Nearest(
            qe.SparseVector(retrieval.sparse.indices, retrieval.sparse.values), using=SPARSE_VECTOR
        )
        limit = retrieval.candidates(k)  # the ties at k too: `settled` orders them
        if retrieval.mode == "sparse":
            request = qe.QueryRequest(
                limit=limit, query=sparse, with_payload=True, filter=where, with_vector=with_vectors
            )
        else:
            assert retrieval.dense is not None
            params = qe.SearchParams(hnsw_ef=self.ef_search) if self.ef_search else None
            dense = qe.Query.Nearest(qdrant_base.query_vector(retrieval.dense))
            request = qe.QueryRequest(
                limit=limit,
                prefetches=[
                    qe.Prefetch(limit=limit, query=dense, params=params, filter=where),
                    qe.Prefetch(limit=limit, query=sparse, filter=where),
                ],
                query=_rrf(retrieval),
                with_payload=True,
                filter=where,
                with_vector=with_vectors,
            )
        with edge_errors(f"{retrieval.mode} query on '{self.collection}'"):
            points = shard.query(request)
        return settled(qdrant_base.hits(points, with_vectors=with_vectors), k)

    # -- read snapshots --------------------------------------------------------------------

    def _serve(self, live: Path | None, *, locked: bool = False) -> None:
        """Publish the live shard as the read snapshot, unless the pointer names it already; a
        generation another run holds is left to that run (it publishes when it finishes)."""
        if live is None or not (live / SHARD / EDGE_CONFIG).exists():
            return
        manifest = read_manifest(live)
        source = f"{live.name}@{manifest.get('built')}"
        if self._snapshots.is_current(source):
            return
        fd = None if locked else try_lock(live)
        if not locked and fd is None:
            return
        try:
            self._snapshots.publish(
                partial(_fill_snapshot, live),
                fingerprint=manifest.get("fingerprint"),
                source=source,
            )
        finally:
            if fd is not None:
                os.close(fd)
        self._served.invalidate()

    def _catch_up(self) -> bool:
        """Publish the live shard when the read pointer lags behind it and no run holds it; with
        no pointer yet, wait for the run holding the live shard to publish one when it opens.
        Whether a pointer exists."""
        self._serve(self._gens.live_gen())
        deadline = time.monotonic() + FIRST_SNAPSHOT_WAIT
        while self._snapshots.current() is None and self._gens.live_gen() is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return self._snapshots.current() is not None

    # -- internals -------------------------------------------------------------------------

    def _build(self, gen: Path) -> Path:
        """Optimize (segment merge, HNSW build) and flush the shard."""
        self._close_reader()  # it may hold the generation about to be dropped
        with edge_errors(f"optimizing {gen}"):
            self._shard.optimize()
            self._shard.flush()
        return gen

    def _check_reuse(self, manifest: dict[str, Any], gen: Path) -> None:
        """Refuse to reuse a shard created with other options than the configured ones."""
        if manifest:
            qdrant_base.check_shape(
                manifest.get("options", {}), self._shape(), self.collection, str(gen)
            )

    def _shape(self) -> qdrant_base.Shape:
        # A shard is one process's index: shard_number/replication_factor do not apply to it.
        return qdrant_base.wanted_shape(self.options, sharded=False)

    def _load_or_create(self, path: Path, dim: int) -> Any:
        if (path / EDGE_CONFIG).exists():
            return _load(path.parent)
        vectors = qdrant_base.vector_params(self.options, dim, VECTOR_TYPES)
        sparse = None
        if self.sparse.on:  # the IDF is the engine's, computed over the shard at query time
            sparse = {SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
        with edge_errors(f"creating {path}"):
            shard = qe.EdgeShard.create(
                str(path), qe.EdgeConfig(vectors=vectors, sparse_vectors=sparse)
            )
        note_holder(path.parent)
        return shard

    def _ensure_payload_indexes(self, shard: Any) -> None:
        """Keyword indexes on the configured payload fields; a missing one is added on reuse."""
        with edge_errors("creating payload indexes"):
            qdrant_base.ensure_payload_indexes(
                self.options.payload_index,
                lambda: shard.info().payload_schema,
                lambda field: shard.update(
                    qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword)
                ),
            )

    def _forget_reads(self) -> None:
        super()._forget_reads()
        self._shard, self._reader = None, None  # a view opens its own reader
        self._served = self._snapshot_reader()

    def _live_reader(self, *, required: bool) -> Any:
        """The live shard opened for reading, kept until close()/abort()."""
        live = self._live_gen()
        if live is None or not (live / SHARD / EDGE_CONFIG).exists():
            if required:
                raise self._gens.missing()
            return None
        if self._reader is None or self._reader[0] != live:
            self._close_reader()
            self._reader = (live, _load(live))
        return self._reader[1]

    def _writing(self) -> Any:
        if self._shard is None:
            raise not_open(self.name)
        return self._shard

    def _close_reader(self) -> None:
        if self._reader is not None:
            (gen, reader), self._reader = self._reader, None
            _close(reader, gen)

    def _release(self) -> None:
        """Close the shards (close flushes) and drop the lock."""
        self._close_reader()
        shard, self._shard = self._shard, None
        try:
            if shard is not None:
                _close(shard, self._gen)
        finally:
            self._unlock()


def _load(gen: Path) -> Any:
    """Open a generation's shard, noting this process as its holder (a second opener, in any
    process, is told who holds it)."""
    with edge_errors(f"opening {gen / SHARD}", gen):
        shard = qe.EdgeShard.load(str(gen / SHARD))
    note_holder(gen)
    return shard


def _close(shard: Any, gen: Path | None) -> None:
    """Close a shard (close flushes) and drop this process's note as its holder."""
    try:
        with edge_errors("closing the shard"):
            shard.close()
    finally:
        if gen is not None:
            forget_holder(gen)


def _first(shard: Any, where: Any) -> list[Any]:
    """At most one point that passes a filter (no payload): whether there is any."""
    request = qe.ScrollRequest(limit=1, filter=where, with_payload=False, with_vector=False)
    with edge_errors("scroll"):
        return list(shard.scroll(request)[0])


def _page(shard: Any, offset: Any, limit: int, vectors: bool = False) -> tuple[list[Any], Any]:
    """One page of a shard's points with their chunk ids (with `vectors`: whole payloads and
    vectors), and the next offset."""
    request = qe.ScrollRequest(
        offset=offset,
        limit=limit,
        with_payload=True if vectors else ["chunk_id"],
        with_vector=vectors,
    )
    with edge_errors("scroll"):
        records, next_offset = shard.scroll(request)
    return records, next_offset


def _fill_snapshot(live: Path, folder: Path) -> None:
    """A read snapshot of a generation: its shard (closed and flushed) and its manifest."""
    copy_tree(live / SHARD, folder / SHARD)
    shutil.copy2(live / "manifest.json", folder / "manifest.json")


def _open_snapshot(folder: Path) -> Any:
    """A reader's private copy of a snapshot, opened."""
    with edge_errors(f"opening the read snapshot {folder / SHARD}"):
        return qe.EdgeShard.load(str(folder / SHARD))


def _rrf(retrieval: Retrieval) -> Any:
    """Reciprocal rank fusion, weighted by the query's alpha (typed as Any: the stubs do not
    list Fusion.Rrf among the queries QueryRequest takes, the engine does)."""
    return qe.Fusion.Rrf(k=RRF_K, weights=retrieval.weights())


def _close_shard(shard: Any) -> None:
    shard.close()
