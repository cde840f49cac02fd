"""The pipeline through the library API on real components: model, Qdrant local mode, FAISS."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import embedpipe
from embedpipe.config import load_config
from embedpipe.errors import DeleteGuardError
from embedpipe.sinks import open_sink
from embedpipe.types import Document
from tests.corpuskit import FILES
from tests.sinkkit import LOCAL_SINK_KINDS


def sink_uri(kind: str, tmp_path: Path) -> str:
    return f"{kind}:{tmp_path / kind}"


def backfill(root: Path, uri: str, **options: object) -> embedpipe.RunReport:
    return embedpipe.backfill(str(root), sink=uri, collection="docs", **options)


def sink_ids(uri: str) -> list[str]:
    sink = open_sink(load_config(None, {"sink": {"uri": uri, "collection": "docs"}}).sink)
    try:
        return list(sink.chunk_ids())
    finally:
        sink.abort()


@pytest.mark.parametrize("kind", LOCAL_SINK_KINDS)
def test_backfill_then_query_finds_the_right_document(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    uri = sink_uri(kind, tmp_path)
    report = backfill(root, uri)
    assert report.outcome == "done"
    assert report.docs_read == len(FILES)
    assert report.chunks_embedded == report.chunks_total == len(sink_ids(uri))
    hits = embedpipe.query("how do I bake bread?", sink=uri, collection="docs", k=3)
    assert hits[0].doc_id == "cooking/bread.md"
    hits = embedpipe.query("parse command line flags", sink=uri, collection="docs", k=3)
    assert hits[0].doc_id == "python/argparse.md"


@pytest.mark.parametrize("kind", LOCAL_SINK_KINDS)
def test_rerun_on_unchanged_corpus_embeds_nothing(kind: str, make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    uri = sink_uri(kind, tmp_path)
    first = backfill(root, uri)
    again = backfill(root, uri)
    assert again.chunks_embedded == 0
    assert again.chunks_skipped == first.chunks_total
    assert sorted(sink_ids(uri)) == sorted(set(sink_ids(uri)))
    assert len(sink_ids(uri)) == first.chunks_total


def test_payload_keeps_text_metadata_and_non_ascii(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    uri = sink_uri("qdrant", tmp_path)
    backfill(root, uri)
    hits = embedpipe.query("Wetter in Tokio", sink=uri, collection="docs", k=6)
    unicode_hit = next(h for h in hits if h.doc_id == "notes/unicode.md")
    assert unicode_hit.text == FILES["notes/unicode.md"]
    assert unicode_hit.metadata.get("path") == "notes/unicode.md"


def test_html_is_embedded_as_readable_text(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    uri = sink_uri("faiss", tmp_path)
    backfill(root, uri)
    hit = embedpipe.query("watering tomato plants", sink=uri, collection="docs", k=1)[0]
    assert hit.doc_id == "site/page.html"
    assert "var x" not in hit.text and "Water tomatoes in the morning." in hit.text


def test_bad_files_are_reported_and_the_rest_is_embedded(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    (root / "empty.md").write_text("   \n\n ")
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00" * 50)
    report_path = tmp_path / "report.json"
    report = backfill(root, sink_uri("qdrant", tmp_path), report=str(report_path))
    assert report.docs_read == len(FILES)
    assert report.docs_failed == 3
    data = json.loads(report_path.read_text())
    by_record = {e["record"]: e["reason"] for e in data["errors"]}
    assert set(by_record) == {"empty.md", "latin1.txt", "blob.txt"}
    assert "empty" in by_record["empty.md"] and "UTF-8" in by_record["latin1.txt"]
    assert "binary" in by_record["blob.txt"]
    for key in (
        "docs_read",
        "docs_failed",
        "chunks_total",
        "chunks_embedded",
        "chunks_skipped",
        "chunks_deleted",
        "tokens_embedded",
        "padding_efficiency",
        "seconds",
        "chunks_per_second",
        "tokens_per_second",
        "model",
        "fingerprint",
        "sink",
        "errors",
    ):
        assert key in data


def test_malformed_jsonl_lines_and_null_parquet_text_are_skipped(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(
        '{"id": "a", "text": "first good record about trains"}\n{not json\n'
        '{"id": "b", "text": null}\n{"id": "c", "text": "third record about boats"}\n'
    )
    report = embedpipe.backfill(str(jsonl), sink=sink_uri("faiss", tmp_path), collection="docs")
    assert (report.docs_read, report.docs_failed) == (2, 2)
    assert {e.record for e in report.errors} == {"line 2", "line 3"}

    table = pa.table({"id": ["x", "y", "z"], "text": ["alpha text", None, "gamma text"]})
    pq.write_table(table, tmp_path / "c.parquet")
    report = embedpipe.backfill(
        str(tmp_path / "c.parquet"), sink=f"faiss:{tmp_path / 'pq'}", collection="docs"
    )
    assert (report.docs_read, report.docs_failed) == (2, 1)
    assert report.errors[0].record == "row 1"


def test_duplicate_document_ids_keep_the_first(tmp_path: Path) -> None:
    jsonl = tmp_path / "dup.jsonl"
    jsonl.write_text(
        '{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n{"id": "b", "text": "three"}\n'
    )
    report = embedpipe.backfill(str(jsonl), sink=sink_uri("faiss", tmp_path), collection="docs")
    assert report.docs_read == 2
    assert [e.reason for e in report.errors] == [
        "duplicate document id: the first occurrence was kept"
    ]
    assert sorted(sink_ids(sink_uri("faiss", tmp_path))) == ["a#0", "b#0"]


def test_custom_document_iterable_and_sink_object(tmp_path: Path) -> None:
    docs = [
        Document(id=f"d{i}", text=f"document number {i} talks about topic {i % 3}")
        for i in range(20)
    ]
    cfg = load_config(None, {"sink": {"uri": f"faiss:{tmp_path / 'f'}", "collection": "docs"}})
    sink = open_sink(cfg.sink)
    report = embedpipe.backfill(docs, sink=sink, collection="docs")
    assert report.chunks_embedded == 20
    assert len(sink_ids(f"faiss:{tmp_path / 'f'}")) == 20


def test_dry_run_counts_without_encoding_or_writing(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    uri = sink_uri("faiss", tmp_path)
    cfg = load_config(
        None, {"source": {"uri": str(root)}, "sink": {"uri": uri, "collection": "docs"}}
    )
    report = embedpipe.run(cfg, dry_run=True)
    assert report.dry_run and report.outcome == "dry-run"
    assert report.chunks_embedded == report.chunks_total > 0
    assert report.batches == 0
    assert sink_ids(uri) == []


def test_encode_matches_query_vectors() -> None:
    vectors = embedpipe.encode(["hello world", "hello world"])
    assert vectors.shape == (2, 384)
    assert np.allclose(vectors[0], vectors[1])


def test_delete_guard_refuses_an_empty_source(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    uri = sink_uri("faiss", tmp_path)
    first = backfill(root, uri, mode="full")
    for f in list(root.rglob("*.*")):
        f.unlink()
    (root / "only.md").write_text("one tiny remaining document about lighthouses")
    with pytest.raises(DeleteGuardError, match="--force"):
        backfill(root, uri, mode="full")
    kept = sink_ids(uri)
    assert len(kept) == first.chunks_total + 1  # nothing deleted, the new document written
    assert embedpipe.query("lighthouses", sink=uri, collection="docs", k=1)[0].doc_id == "only.md"
    forced = embedpipe.backfill(str(root), sink=uri, collection="docs", mode="full", force=True)
    assert forced.chunks_deleted == first.chunks_total
    assert sink_ids(uri) == ["only.md#0"]


make_corpus_type = Callable[[dict[str, str]], Path]
