"""Sinks: where vectors go. `open_sink` picks one from the URI scheme.

A sink is one module here and one line in `registry.SINKS`: the module holds a class that
implements the `Sink` protocol (base.py) and has a classmethod `from_config(scheme, location,
cfg)`; the registry line gives its URI form, "module:Class" and its `Capabilities`. Nothing else
changes: `open_sink`, the accepted forms in messages, `rebuild_sink`, and the engines' choices
(where the ledger goes, who writes) all read the registry and `Sink.capabilities`. A directory
sink subclasses `GenerationSink` (generations.py), or `StoredSink` (shard_backed.py) to keep its vectors
in a `ShardStore`; a Qdrant-backed one shares qdrant_base.py.

Each sink module imports its heavy client (qdrant_client, faiss) itself, and only when
`open_sink` makes that sink, so importing this package stays cheap.
"""

from __future__ import annotations

from embedpipe.sinks.base import Capabilities, Hit, Sink
from embedpipe.sinks.registry import (
    ACCEPTED,
    LOCAL_SCHEMES,
    SINKS,
    SinkKind,
    capabilities_for,
    open_sink,
    rebuild_sink,
)

__all__ = [
    "ACCEPTED",
    "LOCAL_SCHEMES",
    "SINKS",
    "Capabilities",
    "Hit",
    "Sink",
    "SinkKind",
    "capabilities_for",
    "open_sink",
    "rebuild_sink",
]
