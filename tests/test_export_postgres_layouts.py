"""`export --to postgresql://... --layout langchain|llama-index`: a Postgres copy whose views
langchain-postgres' `PGVectorStore` and LlamaIndex's `PGVectorStore` read with their default
settings (text, doc id, chunk index, user metadata, a filter on a user field), on a real Postgres
(tests/pgkit.py). Nothing is copied twice: the layouts are views over embedpipe's own generation
table, moved with it, and never laid over a table another tool made.

The SQL tests issue the statements those stores issue (langchain_postgres/v2/async_vectorstore.py
`create` and `__query_collection`, llama_index/vector_stores/postgres/base.py `_build_query` and
`_build_filter_clause`, langchain-postgres 0.0.19 and llama-index-vector-stores-postgres 0.9.0),
so they run without those packages; the tests marked `frameworks` run the stores themselves where
they are installed (they require pgvector < 0.4 and SQLAlchemy < 2.1: README, Postgres sink).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

import embedpipe
from embedpipe.config import PostgresOptions, RunConfig
from embedpipe.errors import SinkError
from embedpipe.integrations.langchain import EmbedpipeEmbeddings
from embedpipe.integrations.llama_index import EmbedpipeEmbedding
from embedpipe.sinks.postgres import PostgresSink
from embedpipe.types import RunReport
from tests import pgkit
from tests.clikit import cli
from tests.layoutkit import (  # noqa: F401 (fixtures `built`, `langchain_embeddings`)
    TEXTS,
    built_index,
    langchain_query_embeddings,
)
from tests.pgkit import PgServer, pg_server  # noqa: F401 (fixture `pg`)
from tests.sinkkit import DIM, FP_A, FP_B, embedded, filled, make_sink

pytestmark = pytest.mark.skipif(not pgkit.AVAILABLE, reason="needs the dev extra's Postgres")

FRAMEWORKS = all(
    importlib.util.find_spec(m) is not None
    for m in ("langchain_postgres", "llama_index.vector_stores.postgres")
)
frameworks = pytest.mark.skipif(
    not FRAMEWORKS,
    reason="langchain-postgres and llama-index-vector-stores-postgres are not installed (they "
    "need pgvector < 0.4 and SQLAlchemy < 2.1: not in the dev extra)",
)


def export_to(
    built: RunConfig,
    tmp_path: Path,
    layout: str | None,
    collection: str = "docs",
    state: str = "state",
) -> RunReport:
    """Export the six documents into the test server, in `tmp_path`'s own schema."""
    return embedpipe.export(
        built,
        to=pgkit.sink_uri(tmp_path),
        to_collection=collection,
        to_state=str(tmp_path / state),
        layout=layout,
    )


def exported(built: RunConfig, tmp_path: Path, layout: str | None) -> str:
    """The schema the six documents were exported into in `layout`."""
    report = export_to(built, tmp_path, layout)
    assert (report.outcome, report.chunks_embedded) == ("done", len(TEXTS))
    return pgkit.schema_for(tmp_path)


def query_vector(question: str, embeddings: EmbedpipeEmbeddings) -> str:
    """The query as both stores bind it: the text form of the vector."""
    return str([float(x) for x in embeddings.embed_query(question)])


def columns(pg: PgServer, schema: str, table: str) -> dict[str, str]:
    """What PGVectorStore.create reads to check the table: each column's data_type."""
    rows = pg.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
        "AND table_schema = %s",
        [table, schema],
    )
    return dict(rows)


def relations(pg: PgServer, schema: str) -> dict[str, str]:
    rows = pg.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = "
        "c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'v')",
        [schema],
    )
    return dict(rows)


# -- LangChain: the SQL its PGVectorStore issues ---------------------------------------------


def langchain_sql(
    pg: PgServer, schema: str, vector: str, where: str = "", **params: Any
) -> list[tuple[Any, ...]]:
    """PGVectorStore's dense query with its defaults (metadata_columns=[], cosine distance)."""
    return pg.execute(
        'SELECT "langchain_id", "content", "embedding", "langchain_metadata", '
        f'cosine_distance("embedding", %(q)s) as distance FROM "{schema}"."docs" {where} '
        'ORDER BY "embedding" <=> %(q)s LIMIT %(k)s',
        {"q": vector, **params},
    )


