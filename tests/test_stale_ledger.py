"""The ledger is trusted only as far as the sink bears it out: a sink whose data was deleted (or
partly lost) while its state was kept gets every chunk back on the next run, the run says so,
and a sink that cannot be read is an error, never an empty sink. Real sinks; the FakeEncoder
stands in for the model except in the command's own run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import embedpipe
import embedpipe.api
from embedpipe.errors import HeldError, TransientSinkError
from embedpipe.metrics import write_textfile
from embedpipe.runs.pipeline import Pipeline
from embedpipe.sinks import open_sink
from embedpipe.sinks.qdrant import QdrantSink
from embedpipe.state.ledger import DONE, Ledger, Target, state_dir_for, target_key
from embedpipe.types import Chunk, RunReport
from tests.clikit import embedpipe as command
from tests.corpuskit import config, consistency, corpus_files
from tests.sinkkit import LOCAL_SINK_KINDS

RECHUNKED = {"chunk_tokens": 32, "overlap_tokens": 0}


def run(cfg: embedpipe.RunConfig, encoder: Any, **options: Any) -> RunReport:
    return Pipeline(cfg, encoder=encoder, **options).run()


def wipe(cfg: embedpipe.RunConfig) -> None:
    """Delete the sink's data, keeping its state (the ledger beside it)."""
    path = Path(cfg.sink.uri.partition(":")[2])
    shutil.rmtree(path)
    assert (state_dir_for(cfg.sink.uri, cfg.state) / "ledger.sqlite").exists()


def top_doc(cfg: embedpipe.RunConfig, encoder: Any, text: str) -> str:
    sink = open_sink(cfg.sink)
    try:
        return sink.search(encoder.encode_texts([text])[0], k=3)[0].doc_id
    finally:
        sink.abort()


def lost_notes(report: RunReport) -> list[str]:
    return [n for n in report.notes if "lists as embedded" in n]


@pytest.mark.parametrize("kind", LOCAL_SINK_KINDS)
def test_a_sink_whose_data_was_deleted_gets_every_chunk_back_and_the_report_says_so(
    kind: str, make_corpus, tmp_path: Path, fake_encoder: Any
) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(6)), kind, tmp_path)
    first = run(cfg, fake_encoder)
    wipe(cfg)

    again = run(cfg, fake_encoder)

    total = first.chunks_total
    assert again.outcome == "done" and again.chunks_skipped == 0
    assert again.chunks_embedded == again.chunks_lost == total
    [note] = lost_notes(again)
    assert cfg.sink.uri.partition(":")[2] in note and f"none of the {total} chunks" in note
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and len(set(in_sink)) == len(in_sink) == total
    assert top_doc(cfg, fake_encoder, "trains") == "doc00.md"
    trusted = run(cfg, fake_encoder)  # the sink bears the ledger out again: nothing to redo
    assert (trusted.chunks_embedded, trusted.chunks_lost, lost_notes(trusted)) == (0, 0, [])


@pytest.mark.parametrize("kind", LOCAL_SINK_KINDS)
def test_a_sink_missing_some_chunks_gets_exactly_those_back(
    kind: str, make_corpus, tmp_path: Path, fake_encoder: Any
) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(6)), kind, tmp_path)
    first = run(cfg, fake_encoder)
    sink = open_sink(cfg.sink)  # someone deletes points behind embedpipe's back
    gone = sorted(sink.chunk_ids())[::5]
    sink.open(fake_encoder.dim, first.fingerprint)
    sink.delete(gone)
    sink.close()

    again = run(cfg, fake_encoder)

    assert again.chunks_lost == again.chunks_embedded == len(gone) > 1
    assert again.chunks_skipped == first.chunks_total - len(gone)
    [note] = lost_notes(again)
    assert f"lacks {len(gone)} of the {first.chunks_total} chunks" in note
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == first.chunks_total


