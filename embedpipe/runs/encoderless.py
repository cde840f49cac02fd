"""Changes to an index that need no encoder, made as a run is: under the state lock, recorded in
the ledger's runs, through the Committer's order (pending -> sink write -> done; sink delete,
then ledger) and its promotion step. `export` copies vectors that exist already; the framework
adapters delete whole documents with `delete_documents`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from embedpipe.config import RunConfig
from embedpipe.durable import StateLock
from embedpipe.errors import HeldError, SinkError
from embedpipe.runs.commit import Committer
from embedpipe.sinks.base import Sink
from embedpipe.state.ledger import (
    Ledger,
    Named,
    Target,
    named_documents,
    state_dir_for,
    target_key,
)
from embedpipe.types import RunReport

Progress = Callable[[RunReport], None]


@contextmanager
def direct_run(
    sink: Sink,
    config: RunConfig,
    fingerprint: str,
    *,
    dim: int,
    model: str | None,
    report: RunReport,
    force: bool = False,
    progress: Progress | None = None,
) -> Iterator[Committer]:
    """A run into `sink`'s generation `fingerprint` whose writes and deletes the caller makes
    through the yielded Committer; on leaving, the promotion step (a new generation goes live
    when the rule allows, or `force`) and the run's outcome in the ledger."""
    state = state_dir_for(sink.uri, config.state)
    with StateLock(state):
        ledger = Ledger.in_dir(state)
        try:
            target = Target(target_key(sink.uri, config.sink.collection), fingerprint)
            report.run_id = ledger.begin_run(target)
            started = time.monotonic()
            committer = Committer(ledger, sink, target, report.run_id, report, model=model, dim=dim)
            committer.progress = progress
            try:
                committer.open_sink()
                try:
                    yield committer
                    committer.publish(
                        min_fraction=config.promote.min_fraction,
                        force=force,
                        keep_previous=config.promote.keep_previous,
                    )
                finally:
                    sink.abort()  # after close() a no-op; else the run stays resumable
                report.outcome = "done"
            except BaseException as exc:
                report.outcome = "held" if isinstance(exc, HeldError) else "failed"
                report.reason = str(exc)
                raise
            finally:
                report.seconds = time.monotonic() - started
                ledger.end_run(report.run_id, report.outcome, report.to_dict())
        finally:
            ledger.close()


def delete_documents(
    sink: Sink,
    config: RunConfig,
    doc_ids: Sequence[str],
    *,
    fingerprint: str,
    dim: int,
    model: str | None,
) -> int:
    """Delete every chunk of these documents from the live generation and the ledger (sink
    first); returns how many chunks went. Ids the index lacks are fine."""
    gone, _ = delete_named(
        sink, config, Named(doc_ids), fingerprint=fingerprint, dim=dim, model=model, strict=False
    )
    return gone


def delete_named(
    sink: Sink,
    config: RunConfig,
    named: Named,
    *,
    fingerprint: str,
    dim: int,
    model: str | None,
    strict: bool,
) -> tuple[int, list[str]]:
    """Delete every chunk of the documents `named` names from the live generation and the
    ledger (sink first), as a run recorded in the ledger; (chunks deleted, ids that named
    nothing). `strict`: when some id names nothing, delete nothing."""
    report = RunReport(sink=sink.uri, collection=config.sink.collection, fingerprint=fingerprint)
    with direct_run(sink, config, fingerprint, dim=dim, model=model, report=report) as run:
        if run.target.fingerprint != fingerprint:
            raise SinkError("the index changed while deleting: retry")
        docs, unknown = named_documents(run.ledger, run.target, named)
        if unknown and strict:
            docs = []
            report.notes.append(f"nothing deleted: {len(unknown)} ids name no document")
        wanted = set(docs)
        gone = [c for c in run.ledger.done_hashes(run.target) if c.rpartition("#")[0] in wanted]
        refused = run.delete(gone, max_fraction=1.0, force=True)
        assert refused is None  # force: never refused
    return report.chunks_deleted, unknown
