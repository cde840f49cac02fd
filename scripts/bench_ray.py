#!/usr/bin/env python3
"""Ray engine scaling on this machine: the same corpus embedded with the local engine and with
Ray Data at 1 and 2 encoder actors (1 CPU / 1 torch thread each), then 2 actors that also write
the sink themselves (ray.write_from=actors), in one run.

    .venv/bin/python scripts/bench_ray.py [--modules 4] [--out bench-out/ray.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import corpus

import embedpipe
from embedpipe.config import load_config


def run(root: Path, work: Path, name: str, **extra: object) -> dict[str, object]:
    sink = work / name
    shutil.rmtree(sink, ignore_errors=True)
    shutil.rmtree(f"{sink}.state", ignore_errors=True)
    cfg = load_config(
        None,
        {
            "source": {"uri": str(root)},
            "sink": {"uri": f"faiss:{sink}", "collection": "b"},
            "model": {"precision": "fp32"},
            **extra,
        },
    )
    started = time.monotonic()
    report = embedpipe.run(cfg)
    wall = time.monotonic() - started
    return {
        "tokens": report.tokens_embedded,
        "wall_s": round(wall, 1),
        "tokens_per_s_wall": round(report.tokens_embedded / wall, 1),
        "notes": [n for n in report.notes if n.startswith("ray:")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modules", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench-out/ray.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    root = work / "corpus"
    corpus.write_docs(root, modules=args.modules)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {
        "local (2 torch threads)": run(root, work, "local"),
        "ray, 1 encoder x 1 CPU": run(
            root, work, "ray1", engine="ray", ray={"encoders": 1, "num_cpus": 1, "block_docs": 1}
        ),
        "ray, 2 encoders x 1 CPU": run(
            root, work, "ray2", engine="ray", ray={"encoders": 2, "num_cpus": 1, "block_docs": 1}
        ),
        "ray, 2 encoders x 1 CPU, actors write": run(
            root,
            work,
            "ray2w",
            engine="ray",
            ray={"encoders": 2, "num_cpus": 1, "block_docs": 1, "write_from": "actors"},
        ),
    }
    ray.shutdown()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpu.splitlines()
            if line.startswith("Model name")
        ),
        "?",
    )
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{model}, {os.cpu_count()} cores, {platform.python_version()}",
        "corpus": f"corpus.py docs --modules {args.modules}",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
