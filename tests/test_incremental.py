"""Nightly semantics on real Qdrant local mode and real FAISS: skip, re-embed, delete, swap, crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import embedpipe
import embedpipe.api
from embedpipe.config import load_config
from embedpipe.durable import StateLock
from embedpipe.errors import LockedError, SinkError
from embedpipe.runs.pipeline import Pipeline
from embedpipe.sinks import open_sink
from embedpipe.state.ledger import Ledger, state_dir_for, target_key
from embedpipe.types import Embedded
from tests.clikit import embedpipe as command
from tests.clikit import start
from tests.corpuskit import config, consistency, corpus_files
from tests.sinkkit import CRASH_SINK_KINDS, SINK_KINDS

# Parquet shares FAISS's shard store and passes these too, but each case costs ~7 s of subprocesses.


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_edit_three_delete_two_reembeds_and_removes_exactly_those(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files()
    root = make_corpus(files)
    cfg = config(root, kind, tmp_path, mode="full")
    first = embedpipe.run(cfg)
    per_doc = first.chunks_total // len(files)
    assert first.chunks_total == per_doc * len(files) and per_doc >= 2

    for name in ("doc00.md", "doc01.md", "doc02.md"):  # change only the second paragraph
        text = files[name]
        (root / name).write_text(text.replace("A second paragraph", "An edited closing paragraph"))
    (root / "doc10.md").unlink()
    (root / "doc11.md").unlink()
    second = embedpipe.run(cfg)

    assert second.chunks_embedded == 3  # only the edited last chunk of each edited document
    assert second.chunks_deleted == 2 * per_doc
    assert second.chunks_skipped == first.chunks_total - 2 * per_doc - 3
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger)
    assert len(in_sink) == len(set(in_sink)) == first.chunks_total - 2 * per_doc
    assert not any(cid.startswith(("doc10.md#", "doc11.md#")) for cid in in_sink)


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_shrunk_document_loses_its_trailing_chunks_in_incremental_mode(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files(3)
    root = make_corpus(files)
    cfg = config(root, kind, tmp_path)
    embedpipe.run(cfg)
    (root / "doc00.md").write_text("# About trains")
    (root / "doc02.md").unlink()  # incremental mode: an unlisted document is kept
    report = embedpipe.run(cfg)
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger)
    assert [c for c in in_sink if c.startswith("doc00.md#")] == ["doc00.md#0"]
    assert any(c.startswith("doc02.md#") for c in in_sink)
    assert report.chunks_deleted >= 1


def test_a_link_out_of_the_folder_indexed_when_followed_is_removed_when_not(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(2))
    (tmp_path / "creds.txt").write_text("The password of the castle gate is hunter2.")
    (root / "notes.txt").symlink_to(tmp_path / "creds.txt")
    embedpipe.run(
        config(root, "faiss", tmp_path, source={"uri": str(root), "follow_symlinks": True})
    )
    assert any(c.startswith("notes.txt#") for c in consistency(config(root, "faiss", tmp_path))[0])
    report = embedpipe.run(config(root, "faiss", tmp_path))  # incremental, the default
    in_sink, in_ledger = consistency(config(root, "faiss", tmp_path))
    assert sorted(in_sink) == sorted(in_ledger) and in_sink
    assert not any(c.startswith("notes.txt#") for c in in_sink)
    assert [e.record for e in report.errors] == ["notes.txt"] and report.chunks_deleted >= 1


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_model_change_builds_new_index_and_swaps_only_at_the_end(
    kind: str, make_corpus, tmp_path: Path, tiny_model: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files())
    cfg = config(root, kind, tmp_path)
    embedpipe.run(cfg)
    old_ids = sorted(consistency(cfg)[0])
    new_cfg = config(
        root, kind, tmp_path, model={"name": str(tiny_model)}, batching={"max_batch_tokens": 128}
    )
    sink = open_sink(new_cfg.sink)
    seen_during: list[int] = []

    def during(
        report: embedpipe.RunReport,
    ) -> None:  # the live index is still the old, complete one
        old_vector = embedpipe.encode(["trains"])[0]
        seen_during.append(len(sink.search(old_vector, k=100)))

    report = Pipeline(new_cfg, sink=sink, progress=during).run()
    assert report.outcome == "done" and report.chunks_embedded == len(old_ids)
    assert seen_during and all(n == len(old_ids) for n in seen_during)
    in_sink, in_ledger = consistency(new_cfg)
    assert sorted(in_sink) == sorted(in_ledger) == old_ids
    status = embedpipe.status(new_cfg)
    assert status[0]["model"] == str(tiny_model)
    hits = embedpipe.query(
        "trains", config=new_cfg, k=1
    )  # query picks the model the index was built with
    assert hits and hits[0].chunk_id in in_sink


class InjectedSink:
    """A real sink whose Nth write call raises the given error instead of writing."""

    def __init__(self, cfg: embedpipe.RunConfig, failures: dict[int, Exception]) -> None:
        self.inner = open_sink(cfg.sink)
        self.uri, self.writes, self.failures = self.inner.uri, 0, failures

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def write(self, embedded: Embedded) -> None:
        self.writes += 1
        if self.writes in self.failures:
            raise self.failures[self.writes]
        self.inner.write(embedded)


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_persistent_sink_failure_leaves_ledger_matching_sink(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files())
    cfg = config(root, kind, tmp_path, batching={"max_batch_tokens": 64, "max_batch_size": 4})

    failing = InjectedSink(
        cfg, {3: SinkError("disk full (injected)")}
    )  # a full disk, a dead server
    with pytest.raises(SinkError, match="injected"):
        Pipeline(cfg, sink=failing).run()  # type: ignore[arg-type]
    ledger = Ledger(state_dir_for(cfg.sink.uri, None) / "ledger.sqlite")
    assert ledger.db.execute("SELECT outcome FROM runs").fetchone()[0] == "failed"
    ledger.close()
    report = embedpipe.run(cfg)  # the next run converges
    assert report.outcome == "done"
    in_sink, in_ledger = consistency(cfg)
    assert (
        sorted(in_sink) == sorted(in_ledger)
        and len(in_sink) == len(set(in_sink)) == report.chunks_total
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", CRASH_SINK_KINDS)
@pytest.mark.parametrize(
    "point", ["plan:1", "sink-write:2", "ledger-commit:3", "close:1", "sink-delete:1"]
)
def test_sigkill_at_any_point_then_rerun_converges(
    kind: str, point: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files()
    root = make_corpus(files)
    cfg = config(
        root, kind, tmp_path, mode="full", batching={"max_batch_tokens": 64, "max_batch_size": 4}
    )
    if point.startswith("sink-delete"):
        embedpipe.run(cfg)
        (root / "doc05.md").unlink()
    args = [
        "backfill",
        str(root),
        "--sink",
        cfg.sink.uri,
        "--collection",
        "docs",
        "--chunk-tokens",
        "24",
        "--overlap-tokens",
        "0",
        "--max-batch-tokens",
        "64",
        "--mode",
        "full",
    ]
    env = {**os.environ, "EMBEDPIPE_CRASH_AT": point, "EMBEDPIPE_BATCHING__MAX_BATCH_SIZE": "4"}
    killed = command(*args, env=env)
    assert killed.returncode == -9, killed.stderr
    env.pop("EMBEDPIPE_CRASH_AT")
    rerun = command(*args, env=env)
    assert rerun.returncode == 0, rerun.stderr
    in_sink, in_ledger = consistency(cfg)
    assert len(in_sink) == len(set(in_sink))
    assert sorted(in_sink) == sorted(in_ledger)
    assert {c.split("#")[0] for c in in_sink} == {name for name in files if (root / name).exists()}


def test_second_run_on_the_same_state_is_refused_naming_the_pid(tmp_path: Path) -> None:
    with (
        StateLock(tmp_path),
        pytest.raises(LockedError, match=f"pid {os.getpid()}"),
        StateLock(tmp_path),
    ):
        pass


def test_stop_request_finishes_the_batch_in_flight_and_commits(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files())
    cfg = config(root, "faiss", tmp_path, batching={"max_batch_tokens": 64, "max_batch_size": 4})
    pipe = Pipeline(cfg)
    pipe.progress = lambda report: pipe.stop.set()
    with pytest.raises(embedpipe.EmbedpipeError, match="re-run to resume"):
        pipe.run()
    assert pipe.report is not None and pipe.report.outcome == "interrupted"
    ledger = Ledger(state_dir_for(cfg.sink.uri, None) / "ledger.sqlite")
    committed = ledger.db.execute("SELECT COUNT(*) FROM chunks WHERE state = 1").fetchone()[0]
    ledger.close()
    assert 0 < committed == pipe.report.chunks_embedded
    report = embedpipe.run(cfg)
    assert report.chunks_skipped == committed
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger)


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_reconcile_reports_drift_both_ways_and_repair_fixes_it(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from embedpipe.types import Chunk

    root = make_corpus(corpus_files(6))
    cfg = config(root, kind, tmp_path)
    first = embedpipe.run(cfg)
    ledger = Ledger(state_dir_for(cfg.sink.uri, None) / "ledger.sqlite")
    live = ledger.live(target_key(cfg.sink.uri, "docs"))
    ledger.close()
    assert live is not None
    sink = open_sink(cfg.sink)  # drift made behind the ledger's back
    sink.open(live["dim"], live["fingerprint"])
    sink.delete(["doc01.md#0"])
    stray = Chunk(
        doc_id="ghost.md", index=0, text="not in any source", token_ids=[101, 102], start=0, end=5
    )
    sink.write(
        Embedded([stray], np.ones((1, live["dim"]), dtype=np.float32) / np.sqrt(live["dim"]))
    )
    sink.close()

    drift = embedpipe.api.reconcile(cfg)
    assert (drift["missing"], drift["orphaned"]) == (["doc01.md#0"], ["ghost.md#0"])
    fixed = embedpipe.api.reconcile(cfg, repair=True)
    assert fixed["repaired"] and fixed["run"]["chunks_embedded"] == 1
    clean = embedpipe.api.reconcile(cfg)
    assert clean["missing"] == clean["orphaned"] == []
    assert clean["in_sink"] == clean["in_ledger"] == first.chunks_total


@pytest.mark.slow
def test_sigterm_finishes_the_batch_in_flight_and_a_rerun_resumes(tmp_path: Path) -> None:
    import contextlib
    import signal
    import sqlite3
    import time

    stdlib_docs = tmp_path / "docs"
    for name, text in corpus_files(15).items():
        for copy in range(12):  # 180 short documents, written 2 per batch: a run of ~90 batches
            (stdlib_docs / str(copy)).mkdir(parents=True, exist_ok=True)
            (stdlib_docs / str(copy) / name).write_text(f"{text} (copy {copy})")

    uri = f"faiss:{tmp_path / 'f'}"
    args = [
        "backfill",
        str(stdlib_docs),
        "--sink",
        uri,
        "--collection",
        "docs",
        "--chunk-tokens",
        "64",
        "--overlap-tokens",
        "0",
    ]
    env = {**os.environ, "COLUMNS": "300", "EMBEDPIPE_BATCHING__MAX_BATCH_SIZE": "2"}
    proc = start(*args, env=env)
    ledger_path = state_dir_for(uri, None) / "ledger.sqlite"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger_path.exists():
            with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(ledger_path) as db:
                if db.execute("SELECT COUNT(*) FROM chunks WHERE state = 1").fetchone()[0] > 0:
                    break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-2000:]
    assert "finishing the batch in flight" in stderr and "re-run to resume" in stderr
    with sqlite3.connect(ledger_path) as db:
        committed = db.execute("SELECT COUNT(*) FROM chunks WHERE state = 1").fetchone()[0]
        outcome = db.execute("SELECT outcome FROM runs ORDER BY id DESC").fetchone()[0]
    assert committed > 0 and outcome == "interrupted"
    cfg = load_config(
        None,
        {
            "source": {"uri": str(stdlib_docs)},
            "sink": {"uri": uri, "collection": "docs"},
            "chunking": {"chunk_tokens": 64, "overlap_tokens": 0},
        },
    )
    report = embedpipe.run(cfg)
    assert report.chunks_skipped == committed
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == report.chunks_total


@pytest.mark.parametrize("kind", ["faiss", "qdrant"])
def test_keep_previous_retains_the_retired_index_after_a_swap(
    kind: str, make_corpus, tmp_path: Path, tiny_model: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(4))
    embedpipe.run(config(root, kind, tmp_path))
    embedpipe.run(
        config(
            root,
            kind,
            tmp_path,
            model={"name": str(tiny_model)},
            sink={"uri": f"{kind}:{tmp_path / kind}", "collection": "docs", "keep_previous": True},
        )
    )
    if kind == "faiss":
        kept = [p.name for p in (tmp_path / kind / ".generations").iterdir()]
    else:
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(tmp_path / kind))
        kept = [c.name for c in client.get_collections().collections]
        client.close()
    assert len(kept) == 2, kept


def test_unchanged_document_is_skipped_before_chunking_but_an_edit_is_not(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from embedpipe.encoding import chunking

    files = corpus_files(6)
    root = make_corpus(files)
    cfg = config(root, "faiss", tmp_path)
    first = embedpipe.run(cfg)
    chunked: list[str] = []
    original = chunking.Chunker.chunk_many

    def spy(self, docs):  # type: ignore[no-untyped-def]
        for chunk in original(self, docs):
            chunked.append(chunk.doc_id)
            yield chunk

    chunking.Chunker.chunk_many = spy  # type: ignore[method-assign]
    try:
        (root / "doc03.md").write_text(files["doc03.md"] + "\n\nOne more paragraph.")
        second = embedpipe.run(cfg)
    finally:
        chunking.Chunker.chunk_many = original  # type: ignore[method-assign]
    assert set(chunked) == {"doc03.md"}
    assert 1 <= second.chunks_embedded <= 2  # only doc03's changed tail
    assert (
        second.chunks_skipped + second.chunks_embedded == second.chunks_total >= first.chunks_total
    )
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger)


def test_transient_sink_errors_are_retried_and_the_run_completes(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from embedpipe.errors import TransientSinkError

    root = make_corpus(corpus_files(6))
    cfg = config(root, "faiss", tmp_path, batching={"max_batch_tokens": 64, "max_batch_size": 4})

    timeout = TransientSinkError("read timed out (injected)")
    flaky = InjectedSink(cfg, {2: timeout, 3: timeout})  # the second write times out twice
    report = Pipeline(cfg, sink=flaky).run()  # type: ignore[arg-type]
    assert report.outcome == "done" and flaky.writes == report.batches + 2
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == report.chunks_total