@pytest.mark.parametrize("kind", LOCAL_SINK_KINDS)
def test_a_staged_generation_the_sink_dropped_is_rebuilt_not_promoted_half_empty(
    kind: str, make_corpus, tmp_path: Path, fake_encoder: Any
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files(6)
    root = make_corpus(files)
    run(config(root, kind, tmp_path), fake_encoder)
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in list(files)[3:]:
        shutil.move(root / name, aside / name)
    rechunked = config(root, kind, tmp_path, chunking=RECHUNKED)
    with pytest.raises(HeldError):
        run(rechunked, fake_encoder)  # staged with 3 of the 6 documents
    staged = embedpipe.api.status(rechunked)[0]["generations"][-1]
    open_sink(rechunked.sink).drop(staged["fingerprint"])  # its data deleted, its state kept
    for name in list(files)[3:]:
        shutil.move(aside / name, root / name)

    resumed = run(rechunked, fake_encoder)

    assert resumed.outcome == "done" and resumed.chunks_lost == staged["chunks"] > 0
    assert resumed.chunks_embedded == resumed.chunks_total and resumed.chunks_skipped == 0
    in_sink, in_ledger = consistency(rechunked)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == resumed.chunks_total
    assert {cid.split("#")[0] for cid in in_sink} == set(files)


@pytest.mark.parametrize("kind", ["qdrant-edge", "faiss"])
def test_a_lost_live_index_does_not_hold_the_generation_that_replaces_it(
    kind: str, make_corpus, tmp_path: Path, fake_encoder: Any
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files(6)
    root = make_corpus(files)
    cfg = config(root, kind, tmp_path)
    first = run(cfg, fake_encoder)
    wipe(cfg)
    for name in list(files)[3:]:
        (root / name).unlink()
    rechunked = config(root, kind, tmp_path, chunking=RECHUNKED)

    # The sink serves nothing, so there is nothing for the promotion rule to protect.
    report = run(rechunked, fake_encoder)

    assert report.outcome == "done" and report.promotion["promoted"] is True  # type: ignore[index]
    assert report.chunks_lost == first.chunks_total
    [note] = lost_notes(report)
    assert first.fingerprint[:12] in note and report.fingerprint[:12] in note
    in_sink, in_ledger = consistency(rechunked)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == report.chunks_total
    assert {cid.split("#")[0] for cid in in_sink} == set(list(files)[:3])


def test_an_unreachable_server_is_an_error_not_an_empty_sink() -> None:
    sink = QdrantSink("docs", url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(TransientSinkError, match="did not answer"):
        sink.count("a" * 64)
    sink.close()


def test_a_run_against_an_unreachable_server_fails_and_keeps_the_ledger(
    make_corpus, tmp_path: Path, fake_encoder: Any
) -> None:  # type: ignore[no-untyped-def]
    cfg = config(
        make_corpus(corpus_files(2)),
        "qdrant",
        tmp_path,
        state=str(tmp_path / "state"),
        sink={"uri": "qdrant+http://127.0.0.1:9", "collection": "docs"},
    )
    ledger = Ledger.in_dir(tmp_path / "state")
    target = Target(target_key(cfg.sink.uri, "docs"), "f" * 64)
    chunk = Chunk("doc00.md", 0, "text", [101, 102], 0, 4, "h0")
    ledger.mark(target, 1, [chunk], DONE)
    ledger.set_live(target, None, fake_encoder.dim)

    with pytest.raises(TransientSinkError, match="did not answer"):
        run(cfg, fake_encoder)

    assert list(ledger.chunk_ids(target)) == ["doc00.md#0"]
    assert ledger.live(target.key)["fingerprint"] == target.fingerprint  # type: ignore[index]
    ledger.close()


def test_the_lost_chunks_reach_the_metrics_textfile(tmp_path: Path) -> None:
    path = tmp_path / "embedpipe.prom"
    write_textfile(path, RunReport(collection="docs", chunks_lost=7), collection="docs")
    assert 'embedpipe_chunks_lost{collection="docs"} 7' in path.read_text().splitlines()


def test_the_command_rebuilds_a_deleted_edge_sink_and_warns(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(3))
    sink = tmp_path / "index"
    args = [
        "backfill",
        str(root),
        "--sink",
        f"qdrant-edge:{sink}",
        "--collection",
        "docs",
        "--chunk-tokens",
        "24",
        "--overlap-tokens",
        "0",
        "--report",
        str(tmp_path / "r.json"),
    ]
    assert command(*args).returncode == 0
    first = json.loads((tmp_path / "r.json").read_text())
    shutil.rmtree(sink)

    again = command(*args)

    assert again.returncode == 0, again.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    total = first["chunks_total"]
    assert report["chunks_lost"] == report["chunks_embedded"] == total > 0
    assert any(f"none of the {total} chunks" in n for n in report["notes"])
    assert "lists as embedded" in " ".join(again.stderr.split())  # the warning, and the note
    hits = embedpipe.query("trains", sink=f"qdrant-edge:{sink}", collection="docs", k=1)
    assert hits and hits[0].doc_id == "doc00.md"


@pytest.mark.parametrize("kind", ["qdrant-edge", "faiss"])
def test_a_dry_run_says_what_a_real_run_would_embed_again_and_forgets_nothing(
    kind: str, make_corpus, tmp_path: Path, fake_encoder: Any
) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(6)), kind, tmp_path)
    total = run(cfg, fake_encoder).chunks_total
    wipe(cfg)

    dry = Pipeline(cfg, encoder=fake_encoder).run(dry_run=True)

    assert dry.outcome == "dry-run" and dry.chunks_lost == 0
    [note] = [n for n in dry.notes if "lists as embedded" in n]
    assert f"holds 0 of the {total} chunks" in note and "a real run forgets" in note
    assert not Path(cfg.sink.uri.partition(":")[2]).exists(), "a dry run writes no sink"
    real = run(cfg, fake_encoder)  # the ledger still lists them: the real run finds them lost
    assert real.chunks_lost == real.chunks_embedded == total


@pytest.mark.parametrize("kind", ["qdrant-edge", "qdrant"])
def test_a_dry_run_leaves_the_sink_free_for_the_next_run_in_the_same_process(
    kind: str, make_corpus, tmp_path: Path, fake_encoder: Any
) -> None:  # type: ignore[no-untyped-def]
    """The dry run's check reads the live shard (Edge) or opens a local client (Qdrant), which
    lock their folder: it must let go, or the library's next run fails on the lock."""
    files = corpus_files(6)
    root = make_corpus(files)
    cfg = config(root, kind, tmp_path)
    total = run(cfg, fake_encoder).chunks_total
    (root / "doc00.md").write_text(files["doc00.md"] + "\n\nA new closing paragraph.")

    dry = Pipeline(cfg, encoder=fake_encoder).run(dry_run=True)
    real = run(cfg, fake_encoder)

    assert (dry.outcome, real.outcome) == ("dry-run", "done")
    assert real.chunks_embedded == dry.chunks_embedded > 0 and real.chunks_lost == 0
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) >= total
