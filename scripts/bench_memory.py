#!/usr/bin/env python3
"""Peak memory of one whole `embedpipe backfill` at 1x, 4x and 8x the records corpus.

    .venv/bin/python scripts/bench_memory.py [--base 1000] [--scales 1,4,8] [--no-tracemalloc]

Each size runs as a fresh child process (`python -m embedpipe backfill RECORDS --sink
qdrant-edge:DIR`, every other setting at its default, fresh sink and state) whose peak RSS is
its own `ru_maxrss` (os.wait4). A second child per size runs the same command with tracemalloc
started once the CLI is imported, for the Python heap's peak: a tracemalloc peak that stays flat
while RSS grows points at native memory (the model runtime, the allocator, the sink's engine).
The records are scripts/corpus.py's docstring records, copied with new ids to reach the count.
Prints a Markdown table with the ratios to 1x, the command, machine, date and load average.
bench.py calls `memory_section`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
SCALES = (1, 4, 8)
# The child that measures the Python heap: tracemalloc from after the CLI's import to the end.
TRACED = """\
import json, sys, tracemalloc
from embedpipe.cli import main
tracemalloc.start()
result, sys.argv = sys.argv[1], ["embedpipe", *sys.argv[2:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(result, "w") as f:
    json.dump({"peak": tracemalloc.get_traced_memory()[1], "code": code}, f)
"""


def write_scaled(path: Path, count: int) -> int:
    """`count` records (the corpus copied with new ids as often as needed); returns how many."""
    available = corpus.write_records(path)
    repeat = -(-count // available)
    return corpus.write_records(path, limit=-(-count // repeat), repeat=repeat)


def backfill_args(records: Path, folder: Path) -> list[str]:
    """The CLI arguments of one default backfill into a fresh Qdrant Edge sink under `folder`."""
    return [
        "backfill",
        str(records),
        "--sink",
        f"qdrant-edge:{folder / 'edge'}",
        "--collection",
        "memory",
        "--quiet",
        "--report",
        str(folder / "report.json"),
    ]


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def peak_rss(records: Path, folder: Path) -> tuple[float, float, dict[str, Any]]:
    """(peak RSS MiB, wall seconds, run report) of one fresh backfill process."""
    args = backfill_args(records, fresh(folder))
    start = time.perf_counter()
    with (folder / "stderr.txt").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedpipe", *args],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"backfill failed ({proc.returncode}): see {folder / 'stderr.txt'}")
    report = json.loads((folder / "report.json").read_text())
    return usage.ru_maxrss / 1024, time.perf_counter() - start, report  # Linux: KiB


def traced_peak(records: Path, folder: Path) -> float:
    """The tracemalloc peak (MiB) of the same backfill in a fresh process."""
    args = backfill_args(records, fresh(folder))
    result = folder / "traced.json"
    done = subprocess.run(
        [sys.executable, "-c", TRACED, str(result), *args], env=ENV, capture_output=True, text=True
    )
    if done.returncode != 0 or not result.exists():
        raise SystemExit(f"traced backfill failed:\n{done.stderr[-2000:]}")
    return float(json.loads(result.read_text())["peak"]) / 2**20


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "?"


def machine() -> str:
    """CPU model, cores and memory of this machine."""
    model = cpu_model()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {len(os.sched_getaffinity(0))} cores, {memory:.0f} GiB, Python {platform.python_version()}"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def memory_section(
    out: Callable[[str], None],
    work: Path,
    base: int | Path = 1000,
    *,
    scales: tuple[int, ...] = SCALES,
    traced: bool = True,
) -> tuple[float, ...]:
    """Measure and print the section; returns the peak RSS (MiB) of each scale, in order.

    `base` is the 1x record count (a records file: its number of records)."""
    if isinstance(base, Path):
        base = sum(1 for _ in base.open(encoding="utf-8"))
    when, load_before = time.strftime("%Y-%m-%d %H:%M"), load()
    runs = []  # the RSS runs first: the traced ones only add the Python heap's peak
    for scale in scales:
        records = work / f"memory-{scale}x.jsonl"
        n = write_scaled(records, base * scale)
        runs.append((scale, records, n, *peak_rss(records, work / f"memory-{scale}x")))
        print(f"{scale}x: peak RSS {runs[-1][3]:.0f} MiB", file=sys.stderr, flush=True)
    peaks = [run[3] for run in runs]
    traced_peaks = [
        traced_peak(r[1], work / f"memory-{r[0]}x-traced") if traced else float("nan") for r in runs
    ]
    rows, note = [], ""
    for (scale, _, n, peak, seconds, report), tm in zip(runs, traced_peaks, strict=True):
        note = note or next((x for x in report.get("notes", []) if x.startswith("precision")), "")
        rows.append(
            [
                f"{scale}x",
                n,
                report["chunks_embedded"],
                report["tokens_embedded"],
                f"{peak:.0f}",
                f"{peak / peaks[0]:.2f}",
                f"{tm:.0f}",
                f"{tm / traced_peaks[0]:.2f}",
                f"{seconds:.0f}",
            ]
        )
    out(
        f"## Peak memory: one default backfill of {base:,} records at {', '.join(f'{s}x' for s in scales)}"
    )
    out("")
    out(
        f"`{Path(sys.executable).name} -m embedpipe {' '.join(backfill_args(Path('RECORDS'), Path('DIR')))}`, "
        f"a fresh process and sink per size; {machine()}; {when}; load average {load_before} "
        f"before, {load()} after. {note}"
    )
    out("")
    out(
        "| size | records | chunks | tokens | peak RSS MiB | vs 1x | tracemalloc peak MiB | vs 1x | wall s |"
    )
    out("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        out("| " + " | ".join(str(x) for x in row) + " |")
    out("")
    out(f"{scales[-1]}x / 1x peak RSS: **{peaks[-1] / peaks[0]:.3f}** (target <= 1.1).")
    out("")
    return tuple(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=1000, help="records at 1x")
    parser.add_argument("--scales", default="1,4,8", help="comma-separated multiples of --base")
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the traced runs")
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: a temp dir)"
    )
    opts = parser.parse_args()
    work = opts.work or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    scales = tuple(int(s) for s in opts.scales.split(","))
    memory_section(
        lambda line: print(line, flush=True),
        work,
        opts.base,
        scales=scales,
        traced=not opts.no_tracemalloc,
    )


if __name__ == "__main__":
    main()
