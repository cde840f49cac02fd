"""What the LangChain and LlamaIndex adapters share: opening an index from a sink URI and a
collection, filters in the frameworks' habits (a bare key is a metadata field), the metadata a
returned chunk carries, and adding documents through embedpipe's own pipeline and ledger."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from embedpipe import api
from embedpipe.config import FLAT_KEYS
from embedpipe.documents import given
from embedpipe.index import Index
from embedpipe.sinks.base import Hit
from embedpipe.sinks.filters import METADATA, TOP_LEVEL
from embedpipe.state.ledger import LIBRARY
from embedpipe.types import Document, RunReport


def open_for(
    sink: str | None,
    collection: str | None,
    state: str | None,
    config: api.ConfigArg,
    query_prefix: str | None,
    options: Mapping[str, Any],
) -> Index:
    """The index an adapter reads and writes: `sink`/`collection`/`state` over `config`;
    `options` are the CLI's flag names (device=, precision=, ...), any other is a TypeError."""
    unknown = sorted(set(options) - set(FLAT_KEYS))
    if unknown:
        raise TypeError(
            f"unknown arguments {', '.join(map(repr, unknown))}: a store takes sink, collection, "
            f"state, config, query_prefix and the options {', '.join(sorted(FLAT_KEYS))}"
        )
    return api.open_index(
        config, query_prefix=query_prefix, sink=sink, collection=collection, state=state, **options
    )


def refuse_unknown(call: str, kwargs: Mapping[str, Any], accepted: Iterable[str]) -> None:
    """A TypeError naming the keyword arguments `call` does not take, and those it does:
    a misspelt filter (`filters=`, `where=`) must not return unfiltered results."""
    accepted = tuple(accepted)
    unknown = sorted(key for key in kwargs if key not in accepted)
    if not unknown:
        return
    hint = ""
    if {"filters", "where", "metadata_filter"} & set(unknown):
        hint = " (a metadata filter goes in filter=)"
    raise TypeError(
        f"{call}() got unknown arguments {', '.join(map(repr, unknown))}{hint}: it takes "
        f"{', '.join(accepted)}"
    )


def payload_filter(filter: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A framework's filter as embedpipe's: LangChain's and Chroma's dict and `$`-operator
    forms (`{"year": {"$gte": 2020}, "$or": [...]}`, see sinks/filters.py); payload paths stay
    (doc_id, chunk_index, metadata.X), any other key names a metadata field."""
    if not filter:
        return None
    return {_key(str(key)): _nested(key, value) for key, value in filter.items()}


def _key(key: str) -> str:
    if key.startswith("$") or key in TOP_LEVEL or key.startswith(METADATA):
        return key
    return METADATA + key


def _nested(key: Any, value: Any) -> Any:
    """The filters inside $and/$or/$not with their keys mapped too."""
    if key in ("$and", "$or") and isinstance(value, list | tuple):
        return [payload_filter(v) if isinstance(v, Mapping) else v for v in value]
    if key == "$not" and isinstance(value, Mapping):
        return payload_filter(value)
    return value


def chunk_metadata(hit: Hit) -> dict[str, Any]:
    """What a returned chunk carries: the source metadata (with `source`, where the document
    came from), then doc_id, chunk_index, chunk_id and the chunk's `start`/`end` character
    offsets in the document (a source's metadata never holds these keys: see types.RESERVED)."""
    return {
        **hit.metadata,
        "doc_id": hit.doc_id,
        "chunk_index": hit.chunk_index,
        "chunk_id": hit.chunk_id,
        "start": hit.start,
        "end": hit.end,
    }


def as_vector(embedding: Sequence[float]) -> np.ndarray:
    return np.asarray(embedding, dtype=np.float32)


def add(
    index: Index,
    documents: Iterable[Document],
    vectors: Mapping[str, tuple[str, np.ndarray]] | None = None,
) -> RunReport:
    """Embed documents into the index as a run does (chunked, hashed, only what changed, the
    ledger written), with the index's own model, prompts and chunking; recorded in the ledger
    as added by the library (LIBRARY), which a full-mode run leaves alone. `vectors`: chunk
    id -> (text, vector) the index's model already made, written as they are. Always an
    incremental run, whatever mode the config names. Queries on the same index in this
    process wait for it (the run writes through their sink)."""
    config = index.write_config().model_copy(update={"mode": "incremental"})
    with index.locked() as sink:
        report = api.run(
            config, source=given(list(documents)), sink=sink, origin=LIBRARY, vectors=vectors
        )
    index.refresh()
    return report
