"""What only the Postgres sink does, on a real Postgres with pgvector (tests/pgkit.py): credentials
never shown, the extension, the indexes built after a bulk load, another tool's table refused, a
dropped connection retried, an unreachable server, and readers while a run swaps generations.
The contract every sink keeps runs on it in tests/test_sinks.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedpipe.config import RunConfig, SinkConfig, load_config
from embedpipe.errors import SinkError, TransientSinkError
from embedpipe.redact import redact_uri
from embedpipe.runs.commit import retry
from embedpipe.sinks import open_sink
from embedpipe.sinks.postgres import PostgresSink, parse_place
from embedpipe.types import Embedded
from tests import pgkit
from tests.clikit import embedpipe as command
from tests.corpuskit import config, consistency, corpus_files
from tests.pgkit import PgServer, pg_server  # noqa: F401 (fixture `pg`)
from tests.sinkkit import DIM, FP_A, FP_B, embedded, filled, make_sink, unit_vectors

pytestmark = pytest.mark.skipif(not pgkit.AVAILABLE, reason="needs the dev extra's Postgres")

ROOT = Path(__file__).resolve().parent.parent


def sink_in(tmp_path: Path, **options: Any) -> PostgresSink:
    sink = make_sink("postgres", tmp_path, **options)
    assert isinstance(sink, PostgresSink)
    return sink


def indexes(pg: PgServer, sink: PostgresSink) -> dict[str, str]:
    """The sink schema's index names and definitions."""
    rows = pg.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", [sink.place.schema]
    )
    return {name: definition for name, definition in rows}


# -- the URI and its secrets -------------------------------------------------------------------


def test_the_password_in_the_uri_is_never_shown() -> None:
    uri = "postgresql://app:s3kr1t@db.internal:5432/vectors?sslmode=require&schema=rag"
    sink = open_sink(SinkConfig(uri=uri, collection="docs"))
    assert isinstance(sink, PostgresSink)
    assert sink.uri == "postgresql://app:***@db.internal:5432/vectors?sslmode=require&schema=rag"
    assert "s3kr1t" not in repr(sink.place) and sink.place.schema == "rag"
    assert "schema=" not in sink.place.conninfo and "s3kr1t" in sink.place.conninfo
    assert redact_uri("postgres://u@h/db?password=s3kr1t") == "postgres://***@h/db?password=***"


def test_a_schema_that_is_not_a_name_is_refused() -> None:
    with pytest.raises(SinkError, match="schema 'a;drop' must be a letter"):
        parse_place("postgresql", "//u@h/db?schema=a;drop", "public")


def test_a_uri_without_the_double_slash_says_the_form() -> None:
    with pytest.raises(SinkError, match=r"write postgres://USER@HOST:PORT/DB \(a unix socket"):
        parse_place("postgres", "/var/run/postgresql", "public")


def test_a_collection_too_long_for_a_table_name_says_the_limit() -> None:
    with pytest.raises(SinkError, match="takes at most 44"):
        open_sink(SinkConfig(uri="postgresql://u@h/db", collection="x" * 45))


# -- the extension and the tables ------------------------------------------------------------


