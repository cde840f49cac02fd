"""An embedpipe index as a LlamaIndex vector store and its model as a LlamaIndex embedding
(pip install 'embedpipe[llamaindex]').

    from llama_index.core import VectorStoreIndex
    from embedpipe.integrations.llama_index import EmbedpipeEmbedding, EmbedpipeVectorStore
    store = EmbedpipeVectorStore(sink="faiss:./index", collection="docs")
    index = VectorStoreIndex.from_vector_store(store, embed_model=EmbedpipeEmbedding.of(store))
    nodes = index.as_retriever(similarity_top_k=3).retrieve("how do I retry?")

Every sink works (Qdrant Edge, Qdrant local or server, FAISS, Parquet by exact search), with
`MetadataFilters` (EQ, NE, GT, GTE, LT, LTE, IN, NIN; AND, OR, NOT, nested) and the query modes
`default`, `mmr` (`mmr_threshold` is lambda), and, on an index built with BM25 sparse vectors
(Qdrant Edge, Qdrant), `sparse` and `hybrid` (`alpha`, `sparse_top_k`, `hybrid_top_k`), and
`mmr` over their candidates (`vector_store_kwargs={"retrieval_mode": "hybrid"}`); any other
mode is a ValueError naming those four.

Ids: a node is one chunk, its `node_id` the chunk id `DOC#N`, its text, `doc_id`,
`chunk_index`, `chunk_id`, `start`/`end` offsets and the source metadata (with `source`), its
`ref_doc_id` the source document. `add`
stores each node as a document through embedpipe's pipeline and ledger (recorded as added by
the library: a full-mode run leaves it alone): `REF:START` for a node of a source document, so
a repeated insert of the same Document stores nothing new; a node embedded by this index's
model (`EmbedpipeEmbedding.of(store)`) keeps its vector, any other is embedded again with a
note. `get_nodes` takes chunk or document ids; `delete_nodes` and `delete(ref_doc_id)` delete
whole documents (the ledger's unit), `clear` all of them, each as a run recorded in the ledger.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
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
from embedpipe.state.ledger import Named
from embedpipe.types import Document, RunReport

__all__ = ["EmbedpipeEmbedding", "EmbedpipeVectorStore"]
# LlamaIndex's query modes embedpipe runs (any other runs dense, as before).
REF_DOC = "ref_doc_id"  # the metadata key a node's source document is kept under
REF_SEPARATOR = ":"  # between a source document's id and a node's place in it
# LlamaIndex's sparse and hybrid query modes, as embedpipe's retrieval modes.
RETRIEVAL = {VectorStoreQueryMode.SPARSE: "sparse", VectorStoreQueryMode.HYBRID: "hybrid"}
MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR, *RETRIEVAL)  # modes answered
# query()'s kwargs; `retrieval_mode` (sparse or hybrid) picks an MMR query's candidates
QUERY_ARGS = ("mmr_threshold", "mmr_prefetch_k", "mmr_prefetch_factor", "retrieval_mode")
MMR_PREFETCH_FACTOR = 4.0  # MMR re-ranks this many times k candidates unless told
log = logging.getLogger(__name__)


class EmbedpipeVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over an embedpipe index: a sink URI and a collection (or a
    config: a RunConfig or a YAML path); `state` where its ledger is, when not beside it."""

    stores_text: bool = True
    is_embedding_query: bool = True
    _index: Index = PrivateAttr()
    _last_report: RunReport | None = PrivateAttr(default=None)

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

    @property
    def last_report(self) -> RunReport | None:
        """What the last `add` did (a run's report: chunks embedded, skipped, notes)."""
        return self._last_report

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store the nodes as documents through embedpipe's pipeline and ledger; returns their
        document ids: `REF:START` for a node of a source document (its ref_doc_id and where it
        starts in it), so inserting the same Document again stores nothing new; the node's
        own id otherwise. A node's embedding is kept when this index's model made it
        (`EmbedpipeEmbedding.of(store)`), else the text is embedded again (with a note)."""
        common.refuse_unknown("add", add_kwargs, ("nodes",))
        docs: list[Document] = []
        vectors: dict[str, tuple[str, np.ndarray]] = {}
        foreign = 0
        for node in nodes:
            doc = Document(node_document_id(node), node.get_content(), _node_metadata(node))
            docs.append(doc)
            if node.embedding is None:
                continue
            if self._index.made_here(node.embedding):
                vectors[f"{doc.id}#0"] = (doc.text, np.asarray(node.embedding, dtype=np.float32))
            else:
                foreign += 1
        report = common.add(self._index, docs, vectors)
        if foreign:
            note = (
                f"{foreign} nodes came with embeddings this index's model did not make (another "
                "embed_model?): embedded again with the index's model; pass "
                "embed_model=EmbedpipeEmbedding.of(store) to embed once"
            )
            report.notes.append(note)
            log.warning(note)
        self._last_report = report
        return [d.id for d in docs]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete the nodes of a source document (the documents `REF:...` its nodes were
        stored as, and a document stored under that id itself), as a run recorded in the
        ledger. A ref_doc_id the index lacks deletes nothing, as LlamaIndex's stores do."""
        common.refuse_unknown("delete", delete_kwargs, ("ref_doc_id",))
        named = Named([ref_doc_id], prefixes=[ref_doc_id + REF_SEPARATOR])
        self._index.delete_named(named, strict=False)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the documents these node ids name (a node id is a chunk id `DOC#N`, which
        names its document: the ledger keeps documents whole; a document id names itself),
        or, with `filters`, the documents of the chunks they pass (both: of the named chunks
        they pass). A node id the index lacks is a ValueError, and nothing is deleted."""
        common.refuse_unknown("delete_nodes", delete_kwargs, ("node_ids", "filters"))
        if filters is not None:
            found = self._index.chunks(_named(node_ids), _where(filters))
            self._index.delete_named(Named(sorted({h.doc_id for h in found})), strict=False)
            return
        if not node_ids:
            raise ValueError("delete_nodes needs node_ids or filters (everything: clear())")
        _, unknown = self._index.delete_named(Named(node_ids, chunk_ids=True), strict=True)
        if unknown:
            raise ValueError(
                f"no node {', '.join(map(repr, unknown[:5]))}"
                f"{f' (and {len(unknown) - 5} more)' if len(unknown) > 5 else ''} in "
                f"{self._index.name}: nothing deleted"
            )

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes (chunks) these ids name (a node id, a document id: every chunk of
        it), among those `filters` pass; every node with `filters` alone. Ids the index lacks
        are left out."""
        if node_ids is None and filters is None:
            raise ValueError("get_nodes needs node_ids or filters")
        return [_node(h) for h in self._index.chunks(_named(node_ids), _where(filters))]

    def clear(self) -> None:
        """Delete every document of the index, as a run recorded in the ledger (the index stays,
        empty; its settings and model are kept)."""
        self._index.delete_named(Named(every=True), strict=False)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The top-k chunks for the query's embedding (else its text), among those its filters,
        doc_ids and node_ids pass; mode `default` (similarity) or `mmr` (maximal marginal
        relevance: `mmr_threshold`, from the query or a kwarg, weighs closeness to the query
        against diversity, default 0.5; `mmr_prefetch_k` or `mmr_prefetch_factor` (default 4)
        how many candidates it re-ranks); `sparse` (BM25, `sparse_top_k`) or `hybrid` (dense
        and BM25 fused by reciprocal rank, `alpha` 1 = dense only, 0 = sparse only,
        `hybrid_top_k`) on an index with sparse vectors. Any other mode is a ValueError."""
        common.refuse_unknown("query", kwargs, QUERY_ARGS)
        if query.mode not in MODES:
            raise ValueError(
                f"embedpipe stores answer the query modes {', '.join(m.value for m in MODES)}, "
                f"not {query.mode.value!r}"
            )
        if "retrieval_mode" in kwargs and query.mode != VectorStoreQueryMode.MMR:
            raise ValueError(
                "retrieval_mode picks the candidates of an mmr query; for a sparse or hybrid "
                "query use VectorStoreQueryMode.SPARSE or HYBRID"
            )
        where = common.payload_filter(_filters(query.filters)) or {}
        if query.doc_ids:
            where["doc_id"] = list(query.doc_ids)
        if query.node_ids:
            where["chunk_id"] = list(query.node_ids)
        k = query.similarity_top_k
        asked: np.ndarray | str  # a text is encoded for the generation it searches
        if query.query_embedding is not None:
            asked = common.as_vector(query.query_embedding)
        elif query.query_str:
            asked = query.query_str
        else:
            raise ValueError("a query needs an embedding or a text")
        if query.mode in RETRIEVAL:
            hits = self._retrieve(query, RETRIEVAL[query.mode], k, where)
        elif query.mode == VectorStoreQueryMode.MMR:
            hits = self._mmr(query, asked, k, where, kwargs)
        elif isinstance(asked, str):
            hits = self._index.search(asked, k, where)
        else:
            hits = self._index.search_vector(asked, k, where)
        return VectorStoreQueryResult(
            nodes=[_node(h) for h in hits],
            similarities=[h.score for h in hits],
            ids=[h.chunk_id for h in hits],
        )

    def _retrieve(
        self, query: VectorStoreQuery, mode: str, k: int, where: dict[str, Any]
    ) -> list[Hit]:
        """A sparse or hybrid query: BM25 ranks the query's words, so it needs its text; the
        query's embedding, when given, is hybrid's dense side."""
        if not query.query_str:
            raise ValueError(f"a {mode} query needs its text (query_str): BM25 ranks its words")
        vector = None
        if query.query_embedding is not None:
            vector = common.as_vector(query.query_embedding)
        top = query.sparse_top_k if mode == "sparse" else query.hybrid_top_k
        return self._index.search(
            query.query_str, top or k, where, mode=mode, alpha=query.alpha, vector=vector
        )

    def _mmr(
        self,
        query: VectorStoreQuery,
        asked: np.ndarray | str,
        k: int,
        where: dict[str, Any],
        kwargs: dict[str, Any],
    ) -> list[Hit]:
        """An mmr query; kwarg `retrieval_mode` sparse or hybrid (with the query's `alpha`)
        takes the candidates from BM25 or both fused, which needs the query's text (its
        embedding, when given, is the dense side)."""
        lambda_mult = kwargs.get("mmr_threshold", query.mmr_threshold)
        fetch_k = kwargs.get("mmr_prefetch_k") or math.ceil(
            k * float(kwargs.get("mmr_prefetch_factor") or MMR_PREFETCH_FACTOR)
        )
        fetch, weight = int(fetch_k), 0.5 if lambda_mult is None else float(lambda_mult)
        mode = str(kwargs.get("retrieval_mode") or "dense")
        if mode != "dense":
            if not query.query_str:
                raise ValueError(f"a {mode} mmr query needs its text (query_str): BM25 ranks it")
            vector = None if isinstance(asked, str) else asked
            return self._index.mmr_search(
                query.query_str,
                k,
                fetch_k=fetch,
                lambda_mult=weight,
                filter=where,
                mode=mode,
                alpha=query.alpha,
                vector=vector,
            )
        if isinstance(asked, str):
            return self._index.mmr_search(asked, k, fetch_k=fetch, lambda_mult=weight, filter=where)
        return self._index.mmr_search_vector(
            asked, k, fetch_k=fetch, lambda_mult=weight, filter=where
        )

    def close(self) -> None:
        """Release the sink (its read snapshot and private copy on Qdrant Edge and local mode)."""
        self._index.close()


def node_document_id(node: BaseNode) -> str:
    """The document a node is stored as: `REF:START` for a node of a source document (where
    it starts in it, else a hash of its text), deterministic so a repeated insert changes
    nothing; the node's own id for a node of no document."""
    ref = node.ref_doc_id
    if not ref:
        return node.node_id
    start = getattr(node, "start_char_idx", None)
    if start is None:
        digest = hashlib.blake2b(node.get_content().encode(), digest_size=8).hexdigest()
        return f"{ref}{REF_SEPARATOR}{digest}"
    return f"{ref}{REF_SEPARATOR}{start}"


