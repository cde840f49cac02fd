"""Postgres + pgvector sink: one table per generation, the live one served behind a view.

Layout in the sink's schema (`public` unless `?schema=` or `sink.postgres.schema_name`):

    "<collection>"                   a view, SELECT * FROM the live generation's table
    "<collection>__<fp12>"           one generation: chunk_id (primary key), doc_id, chunk_index,
                                     text, content_hash, start, "end", metadata jsonb (GIN index),
                                     embedding vector(D) (HNSW index, vector_cosine_ops)
    embedpipe_generations            one row per generation: collection, fingerprint, its table,
                                     dim, options, manifest, built (closed once), live

A write is one transaction (delete the chunks' old rows, then a binary COPY of the new ones), so a
batch is in the table whole or not at all, and an acknowledged write is committed. A new
generation gets its HNSW and GIN indexes when it is closed (after its bulk load), an incremental
run writes into an indexed table. The swap (the view dropped and created on the new table, the
registry's live flag moved) is one transaction: readers see the old generation or the new one, by
MVCC, and any number of processes may read while a run writes.

A run holds a session advisory lock on its generation, so a second run is refused while the
connection lives (a killed run's lock goes with its connection); remote writers (the Ray engine's
workers) write into that table from their own connections without the lock.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from embedpipe.config import PostgresOptions, SinkConfig
from embedpipe.errors import SinkError, TransientSinkError
from embedpipe.faults import crash_point
from embedpipe.redact import redact_uri
from embedpipe.sinks import qdrant_base
from embedpipe.sinks.base import Capabilities, Hit, not_open, not_rebuildable
from embedpipe.sinks.filters import (
    METADATA,
    RANGES,
    TOP_LEVEL,
    All,
    AnyOf,
    Condition,
    Expr,
    Not,
    parse,
    require_fields,
)
from embedpipe.sinks.registry import SINKS
from embedpipe.sinks.shards import chunk_from_payload, paired_vectors
from embedpipe.types import Chunk, Embedded

REGISTRY = "embedpipe_generations"
# Postgres names are at most 63 bytes: the longest is "<collection>__<fp12>_hnsw".
MAX_COLLECTION = 63 - len("__") - 12 - len("_hnsw")
PAGE = 2048
COLUMNS = (
    "chunk_id",
    "doc_id",
    "chunk_index",
    "text",
    "content_hash",
    "start",
    "end",
    "metadata",
    "embedding",
)
COPY_TYPES = ["text", "text", "int4", "text", "text", "int4", "int4", "jsonb", "vector"]
INTEGER_COLUMNS = ("chunk_index", "start", "end")
SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# SQLSTATEs worth a retry: a lost connection, a server shutting down or overloaded, a
# serialization failure or deadlock, two writers racing on one chunk id.
TRANSIENT = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.UniqueViolation,
    pg_errors.AdminShutdown,
    pg_errors.CrashShutdown,
    pg_errors.CannotConnectNow,
    pg_errors.TooManyConnections,
    pg_errors.LockNotAvailable,
    pg_errors.QueryCanceled,
)
# Connection failures that a retry will not fix: say so at once.
FATAL_CONNECT = ("authentication", "password", "does not exist", "no pg_hba.conf", "role")


def postgres_errors(action: str) -> AbstractContextManager[None]:
    """Translate psycopg failures: lost connections and races are worth a retry."""
    return qdrant_base.translated(action, _postgres_error)


def _postgres_error(action: str, exc: Exception) -> SinkError | None:
    """The SinkError for what psycopg raised (None: not a database failure)."""
    if not isinstance(exc, psycopg.Error):
        return None
    text = redact_uri(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if isinstance(exc, pg_errors.DiskFull):
        return SinkError(f"Postgres {action} failed, the server's disk is full: {text}")
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return SinkError(f"Postgres {action} failed, the role lacks a privilege: {text}")
    if isinstance(exc, TRANSIENT):
        return TransientSinkError(f"Postgres {action} failed: {text}")
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        # No SQLSTATE: the connection itself failed (refused, dropped, timed out, refused login).
        if any(word in text.lower() for word in FATAL_CONNECT):
            return SinkError(f"Postgres {action} failed: {text}")
        return TransientSinkError(f"Postgres {action} failed, the server did not answer: {text}")
    return SinkError(f"Postgres {action} failed: {text}")


@dataclass(frozen=True)
class Place:
    """Where the tables are: the libpq connection string (may hold a password: never shown),
    the schema, and the URI as shown (redacted)."""

    conninfo: str = field(repr=False)
    schema: str
    uri: str


def parse_place(scheme: str, location: str, default_schema: str) -> Place:
    """A postgresql://USER@HOST:PORT/DB?host=DIR&schema=S URI as libpq's connection string (the
    `schema` parameter taken out: libpq does not know it) and the schema it names."""
    if not location.startswith("//"):
        raise SinkError(
            f"'{redact_uri(f'{scheme}:{location}')}' is not a Postgres URI: write "
            f"{scheme}://USER@HOST:PORT/DB (a unix socket: {scheme}://USER@/DB?host=DIR)"
        )
    parts = urlsplit(f"postgresql:{location}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    schema = schemas[-1] if schemas else default_schema
    if not SCHEMA_RE.fullmatch(schema):
        raise SinkError(
            f"schema {schema!r} must be a letter or '_' then up to 62 letters, digits or '_'"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, rest, parts.fragment))
    return Place(conninfo, schema, redact_uri(f"{scheme}:{location}"))


def connect(place: Place, action: str = "connecting") -> psycopg.Connection[Any]:
    """An autocommit connection with pgvector's types registered (when the extension exists).
    Password from the URI, PGPASSWORD or ~/.pgpass: libpq reads them."""
    with postgres_errors(f"{action} to {place.uri}"):
        conn = psycopg.connect(
            place.conninfo, autocommit=True, connect_timeout=10, application_name="embedpipe"
        )
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            register_vector(conn)
    return conn


def ensure_extension(conn: psycopg.Connection[Any], place: Place) -> None:
    """Create pgvector's extension when the role may; else say what an administrator runs."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    database = conn.info.dbname
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except pg_errors.InsufficientPrivilege as exc:
        raise SinkError(
            f"the pgvector extension is not installed in database '{database}' at {place.uri} and "
            f"role '{conn.info.user}' may not create it: ask its owner or a superuser to run "
            f"`CREATE EXTENSION vector;` in '{database}', then run embedpipe again"
        ) from exc
    except (pg_errors.FeatureNotSupported, pg_errors.UndefinedFile) as exc:
        raise SinkError(
            f"the server at {place.uri} has no pgvector: install it on the server "
            "(https://github.com/pgvector/pgvector#installation), then run embedpipe again"
        ) from exc
    register_vector(conn)


