"""Wires source -> chunker -> planner -> batcher -> encoder -> sink -> ledger, and reports the run.

Three threads: a planner thread reads, chunks, hashes and asks the ledger what is new; the
calling thread packs batches and runs the encoder; a writer thread writes to the sink and commits
the ledger. Bounded queues between them keep memory flat and let the model never wait for I/O.
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from embedpipe.batching import batches
from embedpipe.chunking import Chunker
from embedpipe.commit import held_message, relink, verdict
from embedpipe.config import RunConfig
from embedpipe.encoder import Encoder
from embedpipe.errors import (
    DeleteGuardError,
    HeldError,
    Interrupted,
    SinkError,
    StateError,
    TransientSinkError,
    os_reason,
)
from embedpipe.faults import crash_point
from embedpipe.hashing import content_hash, fingerprint
from embedpipe.ledger import DONE, PENDING, Ledger, StateLock, Target
from embedpipe.logs import event, record_error, run_ended, run_started
from embedpipe.redact import redact_uri
from embedpipe.sinks import LOCAL_SCHEMES, open_sink
from embedpipe.sinks.base import Sink
from embedpipe.sources import open_source
from embedpipe.types import Chunk, Document, Embedded, RecordError, RunReport

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()
Progress = Callable[[RunReport], None]


def state_dir_for(sink_uri: str, state: str | None) -> Path:
    """Where the ledger lives: --state, else next to a local sink, else ./.embedpipe/state."""
    if state:
        return Path(state)
    scheme, _, rest = sink_uri.partition(":")
    if scheme in LOCAL_SCHEMES and rest:
        return Path(rest).expanduser().absolute().with_name(Path(rest).name + ".state")
    # A server: named by host, port and path; never by its credentials (userinfo, api_key).
    place = urlsplit(rest)
    where = f"{place.hostname or ''}{':' + str(place.port) if place.port else ''}{place.path.rstrip('/')}"
    return Path(".embedpipe/state") / where.lstrip("/").replace(":", "_").replace("/", "_")


def target_key(sink_uri: str, collection: str) -> str:
    """A sink's identity in the ledger: local paths made absolute so cwd does not matter."""
    scheme, _, rest = sink_uri.partition(":")
    if scheme in LOCAL_SCHEMES and rest:
        rest = str(Path(rest).expanduser().absolute())
    return redact_uri(f"{scheme}:{rest}") + f"|{collection}"


@dataclass
class Pipeline:
    """One configured run. Pass `source`, `sink` or `encoder` to use your own components."""

    config: RunConfig
    source: Iterable[Document | RecordError] | None = None
    sink: Sink | None = None
    encoder: Encoder | None = None
    progress: Progress | None = None
    force: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    report: RunReport | None = field(default=None, init=False)

    def run(self, *, dry_run: bool = False) -> RunReport:
        """Embed what is new, delete what is gone, and return the report."""
        cfg = self.config
        encoder = self.encoder or Encoder(cfg.model)
        source = self.source if self.source is not None else open_source(cfg.source)
        sink = self.sink or open_sink(cfg.sink)
        fp = fingerprint(encoder.identity(), cfg.chunking, **encoder.output_options())
        report = RunReport(
            model=encoder.name, fingerprint=fp, sink=sink.uri, source=str(getattr(source, "uri", "")),
            collection=cfg.sink.collection, mode=cfg.mode, device=encoder.device,
            precision=encoder.precision, max_batch_tokens=cfg.batching.max_batch_tokens,
            docs_total=getattr(source, "total", None), dry_run=dry_run,
        )  # fmt: skip
        self.report = report
        if encoder.precision_reason:
            report.notes.append(f"precision {encoder.precision_reason}")
        state = state_dir_for(sink.uri, cfg.state)
        try:
            with StateLock(state):
                ledger = Ledger(state / "ledger.sqlite")
                target = Target(target_key(sink.uri, cfg.sink.collection), fp)
                run = _run_class(cfg.engine)(self, encoder, sink, ledger, target, report, dry_run)
                try:
                    run.execute(source)
                finally:
                    ledger.close()
        except BaseException as exc:
            error = state_error(exc, state)
            if report.outcome == "running":  # failed before the run began: a lock, the ledger
                report.outcome, report.reason = "failed", str(error)
            if error is not exc:
                raise error from exc
            raise
        return report


def _run_class(engine: str) -> type[Run]:
    if engine == "ray":
        from embedpipe.engines.ray import RayRun  # imports ray; only when asked for

        return RayRun
    return Run


