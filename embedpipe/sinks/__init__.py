"""Sinks: where vectors go. `open_sink` picks one from the URI scheme.

Each sink module imports its heavy client (qdrant_client, faiss) itself, and only when the
factory below is called, so importing this package stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from embedpipe.config import SinkConfig
from embedpipe.errors import ConfigError
from embedpipe.redact import redact_uri
from embedpipe.sinks.base import Hit, Sink

# Sinks that live in a local path: their ledger goes next to it (PATH.state).
LOCAL_SCHEMES = ("qdrant-edge", "qdrant", "faiss", "parquet")
ACCEPTED = (
    "qdrant-edge:PATH, qdrant:PATH, qdrant+http://HOST:PORT, qdrant+https://HOST:PORT, "
    "faiss:DIR or parquet:DIR"
)


def _qdrant(
    cfg: SinkConfig,
    *,
    local_path: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
) -> Sink:
    """A QdrantSink in a local folder or on a server, with the settings every qdrant URI shares."""
    from embedpipe.sinks.qdrant import QdrantSink

    return QdrantSink(
        cfg.collection,
        local_path=local_path,
        url=url,
        api_key=api_key,
        write_batch=cfg.write_batch,
        options=cfg.qdrant,
        ef_search=cfg.ef_search,
        keep_previous=cfg.keep_previous,
    )


def _qdrant_local(location: str, cfg: SinkConfig) -> Sink:
    return _qdrant(cfg, local_path=location)


def _qdrant_edge(location: str, cfg: SinkConfig) -> Sink:
    from embedpipe.sinks.edge import EdgeSink

    return EdgeSink(
        location,
        cfg.collection,
        options=cfg.qdrant,
        write_batch=cfg.write_batch,
        ef_search=cfg.ef_search,
        keep_previous=cfg.keep_previous,
    )


def _qdrant_server(scheme: str) -> Callable[[str, SinkConfig], Sink]:
    def make(location: str, cfg: SinkConfig) -> Sink:
        return _qdrant(cfg, url=f"{scheme}:{location}", api_key=os.environ.get("QDRANT_API_KEY"))

    return make


def _faiss(location: str, cfg: SinkConfig) -> Sink:
    from embedpipe.sinks.faiss import FaissSink

    return FaissSink(
        location,
        cfg.collection,
        index_factory=cfg.index_factory,
        nprobe=cfg.nprobe,
        ef_search=cfg.ef_search,
        keep_previous=cfg.keep_previous,
    )


def _parquet(location: str, cfg: SinkConfig) -> Sink:
    from embedpipe.sinks.parquet import ParquetSink

    return ParquetSink(location, cfg.collection, keep_previous=cfg.keep_previous)


# One line per sink: URI scheme -> factory(location after the colon, config).
SINKS: dict[str, Callable[[str, SinkConfig], Sink]] = {
    "qdrant-edge": _qdrant_edge,
    "qdrant": _qdrant_local,
    "qdrant+http": _qdrant_server("http"),
    "qdrant+https": _qdrant_server("https"),
    "faiss": _faiss,
    "parquet": _parquet,
}


def open_sink(cfg: SinkConfig) -> Sink:
    """The sink `cfg.uri` names; nothing is opened or connected until `Sink.open`.

    Its `uri` is the redacted form (`user:***@`, `api_key=***`): credentials in `cfg.uri` reach
    the client and nothing else.
    """
    scheme, sep, location = cfg.uri.partition(":")
    factory = SINKS.get(scheme.lower())
    if not sep or factory is None or not location.strip("/"):
        raise ConfigError(f"Unknown sink '{redact_uri(cfg.uri)}': use {ACCEPTED}")
    return factory(location, cfg)


def rebuild_sink(cfg: SinkConfig) -> None:
    """Re-train and rebuild the live index of `cfg` from its stored vectors (FAISS only)."""
    sink = open_sink(cfg)
    rebuild = getattr(sink, "rebuild", None)
    if rebuild is None:
        raise ConfigError(
            f"'{redact_uri(cfg.uri)}' cannot be rebuilt: only faiss:DIR keeps the vectors to "
            "re-train from"
        )
    rebuild()


__all__ = ["LOCAL_SCHEMES", "SINKS", "Hit", "Sink", "open_sink", "rebuild_sink"]
