"""The index where RAG runs: the LangChain and LlamaIndex adapters with the real frameworks and
the real model, on the default qdrant-edge sink and on FAISS (and the plain LangChain
QdrantVectorStore on an exported qdrant:PATH copy): the right document in the top 3 for real
questions, filters that narrow, add_texts through the pipeline and ledger, delete."""

from __future__ import annotations

import collections
import difflib
import functools
import glob
import heapq
import json
import random
import re
import shutil
import statistics
import textwrap
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.vectorstores import VectorStoreRetriever
from llama_index.core import VectorStoreIndex
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

import embedpipe
from embedpipe.config import RunConfig, load_config
from embedpipe.integrations.langchain import EmbedpipeEmbeddings, EmbedpipeVectorStore
from embedpipe.integrations.llama_index import EmbedpipeEmbedding
from embedpipe.integrations.llama_index import EmbedpipeVectorStore as LlamaStore
from tests.sinkkit import sink_uri
from tests.test_incremental import SERVERS

pytestmark = pytest.mark.slow

FUNCTIONS = [
    json.dumps,
    json.loads,
    textwrap.dedent,
    textwrap.wrap,
    heapq.nlargest,
    heapq.heappush,
    shutil.rmtree,
    shutil.copyfile,
    random.shuffle,
    random.choice,
    urllib.parse.urlsplit,
    urllib.parse.quote,
    functools.lru_cache,
    functools.partial,
    difflib.get_close_matches,
    statistics.median,
    statistics.stdev,
    glob.glob,
    re.sub,
    re.split,
    collections.namedtuple,
]
QUESTIONS = {
    "How do I convert a Python object into a JSON formatted string?": "json.dumps",
    "remove common leading whitespace from every line of a text": "textwrap.dedent",
    "find the n largest elements in a dataset": "heapq.nlargest",
    "recursively delete a whole directory tree": "shutil.rmtree",
    "shuffle a list in place": "random.shuffle",
    "split a URL into scheme, network location, path and query": "urllib.parse.urlsplit",
    "cache the results of recent calls of a function": "functools.lru_cache",
    "get a list of the best close matches for a word": "difflib.get_close_matches",
    "return the median, the middle value, of numeric data": "statistics.median",
    "list the pathnames matching a shell-style wildcard pattern": "glob.glob",
}


def records() -> list[dict[str, Any]]:
    """One document per stdlib function: its docstring, its module in the metadata."""
    out = []
    for fn in FUNCTIONS:
        module = fn.__module__.replace("posixpath", "os.path")
        name = f"{module}.{fn.__name__}"
        out.append(
            {
                "id": name,
                "text": f"{name}\n\n{fn.__doc__}",
                "metadata": {"module": module, "name": name},
            }
        )
    return out


def config(uri: str) -> RunConfig:
    return load_config(
        None,
        {
            "sink": {"uri": uri, "collection": "docs"},
            "model": {"precision": "fp32", "device": "cpu"},
        },
    )


@pytest.fixture(scope="module", params=["qdrant-edge", "faiss", "qdrant", "parquet", *SERVERS])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """The stdlib docstrings embedded with the packaged model into each kind of sink (Postgres:
    a real server, tests/pgkit.py)."""
    root = tmp_path_factory.mktemp(request.param)
    cfg = config(sink_uri(request.param, root / "index"))
    assert embedpipe.backfill(records(), config=cfg).outcome == "done"
    return cfg


@pytest.fixture
def langchain_store(built: RunConfig) -> Iterator[EmbedpipeVectorStore]:
    store = EmbedpipeVectorStore(sink=built.sink.uri, collection="docs", device="cpu")
    yield store
    store.close()


@pytest.fixture
def llama_store(built: RunConfig) -> Iterator[LlamaStore]:
    store = LlamaStore(sink=built.sink.uri, collection="docs", device="cpu")
    yield store
    store.close()


