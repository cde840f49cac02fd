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
        self.seen, self.db = seen, seen.ledger.db
        self.args = (seen.target.key, seen.target.fingerprint)
        self.listed = {o.uri: o.version for o in source.objects}
        self.read_versions = source.read_versions  # filled as the objects are read
        self.by_name = {o.name: o.uri for o in source.objects}  # how documents and errors name it
        self.per_document = source.kind == "dir"  # a document file: named by its id
        self.skipped: set[str] = set()
        self.broken: set[str] = set()
        for table in (
            "listed (object TEXT PRIMARY KEY, version TEXT, state TEXT)",
            "objects_seen (doc_id TEXT PRIMARY KEY, object TEXT)",
        ):
            self.db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} WITHOUT ROWID")
            self.db.execute(f"DELETE FROM temp.{table.partition(' ')[0]}")
        self.db.executemany(
            "INSERT OR IGNORE INTO temp.listed VALUES (?, ?, 'listed')", self.listed.items()
        )

    def skip_unchanged(self) -> tuple[int, int]:
        """Mark the documents of every unchanged object seen, with their chunk counts, so
        neither full mode nor the delete guard takes them for gone; (documents, chunks).

        Set-based, one pass over the candidates' documents (an index lookup each; `done` is
        complete_docs' rule, inlined because the view is not flattened into this join): a
        nightly listing of 20,000 objects costs about a second, not a query per object."""
        self.db.execute("DROP TABLE IF EXISTS temp.object_candidates")
        self.db.execute(
            "CREATE TEMP TABLE object_candidates AS SELECT od.object, od.doc_id, d.doc_hash, "
            "d.n_chunks, (SELECT COUNT(*) FROM chunks c WHERE c.target = d.target AND "
            "c.fingerprint = d.fingerprint AND c.doc_id = d.doc_id AND c.state = 1 AND "
            "c.chunk_index < d.n_chunks) AS done FROM objects o JOIN temp.listed l "
            "ON l.object = o.object AND l.version = o.version JOIN object_docs od "
            "ON od.target = o.target AND od.fingerprint = o.fingerprint AND od.object = o.object "
            "LEFT JOIN docs d ON d.target = od.target AND d.fingerprint = od.fingerprint AND "
            "d.doc_id = od.doc_id WHERE o.target = ? AND o.fingerprint = ?",
            self.args,
        )
        # An object of no documents (read whole, empty) is unchanged too.
        self.skipped = {
            uri
            for (uri,) in self.db.execute(
                "SELECT o.object FROM objects o JOIN temp.listed l ON l.object = o.object AND "
                "l.version = o.version WHERE o.target = ? AND o.fingerprint = ? AND o.object NOT "
                "IN (SELECT object FROM temp.object_candidates WHERE doc_hash IS NULL OR "
                "done != n_chunks)",
                self.args,
            )
        }
        self.db.executemany(
            "UPDATE temp.listed SET state = 'skipped' WHERE object = ?",
            ((u,) for u in self.skipped),
        )
        kept = (
            "FROM temp.object_candidates c JOIN temp.listed l ON l.object = c.object "
            "WHERE l.state = 'skipped'"
        )
        self.db.execute(
            "INSERT OR IGNORE INTO temp.seen (doc_id, n_chunks, doc_hash) "
            f"SELECT c.doc_id, c.n_chunks, c.doc_hash {kept}"
        )
        docs, chunks = self.db.execute(f"SELECT COUNT(*), TOTAL(c.n_chunks) {kept}").fetchone()
        return int(docs), int(chunks)

    def admitted(self, doc_id: str, source: str) -> None:
        """A document read this run: note the object it came from."""
        uri = self.by_name.get(doc_id if self.per_document else source)
        if uri is not None:
            self.db.execute("INSERT OR IGNORE INTO temp.objects_seen VALUES (?, ?)", (doc_id, uri))

    def failed(self, error: RecordError) -> None:
        """A record that could not be read: its object is not remembered as read whole."""
        uri = self.by_name.get(error.record if self.per_document else error.source)
        if uri is not None:
            self.broken.add(uri)

    def keep_failed(self) -> None:
        """The documents an object held when last read whole, for each object that failed now:
        seen with an unknown count, so they keep what they had."""
        self.db.executemany(
            "INSERT OR IGNORE INTO temp.seen (doc_id, n_chunks, doc_hash) SELECT doc_id, NULL, NULL "
            "FROM object_docs "
            "WHERE target = ? AND fingerprint = ? AND object = ?",
            ((*self.args, uri) for uri in self.broken),
        )

    def remember(self) -> None:
        """After the run's writes: each object read whole, the version it was read at and its
        documents. The
        ledger forgets the others' versions (they are read next time), but keeps which documents
        a failed object held (they keep what they had while it fails)."""
        marks = [("broken", u) for u in self.broken]
        # The version each object was read at, where the read saw one (an object rewritten
        # between the listing and the read holds what was read, not what was listed).
        done = self.skipped | self.broken
        clean = [(u, self.read_versions.get(u, v)) for u, v in self.listed.items() if u not in done]
        forget = (
            "DELETE FROM {} WHERE target = ? AND fingerprint = ? AND object NOT IN "
            "(SELECT object FROM temp.listed WHERE state IN ({}))"
        )
        with self.seen.ledger.transaction():
            self.db.executemany("UPDATE temp.listed SET state = ? WHERE object = ?", marks)
            self.db.execute(forget.format("objects", "'skipped'"), self.args)
            self.db.execute(forget.format("object_docs", "'skipped', 'broken'"), self.args)
            self.db.executemany(
                "INSERT INTO objects VALUES (?, ?, ?, ?)", ((*self.args, u, v) for u, v in clean)
            )
            self.db.execute(
                "INSERT OR IGNORE INTO object_docs SELECT ?, ?, o.object, o.doc_id "
                "FROM temp.objects_seen o JOIN temp.seen s ON s.doc_id = o.doc_id "
                "WHERE s.n_chunks IS NOT NULL AND s.doc_hash IS NOT NULL",
                self.args,
            )
