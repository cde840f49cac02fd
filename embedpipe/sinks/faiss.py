"""FAISS sink: an append-only Parquet store per generation, an index built from it on close.

Layout under the sink directory:

    <collection>                      symlink to .generations/<collection>__<fp16> (public name)
    .generations/<collection>__<fp16>/manifest.json, store/, index.faiss, ids.parquet, .lock

The store is the source of truth, so the index can be rebuilt (or rebuilt with another
index_factory) without re-encoding. Queries read the live generation's index.faiss, which only
close() or rebuild() replaces, atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedpipe.errors import SinkError
from embedpipe.sinks.base import Hit
from embedpipe.sinks.store import (
    ShardStore,
    atomic_write,
    chunk_table,
    fsync_dir,
    hit_from_payload,
    shard_schema,
    vectors_of,
    write_parquet,
)
from embedpipe.types import Embedded, int_id

GENERATIONS = ".generations"
SIDECAR_COLUMNS = ["faiss_id", "chunk_id", "doc_id", "chunk_index", "text", "metadata"]
POINTS_PER_LIST = 256  # training sample per IVF list, as FAISS recommends


class FaissSink:
    """Vectors in a FAISS index under `directory`, named `collection`, rebuilt from its own store."""

    def __init__(
        self,
        directory: str | Path,
        collection: str,
        *,
        index_factory: str = "Flat",
        keep_previous: bool = False,
        nprobe: int | None = None,
        seed: int = 0,
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.collection = collection
        self.index_factory = index_factory
        self.keep_previous = keep_previous
        self.nprobe = nprobe
        self.seed = seed
        self.uri = f"faiss:{directory}"
        self._gen: Path | None = None  # generation being written, between open and close
        self._new = False
        self._dim = 0
        self._lock: IO[bytes] | None = None
        self._store: ShardStore | None = None  # the written generation's store, during a run
        self._cache: tuple[Any, ...] | None = None  # (key, index, sorted ids, order, sidecar)

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, dim: int, fingerprint: str) -> None:
        """Attach to the live generation when its fingerprint matches, else start a new one."""
        live = self._live()
        if live is not None and _manifest(live).get("fingerprint") == fingerprint:
            gen, self._new = live, False
        else:
            gen, self._new = self._generations() / f"{self.collection}__{fingerprint[:16]}", True
        manifest = _manifest(gen)
        if manifest and manifest.get("dim") != dim:
            raise SinkError(
                f"collection '{self.collection}' has dimension {manifest.get('dim')}, the model "
                f"gives {dim}: choose another --collection or delete {gen}"
            )
        gen.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(gen)
        if not manifest:
            _write_manifest(gen, fingerprint, dim, 0, self.index_factory)
        self._store = ShardStore(gen / "store")
        self._store.remove_temp()
        self._gen, self._dim = gen, dim

    def write(self, embedded: Embedded) -> None:
        """Append the chunks as one shard; returns once the shard is renamed into place."""
        store = self._writing()
        vectors = np.asarray(embedded.vectors, dtype=np.float32)
        if vectors.shape != (len(embedded.chunks), self._dim):
            raise SinkError(
                f"expected vectors of shape ({len(embedded.chunks)}, {self._dim}), got "
                f"{vectors.shape}: the encoder and the opened dimension disagree"
            )
        if not embedded.chunks:
            return
        ids = np.fromiter((int_id(c.id) for c in embedded.chunks), np.int64, len(embedded.chunks))
        store.append(chunk_table(embedded.chunks, vectors, ids))

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Record a tombstone for these chunks; ids that are not present are fine."""
        store = self._writing()
        if chunk_ids:
            store.tombstone(chunk_ids)

    def close(self) -> None:
        """Compact the store, build and write the index, then make this generation live.

        On failure the run stays open (and locked), so the pipeline can retry close() or abort().
        """
        if self._gen is None:
            return
        gen = self._gen
        self._build(gen, self._dim)
        if self._new:
            old = self._live()
            self._swap(gen)
            if old is not None and old != gen and not self.keep_previous:
                shutil.rmtree(old, ignore_errors=True)
        self._release()

    def abort(self) -> None:
        """Unlock without swapping. An unfinished generation is kept for the next run to resume:
        the ledger may already list its acknowledged writes."""
        self._release()

    def rebuild(self) -> None:
        """Rebuild the live index from its store with this sink's index_factory, no re-encoding."""
        if self._gen is not None:
            raise SinkError("rebuild() works on the live index: call it outside open()/close()")
        live = self._live()
        if live is None:
            raise SinkError(
                f"no FAISS index '{self.collection}' in {self.directory}: run embedpipe first"
            )
        self._lock = _lock(live)
        try:
            self._build(live, int(_manifest(live)["dim"]))
        finally:
            self._release()

    # -- reading ---------------------------------------------------------------------------

    def chunk_ids(self) -> Iterator[str]:
        """Every chunk id of the generation being written, or of the live one outside a run."""
        gen = self._gen or self._live()
        table = ShardStore(gen / "store").live(columns=["chunk_id"]) if gen else None
        if table is not None:
            yield from table.column("chunk_id").to_pylist()

    def search(self, vector: np.ndarray, k: int = 5) -> list[Hit]:
        """Top-k hits of the live index by inner product (cosine for normalised vectors)."""
        index, ids_sorted, order, sidecar = self._loaded()
        if index.ntotal == 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        scores, found = index.search(query, min(k, index.ntotal))
        pos = np.minimum(np.searchsorted(ids_sorted, found[0]), len(ids_sorted) - 1)
        # -1 pads a short result; an id the sidecar lacks can only come from a crash mid-build.
        known = (found[0] >= 0) & (ids_sorted[pos] == found[0])
        payloads = sidecar.take(pa.array(order[pos[known]])).to_pylist()
        return [hit_from_payload(s, p) for s, p in zip(scores[0][known], payloads, strict=True)]

    # -- internals -------------------------------------------------------------------------

    def _generations(self) -> Path:
        path = self.directory / GENERATIONS
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _live(self) -> Path | None:
        """The live generation's folder, or None; refuses a public name embedpipe did not make."""
        public = self.directory / self.collection
        if not public.is_symlink():
            if public.exists():
                raise SinkError(
                    f"{public} exists but is not an embedpipe FAISS index: choose another "
                    "--collection or move it away"
                )
            return None
        return public.resolve()

    def _writing(self) -> ShardStore:
        if self._store is None:
            raise SinkError("the FAISS sink is not open: call open(dim, fingerprint) first")
        return self._store

    def _swap(self, gen: Path) -> None:
        """Point the public name at `gen` in one rename."""
        public = self.directory / self.collection
        tmp = self.directory / f".{self.collection}.swap"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path(GENERATIONS) / gen.name)
        os.replace(tmp, public)
        fsync_dir(self.directory)

    def _build(self, gen: Path, dim: int) -> None:
        """Compact the store, then write index.faiss, ids.parquet and the manifest."""
        table = ShardStore(gen / "store").compact()
        if table is None:
            table = shard_schema(dim).empty_table()
        vectors = vectors_of(table) if table.num_rows else np.zeros((0, dim), np.float32)
        ids = table.column("faiss_id").to_numpy()
        index = build_index(vectors, ids, self.index_factory, nprobe=self.nprobe, seed=self.seed)
        # Sidecar first: a reader keyed on index.faiss never pairs a new index with an old sidecar.
        write_parquet(table.select(SIDECAR_COLUMNS), gen / "ids.parquet")
        atomic_write(gen / "index.faiss", lambda f: _write_index(index, f))
        fingerprint = _manifest(gen)["fingerprint"]
        _write_manifest(gen, fingerprint, dim, table.num_rows, self.index_factory)

    def _loaded(self) -> tuple[Any, np.ndarray, np.ndarray, pa.Table]:
        """The live index and its sidecar, cached until index.faiss is replaced."""
        live = self._live()
        if live is None or not (live / "index.faiss").exists():
            raise SinkError(
                f"no FAISS index '{self.collection}' in {self.directory}: run embedpipe first"
            )
        stat = (live / "index.faiss").stat()
        key = (live, stat.st_mtime_ns, stat.st_ino)
        if self._cache is None or self._cache[0] != key:
            index = faiss.read_index(str(live / "index.faiss"))
            _set_nprobe(index, self.nprobe)
            sidecar = pq.read_table(live / "ids.parquet")
            ids = sidecar.column("faiss_id").to_numpy()
            order = np.argsort(ids)
            self._cache = (key, index, ids[order], order, sidecar)
        return self._cache[1], self._cache[2], self._cache[3], self._cache[4]

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
        self._lock, self._gen, self._store, self._new = None, None, None, False


