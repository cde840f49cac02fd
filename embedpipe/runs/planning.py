"""The run's rules for documents and chunks, written once for every engine.

Both engines ask the same questions, in source order: is this record readable, is it the first
document with its id, is it unchanged since it was last embedded (then it is not even chunked),
and which of its chunks does the ledger already hold with the same hash. The answers are counted
in the run report here, and the run's seen-set (what the source still has) is kept here too, so
the delete wave after the run knows what is stale.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from embedpipe.logs import record_error
from embedpipe.sources.base import Source
from embedpipe.state.ledger import DONE, Ledger, Target
from embedpipe.types import Document, RecordError, RunReport

log = logging.getLogger(__name__)

Known = dict[int, tuple[str, int]]  # chunk_index -> (content_hash, state) the ledger holds


class Seen:
    """What one run saw, on a ledger connection of its own: each document once (a second
    occurrence of an id is refused), with its hash and chunk count. The ledger keeps it in a
    TEMP table, private to this connection and taking no write lock, so the rules that read it
    (stale chunks, documents to remember) go through this object and nothing else."""

    def __init__(self, path: str | Path, target: Target, origin: str | None = None) -> None:
        self.ledger = Ledger(path)
        self.target = target
        self.origin = origin  # recorded with each document remembered (None: the source)
        self.ledger.start_seen()

    def add(self, doc_id: str, doc_hash: str | None = None) -> bool:
        """Note a document; False when this run already saw the id (a duplicate)."""
        return self.ledger.see(doc_id, doc_hash)

    def set_chunks(self, doc_id: str, n_chunks: int) -> None:
        self.ledger.seen_chunks(doc_id, n_chunks)

    def stale(self, *, full: bool) -> list[str]:
        """Chunks the ledger holds that this run's source no longer has.

        Always: indexes at or beyond a seen document's new chunk count. With `full`, also every
        chunk of a document the source no longer lists, unless the library added it (its origin
        is LIBRARY: no source lists it, so none can say it is gone). A document seen with an
        unknown count (it failed to read) keeps what it had.
        """
        return self.ledger.stale(self.target, full=full)

    def remember(self) -> None:
        """Record the hash and chunk count of every document this run read; `complete_docs`
        decides at read time which of them count as unchanged (every chunk done)."""
        self.ledger.remember_seen(self.target, self.origin)

    def close(self) -> None:
        self.ledger.close()


class Planner:
    """Accept or skip each document and chunk against the ledger; count what it decides."""

    def __init__(
        self,
        ledger_path: str | Path,
        target: Target,
        report: RunReport,
        origin: str | None = None,
    ) -> None:
        self.seen = Seen(ledger_path, target, origin)
        self.ledger = self.seen.ledger  # reads go through the seen-set's own connection
        self.target = target
        self.report = report
        self.objects: ObjectPlan | None = None  # a bucket source's objects (see `narrow`)

    def narrow(self, source: Iterable[Document | RecordError]) -> Iterable[Document | RecordError]:
        """Before the run: a bucket source (s3://, gs://) without its objects unchanged since
        they were last read whole, fetched not even in part; their documents count as seen and
        their chunks as skipped. Any other source as it is."""
        if not isinstance(source, Source) or source.subset is None:
            return source
        self.objects = ObjectPlan(self.seen, source)
        docs, chunks = self.objects.skip_unchanged()
        skipped = self.objects.skipped
        self.report.chunks_skipped += chunks
        self.report.chunks_total += chunks
        if skipped:
            self.report.notes.append(
                f"{len(skipped)} of {len(source.objects)} objects unchanged since last read "
                f"(ETag): not fetched, {docs} documents and {chunks} chunks skipped"
            )
        narrowed = source.subset([o for o in source.objects if o.uri not in skipped])
        self.report.docs_total = narrowed.total
        return narrowed

    def failed(self, error: RecordError) -> None:
        """Count and log a record that could not be read; a known document keeps what it had,
        unless the record is excluded (a link out of the source folder): then its chunks go."""
        self.report.errors.append(error)
        record_error(log, error)
        self.report.docs_failed += 1
        if self.objects is not None:
            self.objects.failed(error)
        if error.excluded:  # left out on purpose: what it held goes, in any mode
            self.seen.add(error.record)
            self.seen.set_chunks(error.record, 0)
        elif self.ledger.doc_chunks(self.target, error.record):
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
            if self.objects is not None:
                self.objects.failed(self.report.errors[-1])
            return False
        if self.objects is not None:
            self.objects.admitted(doc_id, source)
        self.report.docs_read += 1
        unchanged = self.ledger.unchanged_doc(self.target, doc_id, doc_hash)
        if unchanged is None:
            return True
        self.chunked(doc_id, unchanged)
        self.report.chunks_skipped += unchanged
        self.report.docs_skipped += 1
        return False

    def known(self, doc_id: str) -> Known:
        """What the ledger holds for an admitted document's chunks."""
        return self.ledger.doc_chunks(self.target, doc_id)

    def fresh(self, known: Known, index: int, content_hash: str) -> bool:
        """True when a chunk must be embedded; a chunk done with the same hash is skipped."""
        if known.get(index) == (content_hash, DONE):
            self.report.chunks_skipped += 1
            return False
        self.report.chunks_planned += 1
        return True

    def chunked(self, doc_id: str, n_chunks: int) -> None:
        """Record how many chunks a document has now (beyond that, its old chunks are stale)."""
        self.seen.set_chunks(doc_id, n_chunks)
        self.report.chunks_total += n_chunks

    def stale(self, *, full: bool) -> list[str]:
        """After the run: chunk ids the source no longer has (see `Seen.stale`); the documents
        of an object that failed to read keep what they had."""
        if self.objects is not None:
            self.objects.keep_failed()
        return self.seen.stale(full=full)

    def remember(self) -> None:
        """After the run's writes: remember each document's hash (and each object read whole,
        its version) for the next run's skips."""
        self.seen.remember()
        if self.objects is not None:
            self.objects.remember()

    def close(self) -> None:
        self.seen.close()


class ObjectPlan:
    """The objects of a bucket source in one run, on the seen-set's connection: which are as
    last read whole (same version, every document complete) and so skipped unread, which
    documents each read one holds, which failed (their documents keep what they had)."""

    def __init__(self, seen: Seen, source: Source) -> None:
        self.seen, self.ledger, self.target = seen, seen.ledger, seen.target
        self.listed = {o.uri: o.version for o in source.objects}
        self.read_versions = source.read_versions  # filled as the objects are read
        self.by_name = {o.name: o.uri for o in source.objects}  # how documents and errors name it
        self.per_document = source.kind == "dir"  # a document file: named by its id
        self.skipped: set[str] = set()
        self.broken: set[str] = set()
        self.ledger.start_objects(self.listed)

    def skip_unchanged(self) -> tuple[int, int]:
        """Mark the documents of every unchanged object seen, with their chunk counts, so
        neither full mode nor the delete guard takes them for gone; (documents, chunks)."""
        self.skipped, docs, chunks = self.ledger.skip_unchanged_objects(self.target)
        return docs, chunks

    def admitted(self, doc_id: str, source: str) -> None:
        """A document read this run: note the object it came from."""
        uri = self.by_name.get(doc_id if self.per_document else source)
        if uri is not None:
            self.ledger.see_object(doc_id, uri)

    def failed(self, error: RecordError) -> None:
        """A record that could not be read: its object is not remembered as read whole."""
        uri = self.by_name.get(error.record if self.per_document else error.source)
        if uri is not None:
            self.broken.add(uri)

    def keep_failed(self) -> None:
        """The documents an object held when last read whole, for each object that failed now:
        seen with an unknown count, so they keep what they had."""
        self.ledger.keep_failed_objects(self.target, self.broken)

    def remember(self) -> None:
        """After the run's writes: each object read whole, the version it was read at and its
        documents. The ledger forgets the others' versions (they are read next time), but keeps
        which documents a failed object held (they keep what they had while it fails)."""
        # The version each object was read at, where the read saw one (an object rewritten
        # between the listing and the read holds what was read, not what was listed).
        done = self.skipped | self.broken
        read = {u: self.read_versions.get(u, v) for u, v in self.listed.items() if u not in done}
        self.ledger.remember_objects(self.target, read, self.broken)
