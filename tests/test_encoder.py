"""Encoder: reference parity with SentenceTransformer.encode (torch and OpenVINO), the settings it
reads, the model identity, CUDA out-of-memory back-off, the GPU token budget and the CPU's bounded
forward passes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import embedpipe.encoding.encoder as encoder_module
from embedpipe.config import ChunkingConfig, ModelConfig, load_config
from embedpipe.encoding.batching import batches
from embedpipe.encoding.chunking import Chunker
from embedpipe.encoding.encoder import CPU_PASS_TOKENS, MAX_GPU_BATCH_TOKENS, Encoder
from embedpipe.encoding.models import hash_model_files
from embedpipe.errors import ModelError
from embedpipe.hashing import fingerprint
from embedpipe.runs.pipeline import Pipeline
from embedpipe.sources import read_dir
from embedpipe.types import Batch, Chunk, Document
from tests.streamkit import WORDS, small_batch_config, varied_docs

needs_openvino = pytest.mark.skipif(
    find_spec("openvino") is None,
    reason="OpenVINO is not installed: pip install 'embedpipe[openvino]' (scripts/test.sh does)",
)


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


@pytest.fixture(scope="module")
def reference_vectors(reference_model, real_chunks: list[Chunk]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """SentenceTransformer.encode in fp32 of every real chunk: what parity is measured against."""
    texts = [c.text for c in real_chunks]
    return reference_model.encode(texts, batch_size=32, normalize_embeddings=True)


def _parity(encoder: Encoder, ref: np.ndarray, chunks: list[Chunk], budget: int) -> np.ndarray:
    ours: dict[str, np.ndarray] = {}
    sizes = set()
    for batch in batches(chunks, max_batch_tokens=budget, window=128, pad_id=encoder.pad_id):
        sizes.add(len(batch.chunks))
        for chunk, vector in zip(batch.chunks, encoder.encode_batch(batch), strict=True):
            ours[chunk.id] = vector
    assert len(sizes) > 2, "batches should really differ in size"
    ref = ref[: len(chunks)]
    mine = np.stack([ours[c.id] for c in chunks])
    return np.sum(mine * ref, axis=1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(ref, axis=1)


def test_fp32_vectors_match_sentence_transformers(encoder, reference_vectors, real_chunks) -> None:  # type: ignore[no-untyped-def]
    cosines = _parity(encoder, reference_vectors, real_chunks, budget=2048)
    assert len({c.token_count for c in real_chunks}) > 30, "lengths must be mixed"
    assert cosines.min() >= 0.999, f"worst cosine {cosines.min():.5f}"


def test_bf16_vectors_stay_within_parity_bar(reference_vectors, real_chunks) -> None:  # type: ignore[no-untyped-def]
    bf16 = Encoder(ModelConfig(precision="bf16", backend="torch", device="cpu"))
    # Every 4th chunk: 60 of mixed lengths (torch bf16 is emulated, 0.2x fp32, on CPUs without it).
    cosines = _parity(bf16, reference_vectors[::4], real_chunks[::4], budget=1024)
    assert len({c.token_count for c in real_chunks[::4]}) > 20, "lengths must be mixed"
    assert cosines.min() >= 0.999, f"worst cosine {cosines.min():.5f}"


@pytest.fixture(scope="module")
def openvino_encoders(encoder: Encoder) -> Iterator[dict[str, Encoder]]:
    """OpenVINO encoders asked for fp32 and bf16 (fp32 where the CPU has no bf16), on the
    session's model (OpenVINO leaves its fp32 weights as they are)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encoder_module, "_load", lambda path, device: encoder.model)
        yield {
            p: Encoder(ModelConfig(backend="openvino", precision=p, device="cpu"))
            for p in ("fp32", "bf16")
        }


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_vectors_match_sentence_transformers(  # type: ignore[no-untyped-def]
    openvino_encoders, reference_vectors, real_chunks, precision
) -> None:
    mine = openvino_encoders[precision]
    assert mine.backend == "openvino"
    if mine.precision != precision:
        pytest.skip(
            f"no native {precision} on this CPU: OpenVINO runs {mine.precision}, tested apart"
        )
    cosines = _parity(mine, reference_vectors, real_chunks, budget=2048)
    assert cosines.min() >= 0.999, f"worst cosine {cosines.min():.5f} ({mine.precision_reason})"


