#!/usr/bin/env python3
"""Encoder only, by backend and precision: tokens/s and cosine to torch fp32 on the same batches.

    .venv/bin/python scripts/bench_backends.py                  # torch fp32/bf16, OpenVINO fp32/bf16
    .venv/bin/python scripts/bench_backends.py --int8           # + OpenVINO int8 (quantizes once)

Texts: docstring records of the standard library (scripts/corpus.py), those in int8's calibration
sample left out, `--texts` of them spread over the lengths (8-256 tokens), sorted by length,
tokenised once and padded in batches of `--batch`. Every encoder is timed on the same padded
batches, best of `--repeats` interleaved passes (so outside load hits all alike); the model load,
export and quantization are reported apart. bench.py includes this table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus
import numpy as np

SLOW_S = 20.0  # an encoder whose pass takes longer is timed once, not `repeats` times
RUNS = [("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16")]


def sample_texts(tokenizer: Any, count: int) -> list[str]:
    """`count` records of 8-256 tokens spread evenly over their lengths, none used by int8."""
    from embedpipe.encoding.int8 import CALIBRATION_SIZE, calibration_sample

    seen = set(calibration_sample(2 * CALIBRATION_SIZE))
    texts = [" ".join(r["text"].split()) for r in corpus.docstring_records()]
    texts = sorted({t for t in texts if t not in seen})
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    usable = sorted((n, t) for n, t in zip(lengths, texts, strict=True) if 8 <= n <= 256)
    # evenly spaced over the sorted lengths (a stride of len // count took the shortest `count`
    # whenever fewer than 2 x count texts were usable)
    picks = np.unique(np.linspace(0, len(usable) - 1, min(count, len(usable))).round().astype(int))
    return [usable[i][1] for i in picks]


def padded(encoder: Any, texts: list[str], batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [encoder._tokenize(texts[i : i + batch]) for i in range(0, len(texts), batch)]


def encode(encoder: Any, batches: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return np.concatenate([encoder.encode_ids(ids, mask) for ids, mask in batches])


def measure(texts: int, batch: int, repeats: int, int8: bool) -> list[str]:
    """The table as Markdown lines."""
    import torch

    from embedpipe.config import ModelConfig
    from embedpipe.encoding.encoder import Encoder

    runs = RUNS + ([("openvino", "int8")] if int8 else [])
    encoders: dict[str, Any] = {}
    startup: dict[str, float] = {}
    for backend, precision in runs:
        start = time.perf_counter()
        # int8_min_cosine=0: measure int8 even where a run would refuse it (its cosines are shown)
        cfg = ModelConfig(device="cpu", backend=backend, precision=precision, int8_min_cosine=0)
        enc = Encoder(cfg)
        startup[f"{backend} {precision}"] = time.perf_counter() - start
        encoders[f"{backend} {precision}"] = enc
    ref_encoder = encoders["torch fp32"]
    sample = sample_texts(ref_encoder.tokenizer, texts)
    batches = padded(ref_encoder, sample, batch)
    tokens = int(sum(mask.sum() for _, mask in batches))
    reference = encode(ref_encoder, batches)
    best = dict.fromkeys(encoders, float("inf"))
    passes = dict.fromkeys(encoders, 0)
    vectors: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, enc in encoders.items():
            if passes[name] and best[name] > SLOW_S:  # e.g. emulated bf16: one pass is enough
                continue
            start = time.perf_counter()
            vectors[name] = encode(enc, batches)
            best[name] = min(best[name], time.perf_counter() - start)
            passes[name] += 1
    fp32, bf16 = tokens / best["torch fp32"], tokens / best["torch bf16"]
    lines = [
        f"{len(sample)} texts, {tokens:,} tokens (8-256 each), batches of {batch}, best of "
        f"{repeats} interleaved passes (one where a pass took over {SLOW_S:.0f} s: "
        f"{', '.join(n for n, k in passes.items() if k < repeats) or 'none'}); "
        f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}.",
        "",
        "| encoder | runs as | tokens/s | vs torch fp32 | vs torch bf16 | min cosine | mean cosine "
        "| start-up s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, enc in encoders.items():
        cos = np.sum(vectors[name] * reference, axis=1) / (
            np.linalg.norm(vectors[name], axis=1) * np.linalg.norm(reference, axis=1)
        )
        rate = tokens / best[name]
        lines.append(
            f"| {name} | {enc.backend} {enc.precision} | {rate:,.0f} | {rate / fp32:.2f}x | "
            f"{rate / bf16:.2f}x | "
            f"{cos.min():.5f} | {cos.mean():.5f} | {startup[name]:.1f} |"
        )
    lines += [
        "",
        "Reasons: " + "; ".join(f"**{n}**: {e.precision_reason}" for n, e in encoders.items()),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also OpenVINO int8 (NNCF)")
    args = parser.parse_args()
    print("\n".join(measure(args.texts, args.batch, args.repeats, args.int8)))


if __name__ == "__main__":
    main()
