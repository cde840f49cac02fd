"""An embedpipe index as a LlamaIndex vector store and its model as a LlamaIndex embedding
(pip install 'embedpipe[llamaindex]').

    from llama_index.core import VectorStoreIndex
    from embedpipe.integrations.llama_index import EmbedpipeEmbedding, EmbedpipeVectorStore
    store = EmbedpipeVectorStore(sink="faiss:./index", collection="docs")
    index = VectorStoreIndex.from_vector_store(store, embed_model=EmbedpipeEmbedding.of(store))
    nodes = index.as_retriever(similarity_top_k=3).retrieve("how do I retry?")

Every sink works (Qdrant Edge, Qdrant local or server, FAISS, Parquet by exact search), with
`MetadataFilters` (EQ and IN, combined with AND). A node is one chunk: its text, `doc_id`,
`chunk_index`, `chunk_id` and the source metadata. `add` embeds the nodes' text through
embedpipe's pipeline and ledger (with the index's own model, not the node's embedding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import BaseNode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from embedpipe import api
from embedpipe.index import Index
from embedpipe.integrations import common
from embedpipe.sinks.base import Hit
from embedpipe.types import Document

__all__ = ["EmbedpipeEmbedding", "EmbedpipeVectorStore"]
# LlamaIndex's query modes embedpipe runs (any other runs dense, as before).
MODES = {VectorStoreQueryMode.SPARSE: "sparse", VectorStoreQueryMode.HYBRID: "hybrid"}
REF_DOC = "ref_doc_id"  # the metadata key a node's source document is kept under


class EmbedpipeVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over an embedpipe index: a sink URI and a collection (or a
    config: a RunConfig or a YAML path); `state` where its ledger is, when not beside it."""

    stores_text: bool = True
    is_embedding_query: bool = True
    _index: Index = PrivateAttr()

    def __init__(
        self,
        sink: str | None = None,
        collection: str | None = None,
        state: str | None = None,
        *,
        config: api.ConfigArg = None,
        model: str | None = None,
        query_prefix: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(stores_text=True)
        self._index = common.open_for(
            sink, collection, state, config, query_prefix, {"model": model, **options}
        )

    @property
    def client(self) -> Index:
        """The embedpipe Index underneath."""
        return self._index

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Embed the nodes' text as documents (id: the node id) through embedpipe's pipeline;
        returns the node ids."""
        docs = [
            Document(
                node.node_id,
                node.get_content(),
                {**node.metadata, **({REF_DOC: node.ref_doc_id} if node.ref_doc_id else {})},
            )
            for node in nodes
        ]
        common.add(self._index, docs)
        return [d.id for d in docs]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete the documents of the nodes made from `ref_doc_id` (or the document itself)."""
        doc_ids = {ref_doc_id}
        with self._index.locked() as sink:
            for batch in sink.points():
                made = (c.doc_id for c in batch.chunks if c.metadata.get(REF_DOC) == ref_doc_id)
                doc_ids.update(made)
        self._index.delete_documents(sorted(doc_ids))

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The top-k chunks for the query's embedding (else its text), among those its filters,
        doc_ids and node_ids pass."""
        where = common.payload_filter(_filters(query.filters)) or {}
        if query.doc_ids:
            where["doc_id"] = list(query.doc_ids)
        if query.node_ids:
            where["chunk_id"] = list(query.node_ids)
        k = query.similarity_top_k
        mode = MODES.get(query.mode, "dense")
        if mode != "dense":
            if not query.query_str:
                raise ValueError(f"a {mode} query needs its text (query_str)")
            vector = None
            if query.query_embedding is not None:
                vector = common.as_vector(query.query_embedding)
            top = query.sparse_top_k if mode == "sparse" else query.hybrid_top_k
            hits = self._index.search(
                query.query_str, top or k, where, mode=mode, alpha=query.alpha, vector=vector
            )
        elif query.query_embedding is not None:
            hits = self._index.search_vector(common.as_vector(query.query_embedding), k, where)
        elif query.query_str:
            hits = self._index.search(query.query_str, k, where)
        else:
            raise ValueError("a query needs an embedding or a text")
        return VectorStoreQueryResult(
            nodes=[_node(h) for h in hits],
            similarities=[h.score for h in hits],
            ids=[h.chunk_id for h in hits],
        )

    def close(self) -> None:
        """Release the sink (its read snapshot and private copy on Qdrant Edge and local mode)."""
        self._index.close()


class EmbedpipeEmbedding(BaseEmbedding):
    """An index's model, prompts and width as a LlamaIndex embedding (`of(store)`), or a model
    (`model=`, default the packaged MiniLM) with the prompts given."""

    _index: Index | None = PrivateAttr(default=None)
    _prompts: tuple[str, str] = PrivateAttr(default=("", ""))  # (passage, query)
    _model: str | None = PrivateAttr(default=None)

    def __init__(
        self,
        model: str | None = None,
        *,
        prefix: str = "",
        query_prefix: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name=model or "embedpipe", **kwargs)
        self._model, self._prompts = model, (prefix, query_prefix)

    @classmethod
    def of(cls, store: EmbedpipeVectorStore) -> EmbedpipeEmbedding:
        """The embedding of a store's index: its model, prompts and width."""
        embedding = cls()
        embedding._index = store.client
        return embedding

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query], query=True)[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text], query=False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts, query=False)

    def _embed(self, texts: list[str], *, query: bool) -> list[list[float]]:
        if self._index is not None:
            index = self._index
            vectors = index.embed_queries(texts) if query else index.embed_passages(texts)
        else:
            vectors = api.encode(texts, model=self._model, prompt=self._prompts[query])
        out: list[list[float]] = vectors.tolist()
        return out


def _filters(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex filters as embedpipe's: EQ (a value) and IN (any of), under AND."""
    if filters is None or not filters.filters:
        return None
    if filters.condition not in (None, FilterCondition.AND):
        raise ValueError("embedpipe filters combine with AND only")
    out: dict[str, Any] = {}
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            raise ValueError("embedpipe filters are flat: no nested MetadataFilters")
        if f.operator not in (FilterOperator.EQ, FilterOperator.IN):
            raise ValueError(f"embedpipe filters take == and in, not {f.operator.value}")
        out[f.key] = f.value
    return out


def _node(hit: Hit) -> TextNode:
    metadata = common.chunk_metadata(hit)
    source = RelatedNodeInfo(node_id=str(hit.metadata.get(REF_DOC) or hit.doc_id))
    return TextNode(
        id_=hit.chunk_id,
        text=hit.text,
        metadata=metadata,
        relationships={NodeRelationship.SOURCE: source},
    )
