"""Qdrant sink: one physical collection per fingerprint, served under an alias.

The physical collection is `<collection>__<fingerprint[:12]>`; the public name is an alias that
close() moves in one `update_collection_aliases` call, so a re-embed stays invisible until it is
complete. Works with local mode (`QdrantClient(path=...)`) and with a server (`url=...`); with a
server, `QdrantWriter`s let other processes upsert into the collection a run writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from embedpipe.config import QdrantOptions
from embedpipe.errors import SinkError, TransientSinkError
from embedpipe.faults import crash_point
from embedpipe.redact import redact_uri, server_credentials
from embedpipe.sinks.base import Hit
from embedpipe.sinks.options import Shape, check_shape, wanted_shape
from embedpipe.sinks.store import chunk_payload, hit_from_payload, paired_vectors
from embedpipe.types import Embedded, point_id

RETRYABLE_HTTP = {408, 429, 502, 503, 504}
RETRYABLE_GRPC = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@contextmanager
def qdrant_errors(action: str) -> Iterator[None]:
    """Translate qdrant-client failures: timeouts and lost connections are worth a retry."""
    try:
        yield
    except SinkError:
        raise
    except (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError) as exc:
        raise TransientSinkError(
            f"Qdrant {action} failed, the server did not answer: {exc}"
        ) from exc
    except UnexpectedResponse as exc:
        kind = TransientSinkError if exc.status_code in RETRYABLE_HTTP else SinkError
        raise kind(f"Qdrant {action} failed ({exc.status_code}): {exc.content!r}") from exc
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        kind = TransientSinkError if code in RETRYABLE_GRPC else SinkError
        raise kind(f"Qdrant {action} failed ({code}): {exc}") from exc
    except (ValueError, RuntimeError, OSError) as exc:  # local mode raises these
        raise SinkError(f"Qdrant {action} failed: {exc}") from exc


def server_client(url: str | None, api_key: str | None, timeout: int | None) -> QdrantClient:
    """A client for a Qdrant server; credentials in `url` become its API key (an `api_key=`
    query parameter, which wins over `api_key`) and a Basic auth header (`user:pass@`)."""
    creds = server_credentials(url or "")
    # No version probe: it would make a request before the first real call.
    return QdrantClient(
        url=creds.url,
        api_key=creds.api_key or api_key,
        timeout=timeout,
        headers=creds.headers or None,
        check_compatibility=False,
    )


def point_batches(embedded: Embedded, size: int) -> Iterator[models.Batch]:
    """The chunks as upsert requests of at most `size` points: uuid5 ids, the chunk payload."""
    vectors = paired_vectors(embedded)
    for lo in range(0, len(embedded.chunks), size):
        chunks = embedded.chunks[lo : lo + size]
        yield models.Batch(
            ids=[point_id(c.id) for c in chunks],
            vectors=vectors[lo : lo + size].tolist(),
            payloads=[chunk_payload(c) for c in chunks],
        )


def upsert(client: QdrantClient, collection: str, embedded: Embedded, size: int) -> None:
    """Upsert the chunks in requests of `size` points; returns once Qdrant acknowledged them."""
    for batch in point_batches(embedded, size):
        with qdrant_errors(f"upsert into '{collection}'"):
            client.upsert(collection, points=batch, wait=True)


@dataclass
class QdrantWriter:
    """A RemoteWriter upserting into one physical collection of a Qdrant server.

    Connects on the first write and drops the client when pickled. `location` (":memory:")
    replaces the server with qdrant-client's in-process engine, for tests.
    """

    collection: str
    url: str | None = field(default=None, repr=False)  # may hold credentials: never shown
    api_key: str | None = field(default=None, repr=False)
    timeout: int | None = None
    write_batch: int = 256
    location: str | None = None
    _client: QdrantClient | None = field(default=None, init=False, repr=False, compare=False)

    def connect(self) -> QdrantClient:
        """The client, created on first use."""
        if self._client is None:
            where = self.location or redact_uri(self.url or "")
            with qdrant_errors(f"connecting to {where}"):
                if self.location is not None:
                    self._client = QdrantClient(location=self.location)
                else:
                    self._client = server_client(self.url, self.api_key, self.timeout)
        return self._client

    def write(self, embedded: Embedded) -> None:
        """Upsert in requests of `write_batch` points; returns once Qdrant acknowledged them."""
        upsert(self.connect(), self.collection, embedded, self.write_batch)

    def close(self) -> None:
        """Close the client, if one is open; safe to call twice."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, _client=None)


