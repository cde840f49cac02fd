"""The Ray Data engine on a local Ray instance: same chunks, hashes, vectors and counts as local."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import embedpipe
from embedpipe.config import load_config
from embedpipe.errors import ConfigError
from embedpipe.sinks import open_sink
from embedpipe.sinks.shards import ShardStore
from embedpipe.state.ledger import PENDING
from embedpipe.types import Document, RecordError
from tests import pgkit
from tests.clikit import embedpipe as command
from tests.corpuskit import consistency, corpus_files

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():  # type: ignore[no-untyped-def]
    """One local Ray instance (2 CPUs) for the module, as `--engine ray` without an address starts;
    yields its address, for command runs to join."""
    context = ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
    )
    yield context.address_info["gcs_address"]
    ray.shutdown()


def settings(root: Path | str, uri: str, engine: str, **extra: object) -> embedpipe.RunConfig:
    return load_config(
        None,
        {
            "source": {"uri": str(root)},
            "sink": {"uri": uri, "collection": "docs"},
            "chunking": {"chunk_tokens": 48, "overlap_tokens": 8},
            "engine": engine,
            "batching": {"max_batch_tokens": 512},
            **extra,
        },
    )


def run(root: Path | str, uri: str, engine: str, **extra: object) -> embedpipe.RunReport:
    return embedpipe.run(settings(root, uri, engine, **extra))


def finishes(job: Callable[[], embedpipe.RunReport], seconds: float = 300) -> embedpipe.RunReport:
    """The job's report; a failure (not a hung suite) when Ray never schedules part of it."""
    result: list[embedpipe.RunReport] = []
    worker = threading.Thread(target=lambda: result.append(job()), daemon=True)
    worker.start()
    worker.join(seconds)
    if not result:
        pytest.fail(f"the Ray run did not finish in {seconds:.0f} s: a stage waits for CPUs")
    return result[0]


COUNTS = (
    "docs_read",
    "docs_failed",
    "chunks_total",
    "chunks_embedded",
    "chunks_skipped",
    "tokens_embedded",
)


def same_run(ours: embedpipe.RunReport, theirs: embedpipe.RunReport) -> None:
    """The same counts and the same errors (file, record, reason), in the same order."""
    for field in COUNTS:
        assert getattr(ours, field) == getattr(theirs, field), field
    assert [(e.source, e.record, e.reason) for e in ours.errors] == [
        (e.source, e.record, e.reason) for e in theirs.errors
    ]


def same_vectors(
    ours: dict[str, tuple[str, np.ndarray]], theirs: dict[str, tuple[str, np.ndarray]]
) -> None:
    assert sorted(ours) == sorted(theirs)
    for cid, (digest, vector) in ours.items():
        assert digest == theirs[cid][0], cid
        assert float(vector @ theirs[cid][1]) >= 0.9999, cid


def stored(directory: Path) -> dict[str, tuple[str, np.ndarray]]:
    """chunk id -> (content hash, vector) read back from a FAISS sink's own vector store."""
    from embedpipe.sinks.shards import ShardStore, vectors_of

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
    same_run(distributed, local)
    assert "ray: 17 dir files read by Ray (binary files) in 1 waves" in distributed.notes
    same_vectors(stored(tmp_path / "ray"), stored(tmp_path / "local"))


def record_sources(tmp_path: Path) -> dict[str, Path]:
    """The same records, bad ones and a duplicate id included, as Parquet (two files) and JSONL.gz."""
    texts = list(corpus_files(12).values())
    rows = [{"id": f"r{i}", "text": t, "lang": "en"} for i, t in enumerate(texts[:10])]
    rows[3]["text"] = None  # not text
    rows[5]["text"] = "   "  # empty
    rows[8]["id"] = "r1"  # a duplicate id with other text: the first one must win
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:6]), parquet / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[6:]), parquet / "part-1.parquet")
    lines = [json.dumps(r) for r in rows]
    lines[2] = '{"id": "r2", "text": '  # malformed
    lines.insert(4, "[1, 2]")  # not an object
    lines.insert(7, "")  # blank: skipped
    jsonl = tmp_path / "records.jsonl.gz"
    jsonl.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return {"parquet": parquet, "jsonl": jsonl}


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_ray_reads_record_sources_itself_with_the_local_rules(kind: str, tmp_path: Path) -> None:
    """Ray's readers, one file per wave: the same errors (named as locally), the first of a
    duplicate id kept, the same chunks and vectors."""
    source = record_sources(tmp_path)[kind]
    local = run(source, f"faiss:{tmp_path / 'local'}", "local")
    # Two prepare actors hold both CPUs of the instance: the reads must still run.
    ray_cfg = {"wave_mb": 1e-6, "chunk_workers": 2}
    distributed = finishes(lambda: run(source, f"faiss:{tmp_path / 'ray'}", "ray", ray=ray_cfg))
    assert local.docs_failed >= 3 and any("duplicate" in e.reason for e in local.errors)
    same_run(distributed, local)
    files = 2 if kind == "parquet" else 1
    reader = "read_parquet" if kind == "parquet" else "binary files"
    assert f"ray: {files} {kind} files read by Ray ({reader}) in {files} waves" in distributed.notes
    assert any("chunking actors at 0.50 CPU each" in note for note in distributed.notes)
    same_vectors(stored(tmp_path / "ray"), stored(tmp_path / "local"))


