"""The run's rules for documents and chunks, written once for every engine.

Both engines ask the same questions, in source order: is this record readable, is it the first
document with its id, is it unchanged since it was last embedded (then it is not even chunked),
and which of its chunks does the ledger already hold with the same hash. The answers are counted
in the run report here, and the run's seen-set (what the source still has) is kept here too, so
the delete wave after the run knows what is stale.
"""

from __future__ import annotations

import logging
from pathlib import Path

from embedpipe.ledger import DONE, Seen, Target
from embedpipe.logs import record_error
from embedpipe.types import RecordError, RunReport

log = logging.getLogger(__name__)

Known = dict[int, tuple[str, int]]  # chunk_index -> (content_hash, state) the ledger holds


class Planner:
    """Accept or skip each document and chunk against the ledger; count what it decides."""

    def __init__(self, ledger_path: str | Path, target: Target, report: RunReport) -> None:
        self.seen = Seen(ledger_path, target)
        self.ledger = self.seen.ledger  # reads go through the seen-set's own connection
        self.target = target
        self.report = report

    def failed(self, error: RecordError) -> None:
        """Count and log a record that could not be read; a known document keeps what it had."""
        self.report.errors.append(error)
        record_error(log, error)
        self.report.docs_failed += 1
        if self.ledger.doc_chunks(self.target, error.record):
            self.seen.add(error.record)

    def admit(self, doc_id: str, source: str, doc_hash: str) -> bool:
        """True when a readable document must be chunked: it is the first with its id (else a
        counted error) and not unchanged since it was last embedded (else its chunks are counted
        as skipped, without chunking it)."""
        if not self.seen.add(doc_id, doc_hash):
            self.report.error(
                source, doc_id, "duplicate document id: the first occurrence was kept"
            )
            record_error(log, self.report.errors[-1])
            self.report.docs_failed += 1
            return False
        self.report.docs_read += 1
        unchanged = self.ledger.unchanged_doc(self.target, doc_id, doc_hash)
        if unchanged is None:
            return True
        self.chunked(doc_id, unchanged)
        self.report.chunks_skipped += unchanged
        return False

    def known(self, doc_id: str) -> Known:
        """What the ledger holds for an admitted document's chunks."""
        return self.ledger.doc_chunks(self.target, doc_id)

    def fresh(self, known: Known, index: int, content_hash: str) -> bool:
        """True when a chunk must be embedded; a chunk done with the same hash is skipped."""
        if known.get(index) == (content_hash, DONE):
            self.report.chunks_skipped += 1
            return False
        return True

    def chunked(self, doc_id: str, n_chunks: int) -> None:
        """Record how many chunks a document has now (beyond that, its old chunks are stale)."""
        self.seen.set_chunks(doc_id, n_chunks)
        self.report.chunks_total += n_chunks

    def stale(self, *, full: bool) -> list[str]:
        """After the run: chunk ids the source no longer has (see `Seen.stale`)."""
        return self.seen.stale(full=full)

    def remember(self) -> None:
        """After the run's writes: remember each document's hash for the next run's skips."""
        self.seen.remember()

    def close(self) -> None:
        self.seen.close()
