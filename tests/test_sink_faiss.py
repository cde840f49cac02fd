"""The FAISS sink against real FAISS and Parquet on tmp_path: random unit vectors, no model."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from embedpipe.config import SinkConfig
from embedpipe.errors import SinkError
from embedpipe.sinks import open_sink, rebuild_sink
from embedpipe.sinks.faiss import FaissSink
from embedpipe.types import Embedded, int_id
from tests.sinkkit import DIM, FP_A, FP_B, chunks, embedded, filled, unit_vectors


def built(tmp_path: Path, emb: Embedded, fp: str = FP_A, **options: object) -> FaissSink:
    return filled(FaissSink(tmp_path, "docs", **options), emb, fp)  # type: ignore[arg-type]


def test_the_store_carries_the_payload(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    emb = embedded(8)
    built(tmp_path, emb)
    c = emb.chunks[5]
    shard = next((tmp_path / "docs" / "store").glob("shard-*.parquet"))
    row = pq.read_table(shard).slice(5, 1).to_pylist()[0]
    assert (row["content_hash"], row["start"], row["end"]) == (c.content_hash, c.start, c.end)
    assert json.loads(row["metadata"]) == c.metadata


def test_writes_in_place_reach_queries_and_the_manifest_only_at_close(tmp_path: Path) -> None:
    sink = built(tmp_path, embedded(10, doc="first"))
    gen = (tmp_path / "docs").resolve()
    more = embedded(5, seed=9, doc="more")
    sink.open(DIM, FP_A)
    sink.write(more)
    assert sink.search(more.vectors[0], k=1)[0].chunk_id.startswith("first")  # queries: old index
    sink.close()
    assert (tmp_path / "docs").resolve() == gen
    assert sink.search(more.vectors[0], k=1)[0].chunk_id == more.chunks[0].id
    assert json.loads((gen / "manifest.json").read_text())["count"] == 15


def test_public_name_that_is_not_an_embedpipe_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "mine.txt").write_text("keep me")
    with pytest.raises(SinkError, match="not an embedpipe FAISS index"):
        FaissSink(tmp_path, "docs").open(DIM, FP_A)
    assert (tmp_path / "docs" / "mine.txt").read_text() == "keep me"


def test_ivf_trains_and_recall_matches_flat(tmp_path: Path) -> None:
    # Clustered data, as real embeddings are; queries are perturbed corpus points.
    rng = np.random.default_rng(1)
    centers = unit_vectors(40, 32, seed=2)
    points = centers[rng.integers(0, 40, 2000)] + 0.15 * rng.standard_normal((2000, 32))
    points = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    emb = Embedded(chunks(2000), points)
    flat = built(tmp_path / "flat", emb)
    ivf = built(tmp_path / "ivf", emb, index_factory="IVF16,Flat")
    queries = points[rng.integers(0, 2000, 50)] + 0.05 * rng.standard_normal((50, 32)).astype(
        np.float32
    )
    recall = np.mean(
        [
            len({h.chunk_id for h in ivf.search(q, 10)} & {h.chunk_id for h in flat.search(q, 10)})
            / 10
            for q in queries
        ]
    )
    assert recall >= 0.9
    assert (
        "IVF"
        in type(
            faiss.downcast_index(faiss.read_index(str(tmp_path / "ivf/docs/index.faiss")).index)
        ).__name__
    )


def test_too_few_points_for_ivf_lists_is_a_clear_error(tmp_path: Path) -> None:
    sink = FaissSink(tmp_path, "docs", index_factory="IVF64,Flat")
    sink.open(DIM, FP_A)
    sink.write(embedded(20))
    with pytest.raises(SinkError, match="use 'Flat' or fewer lists"):
        sink.close()


def test_a_failed_close_leaves_the_live_index_serving(tmp_path: Path) -> None:
    old = embedded(10)
    built(tmp_path, old)
    sink = FaissSink(tmp_path, "docs", index_factory="IVF64,Flat")
    sink.open(DIM, FP_B)
    sink.write(embedded(20, seed=4, doc="new"))
    with pytest.raises(SinkError):
        sink.close()
    sink.abort()
    assert sink.search(old.vectors[0], k=1)[0].chunk_id == old.chunks[0].id
    assert (tmp_path / "docs").resolve().name == f"docs__{FP_A[:16]}"  # still the live one


def test_rebuild_gives_the_same_results_without_reencoding(tmp_path: Path) -> None:
    emb = embedded(200)
    sink = built(tmp_path, emb)
    query = unit_vectors(1, seed=42)[0]
    before = sink.search(query, k=10)
    (tmp_path / "docs" / "index.faiss").unlink()
    sink.rebuild()
    assert sink.search(query, k=10) == before


def test_rebuild_can_switch_the_index_factory(tmp_path: Path) -> None:
    emb = embedded(500)
    built(tmp_path, emb)
    ivf = FaissSink(tmp_path, "docs", index_factory="IVF4,Flat", nprobe=4)
    ivf.rebuild()
    assert ivf.search(emb.vectors[9], k=1)[0].chunk_id == emb.chunks[9].id
    manifest = json.loads((tmp_path / "docs" / "manifest.json").read_text())
    assert manifest["index_factory"] == "IVF4,Flat"


def test_index_carries_the_64_bit_int_id_of_each_chunk(tmp_path: Path) -> None:
    emb = embedded(12)
    built(tmp_path, emb)
    index = faiss.read_index(str(tmp_path / "docs" / "index.faiss"))
    ids = faiss.vector_to_array(faiss.downcast_index(index).id_map)
    assert set(ids.tolist()) == {int_id(c.id) for c in emb.chunks}
    assert ids.dtype == np.int64 and ids.max() > 2**32


def test_manifest_records_fingerprint_dim_factory_and_count(tmp_path: Path) -> None:
    built(tmp_path, embedded(7))
    manifest = json.loads((tmp_path / "docs" / "manifest.json").read_text())
    assert manifest["fingerprint"] == FP_A and manifest["dim"] == DIM
    assert (manifest["index_factory"], manifest["count"]) == ("Flat", 7)
    assert (tmp_path / "docs").is_symlink() and manifest["created"]


def test_close_compacts_the_store_into_one_shard(tmp_path: Path) -> None:
    sink = FaissSink(tmp_path, "docs")
    sink.open(DIM, FP_A)
    for seed in range(3):
        sink.write(embedded(5, seed=seed, doc=f"d{seed}"))
    sink.delete([chunks(5, "d0")[0].id])
    sink.close()
    store = sorted(p.name for p in (tmp_path / "docs" / "store").iterdir())
    assert len(store) == 1 and store[0].startswith("shard-")
    assert len(list(sink.chunk_ids())) == 14


def test_open_sink_builds_a_faiss_sink_from_the_uri(tmp_path: Path) -> None:
    sink = open_sink(SinkConfig(uri=f"faiss:{tmp_path}", collection="c", index_factory="IVF4,Flat"))
    assert isinstance(sink, FaissSink)
    assert (sink.directory, sink.collection, sink.index_factory) == (tmp_path, "c", "IVF4,Flat")
    assert not (tmp_path / ".generations").exists()  # nothing on disk before open()


def clustered(n: int, dim: int = 32, seed: int = 1) -> np.ndarray:
    """Points around 40 centres, as real embeddings cluster by topic."""
    rng = np.random.default_rng(seed)
    centers = unit_vectors(40, dim, seed=seed + 1)
    points = centers[rng.integers(0, 40, n)] + 0.15 * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


# (index_factory, query-time options, recall@10 bar vs Flat). PQ16x4 keeps 8 bytes of each 128:
# it trades recall for memory, so its bar is lower (measured ~0.55; IVF ~0.95, HNSW ~0.99).
INDEX_TYPES = [
    ("IVF16,Flat", {"nprobe": 12}, 0.9),
    ("HNSW32", {"ef_search": 64}, 0.95),
    ("IVF16,PQ16x4", {"nprobe": 8}, 0.45),
]


@pytest.mark.parametrize(("factory", "query_options", "bar"), INDEX_TYPES)
def test_index_type_recall_at_10_against_flat(
    tmp_path: Path, factory: str, query_options: dict[str, int], bar: float
) -> None:
    points = clustered(2000)
    emb = Embedded(chunks(2000), points)
    flat = built(tmp_path / "flat", emb)
    index = built(tmp_path / "ann", emb, index_factory=factory, **query_options)
    queries = clustered(60, seed=7)
    recall = np.mean(
        [
            len(
                {h.chunk_id for h in index.search(q, 10)} & {h.chunk_id for h in flat.search(q, 10)}
            )
            / 10
            for q in queries
        ]
    )
    assert recall >= bar, f"{factory}: recall@10 {recall:.3f} < {bar}"


def test_hnsw_deletes_go_through_a_rebuild_from_the_store(tmp_path: Path) -> None:
    emb = embedded(60)
    sink = built(tmp_path, emb, index_factory="HNSW16")
    gone = [c.id for c in emb.chunks[:10]]
    sink.open(DIM, FP_A)
    sink.delete(gone)
    sink.close()
    assert faiss.read_index(str(tmp_path / "docs" / "index.faiss")).ntotal == 50
    assert all(h.chunk_id not in gone for h in sink.search(emb.vectors[0], k=20))


def test_incremental_close_updates_the_index_without_retraining(tmp_path: Path) -> None:
    points = clustered(1000, dim=DIM)
    sink = built(tmp_path, Embedded(chunks(1000), points), index_factory="IVF8,Flat", nprobe=8)

    def centroids() -> np.ndarray:
        index = faiss.read_index(str(tmp_path / "docs" / "index.faiss"))
        ivf = faiss.extract_index_ivf(index)
        return ivf.quantizer.reconstruct_n(0, ivf.nlist)

    before = centroids()
    extra = embedded(5, seed=3, doc="extra")
    sink.open(DIM, FP_A)
    sink.write(extra)
    sink.delete([chunks(1000)[0].id])
    sink.close()
    assert np.array_equal(centroids(), before)  # same training, ids removed and added
    assert faiss.read_index(str(tmp_path / "docs" / "index.faiss")).ntotal == 1004
    assert sink.search(extra.vectors[2], k=1)[0].chunk_id == extra.chunks[2].id
    assert all(h.chunk_id != chunks(1000)[0].id for h in sink.search(points[0], k=5))


def test_training_sample_is_sized_from_the_centroids() -> None:
    from embedpipe.sinks.faiss import centroids, training_size

    ivf_pq = faiss.index_factory(32, "IVF64,PQ16x4", faiss.METRIC_INNER_PRODUCT)
    pq8 = faiss.index_factory(32, "PQ8", faiss.METRIC_INNER_PRODUCT)
    assert (centroids(faiss.IndexIDMap2(ivf_pq)), centroids(pq8)) == (64, 256)
    assert training_size(1_000_000, 64) == 64 * 256 and training_size(1000, 64) == 1000


def test_query_time_nprobe_and_ef_search_reach_the_index(tmp_path: Path) -> None:
    emb = embedded(300)
    ivf = built(tmp_path / "ivf", emb, index_factory="IVF4,Flat", nprobe=3)
    hnsw = built(tmp_path / "hnsw", emb, index_factory="HNSW16", ef_search=77)
    ivf.search(emb.vectors[0], k=1)
    hnsw.search(emb.vectors[0], k=1)
    assert faiss.extract_index_ivf(ivf._loaded().index).nprobe == 3
    inner = faiss.downcast_index(faiss.downcast_index(hnsw._loaded().index).index)
    assert inner.hnsw.efSearch == 77


def test_a_rebuild_to_another_type_sticks_across_later_runs(tmp_path: Path) -> None:
    emb = embedded(400)
    built(tmp_path, emb)
    rebuild_sink(SinkConfig(uri=f"faiss:{tmp_path}", collection="docs", index_factory="IVF4,Flat"))
    sink = FaissSink(tmp_path, "docs")  # a later run that names no index_factory
    sink.open(DIM, FP_A)
    sink.write(embedded(3, seed=8, doc="late"))
    sink.close()
    manifest = json.loads((tmp_path / "docs" / "manifest.json").read_text())
    assert (manifest["index_factory"], manifest["count"]) == ("IVF4,Flat", 403)


def test_rebuild_command_retrains_from_the_store(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from embedpipe.cli import app

    built(tmp_path, embedded(300))
    args = [
        "rebuild",
        "--sink",
        f"faiss:{tmp_path}",
        "--collection",
        "docs",
        "--index-factory",
        "HNSW16",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    index = faiss.read_index(str(tmp_path / "docs" / "index.faiss"))
    assert "HNSW" in type(faiss.downcast_index(faiss.downcast_index(index).index)).__name__


def _other_threads_cpu() -> float:
    """CPU seconds every thread of this process but the calling one has used so far."""
    me, tick, total = threading.get_native_id(), os.sysconf("SC_CLK_TCK"), 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != me:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads threads from /proc")
def test_single_queries_leave_no_openmp_thread_spinning(tmp_path: Path) -> None:
    """A team woken for one query spin-waits after it on the cores the next encode needs (0.8 s
    of other threads' CPU over these 200 queries before the fix); the caller's setting stays."""
    sink = filled(FaissSink(tmp_path, "docs"), embedded(2000))
    query = unit_vectors(1, seed=3)[0]
    some = {"doc_id": [f"doc{i}" for i in range(100)]}  # a filter: the id-selector search
    threads = faiss.omp_get_max_threads()
    assert len(sink.search(query, 5, some)) == 5
    before = _other_threads_cpu()
    for i in range(200):
        sink.search(query, 5, some if i % 2 else None)
        time.sleep(0.002)  # the pause between a user's queries, when a team would spin
    assert _other_threads_cpu() - before < 0.1
    assert faiss.omp_get_max_threads() == threads
    sink.abort()
