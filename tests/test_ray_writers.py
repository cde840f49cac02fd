"""Who writes the sink on the Ray engine: no Ray needed to decide it, so this runs everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedpipe.engines.ray import remote_writer_for
from embedpipe.errors import ConfigError
from embedpipe.sinks.edge import EdgeSink
from embedpipe.sinks.faiss import FaissSink
from embedpipe.sinks.qdrant import QdrantSink, QdrantWriter
from embedpipe.sinks.shards import ShardWriter
from tests.sinkkit import DIM, FP_A


def test_a_qdrant_server_is_written_by_the_actors_unless_told_otherwise() -> None:
    server = QdrantSink("docs", url="http://qdrant.internal:6333", api_key="k")
    server._target = f"docs__{FP_A[:12]}"  # what open() sets, without a server to open on
    writer = remote_writer_for(server, "auto")
    assert isinstance(writer, QdrantWriter)
    assert (writer.collection, writer.url, writer.api_key) == (server._target, server.url, "k")
    assert remote_writer_for(server, "driver") is None


def test_sinks_in_a_local_path_are_written_by_the_driver_unless_told_otherwise(
    tmp_path: Path,
) -> None:
    sink = FaissSink(tmp_path / "f", "docs")
    sink.open(DIM, FP_A)
    try:
        assert remote_writer_for(sink, "auto") is None
        writer = remote_writer_for(sink, "actors")  # a filesystem every worker shares
        assert isinstance(writer, ShardWriter) and writer.root.is_relative_to(tmp_path)
    finally:
        sink.abort()


def test_one_process_sinks_refuse_actor_writes(tmp_path: Path) -> None:
    local = QdrantSink("docs", local_path=str(tmp_path / "q"))
    local.open(DIM, FP_A)
    try:
        assert remote_writer_for(local, "auto") is None
        with pytest.raises(ConfigError, match="one process only"):
            remote_writer_for(local, "actors")
    finally:
        local.abort()
    edge = EdgeSink(tmp_path / "e", "docs")
    with pytest.raises(ConfigError, match="takes no concurrent writers"):
        remote_writer_for(edge, "actors")