def _node_metadata(node: BaseNode) -> dict[str, Any]:
    return {**node.metadata, **({REF_DOC: node.ref_doc_id} if node.ref_doc_id else {})}


def _named(node_ids: list[str] | None) -> Named:
    return Named(node_ids or [], chunk_ids=True, every=node_ids is None)


def _where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    return common.payload_filter(_filters(filters))


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


OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


def _filters(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex filters as embedpipe's `$`-operator form: EQ, NE, GT, GTE, LT, LTE, IN, NIN,
    combined with AND, OR or NOT (NOT: none of the filters holds), nested to any depth."""
    if filters is None or not filters.filters:
        return None
    parts: list[dict[str, Any]] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            inner = _filters(f)
            if inner:
                parts.append(inner)
            continue
        if f.operator not in OPERATORS:
            supported = ", ".join(o.name for o in OPERATORS)
            raise ValueError(f"embedpipe filters take {supported}, not {f.operator.name}")
        parts.append({f.key: {OPERATORS[f.operator]: f.value}})
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:
        return {"$not": {"$or": parts}} if len(parts) > 1 else {"$not": parts[0]}
    if len(parts) == 1:
        return parts[0]
    return {"$or" if condition == FilterCondition.OR else "$and": parts}


def _node(hit: Hit) -> TextNode:
    metadata = common.chunk_metadata(hit)
    source = RelatedNodeInfo(node_id=str(hit.metadata.get(REF_DOC) or hit.doc_id))
    return TextNode(
        id_=hit.chunk_id,
        text=hit.text,
        metadata=metadata,
        relationships={NodeRelationship.SOURCE: source},
    )
