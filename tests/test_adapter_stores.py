"""The adapters behave like the frameworks' own stores (issue 25), with the real LangChain and
LlamaIndex and the real model, on every local sink: MMR against a reference computed here from
the model's vectors, one id model (add -> search -> get -> delete -> gone), unknown arguments
refused, score thresholds, the frameworks' constructors, and documents added through the
library surviving the shipped nightly config's full run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document as LCDocument
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from llama_index.core import Document as LlamaDocument
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

import embedpipe
from embedpipe.config import ModelConfig, RunConfig, load_config
from embedpipe.errors import ConfigError
from embedpipe.index import Index
from embedpipe.integrations.langchain import EmbedpipeVectorStore
from embedpipe.integrations.llama_index import EmbedpipeEmbedding
from embedpipe.integrations.llama_index import EmbedpipeVectorStore as LlamaStore
from tests.sinkkit import SINK_KINDS, kind_of_uri, sink_uri

pytestmark = pytest.mark.slow

# Three near-duplicates about cats and three unlike passages: plain similarity returns the cats
# first, MMR with a low lambda brings the others forward.
TEXTS = {
    "cat-1": "Cats purr softly when they are content and relaxed.",
    "cat-2": "A content cat purrs softly while it relaxes.",
    "cat-3": "Relaxed, contented cats make a soft purring sound.",
    "dog": "Dogs bark loudly at strangers who approach the house at night.",
    "market": "The stock market fell sharply after the central bank raised rates.",
    "volcano": "The volcano erupted, sending ash high into the atmosphere.",
}
TEAMS = {
    "cat-1": "pets",
    "cat-2": "pets",
    "cat-3": "pets",
    "dog": "pets",
    "market": "money",
    "volcano": "earth",
}
QUERY = "a purring cat and a barking dog"


def config(uri: str) -> RunConfig:
    return load_config(
        None,
        {
            "sink": {"uri": uri, "collection": "docs"},
            "model": {"precision": "fp32", "device": "cpu"},
        },
    )


@pytest.fixture(scope="module", params=SINK_KINDS)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """The six passages in one small index of each sink kind (Postgres: a real server)."""
    cfg = config(sink_uri(request.param, tmp_path_factory.mktemp(request.param) / "index"))
    records = [{"id": k, "text": t, "metadata": {"team": TEAMS[k]}} for k, t in TEXTS.items()]
    assert embedpipe.backfill(records, config=cfg).outcome == "done"
    return cfg


@pytest.fixture
def lc(built: RunConfig) -> Iterator[EmbedpipeVectorStore]:
    store = EmbedpipeVectorStore(sink=built.sink.uri, collection="docs", device="cpu")
    yield store
    store.close()


@pytest.fixture
def llama(built: RunConfig) -> Iterator[LlamaStore]:
    store = LlamaStore(sink=built.sink.uri, collection="docs", device="cpu")
    yield store
    store.close()


@pytest.fixture
def copy(built: RunConfig, tmp_path: Path) -> str:
    """A private copy of the index (export: no re-encoding), for a test that writes."""
    uri = sink_uri(kind_of_uri(built.sink.uri), tmp_path / "copy")
    embedpipe.export(built, to=uri)
    return uri


def reference_mmr(query: str, k: int, lambda_mult: float) -> list[str]:
    """MMR computed here, from the packaged model's own vectors of every passage, by LangChain's
    reference implementation (independent of embedpipe.mmr)."""
    names = list(TEXTS)
    vectors = embedpipe.encode([TEXTS[n] for n in names])
    order = maximal_marginal_relevance(
        embedpipe.encode([query])[0], list(vectors), lambda_mult=lambda_mult, k=k
    )
    return [names[i] for i in order]


def reference_similar(query: str, k: int) -> list[str]:
    """The k passages nearest to `query` by the packaged model's own vectors."""
    names = list(TEXTS)
    scores = embedpipe.encode([TEXTS[n] for n in names]) @ embedpipe.encode([query])[0]
    return [names[i] for i in np.argsort(-scores, kind="stable")[:k]]


def doc_ids(docs: list[LCDocument]) -> list[str]:
    return [d.metadata["doc_id"] for d in docs]


# -- MMR -------------------------------------------------------------------------------------


