"""One open sink per index per process: every reader of an index in a process shares it.

Qdrant Edge and Qdrant local mode let one opener at a time hold their folder, even within one
process, so a LangChain store, a LlamaIndex store and `embedpipe.query` over the same index
would lock each other out if each opened its own sink. `open_index` (and through it every store,
adapter and `query`) takes the index's sink from here instead: one sink per (scheme, resolved
location, collection), reference-counted, released (`Sink.abort`) when its last user closes.

Every use of a shared sink holds its lock (`SharedSink.lock`): a sink's read path opens
readers lazily and swaps them when the live generation moves, which is not safe to run twice at
once; the sink's part of a query is short beside encoding it, which runs outside the lock. How a
sink opens for reading is its own business: this module only shares and counts it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from embedpipe.config import SinkConfig
from embedpipe.sinks import open_sink
from embedpipe.sinks.base import Sink, close_served
from embedpipe.sinks.registry import capabilities_for

SinkKey = tuple[str, str, str]  # (scheme, resolved location, collection)


@dataclass(eq=False)
class SharedSink:
    """A sink shared by `refs` open indexes of this process; use it only holding `lock`."""

    key: SinkKey
    sink: Sink
    lock: threading.RLock = field(default_factory=threading.RLock)
    refs: int = 0


_open: dict[SinkKey, SharedSink] = {}
_registry_lock = threading.Lock()


def sink_key(cfg: SinkConfig) -> SinkKey:
    """What names one index in this process: the sink's scheme, its location (a local path
    resolved, so `./idx` and `/abs/idx` are one index) and the collection."""
    scheme, _, location = cfg.uri.partition(":")
    caps = capabilities_for(cfg.uri)
    if caps is not None and caps.local_path:
        location = str(Path(location).expanduser().resolve())
    return scheme.lower(), location, cfg.collection


def share(cfg: SinkConfig, opener: Callable[[SinkConfig], Sink] = open_sink) -> SharedSink:
    """The process's sink for `cfg`'s index, opened (by `opener`) on first use; each call takes
    one reference, which `release` gives back."""
    key = sink_key(cfg)
    with _registry_lock:
        shared = _open.get(key)
        if shared is None:
            shared = _open[key] = SharedSink(key, opener(cfg))
        shared.refs += 1
        return shared


def release(shared: SharedSink) -> None:
    """Give back one reference; the last one releases the sink (its readers, clients, locks)."""
    with _registry_lock:  # held to the end: a new opener waits until the folder is free
        shared.refs -= 1
        if shared.refs > 0:
            return
        if _open.get(shared.key) is shared:
            del _open[shared.key]
        with shared.lock:  # a use still in flight (on another thread) finishes first
            shared.sink.abort()
            close_served(shared.sink)


def open_count() -> int:
    """How many sinks this process shares now (for tests and diagnostics)."""
    with _registry_lock:
        return len(_open)
