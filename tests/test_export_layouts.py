"""`export --layout langchain|llama-index`: a `qdrant:PATH` copy that each framework's stock
`QdrantVectorStore`, with its default settings, reads (text, doc id, chunk index, metadata)
and filters on a user field; embedpipe's own keys stay, and the copy is private (0700/0600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_qdrant import QdrantVectorStore as LangChainQdrant
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
from llama_index.core.vector_stores.utils import node_to_metadata_dict
from llama_index.vector_stores.qdrant import QdrantVectorStore as LlamaQdrant
from qdrant_client import QdrantClient, models

import embedpipe
from embedpipe.config import RunConfig, load_config
from embedpipe.errors import ConfigError
from embedpipe.integrations.langchain import EmbedpipeEmbeddings
from embedpipe.integrations.llama_index import EmbedpipeEmbedding
from embedpipe.sinks import open_sink
from embedpipe.sinks.layouts import payload
from embedpipe.types import Chunk, point_id
from tests.clikit import cli

TEXTS = [
    ("pager", "ops", 2021, "Rotate the on-call pager every Monday and page the secondary."),
    ("deploy", "ops", 2023, "Deploy the service with a blue-green rollout and watch the errors."),
    ("backup", "ops", 2022, "Back up the database nightly and test a restore every month."),
    ("pricing", "sales", 2023, "Quote enterprise pricing per seat with a yearly discount."),
    ("leads", "sales", 2021, "Qualify inbound leads within a day and book a demo call."),
    ("hiring", "people", 2022, "Interview candidates in two rounds and reply within a week."),
]


def records() -> list[dict[str, Any]]:
    return [
        {"id": doc, "text": text, "metadata": {"team": team, "year": year}}
        for doc, team, year, text in TEXTS
    ]


def config(uri: str) -> RunConfig:
    return load_config(
        None,
        {
            "sink": {"uri": uri, "collection": "docs"},
            "model": {"precision": "fp32", "device": "cpu"},
        },
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """The six documents embedded with the packaged model into Qdrant Edge."""
    cfg = config(f"qdrant-edge:{tmp_path_factory.mktemp('edge') / 'index'}")
    assert embedpipe.backfill(records(), config=cfg).outcome == "done"
    return cfg


@pytest.fixture(scope="module")
def langchain_embeddings(built: RunConfig) -> Iterator[EmbedpipeEmbeddings]:
    embeddings = EmbedpipeEmbeddings(sink=built.sink.uri, collection="docs", device="cpu")
    yield embeddings
    if embeddings.index is not None:
        embeddings.index.close()


def exported(built: RunConfig, path: Path, layout: str | None) -> Path:
    report = embedpipe.export(built, to=f"qdrant:{path}", layout=layout)
    assert (report.outcome, report.chunks_embedded) == ("done", len(TEXTS))
    return path


def langchain_store(path: Path, embeddings: EmbedpipeEmbeddings) -> LangChainQdrant:
    client = QdrantClient(path=str(path))
    return LangChainQdrant(client=client, collection_name="docs", embedding=embeddings)


def test_langchain_stock_store_returns_the_text_and_metadata(
    built: RunConfig, tmp_path: Path, langchain_embeddings: EmbedpipeEmbeddings
) -> None:
    store = langchain_store(exported(built, tmp_path / "lc", "langchain"), langchain_embeddings)
    try:
        doc = store.similarity_search("who is on call for the pager rotation", k=1)[0]
    finally:
        store.client.close()
    assert doc.page_content == TEXTS[0][3]
    meta = doc.metadata
    assert (meta["doc_id"], meta["chunk_index"], meta["chunk_id"]) == ("pager", 0, "pager#0")
    assert (meta["team"], meta["year"], meta["start"], meta["end"]) == (
        "ops",
        2021,
        0,
        len(TEXTS[0][3]),
    )
    assert meta["_id"] == point_id("pager#0")  # where langchain_qdrant puts the point id


def test_langchain_stock_filter_on_a_user_field_keeps_only_those_documents(
    built: RunConfig, tmp_path: Path, langchain_embeddings: EmbedpipeEmbeddings
) -> None:
    store = langchain_store(exported(built, tmp_path / "lc", "langchain"), langchain_embeddings)
    ops = models.Filter(
        must=[models.FieldCondition(key="metadata.team", match=models.MatchValue(value="ops"))]
    )
    try:
        found = store.similarity_search("pricing for enterprise customers", k=10, filter=ops)
    finally:
        store.client.close()
    assert {d.metadata["doc_id"] for d in found} == {"pager", "deploy", "backup"}


def llama_retrieve(path: Path, question: str, **kwargs: Any) -> list[Any]:
    client = QdrantClient(path=str(path))
    try:
        store = LlamaQdrant(collection_name="docs", client=client)
        index = VectorStoreIndex.from_vector_store(store, embed_model=EmbedpipeEmbedding())
        return index.as_retriever(**kwargs).retrieve(question)
    finally:
        client.close()


def test_llama_index_stock_store_returns_the_text_and_metadata(
    built: RunConfig, tmp_path: Path
) -> None:
    path = exported(built, tmp_path / "li", "llama-index")
    hit = llama_retrieve(path, "restore the nightly database backup", similarity_top_k=1)[0]
    node = hit.node
    assert node.get_content() == TEXTS[2][3]
    assert node.node_id == point_id("backup#0") and node.ref_doc_id == "backup"
    assert (node.metadata["doc_id"], node.metadata["chunk_index"]) == ("backup", 0)
    assert (node.metadata["team"], node.metadata["year"]) == ("ops", 2022)
    assert (node.start_char_idx, node.end_char_idx) == (0, len(TEXTS[2][3]))


def test_llama_index_stock_filter_on_a_user_field_keeps_only_those_documents(
    built: RunConfig, tmp_path: Path
) -> None:
    path = exported(built, tmp_path / "li", "llama-index")
    sales = MetadataFilters(filters=[MetadataFilter(key="team", value="sales")])
    found = llama_retrieve(path, "back up the database", similarity_top_k=10, filters=sales)
    assert {h.node.metadata["doc_id"] for h in found} == {"pricing", "leads"}


def test_llama_index_layout_is_what_node_to_metadata_dict_stores() -> None:
    chunk = Chunk(
        doc_id="d1",
        index=2,
        text="some text",
        token_ids=[],
        start=5,
        end=14,
        content_hash="h",
        metadata={"team": "ops", "source": "a.jsonl"},
    )
    node = TextNode(
        id_=point_id(chunk.id),
        text=chunk.text,
        metadata={
            "team": "ops",
            "source": "a.jsonl",
            "doc_id": "d1",
            "chunk_index": 2,
            "chunk_id": "d1#2",
            "start": 5,
            "end": 14,
        },
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="d1")},
        start_char_idx=5,
        end_char_idx=14,
    )
    stock = node_to_metadata_dict(node, remove_text=False)
    ours = payload(chunk, "llama-index")
    assert {k: ours[k] for k in stock} == stock


@pytest.mark.parametrize("layout", ["langchain", "llama-index", None])
def test_embedpipe_reads_every_layout_as_its_own(
    built: RunConfig, tmp_path: Path, layout: str | None
) -> None:
    path = exported(built, tmp_path / "copy", layout)
    sink = open_sink(config(f"qdrant:{path}").sink)
    try:
        chunks = {c.id: c for batch in sink.points() for c in batch.chunks}
        manifest = sink.manifest()
    finally:
        sink.abort()
    assert manifest["layout"] == (layout or "embedpipe")
    assert {k: (c.text, c.metadata) for k, c in chunks.items()} == {
        f"{doc}#0": (text, {"team": team, "year": year}) for doc, team, year, text in TEXTS
    }


def test_the_default_layout_is_embedpipe_own_payload(built: RunConfig, tmp_path: Path) -> None:
    path = exported(built, tmp_path / "plain", None)
    client = QdrantClient(path=str(path))
    try:
        points, _ = client.scroll("docs", limit=10, with_payload=True)
    finally:
        client.close()
    assert {tuple(sorted(p.payload or {})) for p in points} == {
        ("chunk_id", "chunk_index", "content_hash", "doc_id", "end", "metadata", "start", "text")
    }


def test_a_new_layout_rewrites_every_payload_of_an_earlier_export(
    built: RunConfig, tmp_path: Path
) -> None:
    path = exported(built, tmp_path / "copy", None)
    report = embedpipe.export(built, to=f"qdrant:{path}", layout="langchain")
    assert (report.chunks_embedded, report.chunks_skipped) == (len(TEXTS), 0)
    again = embedpipe.export(built, to=f"qdrant:{path}", layout="langchain")
    assert (again.chunks_embedded, again.chunks_skipped) == (0, len(TEXTS))
    client = QdrantClient(path=str(path))
    try:
        points, _ = client.scroll("docs", limit=10, with_payload=True)
    finally:
        client.close()
    assert all((p.payload or {}).get("page_content") for p in points) and len(points) == 6


def test_a_layout_for_a_sink_that_is_not_qdrant_is_refused(
    built: RunConfig, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="export --to qdrant:PATH"):
        embedpipe.export(built, to=f"faiss:{tmp_path / 'f'}", layout="langchain")


def test_the_export_is_private_like_the_state(built: RunConfig, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = exported(built, tmp_path / "private", "langchain")
    finally:
        os.umask(old)
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.rglob("*")]}
    assert modes and all(mode == (0o700 if p.is_dir() else 0o600) for p, mode in modes.items()), {
        str(p): oct(m) for p, m in modes.items() if m not in (0o700, 0o600)
    }


def test_export_layout_on_the_command_line(built: RunConfig, tmp_path: Path) -> None:
    to = f"qdrant:{tmp_path / 'cli'}"
    done = cli(
        "export",
        "--sink",
        built.sink.uri,
        "--collection",
        "docs",
        "--to",
        to,
        "--layout",
        "llama-index",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    client = QdrantClient(path=str(tmp_path / "cli"))
    try:
        points, _ = client.scroll("docs", limit=10, with_payload=True)
    finally:
        client.close()
    assert {(p.payload or {}).get("_node_type") for p in points} == {"TextNode"}