def test_mmr_is_the_reference_order_and_diversity_changes_it(lc: EmbedpipeVectorStore) -> None:
    want = reference_mmr(QUERY, 4, 0.2)
    similar = doc_ids(lc.similarity_search(QUERY, k=4))
    assert want != similar and set(want) != set(similar)  # the set is one where MMR matters
    got = doc_ids(lc.max_marginal_relevance_search(QUERY, k=4, fetch_k=6, lambda_mult=0.2))
    assert got == want
    assert doc_ids(lc.max_marginal_relevance_search(QUERY, k=4, fetch_k=6, lambda_mult=1.0)) == (
        similar
    )
    vector = lc.embeddings.embed_query(QUERY)
    by_vector = lc.max_marginal_relevance_search_by_vector(vector, 4, 6, 0.2)
    assert doc_ids(by_vector) == want


def test_mmr_retrievers_and_async_variants_agree(lc: EmbedpipeVectorStore) -> None:
    want = reference_mmr(QUERY, 3, 0.2)
    retriever = lc.as_retriever(
        search_type="mmr", search_kwargs={"k": 3, "fetch_k": 6, "lambda_mult": 0.2}
    )
    assert doc_ids(retriever.invoke(QUERY)) == want
    assert doc_ids(asyncio.run(retriever.ainvoke(QUERY))) == want
    found = asyncio.run(lc.amax_marginal_relevance_search(QUERY, k=3, fetch_k=6, lambda_mult=0.2))
    assert doc_ids(found) == want


def test_mmr_takes_a_filter(lc: EmbedpipeVectorStore) -> None:
    got = lc.max_marginal_relevance_search(QUERY, k=3, lambda_mult=0.2, filter={"team": "pets"})
    assert len(got) == 3 and {d.metadata["team"] for d in got} == {"pets"}


def test_llama_index_mmr_mode_is_the_reference_and_other_modes_are_refused(
    llama: LlamaStore,
) -> None:
    index = VectorStoreIndex.from_vector_store(llama, embed_model=EmbedpipeEmbedding.of(llama))
    retriever = index.as_retriever(
        similarity_top_k=4,
        vector_store_query_mode="mmr",
        vector_store_kwargs={"mmr_threshold": 0.2, "mmr_prefetch_k": 6},
    )
    nodes = retriever.retrieve(QUERY)
    assert [n.node.metadata["doc_id"] for n in nodes] == reference_mmr(QUERY, 4, 0.2)
    for mode in ("text_search", "svm"):
        with pytest.raises(ValueError, match="query modes default, mmr, sparse, hybrid, not '"):
            llama.query(VectorStoreQuery(query_str=QUERY, mode=VectorStoreQueryMode(mode)))
    for mode in ("sparse", "hybrid"):  # answered on an index with BM25 vectors (test_hybrid)
        with pytest.raises(ConfigError, match="sparse vectors"):
            llama.query(VectorStoreQuery(query_str=QUERY, mode=VectorStoreQueryMode(mode)))


def promoting_first(index: Index, promote: Callable[[], None]) -> None:
    """Make a promotion happen while the index encodes its first query text (through the
    index's injectable encoder_for): the generation the query was encoded for is no longer the
    one served once it is encoded."""
    inner, done = index._encoder_for, []

    def encoder_for(model: ModelConfig) -> Any:
        if not done:
            done.append(True)
            promote()
            time.sleep(1.5)  # past the read pointer's look-up interval (snapshot sinks)
        return inner(model)

    index._encoder_for = encoder_for


@pytest.mark.parametrize("call", ["langchain-mmr", "llama-mmr", "llama-text"])
def test_a_text_query_meets_the_generation_it_was_encoded_for_across_a_promotion(
    call: str, copy: str, tiny_model: Path
) -> None:
    """A text query (MMR or LlamaIndex's query_str) is encoded with the model of the generation
    it searches, even when a run promotes another model's generation meanwhile (before the fix,
    the adapters encoded for one generation and searched the next: 384 dims against 32)."""
    if call != "langchain-mmr" and not copy.startswith("qdrant-edge:"):
        # The read view is the sink's, the three calls the adapters': every sink by one call.
        pytest.skip("the adapters' other text queries are checked on the default sink")
    records = [{"id": k, "text": t} for k, t in TEXTS.items()]
    tiny = load_config(
        None,
        {
            "sink": {"uri": copy, "collection": "docs"},
            "model": {"name": str(tiny_model), "device": "cpu"},
        },
    )

    def promote() -> None:
        assert embedpipe.backfill(records, config=tiny).outcome == "done"

    want = reference_mmr(QUERY, 4, 0.2)
    if call == "langchain-mmr":
        lc = EmbedpipeVectorStore(sink=copy, collection="docs", device="cpu")
        index = lc.index
        assert index is not None
        promoting_first(index, promote)
        got = doc_ids(lc.max_marginal_relevance_search(QUERY, k=4, fetch_k=6, lambda_mult=0.2))
        assert got == want
        close = lc.close
    else:
        llama = LlamaStore(sink=copy, collection="docs", device="cpu")
        index = llama.client
        promoting_first(index, promote)
        mode = VectorStoreQueryMode.MMR if call == "llama-mmr" else VectorStoreQueryMode.DEFAULT
        query = VectorStoreQuery(query_str=QUERY, similarity_top_k=4, mode=mode)
        found = llama.query(query, mmr_threshold=0.2) if call == "llama-mmr" else llama.query(query)
        got = [n.metadata["doc_id"] for n in found.nodes or []]
        assert got == (want if call == "llama-mmr" else reference_similar(QUERY, 4))
        close = llama.close
    try:
        assert index.embed_queries([QUERY]).shape == (1, 32)  # the promoted generation serves
    finally:
        close()


