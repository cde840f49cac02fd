"""FAISS sink: an append-only Parquet store per generation, an index built from it on close.

Layout under the sink directory:

    <collection>                      symlink to .generations/<collection>__<fp16> (public name)
    .generations/<collection>__<fp16>/manifest.json, store/, index.faiss, ids.parquet, .lock

The store is the source of truth, so the index can be rebuilt (or rebuilt with another
index_factory) without re-encoding. Queries read the live generation's index.faiss, which only
close() or rebuild() replaces, atomically. write() only appends to the store, so other
processes may append to it too during a run, through remote_writer().

close() updates the index in place when it can: the ids a run wrote or deleted are removed
(`remove_ids`) and their live rows added again, without re-training. Index types that cannot
remove ids (HNSW), a changed index_factory, or a corpus grown past RETRAIN_GROWTH times the rows
the index was trained on get a full rebuild from the store instead.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, ClassVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedpipe.config import SinkConfig
from embedpipe.durable import atomic_write
from embedpipe.errors import SinkError
from embedpipe.sinks.base import Hit, ReadView
from embedpipe.sinks.filters import Rows, parse, require_fields
from embedpipe.sinks.generations import lock, read_manifest, write_manifest
from embedpipe.sinks.shard_backed import StoredSink
from embedpipe.sinks.shards import (
    ShardStore,
    arrow_indices,
    hit_from_payload,
    numpy_of,
    read_parquet,
    shard_schema,
    vectors_of,
    write_parquet,
)
from embedpipe.types import int_id

log = logging.getLogger(__name__)

SIDECAR_COLUMNS = [
    "faiss_id",
    "chunk_id",
    "doc_id",
    "chunk_index",
    "text",
    "content_hash",
    "start",
    "end",
    "metadata",
]
POINTS_PER_CENTROID = 256  # training sample per k-means centroid: more adds time, not quality
MIN_POINTS_PER_CENTROID = 39  # below this FAISS warns that k-means is poorly trained
EXACT_COLUMNS = ["chunk_id", "faiss_id", "vector"]  # what an exact filtered search reads
RETRAIN_GROWTH = 4  # re-train when the corpus grew past this multiple of the training rows
BUILD_KEY = b"embedpipe_build"  # the sidecar's schema metadata: the index build it pairs with
LOAD_TRIES = 50  # a reader loading while a run publishes looks again (0.05 s apart)


@dataclass(frozen=True)
class Loaded:
    """One build of the live index as a reader loaded it: the index, its sidecar (sorted ids,
    their rows, the filterable payload), and the manifest of the build (fingerprint, the store
    sequence it was built from)."""

    key: tuple[Any, ...]
    index: Any
    ids_sorted: np.ndarray
    order: np.ndarray
    sidecar: pa.Table
    rows: Rows
    manifest: dict[str, Any]
    gen: Path


class FaissSink(StoredSink):
    """Vectors in a FAISS index under `directory`, named `collection`, rebuilt from its own store."""

    scheme, name, kind = "faiss", "FAISS", "FAISS index"
    first_manifest: ClassVar[dict[str, Any]] = {"index_factory": None, "count": 0}

    def __init__(
        self,
        directory: str | Path,
        collection: str,
        *,
        index_factory: str | None = None,
        keep_previous: bool = False,
        nprobe: int | None = None,
        ef_search: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(directory, collection, keep_previous=keep_previous)
        self.index_factory = index_factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.seed = seed
        self._cache: Loaded | None = None  # the live index as last loaded

    @classmethod
    def from_config(cls, scheme: str, location: str, cfg: SinkConfig) -> FaissSink:
        """The sink a faiss:DIR URI names."""
        return cls(
            location,
            cfg.collection,
            index_factory=cfg.index_factory,
            nprobe=cfg.nprobe,
            ef_search=cfg.ef_search,
            keep_previous=cfg.keep_previous,
        )

    def factory(self, gen: Path) -> str:
        """The index_factory to build `gen` with: the configured one, else the one it was built
        with (so a `rebuild` to another type sticks), else Flat."""
        return self.index_factory or read_manifest(gen).get("index_factory") or "Flat"

    def rebuild(self) -> None:
        """Re-train and rebuild the live index from its store with this sink's index_factory,
        without re-encoding."""
        if self._gen is not None:
            raise SinkError("rebuild() works on the live index: call it outside open()/close()")
        live = self._live_gen()
        if live is None:
            raise self._gens.missing()
        self._lock = lock(live)
        try:
            self._build_index(live, int(read_manifest(live)["dim"]), incremental=False)
        finally:
            self._release()

    # -- reading ---------------------------------------------------------------------------

    def search(
        self,
        vector: np.ndarray,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k hits of the live index by inner product (cosine for normalised vectors), among
        the chunks `filter` passes: the index searches only their ids (an id selector), and
        when it finds fewer than k of them (IVF probes too few lists; PQ takes no selector) they
        are scored exactly from the store, as it was when the index was built."""
        with self.serving() as view:
            return view.search(vector, k, filter, with_vectors=with_vectors)

    @contextmanager
    def serving(self) -> Iterator[ReadView]:
        """The live index as last built, loaded whole (index and sidecar of one build), held
        for one query; a newer build is loaded when index.faiss was replaced."""
        loaded = self._loaded()
        fingerprint = loaded.manifest.get("fingerprint")
        yield ReadView(fingerprint, loaded.manifest, partial(self._search, loaded))

    def close_served(self) -> None:
        """Forget the loaded index."""
        self._cache = None

    def _search(
        self,
        loaded: Loaded,
        vector: np.ndarray,
        k: int,
        filter: Mapping[str, Any] | None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        expr = parse(filter)
        rows = loaded.rows
        require_fields(
            expr,
            rows.has,
            rows.fields,
            f"'{self.collection}'",
            empty=lambda: rows.table.num_rows == 0,
        )
        index, ids_sorted, order, sidecar = (
            loaded.index,
            loaded.ids_sorted,
            loaded.order,
            loaded.sidecar,
        )
        if index.ntotal == 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if expr is None:
            with one_omp_thread():
                scores, found = index.search(query, min(k, index.ntotal))
        else:
            allowed = sidecar.column("faiss_id").to_numpy()[rows.mask(expr)]
            want = min(k, len(allowed))
            if want == 0:
                return []
            with one_omp_thread():
                scores, found = selected_search(index, query, want, allowed)
            if int((found[0] >= 0).sum()) < want:
                scores, found = self._exact(loaded, query, want, allowed)
        pos = np.minimum(np.searchsorted(ids_sorted, found[0]), len(ids_sorted) - 1)
        # -1 pads a short result; an id the sidecar lacks can only come from a crash mid-build.
        known = (found[0] >= 0) & (ids_sorted[pos] == found[0])
        payloads = sidecar.take(arrow_indices(order[pos[known]])).to_pylist()
        if not with_vectors:
            return [hit_from_payload(s, p) for s, p in zip(scores[0][known], payloads, strict=True)]
        kept = self._stored_vectors(loaded, found[0][known])
        return [
            hit_from_payload(s, p, v)
            for s, p, v in zip(scores[0][known], payloads, kept, strict=True)
        ]

    def _stored_vectors(self, loaded: Loaded, ids: np.ndarray) -> np.ndarray:
        """The exact vectors of these FAISS ids, in their order (an IVF or PQ index keeps only
        approximations of them), from the store as the loaded build was built from it; when a
        newer build compacted those files away, from the store as it is now."""
        store = ShardStore(loaded.gen / "store")
        try:
            try:
                table = store.live(EXACT_COLUMNS, upto=loaded.manifest.get("indexed_seq"))
            except FileNotFoundError:
                table = store.live(EXACT_COLUMNS)
        except FileNotFoundError:  # a promotion removed the generation meanwhile
            table = None
        if len(ids) == 0:
            return np.zeros((0, int(loaded.manifest.get("dim") or 0)), np.float32)
        if table is not None:
            wanted = arrow_indices(ids)  # the ids as int64 (pa.array would import pandas)
            table = table.filter(pc.is_in(table.column("faiss_id"), value_set=wanted))
            stored = numpy_of(table.column("faiss_id"))
            at = np.argsort(stored)
            place = at[np.minimum(np.searchsorted(stored, ids, sorter=at), len(at) - 1)]
            if len(stored) and (stored[place] == ids).all():
                return vectors_of(table)[place]
        raise SinkError(
            f"the FAISS index '{self.collection}' in {self.directory} changed while it was "
            "read: try again"
        )

    def _exact(
        self, loaded: Loaded, query: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids of the top k of `ids`, exactly, from the store's vectors as the index
        was built from them (a run's later writes are not in the index yet)."""
        upto = loaded.manifest.get("indexed_seq")
        try:
            table = ShardStore(loaded.gen / "store").live(EXACT_COLUMNS, upto=upto)
        except FileNotFoundError:  # a newer build compacted them away: the index is stale
            table = None
        if table is None:
            return np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64)
        table = table.filter(pc.is_in(table.column("faiss_id"), value_set=pa.array(ids)))
        scores = vectors_of(table) @ query[0]
        top = np.argsort(-scores, kind="stable")[:k]
        return scores[top][None, :], table.column("faiss_id").to_numpy()[top][None, :]

    # -- internals -------------------------------------------------------------------------

    def _build(self, gen: Path) -> Path:
        """Compact the store and build the index from it, updating the last one when it can."""
        self._build_index(gen, self._dim, incremental=True)
        return gen

    def _build_index(self, gen: Path, dim: int, *, incremental: bool) -> None:
        """Compact the store, then write index.faiss, ids.parquet and the manifest.

        `incremental`: update the existing index with what changed since it was written, when
        the index type and the manifest allow it; otherwise (re-)train and build from scratch.
        """
        store = ShardStore(gen / "store")
        manifest = read_manifest(gen)
        factory = self.factory(gen)
        changed = self._changed_since_index(gen, store, manifest) if incremental else None
        table = store.compact(remove_old=False)  # readers of the last index may read them
        if table is None:
            table = shard_schema(dim).empty_table()
        files = store.files()
        indexed_seq = files[-1][0] if files else 0
        index = None if changed is None else _updated_index(gen / "index.faiss", table, changed)
        trained_rows = manifest.get("trained_rows", 0)
        if index is None:
            vectors = vectors_of(table) if table.num_rows else np.zeros((0, dim), np.float32)
            ids = table.column("faiss_id").to_numpy()
            index = build_index(vectors, ids, factory, seed=self.seed)
            trained_rows = table.num_rows
        # Sidecar, index, manifest, in this order, the build's token in the first and the last:
        # a reader (see _load) pairs an index only with the sidecar of its own build.
        build = secrets.token_hex(8)
        sidecar = table.select(SIDECAR_COLUMNS)
        sidecar = sidecar.replace_schema_metadata({BUILD_KEY: build.encode()})
        write_parquet(sidecar, gen / "ids.parquet")
        atomic_write(gen / "index.faiss", lambda f: _write_index(index, f))
        write_manifest(
            gen,
            dim=dim,
            index_factory=factory,
            count=table.num_rows,
            trained_rows=trained_rows,
            indexed_seq=indexed_seq,
            index_build=build,
        )
        store.remove_before(indexed_seq)

    def _changed_since_index(
        self, gen: Path, store: ShardStore, manifest: dict[str, Any]
    ) -> set[str] | None:
        """Chunk ids written or deleted since index.faiss was written; None = rebuild it."""
        seq, trained = manifest.get("indexed_seq"), manifest.get("trained_rows", 0)
        if (
            seq is None
            or manifest.get("index_factory") != self.factory(gen)
            or not (gen / "index.faiss").exists()
        ):
            return None
        changed: set[str] = set()
        rows = 0
        for s, kind, path in store.files():
            table = read_parquet(path, ["chunk_id"])
            rows += table.num_rows if kind == "shard" else 0
            if s > seq:
                changed.update(table.column("chunk_id").to_pylist())
        if trained and rows > RETRAIN_GROWTH * trained:
            log.info("the index grew past %dx its training rows: re-training", RETRAIN_GROWTH)
            return None
        return changed

    def _loaded(self) -> Loaded:
        """The live index and its sidecar, cached until index.faiss is replaced. A run may be
        publishing a build meanwhile (sidecar, index, manifest) or a promotion removing this
        generation: what was read is checked to be one build, else read again."""
        for _ in range(LOAD_TRIES):
            try:
                loaded = self._load()
            except FileNotFoundError:
                loaded = None
            if loaded is not None:
                self._cache = loaded
                return loaded
            time.sleep(0.05)
        raise SinkError(
            f"the FAISS index '{self.collection}' in {self.directory} kept changing while it was "
            "read: try again"
        )

    def _load(self) -> Loaded | None:
        """The live build, or None when the files read belong to different builds."""
        live = self._live_gen()
        if live is None or not (live / "index.faiss").exists():
            raise self._gens.missing()
        manifest = read_manifest(live)  # first: its build was written after its index
        stat = (live / "index.faiss").stat()
        key = (live, stat.st_mtime_ns, stat.st_ino)
        if self._cache is not None and self._cache.key == key:
            return self._cache
        index = faiss.read_index(str(live / "index.faiss"))
        set_search_params(index, nprobe=self.nprobe, ef_search=self.ef_search)
        sidecar = read_parquet(live / "ids.parquet")
        build = (sidecar.schema.metadata or {}).get(BUILD_KEY)
        if build is not None and build.decode() != manifest.get("index_build"):
            return None
        sidecar = sidecar.replace_schema_metadata(None)
        ids = numpy_of(sidecar.column("faiss_id"))
        order = np.argsort(ids)
        return Loaded(key, index, ids[order], order, sidecar, Rows(sidecar), manifest, live)


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
    set_search_params(index, nprobe=nprobe)
    if len(vectors):
        index.add_with_ids(vectors, ids.astype(np.int64, copy=False))
    return index


@contextmanager
def one_omp_thread() -> Iterator[None]:
    """Run one query's search on the calling thread alone.

    FAISS parallelises over OpenMP threads; for one query that means waking a team for
    microseconds of work, after which libgomp's threads spin-wait (its default wait policy) on the
    cores the next query's encoding needs: p50 ~4x higher than with OMP_WAIT_POLICY=PASSIVE.
    The thread count is an OpenMP per-thread setting, so this changes nothing for other threads
    (a rebuild's training keeps every core) and needs no lock.
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def selected_search(
    index: Any, query: np.ndarray, k: int, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Search only among `ids` with an id selector, keeping the index's nprobe / efSearch; an
    empty result (-1 ids) when the index type takes no selector."""
    fx: Any = faiss  # its stubs lack the search parameters' keywords
    selector = fx.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
    ivf = fx.try_extract_index_ivf(index)
    inner = fx.downcast_index(_inner(index))
    if ivf is not None:
        params = fx.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)
    elif hasattr(inner, "hnsw"):
        params = fx.SearchParametersHNSW(sel=selector, efSearch=inner.hnsw.efSearch)
    else:
        params = fx.SearchParameters(sel=selector)
    try:
        scores, found = index.search(query, k, params=params)
        return scores, found
    except RuntimeError:  # PQ and friends: "invalid search params"
        return np.zeros((1, k), np.float32), np.full((1, k), -1, np.int64)


def centroids(index: Any) -> int:
    """The largest k-means a training runs: IVF lists, or the codes of one PQ sub-quantizer."""
    ivf = faiss.try_extract_index_ivf(index)
    inner = ivf if ivf is not None else getattr(index, "index", index)
    pq_ = getattr(faiss.downcast_index(inner), "pq", None)
    return max(ivf.nlist if ivf is not None else 1, pq_.ksub if pq_ is not None else 1)


def training_size(n: int, k: int) -> int:
    """Rows to train on: POINTS_PER_CENTROID per centroid, at most all of them."""
    return min(n, k * POINTS_PER_CENTROID)


def _train(index: Any, vectors: np.ndarray, factory: str, seed: int) -> None:
    """Train on a uniform random sample sized from the number of centroids."""
    k = centroids(index)
    if len(vectors) < k:
        raise SinkError(
            f"index_factory '{factory}' needs {k} centroids but there are only {len(vectors)} "
            f"vectors to train on: use 'Flat' or fewer lists (about n/39, e.g. "
            f"'IVF{max(1, len(vectors) // MIN_POINTS_PER_CENTROID)},Flat')"
        )
    if len(vectors) < MIN_POINTS_PER_CENTROID * k:
        log.warning(
            "training '%s' on %d vectors: under %d per centroid (k=%d), recall suffers; "
            "use fewer lists or PQ bits, or Flat/HNSW for a corpus this size",
            factory,
            len(vectors),
            MIN_POINTS_PER_CENTROID,
            k,
        )
    size = training_size(len(vectors), k)
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(len(vectors), size=size, replace=False))]
    try:
        index.train(sample)
    except RuntimeError as exc:
        raise SinkError(
            f"training '{factory}' on {size} vectors failed: {exc}. Use 'Flat' or a smaller index"
        ) from exc


