#!/usr/bin/env python3
"""Whole-process start-up on a warm cache, per sink: a fresh process that imports embedpipe and
prints the first query's result, and an incremental run (`embedpipe backfill`) with one changed
document, for this tree beside a baseline commit in the same run (alternating, fresh processes,
the same corpus, each tree with its own embedpipe cache warmed by a first run and a first query).

    .venv/bin/python scripts/bench_startup.py [--baseline REV] [--repeats 5] [--docs 30]
                                              [--sinks qdrant-edge,qdrant,faiss,parquet]

The baseline (default: `git merge-base HEAD main`) is checked out with `git worktree` into a
temporary folder, run with PYTHONPATH pointing at it, and removed at the end; both trees use this
virtual environment. Prints a Markdown table of medians and ratios (baseline / this tree), with
the CPU model, the date and the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SINKS = ("qdrant-edge", "qdrant", "faiss", "parquet")
QUERY = """
import sys
import embedpipe
hits = embedpipe.query("how do I configure retries?", sink=sys.argv[1], collection="docs", k=5)
print(hits[0].doc_id)
"""


def env_for(code: Path, cache: Path) -> dict[str, str]:
    """The environment of one tree's processes. Bytecode is cached in a private folder (beside
    the embedpipe cache): with PYTHONDONTWRITEBYTECODE set, as on the project's machines, every
    process would compile ~1,000 modules from source, which an installed package never does."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {
        **env,
        "PYTHONPATH": str(code),
        "EMBEDPIPE_CACHE_DIR": str(cache),
        "PYTHONPYCACHEPREFIX": str(cache.parent / "pycache"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall time of one fresh process, from its start to its exit."""
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def backfill(docs: Path, sink: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "embedpipe",
        "backfill",
        str(docs),
        "--sink",
        sink,
        "--collection",
        "docs",
    ]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=None, help="default: git merge-base HEAD main")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--sinks", default=",".join(SINKS))
    args = parser.parse_args()
    from tests.test_incremental import corpus_files

    git = ["git", "-C", str(ROOT)]
    baseline = (
        args.baseline
        or subprocess.run(
            [*git, "merge-base", "HEAD", "main"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    sinks = [s for s in args.sinks.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    base = work / "baseline"
    subprocess.run(
        [*git, "worktree", "add", "-f", "--detach", str(base), baseline],
        check=True,
        capture_output=True,
    )
    began = load_average()
    files = corpus_files(args.docs)
    trees = {"baseline": base, "this tree": ROOT}
    query: dict[tuple[str, str], list[float]] = {}
    incremental: dict[tuple[str, str], list[float]] = {}
    try:
        for name, code in trees.items():  # the first run and first query warm each tree's cache
            cache = work / f"cache-{name.replace(' ', '-')}"
            for sink in sinks:
                folder = work / name.replace(" ", "-") / sink
                (folder / "docs").mkdir(parents=True)
                for rel, text in files.items():
                    (folder / "docs" / rel).write_text(text)
                uri = f"{sink}:{folder / 'index'}"
                timed(backfill(folder / "docs", uri), env_for(code, cache), folder)
                timed([sys.executable, "-c", QUERY, uri], env_for(code, cache), folder)
        for rep in range(args.repeats):
            for sink in sinks:
                for name, code in trees.items():
                    env = env_for(code, work / f"cache-{name.replace(' ', '-')}")
                    folder = work / name.replace(" ", "-") / sink
                    uri = f"{sink}:{folder / 'index'}"
                    q = timed([sys.executable, "-c", QUERY, uri], env, folder)
                    query.setdefault((sink, name), []).append(q)
                    changed = files["doc00.md"] + f"\n\nEdit number {rep} of the benchmark.\n"
                    (folder / "docs" / "doc00.md").write_text(changed)
                    r = timed(backfill(folder / "docs", uri), env, folder)
                    incremental.setdefault((sink, name), []).append(r)
                    print(
                        f"rep {rep} {sink:<12} {name:<10} query {q:6.2f} s  run {r:6.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(base)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    report(sinks, query, incremental, baseline, head, began, args)


def report(
    sinks: list[str],
    query: dict[tuple[str, str], list[float]],
    incremental: dict[tuple[str, str], list[float]],
    baseline: str,
    head: str,
    began: str,
    args: argparse.Namespace,
) -> None:
    from embedpipe.encoding.remembered import cpu_name

    def med(values: list[float]) -> float:
        return statistics.median(values)

    print(
        f"`scripts/bench_startup.py --repeats {args.repeats} --docs {args.docs}` on {cpu_name()} "
        f"({os.cpu_count()} cores), {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"load average {began} before, {load_average()} after; baseline {baseline[:9]}, "
        f"this tree {head}; medians of {args.repeats} fresh processes, warm cache (bytecode too).\n"
    )
    print(
        "| sink | import -> first query: baseline | this tree | ratio "
        "| incremental run, 1 changed doc: baseline | this tree | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for sink in sinks:
        qb, qt = med(query[(sink, "baseline")]), med(query[(sink, "this tree")])
        rb, rt = med(incremental[(sink, "baseline")]), med(incremental[(sink, "this tree")])
        print(
            f"| {sink} | {qb:.2f} s | {qt:.2f} s | {qb / qt:.2f}x "
            f"| {rb:.2f} s | {rt:.2f} s | {rb / rt:.2f}x |"
        )


if __name__ == "__main__":
    main()
