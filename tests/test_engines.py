"""The local engine (embedpipe/engines/local.py), tested for correctness, not speed: every chunk
reaches the sink and the ledger exactly once, whatever the timing of its threads."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embedpipe.encoding.chunking import Chunker
from embedpipe.encoding.encoder import Encoder
from embedpipe.runs.pipeline import Pipeline
from embedpipe.sinks import open_sink
from embedpipe.sinks.base import Sink
from embedpipe.state.ledger import Ledger, Target, state_dir_for, target_key
from embedpipe.types import Document, Embedded
from tests.streamkit import small_batch_config, varied_docs


class _JitteryDocs:
    """A source that sleeps at random between documents, so the planner runs at odd times."""

    def __init__(self, docs: list[Document], rng: random.Random) -> None:
        self.docs, self.rng = docs, rng

    def __iter__(self) -> Iterator[Document]:
        for doc in self.docs:
            time.sleep(self.rng.random() * 0.004)
            yield doc


class _SlowSink:
    """A real sink whose writes take random time, recording every chunk id it was given."""

    def __init__(self, inner: Sink, rng: random.Random) -> None:
        self.inner, self.rng = inner, rng
        self.uri = inner.uri
        self.written: list[str] = []

    def write(self, embedded: Embedded) -> None:
        time.sleep(self.rng.random() * 0.02)
        self.inner.write(embedded)
        self.written.extend(c.id for c in embedded.chunks)

    def __getattr__(self, name: str) -> Any:  # open, delete, close, abort, chunk_ids, search
        return getattr(self.inner, name)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streaming_emits_every_chunk_exactly_once_under_any_timing(
    seed: int, encoder: Encoder, tmp_path: Path
) -> None:
    docs = varied_docs(16, seed)
    cfg = small_batch_config(tmp_path)
    chunker = Chunker(
        encoder.tokenizer, chunk_tokens=32, overlap_tokens=4, max_seq_length=encoder.max_seq_length
    )
    expected = sorted(c.id for c in chunker.chunk_many(docs))
    rng = random.Random(seed)
    sink = _SlowSink(open_sink(cfg.sink), rng)
    report = Pipeline(cfg, source=_JitteryDocs(docs, rng), sink=sink, encoder=encoder).run()

    assert report.outcome == "done"
    assert report.batches > 3, "the corpus must span many batches"
    assert sorted(sink.written) == expected  # sorted equality: no duplicates, none missing
    ledger = Ledger(state_dir_for(sink.uri, cfg.state) / "ledger.sqlite")
    try:
        target = Target(target_key(sink.uri, "docs"), report.fingerprint)
        assert sorted(ledger.chunk_ids(target)) == expected
    finally:
        ledger.close()
    reopened = open_sink(cfg.sink)
    try:
        assert sorted(reopened.chunk_ids()) == expected
    finally:
        reopened.abort()
