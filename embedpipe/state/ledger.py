"""SQLite state: which chunks are embedded in which sink, under which fingerprint, by which run.

A chunk row is written `pending` before its sink write and flipped to `done` only after the sink
acknowledged it, so the ledger never claims a vector the sink lacks; a `pending` row left by a
crash is re-embedded (or deleted when its chunk is gone) by the next run. One ledger file per
state directory; `target` (sink URI + collection) keeps several indexes apart in it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from embedpipe.durable import StateLock
from embedpipe.redact import redact_uri
from embedpipe.sinks import capabilities_for
from embedpipe.state.migrations import MIGRATIONS
from embedpipe.types import Chunk

PENDING, DONE = 0, 1

LEDGER_FILE = "ledger.sqlite"
# A document's origin when the library added it (a framework adapter), not a run's source: a
# full-mode run, which deletes what its source no longer lists, leaves such documents alone.
LIBRARY = "library"


def state_dir_for(sink_uri: str, state: str | None) -> Path:
    """Where the ledger lives: --state, else next to a local sink, else ./.embedpipe/state."""
    if state:
        return Path(state)
    rest = sink_uri.partition(":")[2]
    if _is_local(sink_uri) and rest:
        return Path(rest).expanduser().absolute().with_name(Path(rest).name + ".state")
    # A server: named by host, port and path; never by its credentials (userinfo, api_key).
    place = urlsplit(rest)
    where = f"{place.hostname or ''}{':' + str(place.port) if place.port else ''}{place.path.rstrip('/')}"
    # Postgres: a unix socket folder (?host=DIR) is the server, a ?schema= another index.
    named = dict(parse_qsl(place.query))
    where += "".join(f"_{named[k].strip('/')}" for k in ("host", "schema") if named.get(k))
    return Path(".embedpipe/state") / where.lstrip("/").replace(":", "_").replace("/", "_")


def target_key(sink_uri: str, collection: str) -> str:
    """A sink's identity in the ledger: local paths made absolute so cwd does not matter."""
    scheme, _, rest = sink_uri.partition(":")
    if _is_local(sink_uri) and rest:
        rest = str(Path(rest).expanduser().absolute())
    return redact_uri(f"{scheme}:{rest}") + f"|{collection}"


def _is_local(sink_uri: str) -> bool:
    """Whether the sink keeps its index in a local path (its ledger then goes beside it)."""
    caps = capabilities_for(sink_uri)
    return caps is not None and caps.local_path


@dataclass(frozen=True, slots=True)
class Target:
    """One index in one sink: the unit the ledger keeps apart."""

    key: str
    fingerprint: str


