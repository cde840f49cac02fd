"""Never lose the served index: the promotion rule, crashes around the swap, reconcile, and the
operator's one-line errors (issue: never lose the served index). Real sinks, the real model."""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import embedpipe
import embedpipe.api
from embedpipe.durable import StateLock
from embedpipe.errors import HeldError
from embedpipe.state.ledger import state_dir_for
from tests.clikit import embedpipe as embedpipe_command
from tests.corpuskit import config, consistency, corpus_files
from tests.sinkkit import CRASH_SINK_KINDS, LOCAL_SINK_KINDS, SINK_KINDS


def cli(
    *args: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    if not kw:
        return embedpipe_command(*args, env=env)
    return subprocess.run(
        [sys.executable, "-m", "embedpipe", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env or dict(os.environ),
        **kw,
    )  # type: ignore[call-overload]


def backfill_args(root: Path, cfg: embedpipe.RunConfig, chunk_tokens: int) -> list[str]:
    return [
        "backfill",
        str(root),
        "--sink",
        cfg.sink.uri,
        "--collection",
        "docs",
        "--chunk-tokens",
        str(chunk_tokens),
        "--overlap-tokens",
        "0",
        "--max-batch-tokens",
        "64",
    ]


def live_docs(cfg: embedpipe.RunConfig) -> set[str]:
    """The documents a query of the live index can return (every chunk of it, via chunk_ids)."""
    return {cid.split("#")[0] for cid in consistency(cfg)[0]}


def answers(cfg: embedpipe.RunConfig) -> list[str]:
    return [h.doc_id for h in embedpipe.query("trains and their history", k=3, config=cfg)]


# -- the promotion rule ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_empty_source_and_new_chunking_is_held_and_the_live_index_keeps_serving(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files()
    root = make_corpus(files)
    embedpipe.run(config(root, kind, tmp_path))
    served = live_docs(config(root, kind, tmp_path))
    for name in files:
        (root / name).unlink()  # an empty (or unmounted) source
    rechunked = config(root, kind, tmp_path, chunking={"chunk_tokens": 32, "overlap_tokens": 0})

    with pytest.raises(HeldError, match=r"0 of the 12 documents .*--force"):
        embedpipe.run(rechunked)

    assert live_docs(rechunked) == served == set(files)
    assert answers(rechunked)
    status = embedpipe.api.status(rechunked)[0]
    assert status["documents"] == 12 and status["runs"][0]["outcome"] == "held"


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_partial_source_is_held_then_resumed_and_promoted_when_complete(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files()
    root = make_corpus(files)
    embedpipe.run(config(root, kind, tmp_path))
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in list(files)[3:]:  # 3 of 12 documents left
        shutil.move(root / name, aside / name)
    rechunked = config(root, kind, tmp_path, chunking={"chunk_tokens": 32, "overlap_tokens": 0})

    held = embedpipe.run(rechunked, raise_on_failure=False)
    assert held.outcome == "held" and held.promotion is not None
    assert held.promotion["promoted"] is False
    assert (held.promotion["live"]["documents"], held.promotion["staged"]["documents"]) == (12, 3)
    assert live_docs(rechunked) == set(files)

    for name in list(files)[3:]:
        shutil.move(aside / name, root / name)
    resumed = embedpipe.run(rechunked)
    assert resumed.outcome == "done" and resumed.promotion["promoted"] is True  # type: ignore[index]
    assert resumed.chunks_skipped == held.chunks_embedded  # the staged generation was resumed
    in_sink, in_ledger = consistency(rechunked)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == resumed.chunks_total
    assert {cid.split("#")[0] for cid in in_sink} == set(files)


@pytest.mark.parametrize("kind", ["faiss", "qdrant-edge"])
def test_force_promotes_a_smaller_generation(kind: str, make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files()
    root = make_corpus(files)
    embedpipe.run(config(root, kind, tmp_path))
    for name in list(files)[2:]:
        (root / name).unlink()
    rechunked = config(root, kind, tmp_path, chunking={"chunk_tokens": 32, "overlap_tokens": 0})
    report = embedpipe.api.run(rechunked, force=True)
    assert report.outcome == "done" and "forced" in report.promotion["reason"]  # type: ignore[index]
    assert live_docs(rechunked) == set(list(files)[:2])


def test_held_run_exits_1_and_says_what_was_held_and_how_to_force_it(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(4))
    cfg = config(root, "faiss", tmp_path)
    embedpipe.run(cfg)
    for path in root.iterdir():
        path.unlink()
    report_file = tmp_path / "run.json"
    held = cli(*backfill_args(root, cfg, 32), "--report", str(report_file))
    assert held.returncode == 1
    assert "Held the new generation" in held.stderr and "--force" in held.stderr
    assert "Traceback" not in held.stderr
    report = json.loads(report_file.read_text())
    assert report["outcome"] == "held" and "0 of the 4 documents" in report["reason"]
    assert live_docs(cfg) == {f"doc{i:02d}.md" for i in range(4)}
    forced = cli(*backfill_args(root, cfg, 32), "--force")
    assert forced.returncode == 0, forced.stderr


@pytest.mark.ray
def test_ray_engine_holds_an_empty_rechunked_generation_too(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("ray")
    files = corpus_files(6)
    root = make_corpus(files)
    embedpipe.run(config(root, "faiss", tmp_path))
    for name in files:
        (root / name).unlink()
    rechunked = config(
        root,
        "faiss",
        tmp_path,
        engine="ray",
        ray={"address": None},
        chunking={"chunk_tokens": 32, "overlap_tokens": 0},
    )
    try:
        report = embedpipe.run(rechunked, raise_on_failure=False)
    finally:
        import ray

        ray.shutdown()
    assert report.outcome == "held"
    assert live_docs(rechunked) == set(files)


# -- crashes around close, swap and set_live -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", CRASH_SINK_KINDS)
@pytest.mark.parametrize("point", ["close:1", "swap:1", "set-live:1"])
def test_sigkill_around_the_swap_then_reconcile_repair_keeps_a_served_index(
    kind: str, point: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files()
    root = make_corpus(files)
    cfg = config(root, kind, tmp_path)
    embedpipe.run(cfg)
    env = {**os.environ, "EMBEDPIPE_CRASH_AT": point}
    killed = cli(*backfill_args(root, cfg, 32), env=env)
    assert killed.returncode == -9, killed.stderr

    drift = embedpipe.api.reconcile(cfg)
    swapped = point != "close:1"
    assert (drift["relink"] is not None) == swapped
    assert not any(g["missing"] or g["orphaned"] for g in drift["generations"])
    repaired = embedpipe.api.reconcile(cfg, repair=True)
    assert repaired["relink"] == drift["relink"]
    assert live_docs(cfg) == set(files) and answers(cfg)
    clean = embedpipe.api.reconcile(cfg)
    assert clean["relink"] is None and clean["in_sink"] == clean["in_ledger"] > 0

    rerun = cli(*backfill_args(root, cfg, 32))
    assert rerun.returncode == 0, rerun.stderr
    rechunked = config(root, kind, tmp_path, chunking={"chunk_tokens": 32, "overlap_tokens": 0})
    in_sink, in_ledger = consistency(rechunked)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == len(set(in_sink))
    assert {cid.split("#")[0] for cid in in_sink} == set(files)
    assert embedpipe.api.reconcile(rechunked)["relink"] is None


@pytest.mark.slow
def test_reconcile_after_a_failed_first_run_compares_the_staged_generation(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files())
    cfg = config(root, "faiss", tmp_path)
    env = {
        **os.environ,
        "EMBEDPIPE_CRASH_AT": "ledger-commit:2",
        "EMBEDPIPE_BATCHING__MAX_BATCH_SIZE": "4",
    }
    assert cli(*backfill_args(root, cfg, 24), env=env).returncode == -9
    result = embedpipe.api.reconcile(cfg)
    [staged] = result["generations"]
    assert not staged["live"] and staged["in_ledger"] > 0
    assert staged["missing"] == [] and staged["orphaned"] == []
    assert staged["in_sink"] == staged["in_ledger"] + staged["pending"]


# -- what the operator reads -----------------------------------------------------------------


def test_a_held_state_lock_is_one_line_naming_the_holder(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(2))
    cfg = config(root, "faiss", tmp_path)
    state = state_dir_for(cfg.sink.uri, None)
    report_file = tmp_path / "run.json"
    with StateLock(state):
        text = cli(*backfill_args(root, cfg, 24), "--report", str(report_file))
        as_json = cli(*backfill_args(root, cfg, 24), "--log-format", "json")
    assert text.returncode == 1
    holder = f"pid {os.getpid()} on host {socket.gethostname()}"
    [line] = [ln for ln in text.stderr.splitlines() if ln.startswith("error:")]
    assert holder in line and str(state / "lock") in line
    report = json.loads(report_file.read_text())
    assert report["outcome"] == "failed" and holder in report["reason"]
    assert as_json.returncode == 1
    events = [json.loads(ln) for ln in as_json.stderr.splitlines() if ln.startswith("{")]
    assert any(e.get("event") == "error" and holder in e.get("message", "") for e in events)


def test_status_shows_a_killed_run_as_interrupted_with_its_last_commit(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files()
    root = make_corpus(files)
    cfg = config(root, "faiss", tmp_path)
    embedpipe.run(cfg)
    for name in files:
        (root / name).write_text(files[name] + "\n\nAn added closing line, to re-embed.")
    env = {
        **os.environ,
        "EMBEDPIPE_CRASH_AT": "ledger-commit:2",
        "EMBEDPIPE_BATCHING__MAX_BATCH_SIZE": "4",
    }
    assert cli(*backfill_args(root, cfg, 24), env=env).returncode == -9
    last = embedpipe.api.status(cfg)[0]["runs"][0]
    assert last["outcome"] == "interrupted" and last["committed"] is not None
    shown = cli("status", "--sink", cfg.sink.uri)
    assert "interrupted" in shown.stdout and "last commit" in shown.stdout


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (48_000, 48_000))


@pytest.mark.parametrize("kind", LOCAL_SINK_KINDS)  # a full local disk
def test_a_full_disk_is_one_line_and_a_rerun_converges(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files(15)
    root = make_corpus({k: v * 6 for k, v in files.items()})
    cfg = config(root, kind, tmp_path)
    full = cli(*backfill_args(root, cfg, 24), preexec_fn=_limit_file_size)
    assert full.returncode == 1, full.stderr
    assert "Traceback" not in full.stderr
    [line] = [ln for ln in full.stderr.splitlines() if ln.startswith("error:")]
    # Whichever write hits the limit first (a sink file or the ledger) is named, with the reason.
    reasons = ("File too large", "disk is full", "disk I/O error")
    assert any(r in line for r in reasons) and str(tmp_path) in line, line
    again = cli(*backfill_args(root, cfg, 24))
    assert again.returncode == 0, again.stderr
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == len(set(in_sink)) > 0


def test_an_unwritable_report_is_one_line(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(2))
    cfg = config(root, "faiss", tmp_path)
    result = cli(*backfill_args(root, cfg, 24), "--report", "/dev/full")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "writing the run report to /dev/full failed: No space left on device" in result.stderr
