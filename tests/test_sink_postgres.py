"""What only the Postgres sink does, on a real Postgres with pgvector (tests/pgkit.py): credentials
never shown, the extension, the indexes built after a bulk load, another tool's table refused, a
dropped connection retried, an unreachable server, and readers while a run swaps generations.
The contract every sink keeps runs on it in tests/test_sinks.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from embedpipe.config import SinkConfig
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
from tests.sinkkit import DIM, FP_A, FP_B, embedded, filled, make_sink

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
