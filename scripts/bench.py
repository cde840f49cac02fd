#!/usr/bin/env python3
"""Throughput benchmarks for embedpipe, each comparison made in one run on the same input.

    .venv/bin/python scripts/bench.py                      # default (~20 min on 2 idle cores), writes BENCHMARKS.md
    .venv/bin/python scripts/bench.py --quick --out F.md   # smaller corpora, a few minutes

Sections: whole process, `embedpipe backfill` with its defaults vs the plain script a user writes
(records and packed documents; scripts/bench_process.py), an unchanged re-run of the records
beside LangChain index() (scripts/bench_rerun.py), encoder only vs SentenceTransformer.encode
fp32/bf16 and by backend (scripts/bench_backends.py), torch threads, padding efficiency, the
compute ceiling, peak memory at 1x/4x/8x the records (scripts/bench_memory.py) and a
profile of the encoder.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_backends  # noqa: E402
import bench_memory  # noqa: E402
import bench_process  # noqa: E402
import bench_rerun  # noqa: E402
import corpus  # noqa: E402
import numpy as np  # noqa: E402

RESULTS: list[str] = []


def out(line: str = "") -> None:
    print(line, flush=True)
    RESULTS.append(line)


def table(header: list[str], rows: list[list[Any]]) -> None:
    for line in bench_process.markdown_table(header, rows):
        out(line)


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    box = [0.0]
    start = time.perf_counter()
    yield box
    box[0] = time.perf_counter() - start


def machine() -> str:
    model = bench_memory.cpu_model()
    import torch

    return (
        f"{model}, {len(os.sched_getaffinity(0))} cores, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
        f"{cpu_features()}; Python {platform.python_version()}, torch {torch.__version__}"
    )


def cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    return set()


def native_bf16() -> bool:
    """The CPU computes bf16 itself (elsewhere torch emulates it, several times slower)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_features() -> str:
    """The vector extensions that decide the kernels: AVX2, AVX-512, native bf16 (or their lack)."""
    flags = cpu_flags()
    has = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    lacks = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f not in flags]
    return (
        "CPU flags: "
        + (", ".join(has) or "none of avx2/avx512")
        + (f" (no {', '.join(lacks)})" if lacks else "")
    )


# -- corpora --------------------------------------------------------------------------------


def build_corpora(work: Path, quick: bool) -> dict[str, Path]:
    """Packed documents, the records (all of them once: the encoder sections' corpus) and the
    records grown to 4,000 for the whole-process sections (quick: 400)."""
    docs, records = work / "docs", work / "records.jsonl"
    corpus.write_docs(docs, modules=2 if quick else 8)
    corpus.write_records(records, limit=None)
    process_records = work / "records-process.jsonl"
    if quick:
        corpus.write_records(process_records, limit=400)
    else:
        bench_rerun.write_records(process_records, 4000)
    return {"docs": docs, "records": records, "records_4k": process_records}


def read_documents(path: Path) -> list[Any]:
    from embedpipe.config import SourceConfig
    from embedpipe.sources import open_source
    from embedpipe.types import Document

    return [d for d in open_source(SourceConfig(uri=str(path))) if isinstance(d, Document)]


def chunks_of(encoder: Any, docs: list[Any]) -> list[Any]:
    from embedpipe.encoding.chunking import Chunker

    chunker = Chunker(
        encoder.tokenizer,
        chunk_tokens=256,
        overlap_tokens=32,
        max_seq_length=encoder.max_seq_length,
    )
    return list(chunker.chunk_many(docs))


# -- encoder only ---------------------------------------------------------------------------


