"""The run's rules (runs/planning.py, runs/commit.py, promotion/__init__.py) through `Pipeline` on real sinks and a
real ledger, with the FakeEncoder: what is skipped, re-embedded, deleted, refused and held.
No model is loaded, so each test takes a fraction of a second."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from embedpipe.config import RunConfig, load_config
from embedpipe.errors import DeleteGuardError, HeldError
from embedpipe.runs.pipeline import Pipeline
from embedpipe.sinks import open_sink
from embedpipe.state.ledger import Ledger, Target, state_dir_for, target_key
from embedpipe.types import Document, RecordError, RunReport
from tests.fakes import FakeEncoder, TokenizerSpy

SINKS = ["faiss", "parquet"]
TOPICS = ["trains", "boats", "bread", "rivers"]


def corpus(n: int = 4) -> list[Document]:
    """n documents of two paragraphs each: several chunks at 24 tokens a chunk."""
    return [
        Document(
            f"doc{i}",
            f"# About {t}\n\nThis note {i} explains {t} in some detail, with "
            f"history and practice.\n\nA second paragraph on {t} care.",
            source="test",
        )
        for i, t in enumerate(TOPICS[:n])
    ]


def edited(doc: Document) -> Document:
    """The document with only its closing paragraph changed."""
    return Document(doc.id, doc.text.replace("A second paragraph", "An edited closing paragraph"))


def config(tmp_path: Path, kind: str = "faiss", **extra: object) -> RunConfig:
    data = {
        "sink": {"uri": f"{kind}:{tmp_path / kind}", "collection": "docs"},
        "chunking": {"chunk_tokens": 24, "overlap_tokens": 0},
        **extra,
    }
    return load_config(None, data)


def run(
    cfg: RunConfig, encoder: FakeEncoder, docs: Iterable[Document | RecordError], **kw: object
) -> RunReport:
    dry_run = bool(kw.pop("dry_run", False))
    return Pipeline(cfg, source=list(docs), encoder=encoder, **kw).run(dry_run=dry_run)  # type: ignore[arg-type]


def served(cfg: RunConfig) -> list[str]:
    """Chunk ids of the generation the sink serves now."""
    sink = open_sink(cfg.sink)
    try:
        return sorted(sink.chunk_ids())
    finally:
        sink.abort()


def ledger_done(cfg: RunConfig) -> list[str]:
    """Chunk ids the ledger holds as done for the live generation."""
    key = target_key(cfg.sink.uri, cfg.sink.collection)
    ledger = Ledger.in_dir(state_dir_for(cfg.sink.uri, cfg.state))
    try:
        live = ledger.live(key)
        return sorted(ledger.chunk_ids(Target(key, live["fingerprint"]))) if live else []
    finally:
        ledger.close()


def of(doc_id: str, ids: list[str]) -> list[str]:
    return [cid for cid in ids if cid.startswith(f"{doc_id}#")]


# -- skipping what is unchanged ------------------------------------------------------------


@pytest.mark.parametrize("kind", SINKS)
def test_unchanged_rerun_embeds_nothing(
    kind: str, fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path, kind)
    first = run(cfg, fake_encoder, corpus())
    again = run(cfg, fake_encoder, corpus())
    assert first.chunks_embedded == first.chunks_total > len(corpus())
    assert (again.chunks_embedded, again.batches, again.chunks_deleted) == (0, 0, 0)
    assert again.chunks_skipped == again.chunks_total == first.chunks_total
    assert served(cfg) == ledger_done(cfg)


def test_unchanged_rerun_skips_every_document_before_chunking(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    run(cfg, fake_encoder, corpus())
    spy = TokenizerSpy(fake_encoder.tokenizer)
    again = run(cfg, fake_encoder.with_tokenizer(spy), corpus())
    assert again.docs_read == len(corpus())
    assert spy.texts == []  # no document text reached the tokenizer


def test_edited_document_reembeds_only_its_changed_chunk(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    docs = corpus()
    first = run(cfg, fake_encoder, docs)
    spy = TokenizerSpy(fake_encoder.tokenizer)
    docs[1] = edited(docs[1])
    second = run(cfg, fake_encoder.with_tokenizer(spy), docs)
    assert second.chunks_embedded == 1
    assert second.chunks_skipped == first.chunks_total - 1
    assert all("trains" not in text for text in spy.texts)  # unchanged documents not chunked
    assert served(cfg) == ledger_done(cfg)


def test_edited_chunk_is_found_by_its_new_text(fake_encoder: FakeEncoder, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    docs = corpus()
    run(cfg, fake_encoder, docs)
    docs[1] = edited(docs[1])
    run(cfg, fake_encoder, docs)
    sink = open_sink(cfg.sink)
    try:
        hit = sink.search(
            fake_encoder.encode_texts(["An edited closing paragraph on boats care."])[0], k=1
        )[0]
    finally:
        sink.abort()
    assert hit.doc_id == "doc1" and "edited closing paragraph" in hit.text


# -- what a run admits -----------------------------------------------------------------------


def test_duplicate_document_id_keeps_the_first_and_counts_an_error(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    first, second = Document("dup", "lighthouses guide ships"), Document("dup", "volcanoes erupt")
    report = run(cfg, fake_encoder, [first, second])
    assert (report.docs_read, report.docs_failed) == (1, 1)
    assert "duplicate document id" in report.errors[0].reason
    assert served(cfg) == ["dup#0"]
    sink = open_sink(cfg.sink)
    try:
        (hit,) = sink.search(fake_encoder.encode_texts(["volcanoes erupt"])[0], k=5)
    finally:
        sink.abort()
    assert hit.text == "lighthouses guide ships"


def test_unreadable_record_is_counted_and_its_known_document_keeps_its_chunks(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path, mode="full")  # full mode would delete an unlisted document
    docs = corpus()
    run(cfg, fake_encoder, docs)
    before = served(cfg)
    failed = RecordError("api", "doc2", "could not fetch")
    report = run(cfg, fake_encoder, [*docs[:2], failed, docs[3]])
    assert report.docs_failed == 1 and report.errors == [failed]
    assert report.chunks_deleted == 0
    assert served(cfg) == ledger_done(cfg) == before


def test_unreadable_unknown_record_is_counted_and_the_run_goes_on(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    docs = corpus(2)
    report = run(cfg, fake_encoder, [RecordError("api", "never-seen", "not UTF-8"), *docs])
    assert report.outcome == "done"
    assert (report.docs_failed, report.docs_read) == (1, 2)
    assert not of("never-seen", served(cfg))


# -- deletes -------------------------------------------------------------------------------


def test_incremental_mode_keeps_documents_the_source_no_longer_lists(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path, mode="incremental")
    docs = corpus()
    run(cfg, fake_encoder, docs)
    before = served(cfg)
    report = run(cfg, fake_encoder, docs[1:])
    assert report.chunks_deleted == 0
    assert served(cfg) == before and of("doc0", before)


@pytest.mark.parametrize("kind", SINKS)
def test_full_mode_deletes_documents_the_source_no_longer_lists(
    kind: str, fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path, kind, mode="full")
    docs = corpus()
    run(cfg, fake_encoder, docs)
    gone = of("doc0", served(cfg))
    report = run(cfg, fake_encoder, docs[1:])
    assert report.chunks_deleted == len(gone) > 0
    assert not of("doc0", served(cfg))
    assert served(cfg) == ledger_done(cfg)


def test_delete_guard_refuses_a_wave_above_max_delete_fraction(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path, mode="full", max_delete_fraction=0.5)
    docs = corpus()
    run(cfg, fake_encoder, docs)
    before = served(cfg)
    pipeline = Pipeline(cfg, source=docs[3:], encoder=fake_encoder)  # type: ignore[arg-type]
    with pytest.raises(DeleteGuardError, match=r"max_delete_fraction=50%.*--force"):
        pipeline.run()
    assert pipeline.report is not None and pipeline.report.chunks_deleted == 0
    assert served(cfg) == ledger_done(cfg) == before


def test_delete_guard_gives_way_to_force(fake_encoder: FakeEncoder, tmp_path: Path) -> None:
    cfg = config(tmp_path, mode="full", max_delete_fraction=0.5)
    docs = corpus()
    run(cfg, fake_encoder, docs)
    report = run(cfg, fake_encoder, docs[3:], force=True)
    assert report.outcome == "done" and report.chunks_deleted > 0
    assert {cid.split("#")[0] for cid in served(cfg)} == {"doc3"}


@pytest.mark.parametrize("kind", SINKS)
def test_shrunk_document_loses_its_trailing_chunks(
    kind: str, fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path, kind)
    docs = corpus()
    first = run(cfg, fake_encoder, docs)
    trailing = len(of("doc0", served(cfg))) - 1
    docs[0] = Document("doc0", "# About trains")
    report = run(cfg, fake_encoder, docs)
    assert trailing > 0 and report.chunks_deleted == trailing
    assert of("doc0", served(cfg)) == ["doc0#0"]
    assert len(served(cfg)) == first.chunks_total - trailing == len(ledger_done(cfg))


def test_document_emptied_in_an_iterable_source_does_not_keep_serving_its_old_text_silently(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path, mode="full")
    docs = corpus()
    run(cfg, fake_encoder, docs)
    docs[0] = Document("doc0", "  \n ")
    report = run(cfg, fake_encoder, docs)
    assert report.docs_failed == 1 and report.errors[0].reason == "empty document"


# -- a new generation ----------------------------------------------------------------------


def test_chunk_size_change_with_empty_source_is_held_and_the_live_index_keeps_serving(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    docs = corpus()
    run(config(tmp_path), fake_encoder, docs)
    before = served(config(tmp_path))
    rechunked = config(tmp_path, chunking={"chunk_tokens": 32, "overlap_tokens": 0})
    pipeline = Pipeline(rechunked, source=[], encoder=fake_encoder)  # type: ignore[arg-type]
    with pytest.raises(HeldError, match=r"0 of the 4 documents .*--force"):
        pipeline.run()
    assert pipeline.report is not None and pipeline.report.outcome == "held"
    assert pipeline.report.promotion is not None and pipeline.report.promotion["promoted"] is False
    assert served(rechunked) == ledger_done(config(tmp_path)) == before


def test_chunk_size_change_with_empty_source_and_force_promotes(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    run(config(tmp_path), fake_encoder, corpus())
    rechunked = config(tmp_path, chunking={"chunk_tokens": 32, "overlap_tokens": 0})
    report = run(rechunked, fake_encoder, [], force=True)
    assert report.outcome == "done" and report.promotion is not None
    assert report.promotion["promoted"] is True and "forced" in report.promotion["reason"]
    assert served(rechunked) == ledger_done(rechunked) == []


def test_chunk_size_change_with_the_whole_source_promotes_a_full_reembed(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    first = run(config(tmp_path), fake_encoder, corpus())
    rechunked = config(tmp_path, chunking={"chunk_tokens": 32, "overlap_tokens": 0})
    report = run(rechunked, fake_encoder, corpus())
    assert report.outcome == "done" and report.chunks_skipped == 0
    assert report.chunks_embedded == report.chunks_total < first.chunks_total
    assert served(rechunked) == ledger_done(rechunked)


# -- dry run -------------------------------------------------------------------------------


def test_dry_run_counts_what_it_would_do_and_writes_nothing(
    fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    cfg = config(tmp_path, mode="full")
    docs = corpus()
    run(cfg, fake_encoder, docs)
    before = served(cfg)
    report = run(cfg, fake_encoder, [edited(docs[0]), *docs[2:]], dry_run=True)
    assert report.outcome == "dry-run" and report.batches == 0
    assert report.chunks_embedded == 1
    assert report.chunks_deleted == len(of("doc1", before))
    assert served(cfg) == ledger_done(cfg) == before


def test_dry_run_on_a_new_index_creates_no_sink(fake_encoder: FakeEncoder, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    report = run(cfg, fake_encoder, corpus(), dry_run=True)
    assert report.chunks_embedded == report.chunks_total > 0
    assert served(cfg) == ledger_done(cfg) == []
    assert not (tmp_path / "faiss").exists()


# -- the fake itself -------------------------------------------------------------------------


def test_fake_encoder_gives_equal_texts_equal_unit_vectors(fake_encoder: FakeEncoder) -> None:
    a, b, c = fake_encoder.encode_texts(["trains run late", "trains run late", "bread rises"])
    assert (a == b).all() and abs(float(a @ a) - 1) < 1e-5
    assert float(a @ c) < float(a @ b)