@dataclass
class RemoteBatch:
    """A batch another process encoded (Ray): its chunks carry no token ids, `tokens` counts them.
    `vectors` is None when that process also wrote them to the sink and saw them acknowledged
    (they were marked pending before it got them): the writer thread then only commits."""

    chunks: list[Chunk]
    tokens: int
    vectors: np.ndarray | None = None


class Run:
    """The state of one execution of a Pipeline on the local engine (engines subclass `_stream`)."""

    def __init__(
        self, pipe: Pipeline, encoder: Encoder, sink: Sink, ledger: Ledger, target: Target,
        report: RunReport, dry_run: bool,
    ) -> None:  # fmt: skip
        self.pipe, self.cfg = pipe, pipe.config
        self.encoder, self.sink, self.ledger, self.target = encoder, sink, ledger, target
        self.report, self.dry_run = report, dry_run
        self.halt = threading.Event()
        self.chunker = Chunker(
            encoder.tokenizer,
            chunk_tokens=self.cfg.chunking.chunk_tokens,
            overlap_tokens=self.cfg.chunking.overlap_tokens,
            max_seq_length=encoder.max_seq_length,
            prefix=self.cfg.model.prefix,
        )

    def execute(self, source: Iterable[Document | RecordError]) -> None:
        report, started = self.report, time.monotonic()
        run_id = self.ledger.begin_run(self.target)
        self.run_id = report.run_id = run_id
        run_started(log, report)
        try:
            if not self.dry_run:
                self._open_sink()
            planner = Ledger(self.ledger.path)
            try:
                planner.start_seen()
                self._stream(source, planner)
                refused = self._delete_stale(planner)
                if not self.dry_run:
                    planner.remember_docs(self.target)
            finally:
                planner.close()
            if not self.dry_run:  # what was written is good even when the deletes were refused
                self._publish()
            if refused is not None:
                raise refused
            report.outcome = "dry-run" if self.dry_run else "done"
        except BaseException as exc:
            error = state_error(exc, self.ledger.path)
            report.outcome = _outcome(error)
            report.reason = str(error)
            report.notes.append(f"{type(error).__name__}: {error}")
            if not self.dry_run:
                self.sink.abort()
            if error is not exc:
                raise error from exc
            raise
        finally:
            report.seconds = time.monotonic() - started
            self.ledger.end_run(run_id, report.outcome, report.to_dict())
            run_ended(log, report)

    def _open_sink(self) -> None:
        """Re-derive the ledger's live pointer from the sink (a crash between the sink's swap and
        the ledger's may have left them apart), note the generation, then open it."""
        served = _retry(self.sink.live_fingerprint, "read", self.sink)
        fixed = relink(self.ledger, self.target.key, served)
        if fixed is not None:
            event(log, "relink", f"the ledger's live pointer now names {fixed[:12]}, as the sink")
        self.ledger.begin_generation(self.target, self.cfg.model.name, self.encoder.dim)
        _retry(lambda: self.sink.open(self.encoder.dim, self.target.fingerprint), "open", self.sink)

    def _publish(self) -> None:
        """The promotion step: close the sink, making its generation live only when `verdict`
        allows, then point the ledger at it; a held generation stays staged (HeldError)."""
        served = _retry(self.sink.live_fingerprint, "read", self.sink)
        v = verdict(
            self.ledger, self.target, served,
            min_fraction=self.cfg.promote.min_fraction, force=self.pipe.force,
        )  # fmt: skip
        self.report.promotion = v.to_dict()
        crash_point("close")
        _retry(functools.partial(self.sink.close, promote=v.promote), "close", self.sink)
        if not v.promote:
            raise HeldError(held_message(v, self.target.fingerprint))
        crash_point("set-live")
        self.ledger.set_live(self.target, self.cfg.model.name, self.encoder.dim)

    # -- the three stages ---------------------------------------------------------------------

    def _stream(self, source: Iterable[Document | RecordError], planner: Ledger) -> None:
        chunk_q: queue.Queue[Any] = queue.Queue(maxsize=64)
        write_q: queue.Queue[Any] = queue.Queue(maxsize=4)
        plan = _Worker("planner", lambda: self._plan(source, planner, chunk_q))
        write = _Worker("writer", lambda: self._write(write_q))
        plan.start()
        write.start()
        try:
            self._encode(_drain(chunk_q, plan), write_q, write)
        finally:
            self.halt.set()  # the planner stops early only if the encoder stopped early
            _put(write_q, _END, write)
            write.join()
            plan.join()
        write.reraise()
        plan.reraise()
        if self.pipe.stop.is_set():
            raise Interrupted(
                "stopped on request after committing the batch in flight; re-run to resume"
            )

    def _plan(
        self, source: Iterable[Document | RecordError], planner: Ledger, out: queue.Queue[Any]
    ) -> None:
        """Planner thread: documents -> chunks with hashes, minus what the ledger already holds."""
        report, fp = self.report, self.target.fingerprint
        docs = self._accepted_docs(source, planner)
        for doc_id, group in itertools.groupby(
            self.chunker.chunk_many(docs), key=lambda c: c.doc_id
        ):
            known = planner.doc_chunks(self.target, doc_id)
            fresh: list[Chunk] = []
            count = 0
            for chunk in group:  # streamed: a giant document never sits in memory as chunks
                count += 1
                chunk.content_hash = content_hash(fp, chunk.text)
                if known.get(chunk.index) == (chunk.content_hash, DONE):
                    report.chunks_skipped += 1
                    continue
                fresh.append(chunk)
                if len(fresh) >= 256:
                    if not _put(out, fresh, None, self.halt):
                        return
                    fresh = []
            planner.set_doc_chunks(doc_id, count)
            report.chunks_total += count
            if fresh and not _put(out, fresh, None, self.halt):
                return
            crash_point("plan")
        _put(out, _END, None, self.halt)

    def _accepted_docs(
        self, source: Iterable[Document | RecordError], planner: Ledger
    ) -> Iterator[Document]:
        for item in source:
            if self.halt.is_set():
                return
            if isinstance(item, RecordError):
                self._failed(item, planner)
                continue
            doc_hash = content_hash(self.target.fingerprint, item.text)
            if not self._first(item.id, item.source, doc_hash, planner):
                continue
            unchanged = planner.unchanged_doc(self.target, item.id, doc_hash)
            if unchanged is not None:  # as last embedded: no need to even chunk it
                self._unchanged(item.id, unchanged, planner)
                continue
            yield item

    def _failed(self, error: RecordError, planner: Ledger) -> None:
        """Count and log a record that could not be read."""
        self.report.errors.append(error)
        record_error(log, error)
        self.report.docs_failed += 1
        if planner.doc_chunks(self.target, error.record):
            planner.see_doc(error.record)  # keep what an unreadable document had

    def _first(self, doc_id: str, source: str, doc_hash: str, planner: Ledger) -> bool:
        """Note a readable document; False (a counted error) when its id was seen before."""
        if not planner.see_doc(doc_id, doc_hash=doc_hash):
            self.report.error(
                source, doc_id, "duplicate document id: the first occurrence was kept"
            )
            record_error(log, self.report.errors[-1])
            self.report.docs_failed += 1
            return False
        self.report.docs_read += 1
        return True

    def _unchanged(self, doc_id: str, n_chunks: int, planner: Ledger) -> None:
        """Count a document skipped whole: its text is as last embedded, every chunk done."""
        planner.set_doc_chunks(doc_id, n_chunks)
        self.report.chunks_total += n_chunks
        self.report.chunks_skipped += n_chunks

    def _encode(self, chunks: Iterator[Chunk], write_q: queue.Queue[Any], write: _Worker) -> None:
        """Calling thread: pack batches and run the model, handing vectors to the writer."""
        report, b = self.report, self.cfg.batching
        if "max_batch_tokens" not in b.model_fields_set:  # on CUDA: sized to free memory
            report.max_batch_tokens = self.encoder.batch_token_budget(b.max_batch_tokens)
        packed = batches(
            chunks, max_batch_tokens=report.max_batch_tokens, window=b.window,
            max_batch_size=b.max_batch_size, pad_id=self.encoder.pad_id,
        )  # fmt: skip
        for batch in packed:
            if self.dry_run:
                report.chunks_embedded += len(batch.chunks)
                continue
            vectors = self.encoder.encode_batch(batch)
            report.batches += 1
            report.real_tokens += batch.real_tokens
            report.padded_tokens += batch.padded_tokens
            report.add_batch(batch.attention_mask.sum(axis=1))
            if not _put(write_q, Embedded(batch.chunks, vectors), write):
                break
            if self.pipe.progress:
                self.pipe.progress(report)
            if self.pipe.stop.is_set():
                break
        if self.encoder.oom_backoffs:
            report.notes.append(
                f"CUDA out of memory {self.encoder.oom_backoffs}x: batches capped at "
                f"{self.encoder.token_cap} tokens for the rest of the run"
            )

    def _write(self, write_q: queue.Queue[Any]) -> None:
        """Writer thread: sink write (acknowledged) -> ledger commit, one batch at a time."""
        ledger = Ledger(self.ledger.path)
        try:
            while (item := write_q.get()) is not _END:
                if isinstance(item, RemoteBatch):
                    tokens = item.tokens
                    todo = None if item.vectors is None else Embedded(item.chunks, item.vectors)
                else:
                    tokens, todo = sum(c.token_count for c in item.chunks), item
                if todo is not None:
                    ledger.mark(self.target, self.run_id, item.chunks, PENDING)
                    _retry(functools.partial(self.sink.write, todo), "write", self.sink)
                crash_point("sink-write")
                ledger.mark(self.target, self.run_id, item.chunks, DONE)
                crash_point("ledger-commit")
                self.report.chunks_embedded += len(item.chunks)
                self.report.tokens_embedded += tokens
        finally:
            ledger.close()

    def _delete_stale(self, planner: Ledger) -> DeleteGuardError | None:
        """After all writes: remove chunks the source no longer has, sink first, then ledger.

        Returns (does not raise) the guard's refusal, so the run still commits its writes.
        """
        stale = planner.stale_chunks(self.target, full=self.cfg.mode == "full")
        self.report.chunks_deleted = len(stale)
        if not stale or self.dry_run:
            return None
        held = max(self.ledger.count(self.target, state=None), 1)
        share = len(stale) / held
        if share > self.cfg.max_delete_fraction and not self.pipe.force:
            self.report.chunks_deleted = 0
            return DeleteGuardError(
                f"This run would delete {len(stale)} of {held} chunks ({share:.0%}), more than "
                f"max_delete_fraction={self.cfg.max_delete_fraction:.0%}: is the source empty or "
                "unmounted? Check it, or pass --force to delete anyway"
            )
        for start in range(0, len(stale), 1000):
            part = stale[start : start + 1000]
            _retry(functools.partial(self.sink.delete, part), "delete", self.sink)
            crash_point("sink-delete")
            self.ledger.forget(self.target, part)
            event(log, "delete", f"deleted {len(part)} stale chunks", chunks=len(part))
        return None


