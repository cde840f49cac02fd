"""One run's lifecycle: lock the state, open the sink, let the engine stream the source through
the planner and the encoder into the writer, delete what is stale, promote, and report.

The rules live in runs/planning.py (accept/skip), runs/commit.py (pending -> write -> done, deletes, the
promotion step) and promotion/__init__.py (when a generation may go live); where the work runs is the
engine's business (engines/local.py, engines/ray.py).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedpipe.config import RunConfig
from embedpipe.documents import given
from embedpipe.durable import StateLock
from embedpipe.encoding.encoder import Encoder
from embedpipe.encoding.lazy import AnyEncoder, LazyEncoder, run_identity
from embedpipe.engines.base import Progress, RunContext
from embedpipe.engines.registry import engine_for
from embedpipe.errors import HeldError, Interrupted, StateError, os_reason
from embedpipe.hashing import fingerprint
from embedpipe.index import built_with
from embedpipe.logs import run_ended, run_started
from embedpipe.promotion.gate import LoadEncoder, judge
from embedpipe.promotion.quality import check_gate_queries
from embedpipe.runs import reuse
from embedpipe.runs.commit import Committer, WriterThread
from embedpipe.runs.planning import Planner
from embedpipe.runs.reuse import DENSE_FINGERPRINT
from embedpipe.sinks import open_sink
from embedpipe.sinks.base import Sink
from embedpipe.sinks.sparse import identity as sparse_identity
from embedpipe.sources import open_source
from embedpipe.state.ledger import Ledger, Target, state_dir_for, target_key
from embedpipe.types import Document, RecordError, RunReport

log = logging.getLogger(__name__)

__all__ = ["Pipeline", "Progress"]


@dataclass
class Pipeline:
    """One configured run. Pass `source`, `sink` or `encoder` to use your own components."""

    config: RunConfig
    source: Iterable[Any] | None = None  # Documents, dicts, (id, text) tuples (documents.py)
    sink: Sink | None = None
    encoder: Encoder | LazyEncoder | None = None
    progress: Progress | None = None
    force: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    began: float | None = None  # time.monotonic() when the caller began: start-up counts from it
    load_encoder: LoadEncoder = Encoder  # loads another generation's model (the quality gate)
    origin: str | None = (
        None  # the documents' origin when not the configured source (ledger.LIBRARY)
    )
    report: RunReport | None = field(default=None, init=False)

    def run(self, *, dry_run: bool = False) -> RunReport:
        """Embed what is new, delete what is gone, promote, and return the report."""
        cfg = self.config
        source = given(self.source) if self.source is not None else open_source(cfg.source)
        sink = self.sink or open_sink(cfg.sink)
        state = state_dir_for(sink.uri, cfg.state)
        if cfg.promote.eval is not None:  # a bad queries file is found before the model loads
            check_gate_queries(
                cfg.promote.eval.queries, state, target_key(sink.uri, cfg.sink.collection)
            )
        encoder = self.encoder or Encoder(cfg.model)
        if isinstance(encoder, LazyEncoder):  # what a load teaches is kept for the next run
            encoder.remember_in(state)
        identity, output = run_identity(encoder, dry_run=dry_run)  # a dry run loads no model
        dense_fp = fingerprint(identity, cfg.chunking, **output)  # what the dense vectors need
        fp = fingerprint(identity, cfg.chunking, **output, **sparse_identity(cfg.sink.sparse))
        report = RunReport(
            model=encoder.name,
            fingerprint=fp,
            sink=sink.uri,
            source=str(getattr(source, "uri", "")),
            collection=cfg.sink.collection,
            mode=cfg.mode,
            device=encoder.device,
            precision=encoder.precision,
            max_batch_tokens=cfg.batching.max_batch_tokens,
            docs_total=getattr(source, "total", None),
            dry_run=dry_run,
            sparse=cfg.sink.sparse.kind if cfg.sink.sparse.on else "",
        )
        self.report = report
        try:
            with StateLock(state):
                ledger = Ledger.in_dir(state)
                try:
                    target = Target(target_key(sink.uri, cfg.sink.collection), fp)
                    self._execute(ledger, target, dense_fp, encoder, sink, source, report)
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

    def _execute(
        self,
        ledger: Ledger,
        target: Target,
        dense_fp: str,
        encoder: AnyEncoder,
        sink: Sink,
        source: Iterable[Document | RecordError],
        report: RunReport,
    ) -> None:
        """The run between `begin_run` and `end_run`: every outcome is recorded in the ledger."""
        started, dry_run = time.monotonic(), report.dry_run
        report.startup_seconds = started - self.began if self.began is not None else 0.0
        report.run_id = ledger.begin_run(target)
        run_started(log, report)
        try:
            committer = Committer(
                ledger,
                sink,
                target,
                report.run_id,
                report,
                model=self.config.model.name,
                dim=0 if dry_run else encoder.dim,  # a dry run opens no sink
            )
            if dry_run:
                try:
                    committer.forget_lost(dry_run=True)  # says what a real run would embed again
                    if (donor := reuse.donor(committer, dense_fp)) is not None:
                        report.notes.append(
                            f"only the sparse settings changed: a real run copies the dense "
                            f"vectors of generation {donor[:12]} instead of encoding the chunks "
                            "this dry run counts as planned"
                        )
                finally:
                    sink.abort()  # the check's readers and clients: a dry run holds nothing open
            else:
                committer.open_sink()
                built = built_with(self.config, encoder.dim)
                described = {"fingerprint": target.fingerprint, DENSE_FINGERPRINT: dense_fp}
                sink.describe({**built, **described})
                self._reuse(committer, dense_fp)
            self._stream(committer, encoder, sink, source)
            report.outcome = "dry-run" if dry_run else "done"
        except BaseException as exc:
            error = state_error(exc, ledger.path)
            report.outcome, report.reason = _outcome(error), str(error)
            report.notes.append(f"{type(error).__name__}: {error}")
            if not dry_run:
                sink.abort()
            if error is not exc:
                raise error from exc
            raise
        finally:
            report.seconds = time.monotonic() - started
            report.device, report.precision = encoder.device, encoder.precision  # once it ran
            if encoder.precision_reason:
                report.notes.insert(0, f"precision {encoder.precision_reason}")
            ledger.end_run(report.run_id, report.outcome, report.to_dict())
            run_ended(log, report)

    def _reuse(self, committer: Committer, dense_fp: str) -> None:
        """A new generation that differs from the live one only in its sparse settings starts
        with the live one's dense vectors (runs/reuse.py): the run then encodes only what the
        source changed."""
        source = reuse.donor(committer, dense_fp)
        if source is None:
            return
        committer.phase("writing")
        copied = reuse.copy_dense(committer, source)
        if copied:
            committer.report.notes.append(
                f"only the sparse settings changed: the dense vectors of {copied} chunks were "
                f"copied from generation {source[:12]}, not encoded; their sparse vectors were "
                "computed with the new settings"
            )

    def _stream(
        self,
        committer: Committer,
        encoder: AnyEncoder,
        sink: Sink,
        source: Iterable[Document | RecordError],
    ) -> None:
        """Engine, then deletes, then the promotion step (what was written is good even when
        the deletes were refused, so it is promoted before the refusal is raised)."""
        cfg, report = self.config, committer.report
        planner = Planner(committer.ledger.path, committer.target, report, origin=self.origin)
        committer.progress = self.progress
        try:
            with WriterThread(committer, committer.ledger.path) as writer:
                committer.phase("embedding")
                run = RunContext(
                    cfg,
                    encoder,
                    sink,
                    report,
                    planner,
                    committer,
                    writer,
                    report.dry_run,
                    self.stop,
                    self.progress,
                )
                engine_for(cfg.engine).stream(run, planner.narrow(source))
                committer.phase("writing")  # the writer thread commits what is queued
            if self.stop.is_set():
                raise Interrupted(
                    "stopped on request after committing the batch in flight; re-run to resume"
                )
            stale = planner.stale(full=cfg.mode == "full")
            if report.dry_run:
                report.chunks_deleted = len(stale)
                return
            if stale:
                committer.phase("deleting")
            refused = committer.delete(
                stale, max_fraction=cfg.max_delete_fraction, force=self.force
            )
            planner.remember()
        finally:
            planner.close()
        gate = functools.partial(
            judge,
            sink=sink,
            ledger=committer.ledger,
            target=committer.target,
            encoder=encoder,
            cfg=cfg,
            load=self.load_encoder,
            report=report,
        )
        committer.publish(
            min_fraction=cfg.promote.min_fraction,
            force=self.force,
            keep_previous=cfg.promote.keep_previous,
            gate=gate if cfg.promote.eval else None,
        )
        if refused is not None:
            raise refused


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