def top3_langchain(retriever: VectorStoreRetriever, question: str) -> list[str]:
    return [d.metadata["doc_id"] for d in retriever.invoke(question)]


# -- LangChain -----------------------------------------------------------------------------------


def test_langchain_retriever_finds_the_right_document_in_the_top_3(
    langchain_store: EmbedpipeVectorStore,
) -> None:
    retriever = langchain_store.as_retriever(search_kwargs={"k": 3})
    missed = {
        q: top3_langchain(retriever, q)
        for q, want in QUESTIONS.items()
        if want not in top3_langchain(retriever, q)
    }
    assert missed == {}


def test_langchain_documents_carry_the_chunk_and_its_metadata(
    langchain_store: EmbedpipeVectorStore,
) -> None:
    doc, score = langchain_store.similarity_search_with_score("shuffle a list in place", k=1)[0]
    assert doc.metadata["doc_id"] == "random.shuffle" and doc.metadata["module"] == "random"
    assert doc.metadata["chunk_index"] == 0 and doc.metadata["chunk_id"] == "random.shuffle#0"
    assert doc.id == "random.shuffle#0" and "Shuffle" in doc.page_content
    assert 0.3 < score <= 1.0
    rel = langchain_store.similarity_search_with_relevance_scores("shuffle a list", k=1)
    assert 0.5 < rel[0][1] <= 1.0


def test_langchain_filter_narrows_to_the_metadata_it_names(
    langchain_store: EmbedpipeVectorStore,
) -> None:
    question = "split a string or a text into pieces"
    assert {d.metadata["module"] for d in langchain_store.similarity_search(question, k=6)} != {
        "re"
    }
    only_re = langchain_store.similarity_search(question, k=6, filter={"module": "re"})
    assert sorted(d.metadata["doc_id"] for d in only_re) == ["re.split", "re.sub"]
    retriever = langchain_store.as_retriever(
        search_kwargs={"k": 5, "filter": {"module": ["json", "heapq"], "chunk_index": 0}}
    )
    assert {d.metadata["module"] for d in retriever.invoke(question)} == {"json", "heapq"}


def test_langchain_embeddings_are_the_index_model_with_its_prompt(
    langchain_store: EmbedpipeVectorStore,
) -> None:
    vector = langchain_store.embeddings.embed_query("median of numbers")
    by_vector = langchain_store.similarity_search_by_vector(vector, k=1)
    assert by_vector[0].metadata["doc_id"] == "statistics.median"
    plain = EmbedpipeEmbeddings().embed_query("median of numbers")
    assert len(plain) == len(vector) == 384


def test_add_texts_goes_through_the_pipeline_and_an_unchanged_one_embeds_nothing(
    built: RunConfig, tmp_path: Path
) -> None:
    scheme = built.sink.uri.partition(":")[0]
    uri = sink_uri("postgres" if scheme.startswith("postgres") else scheme, tmp_path / "copy")
    exported = embedpipe.export(built, to=uri)  # a private copy: this test writes
    store = EmbedpipeVectorStore(sink=uri, collection="docs", device="cpu")
    try:
        text = "Zebrafish regrow their fins after amputation within about two weeks."
        ids = store.add_texts([text], metadatas=[{"module": "zoo"}])
        assert store.last_report is not None and store.last_report.chunks_embedded == 1
        found = store.similarity_search("how long do zebrafish take to regenerate a fin", k=1)
        assert found[0].page_content == text and found[0].metadata["doc_id"] == ids[0]
        store.add_texts([text], metadatas=[{"module": "zoo"}])
        assert store.last_report.chunks_embedded == 0
        assert store.last_report.fingerprint == exported.fingerprint  # in place, same index
        store.delete(ids)
        gone = store.similarity_search("zebrafish fins", k=3, filter={"module": "zoo"})
        assert gone == []
    finally:
        store.close()


# -- LlamaIndex ----------------------------------------------------------------------------------