def set_search_params(
    index: Any, *, nprobe: int | None = None, ef_search: int | None = None
) -> None:
    """Query-time knobs: IVF lists probed (default about sqrt(nlist)) and HNSW efSearch."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(ivf.nlist, nprobe or max(1, round(ivf.nlist**0.5)))
    if ef_search is not None and "HNSW" in type(faiss.downcast_index(_inner(index))).__name__:
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", ef_search)


def _inner(index: Any) -> Any:
    """The index an IDMap wraps (or the index itself)."""
    return getattr(faiss.downcast_index(index), "index", index)


def _updated_index(path: Path, table: pa.Table, changed: set[str]) -> Any:
    """The index at `path` with the changed chunks removed and their live rows added again;
    None when the index type cannot remove ids (HNSW) or the result does not add up."""
    index = faiss.read_index(str(path))
    if changed:
        gone = np.fromiter((int_id(c) for c in changed), np.int64, len(changed))
        try:
            index.remove_ids(gone)  # type: ignore[arg-type]  # the wrapper takes an array
        except RuntimeError:
            return None  # HNSW and friends: rebuild from the store
        column = table.column("chunk_id")
        mask = pc.is_in(column, value_set=pa.array(list(changed), pa.string()))
        rows = table.filter(mask)
        if rows.num_rows:
            ids = rows.column("faiss_id").to_numpy()
            index.add_with_ids(vectors_of(rows), ids.astype(np.int64, copy=False))
    return index if index.ntotal == table.num_rows else None


def _write_index(index: Any, f: IO[bytes]) -> None:
    """Stream an index into an open file (no full in-memory copy of it)."""
    writer = faiss.PyCallbackIOWriter(f.write)  # type: ignore[attr-defined]  # not in faiss's stubs
    faiss.write_index(index, writer)
