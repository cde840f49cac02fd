"""Progress on the work (embedpipe/cli/progress.py): what the bar counts and when it is full, the
record count behind its total, and the bar as an operator sees it, in a real pseudo-terminal, in
a cron log (plain lines) and with --quiet."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedpipe.cli.progress import estimate
from embedpipe.config import SourceConfig
from embedpipe.runs.preflight import RecordCount
from embedpipe.sources import open_source
from embedpipe.types import RunReport
from tests.clikit import embedpipe as command

TEXT = (
    "the json module encodes objects as text while the planner reads documents and the "
    "encoder turns chunks into vectors that the sink keeps for queries"
)
WORDS = TEXT.split(" ")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
FRAME = re.compile(
    r"(?P<phase>loading model|embedding|writing|deleting|building index|swapping)\s+\S*\s*"
    r"(?P<done>[\d,]+)/(?P<total>[\d,]+) tokens"
)
PLAIN = re.compile(
    r"^embedpipe: (loading model|embedding|writing|deleting|building index|swapping)"
)


def report(**counts: object) -> RunReport:
    r = RunReport(phase="embedding")
    for key, value in counts.items():
        setattr(r, key, value)
    return r


# ---------------------------------------------------------------- what the bar counts


def test_total_is_the_admitted_work_scaled_by_the_share_of_the_source_read() -> None:
    w = estimate(
        report(
            docs_total=100, docs_read=20, docs_failed=5, tokens_planned=1_000, tokens_embedded=300
        )
    )
    assert (w.unit, w.done, w.total) == ("tokens", 300, 4_000)


def test_total_is_exact_once_the_planner_has_read_the_whole_source() -> None:
    w = estimate(
        report(
            docs_total=100,
            docs_read=100,
            tokens_planned=5_123,
            tokens_embedded=5_000,
            planning_done=True,
        )
    )
    assert (w.done, w.total) == (5_000, 5_123)


def test_bar_is_not_full_while_the_planner_is_still_reading() -> None:
    w = estimate(report(docs_total=10, docs_read=10, tokens_planned=800, tokens_embedded=800))
    assert w.total is not None and w.done < w.total
    done = estimate(
        report(
            docs_total=10, docs_read=10, tokens_planned=800, tokens_embedded=800, planning_done=True
        )
    )
    assert done.done == done.total == 800


def test_chunks_are_counted_where_the_engine_does_not_count_tokens() -> None:
    w = estimate(
        report(
            docs_total=4,
            docs_read=4,
            chunks_planned=10,
            chunks_embedded=4,
            tokens_embedded=900,
            planning_done=True,
        )
    )
    assert (w.unit, w.done, w.total) == ("chunks", 4, 10)


def test_total_is_unknown_before_a_record_is_read_or_without_a_count() -> None:
    assert estimate(report(docs_total=100, tokens_planned=0)).total is None
    assert estimate(report(docs_total=None, docs_read=50, tokens_planned=900)).total is None


def test_eta_follows_the_rate_since_embedding_began() -> None:
    r = report(
        docs_total=10, docs_read=10, tokens_planned=1_000, tokens_embedded=250, planning_done=True
    )
    r.phases = [["embedding", 0.0]]
    w = estimate(r, now=r.started_at + 5.0)
    assert w.rate == pytest.approx(50.0) and w.eta == pytest.approx(15.0)


# ---------------------------------------------------------------- the count behind the total


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_json_lines_are_counted_in_the_background(tmp_path: Path, name: str) -> None:
    lines = "".join(json.dumps({"id": i, "text": f"doc {i}"}) + "\n" for i in range(1234))
    path = tmp_path / name
    path.write_bytes(gzip.compress(lines.encode()) if name.endswith(".gz") else lines.encode())
    count = RecordCount(open_source(SourceConfig(uri=str(path))))
    assert count.done.wait(30) and count.total == 1234


def test_parquet_rows_and_directory_files_are_known_at_once(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"]}), tmp_path / "t.parquet"
    )
    assert RecordCount(open_source(SourceConfig(uri=str(tmp_path / "t.parquet")))).total == 3
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"{i}.md").write_text(f"document {i}")
    assert RecordCount(open_source(SourceConfig(uri=str(docs)))).total == 4


# ---------------------------------------------------------------- as the operator sees it


def corpus_rows(n: int = 40) -> list[dict[str, str]]:
    """n documents of 60-100 words: about 4,000 tokens, many small batches at 512 tokens."""
    return [
        {
            "id": f"d{i}",
            "pkg": "x",
            "body": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(60 + i)),
        }
        for i in range(n)
    ]


def write_source(tmp_path: Path, kind: str) -> Path:
    rows = corpus_rows()
    if kind == "parquet":
        path = tmp_path / "corpus.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = tmp_path / "corpus.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def backfill_args(source: Path, tmp_path: Path) -> list[str]:
    return [
        "backfill",
        str(source),
        "--text-field",
        "body",
        "--sink",
        f"faiss:{tmp_path / 'index'}",
        "--report",
        str(tmp_path / "run.json"),
        "--precision",
        "fp32",
        "--max-batch-tokens",
        "512",
    ]


def in_terminal(args: list[str], cols: int = 220) -> tuple[int, str]:
    """Run `embedpipe ARGS` with stdin, stdout and stderr on a real pseudo-terminal; (exit code,
    everything it drew)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedpipe", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**env, "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color"},
        close_fds=True,
    )
    os.close(slave)
    drawn = bytearray()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            drawn += data
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), drawn.decode("utf-8", "replace")