@needs_openvino
def test_backend_and_precision_leave_the_fingerprint_unchanged(
    encoder: Encoder, openvino_encoders: dict[str, Encoder]
) -> None:
    torch_fp = fingerprint(encoder.identity(), ChunkingConfig(), **encoder.output_options())
    for mine in openvino_encoders.values():
        assert mine.identity() == encoder.identity()
        assert fingerprint(mine.identity(), ChunkingConfig(), **mine.output_options()) == torch_fp


@needs_openvino
def test_openvino_queries_match_torch(
    encoder: Encoder, openvino_encoders: dict[str, Encoder]
) -> None:
    texts = ["Grüße aus 東京 🚀", "short", " ".join(WORDS * 40)]
    ours = openvino_encoders["fp32"].encode_texts(texts, prefix="query: ")
    ref = encoder.encode_texts(texts, prefix="query: ")
    assert ours.dtype == np.float32 and np.allclose(ours, ref, atol=1e-4)


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
    assert hash_model_files(copy) != encoder.identity().files_hash


# The packaged model's identity as it was before the encoder was split into models/precision/
# encoder: a change here changes every fingerprint, so every index would be re-embedded.
PACKAGED_IDENTITY = {
    "name": "sentence-transformers/all-MiniLM-L6-v2",
    "files_hash": "72f6f1492e75a35e18214f9d7e01e273",
    "max_seq_length": 256,
    "pooling": "Pooling{'embedding_dimension': 384, 'include_prompt': True, 'pooling_mode': 'mean'},"
    "Normalize{'module_input_name': 'sentence_embedding', 'module_output_name': 'sentence_embedding'}",
    "normalize": True,
    "prefix": "",
}


def test_packaged_model_identity_is_unchanged(encoder: Encoder) -> None:
    assert asdict(encoder.identity()) == PACKAGED_IDENTITY


def test_settings_reach_the_encoder_without_probing(encoder: Encoder) -> None:
    settings = SimpleNamespace(
        name=str(encoder.path),
        device="cpu",
        precision="fp32",
        normalize=False,
        prefix="",
        max_seq_length=64,
        threads=None,
        truncate_dim=128,
        quantization="int8",
    )
    mine = Encoder(settings)
    assert (mine.max_seq_length, mine.dim, mine.output_options()) == (
        64,
        128,
        {"truncate_dim": 128, "quantization": "int8"},
    )
    assert not np.allclose(np.linalg.norm(mine.encode_texts(["not normalised"]), axis=1), 1.0)


# -- CUDA out-of-memory back-off -------------------------------------------------------------

# The injected CUDA out-of-memory fires above this many padded tokens per forward pass.
OOM_ABOVE = {"tokens": 600}


