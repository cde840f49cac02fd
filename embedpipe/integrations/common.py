"""What the LangChain and LlamaIndex adapters share: opening an index from a sink URI and a
collection, filters in the frameworks' habits (a bare key is a metadata field), the metadata a
returned chunk carries, and adding documents through embedpipe's own pipeline and ledger."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from embedpipe import api
from embedpipe.documents import given
from embedpipe.index import Index
from embedpipe.sinks.base import Hit
from embedpipe.sinks.filters import METADATA, TOP_LEVEL
from embedpipe.types import Document, RunReport


def open_for(
    sink: str | None,
    collection: str | None,
    state: str | None,
    config: api.ConfigArg,
    query_prefix: str | None,
    options: Mapping[str, Any],
) -> Index:
    """The index an adapter reads and writes: `sink`/`collection`/`state` over `config`."""
    return api.open_index(
        config, query_prefix=query_prefix, sink=sink, collection=collection, state=state, **options
    )


def payload_filter(filter: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A framework's filter as embedpipe's: payload paths stay (doc_id, chunk_index,
    metadata.X), any other key names a metadata field (`{"pkg": "numpy"}`)."""
    if not filter:
        return None
    return {
        key if key in TOP_LEVEL or key.startswith(METADATA) else METADATA + key: value
        for key, value in filter.items()
    }


def chunk_metadata(hit: Hit) -> dict[str, Any]:
    """What a returned chunk carries: the source metadata, then doc_id, chunk_index, chunk_id."""
    return {
        **hit.metadata,
        "doc_id": hit.doc_id,
        "chunk_index": hit.chunk_index,
        "chunk_id": hit.chunk_id,
    }


def as_vector(embedding: Sequence[float]) -> np.ndarray:
    return np.asarray(embedding, dtype=np.float32)


def add(index: Index, documents: Iterable[Document]) -> RunReport:
    """Embed documents into the index as a run does (chunked, hashed, only what changed, the
    ledger written), with the index's own model, prompts and chunking. Queries on the same
    index in this process wait for it (the run writes through their sink)."""
    config = index.write_config()
    with index.locked() as sink:
        report = api.run(config, source=given(list(documents)), sink=sink)
    index.refresh()
    return report