def encoder_only(
    encoder: Any, st_fp32: Any, st_bf16: Any | None, chunks: list[Any], repeats: int
) -> dict[str, float]:
    """Our batches vs ST.encode on the same chunks; bf16 rows only where the CPU has bf16
    (`st_bf16` None: emulated bf16 runs several times slower than fp32, see the backends table)."""
    import torch

    from embedpipe.encoding.batching import batches

    texts = [c.text for c in chunks]
    tokens = sum(c.token_count for c in chunks)
    packed = list(batches(chunks, max_batch_tokens=16384, pad_id=encoder.pad_id))
    fp32 = st_fp32[0]  # same weights in fp32 (the encoder's own may already be bf16)

    def ours(module: Any) -> Callable[[], None]:
        def go() -> None:
            for b in packed:
                encoder._encode_piece(b.input_ids, b.attention_mask, module)

        return go

    def chosen() -> None:
        for b in packed:
            encoder.encode_batch(b)

    runs: dict[str, Callable[[], Any]] = {
        "ST.encode fp32, batch 32": lambda: st_fp32.encode(texts, batch_size=32),
        "embedpipe fp32, 16384-token buckets": ours(fp32),
    }
    if st_bf16 is not None:
        torch_bf16 = encoder.backend == "torch" and encoder.precision == "bf16"
        bf16 = encoder.model[0] if torch_bf16 else _bf16_copy(fp32)
        runs["ST.encode bf16, batch 32"] = lambda: st_bf16.encode(texts, batch_size=32)
        runs["embedpipe bf16, 16384-token buckets"] = ours(bf16)
    if encoder.backend != "torch":
        runs[
            f"embedpipe as chosen ({encoder.backend} {encoder.precision}), 16384-token buckets"
        ] = chosen
    best = {k: float("inf") for k in runs}
    for _ in range(repeats):  # interleaved so background load hits all alike
        for k, fn in runs.items():
            with timer() as t:
                fn()
            best[k] = min(best[k], t[0])
    out("## Encoder only: our batches vs SentenceTransformer.encode")
    out()
    out(
        f"{len(chunks)} chunks, {tokens:,} tokens of the records corpus (varied lengths); "
        f"best of {repeats}, interleaved; torch threads {torch.get_num_threads()}."
        + ("" if st_bf16 is not None else " No bf16 rows: this CPU has no native bf16.")
    )
    out()
    rate = {k: tokens / v for k, v in best.items()}
    ref_name = "ST bf16" if st_bf16 is not None else "ST fp32"
    ref = rate[f"ST.encode {ref_name[3:]}, batch 32"]
    table(
        ["run", "tokens/s", f"vs {ref_name}"],
        [[k, f"{v:,.0f}", f"{v / ref:.2f}x"] for k, v in rate.items()],
    )
    return rate


def _bf16_copy(module: Any) -> Any:
    import copy

    import torch

    return copy.deepcopy(module).to(torch.bfloat16)


def threads(encoder: Any, chunks: list[Any]) -> None:
    import torch

    from embedpipe.encoding.batching import batches

    if encoder.backend != "torch":
        out(f"## Torch intra-op threads: not measured (the encoder runs on {encoder.backend})")
        out()
        return
    packed = list(batches(chunks, max_batch_tokens=16384, pad_id=encoder.pad_id))
    tokens = sum(b.real_tokens for b in packed)
    before, cores = torch.get_num_threads(), len(os.sched_getaffinity(0))
    counts = sorted({1, max(1, cores - 1), cores})
    best = dict.fromkeys(counts, float("inf"))
    for _ in range(2):
        for n in counts:
            torch.set_num_threads(n)
            with timer() as t:
                for b in packed:
                    encoder.encode_batch(b)
            best[n] = min(best[n], t[0])
    torch.set_num_threads(before)
    out("## Torch intra-op threads (encoder, its chosen precision)")
    out()
    table(["threads", "tokens/s"], [[n, f"{tokens / s:,.0f}"] for n, s in best.items()])