def copy_rows(conn: psycopg.Connection[Any], table: sql.Composable, embedded: Embedded) -> None:
    """Replace the chunks' rows in one transaction: delete their old rows, then a binary COPY of
    the new ones. Returns once it is committed; idempotent by chunk id."""
    vectors = paired_vectors(embedded)
    if not embedded.chunks:
        return
    ids = [c.id for c in embedded.chunks]
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(table, columns)
    with conn.transaction():
        conn.execute(sql.SQL("DELETE FROM {} WHERE chunk_id = ANY(%s)").format(table), [ids])
        with conn.cursor().copy(statement) as copy_:
            copy_.set_types(COPY_TYPES)
            for chunk, vector in zip(embedded.chunks, vectors, strict=True):
                copy_.write_row(_row(chunk, vector))


def _row(chunk: Chunk, vector: np.ndarray) -> tuple[Any, ...]:
    return (
        chunk.id,
        chunk.doc_id,
        chunk.index,
        chunk.text,
        chunk.content_hash,
        chunk.start,
        chunk.end,
        Jsonb(chunk.metadata),
        vector,
    )


@dataclass
class PostgresWriter:
    """A RemoteWriter copying into one generation's table from another process or machine.

    Connects on the first write and drops the connection when pickled.
    """

    place: Place
    table: str
    _conn: psycopg.Connection[Any] | None = field(default=None, init=False, repr=False)

    def write(self, embedded: Embedded) -> None:
        """Copy the chunks in one transaction; returns once it is committed."""
        table = sql.Identifier(self.place.schema, self.table)
        with postgres_errors(f"copy into '{self.table}'"):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.place)
                copy_rows(self._conn, table, embedded)
            except psycopg.OperationalError:
                self.close()  # reconnect on the retry
                raise

    def close(self) -> None:
        """Close the connection, if one is open; safe to call twice."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_conn"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, _conn=None)


class PostgresSink:
    """Vectors in Postgres tables (pgvector), one per generation, the live one behind a view
    named `collection`."""

    name = "Postgres"

    def __init__(
        self,
        place: Place,
        collection: str,
        *,
        options: PostgresOptions | None = None,
        write_batch: int = 256,
        ef_search: int | None = None,
        keep_previous: bool = False,
    ) -> None:
        if len(collection) > MAX_COLLECTION:
            raise SinkError(
                f"collection '{collection}' is {len(collection)} characters: a Postgres sink's "
                f"--collection takes at most {MAX_COLLECTION} (table names are 63 bytes)"
            )
        self.place = place
        self.uri = place.uri
        self.collection = collection
        self.options = options or PostgresOptions()
        self.write_batch = write_batch
        self.ef_search = ef_search
        self.keep_previous = keep_previous
        self._conn: psycopg.Connection[Any] | None = None
        self._target: str | None = None  # the table a run writes
        self._new = False  # it is not the live one: close() swaps to it
        self._locked: str | None = None  # the table whose advisory lock this session holds
        self._pin: str | None = None  # a pinned view's table
        self._settings: list[tuple[str, str]] | None = None  # a search's, read once

    @classmethod
    def from_config(cls, scheme: str, location: str, cfg: SinkConfig) -> PostgresSink:
        """The sink a postgresql://USER@HOST:PORT/DB URI names (nothing is connected yet)."""
        place = parse_place(scheme, location, cfg.postgres.schema_name)
        return cls(
            place,
            cfg.collection,
            options=cfg.postgres,
            write_batch=cfg.write_batch,
            ef_search=cfg.ef_search,
            keep_previous=cfg.keep_previous,
        )

    @property
    def capabilities(self) -> Capabilities:
        """What the registry declares: concurrent writers, a view moved in one transaction."""
        return SINKS[self.uri.partition(":")[0].lower()].capabilities

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, dim: int, fingerprint: str) -> None:
        """Attach to the live table when its fingerprint matches, else create (or resume) the
        fingerprint's own table; refuses another tool's table and another dimension first."""
        conn = self._connection()
        with postgres_errors(f"opening '{self.collection}'"):
            ensure_extension(conn, self.place)
            self._ensure_registry(conn)
            self._refuse_foreign(dim)
            table = self._physical(fingerprint)
            row = self._generation(table)
            if row is None and self._relkind(table) is not None:
                raise self._foreign(table, dim)
            if row is not None:
                self._check_reuse(row, dim, table)
            self._lock(table)
            try:
                if row is None:
                    self._create(table, dim, fingerprint)
            except BaseException:
                self._unlock()
                raise
        live = self._live_table()
        self._target, self._new = table, live != table

    def write(self, embedded: Embedded) -> None:
        """Copy the chunks in one transaction; returns once it is committed."""
        table = self._writing()
        with postgres_errors(f"copy into '{table}'"):
            copy_rows(self._connection(), self._ident(table), embedded)

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks; ids that are not present are fine."""
        table = self._writing()
        ids = list(chunk_ids)
        statement = sql.SQL("DELETE FROM {} WHERE chunk_id = ANY(%s)").format(self._ident(table))
        for lo in range(0, len(ids), PAGE * 4):
            with postgres_errors(f"delete from '{table}'"):
                self._connection().execute(statement, [ids[lo : lo + PAGE * 4]])

    def close(self, promote: bool = True) -> None:
        """Build the indexes, mark the generation complete, and make a new one live when
        `promote` (else it stays staged). On failure the run stays open for a retry or abort()."""
        if self._target is None:
            return
        table = self._target
        with postgres_errors(f"building the indexes of '{table}'"):
            self._build(table)
        if self._new and promote:
            self._swap(table)
        self._release()

    def abort(self) -> None:
        """End the run without publishing; acknowledged writes stay for the next run to resume."""
        self._release()

    def promote(self, fingerprint: str) -> None:
        """Make the complete generation built under `fingerprint` live in one transaction; the
        one it replaces is kept for rollback unless the sink does not keep_previous."""
        try:
            table = self._complete(fingerprint)
            if table != self._live_table():
                self._lock(table)
                self._swap(table)
        finally:
            self._release()

    def drop(self, fingerprint: str) -> None:
        """Drop a generation's table that is not live (nothing to do when there is none)."""
        table = self._physical(fingerprint)
        try:
            if self._generation(table) is None:
                return
            if table == self._live_table():
                raise SinkError(
                    f"generation {fingerprint[:12]} of '{self.collection}' is live: promote or "
                    "roll back to another before dropping it"
                )
            self._lock(table)
            with postgres_errors(f"dropping '{table}'"):
                self._drop_table(self._connection(), table)
        finally:
            self._release()

    def pinned(self, fingerprint: str) -> PostgresSink:
        """A read-only view whose search and chunk_ids read `fingerprint`'s table as live; it
        opens its own connection: release it with abort()."""
        table = self._complete(fingerprint)
        view = copy.copy(self)
        view._conn, view._target, view._new, view._locked = None, None, False, None
        view._pin = table
        return view

    def describe(self, fields: Mapping[str, Any]) -> None:
        """Record what the generation being written was built with in its registry row."""
        table = self._writing()
        with postgres_errors(f"describing '{table}'"):
            self._connection().execute(
                sql.SQL("UPDATE {} SET manifest = manifest || %s WHERE tbl = %s").format(
                    self._ident(REGISTRY)
                ),
                [Jsonb(dict(fields)), table],
            )

    def manifest(self) -> dict[str, Any]:
        """What the live generation was built with ({} when none is live)."""
        live = self._live_table()
        row = None if live is None else self._generation(live)
        if row is None:
            return {}
        extra = {"built": row["built"]} if row["built"] else {}
        base = {"fingerprint": row["fingerprint"], "dim": row["dim"], "options": row["options"]}
        return {**base, "created": row["created"], **extra, **row["manifest"]}

    # -- reading ---------------------------------------------------------------------------

    def live_fingerprint(self) -> str | None:
        """The fingerprint of the generation the view serves, or None."""
        live = self._live_table()
        row = None if live is None else self._generation(live)
        return None if row is None else str(row["fingerprint"])

    def chunk_ids(self, fingerprint: str | None = None) -> Iterator[str]:
        """Every chunk id of `fingerprint`'s table, else of the one being written, else of the
        live one, a page at a time (keyset pages: no transaction held between them)."""
        table = self._read_table(fingerprint)
        if table is not None:
            for rows in self._pages(table, ["chunk_id"]):
                yield from (row[0] for row in rows)

    def count(self, fingerprint: str) -> int:
        """Rows in `fingerprint`'s table (0 when there is none): an index-only count."""
        table = self._read_table(fingerprint)
        if table is None:
            return 0
        with postgres_errors(f"counting the rows of '{table}'"):
            row = (
                self._connection()
                .execute(sql.SQL("SELECT count(*) FROM {}").format(self._ident(table)))
                .fetchone()
            )
        return int(row[0]) if row else 0

    def points(self, fingerprint: str | None = None) -> Iterator[Embedded]:
        """Every chunk of that table with its stored vector, a page at a time."""
        table = self._read_table(fingerprint)
        if table is None:
            return
        for rows in self._pages(table, list(COLUMNS)):
            payloads = [dict(zip(COLUMNS[:-1], row[:-1], strict=True)) for row in rows]
            chunks = [c for c in map(chunk_from_payload, payloads) if c is not None]
            vectors = [row[-1].to_numpy() for row in rows]  # pgvector's Vector
            yield Embedded(chunks, np.asarray(vectors, dtype=np.float32))

    def search(
        self,
        vector: np.ndarray,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k rows of the live generation by cosine similarity, among those `filter` passes
        (pushed down as SQL; pgvector's iterative index scan keeps k hits under a filter);
        `with_vectors`: each with its stored embedding."""
        expr = parse(filter)
        source = self._pin or self._served()
        self._require_fields(expr, source)
        where, params = where_clause(expr)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        stored = sql.SQL(", embedding" if with_vectors else "")
        statement = sql.SQL(
            "SELECT chunk_id, doc_id, chunk_index, text, metadata, embedding <=> %s AS distance, "
            'start, "end"{} FROM {} WHERE {} ORDER BY distance LIMIT %s'
        ).format(stored, self._ident(source), where)
        conn = self._connection()
        with postgres_errors(f"query on '{self.collection}'"), conn.transaction():
            for name, value in [*self._search_settings(conn), ("TimeZone", "UTC")]:
                conn.execute("SELECT set_config(%s, %s, true)", [name, value])
            rows = conn.execute(statement, [query, *params, k]).fetchall()
        return [
            Hit(
                1.0 - float(r[5]),
                r[0],
                r[1],
                int(r[2]),
                r[3],
                dict(r[4] or {}),
                vector=np.asarray(r[8].to_numpy(), dtype=np.float32) if with_vectors else None,
                start=r[6],
                end=r[7],
            )
            for r in rows
        ]

    def _require_fields(self, expr: Expr | None, table: str) -> None:
        """Refuse a filter on a metadata field no row of `table` has (see filters.py)."""
        if expr is None:
            return
        conn = self._connection()
        name = self._ident(table)

        def has(key: str) -> bool:
            path = key.split(".")[1:]
            row = conn.execute(
                sql.SQL(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE jsonb_typeof(metadata #> %s) "
                    "IS DISTINCT FROM 'null' AND metadata #> %s IS NOT NULL)"
                ).format(name),
                [path, path],
            ).fetchone()
            return bool(row and row[0])

        def present() -> list[str]:
            rows = conn.execute(
                sql.SQL(
                    "SELECT DISTINCT key FROM {}, jsonb_each(metadata) AS e(key, value) "
                    "WHERE jsonb_typeof(metadata) = 'object' AND value <> 'null'::jsonb"
                ).format(name)
            ).fetchall()
            return [METADATA + str(r[0]) for r in rows]

        def empty() -> bool:
            row = conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(name))
            return bool(row.fetchone()[0])  # type: ignore[index]

        with postgres_errors(f"checking the filter's fields in '{self.collection}'"):
            require_fields(expr, has, present, f"'{self.collection}'", empty=empty)

    def remote_writer(self) -> PostgresWriter:
        """A writer other processes copy into this run's table with."""
        return PostgresWriter(self.place, self._writing())

    def rebuild(self) -> None:
        """Refused: the HNSW index is built by Postgres itself (REINDEX rebuilds it)."""
        raise not_rebuildable(self.uri)

    # -- internals: connection, names, registry --------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        """The connection, opened on first use and again after one broke (taking the run's
        advisory lock back)."""
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
        if self._conn is None:
            self._conn = connect(self.place)
            if self._locked is not None:
                table, self._locked = self._locked, None
                self._lock(table)
        return self._conn

    def _writing(self) -> str:
        if self._target is None:
            raise not_open(self.name)
        return self._target

    def _ident(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.place.schema, name)

    def _physical(self, fingerprint: str) -> str:
        """The table that holds the generation built under `fingerprint`."""
        return f"{self.collection}__{fingerprint[:12]}"

    def _relkind(self, name: str) -> str | None:
        """'r' (table), 'v' (view), ... for a relation in the schema, None when there is none."""
        with postgres_errors(f"looking up '{name}'"):
            row = (
                self._connection()
                .execute(
                    "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relname = %s",
                    [self.place.schema, name],
                )
                .fetchone()
            )
        return None if row is None else str(row[0])

    def _has_registry(self) -> bool:
        return self._relkind(REGISTRY) is not None

    def _ensure_registry(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.place.schema))
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (collection text NOT NULL, fingerprint text NOT "
                "NULL, tbl text PRIMARY KEY, dim int NOT NULL, options jsonb NOT NULL, manifest "
                "jsonb NOT NULL DEFAULT '{{}}', created timestamptz NOT NULL DEFAULT now(), built "
                "timestamptz, live boolean NOT NULL DEFAULT false)"
            ).format(self._ident(REGISTRY))
        )

    def _generation(self, table: str) -> dict[str, Any] | None:
        """The registry row of a generation's table, or None."""
        if not self._has_registry():
            return None
        with postgres_errors(f"reading the registry of '{self.collection}'"):
            cur = self._connection().execute(
                sql.SQL(
                    "SELECT fingerprint, dim, options, manifest, created::text, built::text, live "
                    "FROM {} WHERE tbl = %s AND collection = %s"
                ).format(self._ident(REGISTRY)),
                [table, self.collection],
            )
            row = cur.fetchone()
        keys = ("fingerprint", "dim", "options", "manifest", "created", "built", "live")
        return None if row is None else dict(zip(keys, row, strict=True))

    def _live_table(self) -> str | None:
        """The table the view serves (a pinned view's: its own), or None."""
        if self._pin is not None:
            return self._pin
        if not self._has_registry():
            return None
        with postgres_errors(f"reading the registry of '{self.collection}'"):
            row = (
                self._connection()
                .execute(
                    sql.SQL("SELECT tbl FROM {} WHERE collection = %s AND live").format(
                        self._ident(REGISTRY)
                    ),
                    [self.collection],
                )
                .fetchone()
            )
        return None if row is None else str(row[0])

    def _served(self) -> str:
        """The public view, or an error saying what is missing (or whose table holds the name)."""
        if self._live_table() is None:
            self._refuse_foreign()
            raise SinkError(
                f"no Postgres table '{self.collection}' in schema '{self.place.schema}' at "
                f"{self.uri}: run embedpipe first"
            )
        return self.collection

    def _read_table(self, fingerprint: str | None) -> str | None:
        """The table a read means: `fingerprint`'s (None when there is none), else the one being
        written, else the live one."""
        if fingerprint is None:
            return self._target or self._live_table()
        table = self._physical(fingerprint)
        return table if self._generation(table) is not None else None

    def _complete(self, fingerprint: str) -> str:
        """The table of the complete (closed at least once) generation built under `fingerprint`."""
        table = self._physical(fingerprint)
        row = self._generation(table)
        if row is None or not row["built"]:
            raise SinkError(
                f"no complete generation {fingerprint[:12]} of '{self.collection}' at {self.uri}: "
                "a run must finish building it first"
            )
        return table

    def _check_reuse(self, row: dict[str, Any], dim: int, table: str) -> None:
        """Refuse vectors of another size, and HNSW options other than the table was built with."""
        if row["dim"] != dim:
            raise SinkError(
                f"collection '{self.collection}' has dimension {row['dim']}, the model gives "
                f"{dim}: choose another --collection or drop its table ('{table}')"
            )
        qdrant_base.check_shape(row["options"], self._shape(), self.collection, self.uri)

    def _shape(self) -> dict[str, Any]:
        return {
            "hnsw_m": self.options.hnsw_m,
            "hnsw_ef_construct": self.options.hnsw_ef_construction,
        }

    def _create(self, table: str, dim: int, fingerprint: str) -> None:
        """The generation's table and its registry row, in one transaction."""
        conn = self._connection()
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (chunk_id text PRIMARY KEY, doc_id text NOT NULL, chunk_index "
                    "int NOT NULL, text text NOT NULL, content_hash text NOT NULL, start int, "
                    '"end" int, metadata jsonb NOT NULL, embedding vector({}) NOT NULL)'
                ).format(self._ident(table), sql.Literal(dim))
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (collection, fingerprint, tbl, dim, options) "
                    "VALUES (%s, %s, %s, %s, %s)"
                ).format(self._ident(REGISTRY)),
                [self.collection, fingerprint, table, dim, Jsonb(self._shape())],
            )

    def _build(self, table: str) -> None:
        """The indexes of a loaded generation (kept from then on), and its `built` mark."""
        conn = self._connection()
        opts = self.options
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = {}, ef_construction = {})"
            ).format(
                sql.Identifier(f"{table}_hnsw"),
                self._ident(table),
                sql.Literal(opts.hnsw_m),
                sql.Literal(opts.hnsw_ef_construction),
            )
        )
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING gin (metadata jsonb_path_ops)"
            ).format(sql.Identifier(f"{table}_meta"), self._ident(table))
        )
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (doc_id)").format(
                sql.Identifier(f"{table}_doc"), self._ident(table)
            )
        )
        conn.execute(
            sql.SQL("UPDATE {} SET built = now() WHERE tbl = %s").format(self._ident(REGISTRY)),
            [table],
        )

    def _swap(self, table: str) -> None:
        """Point the view at `table` and move the live flag, in one transaction; then drop the
        table it replaced unless keep_previous."""
        conn = self._connection()
        old = self._live_table()
        view = self._ident(self.collection)
        with postgres_errors(f"moving '{self.collection}' to '{table}'"), conn.transaction():
            conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
            conn.execute(
                sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(view, self._ident(table))
            )
            conn.execute(
                sql.SQL("UPDATE {} SET live = (tbl = %s) WHERE collection = %s").format(
                    self._ident(REGISTRY)
                ),
                [table, self.collection],
            )
        crash_point("swap")
        if old is not None and old != table and not self.keep_previous:
            with postgres_errors(f"dropping the previous table '{old}'"):
                self._drop_table(conn, old)

    def _drop_table(self, conn: psycopg.Connection[Any], table: str) -> None:
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident(table)))
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE tbl = %s").format(self._ident(REGISTRY)), [table]
            )

    def _search_settings(self, conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
        """SET LOCALs of a search: ef_search when configured; a strict-order iterative scan
        (pgvector 0.8+) so a filter still gets k hits from the HNSW index."""
        if self._settings is not None:
            return self._settings
        out = [("hnsw.ef_search", str(self.ef_search))] if self.ef_search else []
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        version = tuple(int(p) for p in re.findall(r"\d+", str(row[0]) if row else "0"))
        if version >= (0, 8):
            out.append(("hnsw.iterative_scan", "strict_order"))
        self._settings = out
        return out

    def _pages(self, table: str, columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
        """The table's rows in chunk id order, `PAGE` at a time (each page its own query)."""
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))
        after: str | None = None
        while True:
            statement = sql.SQL(
                "SELECT {}, chunk_id FROM {} WHERE %s::text IS NULL OR chunk_id > %s "
                "ORDER BY chunk_id LIMIT %s"
            ).format(cols, self._ident(table))
            with postgres_errors(f"reading '{table}'"):
                rows = self._connection().execute(statement, [after, after, PAGE]).fetchall()
            if not rows:
                return
            yield [row[:-1] for row in rows]
            after = rows[-1][-1]

    # -- internals: locks and other tools' tables ------------------------------------------

    def _lock(self, table: str) -> None:
        """Hold the session advisory lock of a generation: one run writes it at a time."""
        conn = self._connection()
        with postgres_errors(f"locking '{table}'"):
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext('embedpipe'), hashtext(%s))",
                [f"{self.place.schema}.{table}"],
            ).fetchone()
        if not row or not row[0]:
            raise SinkError(
                f"'{table}' at {self.uri} is being written by another embedpipe run: wait for it "
                "to finish"
            )
        self._locked = table

    def _unlock(self) -> None:
        table, self._locked = self._locked, None
        conn = self._conn
        if table is not None and conn is not None and not conn.closed and not conn.broken:
            with postgres_errors(f"unlocking '{table}'"):
                conn.execute(
                    "SELECT pg_advisory_unlock(hashtext('embedpipe'), hashtext(%s))",
                    [f"{self.place.schema}.{table}"],
                )

    def _refuse_foreign(self, dim: int | None = None) -> None:
        """The public name held by something embedpipe did not make: never touch it."""
        kind = self._relkind(self.collection)
        if kind is not None and (kind != "v" or self._live_table() is None):
            raise self._foreign(self.collection, dim)

    def _foreign(self, name: str, dim: int | None) -> SinkError:
        """The refusal for another tool's table (or view) under a name embedpipe would use,
        saying what it holds: its rows and columns, and whose layout they look like."""
        conn = self._connection()
        with postgres_errors(f"reading '{name}'"):
            columns = conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = "
                "c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT "
                "a.attisdropped ORDER BY a.attnum",
                [self.place.schema, name],
            ).fetchall()
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._ident(name)))
            rows = (count.fetchone() or (0,))[0]
        kind = "view" if self._relkind(name) == "v" else "table"
        described = ", ".join(f"{c} {t}" for c, t in columns[:10]) or "no columns"
        ours = f" (the model gives {dim})" if dim else ""
        return SinkError(
            f"{kind} '{self.place.schema}.{name}' at {self.uri} was not made by embedpipe: {rows} "
            f"rows, columns {described}{_layout([c for c, _ in columns])}. embedpipe never writes "
            f"into another tool's table: build its index under another --collection{ours}"
        )

    def _release(self) -> None:
        """End the run: drop the lock and the connection."""
        with contextlib.suppress(SinkError):  # the lock goes with the connection anyway
            self._unlock()
        self._target, self._new = None, False
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _layout(columns: list[str]) -> str:
    """Whose table these columns look like."""
    names = set(columns)
    if {"document", "embedding", "cmetadata"} <= names:
        return " (LangChain PGVector's layout)"
    if {"node_id", "metadata_", "embedding"} <= names:
        return " (LlamaIndex PGVectorStore's layout)"
    return ""


