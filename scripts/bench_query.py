#!/usr/bin/env python3
"""Query latency and throughput per sink, whole process: a fresh process per sink (and per tree)
opens the index with `embedpipe.open_index`, answers N single queries one after another (p50 and
p99 of each query, text in, hits out) and then the same queries from T threads at once
(queries/s).

    .venv/bin/python scripts/bench_query.py [--sinks qdrant-edge,qdrant,faiss,parquet]
        [--records 2000] [--queries 200] [--threads 8] [--backend auto] [--baseline REV]
        [--env OMP_WAIT_POLICY=PASSIVE] [--during-run]

The indexes are built once with this tree (docstring records of the stdlib, `scripts/corpus.py`)
in a temporary folder; `--baseline REV` also runs the query processes on that commit (a `git
worktree`), alternating with this tree, on the same indexes. `--env` sets variables in the query
processes only (to compare with a setting users would otherwise need). `--during-run` measures each
sink a second time while another process runs incremental runs on the same index back to back
(each edits 2% of the records), as the nightly job beside a serving application: the table says
how many runs finished during the queries and whether any query failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

# Runs in the query process: timings in seconds, as JSON on the last line of stdout.
QUERIES = textwrap.dedent(
    """
    import json, sys, time
    from concurrent.futures import ThreadPoolExecutor
    import embedpipe

    uri, backend, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    questions = json.loads(sys.stdin.read())
    index = embedpipe.open_index(sink=uri, collection="bench", backend=backend)
    index.search(questions[0], 5)  # warm: the model, the sink's reader
    single = []
    for q in questions:
        t = time.perf_counter()
        index.search(q, 5)
        single.append(time.perf_counter() - t)
    def ask(q):
        try:
            index.search(q, 5)
            return 0
        except Exception:  # the baseline of a fix may fail here: count, do not stop
            return 1
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        errors = sum(pool.map(ask, questions))
    wall = time.perf_counter() - t
    print(json.dumps({"single": single, "threaded": wall, "errors": errors,
                      "backend": index.encoder().backend}))
    index.close()
    """
)

# Runs beside the query process with --during-run: incremental runs back to back, each editing a
# different 2% of the records, until the stop file exists; prints how many runs finished.
WRITER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[4])
    import corpus, embedpipe

    uri, records, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    recs = [r for _, r in zip(range(records), corpus.docstring_records())]
    runs = 0
    while not os.path.exists(stop):
        runs += 1
        edited = [dict(r, text=f"{r['text']} (edit {runs})") if i % 50 == runs % 50 else r
                  for i, r in enumerate(recs)]
        report = embedpipe.backfill(edited, sink=uri, collection="bench")
        assert report.outcome == "done", report.outcome
    print(json.dumps({"runs": runs}))
    """
)


def questions(n: int) -> list[str]:
    """Short questions of the kind a RAG application asks, cycled to `n`."""
    base = [
        "how do I parse a JSON string",
        "remove leading whitespace from lines",
        "find the largest elements",
        "delete a directory tree",
        "shuffle a list in place",
        "split a URL into parts",
        "cache function results",
        "closest matching words",
        "median of numbers",
        "match files with a wildcard pattern",
        "run a subprocess and wait",
        "read a CSV file row by row",
        "format a date as a string",
        "compress data with gzip",
    ]
    return [
        f"{base[i % len(base)]} ({i // len(base)})" if i >= len(base) else base[i] for i in range(n)
    ]


def build(root: Path, sinks: list[str], records: int) -> dict[str, str]:
    """One index per sink kind, built with this tree; their URIs."""
    import corpus

    import embedpipe

    recs = [r for _, r in zip(range(records), corpus.docstring_records(), strict=False)]
    uris = {}
    for kind in sinks:
        uri = f"{kind}:{root / kind}"
        report = embedpipe.backfill(recs, sink=uri, collection="bench")
        if report.outcome != "done":
            raise SystemExit(f"building {uri} failed: {report.outcome}")
        uris[kind] = uri
    return uris


def measure(
    code: Path, uri: str, args: argparse.Namespace, *, during_run: bool = False
) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.update(dict(pair.split("=", 1) for pair in args.env))
    writer, stop = None, Path(tempfile.mkdtemp(prefix="bench-query-stop-")) / "stop"
    if during_run:  # the writer is this tree's embedpipe, whichever tree answers the queries
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                uri,
                str(args.records),
                str(stop),
                str(ROOT / "scripts"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "PYTHONPATH": str(ROOT)},
        )
    try:
        done = subprocess.run(
            [sys.executable, "-c", QUERIES, uri, args.backend, str(args.threads)],
            input=json.dumps(questions(args.queries)),
            capture_output=True,
            text=True,
            env=env,
        )
    finally:
        stop.touch()
    runs = None
    if writer is not None:
        out, err = writer.communicate()
        if writer.returncode != 0:
            raise SystemExit(f"the incremental runs on {uri} failed:\n{err[-3000:]}")
        runs = json.loads(out.strip().splitlines()[-1])["runs"]
    shutil.rmtree(stop.parent, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"{code}: queries on {uri} failed:\n{done.stderr[-3000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    single = sorted(data["single"])
    return {
        "p50": single[len(single) // 2] * 1000,
        "p99": single[min(len(single) - 1, int(len(single) * 0.99))] * 1000,
        "qps": args.queries / data["threaded"],
        "errors": data["errors"],
        "backend": data["backend"],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sinks", default="qdrant-edge,qdrant,faiss,parquet")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--baseline", default=None, help="a commit to compare with")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for queries")
    parser.add_argument(
        "--during-run", action="store_true", help="also measure while incremental runs write"
    )
    args = parser.parse_args()
    sinks = args.sinks.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-query-"))
    trees = [("this tree", ROOT)]
    if args.baseline:
        base = work / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(base), args.baseline],
            check=True,
            capture_output=True,
        )
        trees.insert(0, (f"baseline {args.baseline}", base))
    try:
        uris = build(work, sinks, args.records)
        print(
            f"{args.records} records, {args.queries} queries of top 5, backend {args.backend}, "
            f"{args.threads} threads; env {' '.join(args.env) or '-'}\n"
        )
        print(
            "| sink | tree | while | backend | p50 ms | p99 ms | queries/s, "
            f"{args.threads} threads | failed |\n|---|---|---|---|---|---|---|---|"
        )
        for kind in sinks:
            for during in (False, True) if args.during_run else (False,):
                for name, code in trees:
                    m = measure(code, uris[kind], args, during_run=during)
                    beside = f"{m['runs']} runs finished" if during else "idle"
                    print(
                        f"| {kind} | {name} | {beside} | {m['backend']} | {m['p50']:.1f} | "
                        f"{m['p99']:.1f} | {m['qps']:.0f} | {m['errors']} |",
                        flush=True,
                    )
        print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    finally:
        if args.baseline:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "baseline")],
                capture_output=True,
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
