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
from collections.abc import Iterable, Iterator
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
