"""Sink throughput and query latency: random unit vectors through each sink's own code.

    .venv/bin/python scripts/bench_sinks.py --points 20000 --dim 384 --batch 256 --queries 100

For each sink: open a fresh index in a temporary folder, write the points in batches (upserts/s
counts write() calls only, payload included), close() (optimize/compact/index build, timed apart),
then time top-10 searches on the live index (the first one, which loads it, is not counted).
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from embedpipe.config import SinkConfig
from embedpipe.sinks import open_sink
from embedpipe.types import Chunk, Embedded

FINGERPRINT = "f" * 64


def batches(points: int, dim: int, batch: int, seed: int = 0) -> list[Embedded]:
    rng = np.random.default_rng(seed)
    out = []
    for lo in range(0, points, batch):
        n = min(batch, points - lo)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [
            Chunk(
                doc_id=f"doc{(lo + i) // 8}",
                index=(lo + i) % 8,
                text=f"chunk {lo + i} " * 20,
                token_ids=[],
                start=0,
                end=0,
                content_hash=f"{lo + i:032x}",
                metadata={"n": lo + i},
            )
            for i in range(n)
        ]
        out.append(Embedded(chunks, vectors))
    return out


def bench(kind: str, data: list[Embedded], queries: np.ndarray, root: Path) -> dict[str, float]:
    cfg = SinkConfig(uri=f"{kind}:{root / kind}", collection="bench")
    sink = open_sink(cfg)
    dim = data[0].vectors.shape[1]
    sink.open(dim, FINGERPRINT)
    started = time.perf_counter()
    for emb in data:
        sink.write(emb)
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    sink.close()
    close_s = time.perf_counter() - started
    sink.search(queries[0], k=10)  # loads the live index
    latencies = []
    for q in queries[1:]:
        t = time.perf_counter()
        sink.search(q, k=10)
        latencies.append(time.perf_counter() - t)
    sink.abort()
    points = sum(len(e.chunks) for e in data)
    return {
        "upserts_per_s": points / write_s,
        "close_s": close_s,
        "query_ms_mean": 1000 * statistics.mean(latencies),
        "query_ms_p50": 1000 * statistics.median(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--sinks", default="qdrant-edge,qdrant,faiss,parquet")
    args = parser.parse_args()
    data = batches(args.points, args.dim, args.batch)
    queries = batches(args.queries + 1, args.dim, args.queries + 1, seed=1)[0].vectors
    print(
        f"{args.points} points, dim {args.dim}, batches of {args.batch}, "
        f"{args.queries} top-10 queries; {platform.platform()}, {platform.processor() or '?'}"
    )
    print("| sink | upserts/s | close (s) | query mean (ms) | query p50 (ms) |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.sinks.split(","):
            r = bench(kind, data, queries, Path(tmp))
            print(
                f"| `{kind}:` | {r['upserts_per_s']:,.0f} | {r['close_s']:.1f} | "
                f"{r['query_ms_mean']:.2f} | {r['query_ms_p50']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
