"""The Parquet sink on tmp_path, read back as it is by pyarrow, datasets and DuckDB."""

from __future__ import annotations

import json
import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedpipe.config import SinkConfig
from embedpipe.sinks import open_sink
from embedpipe.sinks.parquet import ParquetSink
from embedpipe.sinks.shards import vectors_of
from embedpipe.types import Embedded
from tests.sinkkit import DIM, FP_A, embedded, filled, unit_vectors


def built(tmp_path: Path, emb: Embedded, fp: str = FP_A, **options: object) -> ParquetSink:
    return filled(ParquetSink(tmp_path, "docs", **options), emb, fp)  # type: ignore[arg-type]


def test_pyarrow_reads_the_live_directory_with_a_fixed_size_vector_column(tmp_path: Path) -> None:
    emb = embedded(10)
    built(tmp_path, emb)
    table = pq.read_table(tmp_path / "docs")
    assert table.schema.field("vector").type == pa.list_(pa.float32(), DIM)
    assert table.column_names == [
        "chunk_id",
        "doc_id",
        "chunk_index",
        "text",
        "content_hash",
        "start",
        "end",
        "metadata",
        "vector",
    ]
    row = table.filter(pa.compute.equal(table["chunk_id"], emb.chunks[3].id)).to_pylist()[0]
    c = emb.chunks[3]
    assert (row["doc_id"], row["chunk_index"], row["text"], row["content_hash"]) == (
        c.doc_id,
        c.index,
        c.text,
        c.content_hash,
    )
    assert json.loads(row["metadata"]) == c.metadata
    assert np.allclose(row["vector"], emb.vectors[3])


def test_live_directory_holds_only_data_files_in_row_group_sized_shards(tmp_path: Path) -> None:
    built(tmp_path, embedded(25), rows_per_file=10)
    files = sorted(p.name for p in (tmp_path / "docs").iterdir())
    assert files == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    meta = [pq.ParquetFile(tmp_path / "docs" / f).metadata for f in files]
    assert [(m.num_rows, m.num_row_groups) for m in meta] == [(10, 1), (10, 1), (5, 1)]


def test_datasets_loads_the_files_offline(tmp_path: Path) -> None:
    from datasets import Dataset, load_dataset

    emb = embedded(12)
    built(tmp_path, emb)
    files = sorted(str(p) for p in (tmp_path / "docs").glob("*.parquet"))
    ds = Dataset.from_parquet(files, cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 12 and len(ds[0]["vector"]) == DIM
    loaded = load_dataset(
        "parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf")
    )
    assert sorted(loaded["chunk_id"]) == sorted(c.id for c in emb.chunks)


def test_duckdb_reads_the_files(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    built(tmp_path, embedded(9))
    pattern = str(tmp_path / "docs" / "*.parquet")
    [(count, dim)] = duckdb.sql(
        f"SELECT count(*), max(len(vector)) FROM read_parquet('{pattern}')"
    ).fetchall()
    assert (count, dim) == (9, DIM)


def test_the_published_files_hold_each_chunk_once_with_its_last_vector(tmp_path: Path) -> None:
    emb = embedded(10)
    sink = built(tmp_path, emb)
    sink.open(DIM, FP_A)
    sink.write(embedded(10, seed=1))
    sink.delete([emb.chunks[4].id, "never#0"])
    sink.close()
    table = pq.read_table(tmp_path / "docs")
    ids = table.column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids)) == 9 and emb.chunks[4].id not in ids
    row = ids.index(emb.chunks[7].id)
    assert np.allclose(vectors_of(table)[row], unit_vectors(10, seed=1)[7])


def test_a_run_is_invisible_to_readers_until_close(tmp_path: Path) -> None:
    emb = embedded(6)
    sink = built(tmp_path, emb)
    sink.open(DIM, FP_A)
    sink.write(embedded(4, seed=2, doc="more"))
    assert pq.read_table(tmp_path / "docs").num_rows == 6
    assert len(list(sink.chunk_ids())) == 10  # the run sees its own writes
    sink.close()
    assert pq.read_table(tmp_path / "docs").num_rows == 10


def test_an_emptied_dataset_still_has_its_schema(tmp_path: Path) -> None:
    emb = embedded(3)
    sink = built(tmp_path, emb)
    sink.open(DIM, FP_A)
    sink.delete([c.id for c in emb.chunks])
    sink.close()
    table = pq.read_table(tmp_path / "docs")
    assert table.num_rows == 0 and "vector" in table.column_names
    assert sink.search(emb.vectors[0], k=3) == []


def test_open_sink_builds_a_parquet_sink_from_the_uri(tmp_path: Path) -> None:
    sink = open_sink(SinkConfig(uri=f"parquet:{tmp_path}", collection="c"))
    assert isinstance(sink, ParquetSink) and (sink.directory, sink.collection) == (tmp_path, "c")


def _write_from_another_process(writer: bytes, emb: Embedded) -> None:
    remote = pickle.loads(writer)
    remote.write(emb)
    remote.close()


def test_remote_writer_in_another_process_adds_to_the_run(tmp_path: Path) -> None:
    emb = embedded(12)
    half = len(emb.chunks) // 2
    sink = ParquetSink(tmp_path, "docs")
    sink.open(DIM, FP_A)
    sink.write(Embedded(emb.chunks[:half], emb.vectors[:half]))
    writer = pickle.dumps(sink.remote_writer())
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=_write_from_another_process,
        args=(writer, Embedded(emb.chunks[half:], emb.vectors[half:])),
    )
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0
    sink.close()
    table = pq.read_table(tmp_path / "docs")
    assert sorted(table.column("chunk_id").to_pylist()) == sorted(c.id for c in emb.chunks)
    row = {c.id: i for i, c in enumerate(emb.chunks)}
    order = [row[c] for c in table.column("chunk_id").to_pylist()]
    assert np.array_equal(vectors_of(table), emb.vectors[order])
