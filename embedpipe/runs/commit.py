"""Exactly once, written once for every engine: pending -> sink write (acknowledged, retried) ->
done per batch, on one writer thread; after all writes the delete wave and its guard; then the
promotion step that makes the run's generation live, or holds it.

The order is the contract of docs/architecture.md (Data flow; crash safety): a crash between the sink's acknowledgement and the
ledger's commit re-embeds that batch (point ids are idempotent), never loses or doubles a vector.
"""

from __future__ import annotations

import functools
import logging
import queue
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from embedpipe.errors import DeleteGuardError, HeldError, SinkError, TransientSinkError, os_reason
from embedpipe.faults import crash_point
from embedpipe.logs import event
from embedpipe.promotion import (
    Verdict,
    drop_generation,
    finish_drops,
    held_message,
    relink,
    verdict,
)
from embedpipe.sinks.base import Sink
from embedpipe.state.ledger import DONE, PENDING, Ledger, Target
from embedpipe.threads import END, Worker, put
from embedpipe.types import Chunk, Embedded, RunReport

log = logging.getLogger(__name__)

T = TypeVar("T")
Gate = Callable[[Verdict], Verdict]  # judges a new generation that passed the documents rule
DELETE_BATCH = 1000


@dataclass
class Encoded:
    """A batch an engine encoded: its chunks, their token count, and their vectors. `vectors` is
    None when another process wrote them to the sink and saw them acknowledged (they were marked
    pending before it got them): committing it then only marks them done."""

    chunks: list[Chunk]
    tokens: int
    vectors: np.ndarray | None = None


