"""Encoder: reference parity with SentenceTransformer.encode, precision and model identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedpipe.batching import batches
from embedpipe.chunking import Chunker
from embedpipe.config import ModelConfig
from embedpipe.encoder import Encoder, resolve_model_path, resolve_precision
from embedpipe.errors import ModelError
from embedpipe.sources import read_dir
from embedpipe.types import Chunk, Document


@pytest.fixture(scope="module")
def real_chunks(encoder: Encoder, stdlib_docs: Path) -> list[Chunk]:
    """>= 200 chunks of mixed lengths from real documentation (small chunk size => many short ones too)."""
    chunker = Chunker(
        encoder.tokenizer,
        chunk_tokens=128,
        overlap_tokens=16,
        max_seq_length=encoder.max_seq_length,
    )
    docs = [d for d in read_dir(stdlib_docs, extensions=[".md"]) if isinstance(d, Document)]
    chunks = list(chunker.chunk_many(docs))
    # Keep a spread of lengths: every long chunk plus the short tails and small docs.
    assert len(chunks) >= 200
    return chunks[:240]


def _parity(encoder: Encoder, reference, chunks: list[Chunk], budget: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    ours: dict[str, np.ndarray] = {}
    sizes = set()
    for batch in batches(chunks, max_batch_tokens=budget, window=128, pad_id=encoder.pad_id):
        sizes.add(len(batch.chunks))
        for chunk, vector in zip(batch.chunks, encoder.encode_batch(batch), strict=True):
            ours[chunk.id] = vector
    assert len(sizes) > 2, "batches should really differ in size"
    ref = reference.encode([c.text for c in chunks], batch_size=32, normalize_embeddings=True)
    mine = np.stack([ours[c.id] for c in chunks])
    return np.sum(mine * ref, axis=1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(ref, axis=1)


def test_fp32_vectors_match_sentence_transformers(encoder, reference_model, real_chunks) -> None:  # type: ignore[no-untyped-def]
    cosines = _parity(encoder, reference_model, real_chunks, budget=2048)
    assert len({c.token_count for c in real_chunks}) > 30, "lengths must be mixed"
    assert cosines.min() >= 0.999, f"worst cosine {cosines.min():.5f}"


def test_bf16_vectors_stay_within_parity_bar(reference_model, real_chunks) -> None:  # type: ignore[no-untyped-def]
    bf16 = Encoder(ModelConfig(precision="bf16", device="cpu"))
    cosines = _parity(bf16, reference_model, real_chunks[:200], budget=4096)
    assert cosines.min() >= 0.999, f"worst cosine {cosines.min():.5f}"


def test_vectors_are_unit_length_float32(encoder: Encoder) -> None:
    vectors = encoder.encode_texts(["Grüße aus 東京 🚀", "short"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, encoder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_identity_is_stable_and_path_independent(encoder: Encoder, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model-copy"
    shutil.copytree(encoder.path, copy)
    other = Encoder(ModelConfig(name=str(copy), device="cpu"))
    assert other.identity().files_hash == encoder.identity().files_hash
    (copy / "config.json").write_text(
        (copy / "config.json").read_text().replace("}", ', "x": 1}', 1)
    )
    from embedpipe.encoder import hash_model_files

    assert hash_model_files(copy) != encoder.identity().files_hash


def test_auto_precision_is_fp32_on_cpu() -> None:
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_missing_local_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="--model"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="never downloads"):
        resolve_model_path("someone/not-cached-model")
