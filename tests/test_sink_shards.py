"""ShardStore with several writers on one folder: every shard kept, replay in sequence order."""

from __future__ import annotations

import multiprocessing
import pickle
from multiprocessing.synchronize import Event
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from embedpipe.sinks.shards import TMP_SUFFIX, ShardStore, ShardWriter, vectors_of
from embedpipe.types import Embedded
from tests.sinkkit import DIM, embedded

WRITERS = 4
SHARDS_EACH = 8


def written(writer: int, i: int) -> Embedded:
    """The i-th batch writer process `writer` appends: 2 chunks of its own."""
    return embedded(2, seed=10 * writer + i, doc=f"w{writer}s{i}-")


def _append_shards(root: str, writer: int, start: Event) -> None:
    """One writer process: wait for the others, then append SHARDS_EACH shards."""
    store = ShardStore(Path(root))
    start.wait()
    for i in range(SHARDS_EACH):
        store.append_embedded(written(writer, i), DIM)


def live_vectors(store: ShardStore) -> dict[str, np.ndarray]:
    table = store.live()
    assert table is not None
    return dict(zip(table.column("chunk_id").to_pylist(), vectors_of(table), strict=True))


def test_concurrent_processes_keep_every_shard(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_append_shards, args=(str(tmp_path), w, start)) for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * WRITERS

    store = ShardStore(tmp_path)
    files = store.files()
    assert [seq for seq, _, _ in files] == list(range(1, WRITERS * SHARDS_EACH + 1))
    assert not list(tmp_path.glob("*" + TMP_SUFFIX))
    got = live_vectors(store)
    batches = [written(w, i) for w in range(WRITERS) for i in range(SHARDS_EACH)]
    want = {c.id: v for b in batches for c, v in zip(b.chunks, b.vectors, strict=True)}
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_stale_sequence_hint_does_not_overwrite_another_instances_shard(tmp_path: Path) -> None:
    first, second = ShardStore(tmp_path), ShardStore(tmp_path)
    first.append_embedded(embedded(3, seed=0), DIM)  # first's hint: 1
    second.append_embedded(embedded(3, seed=1), DIM)  # takes 2
    first.append_embedded(embedded(3, seed=2), DIM)  # 2 is taken: must land at 3
    first.tombstone([embedded(3).chunks[0].id])  # 4
    second.append_embedded(embedded(1, seed=3, doc="late"), DIM)  # its hint 2 is stale: 5
    assert [(seq, kind) for seq, kind, _ in first.files()] == [
        (1, "shard"),
        (2, "shard"),
        (3, "shard"),
        (4, "tomb"),
        (5, "shard"),
    ]
    rows = [pq.read_table(p).num_rows for _, _, p in first.files()]
    assert rows == [3, 3, 3, 1, 1]
    got = live_vectors(first)
    last = embedded(3, seed=2)
    assert sorted(got) == sorted([c.id for c in last.chunks[1:]] + ["late0#0"])
    assert np.array_equal(got[last.chunks[1].id], last.vectors[1])  # the later write wins


def test_a_write_after_a_tombstone_from_another_writer_brings_the_chunk_back(
    tmp_path: Path,
) -> None:
    driver, worker = ShardStore(tmp_path), ShardStore(tmp_path)
    emb = embedded(2)
    driver.append_embedded(emb, DIM)
    worker.append_embedded(embedded(1, doc="other"), DIM)
    driver.tombstone([emb.chunks[0].id])
    worker.append_embedded(Embedded(emb.chunks[:1], emb.vectors[:1]), DIM)
    assert sorted(live_vectors(driver)) == sorted([c.id for c in emb.chunks] + ["other0#0"])


def test_remove_temp_drops_crash_leftovers_of_both_namings(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    store.append_embedded(embedded(2), DIM)
    (tmp_path / ("shard-00000002.parquet" + TMP_SUFFIX)).write_bytes(b"half")
    (tmp_path / (".shard-123-abcdef" + TMP_SUFFIX)).write_bytes(b"half")
    store.remove_temp()
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00000001.parquet"]


def test_shard_writer_pickles_without_its_store_and_appends(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path / "store", DIM)
    writer.write(embedded(2, doc="a"))
    copy = pickle.loads(pickle.dumps(writer))
    assert copy == writer and copy._store is None
    copy.write(embedded(2, doc="b"))
    copy.close()
    copy.close()
    assert sorted(live_vectors(ShardStore(tmp_path / "store"))) == [
        "a0#0",
        "a0#1",
        "b0#0",
        "b0#1",
    ]
