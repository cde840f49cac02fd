"""Qdrant sink: one physical collection per fingerprint, served under an alias.

The physical collection is `<collection>__<fingerprint[:12]>`; the public name is an alias that
close() moves in one `update_collection_aliases` call, so a re-embed stays invisible until it is
complete. Works with local mode (`QdrantClient(path=...)`) and with a server (`url=...`); with a
server, `QdrantWriter`s (qdrant_writer.py) let other processes upsert into the collection a run
writes.

Local mode lets one client open its folder at a time, so its queries never open it: a finished
run (and a promotion) publishes the live collection as a read snapshot, which readers copy
privately and follow (see snapshots.py), as for Qdrant Edge.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from embedpipe.config import QdrantOptions, SinkConfig, SparseConfig
from embedpipe.durable import forget_holder, held_by
from embedpipe.errors import SinkError, TransientSinkError
from embedpipe.faults import crash_point
from embedpipe.redact import redact_uri
from embedpipe.sinks import qdrant_base
from embedpipe.sinks.base import Capabilities, Hit, ReadView, not_open, not_rebuildable
from embedpipe.sinks.filters import parse, require_fields
from embedpipe.sinks.qdrant_writer import (
    FILTER_TYPES,
    VECTOR_TYPES,
    QdrantWriter,
    client_for,
    collection_shape,
    foreign_collection,
    qdrant_errors,
    server_client,
    upsert,
)
from embedpipe.sinks.registry import SINKS
from embedpipe.sinks.snapshots import SnapshotReader, Snapshots, copy_tree
from embedpipe.sinks.sparse import (
    RRF_K,
    SPARSE_VECTOR,
    Bm25Encoder,
    Retrieval,
    settings_of,
    settled,
)
from embedpipe.types import Embedded

__all__ = ["VECTOR_TYPES", "QdrantSink", "QdrantWriter", "qdrant_errors", "server_client"]

log = logging.getLogger(__name__)

LOCK_PATIENCE = 10.0  # seconds a client waits for local mode's folder (a reader's snapshot copy)
FIRST_SNAPSHOT_WAIT = 30.0  # seconds a reader waits for a running run to publish the first one


class QdrantSink:
    """Vectors in Qdrant, local (`local_path`) or on a server (`url`), under an alias `collection`."""

    name = "Qdrant"

    def __init__(
        self,
        collection: str,
        *,
        local_path: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        write_batch: int = 256,
        keep_previous: bool = False,
        timeout: int | None = None,
        options: QdrantOptions | None = None,
        ef_search: int | None = None,
        sparse: SparseConfig | None = None,
    ) -> None:
        if (local_path is None) == (url is None):
            raise SinkError("QdrantSink needs exactly one of local_path= or url=")
        self.collection = collection
        self.local_path = None if local_path is None else str(Path(local_path).expanduser())
        self.url = url
        self.api_key = api_key
        self.write_batch = write_batch
        self.keep_previous = keep_previous
        self.timeout = timeout
        self.options = options or QdrantOptions()
        self.ef_search = ef_search
        self.sparse = sparse or SparseConfig()
        self._bm25: Bm25Encoder | None = None  # the collection being written keeps BM25 vectors
        # The public name (reports, ledger keys, messages) never holds a secret; `url` does.
        self.uri = f"qdrant:{local_path}" if local_path is not None else redact_uri(f"qdrant+{url}")
        self._client: QdrantClient | None = None
        self._target: str | None = None  # physical collection being written
        self._new = False
        self._retired: str | None = None  # previous live collection, until it is dropped
        self._pin: str | None = None  # a pinned view's collection (see pinned())
        self._snapshots: Snapshots | None = None  # local mode's read snapshots
        self._served: SnapshotReader[QdrantClient] | None = None  # local mode's queries' copy
        if self.local_path is not None:
            self._snapshots = Snapshots(Path(self.local_path), collection)
            self._served = SnapshotReader(
                self._snapshots, _open_snapshot, _close_client, self._catch_up, self._not_served
            )

    @classmethod
    def from_config(cls, scheme: str, location: str, cfg: SinkConfig) -> QdrantSink:
        """The sink a qdrant:PATH (local mode) or qdrant+http(s)://HOST:PORT URI names; a server's
        API key comes from QDRANT_API_KEY unless the URI carries one."""
        where: dict[str, Any] = {"local_path": location}
        if scheme != "qdrant":
            url = f"{scheme.partition('+')[2]}:{location}"
            where = {"url": url, "api_key": os.environ.get("QDRANT_API_KEY")}
        return cls(
            cfg.collection,
            **where,
            write_batch=cfg.write_batch,
            options=cfg.qdrant,
            ef_search=cfg.ef_search,
            keep_previous=cfg.keep_previous,
            sparse=cfg.sparse,
        )

    @property
    def capabilities(self) -> Capabilities:
        """What the registry declares for local mode, or for a server."""
        return SINKS[self.uri.partition(":")[0].lower()].capabilities

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self, patience: float = LOCK_PATIENCE) -> QdrantClient:
        """The client, created on first use (local mode takes a lock on its folder, waiting up
        to `patience` seconds: a reader publishing a read snapshot holds it for a copy)."""
        deadline = time.monotonic() + patience
        while self._client is None:
            try:
                self._client = client_for(
                    self.uri,
                    path=self.local_path,
                    url=self.url,
                    api_key=self.api_key,
                    timeout=self.timeout,
                )
            except SinkError as exc:
                if "already accessed" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        return self._client

    def open(self, dim: int, fingerprint: str) -> None:
        """Attach to the live collection when its fingerprint matches, else create a new one."""
        client = self.connect()
        physical = self._physical(fingerprint)
        with qdrant_errors(f"opening '{self.collection}'"):
            live = self._live()
            if live is None and client.collection_exists(self.collection):
                self._refuse_foreign(dim)
            if client.collection_exists(physical):
                # Either the live index (incremental run) or an unfinished re-embed to resume.
                self._check_dim(physical, dim)
                qdrant_base.check_shape(
                    self.shape(physical), qdrant_base.wanted_shape(self.options), physical, self.uri
                )
            else:
                self._create(physical, dim)
            self._ensure_payload_indexes(physical)
            self._bm25 = self._sparse_of(physical)
        self._target, self._new = physical, live != physical
        self._serve(live)  # a crashed run's writes, or an index older than read snapshots

    def write(self, embedded: Embedded) -> None:
        """Upsert in requests of `write_batch` points; returns once Qdrant acknowledged them."""
        target = self._writing()
        upsert(self.connect(), target, embedded, self.write_batch, self.options.layout, self._bm25)

    def remote_writer(self) -> QdrantWriter:
        """A writer other processes upsert into this run's collection with (servers only)."""
        target = self._writing()
        if self.url is None:
            raise SinkError(
                f"Qdrant local mode ({self.local_path}) is one process only: write from the "
                "driver, or use a Qdrant server (qdrant+http://HOST:PORT)"
            )
        return QdrantWriter(
            target,
            self.url,
            self.api_key,
            self.timeout,
            self.write_batch,
            layout=self.options.layout,
            sparse=None if self._bm25 is None else self._bm25.cfg,
        )

    def rebuild(self) -> None:
        """Refused: Qdrant keeps no vectors of its own to re-train from."""
        raise not_rebuildable(self.uri)

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks in batches; ids that are not present are fine."""
        target = self._writing()
        for lo in range(0, len(chunk_ids), self.write_batch):
            ids: list[models.ExtendedPointId] = [
                qdrant_base.point_ref(c) for c in chunk_ids[lo : lo + self.write_batch]
            ]
            with qdrant_errors(f"delete from '{target}'"):
                self.connect().delete(
                    target, points_selector=models.PointIdsList(points=ids), wait=True
                )

    def close(self, promote: bool = True) -> None:
        """Move the alias to a new collection (dropping the old one) when `promote`, else keep
        it staged for a later run to resume and promote; then release the client.

        On failure the run stays open, so the pipeline can retry close() or abort().
        """
        if self._target is not None and self._new and promote:
            self._swap(self._target)
        if self._target is not None:
            self._serve(self._live())
        self._release()

    def abort(self) -> None:
        """Release the client without switching the public name.

        An unfinished new collection is kept, not dropped: the ledger may already list its
        acknowledged writes, and the next run with the same fingerprint resumes it.
        """
        self._release()

    def promote(self, fingerprint: str) -> None:
        """Move the alias to the collection built under `fingerprint` (kept for rollback unless
        the sink does not keep_previous), then release the client."""
        try:
            self._swap(self._existing(fingerprint))
            self._serve(self._live())
        finally:
            self._release()

    def drop(self, fingerprint: str) -> None:
        """Delete a collection that is not live (nothing to do when there is none)."""
        name = self._physical(fingerprint)
        try:
            with qdrant_errors(f"dropping '{name}'"):
                if name == self._live():
                    raise SinkError(f"'{name}' is live: promote or roll back to another first")
                if self.connect().collection_exists(name):
                    self.connect().delete_collection(name)
        finally:
            self._release()

    def pinned(self, fingerprint: str) -> QdrantSink:
        """A read-only view whose search and chunk_ids read `fingerprint`'s collection as live.
        It opens its own client: release it with abort() before this sink connects again."""
        name = self._existing(fingerprint)
        self._release()  # local mode: one client per folder at a time
        view = copy.copy(self)
        view._pin = name
        return view

    # -- reading ---------------------------------------------------------------------------

    def live_fingerprint(self) -> str | None:
        """The start of the live collection's fingerprint (its name keeps 12 characters)."""
        live = self._live()
        return None if live is None else live.rpartition("__")[2] or None

    def describe(self, fields: Mapping[str, Any]) -> None:
        """Record what the collection being written was built with in its metadata (servers
        before Qdrant 1.16 keep none: readers then fall back to the ledger)."""
        target = self._writing()
        try:
            with qdrant_errors(f"describing '{target}'"):
                self.connect().update_collection(target, metadata=dict(fields))
        except TransientSinkError:
            raise
        except SinkError as exc:
            log.warning("%s: the collection keeps no manifest", exc)

    def manifest(self) -> dict[str, Any]:
        """The live collection's metadata ({} when none is live or it has none)."""
        live = self._live()
        if live is None:
            return {}
        with qdrant_errors(f"reading the metadata of '{live}'"):
            metadata = self.connect().get_collection(live).config.metadata
        return dict(metadata or {})

    def chunk_ids(self, fingerprint: str | None = None) -> Iterator[str]:
        """Every chunk id of `fingerprint`'s collection, else of the one being written, else of
        the live one."""
        name = self._read_collection(fingerprint)
        if name is not None:
            yield from qdrant_base.scroll_chunk_ids(partial(self._page, name), self.write_batch)

    def count(self, fingerprint: str) -> int:
        """Points in `fingerprint`'s collection (0 when there is none), counted by Qdrant."""
        name = self._read_collection(fingerprint)
        with qdrant_errors(f"counting the points of '{name}'"):
            return 0 if name is None else self.connect().count(name, exact=True).count

    def points(self, fingerprint: str | None = None) -> Iterator[Embedded]:
        """Every chunk of that collection with its vector, in pages."""
        name = self._read_collection(fingerprint)
        if name is not None:
            page = partial(self._page, name, vectors=True)
            yield from qdrant_base.scroll_points(page, self.write_batch)

    def _read_collection(self, fingerprint: str | None) -> str | None:
        """The collection a read means: `fingerprint`'s (None when there is none), else the one
        being written, else the live one."""
        if fingerprint is None:
            return self._target or self._live()
        name = self._physical(fingerprint)
        with qdrant_errors(f"looking up '{name}'"):
            return name if self.connect().collection_exists(name) else None

    def search(
        self,
        vector: np.ndarray,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k hits of the live collection by cosine similarity, among the chunks `filter`
        passes (a payload index, where configured, serves it on a server). Local mode reads the
        newest read snapshot, unless this sink is in a run or pinned."""
        if self._snapshots is not None and self._target is None and self._pin is None:
            with self.serving() as view:
                return view.search(vector, k, filter, with_vectors=with_vectors)
        if self._live() is None:
            if self.connect().collection_exists(self.collection):
                self._refuse_foreign(None)
            raise self._missing()
        return self._query(self.connect(), vector, k, filter, with_vectors=with_vectors)

    def _query(
        self,
        client: QdrantClient,
        vector: np.ndarray,
        k: int,
        filter: Mapping[str, Any] | None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        name = self._pin or self.collection  # a pinned view reads its own collection
        where = self._where(client, name, filter)
        # Local mode searches exactly and warns about search params: give them to servers only.
        params = None
        if self.ef_search and self.url is not None:
            params = models.SearchParams(hnsw_ef=self.ef_search)
        with qdrant_errors(f"query on '{self.collection}'"):
            result = client.query_points(
                name,
                query=qdrant_base.query_vector(vector),
                limit=k,
                with_payload=True,
                with_vectors=with_vectors,
                search_params=params,
                query_filter=where,
            )
        return qdrant_base.hits(result.points, with_vectors=with_vectors)

    def _where(self, client: QdrantClient, name: str, filter: Mapping[str, Any] | None) -> Any:
        """`filter` as Qdrant's Filter (None for none), its fields checked against what the
        collection `name` holds (a field no chunk has is an error naming the ones present)."""
        expr = parse(filter)
        require_fields(
            expr,
            lambda key: qdrant_base.has_field(key, partial(_first, client, name), FILTER_TYPES),
            lambda: qdrant_base.metadata_fields(partial(_metadata_page, client, name)),
            f"'{self.collection}'",
            empty=lambda: not _first(client, name, None),
        )
        return qdrant_base.native_filter(expr, FILTER_TYPES)

    def retrieve(
        self,
        retrieval: Retrieval,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k hits of a sparse or hybrid query, read as `search` reads."""
        if self._snapshots is not None and self._target is None and self._pin is None:
            with self.serving() as view:
                assert view.retrieve is not None
                return view.retrieve(retrieval, k, filter, with_vectors=with_vectors)
        if self._live() is None:
            raise self._missing()
        return self._retrieve(self.connect(), retrieval, k, filter, with_vectors=with_vectors)

    def _retrieve(
        self,
        client: QdrantClient,
        retrieval: Retrieval,
        k: int,
        filter: Mapping[str, Any] | None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """A sparse query on the BM25 vectors, or a hybrid one: the dense and the sparse
        candidates fused by (weighted) reciprocal rank."""
        name = self._pin or self.collection
        where = self._where(client, name, filter)
        assert retrieval.sparse is not None
        sparse = models.SparseVector(
            indices=retrieval.sparse.indices, values=retrieval.sparse.values
        )
        limit = retrieval.candidates(k)  # the ties at k too: `settled` orders them
        with qdrant_errors(f"{retrieval.mode} query on '{self.collection}'"):
            if retrieval.mode == "sparse":
                result = client.query_points(
                    name,
                    query=sparse,
                    using=SPARSE_VECTOR,
                    limit=limit,
                    with_payload=True,
                    with_vectors=with_vectors,
                    query_filter=where,
                )
            else:
                assert retrieval.dense is not None
                dense = qdrant_base.query_vector(retrieval.dense)
                rrf = models.Rrf(k=RRF_K, weights=retrieval.weights())
                result = client.query_points(
                    name,
                    prefetch=[
                        models.Prefetch(query=dense, limit=limit, filter=where),
                        models.Prefetch(
                            query=sparse, using=SPARSE_VECTOR, limit=limit, filter=where
                        ),
                    ],
                    query=models.RrfQuery(rrf=rrf),
                    limit=limit,
                    with_payload=True,
                    with_vectors=with_vectors,
                    query_filter=where,
                )
        return settled(qdrant_base.hits(result.points, with_vectors=with_vectors), k)

    @contextmanager
    def serving(self) -> Iterator[ReadView]:
        """Local mode: the newest read snapshot, held for one query (a newer one is opened when
        the read pointer moved, at most every second). A server: the collection itself."""
        if self._served is None:
            yield ReadView(None, None, self.search, self.retrieve)
            return
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
        if self._served is not None:
            self._served.close()

    def _missing(self) -> SinkError:
        return SinkError(
            f"no Qdrant collection '{self.collection}' at {self.uri}: run embedpipe first"
        )

    # -- read snapshots (local mode) -------------------------------------------------------

    def _not_served(self) -> Exception:
        """Why there is nothing to read: a collection another tool made holds the name, or none."""
        try:
            with qdrant_errors(f"looking up '{self.collection}'"):
                if self.connect(patience=0).collection_exists(self.collection):
                    return foreign_collection(self.connect(), self.collection, self.uri, None)
        except SinkError:
            pass  # a run holds the folder
        finally:
            self._release()
        return self._missing()

    def _serve(self, live: str | None) -> None:
        """Publish the live collection as the read snapshot, unless the pointer names it as it
        is now (its storage files unchanged); needs the client (the folder's lock)."""
        source = self._source(live)
        if self._snapshots is None or source is None or self._snapshots.is_current(source):
            return
        assert live is not None and self.local_path is not None
        with qdrant_errors(f"reading the metadata of '{live}'"):
            metadata = dict(self.connect().get_collection(live).config.metadata or {})
        fill = partial(_fill_snapshot, Path(self.local_path), self.collection, live, metadata)
        self._snapshots.publish(fill, fingerprint=live.rpartition("__")[2], source=source)
        if self._served is not None:
            self._served.invalidate()

    def _source(self, live: str | None) -> str | None:
        """What a snapshot of the collection `live` would hold: its name and its files' sizes
        and times (None for no collection, or a server)."""
        if live is None or self.local_path is None:
            return None
        folder = Path(self.local_path) / "collection" / live
        files = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*"))
        return f"{live}@{files}"

    def _catch_up(self) -> bool:
        """Publish the live collection when the read pointer lags behind it and no run holds the
        folder (read from meta.json, without taking the folder); with no pointer yet, wait for
        the run holding the folder to publish one when it opens. Whether a pointer exists."""
        assert self._snapshots is not None and self.local_path is not None
        meta = Path(self.local_path) / "meta.json"
        try:
            live = json.loads(meta.read_text()).get("aliases", {}).get(self.collection)
        except (FileNotFoundError, ValueError):
            live = None
        mine = self._client is not None  # this sink holds the folder already
        running = not mine and held_by(Path(self.local_path) / ".lock") is not None
        if (
            live is not None
            and not running
            and not self._snapshots.is_current(self._source(live) or "")
        ):
            try:
                self.connect(patience=0)
                self._serve(live)
            except SinkError:
                pass  # a run holds the folder: it publishes when it finishes
            finally:
                if not mine:
                    self._release()
        deadline = time.monotonic() + FIRST_SNAPSHOT_WAIT
        while self._snapshots.current() is None and live is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return self._snapshots.current() is not None

    def shape(self, name: str) -> qdrant_base.Shape:
        """The options a collection was created with, as stored (local mode keeps the per-vector
        ones: on_disk, HNSW and quantization; a server also reports shards and replicas)."""
        with qdrant_errors(f"reading the configuration of '{name}'"):
            return collection_shape(self.connect().get_collection(name).config.params)

    # -- internals -------------------------------------------------------------------------

    def _create(self, name: str, dim: int) -> None:
        """Create a collection with the configured options, set on the vector parameters so that
        local mode stores them too (and they can be checked when the collection is reused)."""
        opts = self.options
        sparse = None
        if self.sparse.on:  # the IDF is the engine's, computed over the collection at query time
            sparse = {SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)}
        self.connect().create_collection(
            name,
            vectors_config=qdrant_base.vector_params(opts, dim, VECTOR_TYPES),
            sparse_vectors_config=sparse,
            shard_number=opts.shard_number,
            replication_factor=opts.replication_factor,
        )

    def _sparse_of(self, name: str) -> Bm25Encoder | None:
        """The BM25 encoder of a collection that keeps sparse vectors (None for one without):
        with the settings it was built with (its metadata), else the configured ones."""
        config = self.connect().get_collection(name).config
        if SPARSE_VECTOR not in (config.params.sparse_vectors or {}):
            return None
        settings = dict(config.metadata or {}).get("settings") or {}
        kept = settings_of(settings) or (self.sparse if self.sparse.on else None)
        return Bm25Encoder(kept or SparseConfig(kind="bm25"))

    def _ensure_payload_indexes(self, name: str) -> None:
        """Keyword indexes on the configured payload fields, on a server (local mode has none)."""
        if self.url is not None:
            qdrant_base.ensure_payload_indexes(
                self.options.payload_index,
                lambda: self.connect().get_collection(name).payload_schema,
                lambda key: self._create_payload_index(name, key),
            )

    def _create_payload_index(self, name: str, key: str) -> None:
        self.connect().create_payload_index(name, key, models.PayloadSchemaType.KEYWORD, wait=True)

    def _physical(self, fingerprint: str) -> str:
        """The collection that holds the generation built under `fingerprint`."""
        return f"{self.collection}__{fingerprint[:12]}"

    def _page(
        self, name: str, offset: Any, limit: int, vectors: bool = False
    ) -> tuple[list[models.Record], Any]:
        """One page of a collection's points with their chunk ids (with `vectors`: whole payloads
        and vectors), and the next offset."""
        with qdrant_errors(f"scrolling '{name}'"):
            return self.connect().scroll(
                name,
                limit=limit,
                offset=offset,
                with_vectors=vectors,
                with_payload=True if vectors else ["chunk_id"],
            )

    def _existing(self, fingerprint: str) -> str:
        name = self._physical(fingerprint)
        with qdrant_errors(f"looking up '{name}'"):
            if not self.connect().collection_exists(name):
                raise SinkError(f"no collection '{name}' for generation {fingerprint[:12]}")
        return name

    def _live(self) -> str | None:
        """The physical collection the public alias points to (a view's: its own), or None."""
        if self._pin is not None:
            return self._pin
        with qdrant_errors("listing aliases"):
            aliases = self.connect().get_aliases().aliases
        return next((a.collection_name for a in aliases if a.alias_name == self.collection), None)

    def _check_dim(self, name: str, dim: int) -> None:
        """Refuse a collection of another vector size (named/multi vectors are not ours)."""
        vectors = self.connect().get_collection(name).config.params.vectors
        have = vectors.size if isinstance(vectors, models.VectorParams) else None
        if have != dim:
            raise SinkError(
                f"collection '{self.collection}' has dimension {have}, the model gives {dim}: "
                f"choose another --collection or delete it ('{name}')"
            )

    def _refuse_foreign(self, dim: int | None) -> None:
        """A collection embedpipe did not create holds the public name: never touch it."""
        raise foreign_collection(self.connect(), self.collection, self.uri, dim)

    def _swap(self, physical: str) -> None:
        """Point the alias at `physical` in one request, then drop what it pointed to before.

        Safe to call again after a failure: a moved alias is not moved twice, and the collection
        it left is remembered until it is dropped.
        """
        live = self._live()
        if live != physical:
            ops: list[Any] = []
            if live is not None:
                delete = models.DeleteAlias(alias_name=self.collection)
                ops.append(models.DeleteAliasOperation(delete_alias=delete))
            create = models.CreateAlias(collection_name=physical, alias_name=self.collection)
            ops.append(models.CreateAliasOperation(create_alias=create))
            with qdrant_errors(f"moving alias '{self.collection}' to '{physical}'"):
                self.connect().update_collection_aliases(change_aliases_operations=ops)
            self._retired = live
            crash_point("swap")
        if self._retired is not None and not self.keep_previous:
            with qdrant_errors(f"dropping the previous collection '{self._retired}'"):
                self.connect().delete_collection(self._retired)
        self._retired = None

    def _writing(self) -> str:
        if self._target is None:
            raise not_open(self.name)
        return self._target

    def _release(self) -> None:
        """Forget the run and close the client, which frees local mode's folder lock."""
        self._target, self._new = None, False
        if self._client is not None:
            self._client.close()
            self._client = None
            if self.local_path is not None:
                forget_holder(Path(self.local_path))


def _fill_snapshot(
    root: Path, alias: str, live: str, metadata: dict[str, Any], folder: Path
) -> None:
    """A read snapshot of local mode's folder `root`: the live collection alone, under its alias,
    and what it was built with (manifest.json)."""
    meta = json.loads((root / "meta.json").read_text())
    snapshot = {
        "collections": {live: meta["collections"][live]},
        "aliases": {alias: live},
        "text_indexes": {k: v for k, v in meta.get("text_indexes", {}).items() if k == live},
    }
    copy_tree(root / "collection" / live, folder / "collection" / live)
    (folder / "meta.json").write_text(json.dumps(snapshot))
    (folder / "manifest.json").write_text(json.dumps(metadata))


def _open_snapshot(folder: Path) -> QdrantClient:
    """A reader's private copy of a snapshot, opened."""
    return client_for(f"the read snapshot {folder}", path=str(folder))


def _close_client(client: QdrantClient) -> None:
    client.close()


def _first(client: QdrantClient, name: str, where: models.Filter | None) -> list[models.Record]:
    """At most one point of a collection that passes a filter: whether there is any."""
    with qdrant_errors(f"scrolling '{name}'"):
        points, _ = client.scroll(name, limit=1, scroll_filter=where, with_payload=False)
    return points


def _metadata_page(
    client: QdrantClient, name: str, offset: Any, limit: int
) -> tuple[list[models.Record], Any]:
    """One page of a collection's points with their metadata, and the next offset."""
    with qdrant_errors(f"scrolling '{name}'"):
        return client.scroll(name, limit=limit, offset=offset, with_payload=["metadata"])