class QdrantSink:
    """Vectors in Qdrant, local (`local_path`) or on a server (`url`), under an alias `collection`."""

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
        # The public name (reports, ledger keys, messages) never holds a secret; `url` does.
        self.uri = f"qdrant:{local_path}" if local_path is not None else redact_uri(f"qdrant+{url}")
        self._client: QdrantClient | None = None
        self._target: str | None = None  # physical collection being written
        self._new = False
        self._retired: str | None = None  # previous live collection, until it is dropped

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self) -> QdrantClient:
        """The client, created on first use (local mode takes a lock on its folder)."""
        if self._client is None:
            with qdrant_errors(f"connecting to {self.uri}"):
                if self.local_path is not None:
                    self._client = QdrantClient(path=self.local_path)
                else:
                    self._client = server_client(self.url, self.api_key, self.timeout)
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
                check_shape(self.shape(physical), wanted_shape(self.options), physical, self.uri)
            else:
                self._create(physical, dim)
            self._ensure_payload_indexes(physical)
        self._target, self._new = physical, live != physical

    def write(self, embedded: Embedded) -> None:
        """Upsert in requests of `write_batch` points; returns once Qdrant acknowledged them."""
        target = self._writing()
        upsert(self.connect(), target, embedded, self.write_batch)

    def remote_writer(self) -> QdrantWriter:
        """A writer other processes upsert into this run's collection with (servers only)."""
        target = self._writing()
        if self.url is None:
            raise SinkError(
                f"Qdrant local mode ({self.local_path}) is one process only: write from the "
                "driver, or use a Qdrant server (qdrant+http://HOST:PORT)"
            )
        return QdrantWriter(target, self.url, self.api_key, self.timeout, self.write_batch)

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks in batches; ids that are not present are fine."""
        target = self._writing()
        for lo in range(0, len(chunk_ids), self.write_batch):
            ids: list[models.ExtendedPointId] = [
                point_id(c) for c in chunk_ids[lo : lo + self.write_batch]
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
        self._release()

    def abort(self) -> None:
        """Release the client without switching the public name.

        An unfinished new collection is kept, not dropped: the ledger may already list its
        acknowledged writes, and the next run with the same fingerprint resumes it.
        """
        self._release()

    # -- reading ---------------------------------------------------------------------------

    def live_fingerprint(self) -> str | None:
        """The start of the live collection's fingerprint (its name keeps 12 characters)."""
        live = self._live()
        return None if live is None else live.rpartition("__")[2] or None

    def chunk_ids(self, fingerprint: str | None = None) -> Iterator[str]:
        """Every chunk id of `fingerprint`'s collection, else of the one being written, else of
        the live one."""
        name = self._target or self._live()
        if fingerprint is not None:
            name = self._physical(fingerprint)
            with qdrant_errors(f"looking up '{name}'"):
                if not self.connect().collection_exists(name):
                    return
        if name is None:
            return
        offset: models.ExtendedPointId | None = None
        while True:
            with qdrant_errors(f"scrolling '{name}'"):
                points, offset = self.connect().scroll(
                    name, limit=max(self.write_batch, 256), offset=offset, with_payload=["chunk_id"]
                )
            yield from (str((p.payload or {}).get("chunk_id", "")) for p in points)
            if offset is None:
                return

    def search(self, vector: np.ndarray, k: int = 5) -> list[Hit]:
        """Top-k hits of the live collection by cosine similarity."""
        if self._live() is None:
            raise SinkError(
                f"no Qdrant collection '{self.collection}' at {self.uri}: run embedpipe first"
            )
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        # Local mode searches exactly and warns about search params: give them to servers only.
        params = None
        if self.ef_search and self.url is not None:
            params = models.SearchParams(hnsw_ef=self.ef_search)
        with qdrant_errors(f"query on '{self.collection}'"):
            result = self.connect().query_points(
                self.collection, query=query, limit=k, with_payload=True, search_params=params
            )
        return [hit_from_payload(p.score, p.payload or {}) for p in result.points]

    def shape(self, name: str) -> Shape:
        """The options a collection was created with, as stored (local mode keeps the per-vector
        ones: on_disk, HNSW and quantization; a server also reports shards and replicas)."""
        with qdrant_errors(f"reading the configuration of '{name}'"):
            params = self.connect().get_collection(name).config.params
        vectors = params.vectors
        if not isinstance(vectors, models.VectorParams):
            return {}
        hnsw = vectors.hnsw_config
        quantization = vectors.quantization_config
        return {
            "on_disk": bool(vectors.on_disk),
            "hnsw_m": hnsw.m if hnsw else None,
            "hnsw_ef_construct": hnsw.ef_construct if hnsw else None,
            "quantization": "int8"
            if isinstance(quantization, models.ScalarQuantization)
            else "binary"
            if isinstance(quantization, models.BinaryQuantization)
            else "none",
            "shard_number": params.shard_number,
            "replication_factor": params.replication_factor,
        }

    # -- internals -------------------------------------------------------------------------

    def _create(self, name: str, dim: int) -> None:
        """Create a collection with the configured options, set on the vector parameters so that
        local mode stores them too (and they can be checked when the collection is reused)."""
        opts = self.options
        hnsw = None
        if opts.hnsw.m is not None or opts.hnsw.ef_construct is not None:
            hnsw = models.HnswConfigDiff(m=opts.hnsw.m, ef_construct=opts.hnsw.ef_construct)
        quantization: models.QuantizationConfig | None = None
        if opts.quantization == "int8":
            scalar = models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
            quantization = models.ScalarQuantization(scalar=scalar)
        elif opts.quantization == "binary":
            binary = models.BinaryQuantizationConfig(always_ram=True)
            quantization = models.BinaryQuantization(binary=binary)
        vectors = models.VectorParams(
            size=dim,
            distance=models.Distance.COSINE,
            on_disk=opts.on_disk or None,
            hnsw_config=hnsw,
            quantization_config=quantization,
        )
        self.connect().create_collection(
            name,
            vectors_config=vectors,
            shard_number=opts.shard_number,
            replication_factor=opts.replication_factor,
        )

    def _ensure_payload_indexes(self, name: str) -> None:
        """Keyword indexes on the configured payload fields, on a server (local mode has none)."""
        if self.url is None or not self.options.payload_index:
            return
        have = set(self.connect().get_collection(name).payload_schema)
        for key in self.options.payload_index:
            if key not in have:
                self.connect().create_payload_index(
                    name, key, models.PayloadSchemaType.KEYWORD, wait=True
                )

    def _physical(self, fingerprint: str) -> str:
        """The collection that holds the generation built under `fingerprint`."""
        return f"{self.collection}__{fingerprint[:12]}"

    def _live(self) -> str | None:
        """The physical collection the public alias points to, or None."""
        with qdrant_errors("listing aliases"):
            aliases = self.connect().get_aliases().aliases
        return next((a.collection_name for a in aliases if a.alias_name == self.collection), None)

    def _dim_of(self, name: str) -> int | None:
        """The vector size of a collection (None for named/multi vectors, which are not ours)."""
        vectors = self.connect().get_collection(name).config.params.vectors
        return vectors.size if isinstance(vectors, models.VectorParams) else None

    def _check_dim(self, name: str, dim: int) -> None:
        have = self._dim_of(name)
        if have != dim:
            raise SinkError(
                f"collection '{self.collection}' has dimension {have}, the model gives {dim}: "
                f"choose another --collection or delete it ('{name}')"
            )

    def _refuse_foreign(self, dim: int) -> None:
        """A collection embedpipe did not create holds the public name: never touch it."""
        self._check_dim(self.collection, dim)
        raise SinkError(
            f"collection '{self.collection}' exists and was not created by embedpipe (it is not an "
            "alias): choose another --collection or delete it"
        )

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
            raise SinkError("the Qdrant sink is not open: call open(dim, fingerprint) first")
        return self._target

    def _release(self) -> None:
        """Forget the run and close the client, which frees local mode's folder lock."""
        self._target, self._new = None, False
        if self._client is not None:
            self._client.close()
            self._client = None