class Ledger:
    """A connection to the ledger database. Open one per thread."""

    @classmethod
    def in_dir(cls, state_dir: str | Path) -> Ledger:
        """The ledger of a state directory (created on first use)."""
        return cls(Path(state_dir) / LEDGER_FILE)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            self.path, timeout=60, check_same_thread=False, isolation_level=None
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in filter(str.strip, script.split(";")):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # -- runs ---------------------------------------------------------------------------------

    def begin_run(self, target: Target) -> int:
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO runs (target, fingerprint, started, outcome) VALUES (?, ?, ?, 'running')",
                (target.key, target.fingerprint, time.time()),
            )
        return int(cur.lastrowid or 0)

    def end_run(self, run_id: int, outcome: str, report: dict[str, Any]) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE runs SET ended = ?, outcome = ?, report = ? WHERE id = ?",
                (time.time(), outcome, json.dumps(report, ensure_ascii=False), run_id),
            )

    def begin_generation(
        self, target: Target, model: str | None, dim: int, chunking: str | None = None
    ) -> None:
        """Note the generation a run builds: `building` until its sink is complete (a no-op on
        the state of a generation the ledger knows already)."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO generations (target, fingerprint, model, dim, state, created, "
                "promoted, chunking) VALUES (?, ?, ?, ?, 'building', ?, NULL, ?) "
                "ON CONFLICT DO UPDATE SET model = excluded.model, dim = excluded.dim, "
                "chunking = coalesce(excluded.chunking, chunking)",
                (target.key, target.fingerprint, model, dim, time.time(), chunking),
            )

    def stage(self, target: Target) -> None:
        """A new generation's sink is complete but not live: it can be evaluated and promoted."""
        with self.transaction():
            self.db.execute(
                "UPDATE generations SET state = 'staged' WHERE target = ? AND fingerprint = ? "
                "AND state = 'building'",
                (target.key, target.fingerprint),
            )

    def previous_beyond(self, target_key: str, keep: int) -> list[str]:
        """Previous generations past the `keep` most recently live ones: to be dropped."""
        rows = self.db.execute(
            "SELECT fingerprint FROM generations WHERE target = ? AND state = 'previous' "
            "ORDER BY promoted DESC, created DESC LIMIT -1 OFFSET ?",
            (target_key, keep),
        )
        return [fp for (fp,) in rows]

    def demote(self, target: Target) -> None:
        """Mark a generation an operator's switch took off live: no run promotes it again on its
        own (until `set_live` makes it live again)."""
        with self.transaction():
            self.db.execute(
                "UPDATE generations SET demoted = ? WHERE target = ? AND fingerprint = ?",
                (time.time(), target.key, target.fingerprint),
            )

    def dropping(self, target: Target) -> None:
        """Mark a generation whose drop has begun (before the sink deletes it): whatever a
        crash leaves of it is no generation to serve, promote or compare, only a drop to finish."""
        with self.transaction():
            self.db.execute(
                "UPDATE generations SET state = 'dropping' WHERE target = ? AND fingerprint = ?",
                (target.key, target.fingerprint),
            )

    def forget_generation(self, target: Target) -> None:
        """Forget a generation the sink dropped: its chunks, documents and row."""
        with self.transaction():
            for table in ("chunks", "docs", "generations"):
                self.db.execute(
                    f"DELETE FROM {table} WHERE target = ? AND fingerprint = ?",
                    (target.key, target.fingerprint),
                )

    def set_live(self, target: Target, model: str | None, dim: int) -> None:
        """Record which fingerprint the public index now serves; the generation it replaced
        becomes `previous` (kept for rollback until `previous_beyond` drops it). Chunks of a
        fingerprint that is no generation any more are forgotten."""
        now = time.time()
        with self.transaction():
            self.db.execute(
                "INSERT INTO targets VALUES (?, ?, ?, ?, ?) ON CONFLICT(target) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, model = excluded.model, dim = excluded.dim, "
                "updated = excluded.updated",
                (target.key, target.fingerprint, model, dim, now),
            )
            self.db.execute(
                "UPDATE generations SET state = 'previous' WHERE target = ? AND fingerprint != ? "
                "AND state = 'live'",
                (target.key, target.fingerprint),
            )
            self.db.execute(
                "INSERT INTO generations (target, fingerprint, model, dim, state, created, "
                "promoted, chunking) VALUES (?, ?, ?, ?, 'live', ?, ?, NULL) ON CONFLICT DO "
                "UPDATE SET state = 'live', promoted = excluded.promoted, model = excluded.model, "
                "dim = excluded.dim, demoted = NULL",
                (target.key, target.fingerprint, model, dim, now, now),
            )
            for table in ("chunks", "docs"):
                self.db.execute(
                    f"DELETE FROM {table} WHERE target = ? AND fingerprint NOT IN "
                    "(SELECT fingerprint FROM generations WHERE target = ?)",
                    (target.key, target.key),
                )

    def live(self, target_key: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT fingerprint, model, dim, updated FROM targets WHERE target = ?", (target_key,)
        ).fetchone()
        return (
            dict(zip(("fingerprint", "model", "dim", "updated"), row, strict=True)) if row else None
        )

    def generations(self, target_key: str) -> list[dict[str, Any]]:
        """Every generation the ledger knows for a target, live first, with its counts."""
        rows = self.db.execute(
            "SELECT g.fingerprint, g.model, g.dim, g.state, g.created, g.promoted, g.chunking, "
            "g.demoted, "
            "(SELECT COUNT(*) FROM chunks c WHERE c.target = g.target "
            "AND c.fingerprint = g.fingerprint AND c.state = 1), "
            "(SELECT COUNT(DISTINCT doc_id) FROM chunks c WHERE c.target = g.target "
            "AND c.fingerprint = g.fingerprint AND c.state = 1) "
            "FROM generations g WHERE g.target = ? ORDER BY g.state = 'live' DESC, g.created",
            (target_key,),
        ).fetchall()
        keys = (
            "fingerprint",
            "model",
            "dim",
            "state",
            "created",
            "promoted",
            "chunking",
            "demoted",
            "chunks",
            "documents",
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def generation(self, target_key: str, fingerprint_prefix: str) -> dict[str, Any] | None:
        """The generation whose fingerprint starts with `fingerprint_prefix` (sinks may name a
        generation by a prefix), or None when the ledger knows none or more than one."""
        found = [
            g
            for g in self.generations(target_key)
            if g["fingerprint"].startswith(fingerprint_prefix)
        ]
        return found[0] if len(found) == 1 else None

    def documents(self, target: Target) -> int:
        """Documents with at least one chunk done under the target's fingerprint."""
        row = self.db.execute(
            "SELECT COUNT(DISTINCT doc_id) FROM chunks WHERE target = ? AND fingerprint = ? "
            "AND state = 1",
            (target.key, target.fingerprint),
        ).fetchone()
        return int(row[0])

    # -- chunks -------------------------------------------------------------------------------

    def doc_chunks(self, target: Target, doc_id: str) -> dict[int, tuple[str, int]]:
        """chunk_index -> (content_hash, state) of what the ledger holds for a document."""
        rows = self.db.execute(
            "SELECT chunk_index, content_hash, state FROM chunks "
            "WHERE target = ? AND fingerprint = ? AND doc_id = ?",
            (target.key, target.fingerprint, doc_id),
        )
        return {index: (digest, state) for index, digest, state in rows}

    def mark(self, target: Target, run_id: int, chunks: Iterable[Chunk], state: int) -> None:
        """Upsert chunks as pending (before the sink write) or done (after its acknowledgement)."""
        rows = [
            (target.key, target.fingerprint, c.id, c.doc_id, c.index, c.content_hash, state, run_id)
            for c in chunks
        ]
        with self.transaction():
            self.db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "content_hash = excluded.content_hash, state = excluded.state, run_id = excluded.run_id",
                rows,
            )
            if state == DONE:
                self.db.execute("UPDATE runs SET committed = ? WHERE id = ?", (time.time(), run_id))

    def forget(self, target: Target, chunk_ids: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany(
                "DELETE FROM chunks WHERE target = ? AND fingerprint = ? AND chunk_id = ?",
                ((target.key, target.fingerprint, cid) for cid in chunk_ids),
            )

    def forget_missing(self, target: Target, present: Iterable[str]) -> int:
        """Forget the done chunks of `target` that are not in `present` (the ids its sink holds;
        none: forget them all), so the next run embeds them again; returns how many. The ids go
        through a temporary table, so memory stays flat however many there are."""
        self.db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS present (id TEXT PRIMARY KEY) WITHOUT ROWID"
        )
        self.db.execute("DELETE FROM temp.present")
        rows = ((cid,) for cid in present)
        while part := list(itertools.islice(rows, 10_000)):
            self.db.executemany("INSERT OR IGNORE INTO temp.present VALUES (?)", part)
        with self.transaction():
            cur = self.db.execute(
                "DELETE FROM chunks WHERE target = ? AND fingerprint = ? AND state = ? "
                "AND chunk_id NOT IN (SELECT id FROM temp.present)",
                (target.key, target.fingerprint, DONE),
            )
        self.db.execute("DROP TABLE temp.present")
        return int(cur.rowcount)

    def chunk_ids(self, target: Target, state: int | None = DONE) -> Iterator[str]:
        sql = "SELECT chunk_id FROM chunks WHERE target = ? AND fingerprint = ?"
        args: tuple[Any, ...] = (target.key, target.fingerprint)
        if state is not None:
            sql, args = sql + " AND state = ?", (*args, state)
        for (cid,) in self.db.execute(sql, args):
            yield cid

    def count(self, target: Target, state: int | None = DONE) -> int:
        sql = "SELECT COUNT(*) FROM chunks WHERE target = ? AND fingerprint = ?"
        args: tuple[Any, ...] = (target.key, target.fingerprint)
        if state is not None:
            sql, args = sql + " AND state = ?", (*args, state)
        return int(self.db.execute(sql, args).fetchone()[0])

    # -- documents as last embedded ----------------------------------------------------------

    def unchanged_doc(self, target: Target, doc_id: str, doc_hash: str) -> int | None:
        """The chunk count of a document whose text is as last embedded, every chunk done; else None."""
        row = self.db.execute(
            "SELECT n_chunks FROM complete_docs "
            "WHERE target = ? AND fingerprint = ? AND doc_id = ? AND doc_hash = ?",
            (target.key, target.fingerprint, doc_id, doc_hash),
        ).fetchone()
        return int(row[0]) if row else None

    def unchanged_docs(self, target: Target) -> Iterator[tuple[str, str, int]]:
        """(doc_id, doc_hash, n_chunks) of every document `unchanged_doc` would skip by its hash."""
        yield from self.db.execute(
            "SELECT doc_id, doc_hash, n_chunks FROM complete_docs WHERE target = ? AND fingerprint = ?",
            (target.key, target.fingerprint),
        )

    def done_hashes(self, target: Target) -> dict[str, str]:
        """chunk_id -> content hash of every chunk held as written for `target`."""
        rows = self.db.execute(
            "SELECT chunk_id, content_hash FROM chunks WHERE target = ? AND fingerprint = ? "
            "AND state = ?",
            (target.key, target.fingerprint, DONE),
        )
        return dict(rows.fetchall())

    def carry_documents(self, source: Target, target: Target) -> None:
        """Give `target` the documents `source` records (a generation that took `source`'s
        chunks: runs/reuse.py), with their chunk counts and origins, but no hash: a document
        hash is made with the fingerprint, so each is chunked again when next seen (its chunks
        skipped by their hashes). Documents `target` records already are left as they are."""
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO docs (target, fingerprint, doc_id, doc_hash, n_chunks, "
                "origin) SELECT ?, ?, doc_id, '', n_chunks, origin FROM docs "
                "WHERE target = ? AND fingerprint = ?",
                (target.key, target.fingerprint, source.key, source.fingerprint),
            )

    # -- what one run saw (runs/planning.py) -------------------------------------------------
    # TEMP tables, private to this connection and taking no write lock: a run's planner keeps
    # them on a ledger connection of its own.

    def start_seen(self) -> None:
        """An empty seen-set: each document the run saw, with its hash and chunk count."""
        self.db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS seen "
            "(doc_id TEXT PRIMARY KEY, n_chunks INTEGER, doc_hash TEXT) WITHOUT ROWID"
        )
        self.db.execute("DELETE FROM temp.seen")

    def see(self, doc_id: str, doc_hash: str | None = None) -> bool:
        """Note a document seen; False when the run already saw the id (a duplicate)."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO temp.seen VALUES (?, NULL, ?)", (doc_id, doc_hash)
        )
        return cur.rowcount == 1

    def seen_chunks(self, doc_id: str, n_chunks: int) -> None:
        """The chunk count of a seen document."""
        self.db.execute("UPDATE temp.seen SET n_chunks = ? WHERE doc_id = ?", (n_chunks, doc_id))

    def stale(self, target: Target, *, full: bool) -> list[str]:
        """Chunks held for `target` that the seen-set no longer has: indexes at or beyond a seen
        document's new chunk count; with `full`, also every chunk of a document not seen. A
        document seen with an unknown count keeps what it had."""
        args = (target.key, target.fingerprint)
        beyond = self.db.execute(
            "SELECT c.chunk_id FROM chunks c JOIN temp.seen s ON c.doc_id = s.doc_id "
            "WHERE c.target = ? AND c.fingerprint = ? AND s.n_chunks IS NOT NULL "
            "AND c.chunk_index >= s.n_chunks",
            args,
        ).fetchall()
        gone: list[tuple[str]] = []
        if full:
            gone = self.db.execute(  # a document the library added is not the source's to drop
                "SELECT chunk_id FROM chunks WHERE target = ? AND fingerprint = ? "
                "AND doc_id NOT IN (SELECT doc_id FROM temp.seen) AND doc_id NOT IN "
                "(SELECT doc_id FROM docs WHERE target = ? AND fingerprint = ? AND origin = ?)",
                (*args, *args, LIBRARY),
            ).fetchall()
        return [cid for (cid,) in beyond + gone]

    def remember_seen(self, target: Target, origin: str | None = None) -> None:
        """Record the hash and chunk count of every document seen whole, and where it came from
        (`origin`: None for the run's source, LIBRARY for a library add); `complete_docs`
        decides at read time which of them count as unchanged (every chunk done)."""
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO docs (target, fingerprint, doc_id, doc_hash, n_chunks, "
                "origin) SELECT ?, ?, doc_id, doc_hash, n_chunks, ? "
                "FROM temp.seen WHERE doc_hash IS NOT NULL AND n_chunks IS NOT NULL",
                (target.key, target.fingerprint, origin),
            )

    # -- a bucket source's objects in one run (runs/planning.py ObjectPlan) -------------------

    def start_objects(self, listed: dict[str, str]) -> None:
        """The objects listed this run (uri -> version), none yet read."""
        for table in (
            "listed (object TEXT PRIMARY KEY, version TEXT, state TEXT)",
            "objects_seen (doc_id TEXT PRIMARY KEY, object TEXT)",
        ):
            self.db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} WITHOUT ROWID")
            self.db.execute(f"DELETE FROM temp.{table.partition(' ')[0]}")
        self.db.executemany(
            "INSERT OR IGNORE INTO temp.listed VALUES (?, ?, 'listed')", listed.items()
        )

    def skip_unchanged_objects(self, target: Target) -> tuple[set[str], int, int]:
        """The listed objects as last read whole (same version, every document complete),
        marked skipped, their documents seen with their chunk counts; (objects, documents,
        chunks).

        Set-based, one pass over the candidates' documents (an index lookup each; `done` is
        complete_docs' rule, inlined because the view is not flattened into this join): a
        nightly listing of 20,000 objects costs about a second, not a query per object."""
        args = (target.key, target.fingerprint)
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
            args,
        )
        # An object of no documents (read whole, empty) is unchanged too.
        skipped = {
            uri
            for (uri,) in self.db.execute(
                "SELECT o.object FROM objects o JOIN temp.listed l ON l.object = o.object AND "
                "l.version = o.version WHERE o.target = ? AND o.fingerprint = ? AND o.object NOT "
                "IN (SELECT object FROM temp.object_candidates WHERE doc_hash IS NULL OR "
                "done != n_chunks)",
                args,
            )
        }
        self.db.executemany(
            "UPDATE temp.listed SET state = 'skipped' WHERE object = ?", ((u,) for u in skipped)
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
        return skipped, int(docs), int(chunks)

    def see_object(self, doc_id: str, uri: str) -> None:
        """A document read this run came from object `uri`."""
        self.db.execute("INSERT OR IGNORE INTO temp.objects_seen VALUES (?, ?)", (doc_id, uri))

    def keep_failed_objects(self, target: Target, broken: Iterable[str]) -> None:
        """The documents each object in `broken` held when last read whole: seen with an
        unknown count, so they keep what they had."""
        self.db.executemany(
            "INSERT OR IGNORE INTO temp.seen (doc_id, n_chunks, doc_hash) SELECT doc_id, NULL, NULL "
            "FROM object_docs "
            "WHERE target = ? AND fingerprint = ? AND object = ?",
            ((target.key, target.fingerprint, uri) for uri in broken),
        )

    def remember_objects(self, target: Target, read: dict[str, str], broken: Iterable[str]) -> None:
        """After the run's writes: each object `read` whole (uri -> the version it was read at)
        and its documents. The versions of the others are forgotten (they are read next time),
        but which documents a `broken` object held is kept (they keep what they had while it
        fails)."""
        args = (target.key, target.fingerprint)
        forget = (
            "DELETE FROM {} WHERE target = ? AND fingerprint = ? AND object NOT IN "
            "(SELECT object FROM temp.listed WHERE state IN ({}))"
        )
        with self.transaction():
            self.db.executemany(
                "UPDATE temp.listed SET state = ? WHERE object = ?", (("broken", u) for u in broken)
            )
            self.db.execute(forget.format("objects", "'skipped'"), args)
            self.db.execute(forget.format("object_docs", "'skipped', 'broken'"), args)
            self.db.executemany(
                "INSERT INTO objects VALUES (?, ?, ?, ?)", ((*args, u, v) for u, v in read.items())
            )
            self.db.execute(
                "INSERT OR IGNORE INTO object_docs SELECT ?, ?, o.object, o.doc_id "
                "FROM temp.objects_seen o JOIN temp.seen s ON s.doc_id = o.doc_id "
                "WHERE s.n_chunks IS NOT NULL AND s.doc_hash IS NOT NULL",
                args,
            )

    # -- reporting ----------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Per target: live fingerprint, chunk and document counts, generations, the last runs.

        A run still marked running whose process is gone (the state lock is free) is shown as
        `interrupted`, with the time it last committed."""
        running = StateLock.holder(self.path.parent) is not None
        out = []
        for key, fp, model, dim, updated in self.db.execute(
            "SELECT * FROM targets ORDER BY target"
        ).fetchall():
            chunks, docs = self.db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM chunks WHERE target = ? AND fingerprint = ? "
                "AND state = 1",
                (key, fp),
            ).fetchone()
            runs = self.db.execute(
                "SELECT id, started, ended, outcome, report, committed FROM runs WHERE target = ? "
                "ORDER BY id DESC LIMIT 5",
                (key,),
            ).fetchall()
            out.append(
                {
                    "target": key,
                    "fingerprint": fp,
                    "model": model,
                    "dim": dim,
                    "updated": updated,
                    "chunks": chunks,
                    "documents": docs,
                    "generations": self.generations(key),
                    "runs": [_run_row(*r, running=running) for r in runs],
                }
            )
        return out


