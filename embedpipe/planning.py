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

from embedpipe.ledger import DONE, Ledger, Target
from embedpipe.logs import record_error
from embedpipe.types import RecordError, RunReport

log = logging.getLogger(__name__)

Known = dict[int, tuple[str, int]]  # chunk_index -> (content_hash, state) the ledger holds


class Seen:
    """What one run saw, on a ledger connection of its own: each document once (a second
    occurrence of an id is refused), with its hash and chunk count. A TEMP table, private to
    this connection and taking no write lock, so the rules that read it (stale chunks, documents
    to remember) go through this object and nothing else."""

    def __init__(self, path: str | Path, target: Target) -> None:
        self.ledger = Ledger(path)
        self.target = target
        self.ledger.db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS seen "
            "(doc_id TEXT PRIMARY KEY, n_chunks INTEGER, doc_hash TEXT) WITHOUT ROWID"
        )
        self.ledger.db.execute("DELETE FROM temp.seen")

    def add(self, doc_id: str, doc_hash: str | None = None) -> bool:
        """Note a document; False when this run already saw the id (a duplicate)."""
        cur = self.ledger.db.execute(
            "INSERT OR IGNORE INTO temp.seen VALUES (?, NULL, ?)", (doc_id, doc_hash)
        )
        return cur.rowcount == 1

    def set_chunks(self, doc_id: str, n_chunks: int) -> None:
        self.ledger.db.execute(
            "UPDATE temp.seen SET n_chunks = ? WHERE doc_id = ?", (n_chunks, doc_id)
        )

    def stale(self, *, full: bool) -> list[str]:
        """Chunks the ledger holds that this run's source no longer has.

        Always: indexes at or beyond a seen document's new chunk count. With `full`, also every
        chunk of a document the source no longer lists. A document seen with an unknown count
        (it failed to read) keeps what it had.
        """
        args = (self.target.key, self.target.fingerprint)
        beyond = self.ledger.db.execute(
            "SELECT c.chunk_id FROM chunks c JOIN temp.seen s ON c.doc_id = s.doc_id "
            "WHERE c.target = ? AND c.fingerprint = ? AND s.n_chunks IS NOT NULL "
            "AND c.chunk_index >= s.n_chunks",
            args,
        ).fetchall()
        gone: list[tuple[str]] = []
        if full:
            gone = self.ledger.db.execute(
                "SELECT chunk_id FROM chunks WHERE target = ? AND fingerprint = ? "
                "AND doc_id NOT IN (SELECT doc_id FROM temp.seen)",
                args,
            ).fetchall()
        return [cid for (cid,) in beyond + gone]

    def remember(self) -> None:
        """Record the hash and chunk count of every document this run read; `complete_docs`
        decides at read time which of them count as unchanged (every chunk done)."""
        with self.ledger.transaction():
            self.ledger.db.execute(
                "INSERT OR REPLACE INTO docs SELECT ?, ?, doc_id, doc_hash, n_chunks "
                "FROM temp.seen WHERE doc_hash IS NOT NULL AND n_chunks IS NOT NULL",
                (self.target.key, self.target.fingerprint),
            )

    def close(self) -> None:
        self.ledger.close()


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