def test_a_source_only_the_driver_reads_is_shipped(encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Documents from Python (no files behind them) take the generic path, with the same rules."""
    texts = list(corpus_files(6).values())
    items: list[Document | RecordError] = [Document(f"d{i}", t) for i, t in enumerate(texts)]
    items += [RecordError("api", "d9", "could not fetch"), Document("d0", "another text for d0")]
    reports = {}
    for engine in ("local", "ray"):
        cfg = settings("", f"faiss:{tmp_path / engine}", engine)
        reports[engine] = embedpipe.Pipeline(cfg, source=items, encoder=encoder).run()
    same_run(reports["ray"], reports["local"])
    assert "ray: source read on the driver and shipped in waves" in reports["ray"].notes
    same_vectors(stored(tmp_path / "ray"), stored(tmp_path / "local"))


def parquet_rows(directory: Path) -> dict[str, tuple[str, np.ndarray]]:
    """chunk id -> (content hash, vector) as a parquet: sink publishes them."""
    from embedpipe.sinks.shards import vectors_of

    table = pq.read_table(directory / "docs")
    vectors = vectors_of(table)
    ids = table["chunk_id"].to_pylist()
    assert len(ids) == len(set(ids))
    return {
        cid: (h, vectors[i])
        for i, (cid, h) in enumerate(zip(ids, table["content_hash"].to_pylist(), strict=True))
    }


def test_encoder_actors_write_a_sink_that_takes_concurrent_writers(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(12))
    local = run(root, f"parquet:{tmp_path / 'local'}", "local")
    uri = f"parquet:{tmp_path / 'ray'}"
    distributed = run(root, uri, "ray", ray={"write_from": "actors", "encoders": 1})
    same_run(distributed, local)
    assert "ray: sink written by the encoder actors" in distributed.notes
    same_vectors(parquet_rows(tmp_path / "ray"), parquet_rows(tmp_path / "local"))
    in_sink, in_ledger = consistency(settings(root, uri, "ray"))
    assert sorted(in_sink) == sorted(in_ledger)


@pytest.mark.skipif(not pgkit.AVAILABLE, reason="needs the dev extra's Postgres")
def test_encoder_actors_write_postgres_directly_with_the_local_engines_vectors(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(8))
    local_uri, ray_uri = pgkit.sink_uri(tmp_path / "local"), pgkit.sink_uri(tmp_path / "ray")
    local = run(root, local_uri, "local")
    distributed = finishes(lambda: run(root, ray_uri, "ray", ray={"encoders": 1}))
    same_run(distributed, local)
    assert "ray: sink written by the encoder actors" in distributed.notes  # write_from: auto
    in_sink, in_ledger = consistency(settings(root, ray_uri, "ray"))
    assert sorted(in_sink) == sorted(in_ledger) and len(in_sink) == local.chunks_total

    def stored(uri: str) -> dict[str, np.ndarray]:
        sink = open_sink(settings(root, uri, "local").sink)
        try:
            return {
                c.id: v for b in sink.points() for c, v in zip(b.chunks, b.vectors, strict=True)
            }
        finally:
            sink.abort()

    ours, theirs = stored(ray_uri), stored(local_uri)
    assert sorted(ours) == sorted(theirs)
    assert min(float(ours[c] @ theirs[c]) for c in ours) > 0.999


def test_a_sink_in_one_process_cannot_be_written_by_actors(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(2))
    with pytest.raises(ConfigError, match="one process only"):
        run(root, f"qdrant:{tmp_path / 'q'}", "ray", ray={"write_from": "actors"})
    with pytest.raises(ConfigError, match="takes no concurrent writers"):
        run(root, f"qdrant-edge:{tmp_path / 'e'}", "ray", ray={"write_from": "actors"})


@pytest.mark.parametrize(("kind", "first_engine"), [("qdrant-edge", "ray"), ("qdrant", "local")])
def test_unchanged_rerun_on_ray_embeds_nothing(
    kind: str, first_engine: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Ray after Ray, and Ray after the local engine (one ledger, one rule): nothing to embed,
    and the driver never loads the model."""
    root = make_corpus(corpus_files(8))
    uri = f"{kind}:{tmp_path / 'q'}"
    first = run(root, uri, first_engine)
    again = run(root, uri, "ray")
    assert first.chunks_embedded > 0
    assert again.chunks_embedded == 0 and again.chunks_skipped == first.chunks_total
    assert again.device == "not loaded", "the driver loaded the model for an unchanged re-run"


@pytest.mark.slow
def test_ray_run_killed_midway_then_rerun_converges(
    make_corpus, tmp_path: Path, local_ray: str
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(16))
    uri = f"faiss:{tmp_path / 'f'}"
    args = [
        "backfill",
        str(root),
        "--sink",
        uri,
        "--collection",
        "docs",
        "--engine",
        "ray",
        "--chunk-tokens",
        "48",
        "--overlap-tokens",
        "8",
        "--max-batch-tokens",
        "256",
    ]
    env = {
        **os.environ,
        "EMBEDPIPE_CRASH_AT": "sink-write:3",
        "EMBEDPIPE_RAY__BLOCK_DOCS": "2",
        "EMBEDPIPE_RAY__ADDRESS": local_ray,  # the driver joins the module's Ray instance
    }
    killed = command(*args, env=env, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    env.pop("EMBEDPIPE_CRASH_AT")
    rerun = command(*args, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    cfg = load_config(None, {"sink": {"uri": uri, "collection": "docs"}})
    in_sink, in_ledger = consistency(cfg)
    assert len(in_sink) == len(set(in_sink)) > 0
    assert sorted(in_sink) == sorted(in_ledger)


@pytest.mark.slow
def test_killed_run_with_actor_writes_leaves_no_orphan(
    make_corpus, tmp_path: Path, local_ray: str
) -> None:  # type: ignore[no-untyped-def]
    """Actors write before the driver commits: what they wrote is pending in the ledger, so a
    document deleted before the re-run loses those vectors too."""
    root = make_corpus(corpus_files(16))
    uri = f"parquet:{tmp_path / 'p'}"
    args = [
        "backfill",
        str(root),
        "--sink",
        uri,
        "--collection",
        "docs",
        "--engine",
        "ray",
        "--chunk-tokens",
        "48",
        "--overlap-tokens",
        "8",
        "--mode",
        "full",
    ]
    env = {
        **os.environ,
        "EMBEDPIPE_CRASH_AT": "sink-write:1",
        "EMBEDPIPE_RAY__BLOCK_DOCS": "2",
        "EMBEDPIPE_RAY__ADDRESS": local_ray,
        "EMBEDPIPE_RAY__WRITE_FROM": "actors",
    }
    killed = command(*args, env=env, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    cfg = settings(root, uri, "ray")
    (store,) = (tmp_path / "p" / ".generations").glob("docs__*/store")  # the unpublished run
    written = ShardStore(store).live(columns=["chunk_id"])
    in_sink = [] if written is None else written["chunk_id"].to_pylist()
    with sqlite3.connect(tmp_path / "p.state" / "ledger.sqlite") as db:
        states = dict(db.execute("SELECT chunk_id, state FROM chunks").fetchall())
    assert in_sink and all(states.get(cid) == PENDING for cid in in_sink)
    gone = in_sink[0].partition("#")[0]
    (root / gone).unlink()
    env.pop("EMBEDPIPE_CRASH_AT")
    rerun = command(*args, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    in_sink, in_ledger = consistency(cfg)
    assert len(in_sink) == len(set(in_sink)) > 0
    assert sorted(in_sink) == sorted(in_ledger)
    assert not [cid for cid in in_sink if cid.startswith(gone + "#")]


def test_a_truncated_gzip_is_named_and_the_rest_is_kept(tmp_path: Path) -> None:
    """Ray must not gunzip for us: our parser reads what it can and names where it stopped."""
    whole = record_sources(tmp_path)["jsonl"].read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    local = run(cut, f"faiss:{tmp_path / 'local'}", "local")
    distributed = run(cut, f"faiss:{tmp_path / 'ray'}", "ray")
    assert local.docs_read > 0 and "cannot read further" in local.errors[-1].reason
    same_run(distributed, local)
