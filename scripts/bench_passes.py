#!/usr/bin/env python3
"""Encoder only, on the records corpus: OpenVINO fp32 (what `auto` picks on a CPU without bf16)
at several token budgets, with and without the CPU pass cap, beside SentenceTransformer.encode
fp32 (batch 32) on the same chunk texts, interleaved, in one process.

    .venv/bin/python scripts/bench_passes.py [--records 1200] [--repeats 2]

It answers what the whole-process ratio can reach on this CPU: the kernel and padding gain is
the ceiling of embedpipe's figure over the plain script's (see BENCHMARKS.md, issue 13 targets).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backend", default="openvino", choices=["openvino", "torch"])
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from embedpipe.config import ModelConfig, load_config
    from embedpipe.encoding.batching import batches
    from embedpipe.encoding.chunking import Chunker
    from embedpipe.encoding.encoder import Encoder
    from embedpipe.types import Document

    texts = [r["text"] for r in corpus.docstring_records()][: args.records]
    encoder = Encoder(ModelConfig(backend=args.backend, precision="fp32", device="cpu"))
    cfg = load_config(None, {})
    chunker = Chunker.for_run(encoder.tokenizer, cfg.chunking, cfg.model, encoder.max_seq_length)
    chunks = list(chunker.chunk_many([Document(f"d{i}", t) for i, t in enumerate(texts)]))
    tokens = sum(c.token_count for c in chunks)
    print(
        f"{encoder.backend} {encoder.precision}, {encoder.threads} threads; {len(chunks)} chunks, "
        f"{tokens:,} tokens; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    reference = SentenceTransformer(str(encoder.path), device="cpu")

    def ours(budget: int, cap: int | None) -> float:
        encoder.token_cap = cap
        packed = list(
            batches(
                chunks, max_batch_tokens=budget, window=cfg.batching.window, pad_id=encoder.pad_id
            )
        )
        start = time.perf_counter()
        for batch in packed:
            encoder.encode_batch(batch)
        return tokens / (time.perf_counter() - start)

    def plain() -> float:
        start = time.perf_counter()
        reference.encode([c.text for c in chunks], batch_size=32)
        return tokens / (time.perf_counter() - start)

    cases = {"ST.encode fp32, batch 32": plain}
    for budget, cap in ((16384, 4096), (16384, None), (4096, None), (2048, None)):
        label = f"embedpipe, budget {budget}, pass cap {cap or 'none'}"
        cases[label] = lambda b=budget, c=cap: ours(b, c)
    results: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(args.repeats):
        for label, case in cases.items():
            results[label].append(case())
    base = max(results["ST.encode fp32, batch 32"])
    print("| case | tokens/s (best) | vs ST.encode |\n|---|---|---|")
    for label, rates in results.items():
        print(f"| {label} | {max(rates):,.0f} | {max(rates) / base:.2f}x |")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
