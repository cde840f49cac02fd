"""An embedpipe index as a LangChain vector store and its model as LangChain embeddings
(pip install 'embedpipe[langchain]').

    from embedpipe.integrations.langchain import EmbedpipeVectorStore
    store = EmbedpipeVectorStore(sink="qdrant-edge:./.embedpipe/qdrant-edge", collection="docs")
    retriever = store.as_retriever(search_kwargs={"k": 4, "filter": {"pkg": "numpy"}})

Every sink works (Qdrant Edge, Qdrant local or server, FAISS, Parquet by exact search). Queries
are encoded with the index's own model and stored query prompt; `add_texts` and
`add_documents` go through embedpipe's pipeline and ledger (chunked, hashed, incremental:
unchanged texts embed nothing); a returned Document is one chunk, its text as `page_content`,
the source metadata and `doc_id`, `chunk_index`, `chunk_id` in `metadata`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from embedpipe import api
from embedpipe.index import Index
from embedpipe.integrations import common
from embedpipe.sinks.base import Hit
from embedpipe.sources.records import document_id
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
        retrieval_mode: str = "dense",
        **options: Any,
    ) -> None:
        self.index = common.open_for(
            sink, collection, state, config, query_prefix, {"model": model, **options}
        )
        # dense | sparse | hybrid (as langchain-qdrant's RetrievalMode); a search's
        # `retrieval_mode=` (and `alpha=` for hybrid) kwarg overrides it
        self.retrieval_mode = retrieval_mode
        self._embeddings = EmbedpipeEmbeddings.of(self.index)
        self.last_report: RunReport | None = None  # what the last add_texts did

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[LCDocument]:
        """The k chunks nearest to `query` among those `filter` passes."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        """The k nearest chunks with their cosine similarity (higher is closer); in `sparse` or
        `hybrid` retrieval mode (kwarg `retrieval_mode`, else the store's) the BM25 or fused
        ranking's score instead, `alpha` weighing hybrid (1 = dense only, 0 = sparse only)."""
        mode = str(kwargs.get("retrieval_mode", self.retrieval_mode))
        hits = self.index.search(
            query, k, common.payload_filter(filter), mode=mode, alpha=kwargs.get("alpha")
        )
        return [(_document(h), h.score) for h in hits]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """The k chunks nearest to a query vector (from `embeddings.embed_query`)."""
        hits = self.index.search_vector(
            common.as_vector(embedding), k, common.payload_filter(filter)
        )
        return [_document(h) for h in hits]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: (score + 1.0) / 2.0  # cosine in [-1, 1] -> [0, 1]

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed texts as documents (id: `ids`, else a hash of the text) through embedpipe's
        pipeline: chunked, hashed, only what changed; returns their document ids."""
        texts = list(texts)
        metas = metadatas or [{} for _ in texts]
        names = ids or [document_id(None, t, "id") for t in texts]
        docs = [Document(str(i), t, dict(m)) for i, t, m in zip(names, texts, metas, strict=True)]
        self.last_report = common.add(self.index, docs)
        return [d.id for d in docs]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete these documents (every chunk of each) from the index and its ledger."""
        if not ids:
            raise ValueError(
                "delete needs the document ids to delete (all of them: drop the collection)"
            )
        self.index.delete_documents(ids)
        return True

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> EmbedpipeVectorStore:
        """A store on `sink=`/`collection=` (kwargs) with these texts added. embedpipe embeds
        with its own model (`model=`): `embedding` may only be an EmbedpipeEmbeddings."""
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

    def close(self) -> None:
        """Release the sink (its read snapshot and private copy on Qdrant Edge and local mode)."""
        self.index.close()


def _document(hit: Hit) -> LCDocument:
    return LCDocument(page_content=hit.text, metadata=common.chunk_metadata(hit), id=hit.chunk_id)