# -- threading helpers ---------------------------------------------------------------------------


class _Worker(threading.Thread):
    """A daemon thread that keeps its exception for the caller to re-raise."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=f"embedpipe-{name}", daemon=True)
        self._fn = target
        self.error: BaseException | None = None
        self.done = False
        self.done_cleanly = False

    def run(self) -> None:
        try:
            self._fn()
            self.done_cleanly = True
        except BaseException as exc:
            self.error = exc
        finally:
            self.done = True

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


def _put(
    q: queue.Queue[Any], item: Any, consumer: _Worker | None, stop: threading.Event | None = None
) -> bool:
    """Put without deadlocking on a consumer that died or a stop request. False when abandoned."""
    while True:
        if consumer is not None and consumer.done and item is not _END:
            return False
        if stop is not None and stop.is_set():
            return False
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            if consumer is not None and consumer.done:
                return False


def _drain(q: queue.Queue[Any], producer: _Worker) -> Iterator[Chunk]:
    """The chunks a producer puts, until its end marker; its exception re-raised here."""
    while True:
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            if producer.done and q.empty():
                producer.reraise()
                return
            continue
        if item is _END:
            return
        yield from item


def _outcome(exc: BaseException) -> str:
    """The report's outcome for a run that ended by `exc`."""
    if isinstance(exc, Interrupted | KeyboardInterrupt):
        return "interrupted"
    return "held" if isinstance(exc, HeldError) else "failed"