def test_a_query_whose_generation_a_promotion_drops_meanwhile_is_answered_by_one_whole_one(
    copy: str, tiny_model: Path
) -> None:
    """A promotion that keeps no previous generation drops the one a query was encoded for:
    the sinks whose readers hold what they read (a snapshot, the loaded vectors) answer from it;
    Postgres, which reads a generation's table by name, encodes the query again for the new
    one and answers from that; none fails."""
    records = [{"id": k, "text": t} for k, t in TEXTS.items()]
    tiny = load_config(
        None,
        {
            "sink": {"uri": copy, "collection": "docs"},
            "model": {"name": str(tiny_model), "device": "cpu"},
            "promote": {"keep_previous": 0},
        },
    )
    lc = EmbedpipeVectorStore(sink=copy, collection="docs", device="cpu")
    assert lc.index is not None
    promoting_first(lc.index, lambda: embedpipe.backfill(records, config=tiny))
    try:
        got = doc_ids(lc.similarity_search(QUERY, k=4))
    finally:
        lc.close()
    fresh = EmbedpipeVectorStore(sink=copy, collection="docs", device="cpu")
    try:
        assert fresh.index is not None and fresh.index.embed_queries([QUERY]).shape == (1, 32)
        promoted = doc_ids(fresh.similarity_search(QUERY, k=4))
    finally:
        fresh.close()
    held = reference_similar(QUERY, 4)
    assert promoted != held  # the tiny random model ranks them otherwise
    assert got == (promoted if copy.startswith("postgres") else held)


# -- unknown arguments -----------------------------------------------------------------------


def test_unknown_arguments_are_type_errors_naming_what_is_taken(
    built: RunConfig, lc: EmbedpipeVectorStore, llama: LlamaStore
) -> None:
    with pytest.raises(TypeError, match=r"'colection'.*sink, collection"):
        EmbedpipeVectorStore(sink=built.sink.uri, colection="docs")
    with pytest.raises(TypeError, match=r"'where'.*collection"):
        LlamaStore(sink=built.sink.uri, collection="docs", where={"team": "pets"})
    with pytest.raises(TypeError, match=r"'filters' .*filter=.*k, filter, score_threshold"):
        lc.similarity_search(QUERY, filters={"team": "pets"})
    with pytest.raises(TypeError, match="'where'"):
        lc.similarity_search_with_score(QUERY, where={"team": "pets"})
    with pytest.raises(TypeError, match=r"'lambda'.*fetch_k, lambda_mult"):
        lc.max_marginal_relevance_search(QUERY, **{"lambda": 0.3})
    with pytest.raises(TypeError, match=r"'filters'.*k, filter, score_threshold"):
        lc.as_retriever(search_kwargs={"k": 2, "filters": {"team": "pets"}})
    with pytest.raises(TypeError, match=r"'score_threshold'.*k, fetch_k, lambda_mult, filter"):
        lc.as_retriever(search_type="mmr", search_kwargs={"score_threshold": 0.5})
    with pytest.raises(TypeError, match=r"'mmr_lambda'.*mmr_threshold"):
        llama.query(VectorStoreQuery(query_str=QUERY), mmr_lambda=0.3)


def test_score_threshold_keeps_the_hits_at_or_above_it(lc: EmbedpipeVectorStore) -> None:
    scored = lc.similarity_search_with_score(QUERY, k=6)
    cut = (scored[1][1] + scored[2][1]) / 2  # between the second and the third
    assert doc_ids(lc.similarity_search(QUERY, k=6, score_threshold=cut)) == doc_ids(
        [d for d, _ in scored[:2]]
    )
    above = lc.similarity_search_with_score(QUERY, k=6, score_threshold=cut)
    assert [s for _, s in above] == pytest.approx([s for _, s in scored[:2]])
    relevance = (cut + 1) / 2  # the relevance scale LangChain's threshold retriever uses
    retriever = lc.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"k": 6, "score_threshold": relevance},
    )
    assert doc_ids(retriever.invoke(QUERY)) == doc_ids([d for d, _ in scored[:2]])


