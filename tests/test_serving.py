"""An index served to a RAG application: queries from many threads and coroutines give the
answers one thread gives, on every sink, through the library and both adapters; every store and
`query` over one index in a process share its sink; close() is final; a folder another process
holds is named with its pid and host, and this process is never called another one.

Real components throughout: the packaged model (OpenVINO, the backend `auto` picks on x86
CPUs, and torch), the real sinks, the real frameworks, real subprocesses for another process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from llama_index.core import VectorStoreIndex

import embedpipe
from embedpipe.config import RunConfig
from embedpipe.errors import ClosedIndexError, SinkError
from embedpipe.integrations.langchain import EmbedpipeVectorStore
from embedpipe.integrations.llama_index import EmbedpipeEmbedding
from embedpipe.integrations.llama_index import EmbedpipeVectorStore as LlamaStore
from embedpipe.redact import redact_uri
from embedpipe.sinks import shared as serving
from embedpipe.sinks.base import Sink
from embedpipe.sinks.registry import capabilities_for, open_sink
from tests import pgkit
from tests.ragkit import QUESTIONS, config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
THREADS = 8
# Each question three times, so that 8 threads really overlap on the same few texts.
ASKED = [*QUESTIONS] * 3
Answer = list[tuple[str, float]]


def answers(ask: Callable[[str], Answer], questions: list[str]) -> list[Answer]:
    return [ask(q) for q in questions]


def threaded(ask: Callable[[str], Answer], questions: list[str]) -> list[Answer]:
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(ask, questions))


def same(got: list[Answer], want: list[Answer]) -> bool:
    """The same chunks in the same order, scores equal to float32 rounding."""
    return all(
        [c for c, _ in g] == [c for c, _ in w]
        and all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(g, w, strict=True))
        for g, w in zip(got, want, strict=True)
    ) and len(got) == len(want)


@pytest.fixture
def store(built: RunConfig) -> Iterator[EmbedpipeVectorStore]:
    store = EmbedpipeVectorStore(sink=built.sink.uri, collection="docs", device="cpu")
    yield store
    store.close()


# -- many threads and coroutines ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["openvino", "torch"])
def test_open_index_answers_8_threads_as_it_answers_one(built: RunConfig, backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    elif not built.sink.uri.startswith("qdrant-edge:"):
        pytest.skip("torch's thread safety is the encoder's, not the sink's: checked on Edge")
    with embedpipe.open_index(sink=built.sink.uri, collection="docs", backend=backend) as index:

        def ask(q: str) -> Answer:
            return [(h.chunk_id, h.score) for h in index.search(q, 3)]

        want = answers(ask, ASKED)
        assert same(threaded(ask, ASKED), want)
        assert index.encoder().backend == backend  # the backend asked for is the one used


def test_query_answers_8_threads_as_it_answers_one(built: RunConfig) -> None:
    def ask(q: str) -> Answer:
        hits = embedpipe.query(q, k=3, sink=built.sink.uri, collection="docs")
        return [(h.chunk_id, h.score) for h in hits]

    want = answers(ask, ASKED)
    assert same(threaded(ask, ASKED), want)
    assert serving.open_count() == 0  # every query released what it opened


def test_langchain_batch_and_gathered_async_searches_answer_as_one_thread(
    store: EmbedpipeVectorStore,
) -> None:
    def ask(q: str) -> Answer:
        return [(d.id or "", s) for d, s in store.similarity_search_with_score(q, k=3)]

    want = answers(ask, ASKED)
    assert same(threaded(ask, ASKED), want)
    retriever = store.as_retriever(search_kwargs={"k": 3})
    batched = retriever.batch(ASKED, config={"max_concurrency": THREADS})
    assert [[d.id for d in docs] for docs in batched] == [[c for c, _ in w] for w in want]

    async def gathered() -> list[Answer]:
        found = await asyncio.gather(*(store.asimilarity_search_with_score(q, k=3) for q in ASKED))
        return [[(d.id or "", s) for d, s in pairs] for pairs in found]

    assert same(asyncio.run(gathered()), want)


def test_llama_index_threads_and_async_retrieval_answer_as_one_thread(built: RunConfig) -> None:
    store = LlamaStore(sink=built.sink.uri, collection="docs", device="cpu")
    try:
        index = VectorStoreIndex.from_vector_store(store, embed_model=EmbedpipeEmbedding.of(store))
        retriever = index.as_retriever(similarity_top_k=3)

        def ask(q: str) -> Answer:
            return [(n.node.node_id, n.score or 0.0) for n in retriever.retrieve(q)]

        want = answers(ask, ASKED)
        assert same(threaded(ask, ASKED), want)

        async def gathered() -> list[Answer]:
            found = await asyncio.gather(*(retriever.aretrieve(q) for q in ASKED))
            return [[(n.node.node_id, n.score or 0.0) for n in nodes] for nodes in found]

        assert same(asyncio.run(gathered()), want)
    finally:
        store.close()


# -- one open index per sink per process -------------------------------------------------------


def private_copy(built: RunConfig, tmp_path: Path) -> str:
    """A sink of the same kind as `built` that this test may write into: a folder under
    `tmp_path`, or on a server (Postgres) a schema of its own; the index is exported into it."""
    scheme = built.sink.uri.partition(":")[0]
    capabilities = capabilities_for(built.sink.uri)
    assert capabilities is not None
    local = capabilities.local_path
    uri = f"{scheme}:{tmp_path / 'copy'}" if local else pgkit.sink_uri(tmp_path / "copy")
    embedpipe.export(built, to=uri)
    return uri


def test_two_adapters_and_query_share_one_sink_and_the_last_close_frees_it(
    built: RunConfig, tmp_path: Path
) -> None:
    uri = private_copy(built, tmp_path)
    question = "shuffle a list in place"
    lc = EmbedpipeVectorStore(sink=uri, collection="docs", device="cpu")
    llama = LlamaStore(sink=uri, collection="docs", device="cpu")
    try:
        first = lc.similarity_search(question, k=1)[0].metadata["doc_id"]
        index = VectorStoreIndex.from_vector_store(llama, embed_model=EmbedpipeEmbedding.of(llama))
        retriever = index.as_retriever(similarity_top_k=1)
        assert retriever.retrieve(question)[0].node.ref_doc_id == first
        hits = embedpipe.query(question, k=1, sink=uri, collection="docs")
        assert hits[0].doc_id == first == "random.shuffle"
        assert lc.index.sink is llama.client.sink  # one sink for the index in this process
        lc.close()
        assert retriever.retrieve(question)[0].node.ref_doc_id == first  # still served
    finally:
        lc.close()
        llama.close()
    # Nothing of this process holds the index any more (a local folder is free): a run writes.
    assert serving.open_count() == 0
    report = embedpipe.backfill([("zoo", "zebrafish regrow fins")], config=config(uri))
    assert report.outcome == "done"


def test_a_store_used_after_close_raises_naming_it_and_reopens_nothing(
    built: RunConfig, tmp_path: Path
) -> None:
    uri = private_copy(built, tmp_path)
    store = EmbedpipeVectorStore(sink=uri, collection="docs", device="cpu")
    assert store.similarity_search("shuffle a list", k=1)
    store.close()
    store.close()  # closing again is fine
    for use in (
        lambda: store.similarity_search("shuffle a list", k=1),
        lambda: store.embeddings.embed_query("shuffle a list"),
        lambda: store.add_texts(["x"]),
        lambda: store.delete(["random.shuffle"]),
    ):
        with pytest.raises(ClosedIndexError, match=r"closed: open it again") as err:
            use()
        assert redact_uri(uri) in str(err.value) and "'docs'" in str(err.value)
    # The use after close reopened nothing (a local folder is not locked again): a run writes.
    assert embedpipe.backfill([("zoo", "zebrafish")], config=config(uri)).outcome == "done"


def test_the_backend_asked_for_on_the_query_path_is_honoured(built: RunConfig) -> None:
    with embedpipe.open_index(sink=built.sink.uri, collection="docs", backend="torch") as index:
        assert index.model_settings().backend == "torch"
        assert index.encoder().backend == "torch"
        assert index.model_settings().precision == "fp32"  # auto on the query path: fp32
    with embedpipe.open_index(
        sink=built.sink.uri, collection="docs", backend="torch", precision="bf16"
    ) as index:
        assert index.model_settings().precision == "bf16"


# -- who holds a locked folder --------------------------------------------------------------
# Readers never open the live folder (they read a private copy of a published read snapshot), so
# only a second writer meets a folder held for writing: it is told who holds it.

DIM, FP = 384, "f" * 64  # a generation these tests alone write

WRITER = textwrap.dedent(
    """
    import sys
    from embedpipe.config import load_config
    from embedpipe.sinks.registry import open_sink
    sink = open_sink(load_config(None, {"sink": {"uri": sys.argv[1], "collection": "docs"}}).sink)
    sink.open(int(sys.argv[2]), sys.argv[3])  # held for writing now
    print("open", flush=True)
    sys.stdin.readline()
    sink.close(promote=False)
    """
)


def writer(uri: str) -> Sink:
    return open_sink(config(uri).sink)


@pytest.mark.parametrize("kind", ["qdrant-edge", "qdrant"])
def test_a_folder_open_in_another_process_names_its_pid_and_host(kind: str, tmp_path: Path) -> None:
    uri = f"{kind}:{tmp_path / 'index'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", WRITER, uri, str(DIM), FP],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(SinkError) as err:
            writer(uri).open(DIM, FP)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in str(err.value)
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    second = writer(uri)
    second.open(DIM, FP)  # freed
    second.close(promote=False)


@pytest.mark.parametrize("kind", ["qdrant-edge", "qdrant"])
def test_this_process_is_never_called_another_process(kind: str, tmp_path: Path) -> None:
    uri = f"{kind}:{tmp_path / 'index'}"
    first = writer(uri)
    first.open(DIM, FP)  # this process holds the folder for writing
    try:
        with pytest.raises(SinkError) as err:  # a second writer in this process
            writer(uri).open(DIM, FP)
    finally:
        first.close(promote=False)
    message = str(err.value)
    assert f"this process (pid {os.getpid()})" in message and "another process" not in message
    assert "another embedpipe run" not in message and "close" in message