@pytest.fixture
def flaky(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> tuple[Encoder, list[int]]:
    """An encoder (sharing the session model) whose forward raises CUDA OOM above OOM_ABOVE."""
    oomed: list[int] = []
    transformer = encoder.model[0]
    real = transformer.forward

    def forward(features: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        rows, width = features["input_ids"].shape
        if rows * width > OOM_ABOVE["tokens"]:
            oomed.append(rows * width)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(features, **kwargs)

    monkeypatch.setattr(transformer, "forward", forward)
    mine = copy.copy(encoder)  # own token_cap and counter, same model
    mine.token_cap, mine.oom_backoffs = None, 0
    return mine, oomed


TEXTS = [f"Sentence number {i} is about " + " ".join(WORDS[: 3 + i % 9]) for i in range(96)]


def test_oom_halves_the_cap_retries_and_returns_the_same_vectors(
    encoder: Encoder, flaky: tuple[Encoder, list[int]]
) -> None:
    mine, oomed = flaky
    ids, mask = mine._tokenize(TEXTS)
    assert ids.size > 1200, "the batch must be over the injected limit twice over"
    vectors = mine.encode_ids(ids, mask)

    assert mine.oom_backoffs == len(oomed) >= 2
    assert mine.token_cap is not None and mine.token_cap <= 600
    assert oomed[1] <= oomed[0] // 2, "each back-off at least halves the batch"
    with torch.inference_mode():
        ref = np.concatenate(
            [encoder._encode_piece(ids[i : i + 4], mask[i : i + 4]) for i in range(0, len(ids), 4)]
        )
    assert np.allclose(vectors, ref, atol=1e-5)


def test_oom_cap_is_remembered_for_later_batches(flaky: tuple[Encoder, list[int]]) -> None:
    mine, oomed = flaky
    ids, mask = mine._tokenize(TEXTS)
    mine.encode_ids(ids, mask)
    backoffs, cap = mine.oom_backoffs, mine.token_cap
    mine.encode_ids(*mine._tokenize(TEXTS[::-1] * 2))  # twice as large: split up front
    assert (mine.oom_backoffs, mine.token_cap, len(oomed)) == (backoffs, cap, backoffs)


def test_oom_on_a_single_chunk_names_the_fix(
    flaky: tuple[Encoder, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, _ = flaky
    monkeypatch.setitem(OOM_ABOVE, "tokens", 8)
    with pytest.raises(ModelError, match="chunk_tokens"):
        mine.encode_texts([" ".join(WORDS * 60)])


def test_pipeline_reports_oom_backoffs(
    flaky: tuple[Encoder, list[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, _ = flaky
    monkeypatch.setitem(OOM_ABOVE, "tokens", 150)  # below the padding-bounded batches' size
    cfg = small_batch_config(tmp_path)
    cfg.batching.max_batch_tokens, cfg.batching.window = 2048, 256
    report = Pipeline(cfg, source=varied_docs(12, 7), encoder=mine).run()
    assert report.outcome == "done"
    assert mine.oom_backoffs >= 1
    assert any("out of memory" in note and str(mine.token_cap) in note for note in report.notes)


def test_gpu_budget_follows_free_memory(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = copy.copy(encoder)
    gpu.device = "cuda"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 << 30, 140 << 30))
    assert gpu.batch_token_budget(16384) == MAX_GPU_BATCH_TOKENS
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (64 << 20, 140 << 30))
    assert gpu.batch_token_budget(16384) == 16384, "never below what the config asks for"
    assert encoder.batch_token_budget(16384) == 16384, "CPU: the config's budget as it is"


@pytest.fixture
def recording(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> tuple[Encoder, list[int]]:
    """An encoder (sharing the session model) that notes the padded tokens of each forward pass."""
    mine = copy.copy(encoder)
    passes: list[int] = []
    piece = mine._encode_piece

    def counted(ids: np.ndarray, mask: np.ndarray, transformer: Any = None) -> np.ndarray:
        passes.append(ids.size)
        return piece(ids, mask, transformer)

    monkeypatch.setattr(mine, "_encode_piece", counted)
    return mine, passes


# Over the cap twice over even when another test left the shared model at 64 tokens a chunk.
LONG_TEXTS = [f"Passage {i}: " + " ".join((WORDS * 40)[: 40 + i % 60]) for i in range(200)]


def test_cpu_forward_passes_stay_within_the_pass_cap_with_the_same_vectors(
    encoder: Encoder, recording: tuple[Encoder, list[int]]
) -> None:
    mine, passes = recording
    ids, mask = mine._tokenize(LONG_TEXTS)
    assert ids.size > 2 * CPU_PASS_TOKENS, "the batch must be over the cap twice over"
    vectors = mine.encode_ids(ids, mask)

    assert mine.token_cap == CPU_PASS_TOKENS
    assert len(passes) >= 3 and max(passes) <= CPU_PASS_TOKENS
    whole = copy.copy(encoder)
    whole.token_cap = None  # one forward pass of the whole batch
    assert np.allclose(vectors, whole.encode_ids(ids, mask), atol=1e-5)


def test_forward_passes_stay_bounded_however_large_the_batches(
    recording: tuple[Encoder, list[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, passes = recording
    batch_sizes: list[int] = []
    encode_batch = mine.encode_batch

    def counted(batch: Batch) -> np.ndarray:
        batch_sizes.append(batch.input_ids.size)
        return encode_batch(batch)

    monkeypatch.setattr(mine, "encode_batch", counted)
    cfg = load_config(None, {"sink": {"uri": f"faiss:{tmp_path / 'index'}"}})  # default budget
    report = Pipeline(cfg, source=varied_docs(300, 3), encoder=mine).run()

    assert report.outcome == "done" and report.chunks_embedded >= 300
    assert max(batch_sizes) > CPU_PASS_TOKENS, "the batcher's batches outgrow one pass"
    assert max(passes) <= CPU_PASS_TOKENS
