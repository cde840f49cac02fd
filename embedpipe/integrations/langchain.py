"""An embedpipe index as a LangChain vector store and its model as LangChain embeddings
(pip install 'embedpipe[langchain]').

    from embedpipe.integrations.langchain import EmbedpipeVectorStore
    store = EmbedpipeVectorStore(sink="qdrant-edge:./.embedpipe/qdrant-edge", collection="docs")
    retriever = store.as_retriever(search_kwargs={"k": 4, "filter": {"pkg": "numpy"}})

Every sink works (Qdrant Edge, Qdrant local or server, FAISS, Parquet by exact search). Queries
are encoded with the index's own model and stored query prompt; `add_texts` and
`add_documents` go through embedpipe's pipeline and ledger (chunked, hashed, incremental:
unchanged texts embed nothing), recorded as added by the library, so a full-mode run leaves
them alone. MMR (`max_marginal_relevance_search`, `search_type="mmr"`) re-ranks the `fetch_k`
nearest chunks on their stored vectors, on every sink. On an index built with BM25 sparse
vectors (Qdrant Edge, Qdrant), `retrieval_mode` "sparse" or "hybrid" (the store's, or a
search's; `alpha` weighs hybrid) ranks by BM25 or by both fused, in similarity and MMR searches
alike (MMR then re-ranks those candidates on their dense vectors). An argument a method does
not take is a TypeError (a misspelt `filters=` never returns unfiltered results).

Ids: a returned Document is one chunk, its text as `page_content`, the source metadata and
`doc_id`, `chunk_index`, `chunk_id` in `metadata`, and `id` the chunk id `DOC#N`. `add_texts`
returns document ids. `get_by_ids` takes either (a chunk id: that chunk; a document id: its
chunks); `delete` deletes whole documents (a chunk id names its document: the ledger's unit is
the document), as a run recorded in the ledger, and returns False, deleting nothing, when an id
names nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any

from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever

from embedpipe import api
from embedpipe.index import Index
from embedpipe.integrations import common
from embedpipe.sinks.base import Hit
from embedpipe.sinks.sparse import Mode, check_mode
from embedpipe.sources.records import document_id
from embedpipe.state.ledger import Named
from embedpipe.types import Document, RunReport

__all__ = ["EmbedpipeEmbeddings", "EmbedpipeVectorStore"]


class EmbedpipeEmbeddings(Embeddings):
    """An index's model, prompts and width as LangChain embeddings; without a sink, a model
    (`model=`, default the packaged MiniLM) with the prompts given."""

    def __init__(
        self,
        sink: str | None = None,
        collection: str | None = None,
        *,
        model: str | None = None,
        state: str | None = None,
        config: api.ConfigArg = None,
        query_prefix: str | None = None,
        prefix: str = "",
        **options: Any,
    ) -> None:
        self.index: Index | None = None
        self.model, self.prefix, self.query_prefix = model, prefix, query_prefix or ""
        if sink is not None or config is not None:
            self.index = common.open_for(
                sink, collection, state, config, query_prefix, {"model": model, **options}
            )

    @classmethod
    def of(cls, index: Index) -> EmbedpipeEmbeddings:
        """The embeddings of an open index."""
        embeddings = cls()
        embeddings.index = index
        return embeddings

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Passage vectors, the passage prompt first."""
        if self.index is not None:
            return self.index.embed_passages(texts).tolist()
        return api.encode(texts, model=self.model, prompt=self.prefix).tolist()

    def embed_query(self, text: str) -> list[float]:
        """A query vector, the query prompt first."""
        if self.index is not None:
            return self.index.embed_queries([text])[0].tolist()
        return api.encode([text], model=self.model, prompt=self.query_prefix)[0].tolist()


