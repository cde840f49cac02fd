"""embedpipe: stream a corpus through an embedding model once, into Qdrant or FAISS, incrementally.

    import embedpipe
    report = embedpipe.backfill("docs/", sink="qdrant:./.embedpipe/qdrant")
    hits = embedpipe.query("how do I configure retries?", sink="qdrant:./.embedpipe/qdrant")
    vectors = embedpipe.encode(["hello world"])

Heavy libraries (torch, faiss, qdrant_client, datasets) load only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedpipe.config import RunConfig, load_config
from embedpipe.errors import EmbedpipeError
from embedpipe.types import Chunk, Document, Embedded, RecordError, RunReport

if TYPE_CHECKING:
    from embedpipe.api import (
        backfill,
        encode,
        evaluate,
        export,
        open_index,
        promote,
        query,
        rollback,
        run,
        status,
    )
    from embedpipe.runs.pipeline import Pipeline
    from embedpipe.sinks.base import Hit, Sink

__version__ = "0.1.0"
__all__ = [
    "Chunk",
    "Document",
    "Embedded",
    "EmbedpipeError",
    "Hit",
    "Pipeline",
    "RecordError",
    "RunConfig",
    "RunReport",
    "Sink",
    "backfill",
    "encode",
    "evaluate",
    "export",
    "load_config",
    "open_index",
    "promote",
    "query",
    "rollback",
    "run",
    "status",
]

_LAZY = {
    "backfill": "embedpipe.api",
    "encode": "embedpipe.api",
    "query": "embedpipe.api",
    "run": "embedpipe.api",
    "status": "embedpipe.api",
    "evaluate": "embedpipe.api",
    "promote": "embedpipe.api",
    "rollback": "embedpipe.api",
    "Pipeline": "embedpipe.runs.pipeline",
    "Hit": "embedpipe.sinks.base",
    "Sink": "embedpipe.sinks.base",
    "export": "embedpipe.api",
    "open_index": "embedpipe.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedpipe' has no attribute {name!r}")