def frames(drawn: str) -> list[tuple[str, int, int]]:
    """(phase, done, total) of every frame of the bar, in the order drawn."""
    text = ANSI.sub("", drawn)
    return [
        (m["phase"], int(m["done"].replace(",", "")), int(m["total"].replace(",", "")))
        for part in re.split(r"[\r\n]", text)
        for m in [FRAME.search(part)]
        if m
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_bar_in_a_terminal_counts_tokens_and_is_full_only_at_the_end(
    tmp_path: Path, kind: str
) -> None:
    code, drawn = in_terminal(backfill_args(write_source(tmp_path, kind), tmp_path))
    assert code == 0, ANSI.sub("", drawn)[-3000:]
    data = json.loads((tmp_path / "run.json").read_text())
    seen = frames(drawn)
    assert seen, ANSI.sub("", drawn)[-3000:]
    embedding = [f for f in seen if f[0] == "embedding"]
    # The total is the tokens embedded, shown while embedding, not documents read.
    assert embedding[-1][2] == data["tokens_embedded"] > 0
    # It advances during embedding: several distinct counts below the total.
    assert len({done for _, done, total in embedding if 0 < done < total}) >= 2
    # Never past the total, never backwards.
    assert all(done <= total for _, done, total in seen)
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)
    # Full only at the end: once a frame is full, every later frame is full.
    first_full = next((i for i, (_, done, total) in enumerate(seen) if done == total), None)
    assert first_full is not None, (seen[-5:], ANSI.sub("", drawn)[-1500:])
    assert all(done == total for _, done, total in seen[first_full:])
    # The phases are named, in order, the sink's index build among them.
    names = re.findall(r"loading model|embedding|building index", ANSI.sub("", drawn))
    assert list(dict.fromkeys(names)) == ["loading model", "embedding", "building index"], names


@pytest.mark.slow
def test_without_a_terminal_progress_is_plain_lines_at_most_every_interval(tmp_path: Path) -> None:
    args = [*backfill_args(write_source(tmp_path, "jsonl"), tmp_path), "--progress-every", "1"]
    began = time.monotonic()
    done = command(*args, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stderr and "\r" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if PLAIN.match(line)]
    # One line per interval, plus at most one per phase change (six phases).
    assert 1 <= len(lines) <= wall / 1 + 1 + 6
    total = json.loads((tmp_path / "run.json").read_text())["tokens_embedded"]
    assert total > 0 and any(
        re.search(r"embedding [\d,]+/[\d,]+ (tokens|chunks)", ln) for ln in lines
    ), lines
    assert any("docs 40 read" in line for line in lines), lines


@pytest.mark.slow
def test_quiet_prints_no_progress_and_no_summary(tmp_path: Path) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in corpus_rows(3)))
    code, drawn = in_terminal([*backfill_args(source, tmp_path), "--quiet"])
    assert code == 0
    assert ANSI.sub("", drawn).strip() == ""