def test_llama_index_retriever_finds_the_right_document_in_the_top_3(
    llama_store: LlamaStore,
) -> None:
    index = VectorStoreIndex.from_vector_store(
        llama_store, embed_model=EmbedpipeEmbedding.of(llama_store)
    )
    retriever = index.as_retriever(similarity_top_k=3)
    missed = {}
    for question, want in QUESTIONS.items():
        got = [n.node.metadata["doc_id"] for n in retriever.retrieve(question)]
        if want not in got:
            missed[question] = got
    assert missed == {}


def test_llama_index_metadata_filters_narrow_the_results(llama_store: LlamaStore) -> None:
    index = VectorStoreIndex.from_vector_store(
        llama_store, embed_model=EmbedpipeEmbedding.of(llama_store)
    )
    filters = MetadataFilters(filters=[MetadataFilter(key="module", value="re")])
    nodes = index.as_retriever(similarity_top_k=5, filters=filters).retrieve("split text")
    assert sorted(n.node.metadata["doc_id"] for n in nodes) == ["re.split", "re.sub"]
    assert nodes[0].node.ref_doc_id in ("re.split", "re.sub") and nodes[0].score is not None
    any_of = MetadataFilters(
        filters=[MetadataFilter(key="module", value=["json", "glob"], operator="in")]
    )
    nodes = index.as_retriever(similarity_top_k=5, filters=any_of).retrieve("files and JSON")
    assert len(nodes) == 5 and {n.node.metadata["module"] for n in nodes} <= {"json", "glob"}
    with pytest.raises(ValueError, match="take == and in"):
        index.as_retriever(
            filters=MetadataFilters(filters=[MetadataFilter(key="x", value=1, operator=">")])
        ).retrieve("x")


# -- an exported copy read by LangChain's own QdrantVectorStore ---------------------------------


def test_langchain_qdrant_vector_store_reads_an_exported_copy(
    built: RunConfig, tmp_path: Path
) -> None:
    if not built.sink.uri.startswith("qdrant-edge:"):
        pytest.skip("the Edge -> qdrant:PATH route")
    langchain_qdrant = pytest.importorskip("langchain_qdrant")
    from qdrant_client import QdrantClient

    embedpipe.export(built, to=f"qdrant:{tmp_path / 'q'}")
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        store = langchain_qdrant.QdrantVectorStore(
            client=client,
            collection_name="docs",
            content_payload_key="text",
            embedding=EmbedpipeEmbeddings(),  # the packaged model the index was built with
        )
        for question, want in QUESTIONS.items():
            names = [d.metadata["name"] for d in store.similarity_search(question, k=3)]
            assert want in names, (question, names)
    finally:
        client.close()


# -- a collection another tool made ------------------------------------------------------------


def test_a_langchain_collection_is_refused_saying_what_it_holds(tmp_path: Path) -> None:
    langchain_qdrant = pytest.importorskip("langchain_qdrant")
    made = langchain_qdrant.QdrantVectorStore.from_texts(
        ["a text LangChain embedded", "another one"],
        EmbedpipeEmbeddings(),
        path=str(tmp_path / "q"),
        collection_name="docs",
    )
    made.client.close()
    with pytest.raises(embedpipe.EmbedpipeError) as refused:
        embedpipe.backfill(records()[:2], sink=f"qdrant:{tmp_path / 'q'}", collection="docs")
    message = " ".join(str(refused.value).split())
    assert "collection 'docs' at qdrant:" in message and "was not made by embedpipe" in message
    assert "2 points" in message and "dimension 384" in message
    assert "LangChain's layout (page_content, metadata)" in message
    assert "another --collection" in message and "embedpipe export" in message
    with pytest.raises(embedpipe.EmbedpipeError, match="was not made by embedpipe"):
        embedpipe.query("text", sink=f"qdrant:{tmp_path / 'q'}", collection="docs")