def where_clause(
    expr: Expr | Sequence[Condition] | None,
) -> tuple[sql.Composable, list[Any]]:
    """A filter expression (or conditions that must all hold) as one SQL predicate and its
    parameters. Top-level keys compare columns (a string never equals a number); `metadata.X`
    equality tests jsonb containment (the GIN index serves it), a list in the payload matching
    when any element does; ranges are jsonpath filters (`@ > $v`, `.datetime()` for dates,
    errors silenced so a value of another type is no match); `nin` and $not are SQL NOT."""
    params: list[Any] = []
    if expr is None or (isinstance(expr, Sequence) and not expr):
        return sql.SQL("true"), params
    node: Expr = All(tuple(expr)) if isinstance(expr, Sequence) else expr
    return _predicate(node, params), params


def _predicate(expr: Expr, params: list[Any]) -> sql.Composable:
    if isinstance(expr, All | AnyOf):
        joiner = sql.SQL(" AND " if isinstance(expr, All) else " OR ")
        parts = [_predicate(p, params) for p in expr.parts]
        return (
            joiner.join(parts)
            if isinstance(expr, All)
            else sql.SQL("({})").format(joiner.join(parts))
        )
    if isinstance(expr, Not):
        return sql.SQL("(NOT {})").format(_predicate(expr.part, params))
    if expr.op in RANGES:
        return sql.SQL("({})").format(_range(expr, params))
    options: list[sql.Composable] = []
    if expr.key in TOP_LEVEL:
        column = sql.Identifier(expr.key)
        values = [v for v in expr.values if _same_kind(v, expr.key in INTEGER_COLUMNS)]
        if values:
            options.append(sql.SQL("{} = ANY(%s)").format(column))
            params.append(values)
    else:
        path = expr.key.split(".")[1:]
        for value in expr.values:
            options.append(sql.SQL("(metadata @> %s OR metadata @> %s)"))
            params += [Jsonb(_nested(path, value)), Jsonb(_nested(path, [value]))]
    matched = sql.SQL("({})").format(sql.SQL(" OR ").join(options) or sql.SQL("false"))
    # NOT(in) with NULL-safe columns (every row has them) and containment (never NULL)
    return sql.SQL("(NOT {})").format(matched) if expr.op == "nin" else matched