class Committer:
    """One run's writes, deletes and promotion into one sink, recorded in one ledger."""

    def __init__(
        self,
        ledger: Ledger,
        sink: Sink,
        target: Target,
        run_id: int,
        report: RunReport,
        *,
        model: str | None,
        dim: int,
    ) -> None:
        self.ledger, self.sink, self.target, self.run_id = ledger, sink, target, run_id
        self.report, self.model, self.dim = report, model, dim
        self.progress: Callable[[RunReport], None] | None = None  # told at every phase

    def phase(self, name: str) -> None:
        """Enter a named phase of the run (types.PHASES) and tell the progress callback."""
        self.report.enter(name)
        if self.progress is not None:
            self.progress(self.report)

    def open_sink(self) -> None:
        """Re-derive the ledger's live pointer from the sink (a crash between the sink's swap and
        the ledger's may have left them apart), note the generation, then open it."""
        served = retry(self.sink.live_fingerprint, "read", self.sink)
        fixed = relink(self.ledger, self.target.key, served)
        if fixed is not None:
            event(log, "relink", f"the ledger's live pointer now names {fixed[:12]}, as the sink")
        self.forget_lost()
        self.ledger.begin_generation(self.target, self.model, self.dim)
        retry(lambda: self.sink.open(self.dim, self.target.fingerprint), "open", self.sink)

    def forget_lost(self, *, dry_run: bool = False) -> None:
        """Trust the ledger only as far as the sink bears it out: what it lists as done in the
        run's generation and in the live one must be in the sink. Each is checked by a cheap
        count; when the sink holds fewer points (its data deleted and its state kept, a restore
        from an older backup), the chunks it lacks are forgotten, all of them without a scan
        when it holds none, so this run embeds them again instead of skipping them. The
        generations and the live pointer stay, so promotion judges as before. A sink that
        cannot be read fails the run (transient errors retried), and nothing is forgotten.
        A dry run forgets nothing: it says what a real run would embed again."""
        live = self.ledger.live(self.target.key)
        checked = {self.target.fingerprint, *([live["fingerprint"]] if live else [])}
        for fingerprint in sorted(checked):
            target = Target(self.target.key, fingerprint)
            claimed = self.ledger.count(target)
            if claimed == 0:
                continue
            held = retry(functools.partial(self.sink.count, fingerprint), "count", self.sink)
            if held >= claimed:
                continue
            if dry_run:
                self._would_lose(fingerprint, claimed, held)
                continue
            lost = retry(functools.partial(self._forget_missing, target, held), "read", self.sink)
            if lost:
                self._lost(fingerprint, lost, claimed, held)

    def _forget_missing(self, target: Target, held: int) -> int:
        """Forget what the sink lacks of `target` (read afresh on every retry); all when it
        holds nothing."""
        present = self.sink.chunk_ids(target.fingerprint) if held else ()
        return self.ledger.forget_missing(target, present)

    def _would_lose(self, fingerprint: str, claimed: int, held: int) -> None:
        """A dry run's word on a sink that holds fewer chunks than the ledger lists."""
        message = (
            f"the sink {self.sink.uri} holds {held:,} of the {claimed:,} chunks of generation "
            f"{fingerprint[:12]} that the ledger at {self.ledger.path} lists as embedded: a real "
            "run forgets those it lacks and embeds them again (this dry run's counts trust the "
            "ledger)"
        )
        self._stale(message, fingerprint, claimed, held, claimed - held)

    def _lost(self, fingerprint: str, lost: int, claimed: int, held: int) -> None:
        """Say, in the report and the log, what the ledger listed that the sink had lost."""
        self.report.chunks_lost += lost
        what = "holds none" if held == 0 else f"lacks {lost:,}"
        then = "so this run embeds again those its source still has"
        if fingerprint != self.target.fingerprint:
            then = f"and this run builds generation {self.target.fingerprint[:12]} in its place"
        message = (
            f"the sink {self.sink.uri} {what} of the {claimed:,} chunks of generation "
            f"{fingerprint[:12]} that the ledger at {self.ledger.path} lists as embedded (was "
            "the sink's data deleted or restored, and its state kept?): the ledger no longer "
            f"lists {'them' if held == 0 else 'those'}, {then}"
        )
        self._stale(message, fingerprint, claimed, held, lost)

    def _stale(self, message: str, fingerprint: str, claimed: int, held: int, lost: int) -> None:
        """The report's note and the log's `ledger_stale` event for a sink short of its ledger."""
        self.report.notes.append(message)
        event(
            log,
            "ledger_stale",
            message,
            level=logging.WARNING,
            sink=self.sink.uri,
            generation=fingerprint,
            claimed=claimed,
            in_sink=held,
            lost=lost,
        )

    def pending(self, chunks: list[Chunk]) -> None:
        """Mark chunks another process will write as pending, before it gets them."""
        self.ledger.mark(self.target, self.run_id, chunks, PENDING)

    def commit(self, ledger: Ledger, item: Encoded, *, copied: bool = False) -> None:
        """Write one batch (unless written elsewhere) and mark it done, on `ledger`'s connection;
        `copied`: its vectors were not encoded but taken from another generation (counted as
        such)."""
        if item.vectors is not None:
            ledger.mark(self.target, self.run_id, item.chunks, PENDING)
            embedded = Embedded(item.chunks, item.vectors)
            retry(functools.partial(self.sink.write, embedded), "write", self.sink)
        crash_point("sink-write")
        ledger.mark(self.target, self.run_id, item.chunks, DONE)
        crash_point("ledger-commit")
        if copied:
            self.report.chunks_copied += len(item.chunks)
            return
        self.report.chunks_embedded += len(item.chunks)
        self.report.tokens_embedded += item.tokens

    def delete(
        self, stale: list[str], *, max_fraction: float, force: bool
    ) -> DeleteGuardError | None:
        """After all writes: remove chunks the source no longer has, sink first, then ledger.

        Returns (does not raise) the guard's refusal, so the run still commits its writes.
        """
        self.report.chunks_deleted = len(stale)
        if not stale:
            return None
        held = max(self.ledger.count(self.target, state=None), 1)
        share = len(stale) / held
        if share > max_fraction and not force:
            self.report.chunks_deleted = 0
            return DeleteGuardError(
                f"This run would delete {len(stale)} of {held} chunks ({share:.0%}), more than "
                f"max_delete_fraction={max_fraction:.0%}: is the source empty or "
                "unmounted? Check it, or pass --force to delete anyway"
            )
        for start in range(0, len(stale), DELETE_BATCH):
            part = stale[start : start + DELETE_BATCH]
            retry(functools.partial(self.sink.delete, part), "delete", self.sink)
            crash_point("sink-delete")
            self.ledger.forget(self.target, part)
            event(log, "delete", f"deleted {len(part)} stale chunks", chunks=len(part))
        return None

    def publish(
        self, *, min_fraction: float, force: bool, keep_previous: int, gate: Gate | None = None
    ) -> None:
        """The promotion step. In place: close (publish) and done. A new generation: close it
        staged, judge it (the documents rule, then the quality `gate` if any), and either hold
        it (HeldError) or swap it in, point the ledger at it, and drop previous generations
        past `keep_previous`."""
        served = retry(self.sink.live_fingerprint, "read", self.sink)
        v = verdict(self.ledger, self.target, served, min_fraction=min_fraction, force=force)
        crash_point("close")
        self.phase("building index")  # the sink's close: flush and build
        retry(functools.partial(self.sink.close, promote=v.in_place), "close", self.sink)
        if not v.in_place:
            self.ledger.stage(self.target)
            if gate is not None and v.promote:
                v = gate(v)
        self.report.promotion = v.to_dict()
        if not v.promote:
            raise HeldError(held_message(v, self.target.fingerprint))
        self.phase("swapping")
        if not v.in_place:
            retry(functools.partial(self.sink.promote, self.target.fingerprint), "swap", self.sink)
        crash_point("set-live")
        self.ledger.set_live(self.target, self.model, self.dim)
        self.prune(keep_previous)

    def prune(self, keep_previous: int) -> None:
        """Drop the previous generations past the `keep_previous` most recent: sink, then ledger."""
        key = self.target.key
        retry(functools.partial(finish_drops, self.sink, self.ledger, key), "drop", self.sink)
        for fingerprint in self.ledger.previous_beyond(key, keep_previous):
            drop = functools.partial(
                drop_generation, self.sink, self.ledger, Target(key, fingerprint)
            )
            retry(drop, "drop", self.sink)


class WriterThread:
    """The writer thread: takes Encoded batches from a bounded queue and commits them, one at a
    time, on a ledger connection of its own. Use as a context manager around the engine."""

    def __init__(self, committer: Committer, ledger_path: Path, maxsize: int = 4) -> None:
        self.committer, self.ledger_path = committer, ledger_path
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.worker = Worker("writer", self._run)

    def put(self, item: Encoded) -> bool:
        """Hand a batch over; False when the writer has died (the engine should stop)."""
        return put(self.queue, item, self.worker)

    def __enter__(self) -> WriterThread:
        self.worker.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        put(self.queue, END, self.worker)
        self.worker.join()
        if kind is None:
            self.worker.reraise()

    def _run(self) -> None:
        ledger = Ledger(self.ledger_path)
        try:
            while (item := self.queue.get()) is not END:
                self.committer.commit(ledger, item)
        finally:
            ledger.close()


def retry(
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
                log,
                "retry",
                f"sink {what} failed ({exc}); retry {attempt}/{attempts - 1} in {delay:.1f}s",
                level=logging.WARNING,
                action=what,
                attempt=attempt,
                error=str(exc),
                delay_s=delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
