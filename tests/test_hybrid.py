"""Hybrid retrieval (issue 27): BM25 sparse vectors written beside the dense ones on Qdrant Edge,
Qdrant local mode and Postgres (a tsvector ranked by BM25 in SQL), queried `dense`, `sparse` or `hybrid`, on the real model and engines,
over a small documentation corpus whose identifiers dense vectors blur (tests/hybridkit.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from embedpipe.api import open_index
from embedpipe.config import RunConfig, load_config
from embedpipe.errors import ConfigError
from embedpipe.runs.pipeline import Pipeline
from embedpipe.sinks import open_sink
from embedpipe.types import NOT_LOADED, RunReport
from tests import hybridkit as hk
from tests.clikit import cli, flat
from tests.clikit import embedpipe as command
from tests.corpuskit import consistency
from tests.sinkkit import SERVER_SINK_KINDS, sink_uri

# The sinks that keep sparse vectors, Postgres where the dev extra's server is installed.
SPARSE_SINKS = ("qdrant-edge", "qdrant", *SERVER_SINK_KINDS)
DENSE_ONLY = ("faiss", "parquet")


def config(kind: str, root: Path, sparse: bool | dict[str, Any] = True, **extra: Any) -> RunConfig:
    """A run into `kind` under `root`; `sparse` True (BM25, default settings), False (off) or
    the BM25 settings."""
    settings = sparse if isinstance(sparse, dict) else {}
    sparse_cfg = {"kind": "bm25" if sparse else "none", **settings}
    sink = {"uri": sink_uri(kind, root), "collection": "docs", "sparse": sparse_cfg}
    return load_config(None, {"sink": sink, **extra})


def build(cfg: RunConfig, encoder: Any, docs: list[dict[str, Any]] | None = None) -> RunReport:
    report = Pipeline(cfg, source=hk.documents() if docs is None else docs, encoder=encoder).run()
    assert report.outcome == "done", report.reason
    return report


def answered(index: Any, mode: str, queries: list[tuple[str, str]], k: int = 3) -> set[str]:
    """The queries whose answer is among the first k hits in `mode`."""
    return {q for q, doc in queries if doc in [h.doc_id for h in index.search(q, k, mode=mode)]}


@pytest.mark.parametrize("kind", SPARSE_SINKS)
def test_identifier_queries_dense_misses_are_found_by_sparse_and_hybrid(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    report = build(config(kind, tmp_path), encoder)
    assert report.sparse == "bm25"
    idents = hk.identifier_queries()
    with open_index(sink=sink_uri(kind, tmp_path), collection="docs") as index:
        dense = answered(index, "dense", idents)
        missed = {q for q, _ in idents} - dense
        assert missed, "the corpus no longer tests anything: dense found every identifier"
        assert missed <= answered(index, "sparse", idents)
        assert missed <= answered(index, "hybrid", idents)
        assert answered(index, "sparse", idents, k=1) == {q for q, _ in idents}


@pytest.mark.parametrize("kind", SPARSE_SINKS)
def test_natural_language_questions_keep_their_answers_in_hybrid(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    build(config(kind, tmp_path), encoder)
    questions = hk.questions()
    with open_index(sink=sink_uri(kind, tmp_path), collection="docs") as index:
        assert answered(index, "dense", questions) <= answered(index, "hybrid", questions)


@pytest.mark.parametrize("kind", SPARSE_SINKS)
def test_sparse_and_hybrid_queries_honour_filters_and_alpha(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    build(config(kind, tmp_path), encoder)
    function_ident, function_doc = next(
        (q, d) for q, d in hk.identifier_queries() if not q.isupper()
    )
    with open_index(sink=sink_uri(kind, tmp_path), collection="docs") as index:
        for mode in ("sparse", "hybrid"):
            hits = index.search(function_ident, 5, {"metadata.kind": "constant"}, mode=mode)
            assert hits and all(h.metadata["kind"] == "constant" for h in hits)
            assert function_doc not in [h.doc_id for h in hits]
        # alpha 0 is BM25 alone, fused: the exact identifier first; alpha 1 is dense alone
        sparse_only = index.search(function_ident, 3, mode="hybrid", alpha=0.0)
        assert sparse_only[0].doc_id == function_doc
        dense_only = index.search(function_ident, 3, mode="hybrid", alpha=1.0)
        assert [h.doc_id for h in dense_only] == [
            h.doc_id for h in index.search(function_ident, 3, mode="dense")
        ]


@pytest.mark.parametrize("kind", SPARSE_SINKS)
def test_sparse_and_hybrid_queries_answer_alike_every_time_ties_in_chunk_id_order(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    """BM25 scores and fused ranks tie often (the identifiers share prefixes); the engines
    return ties in an order of their own, which changed from one query to the next."""
    build(config(kind, tmp_path), encoder)
    queries = [q for q, _ in hk.identifier_queries()]
    with open_index(sink=sink_uri(kind, tmp_path), collection="docs") as index:
        tied = 0
        for mode in ("sparse", "hybrid"):
            for q in queries:
                first = index.search(q, 3, mode=mode)
                scored = [(-h.score, h.chunk_id) for h in first]
                assert scored == sorted(scored), (mode, q)
                tied += len({s for s, _ in scored}) < len(scored)
                for _ in range(2):
                    assert [h.chunk_id for h in index.search(q, 3, mode=mode)] == [
                        h.chunk_id for h in first
                    ]
        assert tied, "the corpus no longer tests anything: no query has tied hits"


@pytest.mark.parametrize("kind", SPARSE_SINKS)
def test_an_incremental_run_keeps_sparse_and_dense_in_step(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    cfg = config(kind, tmp_path)
    docs = hk.documents()
    first = build(cfg, encoder, docs)
    (old_ident, edited_doc), (gone_ident, gone_doc) = hk.identifier_queries()[:2]
    docs[0] = {**docs[0], "text": docs[0]["text"].replace(old_ident, "net_x999")}
    docs = [d for d in docs if d["id"] != gone_doc]
    cfg.mode = "full"  # the deleted document goes too
    second = build(cfg, encoder, docs)
    assert second.fingerprint == first.fingerprint
    assert (second.chunks_embedded, second.chunks_deleted) == (1, 1)
    with open_index(sink=sink_uri(kind, tmp_path), collection="docs") as index:
        assert index.search("net_x999", 1, mode="sparse")[0].doc_id == edited_doc
        assert edited_doc not in [h.doc_id for h in index.search(old_ident, 3, mode="sparse")]
        assert gone_doc not in [h.doc_id for h in index.search(gone_ident, 30, mode="sparse")]
        assert len(index.search("reference manual details", 100, mode="sparse")) == len(docs)


def ranked(index: Any, queries: list[str], mode: str) -> list[list[tuple[float, str]]]:
    """Each query's hits among all the chunks in `mode`: (-score to 4 places, doc id), in that
    order (chunks of equal scores come in an engine's own order)."""
    n = len(hk.ENTRIES)
    return [
        sorted((-round(h.score, 4), h.doc_id) for h in index.search(q, n, mode=mode))
        for q in queries
    ]


@pytest.mark.parametrize("kind", SPARSE_SINKS)
def test_changing_only_the_sparse_settings_recomputes_sparse_vectors_without_encoding(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    n = len(hk.ENTRIES)
    dense = build(config(kind, tmp_path, sparse=False), encoder)
    again = build(config(kind, tmp_path, sparse=False), encoder)
    assert again.fingerprint == dense.fingerprint
    assert (again.chunks_embedded, again.chunks_copied) == (0, 0)
    # sparse vectors turned on: a new generation, its dense vectors copied, none encoded
    on = build(config(kind, tmp_path), encoder)
    assert on.fingerprint != dense.fingerprint and on.promotion and on.promotion["promoted"]
    assert (on.chunks_embedded, on.tokens_embedded, on.batches, on.chunks_copied) == (0, 0, 0, n)
    queries = [q for q, _ in hk.identifier_queries()[:10]] + [q for q, _ in hk.questions()[:10]]
    uri = sink_uri(kind, tmp_path)
    with open_index(sink=uri, collection="docs") as index:
        default_sparse = ranked(index, queries, "sparse")
    # other BM25 settings: again no encoding, and the answers of an index built afresh with them
    # (dense and sparse: hybrid fuses ranks, and equal BM25 scores rank in each engine's order)
    settings = {"k1": 2.0, "b": 0.3, "tokenizer": "code"}
    changed = build(config(kind, tmp_path, sparse=settings), encoder)
    assert changed.fingerprint not in (dense.fingerprint, on.fingerprint)
    assert (changed.chunks_embedded, changed.tokens_embedded, changed.chunks_copied) == (0, 0, n)
    fresh = build(config(kind, tmp_path / "fresh", sparse=settings), encoder)
    assert (fresh.chunks_embedded, fresh.chunks_copied) == (n, 0)
    with (
        open_index(sink=uri, collection="docs") as index,
        open_index(sink=sink_uri(kind, tmp_path / "fresh"), collection="docs") as built_afresh,
    ):
        assert index.built.settings["sparse"]["tokenizer"] == "code"
        for mode in ("dense", "sparse"):
            assert ranked(index, queries, mode) == ranked(built_afresh, queries, mode)
        assert ranked(index, queries, "sparse") != default_sparse  # the new settings count


def test_a_sparse_settings_change_with_an_edit_encodes_only_the_edited_chunk(
    tmp_path: Path, encoder: Any
) -> None:
    docs = hk.documents()
    build(config("qdrant-edge", tmp_path), encoder, docs)
    ident, edited = hk.identifier_queries()[4]
    docs = [
        {**d, "text": d["text"].replace(ident, "net_x999")} if d["id"] == edited else d
        for d in docs
    ]
    changed = config("qdrant-edge", tmp_path, sparse={"k1": 1.6})
    dry = Pipeline(changed, source=docs, encoder=encoder).run(dry_run=True)
    assert any("a real run copies the dense vectors" in note for note in dry.notes)
    report = build(changed, encoder, docs)
    assert (report.chunks_embedded, report.chunks_copied) == (1, len(docs))
    with open_index(sink=sink_uri("qdrant-edge", tmp_path), collection="docs") as index:
        assert index.search("net_x999", 1, mode="sparse")[0].doc_id == edited
        assert edited not in [h.doc_id for h in index.search(ident, 3, mode="sparse")]
        assert index.search("net_x999", 1, mode="hybrid")[0].doc_id == edited


def test_a_change_beyond_the_sparse_settings_encodes_everything_again(
    tmp_path: Path, encoder: Any
) -> None:
    build(config("qdrant-edge", tmp_path), encoder)
    rechunked = build(
        config("qdrant-edge", tmp_path, sparse={"k1": 1.6}, chunking={"overlap_tokens": 8}),
        encoder,
    )
    assert (rechunked.chunks_embedded, rechunked.chunks_copied) == (len(hk.ENTRIES), 0)


@pytest.mark.parametrize("kind", SPARSE_SINKS)
def test_an_index_built_without_sparse_vectors_refuses_sparse_and_hybrid(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    build(config(kind, tmp_path, sparse=False), encoder)
    with open_index(sink=sink_uri(kind, tmp_path), collection="docs") as index:
        assert not index.has_sparse()
        assert index.search("net_x00", 1)  # dense works as before
        for mode in ("sparse", "hybrid"):
            with pytest.raises(ConfigError, match=r"built without sparse vectors.*--sparse bm25"):
                index.search("net_x00", 1, mode=mode)


@pytest.mark.parametrize("kind", DENSE_ONLY)
def test_sinks_without_sparse_vectors_refuse_sparse_before_any_work(
    kind: str, tmp_path: Path
) -> None:
    cfg = config(kind, tmp_path)
    can = r"only qdrant-edge:PATH, .*postgresql://USER@HOST:PORT/DB or postgres://"
    with pytest.raises(ConfigError, match=rf"keeps no sparse vectors.*{can}"):
        open_sink(cfg.sink)
    assert not (tmp_path / kind).exists()


def test_the_cli_refuses_sparse_on_faiss_and_hybrid_queries_on_parquet_in_one_line(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("net_x00 opens the vault")
    built = cli(
        "backfill",
        str(corpus),
        "--sink",
        f"faiss:{tmp_path / 'idx'}",
        "--sparse",
        "bm25",
        cwd=tmp_path,
    )
    assert built.returncode == 2, built.stderr
    assert "keeps no sparse vectors" in flat(built.stderr) and "Traceback" not in built.stderr
    assert not (tmp_path / "idx").exists()
    asked = cli(
        "query", "net_x00", "--sink", f"parquet:{tmp_path / 'pq'}", "--mode", "hybrid", cwd=tmp_path
    )
    assert asked.returncode == 2, asked.stderr
    assert "--mode hybrid is not possible: only qdrant-edge:PATH" in flat(asked.stderr)


@pytest.mark.parametrize("kind", ("qdrant-edge", *SERVER_SINK_KINDS))
def test_the_langchain_and_llamaindex_adapters_run_sparse_and_hybrid_queries(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

    from embedpipe.integrations import langchain, llama_index

    build(config(kind, tmp_path), encoder)
    ident, doc = hk.identifier_queries()[7]
    uri = sink_uri(kind, tmp_path)
    store = langchain.EmbedpipeVectorStore(uri, "docs", retrieval_mode="hybrid")
    try:
        assert doc in [d.metadata["doc_id"] for d in store.similarity_search(ident, k=3)]
        found = store.similarity_search(ident, k=1, retrieval_mode="sparse")
        assert found[0].metadata["doc_id"] == doc
        retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"kind": "constant"}})
        assert all(d.metadata["kind"] == "constant" for d in retriever.invoke(ident))
        with pytest.raises(TypeError, match="retrieval_modes"):  # strict, like every argument
            store.similarity_search(ident, retrieval_modes="sparse")
        with pytest.raises(TypeError, match="alpah"):
            store.as_retriever(search_kwargs={"alpah": 0.5})
        with pytest.raises(ConfigError, match="unknown retrieval mode 'bm25'"):
            store.similarity_search(ident, retrieval_mode="bm25")
    finally:
        store.close()
    li = llama_index.EmbedpipeVectorStore(uri, "docs")
    try:
        for mode in (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID):
            result = li.query(
                VectorStoreQuery(query_str=ident, similarity_top_k=3, mode=mode, alpha=0.3)
            )
            assert doc in [n.metadata["doc_id"] for n in result.nodes]
        with pytest.raises(TypeError, match="retrieval_mod"):
            li.query(VectorStoreQuery(query_str=ident), retrieval_mod="hybrid")
    finally:
        li.close()


@pytest.mark.parametrize("kind", ("qdrant-edge", *SERVER_SINK_KINDS))
def test_eval_scores_modes_side_by_side_and_auto_judges_a_sparse_generation_on_hybrid(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    from embedpipe import api

    cfg = config(kind, tmp_path)
    build(cfg, encoder)
    queries = tmp_path / "queries.jsonl"
    lines = [json.dumps({"query": q, "relevant": [d]}) for q, d in hk.identifier_queries()]
    queries.write_text("\n".join(lines) + "\n")
    result = api.evaluate(cfg, queries=queries, k=3, mode=["dense", "sparse", "hybrid", "auto"])
    modes = result["modes"]
    assert modes["sparse"]["recall"] == 1.0 and modes["hybrid"]["recall"] == 1.0
    assert modes["dense"]["recall"] < 1.0
    assert modes["auto"] == modes["hybrid"]  # what the quality gate scores it on
    assert result["mode"] == "dense" and result["recall"] == modes["dense"]["recall"]
    dense_only = config("qdrant", tmp_path, sparse=False)
    build(dense_only, encoder)
    assert (
        api.evaluate(dense_only, queries=queries, k=3, mode="auto")["modes"]["auto"]
        == (api.evaluate(dense_only, queries=queries, k=3)["modes"]["dense"])
    )
    with pytest.raises(ConfigError, match="keeps no sparse vectors"):
        api.evaluate(dense_only, queries=queries, k=3, mode="hybrid")


def test_export_copies_sparse_vectors_and_status_and_reconcile_show_them(
    tmp_path: Path, encoder: Any
) -> None:
    from embedpipe import api

    cfg = config("qdrant-edge", tmp_path)
    build(cfg, encoder)
    ident, doc = hk.identifier_queries()[3]
    copy = api.export(cfg, to=sink_uri("qdrant", tmp_path))
    assert copy.chunks_embedded == len(hk.ENTRIES)
    with open_index(sink=sink_uri("qdrant", tmp_path), collection="docs") as index:
        assert index.has_sparse()
        assert index.search(ident, 1, mode="sparse")[0].doc_id == doc
    flat_copy = api.export(cfg, to=sink_uri("faiss", tmp_path))
    assert any("sparse (BM25) vectors were not copied" in n for n in flat_copy.notes)
    with open_index(sink=sink_uri("faiss", tmp_path), collection="docs") as index:
        assert not index.has_sparse() and index.search(ident, 1)
    assert [row.get("sparse") for row in api.status(cfg)] == ["bm25"]
    assert api.reconcile(cfg)["sparse"] == "bm25"
    dense_only = config("parquet", tmp_path, sparse=False)
    build(dense_only, encoder)
    assert [row.get("sparse") for row in api.status(dense_only)] == [None]


@pytest.mark.skipif(not SERVER_SINK_KINDS, reason="needs the dev extra's Postgres")
def test_postgres_exports_keep_sparse_vectors_both_ways_and_status_and_reconcile_show_them(
    tmp_path: Path, encoder: Any
) -> None:
    from embedpipe import api

    cfg = config("postgres", tmp_path)
    build(cfg, encoder)
    ident, doc = hk.identifier_queries()[3]
    assert [row.get("sparse") for row in api.status(cfg)] == ["bm25"]
    assert api.reconcile(cfg)["sparse"] == "bm25"
    edge = sink_uri("qdrant-edge", tmp_path)
    copy = api.export(cfg, to=edge)  # Postgres -> Qdrant Edge
    assert copy.chunks_embedded == len(hk.ENTRIES)
    assert not any("not copied" in note for note in copy.notes)
    back = sink_uri("postgres", tmp_path / "back")  # and back into another schema
    api.export(load_config(None, {"sink": {"uri": edge, "collection": "docs"}}), to=back)
    for uri in (edge, back):
        with open_index(sink=uri, collection="docs") as index:
            assert index.has_sparse()
            assert index.search(ident, 1, mode="sparse")[0].doc_id == doc
            assert index.search(ident, 1, mode="hybrid", alpha=0.0)[0].doc_id == doc
    with open_index(sink=back, collection="docs") as index:
        assert index.built.settings["sparse"] == cfg.sink.sparse.model_dump()


def hybrid_mmr_reference(
    index: Any, encoder: Any, query: str, mode: str, fetch_k: int, k: int, lambda_mult: float
) -> list[str]:
    """MMR computed here: the `fetch_k` candidates of a `mode` search, re-ranked by LangChain's
    reference implementation on the model's own vectors of the query and of their texts."""
    from langchain_core.vectorstores.utils import maximal_marginal_relevance

    candidates = index.search(query, fetch_k, mode=mode)
    vectors = encoder.encode_texts([h.text for h in candidates])
    query_vector = encoder.encode_texts([query])[0]
    order = maximal_marginal_relevance(query_vector, list(vectors), lambda_mult=lambda_mult, k=k)
    return [candidates[i].doc_id for i in order]


@pytest.mark.parametrize("kind", SPARSE_SINKS)
def test_mmr_re_ranks_sparse_and_hybrid_candidates_in_both_adapters(
    kind: str, tmp_path: Path, encoder: Any
) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

    from embedpipe.integrations import langchain, llama_index

    build(config(kind, tmp_path), encoder)
    uri = sink_uri(kind, tmp_path)
    store = langchain.EmbedpipeVectorStore(uri, "docs", retrieval_mode="hybrid")
    li = llama_index.EmbedpipeVectorStore(uri, "docs")
    try:
        index = store.index
        idents = hk.identifier_queries()
        missed = [(q, d) for q, d in idents if d not in [h.doc_id for h in index.search(q, 3)]]
        assert missed, "the corpus no longer tests anything: dense found every identifier"
        ident, doc = missed[0]
        question = hk.questions()[2][0]
        for mode in ("hybrid", "sparse"):
            for query, lam in ((ident, 0.9), (question, 0.2)):
                expected = hybrid_mmr_reference(index, encoder, query, mode, 12, 4, lam)
                args = {"k": 4, "fetch_k": 12, "lambda_mult": lam, "retrieval_mode": mode}
                assert doc_ids(store.max_marginal_relevance_search(query, **args)) == expected
                result = li.query(
                    VectorStoreQuery(
                        query_str=query, similarity_top_k=4, mode=VectorStoreQueryMode.MMR
                    ),
                    mmr_threshold=lam,
                    mmr_prefetch_k=12,
                    retrieval_mode=mode,
                )
                assert [n.metadata["doc_id"] for n in result.nodes] == expected
            # MMR over as many candidates as it keeps: the identifier dense misses is among them
            assert doc in doc_ids(store.max_marginal_relevance_search(ident, 3, 3, 0.5))
            dense = store.max_marginal_relevance_search(ident, 3, 3, 0.5, retrieval_mode="dense")
            assert doc not in doc_ids(dense)
        plain = [h.doc_id for h in index.search(question, 4, mode="hybrid")]
        assert hybrid_mmr_reference(index, encoder, question, "hybrid", 12, 4, 0.2) != plain
        # the store's mode is the default; a retriever's search_kwargs take the mode too
        retriever = store.as_retriever(
            search_type="mmr", search_kwargs={"k": 3, "fetch_k": 3, "retrieval_mode": "sparse"}
        )
        assert doc in doc_ids(retriever.invoke(ident))
        with pytest.raises(ValueError, match="ranks the query's words"):
            store.max_marginal_relevance_search_by_vector(
                encoder.encode_texts([ident])[0].tolist(), retrieval_mode="hybrid"
            )
        with pytest.raises(ValueError, match="retrieval_mode picks the candidates of an mmr"):
            li.query(VectorStoreQuery(query_str=ident), retrieval_mode="hybrid")
    finally:
        store.close()
        li.close()


def test_mmr_over_sparse_candidates_is_refused_where_no_sparse_vectors_are_kept(
    tmp_path: Path, encoder: Any
) -> None:
    build(config("faiss", tmp_path, sparse=False), encoder)
    with open_index(sink=sink_uri("faiss", tmp_path), collection="docs") as index:
        assert index.mmr_search("net_x00", 2)  # dense MMR works as before
        with pytest.raises(ConfigError, match="keeps no sparse vectors, so --mode hybrid"):
            index.mmr_search("net_x00", 2, mode="hybrid")


def doc_ids(docs: list[Any]) -> list[str]:
    return [d.metadata["doc_id"] for d in docs]


# -- sparse and dense in step across crashes (the crash kit: EMBEDPIPE_CRASH_AT, real processes) --


def write_jsonl(path: Path, docs: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))


def backfill(
    source: Path, cfg: RunConfig, report: Path, crash: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`embedpipe backfill SOURCE --sparse bm25` into cfg's sink as its own process, in batches
    of 4 chunks, killed by SIGKILL at `crash` (a crash point NAME:N) when given."""
    environ = {**os.environ, "EMBEDPIPE_BATCHING__MAX_BATCH_SIZE": "4", **env}
    if crash is not None:
        environ["EMBEDPIPE_CRASH_AT"] = crash
    args = ["backfill", str(source), "--sink", cfg.sink.uri, "--collection", "docs"]
    return command(
        *args, "--sparse", "bm25", "--mode", "full", "--report", str(report), env=environ
    )


def assert_in_step(cfg: RunConfig, docs: list[dict[str, Any]]) -> None:
    """Sink and ledger hold the same chunks once each, and every chunk's sparse vector is its
    text's: each document's identifier finds it first by BM25 (and no other document's), the
    phrase every document ends with finds every chunk by BM25 and dense alike."""
    in_sink, in_ledger = consistency(cfg)
    assert len(in_sink) == len(set(in_sink)) and sorted(in_sink) == sorted(in_ledger)
    assert {c.rpartition("#")[0] for c in in_sink} == {d["id"] for d in docs}
    with open_index(sink=cfg.sink.uri, collection="docs") as index:
        for d in docs:
            ident = d["text"].split()[0]
            assert index.search(ident, 1, mode="sparse")[0].doc_id == d["id"], ident
        everything = "reference manual details"
        for mode in ("sparse", "dense", "hybrid"):
            found = {h.chunk_id for h in index.search(everything, 200, mode=mode)}
            assert found == set(in_sink), mode


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "kind"),
    # Every kill point on the default sink; each other sparse sink at its write (where its two
    # kinds of vector are written together or not at all).
    [
        *((point, "qdrant-edge") for point in ("sink-write:2", "ledger-commit:2", "sink-delete:1")),
        *(("sink-write:2", kind) for kind in SPARSE_SINKS if kind != "qdrant-edge"),
    ],
)
def test_sigkill_in_an_incremental_run_with_edits_and_deletes_then_rerun_keeps_them_in_step(
    kind: str, point: str, tmp_path: Path
) -> None:
    cfg = config(kind, tmp_path)
    source, report = tmp_path / "docs.jsonl", tmp_path / "report.json"
    docs = hk.documents()
    write_jsonl(source, docs)
    first = backfill(source, cfg, report)
    assert first.returncode == 0, first.stderr
    renamed = {d["id"]: f"edited_{i}_x{i}" for i, d in enumerate(docs[:6])}
    for d in docs[:6]:  # a new identifier in six documents: two batches of writes
        d["text"] = d["text"].replace(d["text"].split()[0], renamed[d["id"]])
    docs = docs[:-3]  # three documents gone: a delete wave
    write_jsonl(source, docs)
    killed = backfill(source, cfg, report, crash=point)
    assert killed.returncode == -9, killed.stderr
    rerun = backfill(source, cfg, report)
    assert rerun.returncode == 0, rerun.stderr
    assert_in_step(cfg, docs)
    with open_index(sink=cfg.sink.uri, collection="docs") as index:
        for old in hk.documents()[:6]:  # the old identifiers are gone with their text
            ident = old["text"].split()[0]
            assert old["id"] not in [h.doc_id for h in index.search(ident, 3, mode="sparse")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", SPARSE_SINKS)
def test_sigkill_while_copying_dense_vectors_for_new_sparse_settings_then_rerun_encodes_nothing(
    kind: str, tmp_path: Path
) -> None:
    cfg = config(kind, tmp_path)
    source, report = tmp_path / "docs.jsonl", tmp_path / "report.json"
    docs = hk.documents()
    write_jsonl(source, docs)
    assert backfill(source, cfg, report).returncode == 0
    first = json.loads(report.read_text())
    k1 = {"EMBEDPIPE_SINK__SPARSE__K1": "2.0"}
    killed = backfill(source, cfg, report, crash="sink-write:1", **k1)
    assert killed.returncode == -9, killed.stderr
    rerun = backfill(source, cfg, report, **k1)
    assert rerun.returncode == 0, rerun.stderr
    resumed = json.loads(report.read_text())
    assert resumed["fingerprint"] != first["fingerprint"]
    assert (resumed["chunks_embedded"], resumed["chunks_copied"]) == (0, len(docs))
    assert resumed["device"] == NOT_LOADED  # not even the model was loaded
    assert_in_step(cfg, docs)
    with open_index(sink=cfg.sink.uri, collection="docs") as index:
        assert index.built.settings["sparse"]["k1"] == 2.0