def _range(cond: Condition, params: list[Any]) -> sql.Composable:
    """A range condition: a column comparison, or a jsonpath filter on the metadata."""
    symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[cond.op]
    if cond.key in TOP_LEVEL:
        if cond.is_date or cond.key not in INTEGER_COLUMNS:
            return sql.SQL("false")
        params.append(cond.bound)
        return sql.SQL("{} " + symbol + " %s").format(sql.Identifier(cond.key))
    steps = "".join(f".{json.dumps(p)}" for p in cond.key.split(".")[1:])
    if cond.is_date:
        path = f'${steps} ? (@.type() == "string" && @.datetime() {symbol} $v.datetime())'
        bound: Any = cond.bound.isoformat()  # type: ignore[union-attr]
    else:
        path = f'${steps} ? (@.type() == "number" && @ {symbol} $v)'
        bound = cond.bound
    params += [path, Jsonb({"v": bound})]
    return sql.SQL("jsonb_path_exists_tz(metadata, %s::jsonpath, %s, true)")


def _same_kind(value: Any, integer: bool) -> bool:
    if integer:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


def _nested(path: list[str], value: Any) -> Any:
    """{"a": {"b": value}} for the path ["a", "b"]."""
    for part in reversed(path):
        value = {part: value}
    return value
