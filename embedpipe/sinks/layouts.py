"""Payload layouts a Qdrant collection can be written in (`sink.qdrant.layout`, `export
--layout`): embedpipe's own, or embedpipe's plus the keys LangChain's or LlamaIndex's stock
`QdrantVectorStore` reads with its default settings.

A framework layout only adds keys: embedpipe's own (chunk_id, doc_id, text, metadata, ...) stay,
so reconcile, status, incremental runs and embedpipe's queries work on the collection as before.
- langchain: `page_content` (the text) and `metadata` (the source metadata plus doc_id,
  chunk_index, chunk_id, start and end: LangChain filters them as `metadata.KEY`). embedpipe's
  readers take those added keys back out of `metadata` (store.user_metadata).
- llama-index: what `node_to_metadata_dict` stores for a TextNode (id_ the point id, the text,
  the metadata as above, the source document as its SOURCE relationship): `_node_content`,
  `_node_type`, `document_id`/`doc_id`/`ref_doc_id`, and the metadata keys flat at the top
  (LlamaIndex filters them by their own name); embedpipe's keys win a clash.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from embedpipe.sinks.shards import ADDED, LANGCHAIN_TEXT, chunk_payload
from embedpipe.types import Chunk, point_id

Layout = Literal["embedpipe", "langchain", "llama-index"]
LAYOUTS: tuple[Layout, ...] = ("embedpipe", "langchain", "llama-index")
REF_DOC = "ref_doc_id"  # where the LlamaIndex adapter keeps an inserted node's source document


def payload(chunk: Chunk, layout: Layout = "embedpipe") -> dict[str, Any]:
    """What a point stores for `chunk` in `layout`."""
    ours = chunk_payload(chunk)
    if layout == "langchain":
        return {**ours, LANGCHAIN_TEXT: chunk.text, "metadata": framework_metadata(chunk)}
    if layout == "llama-index":
        return {**chunk.metadata, **llama_fields(chunk), **ours}
    return ours


def framework_metadata(chunk: Chunk) -> dict[str, Any]:
    """The metadata a framework's document or node carries: the source metadata (with
    `source`), then the chunk's place, as embedpipe's adapters return it."""
    place = (chunk.doc_id, chunk.index, chunk.id, chunk.start, chunk.end)
    return {**chunk.metadata, **dict(zip(ADDED, place, strict=True))}


def llama_fields(chunk: Chunk) -> dict[str, Any]:
    """The keys LlamaIndex's `node_to_metadata_dict` adds for the chunk as a TextNode."""
    ref_doc = str(chunk.metadata.get(REF_DOC) or chunk.doc_id)
    node: dict[str, Any] = {
        "id_": point_id(chunk.id),
        "embedding": None,
        "metadata": framework_metadata(chunk),
        "excluded_embed_metadata_keys": [],
        "excluded_llm_metadata_keys": [],
        "relationships": {
            "1": {
                "node_id": ref_doc,
                "node_type": None,
                "metadata": {},
                "hash": None,
                "class_name": "RelatedNodeInfo",
            }
        },
        "metadata_template": "{key}: {value}",
        "metadata_separator": "\n",
        "text": chunk.text,
        "mimetype": "text/plain",
        "start_char_idx": chunk.start,
        "end_char_idx": chunk.end,
        "text_template": "{metadata_str}\n\n{content}",
        "class_name": "TextNode",
    }
    return {
        "_node_content": json.dumps(node, ensure_ascii=False),
        "_node_type": "TextNode",
        "document_id": ref_doc,
        "doc_id": ref_doc,
        REF_DOC: ref_doc,
    }
