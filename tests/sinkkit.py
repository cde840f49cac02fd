"""What the sink tests share: random unit vectors, chunks with every payload field, one full run."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from embedpipe.sinks.base import Sink
from embedpipe.types import Chunk, Embedded

DIM = 16
FP_A = "a" * 64
FP_B = "b" * 64

S = TypeVar("S", bound=Sink)


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """`n` random vectors of length 1, the same for the same seed."""
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def chunks(n: int, doc: str = "doc") -> list[Chunk]:
    """`n` chunks, four per document, ids and payload derived from `doc` and their position."""
    return [
        Chunk(
            doc_id=f"{doc}{i // 4}",
            index=i % 4,
            text=f"text {doc} {i}",
            token_ids=[101, 102],
            start=10 * i,
            end=10 * i + 9,
            content_hash=f"h{i}",
            metadata={"n": i, "tag": "x"},
        )
        for i in range(n)
    ]


def embedded(n: int, seed: int = 0, doc: str = "doc", dim: int = DIM) -> Embedded:
    """`chunks(n, doc)` paired with `unit_vectors(n, dim, seed)`."""
    return Embedded(chunks(n, doc), unit_vectors(n, dim, seed))


def filled(sink: S, emb: Embedded, fp: str = FP_A) -> S:
    """`sink` after one complete run (open, write, close) that wrote `emb` under fingerprint `fp`."""
    sink.open(emb.vectors.shape[1], fp)
    sink.write(emb)
    sink.close()
    return sink
