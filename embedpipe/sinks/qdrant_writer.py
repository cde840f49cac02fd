"""qdrant-client, as the Qdrant sink and its remote writers use it: a client for local mode, the
in-process engine or a server; its failures as SinkErrors (transient ones worth a retry); its
types for the index options and filters, and the options a collection holds; the chunks as
upsert batches; and `QdrantWriter`, the writer other processes upsert with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from embedpipe.config import SparseConfig
from embedpipe.durable import note_holder
from embedpipe.errors import SinkError, TransientSinkError
from embedpipe.redact import redact_uri, server_credentials
from embedpipe.sinks.layouts import Layout, payload
from embedpipe.sinks.qdrant_base import FilterTypes, Shape, VectorTypes, busy_hint, translated
from embedpipe.sinks.shards import paired_vectors
from embedpipe.sinks.sparse import SPARSE_VECTOR, Bm25Encoder
from embedpipe.types import Embedded, point_id

RETRYABLE_HTTP = {408, 429, 502, 503, 504}
RETRYABLE_GRPC = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def qdrant_errors(action: str) -> AbstractContextManager[None]:
    """Translate qdrant-client failures: timeouts and lost connections are worth a retry."""
    return translated(action, _qdrant_error)


def _qdrant_error(action: str, exc: Exception) -> SinkError | None:
    """The SinkError for what qdrant-client raised (None: not a client failure)."""
    if isinstance(
        exc, (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError)
    ):
        return TransientSinkError(f"Qdrant {action} failed, the server did not answer: {exc}")
    if isinstance(exc, UnexpectedResponse):
        kind = TransientSinkError if exc.status_code in RETRYABLE_HTTP else SinkError
        return kind(f"Qdrant {action} failed ({exc.status_code}): {exc.content!r}")
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        kind = TransientSinkError if code in RETRYABLE_GRPC else SinkError
        return kind(f"Qdrant {action} failed ({code}): {exc}")
    if isinstance(exc, (ValueError, RuntimeError, OSError)):  # local mode raises these
        return SinkError(f"Qdrant {action} failed: {exc}")
    return None


# qdrant-client's types for the options; on_disk=None leaves the server's default.
VECTOR_TYPES = VectorTypes(
    hnsw=lambda m, ef_construct: models.HnswConfigDiff(m=m, ef_construct=ef_construct),
    int8=lambda: models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
    ),
    binary=lambda: models.BinaryQuantization(
        binary=models.BinaryQuantizationConfig(always_ram=True)
    ),
    vectors=lambda dim, on_disk, hnsw, quantization: models.VectorParams(
        size=dim,
        distance=models.Distance.COSINE,
        on_disk=on_disk or None,
        hnsw_config=hnsw,
        quantization_config=quantization,
    ),
)

FILTER_TYPES = FilterTypes(
    filter=models.Filter,
    field=lambda key, match: models.FieldCondition(key=key, match=match),
    value=lambda value: models.MatchValue(value=value),
    any=lambda values: models.MatchAny(any=values),
    numbers=lambda key, bounds: models.FieldCondition(key=key, range=models.Range(**bounds)),
    dates=lambda key, bounds: models.FieldCondition(key=key, range=models.DatetimeRange(**bounds)),
    is_empty=lambda key: models.IsEmptyCondition(is_empty=models.PayloadField(key=key)),
)


def collection_shape(params: models.CollectionParams) -> Shape:
    """The index options a collection's parameters hold (`qdrant_base.Shape`)."""
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


def foreign_collection(client: QdrantClient, name: str, uri: str, dim: int | None) -> SinkError:
    """The refusal for a collection another tool made under the name embedpipe would use: what
    is in it (points, vectors, payload layout) and the ways forward."""
    with qdrant_errors(f"reading '{name}'"):
        info = client.get_collection(name)
        sample, _ = client.scroll(name, limit=1, with_payload=True)
    vectors = info.config.params.vectors
    if isinstance(vectors, models.VectorParams):
        shape = f"one unnamed vector of dimension {vectors.size}"
    else:
        named = (vectors or {}).items()
        shape = ", ".join(f"vector '{k}' of dimension {v.size}" for k, v in named) or "no vector"
    keys = sorted((sample[0].payload or {}) if sample else {})
    ours = f" (the model gives {dim})" if dim else ""
    return SinkError(
        f"collection '{name}' at {uri} was not made by embedpipe: {info.points_count or 0} points, "
        f"{shape}, payload {_layout(keys)}. embedpipe never writes into another tool's "
        f"collection: build its index under another --collection{ours}, and read it from "
        "LangChain or LlamaIndex with embedpipe.integrations (or `embedpipe export --to "
        "qdrant:PATH`)"
    )