class EmbedpipeVectorStore(VectorStore):
    """A LangChain VectorStore over an embedpipe index: a sink URI and a collection (or a
    config: a RunConfig or a YAML path); `state` where its ledger is, when not beside it."""

    def __init__(
        self,
        sink: str | None = None,
        collection: str | None = None,
        state: str | None = None,
        *,
        config: api.ConfigArg = None,
        model: str | None = None,
        query_prefix: str | None = None,
        retrieval_mode: str | Enum = "dense",
        **options: Any,
    ) -> None:
        self.index = common.open_for(
            sink, collection, state, config, query_prefix, {"model": model, **options}
        )
        # dense | sparse | hybrid (as langchain-qdrant's RetrievalMode; its enum works too): a
        # search's `retrieval_mode=` (and `alpha=` for hybrid) overrides it
        self.retrieval_mode: Mode = _checked_mode(retrieval_mode)
        self._embeddings = EmbedpipeEmbeddings.of(self.index)
        self.last_report: RunReport | None = None  # what the last add_texts did

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    # -- searches ------------------------------------------------------------------------------

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        *,
        score_threshold: float | None = None,
        retrieval_mode: str | Enum | None = None,
        alpha: float | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """The k chunks nearest to `query` among those `filter` passes (and, with
        `score_threshold`, whose score is at least that); `retrieval_mode` and `alpha` as in
        `similarity_search_with_score`."""
        common.refuse_unknown("similarity_search", kwargs, SEARCH_ARGS["similarity"])
        found = self.similarity_search_with_score(
            query,
            k,
            filter,
            score_threshold=score_threshold,
            retrieval_mode=retrieval_mode,
            alpha=alpha,
        )
        return [doc for doc, _ in found]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        *,
        score_threshold: float | None = None,
        retrieval_mode: str | Enum | None = None,
        alpha: float | None = None,
        **kwargs: Any,
    ) -> list[tuple[LCDocument, float]]:
        """The k nearest chunks with their cosine similarity (higher is closer), at least
        `score_threshold` when given. In `sparse` or `hybrid` retrieval mode (`retrieval_mode`,
        else the store's) the BM25 or the fused ranking's score instead, `alpha` weighing
        hybrid (1 = dense only, 0 = sparse only, None = equally)."""
        common.refuse_unknown("similarity_search_with_score", kwargs, SEARCH_ARGS["similarity"])
        hits = self.index.search(
            query,
            k,
            common.payload_filter(filter),
            mode=self._mode(retrieval_mode),
            alpha=alpha,
        )
        return [(_document(h), h.score) for h in _above(hits, score_threshold)]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        *,
        score_threshold: float | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """The k chunks nearest to a query vector (from `embeddings.embed_query`)."""
        common.refuse_unknown("similarity_search_by_vector", kwargs, SEARCH_ARGS["similarity"])
        hits = self.index.search_vector(
            common.as_vector(embedding), k, common.payload_filter(filter)
        )
        return [_document(h) for h in _above(hits, score_threshold)]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        *,
        retrieval_mode: str | Enum | None = None,
        alpha: float | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """k chunks by maximal marginal relevance: among the `fetch_k` nearest to `query` that
        `filter` passes, each next one the best trade of closeness to the query against
        likeness to those already chosen (`lambda_mult` 1: closeness alone, 0: diversity
        alone), re-ranked on their stored vectors (embedpipe.mmr), on every sink. In `sparse`
        or `hybrid` retrieval mode (`retrieval_mode`, else the store's; `alpha` as in
        `similarity_search_with_score`) the candidates are the `fetch_k` best by BM25 or by
        the fused ranking, re-ranked on their dense vectors the same way."""
        common.refuse_unknown("max_marginal_relevance_search", kwargs, SEARCH_ARGS["mmr"])
        hits = self.index.mmr_search(
            query,
            k,
            fetch_k=fetch_k,
            lambda_mult=lambda_mult,
            filter=common.payload_filter(filter),
            mode=self._mode(retrieval_mode),
            alpha=alpha,
        )
        return [_document(h) for h in hits]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        *,
        retrieval_mode: str | Enum | None = None,
        alpha: float | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """`max_marginal_relevance_search` for a query vector: dense candidates (sparse and
        hybrid rank the query's words, which a vector does not have: a ValueError)."""
        common.refuse_unknown("max_marginal_relevance_search_by_vector", kwargs, SEARCH_ARGS["mmr"])
        if retrieval_mode is not None and _checked_mode(retrieval_mode) != "dense":
            raise ValueError(
                f"retrieval_mode={_checked_mode(retrieval_mode)!r} ranks the query's words: "
                "call max_marginal_relevance_search with the query text"
            )
        hits = self.index.mmr_search_vector(
            common.as_vector(embedding),
            k,
            fetch_k=fetch_k,
            lambda_mult=lambda_mult,
            filter=common.payload_filter(filter),
        )
        return [_document(h) for h in hits]

    def as_retriever(self, **kwargs: Any) -> VectorStoreRetriever:
        """A retriever (`search_type` similarity, similarity_score_threshold or mmr); a
        `search_kwargs` key that search does not take is a TypeError here, not at the first
        query."""
        retriever = super().as_retriever(**kwargs)
        accepted = SEARCH_ARGS[retriever.search_type]
        unknown = {key: None for key in retriever.search_kwargs if key not in accepted}
        common.refuse_unknown(
            f"search_kwargs of search_type={retriever.search_type!r}: the search", unknown, accepted
        )
        return retriever

    def _mode(self, asked: str | Enum | None) -> Mode:
        """The retrieval mode of one search: the one asked, else the store's."""
        return self.retrieval_mode if asked is None else _checked_mode(asked)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: (score + 1.0) / 2.0  # cosine in [-1, 1] -> [0, 1]

    # -- writes and ids ------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed texts as documents (id: `ids`, else a hash of the text) through embedpipe's
        pipeline: chunked, hashed, only what changed; returns their document ids."""
        common.refuse_unknown("add_texts", kwargs, ("texts", "metadatas", "ids"))
        texts = list(texts)
        metas = metadatas or [{} for _ in texts]
        given: Sequence[str | None] = ids or [None] * len(texts)
        names = [i or document_id(None, t, "id") for i, t in zip(given, texts, strict=True)]
        docs = [Document(str(i), t, dict(m)) for i, t, m in zip(names, texts, metas, strict=True)]
        self.last_report = common.add(self.index, docs)
        return [d.id for d in docs]

    def add_documents(self, documents: list[LCDocument], **kwargs: Any) -> list[str]:
        """Embed LangChain Documents (id: `ids=`, else each one's `id`, else a hash of its text);
        returns their document ids."""
        common.refuse_unknown("add_documents", kwargs, ("documents", "ids"))
        ids = kwargs.get("ids") or [d.id for d in documents]
        return self.add_texts(
            [d.page_content for d in documents],
            [d.metadata for d in documents],
            ids=[str(i) if i else None for i in ids],
        )

    def get_by_ids(self, ids: Sequence[str], /) -> list[LCDocument]:
        """The stored chunks these ids name: a chunk id (`DOC#N`, a returned Document's id)
        that chunk, a document id (what add_texts returned) every chunk of it, in order; ids
        the index lacks are left out."""
        hits = self.index.chunks(Named(list(ids), chunk_ids=True))
        return [_document(h) for h in hits]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents these ids name (a chunk id names its document: the ledger keeps
        documents whole) from the index and its ledger, as a run recorded in the ledger.
        True when every id named something; False, deleting nothing, when one did not."""
        common.refuse_unknown("delete", kwargs, ("ids",))
        if not ids:
            raise ValueError(
                "delete needs the document ids to delete (all of them: drop the collection)"
            )
        _, unknown = self.index.delete_named(Named(list(ids), chunk_ids=True), strict=True)
        return not unknown

    # -- constructors --------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> EmbedpipeVectorStore:
        """A store on `sink=`/`collection=` (kwargs: what the constructor takes) with these
        texts added. embedpipe embeds with its own model (`model=`): `embedding` may only be
        an EmbedpipeEmbeddings (or None)."""
        if embedding is not None and not isinstance(embedding, EmbedpipeEmbeddings):
            raise ValueError(
                f"embedpipe embeds with its own model, not {type(embedding).__name__}: pass "
                "model='NAME or folder' (or an EmbedpipeEmbeddings)"
            )
        if isinstance(embedding, EmbedpipeEmbeddings) and embedding.model:
            kwargs.setdefault("model", embedding.model)
        store = cls(**kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    def from_documents(
        cls, documents: list[LCDocument], embedding: Embeddings | None = None, **kwargs: Any
    ) -> EmbedpipeVectorStore:
        """A store on `sink=`/`collection=` with these Documents added (ids: `ids=`, else
        each Document's id, else a hash of its text)."""
        ids = kwargs.pop("ids", None) or [d.id for d in documents]
        return cls.from_texts(
            [d.page_content for d in documents],
            embedding,
            [d.metadata for d in documents],
            ids=[str(i) if i else None for i in ids],
            **kwargs,
        )

    def close(self) -> None:
        """Release the sink (its read snapshot and private copy on Qdrant Edge and local mode)."""
        self.index.close()


# What each search (and `search_kwargs` of each retriever search_type) takes.
SEARCH_ARGS = {
    "similarity": ("k", "filter", "score_threshold", "retrieval_mode", "alpha"),
    "similarity_score_threshold": ("k", "filter", "score_threshold", "retrieval_mode", "alpha"),
    "mmr": ("k", "fetch_k", "lambda_mult", "filter", "retrieval_mode", "alpha"),
}


def _checked_mode(mode: str | Enum) -> Mode:
    """dense, sparse or hybrid, given as a string or as langchain-qdrant's RetrievalMode."""
    return check_mode(str(mode.value if isinstance(mode, Enum) else mode))


def _above(hits: list[Hit], threshold: float | None) -> list[Hit]:
    return hits if threshold is None else [h for h in hits if h.score >= threshold]


def _document(hit: Hit) -> LCDocument:
    return LCDocument(page_content=hit.text, metadata=common.chunk_metadata(hit), id=hit.chunk_id)