def test_a_role_that_may_not_create_the_extension_is_told_what_to_run(
    pg: PgServer, tmp_path: Path
) -> None:
    database = "noext_" + pgkit.schema_for(tmp_path)[2:12]
    pg.execute(f"CREATE DATABASE {database}")
    pg.execute("DO $$ BEGIN CREATE ROLE plain LOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
    uri = pg.uri.replace("postgres:@/postgres?", f"plain@/{database}?")
    sink = open_sink(SinkConfig(uri=uri, collection="docs"))
    with pytest.raises(SinkError, match=rf"run `CREATE EXTENSION vector;` in '{database}'"):
        sink.open(DIM, FP_A)
    sink.abort()
    assert pg.execute("SELECT extname FROM pg_extension", database=database) == [("plpgsql",)]


def test_the_hnsw_and_gin_indexes_are_built_after_the_bulk_load_and_kept(
    pg: PgServer, tmp_path: Path
) -> None:
    from embedpipe.config import PostgresOptions

    sink = sink_in(tmp_path, options=PostgresOptions(hnsw_m=8, hnsw_ef_construction=32))
    sink.open(DIM, FP_A)
    sink.write(embedded(20))
    assert not any("hnsw" in d for d in indexes(pg, sink).values())  # a bulk load: no index yet
    sink.close()
    table = f"docs__{FP_A[:12]}"
    built = indexes(pg, sink)
    assert (
        "USING hnsw (embedding vector_cosine_ops) WITH (m='8', ef_construction='32')"
        in built[f"{table}_hnsw"]
    )
    assert "USING gin (metadata jsonb_path_ops)" in built[f"{table}_meta"]
    filled(sink, embedded(4, seed=1, doc="more"))  # an incremental run keeps them
    assert indexes(pg, sink) == built
    assert len(sink.search(embedded(1, seed=1, doc="more").vectors[0], k=30)) == 24


def test_other_hnsw_options_on_a_built_table_are_refused(tmp_path: Path) -> None:
    from embedpipe.config import PostgresOptions

    filled(sink_in(tmp_path), embedded(4))
    other = sink_in(tmp_path, options=PostgresOptions(hnsw_m=32))
    with pytest.raises(SinkError, match=r"hnsw_m=16 \(configured: 32\)"):
        other.open(DIM, FP_A)
    other.abort()


def test_a_filter_is_pushed_down_as_sql_on_the_gin_index(pg: PgServer, tmp_path: Path) -> None:
    from embedpipe.sinks.filters import conditions
    from embedpipe.sinks.postgres import where_clause

    sink = filled(sink_in(tmp_path), embedded(12))
    where, params = where_clause(conditions({"metadata.tag": "x", "chunk_index": [1, "2"]}))
    import psycopg

    with psycopg.connect(sink.place.conninfo) as conn:
        text = where.as_string(conn)
    assert text == '((metadata @> %s OR metadata @> %s)) AND ("chunk_index" = ANY(%s))'
    assert [getattr(p, "obj", p) for p in params] == [{"tag": "x"}, {"tag": ["x"]}, [1]]


def test_stored_vectors_read_as_either_pgvector_loader_gives_them() -> None:
    """pgvector >= 0.4 loads a `vector` column as a `Vector`; 0.3.x (which langchain-postgres
    requires, so installing it downgrades pgvector) as a numpy array: both read back."""
    try:
        from pgvector import Vector
    except ImportError:  # pgvector 0.3.x keeps it in pgvector.utils
        from pgvector.utils import Vector  # type: ignore[no-redef]

    from embedpipe.sinks.postgres import stored_vector

    values = np.asarray([0.25, -1.0, 3.5], dtype=np.float32)
    for loaded in (Vector(values.tolist()), values.astype(">f4"), values):
        got = stored_vector(loaded)
        assert got.dtype == np.float32 and got.tolist() == values.tolist()


# -- searches: one round trip; count: an index-only scan ------------------------------------


def round_trips(sink: PostgresSink, call: Callable[[], object]) -> int:
    """How many round trips `call` made on the sink's connection: the server's ReadyForQuery
    messages in libpq's protocol trace."""
    from psycopg import pq

    conn = sink._connection()
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            call()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return sum(1 for line in trace if "\tReadyForQuery" in line and line.startswith("B"))


def test_a_search_is_one_round_trip_to_the_server(tmp_path: Path) -> None:
    sink = filled(sink_in(tmp_path), embedded(40))
    query = embedded(1, seed=1).vectors[0]
    sink.search(query, k=3)  # the first search checks the view is embedpipe's
    assert round_trips(sink, lambda: sink.search(query, k=5)) == 1
    assert round_trips(sink, lambda: sink.search(query, k=5, with_vectors=True)) == 1
    tagged = {"metadata.tag": "x", "chunk_index": [0, 1]}  # the hits hold the field
    assert round_trips(sink, lambda: sink.search(query, k=5, filter=tagged)) == 1
    assert len(sink.search(query, k=5, filter=tagged)) == 5


def test_a_read_views_search_is_one_round_trip_and_looks_the_generation_up_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedpipe.sinks import postgres

    filled(sink_in(tmp_path), embedded(40))
    reader = sink_in(tmp_path)
    query = embedded(1, seed=1).vectors[0]

    def read() -> None:
        with reader.serving() as view:
            assert view.fingerprint == FP_A and view.manifest is not None
            assert len(view.search(query, 5, {"metadata.tag": "x"})) == 5

    read()  # the first looks the live generation up
    assert round_trips(reader, read) == 1
    monkeypatch.setattr(postgres, "LIVE_LOOKUP", 0.0)  # the look-up is due: one more
    assert round_trips(reader, read) == 2


def test_a_read_view_searches_its_generation_after_a_promotion_moved_the_view(
    tmp_path: Path,
) -> None:
    from embedpipe.sinks.postgres import LIVE_LOOKUP

    filled(sink_in(tmp_path), embedded(12, doc="old"))
    reader = sink_in(tmp_path)
    with reader.serving() as view:
        # Another model's generation (8 dimensions) is promoted while the query is encoded.
        filled(sink_in(tmp_path, keep_previous=True), embedded(12, doc="new", dim=8), FP_B)
        assert reader.live_fingerprint() == FP_B
        hits = view.search(embedded(1, seed=3).vectors[0], 4, None)  # 16 dimensions: A's
    assert view.fingerprint == FP_A and {h.doc_id[:3] for h in hits} == {"old"}
    time.sleep(LIVE_LOOKUP)
    with reader.serving() as view:  # the next query, a look-up later, reads the new one
        hits = view.search(embedded(1, seed=3, dim=8).vectors[0], 4, None)
    assert view.fingerprint == FP_B and view.manifest is not None and view.manifest["dim"] == 8
    assert {h.doc_id[:3] for h in hits} == {"new"}


def test_a_read_view_whose_generation_a_promotion_dropped_says_so_and_the_next_reads_the_new(
    tmp_path: Path,
) -> None:
    from embedpipe.errors import StaleReadError

    filled(sink_in(tmp_path), embedded(12, doc="old"))
    reader = sink_in(tmp_path)
    with reader.serving() as view:
        filled(sink_in(tmp_path, keep_previous=False), embedded(12, doc="new", dim=8), FP_B)
        with pytest.raises(StaleReadError, match=r"generation aaaaaaaaaaaa of 'docs' .*dropped"):
            view.search(embedded(1).vectors[0], 4, None)
    with reader.serving() as view:  # at once: the stale view made the reader look again
        hits = view.search(embedded(1, dim=8).vectors[0], 4, None)
    assert view.fingerprint == FP_B and {h.doc_id[:3] for h in hits} == {"new"}


def test_a_filter_on_a_field_no_chunk_has_is_refused_even_when_every_chunk_passes(
    tmp_path: Path,
) -> None:
    from embedpipe.errors import ConfigError

    sink = filled(sink_in(tmp_path), embedded(12))
    query = embedded(1).vectors[0]
    with pytest.raises(ConfigError, match="the metadata fields there are n, tag"):
        sink.search(query, k=3, filter={"metadata.typo": {"$nin": ["a"]}})
    assert len(sink.search(query, k=3, filter={"metadata.n": {"$nin": [0]}})) == 3


def test_a_search_after_another_tool_took_the_name_says_so(pg: PgServer, tmp_path: Path) -> None:
    sink = filled(sink_in(tmp_path), embedded(8))
    query = embedded(1).vectors[0]
    assert len(sink.search(query, k=3)) == 3
    schema = sink.place.schema
    pg.execute(f"DROP VIEW {schema}.docs")
    pg.execute(f"CREATE TABLE {schema}.docs (id uuid, document text, cmetadata jsonb)")
    with pytest.raises(SinkError, match="was not made by embedpipe"):
        sink.search(query, k=3)


def test_a_search_on_a_new_connection_keeps_the_iterative_scan(
    pg: PgServer, tmp_path: Path
) -> None:
    sink = filled(sink_in(tmp_path, ef_search=10), embedded(200))
    query = embedded(1, seed=3).vectors[0]
    rare = {"metadata.n": list(range(0, 200, 10))}  # 20 of 200: ef_search 10 alone finds ~1
    assert len(sink.search(query, k=20, filter=rare)) == 20
    pid = sink._connection().info.backend_pid
    pg.execute("SELECT pg_terminate_backend(%s)", [pid])
    hits = retry(lambda: sink.search(query, k=20, filter=rare), "search", sink, base_delay=0.01)
    assert len(hits) == 20


def test_a_built_generation_is_counted_by_an_index_only_scan(pg: PgServer, tmp_path: Path) -> None:
    sink = filled(sink_in(tmp_path), embedded(3000))
    table = f"{sink.place.schema}.docs__{FP_A[:12]}"
    [[plan]] = pg.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM {table}")[0]
    scan = plan["Plan"]["Plans"][0]
    assert (scan["Node Type"], scan["Heap Fetches"]) == ("Index Only Scan", 0)
    assert sink.count(FP_A) == 3000


# -- sparse vectors: a generated tsvector, BM25 and RRF in SQL ---------------------------------

# Twelve one-chunk documents: words shared by some, one rare word each, lengths that differ.
WORDS = {
    f"d{i:02d}": " ".join(
        ["vault"] * (1 + i % 3)
        + ["secret"] * (i % 2)
        + [f"code{i}", "handle", "returns"][: 1 + i % 3]
        + ["the", "file"] * (i % 4)
    )
    for i in range(12)
}


def sparse_sink(tmp_path: Path, texts: dict[str, str], **settings: Any) -> PostgresSink:
    """A complete generation built with BM25 vectors (`settings`) of these texts (doc id ->
    text, one chunk each, random unit vectors), described as a run describes it."""
    from embedpipe.config import SparseConfig
    from embedpipe.types import Chunk

    sparse = SparseConfig(kind="bm25", **settings)
    sink = sink_in(tmp_path, sparse=sparse)
    chunks = [
        Chunk(d, 0, text, [], 0, len(text), f"h{d}", {"n": i})
        for i, (d, text) in enumerate(texts.items())
    ]
    sink.open(DIM, FP_A)
    sink.describe({"settings": {"sparse": sparse.model_dump()}})
    sink.write(Embedded(chunks, unit_vectors(len(chunks))))
    sink.close()
    return sink


def retrieve(sink: PostgresSink, mode: str, text: str, k: int, **options: Any) -> list[Any]:
    from embedpipe.sinks.sparse import Retrieval

    dense = unit_vectors(1, seed=7)[0] if mode == "hybrid" else None
    alpha = options.pop("alpha", None)
    return sink.retrieve(Retrieval(mode, dense, None, alpha, text), k, **options)  # type: ignore[arg-type]


def test_sparse_vectors_are_generated_from_the_text_and_get_a_gin_index_after_the_bulk_load(
    pg: PgServer, tmp_path: Path
) -> None:
    from embedpipe.config import SparseConfig

    sink = sink_in(tmp_path, sparse=SparseConfig(kind="bm25", language="german"))
    sink.open(DIM, FP_A)
    sink.write(embedded(8))
    table = f"{sink.place.schema}.docs__{FP_A[:12]}"
    assert not any(name.endswith("_fts") for name in indexes(pg, sink))  # a bulk load: none yet
    sink.close()
    assert "USING gin (sparse)" in indexes(pg, sink)[f"docs__{FP_A[:12]}_fts"]
    rows = pg.execute(
        f"SELECT sparse = to_tsvector('german', text), text FROM {table} ORDER BY chunk_id"
    )
    assert len(rows) == 8 and all(same for same, _ in rows)
    filled(sink, embedded(4, seed=1, doc="more"))  # an incremental run: computed as it writes
    assert pg.execute(
        f"SELECT count(*) FROM {table} WHERE sparse @@ to_tsquery('german', 'more')"
    ) == [(4,)]


def test_a_sparse_query_ranks_every_chunk_holding_a_query_term_by_bm25_with_the_settings(
    pg: PgServer, tmp_path: Path
) -> None:
    import math

    settings = {"k1": 1.6, "b": 0.4, "avg_len": 5.0}
    sink = sparse_sink(tmp_path, WORDS, **settings)
    table = f"{sink.place.schema}.docs__{FP_A[:12]}"
    # BM25 computed here from the lexemes Postgres keeps for each chunk and for the query
    counts: dict[str, dict[str, int]] = {}
    for chunk_id, lexeme, n in pg.execute(
        f"SELECT chunk_id, e.lexeme, cardinality(e.positions) FROM {table}, unnest(sparse) e"
    ):
        counts.setdefault(chunk_id, {})[lexeme] = n
    query = "returns the secret vault code3"
    [[terms]] = pg.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", [query])
    df = {t: sum(t in c for c in counts.values()) for t in terms}
    idf = {t: math.log(1 + (len(counts) - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}

    def bm25(c: dict[str, int]) -> float:
        dl = sum(c.values())
        norm = settings["k1"] * (1 - settings["b"] + settings["b"] * dl / settings["avg_len"])
        return sum(idf[t] * c[t] * (settings["k1"] + 1) / (c[t] + norm) for t in terms if t in c)

    want = sorted(((-bm25(c), i) for i, c in counts.items() if bm25(c) > 0))
    hits = retrieve(sink, "sparse", query, 20)
    assert [h.chunk_id for h in hits] == [i for _, i in want]  # every chunk with a term, no other
    assert [h.score for h in hits] == pytest.approx([-s for s, _ in want])
    assert hits[0].doc_id == "d03"  # the one with the rare term
    assert retrieve(sink, "sparse", "the of and", 5) == []  # stopwords alone match nothing


def test_hybrid_is_qdrants_weighted_rrf_of_the_dense_and_sparse_rankings_filtered_on_both(
    tmp_path: Path,
) -> None:
    sink = sparse_sink(tmp_path, WORDS)
    query, dense = "secret handle", unit_vectors(1, seed=7)[0]
    for alpha, where in ((None, None), (0.3, None), (1.0, None), (0.5, {"metadata.n": [1, 2, 3]})):
        by_vector = [h.chunk_id for h in sink.search(dense, 12, where)]
        by_words = [h.chunk_id for h in retrieve(sink, "sparse", query, 12, filter=where)]
        weights = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
        fused: dict[str, float] = {}
        for ranking, w in zip((by_vector, by_words), weights, strict=True):
            for rank, chunk_id in enumerate(ranking, 1):
                share = 1 / (rank / w + 59) if w > 0 else 0.0
                fused[chunk_id] = fused.get(chunk_id, 0.0) + share
        want = sorted((-score, chunk_id) for chunk_id, score in fused.items())[:4]
        hits = retrieve(sink, "hybrid", query, 4, alpha=alpha, filter=where)
        assert [h.chunk_id for h in hits] == [c for _, c in want], alpha
        assert [h.score for h in hits] == pytest.approx([-s for s, _ in want])
        if where is not None:
            assert {h.metadata["n"] for h in hits} <= {1, 2, 3}


def test_a_sparse_or_hybrid_query_of_a_read_view_is_one_round_trip(tmp_path: Path) -> None:
    from embedpipe.sinks.sparse import Retrieval

    sparse_sink(tmp_path, WORDS)
    reader = sink_in(tmp_path)
    dense = unit_vectors(1, seed=7)[0]

    def read(mode: str) -> Callable[[], None]:
        def query() -> None:
            with reader.serving() as view:
                assert view.retrieve is not None
                asked = Retrieval(mode, dense, None, None, "vault secret")  # type: ignore[arg-type]
                assert view.retrieve(asked, 3, {"metadata.n": {"$gte": 2}})

        return query

    read("sparse")()  # the first looks the live generation up
    assert round_trips(reader, read("sparse")) == 1
    assert round_trips(reader, read("hybrid")) == 1


def test_a_read_views_sparse_query_whose_generation_a_promotion_dropped_says_so(
    tmp_path: Path,
) -> None:
    from embedpipe.errors import StaleReadError
    from embedpipe.sinks.sparse import Retrieval

    sparse_sink(tmp_path, WORDS)
    reader = sink_in(tmp_path)
    asked = Retrieval("sparse", None, None, None, "vault")
    with reader.serving() as view:
        assert view.retrieve is not None
        filled(sink_in(tmp_path, keep_previous=False), embedded(12, doc="new"), FP_B)
        with pytest.raises(StaleReadError, match=r"generation aaaaaaaaaaaa of 'docs' .*dropped"):
            view.retrieve(asked, 3, None)
    with reader.serving() as view:  # the new generation keeps no sparse vectors: said so
        assert view.fingerprint == FP_B and view.retrieve is not None
        with pytest.raises(SinkError, match="built without sparse vectors"):
            view.retrieve(asked, 3, None)


def test_text_search_follows_the_language_where_postgres_has_it_and_the_tokenizers_splits(
    pg: PgServer, tmp_path: Path
) -> None:
    texts = {
        "a": "hdrParseDate reads dates",
        "b": "Häuser und Gärten",
        "c": "net_x27 opens",
        "d": "os.path.join(a, *p) concatenates",
    }
    word = sparse_sink(tmp_path / "word", texts)
    assert [h.doc_id for h in retrieve(word, "sparse", "join", 3)] == ["d"]  # split at the dots
    assert [h.doc_id for h in retrieve(word, "sparse", "net_x27", 3)] == ["c"]
    assert retrieve(word, "sparse", "ParseDate", 3) == []  # one word: hdrparsed
    code = sparse_sink(tmp_path / "code", texts, tokenizer="code")
    assert [h.doc_id for h in retrieve(code, "sparse", "ParseDate", 3)] == ["a"]
    whitespace = sparse_sink(tmp_path / "ws", texts, tokenizer="whitespace")
    assert retrieve(whitespace, "sparse", "join", 3) == []  # Postgres' parser: one host token
    german = sparse_sink(tmp_path / "de", texts, language="German")
    assert [h.doc_id for h in retrieve(german, "sparse", "Haus", 3)] == ["b"]  # stemmed
    unknown = sparse_sink(tmp_path / "xx", texts, language="klingon")
    [[options]] = pg.execute(
        f"SELECT options FROM {unknown.place.schema}.embedpipe_generations WHERE live"
    )
    assert options["text_search"] == {"config": "simple", "tokenizer": "word"}
    assert [h.doc_id for h in retrieve(unknown, "sparse", "und", 3)] == ["b"]  # no stopwords


# -- another tool's table --------------------------------------------------------------------


def test_a_table_another_tool_made_is_refused_naming_what_it_holds(
    pg: PgServer, tmp_path: Path
) -> None:
    sink = sink_in(tmp_path)
    schema = sink.place.schema
    pg.execute(f"CREATE SCHEMA {schema}")
    pg.execute(
        f"CREATE TABLE {schema}.docs (id uuid, document text, embedding vector(3), cmetadata jsonb)"
    )
    pg.execute(f"INSERT INTO {schema}.docs VALUES (gen_random_uuid(), 'hi', '[1,2,3]', '{{}}')")
    with pytest.raises(SinkError) as refused:
        sink.open(DIM, FP_A)
    message = str(refused.value)
    assert f"table '{schema}.docs'" in message and "was not made by embedpipe: 1 rows" in message
    assert "embedding vector(3)" in message and "LangChain PGVector's layout" in message
    assert "another --collection (the model gives 16)" in message
    sink.abort()
    with pytest.raises(SinkError, match="was not made by embedpipe"):
        sink.search(embedded(1).vectors[0], k=1)
    assert pg.execute(f"SELECT count(*) FROM {schema}.docs") == [(1,)]


# -- faults ----------------------------------------------------------------------------------


def test_a_dropped_connection_is_transient_and_the_retry_reconnects_holding_the_run(
    pg: PgServer, tmp_path: Path
) -> None:
    sink = sink_in(tmp_path)
    first, second = embedded(8), embedded(8, seed=1, doc="later")
    sink.open(DIM, FP_A)
    sink.write(first)
    pg.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
        "'embedpipe'"
    )
    with pytest.raises(TransientSinkError, match="Postgres copy into"):
        sink.write(second)
    retry(lambda: sink.write(second), "write", sink, base_delay=0.01)
    with pytest.raises(SinkError, match="being written by another embedpipe run"):
        sink_in(tmp_path).open(DIM, FP_A)  # the reconnected run took its lock back
    sink.close()
    assert sorted(sink.chunk_ids()) == sorted(c.id for c in first.chunks + second.chunks)


def test_a_run_whose_connection_drops_midway_completes_and_matches_the_ledger(
    pg: PgServer, make_corpus: Any, tmp_path: Path
) -> None:
    from embedpipe.runs.pipeline import Pipeline

    root = make_corpus(corpus_files())
    cfg = config(root, "postgres", tmp_path, batching={"max_batch_tokens": 64, "max_batch_size": 4})

    class Dropping(PostgresSink):
        writes = 0

        def write(self, embedded: Embedded) -> None:
            Dropping.writes += 1
            if Dropping.writes == 3:  # the server drops the run's connection before this batch
                pg.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "application_name = 'embedpipe'"
                )
            super().write(embedded)

    real = open_sink(cfg.sink)
    assert isinstance(real, PostgresSink)
    sink = Dropping(real.place, "docs", write_batch=7)
    report = Pipeline(cfg, sink=sink).run()
    assert report.outcome == "done" and Dropping.writes == report.batches + 1
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == report.chunks_total


def test_an_unreachable_server_is_one_line_exit_1_and_nothing_is_marked_done(
    make_corpus: Any, tmp_path: Path
) -> None:
    root = make_corpus(corpus_files(2))
    state = tmp_path / "state"
    uri = f"postgresql://postgres@/postgres?host={tmp_path / 'no-server'}"
    result = command("backfill", str(root), "--sink", uri, "--state", str(state))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert "Postgres" in line and "no-server" in line
    import sqlite3

    db = sqlite3.connect(state / "ledger.sqlite")
    assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0


@pytest.fixture(name="small_disk")
def small_disk_database(pg: PgServer, tmp_path: Path) -> Iterator[SmallDisk]:
    """A database of the test server whose tables and indexes live on a 64 MiB tmpfs (a
    tablespace there is its default_tablespace; the catalogs and the WAL stay on the server's own
    disk): a real server disk that fills up. Mounting needs root (CAP_SYS_ADMIN): skipped where
    the mount is refused."""
    base = Path(tempfile.mkdtemp(prefix="embedpipe-full-"))
    owner = os.stat(pg.directory)  # the server's system user owns its data directory
    options = f"size=64m,mode=0700,uid={owner.st_uid},gid={owner.st_gid}"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(base)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        base.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    name = "full_" + pgkit.schema_for(tmp_path)[2:14]
    try:
        (base / "ts").mkdir()
        os.chown(base / "ts", owner.st_uid, owner.st_gid)
        pg.execute(f"CREATE TABLESPACE {name} LOCATION '{base / 'ts'}'")
        pg.execute(f"CREATE DATABASE {name}")
        pg.execute(f"ALTER DATABASE {name} SET default_tablespace = {name}")
        yield SmallDisk(pg.uri.replace("/postgres?", f"/{name}?"), base / "ballast")
    finally:
        pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        pg.execute(f"DROP TABLESPACE IF EXISTS {name}")
        subprocess.run(["umount", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def live_fingerprint(cfg: RunConfig) -> str | None:
    sink = open_sink(cfg.sink)
    try:
        return sink.live_fingerprint()
    finally:
        sink.abort()


@dataclass
class SmallDisk:
    """The sink URI of a database on a small disk, and the file that fills that disk."""

    uri: str
    ballast: Path

    def fill(self, leave: int = 0) -> None:
        """Write the ballast until the disk has not one page left (ENOSPC), then give `leave`
        bytes back."""
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (1 << 20, 4096):
                with contextlib.suppress(OSError):
                    while os.write(fd, bytes(size)):
                        pass
            os.ftruncate(fd, os.fstat(fd).st_size - leave)
        finally:
            os.close(fd)
        assert shutil.disk_usage(self.ballast.parent).free == leave

    def free(self) -> None:
        self.ballast.unlink()


def test_a_full_server_disk_fails_the_run_in_one_line_and_the_rerun_completes_once(
    small_disk: SmallDisk, make_corpus: Any, tmp_path: Path
) -> None:
    root = make_corpus(corpus_files(60))
    state = tmp_path / "state"
    run = ["backfill", str(root), "--sink", small_disk.uri, "--state", str(state)]
    assert command(*run).returncode == 0  # generation A, live
    cfg = load_config(
        None, {"sink": {"uri": small_disk.uri, "collection": "embedpipe"}, "state": str(state)}
    )
    served, generation_a = sorted(consistency(cfg)[0]), live_fingerprint(cfg)
    # A re-embed (new chunking: generation B) on a full disk: B's table cannot be made; with
    # 32 KiB left it is made, and its first COPY (~60 rows of 1.5 KiB vectors) cannot extend it.
    again = [*run, "--chunk-tokens", "80"]
    for leave, failing in [(0, "opening 'embedpipe'"), (32 << 10, "copy into 'embedpipe__")]:
        small_disk.fill(leave)
        full = command(*again)
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr
        [line] = [ln for ln in full.stderr.splitlines() if ln.startswith("error:")]
        assert f"Postgres {failing}" in line and "the server's disk is full" in line
        assert "No space left on device" in line
        ledger = sqlite3.connect(state / "ledger.sqlite")
        done = ledger.execute("SELECT DISTINCT fingerprint FROM chunks WHERE state = 1")
        assert [row[0] for row in done] == [generation_a]  # nothing of B marked done
        ledger.close()
        assert sorted(consistency(cfg)[0]) == served and live_fingerprint(cfg) == generation_a
        small_disk.free()
    assert command(*again).returncode == 0
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and len(set(in_sink)) == len(in_sink) >= 60
    assert live_fingerprint(cfg) != generation_a  # B is live, each chunk once


# -- readers while a run writes and promotes -------------------------------------------------

READER = """
import json, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.sinkkit import make_sink, unit_vectors
sink = make_sink("postgres", Path({tmp!r}))
seen, errors, deadline = [], [], time.time() + {seconds}
query = unit_vectors(1, seed=99)[0]
while time.time() < deadline:
    try:
        hits = sink.search(query, k=5)
        seen.append((len(hits), sorted({{h.doc_id[:3] for h in hits}})))
    except Exception as exc:
        errors.append(repr(exc))
print(json.dumps({{"seen": seen, "errors": errors}}))
"""


def test_a_reader_process_sees_whole_generations_while_a_run_writes_and_promotes(
    tmp_path: Path,
) -> None:
    sink = filled(sink_in(tmp_path), embedded(40, doc="old"))
    script = READER.format(root=str(ROOT), tmp=str(tmp_path), seconds=6)
    reader = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for round_ in range(3):  # re-embeds, each swapped in while the reader queries
        fingerprint = (FP_B, FP_A, FP_B)[round_]
        doc = ("new", "old", "new")[round_]
        sink.open(DIM, fingerprint)
        for lo in range(0, 40, 8):
            batch = embedded(40, seed=round_ + 1, doc=doc)
            sink.write(Embedded(batch.chunks[lo : lo + 8], batch.vectors[lo : lo + 8]))
            time.sleep(0.2)
        sink.close()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    result = json.loads(out)
    assert result["errors"] == []
    assert len(result["seen"]) > 10
    # Every answer is five hits from one whole generation, never a mix, never fewer.
    assert all(n == 5 and len(docs) == 1 for n, docs in result["seen"])


def test_the_ledger_of_a_server_sink_is_named_by_its_socket_folder_and_schema() -> None:
    from embedpipe.state.ledger import state_dir_for

    assert state_dir_for("postgresql://postgres:@/postgres?host=/run/pg&schema=rag", None) == Path(
        ".embedpipe/state/postgres_run_pg_rag"
    )
    assert state_dir_for("postgresql://u:p@db:5432/app", None) == Path(
        ".embedpipe/state/db_5432_app"
    )
