"""What the streaming tests share: documents of varied length from a small vocabulary, and a
FAISS run config with small chunks and batches so a few documents span many batches."""

from __future__ import annotations

import random
from pathlib import Path

from embedpipe.config import RunConfig, load_config
from embedpipe.types import Document

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "streaming",
    "queue",
    "vector",
    "ledger",
    "sink",
    "batch",
    "token",
]


def varied_docs(n: int, seed: int) -> list[Document]:
    """Documents from a few words to a few hundred, so chunk counts and lengths vary."""
    rng = random.Random(seed)
    return [
        Document(id=f"doc-{i}", text=" ".join(rng.choices(WORDS, k=rng.choice([3, 20, 60, 200]))))
        for i in range(n)
    ]


def small_batch_config(tmp_path: Path) -> RunConfig:
    """A run into FAISS under `tmp_path`: 32-token chunks, 256-token batches, a window of 16."""
    return load_config(
        None,
        {
            "sink": {"uri": f"faiss:{tmp_path / 'index'}", "collection": "docs"},
            "chunking": {"chunk_tokens": 32, "overlap_tokens": 4},
            "batching": {"max_batch_tokens": 256, "window": 16},
        },
    )
