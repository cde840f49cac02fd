"""The values that flow between stages: Document -> Chunk -> Batch -> Embedded, and the RunReport."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedpipe.errors import StateError, os_reason

# The run report keeps at most this many timeline points; older ones are thinned out.
TIMELINE_POINTS = 240
# What a run does, in order (RunReport.phase): the model loads before the run's clock starts.
PHASES = ("loading model", "embedding", "writing", "deleting", "building index", "swapping")

# Fixed namespace so a chunk id maps to the same point id in every sink, on every machine.
POINT_NAMESPACE = uuid.UUID("6f1c2b1e-5d0a-4a43-9a57-3c1d5b0e7e11")


def point_id(chunk_id: str) -> str:
    """The sink-side id of a chunk: a UUIDv5, so re-writing a chunk overwrites it."""
    return str(uuid.uuid5(POINT_NAMESPACE, chunk_id))


def int_id(chunk_id: str) -> int:
    """A positive 63-bit integer id for sinks that need integers (FAISS), derived like point_id."""
    return uuid.uuid5(POINT_NAMESPACE, chunk_id).int >> 65


# Keys embedpipe sets beside a chunk's metadata wherever a framework reads them flat (the
# adapters, `export --layout`): a source's own metadata may not use them (see reserved_keys).
RESERVED = ("doc_id", "chunk_id", "chunk_index", "text", "content_hash", "start", "end", "source")


def reserved_keys(metadata: dict[str, Any], *, allow: tuple[str, ...] = ()) -> str | None:
    """Why a document's metadata cannot be kept as it is (a reserved key), or None."""
    taken = [k for k in metadata if k in RESERVED and k not in allow]
    if not taken:
        return None
    names = ", ".join(repr(k) for k in taken)
    return (
        f"metadata key {names} is reserved (embedpipe sets {', '.join(RESERVED)} on every "
        "chunk): leave the field out of the metadata (source.metadata_fields) or rename it"
    )


