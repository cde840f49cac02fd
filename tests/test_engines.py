"""Throughput machinery, tested for correctness (not speed): exactly-once streaming under any
thread timing, CUDA out-of-memory back-off, bf16 parity and the automatic precision choice."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import embedpipe.encoder as encoder_module
from embedpipe.chunking import Chunker
from embedpipe.config import ModelConfig, RunConfig, load_config
from embedpipe.encoder import (
    MAX_GPU_BATCH_TOKENS,
    Calibration,
    Encoder,
    choose_cpu_precision,
    cpu_has_native_bf16,
)
from embedpipe.errors import ModelError
from embedpipe.ledger import Ledger, Target, state_dir_for, target_key
from embedpipe.pipeline import Pipeline
from embedpipe.sinks import open_sink
from embedpipe.sinks.base import Sink
from embedpipe.types import Document, Embedded

# The injected CUDA out-of-memory fires above this many padded tokens per forward pass.
OOM_ABOVE = {"tokens": 600}
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


def _docs(n: int, seed: int) -> list[Document]:
    """Documents from a few words to a few hundred, so chunk counts and lengths vary."""
    rng = random.Random(seed)
    return [
        Document(id=f"doc-{i}", text=" ".join(rng.choices(WORDS, k=rng.choice([3, 20, 60, 200]))))
        for i in range(n)
    ]


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


def _config(tmp_path: Path) -> RunConfig:
    return load_config(
        None,
        {
            "sink": {"uri": f"faiss:{tmp_path / 'index'}", "collection": "docs"},
            "chunking": {"chunk_tokens": 32, "overlap_tokens": 4},
            "batching": {"max_batch_tokens": 256, "window": 16},
        },
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streaming_emits_every_chunk_exactly_once_under_any_timing(
    seed: int, encoder: Encoder, tmp_path: Path
) -> None:
    docs = _docs(16, seed)
    cfg = _config(tmp_path)
    chunker = Chunker(encoder.tokenizer, chunk_tokens=32, overlap_tokens=4,
                      max_seq_length=encoder.max_seq_length)  # fmt: skip
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


# -- CUDA out-of-memory back-off -------------------------------------------------------------


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
        ref = np.concatenate([encoder._encode_piece(ids[i : i + 4], mask[i : i + 4])
                              for i in range(0, len(ids), 4)])  # fmt: skip
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
    cfg = _config(tmp_path)
    cfg.batching.max_batch_tokens, cfg.batching.window = 2048, 256
    report = Pipeline(cfg, source=_docs(12, 7), encoder=mine).run()
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


# -- precision ----------------------------------------------------------------------------------


def test_bf16_matches_fp32_on_the_calibration_sample(encoder: Encoder) -> None:
    cal = encoder.calibrate(repeats=1)
    assert cal.min_cosine >= 0.999
    assert encoder.model[0].auto_model.dtype == torch.float32, "calibration leaves fp32 weights"


def test_native_bf16_is_read_from_cpu_flags() -> None:
    assert cpu_has_native_bf16("flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_native_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16("flags\t\t: fpu sse avx2 avx512f avx512bw\n")


def _never() -> Calibration:
    raise AssertionError("calibration must not run without native bf16")


@pytest.mark.parametrize(
    ("native", "calibration", "expected", "why"),
    [
        (False, None, "fp32", "no native bf16"),
        (True, Calibration(0.998, 1.0, 0.5), "fp32", "parity bar"),
        (True, Calibration(0.9999, 1.0, 1.1), "fp32", "not faster"),
        (True, Calibration(0.9999, 1.0, 0.6), "bf16", "native bf16"),
    ],
)
def test_auto_precision_on_cpu(
    native: bool, calibration: Calibration | None, expected: str, why: str
) -> None:
    precision, reason = choose_cpu_precision(
        native, (lambda: calibration) if calibration else _never
    )  # type: ignore[arg-type,return-value]
    assert precision == expected
    assert why in reason


def test_encoder_falls_back_to_fp32_when_calibration_fails(
    encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "_load", lambda path, device: encoder.model)
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(Encoder, "calibrate", lambda self: Calibration(0.95, 1.0, 0.5))
    auto = Encoder(ModelConfig(device="cpu", precision="auto"))
    assert auto.precision == "fp32"
    assert "parity bar" in auto.precision_reason
    assert encoder.model[0].auto_model.dtype == torch.float32


def test_explicit_precision_is_honoured_without_calibration(
    encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "_load", lambda path, device: encoder.model)
    monkeypatch.setattr(Encoder, "calibrate", lambda self: _never())
    explicit = Encoder(ModelConfig(device="cpu", precision="fp32"))
    assert (explicit.precision, explicit.precision_reason) == ("fp32", "fp32: asked for")
