"""Sources: one module per input kind, each a generator of Documents (or RecordErrors).

`open_source(cfg)` picks the kind from the uri (a `KIND:` prefix of the registry, or by looking at
the path) and returns a `Source`: re-readable, with a cheap count when there is one. A source is
one module here and one line in `registry.SOURCES`.

This package loads its readers lazily: importing it (or its registry, as the config's docs do)
stays cheap; `open_source` and the readers load on first use (opening.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedpipe.sources.registry import HINT, LOCAL_KINDS, RECORD_KINDS, SOURCES, SourceKind

if TYPE_CHECKING:
    from embedpipe.sources.base import Source
    from embedpipe.sources.jsonl import JSONL_SUFFIXES
    from embedpipe.sources.opening import (
        NoSourceError,
        detect_kind,
        open_source,
        read_dir,
        read_hf,
        read_jsonl,
        read_parquet,
    )

__all__ = [
    "HINT",
    "JSONL_SUFFIXES",
    "LOCAL_KINDS",
    "RECORD_KINDS",
    "SOURCES",
    "NoSourceError",
    "Source",
    "SourceKind",
    "detect_kind",
    "open_source",
    "read_dir",
    "read_hf",
    "read_jsonl",
    "read_parquet",
]
_LAZY = {
    "JSONL_SUFFIXES",
    "NoSourceError",
    "Source",
    "detect_kind",
    "open_source",
    "read_dir",
    "read_hf",
    "read_jsonl",
    "read_parquet",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from embedpipe.sources import opening

        return getattr(opening, name)
    raise AttributeError(f"module 'embedpipe.sources' has no attribute {name!r}")
