"""The Qdrant sink against real qdrant-client local mode on tmp_path: random unit vectors, no model."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from embedpipe.config import QdrantOptions, SinkConfig
from embedpipe.errors import SinkError, TransientSinkError
from embedpipe.sinks import open_sink
from embedpipe.sinks.qdrant import QdrantSink, QdrantWriter
from embedpipe.types import Embedded, point_id
from tests.sinkkit import DIM, FP_A, FP_B, embedded, filled


def local(tmp_path: Path, **options: object) -> QdrantSink:
    return QdrantSink("docs", local_path=str(tmp_path / "q"), write_batch=7, **options)  # type: ignore[arg-type]


def built(tmp_path: Path, emb: Embedded, fp: str = FP_A, **options: object) -> QdrantSink:
    return filled(local(tmp_path, **options), emb, fp)


def collections(sink: QdrantSink) -> set[str]:
    names = {c.name for c in sink.connect().get_collections().collections}
    sink.close()
    return names


def test_payload_fields_are_present(tmp_path: Path) -> None:
    emb = embedded(5)
    sink = built(tmp_path, emb)
    c = emb.chunks[3]
    (point,) = sink.connect().retrieve(f"docs__{FP_A[:12]}", [point_id(c.id)], with_payload=True)
    sink.close()
    assert point.payload == {
        "doc_id": c.doc_id,
        "chunk_index": c.index,
        "text": c.text,
        "content_hash": c.content_hash,
        "start": c.start,
        "end": c.end,
        "metadata": c.metadata,
        "chunk_id": c.id,
    }


def test_a_foreign_collection_under_the_public_name_is_never_touched(tmp_path: Path) -> None:
    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection(
        "docs", vectors_config=models.VectorParams(size=768, distance=models.Distance.DOT)
    )
    client.close()
    sink = local(tmp_path)
    with pytest.raises(
        SinkError,
        match=r"'docs' at qdrant:.* not made by embedpipe: 0 points, one unnamed "
        r"vector of dimension 768, payload empty.*another --collection \(the model gives 16\)",
    ):
        sink.open(DIM, FP_A)
    assert collections(sink) == {"docs"}


def test_close_releases_the_local_folder_lock(tmp_path: Path) -> None:
    sink = local(tmp_path)
    sink.open(DIM, FP_A)
    with pytest.raises(RuntimeError, match="already accessed"):
        QdrantClient(path=str(tmp_path / "q"))
    sink.write(embedded(3))
    sink.close()
    other = QdrantClient(path=str(tmp_path / "q"))
    assert other.count("docs").count == 3
    other.close()


def test_server_url_and_api_key_reach_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_API_KEY", "secret")
    sink = open_sink(SinkConfig(uri="qdrant+https://qdrant.example.com:6333", collection="c"))
    assert isinstance(sink, QdrantSink)
    assert sink.uri == "qdrant+https://qdrant.example.com:6333"
    assert (sink.url, sink.local_path) == ("https://qdrant.example.com:6333", None)
    client = sink.connect()  # no request is made until the first call
    assert client.init_options["url"] == "https://qdrant.example.com:6333"
    assert client.init_options["api_key"] == "secret"
    assert client._client.rest_uri == "https://qdrant.example.com:6333"  # type: ignore[attr-defined]
    sink.close()


def test_plain_http_url_without_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    sink = open_sink(SinkConfig(uri="qdrant+http://localhost:6333"))
    assert isinstance(sink, QdrantSink)
    assert (sink.url, sink.api_key) == ("http://localhost:6333", None)


def test_an_unreachable_server_is_a_transient_error() -> None:
    sink = QdrantSink("docs", url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(TransientSinkError, match="did not answer"):
        sink.open(DIM, FP_A)
    sink.close()


def test_open_sink_builds_a_local_qdrant_sink_without_touching_disk(tmp_path: Path) -> None:
    sink = open_sink(SinkConfig(uri=f"qdrant:{tmp_path / 'q'}", collection="c", write_batch=64))
    assert isinstance(sink, QdrantSink)
    assert (sink.local_path, sink.collection, sink.write_batch) == (str(tmp_path / "q"), "c", 64)
    assert not (tmp_path / "q").exists()


def test_options_are_applied_at_creation_and_read_back_from_the_collection(
    tmp_path: Path,
) -> None:
    options = QdrantOptions(on_disk=True, hnsw={"m": 32, "ef_construct": 200}, quantization="int8")
    sink = built(tmp_path, embedded(5), options=options)
    client = sink.connect()
    vectors = client.get_collection(f"docs__{FP_A[:12]}").config.params.vectors
    sink.close()
    assert isinstance(vectors, models.VectorParams) and vectors.on_disk is True
    assert vectors.hnsw_config is not None
    assert (vectors.hnsw_config.m, vectors.hnsw_config.ef_construct) == (32, 200)
    assert isinstance(vectors.quantization_config, models.ScalarQuantization)
    assert vectors.quantization_config.scalar.type == models.ScalarType.INT8


def test_binary_quantization_is_stored_and_searching_still_works(tmp_path: Path) -> None:
    emb = embedded(10)
    sink = built(tmp_path, emb, options=QdrantOptions(quantization="binary"))
    sink.open(DIM, FP_A)
    assert sink.shape(f"docs__{FP_A[:12]}")["quantization"] == "binary"
    sink.abort()
    assert sink.search(emb.vectors[3], k=1)[0].chunk_id == emb.chunks[3].id
    sink.close()


def test_reuse_with_other_options_is_a_clear_error_and_data_survives(tmp_path: Path) -> None:
    emb = embedded(6)
    built(tmp_path, emb, options=QdrantOptions(hnsw={"m": 32}))
    sink = local(tmp_path, options=QdrantOptions(hnsw={"m": 8}))
    with pytest.raises(SinkError, match=r"hnsw_m=32 \(configured: 8\).*another --collection"):
        sink.open(DIM, FP_A)
    sink.abort()
    assert local(tmp_path).search(emb.vectors[1], k=1)[0].chunk_id == emb.chunks[1].id


def test_options_left_unset_are_not_checked_on_reuse(tmp_path: Path) -> None:
    built(tmp_path, embedded(4), options=QdrantOptions(hnsw={"m": 32, "ef_construct": 64}))
    sink = local(tmp_path, options=QdrantOptions(hnsw={"ef_construct": 64}))
    sink.open(DIM, FP_A)
    sink.close()


def test_sink_config_carries_qdrant_options_to_the_sink(tmp_path: Path) -> None:
    cfg = SinkConfig(uri=f"qdrant:{tmp_path}", qdrant={"quantization": "int8", "on_disk": True})
    sink = open_sink(cfg)
    assert isinstance(sink, QdrantSink)
    assert (sink.options.quantization, sink.options.on_disk) == ("int8", True)


def stored_points(client: QdrantClient, name: str, emb: Embedded) -> list[tuple[object, ...]]:
    """(id, payload, vector) of the chunks' points in `name`, in chunk order."""
    ids: list[models.ExtendedPointId] = [point_id(c.id) for c in emb.chunks]
    found = client.retrieve(name, ids, with_payload=True, with_vectors=True)
    by_id = {str(p.id): (str(p.id), p.payload, p.vector) for p in found}
    return [by_id[str(i)] for i in ids]


