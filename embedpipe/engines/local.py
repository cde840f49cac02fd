"""The local engine: threads on this machine. A planner thread reads, chunks, hashes and asks the
planner what is new; the calling thread packs batches and runs the encoder; the run's writer
thread writes and commits. Bounded queues between them keep memory flat."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from embedpipe.encoding.batching import packed, token_budget
from embedpipe.encoding.chunking import Chunker
from embedpipe.engines.base import RunContext
from embedpipe.faults import crash_point
from embedpipe.hashing import content_hash
from embedpipe.runs.commit import Encoded
from embedpipe.threads import END, Worker, drain, put
from embedpipe.types import EMPTY, Chunk, Document, RecordError

PLAN_BATCH = 256  # chunks handed from the planner thread to the encoder at a time


class LocalEngine:
    """Chunking on a planner thread, encoding on the calling thread (see the module docstring)."""

    def stream(self, run: RunContext, source: Iterable[Document | RecordError]) -> None:
        halt = threading.Event()
        chunk_q: queue.Queue[Any] = queue.Queue(maxsize=64)
        planner = Worker("planner", lambda: _plan(run, source, chunk_q, halt))
        planner.start()
        try:
            _encode(run, drain(chunk_q, planner))
        finally:
            halt.set()  # the planner stops early only if the encoder stopped early
            planner.join()
        planner.reraise()


def _plan(
    run: RunContext,
    source: Iterable[Document | RecordError],
    out: queue.Queue[Any],
    halt: threading.Event,
) -> None:
    """Planner thread: documents -> chunks with hashes, minus what the ledger already holds."""
    fp, plan = run.planner.target.fingerprint, run.planner
    chunks = _chunked(run, _admitted(run, source, halt))
    for doc_id, group in itertools.groupby(chunks, key=lambda c: c.doc_id):
        known = plan.known(doc_id)
        fresh: list[Chunk] = []
        count = 0
        for chunk in group:  # streamed: a giant document never sits in memory as chunks
            count += 1
            chunk.content_hash = content_hash(fp, chunk.text)
            if plan.fresh(known, chunk.index, chunk.content_hash):
                fresh.append(chunk)
                run.report.tokens_planned += chunk.token_count
            if len(fresh) >= PLAN_BATCH:
                if not put(out, fresh, None, halt):
                    return
                fresh = []
        plan.chunked(doc_id, count)
        if fresh and not put(out, fresh, None, halt):
            return
        crash_point("plan")
    run.report.planning_done = not halt.is_set()  # the progress total is exact from here
    put(out, END, None, halt)


def _admitted(
    run: RunContext, source: Iterable[Document | RecordError], halt: threading.Event
) -> Iterator[Document]:
    """The documents of `source` the planner admits, in order; bad records counted."""
    fp = run.planner.target.fingerprint
    for item in source:
        if halt.is_set():
            return
        if isinstance(item, RecordError):
            run.planner.failed(item)
        elif not item.text.strip():  # as the file sources say it (a document passed from Python)
            run.planner.failed(RecordError(item.source, item.id, EMPTY))
        elif run.planner.admit(item.id, item.source, content_hash(fp, item.text)):
            yield item


def _chunked(run: RunContext, docs: Iterator[Document]) -> Iterator[Chunk]:
    """The chunks of the admitted documents; the tokenizer loads only when a first document
    needs chunking (alone, without the model, when the encoder is a LazyEncoder)."""
    first = next(docs, None)
    if first is None:
        return
    chunker = Chunker.for_run(
        run.encoder.tokenizer, run.config.chunking, run.config.model, run.encoder.max_seq_length
    )
    yield from chunker.chunk_many(itertools.chain([first], docs))


def _encode(run: RunContext, stream: Iterator[Chunk]) -> None:
    """Calling thread: pack batches and run the model, handing vectors to the writer. Nothing is
    loaded when no chunk needs embedding, nor in a dry run, which only counts the chunks."""
    first = next(stream, None)
    if first is None:
        return
    report, encoder = run.report, run.encoder
    if run.dry_run:  # batching would ask the model for its token budget
        report.chunks_embedded += 1 + sum(1 for _ in stream)
        return
    chunks = itertools.chain([first], stream)
    report.max_batch_tokens = token_budget(run.config.batching, encoder.batch_token_budget)
    for batch in packed(chunks, run.config.batching, report.max_batch_tokens, encoder.pad_id):
        vectors = encoder.encode_batch(batch)
        report.count_batch(batch.real_tokens, batch.padded_tokens, batch.attention_mask.sum(axis=1))
        tokens = sum(c.token_count for c in batch.chunks)
        if not run.writer.put(Encoded(batch.chunks, tokens, vectors)) or not run.tick():
            break
    if encoder.oom_backoffs:
        report.notes.append(
            f"CUDA out of memory {encoder.oom_backoffs}x: batches capped at "
            f"{encoder.token_cap} tokens for the rest of the run"
        )