def _run_row(
    run_id: int,
    started: float,
    ended: float | None,
    outcome: str,
    report: str | None,
    committed: float | None,
    *,
    running: bool,
) -> dict[str, Any]:
    counts = json.loads(report) if report else {}
    keep = ("chunks_embedded", "chunks_skipped", "chunks_deleted", "docs_failed", "seconds")
    if outcome == "running" and not running:
        outcome = "interrupted"  # its process died without ending the run (SIGKILL, power loss)
    return {
        "id": run_id,
        "started": started,
        "ended": ended,
        "outcome": outcome,
        "committed": committed,
        **{k: counts.get(k) for k in keep},
    }


@dataclass(frozen=True)
class Named:
    """Which documents a caller names, by what the ledger holds of a generation.

    `ids`: each names a document (every chunk of it), or, with `chunk_ids`, one chunk
    (`DOC#N`), which stands for its document (the ledger's unit: a document is embedded,
    skipped and deleted whole). `prefixes`: every document whose id starts with one of them
    (a LlamaIndex source document's nodes). `every`: all of them."""

    ids: Sequence[str] = ()
    chunk_ids: bool = False
    prefixes: Sequence[str] = ()
    every: bool = False


def named_documents(ledger: Ledger, target: Target, named: Named) -> tuple[list[str], list[str]]:
    """(the documents `named` names that the ledger holds as written, the ids that name
    none), each in the order first named."""
    sql = (
        "SELECT DISTINCT doc_id FROM chunks WHERE target = ? AND fingerprint = ? AND state = ? "
        "AND {}"
    )
    args = (target.key, target.fingerprint, DONE)
    found: dict[str, None] = {}
    if named.every:
        found.update(dict.fromkeys(d for (d,) in ledger.db.execute(sql.format("1"), args)))
    unknown: list[str] = []
    match = "(doc_id = ? OR chunk_id = ?)" if named.chunk_ids else "doc_id = ?"
    for name in named.ids:
        values = (name, name) if named.chunk_ids else (name,)
        rows = ledger.db.execute(sql.format(match), (*args, *values)).fetchall()
        found.update(dict.fromkeys(d for (d,) in rows))
        if not rows:
            unknown.append(name)
    for prefix in named.prefixes:
        starting = ledger.db.execute(
            sql.format("substr(doc_id, 1, ?) = ?"), (*args, len(prefix), prefix)
        )
        found.update(dict.fromkeys(d for (d,) in starting))
    return list(found), unknown