def test_remote_writer_lands_the_same_points_as_write(tmp_path: Path) -> None:
    emb = embedded(17)  # more than one write_batch of 7
    sink = local(tmp_path)
    sink.open(DIM, FP_A)
    sink.write(emb)
    physical = f"docs__{FP_A[:12]}"
    want = stored_points(sink.connect(), physical, emb)
    sink.close()

    writer = pickle.loads(pickle.dumps(QdrantWriter(physical, write_batch=7, location=":memory:")))
    params = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    writer.connect().create_collection(physical, vectors_config=params)
    writer.write(emb)
    assert stored_points(writer.connect(), physical, emb) == want
    writer.close()
    writer.close()


def test_remote_writer_pickles_without_its_client_after_a_write() -> None:
    writer = QdrantWriter("docs__x", location=":memory:")
    params = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    writer.connect().create_collection("docs__x", vectors_config=params)
    writer.write(embedded(3))
    copy = pickle.loads(pickle.dumps(writer))
    assert copy == writer and copy._client is None and writer._client is not None
    assert writer.connect().count("docs__x").count == 3  # the original is still connected
    writer.close()


def test_a_server_sinks_remote_writer_targets_the_run_collection_with_its_settings() -> None:
    url = "https://qdrant.example.com:6333"
    sink = QdrantSink("docs", url=url, api_key="k", timeout=3, write_batch=9)
    sink._target = f"docs__{FP_B[:12]}"  # what open() sets, without a server to open on
    writer = pickle.loads(pickle.dumps(sink.remote_writer()))
    assert writer == QdrantWriter(f"docs__{FP_B[:12]}", url, "k", 3, 9)
    client = writer.connect()  # no request is made until the first call
    assert (client.init_options["url"], client.init_options["api_key"]) == (url, "k")
    writer.close()


def test_a_remote_writer_to_an_unreachable_server_fails_transiently() -> None:
    writer = QdrantWriter("docs__x", url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(TransientSinkError, match="did not answer"):
        writer.write(embedded(2))
    writer.close()
