#!/usr/bin/env python3
"""Whole process on a nightly-style edit: `embedpipe backfill --dry-run`, then the real run, on a
folder of which a few documents changed since the last run, for this tree beside a baseline
commit in the same run (alternating, fresh processes, the same corpus and edits).

    .venv/bin/python scripts/bench_edits.py [--baseline REV] [--repeats 3] [--docs 30]

The baseline is checked out with `git worktree` and run with PYTHONPATH pointing at it; both use
this virtual environment. Each repetition starts from the same embedded state (a copy), so every
run sees the same 3 edited documents and 1 new one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))


def timed(code: Path, cwd: Path, args: list[str]) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "embedpipe", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{code}: embedpipe {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="5e34d13")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--docs", type=int, default=30)
    args = parser.parse_args()
    from tests.test_incremental import corpus_files

    work = Path(tempfile.mkdtemp(prefix="bench-edits-"))
    base = work / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(base), args.baseline],
        check=True,
        capture_output=True,
    )
    try:
        files = corpus_files(args.docs)
        times: dict[tuple[str, str], list[float]] = {}
        seeds = {}
        for name, code in (("baseline", base), ("this tree", ROOT)):
            seed = work / f"seed-{name.replace(' ', '-')}"
            (seed / "docs").mkdir(parents=True)
            for rel, text in files.items():
                (seed / "docs" / rel).write_text(text)
            timed(code, seed, ["backfill", "docs", "--quiet"])  # embedded once, then edited
            for i in range(3):
                path = seed / "docs" / f"doc{i:02d}.md"
                path.write_text(path.read_text() + "\n\nAn edited closing paragraph.")
            (seed / "docs" / "new.md").write_text(
                "# About kites\n\n" + "Kites fly on strings. " * 40
            )
            seeds[name] = (code, seed)
        for _ in range(args.repeats):
            for name, (code, seed) in seeds.items():
                run = work / "run"
                shutil.rmtree(run, ignore_errors=True)
                shutil.copytree(seed, run, symlinks=True)  # the sink serves through a link
                for what, extra in (("dry run", ["--dry-run"]), ("real run", [])):
                    seconds = timed(code, run, ["backfill", "docs", "--quiet", *extra])
                    times.setdefault((what, name), []).append(seconds)
        print(
            f"{args.docs} documents embedded, then 3 edited and 1 added; load average at end "
            f"{os.getloadavg()[0]:.1f}\n"
        )
        print(f"| whole process | baseline {args.baseline} (median) | this tree (median) | ratio |")
        print("|---|---|---|---|")
        for what in ("dry run", "real run"):
            old = statistics.median(times[(what, "baseline")])
            new = statistics.median(times[(what, "this tree")])
            runs = ", ".join(f"{t:.1f}" for t in times[(what, "this tree")])
            print(f"| {what} | {old:.2f} s | {new:.2f} s ({runs}) | {old / new:.2f}x |")
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
            capture_output=True,
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