def chunk_ids_named(ledger: Ledger, target: Target, named: Named) -> list[str]:
    """The chunk ids (written, in order) of what `named` names: each document's chunks, and,
    with `named.chunk_ids`, an id that is no document's but a chunk's id names that chunk."""
    args = (target.key, target.fingerprint, DONE)
    docs, _ = named_documents(ledger, target, Named(named.ids, False, named.prefixes, named.every))
    known = set(docs)
    listed: dict[tuple[bool, str], None] = {}  # (is a chunk, id), in the order named
    for name in named.ids:
        if name in known:
            listed[(False, name)] = None
        elif (
            named.chunk_ids
            and ledger.db.execute(
                "SELECT 1 FROM chunks WHERE target = ? AND fingerprint = ? AND state = ? "
                "AND chunk_id = ?",
                (*args, name),
            ).fetchone()
        ):
            listed[(True, name)] = None
    listed.update(dict.fromkeys((False, d) for d in docs))  # what prefixes and `every` add
    by_doc = (
        "SELECT chunk_id FROM chunks WHERE target = ? AND fingerprint = ? AND state = ? "
        "AND doc_id = ? ORDER BY chunk_index"
    )
    out: dict[str, None] = {}
    for is_chunk, name in listed:
        if is_chunk:
            out[name] = None
        else:
            out.update(dict.fromkeys(c for (c,) in ledger.db.execute(by_doc, (*args, name))))
    return list(out)
