"""`export`: a generation copied to another sink without re-encoding. Same point ids, payloads,
vectors and manifest; the destination's ledger written so incremental runs go on there; an
interrupted export resumes and a repeated one copies only what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embedpipe
from embedpipe.config import RunConfig, load_config
from embedpipe.errors import ConfigError, SinkError
from embedpipe.runs.pipeline import Pipeline
from embedpipe.sinks import open_sink
from embedpipe.types import point_id
from tests.clikit import cli

WORDS = (
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
)


def corpus(n: int, salt: str = "") -> list[dict[str, Any]]:
    """`n` short documents, one chunk each, with metadata."""
    return [
        {
            "id": f"d{i:04d}",
            "text": f"{WORDS[i % 12]} {WORDS[(i * 7) % 12]} {i} {salt}".strip(),
            "metadata": {"n": i, "even": i % 2 == 0},
        }
        for i in range(n)
    ]


def config(uri: str, **more: Any) -> RunConfig:
    return load_config(None, {"sink": {"uri": uri, "collection": "docs"}, **more})


def stored(cfg: RunConfig) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """chunk id -> (payload fields, vector) of everything the live generation holds."""
    sink = open_sink(cfg.sink)
    try:
        return {
            c.id: ((c.doc_id, c.index, c.text, c.content_hash, c.metadata), v)
            for batch in sink.points()
            for c, v in zip(batch.chunks, batch.vectors, strict=True)
        }
    finally:
        sink.abort()


@pytest.fixture
def edge(tmp_path: Path, fake_encoder: Any) -> RunConfig:
    """A qdrant-edge index of 300 documents, built with prompts in its config."""
    cfg = config(f"qdrant-edge:{tmp_path / 'edge'}", model={"query_prefix": "query: "})
    assert Pipeline(cfg, source=corpus(300), encoder=fake_encoder).run().outcome == "done"
    return cfg


@pytest.mark.parametrize("dest", ["qdrant", "parquet", "faiss", "qdrant-edge"])
def test_export_copies_ids_payloads_vectors_and_manifest(
    edge: RunConfig, tmp_path: Path, dest: str
) -> None:
    to = f"{dest}:{tmp_path / 'copy'}"
    report = embedpipe.export(edge, to=to)
    assert (report.outcome, report.chunks_embedded, report.chunks_total) == ("done", 300, 300)
    source, copied = stored(edge), stored(config(to))
    assert sorted(source) == sorted(copied)
    for chunk_id, (payload, vector) in source.items():
        assert copied[chunk_id][0] == payload
        assert float(copied[chunk_id][1] @ vector) == pytest.approx(1.0, abs=1e-6)
    sink = open_sink(config(to).sink)
    try:
        manifest = sink.manifest()
    finally:
        sink.abort()
    assert manifest["prompts"]["query"] == "query: " and manifest["dim"] == 32
    assert manifest["fingerprint"] == report.fingerprint


def test_the_qdrant_copy_has_the_same_point_ids(edge: RunConfig, tmp_path: Path) -> None:
    to = f"qdrant:{tmp_path / 'q'}"
    embedpipe.export(edge, to=to)
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        points, _ = client.scroll("docs", limit=1000, with_payload=["chunk_id"])
    finally:
        client.close()
    assert {str(p.id) for p in points} == {point_id(f"d{i:04d}#0") for i in range(300)}
    assert all(str(p.id) == point_id(str((p.payload or {})["chunk_id"])) for p in points)


def test_an_incremental_run_against_the_copy_embeds_nothing(
    edge: RunConfig, tmp_path: Path, fake_encoder: Any
) -> None:
    to = config(f"qdrant:{tmp_path / 'q'}", model={"query_prefix": "query: "})
    embedpipe.export(edge, to=to.sink.uri)
    report = Pipeline(to, source=corpus(300), encoder=fake_encoder).run()
    assert (report.outcome, report.chunks_embedded, report.chunks_skipped) == ("done", 0, 300)
    changed = Pipeline(to, source=corpus(301), encoder=fake_encoder).run()
    assert changed.chunks_embedded == 1  # the copy is a live index like any other


def test_an_interrupted_export_resumes_and_a_repeat_copies_only_the_changes(
    edge: RunConfig, tmp_path: Path, fake_encoder: Any
) -> None:
    to = f"parquet:{tmp_path / 'p'}"

    def stop_after_first_batch(report: embedpipe.RunReport) -> None:
        if report.chunks_embedded:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embedpipe.export(edge, to=to, progress=stop_after_first_batch)
    resumed = embedpipe.export(edge, to=to)
    assert 0 < resumed.chunks_skipped < 300
    assert resumed.chunks_skipped + resumed.chunks_embedded == 300
    assert sorted(stored(config(to))) == sorted(stored(edge))
    Pipeline(edge, source=corpus(290, salt="v2"), encoder=fake_encoder).run()
    again = embedpipe.export(edge, to=to)
    assert (again.chunks_embedded, again.chunks_skipped) == (290, 10)
    shrunk = Pipeline(
        config(edge.sink.uri, mode="full"), source=corpus(290, salt="v2"), encoder=fake_encoder
    ).run()
    assert shrunk.chunks_deleted == 10
    last = embedpipe.export(edge, to=to)
    assert (last.chunks_embedded, last.chunks_deleted) == (0, 10)
    assert sorted(stored(config(to))) == sorted(stored(edge))


def test_export_refuses_its_own_source_and_an_empty_one(edge: RunConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="another --to sink or --to-collection"):
        embedpipe.export(edge, to=edge.sink.uri)
    with pytest.raises(SinkError, match="nothing to export"):
        embedpipe.export(config(f"faiss:{tmp_path / 'none'}"), to=f"parquet:{tmp_path / 'x'}")
    with pytest.raises(ConfigError, match="Invalid export destination"):
        embedpipe.export(edge, to=f"parquet:{tmp_path / 'x'}", to_collection="../up")


def test_export_refuses_a_destination_overlapping_its_source_whatever_the_scheme(
    edge: RunConfig, tmp_path: Path
) -> None:
    edge_dir = tmp_path / "edge"
    (tmp_path / "alias").symlink_to(edge_dir)
    before = sorted(p.name for p in edge_dir.iterdir())
    for to in (
        f"parquet:{edge_dir}",  # the source's own folder
        f"faiss:{edge_dir / 'copy'}",  # inside it
        f"parquet:{tmp_path / 'alias'}",  # the same folder through a link
        f"qdrant-edge:{tmp_path / 'edge.state' / 'x'}",  # inside the source's ledger folder
    ):
        with pytest.raises(ConfigError, match="overlaps"):
            embedpipe.export(edge, to=to)
    with pytest.raises(ConfigError, match="overlaps the source sink"):
        embedpipe.export(edge, to=f"faiss:{tmp_path / 'f'}", to_state=str(edge_dir / "st"))
    assert sorted(p.name for p in edge_dir.iterdir()) == before  # nothing written into it
    copy = embedpipe.export(edge, to=f"qdrant-edge:{tmp_path / 'alias'}", to_collection="copy")
    assert copy.chunks_embedded == 300  # the same sink by another path: another collection


def test_export_into_its_own_folder_is_a_usage_error_on_the_command_line(
    edge: RunConfig, tmp_path: Path
) -> None:
    to = f"parquet:{tmp_path / 'edge'}"
    done = cli("export", "--sink", edge.sink.uri, "--collection", "docs", "--to", to, cwd=tmp_path)
    assert done.returncode == 2 and "overlaps the source sink" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_export_on_the_command_line(edge: RunConfig, tmp_path: Path) -> None:
    done = cli(
        "export",
        "--sink",
        edge.sink.uri,
        "--collection",
        "docs",
        "--to",
        f"faiss:{tmp_path / 'f'}",
        "--to-collection",
        "copy",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "300 chunks copied, 0 already there, 0 deleted" in " ".join(done.stderr.split())
    assert (
        len(
            stored(
                load_config(
                    None, {"sink": {"uri": f"faiss:{tmp_path / 'f'}", "collection": "copy"}}
                )
            )
        )
        == 300
    )
