"""The ledger's schema as numbered migrations: index i brings a ledger from version i to i + 1
(SQLite's user_version). Append, never edit: ledgers in the field are at every version."""

from __future__ import annotations

# Numbered migrations: index i brings the schema from version i to i + 1. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE targets (
        target TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, model TEXT, dim INTEGER,
        updated REAL NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, fingerprint TEXT NOT NULL,
        started REAL NOT NULL, ended REAL, outcome TEXT NOT NULL, report TEXT
    );
    CREATE TABLE chunks (
        target TEXT NOT NULL, fingerprint TEXT NOT NULL, chunk_id TEXT NOT NULL,
        doc_id TEXT NOT NULL, chunk_index INTEGER NOT NULL, content_hash TEXT NOT NULL,
        state INTEGER NOT NULL, run_id INTEGER NOT NULL,
        PRIMARY KEY (target, fingerprint, chunk_id)
    ) WITHOUT ROWID;
    CREATE INDEX chunks_by_doc ON chunks (target, fingerprint, doc_id);
    """,
    # 2: whole-document hashes, so an unchanged document is skipped before it is even chunked.
    """
    CREATE TABLE docs (
        target TEXT NOT NULL, fingerprint TEXT NOT NULL, doc_id TEXT NOT NULL,
        doc_hash TEXT NOT NULL, n_chunks INTEGER NOT NULL,
        PRIMARY KEY (target, fingerprint, doc_id)
    ) WITHOUT ROWID;
    """,
    # 3: every generation a target has had built (live, staged), and when a run last committed.
    """
    CREATE TABLE generations (
        target TEXT NOT NULL, fingerprint TEXT NOT NULL, model TEXT, dim INTEGER,
        state TEXT NOT NULL, created REAL NOT NULL, promoted REAL,
        PRIMARY KEY (target, fingerprint)
    ) WITHOUT ROWID;
    INSERT INTO generations SELECT target, fingerprint, model, dim, 'live', updated, updated
        FROM targets;
    ALTER TABLE runs ADD COLUMN committed REAL;
    """,
    # 4: the one definition of a document whose every chunk is done (as last embedded).
    """
    CREATE VIEW complete_docs AS SELECT d.target, d.fingerprint, d.doc_id, d.doc_hash, d.n_chunks
        FROM docs d WHERE d.n_chunks = (SELECT COUNT(*) FROM chunks c WHERE c.target = d.target
        AND c.fingerprint = d.fingerprint AND c.doc_id = d.doc_id AND c.state = 1
        AND c.chunk_index < d.n_chunks);
    """,
    # 5: generations are first-class: building -> staged -> live -> previous, with their chunking.
    """
    ALTER TABLE generations ADD COLUMN chunking TEXT;
    """,
    # 6: bucket objects (s3://, gs://) as last read whole: their version, the documents they held.
    """
    CREATE TABLE objects (target TEXT NOT NULL, fingerprint TEXT NOT NULL, object TEXT NOT NULL,
        version TEXT NOT NULL, PRIMARY KEY (target, fingerprint, object)) WITHOUT ROWID;
    CREATE TABLE object_docs (target TEXT NOT NULL, fingerprint TEXT NOT NULL, object TEXT NOT NULL,
        doc_id TEXT NOT NULL, PRIMARY KEY (target, fingerprint, object, doc_id)) WITHOUT ROWID;
    """,
    # 7: a covering index for a document's chunks: without it SQLite scanned every chunk of the
    # fingerprint per document (an unchanged re-run of 4,000 records spent 6 s there).
    """
    DROP INDEX IF EXISTS chunks_by_doc;
    CREATE INDEX chunks_of_doc ON chunks (target, fingerprint, doc_id, chunk_index, state,
        content_hash);
    """,
    # 8: a generation an operator's rollback or promote took off live: no run promotes it again
    # on its own (`promote` or --force does), so a nightly run cannot undo a rollback.
    """
    ALTER TABLE generations ADD COLUMN demoted REAL;
    """,
    # 9: where each document came from: NULL for a run's source, 'library' for one the library
    # added (a framework adapter); a full-mode run deletes only what its own source had.
    """
    ALTER TABLE docs ADD COLUMN origin TEXT;
    """,
]