def _layout(keys: list[str]) -> str:
    """Which tool's payload these keys look like."""
    if {"page_content", "metadata"} <= set(keys):
        return "in LangChain's layout (page_content, metadata)"
    if "_node_content" in keys or "_node_type" in keys:
        return "in LlamaIndex's layout (_node_content, _node_type, ...)"
    if "chunk_id" in keys:
        return "with embedpipe's chunk fields, but under no alias (copied by another tool?)"
    return f"keys {', '.join(keys[:8])}" if keys else "empty"


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


def client_for(
    where: str,
    *,
    path: str | None = None,
    location: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    timeout: int | None = None,
) -> QdrantClient:
    """A client for local mode (`path`), the in-process engine (`location`) or a server."""
    if path is not None:
        return _local_client(where, path)
    with qdrant_errors(f"connecting to {where}"):
        if location is not None:
            return QdrantClient(location=location)
        return server_client(url, api_key, timeout)


def _local_client(where: str, path: str) -> QdrantClient:
    """Local mode on `path`, which it locks: this process is noted as the holder, and a second
    opener (in any process) is told who holds it."""
    try:
        with qdrant_errors(f"connecting to {where}"):
            client = QdrantClient(path=path)
    except SinkError as exc:
        if "already accessed" not in str(exc):
            raise
        raise SinkError(
            f"Qdrant local mode at {path} cannot be opened: {busy_hint('folder', Path(path))}"
        ) from exc
    note_holder(Path(path))
    return client


def point_batches(
    embedded: Embedded,
    size: int,
    layout: Layout = "embedpipe",
    bm25: Bm25Encoder | None = None,
) -> Iterator[models.Batch]:
    """The chunks as upsert requests of at most `size` points: uuid5 ids, the chunk payload in
    `layout`, and with `bm25` each chunk's BM25 vector beside its dense one."""
    vectors = paired_vectors(embedded)
    for lo in range(0, len(embedded.chunks), size):
        chunks = embedded.chunks[lo : lo + size]
        rows: Any = vectors[lo : lo + size].tolist()
        if bm25 is not None:
            sparse = [
                models.SparseVector(indices=v.indices, values=v.values)
                for v in bm25.documents([c.text for c in chunks])
            ]
            rows = {"": rows, SPARSE_VECTOR: sparse}
        yield models.Batch(
            ids=[point_id(c.id) for c in chunks],
            vectors=rows,
            payloads=[payload(c, layout) for c in chunks],
        )


def upsert(
    client: QdrantClient,
    collection: str,
    embedded: Embedded,
    size: int,
    layout: Layout = "embedpipe",
    bm25: Bm25Encoder | None = None,
) -> None:
    """Upsert the chunks in requests of `size` points, payloads in `layout` (with `bm25`, their
    BM25 vectors too); returns once Qdrant acknowledged them."""
    for batch in point_batches(embedded, size, layout, bm25):
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
    layout: Layout = "embedpipe"
    sparse: SparseConfig | None = None  # the collection keeps BM25 vectors with these settings
    _client: QdrantClient | None = field(default=None, init=False, repr=False, compare=False)

    def connect(self) -> QdrantClient:
        """The client, created on first use."""
        if self._client is None:
            where = self.location or redact_uri(self.url or "")
            self._client = client_for(
                where,
                location=self.location,
                url=self.url,
                api_key=self.api_key,
                timeout=self.timeout,
            )
        return self._client

    def write(self, embedded: Embedded) -> None:
        """Upsert in requests of `write_batch` points; returns once Qdrant acknowledged them."""
        bm25 = None if self.sparse is None else Bm25Encoder(self.sparse)
        upsert(self.connect(), self.collection, embedded, self.write_batch, self.layout, bm25)

    def close(self) -> None:
        """Close the client, if one is open; safe to call twice."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, _client=None)
