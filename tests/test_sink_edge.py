"""The Qdrant Edge sink against the real engine (qdrant-edge-py) on tmp_path: random vectors, no model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import qdrant_edge as qe

from embedpipe.config import QdrantOptions, SinkConfig
from embedpipe.errors import SinkError
from embedpipe.sinks import open_sink
from embedpipe.sinks.edge import EdgeSink
from embedpipe.types import Embedded, point_id
from tests.sinkkit import DIM, FP_A, chunks, embedded, filled


def built(tmp_path: Path, emb: Embedded, fp: str = FP_A, **options: object) -> EdgeSink:
    return filled(EdgeSink(tmp_path, "docs", **options), emb, fp)  # type: ignore[arg-type]


def test_points_have_the_uuid_of_their_chunk_id(tmp_path: Path) -> None:
    emb = embedded(5)
    built(tmp_path, emb)
    shard = qe.EdgeShard.load(str(tmp_path / "docs" / "shard"))
    ids = [point_id(c.id) for c in emb.chunks]
    records = shard.retrieve(ids, with_payload=True, with_vector=False)
    shard.close()
    assert sorted(r.payload["chunk_id"] for r in records) == sorted(c.id for c in emb.chunks)


def test_acknowledged_writes_survive_sigkill_without_close(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from tests.sinkkit import embedded
        from embedpipe.sinks.edge import EdgeSink
        sink = EdgeSink({str(tmp_path)!r}, "docs")
        sink.open(16, {FP_A!r})
        sink.write(embedded(30))
        sink.delete([embedded(30).chunks[0].id])
        os.kill(os.getpid(), 9)  # no close, no flush
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    sink = EdgeSink(tmp_path, "docs")
    sink.open(DIM, FP_A)  # resumes the generation the killed run wrote
    assert sorted(sink.chunk_ids()) == sorted(c.id for c in chunks(30)[1:])
    sink.abort()


def test_options_are_applied_at_creation_and_recorded(tmp_path: Path) -> None:
    options = QdrantOptions(on_disk=True, hnsw={"m": 32, "ef_construct": 200}, quantization="int8")
    built(tmp_path, embedded(5), options=options)
    manifest = json.loads((tmp_path / "docs" / "manifest.json").read_text())
    assert manifest["options"] == {
        "on_disk": True,
        "hnsw_m": 32,
        "hnsw_ef_construct": 200,
        "quantization": "int8",
    }
    config = json.loads((tmp_path / "docs" / "shard" / "edge_config.json").read_text())
    text = json.dumps(config)  # Edge's own record of the shard's configuration
    assert '"m": 32' in text and '"ef_construct": 200' in text and "int8" in text.lower()


def test_reuse_with_other_options_is_a_clear_error(tmp_path: Path) -> None:
    built(tmp_path, embedded(5), options=QdrantOptions(quantization="int8"))
    sink = EdgeSink(tmp_path, "docs", options=QdrantOptions(quantization="binary"))
    with pytest.raises(SinkError, match=r"quantization='int8' \(configured: 'binary'\)"):
        sink.open(DIM, FP_A)


def test_doc_id_gets_a_payload_index(tmp_path: Path) -> None:
    built(tmp_path, embedded(8))
    shard = qe.EdgeShard.load(str(tmp_path / "docs" / "shard"))
    schema = shard.info().payload_schema
    shard.close()
    assert "doc_id" in schema and schema["doc_id"].points == 8


def test_a_query_while_a_run_writes_the_shard_reads_the_last_finished_run(tmp_path: Path) -> None:
    emb = embedded(5)
    built(tmp_path, emb)
    writer = EdgeSink(tmp_path, "docs")
    writer.open(DIM, FP_A)
    writer.write(embedded(4, seed=1, doc="new"))
    reader = EdgeSink(tmp_path, "docs")
    hits = reader.search(emb.vectors[0], k=20)
    assert sorted(h.chunk_id for h in hits) == sorted(c.id for c in emb.chunks)
    writer.close()
    reader.close_served()
    assert len(EdgeSink(tmp_path, "docs").search(emb.vectors[0], k=20)) == 9


def test_open_sink_builds_an_edge_sink_from_the_uri(tmp_path: Path) -> None:
    cfg = SinkConfig(uri=f"qdrant-edge:{tmp_path}", collection="c", ef_search=64)
    sink = open_sink(cfg)
    assert isinstance(sink, EdgeSink)
    assert (sink.directory, sink.collection, sink.ef_search) == (tmp_path, "c", 64)
    assert not (tmp_path / ".generations").exists()  # nothing on disk before open()