def state_error(exc: BaseException, where: Path) -> BaseException:
    """An OS or SQLite failure outside the sink as a one-line StateError naming `where`."""
    if isinstance(exc, OSError):
        return StateError(f"writing embedpipe's state at {where} failed: {os_reason(exc)}")
    if isinstance(exc, sqlite3.Error):
        return StateError(f"the ledger at {where} failed: {exc}")
    return exc


def _retry(
    fn: Callable[[], T], what: str, sink: Sink, attempts: int = 5, base_delay: float = 0.5
) -> T:
    """Run a sink call, retrying transient failures with exponential backoff; an OS error (disk
    full, read-only, permission denied) becomes one SinkError naming the sink."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OSError as exc:
            raise SinkError(f"sink {what} on {sink.uri} failed: {os_reason(exc)}") from exc
        except sqlite3.Error as exc:  # Qdrant local mode keeps its points in SQLite
            raise SinkError(f"sink {what} on {sink.uri} failed: {exc}") from exc
        except TransientSinkError as exc:
            if attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            event(
                log, "retry", f"sink {what} failed ({exc}); retry {attempt}/{attempts - 1} in {delay:.1f}s",
                level=logging.WARNING, action=what, attempt=attempt, error=str(exc), delay_s=delay,
            )  # fmt: skip
            time.sleep(delay)
    raise AssertionError("unreachable")
