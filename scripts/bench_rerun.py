#!/usr/bin/env python3
"""Whole-process wall time of the nightly job's commonest case: nothing changed.

    .venv/bin/python scripts/bench_rerun.py [--records 4000] [--repeats 3]

Times, each as a fresh `embedpipe backfill` process on the same JSONL records (scripts/corpus.py
`records`), in one run: the first backfill (model load included), then unchanged re-runs, and
importing the CLI as the floor of Python start-up plus imports. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    records = work / "records.jsonl"
    available = corpus.write_records(records)
    n = corpus.write_records(records, limit=-(-opts.records // -(-opts.records // available)),
                             repeat=-(-opts.records // available))  # fmt: skip
    cli = [sys.executable, "-m", "embedpipe"]
    backfill = [*cli, "backfill", str(records), "--sink", f"qdrant-edge:{work / 'edge'}",
                "--collection", "bench", "--quiet"]  # fmt: skip
    floor = statistics.median(
        timed([sys.executable, "-c", "import embedpipe.cli"]) for _ in range(opts.repeats)
    )
    first = timed(backfill)
    reruns = [timed(backfill) for _ in range(opts.repeats)]
    load = os.getloadavg()[0]
    print(f"{n} records, {time.strftime('%Y-%m-%d %H:%M')}, load average {load:.2f}\n")
    print("| process | wall s (median) | vs first run |")
    print("| --- | --- | --- |")
    print(f"| first backfill (model load, embed all) | {first:.2f} | 1.00x |")
    print(
        f"| unchanged re-run | {statistics.median(reruns):.2f} | {first / statistics.median(reruns):.1f}x faster |"
    )
    print(f"| `python -c 'import embedpipe.cli'` (start-up floor) | {floor:.2f} | |")


if __name__ == "__main__":
    main()