def padding(chunks: list[Any]) -> None:
    from embedpipe.encoding.batching import batches, fixed_count_batches, padding_efficiency

    bucketed = padding_efficiency(batches(chunks, max_batch_tokens=16384))
    fixed = padding_efficiency(fixed_count_batches(chunks, 32))
    by_chars = sorted(chunks, key=lambda c: len(c.text))  # what ST.encode does: sort by characters
    st_like = padding_efficiency(fixed_count_batches(by_chars, 32))
    out("## Padding efficiency (records corpus: real tokens / padded tokens)")
    out()
    table(
        ["batching", "efficiency"],
        [
            ["token-budget length buckets (16384, window 4096)", f"**{bucketed:.3f}**"],
            ["fixed 32 per batch, arrival order", f"{fixed:.3f}"],
            ["fixed 32 per batch, sorted by characters (ST.encode)", f"{st_like:.3f}"],
        ],
    )


# -- compute ceiling ------------------------------------------------------------------------


def matmul_flops(dtype: Any, n: int = 1536, reps: int = 12) -> float:
    """Best single n^3 matmul of `reps`: the machine's peak, robust to bursts of outside load."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        with timer() as t:
            torch.matmul(a, b)
        best = min(best, t[0])
    return 2 * n**3 / best


def flops_per_token(encoder: Any, mean_len: float) -> float:
    """2 x (non-embedding weights) + attention scores and mix (4 x L x hidden per layer)."""
    conf = encoder.model[0].auto_model.config
    h, inner, layers = conf.hidden_size, conf.intermediate_size, conf.num_hidden_layers
    weights = layers * (4 * h * h + 2 * h * inner)
    return 2 * weights + layers * 4 * mean_len * h


def ceiling(encoder: Any, chunks: list[Any], rates: dict[str, float]) -> None:
    import torch

    mean_len = float(np.mean([c.token_count for c in chunks]))
    per_token = flops_per_token(encoder, mean_len)
    rows = []
    candidates = [
        ("torch fp32", torch.float32, "embedpipe fp32, 16384-token buckets"),
        ("torch bf16", torch.bfloat16, "embedpipe bf16, 16384-token buckets"),
    ]
    candidates += [
        (k.split("(")[1].split(")")[0], torch.float32, k)
        for k in rates
        if k.startswith("embedpipe as chosen") and "fp32" in k
    ]
    peaks: dict[Any, float] = {}
    for label, dtype, key in candidates:
        if key not in rates:
            continue
        peak = peaks[dtype] = peaks.get(dtype) or matmul_flops(dtype)
        reached = rates[key] * per_token
        rows.append(
            [
                label,
                f"{peak / 1e9:,.1f}",
                f"{reached / 1e9:,.1f}",
                f"**{reached / peak:.0%}**",
                f"{peak / per_token:,.0f}",
            ]
        )
    out("## Compute ceiling")
    out()
    out(
        f"Model FLOPs per token at the corpus' mean length {mean_len:.0f}: {per_token / 1e6:.1f} M "
        f"(2 x weights + attention). Matmul peak: 1536^3 torch.matmul at "
        f"{torch.get_num_threads()} thread(s), the encoder's setting."
    )
    out()
    table(["precision", "matmul GFLOP/s", "encoder GFLOP/s", "fraction", "ceiling tokens/s"], rows)


def profile_encode(encoder: Any, chunks: list[Any]) -> None:
    from embedpipe.encoding.batching import batches

    prof = cProfile.Profile()
    prof.enable()
    for b in batches(chunks, max_batch_tokens=16384, pad_id=encoder.pad_id):
        encoder.encode_batch(b)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(8)
    lines = [ln for ln in text.getvalue().splitlines() if ln.strip()][-9:]
    out("## Where the encoder's time goes (cProfile, tottime, encoder only)")
    out()
    out("```")
    for ln in lines:
        out(ln.rstrip()[:140])
    out("```")
    out()


def memory_section(work: Path, quick: bool) -> None:
    """scripts/bench_memory.py's section, RSS only, 1x = 500 records (quick: 50): at 1x/4x/8x
    that is 6,500 records embedded, ~3 min here; its tracemalloc runs would double that (run
    scripts/bench_memory.py for them)."""
    folder = work / "memory"
    folder.mkdir(exist_ok=True)
    bench_memory.memory_section(out, folder, 50 if quick else 500, traced=False)


def section_load(name: str) -> None:
    bench_process.note(f"{name} starts")
    out(f"_Load average at the start of the {name} section: {os.getloadavg()[0]:.1f}._")
    out()


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller corpora, one repeat")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--process-repeats",
        type=int,
        default=None,
        help="fresh processes per side and corpus in the whole-process section "
        "(default 2, --quick 1)",
    )
    parser.add_argument(
        "--only-process",
        action="store_true",
        help="only the whole-process sections (backfill vs plain, re-run vs "
        "LangChain): ~1/3 of the time",
    )
    args = parser.parse_args()
    if args.process_repeats is None:
        args.process_repeats = 1 if args.quick else 2
    command = " ".join(["python scripts/bench.py", *sys.argv[1:]])
    started = time.time()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="embedpipe-bench-") as tmp:
        work = Path(tmp)
        corpora = build_corpora(work, args.quick)

        import torch
        from sentence_transformers import SentenceTransformer

        from embedpipe.config import ModelConfig
        from embedpipe.encoding.encoder import Encoder

        with timer() as t_load:
            encoder = Encoder(ModelConfig(device="cpu"))  # backend/precision auto: parity check
        st = SentenceTransformer(str(encoder.path), device="cpu")
        st_bf16 = (
            SentenceTransformer(str(encoder.path), device="cpu").to(torch.bfloat16)
            if native_bf16()
            else None
        )
        out(f"Command: `{command}`  ")
        out(f"Machine: {machine()}  ")
        out(
            f"Date: {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; load average at start {load0:.1f} "
            "(other work shares this machine: compare within a table, not across runs)  "
        )
        out(
            f"Encoder: {encoder.name}, start-up {t_load[0]:.1f} s (load + calibration); "
            f"{encoder.precision_reason}; torch threads {encoder.threads}"
        )
        out()
        out(
            "GPU: **not measured yet** (no GPU was lent to this machine); `scripts/gpu_check.sh` "
            "measures it on one."
        )
        out()
        process_corpora = {
            name: (corpora[key], chunks_of(encoder, read_documents(corpora[key])))
            for name, key in (("records", "records_4k"), ("docs", "docs"))
        }
        section_load("whole-process")
        kept = bench_process.whole_process(out, table, process_corpora, work, args.process_repeats)
        section_load("unchanged re-run")
        bench_rerun.rerun_section(out, table, corpora["records_4k"], *kept["records"], work, 3)
        if args.only_process:
            out(
                f"Total benchmark time {time.time() - started:.0f} s; load average at end "
                f"{os.getloadavg()[0]:.1f}."
            )
            write_results(args.out)
            return
        section_load("encoder sections")
        rec_chunks = chunks_of(encoder, read_documents(corpora["records"]))
        sample = rec_chunks[:: 6 if args.quick else 2]  # every length, a fraction of the time
        rates = encoder_only(encoder, st, st_bf16, sample, repeats=1 if args.quick else 2)
        out("## Encoder only: backends and precisions (scripts/bench_backends.py)")
        out()
        texts, repeats = (150, 1) if args.quick else (400, 2)
        for line in bench_backends.measure(texts, 64, repeats, int8=True):
            out(line)
        out()
        threads(encoder, sample[:300])
        padding(rec_chunks)
        ceiling(encoder, sample, rates)
        memory_section(work, args.quick)
        profile_encode(encoder, sample[:300])
    out(
        f"Total benchmark time {time.time() - started:.0f} s; load average at end {os.getloadavg()[0]:.1f}."
    )
    write_results(args.out)


def write_results(path: Path) -> None:
    """Replace the generated part of BENCHMARKS.md (between the markers), keep the notes."""
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    body = begin + "\n" + "\n".join(RESULTS) + "\n" + end
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + begin + "\n" + end + "\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + body + text[text.index(end) + len(end) :]
    else:
        text += "\n" + body + "\n"
    path.write_text(text)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