def build_index(
    vectors: np.ndarray, ids: np.ndarray, factory: str, *, nprobe: int | None = None, seed: int = 0
) -> Any:
    """A FAISS inner-product index from `factory`, trained on a sample if needed, ids added."""
    dim = vectors.shape[1]
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise SinkError(f"FAISS cannot build index_factory '{factory}': {exc}. Try 'Flat'") from exc
    if not factory.replace(" ", "").upper().startswith("IDMAP"):
        index = faiss.IndexIDMap2(index)
    if len(vectors) and not index.is_trained:
        _train(index, vectors, factory, seed)
    _set_nprobe(index, nprobe)
    if len(vectors):
        index.add_with_ids(vectors, ids.astype(np.int64, copy=False))
    return index


def _train(index: Any, vectors: np.ndarray, factory: str, seed: int) -> None:
    """Train on a random sample: up to POINTS_PER_LIST points per IVF list."""
    ivf = faiss.try_extract_index_ivf(index)
    nlist = ivf.nlist if ivf is not None else 1
    if len(vectors) < nlist:
        raise SinkError(
            f"index_factory '{factory}' has {nlist} lists but there are only {len(vectors)} "
            f"vectors to train on: use 'Flat' or fewer lists (about n/39, e.g. "
            f"'IVF{max(1, len(vectors) // 39)},Flat')"
        )
    size = min(len(vectors), nlist * POINTS_PER_LIST if ivf is not None else 100_000)
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(len(vectors), size=size, replace=False))]
    try:
        index.train(sample)
    except RuntimeError as exc:
        raise SinkError(
            f"training '{factory}' on {size} vectors failed: {exc}. Use 'Flat' or a smaller index"
        ) from exc


