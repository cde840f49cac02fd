"""Qdrant Edge sink: the Qdrant engine in-process (qdrant-edge-py), one shard per generation.

Layout under the sink directory (generations as for FAISS, see generations.py):

    <collection>                      symlink to .generations/<collection>__<fp16>
    .generations/<collection>__<fp16>/manifest.json, .lock, shard/ (an Edge shard: wal/, segments/)

Durability: every update goes through the shard's write-ahead log before `update` returns, so an
acknowledged write survives the process being killed (tests/test_sink_edge.py kills a writer and
reloads). close() runs the optimizers (segment merge, HNSW build once a segment is large enough),
flushes, and swaps the symlink for a new generation.

An Edge shard is opened by one EdgeShard at a time (it locks its WAL): a query while a run writes
the same generation fails with a clear message, as Qdrant local mode does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from embedpipe.config import QdrantOptions
from embedpipe.errors import SinkError
from embedpipe.sinks.base import Hit
from embedpipe.sinks.generations import GenerationSink, write_manifest
from embedpipe.sinks.options import Shape, check_shape, wanted_shape
from embedpipe.sinks.store import chunk_payload, hit_from_payload, paired_vectors
from embedpipe.types import Embedded, point_id

SHARD = "shard"
EDGE_CONFIG = "edge_config.json"  # written by Edge when a shard is created
DEFAULT_HNSW = (16, 100)  # Qdrant's m and ef_construct
FULL_SCAN_THRESHOLD = 10_000  # KB of vectors below which a segment is searched exactly


@contextmanager
def edge_errors(action: str) -> Iterator[None]:
    """Qdrant Edge raises bare Exceptions: give them the action and, where known, the fix."""
    try:
        yield
    except SinkError:
        raise
    except Exception as exc:
        hint = ""
        if "WouldBlock" in str(exc):
            hint = ": the shard is open in another process (an embedpipe run?); wait for it"
        raise SinkError(f"Qdrant Edge {action} failed: {exc}{hint}") from exc


class EdgeSink(GenerationSink):
    """Vectors in a Qdrant Edge shard under `directory`, named `collection`."""

    scheme = "qdrant-edge"
    kind = "Qdrant Edge shard"

    def __init__(
        self,
        directory: str | Path,
        collection: str,
        *,
        options: QdrantOptions | None = None,
        write_batch: int = 256,
        ef_search: int | None = None,
        keep_previous: bool = False,
    ) -> None:
        super().__init__(directory, collection, keep_previous=keep_previous)
        self.options = options or QdrantOptions()
        self.write_batch = write_batch
        self.ef_search = ef_search
        self._shard: Any = None  # the EdgeShard being written
        self._reader: tuple[Path, Any] | None = None  # (generation, EdgeShard) read outside a run

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, dim: int, fingerprint: str) -> None:
        """Attach to the live shard when its fingerprint matches, else start a new generation."""
        self._close_reader()
        gen, manifest = self._claim(dim, fingerprint)
        try:
            self._shard = self._load_or_create(gen / SHARD, dim)
            self._ensure_payload_indexes(self._shard)
            if not manifest:
                write_manifest(gen, fingerprint=fingerprint, dim=dim, options=self._shape())
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
            rows = vectors[lo : lo + self.write_batch].tolist()
            points = [
                qe.Point(point_id(c.id), row, chunk_payload(c))
                for c, row in zip(chunks, rows, strict=True)
            ]
            with edge_errors(f"upsert into {self._gen}"):
                shard.update(qe.UpdateOperation.upsert_points(points))

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks; ids that are not present are fine."""
        shard = self._writing()
        for lo in range(0, len(chunk_ids), self.write_batch):
            ids: list[Any] = [point_id(c) for c in chunk_ids[lo : lo + self.write_batch]]
            with edge_errors(f"delete from {self._gen}"):
                shard.update(qe.UpdateOperation.delete_points(ids))

    def close(self, promote: bool = True) -> None:
        """Optimize and flush the shard, then make a new generation live (dropping the old one)
        when `promote`, else keep it staged for a later run to resume and promote.

        On failure the run stays open (and locked), so the pipeline can retry close() or abort().
        """
        if self._gen is None:
            return
        gen = self._gen
        self._close_reader()  # it may hold the generation about to be dropped
        with edge_errors(f"optimizing {gen}"):
            self._shard.optimize()
            self._shard.flush()
        if self._new and promote:
            self._drop_replaced(self._swap(gen))
        self._release()

    def abort(self) -> None:
        """Close the shard without swapping. Its acknowledged writes stay for the next run."""
        self._release()

    # -- reading ---------------------------------------------------------------------------

    def chunk_ids(self, fingerprint: str | None = None) -> Iterator[str]:
        """Every chunk id of `fingerprint`'s shard, else of the one being written, else of the
        live one."""
        gen = self._read_gen(fingerprint)
        if gen is None or not (gen / SHARD / EDGE_CONFIG).exists():
            return
        if self._shard is not None and gen == self._gen:
            yield from self._scroll(self._shard)
        elif gen == self._gens.live():
            yield from self._scroll(self._live_reader(required=True))
        else:  # a staged shard, opened for this read only
            with edge_errors(f"opening {gen / SHARD}"):
                shard = qe.EdgeShard.load(str(gen / SHARD))
            try:
                yield from self._scroll(shard)
            finally:
                shard.close()

    def _scroll(self, shard: Any) -> Iterator[str]:
        offset: Any = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=max(self.write_batch, 256), with_payload=["chunk_id"]
            )
            with edge_errors("scroll"):
                records, offset = shard.scroll(request)
            yield from (str((r.payload or {}).get("chunk_id", "")) for r in records)
            if offset is None:
                return

    def search(self, vector: np.ndarray, k: int = 5) -> list[Hit]:
        """Top-k hits of the live shard by cosine similarity."""
        live = self._gens.live()
        shard = self._shard if self._gen is not None and self._gen == live else None
        shard = shard or self._live_reader(required=True)
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        params = qe.SearchParams(hnsw_ef=self.ef_search) if self.ef_search else None
        request = qe.QueryRequest(
            limit=k, query=qe.Query.Nearest(query), with_payload=True, params=params
        )
        with edge_errors(f"query on '{self.collection}'"):
            points = shard.query(request)
        return [hit_from_payload(p.score, p.payload or {}) for p in points]

    # -- internals -------------------------------------------------------------------------

    def _check_reuse(self, manifest: dict[str, Any], gen: Path) -> None:
        """Refuse to reuse a shard created with other options than the configured ones."""
        if manifest:
            check_shape(manifest.get("options", {}), self._shape(), self.collection, str(gen))

    def _shape(self) -> Shape:
        # A shard is one process's index: shard_number/replication_factor do not apply to it.
        return {
            k: v
            for k, v in wanted_shape(self.options).items()
            if k not in ("shard_number", "replication_factor")
        }

    def _edge_config(self, dim: int) -> Any:
        opts = self.options
        hnsw = None
        if opts.hnsw.m is not None or opts.hnsw.ef_construct is not None:
            hnsw = qe.HnswIndexConfig(
                m=opts.hnsw.m or DEFAULT_HNSW[0],
                ef_construct=opts.hnsw.ef_construct or DEFAULT_HNSW[1],
                full_scan_threshold=FULL_SCAN_THRESHOLD,
            )
        quantization: Any = None
        if opts.quantization == "int8":
            quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True)
        elif opts.quantization == "binary":
            quantization = qe.BinaryQuantizationConfig(always_ram=True)
        vectors = qe.EdgeVectorParams(
            size=dim,
            distance=qe.Distance.Cosine,
            memory=qe.Memory.Cold if opts.on_disk else None,
            hnsw_config=hnsw,
            quantization_config=quantization,
        )
        return qe.EdgeConfig(vectors=vectors)

    def _load_or_create(self, path: Path, dim: int) -> Any:
        with edge_errors(f"opening {path}"):
            if (path / EDGE_CONFIG).exists():
                return qe.EdgeShard.load(str(path))
            return qe.EdgeShard.create(str(path), self._edge_config(dim))

    def _ensure_payload_indexes(self, shard: Any) -> None:
        """Keyword indexes on the configured payload fields; a missing one is added on reuse."""
        with edge_errors("creating payload indexes"):
            have = set(shard.info().payload_schema)
            for field in self.options.payload_index:
                if field not in have:
                    op = qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword)
                    shard.update(op)

    def _live_reader(self, *, required: bool) -> Any:
        """The live shard opened for reading, kept until close()/abort()."""
        live = self._gens.live()
        if live is None or not (live / SHARD / EDGE_CONFIG).exists():
            if required:
                raise self._gens.missing()
            return None
        if self._reader is None or self._reader[0] != live:
            self._close_reader()
            with edge_errors(f"opening {live / SHARD}"):
                self._reader = (live, qe.EdgeShard.load(str(live / SHARD)))
        return self._reader[1]

    def _writing(self) -> Any:
        if self._shard is None:
            raise SinkError("the Qdrant Edge sink is not open: call open(dim, fingerprint) first")
        return self._shard

    def _close_reader(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader[1], None
            reader.close()

    def _release(self) -> None:
        """Close the shards (close flushes) and drop the lock."""
        self._close_reader()
        shard, self._shard = self._shard, None
        try:
            if shard is not None:
                with edge_errors("closing the shard"):
                    shard.close()
        finally:
            self._unlock()