def test_langchain_layout_has_the_columns_pgvectorstore_checks(
    pg: PgServer, built: RunConfig, tmp_path: Path
) -> None:
    schema = exported(built, tmp_path, "langchain")
    found = columns(pg, schema, "docs")
    assert found["langchain_id"] == "text" and found["content"] == "text"
    assert found["embedding"] == "USER-DEFINED" and found["langchain_metadata"] == "jsonb"
    assert {"chunk_id", "doc_id", "text", "metadata"} <= set(found)  # embedpipe's own stay


def test_langchain_layout_answers_with_the_text_and_metadata(
    pg: PgServer, built: RunConfig, tmp_path: Path, langchain_embeddings: EmbedpipeEmbeddings
) -> None:
    schema = exported(built, tmp_path, "langchain")
    vector = query_vector("who is on call for the pager rotation", langchain_embeddings)
    [(doc_id, content, _, metadata, _)] = langchain_sql(pg, schema, vector, k=1)
    assert (doc_id, content) == ("pager#0", TEXTS[0][3])
    assert metadata == {
        "team": "ops",
        "year": 2021,
        "doc_id": "pager",
        "chunk_index": 0,
        "chunk_id": "pager#0",
        "start": 0,
        "end": len(TEXTS[0][3]),
    }


def test_langchain_layout_filters_on_a_user_field_as_the_store_does(
    pg: PgServer, built: RunConfig, tmp_path: Path, langchain_embeddings: EmbedpipeEmbeddings
) -> None:
    schema = exported(built, tmp_path, "langchain")
    vector = query_vector("pricing for enterprise customers", langchain_embeddings)
    # {"team": "ops"} and {"year": {"$gte": 2022}} as _handle_field_filter writes them
    ops = langchain_sql(
        pg, schema, vector, "WHERE langchain_metadata->>'team' = %(t)s", t="ops", k=10
    )
    assert {row[3]["doc_id"] for row in ops} == {"pager", "deploy", "backup"}
    recent = langchain_sql(
        pg, schema, vector, "WHERE (langchain_metadata->>'year')::INTEGER >= %(y)s", y=2022, k=10
    )
    assert {row[3]["doc_id"] for row in recent} == {"deploy", "backup", "pricing", "hiring"}


# -- LlamaIndex: the SQL its PGVectorStore issues --------------------------------------------


def llama_sql(
    pg: PgServer, schema: str, vector: str, where: str = "", k: int = 10
) -> list[tuple[Any, ...]]:
    """PGVectorStore._build_query with its defaults (no hnsw_kwargs), filters as text."""
    return pg.execute(
        f'SELECT id, node_id, text, metadata_, embedding <=> %s AS distance FROM "{schema}".'
        f"data_docs {where} ORDER BY distance asc LIMIT {k}",
        [vector],
    )


def test_llama_index_layout_is_what_node_to_metadata_dict_stores(
    pg: PgServer, built: RunConfig, tmp_path: Path
) -> None:
    schema = exported(built, tmp_path, "llama-index")
    [(metadata,)] = pg.execute(
        f"SELECT metadata_ FROM \"{schema}\".data_docs WHERE node_id = 'backup#0'"
    )
    text = TEXTS[2][3]
    place = {"doc_id": "backup", "chunk_index": 0, "chunk_id": "backup#0", "start": 0}
    node = TextNode(
        id_="backup#0",
        text=text,
        metadata={"team": "ops", "year": 2022, **place, "end": len(text)},
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="backup")},
        start_char_idx=0,
        end_char_idx=len(text),
    )
    stock = node_to_metadata_dict(node, remove_text=True)  # what PGVectorStore.add stores
    ours = {**metadata, "_node_content": json.loads(metadata["_node_content"])}
    assert {k: ours[k] for k in stock} == {
        **stock,
        "_node_content": json.loads(stock["_node_content"]),
    }
    back = metadata_dict_to_node(metadata, text=text)  # how PGVectorStore reads a row
    assert (back.node_id, back.ref_doc_id, back.get_content()) == ("backup#0", "backup", text)


def test_llama_index_layout_filters_on_a_user_field_as_the_store_does(
    pg: PgServer, built: RunConfig, tmp_path: Path, langchain_embeddings: EmbedpipeEmbeddings
) -> None:
    schema = exported(built, tmp_path, "llama-index")
    vector = query_vector("back up the database", langchain_embeddings)
    hits = llama_sql(pg, schema, vector, "WHERE metadata_->>'team' = 'sales'")
    assert {row[1] for row in hits} == {"pricing#0", "leads#0"}
    older = llama_sql(pg, schema, vector, "WHERE (metadata_->>'year')::float < 2022.0")
    assert {row[3]["doc_id"] for row in older} == {"pager", "leads"}
    top = llama_sql(pg, schema, vector, k=1)[0]
    assert (top[1], top[2]) == ("backup#0", TEXTS[2][3])