def _set_nprobe(index: Any, nprobe: int | None) -> None:
    """IVF lists probed per query: the given value, else about sqrt(nlist)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(ivf.nlist, nprobe or max(1, round(ivf.nlist**0.5)))


def _write_index(index: Any, f: IO[bytes]) -> None:
    """Stream an index into an open file (no full in-memory copy of it)."""
    writer = faiss.PyCallbackIOWriter(f.write)  # type: ignore[attr-defined]  # not in faiss's stubs
    faiss.write_index(index, writer)


def _manifest(gen: Path) -> dict[str, Any]:
    path = gen / "manifest.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _write_manifest(gen: Path, fingerprint: str, dim: int, count: int, factory: str) -> None:
    old = _manifest(gen)
    data = {
        "fingerprint": fingerprint,
        "dim": dim,
        "index_factory": factory,
        "count": count,
        "created": old.get("created") or datetime.now(timezone.utc).isoformat(),
    }
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(gen / "manifest.json", lambda f: f.write(text.encode()))


def _lock(gen: Path) -> IO[bytes]:
    """Hold an exclusive lock on a generation so two runs never write it at once."""
    f = open(gen / ".lock", "ab")  # noqa: SIM115 - held until close()/abort()
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        f.close()
        raise SinkError(
            f"{gen} is being written by another embedpipe run: wait for it to finish"
        ) from exc
    return f
