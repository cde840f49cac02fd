"""Sinks: where vectors go. `open_sink` picks one from the URI scheme.

Each sink module imports its heavy client (qdrant_client, faiss) itself, and only when the
factory below is called, so importing this package stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from embedpipe.config import SinkConfig
from embedpipe.errors import ConfigError
from embedpipe.sinks.base import Hit, Sink

ACCEPTED = "qdrant:PATH, qdrant+http://HOST:PORT, qdrant+https://HOST:PORT or faiss:DIR"


def _qdrant_local(location: str, cfg: SinkConfig) -> Sink:
    from embedpipe.sinks.qdrant import QdrantSink

    return QdrantSink(cfg.collection, local_path=location, write_batch=cfg.write_batch)


def _qdrant_server(scheme: str) -> Callable[[str, SinkConfig], Sink]:
    def make(location: str, cfg: SinkConfig) -> Sink:
        from embedpipe.sinks.qdrant import QdrantSink

        return QdrantSink(
            cfg.collection,
            url=f"{scheme}:{location}",
            api_key=os.environ.get("QDRANT_API_KEY"),
            write_batch=cfg.write_batch,
        )

    return make


def _faiss(location: str, cfg: SinkConfig) -> Sink:
    from embedpipe.sinks.faiss import FaissSink

    return FaissSink(location, cfg.collection, index_factory=cfg.index_factory)


# One line per sink: URI scheme -> factory(location after the colon, config).
SINKS: dict[str, Callable[[str, SinkConfig], Sink]] = {
    "qdrant": _qdrant_local,
    "qdrant+http": _qdrant_server("http"),
    "qdrant+https": _qdrant_server("https"),
    "faiss": _faiss,
}


def open_sink(cfg: SinkConfig) -> Sink:
    """The sink `cfg.uri` names; nothing is opened or connected until `Sink.open`."""
    scheme, sep, location = cfg.uri.partition(":")
    factory = SINKS.get(scheme.lower())
    if not sep or factory is None or not location.strip("/"):
        raise ConfigError(f"Unknown sink '{cfg.uri}': use {ACCEPTED}")
    return factory(location, cfg)


__all__ = ["SINKS", "Hit", "Sink", "open_sink"]
