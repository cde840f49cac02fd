"""The Ray Data engine on a local Ray instance: same chunks, hashes, vectors and counts as local."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embedpipe
from embedpipe.config import load_config
from tests.test_incremental import consistency, corpus_files

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():  # type: ignore[no-untyped-def]
    """One local Ray instance (2 CPUs) for the module, as `--engine ray` without an address starts."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})  # fmt: skip
    yield
    ray.shutdown()


def run(root: Path, uri: str, engine: str, **extra: object) -> embedpipe.RunReport:
    cfg = load_config(None, {"source": {"uri": str(root)}, "sink": {"uri": uri, "collection": "docs"},
                             "chunking": {"chunk_tokens": 48, "overlap_tokens": 8}, "engine": engine,
                             "batching": {"max_batch_tokens": 512}, **extra})  # fmt: skip
    return embedpipe.run(cfg)


def stored(directory: Path) -> dict[str, tuple[str, np.ndarray]]:
    """chunk id -> (content hash, vector) read back from a FAISS sink's own vector store."""
    from embedpipe.sinks.store import ShardStore, vectors_of

    table = ShardStore((directory / "docs" / "store").resolve()).live()
    assert table is not None
    vectors = vectors_of(table)
    ids, hashes = table["chunk_id"].to_pylist(), table["content_hash"].to_pylist()
    return {cid: (h, vectors[i]) for i, (cid, h) in enumerate(zip(ids, hashes, strict=True))}


def test_ray_engine_matches_the_local_engine(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(16))
    (root / "bad.txt").write_bytes(b"\xff\xfe\x00binary")
    local = run(root, f"faiss:{tmp_path / 'local'}", "local")
    distributed = run(root, f"faiss:{tmp_path / 'ray'}", "ray")
    for field in (
        "docs_read",
        "docs_failed",
        "chunks_total",
        "chunks_embedded",
        "chunks_skipped",
        "tokens_embedded",
    ):
        assert getattr(distributed, field) == getattr(local, field), field
    ours, theirs = stored(tmp_path / "ray"), stored(tmp_path / "local")
    assert sorted(ours) == sorted(theirs)
    for cid, (digest, vector) in ours.items():
        assert digest == theirs[cid][0]
        assert float(vector @ theirs[cid][1]) >= 0.9999, cid


def test_unchanged_rerun_on_ray_embeds_nothing(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(8))
    uri = f"qdrant:{tmp_path / 'q'}"
    first = run(root, uri, "ray")
    again = run(root, uri, "ray")
    assert first.chunks_embedded > 0
    assert again.chunks_embedded == 0 and again.chunks_skipped == first.chunks_total


@pytest.mark.slow
def test_ray_run_killed_midway_then_rerun_converges(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(16))
    uri = f"faiss:{tmp_path / 'f'}"
    args = [sys.executable, "-m", "embedpipe", "backfill", str(root), "--sink", uri, "--collection", "docs",
            "--engine", "ray", "--chunk-tokens", "48", "--overlap-tokens", "8", "--max-batch-tokens", "256"]  # fmt: skip
    env = {**os.environ, "EMBEDPIPE_CRASH_AT": "sink-write:3", "EMBEDPIPE_RAY__BLOCK_DOCS": "2"}
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    env.pop("EMBEDPIPE_CRASH_AT")
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    cfg = load_config(None, {"sink": {"uri": uri, "collection": "docs"}})
    in_sink, in_ledger = consistency(cfg)
    assert len(in_sink) == len(set(in_sink)) > 0
    assert sorted(in_sink) == sorted(in_ledger)