@dataclass(frozen=True, slots=True)
class Document:
    """One input record. `id` is stable across runs; `source` names where it came from (the
    sources also put it in the metadata as `source`: a file's path, a JSONL/Parquet file's path
    or URI, an `hf:` dataset)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True, slots=True)
class RecordError:
    """A record that could not be used: where it was, which record, and why."""

    source: str
    record: str
    reason: str
    # Left out on purpose (a link out of the source folder), not unreadable for now: what it
    # held before is deleted like a removed document's, instead of kept.
    excluded: bool = False


@dataclass(slots=True)
class Chunk:
    """A piece of a document that fits the model: its text, token ids and content hash.

    `token_ids` are the model's input ids for `text`, special tokens included, so the encoder
    never tokenises again. `start`/`end` are the character span of `text` in the document.
    """

    doc_id: str
    index: int
    text: str
    token_ids: list[int]
    start: int
    end: int
    content_hash: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.doc_id}#{self.index}"

    @property
    def token_count(self) -> int:
        return len(self.token_ids)


@dataclass(slots=True)
class Batch:
    """Chunks of similar length, with their ids padded to the longest member."""

    chunks: list[Chunk]
    input_ids: np.ndarray  # (n, longest) int64
    attention_mask: np.ndarray  # (n, longest) int64

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.size)


@dataclass(slots=True)
class Embedded:
    """Chunks with their vectors: row i of `vectors` (float32, (n, dim)) belongs to chunks[i]."""

    chunks: list[Chunk]
    vectors: np.ndarray


EMPTY = "empty document"  # the reason every source and engine gives for a text-less document
NOT_LOADED = "not loaded"  # device and precision of a run that loaded no model (nothing to embed)


@dataclass(slots=True)
class RunReport:
    """What a run did. Written as JSON with --report and summarised on the terminal."""

    model: str = ""
    fingerprint: str = ""
    sink: str = ""
    source: str = ""
    collection: str = ""
    mode: str = "incremental"
    outcome: str = "running"  # done | dry-run | failed | held | interrupted
    reason: str = ""  # one line: why the run failed or was held
    run_id: int | None = None  # the ledger's number for this run (None: it never began)
    dry_run: bool = False
    docs_total: int | None = None
    docs_read: int = 0
    docs_failed: int = 0
    chunks_total: int = 0
    chunks_embedded: int = 0
    chunks_skipped: int = 0
    chunks_deleted: int = 0
    # listed as embedded by the ledger but missing from the sink (its data deleted, its state
    # kept): forgotten at the start of the run, so it embedded them again
    chunks_lost: int = 0
    # whose dense vectors a new generation took from the live one instead of encoding them (it
    # differs from it only in its sparse settings: runs/reuse.py)
    chunks_copied: int = 0
    tokens_embedded: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    seconds: float = 0.0  # the run's own clock: from taking the state lock to its end
    startup_seconds: float = 0.0  # before that: checking the source, loading the model
    phase: str = "starting"  # what the run does now: one of PHASES
    phases: list[list[Any]] = field(default_factory=list)  # [phase, seconds since started_at]
    docs_skipped: int = 0  # unchanged since they were embedded: not even chunked
    chunks_planned: int = 0  # chunks the planner admitted for embedding so far
    tokens_planned: int = 0  # their tokens (0 when the engine does not count them: Ray)
    planning_done: bool = False  # the planner has read the whole source: the totals are exact
    device: str = ""
    precision: str = ""
    max_batch_tokens: int = 0
    sparse: str = ""  # the sparse vectors written beside the dense ones ("bm25"), or none
    promotion: dict[str, Any] | None = None  # a new generation's verdict: promoted or held, why
    errors: list[RecordError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)  # Unix time the run began
    # Chunks encoded per token length: token_hist[i] counts lengths in [i*width, (i+1)*width).
    token_hist_width: int = 8
    token_hist: list[int] = field(default_factory=list)
    # [seconds since start, chunks, real tokens, padded tokens], cumulative, one point per
    # timeline_step seconds (the step doubles whenever the list outgrows TIMELINE_POINTS).
    timeline_step: float = 0.5
    timeline: list[list[float]] = field(default_factory=list)

    @property
    def wall_seconds(self) -> float:
        """Start-up plus the run: what the operator waited."""
        return self.startup_seconds + self.seconds

    def enter(self, phase: str) -> None:
        """Note that the run entered `phase` (one of PHASES), and when."""
        self.phase = phase
        self.phases.append([phase, round(time.time() - self.started_at, 3)])

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_embedded / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_embedded / self.seconds if self.seconds else 0.0

    def add_batch(self, lengths: np.ndarray) -> None:
        """Account the token lengths of one encoded batch in the histogram and the timeline.

        Call after `real_tokens`/`padded_tokens` include the batch. O(bins) per batch, no loops
        over chunks."""
        counts = np.bincount(np.asarray(lengths, dtype=np.int64) // self.token_hist_width)
        if len(counts) > len(self.token_hist):
            self.token_hist.extend([0] * (len(counts) - len(self.token_hist)))
        for i in np.flatnonzero(counts):
            self.token_hist[i] += int(counts[i])
        point = [
            round(time.time() - self.started_at, 3),
            sum(self.token_hist),
            self.real_tokens,
            self.padded_tokens,
        ]
        line = self.timeline
        if len(line) >= 2 and point[0] - line[-2][0] < self.timeline_step:
            line[-1] = point  # the last point always shows the latest batch
            return
        line.append(point)
        if len(line) > TIMELINE_POINTS:
            self.timeline = [*line[:-1:2], line[-1]]
            self.timeline_step *= 2

    def count_batch(self, real_tokens: int, padded_tokens: int, lengths: np.ndarray) -> None:
        """Account one encoded batch: its real and padded tokens and its members' lengths."""
        self.batches += 1
        self.real_tokens += real_tokens
        self.padded_tokens += padded_tokens
        self.add_batch(lengths)

    def error(self, source: str, record: str, reason: str) -> None:
        """Record a bad record; the run goes on."""
        self.errors.append(RecordError(source, record, reason))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["padding_efficiency"] = round(self.padding_efficiency, 4)
        d["chunks_per_second"] = round(self.chunks_per_second, 2)
        d["tokens_per_second"] = round(self.tokens_per_second, 1)
        d["seconds"] = round(self.seconds, 3)
        d["startup_seconds"] = round(self.startup_seconds, 3)
        d["wall_seconds"] = round(self.wall_seconds, 3)
        return d

    def write(self, path: str | Path) -> None:
        """Write the report as JSON; a failed write is one StateError naming the file."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        try:
            Path(path).write_text(text)
        except OSError as exc:
            raise StateError(f"writing the run report to {path} failed: {os_reason(exc)}") from exc
