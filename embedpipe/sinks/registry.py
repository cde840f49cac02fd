"""The sink registry: one entry per URI scheme, naming its sink class and what that sink can do.

A sink class is imported only when `open_sink` makes one, so reading the registry (a scheme's
capabilities, the accepted URI forms) never imports qdrant_client or faiss.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace

from embedpipe.config import SinkConfig
from embedpipe.errors import ConfigError
from embedpipe.redact import redact_uri
from embedpipe.sinks.base import Capabilities, Sink


@dataclass(frozen=True, slots=True)
class SinkKind:
    """One URI scheme: the form it takes (for messages), the sink class as "module:Class" of
    embedpipe.sinks, whose `from_config(scheme, location, cfg)` makes it, and its capabilities.

    What a user is shown about it is read from here too: `library` is the component
    `embedpipe --version` reports (its name, then the distributions that provide it; None for a
    core dependency), `hint` and `keys` what `embedpipe init` writes for it (a comment, and
    `sink.*` keys with the value to write, None for the default)."""

    form: str
    cls: str
    capabilities: Capabilities
    library: tuple[str, tuple[str, ...]] | None = None
    hint: str = ""
    keys: tuple[tuple[str, str | None], ...] = ()

    def make(self, scheme: str, location: str, cfg: SinkConfig) -> Sink:
        """The sink for `scheme:location`; nothing is opened or connected yet."""
        module, _, name = self.cls.partition(":")
        sink: Sink = getattr(
            importlib.import_module(f"embedpipe.sinks.{module}"), name
        ).from_config(scheme, location, cfg)
        return sink


# A folder one process writes at a time (the engine locks it).
ONE_WRITER = Capabilities(local_path=True, aliases=True, sparse=True)
# A folder of append-only shards that any process seeing it can add to.
SHARED_FOLDER = Capabilities(concurrent_writers=True, local_path=True, aliases=True)
SERVER = Capabilities(concurrent_writers=True, aliases=True)
QDRANT_SERVER = replace(SERVER, sparse=True)
# Postgres keeps a tsvector beside the embedding and ranks it by BM25 itself (sinks/postgres.py).
POSTGRES_SERVER = replace(SERVER, sparse=True)

QDRANT_EDGE = ("qdrant-edge", ("qdrant-edge-py", "qdrant-edge"))
QDRANT_CLIENT = ("qdrant-client", ("qdrant-client",))
FAISS = ("faiss", ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss"))
POSTGRES = ("psycopg", ("psycopg",))
SERVER_HINT = "The API key is read from the QDRANT_API_KEY environment variable, never here."
SERVER_KEYS: tuple[tuple[str, str | None], ...] = (("sink.write_batch", None),)

# One line per sink: URI scheme -> SinkKind(form, "module:Class", capabilities, what users see).
SINKS: dict[str, SinkKind] = {
    "qdrant-edge": SinkKind(
        "qdrant-edge:PATH",
        "edge:EdgeSink",
        ONE_WRITER,
        QDRANT_EDGE,
        "Qdrant Edge: the Qdrant engine in-process (HNSW); README: moving it to a server.",
    ),
    "qdrant": SinkKind(
        "qdrant:PATH",
        "qdrant:QdrantSink",
        ONE_WRITER,
        QDRANT_CLIENT,
        "Embedded Qdrant (local mode): one process at a time may open PATH.",
    ),
    "qdrant+http": SinkKind(
        "qdrant+http://HOST:PORT",
        "qdrant:QdrantSink",
        QDRANT_SERVER,
        QDRANT_CLIENT,
        SERVER_HINT,
        SERVER_KEYS,
    ),
    "qdrant+https": SinkKind(
        "qdrant+https://HOST:PORT",
        "qdrant:QdrantSink",
        QDRANT_SERVER,
        QDRANT_CLIENT,
        SERVER_HINT,
        SERVER_KEYS,
    ),
    "faiss": SinkKind(
        "faiss:DIR",
        "faiss:FaissSink",
        replace(SHARED_FOLDER, rebuildable=True),
        FAISS,
        "Flat is exact; for millions of chunks see README: FAISS index by corpus size.",
        (("sink.index_factory", "Flat"),),
    ),
    "parquet": SinkKind("parquet:DIR", "parquet:ParquetSink", SHARED_FOLDER),
    "postgresql": SinkKind(
        "postgresql://USER@HOST:PORT/DB", "postgres:PostgresSink", POSTGRES_SERVER, POSTGRES
    ),
    "postgres": SinkKind(
        "postgres://USER@HOST:PORT/DB", "postgres:PostgresSink", POSTGRES_SERVER, POSTGRES
    ),
}


def _either(forms: list[str]) -> str:
    """'a, b or c'."""
    return " or ".join(filter(None, [", ".join(forms[:-1]), forms[-1]]))


ACCEPTED = _either([kind.form for kind in SINKS.values()])
# The sink libraries `embedpipe --version` reports, each once, in registry order.
LIBRARIES = tuple(dict.fromkeys(kind.library for kind in SINKS.values() if kind.library))
# Sinks that live in a local path: their ledger goes next to it (PATH.state).
LOCAL_SCHEMES = tuple(scheme for scheme, kind in SINKS.items() if kind.capabilities.local_path)


def capabilities_for(uri: str) -> Capabilities | None:
    """What the sink `uri` names can do, from its scheme alone (None for an unknown scheme)."""
    kind = SINKS.get(uri.partition(":")[0].lower())
    return None if kind is None else kind.capabilities


def open_sink(cfg: SinkConfig) -> Sink:
    """The sink `cfg.uri` names; nothing is opened or connected until `Sink.open`.

    Its `uri` is the redacted form (`user:***@`, `api_key=***`): credentials in `cfg.uri` reach
    the client and nothing else.
    """
    scheme, sep, location = cfg.uri.partition(":")
    kind = SINKS.get(scheme.lower())
    if not sep or kind is None or not location.strip("/"):
        raise ConfigError(f"Unknown sink '{redact_uri(cfg.uri)}': use {ACCEPTED}")
    if cfg.sparse.on:
        require_sparse(cfg.uri, f"sink.sparse: {cfg.sparse.kind} (--sparse)")
    return kind.make(scheme.lower(), location, cfg)


def require_sparse(uri: str, what: str) -> None:
    """A ConfigError, before any work, when the sink `uri` names keeps no sparse vectors:
    `what` (the setting or query mode asked for) and the sinks that can."""
    caps = capabilities_for(uri)
    if caps is None or not caps.sparse:
        able = _either([kind.form for kind in SINKS.values() if kind.capabilities.sparse])
        raise ConfigError(
            f"'{redact_uri(uri)}' keeps no sparse vectors, so {what} is not possible: only "
            f"{able} can (or leave sparse off)"
        )


def rebuild_sink(cfg: SinkConfig) -> None:
    """Re-train and rebuild the live index of `cfg` from its stored vectors (rebuildable sinks)."""
    sink = open_sink(cfg)
    if not sink.capabilities.rebuildable:
        rebuildable = [kind.form for kind in SINKS.values() if kind.capabilities.rebuildable]
        raise ConfigError(
            f"'{redact_uri(cfg.uri)}' cannot be rebuilt: only {_either(rebuildable)} keeps the "
            "vectors to re-train from"
        )
    sink.rebuild()