# -- the stores themselves, where they are installed -----------------------------------------


@frameworks
def test_langchain_stock_pgvectorstore_reads_and_filters_the_export(
    pg: PgServer, built: RunConfig, tmp_path: Path, langchain_embeddings: EmbedpipeEmbeddings
) -> None:
    from langchain_postgres import PGEngine, PGVectorStore

    schema = exported(built, tmp_path, "langchain")
    engine = PGEngine.from_connection_string(
        url=f"postgresql+psycopg://postgres@/postgres?host={pg.directory}"
    )
    store = PGVectorStore.create_sync(
        engine=engine, table_name="docs", schema_name=schema, embedding_service=langchain_embeddings
    )
    doc = store.similarity_search("who is on call for the pager rotation", k=1)[0]
    assert (doc.id, doc.page_content) == ("pager#0", TEXTS[0][3])
    meta = doc.metadata
    assert (meta["doc_id"], meta["chunk_index"], meta["team"], meta["year"]) == (
        "pager",
        0,
        "ops",
        2021,
    )
    found = store.similarity_search(
        "pricing for enterprise customers", k=10, filter={"team": "ops"}
    )
    assert {d.metadata["doc_id"] for d in found} == {"pager", "deploy", "backup"}


@frameworks
def test_llama_index_stock_pgvectorstore_reads_and_filters_the_export(
    pg: PgServer, built: RunConfig, tmp_path: Path
) -> None:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
    from llama_index.vector_stores.postgres import PGVectorStore

    schema = exported(built, tmp_path, "llama-index")
    socket = f"/postgres?host={pg.directory}"
    store = PGVectorStore.from_params(
        connection_string=f"postgresql+psycopg2://postgres@{socket}",
        async_connection_string=f"postgresql+asyncpg://postgres@{socket}",
        table_name="docs",
        schema_name=schema,
        embed_dim=384,  # the model's (its default, 1536, is for OpenAI's)
    )
    index = VectorStoreIndex.from_vector_store(store, embed_model=EmbedpipeEmbedding())
    hit = index.as_retriever(similarity_top_k=1).retrieve("restore the nightly database backup")[0]
    node = hit.node
    assert (node.node_id, node.ref_doc_id, node.get_content()) == (
        "backup#0",
        "backup",
        TEXTS[2][3],
    )
    assert (node.metadata["doc_id"], node.metadata["chunk_index"]) == ("backup", 0)
    assert (node.metadata["team"], node.metadata["year"]) == ("ops", 2022)
    sales = MetadataFilters(filters=[MetadataFilter(key="team", value="sales")])
    found = index.as_retriever(similarity_top_k=10, filters=sales).retrieve("back up the database")
    assert {h.node.metadata["doc_id"] for h in found} == {"pricing", "leads"}
    assert relations(pg, schema)["data_docs"] == "v"  # its setup created no table over ours


# -- what the export keeps -------------------------------------------------------------------


def test_exporting_again_copies_nothing_and_another_layout_moves_only_the_views(
    pg: PgServer, built: RunConfig, tmp_path: Path
) -> None:
    schema = exported(built, tmp_path, "langchain")
    again = export_to(built, tmp_path, "langchain")
    assert (again.chunks_embedded, again.chunks_skipped) == (0, len(TEXTS))
    relaid = export_to(built, tmp_path, "llama-index")
    assert (relaid.chunks_embedded, relaid.chunks_skipped) == (0, len(TEXTS))
    assert "langchain_id" not in columns(pg, schema, "docs")
    assert pg.execute(f'SELECT count(*), count(DISTINCT node_id) FROM "{schema}".data_docs') == [
        (len(TEXTS), len(TEXTS))
    ]
    tables = sorted(name for name, kind in relations(pg, schema).items() if kind == "r")
    assert len(tables) == 2 and "embedpipe_generations" in tables  # one generation, no copy
    back = export_to(built, tmp_path, "embedpipe")
    assert back.chunks_embedded == 0 and "data_docs" not in relations(pg, schema)