# -- ids -------------------------------------------------------------------------------------


def test_langchain_ids_round_trip_and_unknown_ids_delete_nothing(copy: str) -> None:
    store = EmbedpipeVectorStore(sink=copy, collection="docs", device="cpu")
    try:
        ids = store.add_texts(["Zebrafish regrow their fins."], [{"team": "zoo"}], ids=["zebra"])
        assert ids == ["zebra"]
        found = store.similarity_search("zebrafish fin regeneration", k=1)[0]
        assert found.id == "zebra#0" and found.metadata["doc_id"] == "zebra"
        assert [d.id for d in store.get_by_ids(["zebra#0"])] == ["zebra#0"]
        assert [d.id for d in store.get_by_ids(["zebra", "nope", "dog#0"])] == ["zebra#0", "dog#0"]
        assert store.get_by_ids(["zebra"])[0].page_content == "Zebrafish regrow their fins."
        assert store.delete(["zebra#0", "no-such-id"]) is False  # one unknown: nothing deleted
        assert [d.id for d in store.get_by_ids(["zebra"])] == ["zebra#0"]
        assert store.delete([found.id]) is True  # the id a search returned deletes its document
        assert store.get_by_ids(["zebra", "zebra#0"]) == []
        assert store.similarity_search("zebrafish", k=1, filter={"team": "zoo"}) == []
        assert store.delete(["zebra"]) is False  # gone already
        assert store.delete(["dog"]) is True and store.get_by_ids(["dog#0"]) == []
    finally:
        store.close()


def test_from_documents_and_from_texts_follow_langchain(tmp_path: Path) -> None:
    uri = f"faiss:{tmp_path / 'new'}"
    docs = [
        LCDocument(page_content=TEXTS["dog"], metadata={"team": "pets"}, id="dog"),
        LCDocument(page_content=TEXTS["market"], metadata={"team": "money"}),
    ]
    store = EmbedpipeVectorStore.from_documents(docs, sink=uri, collection="docs", device="cpu")
    try:
        assert store.get_by_ids(["dog"])[0].metadata["team"] == "pets"
        assert doc_ids(store.similarity_search("barking", k=1)) == ["dog"]
    finally:
        store.close()
    again = EmbedpipeVectorStore.from_texts(
        [TEXTS["volcano"]],
        None,
        [{"team": "earth"}],
        ids=["volcano"],
        sink=uri,
        collection="docs",
        device="cpu",
    )
    try:
        assert doc_ids(again.similarity_search("eruption", k=1)) == ["volcano"]
        assert len(again.similarity_search("anything", k=10)) == 3
    finally:
        again.close()


def test_llama_index_insert_is_deterministic_and_keeps_the_index_vectors(copy: str) -> None:
    store = LlamaStore(sink=copy, collection="docs", device="cpu")
    try:
        index = VectorStoreIndex.from_vector_store(store, embed_model=EmbedpipeEmbedding.of(store))
        doc = LlamaDocument(
            text="Axolotls regrow whole limbs.", doc_id="axo", metadata={"team": "zoo"}
        )
        index.insert(doc)
        first = store.last_report
        assert first is not None and first.chunks_embedded == 1
        assert not any("embedded again" in note for note in first.notes)
        index.insert(doc)  # the same Document again: the same node ids, nothing new
        assert store.last_report is not None and store.last_report.chunks_embedded == 0
        nodes = store.get_nodes(["axo:0"])
        assert [n.node_id for n in nodes] == ["axo:0#0"] and nodes[0].ref_doc_id == "axo"
        # The vector stored is the one LlamaIndex made with the index's model (text with its
        # metadata, LlamaIndex's habit), not embedpipe's of the bare text: not embedded twice.
        embedded = LlamaDocument(text=doc.text, metadata={"team": "zoo"})
        made = EmbedpipeEmbedding.of(store).get_text_embedding(
            embedded.get_content(metadata_mode="embed")
        )
        stored = store.client.search_vector(np.asarray(made, np.float32), 1, with_vectors=True)
        assert stored[0].chunk_id == "axo:0#0" and stored[0].score == pytest.approx(1, abs=1e-5)
        index.delete_ref_doc("axo")
        assert store.get_nodes(["axo:0"]) == []
    finally:
        store.close()


