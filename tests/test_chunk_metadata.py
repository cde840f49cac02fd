"""Issue 25 item 6: every hit says where its document came from (`source`) and where in it the
chunk sits (`start`/`end`), and a document whose metadata uses a key embedpipe sets is refused,
naming the record and the key, never overwritten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedpipe.config import RunConfig, load_config
from embedpipe.runs.pipeline import Pipeline
from embedpipe.sinks import open_sink
from embedpipe.sinks.base import Hit
from embedpipe.types import Document
from tests.fakes import FakeEncoder

TEXTS = {
    "a.md": "# Trains\n\nTrains run on rails between stations.\n\nTimetables say when.",
    "sub/b.txt": "Boats float on water.\n\nSails catch the wind and move them along.",
}


def config(tmp_path: Path, kind: str, source: str | None = None) -> RunConfig:
    data: dict[str, Any] = {
        "sink": {"uri": f"{kind}:{tmp_path / kind}", "collection": "docs"},
        "chunking": {"chunk_tokens": 12, "overlap_tokens": 0},
    }
    if source is not None:
        data["source"] = {"uri": source}
    return load_config(None, data)


def every_hit(cfg: RunConfig, filter: dict[str, Any] | None = None) -> list[Hit]:
    sink = open_sink(cfg.sink)
    try:
        return sink.search(np.ones(32, np.float32) / np.sqrt(32), k=100, filter=filter)
    finally:
        sink.abort()


@pytest.mark.parametrize("kind", ["faiss", "parquet", "qdrant-edge"])
def test_hits_carry_the_file_they_came_from_and_their_offsets_in_it(
    kind: str, fake_encoder: FakeEncoder, tmp_path: Path, make_corpus: Any
) -> None:
    root = make_corpus(TEXTS)
    cfg = config(tmp_path, kind, str(root))
    assert Pipeline(cfg, encoder=fake_encoder).run().outcome == "done"
    hits = every_hit(cfg)
    assert len(hits) > len(TEXTS)  # several chunks a file
    for hit in hits:
        assert hit.metadata["source"] == f"{root}/{hit.doc_id}"
        assert hit.metadata["path"] == hit.doc_id
        text = TEXTS[hit.doc_id]
        assert 0 <= hit.start < hit.end <= len(text)
        assert text[hit.start : hit.end].split() == hit.text.split()
    only_b = every_hit(cfg, {"metadata.source": f"{root}/sub/b.txt"})
    assert {h.doc_id for h in only_b} == {"sub/b.txt"}


@pytest.mark.parametrize("key", ["doc_id", "chunk_index", "chunk_id", "text", "start", "end"])
def test_a_library_document_with_a_reserved_key_is_refused_naming_it(
    key: str, fake_encoder: FakeEncoder, tmp_path: Path
) -> None:
    docs = [
        Document("ok", "Trains run on rails.", {"team": "ops", "source": "notes/ok.md"}),
        Document("bad", "Boats float on water.", {key: "mine"}),
    ]
    cfg = config(tmp_path, "faiss")
    report = Pipeline(cfg, source=docs, encoder=fake_encoder).run()
    [error] = report.errors
    assert error.record == "#2 (id 'bad')"
    assert f"metadata key '{key}' is reserved" in error.reason
    hits = every_hit(cfg)
    assert {h.doc_id for h in hits} == {"ok"}
    assert hits[0].metadata == {"team": "ops", "source": "notes/ok.md"}  # the caller's source