def test_an_export_without_layout_keeps_the_collections_own(
    pg: PgServer, built: RunConfig, tmp_path: Path
) -> None:
    schema = exported(built, tmp_path, "langchain")
    export_to(built, tmp_path, None)
    assert "langchain_id" in columns(pg, schema, "docs")
    sink = make_sink("postgres", tmp_path)
    assert sink.manifest()["layout"] == "langchain"


def test_a_new_generation_goes_live_with_the_collections_layout(
    pg: PgServer, tmp_path: Path
) -> None:
    first = make_sink("postgres", tmp_path, options=PostgresOptions(layout="llama-index"))
    filled(first, embedded(8, doc="old"))
    filled(make_sink("postgres", tmp_path), embedded(8, seed=1, doc="new"), FP_B)
    schema = pgkit.schema_for(tmp_path)
    rows = pg.execute(f"SELECT DISTINCT metadata_->>'doc_id' FROM \"{schema}\".data_docs")
    assert sorted(r[0] for r in rows) == ["new0", "new1"]
    assert f"docs__{FP_A[:12]}" not in relations(pg, schema)  # the old table dropped under it


def test_a_llama_index_table_another_tool_made_is_refused_and_left_alone(
    pg: PgServer, built: RunConfig, tmp_path: Path
) -> None:
    schema = pgkit.schema_for(tmp_path)
    pg.execute(f"CREATE SCHEMA {schema}")
    pg.execute(
        f"CREATE TABLE {schema}.data_docs (id bigserial PRIMARY KEY, text varchar NOT NULL, "
        "metadata_ json, node_id varchar, embedding vector(384))"
    )
    pg.execute(f"INSERT INTO {schema}.data_docs (text, metadata_) VALUES ('theirs', '{{}}')")
    with pytest.raises(SinkError) as refused:
        export_to(built, tmp_path, "llama-index")
    message = str(refused.value)
    assert f"table '{schema}.data_docs'" in message and "LlamaIndex PGVectorStore's" in message
    assert pg.execute(f"SELECT text FROM {schema}.data_docs") == [("theirs",)]
    assert not [name for name in relations(pg, schema) if name.startswith("docs")]


def test_a_name_llama_index_would_read_that_embedpipe_uses_is_refused(
    pg: PgServer, tmp_path: Path
) -> None:
    place = make_sink("postgres", tmp_path).place  # type: ignore[attr-defined]
    filled(PostgresSink(place, "data_docs"), embedded(4))
    llama = make_sink("postgres", tmp_path, options=PostgresOptions(layout="llama-index"))
    with pytest.raises(SinkError, match="which embedpipe already uses"):
        llama.open(DIM, FP_A)
    llama.abort()


def test_the_export_leaves_a_postgres_sources_tables_as_they_were(
    pg: PgServer, built: RunConfig, tmp_path: Path
) -> None:
    exported(built, tmp_path, None)  # the source: embedpipe's own layout, collection docs
    schema = pgkit.schema_for(tmp_path)
    registry = f"SELECT * FROM \"{schema}\".embedpipe_generations WHERE collection = 'docs'"
    before = (pg.execute(registry), columns(pg, schema, "docs"))
    source = RunConfig.model_validate(
        {**built.model_dump(), "sink": {"uri": pgkit.sink_uri(tmp_path), "collection": "docs"}}
    )
    copied = export_to(source, tmp_path, "langchain", collection="lc", state="copy-state")
    assert copied.chunks_embedded == len(TEXTS)
    assert (pg.execute(registry), columns(pg, schema, "docs")) == before
    assert "langchain_id" in columns(pg, schema, "lc")


def test_export_layout_into_postgres_on_the_command_line(
    pg: PgServer, built: RunConfig, tmp_path: Path
) -> None:
    to = pgkit.sink_uri(tmp_path)
    done = cli(
        "export",
        "--sink",
        built.sink.uri,
        "--collection",
        "docs",
        "--to",
        to,
        "--to-state",
        str(tmp_path / "state"),
        "--layout",
        "llama-index",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    schema = pgkit.schema_for(tmp_path)
    assert pg.execute(f'SELECT count(*) FROM "{schema}".data_docs') == [(len(TEXTS),)]


@pytest.fixture(autouse=True)
def _no_state_in_the_worktree(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A stray default state folder lands in the test's folder, not the repository."""
    monkeypatch.chdir(tmp_path)
    yield