def test_llama_index_nodes_from_another_model_are_embedded_again_with_a_note(copy: str) -> None:
    store = LlamaStore(sink=copy, collection="docs", device="cpu")
    try:
        text = "Octopuses have three hearts."
        foreign = np.random.default_rng(0).normal(size=384)
        store.add(
            [TextNode(id_="octo", text=text, embedding=list(foreign / np.linalg.norm(foreign)))]
        )
        assert store.last_report is not None
        assert any("embedded again" in note for note in store.last_report.notes)
        hit = store.client.search_vector(embedpipe.encode([text])[0], 1)[0]
        assert hit.chunk_id == "octo#0" and hit.score == pytest.approx(1, abs=1e-4)
    finally:
        store.close()


def test_llama_index_get_delete_nodes_and_clear(copy: str) -> None:
    store = LlamaStore(sink=copy, collection="docs", device="cpu")
    try:
        pets = MetadataFilters(filters=[MetadataFilter(key="team", value="pets")])
        assert sorted(n.node_id for n in store.get_nodes(filters=pets)) == [
            "cat-1#0",
            "cat-2#0",
            "cat-3#0",
            "dog#0",
        ]
        assert [n.get_content() for n in store.get_nodes(["market#0"])] == [TEXTS["market"]]
        with pytest.raises(ValueError, match=r"no node 'nope'.*nothing deleted"):
            store.delete_nodes(["market#0", "nope"])
        assert len(store.get_nodes(["market#0"])) == 1
        store.delete_nodes(["market#0"])
        assert store.get_nodes(["market"]) == []
        store.delete_nodes(filters=pets)
        assert [n.node_id for n in store.get_nodes(filters=MetadataFilters(filters=[]))] == [
            "volcano#0"
        ]
        store.delete("no-such-document")  # as LlamaIndex's stores: nothing to do
        store.clear()
        assert store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=5)).nodes == []
    finally:
        store.close()


def test_llama_index_from_documents_with_a_storage_context(tmp_path: Path) -> None:
    store = LlamaStore(sink=f"parquet:{tmp_path / 'new'}", collection="docs", device="cpu")
    try:
        context = StorageContext.from_defaults(vector_store=store)
        docs = [LlamaDocument(text=TEXTS[k], doc_id=k) for k in ("dog", "volcano")]
        index = VectorStoreIndex.from_documents(
            docs, storage_context=context, embed_model=EmbedpipeEmbedding()
        )
        nodes = index.as_retriever(similarity_top_k=1).retrieve("an erupting mountain")
        assert nodes[0].node.ref_doc_id == "volcano" and nodes[0].node.node_id == "volcano:0#0"
    finally:
        store.close()


# -- library-added documents and the nightly job -----------------------------------------------


def test_documents_added_through_both_adapters_survive_the_nightly_full_run(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in TEXTS.items():
        (corpus / f"{name}.txt").write_text(text)
    shipped = Path(__file__).parent.parent / "configs" / "nightly.yaml"
    nightly = load_config(
        shipped,
        {
            "source": {"uri": str(corpus)},
            "sink": {"uri": f"qdrant-edge:{tmp_path / 'edge'}"},
            "report": str(tmp_path / "last-run.json"),
            "model": {"precision": "fp32"},  # the parity check of `auto` is not what this tests
        },
    )
    assert nightly.mode == "full" and nightly.max_delete_fraction == 0.2
    assert embedpipe.run(nightly).outcome == "done"
    uri = nightly.sink.uri
    lc_store = EmbedpipeVectorStore(sink=uri, collection="docs", device="cpu")
    try:
        lc_store.add_texts(["Zebrafish regrow their fins."], ids=["zebra"])
    finally:
        lc_store.close()
    llama_store = LlamaStore(sink=uri, collection="docs", device="cpu")
    try:
        index = VectorStoreIndex.from_vector_store(
            llama_store, embed_model=EmbedpipeEmbedding.of(llama_store)
        )
        index.insert(LlamaDocument(text="Axolotls regrow whole limbs.", doc_id="axo"))
    finally:
        llama_store.close()
    (corpus / "market.txt").unlink()  # the source drops one of its documents
    report = embedpipe.run(nightly)
    assert report.outcome == "done" and report.chunks_deleted == 1
    store = EmbedpipeVectorStore(sink=uri, collection="docs", device="cpu")
    try:
        assert [d.id for d in store.get_by_ids(["zebra", "axo:0", "market.txt"])] == [
            "zebra#0",
            "axo:0#0",
        ]
        assert len(store.similarity_search("anything", k=20)) == len(TEXTS) - 1 + 2
    finally:
        store.close()
